//! One node of the DAG: its latent matrix from the parents (or from random points), the
//! per-node post-processing, and the converters that read feature and target columns off
//! slices of the latent (and write a transformed slice back for the children).

use super::config::{AGGREGATIONS, CATEGORICAL_MODES};
use super::func::{self, Mat};
use super::sampler::{Ctx, Mode};

/// What a converter emits from its slice of the latent.
#[derive(Clone, Copy, Debug)]
pub enum Want {
    Numeric,
    /// A categorical column (or class label) with at most this many values.
    Categorical(usize),
}

enum Converter {
    Numeric { kumaraswamy: bool },
    Categorical { mode: usize, n_values: usize, width: usize },
}

impl Converter {
    fn sample(ctx: &mut Ctx, want: Want, is_target: bool) -> Converter {
        match want {
            Want::Numeric => {
                let m = &ctx.cfg.mechanism;
                let allowed = m.kumaraswamy_warping && (m.warp_target || !is_target);
                let kumaraswamy = allowed && ctx.choice("num_conv_mode", 2) == 1;
                Converter::Numeric { kumaraswamy }
            }
            Want::Categorical(n_values) => {
                let modes = &ctx.cfg.mechanism.categorical_modes;
                let name = modes[ctx.choice("cat_mode", modes.len())].clone();
                let mode = CATEGORICAL_MODES.iter().position(|m| *m == name).expect("validated");
                let width = if name.starts_with("softmax") || ctx.boolean("cat_use_all_features") {
                    n_values
                } else {
                    ctx.int("cat_n_features", 1, n_values, true, Mode::Local)
                };
                Converter::Categorical { mode, n_values, width }
            }
        }
    }

    fn width(&self) -> usize {
        match self {
            Converter::Numeric { .. } => 1,
            Converter::Categorical { width, .. } => *width,
        }
    }

    /// Converts `slice` (rows x width): returns the emitted column and replaces `slice` by
    /// what the children see.
    fn apply(&self, ctx: &mut Ctx, slice: &mut Mat) -> Vec<f32> {
        match *self {
            Converter::Numeric { kumaraswamy } => {
                if !kumaraswamy {
                    return slice.data.clone();
                }
                let mut warped = slice.clone();
                func::kumaraswamy(ctx, &mut warped);
                if ctx.cfg.mechanism.warp_emitted_only {
                    return warped.data;
                }
                // TabICL 2.2.0's data: its converter returns (warped, raw view), and the view
                // then aliases the warped node values, so column and children are both warped.
                *slice = warped;
                slice.data.clone()
            }
            Converter::Categorical { mode, n_values, width } => {
                let softmax = mode >= 4;
                let (disc, idx) = if softmax {
                    softmax_discretize(ctx, slice, n_values)
                } else {
                    let (centers, idx) = func::nearest_centre(ctx, slice, n_values, "cat_disc_p");
                    let disc = Mat::from_vec(
                        slice.rows,
                        width,
                        idx.iter().flat_map(|&i| centers.row(i).iter().copied()).collect(),
                    );
                    (disc, idx)
                };
                match CATEGORICAL_MODES[mode] {
                    "neighbor_id" | "softmax_id" => {}
                    "neighbor_disc" | "softmax_disc" => *slice = disc,
                    "neighbor_func" => *slice = func::cheap_function(ctx, &disc, width),
                    _ => {
                        for (r, &i) in idx.iter().enumerate() {
                            slice.data[r * width..(r + 1) * width].iter_mut().for_each(|v| *v = i as f32);
                        }
                    }
                }
                idx.iter().map(|&i| i as f32).collect()
            }
        }
    }
}

/// Categories sampled from softmax(a * standardised slice + log-weights); the children see a
/// random embedding of the sampled category.
fn softmax_discretize(ctx: &mut Ctx, slice: &Mat, n_values: usize) -> (Mat, Vec<usize>) {
    let (embeddings, _) = func::random_points(ctx, n_values, n_values);
    let mut z = slice.clone();
    func::standardize(&mut z);
    let w = func::random_weights(ctx, 1, slice.cols);
    let bias: Vec<f64> = w.iter().map(|&v| (f64::from(v) + 1e-4).ln()).collect();
    let factor = ctx.log_num("softmax_disc_factor", 0.1, 10.0);
    let mut idx = Vec::with_capacity(slice.rows);
    let mut p = vec![0.0f64; slice.cols];
    for r in 0..slice.rows {
        let row = z.row(r);
        for (c, pc) in p.iter_mut().enumerate() {
            let l = factor * f64::from(row[c]) + bias[c];
            *pc = if l.is_finite() { l } else { 0.0 };
        }
        let max = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        p.iter_mut().for_each(|v| *v = (*v - max).exp());
        idx.push(ctx.rng.categorical(&p));
    }
    let disc = embeddings.take_rows(&idx);
    (disc, idx)
}

/// A node's outputs: its latent (for the children), emitted feature columns, the target.
pub struct NodeOut {
    pub latent: Mat,
    pub features: Vec<(usize, Vec<f32>)>,
    pub target: Option<Vec<f32>>,
    /// "root:<points>", "concat" or "stack:<aggregation>".
    pub composition: String,
}

/// Evaluates one node. `features` lists (feature index, what to emit); `target` is set when
/// the target is read off this node.
pub fn eval_node(
    ctx: &mut Ctx,
    rows: usize,
    parents: &[&Mat],
    features: &[(usize, Want)],
    target: Option<Want>,
) -> NodeOut {
    let mut convs: Vec<(Option<usize>, Converter)> =
        features.iter().map(|&(i, w)| (Some(i), Converter::sample(ctx, w, false))).collect();
    if let Some(w) = target {
        convs.push((None, Converter::sample(ctx, w, true)));
    }
    let width = ctx.int("node_n_latent_features", 1, 32, true, Mode::Meta)
        + convs.iter().map(|(_, c)| c.width()).sum::<usize>();
    let (mut x, composition) = if parents.is_empty() {
        let (x, kind) = func::random_points(ctx, rows, width);
        (x, format!("root:{kind}"))
    } else {
        multi_function(ctx, parents, width)
    };
    let m = &ctx.cfg.mechanism;
    let (importance, l2, node_imp, noise) =
        (m.node_feature_importance, m.node_l2_norm, m.node_importance, m.additive_node_noise);
    if importance {
        func::standardize(&mut x);
        let mut w = func::random_weights(ctx, 1, width);
        let rms = (w.iter().map(|v| v * v).sum::<f32>() / width as f32).sqrt().max(1e-30);
        w.iter_mut().for_each(|v| *v /= rms);
        for row in x.data.chunks_exact_mut(width) {
            row.iter_mut().zip(&w).for_each(|(a, b)| *a *= b);
        }
    }
    if l2 {
        func::l2_normalize(&mut x);
    }
    let mut out = NodeOut { latent: Mat::zeros(0, 0), features: Vec::new(), target: None, composition };
    let mut start = 0;
    for (feature, conv) in &convs {
        let w = conv.width();
        let cols: Vec<usize> = (start..start + w).collect();
        let mut slice = x.take_cols(&cols);
        let column = conv.apply(ctx, &mut slice);
        for r in 0..rows {
            x.data[r * width + start..r * width + start + w].copy_from_slice(slice.row(r));
        }
        match feature {
            Some(i) => out.features.push((*i, column)),
            None => out.target = Some(column),
        }
        start += w;
    }
    if noise {
        let sigma = ctx.log_num("gaussian_noise_sigma", 1e-5, 1.0) as f32;
        let mut e = vec![0.0; x.data.len()];
        ctx.rng.fill_normal(&mut e, 0.0, sigma);
        x.data.iter_mut().zip(&e).for_each(|(a, b)| *a += b);
    }
    if node_imp {
        let s = ctx.log_num("node_importance", 0.1, 10.0) as f32;
        x.data.iter_mut().for_each(|v| *v *= s);
    }
    out.latent = x;
    out
}

/// Several parents: concatenate and apply one function, or one function per parent
/// aggregated by sum, product, max or logsumexp.
fn multi_function(ctx: &mut Ctx, parents: &[&Mat], width: usize) -> (Mat, String) {
    let comps = &ctx.cfg.mechanism.compositions;
    let concat = comps[ctx.choice("multi_function_func_type", comps.len())] == "concat";
    let rows = parents[0].rows;
    if concat {
        let total: usize = parents.iter().map(|p| p.cols).sum();
        let mut cat = Mat::zeros(rows, total);
        for r in 0..rows {
            let mut off = 0;
            for p in parents {
                cat.data[r * total + off..r * total + off + p.cols].copy_from_slice(p.row(r));
                off += p.cols;
            }
        }
        return (func::random_function(ctx, &cat, width), "concat".into());
    }
    let aggs = &ctx.cfg.mechanism.aggregations;
    let op = aggs[ctx.choice("aggregation_op_type", aggs.len())].clone();
    let op_idx = AGGREGATIONS.iter().position(|a| *a == op).expect("validated");
    let outs: Vec<Mat> = parents.iter().map(|p| func::random_function(ctx, p, width)).collect();
    let mut acc = outs[0].clone();
    match op_idx {
        0 => outs[1..].iter().for_each(|o| acc.data.iter_mut().zip(&o.data).for_each(|(a, b)| *a += b)),
        1 => outs[1..].iter().for_each(|o| acc.data.iter_mut().zip(&o.data).for_each(|(a, b)| *a *= b)),
        2 => outs[1..].iter().for_each(|o| acc.data.iter_mut().zip(&o.data).for_each(|(a, b)| *a = a.max(*b))),
        _ => {
            for (i, a) in acc.data.iter_mut().enumerate() {
                let max = outs.iter().map(|o| o.data[i]).fold(f32::NEG_INFINITY, f32::max);
                if max.is_finite() {
                    *a = max + outs.iter().map(|o| (o.data[i] - max).exp()).sum::<f32>().ln();
                } else {
                    *a = max;
                }
            }
        }
    }
    (acc, format!("stack:{op}"))
}
