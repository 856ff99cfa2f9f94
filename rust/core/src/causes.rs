//! Root causes of the SCM priors (TabICL's `XSampler`): a (rows x cols) matrix.

use crate::hp::Sampling;
use crate::rng::Rng;

/// Column kinds drawn by the mixed sampler (reported in metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CauseKind {
    Normal,
    Uniform,
    Multinomial,
    Zipf,
}

/// Samples causes into a new row-major matrix and returns the kind of every column.
pub fn sample_causes(
    rng: &mut Rng,
    rows: usize,
    cols: usize,
    sampling: Sampling,
    pre_stats: bool,
) -> (Vec<f32>, Vec<CauseKind>) {
    let mut x = vec![0.0f32; rows * cols];
    // Per-column mean m ~ N(0,1) and std |N(0,1) * m|, drawn up front as the reference does.
    let stats: Option<Vec<(f64, f64)>> = pre_stats.then(|| {
        let means: Vec<f64> = (0..cols).map(|_| rng.normal()).collect();
        means.iter().map(|&m| (m, (rng.normal() * m).abs())).collect()
    });
    let mut kinds = vec![CauseKind::Normal; cols];
    let mut col = vec![0.0f32; rows];
    let normal_col = |rng: &mut Rng, c: usize, col: &mut [f32]| match &stats {
        Some(s) => rng.fill_normal(col, s[c].0 as f32, s[c].1 as f32),
        None => rng.fill_normal(col, 0.0, 1.0),
    };
    match sampling {
        Sampling::Uniform => {
            for v in &mut x {
                *v = rng.uniform_f32();
            }
            kinds.fill(CauseKind::Uniform);
            return (x, kinds);
        }
        Sampling::Normal if stats.is_none() => {
            rng.fill_normal(&mut x, 0.0, 1.0);
            return (x, kinds);
        }
        Sampling::Normal => {
            for c in 0..cols {
                normal_col(rng, c, &mut col);
                scatter(&mut x, cols, c, &col);
            }
            return (x, kinds);
        }
        Sampling::Mixed => {}
    }
    let p_zipf = rng.uniform() * 0.66;
    let p_multi = rng.uniform() * 0.66;
    let p_normal = rng.uniform() * 0.66;
    for c in 0..cols {
        let kind = if rng.uniform() > p_normal {
            CauseKind::Normal
        } else if rng.uniform() > p_multi {
            CauseKind::Multinomial
        } else if rng.uniform() > p_zipf {
            CauseKind::Zipf
        } else {
            CauseKind::Uniform
        };
        match kind {
            CauseKind::Normal => normal_col(rng, c, &mut col),
            CauseKind::Multinomial => multinomial_col(rng, &mut col),
            CauseKind::Zipf => zipf_col(rng, &mut col),
            CauseKind::Uniform => {
                for v in col.iter_mut() {
                    *v = rng.uniform_f32();
                }
            }
        }
        kinds[c] = kind;
        scatter(&mut x, cols, c, &col);
    }
    (x, kinds)
}

/// Zipf draws are clamped at this value, as the reference does.
const ZIPF_CAP: usize = 10;

/// `P(min(Zipf(a), cap) <= k)` for k = 1..cap-1 (the last value takes the rest).
fn capped_zipf_cdf(a: f64, cap: usize) -> Vec<f64> {
    let zeta = zeta(a);
    let mut acc = 0.0;
    (1..cap)
        .map(|k| {
            acc += (k as f64).powf(-a) / zeta;
            acc
        })
        .collect()
}

/// One draw of min(Zipf(a), cap) by inversion of its CDF: one uniform, no powers (the
/// clamped variable has only `cap` values).
fn capped_zipf(rng: &mut Rng, cdf: &[f64]) -> usize {
    let u = rng.uniform();
    1 + cdf.partition_point(|&c| c <= u)
}

/// Riemann zeta for a > 1: a direct sum to N then the Euler-Maclaurin tail (relative error
/// far below 1e-12 for the exponents used here, a >= 2).
fn zeta(a: f64) -> f64 {
    const N: f64 = 64.0;
    let head: f64 = (1..64).map(|k| (k as f64).powf(-a)).sum();
    let tail = N.powf(1.0 - a) / (a - 1.0) + 0.5 * N.powf(-a) + a / 12.0 * N.powf(-a - 1.0)
        - a * (a + 1.0) * (a + 2.0) / 720.0 * N.powf(-a - 3.0);
    head + tail
}

fn scatter(x: &mut [f32], cols: usize, c: usize, col: &[f32]) {
    for (r, &v) in col.iter().enumerate() {
        x[r * cols + c] = v;
    }
}

/// k in [2, 20] categories with U(0,1) weights, standardised codes (NaN if all rows agree,
/// which the validity check then rejects, as in the reference).
fn multinomial_col(rng: &mut Rng, col: &mut [f32]) {
    let k = rng.randint(2, 21) as usize;
    let w: Vec<f64> = (0..k).map(|_| rng.uniform()).collect();
    // Cumulative table: one draw per row.
    let total: f64 = w.iter().sum();
    let mut cum = Vec::with_capacity(k);
    let mut acc = 0.0;
    for v in &w {
        acc += v / total;
        cum.push(acc);
    }
    for v in col.iter_mut() {
        let u = rng.uniform();
        let idx = cum.partition_point(|&c| c <= u).min(k - 1);
        *v = idx as f32;
    }
    let n = col.len() as f64;
    let mean = col.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = col.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let sd = var.sqrt();
    for v in col.iter_mut() {
        *v = ((f64::from(*v) - mean) / sd) as f32;
    }
}

/// Zipf with exponent 2 + 2U, clamped at 10 and mean-centred.
fn zipf_col(rng: &mut Rng, col: &mut [f32]) {
    let a = 2.0 + rng.uniform() * 2.0;
    let cdf = capped_zipf_cdf(a, ZIPF_CAP);
    for v in col.iter_mut() {
        *v = capped_zipf(rng, &cdf) as f32;
    }
    let mean = col.iter().map(|&v| f64::from(v)).sum::<f64>() / col.len() as f64;
    for v in col.iter_mut() {
        *v = (f64::from(*v) - mean) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Key, domain};

    #[test]
    fn zeta_matches_known_values() {
        let pi = std::f64::consts::PI;
        assert!((zeta(2.0) - pi.powi(2) / 6.0).abs() < 1e-13);
        assert!((zeta(4.0) - pi.powi(4) / 90.0).abs() < 1e-13);
        assert!((zeta(3.0) - 1.202_056_903_159_594_3).abs() < 1e-13);
    }

    #[test]
    fn capped_zipf_matches_the_clamped_rejection_sampler() {
        // The inversion table against the reference sampler (Devroye's rejection method)
        // clamped at the cap: every value's frequency within 5 standard errors.
        for a in [2.0f64, 2.7, 3.9] {
            let mut r = Key::new(5, [domain::TEST, 9, a.to_bits(), 0]).rng();
            let n = 300_000;
            let cdf = capped_zipf_cdf(a, ZIPF_CAP);
            let mut got = [0usize; ZIPF_CAP + 1];
            let mut want = [0usize; ZIPF_CAP + 1];
            for _ in 0..n {
                got[capped_zipf(&mut r, &cdf)] += 1;
            }
            for _ in 0..n {
                want[r.zipf(a).min(ZIPF_CAP as u64) as usize] += 1;
            }
            for k in 1..=ZIPF_CAP {
                let (p, q) = (got[k] as f64 / n as f64, want[k] as f64 / n as f64);
                let se = (2.0 * q.max(1e-5) * (1.0 - q) / n as f64).sqrt();
                assert!((p - q).abs() < 5.0 * se, "a = {a}, k = {k}: {p} vs {q}");
            }
        }
    }
}
