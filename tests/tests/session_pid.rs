//! Session mode tells a client its backend's own process id: BackendKeyData agrees with
//! `pg_backend_pid()`, the pid in NotificationResponse and pg_stat_activity, while the secret
//! stays Tollgate's, so cancels still go through Tollgate and a forged secret does nothing.

use bytes::BytesMut;
use std::time::Duration;
use tollgate_e2e::poll::poll_until;
use tollgate_e2e::raw::{error_fields, first_column, RawConn};
use tollgate_e2e::{Env, EnvOptions, APP_PASSWORD, APP_USER};
use tollgate_wire::build;

const SLEEP_SQL: &str = "SELECT pg_sleep(30)";

async fn send_cancel(env: &Env, process_id: i32, secret: [u8; 4]) {
    let mut conn = RawConn::connect(env.addr).await.unwrap();
    let mut out = BytesMut::new();
    build::cancel_request(&mut out, process_id, &secret);
    conn.send(&out).await.unwrap();
    assert!(conn.read_to_close().await.unwrap().is_empty());
}

/// Whether `pid` runs SLEEP_SQL now, by pg_stat_activity.
fn sleeping(env: &Env, pid: i32) -> bool {
    env.pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active' \
                 AND query = '{SLEEP_SQL}'"
            ),
        )
        .map(|out| out.trim() == "1")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_backend_key_data_carries_the_backends_pid_and_cancel_still_goes_through_tollgate(
) {
    let env = Env::start(EnvOptions {
        pool_mode: "session",
        ..Default::default()
    })
    .await
    .unwrap();
    let (mut c, key) = RawConn::login(env.addr, APP_USER, APP_PASSWORD)
        .await
        .unwrap();

    let (rows, _) = c.query("SELECT pg_backend_pid()::text").await.unwrap();
    assert_eq!(first_column(&rows), [Some(key.process_id.to_string())]);

    // NOTIFY to itself: the NotificationResponse names the same process.
    let (msgs, _) = c.query("LISTEN tg_pid; NOTIFY tg_pid").await.unwrap();
    let note = msgs
        .iter()
        .find(|m| m.tag == b'A')
        .expect("a NotificationResponse");
    let notified = i32::from_be_bytes(note.body[..4].try_into().unwrap());
    assert_eq!(notified, key.process_id);

    // A cancel with the right pid and a forged secret does nothing.
    let mut q = BytesMut::new();
    build::query(&mut q, SLEEP_SQL);
    c.send(&q).await.unwrap();
    poll_until("the sleep to start", Duration::from_secs(10), || {
        sleeping(&env, key.process_id)
    })
    .await
    .unwrap();
    let mut forged = key.secret;
    forged[3] ^= 0x81;
    send_cancel(&env, key.process_id, forged).await;
    poll_until(
        "the forged cancel to be looked up",
        Duration::from_secs(10),
        || env.shared.stats.cancels_ignored.get() >= 1,
    )
    .await
    .unwrap();
    assert!(sleeping(&env, key.process_id), "a forged secret cancelled");
    assert_eq!(env.shared.stats.cancels_forwarded.get(), 0);

    // The genuine key cancels, through Tollgate's registry.
    send_cancel(&env, key.process_id, key.secret).await;
    let mut error = None;
    loop {
        let m = c.expect().await.unwrap();
        match m.tag {
            b'E' => error = Some(error_fields(&m).unwrap().code),
            b'Z' => break,
            _ => {}
        }
    }
    assert_eq!(error.as_deref(), Some("57014"));
    assert_eq!(env.shared.stats.cancels_forwarded.get(), 1);

    // A second client is told its own backend's pid, not the first one's.
    let (mut other, other_key) = RawConn::login(env.addr, APP_USER, APP_PASSWORD)
        .await
        .unwrap();
    assert_ne!(other_key.process_id, key.process_id);
    let (rows, _) = other.query("SELECT pg_backend_pid()::text").await.unwrap();
    assert_eq!(
        first_column(&rows),
        [Some(other_key.process_id.to_string())]
    );
}
