//! Generates batches from a JSON prior configuration and reports throughput; a harness for
//! profiling the core without Python (`perf record target/release/examples/generate ...`).
//!
//! Usage: generate CONFIG.json [NUM_BATCHES] [THREADS]
//! (`python -c "from tabfm.prior import PriorDataset; print(PriorDataset(...)._engine.config_json)"`
//! prints a configuration.)

use std::time::Instant;

use tabfm_core::batch::generate_batch;
use tabfm_core::config::PriorConfig;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: generate CONFIG.json [NUM_BATCHES] [THREADS]");
        std::process::exit(2);
    };
    let json = std::fs::read_to_string(path).expect("readable configuration file");
    let cfg = PriorConfig::from_json(&json).unwrap_or_else(|e| panic!("{e}"));
    let batches: u64 = args.get(2).map_or(4, |s| s.parse().expect("NUM_BATCHES is an integer"));
    let threads: usize = args.get(3).map_or(1, |s| s.parse().expect("THREADS is an integer"));
    let start = Instant::now();
    let mut datasets = 0;
    let mut cells = 0usize;
    for i in 0..batches {
        let b = generate_batch(&cfg, i, threads);
        datasets += b.b;
        cells += b.d.iter().zip(&b.seq_lens).map(|(d, s)| (d * s) as usize).sum::<usize>();
    }
    let dt = start.elapsed().as_secs_f64();
    println!(
        "{datasets} datasets in {dt:.3} s: {:.1} datasets/s, {:.2} M cells/s",
        datasets as f64 / dt,
        cells as f64 / dt / 1e6
    );
}
