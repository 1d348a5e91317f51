//! A symbol's funding slots and what follows from them alone: the interval in force at each
//! slot, and the slots missing between present ones.
//!
//! Venues fund every 1, 2, 4 or 8 hours, aligned to UTC midnight, and change a symbol's
//! interval over time (8h to 4h, say). No interval is assumed: each slot's interval is the time
//! since the slot before it, unless that stretch is a gap. A stretch between two present slots
//! is a gap when it is no funding interval at all (12h, 16h, a day), or when it is longer than
//! the intervals on both sides of it (a run of 8h stretches between 4h ones: every other slot
//! missing). The stretch after the last slot is never judged: the next slot has not come yet.
//! Cases the slots cannot tell apart: the last slot before a change to a longer interval
//! missing looks like the change coming a slot earlier (and the first after a change to a
//! shorter one, a slot later), and a symbol's first stretches alike
//! and longer than the rest are taken as its first interval.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

const HOUR: i64 = 3_600;

/// The funding intervals venues use, in seconds.
const INTERVALS: [i64; 4] = [HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR];

/// The funding slots of one symbol (unix seconds), stored as runs of evenly spaced slots,
/// `(first, step, count)`: a year of hourly funding is a handful of runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runs(pub Vec<(i64, i64, u32)>);

impl Runs {
    pub fn from_slots(slots: &BTreeSet<i64>) -> Runs {
        let mut runs: Vec<(i64, i64, u32)> = Vec::new();
        for &s in slots {
            match runs.last_mut() {
                Some((first, step, n)) if *n == 1 => {
                    *step = s - *first;
                    *n = 2;
                }
                Some((first, step, n)) if *first + *step * i64::from(*n) == s => *n += 1,
                _ => runs.push((s, 0, 1)),
            }
        }
        Runs(runs)
    }

    pub fn slots(&self) -> BTreeSet<i64> {
        self.0
            .iter()
            .flat_map(|&(first, step, n)| (0..i64::from(n)).map(move |i| first + step * i))
            .collect()
    }
}

/// What the slots say about each of them and between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    /// Each slot with the interval in force there, in hours (`None` for a lone slot).
    pub intervals: Vec<(i64, Option<f64>)>,
    /// `(after, before)`: present slots with one or more slots missing strictly between.
    pub gaps: Vec<(i64, i64)>,
}

/// The intervals and gaps of a symbol's slots.
pub fn derive(slots: &BTreeSet<i64>) -> Derived {
    let s: Vec<i64> = slots.iter().copied().collect();
    // diffs[i] is the stretch from s[i] to s[i + 1].
    let diffs: Vec<i64> = s.windows(2).map(|w| w[1] - w[0]).collect();
    let mut gap: Vec<bool> = diffs.iter().map(|d| !INTERVALS.contains(d)).collect();
    // Runs of equal stretches that are intervals, judged against the nearest interval
    // stretches on either side. The last stretch's run needs a stretch after it.
    let mut i = 0;
    while i < diffs.len() {
        if gap[i] {
            i += 1;
            continue;
        }
        let mut j = i;
        while j + 1 < diffs.len() && diffs[j + 1] == diffs[i] && !gap[j + 1] {
            j += 1;
        }
        let before = (0..i).rev().find(|&k| !gap[k]).map(|k| diffs[k]);
        let after = (j + 1..diffs.len()).find(|&k| !gap[k]).map(|k| diffs[k]);
        let longer = |o: Option<i64>| o.is_some_and(|d| diffs[i] > d);
        // Interior: longer than both sides. At the start, a single stretch longer than what
        // follows lost a slot; two or more alike are the interval the symbol started with.
        let start_alone = before.is_none() && i == j;
        if (start_alone || longer(before)) && longer(after) {
            gap[i..=j].iter_mut().for_each(|g| *g = true);
        }
        i = j + 1;
    }
    let interval_at = |k: usize| -> Option<f64> {
        // The stretch ending at slot k, else the nearest interval stretch before, else after.
        let ending = k.checked_sub(1);
        let pick = ending
            .filter(|&e| !gap[e])
            .or_else(|| ending.and_then(|e| (0..e).rev().find(|&x| !gap[x])))
            .or_else(|| (k..diffs.len()).find(|&x| !gap[x]));
        pick.map(|x| diffs[x] as f64 / HOUR as f64)
    };
    Derived {
        intervals: (0..s.len()).map(|k| (s[k], interval_at(k))).collect(),
        gaps: (0..diffs.len())
            .filter(|&k| gap[k])
            .map(|k| (s[k], s[k + 1]))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hours(h: &[i64]) -> BTreeSet<i64> {
        h.iter().map(|x| x * HOUR).collect()
    }

    fn gaps_h(d: &Derived) -> Vec<(i64, i64)> {
        d.gaps.iter().map(|(a, b)| (a / HOUR, b / HOUR)).collect()
    }

    #[test]
    fn an_interval_change_is_no_gap_and_each_slot_keeps_its_interval() {
        // 8h, then 4h from hour 16, then 1h from hour 28.
        let d = derive(&hours(&[0, 8, 16, 20, 24, 28, 29, 30, 31]));
        assert!(d.gaps.is_empty(), "{:?}", d.gaps);
        let iv: Vec<f64> = d.intervals.iter().map(|(_, i)| i.unwrap()).collect();
        assert_eq!(iv, [8.0, 8.0, 8.0, 4.0, 4.0, 4.0, 1.0, 1.0, 1.0]);
        // The other way round, 4h to 8h.
        assert!(derive(&hours(&[0, 4, 8, 16, 24, 32])).gaps.is_empty());
    }

    #[test]
    fn missing_slots_are_gaps_wherever_they_are() {
        // One 8h slot missing.
        assert_eq!(gaps_h(&derive(&hours(&[0, 8, 24, 32, 40]))), [(8, 24)]);
        // Two missing, apart: stretches of 16h in a row are still gaps.
        assert_eq!(
            gaps_h(&derive(&hours(&[0, 8, 24, 40, 48]))),
            [(8, 24), (24, 40)]
        );
        // A 4h symbol missing every other slot for a while.
        assert_eq!(
            gaps_h(&derive(&hours(&[0, 4, 8, 16, 24, 28, 32]))),
            [(8, 16), (16, 24)]
        );
        // Right after the first slot.
        assert_eq!(gaps_h(&derive(&hours(&[0, 16, 24, 32]))), [(0, 16)]);
        // A missing day.
        assert_eq!(gaps_h(&derive(&hours(&[0, 8, 40, 48]))), [(8, 40)]);
        // The stretch after the last slot waits for the next slot.
        assert!(derive(&hours(&[0, 4, 8, 16])).gaps.is_empty());
        // A gap keeps the interval in force before it.
        let d = derive(&hours(&[0, 8, 24, 32]));
        assert_eq!(d.intervals[2].1, Some(8.0));
        assert_eq!(derive(&hours(&[5])).intervals, [(5 * HOUR, None)]);
    }

    proptest! {
        /// Runs hold exactly the slots they were made from.
        #[test]
        fn runs_round_trip(slots in proptest::collection::btree_set(0i64..10_000, 0..200)) {
            let slots: BTreeSet<i64> = slots.into_iter().map(|s| s * 60).collect();
            prop_assert_eq!(Runs::from_slots(&slots).slots(), slots);
        }

        /// A regular series with one interval change has no gap; taking out a slot makes
        /// the stretch across it a gap, except where the slots cannot tell: the last slot
        /// before a change to a longer interval, the first after a change to a shorter one,
        /// and the last but one (the stretch after the last slot is never judged).
        #[test]
        fn one_missing_slot_is_found(a in 0usize..4, b in 0usize..4, m1 in 1i64..8, n2 in 3i64..30, drop in 1usize..50) {
            let (ia, ib) = (INTERVALS[a], INTERVALS[b]);
            // Changes come at a time both intervals divide.
            let per = ia.max(ib) / ia;
            let n1 = ((m1 * per).max(3) + per - 1) / per * per;
            let mut slots = BTreeSet::new();
            let mut t = 0;
            for _ in 0..n1 { slots.insert(t); t += ia; }
            for _ in 0..n2 { slots.insert(t); t += ib; }
            prop_assert!(derive(&slots).gaps.is_empty(), "{:?}", slots);
            let v: Vec<i64> = slots.iter().copied().collect();
            let k = drop % (v.len() - 3) + 1;
            let at_change = (ia < ib && k as i64 == n1 - 1) || (ia > ib && k as i64 == n1 + 1);
            prop_assume!(!at_change);
            let mut missing = slots.clone();
            missing.remove(&v[k]);
            let d = derive(&missing);
            prop_assert!(d.gaps.contains(&(v[k - 1], v[k + 1])), "{:?} without {}: {:?}", v, v[k], d.gaps);
        }
    }
}
