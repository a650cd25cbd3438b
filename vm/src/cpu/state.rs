//! Architectural state of an IA-32 processor as plain data (Intel SDM Vol. 3A,
//! chapter 2 "System Architecture Overview" and 3.4.3 "Segment Registers").
//!
//! Everything the guest can observe lives here, and nothing else does: two states
//! compare equal exactly when the guest could not tell them apart, which is what
//! checkpoint digests and engine cross-checks rely on.

/// EFLAGS bits (SDM Vol. 1, 3.4.3).
pub mod flags {
    pub const CF: u32 = 1 << 0;
    pub const FIXED1: u32 = 1 << 1;
    pub const PF: u32 = 1 << 2;
    pub const AF: u32 = 1 << 4;
    pub const ZF: u32 = 1 << 6;
    pub const SF: u32 = 1 << 7;
    pub const TF: u32 = 1 << 8;
    pub const IF: u32 = 1 << 9;
    pub const DF: u32 = 1 << 10;
    pub const OF: u32 = 1 << 11;
    pub const IOPL: u32 = 3 << 12;
    pub const NT: u32 = 1 << 14;
    pub const RF: u32 = 1 << 16;
    pub const VM: u32 = 1 << 17;
    pub const AC: u32 = 1 << 18;
    pub const VIF: u32 = 1 << 19;
    pub const VIP: u32 = 1 << 20;
    pub const ID: u32 = 1 << 21;
    /// The arithmetic status flags.
    pub const STATUS: u32 = CF | PF | AF | ZF | SF | OF;
    /// Bits software can change on an i686 (bit 1 reads as one, the rest as zero).
    pub const WRITABLE: u32 = STATUS | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID;
    /// The system flags a CLI, STI or POPF may change that matter between
    /// blocks (the engines compare them).
    pub const SYSTEM: u32 = IF | TF | IOPL | NT | RF | VM | AC;
    /// What POPF may write at CPL 0 outside V86 mode (`Cpu::write_eflags`).
    pub const POPF_WRITABLE: u32 = WRITABLE & !(VM | VIF | VIP | RF);
}

/// CR0 bits (SDM Vol. 3A, 2.5).
pub mod cr0 {
    pub const PE: u32 = 1 << 0;
    pub const MP: u32 = 1 << 1;
    pub const EM: u32 = 1 << 2;
    pub const TS: u32 = 1 << 3;
    pub const ET: u32 = 1 << 4;
    pub const NE: u32 = 1 << 5;
    pub const WP: u32 = 1 << 16;
    pub const AM: u32 = 1 << 18;
    pub const NW: u32 = 1 << 29;
    pub const CD: u32 = 1 << 30;
    pub const PG: u32 = 1 << 31;
}

/// CR4 bits we implement (SDM Vol. 3A, 2.5).
pub mod cr4 {
    pub const VME: u32 = 1 << 0;
    pub const PVI: u32 = 1 << 1;
    pub const TSD: u32 = 1 << 2;
    pub const DE: u32 = 1 << 3;
    pub const PSE: u32 = 1 << 4;
    pub const PGE: u32 = 1 << 7;
    /// RDPMC allowed at any CPL.
    pub const PCE: u32 = 1 << 8;
    pub const SUPPORTED: u32 = VME | PVI | TSD | DE | PSE | PGE | PCE;
}

/// Segment register numbers in the order of their ModRM encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum SegReg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

impl SegReg {
    pub const ALL: [SegReg; 6] = [SegReg::Es, SegReg::Cs, SegReg::Ss, SegReg::Ds, SegReg::Fs, SegReg::Gs];

    pub fn name(self) -> &'static str {
        ["es", "cs", "ss", "ds", "fs", "gs"][self as usize]
    }
}

/// A segment register with its hidden descriptor cache (SDM Vol. 3A, 3.4.3).
///
/// `attr` holds descriptor byte 5 (type, S, DPL, P) in bits 0..8 and the high nibble
/// of byte 6 (AVL, L, D/B, G) in bits 12..16, the layout VMX uses for access rights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct Segment {
    pub selector: u16,
    pub base: u32,
    /// Byte-granular limit (already expanded when G=1).
    pub limit: u32,
    pub attr: u16,
}

pub mod attr {
    pub const ACCESSED: u16 = 1 << 0;
    /// Data: writable. Code: readable.
    pub const RW: u16 = 1 << 1;
    /// Data: expand-down. Code: conforming.
    pub const DC: u16 = 1 << 2;
    pub const CODE: u16 = 1 << 3;
    /// S: code/data rather than system descriptor.
    pub const S: u16 = 1 << 4;
    pub const DPL_SHIFT: u16 = 5;
    pub const P: u16 = 1 << 7;
    pub const AVL: u16 = 1 << 12;
    pub const DB: u16 = 1 << 14;
    pub const G: u16 = 1 << 15;
}

impl Segment {
    /// A real-mode segment: base = selector * 16, 64 KiB limit, present
    /// read/write data (SDM Vol. 3A, 20.1.1).
    pub fn real_mode(selector: u16) -> Self {
        Segment {
            selector,
            base: u32::from(selector) << 4,
            limit: 0xFFFF,
            attr: attr::P | attr::S | attr::RW | attr::ACCESSED,
        }
    }

    pub fn dpl(&self) -> u8 {
        ((self.attr >> attr::DPL_SHIFT) & 3) as u8
    }
    pub fn present(&self) -> bool {
        self.attr & attr::P != 0
    }
    pub fn is_code(&self) -> bool {
        self.attr & attr::S != 0 && self.attr & attr::CODE != 0
    }
    pub fn big(&self) -> bool {
        self.attr & attr::DB != 0
    }
    pub fn rpl(&self) -> u8 {
        (self.selector & 3) as u8
    }
}

/// GDTR / IDTR (SDM Vol. 3A, 2.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct TableReg {
    pub base: u32,
    pub limit: u16,
}

/// The model-specific registers a 32-bit kernel touches (SDM Vol. 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct Msrs {
    pub sysenter_cs: u32,
    pub sysenter_esp: u32,
    pub sysenter_eip: u32,
    /// IA32_TSC is virtual time plus this offset, so a WRMSR to it stays deterministic.
    pub tsc_offset: u64,
}

/// General-purpose register numbers in ModRM order.
pub mod reg {
    pub const EAX: usize = 0;
    pub const ECX: usize = 1;
    pub const EDX: usize = 2;
    pub const EBX: usize = 3;
    pub const ESP: usize = 4;
    pub const EBP: usize = 5;
    pub const ESI: usize = 6;
    pub const EDI: usize = 7;
    pub const NAMES: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
}

/// The x87 register file (SDM Vol. 1, 8.1): eight 80-bit data registers
/// in stack order of their physical numbers, the control, status and tag
/// words, and the last instruction's opcode and pointers, laid out for
/// compiled code as the rest of the state is.
/// Registers are stored by physical number, each the 80-bit format in its
/// first 10 bytes; the tag word keeps empty/non-empty (see `exec::x87`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct FpuState {
    /// R0-R7, each the 80-bit extended format in its low 10 bytes (little
    /// endian), padded to 16.
    pub regs: [[u8; 16]; 8],
    pub control: u16,
    pub status: u16,
    /// The full 16-bit tag word (two bits per register).
    pub tag: u16,
    pub opcode: u16,
    pub ip: u32,
    pub cs: u16,
    pub ds: u16,
    pub dp: u32,
}

impl Default for FpuState {
    /// The state after FNINIT (SDM Vol. 1, 8.1.8 / table 8-10 is FINIT's):
    /// control 0x037F, every register empty.
    fn default() -> Self {
        FpuState {
            regs: [[0; 16]; 8],
            control: 0x037F,
            status: 0,
            tag: 0xFFFF,
            opcode: 0,
            ip: 0,
            cs: 0,
            ds: 0,
            dp: 0,
        }
    }
}

/// The complete architectural state of the processor, laid out as C lays
/// out a struct, so code generated at run time (the compiler tier) reads
/// and writes the very fields the interpreter does, at the offsets in
/// [`offsets`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct CpuState {
    pub regs: [u32; 8],
    pub eip: u32,
    pub eflags: u32,
    pub segs: [Segment; 6],
    pub ldtr: Segment,
    pub tr: Segment,
    pub gdtr: TableReg,
    pub idtr: TableReg,
    pub cr0: u32,
    pub cr2: u32,
    pub cr3: u32,
    pub cr4: u32,
    pub dr: [u32; 8],
    pub msrs: Msrs,
    /// Halted by HLT until the next interrupt.
    pub halted: bool,
    /// The instruction just retired blocks interrupts before the next one
    /// (STI, MOV SS, POP SS; SDM Vol. 3A, 6.8.3).
    pub interrupt_shadow: bool,
    /// An NMI is being handled: the next one waits for an IRET (SDM Vol.
    /// 3A, 6.7.1).
    pub nmi_blocked: bool,
    /// The x87 FPU (`exec::x87`).
    pub fpu: FpuState,
}

/// Byte offsets of the fields of [`CpuState`] (and of a [`Segment`] within
/// it), for code that addresses the state through a pointer, as QEMU's
/// generated code addresses `CPUX86State`.
pub mod offsets {
    use super::{CpuState, FpuState, Segment};
    use std::mem::{offset_of, size_of};

    pub const REGS: usize = offset_of!(CpuState, regs);
    /// General register `r` (ModRM order: EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI).
    pub const fn reg(r: usize) -> usize {
        REGS + 4 * r
    }
    pub const EIP: usize = offset_of!(CpuState, eip);
    pub const EFLAGS: usize = offset_of!(CpuState, eflags);
    pub const SEGS: usize = offset_of!(CpuState, segs);
    /// Segment register `s` (`SegReg as usize`).
    pub const fn seg(s: usize) -> usize {
        SEGS + SEGMENT_SIZE * s
    }
    pub const SEGMENT_SIZE: usize = size_of::<Segment>();
    pub const SEGMENT_SELECTOR: usize = offset_of!(Segment, selector);
    pub const SEGMENT_BASE: usize = offset_of!(Segment, base);
    pub const SEGMENT_LIMIT: usize = offset_of!(Segment, limit);
    pub const SEGMENT_ATTR: usize = offset_of!(Segment, attr);
    pub const LDTR: usize = offset_of!(CpuState, ldtr);
    pub const TR: usize = offset_of!(CpuState, tr);
    pub const GDTR: usize = offset_of!(CpuState, gdtr);
    pub const IDTR: usize = offset_of!(CpuState, idtr);
    pub const CR0: usize = offset_of!(CpuState, cr0);
    pub const CR2: usize = offset_of!(CpuState, cr2);
    pub const CR3: usize = offset_of!(CpuState, cr3);
    pub const CR4: usize = offset_of!(CpuState, cr4);
    pub const DR: usize = offset_of!(CpuState, dr);
    pub const MSRS: usize = offset_of!(CpuState, msrs);
    pub const HALTED: usize = offset_of!(CpuState, halted);
    pub const INTERRUPT_SHADOW: usize = offset_of!(CpuState, interrupt_shadow);
    pub const FPU: usize = offset_of!(CpuState, fpu);
    pub const FPU_REGS: usize = FPU + offset_of!(FpuState, regs);
    pub const FPU_CONTROL: usize = FPU + offset_of!(FpuState, control);
    pub const FPU_STATUS: usize = FPU + offset_of!(FpuState, status);
    pub const FPU_TAG: usize = FPU + offset_of!(FpuState, tag);
    pub const SIZE: usize = size_of::<CpuState>();
}

impl Default for CpuState {
    fn default() -> Self {
        Self::reset()
    }
}

impl CpuState {
    /// Every segment flat (base 0, 4 GiB, 32-bit) with selector 0x08, CS a
    /// code segment: the tests' protected mode without descriptor tables.
    #[cfg(test)]
    pub(crate) fn flat_segments(&mut self) {
        for s in SegReg::ALL {
            self.segs[s as usize] = Segment {
                selector: 0x08,
                base: 0,
                limit: 0xFFFF_FFFF,
                attr: attr::P | attr::S | attr::RW | attr::DB | attr::G | if s == SegReg::Cs { attr::CODE } else { 0 },
            };
        }
    }

    /// The state after RESET (SDM Vol. 3A, table 9-1), except that CS:IP is
    /// F000:FFF0 with the customary base 0xFFFF0000.
    pub fn reset() -> Self {
        let mut segs = [Segment::real_mode(0); 6];
        segs[SegReg::Cs as usize] = Segment {
            selector: 0xF000,
            base: 0xFFFF_0000,
            limit: 0xFFFF,
            attr: attr::P | attr::S | attr::CODE | attr::RW | attr::ACCESSED,
        };
        CpuState {
            regs: [0, 0, 0x0000_0633, 0, 0, 0, 0, 0],
            eip: 0xFFF0,
            eflags: flags::FIXED1,
            segs,
            ldtr: Segment {
                selector: 0,
                base: 0,
                limit: 0xFFFF,
                attr: attr::P | 2,
            },
            tr: Segment {
                selector: 0,
                base: 0,
                limit: 0xFFFF,
                attr: attr::P | 11,
            },
            gdtr: TableReg { base: 0, limit: 0xFFFF },
            idtr: TableReg { base: 0, limit: 0x3FF },
            cr0: cr0::ET | cr0::CD | cr0::NW,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            dr: [0, 0, 0, 0, 0xFFFF_0FF0, 0x400, 0xFFFF_0FF0, 0x400],
            msrs: Msrs::default(),
            halted: false,
            interrupt_shadow: false,
            nmi_blocked: false,
            fpu: FpuState::default(),
        }
    }

    pub fn seg(&self, s: SegReg) -> &Segment {
        &self.segs[s as usize]
    }

    pub fn protected_mode(&self) -> bool {
        self.cr0 & cr0::PE != 0
    }

    pub fn v86_mode(&self) -> bool {
        self.protected_mode() && self.eflags & flags::VM != 0
    }

    /// Current privilege level: CS.RPL in protected mode, 3 in virtual-8086 mode,
    /// 0 in real mode (SDM Vol. 3A, 5.5).
    pub fn cpl(&self) -> u8 {
        if !self.protected_mode() {
            0
        } else if self.eflags & flags::VM != 0 {
            3
        } else {
            self.segs[SegReg::Cs as usize].rpl()
        }
    }

    pub fn iopl(&self) -> u8 {
        ((self.eflags & flags::IOPL) >> 12) as u8
    }

    /// Whether code runs with 32-bit default operand and address size.
    pub fn code32(&self) -> bool {
        self.protected_mode() && self.eflags & flags::VM == 0 && self.segs[SegReg::Cs as usize].big()
    }

    /// Whether the stack segment uses ESP (B=1) rather than SP.
    pub fn stack32(&self) -> bool {
        self.protected_mode() && self.eflags & flags::VM == 0 && self.segs[SegReg::Ss as usize].big()
    }

    pub fn paging(&self) -> bool {
        self.cr0 & (cr0::PG | cr0::PE) == (cr0::PG | cr0::PE)
    }

    /// A short human-readable dump, used in crash reports.
    pub fn dump(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for (i, name) in reg::NAMES.iter().enumerate() {
            let _ = write!(s, "{name}={:08x} ", self.regs[i]);
            if i == 3 {
                s.push('\n');
            }
        }
        let _ = writeln!(
            s,
            "\neip={:08x} eflags={:08x} cpl={}",
            self.eip,
            self.eflags,
            self.cpl()
        );
        for sr in SegReg::ALL {
            let g = self.seg(sr);
            let _ = writeln!(
                s,
                "{}={:04x} base={:08x} limit={:08x} attr={:04x}",
                sr.name(),
                g.selector,
                g.base,
                g.limit,
                g.attr
            );
        }
        let _ = writeln!(
            s,
            "cr0={:08x} cr2={:08x} cr3={:08x} cr4={:08x}",
            self.cr0, self.cr2, self.cr3, self.cr4
        );
        let _ = write!(
            s,
            "gdtr={:08x}/{:04x} idtr={:08x}/{:04x} ldtr={:04x} tr={:04x}",
            self.gdtr.base, self.gdtr.limit, self.idtr.base, self.idtr.limit, self.ldtr.selector, self.tr.selector
        );
        s
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn offsets_address_the_fields_they_name() {
        let mut st = CpuState::reset();
        let base = (&mut st as *mut CpuState).cast::<u8>();
        // SAFETY: every offset comes from offset_of! on this repr(C) struct,
        // so it lies inside `st` and is aligned for the field's type, which
        // is the type written.
        unsafe {
            base.add(offsets::EIP).cast::<u32>().write(0x1234);
            base.add(offsets::reg(reg::EBX)).cast::<u32>().write(7);
            base.add(offsets::seg(SegReg::Ds as usize) + offsets::SEGMENT_BASE)
                .cast::<u32>()
                .write(0xABC0);
            base.add(offsets::CR3).cast::<u32>().write(0x9000);
            base.add(offsets::FPU_CONTROL).cast::<u16>().write(0x027F);
        }
        assert_eq!(st.eip, 0x1234);
        assert_eq!(st.regs[reg::EBX], 7);
        assert_eq!(st.segs[SegReg::Ds as usize].base, 0xABC0);
        assert_eq!(st.cr3, 0x9000);
        assert_eq!(st.fpu.control, 0x027F);
        assert_eq!(offsets::SIZE, std::mem::size_of::<CpuState>());
    }
}
