//! Limits the fronts share: open connections per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Open connections per client address.
#[derive(Debug, Default)]
pub(crate) struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    /// Counts a new connection from `ip`; false (and nothing counted) when
    /// the address already has `limit`.
    pub(crate) fn admit(&self, ip: IpAddr, limit: usize) -> bool {
        let mut m = self.0.lock().expect("not poisoned");
        let n = m.entry(ip).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    /// Forgets a closed connection from `ip`.
    pub(crate) fn release(&self, ip: IpAddr) {
        let mut m = self.0.lock().expect("not poisoned");
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_share_is_counted_and_released() {
        let p = PerAddress::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(p.admit(a, 2) && p.admit(a, 2));
        assert!(!p.admit(a, 2), "a third from the same address is refused");
        assert!(p.admit(b, 2), "another address is not affected");
        p.release(a);
        assert!(p.admit(a, 2));
        p.release(a);
        p.release(a);
        p.release(b);
        assert!(p.0.lock().unwrap().is_empty());
    }
}
