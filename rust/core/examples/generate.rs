//! Generates batches from a JSON prior configuration and reports throughput; a harness for
//! profiling the core without Python (`perf record target/release/examples/generate ...`).
//!
//! Usage: generate CONFIG.json [NUM_BATCHES] [THREADS] [ZSTD_LEVEL]
//! With ZSTD_LEVEL, every batch is also encoded as a corpus shard (in memory, not written),
//! and the encoding time is reported apart.
//! (`python -c "from tabfm.prior import PriorDataset; print(PriorDataset(...)._engine.config_json)"`
//! prints a configuration.)

use std::time::Instant;

use tabfm_core::alloc::HugeAlloc;
use tabfm_core::batch::generate_batch;
use tabfm_core::config::PriorConfig;
use tabfm_core::parquet::{Column, ColumnData, WriteOptions, encode};

// The extension's allocator, so that the harness measures what Python users get.
#[global_allocator]
static ALLOC: HugeAlloc = HugeAlloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: generate CONFIG.json [NUM_BATCHES] [THREADS] [ZSTD_LEVEL]");
        std::process::exit(2);
    };
    let json = std::fs::read_to_string(path).expect("readable configuration file");
    let cfg = PriorConfig::from_json(&json).unwrap_or_else(|e| panic!("{e}"));
    let batches: u64 = args.get(2).map_or(4, |s| s.parse().expect("NUM_BATCHES is an integer"));
    let threads: usize = args.get(3).map_or(1, |s| s.parse().expect("THREADS is an integer"));
    let level: Option<i32> = args.get(4).map(|s| s.parse().expect("ZSTD_LEVEL is an integer"));
    let start = Instant::now();
    let mut datasets = 0;
    let mut cells = 0usize;
    let (mut encoding, mut bytes) = (0.0, 0usize);
    for i in 0..batches {
        let b = generate_batch(&cfg, i, threads);
        datasets += b.b;
        cells += b.d.iter().zip(&b.seq_lens).map(|(d, s)| (d * s) as usize).sum::<usize>();
        if level.is_some() {
            let t0 = Instant::now();
            bytes += encode_shard(&b, level, threads);
            encoding += t0.elapsed().as_secs_f64();
        }
    }
    let dt = start.elapsed().as_secs_f64() - encoding;
    if level.is_some() {
        println!(
            "shards: {encoding:.3} s encoding ({:.1} % of generation), {:.3} bytes per active cell",
            100.0 * encoding / dt,
            bytes as f64 / cells as f64
        );
    }
    println!(
        "{datasets} datasets in {dt:.3} s: {:.1} datasets/s, {:.2} M cells/s",
        datasets as f64 / dt,
        cells as f64 / dt / 1e6
    );
}

/// The float columns of a corpus shard (the metadata columns are small).
fn encode_shard(b: &tabfm_core::batch::Batch, level: Option<i32>, threads: usize) -> usize {
    let rows: Vec<usize> = b.seq_lens.iter().map(|&n| n as usize).collect();
    let columns = [
        Column {
            name: "x",
            data: ColumnData::PaddedF32 {
                data: &b.x,
                t_max: b.t,
                f_max: b.f,
                rows: rows.clone(),
                cols: b.d.iter().map(|&n| n as usize).collect(),
            },
        },
        Column {
            name: "y",
            data: ColumnData::PaddedF32 { data: &b.y, t_max: b.t, f_max: 1, rows, cols: vec![1; b.b] },
        },
    ];
    let opts = WriteOptions { row_group: 8, zstd_level: level, key_value: vec![], created_by: "tabfm".into() };
    encode(&columns, &opts, threads).expect("valid shard").len()
}
