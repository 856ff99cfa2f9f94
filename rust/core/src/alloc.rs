//! The global allocator of the extension: blocks of 16 MiB and more straight from the kernel
//! on 2 MiB-aligned mappings advised for transparent huge pages, everything else from the
//! system allocator.
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

    /// Unmaps a block from [`map`] of `size` bytes.
    ///
    /// # Safety
    /// `ptr` came from `map(size)` and is not used afterwards.
    pub unsafe fn unmap(ptr: *mut u8, size: usize) {
        // SAFETY: the caller's contract; the mapping is exactly mapped_len(size) bytes.
        unsafe { libc::munmap(ptr.cast(), mapped_len(size)) };
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
    pub unsafe fn unmap(_ptr: *mut u8, _size: usize) {
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
            return os::map(layout.size());
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if direct(layout) {
            // Fresh anonymous mappings are zero.
            return os::map(layout.size());
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if direct(layout) {
            // SAFETY: a direct block of this size (see above).
            return unsafe { os::unmap(ptr, layout.size()) };
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

    #[test]
    #[cfg(target_os = "linux")]
    fn large_blocks_are_aligned_zeroed_and_survive_reallocation() {
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
