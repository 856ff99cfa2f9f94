//! Layout of one dataset: categorical columns and cardinalities, the Cauchy DAG, the
//! feature-to-node assignment and the target node, with the structural checks.

use super::config::GraphConfig;
use super::sampler::{Ctx, Mode};

/// Why a sampled structure (or a generated dataset) was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    /// No node has the required in-degree (the target would be a root).
    TargetRoot,
    /// No feature is assigned to the target or one of its ancestors.
    NoFeatureTargetPath,
    InsufficientRelevantCount,
    InsufficientRelevantFraction,
    /// The forward pass produced NaN or infinity.
    Nonfinite,
    /// Every feature column is constant.
    AllConstantFeatures,
    /// Train and test do not share one label set of at least two classes.
    InvalidClassSplit,
    /// Trees do no better than a constant (learnability filter).
    Unpredictable,
    /// Trees predict almost perfectly (learnability filter with `remove_trivial`).
    Trivial,
    /// A regression target with (almost) no spread left after the outlier clamp.
    ConstantTarget,
}

impl Reject {
    pub const ALL: [Reject; 10] = [
        Reject::TargetRoot,
        Reject::NoFeatureTargetPath,
        Reject::InsufficientRelevantCount,
        Reject::InsufficientRelevantFraction,
        Reject::Nonfinite,
        Reject::AllConstantFeatures,
        Reject::InvalidClassSplit,
        Reject::Unpredictable,
        Reject::Trivial,
        Reject::ConstantTarget,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reject::TargetRoot => "target_root",
            Reject::NoFeatureTargetPath => "no_feature_target_path",
            Reject::InsufficientRelevantCount => "insufficient_target_relevant_feature_count",
            Reject::InsufficientRelevantFraction => "insufficient_target_relevant_feature_fraction",
            Reject::Nonfinite => "nonfinite_output",
            Reject::AllConstantFeatures => "all_constant_features",
            Reject::InvalidClassSplit => "invalid_class_split",
            Reject::Unpredictable => "unpredictable",
            Reject::Trivial => "trivial",
            Reject::ConstantTarget => "constant_target",
        }
    }
}

/// Category count of each requested feature (0 = numeric): TabICL's scheme with a share of
/// "local" cardinalities up to a per-dataset limit and the rest from a meta draw.
pub fn categorical_sizes(ctx: &mut Ctx, n_features: usize) -> Vec<usize> {
    let d = &ctx.cfg.dataset;
    let (lo, hi, max_card) = (d.categorical_ratio_min, d.categorical_ratio_max, d.max_categorical_cardinality);
    let frac = lo + (hi - lo) * ctx.rng.range(-0.5, 1.2).clamp(0.0, 1.0);
    let n_cat = ((n_features as f64 * frac).round_ties_even() as usize).min(n_features);
    let n_local = ctx.num("cat_sizes_n_local", 0.0, (n_cat + 1) as f64, false, Mode::Local, true).floor() as usize;
    let n_local = n_local.min(n_cat);
    // Up to 9 categories the limit is a meta draw; beyond, a local log-uniform draw up to the cap.
    let limit = if max_card <= 9 {
        ctx.int("cat_size_limit", 2, max_card + 1, true, Mode::Meta)
    } else {
        ctx.int("cat_size_limit", 2, max_card + 1, true, Mode::Local)
    };
    let mut sizes = vec![0; n_features - n_cat];
    for _ in 0..n_local {
        sizes.push(ctx.int("cat_size", 2, limit + 1, true, Mode::Local));
    }
    for _ in n_local..n_cat {
        sizes.push(ctx.int("cat_size", 2, 10.min(limit + 1).max(3), true, Mode::Meta));
    }
    sizes
}

/// A DAG in topological order: `parents[j]` lists the parents of node j (all < j).
#[derive(Clone, Debug)]
pub struct Dag {
    pub parents: Vec<Vec<usize>>,
}

impl Dag {
    pub fn n(&self) -> usize {
        self.parents.len()
    }

    pub fn edges(&self) -> usize {
        self.parents.iter().map(Vec::len).sum()
    }

    /// `anc[i]` is true when node i is an ancestor of `node` or `node` itself.
    pub fn ancestors_or_self(&self, node: usize) -> Vec<bool> {
        let mut anc = vec![false; self.n()];
        anc[node] = true;
        for j in (0..=node).rev() {
            if anc[j] {
                for &p in &self.parents[j] {
                    anc[p] = true;
                }
            }
        }
        anc
    }

    /// Length (in edges) of the longest path ending at each node.
    pub fn depths(&self) -> Vec<usize> {
        let mut depth = vec![0; self.n()];
        for j in 0..self.n() {
            depth[j] = self.parents[j].iter().map(|&p| depth[p] + 1).max().unwrap_or(0);
        }
        depth
    }
}

/// Bernoulli edges i -> j (i < j) with p = sigmoid(A + B_j + C_i + offset), A, B, C standard
/// Cauchy: heavy tails give very sparse next to very dense graphs.
pub fn cauchy_dag(ctx: &mut Ctx, n: usize, offset: f64) -> Dag {
    let mut cauchy = || (std::f64::consts::PI * (ctx.rng.uniform_open() - 0.5)).tan();
    let a = cauchy() + offset;
    let out_imp: Vec<f64> = (0..n).map(|_| cauchy()).collect();
    let in_imp: Vec<f64> = (0..n).map(|_| cauchy()).collect();
    let mut parents = vec![Vec::new(); n];
    for i in 0..n {
        for (j, pj) in parents.iter_mut().enumerate() {
            let u = ctx.rng.uniform();
            if i < j {
                let p = 1.0 / (1.0 + (-(a + out_imp[j] + in_imp[i])).exp());
                if u <= p {
                    pj.push(i);
                }
            }
        }
    }
    Dag { parents }
}

/// The sampled structure of one dataset.
#[derive(Clone, Debug)]
pub struct Structure {
    pub dag: Dag,
    /// Node of each requested feature.
    pub feature_node: Vec<usize>,
    pub target: usize,
    /// Requested features whose node is the target or one of its ancestors.
    pub relevant: Vec<bool>,
}

/// Samples nodes, DAG, feature nodes and a target among the eligible nodes.
pub fn sample_structure(ctx: &mut Ctx, n_features: usize) -> Result<Structure, Reject> {
    let cfg: &GraphConfig = ctx.cfg;
    let g = &cfg.graph;
    let f = &cfg.filter;
    let n = ctx.int("n_nodes", g.n_nodes_min, g.n_nodes_max + 1, true, Mode::Meta);
    let offset = g.edge_logit_offset + std::f64::consts::LN_2 * cfg.shift.graph_scale;
    let dag = cauchy_dag(ctx, n, offset);
    let pool = |ctx: &mut Ctx| -> Vec<usize> {
        if g.subsample_feature_nodes {
            let k = ctx.int("n_feature_nodes", 1, n + 1, false, Mode::Meta);
            ctx.rng.permutation(n)[..k].to_vec()
        } else {
            (0..n).collect()
        }
    };
    let nodes = pool(ctx);
    let feature_node: Vec<usize> = (0..n_features).map(|_| nodes[ctx.rng.below(nodes.len() as u64) as usize]).collect();
    // A node is eligible when it satisfies every structural threshold; the first failing
    // check of the best candidate names the rejection.
    let indeg_ok: Vec<usize> = (0..n).filter(|&j| dag.parents[j].len() >= f.min_target_indegree).collect();
    if indeg_ok.is_empty() {
        return Err(Reject::TargetRoot);
    }
    let need = f.min_target_relevant_features.max((f.min_target_relevant_fraction * n_features as f64).ceil() as usize);
    let mut eligible = Vec::new();
    let mut best = 0usize;
    for &j in &indeg_ok {
        let anc = dag.ancestors_or_self(j);
        let count = feature_node.iter().filter(|&&v| anc[v]).count();
        best = best.max(count);
        if count >= need && count >= 1.min(need) {
            eligible.push(j);
        }
    }
    if eligible.is_empty() {
        return Err(if best == 0 && need > 0 {
            Reject::NoFeatureTargetPath
        } else if best < f.min_target_relevant_features {
            Reject::InsufficientRelevantCount
        } else {
            Reject::InsufficientRelevantFraction
        });
    }
    // TabICL draws the target node from its own random node subset: uniform overall.
    let target = eligible[ctx.rng.below(eligible.len() as u64) as usize];
    let anc = dag.ancestors_or_self(target);
    let relevant = feature_node.iter().map(|&v| anc[v]).collect();
    Ok(Structure { dag, feature_node, target, relevant })
}
