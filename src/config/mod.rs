//! Configuration: the routing state as written ([`state`]) and as keys
//! ([`keyed`]), its validation ([`routing`], [`cohort`]), zones ([`zone`]),
//! and the compiler that turns them into one immutable
//! [`snapshot::Snapshot`] with serials chosen by [`serial`].
//!
//! `config` depends only on [`crate::proto`]; sources, fronts and commands
//! depend on it, never the other way round.

pub(crate) mod cohort;
pub(crate) mod error;
pub(crate) mod keyed;
pub(crate) mod routing;
pub(crate) mod serial;
pub(crate) mod snapshot;
pub(crate) mod state;
pub(crate) mod zone;

pub(crate) use error::ConfigError;

/// Edit distance between two short names: insertions, deletions,
/// substitutions and swaps of neighbours (`nxet` is one from `next`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// `"; did you mean 'x'?"` for the known name closest to `name` (at most
/// a third of its letters off, and at least one), or `""`.
pub(crate) fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let limit = (name.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map_or(String::new(), |(_, k)| format!("; did you mean '{k}'?"))
}

#[cfg(test)]
mod suggest_tests {
    use super::*;

    #[test]
    fn suggests_the_closest_known_name() {
        let known = ["prod", "prod-v1", "test-v1"];
        assert_eq!(did_you_mean("prod-vl", known), "; did you mean 'prod-v1'?");
        assert_eq!(did_you_mean("prd", known), "; did you mean 'prod'?");
        assert_eq!(did_you_mean("staging", known), "");
        assert_eq!(did_you_mean("nxet", ["next"]), "; did you mean 'next'?");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
