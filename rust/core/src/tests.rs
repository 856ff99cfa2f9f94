//! Cross-module tests: determinism across thread counts and the shape of batches.

use crate::batch::generate_batch;
use crate::config::PriorConfig;

/// The bit patterns of `v`: the comparison the bit-for-bit kernel tests make (NaN and the
/// sign of zero included, which `==` on floats would not).
pub(crate) fn f32_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn config(prior: &str, batch_size: usize, extra: &str) -> PriorConfig {
    let json = format!(
        r#"{{
        "prior_type": "{prior}", "seed": 7, "batch_size": {batch_size}, "batch_size_per_gp": 4,
        "batch_size_per_subgp": 4, "min_features": 2, "max_features": 12, "log_n_features": false,
        "max_classes": 10, "regression": false, "min_seq_len": null, "max_seq_len": 128,
        "log_seq_len": false, "seq_len_per_gp": false,
        "train_size": {{"kind": "fraction", "min": 0.1, "max": 0.9}}, "replay_small": false,
        "fixed_hp": {{"mix_probs": [0.7, 0.3], "tree_depth_lambda": 0.5, "tree_n_estimators_lambda": 0.5,
            "balanced": false, "multiclass_ordered_prob": 0.0, "cat_prob": 0.2, "max_categories": null,
            "scale_by_max_features": false, "permute_features": true, "permute_labels": true,
            "overrides": {{"is_causal": false}}}},
        "sampled_hp": {{
            "multiclass_type": {{"distribution": "meta_choice", "choice_values": ["value", "rank"]}},
            "mlp_activations": {{"distribution": "meta_choice_mixed", "choice_values": ["tanh", "random_function", "random_choice", "exp"]}},
            "block_wise_dropout": {{"distribution": "meta_choice", "choice_values": [true, false]}},
            "mlp_dropout_prob": {{"distribution": "meta_beta", "scale": 0.9, "min": 0.1, "max": 5.0}},
            "num_layers": {{"distribution": "meta_trunc_norm_log_scaled", "max_mean": 6, "min_mean": 1, "round": true, "lower_bound": 2}},
            "hidden_dim": {{"distribution": "meta_trunc_norm_log_scaled", "max_mean": 130, "min_mean": 5, "round": true, "lower_bound": 4}},
            "init_std": {{"distribution": "meta_trunc_norm_log_scaled", "max_mean": 10.0, "min_mean": 0.01, "round": false, "lower_bound": 0.0}},
            "noise_std": {{"distribution": "meta_trunc_norm_log_scaled", "max_mean": 0.3, "min_mean": 0.0001, "round": false, "lower_bound": 0.0}},
            "sampling": {{"distribution": "meta_choice", "choice_values": ["normal", "mixed", "uniform"]}},
            "pre_sample_cause_stats": {{"distribution": "meta_choice", "choice_values": [true, false]}},
            "pre_sample_noise_std": {{"distribution": "meta_choice", "choice_values": [true, false]}}
        }}{extra}
    }}"#
    );
    PriorConfig::from_json(&json).expect("valid test config")
}

#[test]
fn identical_for_any_thread_count() {
    for prior in ["mlp_scm", "tree_scm", "mix_scm", "graph_scm", "dummy"] {
        let cfg = config(prior, 8, "");
        let a = generate_batch(&cfg, 3, 1);
        let b = generate_batch(&cfg, 3, 2);
        let c = generate_batch(&cfg, 3, 4);
        assert_eq!(a.x, b.x, "{prior}");
        assert_eq!(a.x, c.x, "{prior}");
        assert_eq!(a.y, c.y, "{prior}");
        assert_eq!(a.d, c.d, "{prior}");
    }
}

#[test]
fn batches_have_the_documented_shape() {
    let cfg = config("mix_scm", 8, "");
    let b = generate_batch(&cfg, 0, 1);
    assert_eq!((b.b, b.t, b.f), (8, 128, 12));
    assert_eq!(b.x.len(), 8 * 128 * 12);
    for i in 0..8 {
        let d = b.d[i] as usize;
        assert!((1..=12).contains(&d));
        // Zero padding beyond d.
        for r in 0..128 {
            assert!(b.x[(i * 128 + r) * 12 + d..(i * 128 + r + 1) * 12].iter().all(|&v| v == 0.0));
        }
        let ts = b.train_sizes[i] as usize;
        let m = &b.meta[i];
        assert!(m.valid, "dataset {i} invalid after {} attempts", m.attempts);
        // Same label set in train and test, dense labels.
        let y = &b.y[i * 128..(i + 1) * 128];
        let mut tr: Vec<i64> = y[..ts].iter().map(|&v| v as i64).collect();
        let mut te: Vec<i64> = y[ts..].iter().map(|&v| v as i64).collect();
        tr.sort_unstable();
        tr.dedup();
        te.sort_unstable();
        te.dedup();
        assert_eq!(tr, te);
        assert_eq!(tr, (0..tr.len() as i64).collect::<Vec<_>>());
    }
    // Groups of 4 share seq_len here (one per batch) and hyper-parameters.
    assert!(b.seq_lens.iter().all(|&s| s == 128));
}

#[test]
fn batch_indices_are_independent() {
    let cfg = config("mlp_scm", 4, "");
    let a = generate_batch(&cfg, 0, 1);
    let b = generate_batch(&cfg, 1, 1);
    assert_ne!(a.x, b.x);
    // Drawing batch 1 first does not change batch 0.
    let a2 = generate_batch(&cfg, 0, 1);
    assert_eq!(a.x, a2.x);
}

#[test]
fn regression_targets_are_standardised() {
    let mut cfg = config("mlp_scm", 4, "");
    cfg.regression = true;
    cfg.max_classes = 0;
    let b = generate_batch(&cfg, 0, 1);
    for i in 0..4 {
        let y = &b.y[i * 128..(i + 1) * 128];
        let m = y.iter().map(|&v| f64::from(v)).sum::<f64>() / 128.0;
        assert!(m.abs() < 0.2, "mean {m}");
        assert!(y.iter().any(|v| v.fract() != 0.0));
    }
}

#[test]
fn seq_len_per_group_pads_to_the_longest() {
    let mut cfg = config("mlp_scm", 8, "");
    cfg.min_seq_len = Some(50);
    cfg.seq_len_per_gp = true;
    let b = generate_batch(&cfg, 2, 2);
    let t = *b.seq_lens.iter().max().unwrap() as usize;
    assert_eq!(b.t, t);
    for i in 0..8 {
        let s = b.seq_lens[i] as usize;
        assert!(b.x[(i * t + s) * 12..(i + 1) * t * 12].iter().all(|&v| v == 0.0), "rows beyond seq_len are zero");
    }
    // Two groups: within a group one seq_len.
    assert!(b.seq_lens[0..4].iter().all(|&s| s == b.seq_lens[0]));
    assert!(b.seq_lens[4..8].iter().all(|&s| s == b.seq_lens[4]));
}

#[test]
fn graph_datasets_respect_the_structural_filter() {
    let cfg = config("graph_scm", 16, "");
    let batch = generate_batch(&cfg, 1, 2);
    for m in &batch.meta {
        let lin = m.lineage.as_ref().expect("graph datasets carry their lineage");
        assert!(m.valid, "{:?}", m.rejections);
        // Acyclic by construction: every parent index is below its child's.
        for (j, ps) in lin.parents.iter().enumerate() {
            assert!(ps.iter().all(|&p| p < j));
        }
        assert!(!lin.parents[lin.target_node].is_empty(), "the target is not a root");
        assert!(lin.relevant_features.len() >= 2, "at least two emitted features feed the target");
        assert_eq!(lin.feature_nodes.len(), m.d);
        assert_eq!(m.attempts, 1 + m.rejections.iter().map(|(_, c)| c).sum::<usize>());
    }
}
