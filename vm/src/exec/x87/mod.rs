//! The x87 FPU: escape instructions D8-DF (SDM Vol. 1, chapter 8
//! "Programming with the x87 FPU"; Vol. 2, each instruction's page; Vol. 3A,
//! 2.5 "Control registers" (CR0.EM, CR0.TS, CR0.NE) and table 2-2, 6.15
//! "Interrupt 7 - Device Not Available Exception (#NM)", 6.15 "Interrupt 16 -
//! x87 FPU Floating-Point Error (#MF)").
//!
//! The model is a P6's FPU: CR0.EM or CR0.TS make every escape raise #NM, so
//! a kernel can emulate the FPU or switch its context lazily; otherwise the
//! escape runs here. Values are computed in `float` (soft-float, the same on
//! every host); the stack and tags are `stack`; the instruction families are
//! `transfer` (loads, stores, constants, exchanges), `arith`, `compare` and
//! `control` (control, status and environment). An unmasked exception sets
//! the error summary and is reported by the next waiting x87 instruction or
//! WAIT: as #MF with CR0.NE set (how Linux and every protected-mode OS run).
//! WAIT/FWAIT is not an escape and lives in `system`; it calls
//! [`check_pending`].

mod arith;
mod compare;
mod control;
pub mod float;
mod stack;
mod transcendental;
mod transfer;

use iced_x86::{EncodingKind, Instruction, Mnemonic, OpCodeOperandKind, OpCodeTableKind, OpKind, Register};

use super::Flow;
use crate::bus::Bus;
use crate::cpu::mmu::Access;
use crate::cpu::state::{cr0, SegReg};
use crate::cpu::{vector, Cpu, Fault, Result};

/// Whether the instruction is an x87 escape: a legacy one-byte opcode D8-DF
/// (SDM Vol. 2, A.4 "Escape opcode instructions"). iced reports register forms
/// with their ModRM byte appended (e.g. D9D0 for FNOP), memory forms as the
/// opcode byte alone.
#[inline]
pub fn is_esc(inst: &Instruction) -> bool {
    let op = inst.op_code();
    if op.encoding() != EncodingKind::Legacy || op.table() != OpCodeTableKind::Normal {
        return false;
    }
    let code = op.op_code();
    let first = if code > 0xFF { code >> 8 } else { code };
    (0xD8..=0xDF).contains(&first)
}

/// Whether raw instruction bytes start, after legacy prefixes, with an
/// escape opcode D8-DF (for encodings the decoder rejects).
pub fn is_escape_opcode(bytes: &[u8]) -> bool {
    let prefix = |b: &u8| {
        matches!(
            b,
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3
        )
    };
    bytes
        .iter()
        .find(|b| !prefix(b))
        .is_some_and(|b| (0xD8..=0xDF).contains(b))
}

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    use Mnemonic as M;
    // EM: the guest emulates the FPU; TS: the FPU context belongs to another
    // task. Either way every escape raises #NM before any operand is looked
    // at (SDM Vol. 3A, table 2-2 and 6.9 priority "faults decoding the
    // instruction").
    if cpu.state.cr0 & (cr0::EM | cr0::TS) != 0 {
        return Err(Fault::new(vector::NM));
    }
    let m = inst.mnemonic();
    // The non-waiting control instructions run with an exception pending
    // (that is what they are for: an error handler reads and clears the
    // state); everything else reports it first (SDM Vol. 1, 8.3.11, 8.6).
    let non_waiting = matches!(
        m,
        M::Fninit | M::Fnclex | M::Fnstsw | M::Fnstcw | M::Fnstenv | M::Fnsave
    );
    if !non_waiting {
        check_pending(cpu, bus)?;
    }
    match m {
        M::Fninit
        | M::Finit
        | M::Fnclex
        | M::Fclex
        | M::Fnstsw
        | M::Fstsw
        | M::Fnstcw
        | M::Fstcw
        | M::Fldcw
        | M::Fnstenv
        | M::Fstenv
        | M::Fldenv
        | M::Fnsave
        | M::Fsave
        | M::Frstor => control::exec(cpu, bus, inst)?,
        _ => {
            match m {
                M::Fld
                | M::Fild
                | M::Fbld
                | M::Fst
                | M::Fstp
                | M::Fstpnce
                | M::Fist
                | M::Fistp
                | M::Fbstp
                | M::Fxch
                | M::Fld1
                | M::Fldl2t
                | M::Fldl2e
                | M::Fldpi
                | M::Fldlg2
                | M::Fldln2
                | M::Fldz
                | M::Fcmovb
                | M::Fcmove
                | M::Fcmovbe
                | M::Fcmovu
                | M::Fcmovnb
                | M::Fcmovne
                | M::Fcmovnbe
                | M::Fcmovnu
                | M::Ffree
                | M::Ffreep
                | M::Fincstp
                | M::Fdecstp => transfer::exec(cpu, bus, inst)?,
                M::Fcom
                | M::Fcomp
                | M::Fcompp
                | M::Fucom
                | M::Fucomp
                | M::Fucompp
                | M::Ficom
                | M::Ficomp
                | M::Fcomi
                | M::Fcomip
                | M::Fucomi
                | M::Fucomip
                | M::Ftst
                | M::Fxam => compare::exec(cpu, bus, inst)?,
                // The 8087/287 controls: no-ops since the 387 (SDM Vol. 1,
                // 8.1.1 and appendix "x87 FPU instructions: 287 compatibility").
                M::Fnop | M::Fneni | M::Feni | M::Fndisi | M::Fdisi | M::Fnsetpm | M::Fsetpm => {}
                _ => arith::exec(cpu, bus, inst)?,
            }
            // Everything but the control instructions records itself as the
            // last x87 instruction (FNSTENV reports it to an exception
            // handler); one that faulted never reached the FPU.
            note_instruction(cpu, inst);
        }
    }
    Ok(Flow::Next)
}

/// Reports a pending unmasked x87 exception (the error summary set) at a
/// waiting instruction: #MF with CR0.NE set; with NE clear the PC way, FERR#
/// raising IRQ 13 through the platform's latch while the instruction goes
/// on (as QEMU does; the latch stays up until port 0xF0 is written).
pub fn check_pending<B: Bus>(cpu: &mut Cpu, bus: &mut B) -> Result<()> {
    if cpu.state.fpu.status & stack::sw::ES != 0 {
        if cpu.state.cr0 & cr0::NE != 0 {
            return Err(Fault::new(vector::MF));
        }
        bus.fpu_error();
    }
    Ok(())
}

/// Records the exceptions an operation detected: the sticky flags, and the
/// error summary (with B) when one of them is unmasked.
fn raise(cpu: &mut Cpu, flags: u16) {
    let fpu = &mut cpu.state.fpu;
    fpu.status |= flags & float::exc::ALL;
    if flags & !fpu.control & float::exc::ALL != 0 {
        fpu.status |= stack::sw::ES | stack::sw::B;
    }
}

/// Whether the exceptions in `flags` are all masked.
fn masked(cpu: &Cpu, flags: u16) -> bool {
    flags & !cpu.state.fpu.control & float::exc::ALL == 0
}

/// A stack fault (SDM Vol. 1, 8.5.1.1): IE with SF, C1 = 1 for an overflow
/// and 0 for an underflow. Whether the masked response goes ahead.
fn stack_fault(cpu: &mut Cpu, overflow: bool) -> bool {
    raise(cpu, float::exc::IE);
    cpu.state.fpu.status |= stack::sw::SF;
    cpu.state.fpu.set_c1(overflow);
    masked(cpu, float::exc::IE)
}

/// A real memory operand (m32fp, m64fp) of an arithmetic or comparison,
/// converted as the x87 sees it: an SNaN stays signaling so the operation
/// selects NaNs and raises IE as for a register operand, and the load's
/// only own exception is DE (see `float::from_f32`).
fn real_operand(loaded: (float::F80, u16)) -> (float::F80, u16) {
    let (mut value, flags) = loaded;
    if flags & float::exc::IE != 0 {
        value.mantissa &= !(1 << 62);
    }
    (value, flags & float::exc::DE)
}

/// The load's DE as the x87 reports it with the operation: not when the
/// other operand is a NaN or unsupported, nor when the operation divides
/// by zero.
fn operand_de(load_de: u16, other: float::F80, result_flags: u16) -> u16 {
    let other_special = matches!(other.class(), float::Class::Nan | float::Class::Unsupported);
    if other_special || result_flags & float::exc::ZE != 0 {
        0
    } else {
        load_de
    }
}

/// The control word as the arithmetic sees it.
fn control_word(cpu: &Cpu) -> float::Control {
    float::Control(cpu.state.fpu.control)
}

/// ST(i) of a register operand.
fn st_index(inst: &Instruction, op: u32) -> u8 {
    (inst.op_register(op) as u32).wrapping_sub(iced_x86::Register::ST0 as u32) as u8 & 7
}

fn has_memory_operand(inst: &Instruction) -> bool {
    (0..inst.op_count()).any(|i| inst.op_kind(i) == OpKind::Memory)
}

/// The last x87 instruction's address, opcode and data pointer (SDM Vol. 1,
/// 8.1.8 "x87 FPU instruction and data (operand) pointers", 8.1.9 "last
/// instruction opcode" and figure 8-8): the opcode is the low three bits of
/// the escape byte and the whole second byte, the ModR/M.
fn note_instruction(cpu: &mut Cpu, inst: &Instruction) {
    let op = inst.op_code();
    let code = op.op_code();
    let escape = if code > 0xFF { code >> 8 } else { code };
    let opcode = (escape & 7) << 8 | u32::from(second_byte(inst));
    // The guest's selectors: ring compression must not show here.
    let cs = cpu.guest_selector(SegReg::Cs);
    let fpu_ip = cpu.start_eip;
    if has_memory_operand(inst) {
        let (seg, ea) = cpu.mem_operand(inst);
        cpu.state.fpu.ds = cpu.guest_selector(seg);
        cpu.state.fpu.dp = ea;
    }
    let fpu = &mut cpu.state.fpu;
    fpu.opcode = opcode as u16;
    fpu.cs = cs;
    fpu.ip = fpu_ip;
}

/// The byte after an x87 escape (D8-DF): the ModR/M as encoded, rebuilt
/// from the decoded form (a register form's ST(i) in its low three bits; a
/// memory form's mod and r/m from its addressing and displacement size).
fn second_byte(inst: &Instruction) -> u8 {
    let op = inst.op_code();
    let code = op.op_code();
    if code > 0xFF {
        // A register form: D8 C0+i and the like.
        let sti = (0..op.op_count())
            .find(|&n| op.op_kind(n) == OpCodeOperandKind::sti_opcode)
            .map_or(0, |n| inst.op_register(n).number() as u8 & 7);
        return (code as u8) | sti;
    }
    let reg = (op.group_index().max(0) as u8 & 7) << 3;
    let (base, index) = (inst.memory_base(), inst.memory_index());
    let disp_mode = |size: u32| match size {
        0 => 0,
        1 => 1,
        _ => 2,
    };
    if inst.memory_displ_size() == 2 || base.is_gpr16() || index.is_gpr16() {
        // 16-bit addressing (SDM Vol. 2A, table 2-1).
        use Register::{BP, BX, DI, SI};
        let rm = match (base, index) {
            (BX, SI) => 0,
            (BX, DI) => 1,
            (BP, SI) => 2,
            (BP, DI) => 3,
            (SI, Register::None) => 4,
            (DI, Register::None) => 5,
            (BP, Register::None) => 6,
            (BX, Register::None) => 7,
            _ => return reg | 6, // [disp16]: mod 00, r/m 110
        };
        return disp_mode(inst.memory_displ_size()) << 6 | reg | rm;
    }
    // 32-bit addressing (SDM Vol. 2A, table 2-2).
    if base == Register::None {
        // [disp32] (r/m 101), or a SIB without base (r/m 100, mod 00).
        return reg | if index == Register::None { 5 } else { 4 };
    }
    let rm = if index != Register::None || base == Register::ESP {
        4
    } else {
        base.number() as u8 & 7
    };
    disp_mode(inst.memory_displ_size()) << 6 | reg | rm
}

/// Reads `N` bytes of the memory operand, after checking the whole operand
/// against its segment.
fn read_operand<B: Bus, const N: usize>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<[u8; N]> {
    let (seg, ea) = cpu.mem_operand(inst);
    read_bytes(cpu, bus, seg, ea)
}

fn read_bytes<B: Bus, const N: usize>(cpu: &mut Cpu, bus: &mut B, seg: SegReg, ea: u32) -> Result<[u8; N]> {
    cpu.seg_linear(seg, ea, N as u32, Access::Read)?;
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        let take = if N - i >= 4 {
            4
        } else if N - i >= 2 {
            2
        } else {
            1
        };
        let v = cpu.read_mem(bus, seg, ea.wrapping_add(i as u32), take as u8)?;
        out[i..i + take].copy_from_slice(&v.to_le_bytes()[..take]);
        i += take;
    }
    Ok(out)
}

/// Writes `bytes` to the memory operand, all or nothing: the segment and
/// every page are checked before the first byte changes, so a fault leaves
/// memory as it was and the instruction can restart.
fn write_operand<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction, bytes: &[u8]) -> Result<()> {
    let (seg, ea) = cpu.mem_operand(inst);
    write_bytes(cpu, bus, seg, ea, bytes)
}

fn write_bytes<B: Bus>(cpu: &mut Cpu, bus: &mut B, seg: SegReg, ea: u32, bytes: &[u8]) -> Result<()> {
    let lin = cpu.seg_linear(seg, ea, bytes.len() as u32, Access::Write)?;
    let user = cpu.state.cpl() == 3;
    cpu.probe_write(bus, lin, bytes.len() as u32, user)?;
    let mut i = 0;
    while i < bytes.len() {
        let take = if bytes.len() - i >= 4 {
            4
        } else if bytes.len() - i >= 2 {
            2
        } else {
            1
        };
        let mut word = [0u8; 4];
        word[..take].copy_from_slice(&bytes[i..i + take]);
        cpu.write_mem(
            bus,
            seg,
            ea.wrapping_add(i as u32),
            take as u8,
            u32::from_le_bytes(word),
        )?;
        i += take;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cpu::state::reg::{EAX, EBX};
    use crate::cpu::state::{cr0, SegReg};
    use crate::cpu::vector;
    use crate::exec::testutil::*;

    fn d32(v: u32) -> [u8; 4] {
        v.to_le_bytes()
    }

    // SDM Vol. 3A, 2.5 and table 2-2: with CR0.EM or CR0.TS set every escape,
    // register or memory form, raises #NM (a fault: EIP stays on the escape).
    #[test]
    fn em_or_ts_raise_nm() {
        for bits in [cr0::EM, cr0::TS, cr0::EM | cr0::TS] {
            let mut m = Machine::flat32();
            m.cpu.state.cr0 |= bits;
            assert_fault(m.exec(&[0xD8, 0xC1]), vector::NM, None); // fadd st, st(1)
            assert_eq!(m.r32(m.reg(crate::cpu::state::reg::ESP)), CODE);
            let mut m = Machine::flat32();
            m.cpu.state.cr0 |= bits;
            let a = d32(DATA);
            assert_fault(m.exec(&[0xD9, 0x05, a[0], a[1], a[2], a[3]]), vector::NM, None);
            // fld dword [DATA]
        }
    }

    // Forming the memory operand's address still applies the segment checks (SDM
    // Vol. 3A, 5.3-5.4): the whole operand within the limit, writes need a
    // writable segment.
    #[test]
    fn memory_operand_segment_checks() {
        let mut m = Machine::flat32();
        m.set_gdt(FREE_SLOT, seg_desc(DATA, 0xFF, ACC_DATA0, 0x4));
        m.load_seg(SegReg::Ds, (FREE_SLOT * 8) as u16);
        m.set_reg(EBX, 0xFC);
        assert_retired(m.exec(&[0xD9, 0x03])); // fld dword [ebx]: FCh..FFh fits
        m.set_reg(EBX, 0xFD);
        assert_fault(m.exec(&[0xD9, 0x03]), vector::GP, Some(0));

        let mut m = Machine::flat32();
        m.set_gdt(FREE_SLOT, seg_desc(DATA, 0xFFFF, 0x90, 0x4)); // read-only data
        m.load_seg(SegReg::Ds, (FREE_SLOT * 8) as u16);
        m.set_reg(EBX, 0);
        assert_retired(m.exec(&[0xD9, 0x03])); // a load reads: fine
        assert_fault(m.exec(&[0xD9, 0x3B]), vector::GP, Some(0)); // fnstcw [ebx] writes
    }

    // Encodings the x87 leaves reserved (D9 D1, D9 /1 with memory) are #UD
    // with an FPU present, as under QEMU; after CR0.EM they are #NM first.
    #[test]
    fn reserved_escapes_are_invalid() {
        let mut m = Machine::flat32();
        assert_fault(m.exec(&[0xD9, 0xD1]), vector::UD, None);
        let mut m = Machine::flat32();
        let a = d32(DATA);
        assert_fault(m.exec(&[0xD9, 0x0D, a[0], a[1], a[2], a[3]]), vector::UD, None);
        let mut m = Machine::flat32();
        m.cpu.state.cr0 |= cr0::EM;
        assert_fault(m.exec(&[0xD9, 0xD1]), vector::NM, None);
    }

    // SDM Vol. 2B, WAIT/FWAIT: #NM only when both CR0.MP and CR0.TS are set (it is
    // not an escape, so EM does not matter).
    #[test]
    fn wait() {
        let mut m = Machine::flat32();
        m.cpu.state.cr0 |= cr0::MP | cr0::TS;
        assert_fault(m.exec(&[0x9B]), vector::NM, None);
        for bits in [cr0::TS, cr0::EM, cr0::MP] {
            let mut m = Machine::flat32();
            m.cpu.state.cr0 |= bits;
            assert_retired(m.exec(&[0x9B]));
        }
    }

    // SDM Vol. 2A, LOCK: #UD on an escape.
    #[test]
    fn lock_escape_is_ud() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, DATA);
        assert_fault(m.exec(&[0xF0, 0xD8, 0x00]), vector::UD, None);
    }

    use super::float::{self, F80};
    use super::stack::sw;
    use crate::cpu::state::flags::{CF, PF, ZF};

    /// `op [DATA]` with a 32-bit displacement: the escape, its ModR/M with
    /// mod 00 and r/m 101, the address.
    fn at_data(escape: u8, reg: u8) -> [u8; 6] {
        let a = d32(DATA);
        [escape, (reg << 3) | 5, a[0], a[1], a[2], a[3]]
    }

    fn run(m: &mut Machine, code: &[&[u8]]) {
        for bytes in code {
            assert_retired(m.exec(bytes));
        }
    }

    fn one() -> F80 {
        F80::new(false, 0x3FFF, 1 << 63)
    }

    // The classic probe finds an FPU: FNINIT, then FNSTSW AX gives 0 and
    // FNSTCW the control word 037Fh (SDM Vol. 1, 8.1.5, table 8-10).
    #[test]
    fn fninit_and_the_probe() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x5A5A);
        run(&mut m, &[&[0xDB, 0xE3], &[0xDF, 0xE0], &at_data(0xD9, 7)]);
        assert_eq!(m.reg(EAX), 0);
        assert_eq!(m.r16(DATA), 0x037F);
        assert_eq!(m.cpu.state.fpu.tag, 0xFFFF, "every register empty");
    }

    // Loads push, stores convert and pop: 1 + 1 stored as a single is 2.0;
    // an integer round trip; the extended format stored as it is.
    #[test]
    fn loads_arithmetic_and_stores() {
        let mut m = Machine::flat32();
        run(
            &mut m,
            &[&[0xD9, 0xE8], &[0xD9, 0xE8], &[0xDE, 0xC1], &at_data(0xD9, 3)],
        );
        assert_eq!(m.r32(DATA), 0x4000_0000, "fstp dword: 2.0");
        assert_eq!(m.cpu.state.fpu.top(), 0, "balanced");
        m.w32(DATA, 0xFFFF_FF85); // -123
        run(&mut m, &[&at_data(0xDB, 0), &at_data(0xDF, 3)]); // fild dword; fistp word
        assert_eq!(m.r16(DATA), 0xFF85);
        run(&mut m, &[&[0xD9, 0xEB], &at_data(0xDB, 7)]); // fldpi; fstp tbyte
        let pi: Vec<u8> = (0..10).map(|i| m.r8(DATA + i)).collect();
        assert_eq!(pi, [0x35, 0xC2, 0x68, 0x21, 0xA2, 0xDA, 0x0F, 0xC9, 0x00, 0x40]);
        // 7 / 2 in double: 3.5.
        m.w32(DATA, 7);
        m.w32(DATA + 4, 2);
        let a4 = d32(DATA + 4);
        run(
            &mut m,
            &[
                &at_data(0xDB, 0),
                &[0xDB, 0x05, a4[0], a4[1], a4[2], a4[3]],
                &[0xDE, 0xF9],
                &at_data(0xDD, 3),
            ],
        ); // fild 7; fild 2; fdivp st(1), st(0); fstp qword
        assert_eq!(m.r32(DATA + 4), 0x400C_0000, "3.5 as a double");
    }

    // Rounding control applies to integer stores: 2.5 is 2 to nearest, 3 up.
    #[test]
    fn rounding_control_rounds_integer_stores() {
        for (rc, want) in [(0u16, 2u16), (1, 2), (2, 3), (3, 2)] {
            let mut m = Machine::flat32();
            m.w32(DATA, 0x4020_0000); // 2.5f
            m.w16(DATA + 8, 0x037F | rc << 10);
            let c = d32(DATA + 8);
            run(
                &mut m,
                &[
                    &[0xD9, 0x2D, c[0], c[1], c[2], c[3]],
                    &at_data(0xD9, 0),
                    &at_data(0xDF, 3),
                ],
            );
            assert_eq!(m.r16(DATA), want, "RC {rc}");
            assert_ne!(m.cpu.state.fpu.status & 0x20, 0, "PE: inexact");
        }
    }

    // SDM Vol. 1, 8.5.1.1: a ninth push overflows the stack (IE, SF, C1 = 1,
    // the indefinite pushed); an operation on an empty register underflows
    // (C1 = 0).
    #[test]
    fn stack_overflow_and_underflow() {
        let mut m = Machine::flat32();
        for _ in 0..8 {
            run(&mut m, &[&[0xD9, 0xE8]]);
        }
        run(&mut m, &[&[0xD9, 0xEE]]); // fldz: a ninth value
        let fpu = m.cpu.state.fpu;
        assert_eq!(fpu.status & 0x41, 0x41, "IE and SF");
        assert_ne!(fpu.status & sw::C1, 0, "overflow");
        assert_eq!(fpu.st(0), F80::INDEFINITE);
        let mut m = Machine::flat32();
        run(&mut m, &[&[0xD8, 0xC1]]); // fadd st, st(1) on an empty stack
        let fpu = m.cpu.state.fpu;
        assert_eq!(fpu.status & (0x41 | sw::C1), 0x41, "IE, SF, C1 = 0");
        assert_eq!(fpu.st(0), F80::INDEFINITE);
    }

    // An unmasked exception is pending until the next waiting instruction:
    // #MF there with CR0.NE (SDM Vol. 1, 8.6, 8.7); FNSTSW still reads it
    // and FNCLEX clears it.
    #[test]
    fn unmasked_exceptions_are_reported_by_the_next_waiting_instruction() {
        let mut m = Machine::flat32();
        m.cpu.state.cr0 |= cr0::NE;
        m.w16(DATA, 0x037B); // ZE unmasked
        run(
            &mut m,
            &[&at_data(0xD9, 5), &[0xD9, 0xE8], &[0xD9, 0xEE], &[0xDE, 0xF9]],
        ); // 1 / 0
        let fpu = m.cpu.state.fpu;
        assert_eq!(fpu.status & 0x8084, 0x8084, "ZE, ES and B");
        assert_eq!(fpu.st(0), F80::default(), "destination kept, no pop");
        assert_eq!(fpu.st(1), one());
        run(&mut m, &[&[0xDF, 0xE0]]); // fnstsw ax: no fault
        assert_eq!(m.reg(EAX) & 0x84, 0x84);
        let mut waiting = Machine::flat32();
        waiting.cpu.state = m.cpu.state.clone();
        waiting.cpu.state.eip = CODE;
        assert_fault(waiting.exec(&[0x9B]), vector::MF, None);
        let mut next = Machine::flat32();
        next.cpu.state = m.cpu.state.clone();
        next.cpu.state.eip = CODE;
        assert_fault(next.exec(&[0xD9, 0xE8]), vector::MF, None);
        run(&mut m, &[&[0xDB, 0xE2], &[0x9B], &[0xD9, 0xE8]]); // fnclex; fwait; fld1
        assert_eq!(m.cpu.state.fpu.status & 0x80FF, 0);
    }

    // FCOM sets C3/C2/C0, FCOMI ZF/PF/CF; FUCOM takes a quiet NaN without
    // IE, FCOM does not.
    #[test]
    fn comparisons() {
        let mut m = Machine::flat32();
        run(&mut m, &[&[0xD9, 0xE8], &[0xD9, 0xEE], &[0xD8, 0xD1]]); // st0 = 0, st1 = 1: fcom st(1)
        assert_eq!(m.cpu.state.fpu.status & sw::CC, sw::C0, "less");
        run(&mut m, &[&[0xDB, 0xF1]]); // fcomi st, st(1)
        assert_eq!(m.status() & (ZF | PF | CF), CF);
        run(&mut m, &[&[0xD9, 0xC9], &[0xDB, 0xF1]]); // fxch; fcomi: 1 > 0
        assert_eq!(m.status() & (ZF | PF | CF), 0);
        run(&mut m, &[&[0xD9, 0xE4]]); // ftst: 1 > 0
        assert_eq!(m.cpu.state.fpu.status & sw::CC, 0);
        m.w32(DATA, 0x7FC0_0000); // a quiet NaN
        run(&mut m, &[&at_data(0xD9, 0), &[0xDD, 0xE1]]); // fld; fucom st(1)
        assert_eq!(
            m.cpu.state.fpu.status & (sw::CC | 1),
            sw::C3 | sw::C2 | sw::C0,
            "unordered, no IE"
        );
        run(&mut m, &[&[0xD8, 0xD1]]); // fcom st(1)
        assert_eq!(m.cpu.state.fpu.status & 1, 1, "IE");
    }

    // FXAM: C3/C2/C0 the class, C1 the sign, "empty" for an empty register.
    #[test]
    fn fxam_classifies() {
        let mut m = Machine::flat32();
        run(&mut m, &[&[0xD9, 0xE5]]);
        assert_eq!(
            m.cpu.state.fpu.status & (sw::C3 | sw::C2 | sw::C0),
            sw::C3 | sw::C0,
            "empty"
        );
        run(&mut m, &[&[0xD9, 0xE8], &[0xD9, 0xE0], &[0xD9, 0xE5]]); // fld1; fchs; fxam
        assert_eq!(m.cpu.state.fpu.status & sw::CC, sw::C2 | sw::C1, "negative normal");
        run(&mut m, &[&[0xD9, 0xEE], &[0xD9, 0xE5]]);
        assert_eq!(m.cpu.state.fpu.status & sw::CC, sw::C3, "positive zero");
    }

    // FCMOVcc moves on the EFLAGS condition; FXCH swaps.
    #[test]
    fn fcmov_and_fxch() {
        let mut m = Machine::flat32();
        run(&mut m, &[&[0xD9, 0xE8], &[0xD9, 0xEE]]); // st0 = 0, st1 = 1
        m.set_flags(0);
        run(&mut m, &[&[0xDA, 0xC9]]); // fcmove: ZF clear, no move
        assert_eq!(m.cpu.state.fpu.st(0), F80::default());
        m.set_flags(ZF);
        run(&mut m, &[&[0xDA, 0xC9]]);
        assert_eq!(m.cpu.state.fpu.st(0), one());
        run(&mut m, &[&[0xD9, 0xEE], &[0xD9, 0xCA]]); // fldz; fxch st(2)
        assert_eq!(m.cpu.state.fpu.st(2), F80::default());
        assert_eq!(m.cpu.state.fpu.st(0), one());
    }

    // FPREM: 7 rem 2 = 1 with quotient 3, whose low bits go to C0 (Q2),
    // C3 (Q1) and C1 (Q0); C2 clear as the reduction is complete.
    #[test]
    fn fprem_reports_the_quotient() {
        let mut m = Machine::flat32();
        m.w32(DATA, 2);
        m.w32(DATA + 4, 7);
        let b = d32(DATA + 4);
        run(
            &mut m,
            &[&at_data(0xDB, 0), &[0xDB, 0x05, b[0], b[1], b[2], b[3]], &[0xD9, 0xF8]],
        );
        let fpu = m.cpu.state.fpu;
        assert_eq!(fpu.st(0), one());
        assert_eq!(fpu.status & sw::CC, sw::C3 | sw::C1);
    }

    // FNSAVE stores the environment and the registers in stack order, then
    // initializes; FRSTOR brings everything back.
    #[test]
    fn fnsave_and_frstor_round_trip() {
        let mut m = Machine::flat32();
        run(&mut m, &[&[0xD9, 0xE8], &[0xD9, 0xEB], &[0xD9, 0xEE]]); // 1, pi, 0
        let before = m.cpu.state.fpu;
        run(&mut m, &[&at_data(0xDD, 6)]); // fnsave [DATA]
        assert_eq!(m.cpu.state.fpu.tag, 0xFFFF, "initialized after the save");
        assert_eq!(m.r16(DATA), 0x037F);
        assert_eq!(m.r16(DATA + 4) & 0x3800, 5 << 11, "TOP 5 in the saved status word");
        // The tag word: ST0 (physical 5) zero, ST1 valid, ST2 valid, rest empty.
        assert_eq!(m.r16(DATA + 8), 0b00_00_01_11_11_11_11_11);
        assert_eq!(m.r32(DATA + 12), CODE + 4, "the last x87 instruction (fldz)");
        run(&mut m, &[&at_data(0xDD, 4)]); // frstor [DATA]
        let after = m.cpu.state.fpu;
        assert_eq!(
            (after.status, after.tag, after.regs),
            (before.status, before.tag, before.regs)
        );
    }

    // A store that faults (here: past the segment limit) changes nothing:
    // the register is not popped and no flag is set.
    #[test]
    fn a_faulting_store_leaves_the_fpu_as_it_was() {
        let mut m = Machine::flat32();
        m.set_gdt(FREE_SLOT, seg_desc(DATA, 0xFF, ACC_DATA0, 0x4));
        m.load_seg(SegReg::Ds, (FREE_SLOT * 8) as u16);
        run(&mut m, &[&[0xD9, 0xEB]]); // fldpi
        let before = m.cpu.state.fpu;
        m.set_reg(EBX, 0xFC);
        assert_fault(m.exec(&[0xDD, 0x1B]), vector::GP, Some(0)); // fstp qword [ebx]: FC..103 crosses the limit
        assert_eq!(m.cpu.state.fpu, before);
    }

    // FSIN of pi/6 is 0.5 rounded; FSINCOS leaves the cosine on top; FPATAN
    // of (1, 1) is pi/4 (FLDPI's bits, exponent one less) and pops.
    #[test]
    fn transcendentals() {
        let mut m = Machine::flat32();
        m.w32(DATA, 6);
        run(&mut m, &[&[0xD9, 0xEB], &at_data(0xDA, 6), &[0xD9, 0xFE]]); // fldpi; fidiv dword 6; fsin
        let half = F80::new(false, 0x3FFE, 1 << 63);
        let s = m.cpu.state.fpu.st(0);
        assert_eq!(s.sign_exp, half.sign_exp);
        assert!(s.mantissa.abs_diff(half.mantissa) <= 1, "sin(pi/6) = {s:?}");
        assert_eq!(m.cpu.state.fpu.status & sw::C2, 0, "in range");
        run(&mut m, &[&[0xD9, 0xEE], &[0xD9, 0xFB]]); // fldz; fsincos
        assert_eq!(m.cpu.state.fpu.st(0), one(), "cos 0 on top");
        assert_eq!(m.cpu.state.fpu.st(1), F80::default(), "sin 0 below");
        let mut m = Machine::flat32();
        run(&mut m, &[&[0xD9, 0xE8], &[0xD9, 0xE8], &[0xD9, 0xF3]]); // fld1; fld1; fpatan
        let pi = float::constant(float::Constant::Pi, float::Control(0x037F));
        assert_eq!(m.cpu.state.fpu.st(0), F80::new(false, pi.sign_exp - 2, pi.mantissa));
        assert_eq!(m.cpu.state.fpu.top(), 7, "one pop");
    }
}
