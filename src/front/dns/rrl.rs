//! Response rate limiting for DNS over UDP, with the semantics of Knot's
//! `mod-rrl`: at most `rate` responses per second for each source network
//! (/24 for IPv4, /56 for IPv6), response class and (for answers and empty
//! answers) name; past it every `slip`-th response goes out truncated (TC=1,
//! no records, so a real client retries over TCP) and the others are
//! dropped. Networks in the whitelist are never limited. The table is
//! bounded: a fixed array of buckets shared by the UDP threads, updated with
//! one compare-and-swap per response (keys that collide share a bucket).
//!
//! Off unless `--rrl-rate` is given, as in Knot: the right rate depends on
//! how many clients sit behind each resolver.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ipnet::IpNet;

use crate::proto::wire::name_len;

/// Buckets in the table (a power of two).
const BUCKETS: usize = 1 << 16;

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the rate.
    Send,
    /// Over the rate: send it truncated.
    Slip,
    /// Over the rate: send nothing.
    Drop,
}

/// The limiter shared by the UDP threads.
pub(crate) struct Rrl {
    rate: u32,
    slip: u32,
    whitelist: Vec<IpNet>,
    /// Per bucket: the second (since `start`) in the high 32 bits, the
    /// responses counted in it in the low 32.
    table: Box<[AtomicU64]>,
    start: Instant,
}

/// Response classes that are limited separately.
#[derive(Hash)]
enum Class {
    Answer,
    Empty,
    NxDomain,
    Error,
}

impl Rrl {
    /// `rate` responses per second per key; every `slip`-th limited
    /// response truncated (0: none); `whitelist` never limited.
    pub(crate) fn new(rate: u32, slip: u32, whitelist: Vec<IpNet>) -> Rrl {
        Rrl {
            rate,
            slip,
            whitelist,
            table: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            start: Instant::now(),
        }
    }

    /// The verdict for `answer` (a whole response) to `src`.
    pub(crate) fn check(&self, src: IpAddr, answer: &[u8]) -> Verdict {
        if answer.len() < 12 || self.whitelist.iter().any(|n| n.contains(&src)) {
            return Verdict::Send;
        }
        let mut h = rustc_hash::FxHasher::default();
        match src {
            IpAddr::V4(a) => a.octets()[..3].hash(&mut h),
            IpAddr::V6(a) => a.octets()[..7].hash(&mut h),
        }
        let rcode = answer[3] & 0xf;
        let ancount = u16::from_be_bytes([answer[6], answer[7]]);
        let class = match rcode {
            0 if ancount > 0 => Class::Answer,
            0 => Class::Empty,
            3 => Class::NxDomain,
            _ => Class::Error,
        };
        if matches!(class, Class::Answer | Class::Empty) {
            // The question's name, case-folded.
            let end = 12 + name_len(&answer[12..]).min(answer.len() - 12);
            for b in &answer[12..end] {
                h.write_u8(b.to_ascii_lowercase());
            }
        }
        class.hash(&mut h);
        #[allow(clippy::cast_possible_truncation)] // a mask below BUCKETS
        let slot = &self.table[(h.finish() as usize) & (BUCKETS - 1)];
        let now = self.start.elapsed().as_secs() & 0xffff_ffff;
        let mut count = 1;
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            count = if v >> 32 == now {
                (v & 0xffff_ffff) + 1
            } else {
                1
            };
            Some((now << 32) | count.min(0xffff_ffff))
        });
        let over = count.saturating_sub(u64::from(self.rate));
        if over == 0 {
            Verdict::Send
        } else if self.slip > 0 && over % u64::from(self.slip) == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// Cuts a response down to its header and question, with TC set and no
/// records (what a slipped response carries).
pub(crate) fn truncate(answer: &mut Vec<u8>) {
    if answer.len() < 12 {
        return;
    }
    let qdcount = u16::from_be_bytes([answer[4], answer[5]]);
    let end = if qdcount > 0 {
        (12 + name_len(&answer[12..]) + 4).min(answer.len())
    } else {
        12
    };
    answer.truncate(end);
    answer[2] |= 0x02;
    answer[6..12].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(name: &[u8], rcode: u8, ancount: u16) -> Vec<u8> {
        let mut a = vec![0x12, 0x34, 0x84, rcode, 0, 1];
        a.extend_from_slice(&ancount.to_be_bytes());
        a.extend_from_slice(&[0, 0, 0, 0]);
        a.extend_from_slice(name);
        a.extend_from_slice(&[0, 1, 0, 1]);
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        a
    }

    #[test]
    fn limits_per_network_class_and_name_with_slip() {
        let rrl = Rrl::new(10, 2, vec!["198.51.100.0/24".parse().unwrap()]);
        let a = answer(b"\x03www\x07example\x00", 0, 1);
        let src: IpAddr = "192.0.2.7".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..30).map(|_| rrl.check(src, &a)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == Verdict::Send));
        let slipped = verdicts[10..]
            .iter()
            .filter(|v| **v == Verdict::Slip)
            .count();
        let dropped = verdicts[10..]
            .iter()
            .filter(|v| **v == Verdict::Drop)
            .count();
        assert_eq!((slipped, dropped), (10, 10));
        // Same /24, other address: the same bucket.
        assert_ne!(rrl.check("192.0.2.200".parse().unwrap(), &a), Verdict::Send);
        // Another network, another name, another class: their own buckets.
        assert_eq!(rrl.check("192.0.3.7".parse().unwrap(), &a), Verdict::Send);
        let other = answer(b"\x04mail\x07example\x00", 0, 1);
        assert_eq!(rrl.check(src, &other), Verdict::Send);
        assert_eq!(
            rrl.check(src, &answer(b"\x03www\x07example\x00", 3, 0)),
            Verdict::Send
        );
        // Case does not make a new key.
        assert_ne!(
            rrl.check(src, &answer(b"\x03WWW\x07example\x00", 0, 1)),
            Verdict::Send
        );
        // The whitelist is never limited.
        let white: IpAddr = "198.51.100.9".parse().unwrap();
        assert!((0..100).all(|_| rrl.check(white, &a) == Verdict::Send));
    }

    #[test]
    fn truncated_answers_keep_header_and_question() {
        let mut a = answer(b"\x03www\x07example\x00", 0, 1);
        truncate(&mut a);
        assert_eq!(a.len(), 12 + 13 + 4);
        assert_eq!(a[2] & 0x02, 0x02, "TC set");
        assert_eq!(&a[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
    }
}
