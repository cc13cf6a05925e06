//! Reading pgbench's end-of-run summary.

use anyhow::{bail, Context, Result};

/// The counts pgbench prints after a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgbenchSummary {
    /// "number of transactions actually processed: N/M" — N.
    pub processed: u64,
    /// ... M, when the run had a fixed transaction count (`-t`).
    pub planned: Option<u64>,
    /// "number of failed transactions: F (x%)" (pgbench 15+; 0 when absent).
    pub failed: u64,
}

impl PgbenchSummary {
    /// Parses pgbench's stdout.
    pub fn parse(stdout: &str) -> Result<Self> {
        let mut processed = None;
        let mut planned = None;
        let mut failed = 0;
        for line in stdout.lines() {
            if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
                let rest = rest.trim();
                let (done, of) = match rest.split_once('/') {
                    Some((d, o)) => (d, Some(o)),
                    None => (rest, None),
                };
                processed = Some(done.trim().parse::<u64>().context("processed count")?);
                planned = of
                    .map(|o| o.trim().parse::<u64>().context("planned count"))
                    .transpose()?;
            } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
                let n = rest.split_whitespace().next().unwrap_or("");
                failed = n
                    .parse()
                    .with_context(|| format!("failed count in {line:?}"))?;
            }
        }
        let Some(processed) = processed else {
            bail!("no pgbench summary in output:\n{stdout}");
        };
        Ok(PgbenchSummary {
            processed,
            planned,
            failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pgbench_15_summary() {
        let out = "transaction type: <builtin: TPC-B (sort of)>\n\
            number of transactions actually processed: 200/200\n\
            number of failed transactions: 0 (0.000%)\n";
        assert_eq!(
            PgbenchSummary::parse(out).unwrap(),
            PgbenchSummary {
                processed: 200,
                planned: Some(200),
                failed: 0
            }
        );
    }
}
