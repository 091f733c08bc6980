//! [`ConfigError`]: one problem that keeps a candidate from being published,
//! named by where it is (`file:line` or an etcd key).

use std::fmt;

/// A problem that keeps a candidate from being published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file or etcd key the problem is in.
    pub(crate) source: String,
    /// The line in that file, when known.
    pub(crate) line: Option<usize>,
    /// What is wrong, and what to do about it where that is clear.
    pub(crate) message: String,
}

impl ConfigError {
    /// An error about a whole file or key.
    pub(crate) fn at(source: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            source: source.into(),
            line: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) if l > 0 => write!(f, "{}:{}: {}", self.source, l, self.message),
            _ => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}
