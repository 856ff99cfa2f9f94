//! Random functions of the causal-DAG prior: the eight families, random matrices, random
//! positive weights, random points and random activations (TabICLv2's generative process).
//!
//! Each function is fitted on the data it transforms (split points, centres and shifts are
//! random rows of its input) and applied once, so it is sampled and evaluated in one call.

use crate::activations::Simple;
use crate::fastmath;
use crate::linalg;

use super::sampler::{Ctx, Mode};

/// A dense row-major float32 matrix (rows = samples).
#[derive(Clone, Debug)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Mat {
        Mat { rows, cols, data: vec![0.0; rows * cols] }
    }

    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Mat {
        debug_assert_eq!(data.len(), rows * cols);
        Mat { rows, cols, data }
    }

    #[inline]
    pub fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.cols + c]
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Selected rows, in the given order.
    pub fn take_rows(&self, idx: &[usize]) -> Mat {
        let mut data = Vec::with_capacity(idx.len() * self.cols);
        for &i in idx {
            data.extend_from_slice(self.row(i));
        }
        Mat::from_vec(idx.len(), self.cols, data)
    }

    /// Selected columns, in the given order.
    pub fn take_cols(&self, idx: &[usize]) -> Mat {
        let mut data = Vec::with_capacity(self.rows * idx.len());
        for r in 0..self.rows {
            let row = self.row(r);
            data.extend(idx.iter().map(|&c| row[c]));
        }
        Mat::from_vec(self.rows, idx.len(), data)
    }

    /// `self @ w^T` with `w` stored (out x cols) row-major.
    pub fn matmul_t(&self, w: &[f32], out: usize) -> Mat {
        let mut o = Mat::zeros(self.rows, out);
        linalg::linear(&self.data, self.rows, self.cols, w, out, &mut o.data);
        o
    }

    /// Column means and population standard deviations (f64 accumulation).
    pub fn col_mean_std(&self) -> (Vec<f64>, Vec<f64>) {
        let (n, c) = (self.rows, self.cols);
        let mut sum = vec![0.0f64; c];
        for r in 0..n {
            for (s, &v) in sum.iter_mut().zip(self.row(r)) {
                *s += f64::from(v);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n.max(1) as f64).collect();
        let mut ss = vec![0.0f64; c];
        for r in 0..n {
            for ((s, &v), m) in ss.iter_mut().zip(self.row(r)).zip(&mean) {
                let d = f64::from(v) - m;
                *s += d * d;
            }
        }
        let std = ss.iter().map(|s| (s / n.max(1) as f64).sqrt()).collect();
        (mean, std)
    }
}

/// `(x - mean) / (std + 1e-4)` per column.
pub fn standardize(x: &mut Mat) {
    let (mean, std) = x.col_mean_std();
    let shift: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let inv: Vec<f32> = std.iter().map(|&s| (1.0 / (s + 1e-4)) as f32).collect();
    for row in x.data.chunks_exact_mut(x.cols) {
        for ((v, m), i) in row.iter_mut().zip(&shift).zip(&inv) {
            *v = (*v - m) * i;
        }
    }
}

/// Scales all of `x` so that the mean squared row norm is one.
pub fn l2_normalize(x: &mut Mat) {
    let ss: f64 = x.data.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let factor = (1.0 / ((ss / x.rows.max(1) as f64).sqrt() + 1e-8)) as f32;
    x.data.iter_mut().for_each(|v| *v *= factor);
}

fn row_normalize(m: &mut [f32], cols: usize) {
    for row in m.chunks_exact_mut(cols) {
        let norm = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        let inv = (1.0 / (1e-6 + norm)) as f32;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// `nb` random positive weight vectors of length `n` (row-major nb x n), each of norm sqrt(n):
/// log-weights decay polynomially with rank, plus Gaussian noise, in random order.
pub fn random_weights(ctx: &mut Ctx, nb: usize, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(nb * n);
    for _ in 0..nb {
        let lo = 0.1 / (1.0 + n as f64).ln();
        let decay = ctx.num("simple_random_weights_decay_rate", lo, 6.0, true, Mode::Meta, true);
        let std = ctx.num("simple_random_weights_std_scale", 1e-4, 10.0, true, Mode::Meta, false);
        let mut logits: Vec<f64> =
            (0..n).map(|i| -decay * ((i + 1) as f64).ln() + std * f64::from(ctx.gauss())).collect();
        ctx.rng.shuffle(&mut logits);
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        let norm = e.iter().map(|v| (v / sum) * (v / sum)).sum::<f64>().sqrt();
        out.extend(e.iter().map(|v| ((n as f64).sqrt() * (v / sum) / norm) as f32));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Random matrices
// ---------------------------------------------------------------------------------------------

/// `nb` random (n x m) matrices, row-normalised, of one randomly chosen kind.
pub fn random_matrix(ctx: &mut Ctx, nb: usize, n: usize, m: usize) -> Vec<f32> {
    let kinds = &ctx.cfg.mechanism.matrix_kinds;
    let k = ctx.choice("random_matrix_type", kinds.len());
    let kind = kinds[k].clone();
    matrix_of_kind(ctx, &kind, nb, n, m)
}

fn matrix_of_kind(ctx: &mut Ctx, kind: &str, nb: usize, n: usize, m: usize) -> Vec<f32> {
    let mut mat = match kind {
        "gaussian" => ctx.gauss_vec(nb * n * m),
        "weights" => {
            let mut w = random_weights(ctx, nb * n, m);
            for v in w.iter_mut() {
                *v *= ctx.gauss();
            }
            row_normalize(&mut w, m);
            w
        }
        "singular_values" => {
            let k = n.min(m);
            let mut out = Vec::with_capacity(nb * n * m);
            for _ in 0..nb {
                let mut u = ctx.gauss_vec(n * k);
                let diag = random_weights(ctx, 1, k);
                let v = ctx.gauss_vec(k * m);
                for row in u.chunks_exact_mut(k) {
                    row.iter_mut().zip(&diag).for_each(|(a, d)| *a *= d);
                }
                // (n x k) @ (k x m): v is (k x m) row-major, i.e. a transposed (m x k) weight.
                let vt = transpose(&v, k, m);
                out.extend(Mat::from_vec(n, k, u).matmul_t(&vt, m).data);
            }
            out
        }
        "kernel" => {
            let mut out = Vec::with_capacity(nb * n * m);
            let pts = gmm_points(ctx, nb * (n + m), 3);
            let factor = ctx.log_num("random_kernel_matrix_dist_factor", 0.1, 10.0) as f32;
            for b in 0..nb {
                let p = &pts.data[b * (n + m) * 3..(b + 1) * (n + m) * 3];
                for i in 0..n {
                    for j in 0..m {
                        let (a, c) = (&p[i * 3..i * 3 + 3], &p[(n + j) * 3..(n + j) * 3 + 3]);
                        let d = ((a[0] - c[0]).powi(2) + (a[1] - c[1]).powi(2) + (a[2] - c[2]).powi(2)).sqrt();
                        let s = if ctx.gauss() >= 0.0 { 1.0 } else { -1.0 };
                        out.push((-d * factor).exp() * s);
                    }
                }
            }
            out
        }
        _ => {
            // An activation applied to a simpler random matrix, each flattened to one row.
            let kinds: Vec<String> =
                ctx.cfg.mechanism.matrix_kinds.iter().filter(|k| k.as_str() != "activation").cloned().collect();
            let base = if kinds.is_empty() {
                "gaussian".to_string()
            } else {
                kinds[ctx.choice("simple_random_matrix_type", kinds.len())].clone()
            };
            let inner = matrix_of_kind(ctx, &base, nb, n, m);
            let mut flat = Mat::from_vec(nb, n * m, inner);
            plain_activation(ctx, &mut flat);
            for v in flat.data.iter_mut() {
                *v += 1e-3 * ctx.gauss();
            }
            flat.data
        }
    };
    for v in mat.iter_mut() {
        *v += 1e-6 * ctx.gauss();
    }
    row_normalize(&mut mat, m);
    mat
}

/// `v` (rows x cols, row-major) transposed. Sixteen rows at a time, so that every column of
/// the block is written as one 64-byte run: element by element, each store lands `rows`
/// floats after the last, a cache line (and, at 1024 rows, a 4 KiB page) apart.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const RB: usize = 16;
    let mut t = vec![0.0; v.len()];
    for r0 in (0..rows).step_by(RB) {
        let r1 = (r0 + RB).min(rows);
        for c in 0..cols {
            let dst = &mut t[c * rows + r0..c * rows + r1];
            for (k, d) in dst.iter_mut().enumerate() {
                *d = v[(r0 + k) * cols + c];
            }
        }
    }
    t
}

// ---------------------------------------------------------------------------------------------
// Random points
// ---------------------------------------------------------------------------------------------

/// Points from a random Gaussian mixture with random per-centre linear maps.
fn gmm_points(ctx: &mut Ctx, n: usize, d: usize) -> Mat {
    let nc = ctx.int("random_gmp_n_centers", 1, 16, true, Mode::Meta);
    let w: Vec<f64> = random_weights(ctx, 1, nc).iter().map(|&v| f64::from(v)).collect();
    let centers = ctx.gauss_vec(nc * d);
    let colw = random_weights(ctx, nc, d);
    let (r1, r2) = (ctx.gauss(), ctx.gauss());
    let mut mats = ctx.gauss_vec(nc * d * d);
    for c in 0..nc {
        let s = (r1 + r2 * ctx.gauss()).exp();
        for i in 0..d {
            for j in 0..d {
                mats[c * d * d + i * d + j] *= colw[c * d + j] * s;
            }
        }
    }
    let mut out = Mat::zeros(n, d);
    for r in 0..n {
        let c = ctx.rng.categorical(&w);
        let z = ctx.gauss_vec(d);
        for i in 0..d {
            let mut v = centers[c * d + i];
            for j in 0..d {
                v += mats[c * d * d + i * d + j] * z[j];
            }
            out.data[r * d + i] = v;
        }
    }
    out
}

/// Base points of a root node: uniform, ring-like (uniform in the ball), Gaussian, or
/// Gaussian / uniform with a random covariance.
fn base_points(ctx: &mut Ctx, n: usize, d: usize) -> (Mat, &'static str) {
    match ctx.choice("random_base_points", 4) {
        0 => (uniform_points(ctx, n, d), "uniform"),
        1 => {
            let mut x = ctx.gauss_vec(n * d);
            for row in x.chunks_exact_mut(d) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-30);
                let r = ctx.rng.uniform().powf(1.0 / d as f64) as f32;
                row.iter_mut().for_each(|v| *v *= r / norm);
            }
            (Mat::from_vec(n, d, x), "ring")
        }
        2 => (Mat::from_vec(n, d, ctx.gauss_vec(n * d)), "gaussian"),
        _ => {
            let mut m = ctx.gauss_vec(d * d);
            let w = random_weights(ctx, 1, d);
            for row in m.chunks_exact_mut(d) {
                row.iter_mut().zip(&w).for_each(|(a, b)| *a *= b);
            }
            let base = if ctx.choice("random_covariance_base_points", 2) == 0 {
                uniform_points(ctx, n, d)
            } else {
                Mat::from_vec(n, d, ctx.gauss_vec(n * d))
            };
            (base.matmul_t(&m, d), "covariance")
        }
    }
}

fn uniform_points(ctx: &mut Ctx, n: usize, d: usize) -> Mat {
    Mat::from_vec(n, d, (0..n * d).map(|_| 2.0 * ctx.rng.uniform_f32() - 1.0).collect())
}

/// Root-node values: random base points passed through a random function.
pub fn random_points(ctx: &mut Ctx, n: usize, d: usize) -> (Mat, &'static str) {
    let (base, kind) = base_points(ctx, n, d);
    (random_function(ctx, &base, d), kind)
}

// ---------------------------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------------------------

/// The 27 fixed activations, in TabICL's order; the last ones act on whole rows.
pub const ACTIVATIONS: [&str; 27] = [
    "tanh",
    "leaky_relu",
    "elu",
    "identity",
    "selu",
    "silu",
    "relu",
    "softplus",
    "relu6",
    "hardtanh",
    "sign",
    "heaviside",
    "rbf",
    "exp",
    "unit_interval_indicator",
    "sine",
    "square",
    "abs",
    "log_abs",
    "rank",
    "sigmoid",
    "round",
    "mod1",
    "softmax",
    "is_max",
    "argsort",
    "logsigmoid",
];

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn apply_fixed(idx: usize, x: &mut Mat) {
    // The activations the MLP SCM has too share its implementation.
    if let Some(f) = Simple::from_name(ACTIVATIONS[idx]) {
        f.map(&mut x.data);
        return;
    }
    let map = |x: &mut Mat, f: fn(f32) -> f32| x.data.iter_mut().for_each(|v| *v = f(*v));
    match idx {
        11 => map(x, |v| if v >= 0.0 { 1.0 } else { 0.0 }),
        18 => map(x, |v| v.abs().max(1e-6).ln()),
        19 => rowwise(x, |row| {
            let order = argsort(row);
            let mut rank = vec![0.0; row.len()];
            for (r, &i) in order.iter().enumerate() {
                rank[i] = r as f32;
            }
            row.copy_from_slice(&rank);
        }),
        20 => map(x, sigmoid),
        21 => map(x, |v| v.round_ties_even()),
        22 => map(x, |v| v - v.floor()),
        23 => rowwise(x, |row| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0.0;
            row.iter_mut().for_each(|v| {
                *v = (*v - max).exp();
                s += *v;
            });
            row.iter_mut().for_each(|v| *v /= s);
        }),
        24 => rowwise(x, |row| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|v| *v = f32::from(u8::from(*v == max)));
        }),
        25 => rowwise(x, |row| {
            let order = argsort(row);
            for (v, &i) in row.iter_mut().zip(&order) {
                *v = i as f32;
            }
        }),
        26 => map(x, |v| -fastmath::softplus(-v)),
        _ => unreachable!("activation index {idx} out of range"),
    }
}

fn argsort(row: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
    idx
}

fn rowwise(x: &mut Mat, f: impl Fn(&mut [f32])) {
    let cols = x.cols.max(1);
    x.data.chunks_exact_mut(cols).for_each(f);
}

fn power(x: &mut Mat, kind: usize, e: f32) {
    match kind {
        0 => x.data.iter_mut().for_each(|v| *v = v.max(0.0).powf(e)),
        1 => x.data.iter_mut().for_each(|v| *v = if *v >= 0.0 { v.powf(e) } else { -(-*v).powf(e) }),
        2 => x.data.iter_mut().for_each(|v| *v = (v.abs() + 1e-3).powf(-e)),
        _ => x.data.iter_mut().for_each(|v| *v = v.powi(e as i32)),
    }
}

/// An activation without the standardise / rescale wrapper (used on random matrices).
fn plain_activation(ctx: &mut Ctx, x: &mut Mat) {
    match ctx.choice("act_type_plain", 12) {
        0..=7 => {
            let a = ctx.choice("acts_torch", ACTIVATIONS.len());
            apply_fixed(a, x);
        }
        8 => power(x, 0, ctx.log_num("relu_random_power_exponent", 0.1, 10.0) as f32),
        9 => power(x, 1, ctx.log_num("random_power_exponent", 0.1, 10.0) as f32),
        10 => power(x, 2, ctx.log_num("neg_random_power_exponent", 0.1, 10.0) as f32),
        _ => power(x, 3, ctx.int("rand_int_power_exponent", 2, 6, false, Mode::Meta) as f32),
    }
}

/// A hidden-layer activation: standardise, scale by LogU(1, 10) around a random row, apply
/// a fixed or power activation, standardise again.
fn random_activation(ctx: &mut Ctx, x: &mut Mat) {
    let kind = ctx.choice("act_type", 6);
    standardize(x);
    let scale = ctx.log_num("rr_scale", 1.0, 10.0) as f32;
    let bias: Vec<f32> = (0..x.cols).map(|c| -x.at(ctx.rng.below(x.rows as u64) as usize, c)).collect();
    for row in x.data.chunks_exact_mut(x.cols) {
        row.iter_mut().zip(&bias).for_each(|(v, b)| *v = scale * (*v + b));
    }
    match kind {
        0..=3 => {
            let a = ctx.choice("acts_torch", ACTIVATIONS.len());
            apply_fixed(a, x);
        }
        4 => power(x, 0, ctx.log_num("relu_random_power_exponent", 0.1, 10.0) as f32),
        _ => power(x, 1, ctx.log_num("random_power_exponent", 0.1, 10.0) as f32),
    }
    standardize(x);
}

/// Kumaraswamy warping of min-max scaled columns: 1 - (1 - x^a)^b.
pub fn kumaraswamy(ctx: &mut Ctx, x: &mut Mat) {
    let a = ctx.log_num("kumaraswamy_a", 0.2, 5.0) as f32;
    let b = ctx.log_num("kumaraswamy_b", 0.2, 5.0) as f32;
    for c in 0..x.cols {
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for r in 0..x.rows {
            lo = lo.min(x.at(r, c));
            hi = hi.max(x.at(r, c));
        }
        let inv = 1.0 / (hi - lo + 1e-30);
        for r in 0..x.rows {
            let v = &mut x.data[r * x.cols + c];
            let s = ((*v - lo) * inv).clamp(0.0, 1.0);
            *v = 1.0 - (1.0 - s.powf(a)).powf(b);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Function families
// ---------------------------------------------------------------------------------------------

/// A random function from `x` to `out` columns, of a family drawn from the configured
/// (and possibly drift-tilted) family distribution.
pub fn random_function(ctx: &mut Ctx, x: &Mat, out: usize) -> Mat {
    let probs = ctx.cfg.family_probs();
    let f = ctx.choice_weighted("random_function_fct_type", &probs);
    apply_family(ctx, f, x, out)
}

/// The cheaper families used inside `product` and `neighbor_func` (GP, tree, discretisation,
/// linear, quadratic), weighted as configured; when all of them are switched off, any family
/// but `product` (whose parts this draws).
pub fn cheap_function(ctx: &mut Ctx, x: &Mat, out: usize) -> Mat {
    const CHEAP: [usize; 5] = [5, 1, 2, 3, 4];
    let probs = ctx.cfg.family_probs();
    let p: Vec<f64> = CHEAP.iter().map(|&f| probs[f]).collect();
    if p.iter().sum::<f64>() > 0.0 {
        let f = CHEAP[ctx.choice_weighted("cheap_random_function_fct_type", &p)];
        return apply_family(ctx, f, x, out);
    }
    let mut rest = probs;
    rest[7] = 0.0;
    let f = if rest.iter().sum::<f64>() > 0.0 { ctx.rng.categorical(&rest) } else { 3 };
    apply_family(ctx, f, x, out)
}

fn apply_family(ctx: &mut Ctx, f: usize, x: &Mat, out: usize) -> Mat {
    ctx.families.push(super::config::FAMILIES[f]);
    match f {
        0 => mlp(ctx, x, out),
        1 => tree_ensemble(ctx, x, out),
        2 => discretization(ctx, x, out),
        3 => linear(ctx, x, out),
        4 => quadratic(ctx, x, out),
        5 => gp(ctx, x, out),
        6 => em_assignment(ctx, x, out),
        _ => {
            let mut a = cheap_function(ctx, x, out);
            let b = cheap_function(ctx, x, out);
            a.data.iter_mut().zip(&b.data).for_each(|(u, v)| *u *= v);
            a
        }
    }
}

pub fn linear(ctx: &mut Ctx, x: &Mat, out: usize) -> Mat {
    let m = random_matrix(ctx, 1, out, x.cols);
    x.matmul_t(&m, out)
}

fn mlp(ctx: &mut Ctx, x: &Mat, out: usize) -> Mat {
    let width = ctx.int("nn_width", 1, 128, true, Mode::Meta);
    let n_layers = ctx.int("nn_n_layers", 1, 4, true, Mode::Meta);
    let start_act = ctx.boolean("nn_start_act");
    let end_act = ctx.boolean("nn_end_act");
    let mut h = x.clone();
    if start_act {
        random_activation(ctx, &mut h);
    }
    for layer in 0..n_layers {
        let w = if layer + 1 == n_layers { out } else { width };
        h = linear(ctx, &h, w);
        if layer + 1 < n_layers || end_act {
            random_activation(ctx, &mut h);
        }
    }
    h
}

/// Oblivious trees: each level splits on one feature (chosen with probability proportional
/// to its std) at the value of a random row; leaves hold Gaussian vectors; trees are averaged.
fn tree_ensemble(ctx: &mut Ctx, x: &Mat, out: usize) -> Mat {
    let (_, std) = x.col_mean_std();
    let imp: Vec<f64> = std.iter().map(|&s| if s.is_finite() { s.max(1e-8) } else { 1e-8 }).collect();
    let n_trees = ctx.num("rt_n_trees", 1.0, 128.0, true, Mode::Meta, false).round_ties_even().max(1.0) as usize;
    let depth = ctx.int("rt_depth", 1, 8, false, Mode::Meta);
    let n_leaves = 1usize << depth;
    let mut result = Mat::zeros(x.rows, out);
    let mut leaf = vec![0usize; x.rows];
    let columns = transpose(&x.data, x.rows, x.cols); // split tests read whole columns
    for _ in 0..n_trees {
        leaf.iter_mut().for_each(|l| *l = 0);
        for level in 0..depth {
            let dim = ctx.rng.categorical(&imp);
            let point = x.at(ctx.rng.below(x.rows as u64) as usize, dim);
            let col = &columns[dim * x.rows..(dim + 1) * x.rows];
            for (l, &v) in leaf.iter_mut().zip(col) {
                *l |= usize::from(v > point) << level;
            }
        }
        let values = ctx.gauss_vec(n_leaves * out);
        for (r, &l) in leaf.iter().enumerate() {
            let src = &values[l * out..(l + 1) * out];
            result.data[r * out..(r + 1) * out].iter_mut().zip(src).for_each(|(a, b)| *a += b);
        }
    }
    let inv = 1.0 / n_trees as f32;
    result.data.iter_mut().for_each(|v| *v *= inv);
    result
}

/// `sum_k |x_k - c_k|^p` for every row and centre (rows x centres), the p-th power of the
/// L_p distance (monotone in it, so argmin is unchanged). The centres are transposed so the
/// inner loop runs over centres without a reduction and vectorises; on AVX2 machines the
/// same code is compiled for 8 lanes (16 with AVX-512, the same bits), with fused
/// multiply-adds where the CPU has FMA (as the matrix products, this makes the last bits
/// depend on whether the CPU has FMA).
fn lp_pow_dists(x: &Mat, c: &Mat, p: f32) -> Vec<f32> {
    let ct = transpose(&c.data, c.rows, x.cols);
    let mut out = vec![0.0f32; x.rows * c.rows];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the functions are compiled for.
            unsafe {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    lp_pow_dists_avx512(x, &ct, c.rows, p, &mut out);
                } else {
                    lp_pow_dists_fma(x, &ct, c.rows, p, &mut out);
                }
            }
            return out;
        }
    }
    lp_pow_dists_generic::<false>(x, &ct, c.rows, p, &mut out);
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn lp_pow_dists_fma(x: &Mat, ct: &[f32], nc: usize, p: f32, out: &mut [f32]) {
    lp_pow_dists_generic::<true>(x, ct, nc, p, out);
}

/// The same loops on 16 lanes (the same fused operations per element, so the same bits as
/// the AVX2 build).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn lp_pow_dists_avx512(x: &Mat, ct: &[f32], nc: usize, p: f32, out: &mut [f32]) {
    lp_pow_dists_generic::<true>(x, ct, nc, p, out);
}

/// The exponents with a closed-form term: 2 (squares), 1 (absolute values), else 0 (general
/// p, through [`fastmath::pow_abs_nz`]).
fn lp_kind(p: f32) -> u8 {
    if (p - 2.0).abs() < 1e-6 {
        2
    } else if (p - 1.0).abs() < 1e-6 {
        1
    } else {
        0
    }
}

#[inline(always)]
fn lp_pow_dists_generic<const FMA: bool>(x: &Mat, ct: &[f32], nc: usize, p: f32, out: &mut [f32]) {
    let d = x.cols;
    let kind = lp_kind(p);
    for (r, acc) in out.chunks_exact_mut(nc.max(1)).enumerate().take(x.rows) {
        let xr = x.row(r);
        for k in 0..d {
            let xv = xr[k];
            let cr = &ct[k * nc..(k + 1) * nc];
            match kind {
                2 => acc.iter_mut().zip(cr).for_each(|(a, &cv)| *a += (xv - cv) * (xv - cv)),
                1 => acc.iter_mut().zip(cr).for_each(|(a, &cv)| *a += (xv - cv).abs()),
                _ => acc.iter_mut().zip(cr).for_each(|(a, &cv)| *a += fastmath::pow_abs_nz::<FMA>(xv - cv, p)),
            }
        }
    }
}

fn argmin_rows(d: &[f32], cols: usize) -> Vec<usize> {
    d.chunks_exact(cols)
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v < row[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

/// Nearest-centre assignment (L_p) of each row to `n_centers` random rows of `x`.
pub fn nearest_centre(ctx: &mut Ctx, x: &Mat, n_centers: usize, p_name: &'static str) -> (Mat, Vec<usize>) {
    let perm = ctx.rng.permutation(x.rows);
    let centers = x.take_rows(&perm[..n_centers.min(x.rows).max(1)]);
    let p = ctx.log_num(p_name, 0.5, 4.0) as f32;
    let idx = lp_argmin(x, &centers, p);
    (centers, idx)
}

/// For every row, the first centre with the least `sum_k |x_k - c_k|^p`: what
/// `argmin_rows(lp_pow_dists(..))` gives, bit for bit, with less work for general p.
///
/// Centres go by blocks of 8 lanes (16 with AVX-512), each block's sums built over the inputs
/// in the same order and with the same terms as [`lp_pow_dists`]; every 4 inputs a block is
/// abandoned once all its partial sums exceed the best full sum so far. The terms are
/// non-negative, so a partial sum only grows: an abandoned centre can neither be the minimum
/// nor tie with it, and NaN sums, which compare false, are never abandoned (they lose every
/// comparison, as in `argmin_rows`). The first centre seeds the best value, again as
/// `argmin_rows` does.
fn lp_argmin(x: &Mat, c: &Mat, p: f32) -> Vec<usize> {
    if lp_kind(p) != 0 || c.rows == 0 || x.cols == 0 {
        return argmin_rows(&lp_pow_dists(x, c, p), c.rows.max(1));
    }
    let nc = c.rows;
    #[cfg(target_arch = "x86_64")]
    let (fma, avx512) = (
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
        std::arch::is_x86_feature_detected!("avx512f"),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (fma, avx512) = (false, false);
    let lanes = if fma && avx512 { WIDE_LANES } else { LANES };
    let padded = nc.div_ceil(lanes) * lanes;
    // Transposed centres, padded with copies of the last centre (the padding lanes are never
    // candidates).
    let rows: Vec<usize> = (0..padded).map(|j| j.min(nc - 1)).collect();
    let ct = transpose(&c.take_rows(&rows).data, padded, x.cols);
    #[cfg(target_arch = "x86_64")]
    if fma {
        // SAFETY: the CPU supports the features the functions are compiled for.
        return unsafe {
            if avx512 { lp_argmin_avx512(x, &ct, nc, padded, p) } else { lp_argmin_fma(x, &ct, nc, padded, p) }
        };
    }
    lp_argmin_generic::<false, LANES>(x, &ct, nc, padded, p)
}

/// Centres per block of [`lp_argmin`]: one AVX2 vector, or one AVX-512 vector. The block
/// width only changes how early a block can be abandoned, never a sum or the result.
const LANES: usize = 8;
const WIDE_LANES: usize = 16;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn lp_argmin_fma(x: &Mat, ct: &[f32], nc: usize, padded: usize, p: f32) -> Vec<usize> {
    lp_argmin_generic::<true, LANES>(x, ct, nc, padded, p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn lp_argmin_avx512(x: &Mat, ct: &[f32], nc: usize, padded: usize, p: f32) -> Vec<usize> {
    lp_argmin_generic::<true, WIDE_LANES>(x, ct, nc, padded, p)
}

#[inline(always)]
fn lp_argmin_generic<const FMA: bool, const L: usize>(
    x: &Mat,
    ct: &[f32],
    nc: usize,
    padded: usize,
    p: f32,
) -> Vec<usize> {
    let d = x.cols;
    let mut idx = Vec::with_capacity(x.rows);
    for r in 0..x.rows {
        let xr = x.row(r);
        let (mut best, mut best_j) = (0.0f32, 0usize);
        for j0 in (0..padded).step_by(L) {
            let mut sums = [0.0f32; L];
            let mut abandoned = false;
            for (k, &xv) in xr.iter().enumerate() {
                let cr = &ct[k * padded + j0..k * padded + j0 + L];
                for (a, &cv) in sums.iter_mut().zip(cr) {
                    *a += fastmath::pow_abs_nz::<FMA>(xv - cv, p);
                }
                if j0 > 0 && k % 4 == 3 && k + 1 < d && sums.iter().all(|&v| v > best) {
                    abandoned = true;
                    break;
                }
            }
            if abandoned {
                continue;
            }
            for (l, &v) in sums.iter().enumerate().take(nc - j0.min(nc)) {
                let j = j0 + l;
                if j == 0 {
                    best = v;
                } else if v < best {
                    (best, best_j) = (v, j);
                }
            }
        }
        idx.push(best_j);
    }
    idx
}

/// Nearest of 2..255 random rows, then a random linear map of that centre.
fn discretization(ctx: &mut Ctx, x: &Mat, out: usize) -> Mat {
    let hi = x.rows.min(ctx.cfg.mechanism.max_discretization_cardinality);
    let n_centers = if x.rows < 2 { 1 } else { ctx.int("rand_discr_n_centers", 2, hi.max(3), true, Mode::Meta) };
    let (centers, idx) = nearest_centre(ctx, x, n_centers, "cat_disc_p");
    let targets = linear(ctx, &centers, out);
    Mat::from_vec(x.rows, out, idx.iter().flat_map(|&i| targets.row(i).iter().copied()).collect())
}

/// x^T M_o x over at most 20 random inputs plus a constant, for each output o.
fn quadratic(ctx: &mut Ctx, x: &Mat, out: usize) -> Mat {
    let idx: Vec<usize> = if x.cols > 20 { ctx.rng.permutation(x.cols)[..20].to_vec() } else { (0..x.cols).collect() };
    let k = idx.len() + 1;
    let mut z = Mat::zeros(x.rows, k);
    for r in 0..x.rows {
        for (j, &c) in idx.iter().enumerate() {
            z.data[r * k + j] = x.at(r, c);
        }
        z.data[r * k + k - 1] = 1.0;
    }
    let t = random_matrix(ctx, out, k, k); // out x (k x k), M_o[i][j] at o*k*k + i*k + j
    // T[r, o*k + j] = sum_i z[r, i] M_o[i][j]; then out[r, o] = sum_j T[r, o*k + j] z[r, j].
    let mut w = vec![0.0f32; out * k * k]; // (out*k) x k weight: row (o, j), column i
    for o in 0..out {
        for i in 0..k {
            for j in 0..k {
                w[(o * k + j) * k + i] = t[o * k * k + i * k + j];
            }
        }
    }
    let tz = z.matmul_t(&w, out * k);
    let mut res = Mat::zeros(x.rows, out);
    for r in 0..x.rows {
        let zr = z.row(r);
        let tr = tz.row(r);
        for o in 0..out {
            res.data[r * out + o] = tr[o * k..(o + 1) * k].iter().zip(zr).map(|(a, b)| a * b).sum();
        }
    }
    res
}

/// Random Fourier features of a random stationary kernel (product or rotated), 256 frequencies.
fn gp(ctx: &mut Ctx, x: &Mat, out: usize) -> Mat {
    const P: usize = 256;
    let a = ctx.log_num("gp_a", 2.0, 20.0);
    let d = x.cols;
    let invcdf = |u: f64| ((u.clamp(1e-6, 1.0 - 1e-6)).powf(1.0 / (1.0 - a)) - 1.0) as f32;
    // freqs stored transposed, (P x d), so x @ freqs is a matmul_t.
    let freqs_t = if ctx.boolean("generalized_gp_use_product_kernel") {
        let mut product = vec![0.0f32; P * d];
        for i in 0..d {
            for p in 0..P {
                product[p * d + i] = invcdf(ctx.rng.uniform());
            }
        }
        product
    } else {
        let radial: Vec<f32> = (0..P).map(|_| invcdf(ctx.rng.uniform())).collect();
        let dirs = ctx.gauss_vec(d * P); // (d x P)
        let mut f = vec![0.0f32; d * P];
        for p in 0..P {
            let norm = (0..d).map(|i| dirs[i * P + p] * dirs[i * P + p]).sum::<f32>().sqrt().max(1e-30);
            for i in 0..d {
                f[i * P + p] = dirs[i * P + p] * radial[p] / norm;
            }
        }
        let mut tfm = ctx.gauss_vec(d * d);
        let w = random_weights(ctx, 1, d);
        let scale = ctx.log_num("rand_gen_gp_scale", 0.5, 10.0) as f32;
        for i in 0..d {
            for j in 0..d {
                tfm[i * d + j] *= w[i] * scale;
            }
        }
        // freqs = tfm @ f, (d x P), accumulated row by row so the inner loop runs over
        // contiguous frequencies, then stored transposed. Each entry sums over j in
        // ascending order either way.
        let mut freqs = vec![0.0f32; d * P];
        for i in 0..d {
            let row = &mut freqs[i * P..(i + 1) * P];
            for j in 0..d {
                let t = tfm[i * d + j];
                if t != 0.0 {
                    for (acc, &fv) in row.iter_mut().zip(&f[j * P..(j + 1) * P]) {
                        *acc += t * fv;
                    }
                }
            }
        }
        transpose(&freqs, d, P)
    };
    let bias: Vec<f32> = (0..P).map(|_| (2.0 * std::f64::consts::PI * ctx.rng.uniform()) as f32).collect();
    let mut weights = ctx.gauss_vec(P * out); // (P x out)
    weights.iter_mut().for_each(|v| *v /= (P as f32).sqrt());
    let mut phase = x.matmul_t(&freqs_t, P);
    cos_rows(&mut phase.data, &bias);
    phase.matmul_t(&transpose(&weights, P, out), out)
}

/// `v = cos(v + bias)` over rows of `bias.len()` phases.
fn cos_rows(data: &mut [f32], bias: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the feature the function is compiled for.
            unsafe { cos_rows_avx512(data, bias) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            unsafe { cos_rows_avx2(data, bias) };
            return;
        }
    }
    cos_rows_generic(data, bias);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn cos_rows_avx512(data: &mut [f32], bias: &[f32]) {
    cos_rows_generic(data, bias);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn cos_rows_avx2(data: &mut [f32], bias: &[f32]) {
    cos_rows_generic(data, bias);
}

#[inline(always)]
fn cos_rows_generic(data: &mut [f32], bias: &[f32]) {
    for row in data.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        if row.iter().any(|v| v.abs() >= 1e15) {
            row.iter_mut().for_each(|v| *v = fastmath::cos(*v)); // rare: libm for huge phases
        } else {
            row.iter_mut().for_each(|v| *v = fastmath::cos_reduced(*v));
        }
    }
}

/// Soft assignment to random centres (EM-style responsibilities), then a random linear map.
fn em_assignment(ctx: &mut Ctx, x: &Mat, out: usize) -> Mat {
    let n_ind = ctx.int("random_em_components", 2, 16usize.max(2 * out) + 1, true, Mode::Meta);
    let rows: Vec<usize> = (0..n_ind).map(|_| ctx.rng.below(x.rows as u64) as usize).collect();
    let mut centers = x.take_rows(&rows);
    for v in centers.data.iter_mut() {
        *v += ctx.gauss();
    }
    let std_factor = ctx.num("gen_em_assignment_std_factor", 0.0, 1.0, false, Mode::Meta, false) as f32;
    let stds: Vec<f32> = (0..n_ind).map(|_| (std_factor * ctx.gauss()).exp()).collect();
    let p = ctx.log_num("gen_em_assignment_p_inv", 1.0, 4.0) as f32;
    let q = ctx.num("gen_em_assignment_q", 1.0, 2.0, false, Mode::Meta, false) as f32;
    let d = lp_pow_dists(x, &centers, p);
    let half_ln_2pi = 0.5 * (2.0 * std::f32::consts::PI).ln();
    let konst: Vec<f32> = stds.iter().map(|s| -half_ln_2pi - s.ln()).collect();
    let inv_std: Vec<f32> = stds.iter().map(|s| 1.0 / s).collect();
    let mut logits = Mat::from_vec(x.rows, n_ind, d);
    for row in logits.data.chunks_exact_mut(n_ind) {
        // logit = const - (dist / std)^q with dist = (sum |.|^p)^(1/p), branch-free so it vectorises.
        for ((v, k), is) in row.iter_mut().zip(&konst).zip(&inv_std) {
            let dist = fastmath::pow_abs_nz::<false>(*v, 1.0 / p);
            *v = k - fastmath::pow_abs_nz::<false>(dist * is, q);
        }
    }
    apply_fixed(23, &mut logits); // row softmax
    linear(ctx, &logits, out)
}

#[cfg(test)]
mod lp_tests {
    use super::*;

    #[test]
    fn lp_argmin_matches_the_argmin_of_all_distances() {
        let mut r = crate::rng::Rng::from_state([5, 6, 7, 8]);
        for &(n, nc, d, p) in &[
            (300usize, 173usize, 43usize, 1.7f32),
            (200, 9, 5, 0.6),
            (100, 2, 1, 3.9),
            (64, 31, 12, 2.0),
            (50, 17, 7, 1.0),
            (80, 40, 20, 1.2),
        ] {
            let mut xs = vec![0.0f32; n * d];
            r.fill_normal(&mut xs, 0.0, 1.0);
            // Repeated rows as centres make exact ties, which must go to the first centre.
            let x = Mat::from_vec(n, d, xs);
            let mut rows: Vec<usize> = (0..nc).map(|i| (i * 7) % n).collect();
            rows[nc - 1] = rows[0];
            let c = x.take_rows(&rows);
            let want = argmin_rows(&lp_pow_dists(&x, &c, p), nc);
            assert_eq!(lp_argmin(&x, &c, p), want, "n={n} nc={nc} d={d} p={p}");
            assert!(want.iter().all(|&j| j != nc - 1), "ties go to the first of equal centres");
        }
    }

    #[test]
    fn avx512_builds_give_the_avx2_bits() {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if !(has!("avx512f") && has!("avx2") && has!("fma")) {
                return; // nothing to compare on this CPU
            }
            let mut r = crate::rng::Rng::from_state([9, 10, 11, 12]);
            // 37 centres and 1003 phases: remainders after 8- and 16-lane vectors.
            let (n, nc, d) = (61usize, 37usize, 13usize);
            let mut xs = vec![0.0f32; n * d];
            r.fill_normal(&mut xs, 0.0, 2.0);
            let x = Mat::from_vec(n, d, xs);
            let c = x.take_rows(&(0..nc).map(|i| (i * 5) % n).collect::<Vec<_>>());
            let ct = transpose(&c.data, nc, d);
            let bits = crate::tests::f32_bits;
            for p in [0.7f32, 1.0, 2.0, 3.3] {
                let (mut a, mut b) = (vec![0.0f32; n * nc], vec![0.0f32; n * nc]);
                // SAFETY: the CPU has every feature checked above.
                unsafe {
                    lp_pow_dists_fma(&x, &ct, nc, p, &mut a);
                    lp_pow_dists_avx512(&x, &ct, nc, p, &mut b);
                }
                assert_eq!(bits(&a), bits(&b), "lp_pow_dists, p = {p}");
                let pad = |lanes: usize| {
                    let padded = nc.div_ceil(lanes) * lanes;
                    let rows: Vec<usize> = (0..padded).map(|j| j.min(nc - 1)).collect();
                    (transpose(&c.take_rows(&rows).data, padded, d), padded)
                };
                let ((c8, p8), (c16, p16)) = (pad(LANES), pad(WIDE_LANES));
                // SAFETY: as above.
                let (i8, i16) = unsafe { (lp_argmin_fma(&x, &c8, nc, p8, p), lp_argmin_avx512(&x, &c16, nc, p16, p)) };
                assert_eq!(i8, i16, "lp_argmin, p = {p}");
            }
            let mut phases = vec![0.0f32; 1003];
            r.fill_normal(&mut phases, 0.0, 30.0);
            phases[5] = 3e15; // the libm row
            let bias: Vec<f32> = (0..17).map(|i| i as f32 * 0.37).collect();
            let phases = &phases[..59 * 17];
            let (mut a, mut b, mut g) = (phases.to_vec(), phases.to_vec(), phases.to_vec());
            // SAFETY: as above.
            unsafe {
                cos_rows_avx2(&mut a, &bias);
                cos_rows_avx512(&mut b, &bias);
            }
            cos_rows_generic(&mut g, &bias);
            assert_eq!(bits(&a), bits(&b), "cos_rows");
            assert_eq!(bits(&a), bits(&g), "cos_rows, portable");
        }
    }

    /// Timing of the L_p distances at the graph prior's term-weighted typical size (1024 rows,
    /// 173 centres, 43 inputs), release: `cargo test --release -p tabfm-core lp_timing --
    /// --ignored --nocapture`.
    #[test]
    #[ignore]
    fn lp_timing() {
        let (n, nc, d) = (1024usize, 173usize, 43usize);
        let mut r = crate::rng::Rng::from_state([1, 2, 3, 4]);
        let mut xs = vec![0.0f32; n * d];
        r.fill_normal(&mut xs, 0.0, 1.0);
        let x = Mat::from_vec(n, d, xs);
        let c = x.take_rows(&(0..nc).collect::<Vec<_>>());
        let ns_per_term = |f: &dyn Fn()| {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                f();
                best = best.min(t.elapsed().as_secs_f64());
            }
            best * 1e9 / (n * nc * d) as f64
        };
        for p in [1.7f32, 0.8, 3.3] {
            let all = ns_per_term(&|| drop(std::hint::black_box(lp_pow_dists(&x, &c, p))));
            let argmin = ns_per_term(&|| drop(std::hint::black_box(lp_argmin(&x, &c, p))));
            // Checked as well as timed: the pruned argmin is the argmin of all distances, and
            // the centres (rows 0..nc of x) are their own nearest centres.
            let nearest = lp_argmin(&x, &c, p);
            assert_eq!(nearest, argmin_rows(&lp_pow_dists(&x, &c, p), nc), "p={p}");
            assert!((0..nc).all(|r| nearest[r] == r), "p={p}");
            println!("p={p}: {all:.3} ns per term, argmin {argmin:.3}");
        }
    }
}

#[cfg(test)]
mod transpose_tests {
    use super::transpose;

    #[test]
    fn transpose_matches_the_definition() {
        for (rows, cols) in [(0, 3), (1, 1), (1, 7), (15, 1), (16, 3), (17, 5), (1024, 43), (33, 16)] {
            let v: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
            let t = transpose(&v, rows, cols);
            assert_eq!(t.len(), v.len());
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(t[c * rows + r], v[r * cols + c], "({rows} x {cols}) at ({r}, {c})");
                }
            }
        }
    }
}
