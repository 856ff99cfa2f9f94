//! Configuration of the causal-DAG prior (`graph_scm`), in sections as a dagzoo user knows
//! them: dataset, graph, mechanism, noise, shift, missingness, filter.
//!
//! Python builds and checks this first (friendlier messages, the same wording); the core
//! validates again so that no invalid configuration reaches the generator.

use serde::Deserialize;

use crate::config::ConfigError;

/// The eight function families, in TabICL's order.
pub const FAMILIES: [&str; 8] = ["mlp", "tree", "discretization", "linear", "quadratic", "gp", "em", "product"];
/// Base logits of the families under mechanism drift (more mass on non-linear ones as it grows).
pub const DRIFT_LOGITS: [f64; 8] = [0.7, 0.7, 0.5, -0.8, -0.6, 0.5, -0.3, 0.9];
pub const AGGREGATIONS: [&str; 4] = ["sum", "product", "max", "logsumexp"];
pub const COMPOSITIONS: [&str; 2] = ["concat", "stack"];
pub const MATRIX_KINDS: [&str; 5] = ["gaussian", "weights", "singular_values", "kernel", "activation"];
pub const CATEGORICAL_MODES: [&str; 7] =
    ["neighbor_id", "neighbor_disc", "neighbor_func", "neighbor_int", "softmax_id", "softmax_disc", "softmax_int"];
pub const ROOT_POINTS: [&str; 4] = ["uniform", "ring", "gaussian", "covariance"];
pub const NOISE_FAMILIES: [&str; 4] = ["gaussian", "laplace", "student_t", "mixture"];
pub const SHIFT_MODES: [&str; 6] = ["off", "graph_drift", "mechanism_drift", "noise_drift", "mixed", "custom"];
pub const MISSING_MECHANISMS: [&str; 4] = ["none", "mcar", "mar", "mnar"];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetSection {
    /// The categorical share is `min + (max - min) * clip(U(-0.5, 1.2), 0, 1)`: TabICL's draw,
    /// with point masses at both ends of the range.
    pub categorical_ratio_min: f64,
    pub categorical_ratio_max: f64,
    /// Largest category count of a categorical feature (TabICL keeps 9).
    pub max_categorical_cardinality: usize,
}

impl Default for DatasetSection {
    fn default() -> Self {
        DatasetSection { categorical_ratio_min: 0.0, categorical_ratio_max: 1.0, max_categorical_cardinality: 9 }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphSection {
    pub n_nodes_min: usize,
    pub n_nodes_max: usize,
    /// Added to every edge logit (TabICL's `cauchy_dag_offset`): larger means denser graphs.
    pub edge_logit_offset: f64,
    /// Restrict features to a random subset of nodes (several columns then share a node).
    pub subsample_feature_nodes: bool,
}

impl Default for GraphSection {
    fn default() -> Self {
        GraphSection { n_nodes_min: 2, n_nodes_max: 32, edge_logit_offset: 0.0, subsample_feature_nodes: true }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MechanismSection {
    /// Relative weight of each family (keys from [`FAMILIES`]); zero removes a family.
    pub function_family_weights: Vec<f64>,
    pub compositions: Vec<String>,
    pub aggregations: Vec<String>,
    pub matrix_kinds: Vec<String>,
    pub categorical_modes: Vec<String>,
    /// Choices drawn from per-dataset random weights, so one dataset's nodes share
    /// preferences (TabICL 2.2.0 draws fresh weights per call, i.e. uniform choices).
    pub correlated_choices: bool,
    pub kumaraswamy_warping: bool,
    /// Warp only the emitted column, the children see the raw value (TabICL's
    /// `use_corrected_num_converters`); by default both are warped, as in TabICL 2.2.0's data.
    pub warp_emitted_only: bool,
    pub warp_target: bool,
    pub node_feature_importance: bool,
    pub node_l2_norm: bool,
    pub node_importance: bool,
    /// Adds N(0, sigma^2) to every node, sigma ~ LogU(1e-5, 1) (TabICL's `add_gaussian_noise`).
    pub additive_node_noise: bool,
    pub max_discretization_cardinality: usize,
}

impl Default for MechanismSection {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        MechanismSection {
            function_family_weights: vec![1.0; 8],
            compositions: s(&COMPOSITIONS),
            aggregations: s(&AGGREGATIONS),
            matrix_kinds: s(&MATRIX_KINDS),
            categorical_modes: s(&CATEGORICAL_MODES),
            correlated_choices: false,
            kumaraswamy_warping: true,
            warp_emitted_only: false,
            warp_target: true,
            node_feature_importance: true,
            node_l2_norm: true,
            node_importance: true,
            additive_node_noise: false,
            max_discretization_cardinality: 256,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseSection {
    /// Distribution of every random parameter draw (root points, matrices, leaves, centres).
    pub family: String,
    pub base_scale: f64,
    pub student_t_df: f64,
    /// Weights of (gaussian, laplace, student_t) for `mixture`: one family per dataset.
    pub mixture_weights: Vec<f64>,
}

impl Default for NoiseSection {
    fn default() -> Self {
        NoiseSection {
            family: "gaussian".into(),
            base_scale: 1.0,
            student_t_df: 5.0,
            mixture_weights: vec![1.0 / 3.0; 3],
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShiftSection {
    pub mode: String,
    /// Edge odds are multiplied by 2^graph_scale.
    pub graph_scale: f64,
    /// Tilt of the family distribution towards non-linear families.
    pub mechanism_scale: f64,
    /// Variance of the parameter draws is multiplied by 2^variance_scale.
    pub variance_scale: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MissingnessSection {
    pub mechanism: String,
    /// Fraction of the active cells of X set to NaN.
    pub rate: f64,
    pub mar_observed_fraction: f64,
    pub mar_logit_scale: f64,
    pub mnar_logit_scale: f64,
}

impl Default for MissingnessSection {
    fn default() -> Self {
        MissingnessSection {
            mechanism: "none".into(),
            rate: 0.0,
            mar_observed_fraction: 0.5,
            mar_logit_scale: 1.0,
            mnar_logit_scale: 1.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterSection {
    pub min_target_indegree: usize,
    pub min_target_relevant_features: usize,
    pub min_target_relevant_fraction: f64,
    /// Learnability test: out-of-bag ExtraTrees against a constant baseline.
    pub learnability: bool,
    /// Reject when the bootstrap p-value of "model better than baseline" is at least this.
    pub learnability_pvalue: f64,
    /// Also reject datasets the trees predict almost perfectly.
    pub remove_trivial: bool,
    /// Trivial when the model RMSE is at most this times the baseline RMSE.
    pub trivial_threshold: f64,
    pub n_estimators: usize,
    pub max_depth: usize,
    pub n_bootstrap: usize,
    /// Structure or dataset attempts before the last one is emitted, marked invalid.
    pub max_attempts: usize,
}

impl Default for FilterSection {
    fn default() -> Self {
        FilterSection {
            min_target_indegree: 1,
            min_target_relevant_features: 2,
            min_target_relevant_fraction: 0.05,
            learnability: false,
            learnability_pvalue: 0.05,
            remove_trivial: false,
            trivial_threshold: 0.05,
            n_estimators: 25,
            max_depth: 6,
            n_bootstrap: 200,
            max_attempts: 100,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    pub dataset: DatasetSection,
    pub graph: GraphSection,
    pub mechanism: MechanismSection,
    pub noise: NoiseSection,
    pub shift: ShiftSection,
    pub missingness: MissingnessSection,
    pub filter: FilterSection,
}

macro_rules! bail {
    ($($arg:tt)*) => { return Err(ConfigError(format!($($arg)*))) };
}

fn check_subset(field: &str, values: &[String], allowed: &[&str]) -> Result<(), ConfigError> {
    if values.is_empty() {
        bail!("graph_config.{field}=[] is invalid: choose at least one of {allowed:?}");
    }
    for v in values {
        if !allowed.contains(&v.as_str()) {
            bail!("graph_config.{field} contains {v:?}: allowed values are {allowed:?}");
        }
    }
    Ok(())
}

fn check_range(field: &str, v: f64, lo: f64, hi: f64) -> Result<(), ConfigError> {
    if !(v >= lo && v <= hi) {
        bail!("graph_config.{field}={v} is invalid: must be in [{lo}, {hi}]");
    }
    Ok(())
}

fn index_of(values: &[&str], v: &str) -> usize {
    values.iter().position(|x| *x == v).expect("validated")
}

impl GraphConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.dataset;
        check_range("dataset.categorical_ratio_min", d.categorical_ratio_min, 0.0, 1.0)?;
        check_range("dataset.categorical_ratio_max", d.categorical_ratio_max, d.categorical_ratio_min, 1.0)?;
        if !(2..=256).contains(&d.max_categorical_cardinality) {
            bail!(
                "graph_config.dataset.max_categorical_cardinality={} is invalid: must be in [2, 256]",
                d.max_categorical_cardinality
            );
        }
        let g = &self.graph;
        if g.n_nodes_min < 1 || g.n_nodes_min > g.n_nodes_max || g.n_nodes_max > 1024 {
            bail!(
                "graph_config.graph.n_nodes_min={}, n_nodes_max={} are invalid: must satisfy 1 <= n_nodes_min <= n_nodes_max <= 1024",
                g.n_nodes_min,
                g.n_nodes_max
            );
        }
        check_range("graph.edge_logit_offset", g.edge_logit_offset, -50.0, 50.0)?;
        let m = &self.mechanism;
        if m.function_family_weights.len() != FAMILIES.len()
            || m.function_family_weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            || m.function_family_weights.iter().sum::<f64>() <= 0.0
        {
            bail!(
                "graph_config.mechanism.function_family_weights={:?} is invalid: {} non-negative weights for {FAMILIES:?}, not all zero",
                m.function_family_weights,
                FAMILIES.len()
            );
        }
        check_subset("mechanism.compositions", &m.compositions, &COMPOSITIONS)?;
        check_subset("mechanism.aggregations", &m.aggregations, &AGGREGATIONS)?;
        check_subset("mechanism.matrix_kinds", &m.matrix_kinds, &MATRIX_KINDS)?;
        check_subset("mechanism.categorical_modes", &m.categorical_modes, &CATEGORICAL_MODES)?;
        if m.max_discretization_cardinality < 2 {
            bail!(
                "graph_config.mechanism.max_discretization_cardinality={} is invalid: must be >= 2",
                m.max_discretization_cardinality
            );
        }
        let n = &self.noise;
        check_subset("noise.family", std::slice::from_ref(&n.family), &NOISE_FAMILIES)?;
        check_range("noise.base_scale", n.base_scale, 1e-6, 1e6)?;
        check_range("noise.student_t_df", n.student_t_df, 2.000_001, 1e6)?;
        if n.mixture_weights.len() != 3
            || n.mixture_weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            || n.mixture_weights.iter().sum::<f64>() <= 0.0
        {
            bail!(
                "graph_config.noise.mixture_weights={:?} is invalid: 3 non-negative weights (gaussian, laplace, student_t), not all zero",
                n.mixture_weights
            );
        }
        let s = &self.shift;
        if !s.mode.is_empty() {
            check_subset("shift.mode", std::slice::from_ref(&s.mode), &SHIFT_MODES)?;
        }
        for (f, v) in [
            ("shift.graph_scale", s.graph_scale),
            ("shift.mechanism_scale", s.mechanism_scale),
            ("shift.variance_scale", s.variance_scale),
        ] {
            check_range(f, v, -10.0, 10.0)?;
        }
        let mi = &self.missingness;
        check_subset("missingness.mechanism", std::slice::from_ref(&mi.mechanism), &MISSING_MECHANISMS)?;
        if !(0.0..0.95).contains(&mi.rate) {
            bail!("graph_config.missingness.rate={} is invalid: must be in [0, 0.95)", mi.rate);
        }
        if mi.mechanism == "none" && mi.rate > 0.0 {
            bail!(
                "graph_config.missingness.rate={} is invalid with mechanism='none': choose 'mcar', 'mar' or 'mnar'",
                mi.rate
            );
        }
        check_range("missingness.mar_observed_fraction", mi.mar_observed_fraction, 0.0, 1.0)?;
        check_range("missingness.mar_logit_scale", mi.mar_logit_scale, 0.0, 100.0)?;
        check_range("missingness.mnar_logit_scale", mi.mnar_logit_scale, 0.0, 100.0)?;
        let f = &self.filter;
        check_range("filter.min_target_relevant_fraction", f.min_target_relevant_fraction, 0.0, 1.0)?;
        check_range("filter.learnability_pvalue", f.learnability_pvalue, 0.0, 1.0)?;
        check_range("filter.trivial_threshold", f.trivial_threshold, 0.0, 1.0)?;
        for (name, v, lo) in [
            ("n_estimators", f.n_estimators, 1),
            ("max_depth", f.max_depth, 1),
            ("n_bootstrap", f.n_bootstrap, 1),
            ("max_attempts", f.max_attempts, 1),
        ] {
            if v < lo {
                bail!("graph_config.filter.{name}={v} is invalid: must be >= {lo}");
            }
        }
        Ok(())
    }

    /// Noise-family index (into [`NOISE_FAMILIES`]).
    pub fn noise_family(&self) -> usize {
        index_of(&NOISE_FAMILIES, &self.noise.family)
    }

    /// Draw std multiplier from the variance shift: variance x 2^variance_scale.
    pub fn variance_multiplier(&self) -> f64 {
        (0.5 * std::f64::consts::LN_2 * self.shift.variance_scale).exp()
    }

    /// Family probabilities: the configured weights, tilted by mechanism drift.
    pub fn family_probs(&self) -> [f64; 8] {
        let w = &self.mechanism.function_family_weights;
        let tau = self.shift.mechanism_scale;
        let active: Vec<usize> = (0..8).filter(|&i| w[i] > 0.0).collect();
        let mean_l = active.iter().map(|&i| DRIFT_LOGITS[i]).sum::<f64>() / active.len() as f64;
        let mut p = [0.0; 8];
        for &i in &active {
            p[i] = w[i] * (tau * (DRIFT_LOGITS[i] - mean_l)).exp();
        }
        let total: f64 = p.iter().sum();
        p.map(|v| v / total)
    }
}
