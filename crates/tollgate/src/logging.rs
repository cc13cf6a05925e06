//! Structured logs through `tracing`: text for people, JSON for log shippers. The level filter
//! sits behind a reload handle so a config reload (SIGHUP, RELOAD) can change it live.

use crate::config::LogFormat;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// Swaps the installed filter (set once, by [`init`]).
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();

/// Installs the global subscriber; `RUST_LOG` overrides `level` when set.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // The handle's type names the formatter, so each arm keeps its own.
    let installed = match format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.try_init().map(|()| -> SetFilter {
                Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
            })
        }
        LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.try_init().map(|()| -> SetFilter {
                Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
            })
        }
    };
    if let Ok(set) = installed {
        let _ = SET_FILTER.set(set);
    }
}

/// Checks that `level` is a valid filter (before a reload commits to it).
pub fn check_level(level: &str) -> Result<(), String> {
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| format!("{level:?} is not a log filter: {e}"))
}

/// What [`set_level`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelChange {
    /// The new filter is in force.
    Applied,
    /// `RUST_LOG` is set and wins over `log_level`, as at start.
    OverriddenByRustLog,
    /// Logging was not set up by [`init`] (embedded use, tests): nothing to change.
    NotInstalled,
}

/// Changes the log filter of the subscriber [`init`] installed.
pub fn set_level(level: &str) -> Result<LevelChange, String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("{level:?}: {e}"))?;
    let Some(set) = SET_FILTER.get() else {
        return Ok(LevelChange::NotInstalled);
    };
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(LevelChange::OverriddenByRustLog);
    }
    set(filter)?;
    Ok(LevelChange::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filters_are_refused_before_anything_changes() {
        assert!(check_level("info,tollgate=debug").is_ok());
        let err = check_level("tollgate=loud").unwrap_err();
        assert!(err.contains("tollgate=loud"), "{err}");
        assert!(set_level("tollgate=loud").is_err());
    }
}
