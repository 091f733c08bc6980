//! Cohorts: sticky percent buckets, percent parsing and SemVer ranges.
//!
//! The bucket of a key is the first 8 bytes of SHA-256(salt ‖ 0x00 ‖ key)
//! read as a big-endian u64, mod 10000; a key is in a cohort of `p` basis
//! points when its bucket is below `p`. Raising the percent only ever adds
//! keys, so cohorts are nested and sticky.

use sha2::{Digest, Sha256};

/// A percent, version or version range that does not parse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CohortError {
    /// Not a percent from 0 to 100 with at most two decimals.
    #[error("percent '{0}' must be a number from 0 to 100 with at most two decimals")]
    Percent(String),
    /// A range with an empty comparator (`>=1.0,`).
    #[error("empty comparator in version range '{0}'")]
    EmptyComparator(String),
    /// A comparator whose version has more than three numbers.
    #[error("'{version}' in '{range}' is not a SemVer version")]
    RangeVersionShape { version: String, range: String },
    /// A comparator whose version does not parse.
    #[error("'{version}' in '{range}' is not a SemVer version: {error}")]
    RangeVersion {
        version: String,
        range: String,
        error: semver::Error,
    },
    /// Not a full SemVer 2.0 version.
    #[error("'{text}' is not a SemVer 2.0 version: {error}")]
    Version { text: String, error: semver::Error },
}

/// The bucket (0..10000) of `key` under `salt`.
pub fn bucket(salt: &str, key: &[u8]) -> u16 {
    salted_bucket(&[salt], key)
}

/// The bucket of `key` under the salt `parts` joined (no separator added):
/// `bucket(&format!("{a}/{b}"), key)` without building the salt.
pub(crate) fn salted_bucket(parts: &[&str], key: &[u8]) -> u16 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    h.update([0u8]);
    h.update(key);
    let d = h.finalize();
    let v = u64::from_be_bytes(d[..8].try_into().expect("sha256 has 32 bytes"));
    u16::try_from(v % 10_000).expect("below 10000")
}

/// Parses a percent (`0` to `100`, at most two decimals) into basis points
/// without going through floating point.
pub(crate) fn parse_percent(text: &str) -> Result<u16, CohortError> {
    let t = text.trim();
    let bad = || CohortError::Percent(text.to_string());
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
    if int.is_empty() || int.len() > 3 || !int.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 2
        || !frac.bytes().all(|c| c.is_ascii_digit())
        || (t.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    let i: u32 = int.parse().map_err(|_| bad())?;
    let mut f: u32 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    if frac.len() == 1 {
        f *= 10;
    }
    let bp = i * 100 + f;
    if bp > 10_000 {
        return Err(bad());
    }
    u16::try_from(bp).map_err(|_| bad())
}

/// A SemVer range such as `>=1.0.0, <2`, compared by precedence with
/// pre-releases included (`1.0.0-rc.1 < 1.0.0`), build metadata ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VersionRange {
    text: String,
    bounds: Vec<(Op, semver::Version)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

impl VersionRange {
    /// The range as written in the state.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Parses comma-separated comparators (`>=`, `>`, `<`, `<=`, `=`; a bare
    /// version means `=`). Partial versions are filled with zeros, except that
    /// `<=1.2` and `>1.2` cover the whole `1.2` line.
    pub(crate) fn parse(text: &str) -> Result<VersionRange, CohortError> {
        let mut bounds = Vec::new();
        for part in text.split(',') {
            let p = part.trim();
            if p.is_empty() {
                return Err(CohortError::EmptyComparator(text.to_string()));
            }
            let (op, v) = if let Some(r) = p.strip_prefix(">=") {
                (Op::Ge, r)
            } else if let Some(r) = p.strip_prefix("<=") {
                (Op::Le, r)
            } else if let Some(r) = p.strip_prefix('>') {
                (Op::Gt, r)
            } else if let Some(r) = p.strip_prefix('<') {
                (Op::Lt, r)
            } else if let Some(r) = p.strip_prefix('=') {
                (Op::Eq, r)
            } else {
                (Op::Eq, p)
            };
            let v = v.trim();
            let dots = v
                .split(['-', '+'])
                .next()
                .unwrap_or("")
                .matches('.')
                .count();
            let (version, partial) = match dots {
                2 => (semver::Version::parse(v), false),
                1 => (semver::Version::parse(&format!("{v}.0")), true),
                0 => (semver::Version::parse(&format!("{v}.0.0")), true),
                _ => {
                    return Err(CohortError::RangeVersionShape {
                        version: v.to_string(),
                        range: text.to_string(),
                    });
                }
            };
            let mut version = version.map_err(|error| CohortError::RangeVersion {
                version: v.to_string(),
                range: text.to_string(),
                error,
            })?;
            version.build = semver::BuildMetadata::EMPTY;
            if partial && matches!(op, Op::Le | Op::Gt | Op::Eq) {
                // `<=1.2` is `<1.3.0-0`; `>1.2` is `>=1.3.0-0`; `=1.2` is a range.
                let mut next = version.clone();
                if dots == 1 {
                    next.minor += 1;
                } else {
                    next.major += 1;
                }
                next.pre = semver::Prerelease::new("0").expect("valid");
                match op {
                    Op::Le => bounds.push((Op::Lt, next)),
                    Op::Gt => bounds.push((Op::Ge, next)),
                    _ => {
                        bounds.push((Op::Ge, version));
                        bounds.push((Op::Lt, next));
                    }
                }
                continue;
            }
            bounds.push((op, version));
        }
        Ok(VersionRange {
            text: text.to_string(),
            bounds,
        })
    }

    /// True when `v` satisfies every comparator.
    pub(crate) fn matches(&self, v: &semver::Version) -> bool {
        self.bounds.iter().all(|(op, b)| {
            let o = cmp_precedence(v, b);
            match op {
                Op::Lt => o.is_lt(),
                Op::Le => o.is_le(),
                Op::Gt => o.is_gt(),
                Op::Ge => o.is_ge(),
                Op::Eq => o.is_eq(),
            }
        })
    }
}

/// SemVer 2.0 precedence: build metadata does not count.
pub(crate) fn cmp_precedence(a: &semver::Version, b: &semver::Version) -> std::cmp::Ordering {
    (a.major, a.minor, a.patch)
        .cmp(&(b.major, b.minor, b.patch))
        .then_with(|| a.pre.cmp(&b.pre))
}

/// Parses a full SemVer 2.0 version (`1.0.0`, `1.0.0-rc.1+build`).
pub(crate) fn parse_version(text: &str) -> Result<semver::Version, CohortError> {
    semver::Version::parse(text.trim()).map_err(|error| CohortError::Version {
        text: text.to_string(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_text_to_basis_points() {
        assert_eq!(parse_percent("0").ok(), Some(0));
        assert_eq!(parse_percent("100").ok(), Some(10_000));
        assert_eq!(parse_percent("12.5").ok(), Some(1250));
        assert_eq!(parse_percent("0.01").ok(), Some(1));
        assert_eq!(parse_percent("33.33").ok(), Some(3333));
        for bad in ["100.01", "-1", "1.234", "abc", "", "1.", ".5", "1e2"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_by_precedence() {
        let r = VersionRange::parse(">=1.0.0, <2").unwrap();
        let v = |s| semver::Version::parse(s).unwrap();
        assert!(r.matches(&v("1.0.0")));
        assert!(r.matches(&v("1.9.9+build")));
        assert!(!r.matches(&v("1.0.0-rc.1")));
        assert!(
            r.matches(&v("2.0.0-rc.1")),
            "2.0.0-rc.1 < 2.0.0 by precedence"
        );
        assert!(!r.matches(&v("2.0.0")));
        let r = VersionRange::parse("<1.0.0").unwrap();
        assert!(r.matches(&v("1.0.0-rc.1")));
        assert!(r.matches(&v("0.9.0")));
        assert!(VersionRange::parse(">=x").is_err());
        let r = VersionRange::parse("<=1.2").unwrap();
        assert!(r.matches(&v("1.2.9")) && !r.matches(&v("1.3.0")));
    }

    /// The vectors in tests/fixtures/cohort_vectors.json (computed with an
    /// independent implementation) hold.
    #[test]
    fn test_vectors_hold() {
        let text = include_str!("../../tests/fixtures/cohort_vectors.json");
        let v: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        assert!(v.len() >= 10);
        for x in v {
            let (salt, key) = (x["salt"].as_str().unwrap(), x["key"].as_str().unwrap());
            assert_eq!(
                bucket(salt, key.as_bytes()) as u64,
                x["bucket"].as_u64().unwrap(),
                "{salt} {key}"
            );
        }
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("client-{i}")).collect()
    }

    /// A client in the cohort at p% is in it at every q > p (same salt).
    #[test]
    fn cohorts_are_nested() {
        let salt = "vdh-api/canary";
        let all = ids(20_000);
        let steps = [
            "0.5", "1", "5", "10", "12.5", "20", "33.33", "50", "75", "99.99", "100",
        ];
        let mut prev: Vec<&String> = Vec::new();
        for p in steps {
            let bp = parse_percent(p).unwrap();
            let inside: Vec<&String> = all
                .iter()
                .filter(|id| bucket(salt, id.as_bytes()) < bp)
                .collect();
            for id in &prev {
                assert!(
                    bucket(salt, id.as_bytes()) < bp,
                    "{id} left the cohort at {p}%"
                );
            }
            assert!(inside.len() >= prev.len());
            prev = inside;
        }
        assert_eq!(prev.len(), all.len(), "100% is everyone");
    }

    /// Over 100,000 ids the share is within ±1 percentage point of p.
    #[test]
    fn shares_are_accurate() {
        let all = ids(100_000);
        let buckets: Vec<u16> = all
            .iter()
            .map(|id| bucket("vdh-api/canary", id.as_bytes()))
            .collect();
        for p in ["1", "10", "25", "50", "90"] {
            let bp = parse_percent(p).unwrap();
            let share =
                buckets.iter().filter(|&&b| b < bp).count() as f64 / all.len() as f64 * 100.0;
            let want: f64 = p.parse().unwrap();
            assert!((share - want).abs() <= 1.0, "{p}%: got {share:.2}%");
        }
    }

    /// Two salts pick independent cohorts: the overlap of two 50% cohorts is
    /// about 25%.
    #[test]
    fn salts_are_independent() {
        let all = ids(100_000);
        let both = all
            .iter()
            .filter(|id| {
                bucket("vdh-api/a", id.as_bytes()) < 5000
                    && bucket("vdh-api/b", id.as_bytes()) < 5000
            })
            .count() as f64
            / all.len() as f64
            * 100.0;
        assert!((both - 25.0).abs() <= 1.0, "overlap {both:.2}%");
    }
}
