//! x87 escape instructions (opcodes D8-DF) on a processor without a floating-point
//! unit (SDM Vol. 1, chapter 8 "Programming with the x87 FPU", 8.1 and 8.3; Vol. 3A,
//! 2.5 "Control registers" (CR0.EM, CR0.TS) and table 2-2, 6.15 "Interrupt 7 -
//! Device Not Available Exception (#NM)", 9.2.1 "Configuring the x87 FPU
//! environment").
//!
//! We model an i686 without an x87 (CPUID.1:EDX.FPU = 0). An escape instruction
//! raises #NM when CR0.EM or CR0.TS is set, so an emulator in the guest kernel can
//! take over. With both clear nothing answers the escape, and the processor behaves
//! like an 8086 or 80286 without a coprocessor: it computes the memory operand's
//! address (with the segment checks that implies) and does nothing else. That is
//! what the classic probe `fninit; fnstsw ax` relies on: the store never happens,
//! so AX keeps the value the software preloaded and no FPU is detected.
//! WAIT/FWAIT is not an escape and lives in `system`.

pub mod float;

use iced_x86::{Decoder, DecoderOptions, EncodingKind, Instruction, Mnemonic, OpCodeTableKind, OpKind};

use super::Flow;
use crate::bus::Bus;
use crate::cpu::mmu::Access;
use crate::cpu::state::cr0;
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

/// Legacy prefixes that may precede an escape opcode.
fn is_prefix(b: u8) -> bool {
    matches!(
        b,
        0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3
    )
}

/// Decodes an escape encoding the x87 leaves reserved (iced rejects them, e.g.
/// D9 /1 with a memory operand, D9 D1-D7, DA E0-E3). Without a coprocessor every
/// D8-DF opcode is an escape, so it must still decode with its full length and
/// memory operand. We re-decode with the opcode and ModRM reg field replaced by a
/// defined form with the same addressing bytes: FNOP (D9 D0) for register forms,
/// FLDCW m16 (D9 /5) for memory forms, which checks the operand as a word read,
/// the least any escape transfers.
pub(crate) fn decode_reserved_esc(bitness: u32, bytes: &[u8], ip: u32) -> Option<Instruction> {
    let at = bytes.iter().position(|&b| !is_prefix(b))?;
    let opcode = *bytes.get(at)?;
    let modrm = *bytes.get(at + 1)?;
    if !(0xD8..=0xDF).contains(&opcode) {
        return None;
    }
    let mut patched = [0u8; super::MAX_INSN_LEN];
    let len = bytes.len().min(patched.len());
    patched[..len].copy_from_slice(&bytes[..len]);
    patched[at] = 0xD9;
    patched[at + 1] = if modrm >> 6 == 3 {
        0xD0
    } else {
        (modrm & 0xC7) | (5 << 3)
    };
    let mut decoder = Decoder::with_ip(
        bitness,
        &patched[..len],
        u64::from(ip),
        DecoderOptions::NO_INVALID_CHECK,
    );
    let inst = decoder.decode();
    (!inst.is_invalid()).then_some(inst)
}

/// Escapes that write their memory operand (for the segment type check).
fn stores(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Fst
            | M::Fstp
            | M::Fist
            | M::Fistp
            | M::Fisttp
            | M::Fbstp
            | M::Fnstenv
            | M::Fstenv
            | M::Fnsave
            | M::Fsave
            | M::Fnstcw
            | M::Fstcw
            | M::Fnstsw
            | M::Fstsw
    )
}

pub fn exec<B: Bus>(cpu: &mut Cpu, _bus: &mut B, inst: &Instruction) -> Result<Flow> {
    // EM: the guest emulates the FPU; TS: the FPU context belongs to another task.
    // Either way every escape raises #NM, before any operand is looked at
    // (SDM Vol. 3A, table 2-2 and 6.9 priority class "faults decoding the instruction").
    if cpu.state.cr0 & (cr0::EM | cr0::TS) != 0 {
        return Err(Fault::new(vector::NM));
    }
    if (0..inst.op_count()).any(|i| inst.op_kind(i) == OpKind::Memory) {
        // No coprocessor takes the operand, but forming its address still checks
        // it against the segment (a word at offset FFFFh faults in real mode).
        let (seg, ea) = cpu.mem_operand(inst);
        let size = (inst.memory_size().size() as u32).max(1);
        let access = if stores(inst.mnemonic()) {
            Access::Write
        } else {
            Access::Read
        };
        cpu.seg_linear(seg, ea, size, access)?;
    }
    Ok(Flow::Next)
}

#[cfg(test)]
mod tests {
    use crate::cpu::state::reg::{EAX, EBX, ESI};
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

    // No FPU and EM = TS = 0: an escape is a no-op, so the classic probe
    // "fninit; fnstsw ax" leaves AX as preloaded, and stores never write.
    #[test]
    fn no_fpu_escapes_do_nothing() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0x5A5A);
        m.w32(DATA, 0x1234_5678);
        let a = d32(DATA);
        assert_retired(m.exec(&[0xDB, 0xE3])); // fninit
        assert_retired(m.exec(&[0xDF, 0xE0])); // fnstsw ax
        assert_eq!(m.reg(EAX), 0x5A5A);
        assert_retired(m.exec(&[0xD9, 0x3D, a[0], a[1], a[2], a[3]])); // fnstcw [DATA]
        assert_retired(m.exec(&[0xDD, 0x3D, a[0], a[1], a[2], a[3]])); // fnstsw [DATA]
        assert_eq!(m.r32(DATA), 0x1234_5678);
        assert_retired(m.exec(&[0xD9, 0xC0])); // fld st(0)
        assert_eq!(m.eip(), CODE + 2 + 2 + 6 + 6 + 2);
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

    // Every D8-DF opcode is an escape, including encodings the x87 leaves
    // reserved (D9 D1, D9 /1 with memory): they decode with their full length.
    #[test]
    fn reserved_escapes_decode() {
        let mut m = Machine::flat32();
        assert_retired(m.exec(&[0xD9, 0xD1]));
        assert_eq!(m.eip(), CODE + 2);
        let a = d32(DATA);
        assert_retired(m.exec(&[0xD9, 0x0D, a[0], a[1], a[2], a[3]])); // D9 /1 [disp32]
        assert_eq!(m.eip(), CODE + 8);
        assert_retired(m.exec(&[0x66, 0xDA, 0xE0]));
        assert_eq!(m.eip(), CODE + 11);
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

    // Real mode, as on a coprocessor-less 80286: the operand at offset FFFFh
    // crosses the segment end and raises #GP(0); otherwise nothing happens.
    #[test]
    fn real_mode_escape() {
        let mut m = Machine::real16();
        m.set_reg(ESI, 0xFFFF);
        assert_fault(m.exec(&[0xD8, 0x04]), vector::GP, Some(0)); // fadd dword [si]
        let mut m = Machine::real16();
        m.set_reg(ESI, 0x10);
        assert_retired(m.exec(&[0xD8, 0x04]));
        assert_eq!(m.eip(), 2);
    }
}
