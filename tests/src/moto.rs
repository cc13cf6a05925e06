//! Secrets Manager for the tests: moto's server (PyPI `moto[server]`, installed by .ci/run)
//! on a free loopback port, reached by Tollgate through the AWS SDK's standard endpoint
//! override (`AWS_ENDPOINT_URL_SECRETS_MANAGER`), and driven by the test with the real AWS CLI.
//! No hand-written fake: moto implements the API, version stages included.

use anyhow::{bail, Context, Result};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Credentials moto accepts (any) and the SDK needs (some).
const KEY_ID: &str = "AKIAMOTOEXAMPLE00001";
const SECRET_KEY: &str = "moto-secret-key";
/// The region secrets live in.
pub const REGION: &str = "us-east-1";

/// A running moto server.
pub struct Moto {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers (blocking: also usable to fill
    /// a process-wide `OnceLock`).
    pub fn start() -> Result<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut m = Moto { child: None, port };
        m.spawn()?;
        Ok(m)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting moto's server (python3 -m moto.server); .ci/run pip-installs 'moto[server]'")?;
        // The server says "Running on http://..." on stderr once it listens: that line is the
        // event waited for. The thread keeps draining stderr afterwards (moto logs every
        // request there), so the server never blocks on a full pipe.
        let stderr = child.stderr.take().context("moto's stderr")?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut ready = Some(ready_tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("Running on") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        self.child = Some(child);
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => Ok(()),
            Err(_) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                bail!(
                    "moto's server did not say it was listening on port {} within 30 s (exit status: {status:?}); is 'moto[server]' installed?",
                    self.port
                )
            }
        }
    }

    /// Its endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Points this process's AWS SDK clients (Tollgate's, in the tests) at this server, with
    /// credentials and a region, through the SDK's standard environment settings.
    pub fn use_for_this_process(&self) {
        std::env::set_var("AWS_ENDPOINT_URL_SECRETS_MANAGER", self.url());
        std::env::set_var("AWS_ACCESS_KEY_ID", KEY_ID);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        std::env::set_var("AWS_REGION", REGION);
        std::env::remove_var("AWS_PROFILE");
    }

    /// Stops the server (an outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (moto keeps no state: secrets must be made again).
    pub fn start_again(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Runs `aws secretsmanager ARGS` against this server; returns stdout.
    pub async fn secretsmanager(&self, args: &[&str]) -> Result<String> {
        let mut cmd = tokio::process::Command::new("aws");
        cmd.arg("secretsmanager")
            .args(args)
            .args([
                "--endpoint-url",
                &self.url(),
                "--region",
                REGION,
                "--output",
                "text",
            ])
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env_remove("AWS_PROFILE")
            .kill_on_drop(true);
        let out = cmd.output().await.context("running the AWS CLI (aws)")?;
        if !out.status.success() {
            bail!(
                "aws secretsmanager {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates secret `name` holding `json`.
    pub async fn create(&self, name: &str, json: &str) -> Result<()> {
        self.secretsmanager(&["create-secret", "--name", name, "--secret-string", json])
            .await
            .map(|_| ())
    }

    /// Puts a new AWSCURRENT value (the old one becomes AWSPREVIOUS), as a rotation does.
    pub async fn put(&self, name: &str, json: &str) -> Result<()> {
        self.secretsmanager(&[
            "put-secret-value",
            "--secret-id",
            name,
            "--secret-string",
            json,
        ])
        .await
        .map(|_| ())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The RDS-format JSON for a user and password.
pub fn rds_secret(user: &str, password: &str) -> String {
    format!(r#"{{"username":"{user}","password":"{password}","engine":"postgres","port":5432}}"#)
}
