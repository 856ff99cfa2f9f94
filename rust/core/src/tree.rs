//! Gradient-boosted multi-output regression trees on histogram bins.
//!
//! Emulates XGBoost's `XGBRegressor(tree_method="hist", multi_strategy="multi_output_tree")`
//! with the squared-error objective, as TabICL's tree SCM prior uses it: fit random targets,
//! then predict the training rows. Only in-sample predictions are needed, so a split is kept
//! as "which rows go left" and never as a float threshold.
//!
//! Split finding does not materialise dense histograms. For every feature the rows are kept
//! sorted by bin (ties by row index) inside each node's segment, so scanning a node's segment
//! visits exactly its non-empty bins in order: the running left sums at bin boundaries are the
//! prefix sums a histogram scan would produce. That costs O(rows) per node and feature instead
//! of O(bins), which is what matters here: with n ~ 1024 rows and 256 bins, nodes below the
//! root leave most bins empty, and a dense [feature][bin][output] f64 histogram (~0.7 MB at
//! p = 50, o = 6) would be zeroed, subtracted and scanned mostly for nothing, out of L2.
//! Children inherit the sorted order by a stable partition of each feature's segment.
//!
//! Fidelity (checked against xgboost 3.2.0, see `tests/test_tree_booster.py`): whenever every
//! feature has at most `max_bin` distinct values, predictions agree to one f32 ulp: same bins
//! (one per distinct value), same per-target-mean intercept, same f32 gradients summed in f64,
//! same gain, same `kRtEps` threshold, same tie order (lowest feature, then lowest bin), same
//! leaf rounding. With more distinct values both sides use quantile bins, but XGBoost takes its
//! edges from an approximate quantile sketch that is not replicated here, so individual trees
//! differ while fitting equally well.

/// Booster settings. Defaults follow the boosted-tree library defaults that TabICL's tree
/// SCM relies on: learning rate 0.3, L2 leaf penalty 1, min child weight 1, 256 bins.
#[derive(Clone, Debug)]
pub struct BoosterParams {
    /// Depth limit of every tree (0: single-leaf trees; XGBoost would read 0 as unlimited).
    pub max_depth: usize,
    /// Boosting rounds, one tree each.
    pub n_estimators: usize,
    /// Shrinkage of every leaf value (XGBoost's `eta`).
    pub learning_rate: f32,
    /// L2 penalty on leaf values.
    pub reg_lambda: f32,
    /// Smallest hessian sum (here: row count) of a child.
    pub min_child_weight: f32,
    /// Most bins per feature (values beyond this many distinct ones get quantile bins).
    pub max_bin: usize,
}

impl BoosterParams {
    pub fn new(max_depth: usize, n_estimators: usize) -> Self {
        BoosterParams {
            max_depth,
            n_estimators,
            learning_rate: 0.3,
            reg_lambda: 1.0,
            min_child_weight: 1.0,
            max_bin: 256,
        }
    }
}

/// Smallest loss change that makes a split worth keeping (XGBoost's `kRtEps`).
const MIN_SPLIT_GAIN: f64 = 1e-6;

/// Fits a boosted ensemble of multi-output trees to `y` (n x o, row-major) on `x`
/// (n x p, row-major, finite) and returns its predictions on `x` (n x o, row-major).
///
/// Empty inputs (`n == 0` or `o == 0`) give an empty result. Without usable features
/// (`p == 0`, or every column constant) or with `max_depth == 0`, every tree is a single
/// leaf, so the result is the per-output mean of `y`.
pub fn fit_predict(x: &[f32], n: usize, p: usize, y: &[f32], o: usize, params: &BoosterParams) -> Vec<f32> {
    assert_eq!(x.len(), n * p, "x must hold n * p values");
    assert_eq!(y.len(), n * o, "y must hold n * o values");
    // Row indices share a u32 with the bin index (see `Bins`).
    assert!(n < 1 << 31, "at most 2^31 - 1 rows");
    if n == 0 || o == 0 {
        return Vec::new();
    }

    // Intercept: per-output mean, summed in f64 and rounded once, which is how XGBoost's
    // fitted `base_score` for squared error (one Newton step from zero) comes out.
    let mut mean = vec![0.0f64; o];
    column_sums(y, o, &mut mean);
    let base: Vec<f32> = mean.iter().map(|&s| (s / n as f64) as f32).collect();
    let mut pred: Vec<f32> = base.iter().copied().cycle().take(n * o).collect();
    if params.n_estimators == 0 {
        return pred;
    }

    let bins = Bins::new(x, n, p, params.max_bin);
    // Monomorphise the hot loops on the number of two-lane vectors per gradient row, so that
    // per-output loops unroll and running sums stay in registers; wider targets take the
    // run-time-width path.
    // Beyond two outputs, rows are padded to a multiple of four so that the row scan can
    // move four lanes at a time (the padding lanes are zero and change no sum).
    let nv = if o <= 2 { 1 } else { 2 * o.div_ceil(4) };
    let simd = Simd::detect();
    macro_rules! fixed {
        ($($k:literal)*) => {
            match nv {
                $($k => boost(Fixed::<$k>, o, &bins, y, params, simd, &mut pred),)*
                nv => boost(Dyn(nv), o, &bins, y, params, simd, &mut pred),
            }
        };
    }
    fixed!(1 2 4 6 8);
    give_order(bins.order);
    pred
}

/// Per-column sums in f64 of a row-major matrix with `cols` columns, row after row, into
/// `sums` (cols values). They run in a local array (registers where `cols` is known at compile
/// time): summing into `sums` directly stores every column once per row, as the compiler
/// cannot rule out that `sums` aliases `x`.
#[inline(always)]
fn column_sums(x: &[f32], cols: usize, sums: &mut [f64]) {
    for c0 in (0..cols).step_by(16) {
        let width = (cols - c0).min(16);
        let mut acc = [0.0f64; 16];
        for row in x.chunks_exact(cols) {
            for (a, &v) in acc[..width].iter_mut().zip(&row[c0..c0 + width]) {
                *a += f64::from(v);
            }
        }
        sums[c0..c0 + width].copy_from_slice(&acc[..width]);
    }
}

thread_local! {
    /// Order buffers of earlier fits on this thread. A fit uses three of up to p * n
    /// entries, and fresh ones would fault in every page on first touch (a tree SCM fits two
    /// to three layers per dataset: about 300 page faults at 50 features and 1024 rows).
    static SPARE_ORDERS: RefCell<Vec<Vec<u32>>> = const { RefCell::new(Vec::new()) };
}

/// Largest buffer kept for reuse (16 MiB); bigger fits allocate afresh. A thread thus holds at
/// most 48 MiB for its lifetime, and about 1.2 MB at 100 features and 1024 rows.
const SPARE_MAX: usize = 1 << 22;

/// A buffer of at least `len` entries, reused from an earlier fit on this thread when one is
/// spare. Its entries are stale: every user writes a range before reading it.
fn take_order(len: usize) -> Vec<u32> {
    let mut v = SPARE_ORDERS.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    if v.len() < len {
        v.resize(len, 0);
    }
    v
}

/// Keeps `v` for the next fit on this thread (three at most, none beyond `SPARE_MAX`).
fn give_order(v: Vec<u32>) {
    if v.len() <= SPARE_MAX {
        SPARE_ORDERS.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < 3 {
                s.push(v);
            }
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod lanes {
    use std::arch::x86_64::{
        __m128d, _mm_add_pd, _mm_cvtsd_f64, _mm_loadu_pd, _mm_mul_pd, _mm_set_pd, _mm_setzero_pd, _mm_storeu_pd,
        _mm_sub_pd, _mm_unpackhi_pd, _mm_unpacklo_pd,
    };

    /// Two f64 lanes in an SSE2 register. A vector type rather than an array: with arrays
    /// the compiler splits running sums into scalars and re-packs them on every row, which
    /// lengthens the loop-carried dependency several times over.
    // SAFETY (all blocks below): SSE2 is part of the x86_64 baseline, and loads and stores
    // go through slices of exactly two f64.
    #[derive(Clone, Copy)]
    pub struct F2(__m128d);

    impl F2 {
        #[inline(always)]
        pub fn zero() -> F2 {
            F2(unsafe { _mm_setzero_pd() })
        }
        #[inline(always)]
        pub fn load(s: &[f64]) -> F2 {
            let s = &s[..2];
            F2(unsafe { _mm_loadu_pd(s.as_ptr()) })
        }
        #[inline(always)]
        pub fn store(self, s: &mut [f64]) {
            let s = &mut s[..2];
            unsafe { _mm_storeu_pd(s.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        pub fn add(self, b: F2) -> F2 {
            F2(unsafe { _mm_add_pd(self.0, b.0) })
        }
        #[inline(always)]
        pub fn sub(self, b: F2) -> F2 {
            F2(unsafe { _mm_sub_pd(self.0, b.0) })
        }
        #[inline(always)]
        pub fn mul(self, b: F2) -> F2 {
            F2(unsafe { _mm_mul_pd(self.0, b.0) })
        }
        /// Lane 0 + lane 1.
        #[inline(always)]
        pub fn sum(self) -> f64 {
            unsafe { _mm_cvtsd_f64(self.0) + _mm_cvtsd_f64(_mm_unpackhi_pd(self.0, self.0)) }
        }
        /// [a0 + a1, b0 + b1]: two horizontal sums for the price of one.
        #[inline(always)]
        pub fn sums(a: F2, b: F2) -> F2 {
            unsafe { F2(_mm_add_pd(_mm_unpacklo_pd(a.0, b.0), _mm_unpackhi_pd(a.0, b.0))) }
        }
        #[inline(always)]
        pub fn new(a: f64, b: f64) -> F2 {
            F2(unsafe { _mm_set_pd(b, a) })
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod lanes {
    /// Two f64 lanes; the same arithmetic, in the same order, as the SSE2 version.
    #[derive(Clone, Copy)]
    pub struct F2([f64; 2]);

    impl F2 {
        #[inline(always)]
        pub fn zero() -> F2 {
            F2([0.0; 2])
        }
        #[inline(always)]
        pub fn load(s: &[f64]) -> F2 {
            F2([s[0], s[1]])
        }
        #[inline(always)]
        pub fn store(self, s: &mut [f64]) {
            s[..2].copy_from_slice(&self.0);
        }
        #[inline(always)]
        pub fn add(self, b: F2) -> F2 {
            F2([self.0[0] + b.0[0], self.0[1] + b.0[1]])
        }
        #[inline(always)]
        pub fn sub(self, b: F2) -> F2 {
            F2([self.0[0] - b.0[0], self.0[1] - b.0[1]])
        }
        #[inline(always)]
        pub fn mul(self, b: F2) -> F2 {
            F2([self.0[0] * b.0[0], self.0[1] * b.0[1]])
        }
        #[inline(always)]
        pub fn sum(self) -> f64 {
            self.0[0] + self.0[1]
        }
        #[inline(always)]
        pub fn sums(a: F2, b: F2) -> F2 {
            F2([a.0[0] + a.0[1], b.0[0] + b.0[1]])
        }
        #[inline(always)]
        pub fn new(a: f64, b: f64) -> F2 {
            F2([a, b])
        }
    }
}

use lanes::F2;
use std::cell::RefCell;

/// Number of two-lane vectors per gradient row (outputs padded to an even count with
/// zeros, which add nothing to sums and gains), as a compile-time or run-time value.
trait Width: Copy {
    /// One running sum per vector (a stack array for constant widths).
    type Acc: AsRef<[F2]> + AsMut<[F2]>;
    fn nv(self) -> usize;
    fn acc(self) -> Self::Acc;
}

#[derive(Clone, Copy)]
struct Fixed<const NV: usize>;

impl<const NV: usize> Width for Fixed<NV> {
    type Acc = [F2; NV];
    #[inline(always)]
    fn nv(self) -> usize {
        NV
    }
    #[inline(always)]
    fn acc(self) -> [F2; NV] {
        [F2::zero(); NV]
    }
}

#[derive(Clone, Copy)]
struct Dyn(usize);

impl Width for Dyn {
    type Acc = Vec<F2>;
    #[inline(always)]
    fn nv(self) -> usize {
        self.0
    }
    fn acc(self) -> Vec<F2> {
        vec![F2::zero(); self.0]
    }
}

/// Binned inputs in the layout the split search scans.
///
/// `order[a * n + k]` is the k-th row of active feature `a` in (bin, row) order, packed as
/// `bin << row_bits | row`: the packing keeps one u32 per entry (the stable partition moves
/// half the bytes of a (row, bin) pair) and a bin change is one xor and compare away.
/// Features with a single bin can never split and are dropped ("inactive").
struct Bins {
    n: usize,
    row_bits: u32,
    /// Number of bins of each active feature, in ascending original feature order (ties
    /// between features go to the lower index because the scan visits them in this order).
    n_bins: Vec<usize>,
    order: Vec<u32>,
}

impl Bins {
    fn new(x: &[f32], n: usize, p: usize, max_bin: usize) -> Bins {
        let row_bits = (usize::BITS - (n - 1).leading_zeros()).max(1);
        // Bins must fit above the row index in a u32 (this only binds beyond 2^24 rows).
        let bin_cap = 1usize << (32 - row_bits).min(usize::BITS - 1);
        let max_bin = max_bin.clamp(1, bin_cap);
        let mut bins = Bins { n, row_bits, n_bins: Vec::new(), order: take_order(p * n) };
        let mut keys: Vec<u64> = Vec::new();
        let mut tmp: Vec<u64> = Vec::new();
        let mut starts: Vec<u32> = Vec::new();
        // The rank of each quantile cut, b * n / max_bin for b >= 1 (the same for every feature).
        let ranks: Vec<usize> = (1..max_bin).map(|b| b * n / max_bin).collect();
        for f in 0..p {
            let base = bins.n_bins.len() * n;
            let out = &mut bins.order[base..base + n];
            // (order-preserving value bits, row) keys, stably sorted by value: ties stay in
            // row order, which is also the order XGBoost sums a bin's rows in.
            let fill = |keys: &mut [u64]| {
                for (r, (k, row)) in keys.iter_mut().zip(x.chunks_exact(p)).enumerate() {
                    *k = (u64::from(ordered_bits(row[f])) << 32) | r as u64;
                }
            };
            let bin = |keys: &[u64]| bin_sorted(keys, row_bits, max_bin, &ranks, &mut starts, out);
            if let Some(n_bins) = sort_keys_with(n, &mut keys, &mut tmp, fill, bin) {
                bins.n_bins.push(n_bins);
            }
        }
        bins
    }

    fn n_feat(&self) -> usize {
        self.n_bins.len()
    }

    fn row_mask(&self) -> u32 {
        ((1u64 << self.row_bits) - 1) as u32
    }
}

/// Bins one feature from its sorted keys: writes its (bin, row) entries to `out` and returns
/// its bin count, or None (and writes nothing) when it has a single value and can never split.
fn bin_sorted(
    keys: &[u64],
    row_bits: u32,
    max_bin: usize,
    ranks: &[usize],
    starts: &mut Vec<u32>,
    out: &mut [u32],
) -> Option<usize> {
    let n = keys.len();
    let value = |k: u64| (k >> 32) as u32;
    let distinct = 1 + keys.windows(2).filter(|w| value(w[0]) != value(w[1])).count();
    if distinct < 2 {
        return None;
    }
    if distinct <= max_bin {
        // Every distinct value is its own bin, so any two values can be separated.
        let mut bin = 0u32;
        out[0] = keys[0] as u32;
        for (i, w) in keys.windows(2).enumerate() {
            bin += u32::from(value(w[0]) != value(w[1]));
            out[i + 1] = (bin << row_bits) | (w[1] as u32);
        }
        return Some(distinct);
    }
    // Quantile bins by count: bin b starts at the value of rank b * n / max_bin; a value
    // repeated across several such ranks keeps a single bin. Each bin's first key is marked
    // and the marks summed along the keys: a walk that compares keys with the next cut
    // mispredicts every few keys.
    starts.clear();
    starts.resize(n, 0);
    let (mut last, mut n_bins) = (value(keys[0]), 1);
    for &r in ranks {
        let v = value(keys[r]);
        if v > last {
            // The first key of this value (ties before rank r share its bin); keys[0] is
            // smaller, so the walk stops above 0.
            let mut q = r;
            while value(keys[q - 1]) == v {
                q -= 1;
            }
            starts[q] = 1;
            n_bins += 1;
            last = v;
        }
    }
    let mut bin = 0u32;
    for ((o, &k), &s) in out.iter_mut().zip(keys).zip(starts.iter()) {
        bin += s;
        *o = (bin << row_bits) | (k as u32);
    }
    Some(n_bins)
}

/// Maps an f32 to a u32 with the same order (for non-NaN values); -0.0 is folded onto 0.0
/// so that equal values share a bin.
#[inline]
fn ordered_bits(v: f32) -> u32 {
    let b = (v + 0.0).to_bits();
    // Negative values are inverted, the others get the sign bit: without a branch on the
    // sign, which is a coin flip for centred data.
    b ^ ((((b as i32) >> 31) as u32) | 0x8000_0000)
}

/// Stable LSD radix sort of `keys` by their upper 32 bits, one byte per pass; a pass whose
/// byte is the same for every key is skipped. At a thousand keys it takes about 3.5 us
/// (`sort_timing`), only modestly less than the standard library's unstable sort: the
/// exponent byte of typical data falls into a few buckets, which serialises that pass on its
/// bucket counters. Where AVX-512 is available the bitonic network (`sort512`, about 2 us)
/// sorts instead (see [`sort_keys_with`]).
fn radix_sort_high(keys: &mut Vec<u64>, tmp: &mut Vec<u64>) {
    let mut counts = [[0u32; 256]; 4];
    for &k in keys.iter() {
        for (b, c) in counts.iter_mut().enumerate() {
            c[((k >> (32 + 8 * b)) & 0xff) as usize] += 1;
        }
    }
    for (b, c) in counts.iter().enumerate() {
        let shift = 32 + 8 * b;
        if c[((keys[0] >> shift) & 0xff) as usize] as usize == keys.len() {
            continue;
        }
        let mut next = [0u32; 256];
        let mut sum = 0u32;
        for (d, &c) in next.iter_mut().zip(c) {
            *d = sum;
            sum += c;
        }
        for &k in keys.iter() {
            let d = &mut next[((k >> shift) & 0xff) as usize];
            tmp[*d as usize] = k;
            *d += 1;
        }
        std::mem::swap(keys, tmp);
    }
}

/// Builds `n` keys with `fill`, sorts them and hands the sorted keys to `then`. The keys'
/// low 32 bits are distinct (the row index), so the order is that of [`radix_sort_high`] (a
/// stable sort by the high half is then a full sort). Where the CPU has AVX-512 they are
/// built in and sorted by a bitonic network on a per-thread aligned buffer: at a thousand keys
/// the network takes 2.0 us against the radix sort's 3.5 us (`sort_timing`), whose pass over
/// the few exponent buckets serialises on their counters. `keys` and `tmp` are the radix
/// sort's buffers (any length).
fn sort_keys_with<R>(
    n: usize,
    keys: &mut Vec<u64>,
    tmp: &mut Vec<u64>,
    fill: impl FnOnce(&mut [u64]),
    then: impl FnOnce(&[u64]) -> R,
) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if (sort512::MIN..=sort512::MAX).contains(&n) && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F and the length is in the kernel's range.
            return unsafe { sort512::sort_with(n, fill, then) };
        }
    }
    keys.resize(n, 0);
    tmp.resize(n, 0);
    fill(keys);
    radix_sort_high(keys, tmp);
    then(keys)
}

/// [`sort_keys_with`] on a vector of keys, for tests.
#[cfg(test)]
fn sort_keys(keys: &mut Vec<u64>) {
    let src = std::mem::take(keys);
    *keys = sort_keys_with(src.len(), &mut Vec::new(), &mut Vec::new(), |k| k.copy_from_slice(&src), <[u64]>::to_vec);
}

/// Bitonic sorting network over u64 keys, eight to a register: every register is sorted
/// alone, then runs are merged pairwise (the first stage of each merge compares element i
/// with element 2L-1-i, so no run needs reversing beforehand; the later stages are
/// half-cleaners, those within a register done by lane shuffles).
#[cfg(target_arch = "x86_64")]
mod sort512 {
    use std::arch::x86_64::{
        __m512i, _MM_PERM_ENUM, _mm512_load_si512, _mm512_mask_max_epu64, _mm512_max_epu64, _mm512_min_epu64,
        _mm512_permutex_epi64, _mm512_permutexvar_epi64, _mm512_set_epi64, _mm512_shuffle_epi32, _mm512_shuffle_i64x2,
        _mm512_store_si512,
    };

    /// Shortest input worth the network (shorter ones are padded to a power of two anyway).
    pub const MIN: usize = 64;
    /// Longest input: the network's log^2 stages overtake the radix sort's four passes
    /// beyond a few thousand keys.
    pub const MAX: usize = 4096;

    /// 64-byte aligned storage for the padded keys.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Line([u64; 8]);

    thread_local! {
        static BUF: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Lower lanes take the minimum of `v` and its partner `p`, the lanes in `hi` the maximum.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn exchange(v: __m512i, p: __m512i, hi: u8) -> __m512i {
        _mm512_mask_max_epu64(_mm512_min_epu64(v, p), hi, v, p)
    }

    /// Half-cleaners at distances 4, 2 and 1 within a register.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn clean_lanes(v: __m512i) -> __m512i {
        let v = exchange(v, _mm512_shuffle_i64x2::<0b01_00_11_10>(v, v), 0xf0);
        let v = exchange(v, _mm512_permutex_epi64::<0b01_00_11_10>(v), 0b1100_1100);
        exchange(v, _mm512_shuffle_epi32::<{ 0b01_00_11_10 as _MM_PERM_ENUM }>(v), 0b1010_1010)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn reverse(v: __m512i) -> __m512i {
        _mm512_permutexvar_epi64(_mm512_set_epi64(0, 1, 2, 3, 4, 5, 6, 7), v)
    }

    /// Sorts one register: runs of 1, 2 and 4 lanes merged in turn.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn sort_lanes(v: __m512i) -> __m512i {
        let v = exchange(v, _mm512_shuffle_epi32::<{ 0b01_00_11_10 as _MM_PERM_ENUM }>(v), 0b1010_1010);
        let v = exchange(v, _mm512_permutex_epi64::<0b00_01_10_11>(v), 0b1100_1100);
        let v = exchange(v, _mm512_shuffle_epi32::<{ 0b01_00_11_10 as _MM_PERM_ENUM }>(v), 0b1010_1010);
        let v = exchange(v, reverse(v), 0xf0);
        let v = exchange(v, _mm512_permutex_epi64::<0b01_00_11_10>(v), 0b1100_1100);
        exchange(v, _mm512_shuffle_epi32::<{ 0b01_00_11_10 as _MM_PERM_ENUM }>(v), 0b1010_1010)
    }

    /// One merge level on 8 registers held in registers: sorted runs of R registers merged
    /// pairwise into runs of 2R (the flip stage, half-cleaners down to 1 register apart, then
    /// within each register).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn merge_runs<const R: usize>(v: &mut [__m512i; 8]) {
        for base in (0..8).step_by(2 * R) {
            for j in 0..R {
                let (a, b) = (v[base + j], reverse(v[base + 2 * R - 1 - j]));
                v[base + j] = _mm512_min_epu64(a, b);
                v[base + 2 * R - 1 - j] = reverse(_mm512_max_epu64(a, b));
            }
        }
        clean_regs(v, R / 2);
    }

    /// Half-cleaners at distances d, d/2, ..., 1 register, then within each register.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn clean_regs(v: &mut [__m512i; 8], mut d: usize) {
        while d > 0 {
            for i in 0..8 {
                if i & d == 0 {
                    let (a, b) = (v[i], v[i + d]);
                    v[i] = _mm512_min_epu64(a, b);
                    v[i + d] = _mm512_max_epu64(a, b);
                }
            }
            d /= 2;
        }
        for r in v.iter_mut() {
            *r = clean_lanes(*r);
        }
    }

    /// Loads 8 aligned registers at `p`, applies `f`, stores them back.
    ///
    /// # Safety
    /// `p` points at 8 aligned registers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn in_registers(p: *mut __m512i, f: impl Fn(&mut [__m512i; 8])) {
        // SAFETY: the caller's contract.
        let mut v: [__m512i; 8] = std::array::from_fn(|i| unsafe { _mm512_load_si512(p.add(i)) });
        f(&mut v);
        for (i, r) in v.into_iter().enumerate() {
            // SAFETY: as for the loads.
            unsafe { _mm512_store_si512(p.add(i), r) };
        }
    }

    /// Sorts `lines` (a power of two of them, at least 8) in place.
    #[target_feature(enable = "avx512f")]
    fn network(lines: &mut [Line]) {
        let n = lines.len();
        debug_assert!(n.is_power_of_two() && n >= 8);
        let p = lines.as_mut_ptr().cast::<__m512i>();
        // SAFETY: every index below is under n, and Line is one aligned register.
        unsafe {
            // Runs of 64 keys, sorted without leaving the registers.
            for base in (0..n).step_by(8) {
                in_registers(p.add(base), |v| {
                    for r in v.iter_mut() {
                        *r = sort_lanes(*r);
                    }
                    merge_runs::<1>(v);
                    merge_runs::<2>(v);
                    merge_runs::<4>(v);
                });
            }
            let mut run = 8; // registers per sorted run
            while run < n {
                for base in (0..n).step_by(2 * run) {
                    let q = p.add(base);
                    for j in 0..run {
                        let (a, b) = (_mm512_load_si512(q.add(j)), reverse(_mm512_load_si512(q.add(2 * run - 1 - j))));
                        _mm512_store_si512(q.add(j), _mm512_min_epu64(a, b));
                        _mm512_store_si512(q.add(2 * run - 1 - j), reverse(_mm512_max_epu64(a, b)));
                    }
                }
                // Each run is now split into two bitonic halves: clean distances run/2 .. 8
                // through memory, the last ones 8 registers at a time.
                let mut d = run / 2;
                while d >= 8 {
                    for base in (0..n).step_by(2 * d) {
                        for i in base..base + d {
                            let (a, b) = (_mm512_load_si512(p.add(i)), _mm512_load_si512(p.add(i + d)));
                            _mm512_store_si512(p.add(i), _mm512_min_epu64(a, b));
                            _mm512_store_si512(p.add(i + d), _mm512_max_epu64(a, b));
                        }
                    }
                    d /= 2;
                }
                for base in (0..n).step_by(8) {
                    in_registers(p.add(base), |v| clean_regs(v, 4));
                }
                run *= 2;
            }
        }
    }

    /// `super::sort_keys_with` on the network: the keys are built into the thread's aligned
    /// buffer and padded with the largest key, which sorts after any real key.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `MIN <= n <= MAX`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn sort_with<R>(n: usize, fill: impl FnOnce(&mut [u64]), then: impl FnOnce(&[u64]) -> R) -> R {
        debug_assert!((MIN..=MAX).contains(&n));
        let lines = n.div_ceil(8).next_power_of_two().max(8);
        BUF.with_borrow_mut(|buf| {
            if buf.len() < lines {
                buf.resize(lines, Line([0; 8]));
            }
            let buf = &mut buf[..lines];
            // SAFETY: Line is 8 plain u64 with no padding.
            let flat = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u64>(), 8 * lines) };
            fill(&mut flat[..n]);
            flat[n..].fill(u64::MAX);
            network(buf);
            // SAFETY: as above.
            let flat = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u64>(), 8 * lines) };
            then(&flat[..n])
        })
    }
}

/// A node of the tree level being grown: rows `start..end` of every feature's segment.
#[derive(Clone, Copy)]
struct Node {
    start: usize,
    end: usize,
}

/// Best split of a node: `n_left` rows of active feature `feat`'s sorted segment go left.
#[derive(Clone, Copy)]
struct Split {
    loss_chg: f64,
    feat: usize,
    n_left: usize,
}

/// Constants shared by all trees of one fit.
struct Ctx<'a, W: Width> {
    w: W,
    /// Number of outputs (the gradient rows are padded to `2 * w.nv()`).
    o: usize,
    bins: &'a Bins,
    y: &'a [f32],
    learning_rate: f32,
    lambda: f64,
    min_child_weight: f64,
    /// Smallest child row count allowed (hessians are 1 per row, so counts are weights).
    min_rows: usize,
    max_depth: usize,
    /// `inv[c] = 1 / (c + lambda)`: the gain needs it twice per candidate, and a table
    /// lookup is far cheaper than two divisions.
    inv: Vec<f64>,
    /// Scan rows with the four-lane AVX2 kernel (the CPU has it and rows are a multiple of
    /// four wide); it adds the same lanes in the same order, so the bits do not change.
    scan4: bool,
    /// Scan rows eight lanes at a time with AVX-512 (with `scan4`, rows a multiple of eight
    /// lanes wide; same bits).
    #[cfg(target_arch = "x86_64")]
    scan512: bool,
    /// Split gains eight candidates at a time with AVX-512 (with `scan4`; same bits).
    #[cfg(target_arch = "x86_64")]
    gains512: bool,
    /// Partition with the AVX-512 kernel (the CPU has it and rows fit its bitset).
    #[cfg(target_arch = "x86_64")]
    part512: bool,
}

/// Rows scanned per block of the split search. A power of two, so that masking slot indices
/// proves them in bounds. 1024 rows (the default sequence length) make the root one block per
/// feature: 2-5 % faster fits than 256, whose candidates stayed in L1 but paid the per-block
/// passes four times.
const BLOCK: usize = 1024;

/// Candidate splits of one block of the split search.
struct Candidates {
    /// Left gradient sum of candidate t at `left[t * 2nv..(t + 1) * 2nv]`: a row's outputs
    /// are contiguous, so the per-row update is a few packed adds and stores.
    left: Vec<f64>,
    /// Rows on the left of candidate t.
    rows: Vec<u32>,
    /// Loss change of candidate t.
    loss: Vec<f64>,
}

/// Buffers reused across trees and levels.
struct Scratch {
    /// Gradients, `2 * nv` f32 per row (zero padded): stored as XGBoost rounds them and
    /// widened to f64 where summed, so the rows the scan gathers take half the cache.
    grad: Vec<f32>,
    /// Side of every row of the node being split, one bit per row (set: left), padded to
    /// at least `PART_WORDS` words for the AVX-512 partition.
    goes_left: Vec<u32>,
    order_a: Vec<u32>,
    order_b: Vec<u32>,
    nodes: Vec<Node>,
    next_nodes: Vec<Node>,
    /// Gradient sum of each node of the level, `2 * nv` per node.
    sums: Vec<f64>,
    next_sums: Vec<f64>,
    cand: Candidates,
    best_left: Vec<f64>,
    leaf: Vec<f32>,
}

/// The widest vector kernels the split search may use (checked once per fit); the
/// ordering lets a kernel ask for "at least".
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Simd {
    Portable,
    Avx2,
    Avx512,
}

impl Simd {
    fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Simd::Avx512;
                }
                return Simd::Avx2;
            }
        }
        Simd::Portable
    }
}

fn boost<W: Width>(w: W, o: usize, bins: &Bins, y: &[f32], params: &BoosterParams, simd: Simd, pred: &mut [f32]) {
    let n = bins.n;
    let os = 2 * w.nv();
    let lambda = f64::from(params.reg_lambda);
    let min_child_weight = f64::from(params.min_child_weight);
    let ctx = Ctx {
        w,
        o,
        bins,
        y,
        learning_rate: params.learning_rate,
        lambda,
        min_child_weight,
        min_rows: (min_child_weight.ceil().max(1.0) as usize).min(n + 1),
        max_depth: params.max_depth,
        inv: (0..=n).map(|c| 1.0 / (c as f64 + lambda)).collect(),
        scan4: simd >= Simd::Avx2 && w.nv().is_multiple_of(2) && w.nv() <= 2 * SCAN4_MAX_V,
        #[cfg(target_arch = "x86_64")]
        scan512: simd >= Simd::Avx512 && w.nv().is_multiple_of(4) && w.nv() <= 2 * SCAN4_MAX_V,
        #[cfg(target_arch = "x86_64")]
        gains512: simd >= Simd::Avx512 && w.nv().is_multiple_of(2),
        #[cfg(target_arch = "x86_64")]
        part512: part512_available(n),
    };
    let order_len = bins.n_feat() * n;
    let level_cap = 1 << params.max_depth.min(12);
    let mut s = Scratch {
        grad: vec![0.0; n * os],
        goes_left: vec![0; n.div_ceil(32).max(PART_WORDS)],
        order_a: take_order(order_len),
        order_b: take_order(order_len),
        nodes: Vec::with_capacity(level_cap),
        next_nodes: Vec::with_capacity(level_cap),
        sums: Vec::with_capacity(level_cap * os),
        next_sums: Vec::with_capacity(level_cap * os),
        cand: Candidates { left: vec![0.0; BLOCK * os], rows: vec![0; BLOCK], loss: vec![0.0; BLOCK] },
        best_left: vec![0.0; os],
        leaf: vec![0.0; o],
    };
    for _ in 0..params.n_estimators {
        grow_tree(&ctx, &mut s, pred);
    }
    give_order(s.order_a);
    give_order(s.order_b);
}

/// Grows one depth-wise tree on the current residuals and adds it to `pred`.
fn grow_tree<W: Width>(ctx: &Ctx<'_, W>, s: &mut Scratch, pred: &mut [f32]) {
    let n = ctx.bins.n;
    let o = ctx.o;
    let os = 2 * ctx.w.nv();
    let n_feat = ctx.bins.n_feat();
    let mask = ctx.bins.row_mask();

    // Squared error: gradient pred - y, hessian 1. The gradient is rounded to f32 as
    // XGBoost stores it.
    for ((g, p), t) in s.grad.chunks_exact_mut(os).zip(pred.chunks_exact(o)).zip(ctx.y.chunks_exact(o)) {
        for j in 0..o {
            g[j] = p[j] - t[j];
        }
    }
    s.sums.clear();
    s.sums.resize(os, 0.0);
    column_sums(&s.grad, os, &mut s.sums);
    if n_feat == 0 || ctx.max_depth == 0 {
        leaf_value(ctx, &s.sums, n, &mut s.leaf);
        for row in pred.chunks_exact_mut(o) {
            for (p, &v) in row.iter_mut().zip(s.leaf.iter()) {
                *p += v;
            }
        }
        return;
    }

    s.nodes.clear();
    s.nodes.push(Node { start: 0, end: n });
    let Scratch { grad, goes_left, order_a, order_b, nodes, next_nodes, sums, next_sums, cand, best_left, leaf } = s;
    // The root order is the same for every tree; deeper levels alternate between two buffers.
    let mut src: &mut Vec<u32> = order_a;
    let mut dst: &mut Vec<u32> = order_b;
    for depth in 0..ctx.max_depth {
        let order: &[u32] = if depth == 0 { &ctx.bins.order } else { src };
        let children_split = depth + 1 < ctx.max_depth;
        next_nodes.clear();
        next_sums.clear();
        for (k, node) in nodes.iter().enumerate() {
            let (start, end) = (node.start, node.end);
            let m = end - start;
            let total = &sums[k * os..(k + 1) * os];
            let split = if m >= 2 * ctx.min_rows {
                find_split(ctx, order, start, end, total, grad, cand, best_left)
            } else {
                None
            };
            let Some(split) = split else {
                add_leaf(ctx, total, &order[start..end], mask, leaf, pred);
                continue;
            };
            let seg = &order[split.feat * n + start..split.feat * n + end];
            let (left_rows, right_rows) = seg.split_at(split.n_left);
            let left_at = next_sums.len();
            next_sums.extend_from_slice(best_left);
            next_sums.extend(total.iter().zip(best_left.iter()).map(|(t, l)| t - l));
            if children_split {
                for &e in left_rows {
                    let r = e & mask;
                    goes_left[(r >> 5) as usize] |= 1 << (r & 31);
                }
                for &e in right_rows {
                    let r = e & mask;
                    goes_left[(r >> 5) as usize] &= !(1 << (r & 31));
                }
                for f in 0..n_feat {
                    let range = f * n + start..f * n + end;
                    let (src, dst) = (&order[range.clone()], &mut dst[range]);
                    #[cfg(target_arch = "x86_64")]
                    if ctx.part512 {
                        // SAFETY: the CPU has AVX-512F (`part512`, which also bounds rows below
                        // 32 * PART_WORDS); goes_left holds at least PART_WORDS words, and src
                        // has exactly n_left entries flagged left.
                        unsafe { part512::partition(src, dst, split.n_left, goes_left, mask) };
                        continue;
                    }
                    partition(src, dst, split.n_left, goes_left, mask);
                }
                next_nodes.push(Node { start, end: start + split.n_left });
                next_nodes.push(Node { start: start + split.n_left, end });
            } else {
                // Children at max depth are leaves: their rows are already at hand.
                let (left_sum, right_sum) = next_sums[left_at..].split_at(os);
                add_leaf(ctx, left_sum, left_rows, mask, leaf, pred);
                add_leaf(ctx, right_sum, right_rows, mask, leaf, pred);
            }
        }
        if next_nodes.is_empty() {
            break;
        }
        std::mem::swap(nodes, next_nodes);
        std::mem::swap(sums, next_sums);
        std::mem::swap(&mut src, &mut dst);
    }
}

/// Searches all active features for the best split of the node whose rows are
/// `start..end` of each feature's segment; leaves the split's left gradient sum in
/// `best_left`.
///
/// Per feature and block of rows, a first branch-free pass walks the rows in bin order,
/// keeps the running left sum, and records it (with the row count) once per bin boundary:
/// every row overwrites the current slot, and the slot index moves on only when the next
/// row is in another bin, so nothing waits on an unpredictable branch. A second pass
/// evaluates the block's candidates and keeps the first maximum.
fn find_split<W: Width>(
    ctx: &Ctx<'_, W>,
    order: &[u32],
    start: usize,
    end: usize,
    total: &[f64],
    grad: &[f32],
    cand: &mut Candidates,
    best_left: &mut [f64],
) -> Option<Split> {
    let w = ctx.w;
    let nv = w.nv();
    let os = 2 * nv;
    let n = ctx.bins.n;
    let m = end - start;
    let mask = ctx.bins.row_mask();
    let inv = &ctx.inv[..=m];
    let mut tot = w.acc();
    let tot = &mut tot.as_mut()[..nv];
    let mut parent = F2::zero();
    for v in 0..nv {
        tot[v] = F2::load(&total[2 * v..]);
        parent = parent.add(tot[v].mul(tot[v]));
    }
    let parent_gain = parent.sum() * inv[m];
    let (lo, hi) = (ctx.min_rows as u32, (m - ctx.min_rows) as u32);

    let mut best = Split { loss_chg: 0.0, feat: usize::MAX, n_left: 0 };
    let mut left = w.acc();
    let left = &mut left.as_mut()[..nv];
    let Candidates { left: cols, rows: n_left, loss } = cand;
    let cols = &mut cols[..BLOCK * os];
    let n_left = &mut n_left[..BLOCK];
    let loss = &mut loss[..BLOCK];
    for f in 0..ctx.bins.n_feat() {
        let seg = &order[f * n + start..f * n + end];
        left.fill(F2::zero());
        // Candidate i (rows seg[..=i] left) exists where seg[i + 1] starts a new bin; the
        // last row is never a candidate (empty right side).
        for block in (0..m - 1).step_by(BLOCK) {
            // Pass 1. A bin still open at the end of the block is finished (and its slot
            // rewritten) in the next block: the running sum carries over.
            let rows = &seg[block..(block + BLOCK + 1).min(m)];
            let mut k = 0usize;
            #[cfg(target_arch = "x86_64")]
            if ctx.scan4 {
                // SAFETY: the CPU has AVX2 (`scan4`); rows hold row indices below n under
                // `mask`, grad has n rows of os = 4 * (nv / 2) lanes, and a block has at most
                // BLOCK candidates.
                k = if ctx.scan512 {
                    // SAFETY: as above, and the CPU has AVX-512F with rows a multiple of eight
                    // lanes wide (`scan512`).
                    unsafe { scan4::scan512(w, rows, grad, cols, n_left, block as u32, left, mask) }
                } else {
                    unsafe { scan4::scan(w, rows, grad, cols, n_left, block as u32, left, mask) }
                };
            }
            if !ctx.scan4 {
                for (i, pair) in rows.windows(2).enumerate() {
                    let e = pair[0];
                    let r = (e & mask) as usize;
                    let g = &grad[r * os..r * os + os];
                    let slot = k & (BLOCK - 1);
                    let out = &mut cols[slot * os..slot * os + os];
                    for v in 0..nv {
                        left[v] = left[v].add(F2::new(f64::from(g[2 * v]), f64::from(g[2 * v + 1])));
                        left[v].store(&mut out[2 * v..]);
                    }
                    n_left[slot] = (block + i) as u32 + 1;
                    k += usize::from((pair[1] ^ e) > mask);
                }
            }
            // Candidates whose children both reach min_child_weight form a contiguous
            // range, because n_left increases.
            let t0 = n_left[..k].partition_point(|&c| c < lo);
            let t1 = n_left[..k].partition_point(|&c| c <= hi);
            // Pass 2: sum_j GL_j^2 / (HL + lambda) + GR_j^2 / (HR + lambda) - parent.
            #[allow(unused_mut)]
            let mut done = t0;
            #[cfg(target_arch = "x86_64")]
            if ctx.scan4 {
                // SAFETY (both kernels): the CPU has AVX2 (`scan4`, which also makes nv even)
                // and, for the first, AVX-512F (`gains512`); cols holds BLOCK rows of os
                // lanes, t1 <= k <= BLOCK, and every n_left[t0..t1] is at most m, the last
                // index of inv.
                if ctx.gains512 {
                    done = unsafe { scan4::gains512(w, cols, n_left, total, inv, parent_gain, t0, t1, loss) };
                }
                done = unsafe { scan4::gains(w, cols, n_left, total, inv, parent_gain, done, t1, loss) };
            }
            gains(w, cols, n_left, tot, inv, parent_gain, done..t1, loss);
            // Pass 3: the block maximum through four independent running maxima (a single
            // running best would chain every candidate on the previous compare; max is exact,
            // so the grouping cannot change it), then the first candidate reaching it.
            let losses = &loss[t0..t1];
            let mut top = [f64::NEG_INFINITY; 4];
            let groups = losses.chunks_exact(4);
            for &v in groups.remainder() {
                top[0] = if v > top[0] { v } else { top[0] };
            }
            for g in groups {
                for q in 0..4 {
                    top[q] = if g[q] > top[q] { g[q] } else { top[q] };
                }
            }
            let block_best = top[0].max(top[1]).max(top[2].max(top[3]));
            // Strict: the first feature, then the first bin, wins ties.
            if block_best > best.loss_chg {
                let t = t0 + losses.iter().position(|&v| v == block_best).unwrap_or(0);
                best = Split { loss_chg: block_best, feat: f, n_left: n_left[t] as usize };
                best_left.copy_from_slice(&cols[t * os..t * os + os]);
            }
        }
    }
    (best.loss_chg > MIN_SPLIT_GAIN).then_some(best)
}

/// Pass 2 of `find_split`: the loss change of each candidate t in `ts`, from its left
/// gradient sum (row t of `cols`), its left row count `n_left[t]` and the node's gradient
/// sum `tot`, with `inv[c] = 1 / (c + lambda)` up to the node's row count.
#[inline(always)]
fn gains<W: Width>(
    w: W,
    cols: &[f64],
    n_left: &[u32],
    tot: &[F2],
    inv: &[f64],
    parent_gain: f64,
    ts: std::ops::Range<usize>,
    loss: &mut [f64],
) {
    let nv = w.nv();
    let os = 2 * nv;
    let m = inv.len() - 1;
    for t in ts {
        let row = &cols[t * os..t * os + os];
        let l = F2::load(row);
        let d = tot[0].sub(l);
        let (mut gl, mut gr) = (l.mul(l), d.mul(d));
        for v in 1..nv {
            let l = F2::load(&row[2 * v..]);
            let d = tot[v].sub(l);
            gl = gl.add(l.mul(l));
            gr = gr.add(d.mul(d));
        }
        let c = n_left[t] as usize;
        loss[t] = F2::sums(gl, gr).mul(F2::new(inv[c], inv[m - c])).sum() - parent_gain;
    }
}

/// Widest rows (in four-lane vectors) the AVX2 row scan keeps in registers.
const SCAN4_MAX_V: usize = 4;

/// The vector kernels of the split search: the row scan (pass 1 of `find_split`) four
/// gradient lanes per instruction with AVX2 or eight with AVX-512 instead of two, and the
/// split gains (pass 2) four or eight candidates at a time.
#[cfg(target_arch = "x86_64")]
mod scan4 {
    use super::{BLOCK, F2, SCAN4_MAX_V as MAX_V, Width};
    use std::arch::x86_64::{
        __m128i, __m256d, __m512d, _mm_loadu_ps, _mm_loadu_si128, _mm_set1_epi32, _mm_sub_epi32, _mm256_add_pd,
        _mm256_cvtps_pd, _mm256_i32gather_pd, _mm256_loadu_pd, _mm256_loadu_ps, _mm256_mul_pd, _mm256_permute2f128_pd,
        _mm256_set1_pd, _mm256_setzero_pd, _mm256_storeu_pd, _mm256_sub_pd, _mm256_unpackhi_pd, _mm256_unpacklo_pd,
        _mm512_add_pd, _mm512_cvtps_pd, _mm512_loadu_pd, _mm512_setzero_pd, _mm512_storeu_pd,
    };

    /// The row walk, written once for both register widths: `$lanes` f64 lanes per vector
    /// `$vec`, loaded from `$lanes` f32 gradients by `$load_ps` and widened by `$cvt`.
    macro_rules! row_scan {
        ($(#[$doc:meta])* $name:ident, $feature:literal, $vec:ty, $lanes:literal,
         $zero:ident, $load_pd:ident, $store_pd:ident, $add:ident, $cvt:ident, $load_ps:ident) => {
            $(#[$doc])*
            #[target_feature(enable = $feature)]
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn $name<W: Width>(
                w: W,
                rows: &[u32],
                grad: &[f32],
                cols: &mut [f64],
                n_left: &mut [u32],
                first: u32,
                left: &mut [F2],
                mask: u32,
            ) -> usize {
                const PER: usize = $lanes / 2; // two-lane vectors per register
                let nr = w.nv() / PER;
                let os = $lanes * nr;
                debug_assert!(w.nv().is_multiple_of(PER) && os <= 4 * MAX_V && rows.len() <= BLOCK + 1);
                debug_assert!(cols.len() >= BLOCK * os && n_left.len() >= BLOCK);
                let mut acc: [$vec; 4 * MAX_V / $lanes] = [$zero(); 4 * MAX_V / $lanes];
                let mut lanes = [0.0f64; 4 * MAX_V];
                for (v, l) in left.iter().enumerate() {
                    l.store(&mut lanes[2 * v..]);
                }
                for (v, a) in acc.iter_mut().enumerate().take(nr) {
                    // SAFETY: lanes holds 4 * MAX_V values.
                    *a = unsafe { $load_pd(lanes.as_ptr().add($lanes * v)) };
                }
                let (g0, c0, n0) = (grad.as_ptr(), cols.as_mut_ptr(), n_left.as_mut_ptr());
                let mut k = 0usize;
                for i in 0..rows.len().saturating_sub(1) {
                    // SAFETY: the bounds are the caller's contract.
                    unsafe {
                        let e = *rows.get_unchecked(i);
                        let g = g0.add((e & mask) as usize * os);
                        let slot = k & (BLOCK - 1);
                        let out = c0.add(slot * os);
                        for (v, a) in acc.iter_mut().enumerate().take(nr) {
                            *a = $add(*a, $cvt($load_ps(g.add($lanes * v))));
                            $store_pd(out.add($lanes * v), *a);
                        }
                        *n0.add(slot) = first + i as u32 + 1;
                        k += usize::from((*rows.get_unchecked(i + 1) ^ e) > mask);
                    }
                }
                for (v, a) in acc.iter().enumerate().take(nr) {
                    // SAFETY: as above.
                    unsafe { $store_pd(lanes.as_mut_ptr().add($lanes * v), *a) };
                }
                for (v, l) in left.iter_mut().enumerate() {
                    *l = F2::load(&lanes[2 * v..]);
                }
                k
            }
        };
    }

    row_scan!(
        /// Walks `rows` (entries of one block plus the next row, or the segment's last row),
        /// carrying the running left sum `left` (nv two-lane vectors, nv even), and records it
        /// with the row count at every bin boundary, as the portable loop does. Returns the
        /// number of boundaries.
        ///
        /// # Safety
        /// The CPU supports AVX2; `w.nv()` is even and at most `2 * MAX_V`; every entry's row
        /// (`e & mask`) is below `grad.len() / (2 * w.nv())`; `cols` holds `BLOCK * 2 * w.nv()`
        /// values, `n_left` BLOCK, and `rows` at most BLOCK + 1 entries.
        scan, "avx2", __m256d, 4, _mm256_setzero_pd, _mm256_loadu_pd, _mm256_storeu_pd, _mm256_add_pd,
        _mm256_cvtps_pd, _mm_loadu_ps
    );

    row_scan!(
        /// [`scan`] eight lanes per instruction, for rows a multiple of eight wide: the same
        /// lanes summed in the same order, so the same bits, with half the adds, stores and
        /// conversions per row (the walk is bound by their issue, not only by the add chain).
        ///
        /// # Safety
        /// As [`scan`], the CPU supports AVX-512F, and `w.nv()` is a multiple of four.
        scan512, "avx512f", __m512d, 8, _mm512_setzero_pd, _mm512_loadu_pd, _mm512_storeu_pd, _mm512_add_pd,
        _mm512_cvtps_pd, _mm256_loadu_ps
    );

    /// Pass 2 of `find_split` (the loss change of candidates `t0..t1`) four candidates at a
    /// time, one per lane: four candidate rows are transposed in blocks of four lanes, and
    /// every lane then runs the portable loop's operations in its order (no fused
    /// multiply-adds), so each loss has the portable bits. Returns the first candidate left
    /// for the portable loop (fewer than four remain).
    ///
    /// # Safety
    /// The CPU supports AVX2; `w.nv()` is even; `cols` holds `t1` rows of `2 * w.nv()` lanes,
    /// `total` one, `loss` and `n_left` at least `t1` entries, and every `n_left[t0..t1]` is
    /// at most `m = inv.len() - 1`.
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gains<W: Width>(
        w: W,
        cols: &[f64],
        n_left: &[u32],
        total: &[f64],
        inv: &[f64],
        parent_gain: f64,
        t0: usize,
        t1: usize,
        loss: &mut [f64],
    ) -> usize {
        let os = 2 * w.nv();
        debug_assert!(os.is_multiple_of(4) && cols.len() >= t1 * os && total.len() >= os && loss.len() >= t1);
        let m = inv.len() as i32 - 1;
        let mut t = t0;
        // SAFETY (all blocks below): the bounds are the caller's contract above; the
        // gathers read inv at n_left[t] and m - n_left[t], both within 0..=m.
        unsafe {
            let (c0, l0, n0) = (cols.as_ptr(), loss.as_mut_ptr(), n_left.as_ptr());
            let parent = _mm256_set1_pd(parent_gain);
            while t + 4 <= t1 {
                let row = c0.add(t * os);
                let zero = _mm256_setzero_pd();
                // Running sums of the even and odd lanes of GL^2 and GR^2, as the portable
                // loop's two-lane vectors hold them.
                let (mut gle, mut glo, mut gre, mut gro) = (zero, zero, zero, zero);
                for g in 0..os / 4 {
                    let r = |i: usize| _mm256_loadu_pd(row.add(i * os + 4 * g));
                    let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
                    let (a0, a1) = (_mm256_unpacklo_pd(r0, r1), _mm256_unpackhi_pd(r0, r1));
                    let (a2, a3) = (_mm256_unpacklo_pd(r2, r3), _mm256_unpackhi_pd(r2, r3));
                    // lane[q] holds lane 4g + q of the four candidates.
                    let lane: [__m256d; 4] = [
                        _mm256_permute2f128_pd::<0x20>(a0, a2),
                        _mm256_permute2f128_pd::<0x20>(a1, a3),
                        _mm256_permute2f128_pd::<0x31>(a0, a2),
                        _mm256_permute2f128_pd::<0x31>(a1, a3),
                    ];
                    let d = |q: usize| _mm256_sub_pd(_mm256_set1_pd(*total.get_unchecked(4 * g + q)), lane[q]);
                    let sq = |v: __m256d| _mm256_mul_pd(v, v);
                    // 0 + x^2 is x^2 exactly, so starting from zero changes no bit.
                    gle = _mm256_add_pd(gle, sq(lane[0]));
                    glo = _mm256_add_pd(glo, sq(lane[1]));
                    gre = _mm256_add_pd(gre, sq(d(0)));
                    gro = _mm256_add_pd(gro, sq(d(1)));
                    gle = _mm256_add_pd(gle, sq(lane[2]));
                    glo = _mm256_add_pd(glo, sq(lane[3]));
                    gre = _mm256_add_pd(gre, sq(d(2)));
                    gro = _mm256_add_pd(gro, sq(d(3)));
                }
                let c: __m128i = _mm_loadu_si128(n0.add(t).cast());
                let inv_l = _mm256_i32gather_pd::<8>(inv.as_ptr(), c);
                let inv_r = _mm256_i32gather_pd::<8>(inv.as_ptr(), _mm_sub_epi32(_mm_set1_epi32(m), c));
                let gain = _mm256_add_pd(
                    _mm256_mul_pd(_mm256_add_pd(gle, glo), inv_l),
                    _mm256_mul_pd(_mm256_add_pd(gre, gro), inv_r),
                );
                _mm256_storeu_pd(l0.add(t), _mm256_sub_pd(gain, parent));
                t += 4;
            }
        }
        t
    }

    /// [`gains`] eight candidates at a time: the same lanes summed in the same order, one
    /// candidate per vector lane. Returns the first candidate not done (fewer than 8 remain).
    ///
    /// # Safety
    /// As [`gains`], and the CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gains512<W: Width>(
        w: W,
        cols: &[f64],
        n_left: &[u32],
        total: &[f64],
        inv: &[f64],
        parent_gain: f64,
        t0: usize,
        t1: usize,
        loss: &mut [f64],
    ) -> usize {
        use std::arch::x86_64::{
            _mm256_loadu_si256, _mm256_set1_epi32, _mm256_sub_epi32, _mm512_add_pd, _mm512_castpd256_pd512,
            _mm512_i32gather_pd, _mm512_insertf64x4, _mm512_mul_pd, _mm512_permutex2var_pd, _mm512_set_epi64,
            _mm512_set1_pd, _mm512_setzero_pd, _mm512_storeu_pd, _mm512_sub_pd, _mm512_unpackhi_pd, _mm512_unpacklo_pd,
        };
        let os = 2 * w.nv();
        debug_assert!(os.is_multiple_of(4) && cols.len() >= t1 * os && total.len() >= os && loss.len() >= t1);
        let m = inv.len() as i32 - 1;
        let mut t = t0;
        // SAFETY (all blocks below): the bounds are the caller's contract above; the
        // gathers read inv at n_left[t] and m - n_left[t], both within 0..=m.
        unsafe {
            let (c0, l0, n0) = (cols.as_ptr(), loss.as_mut_ptr(), n_left.as_ptr());
            let parent = _mm512_set1_pd(parent_gain);
            // 128-bit lanes 0 and 2 of each source (low halves of candidates 0-3 and 4-7),
            // then lanes 1 and 3.
            let (first, second) =
                (_mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0), _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2));
            while t + 8 <= t1 {
                let row = c0.add(t * os);
                let zero = _mm512_setzero_pd();
                let (mut gle, mut glo, mut gre, mut gro) = (zero, zero, zero, zero);
                for g in 0..os / 4 {
                    // z[c]: lanes 4g..4g+4 of candidate c, then of candidate c + 4.
                    let z = |c: usize| {
                        let lo = _mm256_loadu_pd(row.add(c * os + 4 * g));
                        _mm512_insertf64x4::<1>(
                            _mm512_castpd256_pd512(lo),
                            _mm256_loadu_pd(row.add((c + 4) * os + 4 * g)),
                        )
                    };
                    let (z0, z1, z2, z3) = (z(0), z(1), z(2), z(3));
                    let (a0, a1) = (_mm512_unpacklo_pd(z0, z1), _mm512_unpackhi_pd(z0, z1));
                    let (a2, a3) = (_mm512_unpacklo_pd(z2, z3), _mm512_unpackhi_pd(z2, z3));
                    // lane[q] holds lane 4g + q of the eight candidates.
                    let lane = [
                        _mm512_permutex2var_pd(a0, first, a2),
                        _mm512_permutex2var_pd(a1, first, a3),
                        _mm512_permutex2var_pd(a0, second, a2),
                        _mm512_permutex2var_pd(a1, second, a3),
                    ];
                    let d = |q: usize| _mm512_sub_pd(_mm512_set1_pd(*total.get_unchecked(4 * g + q)), lane[q]);
                    let sq = |v| _mm512_mul_pd(v, v);
                    gle = _mm512_add_pd(gle, sq(lane[0]));
                    glo = _mm512_add_pd(glo, sq(lane[1]));
                    gre = _mm512_add_pd(gre, sq(d(0)));
                    gro = _mm512_add_pd(gro, sq(d(1)));
                    gle = _mm512_add_pd(gle, sq(lane[2]));
                    glo = _mm512_add_pd(glo, sq(lane[3]));
                    gre = _mm512_add_pd(gre, sq(d(2)));
                    gro = _mm512_add_pd(gro, sq(d(3)));
                }
                let c = _mm256_loadu_si256(n0.add(t).cast());
                let inv_l = _mm512_i32gather_pd::<8>(c, inv.as_ptr());
                let inv_r = _mm512_i32gather_pd::<8>(_mm256_sub_epi32(_mm256_set1_epi32(m), c), inv.as_ptr());
                let gain = _mm512_add_pd(
                    _mm512_mul_pd(_mm512_add_pd(gle, glo), inv_l),
                    _mm512_mul_pd(_mm512_add_pd(gre, gro), inv_r),
                );
                _mm512_storeu_pd(l0.add(t), _mm512_sub_pd(gain, parent));
                t += 8;
            }
        }
        t
    }
}

/// Stable partition of one feature's node segment: rows flagged in `goes_left` first.
#[inline]
fn partition(src: &[u32], dst: &mut [u32], n_left: usize, goes_left: &[u32], mask: u32) {
    partition_from(src, dst, (0, n_left), goes_left, mask);
}

/// The loop of `partition` with the left and right cursors starting at `at`; returns where
/// they end (the AVX-512 kernel finishes its tail with it).
#[inline]
fn partition_from(src: &[u32], dst: &mut [u32], at: (usize, usize), goes_left: &[u32], mask: u32) -> (usize, usize) {
    let (mut l, mut r) = at;
    for &e in src {
        // Branch-free: the side is a coin flip the predictor cannot learn.
        let row = e & mask;
        let is_left = ((goes_left[(row >> 5) as usize] >> (row & 31)) & 1) as usize;
        dst[if is_left != 0 { l } else { r }] = e;
        l += is_left;
        r += 1 - is_left;
    }
    (l, r)
}

/// Words of the row-side bitset the AVX-512 partition looks up in registers: rows below
/// 1024, the prior's default sequence length and the common case.
const PART_WORDS: usize = 32;

/// Whether the stable partition may use its AVX-512 kernel for `n` rows.
#[cfg(target_arch = "x86_64")]
fn part512_available(n: usize) -> bool {
    n <= 32 * PART_WORDS && std::arch::is_x86_feature_detected!("avx512f")
}

/// The stable partition sixteen entries at a time: the side bits are looked up from the
/// 32-word bitset held in two registers, and each side is compressed and stored under a
/// mask, so no store reaches past its side's cursor.
#[cfg(target_arch = "x86_64")]
mod part512 {
    use super::PART_WORDS;
    use std::arch::x86_64::{
        __m512i, _mm512_and_si512, _mm512_loadu_si512, _mm512_mask_storeu_epi32, _mm512_maskz_compress_epi32,
        _mm512_permutex2var_epi32, _mm512_set1_epi32, _mm512_srli_epi32, _mm512_srlv_epi32, _mm512_test_epi32_mask,
    };

    /// Same result as `super::partition`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `goes_left` holds at least PART_WORDS words; every entry's
    /// row (`e & mask`) is below 32 * PART_WORDS; `dst` is as long as `src`, and exactly
    /// `n_left` entries of `src` are flagged left.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn partition(src: &[u32], dst: &mut [u32], n_left: usize, goes_left: &[u32], mask: u32) {
        debug_assert!(goes_left.len() >= PART_WORDS && dst.len() == src.len() && n_left <= src.len());
        let (s0, d0, w0) = (src.as_ptr(), dst.as_mut_ptr(), goes_left.as_ptr());
        let full = src.len() / 16;
        let (mut l, mut r) = (0usize, n_left);
        // SAFETY (all blocks below): the caller's contract; loads read 16 entries of src
        // below its length, and the masked stores write nl (16 - nl) entries from the left
        // (right) cursor, which stay below n_left (src.len()) because exactly n_left entries
        // go left.
        unsafe {
            let lo = _mm512_loadu_si512(w0.cast::<__m512i>());
            let hi = _mm512_loadu_si512(w0.add(16).cast::<__m512i>());
            let rows = _mm512_set1_epi32(mask as i32);
            let (low5, one) = (_mm512_set1_epi32(31), _mm512_set1_epi32(1));
            for c in 0..full {
                let e = _mm512_loadu_si512(s0.add(16 * c).cast::<__m512i>());
                let row = _mm512_and_si512(e, rows);
                let word = _mm512_permutex2var_epi32(lo, _mm512_srli_epi32::<5>(row), hi);
                let left = _mm512_test_epi32_mask(_mm512_srlv_epi32(word, _mm512_and_si512(row, low5)), one);
                let nl = left.count_ones() as usize;
                let keep = |k: usize| ((1u32 << k) - 1) as u16;
                _mm512_mask_storeu_epi32(d0.add(l).cast(), keep(nl), _mm512_maskz_compress_epi32(left, e));
                _mm512_mask_storeu_epi32(d0.add(r).cast(), keep(16 - nl), _mm512_maskz_compress_epi32(!left, e));
                l += nl;
                r += 16 - nl;
            }
            debug_assert!(l <= n_left && r <= src.len(), "more entries flagged left than n_left");
        }
        // Fewer than 16 entries remain: the portable loop (bounds-checked) takes them.
        let (l, r) = super::partition_from(&src[16 * full..], dst, (l, r), goes_left, mask);
        debug_assert!(l == n_left && r == src.len(), "n_left must count the entries flagged left");
    }
}

/// Sets `leaf` to the value of a node with gradient sum `total` over `count` rows: the
/// Newton step -G / (H + lambda) scaled by the learning rate, or zero for nodes lighter
/// than min_child_weight.
fn leaf_value<W: Width>(ctx: &Ctx<'_, W>, total: &[f64], count: usize, leaf: &mut [f32]) {
    let h = count as f64;
    for (v, &g) in leaf.iter_mut().zip(total) {
        let w = -g / (h + ctx.lambda);
        *v = if h < ctx.min_child_weight || h <= 0.0 {
            0.0
        } else if ctx.o == 1 {
            // XGBoost's single-target trees round the weight to f32 before scaling it.
            w as f32 * ctx.learning_rate
        } else {
            // Its multi-target trees scale in f64 and round once.
            (w * f64::from(ctx.learning_rate)) as f32
        };
    }
}

/// Adds the leaf of a node with gradient sum `total` to its `rows` (packed entries).
fn add_leaf<W: Width>(ctx: &Ctx<'_, W>, total: &[f64], rows: &[u32], mask: u32, leaf: &mut [f32], pred: &mut [f32]) {
    let o = ctx.o;
    leaf_value(ctx, total, rows.len(), leaf);
    for &e in rows {
        let r = (e & mask) as usize;
        for (p, &v) in pred[r * o..r * o + o].iter_mut().zip(leaf.iter()) {
            *p += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic N(0, 1)-ish values (sum of uniforms), independent of the crate's RNG.
    fn normals(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                let mut t = 0.0f64;
                for _ in 0..12 {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    t += (s >> 11) as f64 / (1u64 << 53) as f64;
                }
                (t - 6.0) as f32
            })
            .collect()
    }

    fn distinct_rows(pred: &[f32], o: usize) -> usize {
        let mut rows: Vec<Vec<u32>> = pred.chunks(o).map(|r| r.iter().map(|v| v.to_bits()).collect()).collect();
        rows.sort();
        rows.dedup();
        rows.len()
    }

    /// Bin of every (feature, row), recovered from the packed sorted order.
    fn bin_matrix(b: &Bins) -> Vec<Vec<usize>> {
        let mask = b.row_mask();
        (0..b.n_feat())
            .map(|f| {
                let mut bins = vec![0; b.n];
                for &e in &b.order[f * b.n..(f + 1) * b.n] {
                    bins[(e & mask) as usize] = (e >> b.row_bits) as usize;
                }
                bins
            })
            .collect()
    }

    /// Straightforward reference: dense per-node histograms, recursion, no blocks, no
    /// partitioned orders, no vector lanes.
    fn reference(x: &[f32], n: usize, p: usize, y: &[f32], o: usize, params: &BoosterParams) -> Vec<f32> {
        let bins = Bins::new(x, n, p, params.max_bin);
        let bm = bin_matrix(&bins);
        let lambda = f64::from(params.reg_lambda);
        let min_rows = (f64::from(params.min_child_weight).ceil().max(1.0)) as usize;
        let mut pred = vec![0.0f32; n * o];
        for j in 0..o {
            let s: f64 = (0..n).map(|r| f64::from(y[r * o + j])).sum();
            for r in 0..n {
                pred[r * o + j] = (s / n as f64) as f32;
            }
        }
        let gain = |g: &[f64], c: usize| g.iter().map(|v| v * v).sum::<f64>() / (c as f64 + lambda);
        for _ in 0..params.n_estimators {
            let grad: Vec<f64> = pred.iter().zip(y).map(|(p, t)| f64::from(p - t)).collect();
            let mut stack = vec![((0..n).collect::<Vec<usize>>(), 0usize)];
            let mut adds: Vec<(Vec<usize>, Vec<f32>)> = Vec::new();
            while let Some((rows, depth)) = stack.pop() {
                let m = rows.len();
                let mut total = vec![0.0; o];
                for &r in &rows {
                    for j in 0..o {
                        total[j] += grad[r * o + j];
                    }
                }
                let mut best: (f64, usize, usize) = (0.0, 0, 0);
                if depth < params.max_depth && m >= 2 * min_rows {
                    let parent = gain(&total, m);
                    for (f, fb) in bm.iter().enumerate() {
                        let nb = bins.n_bins[f];
                        let mut hist = vec![0.0; nb * o];
                        let mut cnt = vec![0usize; nb];
                        for &r in &rows {
                            cnt[fb[r]] += 1;
                            for j in 0..o {
                                hist[fb[r] * o + j] += grad[r * o + j];
                            }
                        }
                        let (mut gl, mut cl) = (vec![0.0; o], 0);
                        for b in 0..nb - 1 {
                            cl += cnt[b];
                            for j in 0..o {
                                gl[j] += hist[b * o + j];
                            }
                            if cnt[b] == 0 || cl < min_rows || m - cl < min_rows {
                                continue;
                            }
                            let gr: Vec<f64> = total.iter().zip(&gl).map(|(t, l)| t - l).collect();
                            let loss = gain(&gl, cl) + gain(&gr, m - cl) - parent;
                            if loss > best.0 {
                                best = (loss, f, b);
                            }
                        }
                    }
                }
                if best.0 > MIN_SPLIT_GAIN {
                    let (l, r): (Vec<usize>, Vec<usize>) = rows.iter().partition(|&&r| bm[best.1][r] <= best.2);
                    stack.push((r, depth + 1));
                    stack.push((l, depth + 1));
                } else {
                    let leaf = total
                        .iter()
                        .map(|g| {
                            let w = -g / (m as f64 + lambda);
                            if o == 1 {
                                w as f32 * params.learning_rate
                            } else {
                                (w * f64::from(params.learning_rate)) as f32
                            }
                        })
                        .collect();
                    adds.push((rows, leaf));
                }
            }
            for (rows, leaf) in adds {
                for r in rows {
                    for j in 0..o {
                        pred[r * o + j] += leaf[j];
                    }
                }
            }
        }
        pred
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn tree_matches_reference_implementation() {
        // Sizes that exercise several scan blocks (n > BLOCK), quantile and distinct-value
        // binning, repeated values, odd output counts (padded lane) and the run-time-width
        // path (o > 16).
        let cases = [
            (700, 6, 1, 4, 3, 1.0),
            (700, 5, 3, 3, 2, 1.0),
            (300, 8, 6, 4, 4, 1.0),
            (200, 4, 9, 2, 3, 5.0),
            (120, 3, 17, 3, 2, 1.0),
            (257, 7, 2, 5, 2, 1.0),
            // Beyond 1024 rows the partition takes its portable path on every CPU.
            (1100, 4, 2, 3, 2, 1.0),
            // Root and children span several blocks, with a few values repeated across
            // block edges (feature 1).
            (2600, 3, 3, 3, 2, 1.0),
        ];
        for (seed, &(n, p, o, depth, rounds, mcw)) in cases.iter().enumerate() {
            let mut x = normals(n * p, seed as u64 + 1);
            // Feature 1 takes few repeated values, feature 2 is constant.
            for r in 0..n {
                x[r * p + 1] = (x[r * p + 1] * 2.0).round();
                x[r * p + 2] = 0.5;
            }
            let y = normals(n * o, seed as u64 + 100);
            let mut params = BoosterParams::new(depth, rounds);
            params.min_child_weight = mcw;
            let fast = fit_predict(&x, n, p, &y, o, &params);
            let slow = reference(&x, n, p, &y, o, &params);
            let d = max_abs_diff(&fast, &slow);
            assert!(d < 1e-5, "case {seed}: max diff {d}");
        }
    }

    #[test]
    fn partition_kernels_are_stable_filters() {
        // Entries pack a bin above a 10-bit row, as `Bins` does; lengths cover empty
        // segments, tails shorter than a 16-entry vector and full 1024-row segments.
        let mask = (1u32 << 10) - 1;
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in (0..70).chain([255, 1024]) {
            let mut rows: Vec<u32> = (0..1024).collect();
            for i in (1..rows.len()).rev() {
                rows.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            let src: Vec<u32> = rows[..len].iter().map(|&r| ((next() % 300) as u32) << 10 | r).collect();
            let mut goes_left = vec![0u32; PART_WORDS];
            for w in goes_left.iter_mut() {
                *w = next() as u32;
            }
            let side = |e: u32| (goes_left[((e & mask) >> 5) as usize] >> (e & 31)) & 1 == 1;
            let expect: Vec<u32> =
                src.iter().copied().filter(|&e| side(e)).chain(src.iter().copied().filter(|&e| !side(e))).collect();
            let n_left = src.iter().filter(|&&e| side(e)).count();
            let mut dst = vec![u32::MAX; len];
            partition(&src, &mut dst, n_left, &goes_left, mask);
            assert_eq!(dst, expect, "portable, {len} entries");
            #[cfg(target_arch = "x86_64")]
            if part512_available(1024) {
                let mut dst = vec![u32::MAX; len];
                // SAFETY: AVX-512F is present, rows are below 1024 and n_left counts the left side.
                unsafe { part512::partition(&src, &mut dst, n_left, &goes_left, mask) };
                assert_eq!(dst, expect, "AVX-512, {len} entries");
            }
        }
    }

    #[test]
    fn avx2_gains_have_the_portable_bits() {
        #[cfg(target_arch = "x86_64")]
        if Simd::detect() >= Simd::Avx2 {
            // Random left sums of mixed magnitudes, where any change of operation order
            // would show in the last bits of some of the 250 losses.
            let m = 3 * BLOCK + 7;
            let inv: Vec<f64> = (0..=m).map(|c| 1.0 / (c as f64 + 1.0)).collect();
            let n_left: Vec<u32> = (0..BLOCK as u32).map(|t| 3 * t + 1).collect();
            for (nv, seed) in [(2usize, 5u64), (4, 6), (6, 7), (8, 8)] {
                let os = 2 * nv;
                let cols: Vec<f64> = normals(BLOCK * os, seed).iter().map(|&v| f64::from(v) * 37.0).collect();
                let total: Vec<f64> = normals(os, seed + 50).iter().map(|&v| f64::from(v) * 100.0).collect();
                let tot: Vec<F2> = (0..nv).map(|v| F2::load(&total[2 * v..])).collect();
                let (t0, t1) = (3, BLOCK - 3);
                let mut want = vec![0.0; BLOCK];
                gains(Dyn(nv), &cols, &n_left, &tot, &inv, 0.75, t0..t1, &mut want);
                let mut got = vec![0.0; BLOCK];
                // SAFETY: AVX2 is present, nv is even, and n_left stays below m.
                let done = unsafe { scan4::gains(Dyn(nv), &cols, &n_left, &total, &inv, 0.75, t0, t1, &mut got) };
                assert!(done <= t1 && t1 - done < 4, "nv = {nv}: stopped at {done}");
                gains(Dyn(nv), &cols, &n_left, &tot, &inv, 0.75, done..t1, &mut got);
                for t in t0..t1 {
                    assert_eq!(got[t].to_bits(), want[t].to_bits(), "nv = {nv}, candidate {t}");
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    let mut got = vec![0.0; BLOCK];
                    // SAFETY: as above, and AVX-512F is present.
                    let done =
                        unsafe { scan4::gains512(Dyn(nv), &cols, &n_left, &total, &inv, 0.75, t0, t1, &mut got) };
                    assert!(done <= t1 && t1 - done < 8, "nv = {nv}: stopped at {done}");
                    gains(Dyn(nv), &cols, &n_left, &tot, &inv, 0.75, done..t1, &mut got);
                    for t in t0..t1 {
                        assert_eq!(got[t].to_bits(), want[t].to_bits(), "AVX-512, nv = {nv}, candidate {t}");
                    }
                }
            }
        }
    }

    #[test]
    fn tree_step_function_is_recovered() {
        // One feature, a step at x = 37: depth-1 trees with learning rate 1 converge to the
        // two side values (each round leaves 1/(count + 1) of the residual).
        let n = 100;
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let y: Vec<f32> = (0..n).map(|i| if i < 37 { -1.0 } else { 2.0 }).collect();
        let mut params = BoosterParams::new(1, 20);
        params.learning_rate = 1.0;
        let pred = fit_predict(&x, n, 1, &y, 1, &params);
        // Convergence stops once a split gains less than 1e-6 (residuals ~1e-4).
        assert!(max_abs_diff(&pred, &y) < 1e-3, "{pred:?}");
        assert_eq!(distinct_rows(&pred, 1), 2);
        assert!(pred[..37].iter().all(|&v| v == pred[0]) && pred[37..].iter().all(|&v| v == pred[37]));
    }

    #[test]
    fn tree_depth_bounds_distinct_predictions() {
        let (n, p, o) = (400, 6, 3);
        let x = normals(n * p, 7);
        let y = normals(n * o, 8);
        for depth in 1..=5 {
            let pred = fit_predict(&x, n, p, &y, o, &BoosterParams::new(depth, 1));
            let k = distinct_rows(&pred, o);
            // Random targets always leave something to split at this size.
            assert!(k > 1 && k <= 1 << depth, "depth {depth}: {k} distinct rows");
        }
        // Two trees of depth 2 give at most 4 * 4 combinations.
        let pred = fit_predict(&x, n, p, &y, o, &BoosterParams::new(2, 2));
        assert!(distinct_rows(&pred, o) <= 16);
    }

    #[test]
    fn tree_ties_go_to_the_first_feature_then_the_first_bin() {
        // g = -y = [-1, 1, 1, -1]: isolating row 0 or row 3 gains exactly the same. XGBoost
        // 3.2 (checked) isolates the lowest bin of the lowest feature: row 0 here, row 3
        // when feature 0 is reversed.
        let y = [1.0f32, -1.0, -1.0, 1.0];
        let cases: [(&[f32], usize, usize); 3] = [
            (&[0.0, 1.0, 2.0, 3.0], 1, 0),
            (&[0.0, 3.0, 1.0, 2.0, 2.0, 1.0, 3.0, 0.0], 2, 0),
            (&[3.0, 0.0, 2.0, 1.0, 1.0, 2.0, 0.0, 3.0], 2, 3),
        ];
        for (x, p, lone) in cases {
            for o in [1, 2] {
                let yo: Vec<f32> = y.iter().flat_map(|&v| std::iter::repeat_n(v, o)).collect();
                let pred = fit_predict(x, 4, p, &yo, o, &BoosterParams::new(1, 1));
                for r in 0..4 {
                    let want = if r == lone { 0.15 } else { -0.075 };
                    assert!((pred[r * o] - want).abs() < 1e-6, "x {x:?} o {o}: {pred:?}");
                }
            }
        }
    }

    #[test]
    fn tree_min_child_weight_bounds_leaf_sizes() {
        let (n, p, o) = (300, 4, 2);
        let x = normals(n * p, 11);
        let y = normals(n * o, 12);
        let mut params = BoosterParams::new(4, 1);
        params.min_child_weight = 25.0;
        let pred = fit_predict(&x, n, p, &y, o, &params);
        let mut rows: Vec<Vec<u32>> = pred.chunks(o).map(|r| r.iter().map(|v| v.to_bits()).collect()).collect();
        rows.sort();
        let mut i = 0;
        while i < rows.len() {
            let run = rows[i..].iter().take_while(|r| **r == rows[i]).count();
            assert!(run >= 25, "a leaf holds {run} rows");
            i += run;
        }
    }

    #[test]
    fn tree_gain_sums_over_all_outputs() {
        // Output 0 follows the sign of feature 0 weakly; outputs 1 and 2 follow feature 1
        // strongly. A gain over output 0 alone would split on feature 0; the summed gain
        // must pick feature 1, and the split must then separate outputs 1 and 2 cleanly.
        let (n, p, o) = (256, 2, 3);
        let x = normals(n * p, 21);
        let noise = normals(n * o, 22);
        let mut y = vec![0.0f32; n * o];
        for r in 0..n {
            let s0 = if x[r * p] < 0.0 { -0.6 } else { 0.6 };
            let s1 = if x[r * p + 1] < 0.0 { -1.0 } else { 1.0 };
            y[r * o] = s0 + 0.05 * noise[r * o];
            y[r * o + 1] = s1;
            y[r * o + 2] = -s1;
        }
        let pred = fit_predict(&x, n, p, &y, o, &BoosterParams::new(1, 1));
        assert_eq!(distinct_rows(&pred, o), 2);
        for r in 0..n {
            assert_eq!(pred[r * o + 1] > 0.0, x[r * p + 1] >= 0.0, "row {r}");
        }
        // A feature that explains only the second output still gets used.
        let mut y2 = normals(n * 2, 23);
        for r in 0..n {
            y2[r * 2] *= 0.01;
            y2[r * 2 + 1] = if x[r * p + 1] < 0.0 { -1.0 } else { 1.0 };
        }
        let pred = fit_predict(&x, n, p, &y2, 2, &BoosterParams::new(1, 1));
        for r in 0..n {
            assert_eq!(pred[r * 2 + 1] > 0.0, x[r * p + 1] >= 0.0, "row {r}");
        }
    }

    #[test]
    fn tree_without_usable_features_predicts_the_mean() {
        let (n, o) = (50, 3);
        let y = normals(n * o, 31);
        let mean: Vec<f32> =
            (0..o).map(|j| ((0..n).map(|r| f64::from(y[r * o + j])).sum::<f64>() / n as f64) as f32).collect();
        let x_const = vec![1.5f32; n * 4];
        for (x, p) in [(&x_const[..], 4), (&[][..], 0)] {
            for depth in [0, 3] {
                let pred = fit_predict(x, n, p, &y, o, &BoosterParams::new(depth, 4));
                for row in pred.chunks(o) {
                    // Each tree adds -0.3 G / (n + 1) with G the f32 rounding left in the
                    // residual sum: essentially zero.
                    assert!(max_abs_diff(row, &mean) < 1e-6, "{row:?} vs {mean:?}");
                }
            }
        }
        // No rounds at all: exactly the intercept.
        let x = normals(n * 2, 32);
        let pred = fit_predict(&x, n, 2, &y, o, &BoosterParams::new(3, 0));
        for row in pred.chunks(o) {
            assert_eq!(row, &mean[..]);
        }
    }

    #[test]
    fn tree_edge_sizes() {
        let params = BoosterParams::new(3, 2);
        assert!(fit_predict(&[], 0, 3, &[], 2, &params).is_empty());
        assert!(fit_predict(&[1.0, 2.0], 2, 1, &[], 0, &params).is_empty());
        // One row: nothing to split, the prediction is the row itself.
        assert_eq!(fit_predict(&[0.5, 1.0], 1, 2, &[3.0, -1.0], 2, &params), vec![3.0, -1.0]);
        // Two rows, one split possible but each child would hold a single row: allowed at
        // min_child_weight 1, and the leaves move towards the targets.
        let pred = fit_predict(&[0.0, 1.0], 2, 1, &[-1.0, 1.0], 1, &params);
        assert!(pred[0] < -0.1 && pred[1] > 0.1, "{pred:?}");
    }

    #[test]
    fn tree_is_deterministic() {
        let (n, p, o) = (500, 10, 5);
        let x = normals(n * p, 41);
        let y = normals(n * o, 42);
        let params = BoosterParams::new(4, 3);
        let a = fit_predict(&x, n, p, &y, o, &params);
        let b = fit_predict(&x, n, p, &y, o, &params);
        assert!(a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits()));
    }

    #[test]
    fn tree_fixed_and_runtime_widths_agree() {
        let (n, p, o) = (300, 5, 6);
        let x = normals(n * p, 51);
        let y = normals(n * o, 52);
        let params = BoosterParams::new(3, 3);
        let bins = Bins::new(&x, n, p, params.max_bin);
        let run = |fixed: bool| {
            let mut pred: Vec<f32> = fit_predict(&x, n, p, &y, o, &BoosterParams::new(3, 0));
            if fixed {
                boost(Fixed::<3>, o, &bins, &y, &params, Simd::Portable, &mut pred);
            } else {
                boost(Dyn(3), o, &bins, &y, &params, Simd::Portable, &mut pred);
            }
            pred
        };
        let (a, b) = (run(true), run(false));
        assert!(a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits()));
        assert_eq!(a, fit_predict(&x, n, p, &y, o, &params));
    }

    #[test]
    fn tree_vector_kernels_give_the_portable_bits() {
        // Every kernel level the CPU has, on widths taking each scan: four lanes (o = 3),
        // eight (o = 6, 8: the AVX-512 scan where present) and twelve (o = 9: the AVX2 scan).
        let levels: Vec<Simd> = [Simd::Avx2, Simd::Avx512].into_iter().filter(|&l| l <= Simd::detect()).collect();
        let (n, p) = (700, 9);
        let x = normals(n * p, 81);
        let bins = Bins::new(&x, n, p, 256);
        for o in [3usize, 6, 8, 9] {
            let y = normals(n * o, 82 + o as u64);
            let params = BoosterParams::new(4, 3);
            let run = |simd: Simd| {
                let mut pred: Vec<f32> = fit_predict(&x, n, p, &y, o, &BoosterParams::new(4, 0));
                match o {
                    3 => boost(Fixed::<2>, o, &bins, &y, &params, simd, &mut pred),
                    9 => boost(Fixed::<6>, o, &bins, &y, &params, simd, &mut pred),
                    _ => boost(Fixed::<4>, o, &bins, &y, &params, simd, &mut pred),
                }
                pred
            };
            let want = run(Simd::Portable);
            assert!(distinct_rows(&want, o) > 8, "o = {o}: the trees split");
            for &level in &levels {
                let got = run(level);
                assert!(got.iter().zip(&want).all(|(u, v)| u.to_bits() == v.to_bits()), "o = {o}, {level:?}");
            }
        }
    }

    #[test]
    fn tree_binning_distinct_values_and_quantiles() {
        // 1024 distinct values -> 256 quantile bins of 4 rows each.
        let n = 1024;
        let x: Vec<f32> = (0..n).map(|i| ((i * 389) % n) as f32 * 0.01 - 3.0).collect();
        let b = Bins::new(&x, n, 1, 256);
        assert_eq!(b.n_bins, vec![256]);
        let bm = bin_matrix(&b);
        let mut counts = [0usize; 256];
        for &bin in &bm[0] {
            counts[bin] += 1;
        }
        assert!(counts.iter().all(|&c| c == 4), "{counts:?}");
        // Bins follow the value order.
        for r in 0..n {
            for s in 0..n {
                if x[r] < x[s] {
                    assert!(bm[0][r] <= bm[0][s]);
                }
            }
        }
        // Up to max_bin distinct values: one bin each, even when repeated.
        let x: Vec<f32> = (0..n).map(|i| ((i * 7) % 200) as f32 - 100.0).collect();
        let b = Bins::new(&x, n, 1, 256);
        assert_eq!(b.n_bins, vec![200]);
        let bm = bin_matrix(&b);
        for r in 0..n {
            assert_eq!(bm[0][r], (x[r] + 100.0) as usize);
        }
        // Constant columns are dropped; -0.0 and 0.0 are one value.
        let x = [0.0f32, 1.0, -0.0, 1.0, 0.0, 1.0, -0.0, 1.0];
        let b = Bins::new(&x, 4, 2, 256);
        assert_eq!(b.n_bins, Vec::<usize>::new());
        // Heavy ties with quantile binning: a value spanning several quantile ranks keeps
        // one bin, and no bin is empty.
        let x: Vec<f32> = (0..n).map(|i| if i % 2 == 0 { 0.0 } else { i as f32 }).collect();
        let b = Bins::new(&x, n, 1, 16);
        let bm = bin_matrix(&b);
        let zero_bins: Vec<usize> = (0..n).filter(|i| i % 2 == 0).map(|i| bm[0][i]).collect();
        assert!(zero_bins.iter().all(|&z| z == 0));
        let mut used = vec![false; b.n_bins[0]];
        for &bin in &bm[0] {
            used[bin] = true;
        }
        assert!(used.iter().all(|&u| u) && b.n_bins[0] <= 16);
    }

    /// The quantile bins as first written: cut values at ranks b * n / max_bin, each key's
    /// bin the number of cuts at or below its value.
    fn bins_by_cut_walk(keys: &[u64], row_bits: u32, max_bin: usize) -> (Vec<u32>, usize) {
        let n = keys.len();
        let value = |k: u64| (k >> 32) as u32;
        let mut cuts = Vec::new();
        let mut last = value(keys[0]);
        for b in 1..max_bin {
            let v = value(keys[b * n / max_bin]);
            if v > last {
                cuts.push(v);
                last = v;
            }
        }
        let mut bin = 0usize;
        let out = keys
            .iter()
            .map(|&k| {
                while bin < cuts.len() && value(k) >= cuts[bin] {
                    bin += 1;
                }
                ((bin as u32) << row_bits) | (k as u32)
            })
            .collect();
        (out, cuts.len() + 1)
    }

    #[test]
    fn quantile_marks_match_the_cut_walk() {
        let mut starts = Vec::new();
        let mut compared = 0;
        for case in 0..400 {
            let n = 2 + (case * 37) % 1500;
            // Few distinct values (heavy ties spanning several quantile ranks) to many.
            let levels = [2, 3, 5, 17, 64, 255, 256, 257, 1000, 100_000][case % 10];
            // |N(0, 1)| scaled to the levels: skewed, the smallest values the most repeated.
            let mut keys: Vec<u64> = normals(n, case as u64 + 1)
                .iter()
                .enumerate()
                .map(|(row, &x)| {
                    let v = ((x.abs() / 4.0).min(1.0) * (levels - 1) as f32) as u32;
                    (u64::from(v) << 32) | row as u64
                })
                .collect();
            keys.sort_unstable();
            let row_bits = (usize::BITS - (n - 1).leading_zeros()).max(1);
            for max_bin in [2, 4, 16, 64, 256] {
                let ranks: Vec<usize> = (1..max_bin).map(|b| b * n / max_bin).collect();
                let mut out = vec![0u32; n];
                let got = bin_sorted(&keys, row_bits, max_bin, &ranks, &mut starts, &mut out);
                let distinct = 1 + keys.windows(2).filter(|w| w[0] >> 32 != w[1] >> 32).count();
                if distinct < 2 {
                    assert_eq!(got, None);
                    continue;
                }
                if distinct > max_bin {
                    let (expected, n_bins) = bins_by_cut_walk(&keys, row_bits, max_bin);
                    assert_eq!(got, Some(n_bins), "case {case}, n {n}, max_bin {max_bin}");
                    assert_eq!(out, expected, "case {case}, n {n}, max_bin {max_bin}");
                    compared += 1;
                } else {
                    assert_eq!(got, Some(distinct));
                }
            }
        }
        assert!(compared > 300, "only {compared} quantile binnings compared");
    }

    #[test]
    fn tree_radix_sort_matches_sort() {
        let vals = normals(3000, 61);
        let mut keys: Vec<u64> = vals
            .iter()
            .enumerate()
            .map(|(r, &v)| (u64::from(ordered_bits((v * 4.0).round())) << 32) | r as u64)
            .collect();
        let mut expected = keys.clone();
        expected.sort_unstable();
        let mut tmp = vec![0; keys.len()];
        radix_sort_high(&mut keys, &mut tmp);
        assert_eq!(keys, expected);
        // Every length around the network's powers of two and its bounds, with many ties in
        // the high halves (values rounded to quarters) and the padding key among the data.
        for n in (1..80).chain([127, 128, 129, 500, 511, 512, 513, 1000, 1024, 1025, 2047, 4096, 4097, 5000]) {
            let mut keys: Vec<u64> = vals[..n.min(vals.len())]
                .iter()
                .chain(vals.iter().cycle().skip(7).take(n.saturating_sub(vals.len())))
                .enumerate()
                .map(|(r, &v)| (u64::from(ordered_bits((v * 4.0).round())) << 32) | r as u64)
                .collect();
            if n > 3 {
                keys[n / 3] = u64::MAX;
            }
            let mut expected = keys.clone();
            expected.sort_unstable();
            sort_keys(&mut keys);
            assert_eq!(keys, expected, "{n} keys");
        }
        let mut ordered: Vec<f32> = vals.clone();
        ordered.sort_by(f32::total_cmp);
        for w in ordered.windows(2) {
            assert!(ordered_bits(w[0]) <= ordered_bits(w[1]));
        }
    }

    /// Sort timings (release: `cargo test --release -p tabfm-core sort_timing -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn sort_timing() {
        for n in [256, 1000, 1024, 2048, 4096] {
            let vals = normals(n, 5);
            let keys: Vec<u64> =
                vals.iter().enumerate().map(|(r, &v)| (u64::from(ordered_bits(v)) << 32) | r as u64).collect();
            let mut want = keys.clone();
            want.sort_unstable();
            let (mut radix, mut network) = (f64::MAX, f64::MAX);
            let mut tmp = vec![0; n];
            for _ in 0..200 {
                let mut k = keys.clone();
                let t = std::time::Instant::now();
                radix_sort_high(&mut k, &mut tmp);
                radix = radix.min(t.elapsed().as_secs_f64());
                assert_eq!(k, want, "radix sort of {n} keys");
                let mut k = keys.clone();
                let t = std::time::Instant::now();
                sort_keys(&mut k);
                network = network.min(t.elapsed().as_secs_f64());
                assert_eq!(k, want, "sort_keys of {n} keys");
            }
            println!("{n} keys: radix {:.2} us, sort_keys {:.2} us", radix * 1e6, network * 1e6);
        }
    }

    /// Timings (release: `cargo test --release -p tabfm-core tree_timing -- --ignored --nocapture`):
    /// the largest tree-SCM layer, a typical first layer, a typical hidden layer.
    #[test]
    #[ignore]
    fn tree_timing() {
        let configs = [
            (1024, 50, 6, 4, 4),
            (1024, 100, 9, 4, 4),
            (1024, 50, 6, 3, 2),
            (1024, 50, 6, 2, 1),
            (1024, 6, 6, 3, 2),
            (1024, 6, 1, 2, 1),
        ];
        for &(n, p, o, depth, rounds) in &configs {
            let x = normals(n * p, 71);
            let y = normals(n * o, 72);
            let params = BoosterParams::new(depth, rounds);
            // Checked as well as timed: every fit gives the first fit's bits, and a sum of
            // `rounds` trees of at most 2^depth leaves takes at most (2^depth)^rounds values
            // (a bound only for the shallower configurations; the others can reach n).
            let first = fit_predict(&x, n, p, &y, o, &params);
            let bound = (1usize << depth).pow(rounds as u32);
            assert!(bound >= n || distinct_rows(&first, o) <= bound, "n={n} p={p} o={o}: too many values");
            let bits = crate::tests::f32_bits;
            let mut best = f64::MAX;
            for _ in 0..50 {
                let t = std::time::Instant::now();
                let pred = std::hint::black_box(fit_predict(&x, n, p, &y, o, &params));
                best = best.min(t.elapsed().as_secs_f64());
                assert_eq!(bits(&pred), bits(&first), "n={n} p={p} o={o}: fits differ");
            }
            println!("n={n} p={p} o={o} depth={depth} rounds={rounds}: best of 50 {:.0} us", best * 1e6);
        }
    }
}
