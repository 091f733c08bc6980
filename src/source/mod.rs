//! Config sources and their contract with the reload loop: a source reads
//! its inputs, watches them, and sends each new candidate as a
//! [`StateEvent`] on one channel. The file source lives here; the etcd
//! source is [`crate::etcd::EtcdSource`].

pub(crate) mod file;

pub use file::FileSource;

use crate::config::ConfigError;
use crate::config::snapshot::Inputs;

/// What a source tells the reload loop.
#[derive(Debug)]
pub(crate) enum StateEvent {
    /// New inputs to compile and, if valid, publish.
    Candidate(Inputs),
    /// The environments whose health verdict is down changed: recompile the
    /// last inputs with their clients failed over.
    Down(std::collections::BTreeSet<String>),
    /// The source changed but could not be read.
    Unreadable {
        /// The source revision that could not be read.
        revision: u64,
        /// Why, each naming its file or key.
        errors: Vec<ConfigError>,
    },
}
