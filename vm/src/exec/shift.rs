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
use crate::cpu::{Cpu, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let m = inst.mnemonic();
    if matches!(m, Mnemonic::Shld | Mnemonic::Shrd) {
        return double_shift(cpu, bus, inst);
    }
    let size = op_size(inst, 0);
    let bits = u32::from(size) * 8;
    let a = cpu.read_op(bus, inst, 0, size)?;
    let count = cpu.read_op(bus, inst, 1, 1)? & 0x1F;
    if count == 0 {
        // Still a read-modify-write: a fault on the write must be raised.
        cpu.write_op(bus, inst, 0, size, a)?;
        return Ok(Flow::Next);
    }
    let msb = |v: u32| (v >> (bits - 1)) & 1;
    let cf_in = u32::from(cpu.flag(CF));
    let old = cpu.state.eflags;
    let (r, cf, of, arith) = match m {
        Mnemonic::Shl | Mnemonic::Sal => {
            let wide = u64::from(a) << count;
            let r = wide as u32 & flags::mask(size);
            let cf = (wide >> bits) as u32 & 1;
            (r, cf, msb(r) ^ cf, true)
        }
        Mnemonic::Shr => {
            let r = (u64::from(a) >> count) as u32;
            let before_last = (u64::from(a) >> (count - 1)) as u32;
            let cf = before_last & 1;
            // OF = MSB(result) XOR MSB(operand before the last shift step): for a
            // one-bit shift the SDM's MSB(original), zero for longer shifts.
            (r, cf, msb(r) ^ msb(before_last), true)
        }
        Mnemonic::Sar => {
            let s = i64::from(flags::sext(a, size) as i32);
            let r = (s >> count) as u32 & flags::mask(size);
            let cf = (s >> (count - 1)) as u32 & 1;
            (r, cf, 0, true)
        }
        Mnemonic::Rol => {
            let c = count % bits;
            let r = if c == 0 {
                a
            } else {
                ((a << c) | (a >> (bits - c))) & flags::mask(size)
            };
            let cf = r & 1;
            (r, cf, msb(r) ^ cf, false)
        }
        Mnemonic::Ror => {
            let c = count % bits;
            let r = if c == 0 {
                a
            } else {
                ((a >> c) | (a << (bits - c))) & flags::mask(size)
            };
            let cf = msb(r);
            (r, cf, msb(r) ^ ((r >> (bits - 2)) & 1), false)
        }
        Mnemonic::Rcl => {
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
        _ => {
            // RCR
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
    cpu.write_op(bus, inst, 0, size, r)?;
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
    cpu.set_status(f);
    Ok(Flow::Next)
}

fn double_shift<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let size = op_size(inst, 0);
    let bits = u32::from(size) * 8;
    let dest = cpu.read_op(bus, inst, 0, size)?;
    let src = cpu.read_op(bus, inst, 1, size)?;
    let count = cpu.read_op(bus, inst, 2, 1)? & 0x1F;
    if count == 0 {
        cpu.write_op(bus, inst, 0, size, dest)?;
        return Ok(Flow::Next);
    }
    let m = flags::mask(size);
    // Shift the concatenation dest:src (SHLD) or src:dest (SHRD); counts above the
    // operand size (undefined for 16-bit operands) keep shifting in the source.
    let (r, cf) = if inst.mnemonic() == Mnemonic::Shld {
        let wide = (u64::from(dest) << bits) | u64::from(src);
        let wide = if count > bits {
            (wide << bits) | u64::from(dest)
        } else {
            wide
        };
        let c = if count > bits { count - bits } else { count };
        let shifted = wide << c;
        let r = (shifted >> bits) as u32 & m;
        let cf = (shifted >> (2 * bits)) as u32 & 1;
        (r, cf)
    } else {
        let wide = (u64::from(src) << bits) | u64::from(dest);
        let wide = if count > bits {
            (u64::from(dest) << (2 * bits)) | wide
        } else {
            wide
        };
        let r = (wide >> count) as u32 & m;
        let cf = (wide >> (count - 1)) as u32 & 1;
        (r, cf)
    };
    cpu.write_op(bus, inst, 0, size, r)?;
    let mut f = flags::szp(r, size);
    if cf != 0 {
        f |= CF;
    }
    if (r ^ dest) & flags::sign_bit(size) != 0 {
        f |= OF;
    }
    cpu.set_status(f);
    Ok(Flow::Next)
}
