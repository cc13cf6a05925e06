//! Clients that break the rules, over raw sockets: malformed and oversized packets, protocol
//! versions Tollgate does not speak, garbage, stalls and vanishing mid-transaction. Each is
//! refused or cut off cleanly, and after each a normal client is still served.

use bytes::{BufMut, BytesMut};
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tollgate::config::RawConfig;
use tollgate_e2e::raw::{error_fields, first_column, RawConn};
use tollgate_e2e::{sqlstate, Env, EnvOptions, APP_PASSWORD, APP_USER};
use tollgate_wire::backend::{self, parse_authentication, Authentication};
use tollgate_wire::frame::read_message;
use tollgate_wire::{build, TxStatus};

/// Proves the proxy is up and answering: a fresh client logs in and runs a query.
async fn assert_serves(env: &Env) {
    let client = env.connect().await.expect("a fresh client can log in");
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
}

/// Checks that `reply` (all Tollgate sent before closing) is nothing, or exactly one FATAL
/// ErrorResponse; returns its SQLSTATE if there was one.
fn nothing_or_one_fatal(reply: &[u8]) -> Option<String> {
    if reply.is_empty() {
        return None;
    }
    let mut buf = BytesMut::from(reply);
    let m = read_message(&mut buf, 1 << 20)
        .unwrap()
        .unwrap_or_else(|| panic!("a partial message: {reply:?}"));
    assert_eq!(m.tag, backend::tag::ERROR_RESPONSE, "{reply:?}");
    assert!(buf.is_empty(), "more after the error: {reply:?}");
    let f = error_fields(&m).unwrap();
    assert_eq!(f.severity, "FATAL");
    Some(f.code)
}

/// An untagged start-up packet with `code` and `body`.
fn startup_packet(code: i32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.put_i32(8 + body.len() as i32);
    v.put_i32(code);
    v.extend_from_slice(body);
    v
}

/// Name/value pairs as a StartupMessage body.
fn params_body(params: &[(&str, &str)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (k, val) in params {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v.push(0);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_lengths_are_refused_without_harm() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let cases: [(&str, Vec<u8>); 4] = [
        ("length 4 (< 8)", vec![0, 0, 0, 4, 0, 3, 0, 0]),
        ("length 0", vec![0, 0, 0, 0]),
        ("negative length", vec![0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0]),
        // A body of 10001 bytes after the length word (PostgreSQL's limit is 10000, counted
        // without the length word): refused on the header, not after waiting for the body.
        ("body 10001 (> 10000)", {
            let mut v = 10_005i32.to_be_bytes().to_vec();
            v.extend_from_slice(&[0, 3, 0, 0]);
            v
        }),
    ];
    for (what, bytes) in cases {
        let mut c = RawConn::connect(env.addr).await.unwrap();
        c.send(&bytes).await.unwrap();
        let reply = c
            .read_to_close()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        if let Some(code) = nothing_or_one_fatal(&reply) {
            assert!(
                code == "08P01" || code == "54000",
                "{what}: unexpected {code}"
            );
        }
        assert_serves(&env).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_2_startup_is_refused_with_0a000() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let mut c = RawConn::connect(env.addr).await.unwrap();
    // A protocol 2.0 startup packet: code 0x00020000, then fixed-size fields we never read.
    c.send(&startup_packet(2 << 16, &[0u8; 64])).await.unwrap();
    let reply = c.read_to_close().await.unwrap();
    assert_eq!(nothing_or_one_fatal(&reply).as_deref(), Some("0A000"));
    let mut buf = BytesMut::from(&reply[..]);
    let msg = error_fields(&read_message(&mut buf, 1 << 20).unwrap().unwrap())
        .unwrap()
        .message;
    assert!(msg.contains("unsupported frontend protocol 2.0"), "{msg}");
    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_1_gets_negotiate_protocol_version_then_logs_in_on_3_0() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let mut c = RawConn::connect(env.addr).await.unwrap();
    let body = params_body(&[
        ("user", APP_USER),
        ("database", "app"),
        ("_pq_.made_up_option", "on"),
    ]);
    c.send(&startup_packet((3 << 16) | 1, &body)).await.unwrap();

    let v = c.expect().await.unwrap();
    assert_eq!(v.tag, backend::tag::NEGOTIATE_PROTOCOL_VERSION);
    // Newest minor version supported (0), then the unrecognized options.
    assert_eq!(&v.body[..], b"\0\0\0\0\0\0\0\x01_pq_.made_up_option\0");

    // The next message is the authentication request; the login then completes normally.
    let r = c.expect().await.unwrap();
    assert_eq!(r.tag, backend::tag::AUTHENTICATION);
    assert!(matches!(
        parse_authentication(&r.body).unwrap(),
        Authentication::Sasl { .. }
    ));
    c.authenticate_from(r, APP_USER, APP_PASSWORD)
        .await
        .unwrap();
    c.until_ready().await.unwrap();
    let (rows, status) = c.query("SELECT 'negotiated'").await.unwrap();
    assert_eq!(first_column(&rows), [Some("negotiated".to_string())]);
    assert_eq!(status, TxStatus::Idle);
    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_get_n_without_tls_and_login_continues_in_plain() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let mut c = RawConn::connect(env.addr).await.unwrap();
    let mut out = BytesMut::new();
    build::ssl_request(&mut out);
    c.send(&out).await.unwrap();
    assert_eq!(c.recv_bytes(1).await.unwrap(), b"N");
    // GSSENCRequest (code 80877104) is declined the same way.
    c.send(&startup_packet(80_877_104, &[])).await.unwrap();
    assert_eq!(c.recv_bytes(1).await.unwrap(), b"N");

    c.startup(APP_USER, "app").await.unwrap();
    c.authenticate(APP_USER, APP_PASSWORD).await.unwrap();
    c.until_ready().await.unwrap();
    let (rows, _) = c.query("SELECT 'plain'").await.unwrap();
    assert_eq!(first_column(&rows), [Some("plain".to_string())]);
    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_startup_is_dropped_without_harm() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let mut inputs: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS ClientHello's start
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7011_9a7e);
    for _ in 0..20 {
        let n = rng.random_range(1..200);
        inputs.push((0..n).map(|_| rng.random()).collect());
    }
    for bytes in inputs {
        let mut c = RawConn::connect(env.addr).await.unwrap();
        c.send(&bytes).await.unwrap();
        // Whatever length the garbage claims, the sender has no more to give.
        c.stream.shutdown().await.ok();
        let reply = c
            .read_to_close()
            .await
            .unwrap_or_else(|e| panic!("{bytes:?}: {e:#}"));
        // Nothing that parses as a request came through: at most one FATAL error comes back.
        nothing_or_one_fatal(&reply);
    }
    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_login_ends_that_session_with_08p01() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xbad_b17e5);
    for round in 0..5 {
        let (mut c, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD)
            .await
            .unwrap();
        // 0xff is no frontend message type; what follows is noise.
        let mut garbage = vec![0xffu8];
        garbage.extend((0..63).map(|_| rng.random::<u8>()));
        c.send(&garbage).await.unwrap();
        let reply = c.read_to_close().await.unwrap();
        assert_eq!(
            nothing_or_one_fatal(&reply).as_deref(),
            Some("08P01"),
            "round {round}: {reply:?}"
        );
        assert_serves(&env).await;
    }
    // Fully random bytes after login, sender then silent: the session ends somehow, promptly
    // (no hang), and the proxy stays up.
    for _ in 0..10 {
        let (mut c, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD)
            .await
            .unwrap();
        let garbage: Vec<u8> = (0..64).map(|_| rng.random()).collect();
        c.send(&garbage).await.unwrap();
        c.stream.shutdown().await.ok();
        c.read_to_close().await.unwrap();
    }
    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_over_max_message_size_is_refused_with_54000() {
    let limit = 64 * 1024;
    let env = Env::start(EnvOptions {
        extra: RawConfig {
            max_message_size: Some(limit),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap();

    // Just under the limit passes.
    let client = env.connect().await.unwrap();
    let sql = format!("SELECT length('{}')", "q".repeat(limit - 1024));
    let row = client.query_one(sql.as_str(), &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0) as usize, limit - 1024);

    // Over it: refused as soon as the header announces the size, before the body is read.
    let (mut c, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD)
        .await
        .unwrap();
    let mut out = BytesMut::new();
    out.put_u8(b'Q');
    out.put_i32(4 + 100 * 1024);
    out.extend_from_slice(b"SELECT '");
    c.send(&out).await.unwrap();
    let reply = c.read_to_close().await.unwrap();
    assert_eq!(nothing_or_one_fatal(&reply).as_deref(), Some("54000"));
    let mut buf = BytesMut::from(&reply[..]);
    let f = error_fields(&read_message(&mut buf, 1 << 20).unwrap().unwrap()).unwrap();
    assert!(f.message.contains(&limit.to_string()), "{}", f.message);
    assert!(
        f.hint.unwrap_or_default().contains("max_message_size"),
        "the hint names the setting"
    );

    // The same through tokio-postgres: the error reaches the driver.
    let big = format!("SELECT '{}'", "q".repeat(limit * 2));
    let err = client.simple_query(&big).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("54000"), "{err:?}");
    assert_serves(&env).await;
}

/// Tollgate with 1 s login and idle timeouts.
async fn impatient_env() -> Env {
    Env::start(EnvOptions {
        extra: RawConfig {
            client_login_timeout: Some(1),
            idle_client_timeout: Some(1),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_startup_packet_stalls_only_its_sender_until_client_login_timeout() {
    let env = impatient_env().await;
    let mut staller = RawConn::connect(env.addr).await.unwrap();
    // Announces 50 bytes, sends 8.
    staller.send(&[0, 0, 0, 50, 0, 3, 0, 0]).await.unwrap();
    let stalled_at = Instant::now();

    // Others are served while it stalls.
    assert_serves(&env).await;

    let reply = staller.read_to_close().await.unwrap();
    let after = stalled_at.elapsed();
    assert!(reply.is_empty(), "{reply:?}");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before client_login_timeout"
    );
    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_answers_the_password_request_is_cut_off_with_08p01() {
    let env = impatient_env().await;
    let mut staller = RawConn::connect(env.addr).await.unwrap();
    staller.startup(APP_USER, "app").await.unwrap();
    let m = staller.expect().await.unwrap();
    assert!(matches!(
        parse_authentication(&m.body).unwrap(),
        Authentication::Sasl { .. }
    ));
    // Half a SASLInitialResponse, then silence.
    staller.send(&[b'p', 0, 0, 0, 60, b'S']).await.unwrap();

    assert_serves(&env).await;

    let reply = staller.read_to_close().await.unwrap();
    assert_eq!(nothing_or_one_fatal(&reply).as_deref(), Some("08P01"));
    let mut buf = BytesMut::from(&reply[..]);
    let msg = error_fields(&read_message(&mut buf, 1 << 20).unwrap().unwrap())
        .unwrap()
        .message;
    assert!(msg.contains("client_login_timeout"), "{msg}");
    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_query_after_login_is_cut_off_by_idle_client_timeout_with_57p05() {
    let env = impatient_env().await;
    let (mut staller, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD)
        .await
        .unwrap();
    // A Query announcing 100 bytes of which 10 are sent. Tollgate reads a Query whole
    // before forwarding it, so the backend never sees these bytes.
    let mut out = BytesMut::new();
    out.put_u8(b'Q');
    out.put_i32(104);
    out.extend_from_slice(b"SELECT 1; ");
    staller.send(&out).await.unwrap();
    let stalled_at = Instant::now();

    assert_serves(&env).await;

    let reply = staller.read_to_close().await.unwrap();
    assert_eq!(nothing_or_one_fatal(&reply).as_deref(), Some("57P05"));
    assert!(stalled_at.elapsed() >= Duration::from_millis(900));
    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_streamed_message_mid_transaction_gets_its_backend_discarded() {
    let env = impatient_env().await;
    let direct = env.connect_direct_superuser().await.unwrap();
    let (mut staller, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD)
        .await
        .unwrap();
    // Inside a transaction the staller keeps this backend, so the next bytes go to it.
    let (rows, status) = staller
        .query("BEGIN; SELECT pg_backend_pid()")
        .await
        .unwrap();
    assert_eq!(status, TxStatus::InTransaction);
    let pid: i32 = first_column(&rows)[0].as_deref().unwrap().parse().unwrap();

    // An Execute announcing 100 bytes with 10 sent: Tollgate streams Execute through as it
    // arrives (only Query, Parse, Bind, Describe and Close are read whole), so the backend is
    // left inside a message and can never be lent again.
    let mut out = BytesMut::new();
    out.put_u8(b'E');
    out.put_i32(104);
    out.extend_from_slice(b"\0\0\0\0\0\0\0\0\0\0");
    staller.send(&out).await.unwrap();

    assert_serves(&env).await;

    let reply = staller.read_to_close().await.unwrap();
    assert_eq!(nothing_or_one_fatal(&reply).as_deref(), Some("57P05"));
    // A bounded poll: the server notices the closed socket a moment after Tollgate drops it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let gone = direct
            .query("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .unwrap()
            .is_empty();
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "backend {pid} is still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_serves(&env).await;
}

/// An env with one backend, and a table `t` to write to.
async fn one_backend_env() -> Env {
    let env = Env::start(EnvOptions {
        pool_size: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let c = env.connect().await.unwrap();
    c.batch_execute("CREATE TABLE t (v int)").await.unwrap();
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transaction_leaves_the_backend_rolled_back() {
    let env = one_backend_env().await;
    let (mut a, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD)
        .await
        .unwrap();
    let (rows, status) = a
        .query("BEGIN; INSERT INTO t VALUES (1); SELECT pg_backend_pid()")
        .await
        .unwrap();
    assert_eq!(status, TxStatus::InTransaction);
    let a_pid = first_column(&rows)[0].clone().unwrap();
    // Gone without Terminate: the socket just closes.
    drop(a);

    let (mut b, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD)
        .await
        .unwrap();
    let (rows, status) = b
        .query("SELECT count(*)::text || ' ' || pg_backend_pid() FROM t")
        .await
        .unwrap();
    let answer = first_column(&rows)[0].clone().unwrap();
    // Same backend (the only one), its insert rolled back, and not inside a transaction.
    assert_eq!(answer, format!("0 {a_pid}"));
    assert_eq!(status, TxStatus::Idle);
    assert_serves(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_query_in_a_transaction_never_leaks_its_rows() {
    let env = one_backend_env().await;
    let direct = env.connect_direct_superuser().await.unwrap();
    let (mut a, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD)
        .await
        .unwrap();
    let (_, status) = a.query("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();
    assert_eq!(status, TxStatus::InTransaction);
    let mut out = BytesMut::new();
    build::query(&mut out, "SELECT pg_sleep(30)");
    a.send(&out).await.unwrap();
    // A bounded poll: nothing signals "the backend started the sleep".
    let deadline = Instant::now() + Duration::from_secs(10);
    while direct
        .query(
            "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'",
            &[],
        )
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the sleep never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);

    // The busy backend is not handed out; the next client gets a fresh one and sees no row.
    let (mut b, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD)
        .await
        .unwrap();
    let (rows, status) = b.query("SELECT count(*) FROM t").await.unwrap();
    assert_eq!(first_column(&rows), [Some("0".to_string())]);
    assert_eq!(status, TxStatus::Idle);
    assert_serves(&env).await;
}
