//! Control transfer: JMP, Jcc, CALL, RET, LOOP/LOOPE/LOOPNE, JCXZ/JECXZ, far JMP,
//! CALL and RET with call gates and privilege changes, INT n, INT3, INTO, INT1,
//! IRET, BOUND (SDM Vol. 1, 6.3 "Calling procedures using CALL and RET", 7.3.8;
//! Vol. 2, "CALL", "JMP", "RET", "IRET/IRETD", "INT n/INTO/INT3/INT1", "BOUND";
//! Vol. 3A, 5.8 "Privilege level checking when transferring program control").

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::{flags, op_size, stack_op_size, Flow};
use crate::bus::Bus;
use crate::cpu::interrupt::IntSource;
use crate::cpu::seg::{sel_error, Descriptor};
use crate::cpu::state::flags as fl;
use crate::cpu::state::reg::{ECX, ESP};
use crate::cpu::state::{attr, SegReg, Segment};
use crate::cpu::{vector, Cpu, Fault, Result};

pub fn jcc(cpu: &mut Cpu, inst: &Instruction) -> Result<Flow> {
    if flags::condition(cpu.state.eflags, super::datamov::condition_of(inst)) {
        cpu.near_jump(inst.near_branch_target() as u32)?;
    }
    Ok(Flow::Next)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FarKind {
    Jmp,
    Call,
}

pub fn exec<B: Bus>(cpu: &mut Cpu, bus: &mut B, inst: &Instruction) -> Result<Flow> {
    use Mnemonic as M;
    match inst.mnemonic() {
        M::Jmp | M::Call => {
            let call = inst.mnemonic() == M::Call;
            match inst.op0_kind() {
                OpKind::NearBranch16 | OpKind::NearBranch32 => {
                    let target = inst.near_branch_target() as u32;
                    if call {
                        let ret = cpu.state.eip;
                        cpu.check_code_target(target)?;
                        cpu.push(bus, stack_op_size(inst), ret)?;
                    }
                    cpu.near_jump(target)?;
                }
                OpKind::FarBranch16 | OpKind::FarBranch32 => {
                    let size = if inst.op0_kind() == OpKind::FarBranch16 { 2 } else { 4 };
                    let kind = if call { FarKind::Call } else { FarKind::Jmp };
                    let off = if size == 2 {
                        u32::from(inst.far_branch16())
                    } else {
                        inst.far_branch32()
                    };
                    cpu.far_transfer(bus, inst.far_branch_selector(), off, size, kind)?;
                }
                OpKind::Memory
                    if matches!(
                        inst.memory_size(),
                        iced_x86::MemorySize::SegPtr16 | iced_x86::MemorySize::SegPtr32
                    ) =>
                {
                    let size = if inst.memory_size() == iced_x86::MemorySize::SegPtr16 {
                        2
                    } else {
                        4
                    };
                    let (seg, ea) = cpu.mem_operand(inst);
                    let off = cpu.read_mem(bus, seg, ea, size)?;
                    let sel = cpu.read_mem(bus, seg, ea.wrapping_add(u32::from(size)), 2)? as u16;
                    let kind = if call { FarKind::Call } else { FarKind::Jmp };
                    cpu.far_transfer(bus, sel, off, size, kind)?;
                }
                _ => {
                    let size = op_size(inst, 0);
                    let target = cpu.read_op(bus, inst, 0, size)?;
                    if call {
                        let ret = cpu.state.eip;
                        cpu.check_code_target(target)?;
                        cpu.push(bus, size, ret)?;
                    }
                    cpu.near_jump(target)?;
                }
            }
            Ok(Flow::Next)
        }
        M::Ret => {
            let size: u8 = if matches!(inst.code(), Code::Retnw | Code::Retnw_imm16) {
                2
            } else {
                4
            };
            let target = cpu.peek_stack(bus, 0, size)?;
            cpu.check_code_target(target)?;
            let imm = if inst.op_count() > 0 {
                u32::from(inst.immediate16())
            } else {
                0
            };
            cpu.set_sp(cpu.state.regs[ESP].wrapping_add(u32::from(size)).wrapping_add(imm));
            cpu.state.eip = target;
            Ok(Flow::Next)
        }
        M::Retf => {
            let size: u8 = if matches!(inst.code(), Code::Retfw | Code::Retfw_imm16) {
                2
            } else {
                4
            };
            let imm = if inst.op_count() > 0 {
                u32::from(inst.immediate16())
            } else {
                0
            };
            cpu.far_return(bus, size, imm)?;
            Ok(Flow::Next)
        }
        M::Loop | M::Loope | M::Loopne | M::Jcxz | M::Jecxz => {
            let ecx_sized = matches!(
                inst.code(),
                Code::Loop_rel8_16_ECX
                    | Code::Loop_rel8_32_ECX
                    | Code::Loope_rel8_16_ECX
                    | Code::Loope_rel8_32_ECX
                    | Code::Loopne_rel8_16_ECX
                    | Code::Loopne_rel8_32_ECX
                    | Code::Jecxz_rel8_16
                    | Code::Jecxz_rel8_32
            );
            let mask: u32 = if ecx_sized { 0xFFFF_FFFF } else { 0xFFFF };
            let ecx = cpu.state.regs[ECX];
            let take = if matches!(inst.mnemonic(), M::Jcxz | M::Jecxz) {
                ecx & mask == 0
            } else {
                let count = ecx.wrapping_sub(1) & mask;
                cpu.state.regs[ECX] = (ecx & !mask) | count;
                let zf = cpu.flag(fl::ZF);
                count != 0
                    && match inst.mnemonic() {
                        M::Loope => zf,
                        M::Loopne => !zf,
                        _ => true,
                    }
            };
            if take {
                cpu.near_jump(inst.near_branch_target() as u32)?;
            }
            Ok(Flow::Next)
        }
        M::Int | M::Int3 | M::Into | M::Int1 => {
            let vec = match inst.mnemonic() {
                M::Int => inst.immediate8(),
                M::Int3 => vector::BP,
                M::Int1 => vector::DB,
                _ => {
                    if !cpu.flag(fl::OF) {
                        return Ok(Flow::Next);
                    }
                    vector::OF
                }
            };
            if inst.mnemonic() == M::Int && cpu.state.v86_mode() && cpu.state.iopl() < 3 {
                return Err(Fault::gp(0));
            }
            let source = if inst.mnemonic() == M::Int1 {
                IntSource::Exception(None)
            } else {
                IntSource::Software
            };
            cpu.deliver_interrupt(bus, vec, source)?;
            Ok(Flow::Next)
        }
        M::Iret | M::Iretd => {
            let size = if inst.mnemonic() == M::Iretd { 4 } else { 2 };
            cpu.iret(bus, size)?;
            Ok(Flow::Next)
        }
        M::Bound => {
            if inst.op1_kind() != OpKind::Memory {
                return Err(Fault::ud());
            }
            let size = op_size(inst, 0);
            let idx = flags::sext(cpu.read_op(bus, inst, 0, size)?, size) as i32;
            let (seg, ea) = cpu.mem_operand(inst);
            let lo = flags::sext(cpu.read_mem(bus, seg, ea, size)?, size) as i32;
            let hi = flags::sext(cpu.read_mem(bus, seg, ea.wrapping_add(u32::from(size)), size)?, size) as i32;
            if idx < lo || idx > hi {
                return Err(Fault::new(vector::BR));
            }
            Ok(Flow::Next)
        }
        _ => Err(Fault::ud()),
    }
}

impl Cpu {
    /// #GP(0) unless `target` lies within the CS limit.
    #[inline]
    pub fn check_code_target(&self, target: u32) -> Result<()> {
        if target > self.state.segs[SegReg::Cs as usize].limit {
            return Err(Fault::gp(0));
        }
        Ok(())
    }

    #[inline]
    pub fn near_jump(&mut self, target: u32) -> Result<()> {
        self.check_code_target(target)?;
        self.state.eip = target;
        Ok(())
    }

    fn load_cs_real(&mut self, sel: u16, off: u32) {
        let cs = &mut self.state.segs[SegReg::Cs as usize];
        cs.selector = sel;
        cs.base = u32::from(sel) << 4;
        if self.state.eflags & fl::VM != 0 {
            cs.limit = 0xFFFF;
            cs.attr = attr::P | attr::S | attr::CODE | attr::RW | attr::ACCESSED | (3 << attr::DPL_SHIFT);
        }
        self.state.eip = off;
    }

    /// Far JMP and far CALL (SDM Vol. 2A "CALL" and "JMP", protected-mode operation).
    fn far_transfer<B: Bus>(&mut self, bus: &mut B, sel: u16, off: u32, size: u8, kind: FarKind) -> Result<()> {
        let off = if size == 2 { off & 0xFFFF } else { off };
        if !self.state.protected_mode() || self.state.v86_mode() {
            if off > self.state.segs[SegReg::Cs as usize].limit {
                return Err(Fault::gp(0));
            }
            if kind == FarKind::Call {
                let cs = u32::from(self.state.segs[SegReg::Cs as usize].selector);
                let eip = self.state.eip;
                self.push(bus, size, cs)?;
                self.push(bus, size, eip)?;
            }
            self.load_cs_real(sel, off);
            return Ok(());
        }
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let cpl = self.state.cpl();
        let desc = self.read_descriptor(bus, sel, vector::GP)?;
        let err = sel_error(sel);
        if desc.is_code_data() {
            if !desc.is_code() {
                return Err(Fault::gp(err));
            }
            let conforming = desc.typ() & 4 != 0;
            if conforming {
                if desc.dpl() > cpl {
                    return Err(Fault::gp(err));
                }
            } else if (sel & 3) as u8 > cpl || desc.dpl() != cpl {
                return Err(Fault::gp(err));
            }
            if !desc.present() {
                return Err(Fault::with_error(vector::NP, err));
            }
            let seg = desc.to_segment((sel & !3) | u16::from(cpl));
            if off > seg.limit {
                return Err(Fault::gp(0));
            }
            if kind == FarKind::Call {
                let cs = u32::from(self.state.segs[SegReg::Cs as usize].selector);
                let eip = self.state.eip;
                self.push(bus, size, cs)?;
                self.push(bus, size, eip)?;
            }
            self.mark_accessed(bus, sel, &desc)?;
            self.set_cs(seg);
            self.state.eip = off;
            return Ok(());
        }
        match desc.typ() {
            0x4 | 0xC => self.through_call_gate(bus, sel, desc, kind),
            // Task switches through TSS descriptors and task gates are not modelled.
            _ => Err(Fault::gp(err)),
        }
    }

    fn set_cs(&mut self, mut seg: Segment) {
        seg.attr |= attr::ACCESSED;
        self.state.segs[SegReg::Cs as usize] = seg;
    }

    fn through_call_gate<B: Bus>(&mut self, bus: &mut B, gate_sel: u16, gate: Descriptor, kind: FarKind) -> Result<()> {
        let cpl = self.state.cpl();
        let gerr = sel_error(gate_sel);
        if gate.dpl() < cpl || gate.dpl() < (gate_sel & 3) as u8 {
            return Err(Fault::gp(gerr));
        }
        if !gate.present() {
            return Err(Fault::with_error(vector::NP, gerr));
        }
        let gate32 = gate.typ() == 0xC;
        let size: u8 = if gate32 { 4 } else { 2 };
        let sel = gate.gate_selector();
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let desc = self.read_descriptor(bus, sel, vector::GP)?;
        let err = sel_error(sel);
        if !desc.is_code() || desc.dpl() > cpl {
            return Err(Fault::gp(err));
        }
        if !desc.present() {
            return Err(Fault::with_error(vector::NP, err));
        }
        let off = if gate32 {
            gate.gate_offset()
        } else {
            gate.gate_offset() & 0xFFFF
        };
        let conforming = desc.typ() & 4 != 0;
        if kind == FarKind::Jmp {
            if !conforming && desc.dpl() != cpl {
                return Err(Fault::gp(err));
            }
            let seg = desc.to_segment((sel & !3) | u16::from(cpl));
            if off > seg.limit {
                return Err(Fault::gp(0));
            }
            self.mark_accessed(bus, sel, &desc)?;
            self.set_cs(seg);
            self.state.eip = off;
            return Ok(());
        }
        let old_cs = u32::from(self.state.segs[SegReg::Cs as usize].selector);
        let old_eip = self.state.eip;
        if !conforming && desc.dpl() < cpl {
            // More privilege: switch to the inner stack and copy the parameters.
            let new_cpl = desc.dpl();
            let (ss_sel, esp) = self.tss_stack(bus, new_cpl)?;
            let ss_err = Fault::with_error(vector::TS, sel_error(ss_sel));
            if ss_sel & 0xFFFC == 0 {
                return Err(ss_err);
            }
            let ss_desc = self.read_descriptor(bus, ss_sel, vector::TS)?;
            let writable = ss_desc.is_code_data() && ss_desc.typ() & 0b1010 == 0b0010;
            if (ss_sel & 3) as u8 != new_cpl || ss_desc.dpl() != new_cpl || !writable {
                return Err(ss_err);
            }
            if !ss_desc.present() {
                return Err(Fault::with_error(vector::SS, sel_error(ss_sel)));
            }
            let params = (gate.high & 0x1F) as u8;
            let old_ss = u32::from(self.state.segs[SegReg::Ss as usize].selector);
            let old_esp = self.state.regs[ESP];
            let mut copied = [0u32; 32];
            for (i, slot) in copied.iter_mut().enumerate().take(params as usize) {
                *slot = self.peek_stack(bus, (i as u32) * u32::from(size), size)?;
            }
            let new_ss = ss_desc.to_segment(ss_sel);
            let saved_ss = self.state.segs[SegReg::Ss as usize];
            self.state.segs[SegReg::Ss as usize] = new_ss;
            self.state.regs[ESP] = esp;
            let pushed = (|| {
                self.push(bus, size, old_ss)?;
                self.push(bus, size, old_esp)?;
                for i in (0..params as usize).rev() {
                    self.push(bus, size, copied[i])?;
                }
                self.push(bus, size, old_cs)?;
                self.push(bus, size, old_eip)
            })();
            if let Err(f) = pushed {
                self.state.segs[SegReg::Ss as usize] = saved_ss;
                return Err(f);
            }
            self.mark_accessed(bus, sel, &desc)?;
            self.set_cs(desc.to_segment((sel & !3) | u16::from(new_cpl)));
            self.state.eip = off;
            return Ok(());
        }
        self.push(bus, size, old_cs)?;
        self.push(bus, size, old_eip)?;
        self.mark_accessed(bus, sel, &desc)?;
        self.set_cs(desc.to_segment((sel & !3) | u16::from(cpl)));
        self.state.eip = off;
        Ok(())
    }

    /// Loads CS for a return to `sel`, checking it as RET/IRET do.
    fn return_cs<B: Bus>(&mut self, bus: &mut B, sel: u16, off: u32) -> Result<(Segment, Descriptor)> {
        let cpl = self.state.cpl();
        if sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let desc = self.read_descriptor(bus, sel, vector::GP)?;
        let err = sel_error(sel);
        let rpl = (sel & 3) as u8;
        if !desc.is_code() || rpl < cpl {
            return Err(Fault::gp(err));
        }
        let conforming = desc.typ() & 4 != 0;
        if (conforming && desc.dpl() > rpl) || (!conforming && desc.dpl() != rpl) {
            return Err(Fault::gp(err));
        }
        if !desc.present() {
            return Err(Fault::with_error(vector::NP, err));
        }
        let seg = desc.to_segment(sel);
        if off > seg.limit {
            return Err(Fault::gp(0));
        }
        Ok((seg, desc))
    }

    /// After a return to an outer level, data segments the new level may not use
    /// are nulled (SDM Vol. 2, RET "RETURN-TO-OUTER-PRIVILEGE-LEVEL").
    fn null_inaccessible_segments(&mut self) {
        let cpl = self.state.cpl();
        for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let seg = &mut self.state.segs[s as usize];
            let conforming_code = seg.attr & attr::CODE != 0 && seg.attr & attr::DC != 0;
            if seg.attr & attr::S != 0 && !conforming_code && seg.dpl() < cpl {
                *seg = Segment {
                    selector: 0,
                    base: 0,
                    limit: 0,
                    attr: 0,
                };
            }
        }
    }

    /// Loads SS:ESP popped during a return to an outer privilege level.
    fn outer_stack<B: Bus>(&mut self, bus: &mut B, ss_sel: u16, rpl: u8) -> Result<Segment> {
        let err = sel_error(ss_sel);
        if ss_sel & 0xFFFC == 0 {
            return Err(Fault::gp(0));
        }
        let d = self.read_descriptor(bus, ss_sel, vector::GP)?;
        let writable = d.is_code_data() && d.typ() & 0b1010 == 0b0010;
        if (ss_sel & 3) as u8 != rpl || d.dpl() != rpl || !writable {
            return Err(Fault::gp(err));
        }
        if !d.present() {
            return Err(Fault::with_error(vector::SS, err));
        }
        self.mark_accessed(bus, ss_sel, &d)?;
        let mut s = d.to_segment(ss_sel);
        s.attr |= attr::ACCESSED;
        Ok(s)
    }

    fn far_return<B: Bus>(&mut self, bus: &mut B, size: u8, imm: u32) -> Result<()> {
        let off = self.peek_stack(bus, 0, size)?;
        let sel = self.peek_stack(bus, u32::from(size), size)? as u16;
        if !self.state.protected_mode() || self.state.v86_mode() {
            if off > self.state.segs[SegReg::Cs as usize].limit {
                return Err(Fault::gp(0));
            }
            self.set_sp(self.state.regs[ESP].wrapping_add(2 * u32::from(size)).wrapping_add(imm));
            self.load_cs_real(sel, off);
            return Ok(());
        }
        let off = if size == 2 { off & 0xFFFF } else { off };
        let (cs, desc) = self.return_cs(bus, sel, off)?;
        let rpl = (sel & 3) as u8;
        if rpl > self.state.cpl() {
            let base = 2 * u32::from(size) + imm;
            let esp = self.peek_stack(bus, base, size)?;
            let ss_sel = self.peek_stack(bus, base + u32::from(size), size)? as u16;
            let ss = self.outer_stack(bus, ss_sel, rpl)?;
            self.mark_accessed(bus, sel, &desc)?;
            self.set_cs(cs);
            self.state.segs[SegReg::Ss as usize] = ss;
            let mask = if ss.big() { 0xFFFF_FFFF } else { 0xFFFF };
            let new_esp = esp.wrapping_add(imm);
            self.state.regs[ESP] = (self.state.regs[ESP] & !mask) | (new_esp & mask);
            self.state.eip = off;
            self.null_inaccessible_segments();
            return Ok(());
        }
        self.mark_accessed(bus, sel, &desc)?;
        self.set_cs(cs);
        self.set_sp(self.state.regs[ESP].wrapping_add(2 * u32::from(size)).wrapping_add(imm));
        self.state.eip = off;
        Ok(())
    }

    /// IRET/IRETD (SDM Vol. 2A "IRET/IRETD" operation).
    fn iret<B: Bus>(&mut self, bus: &mut B, size: u8) -> Result<()> {
        let s = u32::from(size);
        if !self.state.protected_mode() {
            let off = self.peek_stack(bus, 0, size)?;
            let sel = self.peek_stack(bus, s, size)? as u16;
            let fl_img = self.peek_stack(bus, 2 * s, size)?;
            if off > self.state.segs[SegReg::Cs as usize].limit {
                return Err(Fault::gp(0));
            }
            self.set_sp(self.state.regs[ESP].wrapping_add(3 * s));
            self.load_cs_real(sel, off);
            self.write_eflags(fl_img, size);
            return Ok(());
        }
        if self.state.v86_mode() {
            if self.state.iopl() < 3 {
                return Err(Fault::gp(0));
            }
            let off = self.peek_stack(bus, 0, size)?;
            let sel = self.peek_stack(bus, s, size)? as u16;
            let fl_img = self.peek_stack(bus, 2 * s, size)?;
            self.set_sp(self.state.regs[ESP].wrapping_add(3 * s));
            self.load_cs_real(sel, off & 0xFFFF);
            self.write_eflags(fl_img, size);
            return Ok(());
        }
        if self.state.eflags & fl::NT != 0 {
            // A nested-task return needs hardware task switching, which is not modelled.
            return Err(Fault::gp(sel_error(self.state.tr.selector)));
        }
        let off = self.peek_stack(bus, 0, size)?;
        let sel = self.peek_stack(bus, s, size)? as u16;
        let fl_img = self.peek_stack(bus, 2 * s, size)?;
        let cpl = self.state.cpl();
        if size == 4 && fl_img & fl::VM != 0 && cpl == 0 {
            return self.iret_to_v86(bus, off, sel, fl_img);
        }
        let off = if size == 2 { off & 0xFFFF } else { off };
        let (cs, desc) = self.return_cs(bus, sel, off)?;
        let rpl = (sel & 3) as u8;
        if rpl > cpl {
            let esp = self.peek_stack(bus, 3 * s, size)?;
            let ss_sel = self.peek_stack(bus, 4 * s, size)? as u16;
            let ss = self.outer_stack(bus, ss_sel, rpl)?;
            self.mark_accessed(bus, sel, &desc)?;
            // EFLAGS are written with the privilege of the old CPL.
            self.write_eflags(fl_img, size);
            self.set_cs(cs);
            self.state.segs[SegReg::Ss as usize] = ss;
            let mask = if ss.big() { 0xFFFF_FFFF } else { 0xFFFF };
            self.state.regs[ESP] = (self.state.regs[ESP] & !mask) | (esp & mask);
            self.state.eip = off;
            self.null_inaccessible_segments();
            return Ok(());
        }
        self.mark_accessed(bus, sel, &desc)?;
        self.set_sp(self.state.regs[ESP].wrapping_add(3 * s));
        self.write_eflags(fl_img, size);
        self.set_cs(cs);
        self.state.eip = off;
        Ok(())
    }

    fn iret_to_v86<B: Bus>(&mut self, bus: &mut B, off: u32, sel: u16, fl_img: u32) -> Result<()> {
        let mut vals = [0u32; 6];
        for (i, v) in vals.iter_mut().enumerate() {
            *v = self.peek_stack(bus, 12 + 4 * i as u32, 4)?;
        }
        let [esp, ss, es, ds, fs, gs] = vals;
        self.state.eflags = (fl_img & fl::WRITABLE) | fl::FIXED1;
        let v86_seg = |sel: u32| Segment {
            selector: sel as u16,
            base: (sel & 0xFFFF) << 4,
            limit: 0xFFFF,
            attr: attr::P | attr::S | attr::RW | attr::ACCESSED | (3 << attr::DPL_SHIFT),
        };
        self.state.segs[SegReg::Es as usize] = v86_seg(es);
        self.state.segs[SegReg::Ds as usize] = v86_seg(ds);
        self.state.segs[SegReg::Fs as usize] = v86_seg(fs);
        self.state.segs[SegReg::Gs as usize] = v86_seg(gs);
        self.state.segs[SegReg::Ss as usize] = v86_seg(ss);
        let mut cs = v86_seg(u32::from(sel));
        cs.attr |= attr::CODE;
        self.state.segs[SegReg::Cs as usize] = cs;
        self.state.regs[ESP] = esp;
        self.state.eip = off & 0xFFFF;
        Ok(())
    }
}
