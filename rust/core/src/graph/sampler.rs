//! Per-dataset sampling context: the keyed stream, correlated ("meta") hyper-parameter
//! draws, and the dataset's noise family.
//!
//! A quantity drawn in meta mode under a name is Beta(loc * s, (1 - loc) * s) with loc ~ U(0, 1)
//! and s ~ LogU(0.1, 1e4) drawn once per dataset and name, so all nodes of one dataset draw,
//! e.g., their MLP widths from one random, possibly very concentrated, distribution.

use crate::rng::Rng;

use super::config::GraphConfig;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Correlated within the dataset (per-name Beta).
    Meta,
    /// Independent uniform draw.
    Local,
}

/// The distribution of every random parameter draw of one dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Noise {
    Gaussian,
    /// Unit-variance Laplace.
    Laplace,
    /// Student-t with `df` degrees of freedom, scaled to unit variance.
    StudentT {
        df: f64,
    },
}

impl Noise {
    pub fn name(self) -> &'static str {
        match self {
            Noise::Gaussian => "gaussian",
            Noise::Laplace => "laplace",
            Noise::StudentT { .. } => "student_t",
        }
    }
}

pub struct Ctx<'a> {
    pub rng: Rng,
    pub cfg: &'a GraphConfig,
    meta: Vec<(&'static str, f64, f64)>,
    weights: Vec<(&'static str, Vec<f64>)>,
    pub noise: Noise,
    /// Std of the parameter draws (base scale x variance shift).
    pub scale: f32,
    /// Family of every random function built, for the lineage.
    pub families: Vec<&'static str>,
}

impl<'a> Ctx<'a> {
    pub fn new(mut rng: Rng, cfg: &'a GraphConfig) -> Self {
        let df = cfg.noise.student_t_df;
        let noise = match cfg.noise_family() {
            0 => Noise::Gaussian,
            1 => Noise::Laplace,
            2 => Noise::StudentT { df },
            _ => match rng.categorical(&cfg.noise.mixture_weights) {
                0 => Noise::Gaussian,
                1 => Noise::Laplace,
                _ => Noise::StudentT { df },
            },
        };
        let scale = (cfg.noise.base_scale * cfg.variance_multiplier()) as f32;
        Ctx { rng, cfg, meta: Vec::new(), weights: Vec::new(), noise, scale, families: Vec::new() }
    }

    fn meta_params(&mut self, name: &'static str) -> (f64, f64) {
        if let Some(&(_, loc, sum)) = self.meta.iter().find(|(n, _, _)| *n == name) {
            return (loc, sum);
        }
        let loc = self.rng.uniform();
        let sum = self.rng.range(0.1f64.ln(), 1e4f64.ln()).exp();
        self.meta.push((name, loc, sum));
        (loc, sum)
    }

    /// A value in [0, 1]: per-name Beta in meta mode, uniform in local mode.
    pub fn unit(&mut self, name: &'static str, mode: Mode) -> f64 {
        if mode == Mode::Local {
            return self.rng.uniform();
        }
        let (loc, sum) = self.meta_params(name);
        let (a, b) = (loc * sum, (1.0 - loc) * sum);
        let x = self.rng.gamma(a.max(1e-300), 1.0);
        let y = self.rng.gamma(b.max(1e-300), 1.0);
        if x + y > 0.0 {
            x / (x + y)
        } else {
            // Both underflowed (tiny shapes): the Beta is then a two-point law at 0 and 1.
            f64::from(u8::from(self.rng.uniform() < loc))
        }
    }

    /// A number in [lo, hi] (log scale with `log`); `boundary` puts mass on both ends.
    pub fn num(&mut self, name: &'static str, lo: f64, hi: f64, log: bool, mode: Mode, boundary: bool) -> f64 {
        let mut v = self.unit(name, mode);
        if boundary {
            v = (1.2 * v - 0.1).clamp(0.0, 1.0);
        }
        if log { (lo.ln() + (hi.ln() - lo.ln()) * v).exp() } else { lo + (hi - lo) * v }
    }

    /// Meta-mode log-uniform-like number (the most common draw).
    pub fn log_num(&mut self, name: &'static str, lo: f64, hi: f64) -> f64 {
        self.num(name, lo, hi, true, Mode::Meta, false)
    }

    /// An integer in [lo, hi) (floor of a draw on [lo, hi], clipped).
    pub fn int(&mut self, name: &'static str, lo: usize, hi: usize, log: bool, mode: Mode) -> usize {
        if hi <= lo + 1 {
            return lo;
        }
        let v = self.num(name, lo as f64, hi as f64, log, mode, false).floor() as usize;
        v.clamp(lo, hi - 1)
    }

    /// Index into `probs` (unnormalised). With correlated choices each name has per-dataset
    /// random weights (decaying, noisy, permuted) multiplying the base probabilities.
    pub fn choice_weighted(&mut self, name: &'static str, probs: &[f64]) -> usize {
        if !self.cfg.mechanism.correlated_choices || probs.len() < 2 {
            return self.rng.categorical(probs);
        }
        let n = probs.len();
        let idx = match self.weights.iter().position(|(k, _)| *k == name) {
            Some(i) => i,
            None => {
                let w = super::func::random_weights(self, 1, n);
                self.weights.push((name, w.iter().map(|&v| f64::from(v)).collect()));
                self.weights.len() - 1
            }
        };
        let p: Vec<f64> = probs.iter().zip(&self.weights[idx].1).map(|(a, b)| a * b).collect();
        if p.iter().sum::<f64>() > 0.0 { self.rng.categorical(&p) } else { self.rng.categorical(probs) }
    }

    /// Uniform choice among `n` options (or correlated, see [`Ctx::choice_weighted`]).
    pub fn choice(&mut self, name: &'static str, n: usize) -> usize {
        if !self.cfg.mechanism.correlated_choices {
            return self.rng.below(n as u64) as usize;
        }
        self.choice_weighted(name, &vec![1.0; n])
    }

    pub fn boolean(&mut self, name: &'static str) -> bool {
        self.choice(name, 2) == 1
    }

    /// One parameter draw from the dataset's noise family (unit variance x scale).
    pub fn gauss(&mut self) -> f32 {
        let z = match self.noise {
            Noise::Gaussian => self.rng.normal(),
            Noise::Laplace => {
                let u = self.rng.uniform_open() - 0.5;
                -u.signum() * (1.0 - 2.0 * u.abs()).ln() * std::f64::consts::FRAC_1_SQRT_2
            }
            Noise::StudentT { df } => {
                let chi2 = 2.0 * self.rng.gamma(df / 2.0, 1.0);
                self.rng.normal() / (chi2 / df).sqrt() * ((df - 2.0) / df).sqrt()
            }
        };
        z as f32 * self.scale
    }

    pub fn fill_gauss(&mut self, out: &mut [f32]) {
        if self.noise == Noise::Gaussian {
            self.rng.fill_normal(out, 0.0, self.scale);
        } else {
            for v in out {
                *v = self.gauss();
            }
        }
    }

    pub fn gauss_vec(&mut self, n: usize) -> Vec<f32> {
        let mut v = vec![0.0; n];
        self.fill_gauss(&mut v);
        v
    }
}
