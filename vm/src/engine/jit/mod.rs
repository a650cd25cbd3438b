//! The compiler tier (issue 17, docs/raw-engine.md): blocks that have run
//! often enough are translated to host code, which the block engine enters
//! in place of interpreting them, in either view. A translation runs
//! integer instructions on registers and on plain RAM (through the host
//! slots beside the TLB) as host instructions, and calls back into the block engine
//! for every other instruction and every access the inline path refuses,
//! so it computes what the interpreter computes, leaves at the same
//! boundaries and keeps the icount exact; the interpreter stays the first
//! tier and the fallback.
//!
//! Only x86-64 hosts compile; elsewhere `compile` declines and the
//! interpreter runs everything.

#[cfg(target_arch = "x86_64")]
mod cache;
#[cfg(target_arch = "x86_64")]
mod emit;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;
#[cfg(target_arch = "x86_64")]
mod walk;

use crate::cpu::Cpu;
use crate::events::IoStage;
use crate::exec::compact::Op;
use crate::platform::{InlinePort, Platform};

/// Returned by a translation: the block ran to its end.
pub const END: u32 = 0;
/// Returned by a translation: a step asked to leave; its caller holds why.
pub const LEAVE: u32 = 1;

/// The block engine's step for one instruction of a translated block: runs
/// instruction `index` as the interpreter would, with the checks at the
/// boundary after it; [`END`] to go on, [`LEAVE`] to leave the block.
pub type StepFn = extern "sysv64" fn(env: *mut Env, index: u32, slot: u32) -> u32;

/// See [`Env::port`]: `(env, index, slot, packed operands)`.
pub type PortFn = extern "sysv64" fn(env: *mut Env, index: u32, slot: u32, packed: u32) -> u32;

/// See [`Env::store`]: `(env, physical address, value, size)`.
pub type StoreFn = extern "sysv64" fn(env: *mut Env, phys: u32, value: u32, size: u32) -> u32;

extern "sysv64" fn store_to_ram(env: *mut Env, phys: u32, value: u32, size: u32) -> u32 {
    // SAFETY: the translation calling this runs with `env.platform` set by
    // the block engine from its exclusive borrow, untouched by anyone else
    // until the translation returns.
    let platform = unsafe { &mut *(*env).platform };
    // The inline checks found plain RAM: no device, no ROM, no watchpoint.
    platform.mem.write(phys, size as u8, value);
    u32::from(platform.mem.code_written())
}

/// See [`Env::fill`]: `(cpu, env, linear address, size, write)`.
pub type FillFn = extern "sysv64" fn(cpu: *mut Cpu, env: *mut Env, linear: u32, size: u32, write: u32) -> u32;

extern "sysv64" fn fill_host_slot(cpu: *mut Cpu, env: *mut Env, linear: u32, size: u32, write: u32) -> u32 {
    // SAFETY: the translation calling this passes the CPU it runs on and its
    // own `env`, whose `platform` the block engine set from its exclusive
    // borrow; nothing else touches them until the translation returns.
    let (cpu, env) = unsafe { (&mut *cpu, &mut *env) };
    // SAFETY: as above.
    let platform = unsafe { &mut *env.platform };
    u32::from(env.mem.fill_host_slot(cpu, platform, linear, size, write != 0))
}

/// What a translation is given besides the CPU. `repr(C)`: the generated
/// code reads its fields at fixed offsets.
#[repr(C)]
pub struct Env {
    pub step: StepFn,
    /// The step of an IN or OUT ([`SystemOp::Port`], operands packed by
    /// [`pack_port`]): straight to the device where the guest may use the
    /// port, else as `step`.
    pub port: PortFn,
    /// The icount at which a self-loop or a chained entry must go back to
    /// the block engine: the nearer of the limit and the next deadline, or
    /// 0 once a step ran something the translation cannot vouch for (it may
    /// have changed modes, filled the TLB or touched a watch), so that the
    /// block engine's checks run again. One compare serves both.
    pub stop_icount: u64,
    /// Entries from one translation into another's chain entry.
    pub chained: u64,
    /// A store to plain RAM that the inline path leaves to `PhysMem`
    /// (the page holds watched code or is not yet dirty): 1 when it changed
    /// watched code.
    pub store: StoreFn,
    /// An access whose page has no host slot yet: makes one if the TLB
    /// already allows the access and the page is plain RAM, and says
    /// whether it did (the inline path then tries again; else the step
    /// does the access).
    pub fill: FillFn,
    pub platform: *mut Platform,
    /// The step's own context.
    pub ctx: *mut (),
    /// The table of blocks' chain entries that RET and JMP/CALL through a
    /// register look their target up in ([`JUMP_SLOTS`] slots).
    pub jumps: *const JumpSlot,
    /// Hits of compiled patches, by patch index ([`Jit::drain_patch_hits`]).
    /// Only the counter is written: a flag saying that one was would be a
    /// second store at every hit, and a trap loop's patches hit several
    /// times an iteration (the drain reads the few counters instead).
    pub patch_hits: *mut u64,
    /// Where an inline port access logs itself; null when no sink listens.
    pub io_stage: *mut IoStage,
    /// The host address of the lowest byte of the group of memory
    /// operands being run (docs/raw-engine.md, "Groups"): those through
    /// one base register that its check found on one page.
    pub group: u64,
    /// Set by a translation (its block's slot plus one) that left before a
    /// group it could not check: the block engine compiles the block again
    /// without groups.
    pub refuse_groups: u64,
    pub mem: MemEnv,
}

/// Slots in the table translations look dynamic targets up in: 2 MiB, so
/// that a kernel's calls and returns seldom evict each other (with 4,096 a
/// Linux boot went back to the dispatcher 9% more often).
pub const JUMP_SLOTS: usize = 65536;

/// A slot of that table: a block's EIP, the physical address of its first
/// byte and its mode ([`jump_mode`], with the segments its translation
/// takes as flat from bit 16: a translation jumps only to one that took the
/// same), and its translation's chain entry.
/// The generated code checks that EIP, the mode of the translation it
/// leaves and where the guest's CS and paging put that EIP all match before
/// it jumps. `repr(C)` for fixed offsets, 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct JumpSlot {
    pub eip: u32,
    pub phys: u32,
    pub mode: u32,
    pad: u32,
    pub entry: u64,
    pad2: u64,
}

impl JumpSlot {
    /// Matches nothing: no mode is all ones.
    const EMPTY: JumpSlot = JumpSlot {
        eip: 0,
        phys: 0,
        mode: u32::MAX,
        pad: 0,
        entry: 0,
        pad2: 0,
    };
}

/// A block's mode as the jump table keys it: its code size and ring view,
/// which a near RET or indirect branch never changes.
pub fn jump_mode(code32: bool, view: u8) -> u32 {
    u32::from(code32) | u32::from(view) << 1
}

/// The slot for a target EIP in a [`jump_mode`] (the generated code
/// computes the same). The mode is part of the hash: a kernel's code runs
/// in the compressed view with IF set and in the true view with it clear,
/// and the two translations of a block must not take each other's slot.
pub fn jump_slot(eip: u32, mode: u32) -> usize {
    (eip ^ (eip >> 12) ^ ((mode & 0xFFFF) << JUMP_MODE_SHIFT)) as usize & (JUMP_SLOTS - 1)
}

/// Where a jump mode enters a slot's index ([`jump_slot`]).
pub const JUMP_MODE_SHIFT: u32 = 13;

/// A segment's window for 4-byte accesses when it is flat: base 0,
/// limit 4 GiB - 1, expand-up ([`Cpu::fast_window`]).
const FLAT_END: u32 = 0xFFFF_FFFD;

/// Bit of [`flat_segments`] for reads (writes) through `seg`.
pub fn flat_bit(seg: usize, write: bool) -> u32 {
    1 << (seg + if write { 8 } else { 0 })
}

/// Bit of [`flat_segments`] for a 32-bit stack (SS's B bit): the inline
/// stack accesses need not check for one.
pub const STACK32: u32 = 1 << 6;

/// In [`Jit::refused`], with the segments: a translation that left before
/// a group of memory operands it could not check ([`Env::refuse_groups`]);
/// the next is made without groups. No segment bit is this one.
pub const GROUPS_REFUSED: u32 = 1 << 31;

fn flat_segments_of(base: &[u32; 6], read_end: &[u32; 6], write_end: &[u32; 6], stack32: bool) -> u32 {
    (0..6).fold(if stack32 { STACK32 } else { 0 }, |flat, s| {
        let read = base[s] == 0 && read_end[s] == FLAT_END;
        let write = base[s] == 0 && write_end[s] == FLAT_END;
        flat | if read { flat_bit(s, false) } else { 0 } | if write { flat_bit(s, true) } else { 0 }
    })
}

/// The segments whose inline path needs neither a limit check nor a base,
/// and whether the stack is 32-bit ([`STACK32`]):
/// reads and writes through a flat segment take any offset whose bytes
/// stay below 4 GiB, and an access that wraps past it crosses into the
/// page at 0, which no host slot for its first page matches, so the step
/// finds its fault. A translation compiled for them (`Code::flat`) runs
/// only while they stay flat.
pub fn flat_segments(cpu: &Cpu) -> u32 {
    use crate::cpu::mmu::Access;
    use crate::cpu::state::SegReg;
    let (mut base, mut read_end, mut write_end) = ([0; 6], [0; 6], [0; 6]);
    for s in SegReg::ALL {
        (base[s as usize], read_end[s as usize]) = cpu.fast_window(s, Access::Read);
        write_end[s as usize] = cpu.fast_window(s, Access::Write).1;
    }
    flat_segments_of(&base, &read_end, &write_end, cpu.state.stack32())
}

/// Words of what `MemEnv`'s windows are computed from: base, limit and
/// selector:attributes of each segment register, CR0 and EFLAGS.VM.
const MODE_WORDS: usize = 20;

/// What the inline memory path of a translation reads: the guest's segments,
/// paging and privilege as they stand, and where plain RAM is. Made at entry
/// and again after any step that may have changed them (a generic
/// instruction or a patch); `repr(C)` for fixed offsets.
#[repr(C)]
pub struct MemEnv {
    /// The segments that are flat as they stand, and whether the stack is
    /// 32-bit ([`flat_segments`]).
    pub flat: u32,
    pub seg_base: [u32; 6],
    /// Offsets below these take a 4-byte read (write) inside the segment.
    pub seg_read_end: [u32; 6],
    pub seg_write_end: [u32; 6],
    /// CR0.PG.
    pub paging: u32,
    pub a20_mask: u32,
    /// The TLB entry permission bits a read (write) needs at this privilege.
    pub read_permissions: u32,
    pub write_permissions: u32,
    /// Guest RAM: a careful store's physical address is its host address
    /// minus this.
    pub ram: *mut u8,
    pub tlb: *const u8,
    /// The TLB's host slots (`tlb_layout::HOST_*`): where the inline path
    /// finds a linear page in host memory.
    pub host: *mut u8,
    /// Plain RAM ends here (0 while a debugger watch is set:
    /// [`Platform::plain_ram`]); the ROM's shadow is `rom_start..rom_end`.
    pub plain_end: u64,
    pub rom_start: u64,
    pub rom_end: u64,
    /// The memory's bitmaps of dirty pages and of pages holding watched
    /// code ([`crate::mem::PhysMem::page_bitmaps`]).
    pub dirty_pages: *const u64,
    pub watched_pages: *const u64,
    /// What the host slots were filled under: paging, the permissions an
    /// access needs, the A20 gate, where plain RAM and the ROM are, the
    /// memory's store epoch and the slots' own address. Any change empties
    /// them.
    host_made_under: [u64; 8],
    /// What the segment windows and permissions were computed from: the
    /// segment registers, CR0 and EFLAGS.VM.
    made_from: [u32; MODE_WORDS],
    /// Nothing that could change those has run since they were compared:
    /// only translations and plain steps ran (the block engine going from
    /// one translation to the next), so the comparison can be skipped.
    modes_known: bool,
}

impl MemEnv {
    fn empty() -> MemEnv {
        MemEnv {
            flat: 0,
            seg_base: [0; 6],
            seg_read_end: [0; 6],
            seg_write_end: [0; 6],
            paging: 0,
            a20_mask: 0,
            read_permissions: 0,
            write_permissions: 0,
            ram: std::ptr::null_mut(),
            tlb: std::ptr::null(),
            host: std::ptr::null_mut(),
            plain_end: 0,
            rom_start: 0,
            rom_end: 0,
            dirty_pages: std::ptr::null(),
            watched_pages: std::ptr::null(),
            host_made_under: [u64::MAX; 8],
            made_from: [u32::MAX; MODE_WORDS],
            modes_known: false,
        }
    }

    /// Something ran that may have changed the segments, CR0 or
    /// EFLAGS.VM: the next refresh compares them again.
    pub fn modes_may_have_changed(&mut self) {
        self.modes_known = false;
    }

    /// Brings everything up to date; the segment windows only when the
    /// segments, CR0 or EFLAGS.VM changed since they were computed. Empties
    /// the TLB's host slots when what they were made under changed.
    pub fn refresh(&mut self, cpu: &mut Cpu, platform: &mut Platform) {
        let (a20_mask, ram_end, (rom_start, rom_len)) = platform.plain_ram();
        self.a20_mask = a20_mask;
        self.ram = platform.mem.ram_ptr();
        self.tlb = cpu.tlb.entries_ptr();
        self.host = cpu.tlb.host_ptr();
        self.plain_end = ram_end;
        self.rom_start = u64::from(rom_start);
        self.rom_end = u64::from(rom_start) + u64::from(rom_len);
        (self.dirty_pages, self.watched_pages) = platform.mem.page_bitmaps();
        if !self.modes_known {
            self.modes_known = true;
            self.compare_modes(cpu);
        }
        let under = [
            u64::from(self.paging),
            u64::from(self.read_permissions) | u64::from(self.write_permissions) << 32,
            u64::from(self.a20_mask),
            ram_end,
            u64::from(rom_start) | u64::from(rom_len) << 32,
            self.ram as u64,
            platform.mem.store_epoch(),
            self.host as u64,
        ];
        if under.iter().zip(&self.host_made_under).fold(0, |d, (a, b)| d | (a ^ b)) != 0 {
            self.host_made_under = under;
            cpu.tlb.clear_host();
        }
    }

    /// Makes the host slot for an access of `size` bytes at `linear` that
    /// passed its segment checks, when the inline path may do it without
    /// looking further: it stays in one page, the TLB holds the page with
    /// the permissions the access needs as it stands, or a walk that
    /// evicts nothing and touches no watched code gives it (a walk that
    /// faults, and one that would, are the step's), and the page is plain
    /// RAM. A store
    /// needs a page without watched code; one not yet dirty is marked dirty
    /// now, as the store that follows would. A store to watched code gets
    /// the careful tag. Returns whether the inline path will now take the
    /// access.
    pub fn fill_host_slot(&self, cpu: &mut Cpu, platform: &mut Platform, linear: u32, size: u32, write: bool) -> bool {
        use crate::cpu::mmu::tlb_layout::{USER, WRITABLE};
        use crate::cpu::mmu::{Access, HostSlot};
        if (linear & 0xFFF) + size > 0x1000 || self.ram.is_null() {
            return false;
        }
        let user = self.read_permissions & USER != 0;
        let wp = self.write_permissions & WRITABLE != 0;
        // The gate as it stands, as the step's own access would take it.
        let (a20, ram_end, _) = platform.plain_ram();
        let phys = if self.paging != 0 {
            match cpu.tlb.lookup(linear, write, user, wp) {
                Some(phys) => phys,
                // A TLB miss walks here when that changes nothing the TLB
                // holds, with the tables in plain RAM holding no watched
                // code (so the walk's accessed and dirty bits stay plain
                // stores); anything else is the step's. Most walks set no
                // bit and are read straight from RAM.
                None => {
                    let access = if write { Access::Write } else { Access::Read };
                    let quick = cpu.walk_in_ram(platform.mem.ram(), a20, ram_end, linear, access, user);
                    let plain = |p: &Platform, at: u32| {
                        let page = at & a20 & !0xFFF;
                        p.is_plain_ram(page, 0x1000) && !p.mem.holds_watched_code((page >> 12) as usize)
                    };
                    match quick.or_else(|| cpu.walk_without_evicting(platform, linear, access, user, plain)) {
                        Some(phys) => phys,
                        None => return false,
                    }
                }
            }
        } else {
            linear
        };
        let phys_page = phys & a20 & !0xFFF;
        if !platform.is_plain_ram(phys_page, 0x1000) {
            return false;
        }
        let page = (phys_page >> 12) as usize;
        let mut careful = false;
        // A read of a page that a store could take straight as it stands
        // (the TLB allows it without a walk, the page is already dirty and
        // holds no watched code) opens the page for stores too: a loop's
        // load and store of one word then cost one fill, not two, and the
        // store marks nothing the memory does not already hold.
        let mut writable = write;
        if write {
            if platform.mem.holds_watched_code(page) {
                careful = true;
            } else {
                platform.mem.mark_page_dirty(page);
            }
        } else if platform.mem.is_dirty(page) && !platform.mem.holds_watched_code(page) {
            writable = self.paging == 0 || cpu.tlb.lookup(linear, true, user, wp).is_some();
        }
        let linear_page = linear & !0xFFF;
        let addend = (self.ram as u64)
            .wrapping_add(u64::from(phys_page))
            .wrapping_sub(u64::from(linear_page));
        let slot = cpu.tlb.host_slot(linear);
        if slot.addend != addend {
            *slot = HostSlot {
                addend,
                ..HostSlot::NONE
            };
        }
        // A page that may be written may be read.
        slot.read_tag = linear_page;
        if writable {
            if careful {
                slot.careful_tag = linear_page;
            } else {
                slot.write_tag = linear_page;
            }
        }
        true
    }

    /// Recomputes the segment windows, paging and permissions when the
    /// segments, CR0 or EFLAGS.VM changed.
    fn compare_modes(&mut self, cpu: &Cpu) {
        use crate::cpu::mmu::tlb_layout::{DIRTY, USER, WRITABLE};
        use crate::cpu::mmu::Access;
        use crate::cpu::state::{cr0, flags, SegReg};
        // Compared as plain words: this runs at most entries from the
        // dispatcher.
        let mut from = [0u32; MODE_WORDS];
        for (i, seg) in cpu.state.segs.iter().enumerate() {
            from[3 * i] = seg.base;
            from[3 * i + 1] = seg.limit;
            from[3 * i + 2] = u32::from(seg.attr) | u32::from(seg.selector) << 16;
        }
        from[18] = cpu.state.cr0;
        from[19] = cpu.state.eflags & flags::VM;
        // Folded, not `==`: that is a call to memcmp, which cost more than
        // everything else here after each port access of a trap loop.
        if from.iter().zip(&self.made_from).fold(0, |d, (a, b)| d | (a ^ b)) == 0 {
            return;
        }
        self.made_from = from;
        for s in SegReg::ALL {
            let (base, read_end) = cpu.fast_window(s, Access::Read);
            self.seg_base[s as usize] = base;
            self.seg_read_end[s as usize] = read_end;
            self.seg_write_end[s as usize] = cpu.fast_window(s, Access::Write).1;
        }
        self.paging = u32::from(cpu.state.paging());
        self.flat = flat_segments_of(
            &self.seg_base,
            &self.seg_read_end,
            &self.seg_write_end,
            cpu.state.stack32(),
        );
        let user = cpu.state.cpl() == 3;
        let wp = cpu.state.cr0 & cr0::WP != 0;
        self.read_permissions = if user { USER } else { 0 };
        self.write_permissions = DIRTY
            | if user {
                USER | WRITABLE
            } else if wp {
                WRITABLE
            } else {
                0
            };
    }
}

/// One instruction as the compiler sees it.
#[derive(Clone, Copy, Debug)]
pub struct Insn {
    pub op: Op,
    /// It may run as host code: a plain site (the raw engine's marked sites
    /// and patches go through the step, but for `system_op`'s).
    pub plain: bool,
    pub ip: u32,
    pub next_ip: u32,
    /// It may change the segments, paging or privilege
    /// (`exec::leaves_modes_alone` does not list it).
    pub changes_modes: bool,
    /// A sensitive instruction compiled without the general step, and
    /// where it runs.
    pub system_op: Option<(SystemOp, SystemSite)>,
}

/// Sensitive instructions the compiler runs without the general step.
/// CLI, STI, PUSHFD and POPFD (SDM Vol. 2A, 2B) are host code where they
/// change no mode: CLI whatever it does (IF going off needs nothing), STI
/// when IF is already set (or, in the compressed view, when no interrupt
/// waits), PUSHFD always, POPFD when it changes no system flag (but IF in
/// the compressed view, coming on only when no interrupt waits). IN and OUT of AL, AX or EAX (SDM Vol.
/// 2A, 2B) call [`Env::port`], which goes straight to the device. The step
/// runs the rest, and every fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemOp {
    Cli,
    Sti,
    Pushfd,
    Popfd,
    /// `port`: the immediate port, `None` for DX. `inline`: a byte access
    /// the translation makes itself while its checks pass (the block engine
    /// asks the platform when it compiles).
    Port {
        input: bool,
        size: u8,
        port: Option<u8>,
        inline: Option<InlinePort>,
    },
}

impl SystemOp {
    pub fn of(inst: &iced_x86::Instruction) -> Option<SystemOp> {
        use iced_x86::Code as C;
        // LOCK makes these #UD: the step raises it.
        if inst.has_lock_prefix() {
            return None;
        }
        let port = |input, size, imm: bool| SystemOp::Port {
            input,
            size,
            port: imm.then(|| inst.immediate8()),
            inline: None,
        };
        Some(match inst.code() {
            C::Cli => SystemOp::Cli,
            C::Sti => SystemOp::Sti,
            C::Pushfd => SystemOp::Pushfd,
            C::Popfd => SystemOp::Popfd,
            C::In_AL_imm8 => port(true, 1, true),
            C::In_AX_imm8 => port(true, 2, true),
            C::In_EAX_imm8 => port(true, 4, true),
            C::In_AL_DX => port(true, 1, false),
            C::In_AX_DX => port(true, 2, false),
            C::In_EAX_DX => port(true, 4, false),
            C::Out_imm8_AL => port(false, 1, true),
            C::Out_imm8_AX => port(false, 2, true),
            C::Out_imm8_EAX => port(false, 4, true),
            C::Out_DX_AL => port(false, 1, false),
            C::Out_DX_AX => port(false, 2, false),
            C::Out_DX_EAX => port(false, 4, false),
            _ => return None,
        })
    }
}

/// An IN or OUT as [`Env::port`] takes it: the port in bits 0-7 (bit 8 set:
/// DX instead), the size in bits 9-11, bit 12 set for IN.
pub fn pack_port(input: bool, size: u8, port: Option<u8>) -> u32 {
    let at = port.map_or(1 << 8, u32::from);
    at | (u32::from(size) << 9) | (u32::from(input) << 12)
}

/// [`pack_port`] undone: `(input, size, port)`, `None` for DX.
pub fn unpack_port(packed: u32) -> (bool, u8, Option<u8>) {
    let port = (packed & (1 << 8) == 0).then_some(packed as u8);
    (packed & (1 << 12) != 0, ((packed >> 9) & 7) as u8, port)
}

/// Where a [`SystemOp`] runs, which says where the guest's IF and IOPL are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemSite {
    /// A plain instruction in the true view: `CpuState::eflags` is the
    /// guest's, and CPL, IOPL and V86 mode decide what it may do.
    True,
    /// The raw engine's patch `index` in the compressed view: the guest is
    /// ring 0, its IF and IOPL are the view's virtual flags. Its hits are
    /// counted. `leaks_view_flags`: the injected PUSHF bug, which pushes
    /// the ring-1 flags.
    Patch { index: u32, leaks_view_flags: bool },
}

/// A block to translate.
pub struct Shape<'a> {
    pub insns: &'a [Insn],
    /// Bytes from the first instruction's EIP that CS admits whenever the
    /// translation is entered (the block's extent when it is contiguous):
    /// a branch to them needs no limit check.
    pub extent: u32,
    /// The block's slot in the block cache, which its steps are given.
    pub slot: u32,
    /// Its physical address.
    pub phys: u32,
    /// EIP of its last byte, when other translations may chain to it (its
    /// instructions lie back to back).
    pub chain_last: Option<u32>,
    /// Its [`jump_mode`]: what a dynamic exit's target must have.
    pub mode: u32,
    /// A compressed-view block the monitor would not choose the compressed
    /// view for with the guest's IF clear (no patch region holds it): its
    /// chained entries and self-loops go on only while the virtual IF is
    /// set.
    pub needs_virtual_if: bool,
    /// The segments it may take as flat ([`flat_segments`]): flat when it
    /// is compiled, and not refused for it before.
    pub flat: u32,
    /// It may check memory operands through one base register once for
    /// all of them (not refused for it before).
    pub groups: bool,
}

/// When to compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitConfig {
    pub enabled: bool,
    /// Entries of a block before it is compiled (0: at its first).
    pub threshold: u32,
}

impl Default for JitConfig {
    fn default() -> Self {
        JitConfig {
            enabled: cfg!(target_arch = "x86_64"),
            threshold: 2,
        }
    }
}

impl JitConfig {
    /// The interpreter only (`--no-jit`).
    pub const OFF: JitConfig = JitConfig {
        enabled: false,
        threshold: 0,
    };
    /// Every block compiled at its first entry: what the agreement tests
    /// run, so that every instruction they execute meets the compiler.
    pub const EAGER: JitConfig = JitConfig {
        enabled: true,
        threshold: 0,
    };
}

/// A translation: its address in the code cache of its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    addr: usize,
    generation: u32,
    /// Where other translations may jump in.
    chain_entry: Option<usize>,
    /// The segments it takes as flat ([`Shape::flat`]): it runs only while
    /// they are, so it is entered from the block engine only then, and
    /// from another translation only if that one took them as flat too.
    pub flat: u32,
}

/// An exit of a translation that can be linked to the translation of the
/// block at `eip`: the address of its jump's displacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    patch: usize,
    pub eip: u32,
}

/// Counters for the run summary and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Blocks translated.
    pub compiled: u64,
    /// Bytes of host code emitted.
    pub code_bytes: u64,
    /// Host nanoseconds spent translating (never seen by the guest).
    pub compile_nanos: u64,
    /// Times the code cache was emptied: it was full, or a sink began or
    /// stopped listening ([`Jit::logs_io`]).
    pub flushes: u64,
    /// Instructions retired while a translation ran, and of those, the
    /// ones its steps ran (the rest ran as host code).
    pub retired: u64,
    pub stepped: u64,
    /// Translations entered from the block engine, and entries from one
    /// translation into another (chained; a block looping on itself runs
    /// again uncounted).
    pub entries: u64,
    pub chained_entries: u64,
    /// Translations not entered because a segment they took as flat no
    /// longer was (each is made again without it).
    pub flat_refusals: u64,
    /// Groups of memory operands compiled ([`Shape::groups`]), and
    /// translations that left at one they could not check (each is made
    /// again without groups).
    pub groups: u64,
    pub group_refusals: u64,
    /// Runs of port accesses compiled to log as one grouped entry
    /// ([`crate::events::sites`]), by their length less one.
    pub grouped_entries: [u64; crate::events::sites::MAX_ACCESSES],
}

/// The compiler and its code cache.
pub struct Jit {
    pub config: JitConfig,
    #[cfg(target_arch = "x86_64")]
    cache: cache::CodeCache,
    /// The host slot fill in host code ([`walk`]), made with the first
    /// translation and kept through every flush of `cache`.
    #[cfg(target_arch = "x86_64")]
    walk: Option<cache::CodeCache>,
    pub stats: JitStats,
    /// The environment translations run in, kept from one run to the next
    /// (its memory part is mostly still right).
    env: Box<Env>,
    /// The jump table `env.jumps` points at.
    jumps: Box<[JumpSlot]>,
    /// Where each translation's host code lies, for `perf` to name it
    /// (`RINGBACK_PERF_MAP` set: the `/tmp/perf-PID.map` convention).
    perf_map: Option<std::io::LineWriter<std::fs::File>>,
    /// The guest EIP whose translations are written out for reading
    /// (`RINGBACK_DUMP_EIP`, hexadecimal; see [`dump_translation`]).
    dump_eip: Option<u32>,
    /// The counters `env.patch_hits` points at: one per patch index that
    /// a translation runs, grown when one is compiled.
    patch_hits: Vec<u64>,
    /// The slots of blocks whose translation [`Jit::fits_segments`]
    /// refused, for the block cache to compile again, and the segments
    /// that were not flat then.
    pub refused: Vec<(u32, u32)>,
    /// Whether the cache's translations log the device accesses they make
    /// inline ([`Jit::logs_io`]).
    logging: bool,
}

// SAFETY: `env` holds pointers into the machine this compiler belongs to,
// refreshed before every use; they are never dereferenced by another thread
// (moving the machine moves its compiler with it).
unsafe impl Send for Jit {}

/// Opens `/tmp/perf-PID.map` when `RINGBACK_PERF_MAP` is set, so that
/// `perf report` names host code by the guest block it translates. Which
/// file is written never reaches the guest.
fn open_perf_map() -> Option<std::io::LineWriter<std::fs::File>> {
    std::env::var_os("RINGBACK_PERF_MAP")?;
    let path = format!("/tmp/perf-{}.map", std::process::id());
    match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        Ok(file) => Some(std::io::LineWriter::new(file)),
        Err(e) => {
            eprintln!("ringback: cannot write {path}: {e}");
            None
        }
    }
}

/// `RINGBACK_DUMP_EIP` as an EIP.
fn dump_eip() -> Option<u32> {
    let v = std::env::var("RINGBACK_DUMP_EIP").ok()?;
    u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()
}

/// Writes a translation's host code to `/tmp/jit-EIP.bin` (for `objdump -D
/// -b binary -mi386:x86-64`) and its guest instructions to
/// `/tmp/jit-EIP.txt`. A profiling aid: a failed write loses the files only.
#[cfg(target_arch = "x86_64")]
fn dump_translation(shape: &Shape<'_>, code: &[u8]) {
    let Some(first) = shape.insns.first() else { return };
    let listing: String = shape
        .insns
        .iter()
        .map(|i| {
            format!(
                "{:#010x} {} {:?}\n",
                i.ip,
                if i.plain { "plain" } else { "site " },
                i.op
            )
        })
        .collect();
    let _ = std::fs::write(format!("/tmp/jit-{:x}.bin", first.ip), code);
    let _ = std::fs::write(format!("/tmp/jit-{:x}.txt", first.ip), listing);
}

extern "sysv64" fn no_step(_: *mut Env, _: u32, _: u32) -> u32 {
    LEAVE
}

extern "sysv64" fn no_port(_: *mut Env, _: u32, _: u32, _: u32) -> u32 {
    LEAVE
}

impl Default for Jit {
    fn default() -> Self {
        Jit::new(JitConfig::default())
    }
}

/// A copy keeps the configuration and starts with an empty cache (the
/// copied blocks' translations belong to the other one's generation).
impl Clone for Jit {
    fn clone(&self) -> Self {
        Jit::new(self.config)
    }
}

impl std::fmt::Debug for Jit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jit")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Jit {
    pub fn new(config: JitConfig) -> Jit {
        let jumps = vec![JumpSlot::EMPTY; JUMP_SLOTS].into_boxed_slice();
        Jit {
            config,
            #[cfg(target_arch = "x86_64")]
            cache: cache::CodeCache::new(cache::DEFAULT_SIZE),
            #[cfg(target_arch = "x86_64")]
            walk: None,
            stats: JitStats::default(),
            env: Box::new(Env {
                step: no_step,
                port: no_port,
                stop_icount: 0,
                chained: 0,
                store: store_to_ram,
                fill: fill_host_slot,
                platform: std::ptr::null_mut(),
                ctx: std::ptr::null_mut(),
                jumps: jumps.as_ptr(),
                patch_hits: std::ptr::null_mut(),
                io_stage: std::ptr::null_mut(),
                group: 0,
                refuse_groups: 0,
                mem: MemEnv::empty(),
            }),
            jumps,
            perf_map: open_perf_map(),
            dump_eip: dump_eip(),
            patch_hits: Vec::new(),
            refused: Vec::new(),
            logging: false,
        }
    }

    /// Hands over the hits compiled patches counted since the last call
    /// (`f(index, hits)` for each patch that had any) and starts them again
    /// from zero.
    pub fn drain_patch_hits(&mut self, mut f: impl FnMut(u32, u64)) {
        for (index, hits) in self.patch_hits.iter_mut().enumerate() {
            if *hits != 0 {
                f(index as u32, std::mem::take(hits));
            }
        }
    }

    /// Makes the host slot fill in host code and sets it as `Env::fill`,
    /// once; where the host refuses the mapping the fill in Rust stays.
    #[cfg(target_arch = "x86_64")]
    fn install_walk(&mut self) {
        if self.walk.is_some() {
            return;
        }
        let mut code_page = cache::CodeCache::new(4096);
        let Some(base) = code_page.next_address() else { return };
        let Some(code) = walk::assemble(base, fill_host_slot) else {
            return;
        };
        if !code_page.fits(code.len()) {
            return;
        }
        let at = code_page.install(&code);
        // SAFETY: `at` is the start of code assembled for that address,
        // which follows the `FillFn` ABI and stays mapped as long as
        // `self.walk` holds its mapping, which outlives `env` and every
        // translation that calls it (they all go with this `Jit`).
        self.env.fill = unsafe { std::mem::transmute::<usize, FillFn>(at) };
        self.walk = Some(code_page);
    }

    /// Whether `code`, the translation of the block in `slot`, may run with
    /// the segments as they stand (after bringing the memory environment up
    /// to date): every one it takes as flat is. If not, the slot is noted
    /// in `refused` with those that are not.
    pub fn fits_segments(&mut self, code: Code, slot: usize, cpu: &mut Cpu, platform: &mut Platform) -> bool {
        self.env.mem.refresh(cpu, platform);
        let not_flat = code.flat & !self.env.mem.flat;
        if not_flat != 0 {
            self.stats.flat_refusals += 1;
            self.refused.push((slot as u32, not_flat));
        }
        not_flat == 0
    }

    /// Whether the last run of translations left before a group it could
    /// not check: its block is then noted in `refused`, for the block cache
    /// to compile again without groups.
    pub fn take_group_refusal(&mut self) -> bool {
        let slot = std::mem::take(&mut self.env.refuse_groups);
        if slot == 0 {
            return false;
        }
        self.stats.group_refusals += 1;
        self.refused.push(((slot - 1) as u32, GROUPS_REFUSED));
        true
    }

    /// The environment for the next run of a translation, its memory part
    /// as [`Jit::fits_segments`] just brought it up to date; the rest for
    /// the caller to set.
    pub fn env_as_refreshed(&mut self) -> &mut Env {
        &mut self.env
    }

    /// Something other than translations and plain steps may run next (the
    /// interpreter, the outer loop): the next entry compares the modes the
    /// inline memory path depends on again.
    #[inline]
    pub fn modes_may_have_changed(&mut self) {
        self.env.mem.modes_may_have_changed();
    }

    /// Empties the jump table: the translations stay, but none is found
    /// from another's dynamic exit until entered in it again.
    pub fn forget_jumps(&mut self) {
        self.jumps.fill(JumpSlot::EMPTY);
    }

    /// Translations log the device accesses they make inline exactly when
    /// a sink listens (`io_stage` not null), so that neither checks at run
    /// time: the cache is emptied when that changes (a recording starts
    /// before the guest runs, so it seldom does). The dispatcher calls it
    /// before it compiles or enters translations with `io_stage` as
    /// `Env::io_stage`.
    #[inline]
    pub fn logs_io(&mut self, io_stage: *mut IoStage) {
        if self.logging == io_stage.is_null() {
            if self.cache_bytes() != 0 {
                self.stats.flushes += 1;
            }
            self.flush();
            self.logging = !io_stage.is_null();
        }
    }

    /// Whether the cache's translations log as `io_stage` asks
    /// ([`Jit::logs_io`] made them so).
    pub fn logs_as(&self, io_stage: *mut IoStage) -> bool {
        self.logging != io_stage.is_null()
    }

    /// Drops every translation (the blocks they belong to are going).
    pub fn flush(&mut self) {
        #[cfg(target_arch = "x86_64")]
        self.cache.flush();
        self.jumps.fill(JumpSlot::EMPTY);
    }

    /// Enters the block at `eip` (`phys`, `mode`) in the jump table with
    /// its translation, for dynamic exits to find.
    #[inline]
    pub fn remember(&mut self, eip: u32, phys: u32, mode: u32, code: Code) {
        if let (Some(entry), true) = (code.chain_entry, self.is_current(code)) {
            self.jumps[jump_slot(eip, mode)] = JumpSlot {
                eip,
                phys,
                mode: mode | code.flat << 16,
                entry: entry as u64,
                ..JumpSlot::EMPTY
            };
        }
    }

    /// Takes a dropped block out of the jump table.
    pub fn forget(&mut self, eip: u32, phys: u32, mode: u32) {
        let slot = &mut self.jumps[jump_slot(eip, mode)];
        if slot.eip == eip && slot.phys == phys && slot.mode & 0xFFFF == mode {
            *slot = JumpSlot::EMPTY;
        }
    }

    /// Chained entries in the last run of translations.
    pub fn chained(&self) -> u64 {
        self.env.chained
    }

    /// Bytes of code the cache holds now.
    pub fn cache_bytes(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        return self.cache.used();
        #[cfg(not(target_arch = "x86_64"))]
        0
    }

    /// Whether `code` is still in the cache (not emptied since).
    #[inline(always)]
    pub fn is_current(&self, code: Code) -> bool {
        #[cfg(target_arch = "x86_64")]
        return code.generation == self.cache.generation();
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = code;
            false
        }
    }

    /// Translates a block; `None` when it is not worth it (no instruction
    /// would run as host code) or the host cannot run generated code.
    /// Translates a block; its exits come back unlinked. A full cache is
    /// emptied first, which the caller learns from [`Jit::is_current`] on
    /// the translations it holds.
    pub fn compile(&mut self, shape: &Shape<'_>) -> Option<(Code, Vec<Exit>)> {
        #[cfg(target_arch = "x86_64")]
        {
            let started = std::time::Instant::now();
            // The counters of the patches it runs exist before it does.
            let most = shape.insns.iter().filter_map(|i| match i.system_op {
                Some((_, SystemSite::Patch { index, .. })) if index < emit::MAX_COMPILED_PATCH => Some(index as usize),
                _ => None,
            });
            if let Some(most) = most.max() {
                if most >= self.patch_hits.len() {
                    self.patch_hits.resize(most + 1, 0);
                    self.env.patch_hits = self.patch_hits.as_mut_ptr();
                }
            }
            self.install_walk();
            let mut addr = self.cache.next_address()?;
            let mut out = emit::assemble(shape, addr, self.logging)?;
            if !self.cache.fits(out.bytes.len()) {
                self.flush();
                self.stats.flushes += 1;
                addr = self.cache.next_address()?;
                out = emit::assemble(shape, addr, self.logging)?;
                if !self.cache.fits(out.bytes.len()) {
                    return None;
                }
            }
            let at = self.cache.install(&out.bytes);
            debug_assert_eq!(at, addr);
            self.stats.compiled += 1;
            self.stats.groups += u64::from(out.groups);
            for (n, g) in self.stats.grouped_entries.iter_mut().zip(out.grouped_entries) {
                *n += u64::from(g);
            }
            self.stats.code_bytes += out.bytes.len() as u64;
            self.stats.compile_nanos += started.elapsed().as_nanos() as u64;
            if let (Some(want), Some(first)) = (self.dump_eip, shape.insns.first()) {
                if want == first.ip {
                    dump_translation(shape, &out.bytes);
                }
            }
            if let (Some(map), Some(first)) = (self.perf_map.as_mut(), shape.insns.first()) {
                use std::io::Write;
                // A profiling aid only: a failed write loses names, not state.
                let _ = writeln!(
                    map,
                    "{at:x} {:x} guest eip {:#010x} phys {:#010x}",
                    out.bytes.len(),
                    first.ip,
                    shape.phys
                );
            }
            let exits = out
                .exits
                .iter()
                .map(|&(off, eip)| Exit { patch: at + off, eip })
                .collect();
            Some((
                Code {
                    addr: at,
                    generation: self.cache.generation(),
                    chain_entry: out.chain_entry.map(|off| at + off),
                    flat: shape.flat,
                },
                exits,
            ))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = shape;
            None
        }
    }

    /// Points `exit` of translation `from` at `to`'s chain entry (`to`
    /// None: back at the return it started with). Both must be current.
    /// Returns whether it was linked.
    pub fn link(&mut self, from: Code, exit: Exit, to: Option<Code>) -> bool {
        if !self.is_current(from) || to.is_some_and(|c| !self.is_current(c) || c.flat & !from.flat != 0) {
            return false;
        }
        let target = match to {
            Some(Code {
                chain_entry: Some(entry),
                ..
            }) => entry,
            Some(_) => return false,
            None => exit.patch + 4,
        };
        let rel = (target as i64 - (exit.patch as i64 + 4)) as i32;
        #[cfg(target_arch = "x86_64")]
        self.cache.patch(exit.patch, rel);
        true
    }

    /// Runs a translation.
    ///
    /// # Safety
    /// `code` is current ([`Jit::is_current`]); `cpu` is valid for reads
    /// and writes and nothing else touches it during the call but `env`'s
    /// step; `env.step` upholds what its context needs.
    pub unsafe fn run(&mut self, code: Code, cpu: *mut Cpu) -> u32 {
        debug_assert!(self.is_current(code));
        let env: *mut Env = &mut *self.env;
        // SAFETY: `code.addr` is the start of a translation assembled by
        // `emit::assemble` with this ABI, still in the cache (current
        // generation, so not overwritten); the caller vouches for the
        // pointers it is given.
        unsafe {
            let f: extern "sysv64" fn(*mut Cpu, *mut Env) -> u32 = std::mem::transmute(code.addr);
            f(cpu, env)
        }
    }
}
