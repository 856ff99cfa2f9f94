//! Dense kernels: one entry point so the matmul backend can be swapped in one place.

/// `out (n x m) = a (n x k) * w^T + bias`, where `w` is stored (m x k) row-major as a
/// PyTorch `Linear` weight. Single-threaded: parallelism is across datasets.
pub fn linear(a: &[f32], n: usize, k: usize, w: &[f32], m: usize, bias: &[f32], out: &mut [f32]) {
    for row in out.chunks_exact_mut(m) {
        row.copy_from_slice(bias);
    }
    linear_accumulate(a, n, k, w, m, out);
}

/// `out += a * w^T` (same layouts as [`linear`]): lets callers pre-fill `out` with
/// noise and bias so the layer needs no extra pass.
pub fn linear_accumulate(a: &[f32], n: usize, k: usize, w: &[f32], m: usize, out: &mut [f32]) {
    assert!(a.len() == n * k && w.len() == m * k && out.len() == n * m, "linear: shape mismatch");
    if n == 0 || m == 0 || k == 0 {
        return;
    }
    // SAFETY: the slices are exactly n*k, m*k and n*m long (asserted above) and the strides
    // describe those row-major layouts; w is read as its transpose (row stride 1, column stride k).
    unsafe {
        matrixmultiply::sgemm(
            n,
            k,
            m,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            1,
            k as isize,
            1.0,
            out.as_mut_ptr(),
            m as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_naive() {
        let (n, k, m) = (7, 5, 3);
        let a: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let b = [0.5, -1.0, 2.0];
        let mut out = vec![0.0; n * m];
        linear(&a, n, k, &w, m, &b, &mut out);
        for i in 0..n {
            for j in 0..m {
                let want: f32 = b[j] + (0..k).map(|t| a[i * k + t] * w[j * k + t]).sum::<f32>();
                assert!((out[i * m + j] - want).abs() < 1e-5);
            }
        }
    }
}
