//! Shared helpers for the instruction-family unit tests: a flat-memory [`Bus`]
//! and a [`Machine`] builder for a flat 32-bit protected-mode CPU (GDT, IDT, TSS
//! in guest memory, as SDM Vol. 3A, 3.4-3.5, 6.10-6.11 and 8.2 lay them out) or a
//! real-mode CPU, so each test only places instruction bytes and checks results.

use crate::bus::Bus;
use crate::cpu::seg::Descriptor;
use crate::cpu::state::{cr0, flags, reg, SegReg, Segment};
use crate::cpu::{Cpu, CpuState, StepOutcome};

pub const MEM_SIZE: usize = 4 << 20;
pub const GDT: u32 = 0x1000;
pub const IDT: u32 = 0x2000;
pub const TSS: u32 = 0x3000;
/// Exception and interrupt handlers: vector n enters at HANDLERS + 4n (a HLT).
pub const HANDLERS: u32 = 0x6000;
pub const CODE: u32 = 0x10000;
pub const DATA: u32 = 0x20000;
pub const USER_STACK_TOP: u32 = 0x70000;
pub const STACK_TOP: u32 = 0x80000;
/// The ring-0 stack the TSS names (ESP0).
pub const STACK0_TOP: u32 = 0x90000;
pub const PAGE_DIR: u32 = 0x10_0000;
pub const PAGE_TABLE: u32 = 0x10_1000;

/// Selectors of the GDT [`Machine::flat32`] builds.
pub const KCODE: u16 = 0x08;
pub const KDATA: u16 = 0x10;
pub const UCODE: u16 = 0x1B;
pub const UDATA: u16 = 0x23;
pub const TSS_SEL: u16 = 0x28;
/// GDT slots 6.. are free for tests.
pub const FREE_SLOT: usize = 6;

/// Access bytes (descriptor byte 5).
pub const ACC_CODE0: u8 = 0x9A;
pub const ACC_DATA0: u8 = 0x92;
pub const ACC_CODE3: u8 = 0xFA;
pub const ACC_DATA3: u8 = 0xF2;
/// Flags nibble: G and D/B.
pub const FLAGS_4G32: u8 = 0xC;

/// A code/data/system segment descriptor; `limit` in descriptor units.
pub fn seg_desc(base: u32, limit: u32, access: u8, flags_nibble: u8) -> u64 {
    let (base, limit) = (u64::from(base), u64::from(limit));
    (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (u64::from(access) << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (u64::from(flags_nibble & 0xF) << 52)
        | ((base >> 24) << 56)
}

/// A gate descriptor: `typ` 0xC call gate, 0xE interrupt gate, 0xF trap gate
/// (32-bit); `params` is the call gate's parameter count.
pub fn gate_desc(selector: u16, offset: u32, typ: u8, dpl: u8, params: u8) -> u64 {
    let (offset, selector) = (u64::from(offset), u64::from(selector));
    (offset & 0xFFFF)
        | (selector << 16)
        | (u64::from(params & 0x1F) << 32)
        | (u64::from(0x80 | (dpl << 5) | typ) << 40)
        | ((offset >> 16) << 48)
}

/// Flat RAM plus a log of port I/O; ports read as `io_value`.
pub struct TestBus {
    pub mem: Vec<u8>,
    pub io_value: u32,
    pub io_log: Vec<(bool, u16, u8, u32)>,
}

impl TestBus {
    pub fn new() -> Self {
        TestBus {
            mem: vec![0; MEM_SIZE],
            io_value: 0xFFFF_FFFF,
            io_log: Vec::new(),
        }
    }
}

impl Bus for TestBus {
    fn read_phys(&mut self, addr: u32, size: u8, _now: u64) -> u32 {
        (0..u32::from(size)).fold(0, |v, i| {
            let b = self.mem.get(addr.wrapping_add(i) as usize).copied().unwrap_or(0xFF);
            v | (u32::from(b) << (8 * i))
        })
    }
    fn write_phys(&mut self, addr: u32, size: u8, value: u32, _now: u64) {
        for i in 0..u32::from(size) {
            if let Some(b) = self.mem.get_mut(addr.wrapping_add(i) as usize) {
                *b = (value >> (8 * i)) as u8;
            }
        }
    }
    fn io_read(&mut self, port: u16, size: u8, _now: u64) -> u32 {
        let v = self.io_value & super::flags::mask(size);
        self.io_log.push((false, port, size, v));
        v
    }
    fn io_write(&mut self, port: u16, size: u8, value: u32, _now: u64) {
        self.io_log.push((true, port, size, value));
    }
}

/// A CPU with its memory.
pub struct Machine {
    pub cpu: Cpu,
    pub bus: TestBus,
}

impl Machine {
    /// Flat 32-bit protected mode at CPL 0: 4 GiB code and data segments, an IDT
    /// whose 256 interrupt gates (DPL 0) lead to HLTs at [`HANDLERS`], a busy
    /// 32-bit TSS with ESP0/SS0 and an I/O bitmap that allows every port.
    pub fn flat32() -> Self {
        let mut m = Machine {
            cpu: Cpu::new(),
            bus: TestBus::new(),
        };
        m.set_gdt(1, seg_desc(0, 0xF_FFFF, ACC_CODE0, FLAGS_4G32));
        m.set_gdt(2, seg_desc(0, 0xF_FFFF, ACC_DATA0, FLAGS_4G32));
        m.set_gdt(3, seg_desc(0, 0xF_FFFF, ACC_CODE3, FLAGS_4G32));
        m.set_gdt(4, seg_desc(0, 0xF_FFFF, ACC_DATA3, FLAGS_4G32));
        // TSS: 104 bytes, I/O bitmap right after (8 KiB, all zero = allowed) and
        // the terminating 0xFF byte; type 0xB = busy 32-bit TSS.
        let tss_limit = 0x68 + 0x2000;
        m.set_gdt(5, seg_desc(TSS, tss_limit, 0x8B, 0));
        m.w32(TSS + 4, STACK0_TOP);
        m.w32(TSS + 8, u32::from(KDATA));
        m.w16(TSS + 0x66, 0x68);
        m.w8(TSS + tss_limit, 0xFF);
        for v in 0..256u32 {
            m.set_idt(v as u8, gate_desc(KCODE, HANDLERS + 4 * v, 0xE, 0, 0));
            m.w8(HANDLERS + 4 * v, 0xF4);
        }
        let mut st = CpuState::reset();
        st.cr0 = cr0::PE | cr0::ET;
        st.gdtr.base = GDT;
        st.gdtr.limit = 0xFF;
        st.idtr.base = IDT;
        st.idtr.limit = 0x7FF;
        st.eflags = flags::FIXED1;
        st.eip = CODE;
        st.regs[reg::ESP] = STACK_TOP;
        m.cpu.set_state(st);
        m.load_seg(SegReg::Cs, KCODE);
        for s in [SegReg::Ss, SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs] {
            m.load_seg(s, KDATA);
        }
        m.cpu.state.tr = m.gdt_segment(TSS_SEL);
        m
    }

    /// Real mode: CS=1000h (code at [`CODE`]), SS=DS=ES=2000h, SP=FFFEh, an IVT
    /// at 0 whose vectors lead to HLTs at 0000:[`HANDLERS`] + 4n.
    pub fn real16() -> Self {
        let mut m = Machine {
            cpu: Cpu::new(),
            bus: TestBus::new(),
        };
        for v in 0..256u32 {
            m.w16(4 * v, (HANDLERS + 4 * v) as u16);
            m.w16(4 * v + 2, 0);
            m.w8(HANDLERS + 4 * v, 0xF4);
        }
        let mut st = CpuState::reset();
        st.segs = [Segment::real_mode(0x2000); 6];
        st.segs[SegReg::Cs as usize] = Segment::real_mode((CODE >> 4) as u16);
        st.segs[SegReg::Cs as usize].attr |= crate::cpu::state::attr::CODE;
        st.idtr.base = 0;
        st.eip = 0;
        st.eflags = flags::FIXED1;
        st.regs = [0; 8];
        st.regs[reg::ESP] = 0xFFFE;
        m.cpu.set_state(st);
        m
    }

    /// Switches to CPL 3 with flat user segments and ESP = [`USER_STACK_TOP`].
    pub fn user(mut self) -> Self {
        self.load_seg(SegReg::Cs, UCODE);
        for s in [SegReg::Ss, SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs] {
            self.load_seg(s, UDATA);
        }
        self.cpu.state.regs[reg::ESP] = USER_STACK_TOP;
        self
    }

    /// Identity-maps the first 4 MiB with 4 KiB user-writable pages and turns
    /// paging on.
    pub fn paging(mut self) -> Self {
        self.w32(PAGE_DIR, PAGE_TABLE | 7);
        for p in 0..1024 {
            self.w32(PAGE_TABLE + 4 * p, (p << 12) | 7);
        }
        self.cpu.state.cr3 = PAGE_DIR;
        self.cpu.state.cr0 |= cr0::PG;
        self.cpu.tlb.flush_all();
        self
    }

    pub fn set_gdt(&mut self, index: usize, d: u64) {
        self.w32(GDT + 8 * index as u32, d as u32);
        self.w32(GDT + 8 * index as u32 + 4, (d >> 32) as u32);
    }

    pub fn set_idt(&mut self, vector: u8, d: u64) {
        self.w32(IDT + 8 * u32::from(vector), d as u32);
        self.w32(IDT + 8 * u32::from(vector) + 4, (d >> 32) as u32);
    }

    /// The hidden-cache contents a GDT selector loads.
    pub fn gdt_segment(&self, sel: u16) -> Segment {
        let at = GDT + u32::from(sel & !7);
        let d = Descriptor {
            low: self.r32(at),
            high: self.r32(at + 4),
        };
        d.to_segment(sel)
    }

    /// Loads a segment register from the GDT without any checks.
    pub fn load_seg(&mut self, s: SegReg, sel: u16) {
        self.cpu.state.segs[s as usize] = self.gdt_segment(sel);
    }

    /// Places instruction bytes at CS:EIP.
    pub fn code(&mut self, bytes: &[u8]) -> &mut Self {
        let at = self.cpu.state.segs[SegReg::Cs as usize]
            .base
            .wrapping_add(self.cpu.state.eip);
        self.write(at, bytes);
        self
    }

    pub fn step(&mut self) -> StepOutcome {
        self.cpu.step(&mut self.bus)
    }

    /// Places `bytes` at CS:EIP and executes one step.
    pub fn exec(&mut self, bytes: &[u8]) -> StepOutcome {
        self.code(bytes);
        self.step()
    }

    pub fn reg(&self, r: usize) -> u32 {
        self.cpu.state.regs[r]
    }
    pub fn set_reg(&mut self, r: usize, v: u32) -> &mut Self {
        self.cpu.state.regs[r] = v;
        self
    }
    pub fn eip(&self) -> u32 {
        self.cpu.state.eip
    }
    pub fn eflags(&self) -> u32 {
        self.cpu.state.eflags
    }
    /// The arithmetic status flags only.
    pub fn status(&self) -> u32 {
        self.cpu.state.eflags & flags::STATUS
    }
    pub fn set_flags(&mut self, f: u32) -> &mut Self {
        self.cpu.state.eflags = f | flags::FIXED1;
        self
    }

    pub fn write(&mut self, addr: u32, bytes: &[u8]) {
        self.bus.mem[addr as usize..addr as usize + bytes.len()].copy_from_slice(bytes);
    }
    pub fn w8(&mut self, addr: u32, v: u8) {
        self.write(addr, &[v]);
    }
    pub fn w16(&mut self, addr: u32, v: u16) {
        self.write(addr, &v.to_le_bytes());
    }
    pub fn w32(&mut self, addr: u32, v: u32) {
        self.write(addr, &v.to_le_bytes());
    }
    pub fn r8(&self, addr: u32) -> u8 {
        self.bus.mem[addr as usize]
    }
    pub fn r16(&self, addr: u32) -> u16 {
        u16::from_le_bytes([self.r8(addr), self.r8(addr + 1)])
    }
    pub fn r32(&self, addr: u32) -> u32 {
        u32::from(self.r16(addr)) | (u32::from(self.r16(addr + 2)) << 16)
    }
}

/// Asserts that a step raised `vector` (with `error`, when the exception has an
/// error code) and that the exception was delivered to its handler.
#[track_caller]
pub fn assert_fault(outcome: StepOutcome, vector: u8, error: Option<u32>) {
    match outcome {
        StepOutcome::Exception(f) => {
            assert_eq!(f.vector, vector, "vector of {f}");
            assert_eq!(f.error, error, "error code of {f}");
        }
        other => panic!("expected exception {vector}, got {other:?}"),
    }
}

/// Asserts that a step retired an instruction.
#[track_caller]
pub fn assert_retired(outcome: StepOutcome) {
    assert_eq!(outcome, StepOutcome::Retired);
}
