//! A secret's value as RDS writes it (`{"username": ..., "password": ..., "engine": ...,
//! "host": ..., "port": ..., "dbname": ...}`; RDS-managed master secrets hold only the first
//! two), parsed and checked with an error that says what is wrong. Pure.

use zeroize::Zeroizing;

/// One secret's credentials.
pub struct SecretValue {
    /// The database user.
    pub username: String,
    /// Its password, wiped when dropped.
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What is wrong with a secret's value (never quoting it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a JSON object.
    #[error("its value is not a JSON object (RDS format: {{\"username\": \"...\", \"password\": \"...\"}})")]
    NotJson,
    /// A required field is absent or not a string.
    #[error("its value has no string field \"{0}\"")]
    MissingField(&'static str),
    /// The engine is not PostgreSQL's.
    #[error("its engine is {0:?}, not postgres: it is not a PostgreSQL secret")]
    WrongEngine(String),
    /// A binary secret.
    #[error("it holds a binary value, not the RDS-format JSON string")]
    Binary,
}

/// Parses the RDS-format JSON text.
pub fn parse(text: &str) -> Result<SecretValue, ValueError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|_| ValueError::NotJson)?;
    let obj = v.as_object().ok_or(ValueError::NotJson)?;
    let field = |k: &'static str| {
        obj.get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .ok_or(ValueError::MissingField(k))
    };
    let username = field("username")?.to_string();
    let password = Zeroizing::new(field("password")?.to_string());
    if let Some(engine) = obj.get("engine").and_then(|e| e.as_str()) {
        if !matches!(
            engine.to_ascii_lowercase().as_str(),
            "postgres" | "postgresql" | "aurora-postgresql"
        ) {
            return Err(ValueError::WrongEngine(engine.to_string()));
        }
    }
    Ok(SecretValue { username, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_format_secrets_parse_with_or_without_the_optional_fields() {
        let v = parse(r#"{"username":"app_user","password":"p4ss","engine":"postgres","host":"db","port":5432,"dbname":"app"}"#).unwrap();
        assert_eq!(
            (v.username.as_str(), v.password.as_str()),
            ("app_user", "p4ss")
        );
        assert!(parse(r#"{"username":"master","password":"x"}"#).is_ok());
        assert!(!format!("{v:?}").contains("p4ss"));
    }

    #[test]
    fn each_bad_value_has_its_own_error() {
        assert_eq!(parse("not json").unwrap_err(), ValueError::NotJson);
        assert_eq!(parse("[1]").unwrap_err(), ValueError::NotJson);
        assert_eq!(
            parse(r#"{"password":"x"}"#).unwrap_err(),
            ValueError::MissingField("username")
        );
        assert_eq!(
            parse(r#"{"username":"u"}"#).unwrap_err(),
            ValueError::MissingField("password")
        );
        assert_eq!(
            parse(r#"{"username":"u","password":"x","engine":"mysql"}"#).unwrap_err(),
            ValueError::WrongEngine("mysql".into())
        );
    }
}
