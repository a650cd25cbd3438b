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
use crate::cpu::{vector, Cpu, Fault, Result};
use crate::time::TSC_PER_INSN;

/// CPUID leaf 1 EDX: FPU absent for now; PSE, TSC, MSR, CX8, SEP, PGE, CMOV.
const CPUID_1_EDX: u32 = (1 << 3) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 11) | (1 << 13) | (1 << 15);
/// Family 6 (P6), model 1, stepping 9: an i686 without later extensions.
const CPUID_1_EAX: u32 = (6 << 8) | (1 << 4) | 9;

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
                let v = bus.io_read(port, size, cpu.icount);
                cpu.write_reg(inst.op0_register(), v);
            } else {
                let v = cpu.read_reg(inst.op1_register());
                bus.io_write(port, size, v, cpu.icount);
            }
        }
        M::Hlt => {
            cpu.require_cpl0()?;
            cpu.state.halted = true;
        }
        M::Cpuid => cpuid(cpu),
        M::Rdtsc => {
            if cpu.state.cr4 & cr4::TSD != 0 && cpu.state.cpl() > 0 && cpu.state.protected_mode() {
                return Err(Fault::gp(0));
            }
            let tsc = cpu.tsc();
            cpu.state.regs[EAX] = tsc as u32;
            cpu.state.regs[EDX] = (tsc >> 32) as u32;
        }
        M::Rdmsr => {
            cpu.require_cpl0()?;
            let v = cpu.read_msr(cpu.state.regs[ECX])?;
            cpu.state.regs[EAX] = v as u32;
            cpu.state.regs[EDX] = (v >> 32) as u32;
        }
        M::Wrmsr => {
            cpu.require_cpl0()?;
            let v = (u64::from(cpu.state.regs[EDX]) << 32) | u64::from(cpu.state.regs[EAX]);
            cpu.write_msr(cpu.state.regs[ECX], v)?;
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
            let base = if operand16(inst) { t.base & 0x00FF_FFFF } else { t.base };
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
            // No x87 exception can be pending without an x87; only the task-switch
            // check applies (SDM Vol. 2B, WAIT/FWAIT).
            if cpu.state.cr0 & (cr0::MP | cr0::TS) == (cr0::MP | cr0::TS) {
                return Err(Fault::new(vector::NM));
            }
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
            cpu.state.segs[SegReg::Ss as usize] = flat_segment((cs & 0xFFFC) + 8, false, 0);
            cpu.state.regs[ESP] = cpu.state.msrs.sysenter_esp;
            cpu.state.eip = cpu.state.msrs.sysenter_eip;
        }
        M::Sysexit => {
            let cs = cpu.state.msrs.sysenter_cs as u16;
            if !pm || cpu.state.cpl() != 0 || cs & 0xFFFC == 0 {
                return Err(Fault::gp(0));
            }
            cpu.state.segs[SegReg::Cs as usize] = flat_segment((cs + 16) | 3, true, 3);
            cpu.state.segs[SegReg::Ss as usize] = flat_segment((cs + 24) | 3, false, 3);
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

fn cpuid(cpu: &mut Cpu) {
    let leaf = cpu.state.regs[EAX];
    let (a, b, c, d) = match leaf {
        // "GenuineIntel" in EBX, EDX, ECX.
        0 => (1, 0x756E_6547, 0x6C65_746E, 0x4965_6E69),
        1 => (CPUID_1_EAX, 0, 0, CPUID_1_EDX),
        _ => (0, 0, 0, 0),
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

    /// The time-stamp counter: virtual time plus the guest's own offset.
    pub fn tsc(&self) -> u64 {
        self.icount
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

    pub fn read_msr(&self, index: u32) -> Result<u64> {
        let m = &self.state.msrs;
        Ok(match index {
            0x10 => self.tsc(),
            0x17 | 0x8B | 0xFE => 0,
            0x1B => m.apic_base,
            0x174 => u64::from(m.sysenter_cs),
            0x175 => u64::from(m.sysenter_esp),
            0x176 => u64::from(m.sysenter_eip),
            0x1A0 => m.misc_enable,
            0x277 => m.pat,
            0x2FF => m.mtrr_def_type,
            _ => return Err(Fault::gp(0)),
        })
    }

    pub fn write_msr(&mut self, index: u32, v: u64) -> Result<()> {
        match index {
            0x10 => {
                let now = self.icount.wrapping_mul(TSC_PER_INSN);
                self.state.msrs.tsc_offset = v.wrapping_sub(now);
            }
            0x8B => {}
            0x1B => self.state.msrs.apic_base = v,
            0x174 => self.state.msrs.sysenter_cs = v as u32,
            0x175 => self.state.msrs.sysenter_esp = v as u32,
            0x176 => self.state.msrs.sysenter_eip = v as u32,
            0x1A0 => self.state.msrs.misc_enable = v,
            0x277 => self.state.msrs.pat = v,
            0x2FF => self.state.msrs.mtrr_def_type = v,
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
