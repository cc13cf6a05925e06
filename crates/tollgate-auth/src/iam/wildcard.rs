//! IAM-style wildcards: `*` matches any run of characters (including none), `?` exactly one.
//!
//! Used for the keys file's `allow` user patterns and for policy actions and resources. The
//! matcher backtracks only to the last `*`, so it runs in O(pattern × text) at worst, never
//! exponentially, whatever a pattern or user name looks like.

/// Whether `text` matches `pattern`, comparing characters exactly.
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was seen, and the text position it is currently assumed to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match (p.get(pi), t.get(ti)) {
            (Some('*'), _) => {
                star = Some((pi, ti));
                pi += 1;
            }
            (Some(pc), Some(tc)) if *pc == '?' || pc == tc => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry after it.
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    pi = sp + 1;
                    ti = st + 1;
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

/// Whether `text` matches `pattern` ignoring ASCII case (IAM compares action names so).
pub(crate) fn matches_ignore_case(pattern: &str, text: &str) -> bool {
    matches(&pattern.to_ascii_lowercase(), &text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_any_run_and_question_mark_one_character() {
        assert!(matches("app", "app"));
        assert!(!matches("app", "apps"));
        assert!(!matches("app", "ap"));
        assert!(matches("report_*", "report_"));
        assert!(matches("report_*", "report_daily"));
        assert!(!matches("report_*", "reports"));
        assert!(matches("*", ""));
        assert!(matches("*", "anything at all"));
        assert!(matches("**", "x"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(matches("a*b*c", "abc"));
        assert!(!matches("a*b*c", "acb"));
        assert!(matches("*ab", "aab"));
        assert!(matches("u?", "u1"));
        assert!(!matches("u?", "u"));
        assert!(!matches("u?", "u12"));
        assert!(matches("??", "üé"));
        assert!(!matches("", "x"));
        assert!(matches("", ""));
        assert!(!matches("App", "app"));
    }

    #[test]
    fn matches_arns_across_colons_and_slashes() {
        let arn = "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/app";
        assert!(matches("arn:aws:rds-db:*:*:dbuser:*/*", arn));
        assert!(matches(
            "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/app",
            arn
        ));
        assert!(matches(
            "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/a?p",
            arn
        ));
        assert!(!matches(
            "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/report_*",
            arn
        ));
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        let text = "a".repeat(2000);
        let pattern = format!("{}b", "a*".repeat(200));
        assert!(!matches(&pattern, &text));
    }

    #[test]
    fn ignore_case_variant_folds_ascii() {
        assert!(matches_ignore_case("RDS-DB:Connect", "rds-db:connect"));
        assert!(matches_ignore_case("rds-db:*", "rds-db:connect"));
        assert!(!matches_ignore_case("rds:*", "rds-db:connect"));
    }
}
