//! The numeric core of the x87 transcendental instructions: FSIN, FCOS,
//! FSINCOS, FPTAN, FPATAN, F2XM1, FYL2X and FYL2XP1 (SDM Vol. 2, each
//! instruction's page and results table; Vol. 1, 8.3.8 "Approximation of
//! Pi", 8.3.9 "Logarithmic, Exponential, and Scale", 8.3.10 "Transcendental
//! Instruction Accuracy").
//!
//! Like `float`, every function here is a pure function of its operands and
//! the control word, computed without host floating point, so that a replay
//! on any host gets the bits the recording got.
//!
//! How a result is computed: the operands are converted exactly to
//! `rustc_apfloat`'s IEEE quadruple format (113-bit significand, the 80-bit
//! format's exponent range), the function is evaluated there with round to
//! nearest even (series and identities below, each accurate to a few units
//! of the 113th bit), and the quadruple result is rounded once to the 64-bit
//! significand with the control word's rounding control. Precision control
//! does not apply to these instructions (SDM Vol. 1, 8.1.5.2 lists the ones
//! it applies to). With ~45 bits to spare, the final rounding is the correct
//! rounding of the exact result except when that result lies within about
//! 2^-105 (relative) of a rounding boundary; the exact values for which that
//! matters (zeros, powers of two in logarithms, integers in F2XM1, |x| = |y|
//! in FPATAN, tiny arguments whose result is "the argument, a little less or
//! a little more") are recognized and rounded from their exact value, or
//! from the argument and the known side of it the result lies on.
//!
//! Real hardware is not correctly rounded (SDM Vol. 1, 8.3.10 promises an
//! error below one ulp) and reduces trigonometric arguments with a 66-bit
//! pi (8.3.8), so for large arguments it differs from the correctly reduced
//! result computed here; the host comparison test below measures how often
//! the two agree.
//!
//! The contract with the instruction layer (`super`) is `float`'s: the
//! result for the destination register (`None` when an unmasked invalid,
//! denormal or zero-divide exception suppresses the write), every exception
//! detected, and C1 (set when the result was rounded up in magnitude). The
//! caller owns the stack, C2 (from `out_of_range`), the status word and
//! exception delivery.

use std::sync::OnceLock;

use rustc_apfloat::ieee::{Quad, X87DoubleExtended};
use rustc_apfloat::{Float, FloatConvert, Round};

use super::float::{
    denormal_flag, denormal_stops, exc, finish, invalid, nan_result, rounded_extended, screen, Class, Control,
    Result80, BIAS, F80, INT_BIT,
};

/// FSIN, FCOS or FPTAN's result for ST(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trig {
    /// What ST(0) becomes: `None` when nothing is written, either because an
    /// unmasked IE or DE suppresses the instruction or because the operand is
    /// out of range (then `out_of_range` is set). For FPTAN the caller pushes
    /// [`Trig::fptan_push`] after writing it.
    pub value: Option<F80>,
    /// Every exception detected.
    pub flags: u16,
    /// C1: the result was rounded up.
    pub c1: bool,
    /// |x| >= 2^63: C2 is set, ST(0) is left unchanged, nothing is pushed and
    /// no exception is raised (SDM Vol. 2, FSIN, FCOS, FPTAN "Description").
    pub out_of_range: bool,
}

impl Trig {
    /// What FPTAN pushes once ST(0) holds the tangent: 1.0 (SDM Vol. 2, FPTAN:
    /// for compatibility with the 8087 and 287), except that a NaN result (a
    /// NaN operand, or the masked response to an invalid one) is pushed again,
    /// so that both ST(0) and ST(1) hold it, which is what the hardware we
    /// compared with does. `None` when nothing is written.
    pub fn fptan_push(&self) -> Option<F80> {
        let v = self.value?;
        Some(if v.is_nan() { v } else { F80::ONE })
    }
}

/// FSINCOS's results: the sine replaces ST(0), then the cosine is pushed
/// (SDM Vol. 2, FSINCOS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinCos {
    pub sin: F80,
    pub cos: F80,
    /// Every exception detected by either result.
    pub flags: u16,
    /// C1 for the sine (the SDM does not say which result it describes; the
    /// hardware we compared with reports the sine's rounding, although the
    /// cosine ends up on top).
    pub c1: bool,
    /// |x| >= 2^63: C2 is set, ST(0) is left unchanged and nothing is pushed;
    /// `valid` is false.
    pub out_of_range: bool,
    /// Whether the results are written: false when the operand is out of
    /// range or an unmasked exception (IE, DE) suppresses the instruction.
    pub valid: bool,
}

/// Sine of ST(0) (SDM Vol. 2, FSIN, table "FSIN Results"): ±0 stays ±0,
/// ±infinity is invalid, |x| >= 2^63 is out of range. For |x| < 2^-40 the
/// sine is x less about x^3/6, so the result is x rounded from just below
/// (x to nearest, with PE, and UE when x is tiny).
pub fn sin(x: F80, cw: Control) -> Trig {
    trig(x, cw, Func::Sin)
}

/// Cosine of ST(0) (SDM Vol. 2, FCOS, table "FCOS Results"): ±0 gives +1
/// exactly; for 0 < |x| < 2^-40 the result is 1 rounded from just below
/// (1 to nearest, with PE).
pub fn cos(x: F80, cw: Control) -> Trig {
    trig(x, cw, Func::Cos)
}

/// Tangent of ST(0) (SDM Vol. 2, FPTAN, table "FPTAN Results"): ±0 stays
/// ±0; for |x| < 2^-40 the result is x rounded from just above.
pub fn tan(x: F80, cw: Control) -> Trig {
    trig(x, cw, Func::Tan)
}

/// FSINCOS (SDM Vol. 2, FSINCOS, table "FSINCOS Results"): sin and cos of the
/// one reduced argument; ±0 gives ±0 and +1; ±infinity is invalid and a NaN
/// propagates, to both results.
pub fn sincos(x: F80, cw: Control) -> SinCos {
    let nothing = |flags: u16, out_of_range: bool| SinCos {
        sin: x,
        cos: x,
        flags,
        c1: false,
        out_of_range,
        valid: false,
    };
    let both = |v: Result80| match v.value {
        Some(value) => SinCos {
            sin: value,
            cos: value,
            flags: v.flags,
            c1: false,
            out_of_range: false,
            valid: true,
        },
        None => nothing(v.flags, false),
    };
    let (neg, m, e) = match kind(x) {
        Kind::Unsupported | Kind::Inf => return both(invalid(cw)),
        Kind::Nan => return both(nan_result(x, None, cw)),
        Kind::Zero => {
            return SinCos {
                sin: x,
                cos: F80::ONE,
                flags: 0,
                c1: false,
                out_of_range: false,
                valid: true,
            }
        }
        Kind::Finite { m, e } => (x.sign(), m, e),
    };
    if e >= 63 {
        return nothing(0, true);
    }
    let de = denormal_flag(&[x]);
    if let Some(r) = denormal_stops(de, cw) {
        return both(r);
    }
    let (ws, wc) = if e < TINY_EXP {
        (trig_tiny(neg, m, e, Func::Sin), trig_tiny(neg, m, e, Func::Cos))
    } else {
        let (r, quadrant) = reduce(q_unit(m).scalbn(e));
        (
            trig_reduced(neg, r, quadrant, Func::Sin),
            trig_reduced(neg, r, quadrant, Func::Cos),
        )
    };
    let (s, c) = (rounded(ws, de, cw), rounded(wc, de, cw));
    match (s.value, c.value) {
        (Some(sin), Some(cos)) => SinCos {
            sin,
            cos,
            flags: s.flags | c.flags,
            c1: s.c1,
            out_of_range: false,
            valid: true,
        },
        // Not reached: DE is masked here, and rounding raises only OE, UE
        // and PE, which never withhold a register result.
        _ => nothing(s.flags | c.flags, false),
    }
}

/// F2XM1: 2^x - 1 (SDM Vol. 2, F2XM1, table "Results Obtained from F2XM1").
/// The SDM defines it for -1 <= x <= +1 and leaves other operands undefined;
/// here every operand gets the same formula, correctly rounded: +infinity
/// gives +infinity and -infinity gives -1 (the formula's limits, and what the
/// hardware we compared with returns), large positive operands overflow and
/// large negative ones approach -1. Integers are exact: F2XM1(1) = 1 and
/// F2XM1(-1) = -0.5 without PE.
pub fn f2xm1(x: F80, cw: Control) -> Result80 {
    match kind(x) {
        Kind::Unsupported => invalid(cw),
        Kind::Nan => nan_result(x, None, cw),
        Kind::Zero => finish(x, 0, false, cw),
        Kind::Inf if x.sign() => finish(F80::ONE.neg(), 0, false, cw),
        Kind::Inf => finish(x, 0, false, cw),
        Kind::Finite { m, e } => {
            let de = denormal_flag(&[x]);
            if let Some(r) = denormal_stops(de, cw) {
                return r;
            }
            rounded(f2xm1_finite(x.sign(), m, e), de, cw)
        }
    }
}

/// FYL2X: y * log2(x), x = ST(0), y = ST(1) (SDM Vol. 2, FYL2X, table "FYL2X
/// Results"): x < 0 (not -0) is invalid; x = ±0 is a zero divide with y
/// finite and nonzero (masked: infinity of the sign opposite to y's), invalid
/// with y = ±0, and gives an infinity with y infinite; 0 * infinity is
/// invalid. A power of two x gives the exact product y * log2(x).
pub fn fyl2x(x: F80, y: F80, cw: Control) -> Result80 {
    if let Some(r) = screen(x, Some(y), cw) {
        return r;
    }
    let log = match kind(x) {
        _ if x.sign() && kind(x) != Kind::Zero => return invalid(cw),
        Kind::Zero => Log::MinusInfinity,
        Kind::Inf => Log::PlusInfinity,
        Kind::Finite { m, e } if m == INT_BIT && e == 0 => Log::Zero { neg: false },
        Kind::Finite { e, .. } => Log::Finite { neg: e < 0 },
        // Screened above.
        Kind::Nan | Kind::Unsupported => return invalid(cw),
    };
    times_log(x, y, log, cw, |my, ey| {
        let Kind::Finite { m, e } = kind(x) else {
            return Wide::ZERO;
        };
        if m == INT_BIT {
            // log2(2^e) = e exactly: the product of two integers.
            return Wide {
                neg: y.sign() ^ (e < 0),
                sig: u128::from(my) * u128::from(e.unsigned_abs()),
                exp: ey - 63,
            };
        }
        let l = log2_parts(q_unit(m), e);
        wide_from_q(y.sign(), mul(l, q_unit(my)), ey, Dir::Above)
    })
}

/// FYL2XP1: y * log2(x + 1), x = ST(0), y = ST(1) (SDM Vol. 2, FYL2XP1,
/// table "FYL2XP1 Results"): ±0 gives a zero with the product's sign,
/// 0 * infinity is invalid. The SDM defines it for |x| < 1 - sqrt(2)/2 and
/// leaves other operands undefined; here every x > -1 gets the same formula
/// (exact when x + 1 is a power of two), x = -1 is treated as FYL2X treats
/// x = 0 (log2(0) = -infinity: a zero divide), and x < -1 or x = -infinity
/// is invalid, as FYL2X of a negative number is.
pub fn fyl2xp1(x: F80, y: F80, cw: Control) -> Result80 {
    if let Some(r) = screen(x, Some(y), cw) {
        return r;
    }
    let log = match kind(x) {
        Kind::Zero => Log::Zero { neg: x.sign() },
        Kind::Inf if x.sign() => return invalid(cw),
        Kind::Inf => Log::PlusInfinity,
        Kind::Finite { m, e } if x.sign() && m == INT_BIT && e == 0 => Log::MinusInfinity,
        Kind::Finite { e, .. } if x.sign() && e >= 0 => return invalid(cw),
        Kind::Finite { .. } => Log::Finite { neg: x.sign() },
        Kind::Nan | Kind::Unsupported => return invalid(cw),
    };
    times_log(x, y, log, cw, |my, ey| {
        let Kind::Finite { m, e } = kind(x) else {
            return Wide::ZERO;
        };
        let c = consts();
        let neg = x.sign() ^ y.sign();
        if e < -130 {
            // log2(1 + x) = x * log2(e) * (1 - x/2 + ...): the correction is
            // below the working precision. Kept apart from the exponent so
            // that denormal x keeps its precision.
            let l = mul(q_unit(m), c.log2e);
            return wide_from_q(neg, mul(l, q_unit(my)), e + ey, Dir::Above);
        }
        let xq = to_quad(x);
        if e <= -3 {
            // |x| < 1/4: ln(1 + x) = 2 atanh(x / (2 + x)), no cancellation.
            let s = div(xq, add(two(), xq));
            let l = mul(ln_of_atanh_arg(s), c.log2e);
            return wide_from_q(y.sign(), mul(l, q_unit(my)), ey, Dir::Above);
        }
        // 1 + x is exact here unless x >= 2^113, where the lost 1 is far
        // below the precision of log2(x).
        let t = Quad::from_u128(1).value.add_r(xq, NEAREST);
        let exact = !t.status.intersects(rustc_apfloat::Status::INEXACT);
        let t = t.value;
        if exact && q_top64(t) == INT_BIT && q_low49(t) == 0 {
            let n = t.ilogb();
            return Wide {
                neg: y.sign() ^ (n < 0),
                sig: u128::from(my) * u128::from(n.unsigned_abs()),
                exp: ey - 63,
            };
        }
        let e_t = t.ilogb();
        let l = log2_parts(t.scalbn(-e_t), e_t);
        wide_from_q(y.sign(), mul(l, q_unit(my)), ey, Dir::Above)
    })
}

/// FPATAN: the angle of the point (x, y), x = ST(0), y = ST(1), in
/// [-pi, pi] (SDM Vol. 2, FPATAN, table "FPATAN Results"). The zero and
/// infinite cases of the table (marked there as not invalid: the SDM derives
/// them from the complex formulation) give signed zeros and multiples of
/// pi/4, the latter rounded from the exact constant as FLDPI is.
pub fn fpatan(x: F80, y: F80, cw: Control) -> Result80 {
    if let Some(r) = screen(x, Some(y), cw) {
        return r;
    }
    let de = denormal_flag(&[x, y]);
    if let Some(r) = denormal_stops(de, cw) {
        return r;
    }
    let (sx, sy) = (x.sign(), y.sign());
    // Multiples of pi/4 with the sign of y.
    let quarter = |n: u64| rounded(pi_quarters(n, sy), de, cw);
    let zero_y = || finish(F80::zero(sy), de, false, cw);
    match (kind(x), kind(y)) {
        (_, Kind::Zero) if sx => quarter(4),
        (_, Kind::Zero) => zero_y(),
        (Kind::Inf, Kind::Inf) => quarter(if sx { 3 } else { 1 }),
        (_, Kind::Inf) | (Kind::Zero, _) => quarter(2),
        (Kind::Inf, _) if sx => quarter(4),
        (Kind::Inf, _) => zero_y(),
        (Kind::Finite { m: mx, e: ex }, Kind::Finite { m: my, e: ey }) => {
            rounded(atan2_finite(sx, mx, ex, sy, my, ey), de, cw)
        }
        // Screened above.
        _ => invalid(cw),
    }
}

// ---------------------------------------------------------------------------
// Operands and results in the 80-bit format: the constants, the exception
// responses (`finish`, `invalid`, `denormal_stops`), the NaN selection
// (`screen`, `nan_result`) and the final rounding (`rounded_extended`) are
// `float`'s.

/// An operand's class and, when finite and nonzero, its value
/// `m * 2^(e - 63)` with `m` normalized (bit 63 set): `e` is the exponent of
/// the leading bit. Denormals and pseudo-denormals (exponent field 0, which
/// has the weight of field 1, SDM Vol. 1, 8.2.2) are normalized here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Zero,
    Finite {
        m: u64,
        e: i32,
    },
    Inf,
    Nan,
    /// Pseudo-NaN, pseudo-infinity and unnormal: refused since the 387 (SDM
    /// Vol. 1, 8.2.2 table 8-3), an invalid operation.
    Unsupported,
}

fn kind(x: F80) -> Kind {
    match x.class() {
        Class::Zero => Kind::Zero,
        Class::Infinity => Kind::Inf,
        Class::Nan => Kind::Nan,
        Class::Unsupported => Kind::Unsupported,
        Class::Normal | Class::Denormal => {
            let lz = x.mantissa.leading_zeros();
            Kind::Finite {
                m: x.mantissa << lz,
                e: i32::from(x.exponent().max(1)) - BIAS - lz as i32,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The final rounding.

/// A nonzero real `sig * 2^exp` about to be rounded, where bit 0 of `sig` may
/// stand for a sticky bit (round to odd): a value strictly between two
/// multiples of 2 units is represented by the odd number between them. With
/// at least 66 significant bits in `sig` this rounds exactly as the real it
/// stands for would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wide {
    neg: bool,
    sig: u128,
    exp: i32,
}

impl Wide {
    const ZERO: Wide = Wide {
        neg: false,
        sig: 0,
        exp: 0,
    };

    /// `m * 2^(e - 63)` (normalized `m`) nudged by `dir`: `Below` and `Above`
    /// stand for a real a tiny bit smaller or larger in magnitude.
    fn from_parts(neg: bool, m: u64, e: i32, dir: Dir) -> Wide {
        let sig = u128::from(m) << 64;
        Wide {
            neg,
            sig: dir.nudge(sig),
            exp: e - 127,
        }
    }
}

/// Where the real result lies with respect to a value computed for it (exact
/// results are built as [`Wide`] directly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// Slightly larger in magnitude, by less than the value's 113th bit; also
    /// used for results known to be inexact (irrational) without a known side,
    /// which only matters when the value is within that distance of a
    /// rounding boundary.
    Above,
    /// Slightly smaller in magnitude.
    Below,
}

impl Dir {
    /// Applies the nudge to a significand whose low bits are zero.
    fn nudge(self, sig: u128) -> u128 {
        match self {
            Dir::Above => sig | 1,
            Dir::Below => sig - 1,
        }
    }
}

/// The result for a register destination: `w` rounded per RC to the 80-bit
/// format, the x87 way (SDM Vol. 1, 4.9.1.4-4.9.1.6, 8.5.4, 8.5.5: tininess
/// after rounding, masked underflow denormalizing, the 24576 bias of
/// unmasked overflow and underflow), with `extra_flags` (DE) added.
fn rounded(w: Wide, extra_flags: u16, cw: Control) -> Result80 {
    rounded_extended(w.neg, w.sig, w.exp, extra_flags, cw)
}

// ---------------------------------------------------------------------------
// The working precision: IEEE quadruple (113 bits), round to nearest even.

type Q = Quad;

const NEAREST: Round = Round::NearestTiesToEven;

fn add(a: Q, b: Q) -> Q {
    a.add_r(b, NEAREST).value
}

fn sub(a: Q, b: Q) -> Q {
    a.sub_r(b, NEAREST).value
}

fn mul(a: Q, b: Q) -> Q {
    a.mul_r(b, NEAREST).value
}

fn div(a: Q, b: Q) -> Q {
    a.div_r(b, NEAREST).value
}

fn int(n: u128) -> Q {
    Q::from_u128(n).value
}

fn two() -> Q {
    int(2)
}

/// Quad's layout: 112 fraction bits below an implicit integer bit.
const Q_FRAC: u32 = 112;
const Q_BIAS: i32 = 16383;

/// `m * 2^-63` (in [1, 2) for normalized `m`), exactly.
fn q_unit(m: u64) -> Q {
    if m & INT_BIT == 0 {
        return int(u128::from(m)).scalbn(-63);
    }
    let frac = u128::from(m & !INT_BIT) << (Q_FRAC - 63);
    Q::from_bits((Q_BIAS as u128) << Q_FRAC | frac)
}

/// A finite 80-bit value in Quad, exactly (Quad has more precision and the
/// same exponent range; its denormals reach far below the 80-bit ones).
fn to_quad(x: F80) -> Q {
    let bits = (u128::from(x.sign_exp) << 64) | u128::from(x.mantissa);
    let mut loses = false;
    X87DoubleExtended::from_bits(bits).convert_r(NEAREST, &mut loses).value
}

/// The top 64 bits of a normal Quad's 113-bit significand.
fn q_top64(q: Q) -> u64 {
    let bits = q.to_bits();
    (((bits & ((1u128 << Q_FRAC) - 1)) | (1u128 << Q_FRAC)) >> (Q_FRAC - 63)) as u64
}

/// The low 49 bits of a Quad's significand (those beyond 64 bits).
fn q_low49(q: Q) -> u64 {
    (q.to_bits() & ((1u128 << (Q_FRAC - 63)) - 1)) as u64
}

/// The real `±q * 2^scale`, `q` finite, as a [`Wide`] (sign: `neg` XOR the
/// sign of `q`). `scale` keeps exponents out of Quad's range (results of
/// FYL2X, FYL2XP1 and FPATAN can be far smaller or larger than Quad holds
/// with full precision).
fn wide_from_q(neg: bool, q: Q, scale: i32, dir: Dir) -> Wide {
    let neg = neg ^ q.is_negative();
    let bits = q.to_bits();
    let field = ((bits >> Q_FRAC) & 0x7FFF) as i32;
    let frac = bits & ((1u128 << Q_FRAC) - 1);
    let (sig, exp) = match field {
        0 if frac == 0 => return Wide { neg, sig: 0, exp: 0 },
        0 => (frac, 1 - Q_BIAS - Q_FRAC as i32),
        // Not produced by the evaluations below (no operation there can
        // overflow or be invalid); an overflow is the safe reading.
        0x7FFF => (1, 1 << 20),
        f => (frac | (1u128 << Q_FRAC), f - Q_BIAS - Q_FRAC as i32),
    };
    // 15 spare bits below the 113 for the nudge.
    Wide {
        neg,
        sig: dir.nudge(sig << 15),
        exp: (exp - 15).saturating_add(scale),
    }
}

// ---------------------------------------------------------------------------
// Constants.

/// pi/4 = 0.C90FDAA2 2168C234 C4C6628B ... (hexadecimal), 320 bits: the
/// well-known expansion (the fraction FLDPI rounds, SDM Vol. 1, 8.3.8; also
/// the first words of the Blowfish P-array times 4 and of the RFC 3526 MODP
/// primes). A test checks it against Machin's formula.
const PI_OVER_4: [u32; 10] = [
    0xC90F_DAA2,
    0x2168_C234,
    0xC4C6_628B,
    0x80DC_1CD1,
    0x2902_4E08,
    0x8A67_CC74,
    0x020B_BEA6,
    0x3B13_9B22,
    0x514A_0879,
    0x8E34_04DD,
];

/// `len` (at most 128) bits of pi/4's fraction from bit `start` (0 is the
/// 2^-1 bit) as an integer.
fn pi_bits(start: u32, len: u32) -> u128 {
    let mut v: u128 = 0;
    for i in start..start + len {
        let word = PI_OVER_4.get((i / 32) as usize).copied().unwrap_or(0);
        v = (v << 1) | u128::from((word >> (31 - i % 32)) & 1);
    }
    v
}

/// `n * pi/4` with the given sign, from the 320-bit expansion: the top 128
/// bits of the product with the rest as a sticky bit (round to odd), which
/// rounds to 64 bits exactly as the real would.
fn pi_quarters(n: u64, neg: bool) -> Wide {
    // The expansion as 64-bit limbs, least significant first, times n.
    let mut limbs = [0u64; 6];
    for (i, l) in limbs.iter_mut().take(5).enumerate() {
        let start = 320 - 64 * (i as u32 + 1);
        *l = pi_bits(start, 64) as u64;
    }
    let mut carry: u128 = 0;
    for l in limbs.iter_mut() {
        let p = u128::from(*l) * u128::from(n) + carry;
        *l = p as u64;
        carry = p >> 64;
    }
    // Value = limbs * 2^-320. Find the leading bit.
    let Some(top) = limbs.iter().rposition(|&l| l != 0) else {
        return Wide::ZERO;
    };
    let lz = limbs[top].leading_zeros();
    // Bit index (from bit 0 of limb 0) of the leading bit.
    let lead = 64 * top as u32 + 63 - lz;
    let bit = |i: u32| (limbs[(i / 64) as usize] >> (i % 64)) & 1;
    let mut sig: u128 = 0;
    for k in 0..128 {
        let i = lead as i32 - k;
        sig = (sig << 1) | u128::from(if i >= 0 { bit(i as u32) } else { 0 });
    }
    let below = lead.saturating_sub(127);
    let sticky = (0..below).any(|i| bit(i) != 0);
    Wide {
        neg,
        sig: sig | u128::from(sticky),
        exp: lead as i32 - 127 - 320,
    }
}

/// Constants and series coefficients, computed once.
struct Consts {
    ln2: Q,
    log2e: Q,
    pi: Q,
    pi_2: Q,
    two_over_pi: Q,
    /// pi/2 = P1 + P2 + P3 + (< 2^-212): P1 and P2 have at most 50
    /// significant bits, so k * P1 and k * P2 are exact in Quad for
    /// k < 2^63 (Cody and Waite's reduction).
    pio2_parts: [Q; 3],
    /// sin r = r + r z S(z), z = r^2: S's coefficients (-1)^n / (2n+1)!,
    /// n = 1...
    sin_c: [Q; 15],
    /// cos r = 1 + z C(z): (-1)^n / (2n)!, n = 1...
    cos_c: [Q; 16],
    /// expm1 u = u + u^2 E(u): 1/n!, n = 2...
    exp_c: [Q; 13],
    /// atanh s = s + s z A(z): 1/(2n+1), n = 1...
    atanh_c: [Q; 23],
    /// atan u = u + u z T(z): (-1)^n/(2n+1), n = 1...
    atan_c: [Q; 15],
    /// atan(k/8), k = 0..=8.
    atan_eighths: [Q; 9],
}

fn consts() -> &'static Consts {
    static CONSTS: OnceLock<Consts> = OnceLock::new();
    CONSTS.get_or_init(compute_consts)
}

/// `n!` for n <= 34 (fits in u128).
fn factorial(n: u32) -> u128 {
    (1..=u128::from(n)).product()
}

fn compute_consts() -> Consts {
    let one = int(1);
    let recip = |n: u128| div(one, int(n));
    let signed = |q: Q, neg: bool| if neg { -q } else { q };
    // pi, pi/2 and pi/4 rounded to 113 bits (nearest, from the bits beyond).
    let pi_q = |exp: i32| {
        let sig = pi_bits(0, 113) + (pi_bits(113, 1));
        int(sig).scalbn(exp - 112)
    };
    let pi_4 = pi_q(-1);
    let pio2_parts = [
        int(pi_bits(0, 50)).scalbn(-49),
        int(pi_bits(50, 50)).scalbn(-99),
        int(pi_bits(100, 113) + pi_bits(213, 1)).scalbn(-212),
    ];
    // ln 2 = 2 atanh(1/3).
    let ln2 = mul(two(), atanh_taylor(div(one, int(3))));
    let log2e = div(one, ln2);
    let atan_eighths = core::array::from_fn(|k| {
        let k = k as u128;
        if k == 8 {
            pi_4
        } else if k <= 4 {
            atan_taylor(div(int(k), int(8)))
        } else {
            // atan(x) = pi/4 - atan((1 - x) / (1 + x)), the latter <= 3/13.
            sub(pi_4, atan_taylor(div(int(8 - k), int(8 + k))))
        }
    });
    Consts {
        ln2,
        log2e,
        pi: pi_q(1),
        pi_2: pi_q(0),
        two_over_pi: div(one, pi_q(0)),
        pio2_parts,
        sin_c: core::array::from_fn(|i| {
            let n = i as u32 + 1;
            signed(recip(factorial(2 * n + 1)), n % 2 == 1)
        }),
        cos_c: core::array::from_fn(|i| {
            let n = i as u32 + 1;
            signed(recip(factorial(2 * n)), n % 2 == 1)
        }),
        exp_c: core::array::from_fn(|i| recip(factorial(i as u32 + 2))),
        atanh_c: core::array::from_fn(|i| recip(2 * (i as u128 + 1) + 1)),
        atan_c: core::array::from_fn(|i| signed(recip(2 * (i as u128 + 1) + 1), i % 2 == 0)),
        atan_eighths,
    }
}

/// Taylor series of atanh (`alternate` false) or atan (true), summed until
/// the terms vanish: for the one-time constants, |x| <= 1/2.
fn series_odd(x: Q, alternate: bool) -> Q {
    let z = mul(x, x);
    let mut power = x;
    let mut sum = x;
    for n in 1..200u128 {
        power = mul(power, z);
        let term = div(power, int(2 * n + 1));
        sum = if alternate && n % 2 == 1 {
            sub(sum, term)
        } else {
            add(sum, term)
        };
        if term.is_zero() || term.ilogb() < sum.ilogb().saturating_sub(120) {
            break;
        }
    }
    sum
}

fn atanh_taylor(x: Q) -> Q {
    series_odd(x, false)
}

fn atan_taylor(x: Q) -> Q {
    series_odd(x, true)
}

/// `Σ c[i] z^i` by Horner's rule.
fn horner(z: Q, c: &[Q]) -> Q {
    c.iter().rev().fold(Q::ZERO, |acc, &ci| add(mul(acc, z), ci))
}

// ---------------------------------------------------------------------------
// Function kernels in Quad.

/// ln(1 + x) = 2 atanh(s) for s = x / (2 + x), |s| <= 0.1716 (23 terms reach
/// 2^-117).
fn ln_of_atanh_arg(s: Q) -> Q {
    let c = consts();
    let z = mul(s, s);
    let a = add(s, mul(mul(s, z), horner(z, &c.atanh_c)));
    mul(two(), a)
}

/// `log2(f * 2^e)` for f in [1, 2) not both 1 and e = 0: f is first moved
/// into [sqrt(2)/2, sqrt(2)) so that the series argument stays small and,
/// when the exponent is nonzero, |log2| >= 1/2 (no cancellation).
fn log2_parts(f: Q, e: i32) -> Q {
    let c = consts();
    // sqrt(2) * 2^63, truncated: the exact threshold does not matter.
    let (f, e) = if q_top64(f) > 0xB504_F333_F9DE_6484 {
        (f.scalbn(-1), e + 1)
    } else {
        (f, e)
    };
    let one = int(1);
    let s = div(sub(f, one), add(f, one));
    let l = mul(ln_of_atanh_arg(s), c.log2e);
    if e == 0 {
        l
    } else {
        let ei = int(u128::from(e.unsigned_abs()));
        add(if e < 0 { -ei } else { ei }, l)
    }
}

/// e^t - 1 for |t| <= 1: the Taylor series at u = t / 2^s with |u| <= 2^-8
/// (13 terms reach 2^-116), then s doublings expm1(2u) = E (E + 2), which
/// keep the relative error.
fn expm1_q(t: Q) -> Q {
    if t.is_zero() {
        return t;
    }
    let c = consts();
    let s = (t.ilogb() + 9).max(0);
    let u = t.scalbn(-s);
    let mut e = add(u, mul(mul(u, u), horner(u, &c.exp_c)));
    for _ in 0..s {
        e = mul(e, add(e, two()));
    }
    e
}

/// 2^x - 1 for finite nonzero x = ±m * 2^(e - 63).
fn f2xm1_finite(neg: bool, m: u64, e: i32) -> Wide {
    let c = consts();
    // Integers: 2^n - 1 exactly.
    if (0..16).contains(&e) && m << (e + 1) == 0 {
        let n = (m >> (63 - e)) as u32;
        return if !neg {
            if n <= 126 {
                Wide {
                    neg,
                    sig: (1u128 << n) - 1,
                    exp: 0,
                }
            } else {
                // 2^n - 1 = 2^n * (1 - 2^-n): all ones, sticky.
                Wide {
                    neg,
                    sig: u128::MAX,
                    exp: n as i32 - 128,
                }
            }
        } else if n <= 127 {
            // -(1 - 2^-n).
            Wide {
                neg,
                sig: (1u128 << n) - 1,
                exp: -(n as i32),
            }
        } else {
            Wide {
                neg,
                sig: u128::MAX,
                exp: -128,
            }
        };
    }
    if e < -130 {
        // 2^x - 1 = x ln 2 (1 + x ln2 / 2 + ...): the correction is below the
        // working precision; x's exponent kept apart (denormals).
        return wide_from_q(neg, mul(q_unit(m), c.ln2), e, Dir::Above);
    }
    if e < 0 {
        // |x| < 1: the SDM's domain.
        let x = q_unit(m).scalbn(e);
        let x = if neg { -x } else { x };
        return wide_from_q(false, expm1_q(mul(x, c.ln2)), 0, Dir::Above);
    }
    // |x| > 1, outside the SDM's domain: 2^x - 1 = 2^n (1 + expm1(f ln 2)) - 1
    // with n = round(x), |f| <= 1/2.
    if e >= 16 {
        // |x| >= 65536: overflow even with the unmasked-overflow bias, or -1
        // less a part far below the last bit.
        return if neg {
            Wide {
                neg,
                sig: u128::MAX,
                exp: -128,
            }
        } else {
            Wide {
                neg,
                sig: 1 << 127 | 1,
                exp: 1 << 17,
            }
        };
    }
    let x = q_unit(m).scalbn(e);
    let x = if neg { -x } else { x };
    let nq = x.round_to_integral(NEAREST).value;
    let f = sub(x, nq);
    let mut exact = false;
    let n_abs = nq.abs().to_u128_r(32, Round::TowardZero, &mut exact).value as i32;
    let n = if neg { -n_abs } else { n_abs };
    let p = add(int(1), expm1_q(mul(f, c.ln2)));
    if n > 130 {
        // The -1 is far below the last bit.
        return wide_from_q(false, p, n, Dir::Below);
    }
    if n < -130 {
        return Wide {
            neg: true,
            sig: u128::MAX,
            exp: -128,
        };
    }
    wide_from_q(false, sub(p.scalbn(n), int(1)), 0, Dir::Above)
}

/// Reduces positive x < 2^63 to r = x - k pi/2, |r| <= ~pi/4, returning r
/// and k mod 4. Cody and Waite's three-part reduction: k * P1 and k * P2 are
/// exact (k < 2^63 and 50-bit parts), x - k P1 is exact (Sterbenz) and so is
/// its difference with k P2 (the result, < 1, is a multiple of 2^-99), so
/// the only errors are k P3's rounding and the last subtraction's, below
/// 2^-148 absolute; since no 64-bit x below 2^63 comes closer than about
/// 2^-70 to a multiple of pi/2, r keeps at least ~80 correct bits.
fn reduce(x: Q) -> (Q, u32) {
    let c = consts();
    let kq = mul(x, c.two_over_pi).round_to_integral(NEAREST).value;
    if kq.is_zero() {
        return (x, 0);
    }
    let mut exact = false;
    let k = kq.to_u128_r(64, Round::TowardZero, &mut exact).value;
    let [p1, p2, p3] = c.pio2_parts;
    let r1 = sub(x, mul(kq, p1));
    let r2 = sub(r1, mul(kq, p2));
    let r = sub(r2, mul(kq, p3));
    (r, (k & 3) as u32)
}

/// sin r for |r| <= ~pi/4 (15 terms reach 2^-122).
fn sin_poly(r: Q) -> Q {
    let z = mul(r, r);
    add(r, mul(mul(r, z), horner(z, &consts().sin_c)))
}

/// cos r for |r| <= ~pi/4 (16 terms reach 2^-117); cos r >= 0.7 there.
fn cos_poly(r: Q) -> Q {
    let z = mul(r, r);
    add(int(1), mul(z, horner(z, &consts().cos_c)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Func {
    Sin,
    Cos,
    Tan,
}

/// Below this exponent the argument is "tiny": sin x, tan x and cos x differ
/// from x, x and 1 by less than 2^-80 relative, which decides the rounding
/// from the side alone; from it up, the difference (>= 2^-82) is well
/// within what Quad resolves.
const TINY_EXP: i32 = -40;

/// `f` of a tiny x = ±m * 2^(e - 63) (e < [`TINY_EXP`]): sin x is just
/// below x, tan x just above, cos x just below 1.
fn trig_tiny(neg: bool, m: u64, e: i32, f: Func) -> Wide {
    match f {
        Func::Sin => Wide::from_parts(neg, m, e, Dir::Below),
        Func::Tan => Wide::from_parts(neg, m, e, Dir::Above),
        Func::Cos => Wide::from_parts(false, INT_BIT, 0, Dir::Below),
    }
}

/// `f(x)` for x = ±(k pi/2 + r) with k mod 4 = `quadrant`: sin and tan are
/// odd, cos even; each quadrant swaps or negates sin r and cos r.
fn trig_reduced(neg: bool, r: Q, quadrant: u32, f: Func) -> Wide {
    let v = match (f, quadrant % 4) {
        (Func::Sin, 0) | (Func::Cos, 3) => sin_poly(r),
        (Func::Sin, 1) | (Func::Cos, 0) => cos_poly(r),
        (Func::Sin, 2) | (Func::Cos, 1) => -sin_poly(r),
        (Func::Sin, _) | (Func::Cos, _) => -cos_poly(r),
        (Func::Tan, q) if q % 2 == 0 => div(sin_poly(r), cos_poly(r)),
        (Func::Tan, _) => -div(cos_poly(r), sin_poly(r)),
    };
    wide_from_q(neg && f != Func::Cos, v, 0, Dir::Above)
}

fn trig(x: F80, cw: Control, f: Func) -> Trig {
    let from = |r: Result80| Trig {
        value: r.value,
        flags: r.flags,
        c1: r.c1,
        out_of_range: false,
    };
    let (neg, m, e) = match kind(x) {
        // Infinity is an invalid operand, not out of range (SDM Vol. 2, FSIN
        // etc. "Floating-Point Exceptions": #IA for SNaN, infinity or
        // unsupported format).
        Kind::Unsupported | Kind::Inf => return from(invalid(cw)),
        Kind::Nan => return from(nan_result(x, None, cw)),
        Kind::Zero => return from(finish(if f == Func::Cos { F80::ONE } else { x }, 0, false, cw)),
        Kind::Finite { m, e } => (x.sign(), m, e),
    };
    if e >= 63 {
        return Trig {
            value: None,
            flags: 0,
            c1: false,
            out_of_range: true,
        };
    }
    let de = denormal_flag(&[x]);
    if let Some(r) = denormal_stops(de, cw) {
        return from(r);
    }
    let w = if e < TINY_EXP {
        trig_tiny(neg, m, e, f)
    } else {
        let (r, quadrant) = reduce(q_unit(m).scalbn(e));
        trig_reduced(neg, r, quadrant, f)
    };
    from(rounded(w, de, cw))
}

/// log2 of FYL2X's x or FYL2XP1's x + 1, by class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Log {
    /// log2(0): a zero divide when multiplied by a finite nonzero y.
    MinusInfinity,
    PlusInfinity,
    /// log2(1) = +0 (FYL2X), or FYL2XP1 of ±0 (log2(1 ± 0) = ±0).
    Zero {
        neg: bool,
    },
    /// Finite and nonzero, of this sign.
    Finite {
        neg: bool,
    },
}

/// y * log, with the sign and exception rules of the FYL2X and FYL2XP1
/// tables (0 * infinity invalid; finite nonzero y times log2(0) a zero
/// divide); `finite` computes the product of y = my * 2^(ey - 63) with the
/// finite nonzero log.
fn times_log(x: F80, y: F80, log: Log, cw: Control, finite: impl FnOnce(u64, i32) -> Wide) -> Result80 {
    let sy = y.sign();
    let (inf, zero) = (F80::infinity, F80::zero);
    let (value, flags) = match (log, kind(y)) {
        (Log::MinusInfinity | Log::PlusInfinity, Kind::Zero) => return invalid(cw),
        (Log::Zero { .. }, Kind::Inf) => return invalid(cw),
        (Log::MinusInfinity, Kind::Finite { .. }) => {
            return finish(inf(!sy), exc::ZE, false, cw);
        }
        (Log::MinusInfinity, _) => (inf(!sy), 0),
        (Log::PlusInfinity, _) => (inf(sy), 0),
        (Log::Zero { neg }, _) => (zero(sy ^ neg), 0),
        (Log::Finite { neg }, Kind::Inf) => (inf(sy ^ neg), 0),
        (Log::Finite { neg }, Kind::Zero) => (zero(sy ^ neg), 0),
        (Log::Finite { .. }, Kind::Finite { m, e }) => {
            let de = denormal_flag(&[x, y]);
            if let Some(r) = denormal_stops(de, cw) {
                return r;
            }
            return rounded(finite(m, e), de, cw);
        }
        // NaNs and unsupported encodings were screened.
        (_, Kind::Nan | Kind::Unsupported) => return invalid(cw),
    };
    let de = denormal_flag(&[x, y]);
    if let Some(r) = denormal_stops(de, cw) {
        return r;
    }
    finish(value, flags | de, false, cw)
}

/// atan t for 0 <= t <= 1: atan t = atan(k/8) + atan((t - k/8) / (1 + t k/8))
/// with k = round(8t), the second argument at most 1/16 (15 terms reach
/// 2^-117). t - k/8 is exact.
fn atan_unit(t: Q) -> Q {
    let c = consts();
    let mut exact = false;
    let k = mul(t, int(8))
        .round_to_integral(NEAREST)
        .value
        .to_u128_r(8, Round::TowardZero, &mut exact)
        .value
        .min(8);
    let ck = div(int(k), int(8));
    let u = div(sub(t, ck), add(int(1), mul(t, ck)));
    let z = mul(u, u);
    let series = add(u, mul(mul(u, z), horner(z, &c.atan_c)));
    add(c.atan_eighths[k as usize], series)
}

/// FPATAN of finite nonzero operands: x = ±mx * 2^(ex - 63), y likewise.
fn atan2_finite(sx: bool, mx: u64, ex: i32, sy: bool, my: u64, ey: i32) -> Wide {
    let c = consts();
    if mx == my && ex == ey {
        // |y| = |x|: pi/4 or 3pi/4, from the exact constant.
        return pi_quarters(if sx { 3 } else { 1 }, sy);
    }
    // |y/x| = (a / b) * 2^d with a/b in (1/2, 2).
    let (a, b) = (q_unit(my), q_unit(mx));
    let d = ey - ex;
    if d < TINY_EXP {
        // |y/x| < 2^-40: atan t = t - t^3/3..., just below t. But the
        // quotient is itself rounded: when it fell short of a/b by more than
        // t^3/3 (tiny t), the result lies just above it.
        let t = div(a, b);
        if !sx {
            // a - t*b, exact (the residual of a rounded quotient is representable).
            let short = (-t).mul_add_r(b, a, NEAREST).value;
            let cube_third = div(mul(mul(t, t), t), int(3)).scalbn(2 * d);
            let dir = if short > int(0) && div(short, b) > cube_third {
                Dir::Above
            } else {
                Dir::Below
            };
            return wide_from_q(sy, t, d, dir);
        }
        if d < -200 {
            // pi less a part far below the last bit.
            return pi_quarters(4, sy);
        }
        return wide_from_q(sy, sub(c.pi, t.scalbn(d)), 0, Dir::Above);
    }
    if d >= 41 {
        // |x/y| < 2^-40: pi/2 -+ atan|x/y|.
        if d > 200 {
            return pi_quarters(2, sy);
        }
        let u = div(b, a).scalbn(-d);
        let theta = if sx { add(c.pi_2, u) } else { sub(c.pi_2, u) };
        return wide_from_q(sy, theta, 0, Dir::Above);
    }
    let t = div(a, b).scalbn(d);
    let theta = if t <= int(1) {
        atan_unit(t)
    } else {
        sub(c.pi_2, atan_unit(div(b, a).scalbn(-d)))
    };
    let theta = if sx { sub(c.pi, theta) } else { theta };
    wide_from_q(sy, theta, 0, Dir::Above)
}

#[cfg(test)]
mod tests {
    use super::super::float::tests::Rng;
    use super::*;

    /// All exceptions masked, the given RC.
    fn cw(rc: u16) -> Control {
        Control(0x037F | (rc << 10))
    }

    const NEAR: Control = Control(0x037F);

    fn f(sign_exp: u16, mantissa: u64) -> F80 {
        F80 { mantissa, sign_exp }
    }

    /// A small integer, exactly.
    fn val(n: i64) -> F80 {
        if n == 0 {
            return f(0, 0);
        }
        let a = n.unsigned_abs();
        let lz = a.leading_zeros();
        f((u16::from(n < 0) << 15) | (0x3FFF + 63 - lz as u16), a << lz)
    }

    fn half() -> F80 {
        f(0x3FFE, INT_BIT)
    }

    fn inf(neg: bool) -> F80 {
        F80::infinity(neg)
    }

    fn zero(neg: bool) -> F80 {
        F80::zero(neg)
    }

    const QNAN: F80 = F80 {
        mantissa: 0xC000_0000_1234_0000,
        sign_exp: 0x7FFF,
    };
    const SNAN: F80 = F80 {
        mantissa: 0x8000_0000_1234_0000,
        sign_exp: 0x7FFF,
    };
    const DENORMAL: F80 = F80 {
        mantissa: 0x0000_1234_5678_9ABC,
        sign_exp: 0,
    };
    const UNNORMAL: F80 = F80 {
        mantissa: 0x4000_0000_0000_0000,
        sign_exp: 0x3FFF,
    };
    const PSEUDO_INF: F80 = F80 {
        mantissa: 0,
        sign_exp: 0x7FFF,
    };

    /// FLDPI rounded to nearest: C90FDAA2 2168C235 (SDM Vol. 1, 8.3.8).
    const PI: F80 = F80 {
        mantissa: 0xC90F_DAA2_2168_C235,
        sign_exp: 0x4000,
    };

    fn scaled(x: F80, by: i32) -> F80 {
        f((x.sign_exp as i32 + by) as u16, x.mantissa)
    }

    fn exact(v: F80) -> Result80 {
        Result80 {
            value: Some(v),
            flags: 0,
            c1: false,
        }
    }

    fn trig_exact(v: F80) -> Trig {
        Trig {
            value: Some(v),
            flags: 0,
            c1: false,
            out_of_range: false,
        }
    }

    /// Ordered position of a finite value: consecutive values differ by one
    /// (denormals run on into the normals, whose integer bit is implied).
    fn ordinal(x: F80) -> i128 {
        let mag = if x.exponent() == 0 {
            i128::from(x.mantissa)
        } else {
            (i128::from(x.exponent()) << 63) + i128::from(x.mantissa & !INT_BIT)
        };
        if x.sign() {
            -mag
        } else {
            mag
        }
    }

    fn negf(x: F80) -> F80 {
        f(x.sign_exp ^ 0x8000, x.mantissa)
    }

    fn ulps(a: F80, b: F80) -> u128 {
        (ordinal(a) - ordinal(b)).unsigned_abs()
    }

    /// `w` rounded to a register with exceptions as `cw` masks them: the
    /// value, the flags and C1.
    fn round80(w: Wide, cw: Control) -> (F80, u16, bool) {
        let r = rounded(w, 0, cw);
        (r.value.unwrap(), r.flags, r.c1)
    }

    impl Rng {
        /// A normal value with a random significand, exponent in `lo..=hi`.
        fn normal(&mut self, lo: i32, hi: i32, neg: bool) -> F80 {
            let span = (hi - lo + 1) as u64;
            let e = lo + self.below(span) as i32;
            f((u16::from(neg) << 15) | (e + BIAS) as u16, self.next() | INT_BIT)
        }
    }

    #[test]
    fn pi_expansion_agrees_with_machin() {
        // pi/4 = 4 atan(1/5) - atan(1/239).
        let one = int(1);
        let machin = sub(
            mul(int(4), atan_taylor(div(one, int(5)))),
            atan_taylor(div(one, int(239))),
        );
        let c = consts();
        let diff = sub(machin, c.pi.scalbn(-2));
        assert!(
            diff.is_zero() || diff.ilogb() <= -110,
            "pi/4 differs by 2^{}",
            diff.ilogb()
        );
        // The split parts add up to pi/2 and respect their widths.
        let [p1, p2, p3] = c.pio2_parts;
        let sum = add(add(p1, p2), p3);
        let d = sub(sum, c.pi_2);
        assert!(d.is_zero() || d.ilogb() <= -112);
        for p in [p1, p2] {
            let bits = p.to_bits() & ((1u128 << Q_FRAC) - 1);
            assert!(bits.trailing_zeros() >= Q_FRAC - 49, "part wider than 50 bits");
        }
        // The 64-bit roundings are FLDPI's.
        assert_eq!(round80(pi_quarters(4, false), NEAR).0, PI);
        assert_eq!(round80(pi_quarters(4, false), cw(1)).0.mantissa, 0xC90F_DAA2_2168_C234);
        // 3pi/4 as the hardware's FPATAN(-inf, +inf).
        assert_eq!(round80(pi_quarters(3, false), NEAR).0, f(0x4000, 0x96CB_E3F9_990E_91A8));
    }

    #[test]
    fn ln2_and_log2e() {
        let c = consts();
        // ln 2 = 0.B17217F7 D1CF79AB C9E3B398 03F2F6AF 40F34326 7298B62D...
        let w = wide_from_q(false, c.ln2, 0, Dir::Above);
        assert_eq!(round80(w, NEAR).0, f(0x3FFE, 0xB172_17F7_D1CF_79AC));
        let w = wide_from_q(false, c.log2e, 0, Dir::Above);
        assert_eq!(round80(w, NEAR).0, f(0x3FFF, 0xB8AA_3B29_5C17_F0BC));
        // 1.62E42FEF A39EF357 93C76730 07E5ED5E.. * 2^-1 in Quad's fraction.
        let frac = c.ln2.to_bits() & ((1u128 << Q_FRAC) - 1);
        assert_eq!(frac >> 48, 0x62E4_2FEF_A39E_F357);
    }

    #[test]
    fn to_quad_is_exact() {
        let mut rng = Rng(7);
        for _ in 0..200 {
            let x = rng.normal(-16382, 16383, rng.0 & 1 == 1);
            let mut loses = false;
            let bits = (u128::from(x.sign_exp) << 64) | u128::from(x.mantissa);
            let r: rustc_apfloat::StatusAnd<Quad> = X87DoubleExtended::from_bits(bits).convert_r(NEAREST, &mut loses);
            assert!(!loses && r.status == rustc_apfloat::Status::OK);
            let Kind::Finite { m, e } = kind(x) else { unreachable!() };
            assert_eq!(q_unit(m).scalbn(e).abs().to_bits(), r.value.abs().to_bits());
        }
        // Denormals too.
        let w = wide_from_q(false, to_quad(DENORMAL), 0, Dir::Above);
        assert_eq!(round80(w, NEAR).0, DENORMAL);
    }

    #[test]
    fn trig_special_cases() {
        for func in [sin, cos, tan] {
            // Infinity: invalid (not out of range), indefinite when masked.
            for neg in [false, true] {
                let r = func(inf(neg), NEAR);
                assert_eq!(
                    (r.value, r.flags, r.out_of_range),
                    (Some(F80::INDEFINITE), exc::IE, false)
                );
                let r = func(inf(neg), Control(0x037E));
                assert_eq!((r.value, r.flags), (None, exc::IE));
            }
            // NaNs.
            assert_eq!(func(QNAN, NEAR), trig_exact(QNAN));
            let r = func(SNAN, NEAR);
            assert_eq!((r.value, r.flags), (Some(SNAN.quieted()), exc::IE));
            // Unsupported encodings.
            for u in [UNNORMAL, PSEUDO_INF] {
                assert_eq!(func(u, NEAR).value, Some(F80::INDEFINITE));
            }
            // Out of range: 2^63 and above, either sign; just below is in range.
            for x in [f(0x403E, INT_BIT), f(0xC03E, INT_BIT), f(0x7FFE, u64::MAX)] {
                let r = func(x, NEAR);
                assert_eq!((r.value, r.flags, r.c1, r.out_of_range), (None, 0, false, true));
            }
            let r = func(f(0x403D, u64::MAX), NEAR);
            assert!(!r.out_of_range && r.value.is_some() && r.flags == exc::PE);
            // Denormal: DE; unmasked it stops the instruction.
            let r = func(DENORMAL, Control(0x037D));
            assert_eq!((r.value, r.flags), (None, exc::DE));
        }
        for z in [zero(false), zero(true)] {
            assert_eq!(sin(z, NEAR), trig_exact(z));
            assert_eq!(tan(z, NEAR), trig_exact(z));
            assert_eq!(cos(z, NEAR), trig_exact(F80::ONE));
        }
        // FPTAN pushes 1.0, or the NaN again.
        assert_eq!(tan(val(1), NEAR).fptan_push(), Some(F80::ONE));
        assert_eq!(tan(QNAN, NEAR).fptan_push(), Some(QNAN));
        assert_eq!(tan(inf(false), NEAR).fptan_push(), Some(F80::INDEFINITE));
        assert_eq!(tan(f(0x403E, INT_BIT), NEAR).fptan_push(), None);
        // FSINCOS.
        let r = sincos(zero(true), NEAR);
        assert_eq!((r.sin, r.cos, r.flags, r.valid), (zero(true), F80::ONE, 0, true));
        let r = sincos(inf(true), NEAR);
        assert_eq!(
            (r.sin, r.cos, r.flags, r.valid),
            (F80::INDEFINITE, F80::INDEFINITE, exc::IE, true)
        );
        let r = sincos(inf(true), Control(0x037E));
        assert_eq!((r.flags, r.valid), (exc::IE, false));
        let r = sincos(SNAN, NEAR);
        assert_eq!((r.sin, r.cos, r.flags), (SNAN.quieted(), SNAN.quieted(), exc::IE));
        let r = sincos(f(0x403E, INT_BIT), NEAR);
        assert_eq!((r.flags, r.out_of_range, r.valid), (0, true, false));
        let r = sincos(DENORMAL, Control(0x037D));
        assert_eq!((r.flags, r.valid), (exc::DE, false));
    }

    #[test]
    fn trig_tiny_arguments() {
        // sin x = x - x^3/6: x to nearest (rounded up: C1), the value below
        // rounding down or toward zero; likewise tan from above and cos = 1
        // from below. The sine and cosine cases are what the hardware we
        // compared with returns; its FPTAN of tiny arguments rounds as if
        // tan x were below x.
        let x = f(0x3FCD, INT_BIT);
        let below_x = f(0x3FCC, u64::MAX);
        let r = sin(x, NEAR);
        assert_eq!((r.value, r.flags, r.c1), (Some(x), exc::PE, true));
        let r = sin(x, cw(1));
        assert_eq!((r.value, r.flags, r.c1), (Some(below_x), exc::PE, false));
        assert_eq!(sin(x, cw(3)).value, Some(below_x));
        assert_eq!(sin(x, cw(2)).value, Some(x));
        assert_eq!(sin(negf(x), cw(2)).value, Some(negf(below_x)));
        let r = cos(x, NEAR);
        assert_eq!((r.value, r.flags, r.c1), (Some(F80::ONE), exc::PE, true));
        assert_eq!(cos(x, cw(1)).value, Some(f(0x3FFE, u64::MAX)));
        let r = tan(x, NEAR);
        assert_eq!((r.value, r.flags, r.c1), (Some(x), exc::PE, false));
        assert_eq!(tan(x, cw(2)).value, Some(f(0x3FCD, INT_BIT | 1)));
        assert_eq!(tan(x, cw(1)).value, Some(x));
        // A denormal: the result is the operand, with DE, UE and PE.
        let r = sin(DENORMAL, NEAR);
        assert_eq!(
            (r.value, r.flags, r.c1),
            (Some(DENORMAL), exc::DE | exc::UE | exc::PE, true)
        );
        let r = tan(DENORMAL, NEAR);
        assert_eq!(
            (r.value, r.flags, r.c1),
            (Some(DENORMAL), exc::DE | exc::UE | exc::PE, false)
        );
        let r = cos(DENORMAL, NEAR);
        assert_eq!((r.value, r.flags), (Some(F80::ONE), exc::DE | exc::PE));
        // Tininess is after rounding: the smallest normal stays normal to
        // nearest (no UE), but rounded down it becomes a denormal.
        let min = f(0x0001, INT_BIT);
        assert_eq!(
            sin(min, NEAR),
            Trig {
                value: Some(min),
                flags: exc::PE,
                c1: true,
                out_of_range: false
            }
        );
        let r = sin(min, cw(1));
        assert_eq!((r.value, r.flags), (Some(f(0, u64::MAX >> 1)), exc::UE | exc::PE));
        // Unmasked underflow: the result with its exponent biased by 24576.
        let r = sin(DENORMAL, Control(0x036F));
        let biased = f(0x5FEE, 0x1234_5678_9ABC << 19);
        assert_eq!((r.value, r.flags), (Some(biased), exc::DE | exc::UE | exc::PE));
        // Around the tiny threshold the shortcut and the series agree on the
        // side: x to nearest and up, the value below x down and toward zero.
        for e in [TINY_EXP - 2, TINY_EXP - 1, TINY_EXP, TINY_EXP + 1, -35] {
            let x = f((e + BIAS) as u16, 0xDEAD_BEEF_0000_0001 | INT_BIT);
            let below = f(x.sign_exp, x.mantissa - 1);
            let above = f(x.sign_exp, x.mantissa + 1);
            for (rc, s_want, t_want) in [(0, x, x), (1, below, x), (2, x, above), (3, below, x)] {
                assert_eq!(sin(x, cw(rc)).value, Some(s_want), "sin 2^{e} rc {rc}");
                assert_eq!(tan(x, cw(rc)).value, Some(t_want), "tan 2^{e} rc {rc}");
                let c_want = if rc % 2 == 1 { f(0x3FFE, u64::MAX) } else { F80::ONE };
                assert_eq!(cos(x, cw(rc)).value, Some(c_want), "cos 2^{e} rc {rc}");
            }
        }
    }

    #[test]
    fn trig_known_values() {
        // sin(pi/6) ~ 0.5: pi/6 is not a float, so 1/2 to within an ulp or two.
        let pi6 = round80(wide_from_q(false, div(consts().pi, int(6)), 0, Dir::Above), NEAR).0;
        let s = sin(pi6, NEAR).value.unwrap();
        assert!(ulps(s, half()) <= 2, "{s:?}");
        let c = cos(val(1), NEAR);
        // cos 1 = 0.8A51407DA8345C91C2466D976871BD29...
        assert_eq!(c.value, Some(f(0x3FFE, 0x8A51_407D_A834_5C92)));
        assert_eq!(c.flags, exc::PE);
        // sin 1 = 0.D76AA47848677020C6E9E909C50F3C32...
        assert_eq!(sin(val(1), NEAR).value, Some(f(0x3FFE, 0xD76A_A478_4867_7021)));
        // tan 1 = 1.5574077...: 1.C75922E5 F71D2DC5 66.. * 2^0 (the hardware we
        // compared with returns ...2DC6, an ulp above).
        assert_eq!(tan(val(1), NEAR).value, Some(f(0x3FFF, 0xC759_22E5_F71D_2DC5)));
        // tan(pi/4 rounded): 1 less (pi/4 - x) * 2, within an ulp of 1.
        let pi4 = scaled(PI, -2);
        let t = tan(pi4, NEAR).value.unwrap();
        assert!(ulps(t, F80::ONE) <= 1, "{t:?}");
        // The reduction: FLDPI exceeds pi by (1 - 0.C4C6628B...) * 2^-62 =
        // 0.3B399D74... * 2^-62, so sin(FLDPI) = -1.ECE675D1... * 2^-65.
        let s = sin(PI, NEAR).value.unwrap();
        assert!(s.sign());
        assert_eq!(s.exponent(), 0x3FFF - 65);
        assert_eq!(s.mantissa >> 32, 0xECE6_75D1);
        // Precision control does not apply (SDM Vol. 1, 8.1.5.2).
        for pc in [0, 2] {
            let single = Control(0x037F & !0x0300 | pc << 8);
            assert_eq!(sin(val(1), single), sin(val(1), NEAR));
            assert_eq!(fyl2x(val(3), val(1), single), fyl2x(val(3), val(1), NEAR));
        }
        // FSINCOS agrees with FSIN and FCOS.
        let mut rng = Rng(11);
        for _ in 0..50 {
            let x = rng.normal(-45, 40, rng.0 & 2 == 0);
            let r = sincos(x, NEAR);
            assert_eq!(Some(r.sin), sin(x, NEAR).value);
            assert_eq!(Some(r.cos), cos(x, NEAR).value);
        }
    }

    #[test]
    fn trig_symmetry_and_monotonicity() {
        let mut rng = Rng(3);
        for _ in 0..100 {
            let x = rng.normal(-60, 62, false);
            for rc in [0, 3] {
                let c = cw(rc);
                assert_eq!(sin(negf(x), c).value.map(negf), sin(x, c).value);
                assert_eq!(tan(negf(x), c).value.map(negf), tan(x, c).value);
                assert_eq!(cos(negf(x), c).value, cos(x, c).value);
            }
        }
        // Increasing on [0, pi/2) for sin and tan, decreasing for cos.
        let mut prev = (f(0, 0), F80::ONE, f(0, 0));
        let mut x = f(0x3FD0, INT_BIT);
        while x.exponent() < 0x3FFF || x.mantissa < 0xC90F_0000_0000_0000 {
            let now = (
                sin(x, NEAR).value.unwrap(),
                cos(x, NEAR).value.unwrap(),
                tan(x, NEAR).value.unwrap(),
            );
            assert!(ordinal(now.0) >= ordinal(prev.0) && ordinal(now.2) >= ordinal(prev.2));
            assert!(ordinal(now.1) <= ordinal(prev.1));
            prev = now;
            // Next: x * (1 + 1/64) roughly, through the significand.
            let (m, carry) = x.mantissa.overflowing_add(x.mantissa >> 6);
            x = if carry {
                f(x.sign_exp + 1, (m >> 1) | INT_BIT)
            } else {
                f(x.sign_exp, m)
            };
        }
    }

    #[test]
    fn f2xm1_cases() {
        assert_eq!(f2xm1(val(1), NEAR), exact(val(1)));
        assert_eq!(f2xm1(val(-1), NEAR), exact(negf(half())));
        assert_eq!(f2xm1(zero(true), NEAR), exact(zero(true)));
        assert_eq!(f2xm1(inf(false), NEAR), exact(inf(false)));
        assert_eq!(f2xm1(inf(true), NEAR), exact(val(-1)));
        assert_eq!(f2xm1(SNAN, NEAR).value, Some(SNAN.quieted()));
        assert_eq!(f2xm1(UNNORMAL, NEAR).value, Some(F80::INDEFINITE));
        // 2^0.5 - 1 = 0.6A09E667F3BCC908B2FB1366EA957D3E...
        let r = f2xm1(half(), NEAR);
        assert_eq!(
            (r.value, r.flags, r.c1),
            (Some(f(0x3FFD, 0xD413_CCCF_E779_9211)), exc::PE, false)
        );
        assert_eq!(f2xm1(half(), cw(2)).value, Some(f(0x3FFD, 0xD413_CCCF_E779_9212)));
        // Outside the domain: integers exact, 2^64 - 1 rounds.
        assert_eq!(f2xm1(val(3), NEAR), exact(val(7)));
        assert_eq!(f2xm1(val(-3), NEAR), exact(f(0xBFFE, 0xE000_0000_0000_0000)));
        assert_eq!(f2xm1(val(64), NEAR), exact(f(0x403E, u64::MAX)));
        assert_eq!(f2xm1(val(65), cw(3)).value, Some(f(0x403F, u64::MAX)));
        assert_eq!(f2xm1(val(65), NEAR).value, Some(f(0x4040, INT_BIT)));
        let r = f2xm1(val(20000), NEAR);
        assert_eq!((r.value, r.flags), (Some(inf(false)), exc::OE | exc::PE));
        assert_eq!(f2xm1(val(-20000), NEAR).value, Some(val(-1)));
        assert_eq!(f2xm1(val(-20000), cw(3)).value, Some(f(0xBFFE, u64::MAX)));
        // 2^2.5 - 1 = 4.656854249...
        let r = f2xm1(f(0x4000, 0xA000_0000_0000_0000), NEAR).value.unwrap();
        assert_eq!(r, f(0x4001, 0x9504_F333_F9DE_6484));
        // Tiny: x ln 2 (1 + x ln2/2), measured on hardware; and denormals.
        assert_eq!(
            f2xm1(f(0x3FCD, INT_BIT), NEAR).value,
            Some(f(0x3FCC, 0xB172_17F7_D1CF_890C))
        );
        let r = f2xm1(DENORMAL, NEAR);
        assert_eq!(
            (r.value, r.flags),
            (Some(f(0, 0x0C9E_4CCC_37E1)), exc::DE | exc::UE | exc::PE)
        );
        // Monotone on [-1, 1].
        let mut rng = Rng(5);
        let mut xs: Vec<F80> = (0..200).map(|i| rng.normal(-30, -1, i % 2 == 0)).collect();
        xs.sort_by_key(|&x| ordinal(x));
        let ys: Vec<i128> = xs.iter().map(|&x| ordinal(f2xm1(x, NEAR).value.unwrap())).collect();
        assert!(ys.windows(2).all(|w| w[0] <= w[1]));
    }

    /// An expected table entry.
    #[derive(Clone, Copy, Debug)]
    enum Want {
        /// Invalid: the indefinite, IE.
        Inv,
        /// Zero divide: the infinity of the sign opposite to y's, ZE.
        Zd,
        /// This value exactly, no flags.
        Is(F80),
        /// A finite nonzero value of this sign (checked elsewhere).
        Sign(bool),
    }

    fn check(r: Result80, want: Want, y: F80, what: &str) {
        match want {
            Want::Inv => assert_eq!((r.value, r.flags), (Some(F80::INDEFINITE), exc::IE), "{what}"),
            Want::Zd => assert_eq!((r.value, r.flags), (Some(inf(!y.sign())), exc::ZE), "{what}"),
            Want::Is(v) => assert_eq!((r.value, r.flags), (Some(v), 0), "{what}"),
            Want::Sign(neg) => assert_eq!(r.value.map(F80::sign), Some(neg), "{what}"),
        }
    }

    #[test]
    fn fyl2x_table() {
        use Want::*;
        // SDM Vol. 2, FYL2X, table "FYL2X Results": rows y; columns x = -inf,
        // -F, ±0, 0 < x < 1, 1, x > 1, +inf.
        let xs = [inf(true), val(-2), zero(false), half(), val(1), val(4), inf(false)];
        let (pi, ni, pz, nz) = (Is(inf(false)), Is(inf(true)), Is(zero(false)), Is(zero(true)));
        let rows = [
            (inf(true), [Inv, Inv, pi, pi, Inv, ni, ni]),
            (val(-3), [Inv, Inv, Zd, Sign(false), nz, Sign(true), ni]),
            (zero(true), [Inv, Inv, Inv, pz, nz, nz, Inv]),
            (zero(false), [Inv, Inv, Inv, nz, pz, pz, Inv]),
            (val(3), [Inv, Inv, Zd, Sign(true), pz, Sign(false), pi]),
            (inf(false), [Inv, Inv, ni, ni, Inv, pi, pi]),
        ];
        for (y, row) in rows {
            for (&x, want) in xs.iter().zip(row) {
                check(fyl2x(x, y, NEAR), want, y, &format!("fyl2x({x:?}, {y:?})"));
                if x == zero(false) {
                    check(fyl2x(zero(true), y, NEAR), want, y, "-0");
                }
            }
        }
        assert_eq!(fyl2x(val(4), val(-3), NEAR), exact(val(-6)));
        // NaNs: SNaN quieted with IE; QNaN over SNaN; larger significand.
        assert_eq!(fyl2x(QNAN, val(1), NEAR), exact(QNAN));
        assert_eq!(fyl2x(val(-1), SNAN, NEAR).value, Some(SNAN.quieted()));
        assert_eq!(
            fyl2x(QNAN, SNAN, NEAR),
            Result80 {
                value: Some(QNAN),
                flags: exc::IE,
                c1: false
            }
        );
        let (a, b) = (f(0x7FFF, 0xC000_0000_0000_0001), f(0xFFFF, 0xC000_0000_0000_0002));
        assert_eq!(fyl2x(a, b, NEAR).value, Some(b));
        assert_eq!(fyl2x(b, a, NEAR).value, Some(b));
        assert_eq!(fyl2x(UNNORMAL, QNAN, NEAR).value, Some(F80::INDEFINITE));
        // Unmasked ZE and IE suppress the result.
        assert_eq!(
            fyl2x(zero(false), val(1), Control(0x037B)),
            Result80 {
                value: None,
                flags: exc::ZE,
                c1: false
            }
        );
        assert_eq!(fyl2x(val(-1), val(1), Control(0x037E)).value, None);
        // Denormals: DE (with ZE only ZE, as measured).
        assert_eq!(fyl2x(zero(false), DENORMAL, NEAR).flags, exc::ZE);
        assert_eq!(
            fyl2x(val(1), DENORMAL, NEAR),
            Result80 {
                value: Some(zero(false)),
                flags: exc::DE,
                c1: false
            }
        );
        let r = fyl2x(DENORMAL, val(1), NEAR);
        assert_eq!(
            (r.value, r.flags),
            (Some(f(0xC00D, 0x8021_A0A7_EDA4_C136)), exc::DE | exc::PE)
        );
    }

    #[test]
    fn fyl2x_values() {
        // Powers of two are exact.
        assert_eq!(fyl2x(val(8), val(1), NEAR), exact(val(3)));
        assert_eq!(fyl2x(half(), val(-5), NEAR), exact(val(5)));
        assert_eq!(
            fyl2x(f(0x0000, 1), val(1), NEAR),
            Result80 {
                value: Some(val(-16445)),
                flags: exc::DE,
                c1: false
            }
        );
        // log2(10) = 3.3219...: FLDL2T's D49A784B CD1B8AFE, ...8AFF rounded up.
        assert_eq!(
            fyl2x(val(10), val(1), NEAR).value,
            Some(f(0x4000, 0xD49A_784B_CD1B_8AFE))
        );
        assert_eq!(
            fyl2x(val(10), val(1), cw(2)).value,
            Some(f(0x4000, 0xD49A_784B_CD1B_8AFF))
        );
        // Overflow and underflow.
        let big = f(0x7FFE, u64::MAX);
        let r = fyl2x(val(4), big, NEAR);
        assert_eq!((r.value, r.flags, r.c1), (Some(inf(false)), exc::OE | exc::PE, true));
        let r = fyl2x(val(4), big, Control(0x0377));
        assert_eq!((r.value, r.flags), (Some(f(0x7FFF - 24576, u64::MAX)), exc::OE));
        let r = fyl2x(val(4), big, cw(3));
        assert_eq!((r.value, r.flags, r.c1), (Some(big), exc::OE | exc::PE, false));
        let r = fyl2x(half(), f(0x0001, INT_BIT), NEAR);
        assert_eq!((r.value, r.flags), (Some(f(0x8001, INT_BIT)), 0));
        let r = fyl2x(f(0x3FFE, 0xC000_0000_0000_0000), f(0x0001, INT_BIT), NEAR);
        assert_eq!(r.flags, exc::UE | exc::PE);
        // Monotone in x.
        let mut rng = Rng(9);
        let mut xs: Vec<F80> = (0..200).map(|_| rng.normal(-3, 3, false)).collect();
        xs.sort_by_key(|&x| ordinal(x));
        let ys: Vec<i128> = xs
            .iter()
            .map(|&x| ordinal(fyl2x(x, val(1), NEAR).value.unwrap()))
            .collect();
        assert!(ys.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn fyl2xp1_cases() {
        use Want::*;
        // SDM Vol. 2, FYL2XP1, table "FYL2XP1 Results": rows y; columns x =
        // -(1 - sqrt(2)/2) to -0, -0, +0, +0 to +(1 - sqrt(2)/2).
        let small = f(0x3FFC, INT_BIT); // 1/8
        let xs = [negf(small), zero(true), zero(false), small];
        let (pi, ni, pz, nz) = (Is(inf(false)), Is(inf(true)), Is(zero(false)), Is(zero(true)));
        let rows = [
            (inf(true), [pi, Inv, Inv, ni]),
            (val(-3), [Sign(false), pz, nz, Sign(true)]),
            (zero(true), [pz, pz, nz, nz]),
            (zero(false), [nz, nz, pz, pz]),
            (val(3), [Sign(true), nz, pz, Sign(false)]),
            (inf(false), [ni, Inv, Inv, pi]),
        ];
        for (y, row) in rows {
            for (&x, want) in xs.iter().zip(row) {
                check(fyl2xp1(x, y, NEAR), want, y, &format!("fyl2xp1({x:?}, {y:?})"));
            }
        }
        assert_eq!(fyl2xp1(zero(true), val(-3), NEAR), exact(zero(false)));
        assert_eq!(fyl2xp1(zero(false), val(-3), NEAR), exact(zero(true)));
        // log2(1 + 1/8) as FYL2X computes log2(9/8): both correctly rounded.
        for rc in 0..4 {
            assert_eq!(
                fyl2xp1(small, val(3), cw(rc)),
                fyl2x(f(0x3FFF, 0x9000_0000_0000_0000), val(3), cw(rc))
            );
        }
        // Tiny x: x / ln 2; a denormal x keeps its precision.
        let r = fyl2xp1(f(0x3FCD, INT_BIT), val(1), NEAR).value.unwrap();
        assert_eq!(r.exponent(), 0x3FCD);
        let r = fyl2xp1(DENORMAL, val(1), NEAR);
        assert_eq!(r.flags, exc::DE | exc::UE | exc::PE);
        // Outside the domain: exact powers, -1 a zero divide, below invalid.
        assert_eq!(fyl2xp1(val(1), val(5), NEAR), exact(val(5)));
        assert_eq!(fyl2xp1(val(7), val(1), NEAR), exact(val(3)));
        assert_eq!(fyl2xp1(negf(half()), val(1), NEAR), exact(val(-1)));
        assert_eq!(
            fyl2xp1(val(-1), val(1), NEAR),
            Result80 {
                value: Some(inf(true)),
                flags: exc::ZE,
                c1: false
            }
        );
        assert_eq!(fyl2xp1(val(-2), val(1), NEAR).flags, exc::IE);
        assert_eq!(fyl2xp1(inf(true), val(1), NEAR).flags, exc::IE);
        assert_eq!(fyl2xp1(inf(false), val(1), NEAR), exact(inf(false)));
        // Agrees with FYL2X of 1 + x where that is exact.
        let mut rng = Rng(13);
        for _ in 0..100 {
            let x = rng.normal(-2, 3, false);
            let x = f(x.sign_exp, x.mantissa & !0xFFFF);
            let one_plus = to_quad(x);
            let t = add(int(1), one_plus);
            let tx = round80(wide_from_q(false, t, 0, Dir::Above), NEAR).0;
            let y = rng.normal(-3, 3, true);
            assert_eq!(fyl2xp1(x, y, NEAR), fyl2x(tx, y, NEAR), "{x:?}");
        }
    }

    #[test]
    fn fpatan_table() {
        // SDM Vol. 2, FPATAN, table "FPATAN Results": rows y, columns x =
        // -inf, -F, -0, +0, +F, +inf, as multiples of pi/4 with y's sign
        // (None: the zero of y's sign).
        let q = |n: u64, neg: bool| round80(pi_quarters(n, neg), NEAR).0;
        let xs = [inf(true), val(-2), zero(true), zero(false), val(2), inf(false)];
        let rows: [(F80, [Option<u64>; 6]); 6] = [
            (inf(true), [Some(3), Some(2), Some(2), Some(2), Some(2), Some(1)]),
            (val(-3), [Some(4), None, Some(2), Some(2), None, None]),
            (zero(true), [Some(4), Some(4), Some(4), None, None, None]),
            (zero(false), [Some(4), Some(4), Some(4), None, None, None]),
            (val(3), [Some(4), None, Some(2), Some(2), None, None]),
            (inf(false), [Some(3), Some(2), Some(2), Some(2), Some(2), Some(1)]),
        ];
        for (y, row) in rows {
            for (x, want) in xs.iter().zip(row) {
                let r = fpatan(*x, y, NEAR);
                match want {
                    Some(n) => assert_eq!(
                        (r.value, r.flags, r.c1),
                        (Some(q(n, y.sign())), exc::PE, true),
                        "{x:?} {y:?}"
                    ),
                    None if y.exponent() == 0 || x.exponent() == 0x7FFF => {
                        assert_eq!(r, exact(zero(y.sign())), "{x:?} {y:?}")
                    }
                    // Finite over finite: checked below.
                    None => assert!(r.value.is_some_and(|v| v.sign() == y.sign()), "{x:?} {y:?}"),
                }
            }
        }
        // FPATAN(1, 1) = pi/4 rounded as FLDPI / 4, and its multiples.
        assert_eq!(fpatan(val(1), val(1), NEAR).value, Some(scaled(PI, -2)));
        assert_eq!(
            fpatan(val(-7), val(7), NEAR).value,
            Some(f(0x4000, 0x96CB_E3F9_990E_91A8))
        );
        assert_eq!(fpatan(val(-7), val(-1), NEAR).value.map(F80::sign), Some(true));
        // NaNs, denormals.
        assert_eq!(fpatan(SNAN, val(1), NEAR).flags, exc::IE);
        let r = fpatan(val(1), DENORMAL, NEAR);
        assert_eq!(
            (r.value, r.flags, r.c1),
            (Some(DENORMAL), exc::DE | exc::UE | exc::PE, true)
        );
        assert_eq!(fpatan(DENORMAL, val(1), Control(0x037D)).value, None);
        assert_eq!(
            fpatan(DENORMAL, zero(false), NEAR),
            Result80 {
                value: Some(zero(false)),
                flags: exc::DE,
                c1: false
            }
        );
        // y/x below the smallest denormal: zero with UE and PE.
        let r = fpatan(f(0x7E7F, INT_BIT), f(0x0001, INT_BIT), NEAR);
        assert_eq!((r.value, r.flags), (Some(zero(false)), exc::UE | exc::PE));
        // Symmetries: atan2(-y, x) = -atan2(y, x).
        let mut rng = Rng(17);
        for _ in 0..100 {
            let x = rng.normal(-50, 50, rng.0 & 1 == 0);
            let y = rng.normal(-50, 50, false);
            let a = fpatan(x, y, NEAR).value.unwrap();
            assert_eq!(fpatan(x, negf(y), NEAR).value, Some(negf(a)));
        }
    }

    #[test]
    fn fuzz_no_panics() {
        let mut rng = Rng(23);
        for _ in 0..20_000 {
            let pick = |rng: &mut Rng| {
                let r = rng.next();
                let se = match r % 6 {
                    0 => 0,
                    1 => 0x7FFF,
                    2 => (rng.next() as u16 & 0x803F) | 0x3FC0,
                    _ => rng.next() as u16,
                };
                f(
                    se ^ ((r as u16) & 0x8000),
                    if r.is_multiple_of(7) {
                        rng.next() & !INT_BIT
                    } else {
                        rng.next()
                    },
                )
            };
            let (x, y) = (pick(&mut rng), pick(&mut rng));
            let c = Control((rng.next() as u16) & 0x0F3F | 0x40);
            // Nothing is suppressed without an unmasked IE, DE or ZE (or the
            // operand out of range).
            let stops = |flags: u16| flags & !c.masks() & (exc::IE | exc::DE | exc::ZE) != 0;
            for r in [f2xm1(x, c), fyl2x(x, y, c), fyl2xp1(x, y, c), fpatan(x, y, c)] {
                assert_eq!(r.value.is_none(), stops(r.flags), "{x:?} {y:?} {c:?}");
            }
            for r in [sin(x, c), cos(x, c), tan(x, c)] {
                assert_eq!(r.value.is_none(), stops(r.flags) || r.out_of_range, "{x:?} {c:?}");
            }
            let r = sincos(x, c);
            assert_eq!(!r.valid, stops(r.flags) || r.out_of_range, "{x:?} {c:?}");
        }
    }

    /// The host's x87, to compare with (x86_64 hosts only).
    #[cfg(target_arch = "x86_64")]
    mod host {
        use super::*;
        use core::arch::asm;

        /// Runs one instruction on the host FPU with `x` in ST(0) (and `y`
        /// in ST(1)); returns ST(0), ST(1) and the status word. `cw` must mask
        /// every exception so that nothing is left pending.
        macro_rules! host_op {
            ($name:ident, $ins:literal) => {
                fn $name(x: F80, y: F80, cw: u16) -> (F80, F80, u16) {
                    assert_eq!(cw & 0x3F, 0x3F);
                    let (xb, yb) = (x.to_bytes(), y.to_bytes());
                    let (mut o0, mut o1) = ([0u8; 10], [0u8; 10]);
                    let mut sw: u16 = 0;
                    // SAFETY: the block only touches the x87 registers
                    // (declared clobbered; FNINIT leaves them empty and the
                    // control word at its default, as the ABI expects) and
                    // the six locals whose addresses it gets, each as large as
                    // accessed (10 bytes for the tbytes, 2 for the words).
                    // All exceptions are masked, so no #MF can be left
                    // pending; x87 instructions leave EFLAGS alone.
                    unsafe {
                        asm!(
                            "fninit",
                            "fldcw word ptr [{cw}]",
                            "fld tbyte ptr [{y}]",
                            "fld tbyte ptr [{x}]",
                            $ins,
                            "fnstsw word ptr [{sw}]",
                            "fstp tbyte ptr [{o0}]",
                            "fstp tbyte ptr [{o1}]",
                            "fninit",
                            cw = in(reg) &cw,
                            x = in(reg) xb.as_ptr(),
                            y = in(reg) yb.as_ptr(),
                            sw = in(reg) &mut sw,
                            o0 = in(reg) o0.as_mut_ptr(),
                            o1 = in(reg) o1.as_mut_ptr(),
                            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                            options(nostack, preserves_flags),
                        );
                    }
                    (F80::from_bytes(o0), F80::from_bytes(o1), sw)
                }
            };
        }

        host_op!(host_fsin, "fsin");
        host_op!(host_fcos, "fcos");
        host_op!(host_fptan, "fptan");
        host_op!(host_fsincos, "fsincos");
        host_op!(host_f2xm1, "f2xm1");
        host_op!(host_fyl2x, "fyl2x");
        host_op!(host_fyl2xp1, "fyl2xp1");
        host_op!(host_fpatan, "fpatan");

        /// Prints a disagreement when X87_DEBUG is set in the environment.
        fn debug(what: core::fmt::Arguments) {
            if std::env::var_os("X87_DEBUG").is_some() {
                println!("{what}");
            }
        }

        /// What one comparison measured; `last` is the input, for `debug`.
        #[derive(Default, Debug)]
        struct Stats {
            n: u32,
            identical: u32,
            max_ulps: u128,
            flags_differ: u32,
            /// Flag differences other than the hardware's PE (and UE) on a
            /// result we know to be exact.
            flags_unexplained: u32,
            c1_differ: u32,
            last: F80,
        }

        impl Stats {
            fn add(&mut self, ours: F80, flags: u16, c1: bool, host: F80, sw: u16) {
                self.n += 1;
                let d = ulps(ours, host);
                if d > 1 {
                    debug(format_args!("{:X?}: {ours:X?}, host {host:X?}, {d} ulps", self.last));
                }
                self.max_ulps = self.max_ulps.max(d);
                if d == 0 {
                    self.identical += 1;
                    if c1 != (sw & 0x200 != 0) {
                        self.c1_differ += 1;
                        debug(format_args!("{:X?}: {ours:X?}, C1 {c1}, host SW {sw:04X}", self.last));
                    }
                }
                if flags != sw & 0x3F {
                    self.flags_differ += 1;
                    let host_inexact = flags | exc::PE | (sw & exc::UE);
                    if flags & exc::PE != 0 || sw & 0x3F != host_inexact {
                        self.flags_unexplained += 1;
                    }
                    debug(format_args!(
                        "{:X?}: {ours:X?}, flags {flags:X}, host SW {sw:04X}",
                        self.last
                    ));
                }
            }
            fn report(&self, name: &str) -> String {
                let permille = 1000 * u64::from(self.identical) / u64::from(self.n.max(1));
                format!(
                    "{name}: {} inputs, {}.{}% bit-identical, max {} ulp, flags differ {}, C1 differs {} (of identical)",
                    self.n,
                    permille / 10,
                    permille % 10,
                    self.max_ulps,
                    self.flags_differ,
                    self.c1_differ
                )
            }
        }

        const N: usize = 3000;

        fn rcs(i: usize) -> u16 {
            // Mostly to nearest, some of each directed mode.
            if i.is_multiple_of(4) {
                (i / 4 % 3 + 1) as u16
            } else {
                0
            }
        }

        /// FSIN, FCOS or FPTAN as the hardware computes them by SDM Vol. 1,
        /// 8.3.8: reduced with the 66-bit Pi = 0.C90FDAA2 2168C234 C * 2^2
        /// instead of pi, then evaluated (here by this module's kernels). For
        /// |x| < 2^40 that reduction is exact in Quad: k has at most 40 bits
        /// and k * Pi/2 at most 108.
        fn with_pi66(x: F80, c: Control, f: Func) -> (F80, u16, bool) {
            let Kind::Finite { m, e } = kind(x) else { unreachable!() };
            if e < TINY_EXP {
                return round80(trig_tiny(x.sign(), m, e, f), c);
            }
            let pio2 = int(0xC_90FD_AA22_168C_234C).scalbn(1 - 68);
            let xq = q_unit(m).scalbn(e);
            let kq = div(xq, pio2).round_to_integral(NEAREST).value;
            let mut exact = false;
            let k = kq.to_u128_r(64, Round::TowardZero, &mut exact).value;
            let r = sub(xq, mul(kq, pio2));
            round80(trig_reduced(x.sign(), r, (k & 3) as u32, f), c)
        }

        #[test]
        fn trig_matches_host() {
            let mut rng = Rng(0x5EED);
            let mut report = Vec::new();
            // |x| <= pi/4, where no reduction happens; |x| < 8 and |x| < 2^20,
            // where the hardware reduces with its 66-bit pi: there our
            // (correctly reduced) results are compared as they are, for the
            // report, and the model of the hardware's reduction within an ulp.
            let domains = [
                ("|x|<=pi/4", -30, -1),
                ("|x|<8", -30, 2),
                ("|x|<2^20", -1, 19),
                ("tiny |x|<2^-35", -16382, -35),
            ];
            for (domain, lo, hi) in domains {
                let mut ours: [Stats; 5] = Default::default();
                let mut model: [Stats; 3] = Default::default();
                let mut sincos_c1 = (0, 0);
                for i in 0..N {
                    let x = rng.normal(lo, hi, i % 2 == 0);
                    if hi == -1 && x.exponent() == 0x3FFE && x.mantissa > 0xC90F_DAA2_2168_C234 {
                        continue;
                    }
                    let rc = rcs(i);
                    let (c, hcw) = (cw(rc), 0x037F | (rc << 10));
                    for st in ours.iter_mut().chain(model.iter_mut()) {
                        st.last = x;
                    }
                    let hs = host_fsin(x, x, hcw);
                    let hc = host_fcos(x, x, hcw);
                    let ht = host_fptan(x, x, hcw);
                    let hsc = host_fsincos(x, x, hcw);
                    assert_eq!(ht.0, F80::ONE);
                    let r = sin(x, c);
                    ours[0].add(r.value.unwrap(), r.flags, r.c1, hs.0, hs.2);
                    let r = cos(x, c);
                    ours[1].add(r.value.unwrap(), r.flags, r.c1, hc.0, hc.2);
                    let r = tan(x, c);
                    ours[2].add(r.value.unwrap(), r.flags, r.c1, ht.1, ht.2);
                    let r = sincos(x, c);
                    ours[3].add(r.sin, r.flags, r.c1, hsc.1, hsc.2);
                    ours[4].add(r.cos, r.flags, r.c1, hsc.0, hsc.2);
                    for (st, (f, h)) in model.iter_mut().zip([
                        (Func::Sin, (hs.0, hs.2)),
                        (Func::Cos, (hc.0, hc.2)),
                        (Func::Tan, (ht.1, ht.2)),
                    ]) {
                        let (v, flags, c1) = with_pi66(x, c, f);
                        st.add(v, flags, c1, h.0, h.1);
                    }
                    // Which result's rounding FSINCOS's C1 reports.
                    let (s1, c1) = (hs.2 & 0x200, hc.2 & 0x200);
                    if s1 != c1 {
                        sincos_c1.0 += u32::from(hsc.2 & 0x200 == c1);
                        sincos_c1.1 += u32::from(hsc.2 & 0x200 == s1);
                    }
                }
                let names = ["fsin", "fcos", "fptan", "fsincos sin", "fsincos cos"];
                for (name, st) in names.iter().zip(&ours) {
                    report.push(format!("{domain} {}", st.report(name)));
                    if hi == -1 || hi == -35 {
                        assert!(st.max_ulps <= 1, "{}", st.report(name));
                    }
                    assert_eq!(st.flags_unexplained, 0, "{}", st.report(name));
                }
                for (name, st) in names.iter().zip(&model) {
                    let line = format!("{domain} with the 66-bit pi: {}", st.report(name));
                    assert!(st.max_ulps <= 1, "{line}");
                    report.push(line);
                }
                report.push(format!(
                    "{domain} fsincos C1 as fcos's {} / as fsin's {} (where they differ)",
                    sincos_c1.0, sincos_c1.1
                ));
            }
            println!("{}", report.join("\n"));
        }

        /// An instruction compared over a domain: the inputs and both sides.
        struct Case {
            name: &'static str,
            input: fn(&mut Rng, usize) -> (F80, F80),
            ours: fn(F80, F80, Control) -> Result80,
            host: fn(F80, F80, u16) -> (F80, F80, u16),
        }

        /// Denormals, as `Rng::normal` does not make them.
        fn denormal(rng: &mut Rng, neg: bool) -> F80 {
            f(u16::from(neg) << 15, rng.next() >> (1 + rng.next() % 63))
        }

        #[test]
        fn log_exp_atan_match_host() {
            let cases = [
                Case {
                    name: "f2xm1 |x|<1",
                    input: |rng, i| (rng.normal(-40, -1, i % 2 == 0), F80::ONE),
                    ours: |x, _, c| f2xm1(x, c),
                    host: host_f2xm1,
                },
                Case {
                    name: "f2xm1 tiny and denormal x",
                    input: |rng, i| {
                        let x = if i % 3 == 0 {
                            denormal(rng, i % 2 == 0)
                        } else {
                            rng.normal(-16382, -41, i % 2 == 0)
                        };
                        (x, F80::ONE)
                    },
                    ours: |x, _, c| f2xm1(x, c),
                    host: host_f2xm1,
                },
                Case {
                    name: "fyl2x",
                    input: |rng, i| (rng.normal(-100, 100, false), rng.normal(-10, 10, i % 3 == 0)),
                    ours: fyl2x,
                    host: host_fyl2x,
                },
                Case {
                    name: "fyl2x x near 1",
                    input: |rng, i| {
                        let d = rng.next() >> (rng.next() % 64);
                        let x = if i % 2 == 0 {
                            f(0x3FFF, INT_BIT | d >> 1)
                        } else {
                            f(0x3FFE, !(d >> 1))
                        };
                        (x, rng.normal(-3, 3, i % 3 == 0))
                    },
                    ours: fyl2x,
                    host: host_fyl2x,
                },
                Case {
                    name: "fyl2x full range (over/underflow, denormals)",
                    input: |rng, i| {
                        let x = if i % 7 == 0 {
                            denormal(rng, false)
                        } else {
                            rng.normal(-16382, 16383, false)
                        };
                        let y = if i % 5 == 0 {
                            denormal(rng, i % 2 == 0)
                        } else {
                            rng.normal(-16382, 16383, i % 2 == 0)
                        };
                        (x, y)
                    },
                    ours: fyl2x,
                    host: host_fyl2x,
                },
                Case {
                    name: "fyl2xp1 |x|<1-sqrt2/2",
                    input: |rng, i| {
                        let mut x = rng.normal(-60, -2, i % 2 == 0);
                        if x.exponent() == 0x3FFD && x.mantissa > 0x95F6_1998_0C43_3812 {
                            x.mantissa = 0x95F6_1998_0C43_3812;
                        }
                        (x, rng.normal(-10, 10, i % 3 == 0))
                    },
                    ours: fyl2xp1,
                    host: host_fyl2xp1,
                },
                Case {
                    name: "fyl2xp1 tiny and denormal x, any y",
                    input: |rng, i| {
                        let x = if i % 3 == 0 {
                            denormal(rng, i % 2 == 0)
                        } else {
                            rng.normal(-16382, -60, i % 2 == 0)
                        };
                        (x, rng.normal(-16382, 16383, i % 5 == 0))
                    },
                    ours: fyl2xp1,
                    host: host_fyl2xp1,
                },
                Case {
                    name: "fpatan",
                    input: |rng, i| (rng.normal(-20, 20, i % 2 == 0), rng.normal(-20, 20, i % 3 == 0)),
                    ours: fpatan,
                    host: host_fpatan,
                },
                Case {
                    name: "fpatan full range",
                    input: |rng, i| {
                        let x = if i % 7 == 0 {
                            denormal(rng, i % 2 == 0)
                        } else {
                            rng.normal(-16382, 16383, i % 2 == 0)
                        };
                        (x, rng.normal(-16382, 16383, i % 3 == 0))
                    },
                    ours: fpatan,
                    host: host_fpatan,
                },
            ];
            let mut rng = Rng(0xC0FFEE);
            let mut report = Vec::new();
            for case in cases {
                let mut st = Stats::default();
                for i in 0..N {
                    let (x, y) = (case.input)(&mut rng, i);
                    let rc = rcs(i);
                    st.last = x;
                    let r = (case.ours)(x, y, cw(rc));
                    let h = (case.host)(x, y, 0x037F | (rc << 10));
                    st.add(r.value.unwrap(), r.flags, r.c1, h.0, h.2);
                }
                report.push(st.report(case.name));
                assert!(st.max_ulps <= 1, "{}", st.report(case.name));
                assert_eq!(st.flags_unexplained, 0, "{}", st.report(case.name));
            }
            println!("{}", report.join("\n"));
        }
    }
}
