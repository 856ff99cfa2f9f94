//! The global allocator of the extension: blocks of 16 MiB and more straight from the kernel
//! on 2 MiB-aligned mappings advised for transparent huge pages, freed ones kept for reuse
//! (up to 128 MiB), everything else from the system allocator.
//!
//! Why: a batch's X (64 x 1024 x 100 float32 cells, 26 MB) is a fresh buffer every batch,
//! because numpy and torch own it once it is returned. Faulted in 4 KiB at a time, 26 MB
//! cost 14-18 ms of page faults on the 2-core development VM (2.3 ms in 2 MiB pages, 1.1 ms
//! to clear memory already mapped), against about 150 ms to generate the batch on one core:
//! the 13,400 faults of 8 mlp_scm batches drop to 740. Fresh mappings are zero, so zeroed
//! allocations need no memset. Where transparent huge pages are off (`never`), the advice
//! is ignored and the mapping behaves like the system allocator's own mappings of large
//! blocks. Smaller blocks stay with the system allocator, whose heap keeps the per-dataset
//! buffers faulted in from one dataset to the next.
//!
//! The previous batch's X is freed as the next one is drawn, so a freed block is kept
//! mapped (see [`CACHE_BYTES`]) and the next large allocation takes it: no fault and no
//! kernel clearing at all in steady state, which also spares the hypervisor's work behind
//! each fresh page (the first clear of a mapping ran at 3-4 GB/s on the VM).
//!
//! Only Rust allocations go through it (numpy and torch keep their own); buffers handed to
//! numpy are freed through it when numpy drops them.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of at least this size are mapped directly.
pub const LARGE: usize = 16 << 20;

/// Huge-page size and the alignment of every direct mapping.
const HUGE: usize = 2 << 20;

/// See the module documentation.
pub struct HugeAlloc;

#[inline]
fn direct(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= LARGE && layout.align() <= HUGE
}

/// Length of the mapping behind a direct allocation of `size` bytes: whole huge pages, so
/// that the tail is huge-page backed too.
#[inline]
fn mapped_len(size: usize) -> usize {
    size.div_ceil(HUGE) * HUGE
}

/// Freed direct blocks stay mapped, for the next large allocation, up to this many bytes in
/// all (and `CACHE_SLOTS` blocks): the X of batches of 64 (26 MB) is reused, while a batch
/// of 512 (210 MB) always goes back to the kernel, so that idle memory stays bounded.
pub const CACHE_BYTES: usize = 128 << 20;
const CACHE_SLOTS: usize = 4;

/// A free list of mappings `(address, mapped length)` behind a try-lock: a thread that finds
/// it busy maps or unmaps directly instead of waiting, so no thread ever blocks in the
/// allocator, and a fork while another thread held it leaves the child without a cache
/// rather than deadlocked.
struct Cache {
    busy: std::sync::atomic::AtomicBool,
    slots: std::cell::UnsafeCell<[(usize, usize); CACHE_SLOTS]>,
}

// SAFETY: `slots` is only touched by the thread that set `busy`.
unsafe impl Sync for Cache {}

impl Cache {
    const fn new() -> Cache {
        Cache {
            busy: std::sync::atomic::AtomicBool::new(false),
            slots: std::cell::UnsafeCell::new([(0, 0); CACHE_SLOTS]),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut [(usize, usize); CACHE_SLOTS]) -> R) -> Option<R> {
        use std::sync::atomic::Ordering;
        self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).ok()?;
        // SAFETY: this thread holds the flag, so it is the only one using `slots`.
        let r = f(unsafe { &mut *self.slots.get() });
        self.busy.store(false, Ordering::Release);
        Some(r)
    }

    /// The smallest cached mapping of at least `len` bytes, taken out of the cache.
    fn take(&self, len: usize) -> Option<(usize, usize)> {
        self.with(|slots| {
            let i = (0..CACHE_SLOTS).filter(|&i| slots[i].1 > 0 && slots[i].1 >= len).min_by_key(|&i| slots[i].1)?;
            Some(std::mem::take(&mut slots[i]))
        })
        .flatten()
    }

    /// Keeps a mapping of `len` bytes if it is among the largest that fit the bounds: while
    /// they are exceeded, the smallest of the cached blocks and the new one goes (the new one
    /// on a tie). Returns the mappings the caller must unmap.
    fn put(&self, addr: usize, len: usize) -> [(usize, usize); CACHE_SLOTS + 1] {
        let mut refused = [(0, 0); CACHE_SLOTS + 1];
        refused[0] = (addr, len);
        if len > CACHE_BYTES {
            return refused;
        }
        self.with(|slots| {
            let mut out = [(0, 0); CACHE_SLOTS + 1];
            let mut n = 0;
            loop {
                let total: usize = slots.iter().map(|s| s.1).sum();
                let free = slots.iter().position(|s| s.1 == 0);
                if let Some(i) = free.filter(|_| total + len <= CACHE_BYTES) {
                    slots[i] = (addr, len);
                    return out;
                }
                let smallest = (0..CACHE_SLOTS).filter(|&i| slots[i].1 > 0).min_by_key(|&i| slots[i].1);
                let i = smallest.expect("a full cache holds a mapping");
                if slots[i].1 <= len {
                    out[n] = std::mem::take(&mut slots[i]);
                    n += 1;
                } else {
                    out[n] = (addr, len);
                    return out;
                }
            }
        })
        .unwrap_or(refused)
    }
}

static CACHE: Cache = Cache::new();

#[cfg(target_os = "linux")]
mod os {
    use super::{HUGE, mapped_len};

    /// Whether glibc's thresholds were raised. A flag, not a `Once`: a fork while another
    /// thread ran a `Once` would leave the child waiting on it forever, and priming twice
    /// is harmless.
    static PRIMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// Maps `mapped_len(size)` zeroed bytes at a 2 MiB boundary, or returns null.
    pub fn map(size: usize) -> *mut u8 {
        // glibc's malloc raises its mapping threshold (from 128 KiB, up to 32 MiB) and its
        // heap trim threshold (to twice that) when a block it mapped is freed (mallopt(3)),
        // and from then on serves smaller blocks from its heap, whose pages stay faulted in.
        // With the large blocks taken away from it, that would never happen: every block
        // of 128 KiB to 16 MiB would be a fresh mapping, faulted in page by page, and the
        // heap would be trimmed and faulted in again (tree_scm, with a 4 MiB threshold: 68,000
        // faults for 8 batches instead of 1,200). One block just under 32 MiB, mapped and
        // freed, raises both thresholds as freeing a batch buffer did. Elsewhere this is one
        // allocation and its free.
        if !PRIMED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: a plain malloc and free of the block it returned; black_box keeps the
            // compiler from eliding the pair.
            unsafe { libc::free(std::hint::black_box(libc::malloc((32 << 20) - (64 << 10)))) };
        }
        let len = mapped_len(size);
        let Some(span) = len.checked_add(HUGE) else { return std::ptr::null_mut() };
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        // Over-map by one huge page, then return the unaligned head and the tail to the kernel.
        let addr = base as usize;
        let start = addr.next_multiple_of(HUGE);
        let (head, tail) = (start - addr, span - (start - addr) - len);
        // SAFETY: both ranges lie inside the mapping just made and outside [start, start + len).
        unsafe {
            if head > 0 {
                libc::munmap(base, head);
            }
            if tail > 0 {
                libc::munmap((start + len) as *mut libc::c_void, tail);
            }
            // Advice only: where huge pages are unavailable the mapping stays as it is.
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        start as *mut u8
    }

    /// Unmaps `len` bytes (whole huge pages) of a block from [`map`].
    ///
    /// # Safety
    /// `[ptr, ptr + len)` lies in one block from `map` and is not used afterwards.
    pub unsafe fn unmap(ptr: *mut u8, len: usize) {
        // SAFETY: the caller's contract.
        unsafe { libc::munmap(ptr.cast(), len) };
    }

    /// Resizes a block from [`map`] of `size` bytes to `new_size` bytes, moving its pages
    /// rather than copying them; null where the kernel refuses (the block is then intact).
    /// The result is page-aligned, not necessarily 2 MiB-aligned.
    ///
    /// # Safety
    /// `ptr` came from `map(size)`; on success it is not used afterwards.
    pub unsafe fn remap(ptr: *mut u8, size: usize, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract; the old mapping is exactly mapped_len(size) bytes.
        let moved = unsafe { libc::mremap(ptr.cast(), mapped_len(size), mapped_len(new_size), libc::MREMAP_MAYMOVE) };
        if moved == libc::MAP_FAILED { std::ptr::null_mut() } else { moved.cast() }
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    pub fn map(_size: usize) -> *mut u8 {
        unreachable!("direct mappings are Linux only")
    }
    pub unsafe fn unmap(_ptr: *mut u8, _len: usize) {
        unreachable!("direct mappings are Linux only")
    }
    pub unsafe fn remap(_ptr: *mut u8, _size: usize, _new_size: usize) -> *mut u8 {
        unreachable!("direct mappings are Linux only")
    }
}

// SAFETY: every block is freed by the allocator that made it: `direct` depends only on the
// layout, which the caller passes unchanged to `dealloc` (and as old layout to `realloc`).
unsafe impl GlobalAlloc for HugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if direct(layout) {
            return Self::map(layout.size()).0;
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if direct(layout) {
            let (p, fresh) = Self::map(layout.size());
            // Fresh anonymous mappings are zero; a reused one holds its last owner's bytes.
            if !fresh {
                // SAFETY: the block holds at least layout.size() writable bytes.
                unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            }
            return p;
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if direct(layout) {
            let len = mapped_len(layout.size());
            // A block moved by `mremap` is only page-aligned: unmapped, never cached, as the
            // cache hands out 2 MiB-aligned blocks.
            let unmap = if (ptr as usize).is_multiple_of(HUGE) {
                CACHE.put(ptr as usize, len)
            } else {
                let mut only = [(0, 0); CACHE_SLOTS + 1];
                only[0] = (ptr as usize, len);
                only
            };
            for (addr, len) in unmap {
                if len > 0 {
                    // SAFETY: a direct mapping of exactly `len` bytes that nothing uses any more.
                    unsafe { os::unmap(addr as *mut u8, len) };
                }
            }
            return;
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees new_size, rounded to the alignment, fits in isize.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (direct(layout), direct(new)) {
            // SAFETY: forwarded with the caller's arguments.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) if mapped_len(new_size) == mapped_len(layout.size()) => ptr,
            // Growing a large vector moves its pages instead of copying them (as the system
            // allocator does for its own mappings); only page alignment survives the move.
            (true, true) if layout.align() <= 4096 => {
                // SAFETY: a direct block of layout.size() bytes, not used again if moved.
                let moved = unsafe { os::remap(ptr, layout.size(), new_size) };
                if !moved.is_null() {
                    return moved;
                }
                // SAFETY: as in the general case below; the block is intact.
                unsafe { self.realloc_by_copy(ptr, layout, new) }
            }
            // SAFETY: the caller's contract.
            _ => unsafe { self.realloc_by_copy(ptr, layout, new) },
        }
    }
}

impl HugeAlloc {
    /// A direct block of `size` bytes (a cached mapping when one is large enough, cut to
    /// length) and whether it is freshly mapped; null where the kernel refuses.
    fn map(size: usize) -> (*mut u8, bool) {
        let len = mapped_len(size);
        match CACHE.take(len) {
            Some((addr, have)) => {
                if have > len {
                    // SAFETY: the tail of a cached mapping, which nothing uses.
                    unsafe { os::unmap((addr + len) as *mut u8, have - len) };
                }
                (addr as *mut u8, false)
            }
            None => (os::map(size), true),
        }
    }

    /// Reallocation as a fresh block, a copy and the old block freed.
    ///
    /// # Safety
    /// As `GlobalAlloc::realloc`, with `new` the new layout.
    unsafe fn realloc_by_copy(&self, ptr: *mut u8, layout: Layout, new: Layout) -> *mut u8 {
        // SAFETY: `new` is a valid layout of non-zero size (the caller's contract).
        let fresh = unsafe { self.alloc(new) };
        if !fresh.is_null() {
            // SAFETY: both blocks hold at least the copied length and do not overlap; the old
            // block is freed with its own layout.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new.size()));
                self.dealloc(ptr, layout);
            }
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests that allocate through `HugeAlloc` share its cache: one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    #[cfg(target_os = "linux")]
    fn large_blocks_are_aligned_zeroed_and_survive_reallocation() {
        let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let a = HugeAlloc;
        let pattern = |i: usize| (i * 7 % 251 + 1) as u8;
        // Alignment 64 grows by moving pages, 64 KiB by a copy (a move keeps only page
        // alignment).
        for align in [64, 1 << 16] {
            for size in [LARGE - 1, LARGE, LARGE + 12_345, LARGE + 3 * HUGE + 1] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero layouts; every block is freed once, with its layout.
                unsafe {
                    let p = a.alloc_zeroed(layout);
                    assert!(!p.is_null());
                    let block = std::slice::from_raw_parts_mut(p, size);
                    assert!(block.iter().all(|&b| b == 0), "size {size}: not zeroed");
                    if direct(layout) {
                        assert_eq!(p as usize % HUGE, 0, "size {size}: not 2 MiB aligned");
                        assert!(mapped(p, mapped_len(size)), "size {size}: mapping shorter than its length");
                    }
                    block[..1000].iter_mut().enumerate().for_each(|(i, b)| *b = pattern(i));
                    for i in (1000..size).step_by(4093) {
                        block[i] = pattern(i);
                    }
                    block[size - 1] = 7;
                    // Grow within the mapping, past it, then shrink below the threshold.
                    let (mut at, mut held, mut tail) = (p, layout, None);
                    for grown in [size + 100, size + HUGE, size + 5 * HUGE] {
                        at = a.realloc(at, held, grown);
                        assert!(!at.is_null());
                        assert_eq!(at as usize % align, 0, "size {size}: alignment {align} lost");
                        held = Layout::from_size_align(grown, align).unwrap();
                        let g = std::slice::from_raw_parts(at, grown);
                        assert!((0..1000).all(|i| g[i] == pattern(i)), "size {size}: head lost growing to {grown}");
                        for i in (1000..size - 1).step_by(4093) {
                            assert_eq!(g[i], pattern(i), "size {size}: byte {i} lost growing to {grown}");
                        }
                        assert_eq!(g[size - 1], 7);
                        if let Some(t) = tail {
                            assert_eq!(g[t], 1, "size {size}: the last tail lost growing to {grown}");
                        }
                        if direct(held) {
                            assert!(mapped(at, mapped_len(grown)), "size {size}: mapping shorter than {grown}");
                        }
                        // The new tail is writable, and kept by the next growth.
                        *at.add(grown - 1) = 1;
                        tail = Some(grown - 1);
                    }
                    let shrunk = a.realloc(at, held, 1000);
                    assert!(!shrunk.is_null());
                    let s = std::slice::from_raw_parts(shrunk, 1000);
                    assert!((0..1000).all(|i| s[i] == pattern(i)), "size {size}: lost shrinking");
                    a.dealloc(shrunk, Layout::from_size_align(1000, align).unwrap());
                }
            }
        }
    }

    /// Unmaps every block the global cache holds.
    #[cfg(target_os = "linux")]
    fn drain_cache() {
        while let Some((addr, len)) = CACHE.take(0) {
            // SAFETY: a cached block is a whole direct mapping that nothing uses.
            unsafe { os::unmap(addr as *mut u8, len) };
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn freed_large_blocks_are_reused_cut_to_length_and_zeroed_on_request() {
        let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let a = HugeAlloc;
        let big = Layout::from_size_align(LARGE + 5 * HUGE + 3, 64).unwrap();
        let small = Layout::from_size_align(LARGE + 1, 64).unwrap();
        // SAFETY: non-zero layouts; every block is freed once, with its layout.
        unsafe {
            // Empty the cache of what other blocks may have left there.
            drain_cache();
            let p = a.alloc(big);
            std::ptr::write_bytes(p, 0xab, big.size());
            a.dealloc(p, big);
            // A smaller block takes the freed mapping, zeroed, and its tail is unmapped.
            let q = a.alloc_zeroed(small);
            assert_eq!(q, p, "the freed mapping was not reused");
            let block = std::slice::from_raw_parts(q, small.size());
            assert!(block.iter().all(|&b| b == 0), "a reused block was not zeroed");
            assert!(mapped(q, mapped_len(small.size())));
            let tail = q.add(mapped_len(small.size()));
            assert!(!mapped(tail, HUGE), "the cut tail is still mapped");
            a.dealloc(q, small);
            // Without zeroing, the block comes back as its last owner left it.
            let r = a.alloc(small);
            assert_eq!(r, p);
            *r = 7;
            a.dealloc(r, small);
            let r = a.alloc(small);
            assert_eq!((r, *r), (p, 7), "a plain allocation was zeroed or not reused");
            a.dealloc(r, small);
            // A larger request cannot use it and maps afresh.
            let s = a.alloc_zeroed(big);
            assert_ne!(s, p);
            assert!(std::slice::from_raw_parts(s, big.size()).iter().all(|&b| b == 0));
            a.dealloc(s, big);
            // A block that `mremap` moved is only page-aligned: freed, it is unmapped, not
            // cached (the cache hands out 2 MiB-aligned blocks). Made here by hand.
            drain_cache();
            let len = mapped_len(small.size());
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            let base =
                libc::mmap(std::ptr::null_mut(), len + 2 * HUGE, rw, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
            assert_ne!(base, libc::MAP_FAILED);
            let start = (base as usize).next_multiple_of(HUGE) + 4096;
            libc::munmap(base, start - base as usize);
            libc::munmap((start + len) as *mut libc::c_void, base as usize + len + 2 * HUGE - start - len);
            a.dealloc(start as *mut u8, small);
            assert!(CACHE.take(0).is_none(), "a block off the 2 MiB grid was cached");
            assert!(!mapped(start as *mut u8, 4096), "a block off the 2 MiB grid was not unmapped");
        }
    }

    #[test]
    fn the_cache_keeps_the_largest_blocks_within_its_bounds() {
        let c = Cache::new();
        let mb = 1 << 20;
        let kept = |out: [(usize, usize); CACHE_SLOTS + 1]| out.iter().all(|&(_, len)| len == 0);
        // Blocks over the bound are refused; the rest are kept.
        assert_eq!(c.put(1, CACHE_BYTES + HUGE)[0], (1, CACHE_BYTES + HUGE));
        assert!(kept(c.put(2, 20 * mb)));
        assert!(kept(c.put(3, 30 * mb)));
        assert!(kept(c.put(4, 40 * mb)));
        // No room for 60 MiB more: the smallest blocks go until there is.
        let out = c.put(5, 60 * mb);
        assert_eq!(out[..2], [(2, 20 * mb), (3, 30 * mb)]);
        assert!(out[2..].iter().all(|&(_, len)| len == 0));
        // Nor for 30 MiB, now the smallest of all: it is the one refused.
        assert_eq!(c.put(6, 30 * mb)[..2], [(6, 30 * mb), (0, 0)]);
        // A taker gets the smallest block that is large enough, once.
        assert_eq!(c.take(35 * mb), Some((4, 40 * mb)));
        assert_eq!(c.take(35 * mb), Some((5, 60 * mb)));
        assert_eq!(c.take(1), None);
        // All slots full of small blocks: the smallest one makes room for a larger one, and
        // a block no larger than any is refused.
        for i in 0..CACHE_SLOTS {
            assert!(kept(c.put(10 + i, (i + 1) * HUGE)));
        }
        assert_eq!(c.put(20, 2 * HUGE)[0], (10, HUGE));
        assert_eq!(c.put(21, HUGE)[0], (21, HUGE));
        // While another thread holds the cache, nobody waits: blocks are neither taken nor kept.
        c.busy.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(c.take(1), None);
        assert_eq!(c.put(30, HUGE)[0], (30, HUGE));
        c.busy.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(c.take(1).is_some());
    }

    /// Whether every page of `[p, p + len)` is mapped (`mincore` fails with ENOMEM otherwise).
    #[cfg(target_os = "linux")]
    fn mapped(p: *mut u8, len: usize) -> bool {
        let mut pages = vec![0u8; len.div_ceil(4096)];
        // SAFETY: mincore only reads the page tables; `pages` has a byte per page.
        unsafe { libc::mincore(p.cast(), len, pages.as_mut_ptr()) == 0 }
    }

    #[test]
    fn small_and_over_aligned_blocks_go_to_the_system_allocator() {
        assert!(!direct(Layout::from_size_align(LARGE - 1, 8).unwrap()));
        assert!(!direct(Layout::from_size_align(LARGE, 2 * HUGE).unwrap()));
        assert_eq!(direct(Layout::from_size_align(LARGE, 8).unwrap()), cfg!(target_os = "linux"));
        assert_eq!(mapped_len(1), HUGE);
        assert_eq!(mapped_len(HUGE), HUGE);
        assert_eq!(mapped_len(HUGE + 1), 2 * HUGE);
    }
}
