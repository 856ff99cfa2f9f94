//! Batches: the group / subgroup layout, per-dataset plans, validity checks, and parallel
//! generation into one contiguous (B, T, F) buffer.
//!
//! Randomness is keyed: the batch-level draws by (seed, BATCH, index), each group's by
//! (seed, GROUP, index, group), each dataset attempt by (seed, DATASET, index, position,
//! attempt). Plans are made sequentially (cheap), datasets are generated in parallel, and
//! the result is identical for any number of threads.

use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::config::{PriorConfig, PriorType, TrainSize};
use crate::graph::Lineage;
use crate::hp::{GroupHp, SampledHp, ScmHp};
use crate::pool;
use crate::reg2cls::reg2cls;
use crate::rng::{Key, Rng, domain};
use crate::scm::{RawDataset, TreeShape, mlp_scm, tree_scm};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mlp,
    Tree,
    Graph,
    Dummy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mlp => "mlp_scm",
            Kind::Tree => "tree_scm",
            Kind::Graph => "graph_scm",
            Kind::Dummy => "dummy",
        }
    }
}

/// Everything one dataset needs, fixed before any generation starts.
#[derive(Clone, Debug)]
pub struct DatasetPlan {
    pub kind: Kind,
    pub group: usize,
    pub seq_len: usize,
    pub train_size: usize,
    /// Width of the feature axis for this dataset (`max_features`, or the group's cap).
    pub max_features: usize,
    pub num_features: usize,
    pub num_classes: Option<usize>,
    pub hp: Option<Arc<ScmHp>>,
}

/// Diagnostics of one generated dataset.
#[derive(Clone, Debug, Default)]
pub struct DatasetMeta {
    pub prior: &'static str,
    pub group: usize,
    pub num_features: usize,
    pub d: usize,
    pub num_classes: Option<usize>,
    pub realised_classes: usize,
    pub categorical: Vec<usize>,
    pub attempts: usize,
    pub valid: bool,
    pub hp: Vec<(String, String)>,
    pub layers: Vec<String>,
    /// Rejected attempts by reason (graph prior).
    pub rejections: Vec<(&'static str, usize)>,
    pub lineage: Option<Box<Lineage>>,
}

/// A generated batch; `x` is (b, t, f) row-major, zero-padded beyond `d` and `seq_len`.
pub struct Batch {
    pub b: usize,
    pub t: usize,
    pub f: usize,
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub d: Vec<i64>,
    pub seq_lens: Vec<i64>,
    pub train_sizes: Vec<i64>,
    pub meta: Vec<DatasetMeta>,
}

fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    rng.range(lo.ln(), hi.ln()).exp()
}

fn sample_seq_len(cfg: &PriorConfig, rng: &mut Rng) -> usize {
    let Some(min) = cfg.min_seq_len else { return cfg.max_seq_len };
    let seq_len = if cfg.log_seq_len {
        log_uniform(rng, min as f64, cfg.max_seq_len as f64) as usize
    } else {
        rng.randint(min as i64, cfg.max_seq_len as i64) as usize
    };
    if cfg.replay_small {
        let p = rng.uniform();
        if p < 0.05 {
            return rng.randint(200, 1000) as usize;
        }
        if p < 0.3 {
            return log_uniform(rng, 1000.0, 10000.0) as usize;
        }
    }
    seq_len
}

fn sample_train_size(cfg: &PriorConfig, rng: &mut Rng, seq_len: usize) -> usize {
    match cfg.train_size {
        TrainSize::Count { min, max } => rng.randint(min, max) as usize,
        TrainSize::Fraction { min, max } => (seq_len as f64 * rng.range(min, max)) as usize,
    }
}

/// seq_len and train_size rounded to multiples of `k` (half to even, as TabICL), keeping at
/// least `k` rows on each side of the split.
fn round_lengths(k: usize, seq_len: usize, train_size: usize) -> (usize, usize) {
    if k <= 1 {
        return (seq_len, train_size);
    }
    let round = |v: usize| k * (v as f64 / k as f64).round_ties_even() as usize;
    let s = round(seq_len).max(2 * k);
    (s, round(train_size).clamp(k, s - k))
}

/// Feature cap for long sequences, as TabICL's `adjust_max_features`.
pub fn adjust_max_features(seq_len: usize, max_features: usize) -> usize {
    match seq_len {
        0..=10_240 => max_features,
        10_241..=20_000 => max_features.min(80),
        20_001..=30_000 => max_features.min(60),
        30_001..=40_000 => max_features.min(40),
        40_001..=50_000 => max_features.min(30),
        50_001..=60_000 => max_features.min(20),
        60_001..=65_000 => max_features.min(15),
        _ => 10,
    }
}

/// Feature count in [min_features, gp_max]: rounded uniform, or log-uniform with `log_n_features`.
fn sample_num_features(cfg: &PriorConfig, rng: &mut Rng, gp_max: usize) -> usize {
    let lo = cfg.min_features.min(gp_max) as f64;
    if cfg.log_n_features {
        log_uniform(rng, lo, gp_max as f64) as usize
    } else {
        rng.range(lo, gp_max as f64).round_ties_even() as usize
    }
    .clamp(1, gp_max)
}

/// The sequential part: every dataset's plan for batch `index`.
pub fn plan_batch(cfg: &PriorConfig, index: u64) -> Vec<DatasetPlan> {
    let b = cfg.batch_size;
    let mut brng = Key::new(cfg.seed, [domain::BATCH, index, 0, 0]).rng();
    if cfg.prior_type == PriorType::Dummy {
        let seq_len = sample_seq_len(cfg, &mut brng);
        let train_size = sample_train_size(cfg, &mut brng, seq_len);
        let (seq_len, train_size) = round_lengths(cfg.seq_lens_multiple_of, seq_len, train_size);
        let num_classes = (!cfg.regression).then(|| brng.randint(2, cfg.max_classes.max(2) as i64 + 1) as usize);
        return (0..b)
            .map(|_| DatasetPlan {
                kind: Kind::Dummy,
                group: 0,
                seq_len,
                train_size,
                max_features: cfg.max_features,
                num_features: cfg.max_features,
                num_classes,
                hp: None,
            })
            .collect();
    }
    let batch_len = (!cfg.seq_len_per_gp).then(|| {
        let s = sample_seq_len(cfg, &mut brng);
        let t = sample_train_size(cfg, &mut brng, s);
        round_lengths(cfg.seq_lens_multiple_of, s, t)
    });
    let per_gp = cfg.batch_size_per_gp.min(b);
    let per_subgp = cfg.batch_size_per_subgp.min(per_gp);
    let mut plans = Vec::with_capacity(b);
    let mut group = 0usize;
    while plans.len() < b {
        let mut grng = Key::new(cfg.seed, [domain::GROUP, index, group as u64, 0]).rng();
        let ghp: GroupHp = SampledHp::sample_group(&cfg.sampled_hp, &mut grng);
        let (seq_len, train_size, gp_max) = match batch_len {
            Some((s, t)) => (s, t, cfg.max_features),
            None => {
                let s = sample_seq_len(cfg, &mut grng);
                let t = sample_train_size(cfg, &mut grng, s);
                let (s, t) = round_lengths(cfg.seq_lens_multiple_of, s, t);
                (s, t, adjust_max_features(s, cfg.max_features))
            }
        };
        let gp_size = per_gp.min(b - plans.len());
        if cfg.prior_type == PriorType::GraphScm {
            // No SCM hyper-parameters: every dataset draws its own feature and class counts.
            for _ in 0..gp_size {
                let num_features = sample_num_features(cfg, &mut grng, gp_max);
                let num_classes = (!cfg.regression).then(|| grng.randint(2, cfg.max_classes as i64 + 1) as usize);
                plans.push(DatasetPlan {
                    kind: Kind::Graph,
                    group,
                    seq_len,
                    train_size,
                    max_features: gp_max,
                    num_features,
                    num_classes,
                    hp: None,
                });
            }
            group += 1;
            continue;
        }
        let mut in_group = 0;
        while in_group < gp_size {
            let kind = match cfg.prior_type {
                PriorType::MlpScm => Kind::Mlp,
                PriorType::TreeScm => Kind::Tree,
                _ => {
                    let (p_mlp, p_tree) = cfg.fixed_hp.mix_probs;
                    if grng.uniform() * (p_mlp + p_tree) < p_mlp { Kind::Mlp } else { Kind::Tree }
                }
            };
            let num_features = sample_num_features(cfg, &mut grng, gp_max);
            let sub = ghp.subgroup(&mut grng);
            let hp = Arc::new(ScmHp::resolve(&sub, &cfg.fixed_hp.overrides));
            let sub_size = per_subgp.min(gp_size - in_group);
            for _ in 0..sub_size {
                let num_classes = if cfg.regression {
                    None
                } else if grng.uniform() > 0.5 {
                    Some(grng.randint(2, cfg.max_classes as i64 + 1) as usize)
                } else {
                    Some(2)
                };
                plans.push(DatasetPlan {
                    kind,
                    group,
                    seq_len,
                    train_size,
                    max_features: gp_max,
                    num_features,
                    num_classes,
                    hp: Some(hp.clone()),
                });
            }
            in_group += sub_size;
        }
        group += 1;
    }
    plans
}

/// Train and test parts hold the same label set with at least two classes.
pub(crate) fn valid_split(y: &[f32], train_size: usize) -> bool {
    if train_size == 0 || train_size >= y.len() {
        return false;
    }
    let labels = |s: &[f32]| {
        let mut v: Vec<i64> = s.iter().map(|&x| x as i64).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let tr = labels(&y[..train_size]);
    tr.len() >= 2 && tr == labels(&y[train_size..])
}

/// TabICL's class sanity check: if the split is invalid, try up to 10 row shuffles.
pub(crate) fn class_sanity_check(
    rng: &mut Rng,
    x: &mut Vec<f32>,
    y: &mut Vec<f32>,
    cols: usize,
    train_size: usize,
) -> bool {
    if valid_split(y, train_size) {
        return true;
    }
    let rows = y.len();
    for _ in 0..10 {
        let perm = rng.permutation(rows);
        let yp: Vec<f32> = perm.iter().map(|&i| y[i]).collect();
        if valid_split(&yp, train_size) {
            let mut xp = vec![0.0f32; x.len()];
            for (r, &i) in perm.iter().enumerate() {
                xp[r * cols..(r + 1) * cols].copy_from_slice(&x[i * cols..(i + 1) * cols]);
            }
            *x = xp;
            *y = yp;
            return true;
        }
    }
    false
}

/// Number of distinct labels.
pub(crate) fn count_labels(y: &[f32]) -> usize {
    let mut v: Vec<i64> = y.iter().map(|&v| v as i64).collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// Columns with more than one distinct value.
pub(crate) fn non_constant_columns(x: &[f32], rows: usize, cols: usize) -> Vec<usize> {
    (0..cols).filter(|&c| (1..rows).any(|r| x[r * cols + c] != x[c])).collect()
}

fn fmt_hp(kind: Kind, hp: &ScmHp) -> Vec<(String, String)> {
    if kind == Kind::Tree {
        // The tree SCM draws its own depth and width; only these sampled values reach it.
        return vec![
            ("sampling".into(), hp.sampling.name().into()),
            ("pre_sample_cause_stats".into(), hp.pre_sample_cause_stats.to_string()),
            ("noise_std".into(), format!("{:.6}", hp.noise_std)),
            ("pre_sample_noise_std".into(), hp.pre_sample_noise_std.to_string()),
            ("multiclass_type".into(), if hp.multiclass_rank { "rank" } else { "value" }.into()),
        ];
    }
    vec![
        ("num_layers".into(), hp.num_layers.to_string()),
        ("hidden_dim".into(), hp.hidden_dim.to_string()),
        ("sampling".into(), hp.sampling.name().into()),
        ("init_std".into(), format!("{:.6}", hp.init_std)),
        ("noise_std".into(), format!("{:.6}", hp.noise_std)),
        ("block_wise_dropout".into(), hp.block_wise_dropout.to_string()),
        ("mlp_dropout_prob".into(), format!("{:.6}", hp.mlp_dropout_prob)),
        ("multiclass_type".into(), if hp.multiclass_rank { "rank" } else { "value" }.into()),
        ("is_causal".into(), hp.is_causal.to_string()),
    ]
}

/// Generates one SCM dataset into its slot of the batch buffers (`x`: t_max x f, `y`: t_max).
fn generate_scm(
    cfg: &PriorConfig,
    index: u64,
    pos: usize,
    plan: &DatasetPlan,
    f: usize,
    x_out: &mut [f32],
    y_out: &mut [f32],
) -> DatasetMeta {
    let hp = plan.hp.as_ref().expect("SCM plans carry hyper-parameters");
    let (rows, nf) = (plan.seq_len, plan.num_features);
    let mut last = None;
    let mut attempts = 0;
    for attempt in 0..cfg.max_attempts {
        attempts = attempt + 1;
        let mut rng = Key::new(cfg.seed, [domain::DATASET, index, pos as u64, attempt as u64]).rng();
        let raw: RawDataset = match plan.kind {
            Kind::Mlp => mlp_scm(&mut rng, rows, nf, hp),
            _ => tree_scm(&mut rng, rows, nf, hp, &tree_shape(cfg, index, pos, attempt)),
        };
        let finite = raw.is_finite();
        let p = if finite {
            reg2cls(
                &mut rng,
                &raw.x,
                rows,
                raw.cols,
                &raw.y,
                plan.num_classes,
                hp.multiclass_rank,
                &cfg.fixed_hp,
                plan.max_features,
            )
        } else {
            // Non-finite forward pass: X := 0 and y := -100 as the reference, then rejected.
            crate::reg2cls::Processed {
                x: vec![0.0; rows * raw.cols],
                y: vec![-100.0; rows],
                categorical: vec![false; raw.cols],
            }
        };
        let keep = non_constant_columns(&p.x, rows, raw.cols);
        let mut x: Vec<f32> = if keep.len() == raw.cols {
            p.x // every column kept (the usual case): no copy
        } else {
            let mut x = Vec::with_capacity(rows * keep.len());
            for r in 0..rows {
                x.extend(keep.iter().map(|&c| p.x[r * raw.cols + c]));
            }
            x
        };
        let mut y = p.y;
        let d = keep.len();
        let mut valid = finite && d > 0;
        if valid && plan.num_classes.is_some() {
            valid = class_sanity_check(&mut rng, &mut x, &mut y, d, plan.train_size);
        }
        let categorical: Vec<usize> =
            keep.iter().enumerate().filter(|(_, c)| p.categorical[**c]).map(|(j, _)| j).collect();
        let layers = raw.layers;
        last = Some((x, y, d, categorical, valid, layers));
        if valid {
            break;
        }
    }
    let (x, y, d, categorical, valid, layers) = last.expect("at least one attempt");
    for r in 0..rows {
        x_out[r * f..r * f + d].copy_from_slice(&x[r * d..(r + 1) * d]);
    }
    y_out[..rows].copy_from_slice(&y);
    let realised_classes = if plan.num_classes.is_some() { count_labels(&y) } else { 0 };
    DatasetMeta {
        prior: plan.kind.name(),
        group: plan.group,
        num_features: nf,
        d,
        num_classes: plan.num_classes,
        realised_classes,
        categorical,
        attempts,
        valid,
        hp: fmt_hp(plan.kind, hp),
        layers,
        ..Default::default()
    }
}

fn generate_dummy(
    cfg: &PriorConfig,
    index: u64,
    pos: usize,
    plan: &DatasetPlan,
    f: usize,
    x_out: &mut [f32],
    y_out: &mut [f32],
) -> DatasetMeta {
    let mut rng = Key::new(cfg.seed, [domain::DATASET, index, pos as u64, 0]).rng();
    let rows = plan.seq_len;
    rng.fill_normal(&mut x_out[..rows * f], 0.0, 1.0);
    match plan.num_classes {
        Some(k) => {
            for v in &mut y_out[..rows] {
                *v = rng.below(k as u64) as f32;
            }
        }
        None => rng.fill_normal(&mut y_out[..rows], 0.0, 1.0),
    }
    DatasetMeta {
        prior: "dummy",
        num_features: f,
        d: f,
        num_classes: plan.num_classes,
        realised_classes: plan.num_classes.map_or(0, |_| count_labels(&y_out[..rows])),
        attempts: 1,
        valid: true,
        ..Default::default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The tree sizes of one dataset attempt (a stream of its own, see [`TreeShape::draw`]).
fn tree_shape(cfg: &PriorConfig, index: u64, pos: usize, attempt: usize) -> TreeShape {
    let mut rng = Key::new(cfg.seed, [domain::TREE_SHAPE, index, pos as u64, attempt as u64]).rng();
    TreeShape::draw(&mut rng, cfg.fixed_hp.tree_depth_lambda, cfg.fixed_hp.tree_n_estimators_lambda)
}

/// Approximate nanoseconds of a dataset's first attempt, for scheduling only; the weights are
/// rough single-core measurements (~17 ns per MLP unit and row, ~0.75 ns per tree work unit).
fn estimated_cost(cfg: &PriorConfig, index: u64, pos: usize, plan: &DatasetPlan) -> f64 {
    let nf = plan.num_features as f64;
    let per_row = match (plan.kind, &plan.hp) {
        (Kind::Mlp, Some(hp)) => 17.0 * (hp.num_layers * hp.hidden_dim.max(plan.num_features)) as f64 + 10.0 * nf,
        (Kind::Tree, _) => 0.75 * tree_shape(cfg, index, pos, 0).work_per_row(plan.num_features) + 10.0 * nf,
        (Kind::Graph, _) => 400.0 + 20.0 * nf,
        _ => plan.max_features as f64,
    };
    plan.seq_len as f64 * per_row
}

/// One dataset's slot: (position, ((X rows, y rows), plan)); X is zeroed by the worker.
type WorkItem<'a> = (usize, ((&'a mut [MaybeUninit<f32>], &'a mut [f32]), &'a DatasetPlan));

/// Zeroes a slot and views it as initialised.
fn zeroed(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    s.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just written, and MaybeUninit<f32> has f32's layout.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Generates batch `index` on `threads` threads (a fork-safe pool of this process).
pub fn generate_batch(cfg: &PriorConfig, index: u64, threads: usize) -> Batch {
    let plans = plan_batch(cfg, index);
    let b = plans.len();
    let t = plans.iter().map(|p| p.seq_len).max().unwrap_or(0);
    let f = cfg.max_features;
    // X is left uninitialised and each dataset zeroes its own slot just before writing it, on
    // its worker's thread and while the slot is in cache, rather than in one pass over the
    // whole buffer first; a batch buffer reused by the allocator is then written once.
    let mut x: Vec<MaybeUninit<f32>> = Vec::with_capacity(b * t * f);
    // SAFETY: MaybeUninit needs no initialisation; the length is the capacity just reserved.
    unsafe { x.set_len(b * t * f) };
    let mut y = vec![0.0f32; b * t];
    let work = |(pos, ((xs, ys), plan)): WorkItem<'_>| {
        let xs = zeroed(xs);
        match plan.kind {
            Kind::Dummy => generate_dummy(cfg, index, pos, plan, f, xs, ys),
            Kind::Graph => crate::graph::generate(cfg, &cfg.graph, index, pos, plan, f, xs, ys),
            _ => generate_scm(cfg, index, pos, plan, f, xs, ys),
        }
    };
    let meta: Vec<DatasetMeta> = if threads <= 1 || b <= 1 {
        x.chunks_mut(t * f).zip(y.chunks_mut(t)).zip(plans.iter()).enumerate().map(work).collect()
    } else {
        // Dataset costs differ by orders of magnitude (a 12-layer, 250-wide MLP next to a
        // 2-layer tree). Threads pull datasets from one queue, most expensive first, so a
        // large one never starts last and leaves the other threads idle at the end.
        let mut order: Vec<usize> = (0..b).collect();
        let cost: Vec<f64> = plans.iter().enumerate().map(|(pos, p)| estimated_cost(cfg, index, pos, p)).collect();
        order.sort_by(|&i, &j| cost[j].total_cmp(&cost[i]));
        let slots: Vec<Mutex<Option<WorkItem<'_>>>> = x
            .chunks_mut(t * f)
            .zip(y.chunks_mut(t))
            .zip(plans.iter())
            .enumerate()
            .map(|item| Mutex::new(Some(item)))
            .collect();
        let done: Vec<Mutex<Option<DatasetMeta>>> = (0..b).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        pool::pool(threads).scope(|scope| {
            for _ in 0..threads.min(b) {
                scope.spawn(|_| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        if k >= b {
                            break;
                        }
                        let pos = order[k];
                        let item = lock(&slots[pos]).take().expect("each dataset is taken once");
                        *lock(&done[pos]) = Some(work(item));
                    }
                });
            }
        });
        done.into_iter().map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner).expect("generated")).collect()
    };
    // Every slot went through `work` exactly once (a panic there never gets here).
    let mut x = std::mem::ManuallyDrop::new(x);
    // SAFETY: all b * t * f values are initialised, and the allocation is x's own, with the
    // layout of a Vec<f32> of the same capacity.
    let x = unsafe { Vec::from_raw_parts(x.as_mut_ptr().cast::<f32>(), x.len(), x.capacity()) };
    Batch {
        b,
        t,
        f,
        d: meta.iter().map(|m| m.d as i64).collect(),
        seq_lens: plans.iter().map(|p| p.seq_len as i64).collect(),
        train_sizes: plans.iter().map(|p| p.train_size as i64).collect(),
        x,
        y,
        meta,
    }
}
