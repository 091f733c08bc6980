//! The census over time: one point per step (an hour by default) aligned
//! on the Unix clock, so points of different edges line up and merge. The
//! open point counts like a ring slot; a closed point keeps each value's
//! sketch in compact form (the set registers only, when that is shorter),
//! so the 48 closed points of an old-client tail cost a few kilobytes.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Dimension, Hll, REGISTERS, Slot, count};

/// Closed points kept: 48 steps (two days of hourly points).
pub(crate) const POINTS: usize = 48;

/// One point: its start (Unix seconds) and, per dimension, value → sketch
/// (see [`encode`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Point {
    pub(crate) start: u64,
    pub(crate) dims: HashMap<String, HashMap<String, String>>,
}

/// What `GET /census?series=1` adds: the step and the points, oldest
/// first, the open one last.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct SeriesExport {
    pub(crate) step_s: u64,
    pub(crate) points: Vec<Point>,
}

/// The series of one edge.
pub(crate) struct Series {
    step_s: u64,
    open_start: u64,
    open: Slot,
    closed: VecDeque<Point>,
    /// When the open point's step ends, on the monotonic clock: a record
    /// before then reads no wall clock. (A wall clock stepped forward
    /// closes the point at this instant, up to one step late.)
    next_close: std::time::Instant,
}

/// A sketch as text: `s` and 5 hex digits (register index, rank) per set
/// register while that is shorter than the 8,192 hex digits of all
/// registers.
pub(crate) fn encode(h: &Hll) -> String {
    let set = h.regs.iter().filter(|&&r| r != 0).count();
    if set * 5 >= REGISTERS * 2 {
        return h.to_hex();
    }
    let mut s = String::with_capacity(1 + set * 5);
    s.push('s');
    for (i, &r) in h.regs.iter().enumerate().filter(|(_, r)| **r != 0) {
        s.push_str(&format!("{i:03x}{r:02x}"));
    }
    s
}

/// The sketch of [`encode`]'s text.
pub(crate) fn decode(s: &str) -> Option<Hll> {
    let Some(sparse) = s.strip_prefix('s') else {
        return Hll::from_hex(s);
    };
    if sparse.len() % 5 != 0 {
        return None;
    }
    let mut h = Hll::default();
    for i in (0..sparse.len()).step_by(5) {
        let idx = usize::from_str_radix(sparse.get(i..i + 3)?, 16).ok()?;
        let rank = u8::from_str_radix(sparse.get(i + 3..i + 5)?, 16).ok()?;
        *h.regs.get_mut(idx)? = rank;
    }
    Some(h)
}

fn unix_s() -> u64 {
    unix_now().as_secs()
}

fn unix_now() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

impl Series {
    pub(crate) fn new(step_s: u64) -> Series {
        let step_s = step_s.max(1);
        Series {
            step_s,
            open_start: unix_s() / step_s * step_s,
            open: Slot::default(),
            closed: VecDeque::new(),
            next_close: std::time::Instant::now(),
        }
    }

    pub(crate) fn step_s(&self) -> u64 {
        self.step_s
    }

    /// Closes the open point if its step is over; drops points older than
    /// [`POINTS`] steps.
    pub(crate) fn advance(&mut self, now_s: u64) {
        let start = now_s / self.step_s * self.step_s;
        if start > self.open_start {
            let open = std::mem::take(&mut self.open);
            if open.iter().any(|values| !values.is_empty()) {
                self.closed.push_back(point_of(self.open_start, &open));
            }
            self.open_start = start;
        }
        let oldest = start.saturating_sub(POINTS as u64 * self.step_s);
        while self
            .closed
            .front()
            .is_some_and(|p| p.start < oldest || self.closed.len() > POINTS)
        {
            self.closed.pop_front();
        }
    }

    /// Counts client hash `h` in the open point (`now` is the time of the
    /// request).
    pub(crate) fn record(&mut self, h: u64, values: [Option<&str>; 3], now: std::time::Instant) {
        if now >= self.next_close {
            let unix = unix_now();
            self.advance(unix.as_secs());
            let end = std::time::Duration::from_secs(self.open_start + self.step_s);
            self.next_close = now + end.saturating_sub(unix);
        }
        for (table, value) in self.open.iter_mut().zip(values) {
            if let Some(v) = value {
                count(table, v, h);
            }
        }
    }

    /// The points, oldest first, the open one (if it has clients) last.
    pub(crate) fn export(&mut self) -> SeriesExport {
        self.advance(unix_s());
        let mut points: Vec<Point> = self.closed.iter().cloned().collect();
        if self.open.iter().any(|values| !values.is_empty()) {
            points.push(point_of(self.open_start, &self.open));
        }
        SeriesExport {
            step_s: self.step_s,
            points,
        }
    }

    /// Puts back an export of the same step (after a restart); the open
    /// point continues if its step is not over.
    pub(crate) fn restore(&mut self, saved: &SeriesExport) -> bool {
        if saved.step_s != self.step_s {
            return false;
        }
        self.closed = saved.points.iter().cloned().collect();
        if let Some(last) = self.closed.back()
            && last.start == self.open_start
        {
            let last = self.closed.pop_back().expect("just seen");
            for (d, table) in Dimension::ALL.iter().zip(self.open.iter_mut()) {
                for (v, s) in last.dims.get(d.as_str()).into_iter().flatten() {
                    if let Some(hll) = decode(s) {
                        table.entry(v.clone()).or_default().hll.merge(&hll);
                    }
                }
            }
        }
        self.advance(unix_s());
        true
    }
}

fn point_of(start: u64, slot: &Slot) -> Point {
    let mut dims: HashMap<String, HashMap<String, String>> = HashMap::new();
    for (d, values) in Dimension::ALL.iter().zip(slot.iter()) {
        if values.is_empty() {
            continue;
        }
        dims.insert(
            d.as_str().to_string(),
            values
                .iter()
                .map(|(v, t)| (v.clone(), encode(&t.hll)))
                .collect(),
        );
    }
    Point { start, dims }
}

/// The union of several edges' series: point start → dimension → value →
/// distinct clients. Exports of another step are left out.
pub(crate) fn union(
    exports: &[SeriesExport],
    step_s: u64,
) -> BTreeMap<u64, BTreeMap<String, BTreeMap<String, f64>>> {
    let mut merged: BTreeMap<u64, BTreeMap<String, BTreeMap<String, Hll>>> = BTreeMap::new();
    for e in exports.iter().filter(|e| e.step_s == step_s) {
        for p in &e.points {
            for (d, values) in &p.dims {
                for (v, s) in values {
                    if let Some(h) = decode(s) {
                        merged
                            .entry(p.start)
                            .or_default()
                            .entry(d.clone())
                            .or_default()
                            .entry(v.clone())
                            .or_default()
                            .merge(&h);
                    }
                }
            }
        }
    }
    merged
        .into_iter()
        .map(|(t, dims)| {
            let dims = dims
                .into_iter()
                .map(|(d, values)| {
                    let values = values
                        .into_iter()
                        .map(|(v, h)| (v, h.estimate().round()))
                        .collect();
                    (d, values)
                })
                .collect();
            (t, dims)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::hash_id;
    use super::*;

    #[test]
    fn sketches_survive_both_encodings() {
        let mut small = Hll::default();
        let mut big = Hll::default();
        for i in 0..50 {
            small.insert_hash(hash_id(&format!("c-{i}")));
        }
        for i in 0..20_000 {
            big.insert_hash(hash_id(&format!("c-{i}")));
        }
        let s = encode(&small);
        assert!(s.starts_with('s') && s.len() <= 1 + 50 * 5, "{}", s.len());
        assert_eq!(decode(&s), Some(small));
        let b = encode(&big);
        assert_eq!(b.len(), REGISTERS * 2);
        assert_eq!(decode(&b), Some(big));
        assert_eq!(decode("s12"), None);
        assert_eq!(decode("s100001"), None, "index past the registers");
    }

    #[test]
    fn points_close_on_the_clock_and_age_out() {
        let mut s = Series::new(10);
        s.open_start = 1000;
        for i in 0..30 {
            let h = hash_id(&format!("old-{i}"));
            count(&mut s.open[0], "0.9.0", h);
        }
        s.advance(1015);
        assert_eq!(s.closed.len(), 1);
        assert_eq!(s.closed[0].start, 1000);
        assert_eq!(s.open_start, 1010);
        // An empty step closes no point.
        s.advance(1025);
        assert_eq!(s.closed.len(), 1);
        let u = union(&[s.export_at(1025)], 10);
        let n = u[&1000]["sdk_version"]["0.9.0"];
        assert!((n - 30.0).abs() <= 1.0, "{n}");
        // Past 48 steps the point is gone.
        s.advance(1000 + 10 * (POINTS as u64 + 1));
        assert!(s.closed.is_empty());
        // A saved series of another step is not restored.
        let mut other = Series::new(60);
        assert!(!other.restore(&s.export_at(2000)));
    }

    impl Series {
        fn export_at(&mut self, now_s: u64) -> SeriesExport {
            self.advance(now_s);
            SeriesExport {
                step_s: self.step_s,
                points: self.closed.iter().cloned().collect(),
            }
        }
    }
}
