//! Start-up packets PostgreSQL's postmaster treats specially (`ProcessStartupPacket`), sent
//! over raw sockets straight to PostgreSQL and to Tollgate: both must answer alike. An
//! impossible length, a short read or a malformed cancel is closed without a reply; a protocol
//! version the server does not speak, or a second SSLRequest, gets one FATAL 0A000.

use bytes::{BufMut, BytesMut};
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use tollgate_e2e::raw::{error_fields, RawConn};
use tollgate_e2e::{Env, EnvOptions};
use tollgate_wire::backend;
use tollgate_wire::build;
use tollgate_wire::frame::read_message;

/// What a server sent in answer to some bytes before it closed the connection.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Closed without sending a byte.
    Silent,
    /// Sent these single-byte answers (SSLRequest / GSSENCRequest) and then one FATAL
    /// ErrorResponse with this SQLSTATE.
    Fatal { prefix: Vec<u8>, code: String },
}

/// Sends `bytes` to `addr` (half-closing after them when `eof`) and sorts out what came back.
async fn answer(addr: SocketAddr, bytes: &[u8], eof: bool) -> Answer {
    answer_after_ssl_refused(addr, None, bytes, eof).await
}

/// Like [`answer`], first sending an SSLRequest and awaiting its 'N' when `ssl` is given.
async fn answer_after_ssl_refused(
    addr: SocketAddr,
    ssl: Option<&[u8]>,
    bytes: &[u8],
    eof: bool,
) -> Answer {
    let mut c = RawConn::connect(addr).await.unwrap();
    if let Some(ssl) = ssl {
        c.send(ssl).await.unwrap();
        assert_eq!(c.recv_bytes(1).await.unwrap(), b"N");
    }
    c.send(bytes).await.unwrap();
    if eof {
        c.stream.shutdown().await.unwrap();
    }
    let reply = c.read_to_close().await.unwrap();
    if reply.is_empty() {
        return Answer::Silent;
    }
    // One-byte 'N' answers come before any error.
    let start = reply.iter().take_while(|&&b| b == b'N').count();
    let mut buf = BytesMut::from(&reply[start..]);
    let m = read_message(&mut buf, 1 << 20)
        .unwrap()
        .unwrap_or_else(|| panic!("not a whole message: {reply:?}"));
    assert_eq!(m.tag, backend::tag::ERROR_RESPONSE, "{reply:?}");
    assert!(buf.is_empty(), "more after the error: {reply:?}");
    let f = error_fields(&m).unwrap();
    assert_eq!(f.severity, "FATAL", "{f:?}");
    Answer::Fatal {
        prefix: reply[..start].to_vec(),
        code: f.code,
    }
}

fn packet(code: i32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.put_i32(8 + body.len() as i32);
    v.put_i32(code);
    v.extend_from_slice(body);
    v
}

fn ssl_request() -> Vec<u8> {
    let mut out = BytesMut::new();
    build::ssl_request(&mut out);
    out.to_vec()
}

/// Sends each case to PostgreSQL and to Tollgate; both must give `expected`.
async fn both_answer(env: &Env, cases: Vec<(&str, Vec<u8>, bool)>, expected: impl Fn() -> Answer) {
    let direct: SocketAddr = format!("127.0.0.1:{}", env.pg.port()).parse().unwrap();
    for (what, bytes, eof) in cases {
        let pg = answer(direct, &bytes, eof).await;
        let tg = answer(env.addr, &bytes, eof).await;
        assert_eq!(pg, expected(), "{what}: PostgreSQL");
        assert_eq!(tg, expected(), "{what}: Tollgate");
    }
    // And a normal client is still served.
    let client = env.connect().await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_startup_lengths_close_without_a_reply_as_postgresql_does() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    let cases = vec![
        // node-postgres sends exactly this on connect() then end(): a Terminate.
        ("node-postgres Terminate", b"X\0\0\0\x04".to_vec(), false),
        ("length 4", vec![0, 0, 0, 4, 0, 3, 0, 0], false),
        ("length 0", vec![0, 0, 0, 0], false),
        ("length 7", vec![0, 0, 0, 7, 0, 3, 0], false),
        (
            "negative length",
            vec![0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0],
            false,
        ),
        // PostgreSQL's bound is 10000 bytes after the length word.
        (
            "length 10005",
            {
                let mut v = 10_005i32.to_be_bytes().to_vec();
                v.extend_from_slice(&[0, 3, 0, 0]);
                v
            },
            false,
        ),
    ];
    both_answer(&env, cases, || Answer::Silent).await;
    // The same once an SSLRequest was declined.
    let direct: SocketAddr = format!("127.0.0.1:{}", env.pg.port()).parse().unwrap();
    for addr in [direct, env.addr] {
        let got = answer_after_ssl_refused(addr, Some(&ssl_request()), b"X\0\0\0\x04", false).await;
        assert_eq!(got, Answer::Silent, "after an SSLRequest: {addr}");
    }
    let client = env.connect().await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_startup_packets_and_malformed_cancels_close_without_a_reply() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    both_answer(
        &env,
        vec![
            ("nothing at all", vec![], true),
            ("half a length word", vec![0, 0], true),
            ("half a body", vec![0, 0, 0, 40, 0, 3, 0, 0, b'u'], true),
            // A CancelRequest whose secret is too short to be one.
            ("short cancel", packet(80_877_102, &[0, 0, 0, 1]), false),
        ],
        || Answer::Silent,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_versions_and_a_second_ssl_request_get_fatal_0a000() {
    let env = Env::start(EnvOptions::default()).await.unwrap();
    both_answer(
        &env,
        vec![
            ("protocol 4.0", packet(4 << 16, b"user\0app\0\0"), false),
            ("protocol 1234.0", packet(1234 << 16, &[]), false),
            // The largest packet PostgreSQL reads: 10000 bytes after the length word, so
            // 10004 in all. Read whole, then refused for its version, not its length.
            (
                "protocol 4.0 of 10004 bytes",
                packet(4 << 16, &[0; 10_004 - 8]),
                false,
            ),
            (
                "protocol 4.0 of 10001 bytes",
                packet(4 << 16, &[0; 10_001 - 8]),
                false,
            ),
        ],
        || Answer::Fatal {
            prefix: vec![],
            code: "0A000".into(),
        },
    )
    .await;
    // A second SSLRequest once the first was declined: an unknown protocol version to both.
    let direct: SocketAddr = format!("127.0.0.1:{}", env.pg.port()).parse().unwrap();
    for addr in [direct, env.addr] {
        let got = answer_after_ssl_refused(addr, Some(&ssl_request()), &ssl_request(), false).await;
        let expected = Answer::Fatal {
            prefix: vec![],
            code: "0A000".into(),
        };
        assert_eq!(got, expected, "{addr}");
    }
    // Bytes sent along with the SSLRequest, before its answer: 08P01 from both.
    let mut pipelined = ssl_request();
    pipelined.extend_from_slice(&ssl_request());
    both_answer(
        &env,
        vec![("data pipelined after an SSLRequest", pipelined, false)],
        || Answer::Fatal {
            prefix: b"N".to_vec(),
            code: "08P01".into(),
        },
    )
    .await;
}
