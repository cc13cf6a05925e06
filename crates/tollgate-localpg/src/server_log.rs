//! Reading the end of the server's log for error messages and `Cluster::log_tail`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// How much of the end of the log we read; enough for many lines, cheap on a huge log.
const TAIL_BYTES: u64 = 64 * 1024;

/// The last `lines` lines of the file at `path`, or a note saying why there are none.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match read_end(path) {
        Ok(text) => last_lines(&text, lines),
        Err(err) => format!("(could not read {}: {err})", path.display()),
    }
}

/// The last [`TAIL_BYTES`] of the file, lossily decoded.
fn read_end(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last `n` lines of `text`, joined with newlines.
fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb\n", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn missing_file_is_described_not_fatal() {
        assert!(tail(Path::new("/nonexistent/log"), 3).starts_with("(could not read"));
    }
}
