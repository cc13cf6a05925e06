//! tokio-postgres clients that keep what the driver knows: the ParameterStatus values seen at
//! login, notifications, and the driver task itself (abort it to vanish without Terminate).

use crate::pg_tls::MakeRustlsConnect;
use crate::Env;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::tls::TlsStream;
use tokio_postgres::{AsyncMessage, Client, Connection, Notification};

/// ParameterStatus names captured at login (the GUC_REPORT set of PostgreSQL 15).
pub const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "in_hot_standby",
    "integer_datetimes",
    "IntervalStyle",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
    "TimeZone",
];

/// A logged-in tokio-postgres client and its driver.
pub struct Connected {
    /// The client.
    pub client: Client,
    /// The task driving the connection; aborting it closes the socket with no Terminate.
    pub driver: JoinHandle<()>,
    /// ParameterStatus values the client had received when login finished.
    pub params: HashMap<String, String>,
    /// NOTIFY messages delivered to this client.
    pub notifications: mpsc::UnboundedReceiver<Notification>,
}

impl Connected {
    /// The value the client was told for `name` at login.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

fn spawn_driver<S, T>(client: Client, mut conn: Connection<S, T>) -> Connected
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: TlsStream + Unpin + Send + 'static,
{
    let params = REPORTED
        .iter()
        .filter_map(|n| conn.parameter(n).map(|v| (n.to_string(), v.to_string())))
        .collect();
    let (tx, notifications) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(Ok(msg)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let AsyncMessage::Notification(n) = msg {
                let _ = tx.send(n);
            }
        }
    });
    Connected {
        client,
        driver,
        params,
        notifications,
    }
}

/// Everything needed to open a client connection to Tollgate, detached from [`Env`] (which is
/// not `Sync`) so spawned tasks can connect.
#[derive(Clone)]
pub struct Dialer {
    /// The tokio-postgres settings (start from [`Env::pg_config`]).
    pub config: tokio_postgres::Config,
    /// Tollgate's CA when it offers TLS: connect over TLS, verify-full.
    pub ca: Option<PathBuf>,
}

impl Dialer {
    /// Connects: over TLS (verify-full against the test CA) when Tollgate offers TLS, plain
    /// TCP otherwise.
    pub async fn connect(&self) -> Result<Connected> {
        let mut config = self.config.clone();
        match &self.ca {
            Some(ca) => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                let (client, conn) = config.connect(MakeRustlsConnect::verify_full(ca)?).await?;
                Ok(spawn_driver(client, conn))
            }
            None => {
                let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                Ok(spawn_driver(client, conn))
            }
        }
    }
}

impl Env {
    /// A [`Dialer`] for `config` (start from [`Env::pg_config`]).
    pub fn dialer(&self, config: tokio_postgres::Config) -> Dialer {
        Dialer {
            config,
            ca: self.client_ca.clone(),
        }
    }

    /// A [`Dialer`] for the app user.
    pub fn app_dialer(&self) -> Dialer {
        self.dialer(self.pg_config(crate::APP_USER, crate::APP_PASSWORD))
    }

    /// Connects with `config` through Tollgate; see [`Dialer::connect`].
    pub async fn connect_with(&self, config: tokio_postgres::Config) -> Result<Connected> {
        self.dialer(config).connect().await
    }

    /// Connects as the app user (TLS when Tollgate offers it); see [`Dialer::connect`].
    pub async fn connect_app(&self) -> Result<Connected> {
        self.app_dialer().connect().await
    }
}

/// The first column of the first row `sql` returns over the simple protocol (None for NULL).
pub async fn scalar_opt(client: &Client, sql: &str) -> Result<Option<String>> {
    let messages = client
        .simple_query(sql)
        .await
        .with_context(|| sql.to_string())?;
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("{sql}: returned no rows"))
}

/// Like [`scalar_opt`], failing on NULL.
pub async fn scalar(client: &Client, sql: &str) -> Result<String> {
    scalar_opt(client, sql)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{sql}: returned NULL"))
}
