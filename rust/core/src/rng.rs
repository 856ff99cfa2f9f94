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
    /// 64-bit word (8 bits pick the layer, 24 bits the position), for bulk noise. From
    /// [`BULK_MIN`] draws on, the words come from four xoshiro256++ lanes seeded from this
    /// generator and the draws are made eight at a time (AVX2 where the CPU has it, the same
    /// arithmetic either way); the rare tail and wedge cases use this generator, in order.
    pub fn fill_normal(&mut self, out: &mut [f32], mean: f32, std: f32) {
        let z = ziggurat();
        if out.len() < BULK_MIN {
            let mut pairs = out.chunks_exact_mut(2);
            for pair in &mut pairs {
                let bits = self.next_u64();
                pair[0] = mean + std * self.normal_from_u32(z, bits as u32);
                pair[1] = mean + std * self.normal_from_u32(z, (bits >> 32) as u32);
            }
            for v in pairs.into_remainder() {
                *v = mean + std * self.normal() as f32;
            }
            return;
        }
        let body = out.len() / BULK * BULK;
        let (head, tail) = out.split_at_mut(body);
        let mut lanes = Lanes::seed(self);
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports the feature the function is compiled for.
                unsafe { fill_normal_avx2(&mut lanes, self, z, head, mean, std) };
            } else {
                fill_normal_lanes(&mut lanes, self, z, head, mean, std);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        fill_normal_lanes(&mut lanes, self, z, head, mean, std);
        for v in tail {
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

    /// The bulk draw for a 32-bit word whose layer test failed: the ziggurat's tail or wedge
    /// case on the float32 `x = u * x[i]`.
    #[cold]
    fn normal_reject_f32(&mut self, z: &Ziggurat, w: u32) -> f32 {
        let (i, u) = bulk_layer(w);
        let x = u * z.x32[i];
        self.normal_reject(z, i, f64::from(x), f64::from(u)) as f32
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
        if z.below_density(i, x, y) { x } else { self.normal() }
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

/// Draws per step of the bulk normal generator: 4 lanes x 2 words of 32 bits.
const BULK: usize = 8;
/// Below this many draws, seeding the lanes costs more than they save.
const BULK_MIN: usize = 64;
/// Draws per segment of the AVX2 kernel, after which its misses are redone.
const SEGMENT: usize = 512;

/// Four xoshiro256++ states side by side: `s[word][lane]`, the layout of one 4 x 64-bit
/// vector per state word.
struct Lanes {
    s: [[u64; 4]; 4],
}

impl Lanes {
    /// Seeds each lane from the parent's next draws through SplitMix64's finaliser, so that
    /// no lane's state is a plain xoshiro output of the parent.
    fn seed(parent: &mut Rng) -> Lanes {
        let mix = |mut z: u64| {
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut s = [[0u64; 4]; 4];
        for lane in 0..4 {
            for word in &mut s {
                word[lane] = mix(parent.next_u64());
            }
            if s.iter().all(|word| word[lane] == 0) {
                s[0][lane] = 1; // the all-zero state is a fixed point
            }
        }
        Lanes { s }
    }

    /// One xoshiro256++ step of every lane.
    #[inline(always)]
    fn next(&mut self) -> [u64; 4] {
        let [s0, s1, s2, s3] = &mut self.s;
        std::array::from_fn(|l| {
            let result = s0[l].wrapping_add(s3[l]).rotate_left(23).wrapping_add(s0[l]);
            let t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(45);
            result
        })
    }
}

/// Layer index and position in [-1, 1) of a 32-bit word (exact in float32: 24 bits).
#[inline(always)]
fn bulk_layer(w: u32) -> (usize, f32) {
    ((w & 0xff) as usize, (w >> 8) as f32 * (1.0 / (1u32 << 23) as f32) - 1.0)
}

/// The bulk draws, one lane step (8 draws) at a time; `out.len()` is a multiple of [`BULK`].
/// Draw `j` of a step uses word `j / 2` of the step, its low half when `j` is even.
fn fill_normal_lanes(lanes: &mut Lanes, rng: &mut Rng, z: &Ziggurat, out: &mut [f32], mean: f32, std: f32) {
    for chunk in out.chunks_exact_mut(BULK) {
        let words = lanes.next();
        for (j, v) in chunk.iter_mut().enumerate() {
            let w = (words[j / 2] >> (32 * (j % 2))) as u32;
            let (i, u) = bulk_layer(w);
            let x = u * z.x32[i];
            let x = if x.abs() < z.x32[i + 1] { x } else { rng.normal_reject_f32(z, w) };
            *v = x * std + mean;
        }
    }
}

/// [`fill_normal_lanes`] on 8-lane vectors: the same operations in the same order (float32
/// multiply then add, no fused multiply-add), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn fill_normal_avx2(lanes: &mut Lanes, rng: &mut Rng, z: &Ziggurat, out: &mut [f32], mean: f32, std: f32) {
    use std::arch::x86_64::*;
    let rotl = |v: __m256i, r: i32| -> __m256i {
        // Shift counts as vectors: the immediate forms need constants.
        let (l, rr) = (_mm_cvtsi32_si128(r), _mm_cvtsi32_si128(64 - r));
        _mm256_or_si256(_mm256_sll_epi64(v, l), _mm256_srl_epi64(v, rr))
    };
    // SAFETY: `lanes.s[k]` holds 4 u64 (one 256-bit vector).
    let load = |k: usize| unsafe { _mm256_loadu_si256(lanes.s[k].as_ptr().cast()) };
    let (mut s0, mut s1, mut s2, mut s3) = (load(0), load(1), load(2), load(3));
    let low8 = _mm256_set1_epi32(0xff);
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let (scale, one) = (_mm256_set1_ps(1.0 / (1u32 << 23) as f32), _mm256_set1_ps(1.0));
    let (vmean, vstd) = (_mm256_set1_ps(mean), _mm256_set1_ps(std));
    let xt = z.x32.as_ptr();
    // The draws that miss their layer's core (1.5 %) are redone after each segment, in draw
    // order, so the parent generator serves them in the same sequence: a call inside the
    // vector loop made it save and restore its state around every miss (1.02 against 0.92
    // ns per draw, `normal_timing`).
    let mut words_seen = [0u32; SEGMENT];
    let mut accepted = [0u8; SEGMENT / BULK];
    for seg in out.chunks_mut(SEGMENT) {
        for (c, chunk) in seg.chunks_exact_mut(BULK).enumerate() {
            let words = _mm256_add_epi64(rotl(_mm256_add_epi64(s0, s3), 23), s0);
            let t = _mm256_slli_epi64::<17>(s1);
            s2 = _mm256_xor_si256(s2, s0);
            s3 = _mm256_xor_si256(s3, s1);
            s1 = _mm256_xor_si256(s1, s2);
            s0 = _mm256_xor_si256(s0, s3);
            s2 = _mm256_xor_si256(s2, t);
            s3 = rotl(s3, 45);
            let idx = _mm256_and_si256(words, low8);
            let u = _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32::<8>(words)), scale), one);
            // One 64-bit load per draw reads the pair (x[i], x[i + 1]); plain loads beat the
            // gather instructions here. Draws 0-3 go to `lo`, 4-7 to `hi`.
            // SAFETY: every index is at most 255 and `x32` has 257 entries, so the 8 bytes at
            // `xt + idx` are inside it; `ii` holds 8 u32 (one 256-bit vector).
            let (lo, hi) = unsafe {
                let mut ii = [0u32; BULK];
                _mm256_storeu_si256(ii.as_mut_ptr().cast(), idx);
                let pair = |j: usize| (xt.add(ii[j] as usize) as *const i64).read_unaligned();
                (
                    _mm256_castsi256_ps(_mm256_set_epi64x(pair(3), pair(2), pair(1), pair(0))),
                    _mm256_castsi256_ps(_mm256_set_epi64x(pair(7), pair(6), pair(5), pair(4))),
                )
            };
            // Even floats are x[i], odd ones x[i + 1]; the shuffles leave the draws in the order
            // 0 1 4 5 2 3 6 7, which the 64-bit permutation undoes.
            let fix = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
            let xi = fix(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi));
            let xnext = fix(_mm256_shuffle_ps::<0b11_01_11_01>(lo, hi));
            let x = _mm256_mul_ps(u, xi);
            let ok = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(x, abs), xnext));
            let y = _mm256_add_ps(_mm256_mul_ps(x, vstd), vmean);
            // SAFETY: `chunk` holds BULK = 8 floats, and `words_seen` 8 u32 from BULK * c
            // (a segment has at most SEGMENT / BULK chunks).
            unsafe {
                _mm256_storeu_ps(chunk.as_mut_ptr(), y);
                _mm256_storeu_si256(words_seen.as_mut_ptr().add(BULK * c).cast(), words);
            }
            accepted[c] = ok as u8;
        }
        for (c, &ok) in accepted[..seg.len() / BULK].iter().enumerate() {
            // The chunk's misses, lowest first, one loop turn each: a test per lane
            // mispredicted several times in each chunk with a miss (one in nine chunks).
            let mut missed = !ok;
            while missed != 0 {
                let j = BULK * c + missed.trailing_zeros() as usize;
                missed &= missed - 1;
                seg[j] = rng.normal_reject_f32(z, words_seen[j]) * std + mean;
            }
        }
    }
    for (k, v) in [s0, s1, s2, s3].into_iter().enumerate() {
        // SAFETY: as for `load`.
        unsafe { _mm256_storeu_si256(lanes.s[k].as_mut_ptr().cast(), v) };
    }
}

const ZIG_LAYERS: usize = 256;
const ZIG_R: f64 = 3.654_152_885_361_009;
const ZIG_V: f64 = 0.004_928_673_233_99;

struct Ziggurat {
    x: [f64; ZIG_LAYERS + 1],
    f: [f64; ZIG_LAYERS + 1],
    /// `x` rounded to float32, for the bulk draws.
    x32: [f32; ZIG_LAYERS + 1],
    /// Per layer i >= 1, lines bounding the density on its wedge [x[i + 1], x[i]] (see
    /// [`Ziggurat::below_density`]).
    wedge: [Wedge; ZIG_LAYERS],
}

/// The chord slope and the tangent slopes at both ends of a layer's wedge, and the side of
/// the density the chord lies on: above where the density is convex (|x| >= 1), below where
/// it is concave (|x| <= 1), unknown for the layer containing 1.
#[derive(Clone, Copy, Default)]
struct Wedge {
    chord: f64,
    tangent_in: f64,
    tangent_out: f64,
    chord_above: Option<bool>,
}

/// Distance kept from the bounding lines: their rounding and that of the exponential they
/// stand in for are below 1e-15.
const WEDGE_MARGIN: f64 = 1e-12;

impl Ziggurat {
    /// Whether `y < exp(-x^2 / 2)`, the wedge test of layer i. The lines through the wedge's
    /// ends and their tangents bound the density there, and decide all but the draws within
    /// a sliver of the curve without computing the exponential; those, and any `x` outside
    /// the wedge, take the exponential, so the answer is always that of the exact test.
    #[inline]
    fn below_density(&self, i: usize, x: f64, y: f64) -> bool {
        let w = &self.wedge[i];
        let (inner, outer, ax) = (self.x[i + 1], self.x[i], x.abs());
        if let Some(chord_above) = w.chord_above
            && (inner..=outer).contains(&ax)
        {
            let chord = self.f[i] + w.chord * (ax - outer);
            let t_in = self.f[i + 1] + w.tangent_in * (ax - inner);
            let t_out = self.f[i] + w.tangent_out * (ax - outer);
            let (lo, hi) = if chord_above { (t_in.max(t_out), chord) } else { (chord, t_in.min(t_out)) };
            if y < lo - WEDGE_MARGIN {
                return true;
            }
            if y > hi + WEDGE_MARGIN {
                return false;
            }
        }
        y < (-0.5 * x * x).exp()
    }
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
        let mut wedge = [Wedge::default(); ZIG_LAYERS];
        for i in 1..ZIG_LAYERS {
            let (inner, outer) = (x[i + 1], x[i]);
            wedge[i] = Wedge {
                chord: (f[i + 1] - f[i]) / (inner - outer),
                tangent_in: -inner * f[i + 1],
                tangent_out: -outer * f[i],
                chord_above: if inner >= 1.0 {
                    Some(true)
                } else if outer <= 1.0 {
                    Some(false)
                } else {
                    None
                },
            };
        }
        Ziggurat { x, f, x32: x.map(|v| v as f32), wedge }
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
    fn bulk_normals_follow_the_normal_cdf() {
        // Empirical CDF against Phi at fixed points, within 5 binomial standard errors; the
        // short fill takes the scalar path, the long one the lanes and the remainder.
        const PHI: [(f64, f64); 9] = [
            (-3.5, 2.326_290_790_355_25e-4),
            (-2.5, 6.209_665_325_776_13e-3),
            (-1.5, 6.680_720_126_885_81e-2),
            (-0.5, 0.308_537_538_725_987),
            (0.0, 0.5),
            (0.7, 0.758_036_347_776_927),
            (1.3, 0.903_199_515_414_390),
            (2.2, 0.986_096_552_486_501),
            (3.9, 0.999_951_903_655_982),
        ];
        for (len, fills) in [(37usize, 60_000usize), (1_000_003, 2)] {
            let mut r = Key::new(12, [domain::TEST, 7, len as u64, 0]).rng();
            let mut xs = Vec::with_capacity(len * fills);
            let mut buf = vec![0.0f32; len];
            for _ in 0..fills {
                r.fill_normal(&mut buf, 0.0, 1.0);
                xs.extend(buf.iter().map(|&v| f64::from(v)));
            }
            let n = xs.len() as f64;
            for (t, p) in PHI {
                let got = xs.iter().filter(|&&x| x < t).count() as f64 / n;
                let se = (p * (1.0 - p) / n).sqrt();
                assert!((got - p).abs() < 5.0 * se, "len {len}: P(X < {t}) = {got}, expected {p}");
            }
        }
    }

    #[test]
    fn bulk_normal_kernels_agree_bit_for_bit() {
        // The generic and the AVX2 kernels on the same lanes and generator, over enough
        // draws to take the tail and wedge paths many times.
        let z = ziggurat();
        let mut r1 = Key::new(13, [domain::TEST, 8, 0, 0]).rng();
        let mut r2 = r1.clone();
        let (mut l1, mut l2) = (Lanes::seed(&mut r1), Lanes::seed(&mut r2));
        let (mut a, mut b) = (vec![0.0f32; 400_000], vec![0.0f32; 400_000]);
        fill_normal_lanes(&mut l1, &mut r1, z, &mut a, 0.5, 3.0);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: checked just above.
            unsafe { fill_normal_avx2(&mut l2, &mut r2, z, &mut b, 0.5, 3.0) };
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
            assert_eq!(l1.s, l2.s);
            assert_eq!(r1.next_u64(), r2.next_u64());
            return;
        }
        // Without AVX2 only the generic kernel runs; it must still be a pure function of its state.
        fill_normal_lanes(&mut l2, &mut r2, z, &mut b, 0.5, 3.0);
        assert_eq!(a, b);
    }

    /// Bulk normal timings per kernel (release: `cargo test --release -p tabfm-core
    /// normal_timing -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn normal_timing() {
        let z = ziggurat();
        let mut out = vec![0.0f32; 1 << 16];
        let mut r = Key::new(3, [domain::TEST, 1, 0, 0]).rng();
        let mut lanes = Lanes::seed(&mut r);
        let mut time = |f: &mut dyn FnMut(&mut Lanes, &mut Rng, &mut [f32])| {
            let mut best = f64::MAX;
            for _ in 0..200 {
                let t = std::time::Instant::now();
                f(&mut lanes, &mut r, &mut out);
                best = best.min(t.elapsed().as_secs_f64());
            }
            // Checked as well as timed: the last 65536 draws have the moments of N(0, 1)
            // within about 5 standard errors (0.004 for the mean, 0.0055 for the variance).
            let len = out.len() as f64;
            let mean = out.iter().map(|&v| f64::from(v)).sum::<f64>() / len;
            let var = out.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / len;
            assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.03, "mean {mean}, variance {var}");
            best * 1e9 / len
        };
        println!("ns per draw: scalar {:.3}", time(&mut |_, r, o| o.iter_mut().for_each(|v| *v = r.normal_f32())));
        println!("ns per draw: portable {:.3}", time(&mut |l, r, o| fill_normal_lanes(l, r, z, o, 0.0, 1.0)));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: checked just above.
            let avx2 = time(&mut |l, r, o| unsafe { fill_normal_avx2(l, r, z, o, 0.0, 1.0) });
            println!("ns per draw: avx2 {avx2:.3}");
        }
    }

    /// The ziggurat's rare path as the textbook states it: the tail by Marsaglia's method,
    /// a wedge point accepted under the exact density, a rejection drawing afresh.
    fn reference_reject(r: &mut Rng, z: &Ziggurat, i: usize, x: f64, u: f64) -> f64 {
        if i == 0 {
            loop {
                let a = -r.uniform_open().ln() / ZIG_R;
                let b = -r.uniform_open().ln();
                if 2.0 * b > a * a {
                    return if u < 0.0 { -(ZIG_R + a) } else { ZIG_R + a };
                }
            }
        }
        let y = z.f[i] + r.uniform() * (z.f[i + 1] - z.f[i]);
        if y < (-0.5 * x * x).exp() {
            return x;
        }
        let bits = r.next_u64();
        let i = (bits & 0xff) as usize;
        let u = 2.0 * ((bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0;
        let x = u * z.x[i];
        if x.abs() < z.x[i + 1] { x } else { reference_reject(r, z, i, x, u) }
    }

    #[test]
    fn rare_normal_path_draws_as_the_textbook_ziggurat() {
        // Misses of both kinds of draw (float64 words, and the bulk's float32 halves), each
        // redone by `normal_reject` (wedges settled by their bounding lines where they can)
        // and by the reference from the same state: the same value and the same state after
        // it, whatever the wedge, tail or redraw did.
        let z = ziggurat();
        let mut words = Key::new(14, [domain::TEST, 10, 0, 0]).rng();
        let (mut r1, mut r2) =
            (Key::new(15, [domain::TEST, 11, 0, 0]).rng(), Key::new(15, [domain::TEST, 11, 0, 0]).rng());
        let (mut misses, mut tails) = (0usize, 0usize);
        while misses < 60_000 {
            let bits = words.next_u64();
            let (i, x, u) = if misses % 2 == 0 {
                let i = (bits & 0xff) as usize;
                let u = 2.0 * ((bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)) - 1.0;
                (i, u * z.x[i], u)
            } else {
                let (i, u) = bulk_layer(bits as u32);
                (i, f64::from(u * z.x32[i]), f64::from(u))
            };
            let core = if misses % 2 == 0 { x.abs() < z.x[i + 1] } else { (x as f32).abs() < z.x32[i + 1] };
            if core {
                continue;
            }
            misses += 1;
            tails += usize::from(i == 0);
            let (a, b) = (r1.normal_reject(z, i, x, u), reference_reject(&mut r2, z, i, x, u));
            assert_eq!(a.to_bits(), b.to_bits(), "miss {misses}: layer {i}, x = {x}");
            assert_eq!(r1.s, r2.s, "miss {misses}: layer {i}, x = {x}: the generators diverged");
        }
        assert!(tails > 50, "only {tails} tail draws");
    }

    #[test]
    fn wedge_bounds_decide_as_the_exponential_does() {
        let z = ziggurat();
        let mut r = Key::new(5, [domain::TEST, 9, 0, 0]).rng();
        let (mut settled, mut uniform_heights) = (0usize, 0usize);
        let draws = 400_000;
        for k in 0..draws {
            let i = 1 + (k % (ZIG_LAYERS - 1));
            // The kind of height changes once per sweep over the layers, so that every layer
            // meets all three kinds.
            let kind = (k / (ZIG_LAYERS - 1)) % 3;
            let (inner, outer) = (z.x[i + 1], z.x[i]);
            // Points across the wedge (and a little outside it), signs mixed; heights
            // uniform over the wedge, or within a few ulps of the curve.
            let ax = inner + (r.uniform() * 1.02 - 0.01) * (outer - inner);
            let x = if k % 2 == 0 { ax } else { -ax };
            let e = (-0.5 * x * x).exp();
            let y = match kind {
                0 => z.f[i] + r.uniform() * (z.f[i + 1] - z.f[i]),
                1 => e * (1.0 + (r.uniform() - 0.5) * 1e-14),
                _ => e + (r.uniform() - 0.5) * 4e-12,
            };
            assert_eq!(z.below_density(i, x, y), y < e, "layer {i}, x = {x}, y = {y}");
            if kind == 0 && (inner..=outer).contains(&ax) && z.wedge[i].chord_above.is_some() {
                uniform_heights += 1;
                let w = &z.wedge[i];
                let chord = z.f[i] + w.chord * (ax - outer);
                let (t_in, t_out) = (z.f[i + 1] + w.tangent_in * (ax - inner), z.f[i] + w.tangent_out * (ax - outer));
                let (lo, hi) =
                    if w.chord_above == Some(true) { (t_in.max(t_out), chord) } else { (chord, t_in.min(t_out)) };
                settled += usize::from(y < lo - WEDGE_MARGIN || y > hi + WEDGE_MARGIN);
            }
        }
        // The lines settle most wedge draws without the exponential.
        println!("{settled} of {uniform_heights} wedge draws settled by the lines");
        assert!(uniform_heights > draws / 4, "only {uniform_heights} uniform heights in the wedges");
        assert!(settled as f64 > 0.9 * uniform_heights as f64, "only {settled} of {uniform_heights} settled");
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
