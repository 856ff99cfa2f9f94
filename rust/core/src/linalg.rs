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
    // SAFETY: the caller's contract.
    unsafe {
        matrixmultiply::sgemm(n, k, m, 1.0, a, lda as isize, 1, w, 1, ldw as isize, beta, out, ldo as isize, 1);
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
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dense), bits(&blocked));
    }
}
