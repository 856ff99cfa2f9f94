//! The activation zoo of the MLP SCM.
//!
//! Every activation is applied as TabICL's scaled wrapper: standardise each column (mean,
//! unbiased std + 1e-6, statistics of this forward pass), multiply `(z + b)` by a random
//! scale `exp(2 N(0,1))` with `b ~ N(0,1)`, then apply the base function. For the random
//! Fourier activation the wrapper's affine map is undone by its own standardisation, so
//! it sees the standardised column directly.

use crate::fastmath;
use crate::rng::Rng;

/// Names of the base activations.
pub const BASE_ACTIVATIONS: [&str; 19] = [
    "tanh",
    "leaky_relu",
    "elu",
    "identity",
    "selu",
    "silu",
    "relu",
    "softplus",
    "relu6",
    "hardtanh",
    "sign",
    "rbf",
    "exp",
    "sqrt_abs",
    "unit_interval_indicator",
    "sine",
    "square",
    "abs",
    "random_function",
];

/// An entry that picks uniformly among the 28 wrapped activations at construction
/// (the 18 simple ones plus ten copies of the random Fourier function).
pub const RANDOM_CHOICE: &str = "random_choice";

/// The random Fourier activation's number of frequencies.
pub const N_FREQUENCIES: usize = 256;

/// Absolute error bound of the tabulated Fourier activation against the exact sum.
pub const FOURIER_TOL: f64 = 1e-4;

/// Per-layer activation sampler: one group-level set of weights over names.
#[derive(Clone, Debug)]
pub struct ActivationSampler {
    pub names: Vec<String>,
    pub weights: Vec<f64>,
}

impl ActivationSampler {
    pub fn new(names: Vec<String>, weights: Vec<f64>) -> Self {
        ActivationSampler { names, weights }
    }

    /// Draws one layer's activation.
    pub fn draw(&self, rng: &mut Rng) -> Activation {
        let name = &self.names[rng.categorical(&self.weights)];
        let name = if name == RANDOM_CHOICE {
            // 18 simple + 10 random-function entries, uniformly.
            let i = rng.below(28) as usize;
            BASE_ACTIVATIONS[i.min(18)]
        } else {
            name.as_str()
        };
        Activation::new(name, rng)
    }
}

/// Declares the simple activations once: the enum, their names, and the dispatch from an
/// enum value to a loop specialised for that function.
macro_rules! simple_activations {
    ($($variant:ident => $name:literal),* $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Simple {
            $($variant),*
        }

        impl Simple {
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            pub(crate) fn from_name(name: &str) -> Option<Simple> {
                match name {
                    $($name => Some(Simple::$variant),)*
                    _ => None,
                }
            }

            /// `x = f(x)` element-wise, one tight loop per function (the graph prior's use).
            pub(crate) fn map(self, x: &mut [f32]) {
                match self {
                    $(Simple::$variant => x.iter_mut().for_each(|v| *v = Simple::$variant.eval(*v)),)*
                }
            }

            /// `x[r, c] = f(a[c] * x[r, c] + b[c])` over a row-major matrix; matching once
            /// here gives each function its own tight loop.
            #[inline(always)]
            fn map_affine_generic(self, x: &mut [f32], a: &[f32], b: &[f32]) {
                if self == Simple::Sine {
                    return sine_affine(x, a, b);
                }
                match self {
                    $(Simple::$variant => affine_loop(x, a, b, |v| Simple::$variant.eval(v)),)*
                }
            }
        }
    };
}

simple_activations! {
    Tanh => "tanh",
    LeakyRelu => "leaky_relu",
    Elu => "elu",
    Identity => "identity",
    Selu => "selu",
    Silu => "silu",
    Relu => "relu",
    Softplus => "softplus",
    Relu6 => "relu6",
    Hardtanh => "hardtanh",
    Sign => "sign",
    Rbf => "rbf",
    Exp => "exp",
    SqrtAbs => "sqrt_abs",
    UnitInterval => "unit_interval_indicator",
    Sine => "sine",
    Square => "square",
    Abs => "abs",
}

impl Simple {
    #[inline(always)]
    fn eval(self, x: f32) -> f32 {
        match self {
            Simple::Tanh => fastmath::tanh(x),
            Simple::LeakyRelu => {
                if x >= 0.0 {
                    x
                } else {
                    0.01 * x
                }
            }
            Simple::Elu => {
                if x > 0.0 {
                    x
                } else {
                    fastmath::expm1_neg(x)
                }
            }
            Simple::Identity => x,
            Simple::Selu => {
                const SCALE: f32 = 1.050_701;
                const ALPHA: f32 = 1.673_263_2;
                if x > 0.0 { SCALE * x } else { SCALE * ALPHA * fastmath::expm1_neg(x) }
            }
            Simple::Silu => x / (1.0 + fastmath::exp(-x)),
            Simple::Relu => x.max(0.0),
            Simple::Softplus => fastmath::softplus(x),
            Simple::Relu6 => x.clamp(0.0, 6.0),
            Simple::Hardtanh => x.clamp(-1.0, 1.0),
            Simple::Sign => {
                if x >= 0.0 {
                    1.0
                } else {
                    -1.0
                }
            }
            Simple::Rbf => fastmath::exp(-(x * x)),
            Simple::Exp => fastmath::exp(x),
            Simple::SqrtAbs => x.abs().sqrt(),
            Simple::UnitInterval => f32::from(u8::from(x.abs() <= 1.0)),
            Simple::Sine => fastmath::sin(x),
            Simple::Square => x * x,
            Simple::Abs => x.abs(),
        }
    }
}

impl Simple {
    /// `x[r, c] = f(a[c] * x[r, c] + b[c])` over a row-major matrix, built for the widest
    /// vectors the CPU has. The loops are element-wise IEEE arithmetic with no fused
    /// multiply-add written (and Rust never contracts `a * b + c` into one), so every build
    /// gives the same bits.
    fn map_affine(self, x: &mut [f32], a: &[f32], b: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports the feature the function is compiled for.
                return unsafe { self.map_affine_avx512(x, a, b) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: as above.
                return unsafe { self.map_affine_avx2(x, a, b) };
            }
        }
        self.map_affine_generic(x, a, b)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn map_affine_avx512(self, x: &mut [f32], a: &[f32], b: &[f32]) {
        self.map_affine_generic(x, a, b)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn map_affine_avx2(self, x: &mut [f32], a: &[f32], b: &[f32]) {
        self.map_affine_generic(x, a, b)
    }
}

/// `sin(a * x + b)` column-wise: the branch-free sine where every argument is below 1e15 (the
/// usual case: standardised inputs), so the loop vectorises; otherwise the checked one.
#[inline(always)]
fn sine_affine(x: &mut [f32], a: &[f32], b: &[f32]) {
    affine_loop(x, a, b, |v| v);
    if x.iter().fold(true, |ok, v| ok & (v.abs() < 1e15)) {
        x.iter_mut().for_each(|v| *v = fastmath::sin_reduced(*v));
    } else {
        x.iter_mut().for_each(|v| *v = fastmath::sin(*v));
    }
}

#[inline(always)]
fn affine_loop(x: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32) -> f32) {
    let cols = a.len();
    for row in x.chunks_exact_mut(cols) {
        for ((v, a), b) in row.iter_mut().zip(a).zip(b) {
            *v = f(a * *v + b);
        }
    }
}

/// A random function `g(z) = sum_k a_k sin(f_k z + phi_k)`.
#[derive(Clone, Debug)]
pub struct Fourier {
    pub freqs: Vec<f64>,
    pub phases: Vec<f64>,
    pub amps: Vec<f64>,
}

impl Fourier {
    pub fn sample(rng: &mut Rng) -> Fourier {
        let n = N_FREQUENCIES;
        // Frequencies are float32 in the reference; keep that grid.
        let freqs: Vec<f64> = (0..n).map(|_| f64::from((n as f64 * rng.uniform_open()) as f32)).collect();
        let phases: Vec<f64> = (0..n).map(|_| 2.0 * std::f64::consts::PI * rng.uniform()).collect();
        let decay = -rng.range(0.7f64.ln(), 3.0f64.ln()).exp();
        let mut c: Vec<f64> = freqs.iter().map(|f| f.powf(decay)).collect();
        let norm = c.iter().map(|v| v * v).sum::<f64>().sqrt();
        for v in &mut c {
            *v /= norm;
        }
        let amps = c.iter().map(|v| v * rng.normal()).collect();
        Fourier { freqs, phases, amps }
    }

    /// The exact sum at one point (reference for tests and the small-input path).
    pub fn exact(&self, z: f64) -> f64 {
        let mut s = 0.0;
        for k in 0..self.freqs.len() {
            s += self.amps[k] * (self.freqs[k] * z + self.phases[k]).sin();
        }
        s
    }

    /// Grid step for which quintic Hermite interpolation (values, first and second
    /// derivatives at both ends) stays within `tol`: |g - p| <= max|g^(6)| / 6! * (h/2)^6
    /// = h^6 / 46080 * max|g^(6)|, and max|g^(6)| <= sum_k |a_k| f_k^6. Against cubic
    /// Hermite (h^4 / 384 * max|g''''|) the grid needs about 2.4 times fewer nodes.
    pub fn step_for(&self, tol: f64) -> f64 {
        let m6: f64 = self.amps.iter().zip(&self.freqs).map(|(a, f)| a.abs() * f.powi(6)).sum();
        if m6 <= 0.0 { f64::INFINITY } else { (46080.0 * tol / m6).powf(1.0 / 6.0) }
    }

    /// Evaluates `g` on every value of `z` (in place).
    pub fn apply(&self, z: &mut [f32]) {
        if z.is_empty() {
            return;
        }
        let (lo, hi) = z.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        if !(lo.is_finite() && hi.is_finite()) {
            for v in z.iter_mut() {
                *v = if v.is_finite() { self.exact(f64::from(*v)) as f32 } else { f32::NAN };
            }
            return;
        }
        let (lo, hi) = (f64::from(lo), f64::from(hi));
        let h = self.step_for(0.9 * FOURIER_TOL);
        let nodes = (((hi - lo) / h).ceil() as usize).max(1) + 1;
        if nodes >= 8 * z.len() {
            // A node costs about an eighth of an exact evaluation (a phasor rotation per
            // term instead of a sine): past this size the table would cost more.
            for v in z.iter_mut() {
                *v = self.exact(f64::from(*v)) as f32;
            }
            return;
        }
        let h = if nodes > 1 { (hi - lo) / (nodes - 1) as f64 } else { 1.0 };
        let (g, dg, d2g) = self.table(lo, h, nodes);
        // Quintic Hermite on each interval as Horner coefficients in t in [0, 1], stored in
        // float32 (32 bytes per interval, padded to half a cache line, keeps the table in
        // cache; the rounding, ~1e-6, fits in the tenth of FOURIER_TOL that `step_for` leaves
        // unused). With end values p, h-scaled slopes d and h^2-scaled curvatures s, and
        // A = p1 - p0 - d0 - s0/2, B = d1 - d0 - s0, C = s1 - s0:
        // c3 = 10A - 4B + C/2, c4 = -15A + 7B - C, c5 = 6A - 3B + C/2.
        let h2 = h * h;
        let poly: Vec<[f32; 8]> = (0..nodes - 1)
            .map(|j| {
                let (p0, p1) = (g[j], g[j + 1]);
                let (d0, d1) = (h * dg[j], h * dg[j + 1]);
                let (s0, s1) = (h2 * d2g[j], h2 * d2g[j + 1]);
                let a = p1 - p0 - d0 - 0.5 * s0;
                let b = d1 - d0 - s0;
                let c = s1 - s0;
                [
                    p0 as f32,
                    d0 as f32,
                    (0.5 * s0) as f32,
                    (10.0 * a - 4.0 * b + 0.5 * c) as f32,
                    (-15.0 * a + 7.0 * b - c) as f32,
                    (6.0 * a - 3.0 * b + 0.5 * c) as f32,
                    0.0,
                    0.0,
                ]
            })
            .collect();
        eval_table(z, &poly, lo, 1.0 / h);
    }

    /// Values, first and second derivatives on the grid `lo + j h`, by rotating each term's
    /// phasor (no trigonometric call per node). The rotation is re-anchored with exact
    /// sin/cos every 1024 nodes; between anchors the drift is ~1e-13, far below `FOURIER_TOL`.
    fn table(&self, lo: f64, h: f64, nodes: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let n = self.freqs.len().div_ceil(LANES) * LANES;
        let pad = |v: &[f64]| {
            let mut out = v.to_vec();
            out.resize(n, 0.0);
            out
        };
        let freqs = pad(&self.freqs);
        let phases = pad(&self.phases);
        let amps = pad(&self.amps);
        let af: Vec<f64> = amps.iter().zip(&freqs).map(|(a, f)| a * f).collect();
        let aff: Vec<f64> = af.iter().zip(&freqs).map(|(a, f)| -a * f).collect();
        let (mut cr, mut sr) = (vec![0.0; n], vec![0.0; n]);
        for k in 0..n {
            let (sk, ck) = (freqs[k] * h).sin_cos();
            sr[k] = sk;
            cr[k] = ck;
        }
        let (mut c, mut s) = (vec![0.0; n], vec![0.0; n]);
        let mut g = vec![0.0; nodes];
        let mut dg = vec![0.0; nodes];
        let mut d2g = vec![0.0; nodes];
        let mut j = 0;
        while j < nodes {
            let z = lo + j as f64 * h;
            for k in 0..n {
                let (sk, ck) = (freqs[k] * z + phases[k]).sin_cos();
                s[k] = sk;
                c[k] = ck;
            }
            let end = (j + 1024).min(nodes);
            let out = Sums { g: &mut g[j..end], dg: &mut dg[j..end], d2g: &mut d2g[j..end] };
            rotate_accumulate(&mut c, &mut s, &cr, &sr, [&amps, &af, &aff], out);
            j = end;
        }
        (g, dg, d2g)
    }
}

/// Evaluates the interval polynomials at every `z` (all finite, at least `lo`) in place.
/// Dispatches to an AVX-512 or AVX2+FMA build where the CPU has one (the same fused
/// operations in the same order, so the two agree): fused multiply-adds halve the Horner
/// chain (the last bits then depend on the machine type, as for the matrix products).
fn eval_table(z: &mut [f32], poly: &[[f32; 8]], lo: f64, inv_h: f64) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the feature the function is compiled for.
            unsafe { eval_table_avx512(z, poly, lo, inv_h) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            unsafe { eval_table_fma(z, poly, lo, inv_h) };
            return;
        }
    }
    eval_table_generic::<false>(z, poly, lo, inv_h);
}

/// [`eval_table_fma`] on 16 values at a time: rows k and k + 8 share a register, so the
/// transposition network of the 8-value kernel runs on both halves at once (the same
/// operations per value, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn eval_table_avx512(z: &mut [f32], poly: &[[f32; 8]], lo: f64, inv_h: f64) {
    use std::arch::x86_64::*;
    assert!(!poly.is_empty() && poly.len() < i32::MAX as usize);
    let last = _mm512_set1_pd((poly.len() - 1) as f64);
    let (vlo, vinv) = (_mm512_set1_pd(lo), _mm512_set1_pd(inv_h));
    // 128-bit lanes (0 of a, 0 of b, 2 of a, 2 of b) and (1, 1, 3, 3): the 8-value kernel's
    // final 128-bit permutation in each 256-bit half.
    let (low, high) = (
        _mm512_set_epi32(27, 26, 25, 24, 11, 10, 9, 8, 19, 18, 17, 16, 3, 2, 1, 0),
        _mm512_set_epi32(31, 30, 29, 28, 15, 14, 13, 12, 23, 22, 21, 20, 7, 6, 5, 4),
    );
    let mut chunks = z.chunks_exact_mut(16);
    for chunk in &mut chunks {
        // SAFETY: `chunk` holds 16 floats.
        let v = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
        let half = |x: __m256| {
            let u = _mm512_mul_pd(_mm512_sub_pd(_mm512_cvtps_pd(x), vlo), vinv);
            let jf = _mm512_min_pd(_mm512_roundscale_pd::<0x09>(u), last);
            (_mm512_cvtpd_ps(_mm512_sub_pd(u, jf)), _mm512_cvttpd_epi32(jf))
        };
        let (t_lo, j_lo) = half(_mm512_castps512_ps256(v));
        let (t_hi, j_hi) = half(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))));
        let t = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(t_lo)),
            _mm256_castps_pd(t_hi),
        ));
        let mut j = [0u32; 16];
        // SAFETY: `j` holds 16 u32, two 256-bit halves.
        unsafe {
            _mm256_storeu_si256(j.as_mut_ptr().cast(), j_lo);
            _mm256_storeu_si256(j.as_mut_ptr().add(8).cast(), j_hi);
        }
        // Each index is an integer in [0, poly.len() - 1] (as in the generic version), so the
        // bounds-checked row lookups never fail.
        let r: [__m512; 8] = std::array::from_fn(|k| {
            // SAFETY: a row is 8 floats.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_pd(poly[j[k] as usize].as_ptr().cast()),
                    _mm256_loadu_pd(poly[j[k + 8] as usize].as_ptr().cast()),
                )
            };
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(a), b))
        });
        let (a0, a1) = (_mm512_unpacklo_ps(r[0], r[1]), _mm512_unpackhi_ps(r[0], r[1]));
        let (a2, a3) = (_mm512_unpacklo_ps(r[2], r[3]), _mm512_unpackhi_ps(r[2], r[3]));
        let (a4, a5) = (_mm512_unpacklo_ps(r[4], r[5]), _mm512_unpackhi_ps(r[4], r[5]));
        let (a6, a7) = (_mm512_unpacklo_ps(r[6], r[7]), _mm512_unpackhi_ps(r[6], r[7]));
        let b0 = _mm512_shuffle_ps::<0x44>(a0, a2);
        let b1 = _mm512_shuffle_ps::<0xEE>(a0, a2);
        let b2 = _mm512_shuffle_ps::<0x44>(a1, a3);
        let b3 = _mm512_shuffle_ps::<0xEE>(a1, a3);
        let b4 = _mm512_shuffle_ps::<0x44>(a4, a6);
        let b5 = _mm512_shuffle_ps::<0xEE>(a4, a6);
        let b6 = _mm512_shuffle_ps::<0x44>(a5, a7);
        let b7 = _mm512_shuffle_ps::<0xEE>(a5, a7);
        let c0 = _mm512_permutex2var_ps(b0, low, b4);
        let c1 = _mm512_permutex2var_ps(b1, low, b5);
        let c2 = _mm512_permutex2var_ps(b2, low, b6);
        let c3 = _mm512_permutex2var_ps(b3, low, b7);
        let c4 = _mm512_permutex2var_ps(b0, high, b4);
        let c5 = _mm512_permutex2var_ps(b1, high, b5);
        let mut p = _mm512_fmadd_ps(t, c5, c4);
        p = _mm512_fmadd_ps(t, p, c3);
        p = _mm512_fmadd_ps(t, p, c2);
        p = _mm512_fmadd_ps(t, p, c1);
        p = _mm512_fmadd_ps(t, p, c0);
        // SAFETY: as for the load.
        unsafe { _mm512_storeu_ps(chunk.as_mut_ptr(), p) };
    }
    eval_table_generic::<true>(chunks.into_remainder(), poly, lo, inv_h);
}

/// The fused-multiply-add evaluation on 8 values at a time: the same operations as
/// `eval_table_generic::<true>` in vector form (interval index and offset in float64, Horner
/// in float32 with fused multiply-adds), so the same bits; the 8 intervals' coefficient rows
/// are transposed into one vector per coefficient.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn eval_table_fma(z: &mut [f32], poly: &[[f32; 8]], lo: f64, inv_h: f64) {
    use std::arch::x86_64::*;
    // Indices are converted as i32.
    assert!(!poly.is_empty() && poly.len() < i32::MAX as usize);
    let last = _mm256_set1_pd((poly.len() - 1) as f64);
    let (vlo, vinv) = (_mm256_set1_pd(lo), _mm256_set1_pd(inv_h));
    let mut chunks = z.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // SAFETY: `chunk` holds 8 floats.
        let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
        let half = |x: __m128| {
            let u = _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(x), vlo), vinv);
            let jf = _mm256_min_pd(_mm256_floor_pd(u), last);
            (_mm256_cvtpd_ps(_mm256_sub_pd(u, jf)), _mm256_cvttpd_epi32(jf))
        };
        let (t_lo, j_lo) = half(_mm256_castps256_ps128(v));
        let (t_hi, j_hi) = half(_mm256_extractf128_ps::<1>(v));
        let t = _mm256_set_m128(t_hi, t_lo);
        let mut j = [0u32; 8];
        // SAFETY: `j` holds 8 u32, two 128-bit halves.
        unsafe {
            _mm_storeu_si128(j.as_mut_ptr().cast(), j_lo);
            _mm_storeu_si128(j.as_mut_ptr().add(4).cast(), j_hi);
        }
        // Each index is an integer in [0, poly.len() - 1] (as in the generic version), so the
        // bounds-checked row lookups never fail.
        let r: [__m256; 8] = std::array::from_fn(|k| {
            // SAFETY: a row is 8 floats.
            unsafe { _mm256_loadu_ps(poly[j[k] as usize].as_ptr()) }
        });
        let (a0, a1) = (_mm256_unpacklo_ps(r[0], r[1]), _mm256_unpackhi_ps(r[0], r[1]));
        let (a2, a3) = (_mm256_unpacklo_ps(r[2], r[3]), _mm256_unpackhi_ps(r[2], r[3]));
        let (a4, a5) = (_mm256_unpacklo_ps(r[4], r[5]), _mm256_unpackhi_ps(r[4], r[5]));
        let (a6, a7) = (_mm256_unpacklo_ps(r[6], r[7]), _mm256_unpackhi_ps(r[6], r[7]));
        // Rows 0-3 then 4-7 of coefficients (0 | 4), (1 | 5), (2 | 6), (3 | 7).
        let b0 = _mm256_shuffle_ps::<0x44>(a0, a2);
        let b1 = _mm256_shuffle_ps::<0xEE>(a0, a2);
        let b2 = _mm256_shuffle_ps::<0x44>(a1, a3);
        let b3 = _mm256_shuffle_ps::<0xEE>(a1, a3);
        let b4 = _mm256_shuffle_ps::<0x44>(a4, a6);
        let b5 = _mm256_shuffle_ps::<0xEE>(a4, a6);
        let b6 = _mm256_shuffle_ps::<0x44>(a5, a7);
        let b7 = _mm256_shuffle_ps::<0xEE>(a5, a7);
        let c0 = _mm256_permute2f128_ps::<0x20>(b0, b4);
        let c1 = _mm256_permute2f128_ps::<0x20>(b1, b5);
        let c2 = _mm256_permute2f128_ps::<0x20>(b2, b6);
        let c3 = _mm256_permute2f128_ps::<0x20>(b3, b7);
        let c4 = _mm256_permute2f128_ps::<0x31>(b0, b4);
        let c5 = _mm256_permute2f128_ps::<0x31>(b1, b5);
        let mut p = _mm256_fmadd_ps(t, c5, c4);
        p = _mm256_fmadd_ps(t, p, c3);
        p = _mm256_fmadd_ps(t, p, c2);
        p = _mm256_fmadd_ps(t, p, c1);
        p = _mm256_fmadd_ps(t, p, c0);
        // SAFETY: as for the load.
        unsafe { _mm256_storeu_ps(chunk.as_mut_ptr(), p) };
    }
    eval_table_generic::<true>(chunks.into_remainder(), poly, lo, inv_h);
}

#[inline(always)]
fn eval_table_generic<const FMA: bool>(z: &mut [f32], poly: &[[f32; 8]], lo: f64, inv_h: f64) {
    let madd = |a: f32, b: f32, c: f32| if FMA { a.mul_add(b, c) } else { a * b + c };
    assert!(!poly.is_empty() && poly.len() < u32::MAX as usize);
    let last = (poly.len() - 1) as f64;
    for v in z.iter_mut() {
        // v >= lo, so u >= 0 (rounding is monotone), and u is finite: jf is in [0, last].
        let u = (f64::from(*v) - lo) * inv_h;
        let jf = u.floor().min(last);
        let t = (u - jf) as f32;
        // SAFETY: jf is an integer in [0, poly.len() - 1] (see above), which fits in u32.
        let c = &poly[unsafe { jf.to_int_unchecked::<u32>() } as usize];
        *v = madd(t, madd(t, madd(t, madd(t, madd(t, c[5], c[4]), c[3]), c[2]), c[1]), c[0]);
    }
}

const LANES: usize = 8;

/// Per-node outputs of the table: `sum a_k sin`, `sum a_k f_k cos`, `-sum a_k f_k^2 sin`.
struct Sums<'a> {
    g: &'a mut [f64],
    dg: &'a mut [f64],
    d2g: &'a mut [f64],
}

/// For each output node: record the three sums of the current phasors (weights `w`: `a_k`,
/// `a_k f_k`, `-a_k f_k^2`), then rotate them one grid step. Dispatches to an AVX-512 kernel
/// (two nodes per pass) or an AVX2+FMA one when the CPU has it; both fuse the same
/// multiply-adds, so they agree, but the last bits then depend on the machine type, as for the
/// matrix products.
fn rotate_accumulate(c: &mut [f64], s: &mut [f64], cr: &[f64], sr: &[f64], w: [&[f64]; 3], out: Sums) {
    let n = c.len();
    assert!(
        n.is_multiple_of(LANES)
            && [s.len(), cr.len(), sr.len(), w[0].len(), w[1].len(), w[2].len()].iter().all(|&m| m == n)
    );
    assert!(out.dg.len() == out.g.len() && out.d2g.len() == out.g.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the feature the function is compiled for, and the
            // slices have the lengths asserted above.
            unsafe { rotate_accumulate_avx512(c, s, cr, sr, w, out) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: as above.
            unsafe { rotate_accumulate_avx2(c, s, cr, sr, w, out) };
            return;
        }
    }
    rotate_accumulate_generic(c, s, cr, sr, w, out);
}

/// The kernel on 4-lane vectors, two vectors (8 terms) per step with separate accumulators so
/// that the additions of consecutive steps do not wait on each other. Safety: AVX2 and FMA
/// present, every slice of `c.len()` elements, a multiple of [`LANES`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rotate_accumulate_avx2(c: &mut [f64], s: &mut [f64], cr: &[f64], sr: &[f64], w: [&[f64]; 3], out: Sums) {
    use std::arch::x86_64::*;
    let n = c.len();
    let (cp, sp) = (c.as_mut_ptr(), s.as_mut_ptr());
    let (crp, srp) = (cr.as_ptr(), sr.as_ptr());
    let (ap, bp, ep) = (w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr());
    let hsum = |v: __m256d| {
        let mut lanes = [0.0f64; 4];
        // SAFETY: `lanes` holds 4 f64.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), v) };
        (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    };
    for ((gj, dj), d2j) in out.g.iter_mut().zip(out.dg.iter_mut()).zip(out.d2g.iter_mut()) {
        let mut acc = [_mm256_setzero_pd(); 6];
        let mut k = 0;
        while k < n {
            for h in 0..2 {
                let i = k + 4 * h;
                // SAFETY: i + 4 <= n (n is a multiple of 8) for every slice read or written.
                unsafe {
                    let ck = _mm256_loadu_pd(cp.add(i));
                    let sk = _mm256_loadu_pd(sp.add(i));
                    acc[3 * h] = _mm256_fmadd_pd(_mm256_loadu_pd(ap.add(i)), sk, acc[3 * h]);
                    acc[3 * h + 1] = _mm256_fmadd_pd(_mm256_loadu_pd(bp.add(i)), ck, acc[3 * h + 1]);
                    acc[3 * h + 2] = _mm256_fmadd_pd(_mm256_loadu_pd(ep.add(i)), sk, acc[3 * h + 2]);
                    let (rc, rs) = (_mm256_loadu_pd(crp.add(i)), _mm256_loadu_pd(srp.add(i)));
                    _mm256_storeu_pd(cp.add(i), _mm256_fmsub_pd(ck, rc, _mm256_mul_pd(sk, rs)));
                    _mm256_storeu_pd(sp.add(i), _mm256_fmadd_pd(sk, rc, _mm256_mul_pd(ck, rs)));
                }
            }
            k += LANES;
        }
        *gj = hsum(_mm256_add_pd(acc[0], acc[3]));
        *dj = hsum(_mm256_add_pd(acc[1], acc[4]));
        *d2j = hsum(_mm256_add_pd(acc[2], acc[5]));
    }
}

/// [`rotate_accumulate_avx2`] on 8-lane vectors, two nodes per pass over the terms: the
/// phasors rotated for the first node feed the second from registers, so the weights and
/// rotations are loaded once per two nodes. Lane l of an accumulator holds the terms that
/// lane l % 4 of the AVX2 kernel's accumulator l / 4 holds, and the reduction adds them in
/// its order, so the bits are the same. Safety: AVX-512F present, every slice of `c.len()`
/// elements, a multiple of [`LANES`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rotate_accumulate_avx512(c: &mut [f64], s: &mut [f64], cr: &[f64], sr: &[f64], w: [&[f64]; 3], out: Sums) {
    use std::arch::x86_64::*;
    let n = c.len();
    let (cp, sp) = (c.as_mut_ptr(), s.as_mut_ptr());
    let (crp, srp) = (cr.as_ptr(), sr.as_ptr());
    let (ap, bp, ep) = (w[0].as_ptr(), w[1].as_ptr(), w[2].as_ptr());
    let hsum = |v: __m512d| {
        let q = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd::<1>(v));
        let mut lanes = [0.0f64; 4];
        // SAFETY: `lanes` holds 4 f64.
        unsafe { _mm256_storeu_pd(lanes.as_mut_ptr(), q) };
        (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
    };
    let rotate = |ck: __m512d, sk: __m512d, rc: __m512d, rs: __m512d| {
        (_mm512_fmsub_pd(ck, rc, _mm512_mul_pd(sk, rs)), _mm512_fmadd_pd(sk, rc, _mm512_mul_pd(ck, rs)))
    };
    let nodes = out.g.len();
    let mut j = 0;
    while j < nodes {
        let two = j + 1 < nodes;
        let mut acc = [_mm512_setzero_pd(); 6];
        let mut i = 0;
        while i < n {
            // SAFETY: i + 8 <= n (n is a multiple of 8) for every slice read or written.
            unsafe {
                let (ck, sk) = (_mm512_loadu_pd(cp.add(i)), _mm512_loadu_pd(sp.add(i)));
                let (a, b, e) = (_mm512_loadu_pd(ap.add(i)), _mm512_loadu_pd(bp.add(i)), _mm512_loadu_pd(ep.add(i)));
                let (rc, rs) = (_mm512_loadu_pd(crp.add(i)), _mm512_loadu_pd(srp.add(i)));
                acc[0] = _mm512_fmadd_pd(a, sk, acc[0]);
                acc[1] = _mm512_fmadd_pd(b, ck, acc[1]);
                acc[2] = _mm512_fmadd_pd(e, sk, acc[2]);
                let (mut ck, mut sk) = rotate(ck, sk, rc, rs);
                if two {
                    acc[3] = _mm512_fmadd_pd(a, sk, acc[3]);
                    acc[4] = _mm512_fmadd_pd(b, ck, acc[4]);
                    acc[5] = _mm512_fmadd_pd(e, sk, acc[5]);
                    (ck, sk) = rotate(ck, sk, rc, rs);
                }
                _mm512_storeu_pd(cp.add(i), ck);
                _mm512_storeu_pd(sp.add(i), sk);
            }
            i += LANES;
        }
        for (h, node) in [j, j + 1].into_iter().enumerate().take(1 + usize::from(two)) {
            out.g[node] = hsum(acc[3 * h]);
            out.dg[node] = hsum(acc[3 * h + 1]);
            out.d2g[node] = hsum(acc[3 * h + 2]);
        }
        j += 1 + usize::from(two);
    }
}

#[inline(always)]
fn rotate_accumulate_generic(c: &mut [f64], s: &mut [f64], cr: &[f64], sr: &[f64], w: [&[f64]; 3], out: Sums) {
    let [amps, af, aff] = w;
    for ((gj, dj), d2j) in out.g.iter_mut().zip(out.dg.iter_mut()).zip(out.d2g.iter_mut()) {
        let mut gacc = [0.0f64; LANES];
        let mut dacc = [0.0f64; LANES];
        let mut d2acc = [0.0f64; LANES];
        for ((cc, ss), ((rc, rs), (a, (b, e)))) in c.chunks_exact_mut(LANES).zip(s.chunks_exact_mut(LANES)).zip(
            cr.chunks_exact(LANES)
                .zip(sr.chunks_exact(LANES))
                .zip(amps.chunks_exact(LANES).zip(af.chunks_exact(LANES).zip(aff.chunks_exact(LANES)))),
        ) {
            for l in 0..LANES {
                let (ck, sk) = (cc[l], ss[l]);
                gacc[l] += a[l] * sk;
                dacc[l] += b[l] * ck;
                d2acc[l] += e[l] * sk;
                cc[l] = ck * rc[l] - sk * rs[l];
                ss[l] = sk * rc[l] + ck * rs[l];
            }
        }
        *gj = gacc.iter().sum();
        *dj = dacc.iter().sum();
        *d2j = d2acc.iter().sum();
    }
}

/// One layer's activation, with its wrapper parameters drawn at construction.
#[derive(Clone, Debug)]
pub enum Activation {
    Simple { f: Simple, scale: f32, bias: f32 },
    Fourier(Box<Fourier>),
}

impl Activation {
    pub fn new(name: &str, rng: &mut Rng) -> Activation {
        if let Some(f) = Simple::from_name(name) {
            let scale = (2.0 * rng.normal()).exp() as f32;
            let bias = rng.normal() as f32;
            Activation::Simple { f, scale, bias }
        } else {
            Activation::Fourier(Box::new(Fourier::sample(rng)))
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Activation::Fourier(_) => "random_function",
            Activation::Simple { f, .. } => BASE_ACTIVATIONS[*f as usize],
        }
    }

    /// Applies the wrapped activation to an (rows x cols) row-major matrix in place:
    /// standardisation and the random affine map are folded into one pass.
    pub fn apply(&self, x: &mut [f32], rows: usize, cols: usize) {
        if rows == 0 || cols == 0 {
            return;
        }
        let (mean, inv) = column_stats(x, rows, cols);
        match self {
            Activation::Simple { f, scale, bias } => {
                let a: Vec<f32> = inv.iter().map(|i| scale * i).collect();
                let b: Vec<f32> = mean.iter().zip(&inv).map(|(m, i)| scale * (bias - m * i)).collect();
                f.map_affine(x, &a, &b);
            }
            Activation::Fourier(g) => {
                let b: Vec<f32> = mean.iter().zip(&inv).map(|(m, i)| -m * i).collect();
                affine_loop(x, &inv, &b, |v| v);
                g.apply(x);
            }
        }
    }
}

/// Per-column mean and `1 / (std + 1e-6)` with the unbiased std. Dispatches to an AVX-512 or
/// AVX2 build where the CPU has one: more lanes, the same operations in the same order (no
/// fused multiply-add), so the same bits.
fn column_stats(x: &[f32], rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports the feature the function is compiled for.
            return unsafe { column_stats_avx512(x, rows, cols) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { column_stats_avx2(x, rows, cols) };
        }
    }
    column_stats_generic(x, rows, cols)
}

/// [`column_stats_generic`] on strips of up to 64 columns whose sums stay in registers
/// while the rows go by (the generic loop loads and stores every column's sum once per row).
/// Each column is still summed row after row with the same operations, so the bits are the
/// same.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn column_stats_avx512(x: &[f32], rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    assert!(x.len() == rows * cols);
    let mut mean = vec![0.0f64; cols];
    let mut var = vec![0.0f64; cols];
    for c0 in (0..cols).step_by(64) {
        let width = (cols - c0).min(64);
        let (m, v) = (&mut mean[c0..c0 + width], &mut var[c0..c0 + width]);
        // SAFETY: x holds rows x cols values and the strip's columns c0..c0 + width exist.
        unsafe {
            match width.div_ceil(8) {
                1 => strip_stats::<1>(x, rows, cols, c0, width, m, v),
                2 => strip_stats::<2>(x, rows, cols, c0, width, m, v),
                3 => strip_stats::<3>(x, rows, cols, c0, width, m, v),
                4 => strip_stats::<4>(x, rows, cols, c0, width, m, v),
                5 => strip_stats::<5>(x, rows, cols, c0, width, m, v),
                6 => strip_stats::<6>(x, rows, cols, c0, width, m, v),
                7 => strip_stats::<7>(x, rows, cols, c0, width, m, v),
                _ => strip_stats::<8>(x, rows, cols, c0, width, m, v),
            }
        }
    }
    stats_result(&mean, &var, rows)
}

/// Sums and squared deviations of the columns `c0..c0 + width` (NV vectors of 8 doubles).
///
/// # Safety
/// The CPU supports AVX-512F; `x` holds rows x cols values, `c0 + width <= cols` and
/// `width <= 8 * NV`; `mean` and `var` hold `width` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn strip_stats<const NV: usize>(
    x: &[f32],
    rows: usize,
    cols: usize,
    c0: usize,
    width: usize,
    mean: &mut [f64],
    var: &mut [f64],
) {
    use std::arch::x86_64::*;
    let live = |v: usize| ((1u32 << width.saturating_sub(8 * v).min(8)) - 1) as u8;
    let masks: [u8; NV] = std::array::from_fn(live);
    let p = x.as_ptr();
    let row = |r: usize, v: usize| -> __m512d {
        // SAFETY: under its mask (at most 8 lanes) the load reads columns of the strip in a
        // row r < rows.
        unsafe {
            let q = _mm512_maskz_loadu_ps(u16::from(masks[v]), p.add(r * cols + c0 + 8 * v));
            _mm512_cvtps_pd(_mm512_castps512_ps256(q))
        }
    };
    let mut acc = [_mm512_setzero_pd(); NV];
    for r in 0..rows {
        for (v, a) in acc.iter_mut().enumerate() {
            *a = _mm512_add_pd(*a, row(r, v));
        }
    }
    let mut sums = [0.0f64; 64];
    for (v, a) in acc.iter().enumerate() {
        // SAFETY: sums holds 64 doubles.
        unsafe { _mm512_storeu_pd(sums.as_mut_ptr().add(8 * v), *a) };
    }
    for (m, &s) in mean.iter_mut().zip(&sums) {
        *m = s / rows as f64;
    }
    let mut means = [0.0f64; 64];
    means[..width].copy_from_slice(mean);
    // SAFETY: means holds 64 doubles.
    let mv: [__m512d; NV] = std::array::from_fn(|v| unsafe { _mm512_loadu_pd(means.as_ptr().add(8 * v)) });
    let mut acc = [_mm512_setzero_pd(); NV];
    for r in 0..rows {
        for (v, a) in acc.iter_mut().enumerate() {
            let d = _mm512_sub_pd(row(r, v), mv[v]);
            *a = _mm512_add_pd(*a, _mm512_mul_pd(d, d));
        }
    }
    for (v, a) in acc.iter().enumerate() {
        // SAFETY: as above.
        unsafe { _mm512_storeu_pd(sums.as_mut_ptr().add(8 * v), *a) };
    }
    var.copy_from_slice(&sums[..width]);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn column_stats_avx2(x: &[f32], rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    column_stats_generic(x, rows, cols)
}

#[inline(always)]
fn column_stats_generic(x: &[f32], rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
    let mut mean = vec![0.0f64; cols];
    for row in x.chunks_exact(cols) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    for m in &mut mean {
        *m /= rows as f64;
    }
    let mut var = vec![0.0f64; cols];
    for row in x.chunks_exact(cols) {
        for ((s, &m), &v) in var.iter_mut().zip(&mean).zip(row) {
            let d = f64::from(v) - m;
            *s += d * d;
        }
    }
    stats_result(&mean, &var, rows)
}

/// Means and `1 / (std + 1e-6)` in float32 from the column sums of squared deviations.
#[inline(always)]
fn stats_result(mean: &[f64], var: &[f64], rows: usize) -> (Vec<f32>, Vec<f32>) {
    let denom = if rows > 1 { (rows - 1) as f64 } else { 1.0 };
    let inv = var.iter().map(|s| (1.0 / ((s / denom).sqrt() + 1e-6)) as f32).collect();
    (mean.iter().map(|&m| m as f32).collect(), inv)
}

/// Per-column `(x - mean) / (std + 1e-6)` with the unbiased std, as the reference wrapper.
pub fn standardize_columns(x: &mut [f32], rows: usize, cols: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let (mean, inv) = column_stats(x, rows, cols);
    let b: Vec<f32> = mean.iter().zip(&inv).map(|(m, i)| -m * i).collect();
    affine_loop(x, &inv, &b, |v| v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Key, domain};

    #[test]
    fn every_vector_build_of_the_simple_activations_gives_the_portable_bits() {
        // 1003 x 37: rows run the 16- and 8-lane loop bodies and their remainders; values
        // from -1e4 to 1e4 and zeros, so every branch of every function (clamps, signs, the
        // exp limits) is taken.
        let (rows, cols) = (1003, 37);
        let mut rng = Key::new(12, [domain::TEST, 102, 0, 0]).rng();
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| if i % 97 == 0 { 0.0 } else { (rng.normal() * (10f64).powf(rng.range(-3.0, 4.0))) as f32 })
            .collect();
        let a: Vec<f32> = (0..cols).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..cols).map(|_| rng.normal() as f32).collect();
        for name in Simple::NAMES {
            let f = Simple::from_name(name).expect("a listed name");
            let mut want = x.clone();
            f.map_affine_generic(&mut want, &a, &b);
            let mut got = x.clone();
            f.map_affine(&mut got, &a, &b);
            #[allow(unused_mut)] // only x86_64 adds builds
            let mut builds: Vec<(&str, Vec<f32>)> = vec![("dispatched", got)];
            #[cfg(target_arch = "x86_64")]
            for (build, present) in [
                ("avx2", std::arch::is_x86_feature_detected!("avx2")),
                ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ] {
                if present {
                    let mut got = x.clone();
                    // SAFETY: the CPU has the feature.
                    unsafe {
                        if build == "avx2" {
                            f.map_affine_avx2(&mut got, &a, &b)
                        } else {
                            f.map_affine_avx512(&mut got, &a, &b)
                        }
                    }
                    builds.push((build, got));
                }
            }
            for (build, got) in builds {
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(g.to_bits() == w.to_bits(), "{name}, {build}: element {i} is {g}, portable {w}");
                }
            }
        }
    }

    #[test]
    fn column_stat_builds_agree_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            let mut rng = Key::new(12, [domain::TEST, 103, 0, 0]).rng();
            for (rows, cols) in
                [(1, 1), (2, 7), (37, 8), (37, 9), (1024, 63), (100, 64), (100, 65), (1024, 100), (9, 130)]
            {
                // Mixed magnitudes and offsets, where any change of order would show.
                let x: Vec<f32> =
                    (0..rows * cols).map(|i| (rng.normal() * 10f64.powi(i as i32 % 7 - 3) + 3.0) as f32).collect();
                let want = column_stats_generic(&x, rows, cols);
                // SAFETY: checked just above.
                let got = unsafe { column_stats_avx512(&x, rows, cols) };
                let bits = crate::tests::f32_bits;
                assert_eq!(bits(&want.0), bits(&got.0), "{rows} x {cols}: means");
                assert_eq!(bits(&want.1), bits(&got.1), "{rows} x {cols}: inverse stds");
            }
        }
    }

    #[test]
    fn phasor_kernels_agree_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            let mut rng = Key::new(12, [domain::TEST, 102, 0, 0]).rng();
            let n = 264;
            let mut draw = |scale: f64| -> Vec<f64> { (0..n).map(|_| scale * rng.normal()).collect() };
            let (c0, s0, cr, sr) = (draw(1.0), draw(1.0), draw(0.5), draw(0.5));
            let (a, b, e) = (draw(1.0), draw(3.0), draw(9.0));
            // An odd node count: the AVX-512 kernel's pairs and its last single node.
            for nodes in [1, 2, 7, 1024] {
                // Per kernel: the bits of the rotated cosines and sines, then of the three sums.
                let mut got: Vec<Vec<u64>> = Vec::new();
                for wide in [false, true] {
                    let (mut c, mut s) = (c0.clone(), s0.clone());
                    let mut sums = [vec![0.0; nodes], vec![0.0; nodes], vec![0.0; nodes]];
                    let [g, dg, d2g] = &mut sums;
                    let out = Sums { g, dg, d2g };
                    // SAFETY: checked just above; every slice has n (a multiple of 8) elements.
                    unsafe {
                        if wide {
                            rotate_accumulate_avx512(&mut c, &mut s, &cr, &sr, [&a, &b, &e], out);
                        } else {
                            rotate_accumulate_avx2(&mut c, &mut s, &cr, &sr, [&a, &b, &e], out);
                        }
                    }
                    let all = [&c, &s, &sums[0], &sums[1], &sums[2]];
                    got.push(all.iter().flat_map(|v| v.iter().map(|x| x.to_bits())).collect());
                }
                assert!(got[0] == got[1], "{nodes} nodes: the kernels differ");
            }
        }
    }

    #[test]
    fn vector_table_evaluation_matches_the_scalar_one_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            let mut rng = Key::new(12, [domain::TEST, 101, 0, 0]).rng();
            let poly: Vec<[f32; 8]> =
                (0..97).map(|_| std::array::from_fn(|k| if k < 6 { rng.normal() as f32 } else { 0.0 })).collect();
            let (lo, inv_h) = (-3.25, 97.0 / 6.5);
            // 1003 values: a remainder after the vectors, and values on and past the last node.
            let mut a: Vec<f32> = (0..1003).map(|_| rng.range(lo, 3.5) as f32).collect();
            a[0] = lo as f32;
            a[1] = 3.25;
            a[2] = 3.5;
            let mut b = a.clone();
            let mut c = a.clone();
            // SAFETY: checked just above.
            unsafe { eval_table_fma(&mut a, &poly, lo, inv_h) };
            eval_table_generic::<true>(&mut b, &poly, lo, inv_h);
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: checked just above.
                unsafe { eval_table_avx512(&mut c, &poly, lo, inv_h) };
                assert!(c.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
        }
    }

    #[test]
    fn fourier_table_is_within_its_bound() {
        // Many random functions on standardised inputs with light and heavy tails.
        let mut worst = 0.0f64;
        for case in 0..60u64 {
            let mut rng = Key::new(11, [domain::TEST, 100, case, 0]).rng();
            let g = Fourier::sample(&mut rng);
            let n = 4096;
            let mut z: Vec<f32> = (0..n)
                .map(|_| {
                    let v = rng.normal();
                    (if case % 3 == 0 { v * v * v } else { v }) as f32
                })
                .collect();
            let orig = z.clone();
            g.apply(&mut z);
            for (a, &x) in z.iter().zip(&orig) {
                let exact = g.exact(f64::from(x));
                let err = (f64::from(*a) - exact).abs();
                let allowed = FOURIER_TOL;
                assert!(err <= allowed, "case {case}: z={x} approx={a} exact={exact} err={err}");
                worst = worst.max(err);
            }
        }
        assert!(worst > 0.0);
    }

    #[test]
    fn fourier_amplitudes_have_unit_norm_profile() {
        let mut rng = Key::new(5, [domain::TEST, 101, 0, 0]).rng();
        let g = Fourier::sample(&mut rng);
        assert_eq!(g.freqs.len(), N_FREQUENCIES);
        assert!(g.freqs.iter().all(|&f| f > 0.0 && f < 256.0));
        // a_k = c_k * N(0,1) with ||c|| = 1, so E||a||^2 = 1: loose sanity bound.
        let e: f64 = g.amps.iter().map(|a| a * a).sum();
        assert!(e > 0.0 && e < 20.0, "{e}");
    }

    #[test]
    fn standardize_gives_zero_mean_unit_std() {
        let mut rng = Key::new(1, [domain::TEST, 102, 0, 0]).rng();
        let (rows, cols) = (500, 3);
        let mut x: Vec<f32> = (0..rows * cols).map(|i| 5.0 + (i % 3) as f32 * rng.normal_f32()).collect();
        standardize_columns(&mut x, rows, cols);
        for c in 1..cols {
            let col: Vec<f64> = (0..rows).map(|r| f64::from(x[r * cols + c])).collect();
            let m = col.iter().sum::<f64>() / rows as f64;
            let v = col.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (rows - 1) as f64;
            assert!(m.abs() < 1e-5 && (v.sqrt() - 1.0).abs() < 1e-4, "{m} {v}");
        }
        // A constant column maps to zeros instead of dividing by zero.
        assert!((0..rows).all(|r| x[r * cols] == 0.0));
    }

    #[test]
    fn simple_names_are_the_base_activations() {
        assert_eq!(Simple::NAMES, &BASE_ACTIVATIONS[..18]);
        for &name in Simple::NAMES {
            assert_eq!(Simple::NAMES[Simple::from_name(name).unwrap() as usize], name);
        }
    }

    #[test]
    fn random_choice_covers_the_28_entries() {
        let s = ActivationSampler::new(vec![RANDOM_CHOICE.to_string()], vec![1.0]);
        let mut rng = Key::new(2, [domain::TEST, 103, 0, 0]).rng();
        let n = 28_000;
        let fourier = (0..n).filter(|_| matches!(s.draw(&mut rng), Activation::Fourier(_))).count();
        // 10 of the 28 entries are the random Fourier function.
        assert!((fourier as f64 / n as f64 - 10.0 / 28.0).abs() < 0.015, "{fourier}");
    }
}
