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

/// A string operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StrOp {
    Movs,
    Cmps,
    Scas,
    Lods,
    Stos,
    Ins,
    Outs,
}

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    let (op, size) = op_of(inst.mnemonic());
    let a32 = addr32(inst);
    let amask: u32 = if a32 { 0xFFFF_FFFF } else { 0xFFFF };
    let rep = inst.has_rep_prefix() || inst.has_repne_prefix();
    if rep && cpu.state.regs[ECX] & amask == 0 {
        return Ok(Flow::Next);
    }
    let cmp_flags = once(cpu, bus, op, size, a32, seg_of(inst.memory_segment()))?;
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

/// Runs up to `max` iterations of a REP MOVS or REP STOS at once, as many
/// as leave at least one for the instruction itself to finish with; returns
/// how many, each retired as the instruction would have (ECX, ESI, EDI and
/// the icount move on, EIP stays). It does only what repeating the
/// instruction would do without anything else happening: upwards (DF
/// clear), 32-bit addressing, inside one page for the source and one for
/// the destination, inside the segments' limits, with the instruction's
/// page, the source's and the destination's all held by the TLB (so that
/// no iteration would walk the page tables) and all of it plain RAM
/// ([`Bus::bulk_ram`]); otherwise nothing. The caller makes sure nothing
/// is due before `max` more instructions (an interrupt, a deadline).
pub fn rep_batch<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction, max: u64) -> u64 {
    use crate::cpu::mmu::Access;
    let (op, size) = op_of(inst.mnemonic());
    let ecx = cpu.state.regs[ECX];
    if !matches!(op, StrOp::Movs | StrOp::Stos)
        || !(inst.has_rep_prefix() || inst.has_repne_prefix())
        || !addr32(inst)
        || cpu.flag(DF)
        || ecx < 2
        || max == 0
    {
        return 0;
    }
    let size = u32::from(size);
    let user = cpu.state.cpl() == 3;
    let wp = cpu.state.cr0 & crate::cpu::state::cr0::WP != 0;
    let paging = cpu.state.paging();
    // Iterations that stay on the page and inside the segment from `offset`,
    // and the physical address of the first.
    let span = |cpu: &Cpu, sreg: SegReg, offset: u32, access: Access| -> Option<(u32, u32)> {
        let (base, end) = cpu.fast_window(sreg, access);
        let lin = base.wrapping_add(offset);
        let on_page = (0x1000 - (lin & 0xFFF)) / size;
        let in_segment = end.checked_sub(offset)?.div_ceil(size);
        let phys = if paging {
            cpu.tlb.lookup(lin, access == Access::Write, user, wp)?
        } else {
            lin
        };
        Some((on_page.min(in_segment), phys))
    };
    if paging {
        let code = cpu.state.segs[SegReg::Cs as usize].base.wrapping_add(cpu.state.eip);
        if cpu.tlb.lookup(code, false, user, wp).is_none() {
            return 0;
        }
    }
    let di = cpu.state.regs[EDI];
    let Some((dst_room, dst)) = span(cpu, SegReg::Es, di, Access::Write) else {
        return 0;
    };
    let src = match op {
        StrOp::Movs => match span(cpu, seg_of(inst.memory_segment()), cpu.state.regs[ESI], Access::Read) {
            Some(s) => Some(s),
            None => return 0,
        },
        _ => None,
    };
    let n = u64::from((ecx - 1).min(dst_room).min(src.map_or(u32::MAX, |s| s.0))).min(max) as u32;
    if n == 0 {
        return 0;
    }
    let bytes = n * size;
    let Some(ram) = bus.bulk_ram(src.map(|(_, s)| (s, bytes)), (dst, bytes)) else {
        return 0;
    };
    let (dst, len) = (dst as usize, size as usize);
    match src {
        // Element by element upwards, as the iterations go: an overlap
        // repeats what was just written.
        Some((_, src)) => {
            let src = src as usize;
            for i in 0..n as usize {
                let at = i * len;
                ram.copy_within(src + at..src + at + len, dst + at);
            }
            cpu.state.regs[ESI] = cpu.state.regs[ESI].wrapping_add(bytes);
        }
        None => {
            let value = cpu.state.regs[EAX].to_le_bytes();
            for chunk in ram[dst..dst + bytes as usize].chunks_exact_mut(len) {
                chunk.copy_from_slice(&value[..len]);
            }
        }
    }
    cpu.state.regs[EDI] = di.wrapping_add(bytes);
    cpu.state.regs[ECX] = ecx - n;
    cpu.icount += u64::from(n);
    u64::from(n)
}

/// The operation and its size of a string instruction's mnemonic.
pub fn op_of(m: Mnemonic) -> (StrOp, u8) {
    use Mnemonic as M;
    match m {
        M::Movsb => (StrOp::Movs, 1),
        M::Movsw => (StrOp::Movs, 2),
        M::Movsd => (StrOp::Movs, 4),
        M::Cmpsb => (StrOp::Cmps, 1),
        M::Cmpsw => (StrOp::Cmps, 2),
        M::Cmpsd => (StrOp::Cmps, 4),
        M::Scasb => (StrOp::Scas, 1),
        M::Scasw => (StrOp::Scas, 2),
        M::Scasd => (StrOp::Scas, 4),
        M::Lodsb => (StrOp::Lods, 1),
        M::Lodsw => (StrOp::Lods, 2),
        M::Lodsd => (StrOp::Lods, 4),
        M::Stosb => (StrOp::Stos, 1),
        M::Stosw => (StrOp::Stos, 2),
        M::Stosd => (StrOp::Stos, 4),
        M::Insb => (StrOp::Ins, 1),
        M::Insw => (StrOp::Ins, 2),
        M::Insd => (StrOp::Ins, 4),
        M::Outsb => (StrOp::Outs, 1),
        M::Outsw => (StrOp::Outs, 2),
        _ => (StrOp::Outs, 4),
    }
}

/// Whether the string instruction addresses with ESI/EDI rather than SI/DI.
pub fn addr32(inst: &Instruction) -> bool {
    (0..inst.op_count()).any(|i| matches!(inst.op_kind(i), OpKind::MemorySegESI | OpKind::MemoryESEDI))
}

/// One iteration of a string operation on `size` bytes, with 32-bit (`a32`)
/// or 16-bit addressing and the source in `src_seg`: the accesses, then ESI
/// and EDI stepped by DF. Returns the status flags CMPS and SCAS computed
/// (and set).
#[inline(always)]
pub fn once<B: Bus>(
    cpu: &mut Cpu,
    bus: &mut B,
    op: StrOp,
    size: u8,
    a32: bool,
    src_seg: SegReg,
) -> Result<Option<u32>> {
    let amask: u32 = if a32 { 0xFFFF_FFFF } else { 0xFFFF };
    let port = (cpu.state.regs[EDX] & 0xFFFF) as u16;
    if matches!(op, StrOp::Ins | StrOp::Outs) {
        cpu.check_io_permission(bus, port, size)?;
    }
    let si = cpu.state.regs[ESI] & amask;
    let di = cpu.state.regs[EDI] & amask;
    let step = if cpu.flag(DF) {
        (u32::from(size)).wrapping_neg()
    } else {
        u32::from(size)
    };
    let mut cmp_flags = None;
    match op {
        StrOp::Movs => {
            let v = cpu.read_mem(bus, src_seg, si, size)?;
            cpu.write_mem(bus, SegReg::Es, di, size, v)?;
        }
        StrOp::Cmps => {
            let a = cpu.read_mem(bus, src_seg, si, size)?;
            let b = cpu.read_mem(bus, SegReg::Es, di, size)?;
            cmp_flags = Some(flags::sub(a, b, 0, size).1);
        }
        StrOp::Scas => {
            let b = cpu.read_mem(bus, SegReg::Es, di, size)?;
            let a = cpu.state.regs[EAX] & flags::mask(size);
            cmp_flags = Some(flags::sub(a, b, 0, size).1);
        }
        StrOp::Lods => {
            let v = cpu.read_mem(bus, src_seg, si, size)?;
            let m = flags::mask(size);
            cpu.state.regs[EAX] = (cpu.state.regs[EAX] & !m) | v;
        }
        StrOp::Stos => {
            let v = cpu.state.regs[EAX] & flags::mask(size);
            cpu.write_mem(bus, SegReg::Es, di, size, v)?;
        }
        StrOp::Ins => {
            // Probe the destination before the port read, which has side effects.
            let lin = cpu.seg_linear(SegReg::Es, di, u32::from(size), crate::cpu::mmu::Access::Write)?;
            let user = cpu.state.cpl() == 3;
            cpu.probe_write(bus, lin, u32::from(size), user)?;
            let v = bus.io_read(port, size, cpu.now());
            cpu.write_mem(bus, SegReg::Es, di, size, v)?;
        }
        StrOp::Outs => {
            let v = cpu.read_mem(bus, src_seg, si, size)?;
            bus.io_write(port, size, v, cpu.now());
        }
    }
    let upd = |r: u32, cpu: &mut Cpu| {
        (cpu.state.regs[r as usize] & !amask) | (cpu.state.regs[r as usize].wrapping_add(step) & amask)
    };
    if matches!(op, StrOp::Movs | StrOp::Cmps | StrOp::Lods | StrOp::Outs) {
        cpu.state.regs[ESI] = upd(ESI as u32, cpu);
    }
    if matches!(op, StrOp::Movs | StrOp::Cmps | StrOp::Scas | StrOp::Stos | StrOp::Ins) {
        cpu.state.regs[EDI] = upd(EDI as u32, cpu);
    }
    if let Some(f) = cmp_flags {
        cpu.set_status(f);
    }
    Ok(cmp_flags)
}

#[cfg(test)]
mod tests {
    use crate::cpu::state::flags::{CF, DF, IOPL, ZF};
    use crate::cpu::state::reg::{EAX, ECX, EDI, EDX, ESI};
    use crate::cpu::vector;
    use crate::exec::testutil::*;

    // SDM Vol. 2B, MOVS: ESI and EDI advance by the size, backwards when DF = 1.
    #[test]
    fn movs_forward_and_backward() {
        let mut m = Machine::flat32();
        m.w32(DATA, 0x1122_3344);
        m.set_reg(ESI, DATA).set_reg(EDI, DATA + 0x100);
        assert_retired(m.exec(&[0xA5])); // movsd
        assert_eq!(m.r32(DATA + 0x100), 0x1122_3344);
        assert_eq!((m.reg(ESI), m.reg(EDI)), (DATA + 4, DATA + 0x104));

        let mut m = Machine::flat32();
        m.w8(DATA, 0x5A);
        m.set_reg(ESI, DATA).set_reg(EDI, DATA + 0x100).set_flags(DF);
        assert_retired(m.exec(&[0xA4])); // movsb
        assert_eq!(m.r8(DATA + 0x100), 0x5A);
        assert_eq!((m.reg(ESI), m.reg(EDI)), (DATA - 1, DATA + 0xFF));
    }

    // SDM Vol. 2B, REP: each iteration is interruptible; we retire every iteration
    // as one step (EIP stays on the instruction until ECX reaches 0).
    #[test]
    fn rep_movsb_retires_each_iteration() {
        let mut m = Machine::flat32();
        m.write(DATA, b"abc");
        m.set_reg(ESI, DATA).set_reg(EDI, DATA + 0x100).set_reg(ECX, 3);
        m.code(&[0xF3, 0xA4]); // rep movsb
        let icount = m.cpu.icount;
        for left in [2, 1] {
            assert_retired(m.step());
            assert_eq!((m.eip(), m.reg(ECX)), (CODE, left));
        }
        assert_retired(m.step());
        assert_eq!((m.eip(), m.reg(ECX)), (CODE + 2, 0));
        assert_eq!(m.cpu.icount, icount + 3);
        assert_eq!(&m.bus.mem[(DATA + 0x100) as usize..][..3], b"abc");
    }

    // SDM Vol. 2B, REP: with ECX = 0 nothing is done; the instruction retires once.
    #[test]
    fn rep_with_zero_count() {
        let mut m = Machine::flat32();
        m.set_reg(ESI, DATA).set_reg(EDI, DATA + 0x100).set_reg(ECX, 0);
        m.w8(DATA, 1);
        let icount = m.cpu.icount;
        assert_retired(m.exec(&[0xF3, 0xA4]));
        assert_eq!(m.eip(), CODE + 2);
        assert_eq!(m.cpu.icount, icount + 1);
        assert_eq!((m.reg(ESI), m.reg(EDI), m.r8(DATA + 0x100)), (DATA, DATA + 0x100, 0));
    }

    // SDM Vol. 2B, REP STOS with DF = 1 runs downwards.
    #[test]
    fn rep_stosw_backward() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0xBEEF)
            .set_reg(EDI, DATA + 4)
            .set_reg(ECX, 3)
            .set_flags(DF);
        m.code(&[0x66, 0xF3, 0xAB]); // rep stosw
        for _ in 0..3 {
            assert_retired(m.step());
        }
        assert_eq!(m.eip(), CODE + 3);
        assert_eq!(
            (m.r16(DATA), m.r16(DATA + 2), m.r16(DATA + 4)),
            (0xBEEF, 0xBEEF, 0xBEEF)
        );
        assert_eq!(m.reg(EDI), DATA - 2);
    }

    // SDM Vol. 2B, REPE/REPNE: the ZF test after each iteration ends the loop.
    #[test]
    fn repe_cmpsb_stops_at_mismatch() {
        let mut m = Machine::flat32();
        m.write(DATA, b"abcx");
        m.write(DATA + 0x100, b"abdx");
        m.set_reg(ESI, DATA).set_reg(EDI, DATA + 0x100).set_reg(ECX, 4);
        m.code(&[0xF3, 0xA6]); // repe cmpsb
        while m.eip() == CODE {
            assert_retired(m.step());
        }
        assert_eq!(m.reg(ECX), 1);
        assert_eq!((m.reg(ESI), m.reg(EDI)), (DATA + 3, DATA + 0x103));
        assert_eq!(m.status() & (ZF | CF), CF, "c < d");
    }

    #[test]
    fn repne_scasb_finds_byte() {
        let mut m = Machine::flat32();
        m.write(DATA, b"hello\0");
        m.set_reg(EAX, 0).set_reg(EDI, DATA).set_reg(ECX, 10);
        m.code(&[0xF2, 0xAE]); // repne scasb
        let mut steps = 0;
        while m.eip() == CODE {
            assert_retired(m.step());
            steps += 1;
        }
        assert_eq!(steps, 6);
        assert_eq!((m.reg(ECX), m.reg(EDI)), (4, DATA + 6));
        assert_eq!(m.status() & ZF, ZF);
    }

    // SDM Vol. 2A, LODS and Vol. 2B, STOS; a segment override applies to the source only.
    #[test]
    fn lods_stos_and_override() {
        let mut m = Machine::flat32();
        m.w32(DATA, 0xCAFE_F00D);
        m.set_reg(ESI, DATA).set_reg(EDI, DATA + 8);
        assert_retired(m.exec(&[0xAD])); // lodsd
        assert_eq!((m.reg(EAX), m.reg(ESI)), (0xCAFE_F00D, DATA + 4));
        assert_retired(m.exec(&[0xAB])); // stosd
        assert_eq!((m.r32(DATA + 8), m.reg(EDI)), (0xCAFE_F00D, DATA + 12));
        // A null DS does not matter with an ES override on the source.
        m.cpu.state.segs[crate::cpu::state::SegReg::Ds as usize] = Default::default();
        m.set_reg(ESI, DATA);
        assert_retired(m.exec(&[0x26, 0xAC])); // lodsb es:[esi]
        assert_eq!(m.reg(EAX) & 0xFF, 0x0D);
    }

    // SDM Vol. 2A, INS and Vol. 2B, OUTS: port DX; above IOPL the TSS I/O bitmap
    // decides (Vol. 1, 19.5.2), #GP(0) when a bit is set.
    #[test]
    fn ins_outs_and_io_bitmap() {
        let mut m = Machine::flat32();
        m.bus.io_value = 0x1234_5678;
        m.set_reg(EDX, 0x60).set_reg(EDI, DATA);
        assert_retired(m.exec(&[0x6D])); // insd
        assert_eq!((m.r32(DATA), m.reg(EDI)), (0x1234_5678, DATA + 4));
        m.set_reg(ESI, DATA);
        assert_retired(m.exec(&[0x66, 0x6F])); // outsw
        assert_eq!(m.bus.io_log.last(), Some(&(true, 0x60, 2, 0x5678)));

        let mut m = Machine::flat32().user();
        m.w8(TSS + 0x68 + 0x61 / 8, 1 << (0x61 % 8)); // deny port 61h
        m.set_reg(EDX, 0x60).set_reg(ESI, DATA);
        assert_retired(m.exec(&[0x6E])); // outsb to 60h: allowed
        assert_fault(m.exec(&[0x66, 0x6F]), vector::GP, Some(0)); // outsw covers 60h-61h
        assert_eq!(m.reg(ESI), DATA + 1);
        assert_eq!(m.bus.io_log.len(), 1);

        let mut m = Machine::flat32().user();
        m.cpu.state.eflags |= IOPL;
        m.w8(TSS + 0x68, 0xFF);
        m.set_reg(EDX, 0).set_reg(EDI, DATA);
        assert_retired(m.exec(&[0x6C])); // insb: IOPL 3 skips the bitmap
    }

    // Address-size prefix: 16-bit SI/DI/CX wrap at 64 KiB (SDM Vol. 1, 7.3.9).
    #[test]
    fn address_size_16_wraps() {
        let mut m = Machine::flat32();
        m.set_reg(ESI, 0x1_FFFF).set_reg(EDI, 0x2_0000).set_reg(ECX, 0x1_0001);
        m.w8(0xFFFF, 0x77);
        assert_retired(m.exec(&[0x67, 0xF3, 0xA4])); // rep movsb with SI, DI, CX
        assert_eq!((m.reg(ESI), m.reg(EDI), m.reg(ECX)), (0x1_0000, 0x2_0001, 0x1_0000));
        assert_eq!(m.r8(0), 0x77);
        assert_eq!(m.eip(), CODE + 3, "CX reached 0");
    }

    // SDM Vol. 3A, 22.33.1: in real mode a word at offset FFFFh raises #GP(0) (the
    // 80286 also faults, but leaves SI advanced; we report the state before).
    #[test]
    fn real_mode_word_at_ffff_faults() {
        let mut m = Machine::real16();
        m.set_reg(ESI, 0xFFFF).set_reg(EDI, 0x10);
        assert_fault(m.exec(&[0xA5]), vector::GP, Some(0)); // movsw
        assert_eq!((m.reg(ESI), m.reg(EDI)), (0xFFFF, 0x10));
        let mut m = Machine::real16();
        m.set_reg(ESI, 0xFFFE).set_reg(EDI, 0x10);
        assert_retired(m.exec(&[0xA5]));
        assert_eq!(m.reg(ESI), 0);
    }
}
