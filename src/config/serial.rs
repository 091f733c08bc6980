//! The SOA serial policy: serials never go backwards, across changes and
//! across restarts, and in etcd mode every edge reading the same revision
//! picks the same serial.
//!
//! - A zone whose content is unchanged keeps its serial.
//! - A changed zone takes its candidate serial if that is newer, else the
//!   previous serial plus one. The candidate is the file's serial; in etcd
//!   mode the file's serial plus the newest mod revision of the keys that
//!   feed the zone.
//! - After a restart the last serial served (from the cache folder) is the
//!   floor, kept as is when the content is the same.

/// Serial arithmetic (RFC 1982): is `a` after `b`?
pub(crate) fn serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

/// Where the configuration comes from, as far as serials care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SerialMode {
    /// Files: an unchanged zone keeps its serial whatever its file says.
    File,
    /// etcd: a zone also moves to a newer candidate when a feeding key
    /// moved on, so every edge agrees.
    Etcd,
}

/// What to serve for a zone that was just built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SerialChoice {
    /// Keep the live zone as it is (same content, same serial).
    KeepLive,
    /// Serve the new build with this serial.
    Serve(u32),
}

/// A serial with the content hash it was served for.
pub(crate) type Served = (u32, u64);

/// Picks the serial of a built zone with content hash `content`.
/// `live` is the zone in the live snapshot, `saved` what a previous run
/// served (only consulted when there is no live zone).
pub(crate) fn choose(
    candidate: u32,
    content: u64,
    live: Option<Served>,
    saved: Option<Served>,
    mode: SerialMode,
) -> SerialChoice {
    match live {
        Some((serial, hash))
            if hash == content && !(mode == SerialMode::Etcd && serial_gt(candidate, serial)) =>
        {
            SerialChoice::KeepLive
        }
        Some((serial, _)) if serial_gt(candidate, serial) => SerialChoice::Serve(candidate),
        Some((serial, _)) => SerialChoice::Serve(serial.wrapping_add(1)),
        None => SerialChoice::Serve(match saved {
            Some((floor, _)) if !serial_gt(floor, candidate) => candidate,
            Some((floor, hash)) if hash == content => floor,
            Some((floor, _)) => floor.wrapping_add(1),
            None => candidate,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::SerialChoice::{KeepLive, Serve};
    use super::SerialMode::{Etcd, File};
    use super::*;

    #[test]
    fn rfc1982_comparison_wraps() {
        assert!(serial_gt(2, 1));
        assert!(!serial_gt(1, 1));
        assert!(serial_gt(0, u32::MAX));
        assert!(!serial_gt(u32::MAX, 0));
    }

    #[test]
    fn unchanged_content_keeps_the_live_serial() {
        assert_eq!(choose(7, 42, Some((9, 42)), None, File), KeepLive);
        // A newer file serial alone does not move a file-mode zone...
        assert_eq!(choose(12, 42, Some((9, 42)), None, File), KeepLive);
        // ...but in etcd mode it follows the feeding keys' revision.
        assert_eq!(choose(12, 42, Some((9, 42)), None, Etcd), Serve(12));
        assert_eq!(choose(8, 42, Some((9, 42)), None, Etcd), KeepLive);
    }

    #[test]
    fn changed_content_never_goes_backwards() {
        assert_eq!(choose(12, 1, Some((9, 2)), None, File), Serve(12));
        assert_eq!(choose(5, 1, Some((9, 2)), None, File), Serve(10));
        assert_eq!(choose(9, 1, Some((9, 2)), None, Etcd), Serve(10));
        // Across the wrap: 5 is after u32::MAX; u32::MAX - 5 is not.
        assert_eq!(choose(5, 1, Some((u32::MAX, 2)), None, File), Serve(5));
        assert_eq!(
            choose(u32::MAX - 5, 1, Some((u32::MAX, 2)), None, File),
            Serve(0)
        );
    }

    #[test]
    fn after_a_restart_the_saved_serial_is_the_floor() {
        assert_eq!(choose(5, 1, None, None, File), Serve(5));
        assert_eq!(choose(12, 1, None, Some((9, 2)), File), Serve(12));
        assert_eq!(choose(9, 1, None, Some((9, 2)), File), Serve(9));
        assert_eq!(choose(5, 1, None, Some((9, 1)), File), Serve(9));
        assert_eq!(choose(5, 1, None, Some((9, 2)), File), Serve(10));
    }
}
