//! The x87's arithmetic on 80-bit values (SDM Vol. 1, chapter 4 "Data
//! types" 4.2.2 and 4.8, chapter 8 "Programming with the x87 FPU" 8.1.5,
//! 8.2, 8.5 "x87 FPU floating-point exception conditions"; Vol. 2, each
//! instruction's "FPU flags affected" and "Floating-point exceptions").
//!
//! Every operation is a pure function of its operands and the control word:
//! no host floating point, so results are the same on every host (replay
//! depends on it). Values are computed with `rustc_apfloat` (a soft-float
//! library, chosen over Berkeley SoftFloat for being pure Rust with the
//! rounding mode an argument of every operation), wrapped here so that
//! precision control, tininess after rounding, the denormal-operand
//! exception, x87 NaN selection and unsupported encodings behave as the
//! x87 does.
//!
//! The contract with the instruction layer (`super`): an operation returns
//! what goes to its destination and which exceptions it detected. The caller
//! owns the stack, the tags, the status word and exception delivery.

/// Exception flags, at their bit positions in the status word.
pub mod exc {
    /// Invalid operation.
    pub const IE: u16 = 0x01;
    /// Denormal operand.
    pub const DE: u16 = 0x02;
    /// Zero divide.
    pub const ZE: u16 = 0x04;
    /// Overflow.
    pub const OE: u16 = 0x08;
    /// Underflow.
    pub const UE: u16 = 0x10;
    /// Precision (inexact result).
    pub const PE: u16 = 0x20;
    pub const ALL: u16 = 0x3F;
}

/// An x87 register value: the 80-bit extended format with its explicit
/// integer bit (bit 63 of `mantissa`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct F80 {
    pub mantissa: u64,
    /// Sign in bit 15, biased exponent (bias 16383) in bits 0-14.
    pub sign_exp: u16,
}

/// What FXAM reports of a value (the register is not empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Pseudo-NaN, pseudo-infinity, unnormal: encodings the x87 since the
    /// 387 refuses (IE when used).
    Unsupported,
    Nan,
    Normal,
    Infinity,
    Zero,
    /// Denormal or pseudo-denormal.
    Denormal,
}

/// The control word's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control(pub u16);

impl Control {
    /// Exception masks, bit positions as in [`exc`].
    pub fn masks(self) -> u16 {
        self.0 & exc::ALL
    }
    /// PC: 0 single (24 bits), 2 double (53), 3 extended (64); 1 reserved,
    /// treated as extended... (the implementation documents its choice).
    pub fn precision(self) -> u16 {
        (self.0 >> 8) & 3
    }
    /// RC: 0 nearest even, 1 down, 2 up, 3 toward zero.
    pub fn rounding(self) -> u16 {
        (self.0 >> 10) & 3
    }
}

/// The result of an operation whose destination is a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Result80 {
    /// What is written: `None` when an unmasked IE, DE or ZE suppresses the
    /// write (SDM 8.5: the destination is left unchanged). With OE or UE
    /// unmasked it is the result with its exponent adjusted by 24576 (SDM
    /// 8.5.4, 8.5.5); otherwise the masked response.
    pub value: Option<F80>,
    /// Every exception detected (the caller ORs them into the status word).
    pub flags: u16,
    /// C1 after the operation: set when the result was rounded up.
    pub c1: bool,
}

/// The result of a store to memory (formats narrower than the register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored<T> {
    /// What is written: `None` when an unmasked exception suppresses the
    /// store (for memory destinations that includes OE and UE).
    pub value: Option<T>,
    pub flags: u16,
    pub c1: bool,
}

/// The constants FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2, FLDZ load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Constant {
    One,
    Log2Ten,
    Log2E,
    Pi,
    Log10Two,
    LnTwo,
    Zero,
}
