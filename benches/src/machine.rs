//! What the report says about the machine and the software measured.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Facts for the report's header; each is "unknown" when it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// "model name" from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs available to the harness.
    pub cores: usize,
    /// MemTotal, as "23.5 GiB".
    pub memory: String,
    /// /proc/sys/kernel/osrelease.
    pub kernel: String,
}

impl Machine {
    /// Reads /proc.
    pub fn read() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory: mem_total_kib(&meminfo).map_or_else(
                || "unknown".into(),
                |kib| format!("{:.1} GiB", kib as f64 / 1048576.0),
            ),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
        }
    }
}

/// The first "model name" in /proc/cpuinfo.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// MemTotal from /proc/meminfo, KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The commit Tollgate was built from: `git describe --always --dirty` in the workspace
/// ("46ca369-dirty" when the tree has uncommitted changes).
pub fn git_commit(workspace: &Path) -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(workspace)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown (not a git checkout)".into())
}

/// First line of `BIN --version`.
pub fn program_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_and_memory_from_proc_text() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(
            mem_total_kib("MemTotal:       24683520 kB\nMemFree: 1 kB\n"),
            Some(24683520)
        );
        assert_eq!(cpu_model(""), None);
    }

    #[test]
    fn this_machine_reads() {
        let m = Machine::read();
        assert!(m.cores >= 1);
        assert_ne!(m.kernel, "unknown");
    }
}
