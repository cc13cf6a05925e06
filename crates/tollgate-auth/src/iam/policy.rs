//! An optional IAM-policy-shaped document deciding who may `rds-db:connect` as whom.
//!
//! The shape is IAM's ("IAM JSON policy elements reference", AWS IAM User Guide), cut to what an
//! `rds-db:connect` decision needs:
//!
//! ```json
//! {"Version": "2012-10-17",
//!  "Statement": [{"Effect": "Allow", "Action": "rds-db:connect",
//!                 "Resource": "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/app",
//!                 "Principal": {"AWS": "AKIAIOSFODNN7EXAMPLE"}}]}
//! ```
//!
//! Evaluated as IAM evaluates: a matching `Deny` wins, else a matching `Allow` allows, else the
//! request is denied. `Action` matches ignoring case, `Resource` exactly; both take `*` and `?`.
//! A statement without `Principal` applies to every key; `Principal` names keys by access key id
//! or by the keys file's `principal`, or is `"*"`. Elements this evaluator cannot honour
//! (`Condition`, `NotAction`, `NotResource`, `NotPrincipal`, policy variables) make the document
//! fail to load: silently ignoring a `Condition` would grant more than its author meant.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::iam::error::PolicyError;
use crate::iam::wildcard;

/// The one action this proxy asks a policy about.
pub const CONNECT_ACTION: &str = "rds-db:connect";

/// What a policy says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An `Allow` statement matched and no `Deny` did.
    Allow,
    /// A `Deny` statement matched.
    ExplicitDeny,
    /// No statement matched.
    ImplicitDeny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
struct Statement {
    effect: Effect,
    actions: Vec<String>,
    resources: Vec<String>,
    /// `None` when the statement has no `Principal` and so applies to everyone.
    principals: Option<Vec<String>>,
}

/// A parsed policy document.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(rename = "Version")]
    version: Option<String>,
    #[serde(rename = "Id")]
    _id: Option<String>,
    #[serde(rename = "Statement")]
    statement: OneOrMany<RawStatement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatement {
    #[serde(rename = "Sid")]
    _sid: Option<String>,
    #[serde(rename = "Effect")]
    effect: String,
    #[serde(rename = "Action")]
    action: Option<OneOrMany<String>>,
    #[serde(rename = "Resource")]
    resource: Option<OneOrMany<String>>,
    #[serde(rename = "Principal")]
    principal: Option<Value>,
    // Recognised so they can be refused by name rather than as "unknown field".
    #[serde(rename = "Condition")]
    condition: Option<Value>,
    #[serde(rename = "NotAction")]
    not_action: Option<Value>,
    #[serde(rename = "NotResource")]
    not_resource: Option<Value>,
    #[serde(rename = "NotPrincipal")]
    not_principal: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

impl Policy {
    /// Parses a policy document from JSON text.
    pub fn parse(json: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            serde_json::from_str(json).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        if let Some(version) = &raw.version {
            if version != "2012-10-17" && version != "2008-10-17" {
                return Err(PolicyError::Syntax(format!(
                    "Version {version:?} is not an IAM policy language version \
                     (use \"2012-10-17\")"
                )));
            }
        }
        let statements = raw
            .statement
            .into_vec()
            .into_iter()
            .enumerate()
            .map(|(index, raw)| {
                statement(raw).map_err(|why| PolicyError::Unsupported {
                    statement: index + 1,
                    why,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { statements })
    }

    /// Reads and parses the policy document at `path`.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Decides `rds-db:connect` on `resource_arn` for a key known by any of `principals`
    /// (its access key id and, if configured, its principal name).
    pub fn evaluate(&self, principals: &[&str], resource_arn: &str) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            let applies = s
                .actions
                .iter()
                .any(|a| wildcard::matches_ignore_case(a, CONNECT_ACTION))
                && s.resources
                    .iter()
                    .any(|r| wildcard::matches(r, resource_arn))
                && s.principals.as_ref().is_none_or(|listed| {
                    listed
                        .iter()
                        .any(|p| p == "*" || principals.contains(&p.as_str()))
                });
            if applies {
                match s.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}

fn statement(raw: RawStatement) -> Result<Statement, String> {
    for (name, present) in [
        ("Condition", raw.condition.is_some()),
        ("NotAction", raw.not_action.is_some()),
        ("NotResource", raw.not_resource.is_some()),
        ("NotPrincipal", raw.not_principal.is_some()),
    ] {
        if present {
            return Err(format!(
                "{name} is not supported; Tollgate refuses the policy rather than ignore it \
                 (express the rule with Action, Resource and Principal)"
            ));
        }
    }
    let effect = match raw.effect.as_str() {
        "Allow" => Effect::Allow,
        "Deny" => Effect::Deny,
        other => {
            return Err(format!(
                "Effect is {other:?}; it must be \"Allow\" or \"Deny\""
            ))
        }
    };
    let actions = raw
        .action
        .ok_or("it has no Action; add \"Action\": \"rds-db:connect\"")?
        .into_vec();
    let resources = raw
        .resource
        .ok_or("it has no Resource; add the arn:aws:rds-db:...:dbuser:... it covers")?
        .into_vec();
    if actions.is_empty() || resources.is_empty() {
        return Err("its Action or Resource list is empty".to_owned());
    }
    if resources.iter().any(|r| r.contains("${")) {
        return Err("policy variables (${...}) in Resource are not supported".to_owned());
    }
    let principals = raw.principal.map(principal).transpose()?;
    Ok(Statement {
        effect,
        actions,
        resources,
        principals,
    })
}

/// Reads `"Principal": "*"` or `"Principal": {"AWS": "..." | ["...", ...]}`.
fn principal(value: Value) -> Result<Vec<String>, String> {
    const SHAPE: &str = "Principal must be \"*\" or {\"AWS\": name or [names]}";
    match value {
        Value::String(s) if s == "*" => Ok(vec![s]),
        Value::Object(map) => {
            if let Some(other) = map.keys().find(|k| *k != "AWS") {
                return Err(format!(
                    "Principal type {other:?} is not supported; only AWS principals sign tokens"
                ));
            }
            let names = match map.get("AWS") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned).ok_or(SHAPE.to_owned()))
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err(SHAPE.to_owned()),
            };
            if names.is_empty() {
                return Err("Principal lists no AWS principals".to_owned());
            }
            Ok(names)
        }
        _ => Err(SHAPE.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/app";
    const ADMIN: &str = "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/admin";
    const REPORT: &str = "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/report_daily";

    fn policy(json: &str) -> Policy {
        Policy::parse(json).unwrap()
    }

    #[test]
    fn allow_applies_to_matching_resources_only() {
        let p = policy(
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": "rds-db:connect",
                "Resource": ["arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/app",
                             "arn:aws:rds-db:us-east-1:123456789012:dbuser:prx-0abc/report_*"]}]}"#,
        );
        assert_eq!(p.evaluate(&["AKIA1"], APP), Decision::Allow);
        assert_eq!(p.evaluate(&["AKIA1"], REPORT), Decision::Allow);
        assert_eq!(p.evaluate(&["AKIA1"], ADMIN), Decision::ImplicitDeny);
    }

    #[test]
    fn explicit_deny_wins_over_any_allow() {
        let p = policy(
            r#"{"Statement": [
                {"Effect": "Allow", "Action": "rds-db:*", "Resource": "*"},
                {"Effect": "Deny", "Action": ["rds-db:connect"],
                 "Resource": "arn:aws:rds-db:*:*:dbuser:*/admin"}]}"#,
        );
        assert_eq!(p.evaluate(&["AKIA1"], APP), Decision::Allow);
        assert_eq!(p.evaluate(&["AKIA1"], ADMIN), Decision::ExplicitDeny);
    }

    #[test]
    fn actions_match_ignoring_case_and_other_actions_do_not_apply() {
        let p = policy(
            r#"{"Statement": {"Effect": "Allow", "Action": "RDS-DB:Connect", "Resource": "*"}}"#,
        );
        assert_eq!(p.evaluate(&[], APP), Decision::Allow);
        let p = policy(r#"{"Statement": {"Effect": "Allow", "Action": "rds:*", "Resource": "*"}}"#);
        assert_eq!(p.evaluate(&[], APP), Decision::ImplicitDeny);
        let p = policy(
            r#"{"Statement": {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "*"}}"#,
        );
        assert_eq!(p.evaluate(&[], APP), Decision::ImplicitDeny);
    }

    #[test]
    fn principals_match_by_key_id_or_principal_name_or_star() {
        let p = policy(
            r#"{"Statement": [
                {"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*",
                 "Principal": {"AWS": ["AKIAAPP", "arn:aws:iam::123456789012:user/ops"]}},
                {"Effect": "Deny", "Action": "rds-db:connect", "Resource": "*",
                 "Principal": {"AWS": "AKIABANNED"}}]}"#,
        );
        assert_eq!(p.evaluate(&["AKIAAPP"], APP), Decision::Allow);
        assert_eq!(
            p.evaluate(&["AKIAOPS", "arn:aws:iam::123456789012:user/ops"], APP),
            Decision::Allow
        );
        assert_eq!(p.evaluate(&["AKIAOTHER"], APP), Decision::ImplicitDeny);
        assert_eq!(p.evaluate(&["AKIABANNED"], APP), Decision::ExplicitDeny);
        let star = policy(
            r#"{"Statement": {"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*", "Principal": "*"}}"#,
        );
        assert_eq!(star.evaluate(&["AKIAANY"], APP), Decision::Allow);
        let star = policy(
            r#"{"Statement": {"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*", "Principal": {"AWS": "*"}}}"#,
        );
        assert_eq!(star.evaluate(&["AKIAANY"], APP), Decision::Allow);
    }

    #[test]
    fn empty_statement_list_denies_everything() {
        let p = policy(r#"{"Version": "2012-10-17", "Statement": []}"#);
        assert_eq!(p.evaluate(&["AKIA1"], APP), Decision::ImplicitDeny);
    }

    #[test]
    fn refuses_what_it_cannot_honour_by_name() {
        let cases = [
            (
                r#"{"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}"#,
                "Condition",
            ),
            (
                r#"{"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}"#,
                "NotAction",
            ),
            (
                r#"{"Effect": "Allow", "Action": "rds-db:connect", "NotResource": "*"}"#,
                "NotResource",
            ),
            (
                r#"{"Effect": "Deny", "Action": "rds-db:connect", "Resource": "*", "NotPrincipal": {"AWS": "x"}}"#,
                "NotPrincipal",
            ),
            (
                r#"{"Effect": "allow", "Action": "rds-db:connect", "Resource": "*"}"#,
                "Effect",
            ),
            (r#"{"Effect": "Allow", "Resource": "*"}"#, "no Action"),
            (
                r#"{"Effect": "Allow", "Action": "rds-db:connect"}"#,
                "no Resource",
            ),
            (
                r#"{"Effect": "Allow", "Action": [], "Resource": "*"}"#,
                "empty",
            ),
            (
                r#"{"Effect": "Allow", "Action": "rds-db:connect", "Resource": "arn:aws:rds-db:*:*:dbuser:*/${aws:username}"}"#,
                "policy variables",
            ),
            (
                r#"{"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*", "Principal": {"Service": "rds.amazonaws.com"}}"#,
                "Service",
            ),
            (
                r#"{"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*", "Principal": "AKIA1"}"#,
                "Principal must be",
            ),
            (
                r#"{"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*", "Principal": {"AWS": [1]}}"#,
                "Principal must be",
            ),
            (
                r#"{"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*", "Principal": {"AWS": []}}"#,
                "no AWS principals",
            ),
        ];
        for (stmt, why) in cases {
            let json = format!(
                r#"{{"Statement": [{{"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*"}}, {stmt}]}}"#
            );
            match Policy::parse(&json) {
                Err(e @ PolicyError::Unsupported { statement: 2, .. }) => {
                    assert!(e.to_string().contains(why), "{stmt}: {e}");
                }
                other => panic!("{stmt}: expected statement 2 refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_malformed_documents() {
        for json in [
            "",
            "[]",
            "{}",
            r#"{"Version": "2012-10-17"}"#,
            r#"{"Version": "2020-01-01", "Statement": []}"#,
            r#"{"Statement": [], "Extra": 1}"#,
            r#"{"Statement": [{"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*", "Typo": 1}]}"#,
            r#"{"Statement": [{"Effect": "Allow", "Action": 5, "Resource": "*"}]}"#,
        ] {
            assert!(
                matches!(Policy::parse(json), Err(PolicyError::Syntax(_))),
                "{json}"
            );
        }
    }

    #[test]
    fn load_reads_a_file_and_names_it_on_error() {
        let dir = std::env::temp_dir().join(format!("tollgate-iam-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.json");
        std::fs::write(
            &path,
            r#"{"Statement": {"Effect": "Allow", "Action": "rds-db:connect", "Resource": "*"}}"#,
        )
        .unwrap();
        assert_eq!(
            Policy::load(&path).unwrap().evaluate(&[], APP),
            Decision::Allow
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        match Policy::load(&path) {
            Err(PolicyError::Io { path: p, .. }) => assert_eq!(p, path.display().to_string()),
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}
