//! Interrupt and exception delivery: the real-mode IVT and the protected-mode IDT
//! with interrupt and trap gates, inter-privilege stack switches through the TSS,
//! virtual-8086 exits, and the double/triple fault rules (SDM Vol. 3A, 6.4-6.15,
//! 20.1.4 "Interrupt and exception handling" in real mode; Vol. 2, "INT n/INTO/INT3").

use super::mmu::Access;
use super::seg::{check_segment, sel_error, Descriptor};
use super::state::{flags, reg, SegReg, Segment};
use super::{vector, Cpu, Fault, Result, StepOutcome};
use crate::bus::Bus;

/// Where an interrupt comes from; decides the DPL check and the EXT error-code bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntSource {
    /// A processor exception, with its error code if it has one.
    Exception(Option<u32>),
    /// A hardware interrupt from the PIC.
    External,
    /// INT n, INT3, INTO: the gate's DPL is checked against CPL.
    Software,
}

/// Pushes onto a stack that is not (yet) SS:ESP, checking against `ss`.
struct StackWriter {
    ss: Segment,
    esp: u32,
    mask: u32,
    user: bool,
}

impl StackWriter {
    fn push<B: Bus>(&mut self, cpu: &mut Cpu, bus: &mut B, size: u8, value: u32, err: Fault) -> Result<()> {
        let esp = self.esp.wrapping_sub(u32::from(size)) & self.mask;
        let lin = check_segment(
            &self.ss,
            esp,
            u32::from(size),
            Access::Write,
            cpu.state.protected_mode(),
        )
        .ok_or(err)?;
        cpu.write_linear(bus, lin, size, value, self.user)?;
        self.esp = (self.esp & !self.mask) | esp;
        Ok(())
    }
}

impl Cpu {
    /// Delivers an interrupt or exception with the current EIP as return address.
    pub fn deliver_interrupt<B: Bus>(&mut self, bus: &mut B, vec: u8, source: IntSource) -> Result<()> {
        if self.ring_view != super::RingView::True {
            // Run raw, every vector goes to the monitor, which delivers it
            // with the guest's true state.
            return Err(Fault::new(vec));
        }
        self.state.halted = false;
        if !self.state.protected_mode() {
            return self.deliver_real(bus, vec);
        }
        self.deliver_protected(bus, vec, source)
    }

    fn deliver_real<B: Bus>(&mut self, bus: &mut B, vec: u8) -> Result<()> {
        let entry = u32::from(vec) * 4;
        if entry + 3 > u32::from(self.state.idtr.limit) {
            return Err(Fault::gp(u32::from(vec) * 8 + 2));
        }
        let base = self.state.idtr.base;
        let ip = self.read_linear(bus, base.wrapping_add(entry), 2, false)?;
        let cs = self.read_linear(bus, base.wrapping_add(entry + 2), 2, false)? as u16;
        let flags_now = self.state.eflags;
        let cs_now = u32::from(self.state.segs[SegReg::Cs as usize].selector);
        let eip_now = self.state.eip;
        self.push(bus, 2, flags_now)?;
        self.push(bus, 2, cs_now)?;
        self.push(bus, 2, eip_now)?;
        self.state.eflags &= !(flags::IF | flags::TF | flags::AC | flags::RF);
        let seg = &mut self.state.segs[SegReg::Cs as usize];
        seg.selector = cs;
        seg.base = u32::from(cs) << 4;
        self.state.eip = ip;
        Ok(())
    }

    fn deliver_protected<B: Bus>(&mut self, bus: &mut B, vec: u8, source: IntSource) -> Result<()> {
        let ext = u32::from(source != IntSource::Software);
        let idt_err = u32::from(vec) * 8 + 2 + ext;
        if u32::from(vec) * 8 + 7 > u32::from(self.state.idtr.limit) {
            return Err(Fault::gp(idt_err));
        }
        let addr = self.state.idtr.base.wrapping_add(u32::from(vec) * 8);
        let gate = Descriptor {
            low: self.read_linear(bus, addr, 4, false)?,
            high: self.read_linear(bus, addr.wrapping_add(4), 4, false)?,
        };
        let gate_type = gate.typ();
        let (gate32, trap) = match (gate.is_code_data(), gate_type) {
            (false, 0x5) => (false, false),
            (false, 0x6) => (false, false),
            (false, 0x7) => (false, true),
            (false, 0xE) => (true, false),
            (false, 0xF) => (true, true),
            _ => return Err(Fault::gp(idt_err)),
        };
        let cpl = self.state.cpl();
        if source == IntSource::Software && gate.dpl() < cpl {
            return Err(Fault::gp(idt_err));
        }
        if !gate.present() {
            return Err(Fault::with_error(vector::NP, idt_err));
        }
        if gate_type == 0x5 {
            // A task gate: the handler is a task of its own (SDM Vol. 3A, 6.12.2).
            let error = match source {
                IntSource::Exception(e) => e,
                _ => None,
            };
            return self.interrupt_to_task(bus, gate, error, ext);
        }
        let sel = gate.gate_selector();
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(ext));
        }
        let cs_desc = self
            .read_descriptor(bus, sel, vector::GP)
            .map_err(|f| add_ext(f, ext))?;
        let sel_err = sel_error(sel) + ext;
        if !cs_desc.is_code() || cs_desc.dpl() > cpl {
            return Err(Fault::gp(sel_err));
        }
        if !cs_desc.present() {
            return Err(Fault::with_error(vector::NP, sel_err));
        }
        let conforming = cs_desc.typ() & 4 != 0;
        let v86 = self.state.v86_mode();
        // Leaving virtual-8086 mode is only possible to a ring-0 non-conforming
        // handler (SDM Vol. 3A, 20.3.1.1; Vol. 2A, INT n operation).
        if v86 && (conforming || cs_desc.dpl() != 0) {
            return Err(Fault::gp(sel_err));
        }
        let new_cpl = if conforming { cpl } else { cs_desc.dpl() };
        let size: u8 = if gate32 { 4 } else { 2 };
        let old_flags = self.state.eflags;
        let old_cs = u32::from(self.state.segs[SegReg::Cs as usize].selector);
        let old_eip = self.state.eip;
        let old_ss = u32::from(self.state.segs[SegReg::Ss as usize].selector);
        let old_esp = self.state.regs[reg::ESP];
        let error = match source {
            IntSource::Exception(e) => e,
            _ => None,
        };

        let mut new_ss_seg = None;
        let mut writer = if new_cpl < cpl {
            // Inter-privilege: the new stack comes from the TSS (SDM 6.12.1).
            let (ss_sel, esp) = self.tss_stack(bus, new_cpl).map_err(|f| add_ext(f, ext))?;
            let ss_err = Fault::with_error(vector::TS, sel_error(ss_sel) + ext);
            if ss_sel & 0xFFFC == 0 {
                return Err(Fault::with_error(vector::TS, ext));
            }
            let ss_desc = self
                .read_descriptor(bus, ss_sel, vector::TS)
                .map_err(|f| add_ext(f, ext))?;
            let writable_data = ss_desc.is_code_data() && ss_desc.typ() & 0b1010 == 0b0010;
            if (ss_sel & 3) as u8 != new_cpl || ss_desc.dpl() != new_cpl || !writable_data {
                return Err(ss_err);
            }
            if !ss_desc.present() {
                return Err(Fault::with_error(vector::SS, sel_error(ss_sel) + ext));
            }
            let ss = ss_desc.to_segment(ss_sel);
            new_ss_seg = Some(ss);
            let mask = if ss.big() { 0xFFFF_FFFF } else { 0xFFFF };
            StackWriter {
                ss,
                esp,
                mask,
                user: new_cpl == 3,
            }
        } else {
            if v86 {
                return Err(Fault::gp(sel_err));
            }
            let ss = self.state.segs[SegReg::Ss as usize];
            StackWriter {
                ss,
                esp: old_esp,
                mask: self.sp_mask(),
                user: new_cpl == 3,
            }
        };
        // Overflowing a new inner stack names its selector (SDM Vol. 3A, 6.12.1).
        let stack_fault = match new_ss_seg {
            Some(ss) => Fault::with_error(vector::SS, sel_error(ss.selector) + ext),
            None => Fault::with_error(vector::SS, ext),
        };
        if v86 {
            for s in [SegReg::Gs, SegReg::Fs, SegReg::Ds, SegReg::Es] {
                let v = u32::from(self.state.segs[s as usize].selector);
                writer.push(self, bus, size, v, stack_fault)?;
            }
        }
        if new_ss_seg.is_some() {
            writer.push(self, bus, size, old_ss, stack_fault)?;
            writer.push(self, bus, size, old_esp, stack_fault)?;
        }
        writer.push(self, bus, size, old_flags, stack_fault)?;
        writer.push(self, bus, size, old_cs, stack_fault)?;
        writer.push(self, bus, size, old_eip, stack_fault)?;
        if let Some(code) = error {
            writer.push(self, bus, size, code, stack_fault)?;
        }
        // Everything that can fault has been done: commit.
        self.mark_accessed(bus, sel, &cs_desc)?;
        if let Some(ss) = new_ss_seg {
            self.state.segs[SegReg::Ss as usize] = ss;
        }
        if v86 {
            for s in [SegReg::Gs, SegReg::Fs, SegReg::Ds, SegReg::Es] {
                self.state.segs[s as usize] = Segment {
                    selector: 0,
                    base: 0,
                    limit: 0,
                    attr: 0,
                };
            }
        }
        self.state.regs[reg::ESP] = writer.esp;
        let mut cs = cs_desc.to_segment((sel & !3) | u16::from(new_cpl));
        cs.attr |= super::state::attr::ACCESSED;
        self.state.segs[SegReg::Cs as usize] = cs;
        self.state.eip = if gate32 {
            gate.gate_offset()
        } else {
            gate.gate_offset() & 0xFFFF
        };
        self.state.eflags &= !(flags::TF | flags::NT | flags::RF | flags::VM);
        if !trap {
            self.state.eflags &= !flags::IF;
        }
        self.tlb_note_cpl_change();
        Ok(())
    }

    /// Takes a #DB that a task switch to a TSS with the T flag left due,
    /// setting DR6.BT (SDM Vol. 3A, 7.2.1, 17.2.3).
    pub fn take_task_trap(&mut self) -> bool {
        if !std::mem::take(&mut self.task_trap) {
            return false;
        }
        self.state.dr[6] |= 1 << 15;
        true
    }

    /// The stack for privilege level `level` from the current TSS (SDM 7.2.1).
    pub fn tss_stack<B: Bus>(&mut self, bus: &mut B, level: u8) -> Result<(u16, u32)> {
        let tr = self.state.tr;
        let tss32 = tr.attr & 0xF == 0x9 || tr.attr & 0xF == 0xB;
        let (esp_off, ss_off, sp_size) = if tss32 {
            (4 + 8 * u32::from(level), 8 + 8 * u32::from(level), 4)
        } else {
            (2 + 4 * u32::from(level), 4 + 4 * u32::from(level), 2)
        };
        if ss_off + 1 > tr.limit {
            return Err(Fault::with_error(vector::TS, sel_error(tr.selector)));
        }
        let esp = self.read_linear(bus, tr.base.wrapping_add(esp_off), sp_size, false)?;
        let ss = self.read_linear(bus, tr.base.wrapping_add(ss_off), 2, false)? as u16;
        Ok((ss, esp))
    }

    /// Hook for a privilege change; the TLB caches permissions, not the CPL, so
    /// nothing needs flushing, but engines may want to know.
    #[inline]
    pub(crate) fn tlb_note_cpl_change(&mut self) {}

    /// Delivers a fault raised by the instruction at `start_eip`, applying the
    /// double-fault and triple-fault rules (SDM Vol. 3A, 6.15, table 6-5).
    pub fn raise<B: Bus>(&mut self, bus: &mut B, fault: Fault) -> StepOutcome {
        self.last_fault_pc = self.state.segs[super::SegReg::Cs as usize]
            .base
            .wrapping_add(self.state.eip);
        let mut current = fault;
        // Delivery can only fail with #TS/#NP/#SS/#GP/#PF, so after at most a
        // few serial steps a pair escalates to #DF; the bound is a backstop.
        for _ in 0..8 {
            let next = match self.deliver_interrupt(bus, current.vector, IntSource::Exception(current.error)) {
                Ok(()) => {
                    // Delivered through a task gate to a task with its T flag:
                    // that task's #DB comes next, a trap of its own.
                    if self.take_task_trap() {
                        if let Err(f) = self.deliver_interrupt(bus, vector::DB, IntSource::Exception(None)) {
                            return self.raise(bus, f);
                        }
                    }
                    return StepOutcome::Exception(current);
                }
                Err(next) => next,
            };
            if current.vector == vector::DF {
                return StepOutcome::TripleFault(next);
            }
            let double = (current.contributory() && next.contributory())
                || (current.vector == vector::PF && (next.contributory() || next.vector == vector::PF));
            // A benign pair is handled serially: the second exception becomes
            // the one being delivered, and the rules apply to it in turn.
            current = if double { Fault::with_error(vector::DF, 0) } else { next };
        }
        StepOutcome::TripleFault(current)
    }
}

pub(crate) fn add_ext(f: Fault, ext: u32) -> Fault {
    match f.error {
        Some(e) if f.vector != vector::PF => Fault {
            vector: f.vector,
            error: Some(e | ext),
        },
        _ => f,
    }
}
