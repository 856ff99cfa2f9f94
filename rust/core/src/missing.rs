//! Missing values injected into a dense row-major f32 matrix; NaN marks a missing cell.
//!
//! Three mechanisms (Rubin's taxonomy):
//! - MCAR: every cell is missing with the same probability.
//! - MAR: a random subset of columns is always observed; the other cells go missing with a
//!   probability that is a logistic function of a random linear map of the row's observed
//!   values, so missingness depends only on what is seen.
//! - MNAR (self-masking): a cell's probability depends on its own value, through a random
//!   per-column weight.
//!
//! The logistic models get one shared intercept, found by bisection so that the mean
//! probability over the eligible cells hits the target exactly; the realised rate is then a
//! sum of independent Bernoullis around the requested one rather than biased by the shape of
//! the logits.

use crate::rng::Rng;

/// How missingness is drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum Mechanism {
    Mcar,
    /// `observed_fraction` of the columns (at least one, never all) are always observed;
    /// `logit_scale` sets how strongly they drive the others' missingness.
    Mar {
        observed_fraction: f64,
        logit_scale: f64,
    },
    /// `logit_scale` sets how strongly a value drives its own missingness.
    Mnar {
        logit_scale: f64,
    },
}

/// What [`apply_missingness`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct MissingReport {
    /// "mcar", "mar", "mnar", or "mcar_fallback" (MAR asked for with a single column).
    pub mechanism: &'static str,
    pub requested_rate: f64,
    /// `masked_cells / (rows * cols)`.
    pub realised_rate: f64,
    /// Cells the mechanism selected (a cell that was already NaN counts too).
    pub masked_cells: usize,
    /// MAR's always-observed columns, ascending; empty for the other mechanisms.
    pub always_observed: Vec<usize>,
}

/// Highest mean probability asked of the eligible cells: MAR concentrates the whole rate on
/// the maskable columns, which may need more than they have.
const MAX_CELL_RATE: f64 = 0.99;

/// Sets cells of `x` (`rows x cols`, row-major) to NaN so that about `rate` (in [0, 1)) of
/// all cells go missing, under the mechanism `mech`. `rate == 0` leaves `x` untouched and
/// draws nothing. Existing NaNs are read as the column mean (standardised value 0).
pub fn apply_missingness(
    rng: &mut Rng,
    x: &mut [f32],
    rows: usize,
    cols: usize,
    rate: f64,
    mech: &Mechanism,
) -> MissingReport {
    assert_eq!(x.len(), rows * cols, "x must hold rows * cols values");
    assert!((0.0..1.0).contains(&rate), "rate must lie in [0, 1), got {rate}");
    let name = match mech {
        Mechanism::Mcar => "mcar",
        Mechanism::Mar { .. } if cols == 1 => "mcar_fallback",
        Mechanism::Mar { .. } => "mar",
        Mechanism::Mnar { .. } => "mnar",
    };
    let mut report = MissingReport {
        mechanism: name,
        requested_rate: rate,
        realised_rate: 0.0,
        masked_cells: 0,
        always_observed: vec![],
    };
    if rate == 0.0 || x.is_empty() {
        return report;
    }

    let masked = match *mech {
        Mechanism::Mar { observed_fraction, logit_scale } if cols > 1 => {
            let n_obs = ((observed_fraction * cols as f64).round() as usize).clamp(1, cols - 1);
            let mut perm = rng.permutation(cols);
            let (observed, maskable) = perm.split_at_mut(n_obs);
            observed.sort_unstable();
            maskable.sort_unstable();
            report.always_observed = observed.to_vec();
            let n_mask = maskable.len();

            let mut z = vec![0.0f64; rows * n_obs];
            for (k, &c) in observed.iter().enumerate() {
                standardise_into(x, rows, cols, c, &mut z[k..], n_obs);
            }
            let weights: Vec<f64> = (0..n_obs * n_mask).map(|_| rng.normal()).collect();
            let gain = logit_scale / (n_obs as f64).sqrt();
            let mut logits = vec![0.0f64; rows * n_mask];
            for i in 0..rows {
                let out = &mut logits[i * n_mask..][..n_mask];
                for (k, &zk) in z[i * n_obs..][..n_obs].iter().enumerate() {
                    for (l, &wk) in out.iter_mut().zip(&weights[k * n_mask..][..n_mask]) {
                        *l += zk * wk;
                    }
                }
                for l in out.iter_mut() {
                    *l *= gain;
                }
            }
            let target = (rate * cols as f64 / n_mask as f64).min(MAX_CELL_RATE);
            let b = intercept_for_mean(&logits, target);
            let mut masked = 0;
            for i in 0..rows {
                for (j, &c) in maskable.iter().enumerate() {
                    if rng.uniform() < sigmoid(logits[i * n_mask + j] + b) {
                        x[i * cols + c] = f32::NAN;
                        masked += 1;
                    }
                }
            }
            masked
        }
        Mechanism::Mnar { logit_scale } => {
            let weights: Vec<f64> = (0..cols).map(|_| logit_scale * rng.normal()).collect();
            let mut logits = vec![0.0f64; rows * cols];
            for c in 0..cols {
                standardise_into(x, rows, cols, c, &mut logits[c..], cols);
            }
            for row in logits.chunks_exact_mut(cols) {
                for (l, &w) in row.iter_mut().zip(&weights) {
                    *l *= w;
                }
            }
            let b = intercept_for_mean(&logits, rate.min(MAX_CELL_RATE));
            let mut masked = 0;
            for (v, &l) in x.iter_mut().zip(&logits) {
                if rng.uniform() < sigmoid(l + b) {
                    *v = f32::NAN;
                    masked += 1;
                }
            }
            masked
        }
        // MCAR, and MAR on one column, which has nothing to condition on.
        _ => {
            let mut masked = 0;
            for v in x.iter_mut() {
                if rng.uniform() < rate {
                    *v = f32::NAN;
                    masked += 1;
                }
            }
            masked
        }
    };
    report.masked_cells = masked;
    report.realised_rate = masked as f64 / (rows * cols) as f64;
    report
}

#[inline]
fn sigmoid(t: f64) -> f64 {
    1.0 / (1.0 + (-t).exp())
}

/// Writes column `c` of `x`, standardised over its finite values (population std, guarded
/// against constant columns; NaN becomes 0), to `out[i * stride]` for each row `i`.
fn standardise_into(x: &[f32], rows: usize, cols: usize, c: usize, out: &mut [f64], stride: usize) {
    let (mut n, mut s1) = (0usize, 0.0f64);
    for i in 0..rows {
        let v = f64::from(x[i * cols + c]);
        if v.is_finite() {
            n += 1;
            s1 += v;
        }
    }
    let mean = if n > 0 { s1 / n as f64 } else { 0.0 };
    let mut s2 = 0.0;
    for i in 0..rows {
        let v = f64::from(x[i * cols + c]);
        if v.is_finite() {
            s2 += (v - mean) * (v - mean);
        }
    }
    let std = (s2 / n.max(1) as f64).sqrt();
    let inv = if std > 1e-12 * mean.abs().max(1.0) { 1.0 / std } else { 0.0 };
    for i in 0..rows {
        let v = f64::from(x[i * cols + c]);
        out[i * stride] = if v.is_finite() { (v - mean) * inv } else { 0.0 };
    }
}

/// The intercept `b` with `mean(sigmoid(logits + b)) == target`, by 48 bisection steps. The
/// bracket is widened by the largest |logit| so that its ends give means of ~0 and ~1.
fn intercept_for_mean(logits: &[f64], target: f64) -> f64 {
    let reach = logits.iter().fold(0.0f64, |m, l| m.max(l.abs())) + 50.0;
    let (mut lo, mut hi) = (-reach, reach);
    let n = logits.len() as f64;
    for _ in 0..48 {
        let mid = 0.5 * (lo + hi);
        let mean = logits.iter().map(|&l| sigmoid(l + mid)).sum::<f64>() / n;
        if mean < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Key, domain};

    fn rng(seed: u64, k: u64) -> Rng {
        Key::new(seed, [domain::TEST, k, 0, 0]).rng()
    }

    /// Gaussian columns sharing one factor with weight `rho` (0: independent).
    fn gaussian(r: &mut Rng, rows: usize, cols: usize, rho: f64) -> Vec<f32> {
        let mut x = vec![0.0f32; rows * cols];
        for row in x.chunks_exact_mut(cols) {
            let common = r.normal();
            for v in row {
                *v = (rho.sqrt() * common + (1.0 - rho).sqrt() * r.normal()) as f32;
            }
        }
        x
    }

    fn column(x: &[f32], cols: usize, c: usize) -> Vec<f64> {
        x.chunks_exact(cols).map(|row| f64::from(row[c])).collect()
    }

    fn mask_column(x: &[f32], cols: usize, c: usize) -> Vec<f64> {
        x.chunks_exact(cols).map(|row| f64::from(u8::from(row[c].is_nan()))).collect()
    }

    fn corr(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for (&u, &v) in a.iter().zip(b) {
            sab += (u - ma) * (v - mb);
            saa += (u - ma) * (u - ma);
            sbb += (v - mb) * (v - mb);
        }
        if saa > 0.0 && sbb > 0.0 { sab / (saa * sbb).sqrt() } else { 0.0 }
    }

    fn mechanisms() -> [Mechanism; 3] {
        [
            Mechanism::Mcar,
            Mechanism::Mar { observed_fraction: 0.3, logit_scale: 3.0 },
            Mechanism::Mnar { logit_scale: 3.0 },
        ]
    }

    #[test]
    fn realised_rate_matches_request() {
        let (rows, cols) = (2000, 10);
        for (m, mech) in mechanisms().iter().enumerate() {
            for (s, &rate) in [0.1, 0.3].iter().enumerate() {
                let mut r = rng(s as u64, 200 + m as u64);
                let mut x = gaussian(&mut r, rows, cols, 0.5);
                let rep = apply_missingness(&mut r, &mut x, rows, cols, rate, mech);
                let nan = x.iter().filter(|v| v.is_nan()).count();
                assert_eq!(nan, rep.masked_cells);
                assert_eq!(rep.realised_rate, nan as f64 / (rows * cols) as f64);
                assert!((rep.realised_rate - rate).abs() < 0.02, "{mech:?} {rep:?}");
            }
        }
    }

    #[test]
    fn zero_rate_changes_nothing() {
        for mech in mechanisms() {
            let mut r = rng(1, 210);
            let mut x = gaussian(&mut r, 50, 4, 0.5);
            let before = x.clone();
            let mut probe = r.clone();
            let rep = apply_missingness(&mut r, &mut x, 50, 4, 0.0, &mech);
            assert_eq!(x, before);
            assert_eq!((rep.masked_cells, rep.realised_rate), (0, 0.0));
            assert_eq!(r.next_u64(), probe.next_u64(), "no draws at rate 0");
        }
    }

    #[test]
    fn mcar_mask_ignores_values() {
        let (rows, cols) = (20_000, 6);
        let mut r = rng(2, 220);
        let before = gaussian(&mut r, rows, cols, 0.5);
        let mut x = before.clone();
        let rep = apply_missingness(&mut r, &mut x, rows, cols, 0.3, &Mechanism::Mcar);
        assert_eq!(rep.mechanism, "mcar");
        // Null correlations have sd 1/sqrt(rows) = 0.007.
        for j in 0..cols {
            let m = mask_column(&x, cols, j);
            for k in 0..cols {
                let c = corr(&m, &column(&before, cols, k));
                assert!(c.abs() < 0.04, "mask {j} vs column {k}: {c}");
            }
        }
    }

    #[test]
    fn mar_depends_on_observed_columns_only() {
        // Independent columns: a maskable column's mask may follow the observed columns but
        // has no path to its own values.
        let (rows, cols) = (20_000, 10);
        for seed in 0..3 {
            let mut r = rng(seed, 230);
            let before = gaussian(&mut r, rows, cols, 0.0);
            let mut x = before.clone();
            let mech = Mechanism::Mar { observed_fraction: 0.3, logit_scale: 3.0 };
            let rep = apply_missingness(&mut r, &mut x, rows, cols, 0.2, &mech);
            assert_eq!(rep.mechanism, "mar");
            assert_eq!(rep.always_observed.len(), 3);
            for &c in &rep.always_observed {
                assert!(column(&x, cols, c).iter().all(|v| v.is_finite()), "column {c} masked");
            }
            let maskable: Vec<usize> = (0..cols).filter(|c| !rep.always_observed.contains(c)).collect();
            let mut strongest = 0.0;
            for &j in &maskable {
                let m = mask_column(&x, cols, j);
                let own = corr(&m, &column(&before, cols, j));
                assert!(own.abs() < 0.05, "seed {seed}: mask {j} follows its own values: {own}");
                let by_observed =
                    rep.always_observed.iter().map(|&k| corr(&m, &column(&before, cols, k)).abs()).fold(0.0, f64::max);
                strongest += by_observed / maskable.len() as f64;
            }
            // Each maskable column's logit has sd ~3 spread over 3 observed columns; a
            // per-column bound would fail whenever all three weights happen to be small.
            assert!(strongest > 0.2, "seed {seed}: mean max |corr| with observed columns {strongest}");
        }
    }

    #[test]
    fn mar_single_column_falls_back_to_mcar() {
        let mut r = rng(3, 240);
        let mut x = gaussian(&mut r, 5000, 1, 0.0);
        let mech = Mechanism::Mar { observed_fraction: 0.5, logit_scale: 3.0 };
        let rep = apply_missingness(&mut r, &mut x, 5000, 1, 0.2, &mech);
        assert_eq!(rep.mechanism, "mcar_fallback");
        assert!(rep.always_observed.is_empty());
        assert!((rep.realised_rate - 0.2).abs() < 0.03, "{rep:?}");
    }

    #[test]
    fn mar_rate_beyond_maskable_capacity_is_clamped() {
        // One maskable column out of four cannot carry a 0.5 overall rate.
        let (rows, cols) = (4000, 4);
        let mut r = rng(4, 250);
        let mut x = gaussian(&mut r, rows, cols, 0.3);
        let mech = Mechanism::Mar { observed_fraction: 1.0, logit_scale: 1.0 };
        let rep = apply_missingness(&mut r, &mut x, rows, cols, 0.5, &mech);
        assert_eq!(rep.always_observed.len(), 3);
        assert!((rep.realised_rate - MAX_CELL_RATE / 4.0).abs() < 0.01, "{rep:?}");
    }

    #[test]
    fn mnar_masks_by_own_value() {
        let (rows, cols) = (20_000, 10);
        for seed in 0..3 {
            let mut r = rng(seed, 260);
            let before = gaussian(&mut r, rows, cols, 0.0);
            let mut x = before.clone();
            let rep = apply_missingness(&mut r, &mut x, rows, cols, 0.3, &Mechanism::Mnar { logit_scale: 3.0 });
            assert_eq!(rep.mechanism, "mnar");
            let (mut own, mut other) = (0.0, 0.0f64);
            for j in 0..cols {
                let m = mask_column(&x, cols, j);
                own += corr(&m, &column(&before, cols, j)).abs() / cols as f64;
                for k in (0..cols).filter(|&k| k != j) {
                    other = other.max(corr(&m, &column(&before, cols, k)).abs());
                }
            }
            assert!(own > 0.2, "seed {seed}: mean |corr(mask, own value)| {own}");
            // On independent columns nothing but the value itself moves the mask.
            assert!(other < 0.04, "seed {seed}: mask follows another column: {other}");

            // Masked and kept values differ in mean for the most affected column.
            let j = (0..cols)
                .max_by(|&a, &b| {
                    let ca = corr(&mask_column(&x, cols, a), &column(&before, cols, a)).abs();
                    let cb = corr(&mask_column(&x, cols, b), &column(&before, cols, b)).abs();
                    ca.total_cmp(&cb)
                })
                .unwrap();
            let (mut masked, mut kept) = ((0.0, 0usize), (0.0, 0usize));
            for i in 0..rows {
                let v = f64::from(before[i * cols + j]);
                let acc = if x[i * cols + j].is_nan() { &mut masked } else { &mut kept };
                acc.0 += v;
                acc.1 += 1;
            }
            let gap = masked.0 / masked.1 as f64 - kept.0 / kept.1 as f64;
            assert!(gap.abs() > 0.5, "seed {seed}: column {j} mean gap {gap}");
        }
    }

    #[test]
    fn same_seed_same_mask() {
        let (rows, cols) = (500, 6);
        for mech in mechanisms() {
            let run = |seed| {
                let mut r = rng(seed, 270);
                let mut x = gaussian(&mut r, rows, cols, 0.5);
                let rep = apply_missingness(&mut r, &mut x, rows, cols, 0.25, &mech);
                (x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), rep)
            };
            let (a, b) = (run(9), run(9));
            assert_eq!(a, b);
            assert_ne!(a.0, run(10).0);
        }
    }

    #[test]
    fn intercept_hits_target_mean() {
        let mut r = rng(5, 280);
        let logits: Vec<f64> = (0..1000).map(|_| 4.0 * r.normal()).collect();
        for target in [0.01, 0.3, 0.9] {
            let b = intercept_for_mean(&logits, target);
            let mean = logits.iter().map(|&l| sigmoid(l + b)).sum::<f64>() / logits.len() as f64;
            assert!((mean - target).abs() < 1e-9, "{target}: {mean}");
        }
    }
}
