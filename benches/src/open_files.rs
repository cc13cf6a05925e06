//! Raising the open-files limit: the harness holds thousands of idle client sockets, and the
//! poolers it starts (which inherit the limit) hold the other end of each.

use anyhow::{bail, Result};

/// The limit the harness asks for: PgBouncer's `max_client_conn` (20,000) plus room for its
/// backends and files.
pub const WANTED: u64 = 65_536;

/// Raises RLIMIT_NOFILE to [`WANTED`] (the hard limit too when we are root and it is lower);
/// returns the soft limit now in force, or fails if it is below `needed`.
pub fn raise(needed: u64) -> Result<u64> {
    let mut limit = get()?;
    if limit.rlim_cur >= WANTED {
        return Ok(limit.rlim_cur);
    }
    // Only root may raise the hard limit; others get as close as it allows.
    let hard = if tollgate_localpg::is_root() {
        limit.rlim_max.max(WANTED)
    } else {
        limit.rlim_max
    };
    let wanted = libc::rlimit {
        rlim_cur: WANTED.min(hard),
        rlim_max: hard,
    };
    // SAFETY: `wanted` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } != 0 {
        // Root may still be refused a hard limit above fs.nr_open; keep the old hard limit.
        let fallback = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &fallback) };
    }
    limit = get()?;
    if limit.rlim_cur < needed {
        bail!(
            "the open-files limit is {} but this run needs about {needed}; raise it \
             (ulimit -n {needed}) or pass a smaller --idle-clients",
            limit.rlim_cur
        );
    }
    Ok(limit.rlim_cur)
}

/// The current RLIMIT_NOFILE.
fn get() -> Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        bail!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_never_lowers_the_limit() {
        let before = get().unwrap().rlim_cur;
        let after = raise(16).unwrap();
        assert!(after >= before.min(WANTED));
    }
}
