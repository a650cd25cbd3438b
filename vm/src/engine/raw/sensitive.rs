//! Which instructions ring compression cares about (SDM Vol. 3A, 2.8
//! "System instruction summary", 5.9 "Privileged instructions"; the
//! sensitive-but-unprivileged list is Robin and Irvine's analysis of the
//! Pentium, which VirtualBox's code scanner also worked from).

use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

/// How an instruction behaves when guest ring-0 code runs as ring 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Same result at ring 1 as at ring 0.
    Plain,
    /// Faults at ring 1 (#GP), so the monitor sees it without help.
    Privileged,
    /// Runs at ring 1 without faulting but shows or depends on ring-1 state
    /// (RPL 1, IF = 1, IOPL = 0, the monitor's tables): the scanner must
    /// mark it before it runs.
    Sensitive,
}

pub fn classify(inst: &Instruction) -> Class {
    match inst.mnemonic() {
        M::Cli
        | M::Sti
        | M::Hlt
        | M::In
        | M::Out
        | M::Insb
        | M::Insw
        | M::Insd
        | M::Outsb
        | M::Outsw
        | M::Outsd
        | M::Lgdt
        | M::Lidt
        | M::Lldt
        | M::Ltr
        | M::Lmsw
        | M::Clts
        | M::Invlpg
        | M::Invd
        | M::Wbinvd
        | M::Rdmsr
        | M::Wrmsr => Class::Privileged,
        M::Mov if is_cr_or_dr(inst) => Class::Privileged,
        M::Pushf
        | M::Pushfd
        | M::Popf
        | M::Popfd
        | M::Sgdt
        | M::Sidt
        | M::Sldt
        | M::Str
        | M::Smsw
        | M::Lar
        | M::Lsl
        | M::Verr
        | M::Verw
        | M::Iret
        | M::Iretd
        | M::Int
        | M::Int3
        | M::Into
        | M::Int1
        | M::Retf
        | M::Cpuid => Class::Sensitive,
        M::Push if inst.op0_register().is_segment_register() => Class::Sensitive,
        // MOV r/m, Sreg: reads a selector, and CS and SS carry RPL 1.
        M::Mov if inst.op1_kind() == OpKind::Register && inst.op1_register().is_segment_register() => Class::Sensitive,
        M::Jmp | M::Call if is_far(inst) => Class::Sensitive,
        _ => Class::Plain,
    }
}

fn is_cr_or_dr(inst: &Instruction) -> bool {
    let (a, b) = (inst.op0_register(), inst.op1_register());
    a.is_cr() || a.is_dr() || b.is_cr() || b.is_dr()
}

fn is_far(inst: &Instruction) -> bool {
    matches!(inst.op0_kind(), OpKind::FarBranch16 | OpKind::FarBranch32)
        || (inst.op0_kind() == OpKind::Memory && matches!(inst.memory_size().size(), 4 | 6))
            && matches!(
                inst.code(),
                iced_x86::Code::Jmp_m1616
                    | iced_x86::Code::Jmp_m1632
                    | iced_x86::Code::Call_m1616
                    | iced_x86::Code::Call_m1632
            )
}

/// Whether a patch may run the instruction inline, with the reference
/// semantics on the guest's true state, inside a block. Instructions that
/// change privilege, paging, descriptor tables or the processor's mode, or
/// halt it, need the monitor: they keep trapping.
pub fn inlinable(inst: &Instruction) -> bool {
    match inst.mnemonic() {
        M::Cli
        | M::Sti
        | M::In
        | M::Out
        | M::Pushf
        | M::Pushfd
        | M::Popf
        | M::Popfd
        | M::Sgdt
        | M::Sidt
        | M::Sldt
        | M::Str
        | M::Smsw
        | M::Lar
        | M::Lsl
        | M::Verr
        | M::Verw
        | M::Cpuid
        | M::Invd
        | M::Wbinvd
        | M::Rdmsr => true,
        // Selector reads and data-segment loads (a DPL-0 data segment faults
        // at ring 1); SS loads too: the patch keeps MOV SS's interrupt shadow.
        M::Mov | M::Push | M::Pop => {
            let r0 = inst.op0_register();
            let r1 = inst.op1_register();
            (r0.is_segment_register() && r0 != Register::CS) || r1.is_segment_register()
        }
        _ => false,
    }
}

/// Whether running the instruction may leave the guest's IF clear, so that
/// the code after it belongs to the patch (it runs raw with the virtual IF
/// clear, as PATM's patch blocks did).
pub fn may_clear_if(inst: &Instruction) -> bool {
    matches!(inst.mnemonic(), M::Cli | M::Popf | M::Popfd)
}

/// Whether the instruction may set the guest's IF: the end of a patch region.
pub fn may_set_if(inst: &Instruction) -> bool {
    matches!(inst.mnemonic(), M::Sti | M::Popf | M::Popfd | M::Iret | M::Iretd)
}

/// The vector of a software interrupt instruction, if it is one. Run raw,
/// these go through the monitor's IDT to the monitor.
pub fn software_interrupt(inst: &Instruction) -> Option<u8> {
    match inst.mnemonic() {
        M::Int => Some(inst.immediate8()),
        M::Int3 => Some(crate::cpu::vector::BP),
        M::Into => Some(crate::cpu::vector::OF),
        M::Int1 => Some(crate::cpu::vector::DB),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(32, bytes, 0, DecoderOptions::NONE).decode()
    }

    #[test]
    fn the_issue_lists_are_classified() {
        for (bytes, class) in [
            (&[0xFA][..], Class::Privileged),                    // cli
            (&[0xE6, 0x80], Class::Privileged),                  // out 0x80, al
            (&[0x0F, 0x20, 0xC0], Class::Privileged),            // mov eax, cr0
            (&[0x9C], Class::Sensitive),                         // pushfd
            (&[0x8C, 0xC8], Class::Sensitive),                   // mov eax, cs
            (&[0x0F, 0x01, 0x05, 0, 0, 0, 0], Class::Sensitive), // sgdt [0]
            (&[0x0E], Class::Sensitive),                         // push cs
            (&[0xEA, 0, 0, 0, 0, 8, 0], Class::Sensitive),       // jmp far 8:0
            (&[0xFF, 0x28], Class::Sensitive),                   // jmp far [eax]
            (&[0xCD, 0x80], Class::Sensitive),                   // int 0x80
            (&[0x01, 0xD8], Class::Plain),                       // add eax, ebx
            (&[0xFF, 0xE0], Class::Plain),                       // jmp eax
            (&[0x8E, 0xD8], Class::Plain),                       // mov ds, ax
        ] {
            assert_eq!(classify(&decode(bytes)), class, "{bytes:02x?}");
        }
        assert!(inlinable(&decode(&[0x9D]))); // popfd
        assert!(inlinable(&decode(&[0x8E, 0xD8]))); // mov ds, ax
        assert!(!inlinable(&decode(&[0xF4]))); // hlt
        assert!(!inlinable(&decode(&[0xCF]))); // iretd
        assert_eq!(software_interrupt(&decode(&[0xCD, 0x80])), Some(0x80));
    }
}
