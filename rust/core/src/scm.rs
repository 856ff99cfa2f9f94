//! The MLP and tree structural causal models: one forward pass gives raw (X, y).

use crate::activations::Activation;
use crate::causes::{CauseKind, sample_causes};
use crate::fastmath::all_finite;
use crate::hp::ScmHp;
use crate::linalg::{Blocks, linear_accumulate, linear_accumulate_blocks};
use crate::rng::Rng;
use crate::tree::{BoosterParams, fit_predict};

/// Raw output of one SCM forward pass, before `reg2cls`.
pub struct RawDataset {
    /// rows x cols, row-major.
    pub x: Vec<f32>,
    pub cols: usize,
    pub y: Vec<f32>,
    pub cause_kinds: Vec<CauseKind>,
    /// Activation names per hidden block (MLP) or tree sizes (tree) for diagnostics.
    pub layers: Vec<String>,
}

impl RawDataset {
    pub fn is_finite(&self) -> bool {
        all_finite(&self.x) && all_finite(&self.y)
    }
}

enum Noise {
    None,
    Scalar(f32),
    PerUnit(Vec<f32>),
}

impl Noise {
    fn draw(rng: &mut Rng, hp: &ScmHp, out: usize) -> Noise {
        if hp.pre_sample_noise_std {
            Noise::PerUnit((0..out).map(|_| (hp.noise_std * rng.normal()).abs() as f32).collect())
        } else {
            Noise::Scalar(hp.noise_std as f32)
        }
    }

    /// Overwrites `out` (rows x units) with this layer's noise.
    fn fill(&self, rng: &mut Rng, out: &mut [f32]) {
        match self {
            Noise::None => out.fill(0.0),
            Noise::Scalar(s) => rng.fill_normal(out, 0.0, *s),
            Noise::PerUnit(s) => {
                rng.fill_normal(out, 0.0, 1.0);
                for row in out.chunks_exact_mut(s.len()) {
                    for (v, sd) in row.iter_mut().zip(s) {
                        *v *= sd;
                    }
                }
            }
        }
    }

    /// Writes this layer's noise plus `bias` into `out`, the starting value of the layer's
    /// matrix product.
    fn init(&self, rng: &mut Rng, out: &mut [f32], bias: &[f32]) {
        self.fill(rng, out);
        for row in out.chunks_exact_mut(bias.len()) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }

    /// Adds this layer's noise to `h`.
    fn add(&self, rng: &mut Rng, h: &mut [f32]) {
        if matches!(self, Noise::None) {
            return;
        }
        let mut e = vec![0.0f32; h.len()];
        self.fill(rng, &mut e);
        for (v, e) in h.iter_mut().zip(&e) {
            *v += e;
        }
    }
}

struct Layer {
    act: Option<Activation>,
    w: Vec<f32>,
    /// Set when `w` is block-diagonal (block-wise dropout).
    blocks: Option<Blocks>,
    b: Vec<f32>,
    fan_in: usize,
    fan_out: usize,
    noise: Noise,
}

impl Layer {
    /// `out += input * w^T`, block by block where the weight is block-diagonal and the input
    /// finite (an infinite input must meet the zero weights, as in the dense product).
    fn accumulate(&self, input: &[f32], rows: usize, out: &mut [f32]) {
        match self.blocks {
            Some(b) if all_finite(input) => {
                linear_accumulate_blocks(input, rows, self.fan_in, &self.w, self.fan_out, b, out);
            }
            _ => linear_accumulate(input, rows, self.fan_in, &self.w, self.fan_out, out),
        }
    }
}

/// Weight init of one (out x in) matrix: block-wise dropout (returning its blocks) or
/// Bernoulli-masked normal.
fn init_weight(rng: &mut Rng, hp: &ScmHp, out: usize, inp: usize, first: bool) -> (Vec<f32>, Option<Blocks>) {
    let mut w = vec![0.0f32; out * inp];
    if hp.block_wise_dropout {
        let max_blocks = ((out.min(inp) as f64).sqrt().ceil() as i64).max(1);
        let n_blocks = rng.randint(1, max_blocks + 1) as usize;
        let (br, bc) = (out / n_blocks, inp / n_blocks);
        let keep = (n_blocks * br * bc) as f64 / (out * inp) as f64;
        let std = if keep > 0.0 { hp.init_std / keep.sqrt() } else { hp.init_std };
        for blk in 0..n_blocks {
            for r in blk * br..(blk + 1) * br {
                for c in blk * bc..(blk + 1) * bc {
                    w[r * inp + c] = (std * rng.normal()) as f32;
                }
            }
        }
        return (w, Some(Blocks { n: n_blocks, rows: br, cols: bc }));
    } else {
        // The first weight matrix is never dropped.
        let p = if first { 0.0 } else { hp.mlp_dropout_prob.min(0.99) };
        let std = hp.init_std / (1.0 - p).sqrt();
        rng.fill_normal(&mut w, 0.0, std as f32);
        if p > 0.0 {
            for v in &mut w {
                if rng.uniform() >= 1.0 - p {
                    *v = 0.0;
                }
            }
        }
    }
    (w, None)
}

/// PyTorch's default `Linear` bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
fn init_bias(rng: &mut Rng, out: usize, inp: usize) -> Vec<f32> {
    let bound = 1.0 / (inp.max(1) as f64).sqrt();
    (0..out).map(|_| rng.range(-bound, bound) as f32).collect()
}

/// The MLP SCM: causes -> Linear -> [activation, Linear, noise] x (layers - 1) (+ output block).
pub fn mlp_scm(rng: &mut Rng, rows: usize, num_features: usize, hp: &ScmHp) -> RawDataset {
    let num_outputs = 1;
    let (hidden, num_causes) = if hp.is_causal {
        (hp.hidden_dim.max(num_outputs + 2 * num_features), hp.num_causes.max(1))
    } else {
        (hp.hidden_dim.max(1), num_features)
    };
    let (causes, cause_kinds) = sample_causes(rng, rows, num_causes, hp.sampling, hp.pre_sample_cause_stats);

    let mut layers = Vec::with_capacity(hp.num_layers + 1);
    let (w, blocks) = init_weight(rng, hp, hidden, num_causes, true);
    layers.push(Layer {
        act: None,
        w,
        blocks,
        b: init_bias(rng, hidden, num_causes),
        fan_in: num_causes,
        fan_out: hidden,
        noise: Noise::None,
    });
    let n_blocks = hp.num_layers - 1 + usize::from(!hp.is_causal);
    for i in 0..n_blocks {
        let out = if !hp.is_causal && i + 1 == n_blocks { num_outputs } else { hidden };
        let act = hp.activations.draw(rng);
        let (w, blocks) = init_weight(rng, hp, out, hidden, false);
        let b = init_bias(rng, out, hidden);
        let noise = Noise::draw(rng, hp, out);
        layers.push(Layer { act: Some(act), w, blocks, b, fan_in: hidden, fan_out: out, noise });
    }

    // Forward. The causal variant keeps every block output to pick X and y from.
    // Every row starts as the bias (copied, so no zeroing pass first).
    let mut h = layers[0].b.repeat(rows);
    layers[0].accumulate(&causes, rows, &mut h);
    let mut kept: Vec<Vec<f32>> = Vec::new();
    let mut names = Vec::with_capacity(n_blocks);
    // The buffer of two layers back: `init` overwrites every value, so a layer of the same
    // width reuses it as it is, and only a new width costs a zeroed allocation.
    let mut spare: Vec<f32> = Vec::new();
    for layer in &layers[1..] {
        let act = layer.act.as_ref().expect("hidden blocks have an activation");
        names.push(act.name().to_string());
        act.apply(&mut h, rows, layer.fan_in);
        let mut next = std::mem::take(&mut spare);
        if next.len() != rows * layer.fan_out {
            next = vec![0.0f32; rows * layer.fan_out];
        }
        layer.noise.init(rng, &mut next, &layer.b);
        layer.accumulate(&h, rows, &mut next);
        if hp.is_causal {
            kept.push(next.clone());
        }
        spare = std::mem::replace(&mut h, next);
    }

    if !hp.is_causal {
        return RawDataset { x: causes, cols: num_features, y: h, cause_kinds, layers: names };
    }
    let (x, y) = pick_causal(rng, rows, num_features, hidden, &kept, hp);
    RawDataset { x, cols: num_features, y, cause_kinds: Vec::new(), layers: names }
}

/// Causal mode: X and y are columns of the concatenated block outputs.
fn pick_causal(
    rng: &mut Rng,
    rows: usize,
    nf: usize,
    hidden: usize,
    kept: &[Vec<f32>],
    hp: &ScmHp,
) -> (Vec<f32>, Vec<f32>) {
    let total = hidden * kept.len();
    let at = |r: usize, c: usize| kept[c / hidden][r * hidden + c % hidden];
    let perm: Vec<usize> = if hp.in_clique {
        let start = rng.randint(0, (total - 1 - nf) as i64 + 1) as usize;
        rng.permutation(1 + nf).into_iter().map(|i| start + i).collect()
    } else {
        rng.permutation(total - 1)
    };
    let mut ix: Vec<usize> = perm[1..=nf].to_vec();
    let iy = if hp.y_is_effect { total - 1 } else { perm[0] };
    if hp.sort_features {
        ix.sort_unstable();
    }
    let mut x = vec![0.0f32; rows * nf];
    let mut y = vec![0.0f32; rows];
    for r in 0..rows {
        for (j, &c) in ix.iter().enumerate() {
            x[r * nf + j] = at(r, c);
        }
        y[r] = at(r, iy);
    }
    (x, y)
}

/// Depth / size of one tree layer: min(base + floor(Exp(mean 1/lambda)), 4).
fn tree_size(rng: &mut Rng, base: usize, lambda: f64) -> usize {
    (base + (rng.exp1() / lambda).floor() as usize).min(4)
}

/// The sizes of one tree SCM: hidden width and (depth, estimators) per tree layer.
#[derive(Clone, Debug)]
pub struct TreeShape {
    pub hidden: usize,
    /// First layer (features -> hidden), then the hidden layers, then the output layer.
    pub layers: Vec<BoosterParams>,
}

impl TreeShape {
    /// Draws the shape: 1 or 2 hidden layers of width 3..9, and per layer
    /// depth `min(2 + floor(Exp(1/lambda)), 4)`, estimators `min(1 + floor(Exp(1/lambda)), 4)`.
    /// It has its own stream so a scheduler can know a dataset's cost before generating it.
    pub fn draw(rng: &mut Rng, depth_lambda: f64, n_est_lambda: f64) -> TreeShape {
        let num_layers = rng.randint(1, 3) as usize;
        let hidden = rng.randint(3, 10) as usize;
        let layers = (0..=num_layers)
            .map(|_| {
                let depth = tree_size(rng, 2, depth_lambda);
                let n_est = tree_size(rng, 1, n_est_lambda);
                BoosterParams::new(depth, n_est)
            })
            .collect();
        TreeShape { hidden, layers }
    }

    /// Relative fitting work per row: inputs x (outputs + 1) x depth x trees, summed.
    pub fn work_per_row(&self, num_features: usize) -> f64 {
        let n = self.layers.len();
        self.layers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let fan_in = if i == 0 { num_features } else { self.hidden };
                let fan_out = if i + 1 == n { 1 } else { self.hidden };
                (fan_in * (fan_out + 1) * p.max_depth * p.n_estimators) as f64
            })
            .sum()
    }
}

/// The tree SCM: boosted trees fitted to random targets shape y from the causes
/// (always non-causal; its depth and width come from `shape`, not from the sampled HPs).
pub fn tree_scm(rng: &mut Rng, rows: usize, num_features: usize, hp: &ScmHp, shape: &TreeShape) -> RawDataset {
    let (causes, cause_kinds) = sample_causes(rng, rows, num_features, hp.sampling, hp.pre_sample_cause_stats);
    let hidden = shape.hidden;
    let n = shape.layers.len();

    struct TreeLayer {
        params: BoosterParams,
        fan_in: usize,
        fan_out: usize,
        noise: Noise,
    }
    let layers: Vec<TreeLayer> = shape
        .layers
        .iter()
        .enumerate()
        .map(|(i, params)| {
            let fan_in = if i == 0 { num_features } else { hidden };
            let fan_out = if i + 1 == n { 1 } else { hidden };
            let noise = if i == 0 { Noise::None } else { Noise::draw(rng, hp, fan_out) };
            TreeLayer { params: params.clone(), fan_in, fan_out, noise }
        })
        .collect();

    let mut h: Vec<f32> = causes.iter().map(|v| if v.is_nan() { 0.0 } else { *v }).collect();
    let mut names = Vec::with_capacity(layers.len());
    for layer in &layers {
        let mut target = vec![0.0f32; rows * layer.fan_out];
        rng.fill_normal(&mut target, 0.0, 1.0);
        let mut next = fit_predict(&h, rows, layer.fan_in, &target, layer.fan_out, &layer.params);
        layer.noise.add(rng, &mut next);
        names.push(format!("trees(depth={}, n={})", layer.params.max_depth, layer.params.n_estimators));
        for v in &mut next {
            if v.is_nan() {
                *v = 0.0;
            }
        }
        h = next;
    }
    RawDataset { x: causes, cols: num_features, y: h, cause_kinds, layers: names }
}
