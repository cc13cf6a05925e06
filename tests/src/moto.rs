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
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting moto's server (python3 -m moto.server); .ci/run pip-installs 'moto[server]'")?;
        self.child = Some(child);
        // Bounded poll: nothing announces that the server is listening.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!("moto's server exited at start ({status}); is 'moto[server]' installed?");
                }
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "moto's server did not listen on port {} within 30 s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
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
