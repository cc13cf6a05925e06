//! CPU time, memory and machine load read from `/proc` (Linux only).
//!
//! The parsers are pure functions over the file text so they can be tested; the readers around
//! them only open the files. See proc(5) for every field used here.

use std::fs;

use anyhow::{bail, Context, Result};

/// Clock ticks per second, the unit of the CPU fields in `/proc/PID/stat` and `/proc/stat`.
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// The fields of `/proc/PID/stat` the harness needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidStat {
    /// Parent process id (field 4).
    pub ppid: u32,
    /// CPU ticks in user mode plus kernel mode (fields 14 and 15), all threads.
    pub own_ticks: u64,
    /// CPU ticks of children it has waited for (fields 16 and 17): exited backends, say.
    pub reaped_children_ticks: u64,
}

/// Parses the text of `/proc/PID/stat`.
///
/// The command name (field 2) is in parentheses and may itself hold spaces or ')', so the
/// fields are counted from the last ')'.
pub fn parse_pid_stat(text: &str) -> Result<PidStat> {
    let close = text
        .rfind(')')
        .with_context(|| format!("no ')' in /proc/PID/stat text {text:?}"))?;
    let rest = text.get(close + 1..).unwrap_or("");
    // rest starts at field 3 (state); field n is rest[n - 3].
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("/proc/PID/stat has no field {n}"))?
            .parse::<u64>()
            .with_context(|| format!("/proc/PID/stat field {n} is not a number"))
    };
    let ppid = u32::try_from(field(4)?).context("ppid out of range")?;
    Ok(PidStat {
        ppid,
        own_ticks: field(14)? + field(15)?,
        reaped_children_ticks: field(16)? + field(17)?,
    })
}

/// Reads and parses `/proc/PID/stat`.
pub fn pid_stat(pid: u32) -> Result<PidStat> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_pid_stat(&text).with_context(|| format!("parse {path}"))
}

/// CPU seconds used by one process (all its threads), not counting children.
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    Ok(pid_stat(pid)?.own_ticks as f64 / clock_ticks_per_second())
}

/// CPU seconds used by a process tree rooted at `root` (the postmaster): its own time, the time
/// of children it has already reaped, and the time of every live direct child.
///
/// PostgreSQL backends are direct children of the postmaster and have no children of their
/// own, so one level is enough. The sum only grows, so before/after deltas are exact even when
/// backends come and go between the two readings.
pub fn tree_cpu_seconds(root: u32) -> Result<f64> {
    let root_stat = pid_stat(root)?;
    let mut ticks = root_stat.own_ticks + root_stat.reaped_children_ticks;
    let entries = fs::read_dir("/proc").context("list /proc")?;
    for entry in entries.filter_map(std::result::Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit between listing and reading; its time is then in the parent's
        // reaped-children fields (or will be, once reaped).
        if let Ok(stat) = pid_stat(pid) {
            if stat.ppid == root {
                ticks += stat.own_ticks;
            }
        }
    }
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// Parses `VmRSS:   1234 kB` out of `/proc/PID/status`; the value in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line in /proc/PID/status")?;
    let mut words = line.split_whitespace().skip(1);
    let value = words.next().context("VmRSS line has no value")?;
    if words.next() != Some("kB") {
        bail!("VmRSS line {line:?} is not in kB");
    }
    value
        .parse()
        .with_context(|| format!("VmRSS value in {line:?}"))
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_vm_rss_kib(&text).with_context(|| format!("parse {path}"))
}

/// Number of open file descriptors of a process (sockets included).
pub fn open_fds(pid: u32) -> Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(fs::read_dir(&path)
        .with_context(|| format!("list {path}"))?
        .count())
}

/// Busy and total CPU ticks of the whole machine, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SystemTicks {
    /// user + nice + system + irq + softirq + steal (guest time is already inside user).
    pub busy: u64,
    /// busy + idle + iowait.
    pub total: u64,
}

/// Parses the aggregate `cpu  ...` line of `/proc/stat`.
pub fn parse_system_ticks(stat: &str) -> Result<SystemTicks> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no aggregate cpu line in /proc/stat")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse::<u64>())
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("non-numeric field in {line:?}"))?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = values[..] else {
        bail!("/proc/stat cpu line {line:?} has fewer than 8 fields");
    };
    let busy = user + nice + system + irq + softirq + steal;
    Ok(SystemTicks {
        busy,
        total: busy + idle + iowait,
    })
}

/// Reads the machine's CPU ticks.
pub fn system_ticks() -> Result<SystemTicks> {
    let text = fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    parse_system_ticks(&text)
}

/// The 1-minute load average from `/proc/loadavg`.
pub fn loadavg_1min() -> Result<f64> {
    let text = fs::read_to_string("/proc/loadavg").context("read /proc/loadavg")?;
    text.split_whitespace()
        .next()
        .context("empty /proc/loadavg")?
        .parse()
        .with_context(|| format!("parse /proc/loadavg {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_stat_counts_fields_after_the_last_parenthesis() {
        // A command name with a space and a ')' inside, as a process may choose.
        let text = "4242 (postgres: x) y) S 4000 4242 4242 0 -1 4194560 500 0 0 0 \
                    120 30 7 3 20 0 1 0 100 1000 200 18446744073709551615";
        let stat = parse_pid_stat(text).unwrap();
        assert_eq!(
            stat,
            PidStat {
                ppid: 4000,
                own_ticks: 150,
                reaped_children_ticks: 10
            }
        );
    }

    #[test]
    fn pid_stat_of_this_process_parses() {
        let stat = pid_stat(std::process::id()).unwrap();
        assert!(stat.ppid > 0);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tpgbouncer\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss_kib(status).unwrap(), 5120);
        assert!(parse_vm_rss_kib("Name:\tx\n").is_err());
    }

    #[test]
    fn system_ticks_leave_idle_and_iowait_out_of_busy() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 40 0\ncpu0 50 2 25 500 10 0 1 1 0 0\n";
        assert_eq!(
            parse_system_ticks(stat).unwrap(),
            SystemTicks {
                busy: 161,
                total: 1181
            }
        );
    }
}
