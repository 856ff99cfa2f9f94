//! Prior configuration: what Python sends (as JSON) and what the core validates.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::graph::config::GraphConfig;
use crate::hp::{HpSpec, SampledHp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorType {
    MlpScm,
    TreeScm,
    MixScm,
    GraphScm,
    Dummy,
}

impl PriorType {
    pub fn name(self) -> &'static str {
        match self {
            PriorType::MlpScm => "mlp_scm",
            PriorType::TreeScm => "tree_scm",
            PriorType::MixScm => "mix_scm",
            PriorType::GraphScm => "graph_scm",
            PriorType::Dummy => "dummy",
        }
    }
}

/// Training-set size: a fraction of seq_len or an absolute row count.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrainSize {
    Fraction { min: f64, max: f64 },
    Count { min: i64, max: i64 },
}

/// Hyper-parameters that are not sampled (TabICL's `DEFAULT_FIXED_HP`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedHp {
    pub mix_probs: (f64, f64),
    pub tree_depth_lambda: f64,
    pub tree_n_estimators_lambda: f64,
    pub balanced: bool,
    pub multiclass_ordered_prob: f64,
    pub cat_prob: f64,
    /// `None` = unbounded (TabICL's `inf`).
    pub max_categories: Option<u32>,
    pub scale_by_max_features: bool,
    pub permute_features: bool,
    pub permute_labels: bool,
    /// Values for keys that may be sampled: a fixed value used when `sampled_hp` lacks the key.
    #[serde(default)]
    pub overrides: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorConfig {
    pub prior_type: PriorType,
    pub seed: u64,
    pub batch_size: usize,
    pub batch_size_per_gp: usize,
    pub batch_size_per_subgp: usize,
    pub min_features: usize,
    pub max_features: usize,
    pub log_n_features: bool,
    pub max_classes: usize,
    pub regression: bool,
    pub min_seq_len: Option<usize>,
    pub max_seq_len: usize,
    pub log_seq_len: bool,
    pub seq_len_per_gp: bool,
    pub train_size: TrainSize,
    pub replay_small: bool,
    pub fixed_hp: FixedHp,
    #[serde(deserialize_with = "sampled_hp_by_key")]
    pub sampled_hp: BTreeMap<String, HpSpec>,
    /// Attempts per dataset before the last (invalid) one is kept, as TabICL (100).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: usize,
    /// seq_len and train_size are rounded to multiples of this (TabICL's `seq_lens_multiple_of`).
    #[serde(default = "one")]
    pub seq_lens_multiple_of: usize,
    /// The causal-DAG prior's sections (`graph_scm` only; defaults when absent).
    #[serde(default)]
    pub graph: GraphConfig,
}

/// Parses each `scm_sampled_hp` entry on its own so an error names the key.
fn sampled_hp_by_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, HpSpec>, D::Error> {
    let raw: BTreeMap<String, Value> = BTreeMap::deserialize(d)?;
    raw.into_iter()
        .map(|(key, value)| match serde_json::from_value::<HpSpec>(value) {
            Ok(spec) => Ok((key, spec)),
            Err(e) => Err(serde::de::Error::custom(format!("scm_sampled_hp['{key}'] is invalid: {e}"))),
        })
        .collect()
}

fn default_max_attempts() -> usize {
    100
}

fn one() -> usize {
    1
}

/// A configuration error: the argument, the value and what is allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

macro_rules! bail {
    ($($arg:tt)*) => { return Err(ConfigError(format!($($arg)*))) };
}

impl PriorConfig {
    pub fn from_json(s: &str) -> Result<Self, ConfigError> {
        let cfg: PriorConfig =
            serde_json::from_str(s).map_err(|e| ConfigError(format!("invalid prior configuration: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every field; the Python layer checks first with friendlier messages, this is
    /// the core's own guard so that no invalid configuration reaches the generators.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_size == 0 {
            bail!("batch_size=0 is invalid: must be a positive integer");
        }
        if self.batch_size_per_gp == 0 {
            bail!("batch_size_per_gp=0 is invalid: must be a positive integer");
        }
        if self.batch_size_per_subgp == 0 {
            bail!("batch_size_per_subgp=0 is invalid: must be a positive integer");
        }
        if self.min_features == 0 || self.min_features > self.max_features {
            bail!(
                "min_features={} is invalid: must satisfy 1 <= min_features <= max_features={}",
                self.min_features,
                self.max_features
            );
        }
        if self.max_features > 100_000 {
            bail!("max_features={} is invalid: must be at most 100000", self.max_features);
        }
        if !self.regression && self.prior_type != PriorType::Dummy && self.max_classes < 2 {
            bail!("max_classes={} is invalid: classification needs max_classes >= 2", self.max_classes);
        }
        if self.regression && self.max_classes != 0 {
            bail!("max_classes={} is invalid with regression=True: must be 0", self.max_classes);
        }
        if self.max_seq_len < 2 {
            bail!("max_seq_len={} is invalid: must be >= 2", self.max_seq_len);
        }
        if let Some(min) = self.min_seq_len
            && (min < 2 || min >= self.max_seq_len)
        {
            bail!("min_seq_len={min} is invalid: must satisfy 2 <= min_seq_len < max_seq_len={}", self.max_seq_len);
        }
        match self.train_size {
            TrainSize::Fraction { min, max } => {
                if !(min > 0.0 && min <= max && max < 1.0) {
                    bail!(
                        "min_train_size={min}, max_train_size={max} are invalid: fractions must satisfy 0 < min <= max < 1"
                    );
                }
            }
            TrainSize::Count { min, max } => {
                if !(min > 0 && min < max) {
                    bail!("min_train_size={min}, max_train_size={max} are invalid: counts must satisfy 0 < min < max");
                }
                let mut shortest = self.min_seq_len.unwrap_or(self.max_seq_len);
                if self.replay_small {
                    shortest = shortest.min(200); // replay_small may draw 200-row datasets
                }
                if (max - 1) as usize >= shortest {
                    bail!(
                        "max_train_size={max} is invalid: train sizes are drawn from [min, max) and must stay below the shortest seq_len ({shortest})"
                    );
                }
            }
        }
        let f = &self.fixed_hp;
        let (p0, p1) = f.mix_probs;
        if !(p0 >= 0.0 && p1 >= 0.0 && (p0 + p1 - 1.0).abs() < 1e-6) {
            bail!("scm_fixed_hp['mix_probs']=({p0}, {p1}) is invalid: two non-negative probabilities summing to 1");
        }
        for (name, v) in
            [("tree_depth_lambda", f.tree_depth_lambda), ("tree_n_estimators_lambda", f.tree_n_estimators_lambda)]
        {
            if !(v > 0.0 && v.is_finite()) {
                bail!("scm_fixed_hp['{name}']={v} is invalid: must be a positive finite number");
            }
        }
        for (name, v) in [("multiclass_ordered_prob", f.multiclass_ordered_prob), ("cat_prob", f.cat_prob)] {
            if !(0.0..=1.0).contains(&v) {
                bail!("scm_fixed_hp['{name}']={v} is invalid: must be a probability in [0, 1]");
            }
        }
        if let Some(m) = f.max_categories
            && m < 2
        {
            bail!("scm_fixed_hp['max_categories']={m} is invalid: must be >= 2 (or inf)");
        }
        let k = self.seq_lens_multiple_of;
        let shortest = if self.replay_small { 200 } else { self.min_seq_len.unwrap_or(self.max_seq_len) };
        if k == 0 || 2 * k > shortest {
            bail!(
                "seq_lens_multiple_of={k} is invalid: must be >= 1 and at most half the shortest seq_len ({shortest})"
            );
        }
        if self.max_attempts == 0 {
            bail!("max_attempts=0 is invalid: must be >= 1");
        }
        // Checked for every prior type: a typo is an error even where the key is unused.
        SampledHp::check_spec(&self.sampled_hp, &f.overrides)?;
        self.graph.validate()?;
        Ok(())
    }
}
