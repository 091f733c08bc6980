//! Old-client census: how many distinct clients an edge saw per SDK
//! version, app id and environment over the last hour and day, in bounded
//! memory, with sketches that merge across edges.
//!
//! Each count is a HyperLogLog sketch (2^12 one-byte registers, about 1.6%
//! standard error; small counts use linear counting and are near exact).
//! Windows are rings of slots (the hour of 4 slots, the day of 6) so old
//! clients age out; a window's sketch is the union of its slots. Sketches
//! merge by taking register maxima, so the union over edges counts a client
//! seen by two edges once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) mod series;

/// log2 of the register count.
pub(crate) const PRECISION: u8 = 12;
const REGISTERS: usize = 1 << PRECISION;
/// Most distinct values tracked per dimension and slot. When a new value
/// arrives at a full table, the value seen least often gives up its place
/// (its sketch is merged into `other`), so a flood of made-up values
/// churns among itself and cannot push out the values most clients send.
pub(crate) const MAX_VALUES: usize = 64;
/// The value that collects evicted and unnamed values.
const OTHER: &str = "other";

/// A HyperLogLog sketch.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Hll {
    regs: Box<[u8; REGISTERS]>,
}

impl Default for Hll {
    fn default() -> Self {
        Hll {
            regs: Box::new([0; REGISTERS]),
        }
    }
}

impl std::fmt::Debug for Hll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hll(~{:.0})", self.estimate())
    }
}

/// The 64-bit hash of a client id.
pub(crate) fn hash_id(id: &str) -> u64 {
    let d = Sha256::digest(id.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("32 bytes"))
}

impl Hll {
    pub(crate) fn insert_hash(&mut self, h: u64) {
        let idx = (h >> (64 - PRECISION)) as usize;
        let rest = (h << PRECISION) | (1 << (PRECISION - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        if rank > self.regs[idx] {
            self.regs[idx] = rank;
        }
    }

    pub(crate) fn merge(&mut self, other: &Hll) {
        for (a, b) in self.regs.iter_mut().zip(other.regs.iter()) {
            *a = (*a).max(*b);
        }
    }

    /// The cardinality estimate.
    pub(crate) fn estimate(&self) -> f64 {
        let m = REGISTERS as f64;
        let mut sum = 0.0;
        let mut zeros = 0usize;
        for &r in self.regs.iter() {
            sum += 2f64.powi(-(r as i32));
            if r == 0 {
                zeros += 1;
            }
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            // Linear counting for small cardinalities.
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }

    /// Registers as hex (for `/census`).
    pub(crate) fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(REGISTERS * 2);
        for &r in self.regs.iter() {
            s.push(char::from(HEX[usize::from(r >> 4)]));
            s.push(char::from(HEX[usize::from(r & 15)]));
        }
        s
    }

    pub(crate) fn from_hex(s: &str) -> Option<Hll> {
        if s.len() != REGISTERS * 2 {
            return None;
        }
        let mut h = Hll::default();
        for (i, r) in h.regs.iter_mut().enumerate() {
            *r = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(h)
    }
}

/// What a client is counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Dimension {
    SdkVersion,
    AppId,
    Environment,
}

impl Dimension {
    pub(crate) const ALL: [Dimension; 3] = [
        Dimension::SdkVersion,
        Dimension::AppId,
        Dimension::Environment,
    ];
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dimension::SdkVersion => "sdk_version",
            Dimension::AppId => "app_id",
            Dimension::Environment => "environment",
        }
    }
}

/// One value's sketch and how many requests carried it (the eviction order).
#[derive(Default, Clone)]
struct Tracked {
    hll: Hll,
    hits: u64,
}

/// One slot: per dimension, per value, a sketch.
/// Values per dimension (Fx hashing: a lookup per request and dimension).
type Slot = [rustc_hash::FxHashMap<String, Tracked>; 3];

/// Counts client hash `h` under `value` in one dimension's table.
fn count(values: &mut rustc_hash::FxHashMap<String, Tracked>, value: &str, h: u64) {
    // No allocation for a value already tracked.
    if let Some(t) = values.get_mut(value) {
        t.hll.insert_hash(h);
        t.hits += 1;
        return;
    }
    let named = values.len() - usize::from(values.contains_key(OTHER));
    let mut hits = 1;
    if value != OTHER && named >= MAX_VALUES {
        // Space-saving: the least-hit value leaves, the newcomer starts
        // just above it; its sketch goes to `other` so no client is lost.
        let least = values
            .iter()
            .filter(|(k, _)| k.as_str() != OTHER)
            .min_by_key(|(_, t)| t.hits)
            .map(|(k, _)| k.clone())
            .expect("a full table has values");
        let gone = values.remove(&least).expect("present");
        hits = gone.hits + 1;
        values
            .entry(OTHER.to_string())
            .or_default()
            .hll
            .merge(&gone.hll);
    }
    let t = values.entry(value.to_string()).or_default();
    t.hll.insert_hash(h);
    t.hits = hits;
}

#[derive(Clone)]
struct Ring {
    slot_len: Duration,
    slots: Vec<Slot>,
    /// Index of the current slot and when it started.
    current: usize,
    started: Instant,
}

impl Ring {
    fn new(window: Duration, slots: usize) -> Ring {
        Ring {
            slot_len: window / slots as u32,
            slots: (0..slots).map(|_| Default::default()).collect(),
            current: 0,
            started: Instant::now(),
        }
    }

    /// Moves to the slot for `now`, clearing slots that aged out.
    fn advance(&mut self, now: Instant) {
        let mut steps = 0;
        while now.duration_since(self.started) >= self.slot_len && steps <= self.slots.len() {
            self.current = (self.current + 1) % self.slots.len();
            self.slots[self.current].iter_mut().for_each(HashMap::clear);
            self.started += self.slot_len;
            steps += 1;
        }
        if steps > self.slots.len() {
            self.started = now;
        }
    }

    fn union(&self) -> HashMap<(Dimension, String), Hll> {
        let mut out: HashMap<(Dimension, String), Hll> = HashMap::new();
        for slot in &self.slots {
            for (d, values) in Dimension::ALL.iter().zip(slot.iter()) {
                for (v, t) in values {
                    out.entry((*d, v.clone())).or_default().merge(&t.hll);
                }
            }
        }
        out
    }
}

/// The census of one edge.
pub(crate) struct Census {
    /// The hour and day rings and the series: one lock per request.
    inner: Mutex<(Ring, Ring, series::Series)>,
}

/// Sketches of one window, by dimension and value (hex registers).
pub(crate) type WindowSketches = HashMap<String, HashMap<String, String>>;

/// What `GET /census` returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CensusExport {
    pub(crate) precision: u8,
    pub(crate) hour_s: u64,
    pub(crate) day_s: u64,
    /// "hour" and "day" → dimension → value → sketch.
    pub(crate) windows: HashMap<String, WindowSketches>,
    /// The points over time, when asked for (`?series=1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) series: Option<series::SeriesExport>,
}

impl Census {
    /// `hour` and `day` are the window lengths (flags, so tests can use
    /// seconds); the series has hourly points.
    pub(crate) fn new(hour: Duration, day: Duration) -> Census {
        Census::with_step(hour, day, 3600)
    }

    /// With series points `step_s` seconds long.
    pub(crate) fn with_step(hour: Duration, day: Duration, step_s: u64) -> Census {
        Census {
            inner: Mutex::new((
                Ring::new(hour, 4),
                Ring::new(day, 6),
                series::Series::new(step_s),
            )),
        }
    }

    /// Seconds per point of the series.
    pub(crate) fn series_step(&self) -> u64 {
        self.inner.lock().expect("not poisoned").2.step_s()
    }

    /// The census over time (for the console's charts).
    pub(crate) fn export_series(&self) -> series::SeriesExport {
        self.inner.lock().expect("not poisoned").2.export()
    }

    /// Counts one request by a client.
    #[cfg(test)]
    pub(crate) fn record(
        &self,
        client_id: &str,
        sdk_version: &str,
        app_id: Option<&str>,
        environment: &str,
    ) {
        self.record_at(client_id, sdk_version, app_id, environment, Instant::now());
    }

    /// Counts one request by a client, made at `now` (the request's own
    /// clock reading: the census reads none).
    pub(crate) fn record_at(
        &self,
        client_id: &str,
        sdk_version: &str,
        app_id: Option<&str>,
        environment: &str,
        now: Instant,
    ) {
        let h = hash_id(client_id);
        let values = [Some(sdk_version), app_id, Some(environment)];
        let mut guard = self.inner.lock().expect("not poisoned");
        let g = &mut *guard;
        for ring in [&mut g.0, &mut g.1] {
            ring.advance(now);
            let slot = &mut ring.slots[ring.current];
            for (table, value) in slot.iter_mut().zip(values) {
                if let Some(v) = value {
                    count(table, v, h);
                }
            }
        }
        g.2.record(h, values, now);
    }

    /// Current estimates: (window, dimension, value, estimate).
    pub(crate) fn estimates(&self) -> Vec<(&'static str, Dimension, String, f64)> {
        let mut guard = self.inner.lock().expect("not poisoned");
        let g = &mut *guard;
        let now = Instant::now();
        let mut out = Vec::new();
        for (name, ring) in [("hour", &mut g.0), ("day", &mut g.1)] {
            ring.advance(now);
            for ((d, v), h) in ring.union() {
                out.push((name, d, v, h.estimate()));
            }
        }
        out.sort_by(|a, b| (a.0, a.1.as_str(), &a.2).cmp(&(b.0, b.1.as_str(), &b.2)));
        out
    }

    /// The mergeable sketches.
    pub(crate) fn export(&self) -> CensusExport {
        let mut guard = self.inner.lock().expect("not poisoned");
        let g = &mut *guard;
        let now = Instant::now();
        let hour_s = (g.0.slot_len * g.0.slots.len() as u32).as_secs();
        let day_s = (g.1.slot_len * g.1.slots.len() as u32).as_secs();
        let mut windows = HashMap::new();
        for (name, ring) in [("hour", &mut g.0), ("day", &mut g.1)] {
            ring.advance(now);
            let mut w: WindowSketches = HashMap::new();
            for ((d, v), h) in ring.union() {
                w.entry(d.as_str().to_string())
                    .or_default()
                    .insert(v, h.to_hex());
            }
            windows.insert(name.to_string(), w);
        }
        CensusExport {
            precision: PRECISION,
            hour_s,
            day_s,
            windows,
            series: None,
        }
    }
}

/// A census as saved in the cache folder: each ring's slots with their
/// values' sketches (hex) and hits, and how long ago the current slot
/// started, so a restart restores what the windows still cover.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SavedCensus {
    /// Milliseconds since the Unix epoch when saved.
    saved_unix_ms: u64,
    rings: Vec<SavedRing>,
    /// The points over time (absent in files of older versions).
    #[serde(default)]
    series: Option<series::SeriesExport>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedRing {
    slot_ms: u64,
    current: usize,
    /// How long the current slot had run when saved.
    current_age_ms: u64,
    /// Per slot, per dimension (in `Dimension::ALL` order): value →
    /// (sketch as hex, hits).
    slots: Vec<Vec<HashMap<String, (String, u64)>>>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Census {
    /// The census as it is now, for [`Census::restore`] after a restart.
    pub(crate) fn save(&self) -> SavedCensus {
        // Copy the rings under the lock (a memcpy per sketch); encode after
        // releasing it, so config requests do not wait on the encoding.
        let (rings, now) = {
            let guard = self.inner.lock().expect("not poisoned");
            ([guard.0.clone(), guard.1.clone()], Instant::now())
        };
        let rings = rings
            .iter()
            .map(|r| SavedRing {
                slot_ms: u64::try_from(r.slot_len.as_millis()).unwrap_or(u64::MAX),
                current: r.current,
                current_age_ms: u64::try_from(now.duration_since(r.started).as_millis())
                    .unwrap_or(u64::MAX),
                slots: r
                    .slots
                    .iter()
                    .map(|slot| {
                        slot.iter()
                            .map(|values| {
                                values
                                    .iter()
                                    .map(|(v, t)| (v.clone(), (t.hll.to_hex(), t.hits)))
                                    .collect()
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        SavedCensus {
            saved_unix_ms: unix_ms(),
            rings,
            series: Some(self.export_series()),
        }
    }

    /// Puts back a saved census, aged by the time since it was saved (slots
    /// past their window are dropped). Returns false, changing nothing,
    /// when the windows were configured differently.
    pub(crate) fn restore(&self, saved: &SavedCensus) -> bool {
        let mut guard = self.inner.lock().expect("not poisoned");
        let g = &mut *guard;
        if let Some(s) = &saved.series {
            g.2.restore(s);
        }
        let fits = saved.rings.len() == 2
            && [&g.0, &g.1].iter().zip(&saved.rings).all(|(r, s)| {
                u64::try_from(r.slot_len.as_millis()).ok() == Some(s.slot_ms)
                    && r.slots.len() == s.slots.len()
                    && s.current < s.slots.len()
                    && s.slots.iter().all(|slot| slot.len() == 3)
            });
        if !fits {
            return false;
        }
        let away = Duration::from_millis(unix_ms().saturating_sub(saved.saved_unix_ms));
        let now = Instant::now();
        for (ring, s) in [&mut g.0, &mut g.1].into_iter().zip(&saved.rings) {
            for (slot, saved_slot) in ring.slots.iter_mut().zip(&s.slots) {
                for (values, saved_values) in slot.iter_mut().zip(saved_slot) {
                    values.clear();
                    for (v, (hex, hits)) in saved_values.iter().take(MAX_VALUES + 1) {
                        if let Some(hll) = Hll::from_hex(hex) {
                            values.insert(v.clone(), Tracked { hll, hits: *hits });
                        }
                    }
                }
            }
            ring.current = s.current;
            let age = Duration::from_millis(s.current_age_ms) + away;
            match now.checked_sub(age) {
                Some(started) => {
                    ring.started = started;
                    ring.advance(now);
                }
                // Older than this machine's monotonic clock: all aged out.
                None => ring.slots.iter_mut().flatten().for_each(HashMap::clear),
            }
        }
        true
    }
}

/// Unions exports from several edges: window → dimension → value → estimate.
pub(crate) fn union_estimates(
    exports: &[CensusExport],
) -> std::collections::BTreeMap<
    String,
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
> {
    let mut merged: HashMap<(String, String, String), Hll> = HashMap::new();
    for e in exports.iter().filter(|e| e.precision == PRECISION) {
        for (w, dims) in &e.windows {
            for (d, values) in dims {
                for (v, hex) in values {
                    if let Some(h) = Hll::from_hex(hex) {
                        merged
                            .entry((w.clone(), d.clone(), v.clone()))
                            .or_default()
                            .merge(&h);
                    }
                }
            }
        }
    }
    let mut out: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
    > = Default::default();
    for ((w, d, v), h) in merged {
        out.entry(w)
            .or_default()
            .entry(d)
            .or_default()
            .insert(v, h.estimate().round());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_within_a_few_percent() {
        for n in [10usize, 1000, 20_000] {
            let mut h = Hll::default();
            for i in 0..n {
                h.insert_hash(hash_id(&format!("c-{i}")));
            }
            let e = h.estimate();
            let err = (e - n as f64).abs() / n as f64;
            assert!(err < 0.03, "{n}: {e}");
        }
    }

    #[test]
    fn merge_counts_shared_clients_once() {
        let (mut a, mut b) = (Hll::default(), Hll::default());
        for i in 0..1000 {
            a.insert_hash(hash_id(&format!("c-{i}")));
        }
        for i in 500..1500 {
            b.insert_hash(hash_id(&format!("c-{i}")));
        }
        a.merge(&b);
        assert!((a.estimate() - 1500.0).abs() < 45.0, "{}", a.estimate());
        assert_eq!(Hll::from_hex(&a.to_hex()), Some(a));
    }

    #[test]
    fn windows_age_out() {
        let c = Census::new(Duration::from_millis(200), Duration::from_secs(60));
        c.record("a", "0.9.0", None, "prod");
        assert_eq!(c.estimates().iter().filter(|e| e.0 == "hour").count(), 2);
        std::thread::sleep(Duration::from_millis(260));
        c.record("b", "1.0.0", Some("demo"), "prod-v1");
        let hour: Vec<_> = c
            .estimates()
            .into_iter()
            .filter(|e| e.0 == "hour")
            .map(|e| e.2)
            .collect();
        assert!(!hour.contains(&"0.9.0".to_string()), "{hour:?}");
        let day: Vec<_> = c
            .estimates()
            .into_iter()
            .filter(|e| e.0 == "day")
            .map(|e| e.2)
            .collect();
        assert!(day.contains(&"0.9.0".to_string()));
    }

    #[test]
    fn a_saved_census_is_restored_and_aged() {
        let c = Census::new(Duration::from_secs(3600), Duration::from_secs(86_400));
        for i in 0..300 {
            c.record(&format!("old-{i}"), "0.9.0", Some("demo"), "prod");
        }
        let before = c.estimates();
        let saved = serde_json::to_string(&c.save()).unwrap();
        let back = Census::new(Duration::from_secs(3600), Duration::from_secs(86_400));
        assert!(back.restore(&serde_json::from_str(&saved).unwrap()));
        assert_eq!(back.estimates(), before);
        // The points over time come back too.
        let series = back.export_series();
        assert_eq!(series, c.export_series());
        assert_eq!(series.points.len(), 1, "{series:?}");
        // Saved long ago: everything has aged out.
        let mut old: SavedCensus = serde_json::from_str(&saved).unwrap();
        old.saved_unix_ms -= 2 * 86_400_000;
        let aged = Census::new(Duration::from_secs(3600), Duration::from_secs(86_400));
        assert!(aged.restore(&old));
        assert!(aged.estimates().is_empty(), "{:?}", aged.estimates());
        // Other window lengths: not restored.
        let other = Census::new(Duration::from_secs(60), Duration::from_secs(600));
        assert!(!other.restore(&serde_json::from_str(&saved).unwrap()));
    }

    /// Issue 10: made-up values sent first used to fill the table, and the
    /// real versions went to `other`.
    #[test]
    fn a_flood_of_made_up_values_cannot_push_real_ones_out() {
        let c = Census::new(Duration::from_secs(3600), Duration::from_secs(86_400));
        for i in 0..1000 {
            c.record(&format!("fake-{i}"), &format!("9.9.{i}"), None, "prod");
        }
        for i in 0..300 {
            c.record(&format!("old-{i}"), "0.9.0", None, "prod");
        }
        for i in 0..200 {
            c.record(&format!("new-{i}"), "1.0.0", None, "prod-v1");
        }
        // More made-up values after the real ones.
        for i in 1000..2000 {
            c.record(&format!("fake-{i}"), &format!("9.9.{i}"), None, "prod");
        }
        let est = |window: &str, value: &str| {
            c.estimates()
                .into_iter()
                .find(|e| e.0 == window && e.1 == Dimension::SdkVersion && e.2 == value)
                .map(|e| e.3)
        };
        for window in ["hour", "day"] {
            let old = est(window, "0.9.0").expect("0.9.0 is still counted");
            let new = est(window, "1.0.0").expect("1.0.0 is still counted");
            assert!((old - 300.0).abs() <= 9.0, "{window} 0.9.0: {old}");
            assert!((new - 200.0).abs() <= 6.0, "{window} 1.0.0: {new}");
            // Every client is still somewhere: the evicted went to `other`.
            let versions = c
                .estimates()
                .into_iter()
                .filter(|e| e.0 == window && e.1 == Dimension::SdkVersion)
                .count();
            assert!(versions <= MAX_VALUES + 1, "{versions}");
            let other = est(window, "other").expect("evicted values are in other");
            assert!(other > 1800.0, "{window} other: {other}");
        }
    }
}
