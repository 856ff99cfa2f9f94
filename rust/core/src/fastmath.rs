//! Branch-free float32 `exp` and the activations built on it, so activation loops vectorise
//! (a libm call per element blocks that). Accuracy is within a few ulp of the correctly
//! rounded result; the tests below check it against float64 over the whole range.
//! Also a finiteness test over a slice that vectorises.

/// Whether no value is infinite or NaN: a full pass without an early exit, which the
/// compiler vectorises (the values are almost always finite, so an early exit rarely pays;
/// one that tests every value on its own ran at one value per cycle and took 1.5 % of
/// mlp_scm's time).
pub fn all_finite(v: &[f32]) -> bool {
    v.iter().fold(true, |ok, x| ok & x.is_finite())
}

const LN2_HI: f32 = 0.693_359_4; // ln 2 split so that n * LN2_HI is exact for |n| <= 256
const LN2_LO: f32 = -2.121_944_4e-4;
const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding and subtracting it rounds to an integer

/// `e^x`: x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor polynomial to degree 7
/// (truncation error below 6e-9), and 2^n assembled from exponent bits in two halves so that
/// n = 128 and n = -126 stay representable.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.33, 88.72);
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n from the bits of t (integer subtraction) rather than a float->int cast, whose
    // saturating semantics would keep the loop scalar.
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let half = ni >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((ni - half + 127) as u32) << 23);
    let y = p * s1 * s2;
    if x > 88.72 {
        f32::INFINITY
    } else if x < -87.33 {
        0.0 // the true value is below 1.2e-38
    } else {
        y
    }
}

/// `ln(1 + u)` for u in [0, 1]: 2 atanh(s) with s = u / (2 + u) <= 1/3, series to s^13
/// (truncation error below 1e-8, no cancellation for small u).
#[inline(always)]
pub fn log1p_unit(u: f32) -> f32 {
    let s = u / (2.0 + u);
    let z = s * s;
    2.0 * s
        * (1.0
            + z * (1.0 / 3.0
                + z * (1.0 / 5.0 + z * (1.0 / 7.0 + z * (1.0 / 9.0 + z * (1.0 / 11.0 + z * (1.0 / 13.0)))))))
}

/// `e^x - 1` for x <= 0, accurate near 0.
#[inline(always)]
pub fn expm1_neg(x: f32) -> f32 {
    let taylor = x
        * (1.0
            + x * (0.5
                + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0 + x * (1.0 / 720.0 + x * (1.0 / 5040.0)))))));
    if x > -0.25 { taylor } else { exp(x) - 1.0 }
}

/// PyTorch's Softplus (beta 1, threshold 20).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { x.max(0.0) + log1p_unit(exp(-x.abs())) }
}

/// `ln(x)` for positive finite x: x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s)
/// with s = (m - 1) / (m + 1), |s| <= 0.172, series to s^11 (error below 1e-9).
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    let bits = x.to_bits();
    // Shift the mantissa range to [sqrt(1/2), sqrt(2)) by biasing before extracting the exponent.
    let adj = bits.wrapping_sub(0x3f35_04f3);
    let e = (adj as i32) >> 23;
    let m = f32::from_bits(bits.wrapping_sub((e as u32) << 23));
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let series =
        2.0 * s * (1.0 + z * (1.0 / 3.0 + z * (1.0 / 5.0 + z * (1.0 / 7.0 + z * (1.0 / 9.0 + z * (1.0 / 11.0))))));
    e as f32 * std::f32::consts::LN_2 + series
}

/// `|x|^p` for p > 0 (0 at x = 0), through [`exp`] and [`ln`].
#[inline(always)]
pub fn pow_abs(x: f32, p: f32) -> f32 {
    let a = x.abs();
    if a == 0.0 {
        0.0
    } else if a.is_finite() {
        exp(p * ln(a))
    } else {
        a.powf(p)
    }
}

/// `|x|^p` for p > 0 and finite x, branch-free so loops over it vectorise; |x| below 1e-30
/// counts as 1e-30 (contributing at most 1e-15 for p >= 1/2). It is 2^(p log2|x|) worked in
/// base 2 throughout, so that the exponential needs no range reduction by ln 2 and one scale:
/// |x| = m 2^e with m in [sqrt(1/2), sqrt(2)), log2 m by a fitted polynomial (error 5.3e-8, no
/// division); 2^f for |f| <= 1/2 by its Taylor series to f^6 (relative error below 1.2e-7);
/// p log2|x| is clamped to [-126, 127], where 2^y needs no second scale. Polynomials by
/// Estrin's scheme (a third of Horner's dependency depth, which bounds a vectorised loop
/// over this function). With `FMA` the multiply-adds are fused (for callers compiled for
/// FMA; results then differ in the last bits from the unfused version).
#[inline(always)]
pub fn pow_abs_nz<const FMA: bool>(x: f32, p: f32) -> f32 {
    let bits = x.abs().max(1e-30).to_bits();
    let adj = bits.wrapping_sub(0x3f35_04f3);
    let e = (adj as i32) >> 23;
    let m = f32::from_bits(bits.wrapping_sub((e as u32) << 23));
    let t = m - 1.0;
    let t2 = t * t;
    let t4 = t2 * t2;
    let c = &LOG2_C;
    let lo = madd::<FMA>(t2, madd::<FMA>(t, c[3], c[2]), madd::<FMA>(t, c[1], c[0]));
    let hi = madd::<FMA>(t2, madd::<FMA>(t, c[7], c[6]), madd::<FMA>(t, c[5], c[4]));
    let log2 = madd::<FMA>(t, madd::<FMA>(t4, hi, lo), e as f32);
    let y = (p * log2).clamp(-126.0, 127.0);
    let r = y + ROUND;
    let n = r - ROUND;
    let f = y - n;
    let f2 = f * f;
    let f4 = f2 * f2;
    // sum_k (f ln 2)^k / k! for k <= 6, as (c0 + c1 f) + f^2 (c2 + c3 f) + f^4 ((c4 + c5 f) + f^2 c6).
    let lo = madd::<FMA>(f2, madd::<FMA>(f, EXP2_C[3], EXP2_C[2]), madd::<FMA>(f, EXP2_C[1], 1.0));
    let hi = madd::<FMA>(f2, EXP2_C[6], madd::<FMA>(f, EXP2_C[5], EXP2_C[4]));
    let ni = r.to_bits() as i32 - ROUND.to_bits() as i32;
    madd::<FMA>(f4, hi, lo) * f32::from_bits(((ni + 127) as u32) << 23)
}

/// log2(1 + t) = t P(t) on [sqrt(1/2) - 1, sqrt(2) - 1]: P of degree 7 fitted for the least
/// maximum error (5.3e-8 with these float32 coefficients).
const LOG2_C: [f32; 8] =
    [1.442_694_8, -0.721_357_17, 0.480_939_42, -0.360_087_34, 0.286_708_06, -0.250_068_13, 0.236_885_59, -0.145_741_52];

/// (ln 2)^k / k!, the Taylor coefficients of 2^f.
const EXP2_C: [f32; 7] =
    [1.0, std::f32::consts::LN_2, 0.240_226_5, 0.055_504_11, 0.009_618_129, 0.001_333_355_8, 0.000_154_035_3];

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

const ROUND64: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: rounds an f64 to an integer

/// `cos(x)`: x reduced to [-pi, pi] by a multiple of 2 pi in float64 (exact enough for every
/// float32 below 1e15), then the even Taylor series to r^20 (truncation error below 4e-9).
/// Larger arguments go to libm.
#[inline(always)]
pub fn cos(x: f32) -> f32 {
    if x.abs() >= 1e15 { x.cos() } else { cos_reduced(x) }
}

/// [`cos`] without the branch for |x| >= 1e15 (callers check those), so loops over it
/// vectorise: a branch to libm would be if-converted into a libm call per element.
/// NaN and infinities give NaN, as libm.
#[inline(always)]
pub fn cos_reduced(x: f32) -> f32 {
    cos_of(f64::from(x))
}

/// `sin(x)` as `cos(x - pi / 2)`, the shift taken in float64 (absolute error below 1e-6, as
/// [`cos`]; near zero that is not a relative bound). Larger arguments go to libm.
#[inline(always)]
pub fn sin(x: f32) -> f32 {
    if x.abs() >= 1e15 { x.sin() } else { sin_reduced(x) }
}

/// [`sin`] without the branch for |x| >= 1e15 (callers check those).
#[inline(always)]
pub fn sin_reduced(x: f32) -> f32 {
    cos_of(f64::from(x) - std::f64::consts::FRAC_PI_2)
}

/// `tanh(x)` from `e^(-2|x|) - 1` (accurate near zero by [`expm1_neg`]), sign restored.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let t = expm1_neg(-2.0 * x.abs());
    (-t / (t + 2.0)).copysign(x)
}

/// The float32 cosine series after reducing a float64 argument by a multiple of 2 pi.
#[inline(always)]
fn cos_of(xd: f64) -> f32 {
    let k = (xd * (0.5 * std::f64::consts::FRAC_1_PI) + ROUND64) - ROUND64;
    let r = (xd - k * std::f64::consts::TAU) as f32;
    let z = r * r;
    let mut p = 1.0 / 2_432_902_008_176_640_000.0f32; // 1 / 20!
    for c in [
        -1.0 / 6_402_373_705_728_000.0, // 18!
        1.0 / 20_922_789_888_000.0,
        -1.0 / 87_178_291_200.0,
        1.0 / 479_001_600.0,
        -1.0 / 3_628_800.0,
        1.0 / 40_320.0,
        -1.0 / 720.0,
        1.0 / 24.0,
        -0.5,
        1.0,
    ] {
        p = p * z + c;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_finite_finds_any_non_finite_value() {
        for len in [0usize, 1, 7, 16, 33, 1000] {
            let mut v: Vec<f32> = (0..len).map(|i| [f32::MAX, -0.0, 1e-45, -3.5][i % 4]).collect();
            assert!(all_finite(&v), "len {len}");
            for at in [0, len / 2, len.saturating_sub(1)].into_iter().filter(|_| len > 0) {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let keep = v[at];
                    v[at] = bad;
                    assert!(!all_finite(&v), "len {len}: {bad} at {at}");
                    v[at] = keep;
                }
            }
        }
    }

    fn rel(a: f32, b: f64) -> f64 {
        (f64::from(a) - b).abs() / b.abs().max(1e-30)
    }

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn tanh_is_within_a_few_ulp() {
        let worst = grid(-12.0, 12.0, 2_000_000)
            .filter(|x| x.abs() > 1e-30)
            .map(|x| rel(tanh(x), f64::from(x).tanh()))
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "max relative error {worst}");
        let tiny = [1e-30f32, -3e-8, 1e-5, -0.0123];
        assert!(tiny.iter().all(|&x| rel(tanh(x), f64::from(x).tanh()) < 1e-6));
        assert_eq!(tanh(40.0), 1.0);
        assert_eq!(tanh(-40.0), -1.0);
        assert_eq!(tanh(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn sin_is_within_its_absolute_bound() {
        let worst =
            grid(-2e4, 2e4, 2_000_000).map(|x| (f64::from(sin(x)) - f64::from(x).sin()).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-6, "max absolute error {worst}");
        assert_eq!(sin(1e20), 1e20f32.sin());
        assert!(sin(f32::NAN).is_nan() && sin_reduced(f32::INFINITY).is_nan());
    }

    #[test]
    fn exp_is_within_a_few_ulp() {
        let worst = grid(-87.0, 88.7, 2_000_000).map(|x| rel(exp(x), f64::from(x).exp())).fold(0.0, f64::max);
        assert!(worst < 4e-7, "max relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(-200.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn softplus_and_expm1_match_float64() {
        for x in grid(-60.0, 25.0, 500_000) {
            let xf = f64::from(x);
            let want = if xf > 20.0 { xf } else { xf.exp().ln_1p() };
            let got = softplus(x);
            assert!(
                rel(got, want) < 5e-7 || (f64::from(got) - want).abs() < 1e-30,
                "softplus({x}) = {got}, want {want}"
            );
            if x <= 0.0 {
                let want = xf.exp_m1();
                let got = expm1_neg(x);
                assert!(rel(got, want) < 5e-7 || (x == 0.0 && got == 0.0), "expm1({x}) = {got}, want {want}");
            }
        }
        for u in grid(0.0, 1.0, 100_000).skip(1) {
            assert!(rel(log1p_unit(u), f64::from(u).ln_1p()) < 3e-7, "log1p({u})");
        }
    }

    #[test]
    fn ln_pow_and_cos_match_float64() {
        for x in grid(1e-30, 1.0, 200_000).chain(grid(1.0, 1e6, 200_000)) {
            assert!((f64::from(ln(x)) - f64::from(x).ln()).abs() < 2e-6, "ln({x})");
        }
        for x in grid(-50.0, 50.0, 20_001) {
            for p in [0.5f32, 1.3, 2.7, 4.0] {
                let want = f64::from(x).abs().powf(f64::from(p));
                assert!(rel(pow_abs(x, p), want) < 3e-5 || want < 1e-30, "pow({x}, {p})");
            }
        }
        assert_eq!(pow_abs(0.0, 0.7), 0.0);
        for x in grid(-50.0, 50.0, 20_001).filter(|x| x.abs() > 1e-6) {
            let want = f64::from(x).abs().powf(1.7);
            assert!(rel(pow_abs_nz::<false>(x, 1.7), want) < 3e-5, "pow_nz({x})");
            assert!(rel(pow_abs_nz::<true>(x, 1.7), want) < 3e-5, "pow_nz fused({x})");
        }
        assert!(pow_abs_nz::<false>(0.0, 0.5) <= 1e-15);
        // Over the exponents the graph prior draws (L_p distances, p in [1/2, 4]) and 8 decades
        // of magnitudes, the error stays within a few float32 ulps of p log2|x| (up to 53
        // here, where one ulp is 4e-6, i.e. 1.3e-6 relative in 2^y); the float32 ln-exp
        // version it replaced reached 4.2e-6 on the same grid.
        let mut worst = 0.0f64;
        for x in grid(1e-4, 1e4, 400_001) {
            for p in [0.5f32, 0.77, 1.0, 1.7, 2.0, 3.1, 4.0] {
                let want = f64::from(x).powf(f64::from(p));
                for got in [pow_abs_nz::<false>(x, p), pow_abs_nz::<true>(-x, p)] {
                    worst = worst.max(rel(got, want));
                }
            }
        }
        assert!(worst < 3e-6, "pow_nz relative error {worst}");
        // Exponents beyond float32's range saturate instead of overflowing or going to NaN.
        assert!(pow_abs_nz::<false>(1e30, 4.0).is_finite() && pow_abs_nz::<false>(1e30, 4.0) > 1e38);
        assert!(pow_abs_nz::<true>(1e-30, 4.0) >= 0.0 && pow_abs_nz::<true>(1e-30, 4.0) < 1e-37);
        for x in grid(-3000.0, 3000.0, 2_000_000) {
            let err = (f64::from(cos(x)) - f64::from(x).cos()).abs();
            assert!(err < 2e-6, "cos({x}) error {err}");
        }
        for x in grid(1e4, 1e9, 100_000) {
            let err = (f64::from(cos(x)) - f64::from(x).cos()).abs();
            assert!(err < 2e-6, "cos({x}) error {err}");
        }
        assert_eq!(cos(1e20), 1e20f32.cos());
    }
}
