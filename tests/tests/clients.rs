//! Real clients — psql, pgbench and tokio-postgres — get correct results through Tollgate in
//! both pool modes, with TLS on and off on each side; every kind of auth-file entry logs in;
//! and the ParameterStatus values a client is told match what the server then reports.

use anyhow::{ensure, Context, Result};
use tokio_postgres::types::Type;
use tollgate::pin::PinReason;
use tollgate_e2e::connected::{scalar, Connected};
use tollgate_e2e::pgbench::PgbenchSummary;
use tollgate_e2e::poll::until_idle_backends;
use tollgate_e2e::{success, Env, EnvOptions, MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER};

/// psql: single statements, a multi-statement script with an explicit transaction, and the
/// connection really is (or is not) TLS on both legs.
async fn psql_gets_correct_results(env: &Env, opts: &EnvOptions) -> Result<()> {
    let url = env.app_url();
    let out = success(
        &env.psql(
            &url,
            &[
                "-c",
                "SELECT 6 * 7",
                "-c",
                "SELECT string_agg(g::text, ',') FROM generate_series(1, 5) g",
            ],
        )
        .await?,
    )?;
    assert_eq!(out, "42\n1,2,3,4,5\n");

    let script = "CREATE TABLE psql_t(id int PRIMARY KEY, v text);\n\
        BEGIN;\n\
        INSERT INTO psql_t VALUES (1, 'one'), (2, 'two');\n\
        COMMIT;\n\
        BEGIN;\n\
        INSERT INTO psql_t VALUES (3, 'rolled back');\n\
        ROLLBACK;\n\
        SELECT string_agg(v, ',' ORDER BY id) FROM psql_t;\n\
        SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();\n\
        \\conninfo\n";
    let out = success(&env.psql_stdin(&url, &["-q"], script.into()).await?)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"one,two"), "{out}");
    let backend_ssl = if opts.backend_tls { "t" } else { "f" };
    assert_eq!(
        lines.get(1),
        Some(&backend_ssl),
        "backend leg TLS should be {}: {out}",
        opts.backend_tls
    );
    assert_eq!(
        out.contains("SSL connection"),
        opts.client_tls,
        "client leg TLS should be {}: {out}",
        opts.client_tls
    );
    Ok(())
}

/// pgbench: `-i` through Tollgate, then TPC-B-like runs in simple, extended and prepared
/// protocol and with a reconnect per transaction; afterwards TPC-B's own bookkeeping must add
/// up (every transaction moved the same delta through accounts, tellers, branches, history).
async fn pgbench_gets_correct_results(env: &Env) -> Result<()> {
    let url = env.app_url();
    success(&env.pgbench(&url, &["-i", "-s", "1", "-q"]).await?).context("pgbench -i")?;
    let mut total = 0;
    let runs: [(&str, &[&str]); 4] = [
        (
            "simple",
            &["-M", "simple", "-c", "4", "-j", "2", "-t", "25"],
        ),
        (
            "extended",
            &["-M", "extended", "-c", "4", "-j", "2", "-t", "25"],
        ),
        (
            "prepared",
            &["-M", "prepared", "-c", "4", "-j", "2", "-t", "25"],
        ),
        ("reconnect", &["-C", "-c", "4", "-j", "2", "-t", "10"]),
    ];
    for (label, args) in runs {
        // -n: no vacuum / history truncation, so history accumulates across runs.
        let out = success(&env.pgbench(&url, &[args, &["-n"]].concat()).await?)
            .with_context(|| format!("pgbench {label}"))?;
        let summary = PgbenchSummary::parse(&out)?;
        assert_eq!(summary.failed, 0, "pgbench {label}: {out}");
        assert_eq!(
            Some(summary.processed),
            summary.planned,
            "pgbench {label} did not finish every transaction: {out}"
        );
        total += summary.processed;
    }
    let c = env.connect_app().await?;
    let count: u64 = scalar(&c.client, "SELECT count(*) FROM pgbench_history")
        .await?
        .parse()?;
    assert_eq!(count, total, "one history row per transaction");
    let sums = scalar(
        &c.client,
        "SELECT concat_ws(',', (SELECT sum(delta) FROM pgbench_history), \
            (SELECT sum(abalance) FROM pgbench_accounts), \
            (SELECT sum(tbalance) FROM pgbench_tellers), \
            (SELECT sum(bbalance) FROM pgbench_branches))",
    )
    .await?;
    let parts: Vec<&str> = sums.split(',').collect();
    assert_eq!(parts.len(), 4, "{sums}");
    assert!(
        parts.iter().all(|p| *p == parts[0]),
        "history, accounts, tellers and branches disagree: {sums}"
    );
    Ok(())
}

/// tokio-postgres: typed parameters, named prepared statements, multi-statement simple
/// queries, a rolled-back transaction, a large streamed result, and both TLS legs.
async fn tokio_postgres_gets_correct_results(env: &Env, opts: &EnvOptions) -> Result<()> {
    let Connected { client, .. } = env.connect_app().await?;
    let row = client
        .query_typed_one(
            "SELECT $1::text || $2::int",
            &[(&"n=", Type::TEXT), (&7i32, Type::INT4)],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "n=7");
    let stmt = client.prepare("SELECT $1::int * 2").await?;
    for i in 0..5i32 {
        assert_eq!(
            client.query_one(&stmt, &[&i]).await?.get::<_, i32>(0),
            i * 2
        );
    }
    client
        .batch_execute("CREATE TABLE tp_t(id int); INSERT INTO tp_t VALUES (1), (2)")
        .await?;
    let mut client = client;
    {
        let tx = client.transaction().await?;
        tx.execute("INSERT INTO tp_t VALUES (3)", &[]).await?;
        let inside: i64 = tx.query_one("SELECT count(*) FROM tp_t", &[]).await?.get(0);
        assert_eq!(inside, 3);
        tx.rollback().await?;
    }
    assert_eq!(scalar(&client, "SELECT count(*) FROM tp_t").await?, "2");
    // 20k rows of ~100 bytes: several buffers' worth streamed through the relay.
    let rows = client
        .query_typed(
            "SELECT g, repeat('x', 100) FROM generate_series(1, $1::int) g",
            &[(&20_000i32, Type::INT4)],
        )
        .await?;
    assert_eq!(rows.len(), 20_000);
    let sum: i64 = rows.iter().map(|r| i64::from(r.get::<_, i32>(0))).sum();
    assert_eq!(sum, 20_000 * 20_001 / 2);
    assert!(rows.iter().all(|r| r.get::<_, &str>(1).len() == 100));
    let backend_ssl = scalar(
        &client,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await?;
    assert_eq!(backend_ssl == "t", opts.backend_tls);
    Ok(())
}

async fn all_clients_get_correct_results(opts: EnvOptions) -> Result<()> {
    let env = Env::start(opts.clone()).await?;
    psql_gets_correct_results(&env, &opts).await?;
    tokio_postgres_gets_correct_results(&env, &opts).await?;
    pgbench_gets_correct_results(&env).await?;
    if opts.pool_mode == "transaction" {
        // pgbench -M prepared uses named statements: they are shared across backends, so
        // none of its clients had to be pinned.
        assert_eq!(env.shared.stats.pins_for(PinReason::NamedStatement), 0);
    }
    Ok(())
}

fn opts(pool_mode: &'static str, client_tls: bool, backend_tls: bool) -> EnvOptions {
    EnvOptions {
        pool_mode,
        client_tls,
        backend_tls,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_clients_work_in_transaction_mode_with_tls_on_both_sides() -> Result<()> {
    all_clients_get_correct_results(opts("transaction", true, true)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_clients_work_in_transaction_mode_without_tls() -> Result<()> {
    all_clients_get_correct_results(opts("transaction", false, false)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_clients_work_in_session_mode_with_tls_on_both_sides() -> Result<()> {
    all_clients_get_correct_results(opts("session", true, true)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_clients_work_in_session_mode_without_tls() -> Result<()> {
    all_clients_get_correct_results(opts("session", false, false)).await
}

/// The mixed cases: TLS on one leg only. psql and tokio-postgres suffice here; pgbench adds
/// nothing TLS-specific.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_work_with_tls_on_one_side_only() -> Result<()> {
    for o in [
        opts("transaction", true, false),
        opts("session", false, true),
    ] {
        let env = Env::start(o.clone()).await?;
        psql_gets_correct_results(&env, &o)
            .await
            .with_context(|| format!("{o:?}"))?;
        tokio_postgres_gets_correct_results(&env, &o)
            .await
            .with_context(|| format!("{o:?}"))?;
    }
    Ok(())
}

/// Backend connections `user` has open, from a direct superuser connection.
async fn backends_of(env: &Env, user: &str) -> Result<u64> {
    let su = env.connect_direct_superuser().await?;
    Ok(scalar(
        &su,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'"),
    )
    .await?
    .parse()?)
}

/// Two tokio-postgres clients of `user`, each holding a transaction, so the pool must log in
/// to the server twice with what Tollgate kept from the clients' logins; plus psql.
async fn user_logs_in_and_queries(env: &Env, user: &str, password: &str) -> Result<()> {
    let a = env.connect_with(env.pg_config(user, password)).await?;
    let b = env.connect_with(env.pg_config(user, password)).await?;
    for c in [&a, &b] {
        c.client.batch_execute("BEGIN").await?;
        assert_eq!(scalar(&c.client, "SELECT current_user").await?, user);
    }
    let pid_a = scalar(&a.client, "SELECT pg_backend_pid()").await?;
    let pid_b = scalar(&b.client, "SELECT pg_backend_pid()").await?;
    ensure!(pid_a != pid_b, "two open transactions need two backends");
    assert_eq!(backends_of(env, user).await?, 2);
    for c in [&a, &b] {
        c.client.batch_execute("COMMIT").await?;
    }
    let row = a
        .client
        .query_typed_one("SELECT $1::int + 1", &[(&41i32, Type::INT4)])
        .await?;
    assert_eq!(row.get::<_, i32>(0), 42);

    let out = success(
        &env.psql(
            &env.url(user, password, "app"),
            &["-c", "SELECT current_user || ':' || 6 * 7"],
        )
        .await?,
    )?;
    assert_eq!(out.trim(), format!("{user}:42"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_user_logs_in_and_tollgate_answers_the_servers_md5_challenge() -> Result<()> {
    let env = Env::start(EnvOptions::default()).await?;
    user_logs_in_and_queries(&env, MD5_USER, MD5_PASSWORD).await
}

/// The auth file holds only the server's SCRAM verifier for this user, so Tollgate can log in
/// to the server only with the ClientKey recovered from the client's own SCRAM proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_verifier_only_user_logs_in_via_client_key_passthrough() -> Result<()> {
    let env = Env::start(EnvOptions::default()).await?;
    user_logs_in_and_queries(&env, SCRAM_USER, SCRAM_PASSWORD).await
}

/// Over TLS libpq and tokio-postgres both send the `y,,` GS2 header (they could bind the
/// channel, Tollgate does not offer -PLUS); the passthrough must still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_verifier_only_user_logs_in_over_tls_on_both_sides() -> Result<()> {
    let env = Env::start(opts("transaction", true, true)).await?;
    user_logs_in_and_queries(&env, SCRAM_USER, SCRAM_PASSWORD).await
}

/// Every ParameterStatus value the client was told at login is what the server reports when
/// asked, and the essentials are present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_status_at_login_matches_the_servers_settings() -> Result<()> {
    for mode in ["transaction", "session"] {
        let env = Env::start(opts(mode, false, false)).await?;
        let c = env.connect_app().await?;
        for name in [
            "server_version",
            "server_encoding",
            "client_encoding",
            "DateStyle",
            "TimeZone",
            "integer_datetimes",
            "standard_conforming_strings",
            "IntervalStyle",
        ] {
            ensure!(
                c.param(name).is_some(),
                "{mode}: no ParameterStatus for {name}"
            );
        }
        assert_eq!(c.param("client_encoding"), Some("UTF8"));
        for (name, told) in &c.params {
            let shown = scalar(&c.client, &format!("SHOW \"{name}\"")).await?;
            assert_eq!(&shown, told, "{mode}: {name} told at login vs SHOW");
        }
        let version = scalar(&c.client, "SHOW server_version").await?;
        assert!(version.starts_with("15"), "{version}");
    }
    Ok(())
}

/// application_name from the startup packet is reported at login and is what SHOW says on
/// every backend the client lands on, while other clients keep their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_application_name_follows_the_client_across_backends() -> Result<()> {
    // A quote and spaces, so re-applying it on another backend must quote it right.
    const NAME: &str = "e2e named it's";
    let env = Env::start(EnvOptions {
        pool_size: 2,
        ..Default::default()
    })
    .await?;
    let mut config = env.pg_config(tollgate_e2e::APP_USER, tollgate_e2e::APP_PASSWORD);
    config.application_name(NAME);
    let named = env.connect_with(config).await?;
    assert_eq!(named.param("application_name"), Some(NAME));
    let other = env.connect_app().await?;
    assert_eq!(other.param("application_name"), Some(""));

    let first = scalar(
        &named.client,
        "SELECT current_setting('application_name') || ' ' || pg_backend_pid()",
    )
    .await?;
    // `other` takes the only backend open (the one `named` just used, once it is back in the
    // pool) and holds it, so `named`'s next statement needs the pool's second backend.
    until_idle_backends(&env, 1).await?;
    other.client.batch_execute("BEGIN").await?;
    let held = scalar(&other.client, "SELECT pg_backend_pid()").await?;
    assert_eq!(
        scalar(&other.client, "SHOW application_name").await?,
        "",
        "the backend `named` used must not carry its name to `other`"
    );
    let second = scalar(
        &named.client,
        "SELECT current_setting('application_name') || ' ' || pg_backend_pid()",
    )
    .await?;
    other.client.batch_execute("COMMIT").await?;
    assert_eq!(first, format!("{NAME} {held}"));
    let (name, pid) = second.rsplit_once(' ').context("name pid")?;
    assert_eq!(name, NAME);
    assert_ne!(pid, held, "expected a second backend");

    let out = success(
        &env.psql(
            &format!("{}&application_name=psql-e2e", env.app_url()),
            &["-c", "SHOW application_name"],
        )
        .await?,
    )?;
    assert_eq!(out.trim(), "psql-e2e");
    Ok(())
}

/// A setting passed in the startup packet's `options` (`-c statement_timeout=...`) holds on
/// every backend the client uses and never leaks to other clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_options_setting_applies_on_every_backend_and_nowhere_else() -> Result<()> {
    let env = Env::start(EnvOptions {
        pool_size: 2,
        ..Default::default()
    })
    .await?;
    let mut config = env.pg_config(tollgate_e2e::APP_USER, tollgate_e2e::APP_PASSWORD);
    config.options("-c statement_timeout=12345");
    let with = env.connect_with(config).await?;
    let without = env.connect_app().await?;
    assert_eq!(
        scalar(&with.client, "SHOW statement_timeout").await?,
        "12345ms"
    );
    without.client.batch_execute("BEGIN").await?;
    assert_eq!(
        scalar(&without.client, "SHOW statement_timeout").await?,
        "0"
    );
    assert_eq!(
        scalar(&with.client, "SHOW statement_timeout").await?,
        "12345ms"
    );
    without.client.batch_execute("COMMIT").await?;
    for _ in 0..3 {
        assert_eq!(
            scalar(&without.client, "SHOW statement_timeout").await?,
            "0"
        );
        assert_eq!(
            scalar(&with.client, "SHOW statement_timeout").await?,
            "12345ms"
        );
    }
    Ok(())
}

/// A startup setting the server reports (default_transaction_read_only is GUC_REPORT but
/// not one Tollgate re-applies as "tracked") is really applied, not just announced, in both
/// modes, and does not leak to a client that did not ask for it on the same backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_startup_setting_is_applied_not_just_announced() -> Result<()> {
    for mode in ["transaction", "session"] {
        let env = Env::start(EnvOptions {
            pool_mode: mode,
            pool_size: 1,
            ..Default::default()
        })
        .await?;
        env.connect_app()
            .await?
            .client
            .batch_execute("CREATE TABLE ro_t(x int)")
            .await?;
        let mut config = env.pg_config(tollgate_e2e::APP_USER, tollgate_e2e::APP_PASSWORD);
        config.options("-c default_transaction_read_only=on");
        let ro = env.connect_with(config).await?;
        assert_eq!(
            ro.param("default_transaction_read_only"),
            Some("on"),
            "{mode}"
        );
        assert_eq!(
            scalar(&ro.client, "SHOW default_transaction_read_only").await?,
            "on",
            "{mode}"
        );
        let e = ro
            .client
            .batch_execute("INSERT INTO ro_t VALUES (1)")
            .await
            .unwrap_err();
        assert_eq!(
            tollgate_e2e::sqlstate(&e).as_deref(),
            Some("25006"),
            "{mode}"
        );
        drop(ro);
        let rw = env.connect_app().await?;
        assert_eq!(
            rw.param("default_transaction_read_only"),
            Some("off"),
            "{mode}"
        );
        rw.client
            .batch_execute("INSERT INTO ro_t VALUES (1)")
            .await?;
    }
    Ok(())
}
