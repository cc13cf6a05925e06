//! Reads the Prometheus text exposition format (what `/metrics` serves): one [`Sample`] per
//! line that is not a comment. Small on purpose: `tollgate status` needs names, labels and
//! values, not types, timestamps or exemplars.
//! <https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>

/// One `name{labels} value [timestamp]` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Label pairs, in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    /// The value (`NaN`, `+Inf`, `-Inf` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A line that is not a sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Parses a whole exposition; comments (`# HELP`, `# TYPE`, others) and blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|why| ParseError { line: i + 1, why })?);
    }
    Ok(out)
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

/// Splits a leading name (metric or label) off `s`.
fn take_name(s: &str) -> Option<(&str, &str)> {
    let end = s
        .char_indices()
        .find(|(i, c)| !is_name_char(*c, *i == 0))
        .map_or(s.len(), |(i, _)| i);
    (end > 0).then(|| s.split_at(end))
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let (name, mut rest) = take_name(line).ok_or("expected a metric name")?;
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after.trim_start();
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = take_name(rest).ok_or("expected a label name")?;
            let after = after
                .trim_start()
                .strip_prefix('=')
                .ok_or("expected = after a label name")?;
            let after = after
                .trim_start()
                .strip_prefix('"')
                .ok_or("expected a quoted label value")?;
            let (value, after) = take_quoted(after)?;
            labels.push((key.to_string(), value));
            rest = after.trim_start();
            if let Some(after) = rest.strip_prefix(',') {
                rest = after.trim_start();
            } else if !rest.starts_with('}') {
                return Err("expected , or } after a label");
            }
        }
    }
    if !rest.starts_with([' ', '\t']) {
        return Err("expected a space before the value");
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("missing value")?;
    let value = value.parse::<f64>().map_err(|_| "value is not a number")?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| "timestamp is not an integer")?;
    }
    if fields.next().is_some() {
        return Err("unexpected text after the value");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Reads a label value up to its closing quote, undoing `\\`, `\"` and `\n`.
fn take_quoted(s: &str) -> Result<(String, &str), &'static str> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, s.get(i + 1..).unwrap_or_default())),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, c)) => out.push(c),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated label value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let text = "# HELP x An x.\n# TYPE x gauge\nx 3\n\n\
                    y_total{user=\"app\",database=\"shop\"} 12 1700000000000\n\
                    z{a=\"1\",} +Inf\nq{quantile=\"0.5\"} NaN\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!((s[0].name.as_str(), s[0].value), ("x", 3.0));
        assert!(s[0].labels.is_empty());
        assert_eq!(s[1].label("user"), Some("app"));
        assert_eq!(s[1].label("database"), Some("shop"));
        assert_eq!(s[1].value, 12.0);
        assert_eq!(s[2].value, f64::INFINITY);
        assert!(s[3].value.is_nan());
    }

    #[test]
    fn label_values_are_unescaped() {
        let s = parse("m{v=\"a\\\"b\\\\c\\nd, }\"} 1\n").unwrap();
        assert_eq!(s[0].label("v"), Some("a\"b\\c\nd, }"));
    }

    #[test]
    fn broken_lines_name_their_number() {
        for (text, why) in [
            ("ok 1\n{a=\"b\"} 1", "expected a metric name"),
            ("ok 1\nm{a=b} 1", "expected a quoted label value"),
            ("ok 1\nm{a=\"b} 1", "unterminated label value"),
            (
                "ok 1\nm{a=\"b\" c=\"d\"} 1",
                "expected , or } after a label",
            ),
            ("ok 1\nm one", "value is not a number"),
            ("ok 1\nm", "expected a space before the value"),
            ("ok 1\nm 1 2 3", "unexpected text after the value"),
        ] {
            assert_eq!(parse(text), Err(ParseError { line: 2, why }), "{text:?}");
        }
    }

    #[test]
    fn reads_what_the_renderer_writes() {
        let snap = crate::metrics::MetricsSnapshot {
            pools: vec![crate::metrics::PoolMetrics {
                user: "we\"ird\\".into(),
                database: "db".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let samples = parse(&crate::admin::prometheus::render(&snap)).unwrap();
        assert!(samples
            .iter()
            .any(|s| s.name == "tollgate_pool_size" && s.label("user") == Some("we\"ird\\")));
    }
}
