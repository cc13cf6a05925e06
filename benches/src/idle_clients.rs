//! Thousands of idle client connections, opened by the harness itself with its minimal
//! protocol client (`wire_client`): TCP (optionally TLS), StartupMessage, md5 login,
//! ReadyForQuery, then silence until they are dropped.
//!
//! md5 because it costs the harness one hash per login where SCRAM would cost 4096 PBKDF2
//! rounds; the pooler's memory per idle client is the same either way once login is over.

use std::net::TcpStream;
use std::thread;

use anyhow::{Context, Result};

use crate::wire_client::{self, Login};

/// Threads opening connections in parallel.
const OPENER_THREADS: usize = 8;

/// Open, logged-in, silent connections; dropping this closes them all.
#[derive(Debug)]
pub struct HeldClients {
    /// The sockets. For TLS clients the rustls state was dropped after login (the harness never
    /// sends on them again, and keeping it would cost the harness memory, not the pooler).
    sockets: Vec<TcpStream>,
    /// The TLS version and cipher suite negotiated, e.g. "TLSv1_3 TLS13_AES_256_GCM_SHA384".
    pub tls_session: Option<String>,
}

impl HeldClients {
    /// How many are open.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }
}

/// Opens `count` connections that complete login, several at a time; fails if any does not
/// (naming how many did and the first error).
pub fn open(login: &Login, count: usize) -> Result<HeldClients> {
    let threads = OPENER_THREADS.min(count.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let login = login.clone();
            // Spread the remainder over the first threads.
            let share = count / threads + usize::from(t < count % threads);
            thread::Builder::new()
                .name(format!("idle-open-{t}"))
                .spawn(move || open_sequentially(&login, share))
        })
        .collect::<std::io::Result<_>>()
        .context("start the threads opening idle clients")?;

    let mut sockets = Vec::with_capacity(count);
    let mut tls_session = None;
    let mut first_error = None;
    for handle in handles {
        match handle.join() {
            Ok((opened, session, error)) => {
                sockets.extend(opened);
                tls_session = tls_session.or(session);
                if first_error.is_none() {
                    first_error = error;
                }
            }
            Err(_) => {
                first_error.get_or_insert_with(|| anyhow::anyhow!("an opener thread panicked"));
            }
        }
    }
    if let Some(err) = first_error {
        return Err(err.context(format!(
            "opened only {} of {count} idle clients to {}",
            sockets.len(),
            login.addr
        )));
    }
    Ok(HeldClients {
        sockets,
        tls_session,
    })
}

/// Opens up to `count` connections one after another, stopping at the first failure.
fn open_sequentially(
    login: &Login,
    count: usize,
) -> (Vec<TcpStream>, Option<String>, Option<anyhow::Error>) {
    let mut sockets = Vec::with_capacity(count);
    let mut session = None;
    for _ in 0..count {
        match wire_client::connect(login) {
            Ok(connected) => {
                session = session.or_else(|| connected.tls_session());
                sockets.push(connected.into_socket());
            }
            Err(err) => return (sockets, session, Some(err)),
        }
    }
    (sockets, session, None)
}
