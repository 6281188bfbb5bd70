//! A TOML configuration file read over a settings type's defaults, and the one error type for
//! refusing a configuration, shared by the node (`tally run`) and the edge (`tally edge`).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("config setting {setting} is invalid: {message}")]
    Invalid {
        /// The setting's key.
        setting: &'static str,
        /// Why.
        message: String,
    },
}

/// Reads the TOML file at `path` into `T` (whose serde defaults fill the keys it leaves out).
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The serving deadlines `tally run` and `tally edge` share, in milliseconds, checked alike:
/// each of the stall and read deadlines between 100 ms and 10 minutes (a shorter one would
/// cut off honest clients on a slow network; a longer one lets a slow client hold a
/// connection for as long), the shutdown drain at most 10 minutes.
pub fn check_serving_deadlines(
    write_stall_ms: u64,
    header_read_timeout_ms: u64,
    body_read_timeout_ms: u64,
    shutdown_drain_ms: u64,
) -> Result<(), ConfigError> {
    const DEADLINE_MS: std::ops::RangeInclusive<u64> = 100..=600_000;
    let invalid = |setting, message: String| ConfigError::Invalid { setting, message };
    for (setting, value) in [
        ("write_stall_ms", write_stall_ms),
        ("header_read_timeout_ms", header_read_timeout_ms),
        ("body_read_timeout_ms", body_read_timeout_ms),
    ] {
        if !DEADLINE_MS.contains(&value) {
            return Err(invalid(setting, "must be between 100 and 600000".into()));
        }
    }
    if shutdown_drain_ms > *DEADLINE_MS.end() {
        return Err(invalid(
            "shutdown_drain_ms",
            "must be at most 600000".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_deadlines_are_refused_outside_their_ranges_by_name() {
        // Goal: node and edge refuse the same out-of-range deadlines, naming the setting.
        // Method: each setting at its bounds and one past them.
        let ok = |w, h, b, d| check_serving_deadlines(w, h, b, d).is_ok();
        assert!(ok(100, 100, 100, 0) && ok(600_000, 600_000, 600_000, 600_000));
        let refused = |w, h, b, d| match check_serving_deadlines(w, h, b, d) {
            Err(ConfigError::Invalid { setting, .. }) => setting,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(refused(99, 1_000, 1_000, 0), "write_stall_ms");
        assert_eq!(refused(1_000, 600_001, 1_000, 0), "header_read_timeout_ms");
        assert_eq!(refused(1_000, 1_000, 0, 0), "body_read_timeout_ms");
        assert_eq!(refused(1_000, 1_000, 1_000, 600_001), "shutdown_drain_ms");
    }
}
