//! The calibration rules: how `deai calibrate`'s measurements of honest cross-profile gaps
//! and dishonest pairs become the activation check's [`Thresholds`] and the sampling
//! replay's logit tolerances. They sit here, beside the thresholds they derive, so that the
//! security-critical arithmetic is one readable file with its tests; the CLI only runs the
//! engines and prints.
//!
//! Activation rule (also in BENCHMARKS.md): for each statistic, `h` = the worst honest
//! cross-profile chunk; for each dishonest class, `d_c` = its least suspicious run (the
//! minimum over runs of the run's worst chunk: one failing chunk rejects a run). With `d` =
//! the smallest `d_c` above `h`, the threshold is halfway, `h + (d - h) / 2` (equal margin
//! against false rejections and against cheaters); where no class lies above `h` the
//! statistic does not separate and the threshold is `1.5 h` (a margin against false
//! rejections only).
//!
//! Logit rule: the sampling replay's cross-profile tolerance
//! ([`crate::verify::LOGIT_TOL`]) is 1.5 x the worst change of a logit difference among the
//! candidates within 4 of the max (the greedy one, [`crate::verify::GREEDY_TOL`], 1.5 x the
//! verifier's worst gap to the other profile's greedy pick), rounded up to two significant
//! digits; [`LogitStats`] also reports what that tolerance lets a cheater choose.

use crate::activation::{self, ChunkStats, Thresholds};
use deai_engine::SamplingParams;

/// Per position, the other profile's top logits: (token, logit), best first.
pub type TopLogits = Vec<(u32, f32)>;

/// What a class of run pairs is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Control,
    Honest,
    Dishonest,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Control => "same-profile control",
            Kind::Honest => "honest cross-profile",
            Kind::Dishonest => "dishonest",
        }
    }
}

/// A class of run pairs (say, honest runs on llama.cpp against this engine's commitments)
/// and the chunk statistics of each run.
pub struct Class {
    pub name: &'static str,
    pub kind: Kind,
    /// Per run: the chunk statistics.
    pub runs: Vec<Vec<ChunkStats>>,
    /// Runs whose recomputed rows were bit-identical to the committed ones.
    pub bit_identical: usize,
}

impl Class {
    pub fn new(name: &'static str, kind: Kind) -> Self {
        Class {
            name,
            kind,
            runs: vec![],
            bit_identical: 0,
        }
    }
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkStats> {
        self.runs.iter().flatten()
    }
    /// (min, max) of `f` over every chunk of every run.
    pub fn range(&self, f: impl Fn(&ChunkStats) -> f64) -> (f64, f64) {
        self.chunks()
            .map(f)
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    }
    /// (rejected chunks, rejected runs) under `th`.
    pub fn rejected(&self, th: &Thresholds) -> (usize, usize) {
        let chunks = self.chunks().filter(|s| !s.within(th)).count();
        let runs = self
            .runs
            .iter()
            .filter(|r| r.iter().any(|s| !s.within(th)))
            .count();
        (chunks, runs)
    }
}

/// The statistics a threshold is derived for.
pub fn exp_frac(s: &ChunkStats) -> f64 {
    s.exp_mismatch_frac()
}
pub fn mean(s: &ChunkStats) -> f64 {
    s.mean_mantissa_diff
}
pub fn median(s: &ChunkStats) -> f64 {
    s.median_mantissa_diff
}

/// One statistic's derivation: the honest worst chunk, each dishonest class's least
/// suspicious run (the run's worst chunk, since one failing chunk rejects a run), the
/// threshold and whether any class separates.
pub struct Derived {
    pub honest_worst: f64,
    pub dishonest_best: Vec<(&'static str, f64)>,
    pub threshold: f64,
    pub separable: bool,
}

/// The module doc's rule, for the statistic `f`.
pub fn derive(classes: &[Class], f: fn(&ChunkStats) -> f64) -> Derived {
    let run_max = |r: &Vec<ChunkStats>| r.iter().map(f).fold(0.0f64, f64::max);
    let h = classes
        .iter()
        .filter(|c| c.kind == Kind::Honest)
        .flat_map(|c| c.runs.iter().map(run_max))
        .fold(0.0f64, f64::max);
    let dishonest_best: Vec<(&'static str, f64)> = classes
        .iter()
        .filter(|c| c.kind == Kind::Dishonest)
        .map(|c| {
            (
                c.name,
                c.runs.iter().map(run_max).fold(f64::INFINITY, f64::min),
            )
        })
        .collect();
    let d = dishonest_best
        .iter()
        .map(|x| x.1)
        .filter(|&d| d > h)
        .fold(f64::INFINITY, f64::min);
    let separable = d.is_finite();
    Derived {
        honest_worst: h,
        dishonest_best,
        threshold: if separable {
            h + (d - h) / 2.0
        } else {
            1.5 * h
        },
        separable,
    }
}

/// The cross-profile logit comparison behind [`crate::verify::GREEDY_TOL`] and
/// [`crate::verify::LOGIT_TOL`].
#[derive(Debug, Default, serde::Serialize)]
pub struct LogitStats {
    pub rows: usize,
    /// Rows where llama.cpp's argmax differs from deai's.
    pub argmax_flips: usize,
    /// Worst gap, in deai's logits, between deai's max and llama.cpp's greedy pick.
    pub honest_worst_greedy_gap: f64,
    /// Worst width, over rows, of the window holding the shifts `deai_j - llama_j` of the
    /// candidates within 1, 2, 4 and 8 logits of llama.cpp's max, and of all its top 64 (the
    /// premise of `accepts_within`: every pairwise logit difference moves by at most this).
    pub worst_window_within: [f64; 5],
    /// 1.5 x the worst greedy gap, rounded up to 2 significant digits.
    pub derived_greedy_tol: f64,
    /// 1.5 x the worst window within 4 logits of the max (candidates carrying all but a
    /// sliver of the mass at T 0.8), rounded up.
    pub derived_logit_tol: f64,
    /// Honest cross-profile picks checked with the derived tolerances: llama.cpp's greedy
    /// pick, and its seeded pick (T 0.8, top-k 40, top-p 0.95, 4 seeds, from its top 64
    /// logits) verified against deai's logits. Picks that differ from deai's exact pick, and
    /// how many of those the rule would reject (false rejections).
    pub greedy_picks: usize,
    pub greedy_flips: usize,
    pub greedy_false_rejects: usize,
    pub sampled_picks: usize,
    pub sampled_flips: usize,
    pub sampled_false_rejects: usize,
    /// Share of rows where the tolerance lets a cheater pick another token than the exact
    /// pick (greedy with the greedy tolerance; sampled with the sampling one, seed 1).
    pub cheat_freedom_greedy: f64,
    pub cheat_freedom_sampled: f64,
}

/// 1.5 x `h`, rounded up to two significant digits.
pub fn margin_tol(h: f64) -> f64 {
    let x = 1.5 * h;
    if x <= 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(x.log10().floor() as i32 - 1);
    (x / scale).ceil() * scale
}

/// Compares this engine's logit rows `deai` with the other profile's top logits `llama` at
/// the same positions.
pub fn logit_stats(
    deai: &[Vec<f32>],
    llama: &[TopLogits],
    vocab: usize,
) -> Result<LogitStats, String> {
    use deai_engine::sampler::{accepts_within, argmax, sample};
    let mut st = LogitStats::default();
    for (row, top) in deai.iter().zip(llama) {
        if row.len() != vocab {
            return Err(format!(
                "deai logits row of {} values, expected {vocab}",
                row.len()
            ));
        }
        if top.iter().any(|&(j, _)| j as usize >= vocab) {
            return Err("llama.cpp named a token outside the vocabulary".into());
        }
        let (a, la) = top[0];
        let d = argmax(row);
        st.rows += 1;
        st.argmax_flips += usize::from(a != d);
        st.honest_worst_greedy_gap = st
            .honest_worst_greedy_gap
            .max((row[d as usize] - row[a as usize]) as f64);
        for (w, worst) in [1.0, 2.0, 4.0, 8.0, f64::INFINITY]
            .iter()
            .zip(&mut st.worst_window_within)
        {
            let shifts = top
                .iter()
                .filter(|&&(_, lj)| (la - lj) as f64 <= *w)
                .map(|&(j, lj)| row[j as usize] as f64 - lj as f64);
            let (lo, hi) = shifts.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(x), hi.max(x))
            });
            *worst = worst.max(hi - lo);
        }
    }
    st.derived_greedy_tol = margin_tol(st.honest_worst_greedy_gap);
    st.derived_logit_tol = margin_tol(st.worst_window_within[2]);
    let (gtol, stol) = (st.derived_greedy_tol as f32, st.derived_logit_tol as f32);
    let greedy = SamplingParams::default();
    let sampled = |seed| SamplingParams {
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        seed,
        ..Default::default()
    };
    let (mut free_g, mut free_s) = (0usize, 0usize);
    let mut other = vec![f32::NEG_INFINITY; vocab];
    for (pos, (row, top)) in deai.iter().zip(llama).enumerate() {
        let pos = pos as u64;
        // Honest picks of the other profile, checked against deai's logits.
        other.fill(f32::NEG_INFINITY);
        for &(j, lj) in top {
            other[j as usize] = lj;
        }
        let pick = sample(&other, &greedy, pos);
        st.greedy_picks += 1;
        if pick != sample(row, &greedy, pos) {
            st.greedy_flips += 1;
            st.greedy_false_rejects += usize::from(!accepts_within(row, &greedy, pos, pick, gtol));
        }
        for seed in 1..=4 {
            let p = sampled(seed);
            let pick = sample(&other, &p, pos);
            st.sampled_picks += 1;
            if pick != sample(row, &p, pos) {
                st.sampled_flips += 1;
                st.sampled_false_rejects += usize::from(!accepts_within(row, &p, pos, pick, stol));
            }
        }
        // What the tolerances let a cheater choose among deai's 64 best candidates.
        let mut ids: Vec<u32> = (0..row.len() as u32).collect();
        ids.select_nth_unstable_by(63, |x, y| row[*y as usize].total_cmp(&row[*x as usize]));
        ids.truncate(64);
        let free = |p: &SamplingParams, tol: f32| {
            let exact = sample(row, p, pos);
            ids.iter()
                .any(|&t| t != exact && accepts_within(row, p, pos, t, tol))
        };
        free_g += usize::from(free(&greedy, gtol));
        free_s += usize::from(free(&sampled(1), stol));
    }
    st.cheat_freedom_greedy = free_g as f64 / st.rows.max(1) as f64;
    st.cheat_freedom_sampled = free_s as f64 / st.rows.max(1) as f64;
    Ok(st)
}

/// Chunk statistics of the commitment to `committed` rows against `other` rows.
pub fn chunk_stats_against(
    committed: &[f32],
    other: &[f32],
    d: usize,
) -> Result<Vec<ChunkStats>, String> {
    let cfg = crate::ProofConfig::default();
    let proof = activation::build(&[0u8; 32], committed, d, cfg.chunk_size, cfg.top_k)
        .ok_or("the activation proof cannot be built from these rows")?;
    let per = cfg.chunk_size as usize * d;
    Ok(proof
        .chunks
        .iter()
        .zip(other.chunks(per))
        .map(|(c, rows)| {
            let k = activation::k_for(rows.len() / d, cfg.chunk_size, cfg.top_k);
            activation::chunk_stats(c, rows, k)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A class of runs, each one chunk whose mean mantissa difference is the given value.
    fn class(name: &'static str, kind: Kind, means: &[f64]) -> Class {
        let mut c = Class::new(name, kind);
        for &m in means {
            c.runs.push(vec![ChunkStats {
                k: 8,
                exp_mismatches: 0,
                value_mismatches: 0,
                mean_mantissa_diff: m,
                median_mantissa_diff: m,
            }]);
        }
        c
    }

    #[test]
    fn thresholds_fall_halfway_between_honest_and_the_nearest_cheater() {
        let classes = [
            // Controls never move the threshold, however far apart.
            class("control", Kind::Control, &[50.0]),
            class("honest", Kind::Honest, &[1.0, 2.0]),
            // A cheater whose least suspicious run is 6: the nearest one above honest.
            class("near", Kind::Dishonest, &[9.0, 6.0]),
            class("far", Kind::Dishonest, &[30.0]),
            // Below honest: does not separate, so it cannot set the threshold.
            class("hidden", Kind::Dishonest, &[0.5]),
        ];
        let d = derive(&classes, mean);
        assert_eq!(d.honest_worst, 2.0);
        assert!(d.separable);
        assert_eq!(d.threshold, 4.0);
        assert_eq!(
            d.dishonest_best,
            vec![("near", 6.0), ("far", 30.0), ("hidden", 0.5)]
        );
        // With no separating cheater the threshold only guards honest runs: 1.5 h.
        let d = derive(&classes[..2], mean);
        assert!(!d.separable);
        assert_eq!(d.threshold, 3.0);
    }

    #[test]
    fn margin_rounds_up_to_two_digits() {
        assert_eq!(margin_tol(0.0), 0.0);
        assert!((margin_tol(0.6406) - 0.97).abs() < 1e-9);
        assert!((margin_tol(0.02) - 0.03).abs() < 1e-9);
        assert!(margin_tol(0.2865) >= 1.5 * 0.2865);
    }

    #[test]
    fn logit_stats_measure_shift_windows_and_check_honest_picks() {
        let vocab = 70;
        // Row 0: deai prefers token 1 by 0.2, llama.cpp token 2 by 0.1 (a flip; shifts 3-7.0
        // = -4.0 and 2.8-7.1 = -4.3: a window of 0.3). Row 1: llama.cpp's logits are deai's
        // plus 5 (no window at all).
        let mut r0 = vec![-10.0f32; vocab];
        r0[1] = 3.0;
        r0[2] = 2.8;
        let mut r1 = vec![-10.0f32; vocab];
        r1[4] = 1.0;
        r1[5] = 0.5;
        let l0 = vec![(2, 7.1), (1, 7.0)];
        let l1 = vec![(4, 6.0), (5, 5.5)];
        let st = logit_stats(&[r0, r1], &[l0, l1], vocab).unwrap();
        assert_eq!(st.rows, 2);
        assert_eq!(st.argmax_flips, 1);
        assert!((st.honest_worst_greedy_gap - 0.2).abs() < 1e-5);
        assert!(
            (st.worst_window_within[0] - 0.3).abs() < 1e-5,
            "{:?}",
            st.worst_window_within
        );
        assert!(
            (st.derived_greedy_tol - 0.3).abs() < 0.011,
            "{}",
            st.derived_greedy_tol
        );
        assert!(
            (st.derived_logit_tol - 0.45).abs() < 0.011,
            "{}",
            st.derived_logit_tol
        );
        // llama.cpp's greedy pick in row 0 differs from deai's and is within the tolerance.
        assert_eq!(
            (st.greedy_picks, st.greedy_flips, st.greedy_false_rejects),
            (2, 1, 0)
        );
        assert_eq!(st.sampled_picks, 8);
        // Row 0's runner-up (0.2 below) is a free choice for a greedy cheater; row 1's (0.5
        // below) is not.
        assert!((st.cheat_freedom_greedy - 0.5).abs() < 1e-9);
        // Bad shapes are errors.
        assert!(logit_stats(&[vec![0.0; 3]], &[vec![(0, 0.0)]], vocab).is_err());
        assert!(logit_stats(&[vec![0.0; vocab]], &[vec![(999, 0.0)]], vocab).is_err());
    }
}
