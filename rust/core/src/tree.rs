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

/// Booster settings. Defaults follow the boosted-tree library defaults that TabICL's tree
/// SCM relies on: learning rate 0.3, L2 leaf penalty 1, min child weight 1, 256 bins.
#[derive(Clone, Debug)]
pub struct BoosterParams {
    pub max_depth: usize,
    pub n_estimators: usize,
    pub learning_rate: f32,
    pub reg_lambda: f32,
    pub min_child_weight: f32,
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
    if n == 0 || o == 0 {
        return Vec::new();
    }

    // Intercept: per-output mean, summed in f64 and rounded once, which is how XGBoost's
    // fitted `base_score` for squared error (one Newton step from zero) comes out.
    let mut mean = vec![0.0f64; o];
    for row in y.chunks_exact(o) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    let base: Vec<f32> = mean.iter().map(|&s| (s / n as f64) as f32).collect();
    let mut pred: Vec<f32> = base.iter().copied().cycle().take(n * o).collect();
    if params.n_estimators == 0 {
        return pred;
    }

    let bins = Bins::new(x, n, p, params.max_bin);
    // Monomorphise the hot loops on the number of two-lane vectors per gradient row, so that
    // per-output loops unroll and running sums stay in registers; wider targets take the
    // run-time-width path.
    macro_rules! fixed {
        ($($k:literal)*) => {
            match o.div_ceil(2) {
                $($k => boost(Fixed::<$k>, o, &bins, y, params, &mut pred),)*
                nv => boost(Dyn(nv), o, &bins, y, params, &mut pred),
            }
        };
    }
    fixed!(1 2 3 4 5 6 7 8);
    pred
}

#[cfg(target_arch = "x86_64")]
mod lanes {
    use std::arch::x86_64::{
        __m128d, _mm_add_pd, _mm_cvtsd_f64, _mm_loadu_pd, _mm_mul_pd, _mm_setzero_pd, _mm_storeu_pd, _mm_sub_pd,
        _mm_unpackhi_pd,
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
    }
}

use lanes::F2;

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
/// half the bytes of a (row, bin) pair) and a bin change is one xor and shift away.
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
        let mut bins = Bins { n, row_bits, n_bins: Vec::new(), order: Vec::new() };
        let mut keys: Vec<u64> = vec![0; n];
        let mut tmp: Vec<u64> = vec![0; n];
        let mut cuts: Vec<u32> = Vec::with_capacity(max_bin);
        for f in 0..p {
            // (order-preserving value bits, row) keys, stably sorted by value: ties stay in
            // row order, which is also the order XGBoost sums a bin's rows in.
            for (r, k) in keys.iter_mut().enumerate() {
                *k = (u64::from(ordered_bits(x[r * p + f])) << 32) | r as u64;
            }
            radix_sort_high(&mut keys, &mut tmp);
            let value = |k: u64| (k >> 32) as u32;
            let distinct = 1 + keys.windows(2).filter(|w| value(w[0]) != value(w[1])).count();
            if distinct < 2 {
                continue;
            }
            let base = bins.order.len();
            bins.order.resize(base + n, 0);
            let out = &mut bins.order[base..];
            if distinct <= max_bin {
                // Every distinct value is its own bin, so any two values can be separated.
                let mut bin = 0u32;
                out[0] = keys[0] as u32;
                for (i, w) in keys.windows(2).enumerate() {
                    bin += u32::from(value(w[0]) != value(w[1]));
                    out[i + 1] = (bin << row_bits) | (w[1] as u32);
                }
                bins.n_bins.push(distinct);
            } else {
                // Quantile bins by count: bin b starts at the value of rank b * n / max_bin;
                // a value repeated across several such ranks keeps a single bin.
                cuts.clear();
                let mut last = value(keys[0]);
                for b in 1..max_bin {
                    let v = value(keys[b * n / max_bin]);
                    if v > last {
                        cuts.push(v);
                        last = v;
                    }
                }
                let mut bin = 0usize;
                for (o, &k) in out.iter_mut().zip(&keys) {
                    while bin < cuts.len() && value(k) >= cuts[bin] {
                        bin += 1;
                    }
                    *o = ((bin as u32) << row_bits) | (k as u32);
                }
                bins.n_bins.push(cuts.len() + 1);
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

/// Maps an f32 to a u32 with the same order (for non-NaN values); -0.0 is folded onto 0.0
/// so that equal values share a bin.
#[inline]
fn ordered_bits(v: f32) -> u32 {
    let b = (v + 0.0).to_bits();
    if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 }
}

/// Stable LSD radix sort of `keys` by their upper 32 bits, one byte per pass; a pass whose
/// byte is the same for every key is skipped. Several times faster than a comparison sort
/// at a thousand keys, and stability keeps equal values in row order for free.
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
}

/// Rows scanned per block of the split search: a block's candidates stay in L1. A power of
/// two, so that masking slot indices proves them in bounds.
const BLOCK: usize = 256;

/// Buffers reused across trees and levels.
struct Scratch {
    /// Gradients, `2 * nv` f64 per row (zero padded).
    grad: Vec<f64>,
    goes_left: Vec<u8>,
    order_a: Vec<u32>,
    order_b: Vec<u32>,
    nodes: Vec<Node>,
    next_nodes: Vec<Node>,
    /// Gradient sum of each node of the level, `2 * nv` per node.
    sums: Vec<f64>,
    next_sums: Vec<f64>,
    /// Left gradient sum of the block's candidate t at `cand_left[t * 2nv..]`: a row's
    /// outputs are contiguous, so the per-row update is a few packed adds and stores.
    cand_left: Vec<f64>,
    /// Rows on the left of the block's candidate t.
    cand_rows: Vec<u32>,
    best_left: Vec<f64>,
    leaf: Vec<f32>,
}

fn boost<W: Width>(w: W, o: usize, bins: &Bins, y: &[f32], params: &BoosterParams, pred: &mut [f32]) {
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
    };
    let order_len = bins.n_feat() * n;
    let level_cap = 1 << params.max_depth.min(12);
    let mut s = Scratch {
        grad: vec![0.0; n * os],
        goes_left: vec![0; n],
        order_a: vec![0; order_len],
        order_b: vec![0; order_len],
        nodes: Vec::with_capacity(level_cap),
        next_nodes: Vec::with_capacity(level_cap),
        sums: Vec::with_capacity(level_cap * os),
        next_sums: Vec::with_capacity(level_cap * os),
        cand_left: vec![0.0; BLOCK * os],
        cand_rows: vec![0; BLOCK],
        best_left: vec![0.0; os],
        leaf: vec![0.0; o],
    };
    for _ in 0..params.n_estimators {
        grow_tree(&ctx, &mut s, pred);
    }
}

/// Grows one depth-wise tree on the current residuals and adds it to `pred`.
fn grow_tree<W: Width>(ctx: &Ctx<'_, W>, s: &mut Scratch, pred: &mut [f32]) {
    let n = ctx.bins.n;
    let o = ctx.o;
    let os = 2 * ctx.w.nv();
    let n_feat = ctx.bins.n_feat();
    let mask = ctx.bins.row_mask();

    // Squared error: gradient pred - y, hessian 1. The gradient is rounded to f32 as
    // XGBoost stores it, then widened once here rather than in the scan.
    for ((g, p), t) in s.grad.chunks_exact_mut(os).zip(pred.chunks_exact(o)).zip(ctx.y.chunks_exact(o)) {
        for j in 0..o {
            g[j] = f64::from(p[j] - t[j]);
        }
    }
    s.sums.clear();
    s.sums.resize(os, 0.0);
    for row in s.grad.chunks_exact(os) {
        for (acc, &g) in s.sums.iter_mut().zip(row) {
            *acc += g;
        }
    }
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
    let Scratch {
        grad,
        goes_left,
        order_a,
        order_b,
        nodes,
        next_nodes,
        sums,
        next_sums,
        cand_left,
        cand_rows,
        best_left,
        leaf,
    } = s;
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
                find_split(ctx, order, start, end, total, grad, cand_left, cand_rows, best_left)
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
                    goes_left[(e & mask) as usize] = 1;
                }
                for &e in right_rows {
                    goes_left[(e & mask) as usize] = 0;
                }
                for f in 0..n_feat {
                    let range = f * n + start..f * n + end;
                    partition(&order[range.clone()], &mut dst[range], split.n_left, goes_left, mask);
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
    grad: &[f64],
    cand_left: &mut [f64],
    cand_rows: &mut [u32],
    best_left: &mut [f64],
) -> Option<Split> {
    let w = ctx.w;
    let nv = w.nv();
    let os = 2 * nv;
    let n = ctx.bins.n;
    let m = end - start;
    let shift = ctx.bins.row_bits;
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
    let cols = &mut cand_left[..BLOCK * os];
    let n_left = &mut cand_rows[..BLOCK];
    for f in 0..ctx.bins.n_feat() {
        let seg = &order[f * n + start..f * n + end];
        left.fill(F2::zero());
        // Candidate i (rows seg[..=i] left) exists where seg[i + 1] starts a new bin; the
        // last row is never a candidate (empty right side).
        for block in (0..m - 1).step_by(BLOCK) {
            // Pass 1. A bin still open at the end of the block is finished (and its slot
            // rewritten) in the next block: the running sum carries over.
            let mut k = 0usize;
            for (i, pair) in seg[block..(block + BLOCK + 1).min(m)].windows(2).enumerate() {
                let e = pair[0];
                let r = (e & mask) as usize;
                let g = &grad[r * os..r * os + os];
                let slot = k & (BLOCK - 1);
                let out = &mut cols[slot * os..slot * os + os];
                for v in 0..nv {
                    left[v] = left[v].add(F2::load(&g[2 * v..]));
                    left[v].store(&mut out[2 * v..]);
                }
                n_left[slot] = (block + i) as u32 + 1;
                k += usize::from((pair[1] ^ e) >> shift != 0);
            }
            // Candidates whose children both reach min_child_weight form a contiguous
            // range, because n_left increases.
            let t0 = n_left[..k].partition_point(|&c| c < lo);
            let t1 = n_left[..k].partition_point(|&c| c <= hi);
            // Pass 2: sum_j GL_j^2 / (HL + lambda) + GR_j^2 / (HR + lambda) - parent.
            let mut best_t = usize::MAX;
            for t in t0..t1 {
                let row = &cols[t * os..t * os + os];
                let mut gl = F2::zero();
                let mut gr = F2::zero();
                for v in 0..nv {
                    let l = F2::load(&row[2 * v..]);
                    let d = tot[v].sub(l);
                    gl = gl.add(l.mul(l));
                    gr = gr.add(d.mul(d));
                }
                let c = n_left[t] as usize;
                let loss = gl.sum() * inv[c] + gr.sum() * inv[m - c] - parent_gain;
                // Strict: the first feature, then the first bin, wins ties.
                if loss > best.loss_chg {
                    best.loss_chg = loss;
                    best_t = t;
                }
            }
            if best_t != usize::MAX {
                best.feat = f;
                best.n_left = n_left[best_t] as usize;
                best_left.copy_from_slice(&cols[best_t * os..best_t * os + os]);
            }
        }
    }
    (best.loss_chg > MIN_SPLIT_GAIN).then_some(best)
}

/// Stable partition of one feature's node segment: rows flagged in `goes_left` first.
#[inline]
fn partition(src: &[u32], dst: &mut [u32], n_left: usize, goes_left: &[u8], mask: u32) {
    let (mut l, mut r) = (0usize, n_left);
    for &e in src {
        // Branch-free: the side is a coin flip the predictor cannot learn.
        let is_left = usize::from(goes_left[(e & mask) as usize]);
        dst[if is_left != 0 { l } else { r }] = e;
        l += is_left;
        r += 1 - is_left;
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
