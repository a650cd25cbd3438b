//! Multiplication and division: MUL, IMUL (one-, two- and three-operand forms),
//! DIV, IDIV (SDM Vol. 2A "IMUL", "IDIV", "DIV"; Vol. 2B "MUL").
//!
//! Flags the SDM leaves undefined (SF, ZF, AF, PF after MUL/IMUL; all six after
//! DIV/IDIV) are given deterministic values: SF/ZF/PF of the low result, AF clear
//! after multiplication; unchanged after division.

use iced_x86::{Instruction, Mnemonic};

use super::{flags, op_size, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags::{CF, OF};
use crate::cpu::state::reg::{EAX, EDX};
use crate::cpu::{vector, Cpu, Fault, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let m = inst.mnemonic();
    if m == Mnemonic::Imul && inst.op_count() > 1 {
        return imul_multi(cpu, bus, inst);
    }
    let size = op_size(inst, 0);
    let src = cpu.read_op(bus, inst, 0, size)?;
    let bits = u32::from(size) * 8;
    let eax = cpu.state.regs[EAX];
    let edx = cpu.state.regs[EDX];
    // The implicit dividend / multiplicand: AL, AX or EAX (with AH, DX, EDX above).
    let acc = eax & flags::mask(size);
    let hi = match size {
        1 => (eax >> 8) & 0xFF,
        2 => edx & 0xFFFF,
        _ => edx,
    };
    let (lo_out, hi_out) = match m {
        Mnemonic::Mul => {
            let p = u64::from(acc) * u64::from(src);
            let lo = (p as u32) & flags::mask(size);
            let high = (p >> bits) as u32 & flags::mask(size);
            let f = flags::szp(lo, size) | if high != 0 { CF | OF } else { 0 };
            cpu.set_status(f);
            (lo, high)
        }
        Mnemonic::Imul => {
            let p = i64::from(flags::sext(acc, size) as i32) * i64::from(flags::sext(src, size) as i32);
            let lo = (p as u32) & flags::mask(size);
            let high = (p >> bits) as u32 & flags::mask(size);
            let fits = i64::from(flags::sext(lo, size) as i32) == p;
            let f = flags::szp(lo, size) | if fits { 0 } else { CF | OF };
            cpu.set_status(f);
            (lo, high)
        }
        Mnemonic::Div => {
            if src == 0 {
                return Err(Fault::new(vector::DE));
            }
            let dividend = (u64::from(hi) << bits) | u64::from(acc);
            let q = dividend / u64::from(src);
            let r = dividend % u64::from(src);
            if q > u64::from(flags::mask(size)) {
                return Err(Fault::new(vector::DE));
            }
            (q as u32, r as u32)
        }
        _ => {
            // IDIV
            if src == 0 {
                return Err(Fault::new(vector::DE));
            }
            let dividend = ((u64::from(hi) << bits) | u64::from(acc)) as i64;
            let dividend = (dividend << (64 - 2 * bits)) >> (64 - 2 * bits);
            let divisor = i64::from(flags::sext(src, size) as i32);
            let q = dividend.wrapping_div(divisor);
            let r = dividend.wrapping_rem(divisor);
            let min = -(1i64 << (bits - 1));
            let max = (1i64 << (bits - 1)) - 1;
            if q < min || q > max || (dividend == i64::MIN && divisor == -1) {
                return Err(Fault::new(vector::DE));
            }
            (q as u32 & flags::mask(size), r as u32 & flags::mask(size))
        }
    };
    match size {
        1 => cpu.state.regs[EAX] = (eax & !0xFFFF) | (hi_out << 8) | lo_out,
        2 => {
            cpu.state.regs[EAX] = (eax & !0xFFFF) | lo_out;
            cpu.state.regs[EDX] = (edx & !0xFFFF) | hi_out;
        }
        _ => {
            cpu.state.regs[EAX] = lo_out;
            cpu.state.regs[EDX] = hi_out;
        }
    }
    Ok(Flow::Next)
}

/// IMUL r, r/m and IMUL r, r/m, imm: the product truncated to the destination.
fn imul_multi<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let size = op_size(inst, 0);
    let (a, b) = if inst.op_count() == 3 {
        (cpu.read_op(bus, inst, 1, size)?, cpu.read_op(bus, inst, 2, size)?)
    } else {
        (cpu.read_op(bus, inst, 0, size)?, cpu.read_op(bus, inst, 1, size)?)
    };
    let p = i64::from(flags::sext(a, size) as i32) * i64::from(flags::sext(b, size) as i32);
    let lo = (p as u32) & flags::mask(size);
    let fits = i64::from(flags::sext(lo, size) as i32) == p;
    cpu.set_status(flags::szp(lo, size) | if fits { 0 } else { CF | OF });
    cpu.write_op(bus, inst, 0, size, lo)?;
    Ok(Flow::Next)
}
