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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Quickstart(args) => {
                tollgate::logging::init(
                    cli.settings.log_level.as_deref().unwrap_or("warn"),
                    tollgate::config::LogFormat::Text,
                );
                tollgate::quickstart::run(*args, cli.settings).await
            }
            Command::Run => serve(cli.settings, cli.config).await,
            Command::Status(args) => {
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

async fn serve(settings: RawConfig, file: Option<PathBuf>) -> anyhow::Result<()> {
    // Kept whole so a reload (SIGHUP, RELOAD) re-merges the same flags and env over the file.
    let source = ConfigSource {
        cli: settings,
        file,
    };
    let config = source.load()?;
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
