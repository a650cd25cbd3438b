//! Bit test and scan: BT, BTS, BTR, BTC, BSF, BSR (SDM Vol. 2A "BT", "BTC",
//! "BTR", "BTS", "BSF", "BSR"; Vol. 1, 7.3.7 "Bit and byte instructions").
//!
//! Undefined flags are left unchanged; BSF/BSR leave the destination unchanged
//! when the source is zero, as current processors do.
//!
//! F3 0F BC and F3 0F BD are TZCNT and LZCNT only on processors with BMI1
//! and LZCNT; ours has neither, so they execute as BSF and BSR with the REP
//! prefix ignored, as on every earlier processor (SDM Vol. 2B "TZCNT":
//! "on processors that do not support TZCNT, the instruction byte encoding
//! is executed as BSF"). Compilers emit them for that reason: Linux's
//! `__ffs` is `rep; bsf`.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{addr16, op_size, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags::{CF, ZF};
use crate::cpu::{Cpu, Result};

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let m = inst.mnemonic();
    let size = op_size(inst, 0);
    if matches!(m, Mnemonic::Bsf | Mnemonic::Bsr | Mnemonic::Tzcnt | Mnemonic::Lzcnt) {
        let src = cpu.read_op(bus, inst, 1, size)?;
        if src == 0 {
            cpu.state.eflags |= ZF;
        } else {
            cpu.state.eflags &= !ZF;
            let idx = if matches!(m, Mnemonic::Bsf | Mnemonic::Tzcnt) {
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

#[cfg(test)]
mod tests {
    use crate::cpu::state::flags::{CF, ZF};
    use crate::cpu::state::reg::{EAX, EBX, ECX};
    use crate::cpu::vector;
    use crate::exec::testutil::*;

    // SDM Vol. 2A, BT: CF <- Bit(BitBase, BitOffset); a register operand takes the
    // offset modulo 32 (16).
    #[test]
    fn bt_register_offset_masked() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 1 << 3).set_reg(EBX, 35);
        assert_retired(m.exec(&[0x0F, 0xA3, 0xD8])); // bt eax, ebx
        assert_eq!(m.status() & CF, CF);
        m.set_reg(EBX, 36);
        assert_retired(m.exec(&[0x0F, 0xA3, 0xD8]));
        assert_eq!(m.status() & CF, 0);
    }

    // SDM Vol. 2A, BTS/BTR/BTC: CF gets the old bit, then the bit is set, cleared or complemented.
    #[test]
    fn bts_btr_btc_register() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0);
        assert_retired(m.exec(&[0x0F, 0xBA, 0xE8, 0x1F])); // bts eax, 31
        assert_eq!(m.reg(EAX), 0x8000_0000);
        assert_eq!(m.status() & CF, 0);
        assert_retired(m.exec(&[0x0F, 0xBA, 0xF8, 0x1F])); // btc eax, 31
        assert_eq!(m.reg(EAX), 0);
        assert_eq!(m.status() & CF, CF);
        m.set_reg(EAX, 0x10);
        assert_retired(m.exec(&[0x0F, 0xBA, 0xF0, 0x04])); // btr eax, 4
        assert_eq!(m.reg(EAX), 0);
        assert_eq!(m.status() & CF, CF);
    }

    // SDM Vol. 2A, BT, "bit offset operand": with a memory base and a register
    // offset the offset is a signed integer addressing memory beyond the operand.
    #[test]
    fn bt_memory_register_offset_reaches_beyond() {
        let mut m = Machine::flat32();
        m.w32(DATA + 4, 1 << 3);
        m.set_reg(EBX, DATA).set_reg(EAX, 35);
        assert_retired(m.exec(&[0x0F, 0xA3, 0x03])); // bt [ebx], eax -> dword at +4, bit 3
        assert_eq!(m.status() & CF, CF);
    }

    #[test]
    fn bt_memory_negative_offset() {
        let mut m = Machine::flat32();
        m.w32(DATA - 4, 0x8000_0000);
        m.set_reg(EBX, DATA).set_reg(EAX, u32::MAX); // -1: bit 31 of the dword below
        assert_retired(m.exec(&[0x0F, 0xA3, 0x03]));
        assert_eq!(m.status() & CF, CF);
        // bts [ebx], eax with -33: dword at -8, bit 31.
        m.set_reg(EAX, (-33i32) as u32);
        assert_retired(m.exec(&[0x0F, 0xAB, 0x03]));
        assert_eq!(m.r32(DATA - 8), 0x8000_0000);
        assert_eq!(m.status() & CF, 0);
        // 16-bit: bt [ebx], ax with AX = -1 reads the word below, bit 15.
        m.w16(DATA - 2, 0x8000);
        m.set_reg(EAX, 0xFFFF);
        assert_retired(m.exec(&[0x66, 0x0F, 0xA3, 0x03]));
        assert_eq!(m.status() & CF, CF);
    }

    // SDM Vol. 2A, BT: an immediate offset is taken modulo the operand size, also
    // for memory operands.
    #[test]
    fn bt_memory_immediate_offset_masked() {
        let mut m = Machine::flat32();
        m.w32(DATA, 1 << 3);
        m.set_reg(EBX, DATA);
        assert_retired(m.exec(&[0x0F, 0xBA, 0x23, 35])); // bt dword [ebx], 35
        assert_eq!(m.status() & CF, CF);
        assert_retired(m.exec(&[0x0F, 0xBA, 0x2B, 35])); // bts dword [ebx], 35 (bit 3 already set)
        assert_eq!(m.r32(DATA), 1 << 3);
    }

    // SDM Vol. 2A, BSF/BSR: ZF = 1 and the destination undefined if the source is
    // 0 (we leave it unchanged, as current processors do); else ZF = 0 and the index.
    #[test]
    fn bsf_bsr() {
        let mut m = Machine::flat32();
        m.set_reg(EBX, 0x0010_0100).set_reg(EAX, 0xDEAD);
        assert_retired(m.exec(&[0x0F, 0xBC, 0xC3])); // bsf eax, ebx
        assert_eq!(m.reg(EAX), 8);
        assert_eq!(m.status() & ZF, 0);
        assert_retired(m.exec(&[0x0F, 0xBD, 0xC3])); // bsr eax, ebx
        assert_eq!(m.reg(EAX), 20);
        m.set_reg(EBX, 0).set_reg(EAX, 0xDEAD);
        assert_retired(m.exec(&[0x0F, 0xBC, 0xC3]));
        assert_eq!(m.status() & ZF, ZF);
        assert_eq!(m.reg(EAX), 0xDEAD);
        assert_retired(m.exec(&[0x0F, 0xBD, 0xC3]));
        assert_eq!(m.status() & ZF, ZF);
        assert_eq!(m.reg(EAX), 0xDEAD);
        // 16-bit BSR writes only AX.
        m.set_reg(EBX, 0x8000).set_reg(EAX, 0xFFFF_FFFF);
        assert_retired(m.exec(&[0x66, 0x0F, 0xBD, 0xC3]));
        assert_eq!(m.reg(EAX), 0xFFFF_000F);
    }

    // SDM Vol. 2B, TZCNT/LZCNT: without BMI1/LZCNT, F3 0F BC/BD are BSF/BSR
    // (a source of 0 sets ZF and keeps the destination, where TZCNT would
    // write the operand size and set CF).
    #[test]
    fn rep_bsf_and_rep_bsr_are_bsf_and_bsr() {
        let mut m = Machine::flat32();
        m.set_reg(ECX, 0x0000_0300);
        assert_retired(m.exec(&[0xF3, 0x0F, 0xBC, 0xC9])); // rep bsf ecx, ecx (Linux's __ffs)
        assert_eq!(m.reg(ECX), 8);
        m.set_reg(EBX, 0x0010_0000);
        assert_retired(m.exec(&[0xF3, 0x0F, 0xBD, 0xC3])); // rep bsr eax, ebx
        assert_eq!(m.reg(EAX), 20);
        m.set_reg(EBX, 0).set_reg(EAX, 0xDEAD);
        assert_retired(m.exec(&[0xF3, 0x0F, 0xBC, 0xC3]));
        assert_eq!((m.reg(EAX), m.status() & (ZF | CF)), (0xDEAD, ZF));
    }

    // SDM Vol. 2A, BTS: LOCK allowed with a memory destination, #UD with a register.
    #[test]
    fn lock_bts() {
        let mut m = Machine::flat32();
        m.set_reg(EBX, DATA).set_reg(EAX, 0);
        assert_retired(m.exec(&[0xF0, 0x0F, 0xAB, 0x03]));
        assert_eq!(m.r32(DATA), 1);
        let mut m = Machine::flat32();
        assert_fault(m.exec(&[0xF0, 0x0F, 0xAB, 0xC3]), vector::UD, None); // lock bts ebx, eax
    }

    // Real mode: BT with a register offset addresses relative to the 16-bit EA.
    #[test]
    fn real_mode_bt_word() {
        let mut m = Machine::real16();
        m.w16(0x20000 + 0x102, 0x0002);
        m.set_reg(EBX, 0x100).set_reg(EAX, 17); // word at +2, bit 1
        assert_retired(m.exec(&[0x0F, 0xA3, 0x07])); // bt [bx], ax
        assert_eq!(m.status() & CF, CF);
    }
}
