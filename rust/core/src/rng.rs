//! Keyed, counter-based randomness.
//!
//! Every random draw in tabfm comes from a [`Rng`] whose 256-bit state is the output of
//! Philox4x64-10 applied to a *semantic path*: `(seed, domain, batch index, position,
//! attempt, ...)`. A dataset therefore depends only on its key, never on thread count,
//! scheduling, worker processes or on which batches were drawn before.
//!
//! The sequential generator seeded from a key is xoshiro256++; the samplers (normal,
//! gamma, beta, Zipf, ...) are implemented here rather than taken from a crate so that
//! their output is pinned by our own tests and cannot change under a dependency bump.

use std::sync::OnceLock;

const PHILOX_M0: u64 = 0xD2E7_470E_E14C_6C93;
const PHILOX_M1: u64 = 0xCA5A_8263_9512_1157;
const PHILOX_W0: u64 = 0x9E37_79B9_7F4A_7C15;
const PHILOX_W1: u64 = 0xBB67_AE85_84CA_A73B;

#[inline(always)]
fn mulhilo(a: u64, b: u64) -> (u64, u64) {
    let p = u128::from(a) * u128::from(b);
    ((p >> 64) as u64, p as u64)
}

/// The Philox4x64 block function with 10 rounds (Salmon et al., SC'11).
pub fn philox4x64_10(ctr: [u64; 4], key: [u64; 2]) -> [u64; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// Domains separate the independent uses of one seed.
pub mod domain {
    pub const BATCH: u64 = 0x6261_7463_6800_0001; // batch-level draws (seq_len, train size)
    pub const GROUP: u64 = 0x6772_6f75_7000_0002; // group / subgroup hyper-parameters
    pub const DATASET: u64 = 0x6461_7461_7300_0003; // one dataset attempt
    pub const TREE_SHAPE: u64 = 0x7472_6565_0000_0005; // sizes of a tree SCM attempt
    pub const TEST: u64 = 0x7465_7374_0000_0004; // exposed for tests and diagnostics
}

/// A key: the seed plus up to four words of semantic path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub seed: u64,
    pub path: [u64; 4],
}

impl Key {
    pub fn new(seed: u64, path: [u64; 4]) -> Self {
        Key { seed, path }
    }

    /// The generator for this key: state = Philox4x64-10(ctr = path, key = (seed, tag)).
    pub fn rng(&self) -> Rng {
        let s = philox4x64_10(self.path, [self.seed, 0x7461_6266_6d00_0000]);
        Rng::from_state(s)
    }
}

/// xoshiro256++ (Blackman & Vigna), seeded from a Philox block.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn from_state(mut s: [u64; 4]) -> Self {
        if s == [0; 4] {
            s[0] = 1; // the all-zero state is a fixed point
        }
        Rng { s }
    }

    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform on [0, 1) with 53 random bits.
    #[inline(always)]
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform on (0, 1): never returns 0, for logs and negative powers.
    #[inline(always)]
    pub fn uniform_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    #[inline(always)]
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    #[inline(always)]
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in [0, n), unbiased (Lemire's multiply-and-reject).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Uniform integer in [lo, hi) (numpy `randint` convention).
    pub fn randint(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(hi > lo, "randint: empty range [{lo}, {hi})");
        lo + self.below((hi - lo) as u64) as i64
    }

    #[inline(always)]
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Standard normal by a 256-layer ziggurat (Marsaglia & Tsang 2000).
    #[inline]
    pub fn normal(&mut self) -> f64 {
        let z = ziggurat();
        let bits = self.next_u64();
        let i = (bits & 0xff) as usize;
        let u = 2.0 * ((bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0;
        let x = u * z.x[i];
        if x.abs() < z.x[i + 1] { x } else { self.normal_reject(z, i, x, u) }
    }

    #[inline(always)]
    pub fn normal_f32(&mut self) -> f32 {
        self.normal() as f32
    }

    /// Fills `out` with N(mean, std) draws in float32: the same ziggurat, two draws per
    /// 64-bit word (8 bits pick the layer, 24 bits the position), for bulk noise.
    pub fn fill_normal(&mut self, out: &mut [f32], mean: f32, std: f32) {
        let z = ziggurat();
        let mut pairs = out.chunks_exact_mut(2);
        for pair in &mut pairs {
            let bits = self.next_u64();
            pair[0] = mean + std * self.normal_from_u32(z, bits as u32);
            pair[1] = mean + std * self.normal_from_u32(z, (bits >> 32) as u32);
        }
        for v in pairs.into_remainder() {
            *v = mean + std * self.normal() as f32;
        }
    }

    #[inline(always)]
    fn normal_from_u32(&mut self, z: &Ziggurat, w: u32) -> f32 {
        let i = (w & 0xff) as usize;
        let u = f64::from(w >> 8) * (2.0 / (1u32 << 24) as f64) - 1.0;
        let x = u * z.x[i];
        if x.abs() < z.x[i + 1] {
            return x as f32;
        }
        self.normal_reject(z, i, x, u) as f32
    }

    /// The rare part of the ziggurat (tail or wedge) for a draw `x = u * x[i]` that missed
    /// the layer's core; on rejection the whole algorithm starts over.
    #[cold]
    fn normal_reject(&mut self, z: &Ziggurat, i: usize, x: f64, u: f64) -> f64 {
        if i == 0 {
            loop {
                let a = -self.uniform_open().ln() / ZIG_R;
                let b = -self.uniform_open().ln();
                if 2.0 * b > a * a {
                    return if u < 0.0 { -(ZIG_R + a) } else { ZIG_R + a };
                }
            }
        }
        let y = z.f[i] + self.uniform() * (z.f[i + 1] - z.f[i]);
        if y < (-0.5 * x * x).exp() { x } else { self.normal() }
    }

    /// Exponential with mean 1.
    pub fn exp1(&mut self) -> f64 {
        -self.uniform_open().ln()
    }

    /// Gamma(shape, scale) by Marsaglia & Tsang (2000); shape < 1 by the boost U^(1/a).
    pub fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        assert!(shape > 0.0 && scale > 0.0, "gamma: shape and scale must be positive");
        if shape < 1.0 {
            let g = self.gamma(shape + 1.0, 1.0);
            return scale * g * self.uniform_open().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let (x, v) = loop {
                let x = self.normal();
                let v = 1.0 + c * x;
                if v > 0.0 {
                    break (x, v * v * v);
                }
            };
            let u = self.uniform_open();
            if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return scale * d * v;
            }
        }
    }

    /// Beta(a, b) as a ratio of gammas.
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a, 1.0);
        let y = self.gamma(b, 1.0);
        if x + y == 0.0 { 0.5 } else { x / (x + y) }
    }

    /// N(mu, sigma) truncated to [lo, hi], by rejection (callers keep the acceptance high).
    pub fn trunc_normal(&mut self, mu: f64, sigma: f64, lo: f64, hi: f64) -> f64 {
        for _ in 0..10_000 {
            let v = mu + sigma * self.normal();
            if v >= lo && v <= hi {
                return v;
            }
        }
        mu.clamp(lo, hi)
    }

    /// Zipf(a), a > 1, by Devroye's rejection method (as numpy's `zipf`).
    pub fn zipf(&mut self, a: f64) -> u64 {
        let am1 = a - 1.0;
        let b = 2f64.powf(am1);
        loop {
            let u = 1.0 - self.uniform();
            let v = self.uniform();
            let x = u.powf(-1.0 / am1).floor();
            if !(1.0..=9.0e18).contains(&x) {
                continue;
            }
            let t = (1.0 + 1.0 / x).powf(am1);
            if v * x * (t - 1.0) / (b - 1.0) <= t / b {
                return x as u64;
            }
        }
    }

    /// Index drawn with probability proportional to `weights` (non-negative, positive sum).
    pub fn categorical(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut u = self.uniform() * total;
        for (i, &w) in weights.iter().enumerate() {
            if u < w {
                return i;
            }
            u -= w;
        }
        weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
    }

    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }

    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }
}

const ZIG_LAYERS: usize = 256;
const ZIG_R: f64 = 3.654_152_885_361_009;
const ZIG_V: f64 = 0.004_928_673_233_99;

struct Ziggurat {
    x: [f64; ZIG_LAYERS + 1],
    f: [f64; ZIG_LAYERS + 1],
}

fn ziggurat() -> &'static Ziggurat {
    static TABLE: OnceLock<Ziggurat> = OnceLock::new();
    TABLE.get_or_init(|| {
        // x[0] is the width of the base strip (area v incl. the tail), x[1] = r, then each
        // layer of area v stacked on the previous one; x[256] = 0 closes the top.
        let pdf = |x: f64| (-0.5 * x * x).exp();
        let mut x = [0.0; ZIG_LAYERS + 1];
        let mut f = [0.0; ZIG_LAYERS + 1];
        x[0] = ZIG_V / pdf(ZIG_R);
        x[1] = ZIG_R;
        for i in 1..ZIG_LAYERS - 1 {
            let arg = ZIG_V / x[i] + pdf(x[i]);
            x[i + 1] = (-2.0 * arg.ln()).sqrt();
        }
        x[ZIG_LAYERS] = 0.0;
        for i in 0..=ZIG_LAYERS {
            f[i] = pdf(x[i]);
        }
        Ziggurat { x, f }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_known_answer() {
        // Random123 known-answer vectors for philox4x64-10.
        assert_eq!(
            philox4x64_10([0; 4], [0; 2]),
            [0x16554d9eca36314c, 0xdb20fe9d672d0fdc, 0xd7e772cee186176b, 0x7e68b68aec7ba23b]
        );
        assert_eq!(
            philox4x64_10([u64::MAX; 4], [u64::MAX; 2]),
            [0x87b092c3013fe90b, 0x438c3c67be8d0224, 0x9cc7d7c69cd777b6, 0xa09caebf594f0ba0]
        );
        assert_eq!(
            philox4x64_10(
                [0x243f6a8885a308d3, 0x13198a2e03707344, 0xa4093822299f31d0, 0x082efa98ec4e6c89],
                [0x452821e638d01377, 0xbe5466cf34e90c6c]
            ),
            [0xa528f45403e61d95, 0x38c72dbd566e9788, 0xa5a1610e72fd18b5, 0x57bd43b5e52b7fe6]
        );
    }

    #[test]
    fn keyed_streams_are_pinned_and_distinct() {
        let mut a = Key::new(42, [domain::TEST, 0, 0, 0]).rng();
        let mut b = Key::new(42, [domain::TEST, 1, 0, 0]).rng();
        let va: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_ne!(va, vb);
        let mut a2 = Key::new(42, [domain::TEST, 0, 0, 0]).rng();
        let va2: Vec<u64> = (0..4).map(|_| a2.next_u64()).collect();
        assert_eq!(va, va2);
    }

    fn moments(xs: &[f64]) -> (f64, f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
        let k = xs.iter().map(|x| (x - m).powi(4)).sum::<f64>() / n / (v * v);
        (m, v, k)
    }

    #[test]
    fn normal_moments_and_tails() {
        let mut r = Key::new(7, [domain::TEST, 2, 0, 0]).rng();
        let xs: Vec<f64> = (0..2_000_000).map(|_| r.normal()).collect();
        let (m, v, k) = moments(&xs);
        assert!(m.abs() < 3e-3, "mean {m}");
        assert!((v - 1.0).abs() < 4e-3, "var {v}");
        assert!((k - 3.0).abs() < 3e-2, "kurtosis {k}");
        // P(|X| > 3.6541) = 2.58e-4: exercises the tail branch.
        let tail = xs.iter().filter(|x| x.abs() > ZIG_R).count() as f64 / xs.len() as f64;
        assert!((tail - 2.58e-4).abs() < 5e-5, "tail share {tail}");
    }

    #[test]
    fn bulk_float32_normals_have_normal_moments() {
        let mut r = Key::new(8, [domain::TEST, 6, 0, 0]).rng();
        let mut buf = vec![0.0f32; 2_000_001];
        r.fill_normal(&mut buf, 1.0, 2.0);
        let xs: Vec<f64> = buf.iter().map(|&v| (f64::from(v) - 1.0) / 2.0).collect();
        let (m, v, k) = moments(&xs);
        assert!(m.abs() < 3e-3 && (v - 1.0).abs() < 4e-3 && (k - 3.0).abs() < 3e-2, "{m} {v} {k}");
        let tail = xs.iter().filter(|x| x.abs() > ZIG_R).count() as f64 / xs.len() as f64;
        assert!((tail - 2.58e-4).abs() < 5e-5, "tail share {tail}");
    }

    #[test]
    fn gamma_beta_moments() {
        let mut r = Key::new(9, [domain::TEST, 3, 0, 0]).rng();
        for &(shape, scale) in &[(0.5, 2.0), (1.0, 10.0), (4.0, 0.5)] {
            let xs: Vec<f64> = (0..400_000).map(|_| r.gamma(shape, scale)).collect();
            let (m, v, _) = moments(&xs);
            assert!((m / (shape * scale) - 1.0).abs() < 0.01, "gamma mean {m}");
            assert!((v / (shape * scale * scale) - 1.0).abs() < 0.03, "gamma var {v}");
        }
        let xs: Vec<f64> = (0..400_000).map(|_| r.beta(2.0, 5.0)).collect();
        let (m, _, _) = moments(&xs);
        assert!((m - 2.0 / 7.0).abs() < 2e-3);
    }

    #[test]
    fn below_is_uniform() {
        let mut r = Key::new(1, [domain::TEST, 4, 0, 0]).rng();
        let mut counts = [0u32; 7];
        for _ in 0..700_000 {
            counts[r.below(7) as usize] += 1;
        }
        for c in counts {
            assert!((f64::from(c) - 100_000.0).abs() < 1_500.0, "{counts:?}");
        }
    }

    #[test]
    fn zipf_matches_pmf() {
        // P(X = 1) = 1 / zeta(a); zeta(2) = pi^2 / 6.
        let mut r = Key::new(3, [domain::TEST, 5, 0, 0]).rng();
        let n = 400_000;
        let ones = (0..n).filter(|_| r.zipf(2.0) == 1).count() as f64 / n as f64;
        assert!((ones - 6.0 / std::f64::consts::PI.powi(2)).abs() < 4e-3, "{ones}");
    }
}
