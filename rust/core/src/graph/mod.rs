//! `graph_scm`: datasets from a sampled latent causal DAG (the TabICLv2 prior), with noise
//! families, shift, missingness, lineage and structural / learnability filters.
//!
//! Per dataset attempt (keyed by seed, batch index, position and attempt): categorical
//! layout, Cauchy DAG, feature and target nodes (checked by the structural filter), a forward
//! pass over the nodes that feed a feature or the target, TabICL's post-processing (4-sigma
//! clamp, scaling, column and class permutations), the validity checks and the optional
//! learnability test; missingness is applied last, to the accepted dataset.

pub mod config;
pub mod func;
pub mod layout;
pub mod node;
pub mod sampler;

use crate::batch::{DatasetMeta, class_sanity_check, count_labels, non_constant_columns};
use crate::config::PriorConfig;
use crate::learn::{ExtraTreesParams, learnability};
use crate::missing::{Mechanism, apply_missingness};
use crate::reg2cls::clamp_and_scale;
use crate::rng::{Key, domain};

use config::{FAMILIES, GraphConfig};
use func::Mat;
use layout::{Reject, Structure, categorical_sizes, sample_structure};
use node::{NodeOut, Want, eval_node};
use sampler::Ctx;

/// Per-node record of the lineage.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: usize,
    pub composition: String,
    pub families: Vec<&'static str>,
}

/// What generated one dataset, for analysis and for the deferred filters.
#[derive(Clone, Debug, Default)]
pub struct Lineage {
    pub n_nodes: usize,
    pub parents: Vec<Vec<usize>>,
    pub target_node: usize,
    /// Node of each emitted feature column (after permutation and constant-column removal).
    pub feature_nodes: Vec<usize>,
    /// Emitted columns on the target node or one of its ancestors.
    pub relevant_features: Vec<usize>,
    pub nodes: Vec<NodeInfo>,
    pub noise_family: &'static str,
    pub missing_mechanism: &'static str,
    pub missing_rate_requested: f64,
    pub missing_rate_realised: f64,
    /// Columns MAR kept fully observed.
    pub missing_always_observed: Vec<usize>,
    pub shift_mode: String,
    pub graph_scale: f64,
    pub mechanism_scale: f64,
    pub variance_scale: f64,
    pub edge_odds_multiplier: f64,
    pub noise_variance_multiplier: f64,
    /// Probability mass of the non-linear families under the (tilted) family distribution.
    pub mechanism_nonlinear_mass: f64,
    /// Learnability p-value and score (1 - model MSE / baseline MSE) when the filter ran.
    pub learnability: Option<(f64, f64)>,
}

/// A rejected attempt: the reason and, when it got that far, the dataset (kept in case every
/// attempt fails).
type Rejected = (Reject, Option<Box<Attempt>>);

/// One dataset attempt, before it is written into the batch.
struct Attempt {
    x: Vec<f32>,
    y: Vec<f32>,
    d: usize,
    categorical: Vec<usize>,
    lineage: Lineage,
}

/// Runs the forward pass over the nodes that feed a feature or the target.
fn forward(
    ctx: &mut Ctx,
    s: &Structure,
    rows: usize,
    sizes: &[usize],
    target: Want,
) -> (Vec<Option<Vec<f32>>>, Vec<f32>, Vec<NodeInfo>) {
    let n = s.dag.n();
    let mut on_node: Vec<Vec<(usize, Want)>> = vec![Vec::new(); n];
    for (i, &v) in s.feature_node.iter().enumerate() {
        let want = if sizes[i] > 0 { Want::Categorical(sizes[i]) } else { Want::Numeric };
        on_node[v].push((i, want));
    }
    // Prune nodes that feed neither a feature nor the target.
    let mut needed = vec![false; n];
    for j in (0..n).rev() {
        needed[j] |= !on_node[j].is_empty() || j == s.target;
        if needed[j] {
            for &p in &s.dag.parents[j] {
                needed[p] = true;
            }
        }
    }
    let mut latents: Vec<Option<Mat>> = vec![None; n];
    let mut columns: Vec<Option<Vec<f32>>> = vec![None; sizes.len()];
    let mut y = Vec::new();
    let mut infos = Vec::new();
    for j in 0..n {
        if !needed[j] {
            continue;
        }
        let before = ctx.families.len();
        let parents: Vec<&Mat> = s.dag.parents[j].iter().map(|&p| latents[p].as_ref().expect("topological")).collect();
        let out: NodeOut = eval_node(ctx, rows, &parents, &on_node[j], (j == s.target).then_some(target));
        for (i, col) in out.features {
            columns[i] = Some(col);
        }
        if let Some(t) = out.target {
            y = t;
        }
        infos.push(NodeInfo { node: j, composition: out.composition, families: ctx.families[before..].to_vec() });
        latents[j] = Some(out.latent);
    }
    (columns, y, infos)
}

fn attempt(
    g: &GraphConfig,
    ctx: &mut Ctx,
    rows: usize,
    train_size: usize,
    num_features: usize,
    num_classes: Option<usize>,
) -> Result<Attempt, Rejected> {
    let sizes = categorical_sizes(ctx, num_features);
    let s = sample_structure(ctx, num_features).map_err(|r| (r, None))?;
    let target = match num_classes {
        Some(k) => Want::Categorical(k),
        None => Want::Numeric,
    };
    let (columns, y_raw, infos) = forward(ctx, &s, rows, &sizes, target);
    // X = [categorical codes, numeric columns], each clamped at 4 sigma and standardised.
    let mut order: Vec<usize> = (0..num_features).filter(|&i| sizes[i] > 0).collect();
    order.extend((0..num_features).filter(|&i| sizes[i] == 0));
    let mut cols: Vec<Vec<f64>> = order
        .iter()
        .map(|&i| columns[i].as_ref().expect("every feature is emitted").iter().map(|&v| f64::from(v)).collect())
        .collect();
    cols.iter_mut().for_each(|c| clamp_and_scale(c, 4.0));
    let perm = ctx.rng.permutation(num_features);
    let mut y: Vec<f32> = match num_classes {
        None => {
            let mut v: Vec<f64> = y_raw.iter().map(|&v| f64::from(v)).collect();
            clamp_and_scale(&mut v, 4.0);
            v.iter().map(|&v| v as f32).collect()
        }
        Some(k) => {
            let class_perm = ctx.rng.permutation(k);
            y_raw.iter().map(|&v| class_perm[(v as usize).min(k - 1)] as f32).collect()
        }
    };
    let mut x = vec![0.0f32; rows * num_features];
    for (j, &src) in perm.iter().enumerate() {
        for r in 0..rows {
            x[r * num_features + j] = cols[src][r] as f32;
        }
    }
    let feature_of_col: Vec<usize> = perm.iter().map(|&p| order[p]).collect();
    let probs = g.family_probs();
    let mut lineage = Lineage {
        n_nodes: s.dag.n(),
        parents: s.dag.parents.clone(),
        target_node: s.target,
        nodes: infos,
        noise_family: ctx.noise.name(),
        missing_mechanism: "none",
        shift_mode: if g.shift.mode.is_empty() { "off".into() } else { g.shift.mode.clone() },
        graph_scale: g.shift.graph_scale,
        mechanism_scale: g.shift.mechanism_scale,
        variance_scale: g.shift.variance_scale,
        edge_odds_multiplier: 2f64.powf(g.shift.graph_scale),
        noise_variance_multiplier: 2f64.powf(g.shift.variance_scale),
        mechanism_nonlinear_mass: 1.0 - probs[FAMILIES.iter().position(|f| *f == "linear").expect("linear")],
        ..Default::default()
    };
    let finite = crate::fastmath::all_finite(&x) && crate::fastmath::all_finite(&y);
    let keep = if finite { non_constant_columns(&x, rows, num_features) } else { Vec::new() };
    let d = keep.len();
    let mut xk: Vec<f32> = Vec::with_capacity(rows * d);
    for r in 0..rows {
        xk.extend(keep.iter().map(|&c| x[r * num_features + c]));
    }
    lineage.feature_nodes = keep.iter().map(|&c| s.feature_node[feature_of_col[c]]).collect();
    lineage.relevant_features =
        keep.iter().enumerate().filter(|(_, c)| s.relevant[feature_of_col[**c]]).map(|(j, _)| j).collect();
    let categorical: Vec<usize> =
        keep.iter().enumerate().filter(|(_, c)| sizes[feature_of_col[**c]] > 0).map(|(j, _)| j).collect();
    let mut out = Attempt { x: xk, y: Vec::new(), d, categorical, lineage };
    if !finite {
        out.x = vec![0.0; rows * num_features.max(1)];
        out.y = vec![-100.0; rows];
        return Err((Reject::Nonfinite, Some(Box::new(out))));
    }
    if d == 0 {
        out.y = y;
        return Err((Reject::AllConstantFeatures, Some(Box::new(out))));
    }
    // The structural thresholds hold for the emitted columns too: constant relevant columns
    // were dropped above, which can leave the target without informative features.
    let f = &g.filter;
    let need = f.min_target_relevant_features.max((f.min_target_relevant_fraction * d as f64).ceil() as usize);
    let relevant = out.lineage.relevant_features.len();
    if relevant < need {
        out.y = y;
        let reason = if relevant == 0 {
            Reject::NoFeatureTargetPath
        } else if relevant < f.min_target_relevant_features {
            Reject::InsufficientRelevantCount
        } else {
            Reject::InsufficientRelevantFraction
        };
        return Err((reason, Some(Box::new(out))));
    }
    if num_classes.is_none() {
        // Standardisation divides by max(std, 1e-6): a spread below that leaves std << 1.
        let n = y.len().max(1) as f64;
        let mean = y.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = y.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        if var < 0.25 {
            out.y = y;
            return Err((Reject::ConstantTarget, Some(Box::new(out))));
        }
    }
    if num_classes.is_some() && !class_sanity_check(&mut ctx.rng, &mut out.x, &mut y, d, train_size) {
        out.y = y;
        return Err((Reject::InvalidClassSplit, Some(Box::new(out))));
    }
    out.y = y;
    if f.learnability || f.remove_trivial {
        let params =
            ExtraTreesParams { n_estimators: f.n_estimators, max_depth: f.max_depth, ..ExtraTreesParams::default() };
        let classes = num_classes; // labels are class ids below the requested count
        let l = learnability(&mut ctx.rng, &out.x, rows, d, &out.y, classes, &params, f.n_bootstrap);
        out.lineage.learnability = Some((l.pvalue, l.score()));
        if f.learnability && l.pvalue >= f.learnability_pvalue {
            return Err((Reject::Unpredictable, Some(Box::new(out))));
        }
        if f.remove_trivial && l.model_rmse <= f.trivial_threshold * l.baseline_rmse {
            return Err((Reject::Trivial, Some(Box::new(out))));
        }
    }
    Ok(out)
}

/// Generates dataset `pos` of batch `index` into its slot (`x_out`: t_max x f, `y_out`: t_max).
pub fn generate(
    cfg: &PriorConfig,
    g: &GraphConfig,
    index: u64,
    pos: usize,
    plan: &crate::batch::DatasetPlan,
    f: usize,
    x_out: &mut [f32],
    y_out: &mut [f32],
) -> DatasetMeta {
    let rows = plan.seq_len;
    let mut rejections = [0usize; Reject::ALL.len()];
    let mut last: Option<Attempt> = None;
    let mut attempts = 0;
    let mut valid = false;
    for a in 0..g.filter.max_attempts {
        attempts = a + 1;
        let rng = Key::new(cfg.seed, [domain::DATASET, index, pos as u64, a as u64]).rng();
        let mut ctx = Ctx::new(rng, g);
        match attempt(g, &mut ctx, rows, plan.train_size, plan.num_features, plan.num_classes) {
            Ok(mut out) => {
                let mi = &g.missingness;
                if mi.rate > 0.0 {
                    let mech = match mi.mechanism.as_str() {
                        "mar" => Mechanism::Mar {
                            observed_fraction: mi.mar_observed_fraction,
                            logit_scale: mi.mar_logit_scale,
                        },
                        "mnar" => Mechanism::Mnar { logit_scale: mi.mnar_logit_scale },
                        _ => Mechanism::Mcar,
                    };
                    let rep = apply_missingness(&mut ctx.rng, &mut out.x, rows, out.d, mi.rate, &mech);
                    out.lineage.missing_mechanism = rep.mechanism;
                    out.lineage.missing_rate_requested = rep.requested_rate;
                    out.lineage.missing_rate_realised = rep.realised_rate;
                    out.lineage.missing_always_observed = rep.always_observed;
                }
                last = Some(out);
                valid = true;
                break;
            }
            Err((reason, out)) => {
                rejections[reason as usize] += 1;
                if let Some(o) = out {
                    last = Some(*o);
                }
            }
        }
    }
    // Every attempt failed: the last generated attempt is kept, marked invalid (or an all-zero
    // dataset when not one got past the structural checks).
    let out = last.unwrap_or_else(|| Attempt {
        x: vec![0.0; rows],
        y: vec![if plan.num_classes.is_some() { -100.0 } else { 0.0 }; rows],
        d: 0,
        categorical: Vec::new(),
        lineage: Lineage::default(),
    });
    let d = out.d.min(f);
    if d > 0 {
        for r in 0..rows {
            x_out[r * f..r * f + d].copy_from_slice(&out.x[r * out.d..r * out.d + d]);
        }
    }
    y_out[..rows].copy_from_slice(&out.y[..rows]);
    DatasetMeta {
        prior: "graph_scm",
        group: plan.group,
        num_features: plan.num_features,
        d,
        num_classes: plan.num_classes,
        realised_classes: if plan.num_classes.is_some() { count_labels(&out.y) } else { 0 },
        categorical: out.categorical,
        attempts,
        valid,
        rejections: Reject::ALL.iter().zip(rejections).filter(|(_, c)| *c > 0).map(|(r, c)| (r.name(), c)).collect(),
        lineage: Some(Box::new(out.lineage)),
        ..Default::default()
    }
}
