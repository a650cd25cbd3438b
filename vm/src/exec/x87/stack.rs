//! The x87 register stack, tags and status word (SDM Vol. 1, 8.1.2 "x87
//! FPU data registers", 8.1.3 "x87 FPU status register", 8.1.7 "x87 FPU tag
//! word", 8.5.1.1 "Stack overflow or underflow exception").
//!
//! Registers live in `FpuState::regs` by physical number; ST(i) is physical
//! register (TOP + i) mod 8. Only empty/non-empty of the tag word is kept
//! meaningful: the valid/zero/special tags are computed from the contents
//! whenever the tag word is stored, as P6-family processors do.

use super::float::F80;
use crate::cpu::state::FpuState;

/// Status word bits.
pub mod sw {
    /// Stack fault (with IE).
    pub const SF: u16 = 0x0040;
    /// Error summary: an unmasked exception is pending.
    pub const ES: u16 = 0x0080;
    pub const C0: u16 = 0x0100;
    pub const C1: u16 = 0x0200;
    pub const C2: u16 = 0x0400;
    pub const TOP: u16 = 0x3800;
    pub const C3: u16 = 0x4000;
    /// Busy: mirrors ES on the 387 and later.
    pub const B: u16 = 0x8000;
    pub const CC: u16 = C0 | C1 | C2 | C3;
}

/// The tag of an empty register.
pub const TAG_EMPTY: u16 = 3;

impl FpuState {
    pub fn top(&self) -> u8 {
        ((self.status & sw::TOP) >> 11) as u8
    }

    fn set_top(&mut self, top: u8) {
        self.status = (self.status & !sw::TOP) | (u16::from(top & 7) << 11);
    }

    /// The physical register ST(i) is.
    pub fn physical(&self, i: u8) -> usize {
        usize::from((self.top() + i) & 7)
    }

    fn tag_of(&self, phys: usize) -> u16 {
        (self.tag >> (2 * phys)) & 3
    }

    fn set_tag(&mut self, phys: usize, tag: u16) {
        self.tag = (self.tag & !(3 << (2 * phys))) | (tag << (2 * phys));
    }

    pub fn is_empty(&self, i: u8) -> bool {
        self.tag_of(self.physical(i)) == TAG_EMPTY
    }

    /// ST(i)'s value, whatever its tag.
    pub fn st(&self, i: u8) -> F80 {
        self.reg_value(self.physical(i))
    }

    /// Physical register `phys`'s value.
    pub fn reg_value(&self, phys: usize) -> F80 {
        let mut b = [0u8; 10];
        b.copy_from_slice(&self.regs[phys][..10]);
        F80::from_bytes(b)
    }

    /// Writes ST(i) and marks it in use.
    pub fn set_st(&mut self, i: u8, v: F80) {
        let phys = self.physical(i);
        self.regs[phys][..10].copy_from_slice(&v.to_bytes());
        self.set_tag(phys, u16::from(v.tag()));
    }

    /// Marks ST(i) empty (FFREE), leaving its contents.
    pub fn free(&mut self, i: u8) {
        let phys = self.physical(i);
        self.set_tag(phys, TAG_EMPTY);
    }

    /// Pushes `v`: TOP moves down and the new ST(0) holds it.
    pub fn push(&mut self, v: F80) {
        self.set_top(self.top().wrapping_sub(1));
        self.set_st(0, v);
    }

    /// Pops: ST(0) becomes empty and TOP moves up.
    pub fn pop(&mut self) {
        self.free(0);
        self.set_top(self.top().wrapping_add(1));
    }

    /// TOP moved without a tag change (FINCSTP, FDECSTP).
    pub fn rotate(&mut self, up: bool) {
        let top = if up {
            self.top().wrapping_add(1)
        } else {
            self.top().wrapping_sub(1)
        };
        self.set_top(top);
    }

    /// Sets C0-C3 from bits given at their status word positions.
    pub fn set_cc(&mut self, cc: u16) {
        self.status = (self.status & !sw::CC) | (cc & sw::CC);
    }

    pub fn set_c1(&mut self, on: bool) {
        self.status = (self.status & !sw::C1) | if on { sw::C1 } else { 0 };
    }

    /// The tag word as FNSTENV and FNSAVE store it: empty as kept, the
    /// others computed from the register contents.
    pub fn full_tag_word(&self) -> u16 {
        let mut tags = 0;
        for phys in 0..8 {
            let tag = match self.tag_of(phys) {
                TAG_EMPTY => TAG_EMPTY,
                _ => u16::from(self.reg_value(phys).tag()),
            };
            tags |= tag << (2 * phys);
        }
        tags
    }

    /// Loads a tag word (FLDENV, FRSTOR): only empty or not matters.
    pub fn load_tag_word(&mut self, tags: u16) {
        for phys in 0..8 {
            let tag = if (tags >> (2 * phys)) & 3 == TAG_EMPTY {
                TAG_EMPTY
            } else {
                u16::from(self.reg_value(phys).tag())
            };
            self.set_tag(phys, tag);
        }
    }
}
