//! Arithmetic status flag computation shared by every instruction family
//! (SDM Vol. 1, 3.4.3.1 "Status flags", and appendix A "EFLAGS cross-reference").

use crate::cpu::state::flags::{AF, CF, OF, PF, SF, ZF};

#[inline]
pub fn mask(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

#[inline]
pub fn sign_bit(size: u8) -> u32 {
    1 << (u32::from(size) * 8 - 1)
}

/// Sign-extends the low `size` bytes of `v` to 32 bits.
#[inline]
pub fn sext(v: u32, size: u8) -> u32 {
    match size {
        1 => v as u8 as i8 as i32 as u32,
        2 => v as u16 as i16 as i32 as u32,
        _ => v,
    }
}

/// PF: set when the low byte has an even number of one bits.
#[inline]
pub fn parity(v: u32) -> u32 {
    if (v as u8).count_ones() & 1 == 0 {
        PF
    } else {
        0
    }
}

/// SF, ZF and PF of a result.
#[inline]
pub fn szp(result: u32, size: u8) -> u32 {
    let r = result & mask(size);
    let mut f = parity(r);
    if r == 0 {
        f |= ZF;
    }
    if r & sign_bit(size) != 0 {
        f |= SF;
    }
    f
}

/// ADD/ADC: returns the result and the six status flags.
#[inline]
pub fn add(a: u32, b: u32, carry: u32, size: u8) -> (u32, u32) {
    let m = mask(size);
    let wide = u64::from(a & m) + u64::from(b & m) + u64::from(carry);
    let r = (wide as u32) & m;
    let mut f = szp(r, size);
    if wide > u64::from(m) {
        f |= CF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    if (a ^ r) & (b ^ r) & sign_bit(size) != 0 {
        f |= OF;
    }
    (r, f)
}

/// SUB/SBB/CMP/NEG: returns the result and the six status flags.
#[inline]
pub fn sub(a: u32, b: u32, borrow: u32, size: u8) -> (u32, u32) {
    let m = mask(size);
    let r = (a.wrapping_sub(b).wrapping_sub(borrow)) & m;
    let mut f = szp(r, size);
    if u64::from(a & m) < u64::from(b & m) + u64::from(borrow) {
        f |= CF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    if (a ^ b) & (a ^ r) & sign_bit(size) != 0 {
        f |= OF;
    }
    (r, f)
}

/// AND/OR/XOR/TEST: CF and OF cleared, AF cleared (undefined in the SDM).
#[inline]
pub fn logic(r: u32, size: u8) -> u32 {
    szp(r, size)
}

/// Evaluates a condition code (the low nibble of Jcc/SETcc/CMOVcc opcodes;
/// SDM Vol. 1, appendix B).
#[inline]
pub fn condition(eflags: u32, cc: u8) -> bool {
    let f = |b: u32| eflags & b != 0;
    let r = match cc >> 1 {
        0 => f(OF),
        1 => f(CF),
        2 => f(ZF),
        3 => f(CF) || f(ZF),
        4 => f(SF),
        5 => f(PF),
        6 => f(SF) != f(OF),
        _ => f(ZF) || (f(SF) != f(OF)),
    };
    r != (cc & 1 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_carry_overflow() {
        // 0x7F + 1 = 0x80: OF and SF, AF (carry out of bit 3), no CF.
        let (r, f) = add(0x7F, 1, 0, 1);
        assert_eq!(r, 0x80);
        assert_eq!(f, OF | SF | AF);
        // 0xFF + 1 = 0: CF ZF AF PF.
        let (r, f) = add(0xFF, 1, 0, 1);
        assert_eq!(r, 0);
        assert_eq!(f, CF | ZF | AF | PF);
    }

    #[test]
    fn sub_borrow() {
        let (r, f) = sub(0, 1, 0, 2);
        assert_eq!(r, 0xFFFF);
        assert_eq!(f, CF | SF | AF | PF);
        let (r, f) = sub(0x8000_0000, 1, 0, 4);
        assert_eq!(r, 0x7FFF_FFFF);
        assert_eq!(f & OF, OF);
    }

    #[test]
    fn conditions() {
        assert!(condition(ZF, 0x4)); // E
        assert!(!condition(ZF, 0x5)); // NE
        assert!(condition(SF, 0xC)); // L: SF != OF
        assert!(condition(SF | OF, 0xD)); // GE
    }
}
