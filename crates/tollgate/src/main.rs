//! The `tollgate` command: run the proxy, or try it with `tollgate quickstart`.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tollgate::config::{ConfigSource, RawConfig};
use tollgate::quickstart::QuickstartArgs;

/// A PostgreSQL connection pooler in the shape of Amazon RDS Proxy.
#[derive(Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML config file (flags and TOLLGATE_* variables override it).
    #[arg(long, short = 'c', env = "TOLLGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: RawConfig,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Start a throwaway PostgreSQL, put Tollgate in front, run pgbench through it.
    Quickstart(Box<QuickstartArgs>),
    /// Show a running Tollgate's pools, connections and latencies (from its /metrics).
    Status(tollgate::status::StatusArgs),
}

/// What the process was asked to do, with the proxy's configuration already loaded.
enum Job {
    Serve(Box<(tollgate::Config, ConfigSource)>),
    Quickstart(Box<QuickstartArgs>),
    Status(tollgate::status::StatusArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` needs its configuration before the runtime: worker_threads shapes it.
    let job = match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let source = ConfigSource {
                cli: cli.settings.clone(),
                file: cli.config.clone(),
            };
            match source.load() {
                Ok(config) => Job::Serve(Box::new((config, source))),
                Err(e) => {
                    eprintln!("tollgate: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Command::Quickstart(args) => Job::Quickstart(args),
        Command::Status(args) => Job::Status(args),
    };
    let threads = match &job {
        Job::Serve(serve) => serve.0.worker_threads,
        _ => tollgate::config::worker_threads(cli.settings.worker_threads).unwrap_or(1),
    };
    let runtime = match tollgate::runtime::build(threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match job {
            Job::Quickstart(args) => {
                tollgate::logging::init(
                    cli.settings.log_level.as_deref().unwrap_or("warn"),
                    tollgate::config::LogFormat::Text,
                );
                tollgate::quickstart::run(*args, cli.settings).await
            }
            Job::Serve(job) => {
                let (config, source) = *job;
                serve(config, source).await
            }
            Job::Status(args) => {
                let screen =
                    tollgate::status::run(args, cli.settings, cli.config.as_deref()).await?;
                print!("{screen}");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the proxy. `source` is kept whole so a reload (SIGHUP, RELOAD) re-merges the same
/// flags and env over the file.
async fn serve(config: tollgate::Config, source: ConfigSource) -> anyhow::Result<()> {
    tollgate::logging::init(&config.log_level, config.log_format);
    let server = tollgate::Server::bind(config).await?;
    server.set_config_source(source);
    tollgate::admin::reload::spawn_on_sighup(server.shared())?;
    let shutdown = server.shutdown_handle();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::info!("stop signal received");
        shutdown.shutdown();
    });
    server.run().await;
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
