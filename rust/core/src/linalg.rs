//! Dense kernels: the matrix products live here so the matmul backend can be swapped in one place.

/// `out (n x m) += a (n x k) * w^T`, where `w` is stored (m x k) row-major as a PyTorch
/// `Linear` weight: callers pre-fill `out` with bias (and noise) so a layer needs no extra
/// pass. Single-threaded: parallelism is across datasets.
pub fn linear_accumulate(a: &[f32], n: usize, k: usize, w: &[f32], m: usize, out: &mut [f32]) {
    gemm_t(a, n, k, w, m, 1.0, out);
}

/// `out (n x m) = a (n x k) * w^T` (layouts as [`linear_accumulate`]), never reading `out`.
/// For freshly allocated outputs: accumulating into calloc'd zeros reads each page before
/// writing it, and that copy-on-write of the shared zero page flushes the TLB of every CPU
/// running the process, an interrupt per 4 KiB page to the other generating threads.
pub fn linear(a: &[f32], n: usize, k: usize, w: &[f32], m: usize, out: &mut [f32]) {
    if k == 0 {
        out.fill(0.0);
    }
    gemm_t(a, n, k, w, m, 0.0, out);
}

fn gemm_t(a: &[f32], n: usize, k: usize, w: &[f32], m: usize, beta: f32, out: &mut [f32]) {
    assert!(a.len() == n * k && w.len() == m * k && out.len() == n * m, "linear: shape mismatch");
    if n == 0 || m == 0 || k == 0 {
        return;
    }
    // SAFETY: the slices are exactly n*k, m*k and n*m long (asserted above), so the row-major
    // layouts with strides k, k and m stay inside them.
    unsafe { sgemm_wt(n, k, m, a.as_ptr(), k, w.as_ptr(), k, beta, out.as_mut_ptr(), m) };
}

/// `out = a * w^T + beta * out` on raw row-major views (row strides `lda`, `ldw`, `ldo`; `w`
/// holds `m` rows of `k`, read transposed). With beta = 0 the output is only written, as
/// matrixmultiply documents.
///
/// # Safety
/// Every row and column addressed by the shapes and strides lies inside its allocation.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_wt(
    n: usize,
    k: usize,
    m: usize,
    a: *const f32,
    lda: usize,
    w: *const f32,
    ldw: usize,
    beta: f32,
    out: *mut f32,
    ldo: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if m <= gemm512::MAX_M && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F; the rest is the caller's contract.
            unsafe { gemm512::sgemm_wt(n, k, m, a, lda, w, ldw, beta, out, ldo) };
            return;
        }
    }
    // SAFETY: the caller's contract.
    unsafe {
        matrixmultiply::sgemm(n, k, m, 1.0, a, lda as isize, 1, w, 1, ldw as isize, beta, out, ldo as isize, 1);
    }
}

/// The product of [`sgemm_wt`] on AVX-512 without packing `a`: the weight is transposed once
/// into a per-thread buffer (4 * k * m bytes, m rounded up to 16: up to about 1 MB for the
/// widest layers, kept for the thread's next product), and tiles of 8 rows by 32 columns
/// are accumulated in registers straight from `a`'s rows. matrixmultiply packs every panel
/// of `a` first, which cost as much as its kernel here. Each output is the same fused
/// multiply-add chain over k as matrixmultiply's (blocks of its 256 k, each added to the
/// output as `block + beta * out`), so the bits are the same.
#[cfg(target_arch = "x86_64")]
mod gemm512 {
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
        _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps,
    };
    use std::cell::RefCell;

    /// matrixmultiply's k block for f32 (`S_KC`).
    const KC: usize = 256;
    /// Rows per tile.
    const ROWS: usize = 8;
    /// Widest output handled here; wider products go to matrixmultiply, whose packed panels
    /// pay off there.
    pub const MAX_M: usize = 512;

    thread_local! {
        static WT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }

    /// `out = a * w^T + beta * out`, as `super::sgemm_wt`.
    ///
    /// `k` must be positive: with no k block, `out` would be left as it was rather than
    /// scaled by beta (`super::gemm_t` returns before calling for k = 0).
    ///
    /// # Safety
    /// The CPU supports AVX-512F; every row and column addressed by the shapes and strides
    /// lies inside its allocation.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn sgemm_wt(
        n: usize,
        k: usize,
        m: usize,
        a: *const f32,
        lda: usize,
        w: *const f32,
        ldw: usize,
        beta: f32,
        out: *mut f32,
        ldo: usize,
    ) {
        debug_assert!(k > 0, "gemm512::sgemm_wt needs k > 0");
        // w^T, k rows of m columns padded to whole vectors with zeros (never stored).
        let mp = m.next_multiple_of(16);
        WT.with_borrow_mut(|wt| {
            wt.clear();
            wt.resize(k * mp, 0.0);
            for j in 0..m {
                for kk in 0..k {
                    // SAFETY: row j < m, column kk < k of w.
                    wt[kk * mp + j] = unsafe { *w.add(j * ldw + kk) };
                }
            }
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                let beta = if k0 == 0 { beta } else { 1.0 };
                for j0 in (0..m).step_by(32) {
                    let cols = (m - j0).min(32);
                    let b = wt[k0 * mp + j0..].as_ptr();
                    // SAFETY: rows i0.. of a and out, columns k0.. of a and j0.. of out are
                    // inside them by the caller's contract; b has kc rows of mp >= j0 + 32
                    // (or j0 + 16 where cols <= 16) columns from its start.
                    unsafe {
                        let (a, out) = (a.add(k0), out.add(j0));
                        let mut i0 = 0;
                        while i0 < n {
                            let rows = ROWS.min(n - i0);
                            let (ai, oi) = (a.add(i0 * lda), out.add(i0 * ldo));
                            if cols > 16 {
                                tiles::<2>(rows, ai, lda, b, mp, kc, oi, ldo, cols, beta);
                            } else {
                                tiles::<1>(rows, ai, lda, b, mp, kc, oi, ldo, cols, beta);
                            }
                            i0 += rows;
                        }
                    }
                }
            }
        });
    }

    /// One tile of `rows` (1 to 8) rows by C vectors of 16 columns (`cols` of them real).
    ///
    /// # Safety
    /// As [`sgemm_wt`], for the tile's rows and columns; `b` holds kc rows of `ldb` >= 16 C
    /// columns.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tiles<const C: usize>(
        rows: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        kc: usize,
        out: *mut f32,
        ldo: usize,
        cols: usize,
        beta: f32,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            match rows {
                8 => tile::<8, C>(a, lda, b, ldb, kc, out, ldo, cols, beta),
                7 => tile::<7, C>(a, lda, b, ldb, kc, out, ldo, cols, beta),
                6 => tile::<6, C>(a, lda, b, ldb, kc, out, ldo, cols, beta),
                5 => tile::<5, C>(a, lda, b, ldb, kc, out, ldo, cols, beta),
                4 => tile::<4, C>(a, lda, b, ldb, kc, out, ldo, cols, beta),
                3 => tile::<3, C>(a, lda, b, ldb, kc, out, ldo, cols, beta),
                2 => tile::<2, C>(a, lda, b, ldb, kc, out, ldo, cols, beta),
                _ => tile::<1, C>(a, lda, b, ldb, kc, out, ldo, cols, beta),
            }
        }
    }

    /// # Safety
    /// As [`tiles`], with R rows.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    #[inline]
    unsafe fn tile<const R: usize, const C: usize>(
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        kc: usize,
        out: *mut f32,
        ldo: usize,
        cols: usize,
        beta: f32,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        // SAFETY: the caller's contract: a has R rows of kc, b kc rows of 16 C, out R rows of
        // `cols` (the masks keep loads and stores inside them).
        unsafe {
            for kk in 0..kc {
                let bv: [__m512; C] = std::array::from_fn(|j| _mm512_loadu_ps(b.add(kk * ldb + 16 * j)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r * lda + kk));
                    for (s, &v) in acc.iter_mut().zip(&bv) {
                        *s = _mm512_fmadd_ps(av, v, *s);
                    }
                }
            }
            let mask = |j: usize| -> u16 {
                let live = cols.saturating_sub(16 * j).min(16);
                ((1u32 << live) - 1) as u16
            };
            for (r, acc) in acc.iter().enumerate() {
                for (j, &s) in acc.iter().enumerate() {
                    let p = out.add(r * ldo + 16 * j);
                    // With beta = 0 the output is only written (it may hold anything).
                    let v = if beta == 0.0 {
                        s
                    } else {
                        _mm512_add_ps(s, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask(j), p), _mm512_set1_ps(beta)))
                    };
                    _mm512_mask_storeu_ps(p, mask(j), v);
                }
            }
        }
    }
}

/// Diagonal blocks of a block-wise-dropout weight: block `i` maps inputs
/// `i*cols..(i+1)*cols` to outputs `i*rows..(i+1)*rows`; every other weight is zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    pub n: usize,
    pub rows: usize,
    pub cols: usize,
}

/// `out += a * w^T` for a block-diagonal `w` (same layouts as [`linear_accumulate`]): one product per
/// block, `n` times less work than the dense product. Only valid where `a` is finite: the dense
/// product turns an infinite input times a zero weight into NaN, which this one skips.
pub fn linear_accumulate_blocks(a: &[f32], n: usize, k: usize, w: &[f32], m: usize, blocks: Blocks, out: &mut [f32]) {
    assert!(a.len() == n * k && w.len() == m * k && out.len() == n * m, "linear: shape mismatch");
    assert!(blocks.n * blocks.rows <= m && blocks.n * blocks.cols <= k, "linear: blocks exceed the weight");
    if n == 0 || blocks.rows == 0 || blocks.cols == 0 {
        return;
    }
    for i in 0..blocks.n {
        let (r0, c0) = (i * blocks.rows, i * blocks.cols);
        // SAFETY: the shapes are asserted above. A's block starts at column c0 (row stride k),
        // W's at row r0 and column c0 (row stride k, read transposed), and out's at column r0
        // (row stride m); every index stays inside its slice because c0 + cols <= k and
        // r0 + rows <= m.
        unsafe {
            sgemm_wt(
                n,
                blocks.cols,
                blocks.rows,
                a.as_ptr().add(c0),
                k,
                w.as_ptr().add(r0 * k + c0),
                k,
                1.0,
                out.as_mut_ptr().add(r0),
                m,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_overwrites_without_reading_the_output() {
        let (n, k, m) = (9, 4, 6);
        let a: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.29).sin()).collect();
        let w: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.13).cos()).collect();
        // NaN in the output would survive any product that reads it.
        let mut out = vec![f32::NAN; n * m];
        linear(&a, n, k, &w, m, &mut out);
        for i in 0..n {
            for j in 0..m {
                let want: f32 = (0..k).map(|t| a[i * k + t] * w[j * k + t]).sum::<f32>();
                assert!((out[i * m + j] - want).abs() < 1e-5, "({i}, {j}): {}", out[i * m + j]);
            }
        }
        let mut out = vec![f32::NAN; 3 * 2];
        linear(&[], 3, 0, &[], 2, &mut out);
        assert_eq!(out, vec![0.0; 6], "no inputs: zeros");
    }

    #[test]
    fn linear_accumulate_matches_naive() {
        let (n, k, m) = (7, 5, 3);
        let a: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let b = [0.5, -1.0, 2.0];
        let mut out: Vec<f32> = b.iter().copied().cycle().take(n * m).collect();
        linear_accumulate(&a, n, k, &w, m, &mut out);
        for i in 0..n {
            for j in 0..m {
                let want: f32 = b[j] + (0..k).map(|t| a[i * k + t] * w[j * k + t]).sum::<f32>();
                assert!((out[i * m + j] - want).abs() < 1e-5);
            }
        }
    }

    /// The AVX-512 product against matrixmultiply's, bit for bit: odd shapes around the tile
    /// sizes, k beyond one 256 block, both betas, row strides wider than the rows.
    #[test]
    fn own_product_equals_matrixmultiply_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            for &(n, k, m) in
                &[(1, 1, 1), (9, 3, 5), (17, 40, 16), (33, 7, 33), (64, 300, 31), (100, 513, 70), (8, 2, 48)]
            {
                let (lda, ldw, ldo) = (k + 3, k + 1, m + 2);
                let a: Vec<f32> = (0..n * lda).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
                let w: Vec<f32> = (0..m * ldw).map(|i| (i as f32 * 0.11).cos()).collect();
                for beta in [0.0, 1.0, 0.5] {
                    let start: Vec<f32> = (0..n * ldo).map(|i| (i as f32 * 0.05).cos()).collect();
                    let (mut want, mut got) = (start.clone(), start);
                    // SAFETY: the shapes and strides stay inside the vectors built above; the
                    // CPU supports AVX-512F.
                    unsafe {
                        matrixmultiply::sgemm(
                            n,
                            k,
                            m,
                            1.0,
                            a.as_ptr(),
                            lda as isize,
                            1,
                            w.as_ptr(),
                            1,
                            ldw as isize,
                            beta,
                            want.as_mut_ptr(),
                            ldo as isize,
                            1,
                        );
                        gemm512::sgemm_wt(n, k, m, a.as_ptr(), lda, w.as_ptr(), ldw, beta, got.as_mut_ptr(), ldo);
                    }
                    let bits = crate::tests::f32_bits;
                    assert_eq!(bits(&want), bits(&got), "n={n} k={k} m={m} beta={beta}");
                }
            }
        }
    }

    /// Product timings on layer shapes (release: `cargo test --release -p tabfm-core
    /// gemm_timing -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn gemm_timing() {
        for &(n, k, m) in
            &[(1024, 8, 8), (1024, 16, 16), (1024, 32, 32), (1024, 64, 64), (1024, 128, 128), (1024, 100, 20)]
        {
            let a: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut best = f64::MAX;
            for _ in 0..100 {
                let mut out = vec![0.0f32; n * m];
                let t = std::time::Instant::now();
                linear_accumulate(&a, n, k, &w, m, &mut out);
                best = best.min(t.elapsed().as_secs_f64());
                // Checked as well as timed, against the product in f64 on sampled entries.
                for (i, j) in [(0, 0), (n / 2, m / 3), (n - 1, m - 1)] {
                    let want: f64 = (0..k).map(|l| f64::from(a[i * k + l]) * f64::from(w[j * k + l])).sum();
                    assert!(
                        (f64::from(out[i * m + j]) - want).abs() <= 1e-4 * k as f64,
                        "{n} x {k} x {m} at ({i}, {j})"
                    );
                }
            }
            let gflops = 2.0 * (n * k * m) as f64 / best / 1e9;
            println!("{n} x {k} x {m}: {:.1} us, {gflops:.1} GFLOP/s", best * 1e6);
        }
    }

    #[test]
    fn block_product_equals_the_dense_product_bit_for_bit() {
        // 3 blocks of 4 x 3 in a 13 x 10 weight (a last row and column outside every block).
        let (n, k, m) = (37, 10, 13);
        let blocks = Blocks { n: 3, rows: 4, cols: 3 };
        let a: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut w = vec![0.0f32; m * k];
        for b in 0..blocks.n {
            for r in b * 4..(b + 1) * 4 {
                for c in b * 3..(b + 1) * 3 {
                    w[r * k + c] = ((r * k + c) as f32 * 0.11).cos();
                }
            }
        }
        let start: Vec<f32> = (0..n * m).map(|i| (i as f32 * 0.05).cos()).collect();
        let (mut dense, mut blocked) = (start.clone(), start);
        linear_accumulate(&a, n, k, &w, m, &mut dense);
        linear_accumulate_blocks(&a, n, k, &w, m, blocks, &mut blocked);
        let bits = crate::tests::f32_bits;
        assert_eq!(bits(&dense), bits(&blocked));
    }
}
