//! Hyper-parameter meta-distributions and their two-level sampling.
//!
//! As in TabICL, a *group* of datasets draws the parameters of each meta-distribution once
//! (e.g. the mean and spread of `hidden_dim`, the softmax weights of a choice); every
//! *subgroup* then draws one value from it; `mlp_activations` goes one level further and
//! draws one activation per network layer.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::activations::{ActivationSampler, BASE_ACTIVATIONS, RANDOM_CHOICE};
use crate::config::ConfigError;
use crate::rng::Rng;

fn default_min_std() -> f64 {
    0.01
}
fn default_max_std() -> f64 {
    1.0
}

/// One entry of `scm_sampled_hp` (TabICL's `{"distribution": ..., ...}` dicts).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "distribution", rename_all = "snake_case", deny_unknown_fields)]
pub enum HpSpec {
    MetaChoice {
        choice_values: Vec<Value>,
    },
    MetaChoiceMixed {
        choice_values: Vec<String>,
    },
    MetaBeta {
        scale: f64,
        min: f64,
        max: f64,
    },
    MetaGamma {
        max_alpha: f64,
        max_scale: f64,
        #[serde(default)]
        lower_bound: f64,
        #[serde(default)]
        round: bool,
    },
    MetaTruncNorm {
        min_mean: f64,
        max_mean: f64,
        #[serde(default = "default_min_std")]
        min_std: f64,
        #[serde(default = "default_max_std")]
        max_std: f64,
        #[serde(default)]
        lower_bound: f64,
        #[serde(default)]
        round: bool,
    },
    MetaTruncNormLogScaled {
        min_mean: f64,
        max_mean: f64,
        #[serde(default = "default_min_std")]
        min_std: f64,
        #[serde(default = "default_max_std")]
        max_std: f64,
        #[serde(default)]
        lower_bound: f64,
        #[serde(default)]
        round: bool,
    },
    Uniform {
        min: f64,
        max: f64,
    },
    UniformInt {
        min: f64,
        max: f64,
    },
    Beta {
        a: f64,
        b: f64,
    },
    Fixed {
        value: Value,
    },
}

/// What a group drew for one key.
#[derive(Clone, Debug)]
enum GroupDraw {
    Value(Value),
    Beta { scale: f64, a: f64, b: f64 },
    Gamma { shape: f64, scale: f64, lower_bound: f64, round: bool },
    TruncNorm { mu: f64, sigma: f64, lower_bound: f64, round: bool },
    Activations(ActivationSampler),
}

/// Hyper-parameters of one group: call [`GroupHp::subgroup`] once per subgroup.
#[derive(Clone, Debug)]
pub struct GroupHp {
    draws: BTreeMap<String, GroupDraw>,
}

/// The values one subgroup uses.
#[derive(Clone, Debug, Default)]
pub struct SubgroupHp {
    pub values: BTreeMap<String, Value>,
    pub activations: Option<ActivationSampler>,
}

fn softmax_f32(logits: &[f64]) -> Vec<f64> {
    // TabICL computes these weights in float32; so do we.
    let l: Vec<f32> = logits.iter().map(|&x| x as f32).collect();
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = l.iter().map(|&x| (x - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|&x| f64::from(x / s)).collect()
}

fn choice_weights(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut logits = Vec::with_capacity(n);
    logits.push(1.0);
    for _ in 1..n {
        logits.push(rng.range(lo, hi));
    }
    softmax_f32(&logits)
}

fn finish(sample: f64, lower_bound: f64, round: bool) -> Value {
    if round { Value::from(lower_bound + sample.round_ties_even()) } else { Value::from(lower_bound + sample) }
}

/// Truncated normal on [0, 1e6] as TabICL's meta samplers use it.
fn trunc_norm(rng: &mut Rng, mu: f64, sigma: f64) -> f64 {
    rng.trunc_normal(mu, sigma, 0.0, 1.0e6)
}

/// Namespace for spec checking and sampling.
pub struct SampledHp;

/// Keys the SCM priors read, with their kind.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Bool,
    Int(i64),
    Float(f64, f64),
    Enum(&'static [&'static str]),
    Activations,
}

const KEYS: &[(&str, Kind)] = &[
    ("multiclass_type", Kind::Enum(&["value", "rank"])),
    ("mlp_activations", Kind::Activations),
    ("block_wise_dropout", Kind::Bool),
    ("mlp_dropout_prob", Kind::Float(0.0, 1.0)),
    ("is_causal", Kind::Bool),
    ("num_causes", Kind::Int(1)),
    ("y_is_effect", Kind::Bool),
    ("in_clique", Kind::Bool),
    ("sort_features", Kind::Bool),
    ("num_layers", Kind::Int(2)),
    ("hidden_dim", Kind::Int(1)),
    ("init_std", Kind::Float(0.0, f64::INFINITY)),
    ("noise_std", Kind::Float(0.0, f64::INFINITY)),
    ("sampling", Kind::Enum(&["normal", "mixed", "uniform"])),
    ("pre_sample_cause_stats", Kind::Bool),
    ("pre_sample_noise_std", Kind::Bool),
];

fn kind_of(key: &str) -> Option<Kind> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, kind)| *kind)
}

pub fn known_keys() -> Vec<&'static str> {
    KEYS.iter().map(|(k, _)| *k).collect()
}

fn check_value(key: &str, kind: Kind, v: &Value) -> Result<(), ConfigError> {
    let bad = |what: &str| Err(ConfigError(format!("scm_sampled_hp['{key}'] value {v} is invalid: {what}")));
    match kind {
        Kind::Bool => {
            if !v.is_boolean() {
                return bad("must be True or False");
            }
        }
        Kind::Int(min) => match v.as_f64() {
            Some(x) if x.round_ties_even() as i64 >= min => {}
            _ => return bad(&format!("must be an integer >= {min}")),
        },
        Kind::Float(lo, hi) => match v.as_f64() {
            Some(x) if x >= lo && x <= hi => {}
            _ => return bad(&format!("must be a number in [{lo}, {hi}]")),
        },
        Kind::Enum(allowed) => match v.as_str() {
            Some(s) if allowed.contains(&s) => {}
            _ => return bad(&format!("must be one of {allowed:?}")),
        },
        Kind::Activations => match v.as_str() {
            Some(s) if is_activation(s) => {}
            _ => {
                return bad(&format!("must be an activation name: one of {:?} or '{RANDOM_CHOICE}'", BASE_ACTIVATIONS));
            }
        },
    }
    Ok(())
}

fn is_activation(s: &str) -> bool {
    s == RANDOM_CHOICE || BASE_ACTIVATIONS.contains(&s)
}

impl SampledHp {
    /// Validates `scm_sampled_hp` and the fixed values given for sampled keys.
    pub fn check_spec(
        specs: &BTreeMap<String, HpSpec>,
        overrides: &BTreeMap<String, Value>,
    ) -> Result<(), ConfigError> {
        for (key, v) in overrides {
            let kind = kind_of(key).ok_or_else(|| {
                ConfigError(format!(
                    "scm_fixed_hp key '{key}' is unknown: allowed keys are {:?} and the fixed keys",
                    known_keys()
                ))
            })?;
            check_value(key, kind, v).map_err(|e| ConfigError(e.0.replace("scm_sampled_hp", "scm_fixed_hp")))?;
        }
        for (key, spec) in specs {
            let kind = kind_of(key).ok_or_else(|| {
                ConfigError(format!("scm_sampled_hp key '{key}' is unknown: allowed keys are {:?}", known_keys()))
            })?;
            let err = |what: String| Err(ConfigError(format!("scm_sampled_hp['{key}'] is invalid: {what}")));
            let numeric = matches!(kind, Kind::Int(_) | Kind::Float(..));
            match spec {
                HpSpec::MetaChoice { choice_values } => {
                    if choice_values.is_empty() {
                        return err("meta_choice needs at least one value in choice_values".into());
                    }
                    for v in choice_values {
                        check_value(key, kind, v)?;
                    }
                }
                HpSpec::MetaChoiceMixed { choice_values } => {
                    if kind != Kind::Activations {
                        return err("meta_choice_mixed is only supported for 'mlp_activations'".into());
                    }
                    if choice_values.is_empty() {
                        return err("meta_choice_mixed needs at least one activation name".into());
                    }
                    for v in choice_values {
                        check_value(key, kind, &Value::from(v.as_str()))?;
                    }
                }
                HpSpec::Fixed { value } => check_value(key, kind, value)?,
                _ if !numeric => {
                    return err(format!("a numeric distribution cannot produce the {kind:?} values this key needs"));
                }
                HpSpec::MetaBeta { scale, min, max } => {
                    if !(*min > 0.0 && min <= max && *scale >= 0.0) {
                        return err(format!(
                            "meta_beta needs 0 < min <= max and scale >= 0 (got min={min}, max={max}, scale={scale})"
                        ));
                    }
                }
                HpSpec::MetaGamma { max_alpha, max_scale, lower_bound, .. } => {
                    if !(*max_alpha > 1.0 && *max_scale > 0.0) {
                        return err(format!(
                            "meta_gamma needs max_alpha > 1 and max_scale > 0 (got {max_alpha}, {max_scale})"
                        ));
                    }
                    check_lower(key, kind, *lower_bound)?;
                }
                HpSpec::MetaTruncNorm { min_mean, max_mean, min_std, max_std, lower_bound, .. } => {
                    if !(min_mean <= max_mean && *min_std > 0.0 && min_std <= max_std) {
                        return err(format!(
                            "meta_trunc_norm needs min_mean <= max_mean and 0 < min_std <= max_std (got {min_mean}, {max_mean}, {min_std}, {max_std})"
                        ));
                    }
                    check_lower(key, kind, *lower_bound)?;
                }
                HpSpec::MetaTruncNormLogScaled { min_mean, max_mean, min_std, max_std, lower_bound, .. } => {
                    if !(*min_mean > 0.0 && min_mean <= max_mean && *min_std > 0.0 && min_std <= max_std) {
                        return err(format!(
                            "meta_trunc_norm_log_scaled needs 0 < min_mean <= max_mean and 0 < min_std <= max_std (got {min_mean}, {max_mean}, {min_std}, {max_std})"
                        ));
                    }
                    check_lower(key, kind, *lower_bound)?;
                }
                HpSpec::Uniform { min, max } | HpSpec::UniformInt { min, max } => {
                    if min > max {
                        return err(format!("uniform needs min <= max (got min={min}, max={max})"));
                    }
                    check_value(key, kind, &Value::from(*min))?;
                    check_value(key, kind, &Value::from(*max))?;
                }
                HpSpec::Beta { a, b } => {
                    if !(*a > 0.0 && *b > 0.0) {
                        return err(format!("beta needs a > 0 and b > 0 (got a={a}, b={b})"));
                    }
                }
            }
        }
        Ok(())
    }

    /// One group's draw of every meta-distribution.
    pub fn sample_group(specs: &BTreeMap<String, HpSpec>, rng: &mut Rng) -> GroupHp {
        let mut draws = BTreeMap::new();
        for (key, spec) in specs {
            let draw = match spec {
                HpSpec::MetaChoice { choice_values } => {
                    let w = choice_weights(rng, choice_values.len(), -3.0, 5.0);
                    GroupDraw::Value(choice_values[rng.categorical(&w)].clone())
                }
                HpSpec::MetaChoiceMixed { choice_values } => {
                    let w = choice_weights(rng, choice_values.len(), -5.0, 6.0);
                    GroupDraw::Activations(ActivationSampler::new(choice_values.clone(), w))
                }
                HpSpec::MetaBeta { scale, min, max } => {
                    GroupDraw::Beta { scale: *scale, a: rng.range(*min, *max), b: rng.range(*min, *max) }
                }
                HpSpec::MetaGamma { max_alpha, max_scale, lower_bound, round } => {
                    let alpha = rng.range(0.0, max_alpha.ln());
                    let scale = rng.range(0.0, *max_scale);
                    let shape = alpha.exp();
                    GroupDraw::Gamma {
                        shape,
                        scale: (scale / shape).max(1e-12),
                        lower_bound: *lower_bound,
                        round: *round,
                    }
                }
                HpSpec::MetaTruncNorm { min_mean, max_mean, min_std, max_std, lower_bound, round } => {
                    GroupDraw::TruncNorm {
                        mu: rng.range(*min_mean, *max_mean),
                        sigma: rng.range(*min_std, *max_std),
                        lower_bound: *lower_bound,
                        round: *round,
                    }
                }
                HpSpec::MetaTruncNormLogScaled { min_mean, max_mean, min_std, max_std, lower_bound, round } => {
                    let mu = rng.range(min_mean.ln(), max_mean.ln()).exp();
                    let sigma = mu * rng.range(min_std.ln(), max_std.ln()).exp();
                    GroupDraw::TruncNorm { mu, sigma, lower_bound: *lower_bound, round: *round }
                }
                HpSpec::Uniform { min, max } => GroupDraw::Value(Value::from(rng.range(*min, *max))),
                HpSpec::UniformInt { min, max } => {
                    GroupDraw::Value(Value::from(rng.range(*min, *max).round_ties_even()))
                }
                HpSpec::Beta { a, b } => GroupDraw::Value(Value::from(rng.beta(*a, *b))),
                HpSpec::Fixed { value } => GroupDraw::Value(value.clone()),
            };
            draws.insert(key.clone(), draw);
        }
        GroupHp { draws }
    }
}

fn check_lower(key: &str, kind: Kind, lower_bound: f64) -> Result<(), ConfigError> {
    if let Kind::Int(min) = kind
        && lower_bound < min as f64
    {
        return Err(ConfigError(format!(
            "scm_sampled_hp['{key}'] lower_bound={lower_bound} is invalid: values must stay >= {min}, so lower_bound must be >= {min}"
        )));
    }
    Ok(())
}

impl GroupHp {
    /// Draws the values of one subgroup.
    pub fn subgroup(&self, rng: &mut Rng) -> SubgroupHp {
        let mut out = SubgroupHp::default();
        for (key, draw) in &self.draws {
            let v = match draw {
                GroupDraw::Value(v) => {
                    if key == "mlp_activations" {
                        // A single activation for every layer (meta_choice or fixed).
                        let name = v.as_str().unwrap_or("identity").to_string();
                        out.activations = Some(ActivationSampler::new(vec![name], vec![1.0]));
                        continue;
                    }
                    v.clone()
                }
                GroupDraw::Beta { scale, a, b } => Value::from(scale * rng.beta(*a, *b)),
                GroupDraw::Gamma { shape, scale, lower_bound, round } => {
                    finish(rng.gamma(*shape, *scale), *lower_bound, *round)
                }
                GroupDraw::TruncNorm { mu, sigma, lower_bound, round } => {
                    finish(trunc_norm(rng, *mu, *sigma), *lower_bound, *round)
                }
                GroupDraw::Activations(s) => {
                    out.activations = Some(s.clone());
                    continue;
                }
            };
            out.values.insert(key.clone(), v);
        }
        out
    }
}

/// The resolved hyper-parameters one SCM dataset is built with.
#[derive(Clone, Debug)]
pub struct ScmHp {
    pub multiclass_rank: bool,
    pub activations: ActivationSampler,
    pub block_wise_dropout: bool,
    pub mlp_dropout_prob: f64,
    pub is_causal: bool,
    pub num_causes: usize,
    pub y_is_effect: bool,
    pub in_clique: bool,
    pub sort_features: bool,
    pub num_layers: usize,
    pub hidden_dim: usize,
    pub init_std: f64,
    pub noise_std: f64,
    pub sampling: Sampling,
    pub pre_sample_cause_stats: bool,
    pub pre_sample_noise_std: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    Normal,
    Mixed,
    Uniform,
}

impl Sampling {
    pub fn name(self) -> &'static str {
        match self {
            Sampling::Normal => "normal",
            Sampling::Mixed => "mixed",
            Sampling::Uniform => "uniform",
        }
    }
}

impl ScmHp {
    /// Resolves a subgroup draw: sampled value, else the fixed value, else the SCM default
    /// (the constructor defaults of TabICL's MLP SCM).
    pub fn resolve(sub: &SubgroupHp, fixed: &BTreeMap<String, Value>) -> ScmHp {
        let get = |k: &str| sub.values.get(k).or_else(|| fixed.get(k));
        let b = |k: &str, d: bool| get(k).and_then(Value::as_bool).unwrap_or(d);
        let f = |k: &str, d: f64| get(k).and_then(Value::as_f64).unwrap_or(d);
        let i = |k: &str, d: usize| get(k).and_then(Value::as_f64).map_or(d, |x| x.round_ties_even().max(1.0) as usize);
        let s = |k: &str, d: &'static str| get(k).and_then(Value::as_str).map_or(d.to_string(), str::to_string);
        let activations = sub.activations.clone().unwrap_or_else(|| {
            let name = fixed.get("mlp_activations").and_then(Value::as_str).unwrap_or("tanh").to_string();
            ActivationSampler::new(vec![name], vec![1.0])
        });
        ScmHp {
            multiclass_rank: s("multiclass_type", "rank") == "rank",
            activations,
            block_wise_dropout: b("block_wise_dropout", true),
            mlp_dropout_prob: f("mlp_dropout_prob", 0.1),
            is_causal: b("is_causal", false),
            num_causes: i("num_causes", 10),
            y_is_effect: b("y_is_effect", true),
            in_clique: b("in_clique", false),
            sort_features: b("sort_features", true),
            num_layers: i("num_layers", 10).max(2),
            hidden_dim: i("hidden_dim", 20),
            init_std: f("init_std", 1.0),
            noise_std: f("noise_std", 0.01),
            sampling: match s("sampling", "normal").as_str() {
                "mixed" => Sampling::Mixed,
                "uniform" => Sampling::Uniform,
                _ => Sampling::Normal,
            },
            pre_sample_cause_stats: b("pre_sample_cause_stats", false),
            pre_sample_noise_std: b("pre_sample_noise_std", false),
        }
    }
}
