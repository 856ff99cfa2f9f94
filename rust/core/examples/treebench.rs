//! Times `tree::fit_predict` alone, on the shapes a tree SCM layer fits; a harness for
//! profiling the booster without the rest of the prior.
//!
//! Usage: treebench ROWS FEATURES OUTPUTS DEPTH TREES REPS
//! (a tree SCM's first layer at the benchmark settings: `treebench 1024 50 6 4 4 100`).

use std::time::Instant;

use tabfm_core::rng::Key;
use tabfm_core::tree::{BoosterParams, fit_predict};

fn main() {
    let args: Vec<usize> =
        std::env::args().skip(1).map(|s| s.parse().expect("every argument is a non-negative integer")).collect();
    let [n, p, o, depth, trees, reps] = args[..] else {
        eprintln!("usage: treebench ROWS FEATURES OUTPUTS DEPTH TREES REPS");
        std::process::exit(2);
    };
    let mut rng = Key::new(7, [1, 0, 0, 0]).rng();
    let mut x = vec![0f32; n * p];
    rng.fill_normal(&mut x, 0.0, 1.0);
    let mut y = vec![0f32; n * o];
    rng.fill_normal(&mut y, 0.0, 1.0);
    let params = BoosterParams::new(depth, trees);
    // Sum one prediction per fit so that no fit can be optimised away.
    let mut check = 0f32;
    let start = Instant::now();
    for _ in 0..reps.max(1) {
        check += fit_predict(&x, n, p, &y, o, &params).first().copied().unwrap_or(0.0);
    }
    let per_fit = start.elapsed().as_secs_f64() / reps.max(1) as f64;
    println!("{:.1} us per fit (check {check})", per_fit * 1e6);
}
