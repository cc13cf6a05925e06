//! State that only shows in a way no statement text reveals (a DO body, a FunctionCall
//! message) pins its client in transaction mode, so the next client on that backend never
//! inherits it: with one backend, client B sees the server default once A has left.

use anyhow::{ensure, Result};
use bytes::{BufMut, BytesMut};
use tollgate::pin::PinReason;
use tollgate_e2e::raw::{first_column, RawConn};
use tollgate_e2e::{Env, EnvOptions, APP_PASSWORD, APP_USER};
use tollgate_wire::backend;

async fn one_backend() -> Result<Env> {
    Env::start(EnvOptions {
        pool_mode: "transaction",
        pool_size: 1,
        ..Default::default()
    })
    .await
}

async fn work_mem(c: &mut RawConn) -> Result<Option<String>> {
    let (msgs, _) = c.query("SHOW work_mem").await?;
    Ok(first_column(&msgs).into_iter().next().flatten())
}

/// Client A sets work_mem through `set_it`; it must be pinned for `reason`, keep its value,
/// and leave no trace for client B.
async fn state_stays_with_its_client(
    env: &Env,
    reason: PinReason,
    set_it: impl AsyncFnOnce(&mut RawConn) -> Result<()>,
) -> Result<()> {
    let (mut a, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
    set_it(&mut a).await?;
    ensure!(
        env.shared.stats.pins_for(reason) == 1,
        "{reason:?} did not pin"
    );
    ensure!(work_mem(&mut a).await?.as_deref() == Some("5MB"));
    drop(a);
    let (mut b, _) = RawConn::login(env.addr, APP_USER, APP_PASSWORD).await?;
    let seen = work_mem(&mut b).await?;
    ensure!(
        seen.as_deref() == Some("4MB"),
        "client B inherited work_mem {seen:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_block_setting_session_state_pins_and_does_not_leak() -> Result<()> {
    let env = one_backend().await?;
    state_stays_with_its_client(&env, PinReason::DoBlock, async |a| {
        let (msgs, _) = a
            .query("DO $$BEGIN PERFORM set_config('work_mem', '5MB', false); END$$")
            .await?;
        ensure!(!msgs.iter().any(|m| m.tag == backend::tag::ERROR_RESPONSE));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_message_pins_and_does_not_leak() -> Result<()> {
    let env = one_backend().await?;
    state_stays_with_its_client(&env, PinReason::FunctionCall, async |a| {
        // FunctionCall ("Message Formats"): set_config (OID 2078) with three text arguments.
        let mut body = BytesMut::new();
        body.put_u32(2078);
        body.put_i16(0);
        body.put_i16(3);
        for arg in [&b"work_mem"[..], b"5MB", b"false"] {
            body.put_i32(arg.len() as i32);
            body.put_slice(arg);
        }
        body.put_i16(0);
        let mut out = BytesMut::new();
        out.put_u8(b'F');
        out.put_i32(body.len() as i32 + 4);
        out.put_slice(&body);
        a.send(&out).await?;
        let reply = a.expect().await?;
        ensure!(
            reply.tag == b'V',
            "FunctionCallResponse expected, got {:?}",
            reply.tag as char
        );
        ensure!(a.expect().await?.tag == backend::tag::READY_FOR_QUERY);
        Ok(())
    })
    .await
}
