//! The one retry schedule of everything that retries (etcd calls, file
//! reads that failed for a transient reason): 100 ms doubling to 1 s, each
//! wait ±20% so edges that lost etcd together do not retry in step.

use std::time::Duration;

/// Retry delays: 100 ms doubling to 1 s, each ±20%.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

const FIRST: Duration = Duration::from_millis(100);
const LONGEST: Duration = Duration::from_secs(1);

impl Backoff {
    /// A schedule starting at 100 ms.
    pub(crate) fn new() -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos().into())
            | 1;
        Backoff { next: FIRST, seed }
    }

    /// Starts over at 100 ms (after a success).
    pub(crate) fn reset(&mut self) {
        self.next = FIRST;
    }

    /// The next delay.
    pub(crate) fn delay(&mut self) -> Duration {
        // xorshift64 for the jitter.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.8 + f64::from(u32::try_from(self.seed % 401).unwrap_or(0)) / 1000.0;
        let d = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(LONGEST);
        d
    }
}

/// Sleeps for `d`; true when `shutdown` came first.
pub(crate) async fn sleep_or_stop(
    d: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = shutdown.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_one_second_with_jitter() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..6).map(|_| b.delay()).collect();
        for (w, base) in waits.iter().zip([100u64, 200, 400, 800, 1000, 1000]) {
            let base = Duration::from_millis(base);
            assert!(
                *w >= base.mul_f64(0.8) && *w <= base.mul_f64(1.2),
                "{w:?} vs {base:?}"
            );
        }
        b.reset();
        assert!(b.delay() <= Duration::from_millis(120));
    }
}
