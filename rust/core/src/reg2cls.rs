//! From raw SCM output to a dataset: categorical features, outlier clamping, scaling,
//! feature permutation, and regression-to-classification of the target.

use crate::config::FixedHp;
use crate::rng::Rng;

/// Independent accumulators per statistic: element `i` goes to lane `i % MOMENT_LANES`, so
/// the additions of consecutive elements do not wait on each other (four 2-lane vectors).
const MOMENT_LANES: usize = 8;

/// Running shifted moments: one pass gives mean and std; shifting by a value near the
/// mean keeps the single-pass variance free of cancellation.
#[derive(Clone, Copy)]
struct Moments {
    shift: f64,
    n: [f64; MOMENT_LANES],
    s1: [f64; MOMENT_LANES],
    s2: [f64; MOMENT_LANES],
}

impl Moments {
    fn new(shift: f64) -> Self {
        let zero = [0.0; MOMENT_LANES];
        Moments { shift: if shift.is_finite() { shift } else { 0.0 }, n: zero, s1: zero, s2: zero }
    }

    #[inline(always)]
    fn push_if(&mut self, lane: usize, x: f64, keep: bool) {
        // Branch-free select: the test is almost always true and NaN must not leak.
        let d = if keep { x - self.shift } else { 0.0 };
        self.n[lane] += if keep { 1.0 } else { 0.0 };
        self.s1[lane] += d;
        self.s2[lane] += d * d;
    }

    /// Pushes every value of `v` in `[lo, hi]` (NaN never is).
    fn extend_within(&mut self, v: &[f64], lo: f64, hi: f64) {
        let mut chunks = v.chunks_exact(MOMENT_LANES);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the feature the function is compiled for.
            unsafe { self.extend_avx512(&mut chunks, lo, hi) };
        } else {
            self.extend_sse2(&mut chunks, lo, hi);
        }
        #[cfg(not(target_arch = "x86_64"))]
        for c in &mut chunks {
            for (lane, &x) in c.iter().enumerate() {
                self.push_if(lane, x, (x >= lo) & (x <= hi));
            }
        }
        for (lane, &x) in chunks.remainder().iter().enumerate() {
            self.push_if(lane, x, (x >= lo) & (x <= hi));
        }
    }

    /// The chunks of `extend_within` on SSE2, four two-lane registers per statistic.
    #[cfg(target_arch = "x86_64")]
    fn extend_sse2(&mut self, chunks: &mut std::slice::ChunksExact<'_, f64>, lo: f64, hi: f64) {
        // SSE2 is part of x86_64: the same lanes and operations as the portable loop of
        // `extend_within`, written out because the compiler does not keep these
        // accumulators in registers.
        use std::arch::x86_64::*;
        const V: usize = MOMENT_LANES / 2;
        // SAFETY: SSE2 is always present on x86_64; every load and store stays inside
        // an array of 2 * V = MOMENT_LANES values.
        unsafe {
            let (vlo, vhi) = (_mm_set1_pd(lo), _mm_set1_pd(hi));
            let (shift, one) = (_mm_set1_pd(self.shift), _mm_set1_pd(1.0));
            let load = |a: &[f64; MOMENT_LANES]| -> [__m128d; V] {
                std::array::from_fn(|i| _mm_loadu_pd(a.as_ptr().add(2 * i)))
            };
            let (mut n, mut s1, mut s2) = (load(&self.n), load(&self.s1), load(&self.s2));
            for c in chunks {
                for i in 0..V {
                    let x = _mm_loadu_pd(c.as_ptr().add(2 * i));
                    let keep = _mm_and_pd(_mm_cmpge_pd(x, vlo), _mm_cmple_pd(x, vhi));
                    let d = _mm_and_pd(keep, _mm_sub_pd(x, shift));
                    n[i] = _mm_add_pd(n[i], _mm_and_pd(keep, one));
                    s1[i] = _mm_add_pd(s1[i], d);
                    s2[i] = _mm_add_pd(s2[i], _mm_mul_pd(d, d));
                }
            }
            for (src, dst) in [(n, &mut self.n), (s1, &mut self.s1), (s2, &mut self.s2)] {
                for (i, r) in src.into_iter().enumerate() {
                    _mm_storeu_pd(dst.as_mut_ptr().add(2 * i), r);
                }
            }
        }
    }

    /// The chunks of `extend_within` with all eight lanes in one AVX-512 register: the same
    /// comparisons, subtractions, products and sums per lane as the SSE2 loop.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn extend_avx512(&mut self, chunks: &mut std::slice::ChunksExact<'_, f64>, lo: f64, hi: f64) {
        use std::arch::x86_64::*;
        const _: () = assert!(MOMENT_LANES == 8, "one 8-lane register per statistic");
        let (vlo, vhi) = (_mm512_set1_pd(lo), _mm512_set1_pd(hi));
        let (shift, one) = (_mm512_set1_pd(self.shift), _mm512_set1_pd(1.0));
        // SAFETY: every load and store covers exactly MOMENT_LANES = 8 values, of a chunk or
        // of one of the accumulator arrays.
        unsafe {
            let (mut n, mut s1, mut s2) = (
                _mm512_loadu_pd(self.n.as_ptr()),
                _mm512_loadu_pd(self.s1.as_ptr()),
                _mm512_loadu_pd(self.s2.as_ptr()),
            );
            for c in chunks {
                let x = _mm512_loadu_pd(c.as_ptr());
                // Ordered compares: NaN is never kept, as with SSE2's cmpge / cmple.
                let keep = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(x, vlo) & _mm512_cmp_pd_mask::<_CMP_LE_OQ>(x, vhi);
                // Dropped lanes add +0.0, as the SSE2 loop's masked-to-zero terms do.
                let d = _mm512_maskz_sub_pd(keep, x, shift);
                n = _mm512_add_pd(n, _mm512_maskz_mov_pd(keep, one));
                s1 = _mm512_add_pd(s1, d);
                s2 = _mm512_add_pd(s2, _mm512_mul_pd(d, d));
            }
            _mm512_storeu_pd(self.n.as_mut_ptr(), n);
            _mm512_storeu_pd(self.s1.as_mut_ptr(), s1);
            _mm512_storeu_pd(self.s2.as_mut_ptr(), s2);
        }
    }

    /// Mean and std (ddof = 1 when the column has more than one row, as the reference);
    /// NaN where no value was pushed.
    fn mean_std(&self, len: usize) -> (f64, f64) {
        let total = |a: &[f64; MOMENT_LANES]| ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        let (count, s1, s2) = (total(&self.n), total(&self.s1), total(&self.s2));
        if count == 0.0 {
            return (f64::NAN, f64::NAN);
        }
        let mean = self.shift + s1 / count;
        let ddof = if len > 1 { 1.0 } else { 0.0 };
        let std = if count > ddof { ((s2 - s1 * s1 / count).max(0.0) / (count - ddof)).sqrt() } else { f64::NAN };
        (mean, std)
    }
}

fn first_finite(v: &[f64]) -> f64 {
    v.iter().copied().find(|x| x.is_finite()).unwrap_or(0.0)
}

/// Mean and std of the values in [lo, hi] (NaN never falls in the range).
fn mean_std_within(v: &[f64], lo: f64, hi: f64, shift: f64) -> (f64, f64) {
    let mut m = Moments::new(shift);
    m.extend_within(v, lo, hi);
    m.mean_std(v.len())
}

/// NaN-aware mean and std of the whole column.
fn nan_mean_std(v: &[f64]) -> (f64, f64) {
    mean_std_within(v, f64::NEG_INFINITY, f64::INFINITY, first_finite(v))
}

/// Clamp bounds of the two-pass outlier rule: statistics of the values within
/// `threshold` sigma, then mean +- threshold * sigma of those.
fn outlier_bounds(v: &[f64], threshold: f64) -> (f64, f64) {
    let (mean, std) = nan_mean_std(v);
    let cut = std.max(1e-6) * threshold;
    let (mut m2, s2) = mean_std_within(v, mean - cut, mean + cut, mean);
    let s2 = if s2.is_nan() { 0.0 } else { s2.max(1e-6) };
    if m2.is_nan() {
        m2 = mean;
    }
    let (lo, hi) = (m2 - s2 * threshold, m2 + s2 * threshold);
    (if lo.is_nan() { f64::NEG_INFINITY } else { lo }, if hi.is_nan() { f64::INFINITY } else { hi })
}

/// Two-pass 4-sigma style clamp (NaN stays NaN).
pub fn outlier_removing(v: &mut [f64], threshold: f64) {
    let (lo, hi) = outlier_bounds(v, threshold);
    for x in v.iter_mut() {
        if !x.is_nan() {
            *x = x.clamp(lo, hi);
        }
    }
}

/// `(x - mean) / max(std, 1e-6)`, clipped to +-100.
pub fn standard_scaling(v: &mut [f64]) {
    let (mean, std) = nan_mean_std(v);
    scale_with(v, mean, std);
}

fn scale_with(v: &mut [f64], mean: f64, std: f64) {
    let inv = 1.0 / std.max(1e-6);
    for x in v.iter_mut() {
        *x = ((*x - mean) * inv).clamp(-100.0, 100.0);
    }
}

/// `outlier_removing` then `standard_scaling` in 5 passes instead of 8 (this runs on every
/// column): the scaling statistics come from the clamped values and the clamp bounds.
pub fn clamp_and_scale(v: &mut [f64], threshold: f64) {
    let (lo, hi) = outlier_bounds(v, threshold);
    for x in v.iter_mut() {
        // `clamp` keeps NaN; `lo <= hi` and neither is NaN (see `outlier_bounds`).
        *x = x.clamp(lo, hi);
    }
    let mut m = Moments::new((lo + hi) / 2.0);
    m.extend_within(v, f64::NEG_INFINITY, f64::INFINITY);
    let (mean, std) = m.mean_std(v.len());
    scale_with(v, mean, std);
}

/// Maps the distinct labels to 0..C-1 in sorted order, then applies a random permutation.
pub fn permute_classes(rng: &mut Rng, c: &mut [i64]) {
    let mut uniq: Vec<i64> = c.to_vec();
    uniq.sort_unstable();
    uniq.dedup();
    if uniq.len() <= 1 {
        return;
    }
    let perm = rng.permutation(uniq.len());
    for x in c.iter_mut() {
        let dense = uniq.binary_search(x).expect("label present");
        *x = perm[dense] as i64;
    }
}

/// Class = number of boundaries strictly below the value; boundaries are values at random
/// rows (`rank`) or N(0,1) draws (`value`). Then optionally permuted and reversed.
pub fn multiclass_assign(rng: &mut Rng, v: &[f64], k: usize, rank: bool, ordered_prob: f64) -> Vec<i64> {
    let n = v.len();
    let mut bounds: Vec<f64> = if rank {
        (0..k - 1).map(|_| v[rng.below(n as u64) as usize]).collect()
    } else {
        (0..k - 1).map(|_| rng.normal()).collect()
    };
    bounds.sort_by(f64::total_cmp);
    let mut c: Vec<i64> = v.iter().map(|&x| bounds.partition_point(|&b| x > b) as i64).collect();
    if rng.uniform() > ordered_prob {
        permute_classes(rng, &mut c);
    }
    if rng.uniform() > 0.5 {
        for x in &mut c {
            *x = k as i64 - 1 - *x;
        }
    }
    c
}

/// Result of `reg2cls` on one dataset.
pub struct Processed {
    /// rows x cols, row-major, already permuted.
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    /// Whether each (permuted) column holds categorical codes.
    pub categorical: Vec<bool>,
}

/// Features: optional categorical conversion, 4-sigma clamp, scaling, permutation,
/// optional rescaling by `num_features / max_features`. Target: clamp, scaling, then classes.
pub fn reg2cls(
    rng: &mut Rng,
    x: &[f32],
    rows: usize,
    cols: usize,
    y: &[f32],
    num_classes: Option<usize>,
    multiclass_rank: bool,
    fixed: &FixedHp,
    max_features: usize,
) -> Processed {
    assert!(x.len() == rows * cols, "reg2cls: x holds {} values, not {rows} x {cols}", x.len());
    let mut columns: Vec<Vec<f64>> =
        (0..cols).map(|c| x.chunks_exact(cols).map(|row| f64::from(row[c])).collect()).collect();
    let mut is_cat = vec![false; cols];
    if rng.uniform() < fixed.cat_prob {
        let col_prob = rng.uniform();
        let max_cat = fixed.max_categories.map_or(usize::MAX, |m| m as usize);
        for (c, col) in columns.iter_mut().enumerate() {
            if rng.uniform() < col_prob {
                let k = (rng.gamma(1.0, 10.0).round_ties_even().max(2.0) as usize).min(max_cat);
                let codes = multiclass_assign(rng, col, k, true, 0.3);
                for (v, code) in col.iter_mut().zip(codes) {
                    *v = code as f64;
                }
                is_cat[c] = true;
            }
        }
    }
    let scale = if fixed.scale_by_max_features { cols as f64 / max_features as f64 } else { 1.0 };
    for col in &mut columns {
        clamp_and_scale(col, 4.0);
        // Divided here, on contiguous values, rather than in the strided copy below.
        if scale != 1.0 {
            for v in col.iter_mut() {
                *v /= scale;
            }
        }
    }
    let perm: Vec<usize> = if fixed.permute_features { rng.permutation(cols) } else { (0..cols).collect() };
    // Row by row: contiguous writes (appended, so no zeroing pass first), one sequential read
    // stream per column.
    let sources: Vec<&[f64]> = perm.iter().map(|&p| &columns[p][..rows]).collect();
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        out.extend(sources.iter().map(|s| s[r] as f32));
    }
    let categorical = perm.iter().map(|&p| is_cat[p]).collect();

    let mut yv: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
    clamp_and_scale(&mut yv, 4.0);
    let y = match num_classes {
        None => yv.iter().map(|&v| v as f32).collect(),
        Some(k) => {
            let mut c = if k == 2 && fixed.balanced {
                let mut s = yv.clone();
                s.sort_by(f64::total_cmp);
                let median = s[(s.len() - 1) / 2]; // lower median, as torch.median
                yv.iter().map(|&v| i64::from(v > median)).collect()
            } else {
                multiclass_assign(rng, &yv, k, multiclass_rank, fixed.multiclass_ordered_prob)
            };
            if fixed.permute_labels {
                permute_classes(rng, &mut c);
            }
            c.iter().map(|&v| v as f32).collect()
        }
    };
    Processed { x: out, y, categorical }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moment_builds_give_the_lane_by_lane_bits() {
        // NaN, infinities and values outside [lo, hi] must be skipped the same way by
        // every build; 1003 values leave a remainder after the 8-lane chunks.
        let v: Vec<f64> = (0..1003)
            .map(|i| match i % 41 {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => -1e9,
                _ => ((i * 7919) % 1000) as f64 * 0.0137 - 6.0 + 1e-9 * i as f64,
            })
            .collect();
        let (lo, hi, shift) = (-4.5, 5.25, 0.3);
        let mut want = Moments::new(shift);
        for (i, &x) in v.iter().enumerate() {
            want.push_if(i % MOMENT_LANES, x, (x >= lo) & (x <= hi));
        }
        let mut got = Moments::new(shift);
        got.extend_within(&v, lo, hi);
        #[allow(unused_mut)] // only x86_64 adds builds
        let mut builds = vec![("dispatched", got)];
        #[cfg(target_arch = "x86_64")]
        {
            let mut m = Moments::new(shift);
            let mut chunks = v.chunks_exact(MOMENT_LANES);
            m.extend_sse2(&mut chunks, lo, hi);
            for (lane, &x) in chunks.remainder().iter().enumerate() {
                m.push_if(lane, x, (x >= lo) & (x <= hi));
            }
            builds.push(("sse2", m));
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut m = Moments::new(shift);
                let mut chunks = v.chunks_exact(MOMENT_LANES);
                // SAFETY: the CPU has AVX-512F.
                unsafe { m.extend_avx512(&mut chunks, lo, hi) };
                for (lane, &x) in chunks.remainder().iter().enumerate() {
                    m.push_if(lane, x, (x >= lo) & (x <= hi));
                }
                builds.push(("avx512", m));
            }
        }
        let bits = |m: &Moments| [m.n, m.s1, m.s2].map(|a| a.map(f64::to_bits));
        for (build, m) in &builds {
            assert_eq!(bits(m), bits(&want), "{build}");
        }
        let kept: f64 = want.n.iter().sum();
        assert!(kept > 500.0 && kept < 1003.0, "some values kept, some skipped: {kept}");
    }
    use crate::rng::{Key, domain};

    #[test]
    fn outliers_are_clamped_to_four_sigma() {
        let mut rng = Key::new(1, [domain::TEST, 200, 0, 0]).rng();
        let mut v: Vec<f64> = (0..1000).map(|_| rng.normal()).collect();
        v[0] = 1e6;
        outlier_removing(&mut v, 4.0);
        assert!(v[0] < 6.0, "{}", v[0]);
        assert!(v[1..].iter().all(|x| x.abs() < 6.0));
    }

    #[test]
    fn fused_clamp_and_scale_matches_the_two_steps() {
        let mut rng = Key::new(4, [domain::TEST, 203, 0, 0]).rng();
        for case in 0..20 {
            let mut a: Vec<f64> = (0..777).map(|_| 1e3 + rng.normal() * (1.0 + case as f64)).collect();
            a[3] = 1e9;
            a[5] = f64::NAN;
            let mut b = a.clone();
            outlier_removing(&mut a, 4.0);
            standard_scaling(&mut a);
            clamp_and_scale(&mut b, 4.0);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-9 || (x.is_nan() && y.is_nan()), "{x} {y}");
            }
        }
    }

    #[test]
    fn rank_assignment_gives_at_most_k_dense_classes() {
        let mut rng = Key::new(2, [domain::TEST, 201, 0, 0]).rng();
        let v: Vec<f64> = (0..500).map(|_| rng.normal()).collect();
        for k in 2..12 {
            let mut c = multiclass_assign(&mut rng, &v, k, true, 0.0);
            permute_classes(&mut rng, &mut c);
            let mut u = c.clone();
            u.sort_unstable();
            u.dedup();
            assert!(u.len() <= k && u.len() >= 2);
            assert_eq!(*u.last().unwrap() as usize, u.len() - 1, "dense labels");
        }
    }

    #[test]
    fn ordered_assignment_is_monotone() {
        // ordered_prob = 1 skips the permutation: classes follow the value order up to reversal.
        let mut rng = Key::new(3, [domain::TEST, 202, 0, 0]).rng();
        let v: Vec<f64> = (0..300).map(|i| i as f64).collect();
        let c = multiclass_assign(&mut rng, &v, 5, true, 1.0);
        let inc = c.windows(2).all(|w| w[0] <= w[1]);
        let dec = c.windows(2).all(|w| w[0] >= w[1]);
        assert!(inc || dec);
    }
}
