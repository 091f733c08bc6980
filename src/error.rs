//! Errors that reach the command line with an exit code of their own. Every
//! other failure is an `anyhow::Error` printed once by `main` (exit 1).

use crate::config::ConfigError;

/// A command was called wrongly (exit 2): a missing flag, a conflicting
/// option, no terminal to confirm on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The configuration is invalid (exit 1): `main` prints one line per error
/// and a count.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Invalid(pub Vec<String>);

impl Invalid {
    /// From the compiler's errors.
    pub fn from_errors(errors: &[ConfigError]) -> Invalid {
        Invalid(errors.iter().map(ToString::to_string).collect())
    }
}

impl From<Vec<ConfigError>> for Invalid {
    fn from(errors: Vec<ConfigError>) -> Invalid {
        Invalid::from_errors(&errors)
    }
}
