//! Arithmetic status flag computation shared by every instruction family
//! (SDM Vol. 1, 3.4.3.1 "Status flags", and appendix A "EFLAGS cross-reference").

use crate::cpu::state::flags::{AF, CF, OF, PF, SF, ZF};

#[inline(always)]
pub fn mask(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

#[inline(always)]
pub fn sign_bit(size: u8) -> u32 {
    1 << (u32::from(size) * 8 - 1)
}

/// Sign-extends the low `size` bytes of `v` to 32 bits.
#[inline(always)]
pub fn sext(v: u32, size: u8) -> u32 {
    match size {
        1 => v as u8 as i8 as i32 as u32,
        2 => v as u16 as i16 as i32 as u32,
        _ => v,
    }
}

/// PF: set when the low byte has an even number of one bits.
#[inline(always)]
pub fn parity(v: u32) -> u32 {
    if (v as u8).count_ones() & 1 == 0 {
        PF
    } else {
        0
    }
}

/// SF, ZF and PF of a result.
#[inline(always)]
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
#[inline(always)]
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
#[inline(always)]
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
#[inline(always)]
pub fn logic(r: u32, size: u8) -> u32 {
    szp(r, size)
}

/// Evaluates a condition code (the low nibble of Jcc/SETcc/CMOVcc opcodes;
/// SDM Vol. 1, appendix B).
#[inline(always)]
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

    // SDM Vol. 1, 3.4.3.1: PF is set when the low byte has an even number of ones.
    #[test]
    fn parity_and_szp() {
        assert_eq!(parity(0), PF);
        assert_eq!(parity(0x0103), PF, "only the low byte counts");
        assert_eq!(parity(0x07), 0);
        assert_eq!(szp(0x8000, 2), SF | PF);
        assert_eq!(szp(0x1_0000, 2), ZF | PF, "bits above the size are ignored");
        assert_eq!(sext(0x80, 1), 0xFFFF_FF80);
        assert_eq!(sext(0x7FFF, 2), 0x7FFF);
    }

    // SDM Vol. 1, appendix B, table B-1: every condition code, checked through
    // SETcc (0F 90+cc) on the reference engine against the table's definitions.
    #[test]
    fn all_condition_codes_through_setcc() {
        use crate::cpu::state::reg::EAX;
        use crate::exec::testutil::{assert_retired, Machine};
        let combos = [0, CF, ZF, SF, OF, PF, CF | ZF, SF | OF, ZF | SF, ZF | OF, CF | PF | SF];
        for f in combos {
            let (cf, zf, sf, of, pf) = (f & CF != 0, f & ZF != 0, f & SF != 0, f & OF != 0, f & PF != 0);
            let table = [
                of,
                !of,
                cf,
                !cf,
                zf,
                !zf,
                cf || zf,
                !cf && !zf,
                sf,
                !sf,
                pf,
                !pf,
                sf != of,
                sf == of,
                zf || sf != of,
                !zf && sf == of,
            ];
            for (cc, want) in table.iter().enumerate() {
                let mut m = Machine::flat32();
                m.set_flags(f).set_reg(EAX, 0xFF);
                assert_retired(m.exec(&[0x0F, 0x90 + cc as u8, 0xC0])); // setcc al
                assert_eq!(m.reg(EAX), u32::from(*want), "cc {cc:x} with flags {f:#x}");
                assert_eq!(condition(f, cc as u8), *want);
            }
        }
    }

    #[test]
    fn conditions() {
        assert!(condition(ZF, 0x4)); // E
        assert!(!condition(ZF, 0x5)); // NE
        assert!(condition(SF, 0xC)); // L: SF != OF
        assert!(condition(SF | OF, 0xD)); // GE
    }
}
