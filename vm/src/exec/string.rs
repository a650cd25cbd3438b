//! String instructions: MOVS, CMPS, SCAS, LODS, STOS, INS, OUTS with the REP,
//! REPE and REPNE prefixes (SDM Vol. 1, 7.3.9 "String operations"; Vol. 2B
//! "REP/REPE/REPZ/REPNE/REPNZ").
//!
//! Each iteration of a repeated string instruction retires separately: the
//! instruction returns [`Flow::Repeat`] and runs again from the same EIP, so
//! interrupts are taken between iterations exactly as the SDM describes.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{flags, seg_of, Flow};
use crate::bus::Bus;
use crate::cpu::state::flags::{DF, ZF};
use crate::cpu::state::reg::{EAX, ECX, EDI, EDX, ESI};
use crate::cpu::state::SegReg;
use crate::cpu::{Cpu, Result};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Movs,
    Cmps,
    Scas,
    Lods,
    Stos,
    Ins,
    Outs,
}

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    use Mnemonic as M;
    let (op, size) = match inst.mnemonic() {
        M::Movsb => (Op::Movs, 1),
        M::Movsw => (Op::Movs, 2),
        M::Movsd => (Op::Movs, 4),
        M::Cmpsb => (Op::Cmps, 1),
        M::Cmpsw => (Op::Cmps, 2),
        M::Cmpsd => (Op::Cmps, 4),
        M::Scasb => (Op::Scas, 1),
        M::Scasw => (Op::Scas, 2),
        M::Scasd => (Op::Scas, 4),
        M::Lodsb => (Op::Lods, 1),
        M::Lodsw => (Op::Lods, 2),
        M::Lodsd => (Op::Lods, 4),
        M::Stosb => (Op::Stos, 1),
        M::Stosw => (Op::Stos, 2),
        M::Stosd => (Op::Stos, 4),
        M::Insb => (Op::Ins, 1),
        M::Insw => (Op::Ins, 2),
        M::Insd => (Op::Ins, 4),
        M::Outsb => (Op::Outs, 1),
        M::Outsw => (Op::Outs, 2),
        _ => (Op::Outs, 4),
    };
    let a32 = (0..inst.op_count()).any(|i| matches!(inst.op_kind(i), OpKind::MemorySegESI | OpKind::MemoryESEDI));
    let amask: u32 = if a32 { 0xFFFF_FFFF } else { 0xFFFF };
    let rep = inst.has_rep_prefix() || inst.has_repne_prefix();
    if rep && cpu.state.regs[ECX] & amask == 0 {
        return Ok(Flow::Next);
    }
    let port = (cpu.state.regs[EDX] & 0xFFFF) as u16;
    if matches!(op, Op::Ins | Op::Outs) {
        cpu.check_io_permission(bus, port, size)?;
    }
    let src_seg = seg_of(inst.memory_segment());
    let si = cpu.state.regs[ESI] & amask;
    let di = cpu.state.regs[EDI] & amask;
    let step = if cpu.flag(DF) {
        (u32::from(size)).wrapping_neg()
    } else {
        u32::from(size)
    };
    let mut cmp_flags = None;
    match op {
        Op::Movs => {
            let v = cpu.read_mem(bus, src_seg, si, size)?;
            cpu.write_mem(bus, SegReg::Es, di, size, v)?;
        }
        Op::Cmps => {
            let a = cpu.read_mem(bus, src_seg, si, size)?;
            let b = cpu.read_mem(bus, SegReg::Es, di, size)?;
            cmp_flags = Some(flags::sub(a, b, 0, size).1);
        }
        Op::Scas => {
            let b = cpu.read_mem(bus, SegReg::Es, di, size)?;
            let a = cpu.state.regs[EAX] & flags::mask(size);
            cmp_flags = Some(flags::sub(a, b, 0, size).1);
        }
        Op::Lods => {
            let v = cpu.read_mem(bus, src_seg, si, size)?;
            let m = flags::mask(size);
            cpu.state.regs[EAX] = (cpu.state.regs[EAX] & !m) | v;
        }
        Op::Stos => {
            let v = cpu.state.regs[EAX] & flags::mask(size);
            cpu.write_mem(bus, SegReg::Es, di, size, v)?;
        }
        Op::Ins => {
            // Probe the destination before the port read, which has side effects.
            let lin = cpu.seg_linear(SegReg::Es, di, u32::from(size), crate::cpu::mmu::Access::Write)?;
            let user = cpu.state.cpl() == 3;
            cpu.probe_write(bus, lin, u32::from(size), user)?;
            let v = bus.io_read(port, size, cpu.icount);
            cpu.write_mem(bus, SegReg::Es, di, size, v)?;
        }
        Op::Outs => {
            let v = cpu.read_mem(bus, src_seg, si, size)?;
            bus.io_write(port, size, v, cpu.icount);
        }
    }
    let upd = |r: u32, cpu: &mut Cpu| {
        (cpu.state.regs[r as usize] & !amask) | (cpu.state.regs[r as usize].wrapping_add(step) & amask)
    };
    if matches!(op, Op::Movs | Op::Cmps | Op::Lods | Op::Outs) {
        cpu.state.regs[ESI] = upd(ESI as u32, cpu);
    }
    if matches!(op, Op::Movs | Op::Cmps | Op::Scas | Op::Stos | Op::Ins) {
        cpu.state.regs[EDI] = upd(EDI as u32, cpu);
    }
    if let Some(f) = cmp_flags {
        cpu.set_status(f);
    }
    if !rep {
        return Ok(Flow::Next);
    }
    let ecx = cpu.state.regs[ECX];
    let count = (ecx & amask).wrapping_sub(1) & amask;
    cpu.state.regs[ECX] = (ecx & !amask) | count;
    if count == 0 {
        return Ok(Flow::Next);
    }
    if let Some(f) = cmp_flags {
        let zf = f & ZF != 0;
        // REPE stops on inequality, REPNE on equality.
        if (inst.has_repe_prefix() && !zf) || (inst.has_repne_prefix() && zf) {
            return Ok(Flow::Next);
        }
    }
    Ok(Flow::Repeat)
}
