//! Config sources: each produces candidate [`crate::snapshot::Inputs`] and
//! sends them to the reload loop as [`crate::reload::StateEvent`]s.

pub mod etcd;
pub mod file;

pub use etcd::EtcdSource;
pub use file::FileSource;
