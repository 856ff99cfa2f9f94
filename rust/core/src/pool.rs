//! A process-local, fork-safe rayon pool.
//!
//! rayon's global registry survives `fork()` without its threads, so the first parallel
//! call in a forked child (a PyTorch DataLoader worker) would hang forever. tabfm never
//! touches the global pool: it keeps its own pools keyed by the process id and, in a
//! forked child, abandons (leaks) the parent's pools and builds fresh ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// What a pool is for: generation, or encoding corpus shards beside a generation running on
/// its own pool (shard compression must not queue behind a batch's datasets, nor delay them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Generate,
    Encode,
}

struct Pools {
    pid: u32,
    by_key: HashMap<(Role, usize), Arc<ThreadPool>>,
}

static POOLS: Mutex<Option<Pools>> = Mutex::new(None);

/// Number of threads `n_jobs = -1` resolves to.
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Resolves a user `n_jobs` (-1 = all cores, k >= 1 = k threads).
pub fn resolve_threads(n_jobs: i64) -> usize {
    if n_jobs < 1 { available_threads() } else { n_jobs as usize }
}

/// The generation pool with `threads` workers for this process, built on first use.
pub fn pool(threads: usize) -> Arc<ThreadPool> {
    pool_for(Role::Generate, threads)
}

/// The pool for `role` with `threads` workers for this process, built on first use.
pub fn pool_for(role: Role, threads: usize) -> Arc<ThreadPool> {
    let pid = std::process::id();
    let mut slot = POOLS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if slot.as_ref().is_some_and(|p| p.pid != pid) {
        // Forked child: the parent's worker threads do not exist here. Dropping the pools
        // would try to signal them, so leak the handles instead.
        if let Some(old) = slot.take() {
            std::mem::forget(old);
        }
    }
    let pools = slot.get_or_insert_with(|| Pools { pid, by_key: HashMap::new() });
    let prefix = match role {
        Role::Generate => "tabfm",
        Role::Encode => "tabfm-io",
    };
    pools
        .by_key
        .entry((role, threads))
        .or_insert_with(|| {
            Arc::new(
                ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(move |i| format!("{prefix}-{i}"))
                    .build()
                    .expect("failed to start the tabfm thread pool"),
            )
        })
        .clone()
}
