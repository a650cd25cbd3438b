//! System and miscellaneous instructions: flag control (CLC, STC, CMC, CLD, STD,
//! CLI, STI), port I/O (IN, OUT) with the TSS I/O permission bitmap, HLT, CPUID,
//! RDTSC, RDMSR, WRMSR, descriptor-table and task registers (LGDT, LIDT, SGDT,
//! SIDT, LLDT, SLDT, LTR, STR), LMSW, SMSW, CLTS, MOV to and from control and debug
//! registers, INVLPG, INVD, WBINVD, LAR, LSL, VERR, VERW, ARPL, SYSENTER,
//! SYSEXIT, UD2 (SDM Vol. 2, the page of each; Vol. 3A, 2.5 "Control registers",
//! 2.4 "Memory-management registers", 16.5 "I/O permission bit map";
//! Vol. 4 for the MSRs).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{op_size, Flow};
use crate::bus::Bus;
use crate::cpu::seg::sel_error;
use crate::cpu::state::reg::{EAX, EBX, ECX, EDX, ESP};
use crate::cpu::state::{attr, cr0, cr4, flags as fl, SegReg, Segment};
use crate::cpu::{vector, Cpu, Fault, Result, RingView, MONITOR_GDT_BASE, MONITOR_IDT_BASE};
use crate::time::TSC_PER_INSN;

/// CPUID leaf 1 EDX: FPU, PSE, TSC, MSR, CX8, SEP, PGE, CMOV; APIC
/// ([`CPUID_1_EDX_APIC`]) while the bus has a local APIC and it is enabled.
pub const CPUID_1_EDX: u32 = 1 | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 11) | (1 << 13) | (1 << 15);
pub const CPUID_1_EDX_APIC: u32 = 1 << 9;
/// Leaf 1 ECX: bit 31, "running under a hypervisor" (reserved for
/// that use on every Intel CPU): a guest is told it is virtualized, as
/// under QEMU and every hypervisor, so it skips what needs real hardware
/// (microcode loading, the performance counters this model lacks); and
/// [`CPUID_1_ECX_TSC_DEADLINE`] where there is a local APIC.
const CPUID_1_ECX: u32 = 1 << 31;
const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const IA32_APIC_BASE: u32 = 0x1B;
const IA32_TSC_DEADLINE: u32 = 0x6E0;
/// Family 6 (P6), model 1, stepping 9: an i686 without later extensions.
pub const CPUID_1_EAX: u32 = (6 << 8) | (1 << 4) | 9;

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    use Mnemonic as M;
    let pm = cpu.state.protected_mode() && !cpu.state.v86_mode();
    match inst.mnemonic() {
        M::Clc => cpu.state.eflags &= !fl::CF,
        M::Stc => cpu.state.eflags |= fl::CF,
        M::Cmc => cpu.state.eflags ^= fl::CF,
        M::Cld => cpu.state.eflags &= !fl::DF,
        M::Std => cpu.state.eflags |= fl::DF,
        M::Cli | M::Sti => {
            if cpu.state.protected_mode() && cpu.state.cpl() > cpu.state.iopl() {
                return Err(Fault::gp(0));
            }
            if inst.mnemonic() == M::Cli {
                cpu.state.eflags &= !fl::IF;
            } else {
                // STI delays interrupts by one instruction when it sets IF (SDM 6.8.3).
                if cpu.state.eflags & fl::IF == 0 {
                    cpu.state.interrupt_shadow = true;
                }
                cpu.state.eflags |= fl::IF;
            }
        }
        M::In | M::Out => {
            let is_in = inst.mnemonic() == M::In;
            let (data_op, port_op) = if is_in { (0, 1) } else { (1, 0) };
            let size = op_size(inst, data_op);
            let port = match inst.op_kind(port_op) {
                OpKind::Immediate8 => u16::from(inst.immediate8()),
                _ => (cpu.state.regs[EDX] & 0xFFFF) as u16,
            };
            cpu.check_io_permission(bus, port, size)?;
            if is_in {
                let v = bus.io_read(port, size, cpu.now());
                cpu.write_reg(inst.op0_register(), v);
            } else {
                let v = cpu.read_reg(inst.op1_register());
                bus.io_write(port, size, v, cpu.now());
            }
        }
        M::Hlt => {
            cpu.require_cpl0()?;
            cpu.state.halted = true;
        }
        M::Cpuid => cpuid(cpu, bus),
        M::Rdtsc => rdtsc(cpu)?,
        // SDM Vol. 2B, RDPMC: #GP(0) at CPL > 0 unless CR4.PCE, and #GP(0)
        // for a counter the processor does not have; this model has none
        // (no performance-monitoring MSRs either).
        M::Rdpmc => {
            if cpu.state.cr4 & cr4::PCE == 0 && cpu.state.cpl() > 0 && cpu.state.protected_mode() {
                return Err(Fault::gp(0));
            }
            return Err(Fault::gp(0));
        }
        M::Rdmsr => {
            cpu.require_cpl0()?;
            let v = cpu.read_msr(bus, cpu.state.regs[ECX])?;
            cpu.state.regs[EAX] = v as u32;
            cpu.state.regs[EDX] = (v >> 32) as u32;
        }
        M::Wrmsr => {
            cpu.require_cpl0()?;
            let v = (u64::from(cpu.state.regs[EDX]) << 32) | u64::from(cpu.state.regs[EAX]);
            cpu.write_msr(bus, cpu.state.regs[ECX], v)?;
        }
        M::Lgdt | M::Lidt => {
            cpu.require_cpl0()?;
            if inst.op0_kind() != OpKind::Memory {
                return Err(Fault::ud());
            }
            let (seg, ea) = cpu.mem_operand(inst);
            let limit = cpu.read_mem(bus, seg, ea, 2)? as u16;
            let mut base = cpu.read_mem(bus, seg, ea.wrapping_add(2), 4)?;
            if operand16(inst) {
                base &= 0x00FF_FFFF;
            }
            let t = if inst.mnemonic() == M::Lgdt {
                &mut cpu.state.gdtr
            } else {
                &mut cpu.state.idtr
            };
            t.base = base;
            t.limit = limit;
        }
        M::Sgdt | M::Sidt => {
            if inst.op0_kind() != OpKind::Memory {
                return Err(Fault::ud());
            }
            let t = if inst.mnemonic() == M::Sgdt {
                cpu.state.gdtr
            } else {
                cpu.state.idtr
            };
            let (seg, ea) = cpu.mem_operand(inst);
            // Compressed into ring 1, GDTR and IDTR hold the monitor's tables.
            let base = match cpu.ring_view {
                RingView::Compressed { .. } if inst.mnemonic() == M::Sgdt => MONITOR_GDT_BASE,
                RingView::Compressed { .. } => MONITOR_IDT_BASE,
                _ => t.base,
            };
            let base = if operand16(inst) { base & 0x00FF_FFFF } else { base };
            cpu.write_mem(bus, seg, ea, 2, u32::from(t.limit))?;
            cpu.write_mem(bus, seg, ea.wrapping_add(2), 4, base)?;
        }
        M::Sldt | M::Str => {
            if !pm {
                return Err(Fault::ud());
            }
            let sel = if inst.mnemonic() == M::Sldt {
                cpu.state.ldtr.selector
            } else {
                cpu.state.tr.selector
            };
            let size = if inst.op0_kind() == OpKind::Memory {
                2
            } else {
                op_size(inst, 0)
            };
            cpu.write_op(bus, inst, 0, size, u32::from(sel))?;
        }
        M::Lldt => {
            if !pm {
                return Err(Fault::ud());
            }
            cpu.require_cpl0()?;
            let sel = cpu.read_op(bus, inst, 0, 2)? as u16;
            cpu.load_ldtr(bus, sel)?;
        }
        M::Ltr => {
            if !pm {
                return Err(Fault::ud());
            }
            cpu.require_cpl0()?;
            let sel = cpu.read_op(bus, inst, 0, 2)? as u16;
            cpu.load_tr(bus, sel)?;
        }
        M::Smsw => {
            let size = if inst.op0_kind() == OpKind::Memory {
                2
            } else {
                op_size(inst, 0)
            };
            cpu.write_op(bus, inst, 0, size, cpu.state.cr0)?;
        }
        M::Lmsw => {
            cpu.require_cpl0()?;
            let v = cpu.read_op(bus, inst, 0, 2)?;
            // LMSW sets PE but never clears it; it touches only PE, MP, EM, TS.
            let low = (cpu.state.cr0 & 0xF & cr0::PE) | (v & 0xF);
            let new = (cpu.state.cr0 & !0xF) | low;
            cpu.write_cr0(new)?;
        }
        M::Clts => {
            cpu.require_cpl0()?;
            cpu.state.cr0 &= !cr0::TS;
        }
        M::Mov => mov_cr_dr(cpu, inst)?,
        M::Invlpg => {
            cpu.require_cpl0()?;
            let (seg, ea) = cpu.mem_operand(inst);
            let lin = cpu.state.segs[seg as usize].base.wrapping_add(ea);
            cpu.tlb.invlpg(lin);
        }
        M::Invd | M::Wbinvd => cpu.require_cpl0()?,
        M::Wait => {
            // #NM when the x87 context belongs to another task (MP and TS),
            // then any pending x87 exception (SDM Vol. 2B, WAIT/FWAIT).
            if cpu.state.cr0 & (cr0::MP | cr0::TS) == (cr0::MP | cr0::TS) {
                return Err(Fault::new(vector::NM));
            }
            super::x87::check_pending(cpu, bus)?;
        }
        M::Lar | M::Lsl | M::Verr | M::Verw => {
            if !pm {
                return Err(Fault::ud());
            }
            access_check(cpu, bus, inst)?;
        }
        M::Arpl => {
            if !pm {
                return Err(Fault::ud());
            }
            let d = cpu.read_op(bus, inst, 0, 2)?;
            let s = cpu.read_op(bus, inst, 1, 2)?;
            if d & 3 < s & 3 {
                cpu.write_op(bus, inst, 0, 2, (d & !3) | (s & 3))?;
                cpu.state.eflags |= fl::ZF;
            } else {
                cpu.state.eflags &= !fl::ZF;
            }
        }
        M::Sysenter => {
            let cs = cpu.state.msrs.sysenter_cs as u16;
            if !cpu.state.protected_mode() || cs & 0xFFFC == 0 {
                return Err(Fault::gp(0));
            }
            cpu.state.eflags &= !(fl::VM | fl::IF | fl::RF);
            cpu.state.segs[SegReg::Cs as usize] = flat_segment(cs & 0xFFFC, true, 0);
            cpu.state.segs[SegReg::Ss as usize] = flat_segment((cs & 0xFFFC).wrapping_add(8), false, 0);
            cpu.state.regs[ESP] = cpu.state.msrs.sysenter_esp;
            cpu.state.eip = cpu.state.msrs.sysenter_eip;
        }
        M::Sysexit => {
            let cs = cpu.state.msrs.sysenter_cs as u16;
            if !pm || cpu.state.cpl() != 0 || cs & 0xFFFC == 0 {
                return Err(Fault::gp(0));
            }
            cpu.state.segs[SegReg::Cs as usize] = flat_segment(cs.wrapping_add(16) | 3, true, 3);
            cpu.state.segs[SegReg::Ss as usize] = flat_segment(cs.wrapping_add(24) | 3, false, 3);
            cpu.state.regs[ESP] = cpu.state.regs[ECX];
            cpu.state.eip = cpu.state.regs[EDX];
        }
        _ => return Err(Fault::ud()),
    }
    Ok(Flow::Next)
}

fn operand16(inst: &Instruction) -> bool {
    matches!(
        inst.code(),
        iced_x86::Code::Lgdt_m1632_16
            | iced_x86::Code::Lidt_m1632_16
            | iced_x86::Code::Sgdt_m1632_16
            | iced_x86::Code::Sidt_m1632_16
    )
}

fn flat_segment(selector: u16, code: bool, dpl: u16) -> Segment {
    let typ = if code { attr::CODE | attr::RW } else { attr::RW };
    Segment {
        selector,
        base: 0,
        limit: 0xFFFF_FFFF,
        attr: typ | attr::ACCESSED | attr::S | attr::P | (dpl << attr::DPL_SHIFT) | attr::DB | attr::G,
    }
}

/// RDTSC (SDM Vol. 2B): #GP(0) outside ring 0 when CR4.TSD is set; else
/// EDX:EAX = IA32_TSC.
pub fn rdtsc(cpu: &mut Cpu) -> Result<()> {
    if cpu.state.cr4 & cr4::TSD != 0 && cpu.state.cpl() > 0 && cpu.state.protected_mode() {
        return Err(Fault::gp(0));
    }
    let tsc = cpu.tsc();
    cpu.state.regs[EAX] = tsc as u32;
    cpu.state.regs[EDX] = (tsc >> 32) as u32;
    Ok(())
}

fn cpuid<B: Bus>(cpu: &mut Cpu, bus: &mut B) {
    let leaf = cpu.state.regs[EAX];
    let (a, b, c, d) = match leaf {
        // "GenuineIntel" in EBX, EDX, ECX; the highest basic leaf is 1.
        0 => (1, 0x756E_6547, 0x6C65_746E, 0x4965_6E69),
        // Leaf 1, and any leaf above the maximum (basic or extended: we have no
        // extended leaves), which returns the highest basic leaf (SDM Vol. 2A, CPUID).
        // The APIC flag follows IA32_APIC_BASE's enable bit (SDM Vol. 3A, 10.4.3).
        _ => {
            let (mut c, mut d) = (CPUID_1_ECX, CPUID_1_EDX);
            if let Some(base) = bus.apic_msr_read(IA32_APIC_BASE) {
                c |= CPUID_1_ECX_TSC_DEADLINE;
                if base & (1 << 11) != 0 {
                    d |= CPUID_1_EDX_APIC;
                }
            }
            (CPUID_1_EAX, 0, c, d)
        }
    };
    cpu.state.regs[EAX] = a;
    cpu.state.regs[EBX] = b;
    cpu.state.regs[ECX] = c;
    cpu.state.regs[EDX] = d;
}

fn mov_cr_dr(cpu: &mut Cpu, inst: &Instruction) -> Result<()> {
    cpu.require_cpl0()?;
    let to_special = inst.op0_register().is_cr() || inst.op0_register().is_dr();
    let special = if to_special {
        inst.op0_register()
    } else {
        inst.op1_register()
    };
    let n = special.number();
    if special.is_cr() {
        if to_special {
            let v = cpu.read_reg(inst.op1_register());
            match n {
                0 => cpu.write_cr0(v)?,
                2 => cpu.state.cr2 = v,
                3 => {
                    cpu.state.cr3 = v;
                    cpu.tlb.flush_non_global();
                }
                4 => {
                    if v & !cr4::SUPPORTED != 0 {
                        return Err(Fault::gp(0));
                    }
                    cpu.state.cr4 = v;
                    cpu.tlb.flush_all();
                }
                _ => return Err(Fault::ud()),
            }
        } else {
            let v = match n {
                0 => cpu.state.cr0,
                2 => cpu.state.cr2,
                3 => cpu.state.cr3,
                4 => cpu.state.cr4,
                _ => return Err(Fault::ud()),
            };
            cpu.write_reg(inst.op0_register(), v);
        }
    } else if special.is_dr() {
        // DR4/DR5 alias DR6/DR7 unless CR4.DE (SDM Vol. 3A, 17.2.2).
        let n = match n {
            4 | 5 if cpu.state.cr4 & cr4::DE != 0 => return Err(Fault::ud()),
            4 | 5 => n + 2,
            _ => n,
        };
        if to_special {
            let v = cpu.read_reg(inst.op1_register());
            cpu.state.dr[n] = match n {
                6 => (v & 0x0000_E00F) | 0xFFFF_0FF0,
                7 => (v & 0xFFFF_2BFF) | 0x400,
                _ => v,
            };
        } else {
            cpu.write_reg(inst.op0_register(), cpu.state.dr[n]);
        }
    } else {
        return Err(Fault::ud());
    }
    Ok(())
}

/// LAR, LSL, VERR, VERW: descriptor checks that set ZF instead of faulting
/// (SDM Vol. 2A "LAR", "LSL"; Vol. 2B "VERR/VERW").
fn access_check<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<()> {
    let m = inst.mnemonic();
    let src_op = if matches!(m, Mnemonic::Lar | Mnemonic::Lsl) {
        1
    } else {
        0
    };
    let sel = cpu.read_op(bus, inst, src_op, 2)? as u16;
    let cpl = cpu.state.cpl();
    let ok_desc = if sel & 0xFFFC == 0 {
        None
    } else {
        match cpu.read_descriptor(bus, sel, vector::GP) {
            Ok(d) => Some(d),
            Err(f) if f.vector == vector::GP => None,
            Err(f) => return Err(f),
        }
    };
    let valid = ok_desc.filter(|d| {
        let conforming_code = d.is_code() && d.typ() & 4 != 0;
        let priv_ok = conforming_code || (d.dpl() >= cpl && d.dpl() >= (sel & 3) as u8);
        let type_ok = if d.is_code_data() {
            match m {
                Mnemonic::Verr => !d.is_code() || d.typ() & 2 != 0,
                Mnemonic::Verw => !d.is_code() && d.typ() & 2 != 0,
                _ => true,
            }
        } else {
            match m {
                // System types LAR accepts: TSSs, LDT, call and task gates.
                Mnemonic::Lar => matches!(d.typ(), 1 | 2 | 3 | 4 | 5 | 9 | 0xB | 0xC),
                Mnemonic::Lsl => matches!(d.typ(), 1 | 2 | 3 | 9 | 0xB),
                _ => false,
            }
        };
        type_ok && priv_ok
    });
    match valid {
        Some(d) => {
            cpu.state.eflags |= fl::ZF;
            match m {
                Mnemonic::Lar => {
                    let size = op_size(inst, 0);
                    cpu.write_op(bus, inst, 0, size, d.high & 0x00F0_FF00)?;
                }
                Mnemonic::Lsl => {
                    let size = op_size(inst, 0);
                    cpu.write_op(bus, inst, 0, size, d.limit())?;
                }
                _ => {}
            }
        }
        None => cpu.state.eflags &= !fl::ZF,
    }
    Ok(())
}

impl Cpu {
    /// #GP(0) unless running at CPL 0 (real mode counts as CPL 0).
    #[inline]
    pub fn require_cpl0(&self) -> Result<()> {
        if self.state.cpl() != 0 {
            return Err(Fault::gp(0));
        }
        Ok(())
    }

    /// The first virtual tick at which the TSC reads `tsc` or more: now,
    /// if it already does (an unsigned comparison, SDM Vol. 3A 10.5.4.1).
    pub fn tick_of_tsc(&self, tsc: u64) -> u64 {
        let now = self.tsc();
        if tsc <= now {
            self.now()
        } else {
            self.now().saturating_add((tsc - now).div_ceil(TSC_PER_INSN))
        }
    }

    /// The time-stamp counter: virtual time plus the guest's own offset.
    pub fn tsc(&self) -> u64 {
        self.now()
            .wrapping_mul(TSC_PER_INSN)
            .wrapping_add(self.state.msrs.tsc_offset)
    }

    pub fn write_cr0(&mut self, v: u32) -> Result<()> {
        if v & cr0::PG != 0 && v & cr0::PE == 0 {
            return Err(Fault::gp(0));
        }
        if v & cr0::NW != 0 && v & cr0::CD == 0 {
            return Err(Fault::gp(0));
        }
        let v = v | cr0::ET;
        if (v ^ self.state.cr0) & (cr0::PG | cr0::PE | cr0::WP) != 0 {
            self.tlb.flush_all();
        }
        self.state.cr0 = v;
        Ok(())
    }

    /// The P6 model's MSRs (SDM Vol. 4, table 2-2 and the P6 family's):
    /// the TSC, the platform ID, the microcode signature and SYSENTER's
    /// three; the local APIC's base and TSC deadline where the bus has one.
    /// What CPUID does not announce is absent and #GPs, as on hardware: no
    /// MTRRs, no PAT, no performance counters, no IA32_MISC_ENABLE (a
    /// Pentium 4 register).
    pub fn read_msr<B: Bus>(&self, bus: &mut B, index: u32) -> Result<u64> {
        let m = &self.state.msrs;
        Ok(match index {
            0x10 => self.tsc(),
            0x17 | 0x8B => 0,
            IA32_APIC_BASE | IA32_TSC_DEADLINE => bus.apic_msr_read(index).ok_or(Fault::gp(0))?,
            0x174 => u64::from(m.sysenter_cs),
            0x175 => u64::from(m.sysenter_esp),
            0x176 => u64::from(m.sysenter_eip),
            _ => return Err(Fault::gp(0)),
        })
    }

    pub fn write_msr<B: Bus>(&mut self, bus: &mut B, index: u32, v: u64) -> Result<()> {
        match index {
            0x10 => {
                let now = self.now().wrapping_mul(TSC_PER_INSN);
                self.state.msrs.tsc_offset = v.wrapping_sub(now);
                // An armed TSC deadline now comes at another virtual time.
                if let Some(deadline) = bus.apic_msr_read(IA32_TSC_DEADLINE).filter(|&d| d != 0) {
                    bus.apic_msr_write(IA32_TSC_DEADLINE, deadline, self.tick_of_tsc(deadline));
                }
            }
            0x8B => {}
            IA32_APIC_BASE | IA32_TSC_DEADLINE => {
                if !bus.apic_msr_write(index, v, self.tick_of_tsc(v)) {
                    return Err(Fault::gp(0));
                }
            }
            0x174 => self.state.msrs.sysenter_cs = v as u32,
            0x175 => self.state.msrs.sysenter_esp = v as u32,
            0x176 => self.state.msrs.sysenter_eip = v as u32,
            _ => return Err(Fault::gp(0)),
        }
        Ok(())
    }

    /// Checks IOPL and, above it, the TSS I/O permission bitmap (SDM Vol. 1, 19.5).
    pub fn check_io_permission<B: Bus>(&mut self, bus: &mut B, port: u16, size: u8) -> Result<()> {
        let st = &self.state;
        if !st.protected_mode() || (!st.v86_mode() && st.cpl() <= st.iopl()) {
            return Ok(());
        }
        // Compressed into ring 1, TR holds the monitor's TSS, which has no
        // I/O bitmap: every port faults to the monitor.
        if matches!(self.ring_view, RingView::Compressed { .. }) {
            return Err(Fault::gp(0));
        }
        let tr = st.tr;
        let tss32 = matches!(tr.attr & 0xF, 0x9 | 0xB);
        if !tss32 || tr.limit < 0x67 {
            return Err(Fault::gp(0));
        }
        let map = self.read_linear(bus, tr.base.wrapping_add(0x66), 2, false)?;
        let byte = map + u32::from(port / 8);
        if byte + 1 > tr.limit {
            return Err(Fault::gp(0));
        }
        let bits = self.read_linear(bus, tr.base.wrapping_add(byte), 2, false)?;
        let mask = ((1u32 << size) - 1) << (port % 8);
        if bits & mask != 0 {
            return Err(Fault::gp(0));
        }
        Ok(())
    }

    fn load_ldtr<B: Bus>(&mut self, bus: &mut B, sel: u16) -> Result<()> {
        if sel & 0xFFFC == 0 {
            self.state.ldtr = Segment {
                selector: sel,
                base: 0,
                limit: 0,
                attr: 0,
            };
            return Ok(());
        }
        if sel & 4 != 0 {
            return Err(Fault::gp(sel_error(sel)));
        }
        let d = self.read_descriptor(bus, sel, vector::GP)?;
        if d.is_code_data() || d.typ() != 2 {
            return Err(Fault::gp(sel_error(sel)));
        }
        if !d.present() {
            return Err(Fault::with_error(vector::NP, sel_error(sel)));
        }
        self.state.ldtr = d.to_segment(sel);
        Ok(())
    }

    fn load_tr<B: Bus>(&mut self, bus: &mut B, sel: u16) -> Result<()> {
        if sel & 0xFFFC == 0 || sel & 4 != 0 {
            return Err(Fault::gp(sel_error(sel)));
        }
        let d = self.read_descriptor(bus, sel, vector::GP)?;
        if d.is_code_data() || !matches!(d.typ(), 1 | 9) {
            return Err(Fault::gp(sel_error(sel)));
        }
        if !d.present() {
            return Err(Fault::with_error(vector::NP, sel_error(sel)));
        }
        // Mark the TSS busy in the GDT.
        let addr = self.state.gdtr.base.wrapping_add(u32::from(sel & !7)).wrapping_add(4);
        self.write_linear(bus, addr, 4, d.high | (2 << 8), false)?;
        let mut seg = d.to_segment(sel);
        seg.attr |= 2;
        self.state.tr = seg;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::state::flags::{CF, DF, IF, IOPL, ZF};
    use crate::cpu::state::reg::{EAX, EBX, ECX, EDX, ESP};
    use crate::cpu::state::{cr0, cr4, SegReg};
    use crate::cpu::{vector, StepOutcome};
    use crate::exec::testutil::*;
    use crate::time::TSC_PER_INSN;

    fn d32(v: u32) -> [u8; 4] {
        v.to_le_bytes()
    }

    // SDM Vol. 2A/2B, CLC, STC, CMC, CLD, STD.
    #[test]
    fn flag_instructions() {
        let mut m = Machine::flat32();
        assert_retired(m.exec(&[0xF9])); // stc
        assert_eq!(m.status(), CF);
        assert_retired(m.exec(&[0xF5])); // cmc
        assert_eq!(m.status(), 0);
        assert_retired(m.exec(&[0xF5]));
        assert_retired(m.exec(&[0xF8])); // clc
        assert_eq!(m.status(), 0);
        assert_retired(m.exec(&[0xFD])); // std
        assert_eq!(m.eflags() & DF, DF);
        assert_retired(m.exec(&[0xFC])); // cld
        assert_eq!(m.eflags() & DF, 0);
    }

    // SDM Vol. 2A, CLI and Vol. 2B, STI: #GP(0) when CPL > IOPL in protected mode;
    // STI inhibits interrupts until after the next instruction (Vol. 3A, 6.8.3).
    #[test]
    fn cli_sti_iopl() {
        let mut m = Machine::flat32().user();
        assert_fault(m.exec(&[0xFA]), vector::GP, Some(0));
        let mut m = Machine::flat32().user();
        m.cpu.state.eflags |= IOPL;
        assert_retired(m.exec(&[0xFB])); // sti
        assert_eq!(m.eflags() & IF, IF);
        assert!(m.cpu.state.interrupt_shadow);
        assert_retired(m.exec(&[0xFB])); // IF already set: no new shadow
        assert!(!m.cpu.state.interrupt_shadow);
        let mut m = Machine::real16();
        m.cpu.state.eflags |= IF;
        assert_retired(m.exec(&[0xFA]));
        assert_eq!(m.eflags() & IF, 0);
    }

    // SDM Vol. 2A, IN and Vol. 2B, OUT; Vol. 1, 19.5.2: at CPL > IOPL each byte of
    // the access needs a clear bit in the TSS I/O bitmap, else #GP(0); a TSS too
    // short for the bitmap denies everything.
    #[test]
    fn in_out_and_io_bitmap() {
        let mut m = Machine::flat32();
        m.bus.io_value = 0xA1B2_C3D4;
        assert_retired(m.exec(&[0xE4, 0x60])); // in al, 60h
        assert_eq!(m.reg(EAX), 0xD4);
        m.set_reg(EDX, 0x3F8);
        assert_retired(m.exec(&[0xED])); // in eax, dx
        assert_eq!(m.reg(EAX), 0xA1B2_C3D4);
        assert_retired(m.exec(&[0x66, 0xEF])); // out dx, ax
        assert_eq!(m.bus.io_log.last(), Some(&(true, 0x3F8, 2, 0xC3D4)));

        let user_without_port_68 = || {
            let mut m = Machine::flat32().user();
            m.w8(TSS + 0x68 + 0x68 / 8, 1);
            m
        };
        let mut m = user_without_port_68();
        assert_retired(m.exec(&[0xE6, 0x67])); // out 67h, al
        assert_eq!(m.bus.io_log.len(), 1);
        let mut m = user_without_port_68();
        assert_fault(m.exec(&[0x66, 0xE5, 0x67]), vector::GP, Some(0)); // in ax, 67h: 67h-68h
        let mut m = user_without_port_68();
        assert_fault(m.exec(&[0xE4, 0x68]), vector::GP, Some(0));
        assert!(m.bus.io_log.is_empty());

        let mut m = Machine::flat32().user();
        m.set_gdt(5, seg_desc(TSS, 0x67, 0x8B, 0));
        m.cpu.state.tr = m.gdt_segment(TSS_SEL);
        assert_fault(m.exec(&[0xE4, 0x00]), vector::GP, Some(0));
        m.cpu.state.eflags |= IOPL;
        m.cpu.state.eip = CODE;
        assert_retired(m.exec(&[0xE4, 0x00])); // CPL <= IOPL: no bitmap
    }

    // SDM Vol. 2A, HLT: privileged (#GP(0) at CPL > 0); halts until an interrupt.
    #[test]
    fn hlt() {
        let mut m = Machine::flat32();
        assert_retired(m.exec(&[0xF4]));
        assert!(m.cpu.state.halted);
        assert_eq!(m.step(), StepOutcome::Halted);
        let mut m = Machine::flat32().user();
        assert_fault(m.exec(&[0xF4]), vector::GP, Some(0));
    }

    // SDM Vol. 2A, CPUID: leaf 0 gives the vendor, leaf 1 the signature and
    // features (with the x87: EDX bit 0); a leaf above the maximum returns the
    // highest basic leaf.
    #[test]
    fn cpuid() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, 0);
        assert_retired(m.exec(&[0x0F, 0xA2]));
        let mut vendor = Vec::new();
        for r in [EBX, EDX, ECX] {
            vendor.extend_from_slice(&m.reg(r).to_le_bytes());
        }
        assert_eq!((m.reg(EAX), vendor.as_slice()), (1, &b"GenuineIntel"[..]));
        m.set_reg(EAX, 1);
        assert_retired(m.exec(&[0x0F, 0xA2]));
        assert_eq!(m.reg(EAX) >> 8 & 0xF, 6, "family 6");
        let edx = m.reg(EDX);
        assert_eq!(edx & 1, 1, "FPU");
        for bit in [4, 5, 8, 15] {
            assert_ne!(edx & (1 << bit), 0, "TSC, MSR, CX8, CMOV: bit {bit}");
        }
        assert_eq!(m.reg(ECX), 1 << 31, "no ECX feature but the hypervisor bit");
        let leaf1 = (m.reg(EAX), m.reg(EBX), m.reg(ECX), m.reg(EDX));
        m.set_reg(EAX, 0x8000_0000);
        assert_retired(m.exec(&[0x0F, 0xA2]));
        assert_eq!((m.reg(EAX), m.reg(EBX), m.reg(ECX), m.reg(EDX)), leaf1);
    }

    // SDM Vol. 2B, RDPMC: #GP(0) for a counter the processor lacks (this
    // model has none) and at CPL > 0 without CR4.PCE; SDM Vol. 4: MSRs the
    // model does not have #GP(0), for RDMSR and WRMSR alike.
    #[test]
    fn rdpmc_and_absent_msrs_fault() {
        let mut m = Machine::flat32();
        for counter in [0, 1, 2, 0x4000_0000] {
            m.set_reg(ECX, counter);
            assert_fault(m.exec(&[0x0F, 0x33]), vector::GP, Some(0));
        }
        let mut m = Machine::flat32().user();
        m.set_reg(ECX, 0);
        assert_fault(m.exec(&[0x0F, 0x33]), vector::GP, Some(0));
        // No MTRRs, PAT, performance counters or IA32_MISC_ENABLE on a P6
        // whose CPUID announces none of them.
        for msr in [0xFE, 0x1A0, 0x277, 0x2FF, 0xC1, 0x186] {
            let mut m = Machine::flat32();
            m.set_reg(ECX, msr);
            assert_fault(m.exec(&[0x0F, 0x32]), vector::GP, Some(0));
            m.set_reg(ECX, msr).set_reg(EAX, 0).set_reg(EDX, 0);
            assert_fault(m.exec(&[0x0F, 0x30]), vector::GP, Some(0));
        }
        // The ones it has.
        let mut m = Machine::flat32();
        m.set_reg(ECX, 0x174).set_reg(EAX, 0x08).set_reg(EDX, 0);
        assert_retired(m.exec(&[0x0F, 0x30]));
        m.set_reg(EAX, 0);
        assert_retired(m.exec(&[0x0F, 0x32]));
        assert_eq!(m.reg(EAX), 0x08);
    }

    // SDM Vol. 2B, RDTSC: EDX:EAX <- TSC; #GP(0) at CPL > 0 when CR4.TSD = 1. Our
    // TSC is virtual time: retired instructions times TSC_PER_INSN, plus the
    // offset a WRMSR to IA32_TIME_STAMP_COUNTER sets.
    // A TSC deadline is an unsigned comparison with the TSC: one already
    // passed fires now, even below the TSC's value at virtual time 0 (a
    // guest that moved the TSC forward).
    #[test]
    fn tsc_deadlines_become_ticks_without_wrapping() {
        let mut m = Machine::flat32();
        m.cpu.icount = 1000;
        assert_eq!(m.cpu.tick_of_tsc(1000 * TSC_PER_INSN + 25), 1003);
        assert_eq!(m.cpu.tick_of_tsc(5), 1000, "already passed");
        m.cpu.state.msrs.tsc_offset = 1 << 40;
        assert_eq!(
            m.cpu.tick_of_tsc(1 << 39),
            1000,
            "below the offset: passed, not 2^64 away"
        );
        assert_eq!(m.cpu.tick_of_tsc((1 << 40) + 1000 * TSC_PER_INSN + 10), 1001);
        assert_eq!(
            m.cpu.tick_of_tsc(u64::MAX),
            1000 + (u64::MAX - m.cpu.tsc()).div_ceil(TSC_PER_INSN)
        );
    }

    #[test]
    fn rdtsc_from_virtual_time() {
        let mut m = Machine::flat32();
        m.cpu.icount = 0x1_0000_0000;
        assert_retired(m.exec(&[0x0F, 0x31]));
        let tsc = 0x1_0000_0000u64 * TSC_PER_INSN;
        assert_eq!((m.reg(EDX), m.reg(EAX)), ((tsc >> 32) as u32, tsc as u32));

        let mut m = Machine::flat32();
        m.cpu.icount = 5;
        m.set_reg(ECX, 0x10).set_reg(EDX, 1).set_reg(EAX, 0);
        assert_retired(m.exec(&[0x0F, 0x30])); // wrmsr IA32_TSC = 1_0000_0000h at icount 5
        assert_retired(m.exec(&[0x0F, 0x31])); // one instruction later
        assert_eq!((m.reg(EDX), m.reg(EAX)), (1, TSC_PER_INSN as u32));

        let mut m = Machine::flat32().user();
        assert_retired(m.exec(&[0x0F, 0x31]));
        m.cpu.state.cr4 |= cr4::TSD;
        assert_fault(m.exec(&[0x0F, 0x31]), vector::GP, Some(0));
    }

    // SDM Vol. 2B, RDMSR/WRMSR: #GP(0) for an MSR the processor does not have and
    // at CPL > 0.
    #[test]
    fn msrs() {
        let mut m = Machine::flat32();
        m.set_reg(ECX, 0x174).set_reg(EAX, u32::from(KCODE)).set_reg(EDX, 0);
        assert_retired(m.exec(&[0x0F, 0x30])); // wrmsr IA32_SYSENTER_CS
        m.set_reg(EAX, 0);
        assert_retired(m.exec(&[0x0F, 0x32])); // rdmsr
        assert_eq!(m.reg(EAX), u32::from(KCODE));
        m.set_reg(ECX, 0x1234_5678);
        assert_fault(m.exec(&[0x0F, 0x32]), vector::GP, Some(0));
        assert_fault(m.exec(&[0x0F, 0x30]), vector::GP, Some(0));
        let mut m = Machine::flat32().user();
        m.set_reg(ECX, 0x174);
        assert_fault(m.exec(&[0x0F, 0x32]), vector::GP, Some(0));
    }

    // SDM Vol. 2B, MOV to/from control registers: CPL 0 only; CR0 with PG and
    // not PE, or NW and not CD, is #GP(0); CR4 reserved bits are #GP(0).
    #[test]
    fn mov_control_registers() {
        let mut m = Machine::flat32();
        assert_retired(m.exec(&[0x0F, 0x20, 0xC0])); // mov eax, cr0
        assert_eq!(m.reg(EAX), cr0::PE | cr0::ET);
        m.set_reg(EAX, cr0::PG);
        assert_fault(m.exec(&[0x0F, 0x22, 0xC0]), vector::GP, Some(0));
        m.set_reg(EAX, cr0::PE | cr0::NW);
        assert_fault(m.exec(&[0x0F, 0x22, 0xC0]), vector::GP, Some(0));
        m.set_reg(EAX, cr0::PE | cr0::MP);
        assert_retired(m.exec(&[0x0F, 0x22, 0xC0]));
        assert_eq!(m.cpu.state.cr0, cr0::PE | cr0::MP | cr0::ET, "ET reads as 1");
        m.set_reg(EAX, cr4::PSE | cr4::PGE);
        assert_retired(m.exec(&[0x0F, 0x22, 0xE0])); // mov cr4, eax
        assert_eq!(m.cpu.state.cr4, cr4::PSE | cr4::PGE);
        m.set_reg(EAX, 1 << 5); // PAE: not supported
        assert_fault(m.exec(&[0x0F, 0x22, 0xE0]), vector::GP, Some(0));
        let mut m = Machine::flat32().user();
        assert_fault(m.exec(&[0x0F, 0x20, 0xC0]), vector::GP, Some(0));
    }

    /// Points the 4 KiB page at `linear` to `phys` in the identity-mapped tables.
    fn remap(m: &mut Machine, linear: u32, phys: u32) {
        m.w32(PAGE_TABLE + 4 * (linear >> 12), phys | 7);
    }

    // SDM Vol. 3A, 4.10.4.1: a MOV to CR3 invalidates the (non-global) TLB
    // entries; until then a changed PTE may still be served from the TLB.
    #[test]
    fn mov_cr3_flushes_tlb() {
        let mut m = Machine::flat32().paging();
        m.w32(0x20_0000, 0xAAAA);
        m.w32(0x30_0000, 0xBBBB);
        m.set_reg(EBX, 0x20_0000);
        assert_retired(m.exec(&[0x8B, 0x03])); // mov eax, [ebx]: fills the TLB
        assert_eq!(m.reg(EAX), 0xAAAA);
        remap(&mut m, 0x20_0000, 0x30_0000);
        assert_retired(m.exec(&[0x8B, 0x03]));
        assert_eq!(m.reg(EAX), 0xAAAA, "stale translation until the flush");
        m.set_reg(ECX, PAGE_DIR);
        assert_retired(m.exec(&[0x0F, 0x22, 0xD9])); // mov cr3, ecx
        assert_retired(m.exec(&[0x8B, 0x03]));
        assert_eq!(m.reg(EAX), 0xBBBB);
    }

    // SDM Vol. 2A, INVLPG: invalidates the TLB entry of one page; CPL 0 only.
    #[test]
    fn invlpg() {
        let mut m = Machine::flat32().paging();
        m.w32(0x20_0000, 0xAAAA);
        m.w32(0x30_0000, 0xBBBB);
        m.w32(0x20_1000, 0xCCCC);
        m.set_reg(EBX, 0x20_0000).set_reg(ECX, 0x20_1000);
        assert_retired(m.exec(&[0x8B, 0x03])); // mov eax, [ebx]
        assert_retired(m.exec(&[0x8B, 0x11])); // mov edx, [ecx]
        remap(&mut m, 0x20_0000, 0x30_0000);
        remap(&mut m, 0x20_1000, 0x30_0000);
        assert_retired(m.exec(&[0x0F, 0x01, 0x3B])); // invlpg [ebx]
        assert_retired(m.exec(&[0x8B, 0x03]));
        assert_retired(m.exec(&[0x8B, 0x11]));
        assert_eq!((m.reg(EAX), m.reg(EDX)), (0xBBBB, 0xCCCC), "only [ebx]'s page flushed");
        let mut m = Machine::flat32().user();
        assert_fault(m.exec(&[0x0F, 0x01, 0x38]), vector::GP, Some(0));
    }

    // SDM Vol. 2A, LGDT/LIDT (CPL 0) and Vol. 2B, SGDT/SIDT; with a 16-bit operand
    // size only 24 bits of the base are used.
    #[test]
    fn descriptor_table_registers() {
        let mut m = Machine::flat32();
        m.w16(DATA, 0x1234);
        m.w32(DATA + 2, 0xAABB_CCDD);
        let a = d32(DATA);
        assert_retired(m.exec(&[0x0F, 0x01, 0x1D, a[0], a[1], a[2], a[3]])); // lidt [DATA]
        assert_eq!((m.cpu.state.idtr.base, m.cpu.state.idtr.limit), (0xAABB_CCDD, 0x1234));
        assert_retired(m.exec(&[0x66, 0x0F, 0x01, 0x15, a[0], a[1], a[2], a[3]])); // o16 lgdt
        assert_eq!((m.cpu.state.gdtr.base, m.cpu.state.gdtr.limit), (0x00BB_CCDD, 0x1234));
        let b = d32(DATA + 8);
        assert_retired(m.exec(&[0x0F, 0x01, 0x0D, b[0], b[1], b[2], b[3]])); // sidt [DATA+8]
        assert_eq!((m.r16(DATA + 8), m.r32(DATA + 10)), (0x1234, 0xAABB_CCDD));

        let mut m = Machine::flat32().user();
        let u = d32(DATA);
        assert_retired(m.exec(&[0x0F, 0x01, 0x05, u[0], u[1], u[2], u[3]])); // sgdt: allowed at CPL 3
        assert_eq!(m.r32(DATA + 2), GDT);
        assert_fault(m.exec(&[0x0F, 0x01, 0x15, u[0], u[1], u[2], u[3]]), vector::GP, Some(0));
    }

    // SDM Vol. 2A, LTR: loads TR from an available TSS descriptor and marks it
    // busy; a busy TSS or a null selector is #GP. STR stores the selector.
    #[test]
    fn ltr_and_str() {
        let mut m = Machine::flat32();
        let slot = FREE_SLOT;
        m.set_gdt(slot, seg_desc(0x5000, 0x67, 0x89, 0));
        m.set_reg(EAX, (slot * 8) as u32);
        assert_retired(m.exec(&[0x0F, 0x00, 0xD8])); // ltr ax
        assert_eq!(m.cpu.state.tr.selector, (slot * 8) as u16);
        assert_eq!(m.cpu.state.tr.base, 0x5000);
        assert_eq!(m.r8(GDT + 8 * slot as u32 + 5), 0x8B, "busy");
        assert_fault(m.exec(&[0x0F, 0x00, 0xD8]), vector::GP, Some((slot * 8) as u32));
        m.set_reg(EAX, 0);
        assert_fault(m.exec(&[0x0F, 0x00, 0xD8]), vector::GP, Some(0));
        m.set_reg(EBX, 0xFFFF_FFFF);
        assert_retired(m.exec(&[0x0F, 0x00, 0xCB])); // str ebx
        assert_eq!(m.reg(EBX), (slot * 8) as u32);
    }

    // SDM Vol. 2A, LLDT: loads LDTR from an LDT descriptor (a null selector makes
    // it unusable); selectors with TI = 1 then refer to that LDT (Vol. 3A, 3.5.1).
    #[test]
    fn lldt_and_ldt_selectors() {
        let mut m = Machine::flat32();
        const LDT: u32 = 0x8000;
        m.set_gdt(FREE_SLOT, seg_desc(LDT, 0xF, 0x82, 0));
        m.w32(LDT + 8, seg_desc(0x12_0000, 0xFFFF, ACC_DATA0, 0x4) as u32);
        m.w32(LDT + 12, (seg_desc(0x12_0000, 0xFFFF, ACC_DATA0, 0x4) >> 32) as u32);
        m.set_reg(EAX, (FREE_SLOT * 8) as u32);
        assert_retired(m.exec(&[0x0F, 0x00, 0xD0])); // lldt ax
        assert_eq!((m.cpu.state.ldtr.base, m.cpu.state.ldtr.limit), (LDT, 0xF));
        m.set_reg(EAX, 0x0C); // index 1, TI = 1, RPL 0
        assert_retired(m.exec(&[0x8E, 0xD8])); // mov ds, ax
        assert_eq!(m.cpu.state.segs[SegReg::Ds as usize].base, 0x12_0000);
        m.set_reg(EAX, 0x14); // index 2: beyond the LDT limit
        assert_fault(m.exec(&[0x8E, 0xD8]), vector::GP, Some(0x14));
        m.set_reg(EBX, 0);
        assert_retired(m.exec(&[0x0F, 0x00, 0xC3])); // sldt ebx
        assert_eq!(m.reg(EBX), (FREE_SLOT * 8) as u32);
        m.set_reg(EAX, u32::from(KDATA)); // not an LDT descriptor
        assert_fault(m.exec(&[0x0F, 0x00, 0xD0]), vector::GP, Some(u32::from(KDATA)));
    }

    // SDM Vol. 2A, LAR and LSL; Vol. 2B, VERR/VERW: ZF = 1 and the access rights
    // or limit when the descriptor is valid and visible at CPL/RPL, else ZF = 0
    // and the destination unchanged. Real mode: #UD. LAR's bits 19:16 are
    // undefined; we return them as 0.
    #[test]
    fn lar_lsl_verr_verw() {
        let mut m = Machine::flat32();
        m.set_reg(EBX, u32::from(KDATA)).set_reg(EAX, 0);
        assert_retired(m.exec(&[0x0F, 0x02, 0xC3])); // lar eax, ebx
        assert_eq!((m.reg(EAX), m.status() & ZF), (0x00C0_9200, ZF));
        assert_retired(m.exec(&[0x0F, 0x03, 0xC3])); // lsl eax, ebx
        assert_eq!(m.reg(EAX), 0xFFFF_FFFF);
        m.set_reg(EBX, u32::from(TSS_SEL));
        assert_retired(m.exec(&[0x0F, 0x03, 0xC3]));
        assert_eq!((m.reg(EAX), m.status() & ZF), (0x2068, ZF), "LSL of a TSS");
        m.set_reg(EBX, 0).set_reg(EAX, 0x77);
        assert_retired(m.exec(&[0x0F, 0x02, 0xC3]));
        assert_eq!((m.reg(EAX), m.status() & ZF), (0x77, 0), "null selector");
        m.set_reg(EBX, 0x800);
        assert_retired(m.exec(&[0x0F, 0x02, 0xC3]));
        assert_eq!(m.status() & ZF, 0, "beyond the GDT limit");

        m.set_reg(EBX, u32::from(KCODE));
        assert_retired(m.exec(&[0x0F, 0x00, 0xE3])); // verr bx
        assert_eq!(m.status() & ZF, ZF);
        assert_retired(m.exec(&[0x0F, 0x00, 0xEB])); // verw bx
        assert_eq!(m.status() & ZF, 0, "code is never writable");
        m.set_reg(EBX, u32::from(KDATA));
        assert_retired(m.exec(&[0x0F, 0x00, 0xEB]));
        assert_eq!(m.status() & ZF, ZF);

        let mut m = Machine::flat32().user();
        m.set_reg(EBX, u32::from(KDATA));
        assert_retired(m.exec(&[0x0F, 0x00, 0xE3])); // verr: DPL 0 < CPL 3
        assert_eq!(m.status() & ZF, 0);
        m.set_reg(EBX, u32::from(UDATA));
        assert_retired(m.exec(&[0x0F, 0x02, 0xC3]));
        assert_eq!(m.status() & ZF, ZF);

        let mut m = Machine::real16();
        assert_fault(m.exec(&[0x0F, 0x02, 0xC3]), vector::UD, None);
    }

    // SDM Vol. 2A, LMSW: loads PE, MP, EM, TS but cannot clear PE; CLTS clears TS
    // (CPL 0 only); SMSW stores CR0's low bits.
    #[test]
    fn lmsw_clts_smsw() {
        let mut m = Machine::flat32();
        m.set_reg(EAX, u32::from(cr0::TS as u16));
        assert_retired(m.exec(&[0x0F, 0x01, 0xF0])); // lmsw ax
        assert_eq!(m.cpu.state.cr0 & 0xF, cr0::PE | cr0::TS, "PE not cleared");
        assert_retired(m.exec(&[0x0F, 0x01, 0xE3])); // smsw ebx
        assert_eq!(m.reg(EBX) & 0xFFFF, cr0::PE | cr0::TS | cr0::ET);
        assert_retired(m.exec(&[0x0F, 0x06])); // clts
        assert_eq!(m.cpu.state.cr0 & cr0::TS, 0);
        let mut m = Machine::flat32().user();
        assert_fault(m.exec(&[0x0F, 0x06]), vector::GP, Some(0));
    }

    // SDM Vol. 2B, SYSENTER/SYSEXIT: flat segments derived from IA32_SYSENTER_CS;
    // SYSENTER with a null SYSENTER_CS is #GP(0).
    #[test]
    fn sysenter_sysexit() {
        let mut m = Machine::flat32().user();
        assert_fault(m.exec(&[0x0F, 0x34]), vector::GP, Some(0));
        let mut m = Machine::flat32().user();
        m.cpu.state.msrs.sysenter_cs = u32::from(KCODE);
        m.cpu.state.msrs.sysenter_esp = STACK0_TOP;
        m.cpu.state.msrs.sysenter_eip = 0x4_0000;
        assert_retired(m.exec(&[0x0F, 0x34]));
        assert_eq!(m.cpu.state.cpl(), 0);
        assert_eq!(m.cpu.state.segs[SegReg::Ss as usize].selector, KDATA);
        assert_eq!((m.eip(), m.reg(ESP)), (0x4_0000, STACK0_TOP));
        m.set_reg(ECX, USER_STACK_TOP).set_reg(EDX, CODE + 0x40);
        assert_retired(m.exec(&[0x0F, 0x35])); // sysexit
        assert_eq!(m.cpu.state.segs[SegReg::Cs as usize].selector, UCODE);
        assert_eq!(m.cpu.state.segs[SegReg::Ss as usize].selector, UDATA);
        assert_eq!((m.eip(), m.reg(ESP)), (CODE + 0x40, USER_STACK_TOP));
    }

    // SDM Vol. 2B, UD2: always #UD; WBINVD: CPL 0 only.
    #[test]
    fn ud2_and_wbinvd() {
        let mut m = Machine::flat32();
        assert_fault(m.exec(&[0x0F, 0x0B]), vector::UD, None);
        let mut m = Machine::flat32();
        assert_retired(m.exec(&[0x0F, 0x09]));
        let mut m = Machine::flat32().user();
        assert_fault(m.exec(&[0x0F, 0x09]), vector::GP, Some(0));
    }
}
