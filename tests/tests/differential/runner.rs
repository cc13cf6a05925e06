//! The differential runner: one PostgreSQL, a transaction-mode and a session-mode Tollgate in
//! front of it (both `pool_size = 1`, so clients share a backend), and a way to run the same
//! client program against all three and compare what it saw.
//!
//! A client program is a script (Python with psycopg or asyncpg, JavaScript with node-postgres)
//! or an in-process tokio-postgres / raw-wire closure. It prints a transcript: one canonical
//! JSON object per line, one line per thing it observed (rows, an error's SQLSTATE and message,
//! a notice, a ParameterStatus change, a notification). PostgreSQL's transcript is the
//! reference; Tollgate's must be identical line for line, except where a case normalises a
//! field explicitly because of a documented pooling limit.
//!
//! Each run gets a database of its own (so tables one run creates do not change another's
//! answers) and is bounded by [`RUN_TIMEOUT`]: a hang fails the test with the transcript so far.

use anyhow::{bail, Context, Result};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tollgate::config::{Config, RawConfig};
use tollgate::{Server, ShutdownHandle};
use tollgate_e2e::{Env, EnvOptions, APP_PASSWORD, APP_USER};

/// How long one run of one client program may take before it counts as hung.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a Tollgate client waits for a backend before getting an error. Shorter than
/// [`RUN_TIMEOUT`], so a backend that is never released shows up in the transcript as the
/// waiting client's error rather than as a bare timeout.
const BORROW_TIMEOUT_S: u64 = 20;

/// Where a client program connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Straight to PostgreSQL: the reference.
    Direct,
    /// Through Tollgate in transaction mode.
    Transaction,
    /// Through Tollgate in session mode.
    Session,
}

impl Target {
    /// The name used in reports and passed to scripts as `DIFF_TARGET` (scripts must not
    /// change behaviour on it; it is there for their error messages).
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Transaction => "transaction",
            Target::Session => "session",
        }
    }
}

/// Both pool modes.
pub const BOTH_MODES: &[Target] = &[Target::Transaction, Target::Session];

/// One place to connect to, with a database of the run's own.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Which of the three this is.
    pub target: Target,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The run's database.
    pub db: String,
    /// The user to log in as.
    pub user: &'static str,
    /// The user's password.
    pub password: &'static str,
    /// Whether this run may keep two clients connected at once ([`Case::two_clients`]).
    pub together: bool,
}

impl Endpoint {
    /// tokio-postgres config for this endpoint.
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.addr.port())
            .user(self.user)
            .password(self.password)
            .dbname(&self.db)
            .connect_timeout(Duration::from_secs(30));
        c
    }

    /// Connects with tokio-postgres; the connection task forwards notices and
    /// notifications to `log` in order.
    pub async fn connect(&self, log: &Log, who: &str) -> Result<tokio_postgres::Client> {
        use futures_util::StreamExt;
        let (client, mut conn) = self.pg_config().connect(tokio_postgres::NoTls).await?;
        let log = log.clone();
        let who = who.to_string();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            while let Some(Ok(m)) = messages.next().await {
                match m {
                    tokio_postgres::AsyncMessage::Notice(n) => log.emit(&[
                        ("ev", "notice".into()),
                        ("who", who.clone()),
                        ("sqlstate", n.code().code().into()),
                        ("message", n.message().into()),
                    ]),
                    tokio_postgres::AsyncMessage::Notification(n) => log.emit(&[
                        ("ev", "notify".into()),
                        ("who", who.clone()),
                        ("channel", n.channel().into()),
                        ("payload", n.payload().into()),
                    ]),
                    _ => {}
                }
            }
        });
        Ok(client)
    }
}

/// A transcript being written by an in-process client: lines in the order observed. Shared,
/// so what was observed before a hang is still there to report.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    /// Appends one event, `fields` in the given order, as a JSON object.
    pub fn emit(&self, fields: &[(&str, String)]) {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
            .collect();
        self.line(format!("{{{}}}", body.join(",")));
    }

    /// Appends a line as it is.
    pub fn line(&self, line: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// `s` as a JSON string literal (ASCII only, so transcripts compare as plain text).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// What one run observed.
#[derive(Debug, Clone)]
pub struct Transcript {
    /// The events, then one closing line saying how the run ended (exit status, error,
    /// timeout), so a crash or a hang is itself a difference.
    pub lines: Vec<String>,
    /// The client's stderr (scripts) for the report; not compared.
    pub stderr: String,
}

/// A Tollgate started by the runner in front of the shared PostgreSQL.
struct ExtraTollgate {
    addr: SocketAddr,
    shutdown: ShutdownHandle,
}

impl Drop for ExtraTollgate {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}

/// One PostgreSQL with a transaction-mode and a session-mode Tollgate in front.
pub struct Targets {
    /// The transaction-mode Tollgate and the server (owned by its `Env`).
    pub env: Env,
    session: ExtraTollgate,
    next_db: AtomicU32,
}

impl Targets {
    /// Starts the server and both Tollgates, each `pool_size = 1`.
    pub async fn start() -> Result<Targets> {
        let env = Env::start(EnvOptions {
            pool_mode: "transaction",
            pool_size: 1,
            extra: RawConfig {
                connection_borrow_timeout: Some(BORROW_TIMEOUT_S),
                ..Default::default()
            },
            ..Default::default()
        })
        .await?;
        // The session-mode Tollgate shares the transaction one's auth file (Env wrote it).
        let raw = RawConfig {
            listen: Some("127.0.0.1:0".into()),
            upstream: Some(format!(
                "postgres://127.0.0.1:{}/?sslmode=disable",
                env.pg.port()
            )),
            auth_file: Some(env.dir.path().join("userlist.txt")),
            pool_mode: Some("session".into()),
            pool_size: Some(1),
            connection_borrow_timeout: Some(BORROW_TIMEOUT_S),
            admin_listen: Some("off".into()),
            ..Default::default()
        };
        let server = Server::bind(Config::validate(raw)?).await?;
        let session = ExtraTollgate {
            addr: server.local_addr()?,
            shutdown: server.shutdown_handle(),
        };
        tokio::spawn(server.run());
        Ok(Targets {
            env,
            session,
            next_db: AtomicU32::new(1),
        })
    }

    /// A fresh database owned by the app user, reached through `target`.
    pub async fn endpoint(&self, target: Target, together: bool) -> Result<Endpoint> {
        let db = format!(
            "diff_{}_{}",
            target.name(),
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        let sql = format!("CREATE DATABASE {db} OWNER {APP_USER}");
        let port = self.env.pg.port();
        let url = self.env.pg.superuser_url();
        let created = tokio::task::spawn_blocking(move || -> Result<()> {
            let out = std::process::Command::new(tollgate_localpg::find_bin("psql")?)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-c", &sql])
                .output()?;
            if !out.status.success() {
                bail!(
                    "CREATE DATABASE on port {port}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        });
        created.await??;
        let addr = match target {
            Target::Direct => SocketAddr::from(([127, 0, 0, 1], port)),
            Target::Transaction => self.env.addr,
            Target::Session => self.session.addr,
        };
        Ok(Endpoint {
            target,
            addr,
            db,
            user: APP_USER,
            password: APP_PASSWORD,
            together,
        })
    }
}

/// The interpreter a script needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// python3 with psycopg 3 and asyncpg.
    Python,
    /// node with node-postgres installed in tests/differential/node_modules.
    Node,
}

/// The folder of the client scripts (and of node-postgres' node_modules).
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("differential")
}

/// Fails, saying to run `.ci/run`, unless the drivers `lang`'s scripts use are installed.
/// Nothing is skipped: a missing driver is a failed test.
pub async fn require(lang: Lang) -> Result<()> {
    let mut cmd = match lang {
        Lang::Python => {
            let mut c = tokio::process::Command::new("python3");
            c.args(["-c", "import psycopg, asyncpg"])
                .env("PSYCOPG_IMPL", "python");
            c
        }
        Lang::Node => {
            let mut c = tokio::process::Command::new("node");
            c.args(["-e", "require('pg')"]);
            c
        }
    };
    cmd.current_dir(scripts_dir());
    let what = match lang {
        Lang::Python => {
            "python3 with psycopg 3 and asyncpg (pip install 'psycopg[binary]' asyncpg)"
        }
        Lang::Node => {
            "node with node-postgres in tests/differential/node_modules \
                        (npm install --prefix tests/differential)"
        }
    };
    let out = cmd
        .output()
        .await
        .with_context(|| format!("the differential tests need {what}: run .ci/run"))?;
    if !out.status.success() {
        bail!(
            "the differential tests need {what}: run .ci/run, which installs it\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A client script and how to run it.
pub struct Script {
    lang: Lang,
    file: &'static str,
    args: Vec<String>,
}

impl Script {
    /// `tests/differential/<file>`, run with python3.
    pub fn python(file: &'static str) -> Script {
        Script {
            lang: Lang::Python,
            file,
            args: Vec::new(),
        }
    }

    /// `tests/differential/<file>`, run with node.
    pub fn node(file: &'static str) -> Script {
        Script {
            lang: Lang::Node,
            file,
            args: Vec::new(),
        }
    }

    /// The script's arguments (it picks a case by its first one).
    pub fn args(mut self, args: &[&str]) -> Script {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Runs the script once against `ep`. The libpq environment variables (which psycopg,
    /// asyncpg and node-postgres all read) say where to connect.
    async fn run(&self, ep: &Endpoint, extra_env: &[(&str, &str)]) -> Result<Transcript> {
        let program = match self.lang {
            Lang::Python => "python3",
            Lang::Node => "node",
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg(scripts_dir().join(self.file))
            .args(&self.args)
            .current_dir(scripts_dir())
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", ep.addr.port().to_string())
            .env("PGUSER", ep.user)
            .env("PGPASSWORD", ep.password)
            .env("PGDATABASE", &ep.db)
            .env("PGSSLMODE", "disable")
            // psycopg on the system's libpq (PostgreSQL 15's, installed with the server), not
            // the one its binary wheel bundles: libpq 15 is what the defects were found
            // with, and the same libpq the psql-based tests use.
            .env("PSYCOPG_IMPL", "python")
            .env("PGCONNECT_TIMEOUT", "30")
            .env("DIFF_TARGET", ep.target.name())
            .env(
                "DIFF_CLIENTS",
                if ep.together {
                    "together"
                } else {
                    "one_after_another"
                },
            )
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(extra_env.iter().copied())
            .env_remove("PGOPTIONS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {program}: run .ci/run, which installs it"))?;
        let mut stdout = child.stdout.take().context("stdout")?;
        let mut stderr = child.stderr.take().context("stderr")?;
        let out_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf).await;
            buf
        });
        let err_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf).await;
            buf
        });
        let ending = match tokio::time::timeout(RUN_TIMEOUT, child.wait()).await {
            Ok(status) => match status?.code() {
                Some(0) => EXIT_OK.to_string(),
                Some(code) => format!("{{\"ev\":\"exit\",\"status\":{code}}}"),
                None => "{\"ev\":\"exit\",\"status\":\"killed by a signal\"}".to_string(),
            },
            Err(_) => {
                // Killing the child closes its pipes, so the readers return what it printed.
                let _ = child.start_kill();
                let _ = child.wait().await;
                timeout_line()
            }
        };
        let out = out_task.await?;
        let err = err_task.await?;
        let mut lines: Vec<String> = String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect();
        lines.push(ending);
        Ok(Transcript {
            lines,
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }
}

/// How a script run that exited 0 ends.
const EXIT_OK: &str = "{\"ev\":\"exit\",\"status\":0}";
/// How an in-process run that returned `Ok` ends.
const DONE: &str = "{\"ev\":\"done\"}";

fn timeout_line() -> String {
    format!(
        "{{\"ev\":\"timeout\",\"after_s\":{}}}",
        RUN_TIMEOUT.as_secs()
    )
}

/// Rewrites a transcript line, direct's and the pool mode's alike, before the two are
/// compared: for a documented pooling limit of that mode, never to hide a bug.
pub type Normalise = fn(Target, &str) -> String;

/// One differential comparison: what to run, against which pool modes, with what setup.
pub struct Case<'a> {
    /// Shown in reports.
    pub name: &'a str,
    /// The pool modes compared with direct.
    pub modes: &'a [Target],
    /// Extra environment for scripts.
    pub env: &'a [(&'a str, &'a str)],
    /// Applied to both sides of each comparison (see [`Normalise`]).
    pub normalise: Option<Normalise>,
    /// The program uses two clients; see [`Case::two_clients`].
    pub two_clients: bool,
    /// The program's first client pins its backend; see [`Case::first_client_pins`].
    pub first_client_pins: bool,
}

impl<'a> Case<'a> {
    /// A case run in both pool modes with nothing normalised.
    pub fn new(name: &'a str) -> Case<'a> {
        Case {
            name,
            modes: BOTH_MODES,
            env: &[],
            normalise: None,
            two_clients: false,
            first_client_pins: false,
        }
    }

    /// The program uses two clients and the first pins its backend in transaction mode
    /// (LISTEN, say): with `pool_size = 1` a second client connected meanwhile would wait for
    /// it in either mode (a pinned client keeps its backend: documented, not a bug), so the
    /// program runs them one after the other everywhere (`DIFF_CLIENTS=one_after_another`).
    pub fn first_client_pins(mut self) -> Case<'a> {
        self.first_client_pins = true;
        self
    }

    /// The program uses two clients. In transaction mode they are connected together and
    /// interleave their transactions on the one backend; in session mode with `pool_size = 1`
    /// the second would wait for the first to leave (a session keeps its backend: the mode's
    /// definition, not a bug), so there the program runs them one after the other, which
    /// still hands the first client's backend to the second. Each variant is compared with a
    /// direct run of the same variant (`DIFF_CLIENTS` = `together` / `one_after_another`).
    pub fn two_clients(mut self) -> Case<'a> {
        self.two_clients = true;
        self
    }

    /// Only these pool modes.
    pub fn modes(mut self, modes: &'a [Target]) -> Case<'a> {
        self.modes = modes;
        self
    }

    /// Extra environment for the script.
    pub fn env(mut self, env: &'a [(&'a str, &'a str)]) -> Case<'a> {
        self.env = env;
        self
    }

    /// Normalises lines before comparing (say why where it is defined).
    pub fn normalise(mut self, f: Normalise) -> Case<'a> {
        self.normalise = Some(f);
        self
    }
}

impl Targets {
    /// Runs `script` directly and in each of the case's pool modes (all at once: they use
    /// different servers' pools and databases) and returns a report of every difference
    /// (`Ok(())` when all agree).
    pub async fn check_script(&self, case: Case<'_>, script: Script) -> Result<()> {
        require(script.lang).await?;
        let script = &script;
        self.check(&case, |ep| async move {
            script
                .run(&ep, case.env)
                .await
                .unwrap_or_else(|e| Transcript {
                    lines: vec![format!(
                        "{{\"ev\":\"runner_error\",\"error\":{}}}",
                        json_string(&format!("{e:#}"))
                    )],
                    stderr: String::new(),
                })
        })
        .await
    }

    /// Like [`Targets::check_script`], for an in-process client: `f` gets the endpoint and a
    /// [`Log`] to write its transcript to.
    pub async fn check_in_process<F, Fut>(&self, case: Case<'_>, f: F) -> Result<()>
    where
        F: Fn(Endpoint, Log) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let f = &f;
        self.check(&case, |ep| async move {
            let log = Log::default();
            let ending = match tokio::time::timeout(RUN_TIMEOUT, f(ep, log.clone())).await {
                Ok(Ok(())) => DONE.to_string(),
                Ok(Err(e)) => format!(
                    "{{\"ev\":\"client_error\",\"error\":{}}}",
                    json_string(&format!("{e:#}"))
                ),
                Err(_) => timeout_line(),
            };
            let mut lines = log.take();
            lines.push(ending);
            Transcript {
                lines,
                stderr: String::new(),
            }
        })
        .await
    }

    async fn check<F, Fut>(&self, case: &Case<'_>, run: F) -> Result<()>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: Future<Output = Transcript>,
    {
        if case.first_client_pins {
            return self.check_variant(case, case.modes, false, &run).await;
        }
        if !case.two_clients {
            return self.check_variant(case, case.modes, true, &run).await;
        }
        let mut result = Ok(());
        for (mode, together) in [(Target::Transaction, true), (Target::Session, false)] {
            if case.modes.contains(&mode) {
                let r = self.check_variant(case, &[mode], together, &run).await;
                result = match (result, r) {
                    (Err(a), Err(b)) => Err(anyhow::anyhow!("{a:#}\n{b:#}")),
                    (a, b) => a.and(b),
                };
            }
        }
        result
    }

    async fn check_variant<F, Fut>(
        &self,
        case: &Case<'_>,
        modes: &[Target],
        together: bool,
        run: &F,
    ) -> Result<()>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: Future<Output = Transcript>,
    {
        let mut targets = vec![Target::Direct];
        targets.extend_from_slice(modes);
        let mut endpoints = Vec::new();
        for t in &targets {
            endpoints.push(self.endpoint(*t, together).await?);
        }
        let runs = futures_util::future::join_all(endpoints.into_iter().map(run)).await;
        // Each pair (direct, mode) is normalised for that mode, both sides alike.
        let normalise = |mode: Target, lines: &[String]| -> Vec<String> {
            match case.normalise {
                Some(f) => lines.iter().map(|l| f(mode, l)).collect(),
                None => lines.to_vec(),
            }
        };
        // Shown with --nocapture (and with a failure's output): what PostgreSQL itself said.
        let variant = if case.two_clients || case.first_client_pins {
            if together {
                " (two clients together)"
            } else {
                " (two clients one after another)"
            }
        } else {
            ""
        };
        eprintln!("--- {}{variant}: direct PostgreSQL's transcript", case.name);
        for l in &runs[0].lines {
            eprintln!("  {}", l.chars().take(SHOW_CHARS).collect::<String>());
        }
        // A reference run that crashed or hung proves nothing: the program itself is wrong.
        let clean = [EXIT_OK, DONE];
        if !runs[0]
            .lines
            .last()
            .is_some_and(|l| clean.contains(&l.as_str()))
        {
            bail!(
                "{}{variant}: the direct run (the reference) did not end cleanly: {}\n{}",
                case.name,
                runs[0].lines.last().map_or("", |l| l.as_str()),
                tail(&runs[0].stderr, 30)
            );
        }
        let mut report = String::new();
        for i in 1..targets.len() {
            let direct = normalise(targets[i], &runs[0].lines);
            let pooled = normalise(targets[i], &runs[i].lines);
            if pooled != direct {
                report.push_str(&format!(
                    "\n=== {}{variant}: {} differs from direct PostgreSQL (- direct, + through Tollgate) ===\n{}",
                    case.name,
                    targets[i].name(),
                    diff(&direct, &pooled)
                ));
                for (label, r) in [("direct", &runs[0]), (targets[i].name(), &runs[i])] {
                    if !r.stderr.trim().is_empty() {
                        report.push_str(&format!(
                            "--- stderr ({label}), last lines:\n{}\n",
                            tail(&r.stderr, 15)
                        ));
                    }
                }
            }
        }
        if report.is_empty() {
            eprintln!(
                "{}{variant}: {} lines, identical direct and in {}",
                case.name,
                runs[0].lines.len(),
                modes
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
            Ok(())
        } else {
            bail!("{report}")
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Lines longer than this are cut in diffs (a whole row set is hashed by the scripts anyway).
const SHOW_CHARS: usize = 400;

/// A line diff (longest common subsequence) with two lines of context around each change.
pub fn diff(a: &[String], b: &[String]) -> String {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (sign, line): ' ' same, '-' only direct, '+' only Tollgate.
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', &a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', &a[i]));
            i += 1;
        } else {
            ops.push(('+', &b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(2);
        let hi = (k + 2).min(ops.len() - 1);
        (lo..=hi).any(|x| ops[x].0 != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (sign, line)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            let shown: String = line.chars().take(SHOW_CHARS).collect();
            let cut = if shown.len() < line.len() {
                " [...]"
            } else {
                ""
            };
            out.push_str(&format!("{sign} {shown}{cut}\n"));
        } else {
            skipped = true;
        }
    }
    if skipped {
        out.push_str("  ...\n");
    }
    out
}

#[test]
fn diff_shows_changed_lines_with_context() {
    let a: Vec<String> = ["1", "2", "3", "4", "5", "6", "7"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let b: Vec<String> = ["1", "2", "3", "x", "5", "6", "7"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(diff(&a, &b), "  ...\n  2\n  3\n- 4\n+ x\n  5\n  6\n  ...\n");
}

#[test]
fn json_string_escapes_to_ascii() {
    assert_eq!(
        json_string("a\"b\\c\né€"),
        "\"a\\\"b\\\\c\\n\\u00e9\\u20ac\""
    );
}
