//! Bit test and scan: BT, BTS, BTR, BTC, BSF, BSR (SDM Vol. 2A "BT", "BTC",
//! "BTR", "BTS", "BSF", "BSR"; Vol. 1, 7.3.7 "Bit and byte instructions").
//!
//! Undefined flags are left unchanged; BSF/BSR leave the destination unchanged
//! when the source is zero, as current processors do.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{addr16, op_size, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags::{CF, ZF};
use crate::cpu::{Cpu, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let m = inst.mnemonic();
    let size = op_size(inst, 0);
    if matches!(m, Mnemonic::Bsf | Mnemonic::Bsr) {
        let src = cpu.read_op(bus, inst, 1, size)?;
        if src == 0 {
            cpu.state.eflags |= ZF;
        } else {
            cpu.state.eflags &= !ZF;
            let idx = if m == Mnemonic::Bsf {
                src.trailing_zeros()
            } else {
                31 - src.leading_zeros()
            };
            cpu.write_op(bus, inst, 0, size, idx)?;
        }
        return Ok(Flow::Next);
    }
    let bits = u32::from(size) * 8;
    let offset = cpu.read_op(bus, inst, 1, size)?;
    let memory_with_reg = inst.op0_kind() == OpKind::Memory && inst.op1_kind() == OpKind::Register;
    let (value, bit, mem_at) = if memory_with_reg {
        // A register bit offset addresses memory beyond the operand (signed).
        let soff = super::flags::sext(offset, size) as i32;
        let (seg, ea) = cpu.mem_operand(inst);
        let delta = (soff >> (bits.trailing_zeros())) * i32::from(size);
        let mut addr = ea.wrapping_add(delta as u32);
        if addr16(inst) {
            addr &= 0xFFFF;
        }
        let v = cpu.read_mem(bus, seg, addr, size)?;
        (v, (soff as u32) & (bits - 1), Some((seg, addr)))
    } else {
        (cpu.read_op(bus, inst, 0, size)?, offset & (bits - 1), None)
    };
    let old = (value >> bit) & 1;
    let new = match m {
        Mnemonic::Bts => Some(value | (1 << bit)),
        Mnemonic::Btr => Some(value & !(1 << bit)),
        Mnemonic::Btc => Some(value ^ (1 << bit)),
        _ => None,
    };
    if let Some(v) = new {
        match mem_at {
            Some((seg, addr)) => cpu.write_mem(bus, seg, addr, size, v)?,
            None => cpu.write_op(bus, inst, 0, size, v)?,
        }
    }
    if old != 0 {
        cpu.state.eflags |= CF;
    } else {
        cpu.state.eflags &= !CF;
    }
    Ok(Flow::Next)
}
