//! Hardware task switching (SDM Vol. 3A, chapter 7 "Task Management"): JMP
//! and CALL to a TSS descriptor or a task gate, interrupts and exceptions
//! through a task gate in the IDT, and IRET with NT set back along the
//! previous-task link; 32-bit and 16-bit TSSs; the busy bit, NT and the
//! link; the checks of table 7-1 with their error codes.
//!
//! Faults before the old task's state is saved happen in the old task's
//! context; once TR names the new task, a fault loading the new task's
//! segments happens in the new task's (table 7-1), so the switch marks that
//! point with [`Cpu::commit_instruction`]: the instruction's roll-back then
//! keeps the new task's registers.

use super::interrupt::add_ext;
use super::mmu::Access;
use super::seg::{sel_error, Descriptor};
use super::state::{attr, cr0, flags, SegReg, Segment};
use super::{vector, Cpu, Fault, Result};
use crate::bus::Bus;

/// What starts a task switch: its rules for the busy bit, NT and the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSwitch {
    Jmp,
    Call,
    Iret,
    /// An interrupt or exception through a task gate; `ext` is the EXT bit
    /// for error codes.
    Interrupt {
        ext: u32,
    },
}

impl TaskSwitch {
    fn nests(self) -> bool {
        matches!(self, TaskSwitch::Call | TaskSwitch::Interrupt { .. })
    }
    fn ext(self) -> u32 {
        match self {
            TaskSwitch::Interrupt { ext } => ext,
            _ => 0,
        }
    }
}

/// A TSS's type: 1/3 16-bit (available/busy), 9/0xB 32-bit.
fn is_tss(d: &Descriptor) -> bool {
    !d.is_code_data() && matches!(d.typ(), 1 | 3 | 9 | 0xB)
}

fn busy(d: &Descriptor) -> bool {
    d.typ() & 2 != 0
}

/// The registers a TSS holds for its task.
struct TaskImage {
    /// The debug trap flag (T, bit 0 at 0x64 of a 32-bit TSS).
    trap: bool,
    cr3: u32,
    eip: u32,
    eflags: u32,
    regs: [u32; 8],
    /// ES, CS, SS, DS, FS, GS, in [`SegReg`] order.
    selectors: [u16; 6],
    ldt: u16,
}

impl Cpu {
    /// A far JMP or CALL whose selector names a TSS descriptor or a task
    /// gate (`desc`, already read): the privilege and type checks of the
    /// JMP and CALL pages (SDM Vol. 2A), then the switch.
    pub fn far_to_task<B: Bus>(&mut self, bus: &mut B, sel: u16, desc: Descriptor, kind: TaskSwitch) -> Result<()> {
        let cpl = self.state.cpl();
        let rpl = (sel & 3) as u8;
        let err = sel_error(sel);
        if desc.dpl() < cpl || desc.dpl() < rpl {
            return Err(Fault::gp(err));
        }
        let (tss_sel, tss) = if desc.typ() == 5 {
            if !desc.present() {
                return Err(Fault::with_error(vector::NP, err));
            }
            let tss_sel = desc.gate_selector();
            if tss_sel & 4 != 0 {
                return Err(Fault::gp(sel_error(tss_sel)));
            }
            let tss = self.read_descriptor(bus, tss_sel, vector::GP)?;
            (tss_sel, tss)
        } else {
            if sel & 4 != 0 {
                return Err(Fault::gp(err));
            }
            (sel, desc)
        };
        let tss_err = sel_error(tss_sel);
        if !is_tss(&tss) || busy(&tss) {
            return Err(Fault::gp(tss_err));
        }
        if !tss.present() {
            return Err(Fault::with_error(vector::NP, tss_err));
        }
        let trap = self.switch_task(bus, tss_sel, tss, kind)?;
        self.check_task_eip(0)?;
        self.task_debug_trap(trap)
    }

    /// IRET with NT set: back to the task the current TSS links to, which
    /// must be busy (SDM Vol. 2A, IRET "TASK-RETURN").
    pub fn iret_to_linked_task<B: Bus>(&mut self, bus: &mut B) -> Result<()> {
        let tr = self.state.tr;
        let link = self.read_linear(bus, tr.base, 2, false)? as u16;
        let err = sel_error(link);
        if link & 4 != 0 || link & 0xFFFC == 0 {
            return Err(Fault::with_error(vector::TS, err));
        }
        let tss = self.read_descriptor(bus, link, vector::TS)?;
        if !is_tss(&tss) || !busy(&tss) {
            return Err(Fault::with_error(vector::TS, err));
        }
        if !tss.present() {
            return Err(Fault::with_error(vector::NP, err));
        }
        let trap = self.switch_task(bus, link, tss, TaskSwitch::Iret)?;
        self.check_task_eip(0)?;
        self.task_debug_trap(trap)
    }

    /// An interrupt or exception through a task gate in the IDT (SDM Vol.
    /// 2A, INT n "TASK-GATE"): the gate's DPL and presence were checked by
    /// the caller. The error code, if any, goes on the new task's stack.
    pub fn interrupt_to_task<B: Bus>(
        &mut self,
        bus: &mut B,
        gate: Descriptor,
        error: Option<u32>,
        ext: u32,
    ) -> Result<()> {
        let tss_sel = gate.gate_selector();
        let err = sel_error(tss_sel) + ext;
        if tss_sel & 4 != 0 {
            return Err(Fault::gp(err));
        }
        let tss = self
            .read_descriptor(bus, tss_sel, vector::GP)
            .map_err(|f| Fault::with_error(f.vector, f.error.map_or(err, |e| e | ext)))?;
        if !is_tss(&tss) || busy(&tss) {
            return Err(Fault::gp(err));
        }
        if !tss.present() {
            return Err(Fault::with_error(vector::NP, err));
        }
        let trap = self.switch_task(bus, tss_sel, tss, TaskSwitch::Interrupt { ext })?;
        if let Some(code) = error {
            let size = if tss.typ() & 8 != 0 { 4 } else { 2 };
            self.push(bus, size, code).map_err(|f| {
                if f.vector == vector::SS {
                    Fault::with_error(vector::SS, ext)
                } else {
                    f
                }
            })?;
        }
        self.check_task_eip(ext)?;
        self.task_debug_trap(trap)
    }

    /// The new task's EIP must lie within its CS.
    fn check_task_eip(&self, ext: u32) -> Result<()> {
        if self.state.eip > self.state.segs[SegReg::Cs as usize].limit {
            return Err(Fault::gp(ext));
        }
        Ok(())
    }

    /// The switch itself (SDM Vol. 3A, 7.3, steps 4-13), the new TSS's
    /// descriptor checked for type, busy state and presence by the caller;
    /// whether the new task's debug trap flag is set.
    fn switch_task<B: Bus>(&mut self, bus: &mut B, sel: u16, tss: Descriptor, kind: TaskSwitch) -> Result<bool> {
        let ext = kind.ext();
        let err = sel_error(sel) + ext;
        let new32 = tss.typ() & 8 != 0;
        let min_limit = if new32 { 0x67 } else { 0x2B };
        if tss.limit() < min_limit {
            return Err(Fault::with_error(vector::TS, err));
        }
        let new_base = tss.base();
        // Everything that can fault in the old task's context first: the
        // new task's image, then the old task's save area.
        let image = self.read_task_image(bus, new_base, new32)?;
        let old = self.state.tr;
        let old32 = old.attr & 8 != 0;
        let old_limit = if old32 { 0x5F } else { 0x29 };
        if old.limit < old_limit {
            return Err(Fault::with_error(vector::TS, sel_error(old.selector) + ext));
        }
        let mut old_eflags = self.state.eflags;
        if kind == TaskSwitch::Iret {
            old_eflags &= !flags::NT;
        }
        let gdt = self.state.gdtr.base;
        // Every byte the switch writes is checked writable first, so that a
        // page fault leaves nothing half done (SDM Vol. 3A, 7.3, step 5).
        let (save_first, save_last) = if old32 { (0x20, 0x5F) } else { (0x0E, 0x29) };
        let old_desc = gdt.wrapping_add(u32::from(old.selector & !7)).wrapping_add(7);
        let new_desc = gdt.wrapping_add(u32::from(sel & !7)).wrapping_add(7);
        let writes = [
            Some(old.base.wrapping_add(save_first)),
            Some(old.base.wrapping_add(save_last)),
            matches!(kind, TaskSwitch::Jmp | TaskSwitch::Iret).then_some(old_desc),
            kind.nests().then_some(new_base),
            kind.nests().then_some(new_base.wrapping_add(1)),
            (kind != TaskSwitch::Iret).then_some(new_desc),
        ];
        for lin in writes.into_iter().flatten() {
            self.translate(bus, lin, Access::Write, false)?;
        }
        self.save_task_image(bus, old.base, old32, old_eflags)?;
        if matches!(kind, TaskSwitch::Jmp | TaskSwitch::Iret) {
            let addr = gdt.wrapping_add(u32::from(old.selector & !7)).wrapping_add(4);
            let high = self.read_linear(bus, addr, 4, false)?;
            self.write_linear(bus, addr, 4, high & !(2 << 8), false)?;
        }
        if kind.nests() {
            self.write_linear(bus, new_base, 2, u32::from(old.selector), false)?;
        }
        if kind != TaskSwitch::Iret {
            let addr = gdt.wrapping_add(u32::from(sel & !7)).wrapping_add(4);
            self.write_linear(bus, addr, 4, tss.high | (2 << 8), false)?;
        }

        // Commit: TR names the new task; its registers are loaded.
        let mut tr = tss.to_segment(sel);
        tr.attr |= 2;
        self.state.tr = tr;
        self.state.cr0 |= cr0::TS;
        // The local breakpoint enables belong to the old task (SDM Vol. 3A,
        // 17.2.4).
        self.state.dr[7] &= !0x55;
        if new32 && self.state.cr0 & cr0::PG != 0 && image.cr3 != self.state.cr3 {
            self.state.cr3 = image.cr3;
            self.tlb.flush_non_global();
        }
        let mut eflags = if new32 {
            image.eflags
        } else {
            (self.state.eflags & 0xFFFF_0000) | (image.eflags & 0xFFFF)
        };
        if kind.nests() {
            eflags |= flags::NT;
        }
        self.state.eflags = (eflags & flags::WRITABLE) | flags::FIXED1;
        self.state.eip = image.eip;
        self.state.regs = image.regs;
        // The selectors take effect with empty caches; each is then loaded
        // with the new task's privilege checks.
        for (i, &s) in image.selectors.iter().enumerate() {
            self.state.segs[i] = Segment {
                selector: s,
                base: 0,
                limit: 0,
                attr: 0,
            };
        }
        self.state.ldtr = Segment {
            selector: image.ldt,
            base: 0,
            limit: 0,
            attr: 0,
        };
        self.commit_instruction();
        self.tlb_note_cpl_change();
        self.load_task_segments(bus, &image, ext)?;
        Ok(image.trap)
    }

    /// The new task's debug trap flag: its #DB is due once the switch is
    /// complete, as a trap (whoever made the switch takes it:
    /// [`Cpu::take_task_trap`]).
    fn task_debug_trap(&mut self, trap: bool) -> Result<()> {
        self.task_trap = trap;
        Ok(())
    }

    fn read_task_image<B: Bus>(&mut self, bus: &mut B, base: u32, tss32: bool) -> Result<TaskImage> {
        let mut rd = |cpu: &mut Cpu, off: u32, size: u8| cpu.read_linear(bus, base.wrapping_add(off), size, false);
        let mut image = TaskImage {
            trap: false,
            cr3: 0,
            eip: 0,
            eflags: 0,
            regs: [0; 8],
            selectors: [0; 6],
            ldt: 0,
        };
        if tss32 {
            image.cr3 = rd(self, 0x1C, 4)?;
            image.eip = rd(self, 0x20, 4)?;
            image.eflags = rd(self, 0x24, 4)?;
            for (i, r) in image.regs.iter_mut().enumerate() {
                *r = rd(self, 0x28 + 4 * i as u32, 4)?;
            }
            for (i, s) in image.selectors.iter_mut().enumerate() {
                *s = rd(self, 0x48 + 4 * i as u32, 2)? as u16;
            }
            image.ldt = rd(self, 0x60, 2)? as u16;
            image.trap = rd(self, 0x64, 2)? & 1 != 0;
        } else {
            image.eip = rd(self, 0x0E, 2)?;
            image.eflags = rd(self, 0x10, 2)?;
            // A 16-bit task's registers are 16 bits; the upper halves are
            // left as they were (SDM Vol. 3A, 7.6).
            for (i, r) in image.regs.iter_mut().enumerate() {
                *r = (self.state.regs[i] & 0xFFFF_0000) | rd(self, 0x12 + 2 * i as u32, 2)?;
            }
            // ES, CS, SS, DS; a 16-bit TSS has no FS and GS: null.
            for (i, s) in image.selectors.iter_mut().take(4).enumerate() {
                *s = rd(self, 0x22 + 2 * i as u32, 2)? as u16;
            }
            image.ldt = rd(self, 0x2A, 2)? as u16;
        }
        Ok(image)
    }

    /// Saves the dynamic fields of the current task into its TSS.
    fn save_task_image<B: Bus>(&mut self, bus: &mut B, base: u32, tss32: bool, eflags: u32) -> Result<()> {
        let eip = self.state.eip;
        let regs = self.state.regs;
        let selectors: [u16; 6] = std::array::from_fn(|i| self.state.segs[i].selector);
        let mut wr =
            |cpu: &mut Cpu, off: u32, size: u8, v: u32| cpu.write_linear(bus, base.wrapping_add(off), size, v, false);
        if tss32 {
            wr(self, 0x20, 4, eip)?;
            wr(self, 0x24, 4, eflags)?;
            for (i, r) in regs.iter().enumerate() {
                wr(self, 0x28 + 4 * i as u32, 4, *r)?;
            }
            for (i, s) in selectors.iter().take(6).enumerate() {
                wr(self, 0x48 + 4 * i as u32, 2, u32::from(*s))?;
            }
        } else {
            wr(self, 0x0E, 2, eip)?;
            wr(self, 0x10, 2, eflags)?;
            for (i, r) in regs.iter().enumerate() {
                wr(self, 0x12 + 2 * i as u32, 2, *r)?;
            }
            for (i, s) in selectors.iter().take(4).enumerate() {
                wr(self, 0x22 + 2 * i as u32, 2, u32::from(*s))?;
            }
        }
        Ok(())
    }

    /// Loads LDTR and the segment registers of the task just switched to,
    /// with the checks of table 7-1: #TS naming the selector, #NP (#SS for
    /// SS) when not present.
    fn load_task_segments<B: Bus>(&mut self, bus: &mut B, image: &TaskImage, ext: u32) -> Result<()> {
        let ts = |sel: u16| Fault::with_error(vector::TS, sel_error(sel) + ext);
        // LDTR first: the other selectors may name it.
        let ldt = image.ldt;
        if ldt & 0xFFFC != 0 {
            if ldt & 4 != 0 {
                return Err(ts(ldt));
            }
            let d = self
                .read_descriptor(bus, ldt, vector::TS)
                .map_err(|f| add_ext(f, ext))?;
            if d.is_code_data() || d.typ() != 2 {
                return Err(ts(ldt));
            }
            if !d.present() {
                return Err(ts(ldt));
            }
            self.state.ldtr = d.to_segment(ldt);
        }
        if self.state.eflags & flags::VM != 0 {
            for (i, &s) in image.selectors.iter().enumerate() {
                self.state.segs[i] = Segment {
                    selector: s,
                    base: u32::from(s) << 4,
                    limit: 0xFFFF,
                    attr: attr::P | attr::S | attr::RW | attr::ACCESSED | (3 << attr::DPL_SHIFT),
                };
                if i == SegReg::Cs as usize {
                    self.state.segs[i].attr |= attr::CODE;
                }
            }
            return Ok(());
        }
        // CS sets the new CPL.
        let cs_sel = image.selectors[SegReg::Cs as usize];
        if cs_sel & 0xFFFC == 0 {
            return Err(ts(cs_sel));
        }
        let cs = self
            .read_descriptor(bus, cs_sel, vector::TS)
            .map_err(|f| add_ext(f, ext))?;
        let cpl = (cs_sel & 3) as u8;
        let conforming = cs.typ() & 4 != 0;
        if !cs.is_code() || (conforming && cs.dpl() > cpl) || (!conforming && cs.dpl() != cpl) {
            return Err(ts(cs_sel));
        }
        if !cs.present() {
            return Err(Fault::with_error(vector::NP, sel_error(cs_sel) + ext));
        }
        let ss_sel = image.selectors[SegReg::Ss as usize];
        if ss_sel & 0xFFFC == 0 {
            return Err(ts(ss_sel));
        }
        let ss = self
            .read_descriptor(bus, ss_sel, vector::TS)
            .map_err(|f| add_ext(f, ext))?;
        let writable = ss.is_code_data() && ss.typ() & 0b1010 == 0b0010;
        if !writable || (ss_sel & 3) as u8 != cpl || ss.dpl() != cpl {
            return Err(ts(ss_sel));
        }
        if !ss.present() {
            return Err(Fault::with_error(vector::SS, sel_error(ss_sel) + ext));
        }
        self.mark_accessed(bus, cs_sel, &cs)?;
        let mut cs_seg = cs.to_segment(cs_sel);
        cs_seg.attr |= attr::ACCESSED;
        self.state.segs[SegReg::Cs as usize] = cs_seg;
        self.mark_accessed(bus, ss_sel, &ss)?;
        let mut ss_seg = ss.to_segment(ss_sel);
        ss_seg.attr |= attr::ACCESSED;
        self.state.segs[SegReg::Ss as usize] = ss_seg;
        for sreg in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let s = image.selectors[sreg as usize];
            if s & 0xFFFC == 0 {
                continue;
            }
            let d = self.read_descriptor(bus, s, vector::TS).map_err(|f| add_ext(f, ext))?;
            let readable = d.is_code_data() && (!d.is_code() || d.typ() & 2 != 0);
            let conforming_code = d.is_code() && d.typ() & 4 != 0;
            if !readable || (!conforming_code && (d.dpl() < cpl || d.dpl() < (s & 3) as u8)) {
                return Err(ts(s));
            }
            if !d.present() {
                return Err(Fault::with_error(vector::NP, sel_error(s) + ext));
            }
            self.mark_accessed(bus, s, &d)?;
            let mut seg = d.to_segment(s);
            seg.attr |= attr::ACCESSED;
            self.state.segs[sreg as usize] = seg;
        }
        Ok(())
    }
}
