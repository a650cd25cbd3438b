//! Shifts and rotates: SHL/SAL, SHR, SAR, ROL, ROR, RCL, RCR, SHLD, SHRD
//! (SDM Vol. 2B "SAL/SAR/SHL/SHR", "RCL/RCR/ROL/ROR", "SHLD", "SHRD").
//!
//! The count is masked to 5 bits (the 80286 and every later processor do this);
//! a masked count of zero changes no flags. Where the SDM leaves OF or AF
//! undefined, the one-bit-count formula is applied and AF is cleared.

use iced_x86::{Instruction, Mnemonic};

use super::{flags, op_size, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags::{CF, OF, STATUS};
use crate::cpu::{Cpu, Fault, Result};

/// A single-operand shift or rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShiftOp {
    Rol,
    Ror,
    Rcl,
    Rcr,
    /// SHL and SAL (the same operation).
    Shl,
    Shr,
    Sar,
}

impl ShiftOp {
    pub fn of(m: Mnemonic) -> Option<ShiftOp> {
        Some(match m {
            Mnemonic::Rol => ShiftOp::Rol,
            Mnemonic::Ror => ShiftOp::Ror,
            Mnemonic::Rcl => ShiftOp::Rcl,
            Mnemonic::Rcr => ShiftOp::Rcr,
            Mnemonic::Shl | Mnemonic::Sal => ShiftOp::Shl,
            Mnemonic::Shr => ShiftOp::Shr,
            Mnemonic::Sar => ShiftOp::Sar,
            _ => return None,
        })
    }
}

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let m = inst.mnemonic();
    if matches!(m, Mnemonic::Shld | Mnemonic::Shrd) {
        return double_shift(cpu, bus, inst);
    }
    let op = ShiftOp::of(m).ok_or(Fault::ud())?;
    let size = op_size(inst, 0);
    let a = cpu.read_op(bus, inst, 0, size)?;
    let count = cpu.read_op(bus, inst, 1, 1)?;
    // Still a read-modify-write when the count is zero: a fault on the write
    // must be raised.
    let (r, f) = compute(op, a, count, cpu.state.eflags, size);
    cpu.write_op(bus, inst, 0, size, r)?;
    cpu.set_status(f);
    Ok(Flow::Next)
}

/// Shifts or rotates `a` (`size` bytes) by `count` (masked to 5 bits here)
/// with the flags `eflags` as input; returns the result and the new status
/// flags (unchanged for a masked count of zero).
#[inline(always)]
pub fn compute(op: ShiftOp, a: u32, count: u32, eflags: u32, size: u8) -> (u32, u32) {
    let count = count & 0x1F;
    if count == 0 {
        return (a, eflags & STATUS);
    }
    let bits = u32::from(size) * 8;
    let msb = |v: u32| (v >> (bits - 1)) & 1;
    let cf_in = eflags & CF;
    let old = eflags;
    let (r, cf, of, arith) = match op {
        ShiftOp::Shl => {
            let wide = u64::from(a) << count;
            let r = wide as u32 & flags::mask(size);
            let cf = (wide >> bits) as u32 & 1;
            (r, cf, msb(r) ^ cf, true)
        }
        ShiftOp::Shr => {
            let r = (u64::from(a) >> count) as u32;
            let before_last = (u64::from(a) >> (count - 1)) as u32;
            let cf = before_last & 1;
            // OF = MSB(result) XOR MSB(operand before the last shift step): for a
            // one-bit shift the SDM's MSB(original), zero for longer shifts.
            (r, cf, msb(r) ^ msb(before_last), true)
        }
        ShiftOp::Sar => {
            let s = i64::from(flags::sext(a, size) as i32);
            let r = (s >> count) as u32 & flags::mask(size);
            let cf = (s >> (count - 1)) as u32 & 1;
            (r, cf, 0, true)
        }
        ShiftOp::Rol => {
            let c = count % bits;
            let r = if c == 0 {
                a
            } else {
                ((a << c) | (a >> (bits - c))) & flags::mask(size)
            };
            let cf = r & 1;
            (r, cf, msb(r) ^ cf, false)
        }
        ShiftOp::Ror => {
            let c = count % bits;
            let r = if c == 0 {
                a
            } else {
                ((a >> c) | (a << (bits - c))) & flags::mask(size)
            };
            let cf = msb(r);
            (r, cf, msb(r) ^ ((r >> (bits - 2)) & 1), false)
        }
        ShiftOp::Rcl => {
            let c = if bits == 32 { count } else { count % (bits + 1) };
            // Rotate the (bits+1)-wide value CF:dest.
            let wide = (u64::from(cf_in) << bits) | u64::from(a);
            let w = u64::from(bits) + 1;
            let c = u64::from(c);
            let rot = if c == 0 {
                wide
            } else {
                ((wide << c) | (wide >> (w - c))) & ((1u64 << w) - 1)
            };
            let r = rot as u32 & flags::mask(size);
            let cf = (rot >> bits) as u32 & 1;
            (r, cf, msb(r) ^ cf, false)
        }
        ShiftOp::Rcr => {
            let c = if bits == 32 { count } else { count % (bits + 1) };
            let wide = (u64::from(cf_in) << bits) | u64::from(a);
            let w = u64::from(bits) + 1;
            let c = u64::from(c);
            let rot = if c == 0 {
                wide
            } else {
                ((wide >> c) | (wide << (w - c))) & ((1u64 << w) - 1)
            };
            let r = rot as u32 & flags::mask(size);
            let cf = (rot >> bits) as u32 & 1;
            (r, cf, msb(r) ^ ((r >> (bits - 2)) & 1), false)
        }
    };
    let mut f = if arith {
        flags::szp(r, size)
    } else {
        old & STATUS & !(CF | OF)
    };
    if cf != 0 {
        f |= CF;
    }
    if of != 0 {
        f |= OF;
    }
    (r, f)
}

fn double_shift<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let size = op_size(inst, 0);
    let dest = cpu.read_op(bus, inst, 0, size)?;
    let src = cpu.read_op(bus, inst, 1, size)?;
    let count = cpu.read_op(bus, inst, 2, 1)?;
    match double(inst.mnemonic() == Mnemonic::Shld, dest, src, count, size) {
        Some((r, f)) => {
            cpu.write_op(bus, inst, 0, size, r)?;
            cpu.set_status(f);
        }
        None => cpu.write_op(bus, inst, 0, size, dest)?,
    }
    Ok(Flow::Next)
}

/// SHLD (`left`) or SHRD of `dest` (`size` bytes) with bits from `src` by
/// `count` (masked to 5 bits here): the result and the new status flags, or
/// `None` for a masked count of zero, which changes nothing.
#[inline]
pub fn double(left: bool, dest: u32, src: u32, count: u32, size: u8) -> Option<(u32, u32)> {
    let count = count & 0x1F;
    if count == 0 {
        return None;
    }
    let bits = u32::from(size) * 8;
    let m = flags::mask(size);
    // Shift the concatenation dest:src (SHLD) or src:dest (SHRD); counts above the
    // operand size (undefined for 16-bit operands) keep shifting in the source.
    // 128 bits: for 32-bit operands the carry sits at bit 64.
    let (dest_w, src_w) = (u128::from(dest), u128::from(src));
    let (r, cf) = if left {
        let wide = (dest_w << bits) | src_w;
        let (wide, c) = if count > bits {
            ((wide << bits) | dest_w, count - bits)
        } else {
            (wide, count)
        };
        let shifted = wide << c;
        let r = (shifted >> bits) as u32 & m;
        let cf = (shifted >> (2 * bits)) as u32 & 1;
        (r, cf)
    } else {
        let wide = (src_w << bits) | dest_w;
        let wide = if count > bits {
            (dest_w << (2 * bits)) | wide
        } else {
            wide
        };
        let r = (wide >> count) as u32 & m;
        let cf = (wide >> (count - 1)) as u32 & 1;
        (r, cf)
    };
    let mut f = flags::szp(r, size);
    if cf != 0 {
        f |= CF;
    }
    if (r ^ dest) & flags::sign_bit(size) != 0 {
        f |= OF;
    }
    Some((r, f))
}

#[cfg(test)]
mod tests {
    use crate::cpu::state::flags::{CF, OF, PF, SF, ZF};
    use crate::cpu::state::reg::{EAX, EBX, ECX};
    use crate::exec::testutil::*;

    // SDM Vol. 2B, SAL/SHL: CF gets the last bit shifted out; OF (1-bit shifts) is
    // MSB(result) XOR CF; SF, ZF, PF per result.
    #[test]
    fn shl_by_one_sets_of() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x4000_0000);
        assert_retired(m.exec(&[0xD1, 0xE0])); // shl eax, 1
        assert_eq!(m.reg(EAX), 0x8000_0000);
        assert_eq!(m.status() & (CF | OF | SF | ZF | PF), OF | SF | PF);
    }

    // SDM Vol. 2B, SAL/SHL: "If the count is 0, the flags are not affected."
    #[test]
    fn shift_by_zero_changes_nothing() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x1234).set_flags(CF | OF | ZF);
        assert_retired(m.exec(&[0xC1, 0xE0, 0x00])); // shl eax, 0
        assert_eq!(m.reg(EAX), 0x1234);
        assert_eq!(m.status(), CF | OF | ZF);
        // A count of 32 is masked to 0 too.
        m.set_reg(ECX, 32);
        assert_retired(m.exec(&[0xD3, 0xE0])); // shl eax, cl
        assert_eq!(m.reg(EAX), 0x1234);
        assert_eq!(m.status(), CF | OF | ZF);
    }

    // SDM Vol. 2B, SAL/SHL: the count is masked to 5 bits.
    #[test]
    fn shift_count_masked() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 1).set_reg(ECX, 33);
        assert_retired(m.exec(&[0xD3, 0xE0])); // shl eax, cl (33 -> 1)
        assert_eq!(m.reg(EAX), 2);
        m.set_reg(EAX, 3);
        assert_retired(m.exec(&[0xC1, 0xE0, 31])); // shl eax, 31
        assert_eq!(m.reg(EAX), 0x8000_0000);
        assert_eq!(m.status() & CF, CF, "bit 1 was shifted out last");
    }

    // SDM Vol. 2B, SHR: OF (1-bit) = MSB of the original operand. SAR: OF = 0,
    // the sign fills in.
    #[test]
    fn shr_sar() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x8000_0001);
        assert_retired(m.exec(&[0xD1, 0xE8])); // shr eax, 1
        assert_eq!(m.reg(EAX), 0x4000_0000);
        assert_eq!(m.status() & (CF | OF), CF | OF);

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x8000_0001).set_flags(OF);
        assert_retired(m.exec(&[0xD1, 0xF8])); // sar eax, 1
        assert_eq!(m.reg(EAX), 0xC000_0000);
        assert_eq!(m.status() & (CF | OF | SF), CF | SF);
        assert_retired(m.exec(&[0xC1, 0xF8, 31])); // sar eax, 31
        assert_eq!(m.reg(EAX), 0xFFFF_FFFF);
        // Byte SAR by 7 of a positive value.
        m.set_reg(EAX, 0x7F);
        assert_retired(m.exec(&[0xC0, 0xF8, 7])); // sar al, 7
        assert_eq!(m.reg(EAX) & 0xFF, 0);
        assert_eq!(m.status() & (CF | ZF), CF | ZF);
    }

    // SDM Vol. 2B, RCL/RCR/ROL/ROR: only CF and OF are affected; OF (1-bit) is
    // MSB(result) XOR CF for left rotates, XOR of the two top bits for right rotates.
    #[test]
    fn rol_ror() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x8000_0001).set_flags(ZF | SF);
        assert_retired(m.exec(&[0xD1, 0xC0])); // rol eax, 1
        assert_eq!(m.reg(EAX), 3);
        assert_eq!(m.status(), CF | OF | ZF | SF, "SF and ZF untouched");

        let mut m = Machine::flat32();
        m.set_reg(EAX, 1);
        assert_retired(m.exec(&[0xD1, 0xC8])); // ror eax, 1
        assert_eq!(m.reg(EAX), 0x8000_0000);
        assert_eq!(m.status() & (CF | OF), CF | OF);

        // Byte rotate by 8: the value comes back, CF = its low (ROL) bit.
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x81);
        assert_retired(m.exec(&[0xC0, 0xC0, 8])); // rol al, 8
        assert_eq!(m.reg(EAX), 0x81);
        assert_eq!(m.status() & CF, CF);
    }

    // SDM Vol. 2B, RCL/RCR: rotate through CF; byte counts are taken modulo 9
    // (16-bit modulo 17), so a count of 9 leaves AL and CF unchanged.
    #[test]
    fn rcl_rcr_through_carry() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x81).set_flags(CF);
        assert_retired(m.exec(&[0xC0, 0xD0, 9])); // rcl al, 9
        assert_eq!(m.reg(EAX), 0x81);
        assert_eq!(m.status() & CF, CF);

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x81);
        assert_retired(m.exec(&[0xC0, 0xD0, 8])); // rcl al, 8 = rcr al, 1 on 9 bits
        assert_eq!(m.reg(EAX), 0x40);
        assert_eq!(m.status() & CF, CF);

        let mut m = Machine::flat32();
        m.set_reg(EAX, 2).set_flags(CF);
        assert_retired(m.exec(&[0xD1, 0xD8])); // rcr eax, 1
        assert_eq!(m.reg(EAX), 0x8000_0001);
        assert_eq!(m.status() & (CF | OF), OF, "OF = MSB(dest) XOR CF before");

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x8000_0000);
        assert_retired(m.exec(&[0xD1, 0xD0])); // rcl eax, 1
        assert_eq!(m.reg(EAX), 0);
        assert_eq!(m.status() & (CF | OF), CF | OF);

        // 16-bit: count 17 is a full turn.
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x8001).set_reg(ECX, 17);
        assert_retired(m.exec(&[0x66, 0xD3, 0xD0])); // rcl ax, cl
        assert_eq!(m.reg(EAX), 0x8001);
        assert_eq!(m.status() & CF, 0);
    }

    // SDM Vol. 2B, SHLD/SHRD: bits shift in from the source; CF is the last bit out;
    // a masked count of 0 changes nothing.
    #[test]
    fn shld_shrd() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x1234_5678).set_reg(EBX, 0x9ABC_DEF0);
        assert_retired(m.exec(&[0x0F, 0xA4, 0xD8, 4])); // shld eax, ebx, 4
        assert_eq!(m.reg(EAX), 0x2345_6789);
        assert_eq!(m.status() & CF, CF);
        assert_eq!(m.reg(EBX), 0x9ABC_DEF0, "source unchanged");

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x1234_5678).set_reg(EBX, 0x9ABC_DEF0);
        assert_retired(m.exec(&[0x0F, 0xAC, 0xD8, 4])); // shrd eax, ebx, 4
        assert_eq!(m.reg(EAX), 0x0123_4567);
        assert_eq!(m.status() & CF, CF);

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x8000_0000).set_reg(EBX, 0);
        assert_retired(m.exec(&[0x0F, 0xA4, 0xD8, 1])); // shld eax, ebx, 1
        assert_eq!(m.reg(EAX), 0);
        assert_eq!(m.status() & (CF | OF | ZF), CF | OF | ZF);

        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x1234).set_reg(ECX, 64).set_flags(SF);
        assert_retired(m.exec(&[0x0F, 0xA5, 0xD8])); // shld eax, ebx, cl (64 -> 0)
        assert_eq!(m.reg(EAX), 0x1234);
        assert_eq!(m.status(), SF);
    }

    #[test]
    fn shift_memory_operand() {
        let mut m = Machine::flat32();
        m.w32(DATA, 0x0000_00F0);
        m.set_reg(EBX, DATA);
        assert_retired(m.exec(&[0xC1, 0x23, 4])); // shl dword [ebx], 4
        assert_eq!(m.r32(DATA), 0xF00);
    }

    #[test]
    fn real_mode_shl_word() {
        let mut m = Machine::real16();
        m.set_reg(EAX, 0x0001_8001);
        assert_retired(m.exec(&[0xD1, 0xE0])); // shl ax, 1
        assert_eq!(m.reg(EAX), 0x0001_0002);
        assert_eq!(m.status() & (CF | OF), CF | OF);
    }
}
