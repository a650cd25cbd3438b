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
