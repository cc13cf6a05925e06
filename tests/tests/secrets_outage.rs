//! The Secrets Manager endpoint goes away mid-run: Tollgate keeps serving on the last good
//! value and counts the failed refreshes; it comes back: refreshes resume. Its own file (its
//! own moto), because it stops the server the SDK's process-wide endpoint points at.

use anyhow::{ensure, Context, Result};
use std::time::Duration;
use tollgate::config::RawConfig;
use tollgate_e2e::moto::{rds_secret, Moto};
use tollgate_e2e::poll::poll_until;
use tollgate_e2e::{start_postgres, Env, EnvOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_secrets_manager_keeps_the_last_good_value_and_refresh_resumes() -> Result<()>
{
    let mut moto = Moto::start()?;
    moto.use_for_this_process();
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_CONFIG_FILE", "/dev/null");
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    // Short timeouts so a refused connection fails fast rather than retrying for long.
    std::env::set_var("AWS_MAX_ATTEMPTS", "1");
    let (name, user, password) = ("outage/app", "sm_outage", "kept-password");
    moto.create(name, &rds_secret(user, password)).await?;
    let pg = start_postgres(false, 100).await?;
    pg.create_user(user, password, false)?;
    let env = Env::in_front_of(
        pg,
        EnvOptions {
            extra: RawConfig {
                auth_secret: Some(vec![name.into()]),
                secret_refresh_interval: Some(1),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await?;
    let store = env.shared.auth.secrets().context("secrets")?.clone();
    let counts = || {
        let v = store.views();
        (v[0].ok, v[0].failed)
    };
    poll_until("a scheduled refresh", Duration::from_secs(10), || {
        counts().0 >= 2
    })
    .await?;

    moto.stop();
    poll_until("a failed refresh", Duration::from_secs(20), || {
        counts().1 >= 1
    })
    .await?;
    // Service goes on with the last good value: logins and the database login both work.
    let client = env.connect_as(user, password).await?;
    client.simple_query("SELECT 1").await?;
    env.shared.pools.close_idle();
    let client = env.connect_as(user, password).await?;
    client.simple_query("SELECT 1").await?;
    let (_, metrics) = env.admin_get("/metrics").await?;
    ensure!(
        metrics.contains(&format!(
            "tollgate_secret_refresh_total{{secret=\"{name}\",outcome=\"failure\"}}"
        )),
        "{metrics}"
    );

    // It returns (moto keeps no state: the secret is made again, as a restored service has it).
    moto.start_again()?;
    moto.create(name, &rds_secret(user, password)).await?;
    let ok_before = counts().0;
    poll_until("refreshes resumed", Duration::from_secs(30), || {
        counts().0 > ok_before
    })
    .await?;
    let v = store.views();
    ensure!(v[0].last_error.is_none(), "{:?}", v[0].last_error);
    Ok(())
}
