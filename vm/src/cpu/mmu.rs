//! Linear-to-physical translation: 32-bit paging with 4 KiB and 4 MiB pages,
//! accessed/dirty bits, U/S and R/W checks with CR0.WP, behind a software TLB
//! (SDM Vol. 3A, 4.3 "32-bit paging", 4.6 "Access rights", 4.7 "Page-fault
//! exceptions", 4.10 "Caching translation information").

use super::state::{cr0, cr4};
use super::{vector, Cpu, Fault, Result};
use crate::bus::Bus;

const TLB_ENTRIES: usize = 1024;
/// Page directory and page table entry bits (SDM Vol. 3A, Tables 4-5, 4-6).
pub(crate) const PTE_P: u32 = 1 << 0;
pub(crate) const PTE_RW: u32 = 1 << 1;
const PTE_US: u32 = 1 << 2;
pub(crate) const PTE_A: u32 = 1 << 5;
pub(crate) const PTE_D: u32 = 1 << 6;
pub(crate) const PDE_PS: u32 = 1 << 7;
pub(crate) const PTE_G: u32 = 1 << 8;

/// How memory is being accessed, for the permission checks and the #PF error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Execute,
}

/// `repr(C)`: the compiler's inline memory path probes entries by these
/// offsets ([`tlb_layout`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
struct TlbEntry {
    /// Virtual page number + 1; 0 marks an empty slot.
    tag: u32,
    phys_page: u32,
    user: bool,
    writable: bool,
    dirty: bool,
    global: bool,
    /// Part of a 4 MiB page: INVLPG of any address in it drops every piece.
    large: bool,
}

/// What a page walk read, when it succeeds ([`Cpu::read_tables`]).
struct Walked {
    pde_addr: u32,
    pde: u32,
    pte_addr: u32,
    pte: u32,
    large: bool,
    user_ok: bool,
    writable: bool,
    phys_page: u32,
}

/// Why a walk stopped: the page fault it raises (`present`: a protection
/// fault), or a table where the caller's `plain` refused to read.
enum Unwalked {
    Fault { present: bool },
    NotPlain,
}

/// A direct-mapped software TLB. It only caches what the page tables say; the
/// guest sees exactly the flushing behaviour the SDM allows (CR3 writes, INVLPG).
#[derive(Debug)]
pub struct Tlb {
    entries: Box<[TlbEntry]>,
    /// One [`HostSlot`] beside each entry, emptied whenever its entry is
    /// written or dropped.
    host: Box<[HostSlot]>,
    /// Entries written by page walks so far: a translation that chains on
    /// after a step must know whether its code page's entry may be gone.
    fills: u64,
    /// A bit per slot that may hold an entry or a host slot (every one
    /// that does): a flush visits those only. A loop over many pages
    /// reloading CR3 spent 7% of its time emptying all 1,024.
    used: [u64; USED_WORDS],
}

const USED_WORDS: usize = TLB_ENTRIES / 64;

/// What the compiler keeps beside a TLB slot: for the linear page the slot
/// translates, where it lies in host memory. The TLB knows nothing of it
/// but that it goes whenever the slot changes, so a host slot never
/// outlives the translation it was made from (the compiler's inline path
/// is then exactly as strict as the TLB). Tags are page addresses;
/// [`HostSlot::NONE`] matches no address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct HostSlot {
    /// The page may be read at `addend + linear`.
    pub read_tag: u32,
    /// ... and written there, straight.
    pub write_tag: u32,
    /// ... or written, through the memory's own store (it holds watched
    /// code).
    pub careful_tag: u32,
    pub pad: u32,
    /// Host address of the page minus its linear address.
    pub addend: u64,
    /// To 32 bytes: the inline path indexes slots by a shift.
    pub pad2: u64,
}

impl HostSlot {
    pub const NONE_TAG: u32 = 1;
    pub const NONE: HostSlot = HostSlot {
        read_tag: Self::NONE_TAG,
        write_tag: Self::NONE_TAG,
        careful_tag: Self::NONE_TAG,
        pad: 0,
        addend: 0,
        pad2: 0,
    };
}

/// A copy has the same translations and no host slots: they point into the
/// memory of the machine they were made for.
impl Clone for Tlb {
    fn clone(&self) -> Self {
        Tlb {
            entries: self.entries.clone(),
            host: vec![HostSlot::NONE; TLB_ENTRIES].into_boxed_slice(),
            fills: self.fills,
            used: self.used,
        }
    }
}

impl Default for Tlb {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a TLB entry keeps what the compiler's inline lookup reads: the
/// tag (virtual page number + 1), the physical page, and a dword whose byte
/// 0 is the user bit, byte 1 the writable bit and byte 2 the dirty bit.
pub mod tlb_layout {
    use super::TlbEntry;
    use std::mem::{offset_of, size_of};
    pub const ENTRIES: usize = super::TLB_ENTRIES;
    pub const ENTRY_SIZE: usize = size_of::<TlbEntry>();
    pub const TAG: usize = offset_of!(TlbEntry, tag);
    pub const PHYS_PAGE: usize = offset_of!(TlbEntry, phys_page);
    pub const PERMISSIONS: usize = offset_of!(TlbEntry, user);
    pub const USER: u32 = 1;
    pub const WRITABLE: u32 = 1 << 8;
    pub const DIRTY: u32 = 1 << 16;
    pub const HOST_SLOT_SIZE: usize = size_of::<super::HostSlot>();
    pub const HOST_READ_TAG: usize = offset_of!(super::HostSlot, read_tag);
    pub const HOST_WRITE_TAG: usize = offset_of!(super::HostSlot, write_tag);
    pub const HOST_CAREFUL_TAG: usize = offset_of!(super::HostSlot, careful_tag);
    pub const HOST_ADDEND: usize = offset_of!(super::HostSlot, addend);
    pub const HOST_PAD: usize = offset_of!(super::HostSlot, pad);
    pub const HOST_PAD2: usize = offset_of!(super::HostSlot, pad2);
    /// The global bit (byte 3 of the permissions dword) and the 4 MiB
    /// piece's (the byte after).
    pub const GLOBAL: u32 = 1 << 24;
    pub const LARGE: usize = offset_of!(TlbEntry, large);
    /// In a `Tlb`: the count of walks' fills and the bitmap of slots in use.
    pub const FILLS: usize = offset_of!(super::Tlb, fills);
    pub const USED: usize = offset_of!(super::Tlb, used);
    const _: () = assert!(HOST_SLOT_SIZE == 32);
    const _: () = assert!(offset_of!(TlbEntry, global) == PERMISSIONS + 3);
    const _: () = assert!(LARGE == PERMISSIONS + 4);
    const _: () = assert!(offset_of!(TlbEntry, writable) == PERMISSIONS + 1);
    const _: () = assert!(offset_of!(TlbEntry, dirty) == PERMISSIONS + 2);
}

impl Tlb {
    /// The entries, for the compiler's inline lookup ([`tlb_layout`]).
    pub fn entries_ptr(&self) -> *const u8 {
        self.entries.as_ptr().cast()
    }

    pub fn new() -> Self {
        Tlb {
            entries: vec![TlbEntry::default(); TLB_ENTRIES].into_boxed_slice(),
            host: vec![HostSlot::NONE; TLB_ENTRIES].into_boxed_slice(),
            fills: 0,
            used: [0; USED_WORDS],
        }
    }

    #[inline]
    fn mark_used(&mut self, i: usize) {
        self.used[i / 64] |= 1 << (i % 64);
    }

    /// Visits the slots in use; where `drop` says so, empties the entry and
    /// its host slot, else where `host_too` says so, the host slot only.
    fn sweep(&mut self, drop: impl Fn(&TlbEntry) -> bool, host_too: bool) {
        for (w, word) in self.used.iter_mut().enumerate() {
            let mut bits = *word;
            let mut kept = 0;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let i = w * 64 + bit;
                if drop(&self.entries[i]) {
                    self.entries[i] = TlbEntry::default();
                    self.host[i] = HostSlot::NONE;
                } else {
                    if host_too {
                        self.host[i] = HostSlot::NONE;
                    }
                    if !(host_too && self.entries[i].tag == 0) {
                        kept |= 1 << bit;
                    }
                }
            }
            *word = kept;
        }
    }

    /// The host slots, for the compiler's inline path ([`tlb_layout`]).
    pub fn host_ptr(&mut self) -> *mut u8 {
        self.host.as_mut_ptr().cast()
    }

    /// The host slot beside the entry for `linear`.
    pub fn host_slot(&mut self, linear: u32) -> &mut HostSlot {
        let i = (linear >> 12) as usize % TLB_ENTRIES;
        self.mark_used(i);
        &mut self.host[i]
    }

    /// Whether `other` holds the same entries, host slots, count of fills
    /// and slots in use.
    #[cfg(test)]
    pub fn same_as(&self, other: &Tlb) -> bool {
        self.entries == other.entries && self.host == other.host && self.fills == other.fills && self.used == other.used
    }

    /// Whether `other` holds the same entries and count of fills (its host
    /// slots aside).
    #[cfg(test)]
    pub fn same_entries(&self, other: &Tlb) -> bool {
        self.entries == other.entries && self.fills == other.fills
    }

    /// Empties every host slot (what they were made under changed).
    pub fn clear_host(&mut self) {
        self.sweep(|_| false, true);
    }

    /// Entries written by page walks so far.
    pub fn fills(&self) -> u64 {
        self.fills
    }

    pub fn flush_all(&mut self) {
        self.sweep(|_| true, true);
    }

    /// Takes `other`'s entries in place: the compiler's code holds the
    /// address of this table.
    pub fn copy_from(&mut self, other: &Tlb) {
        self.entries.copy_from_slice(&other.entries);
        self.host.fill(HostSlot::NONE);
        self.used = other.used;
    }

    /// A CR3 write: drops everything but global pages (when CR4.PGE is on).
    pub fn flush_non_global(&mut self) {
        self.sweep(|e| !e.global, false);
    }

    /// The physical address of `linear` when a cached translation allows the
    /// access as it stands, so that `Cpu::translate` needs no page walk (and
    /// so touches nothing). `wp` is CR0.WP.
    #[inline]
    pub fn lookup(&self, linear: u32, write: bool, user: bool, wp: bool) -> Option<u32> {
        let vpn = linear >> 12;
        let e = &self.entries[vpn as usize % TLB_ENTRIES];
        if e.tag == vpn + 1 {
            let allowed = (!user || e.user) && (!write || e.writable || (!user && !wp));
            if allowed && (!write || e.dirty) {
                return Some(e.phys_page | (linear & 0xFFF));
            }
        }
        None
    }

    /// Drops the translation of `linear`; for a 4 MiB page, of the whole page
    /// (SDM Vol. 2A, INVLPG), which this TLB caches as 4 KiB pieces.
    pub fn invlpg(&mut self, linear: u32) {
        let vpn = linear >> 12;
        let i = vpn as usize % TLB_ENTRIES;
        if self.entries[i].tag == vpn + 1 {
            self.entries[i] = TlbEntry::default();
            self.host[i] = HostSlot::NONE;
        }
        let region = linear >> 22;
        self.sweep(|e| e.large && e.tag != 0 && (e.tag - 1) >> 10 == region, false);
    }
}

impl Cpu {
    /// Translates a linear address for an access of the given kind. `user` is
    /// whether the access is made at CPL 3 (implicit supervisor accesses pass false).
    #[inline]
    pub fn translate<B: Bus>(&mut self, bus: &mut B, linear: u32, access: Access, user: bool) -> Result<u32> {
        if !self.state.paging() {
            return Ok(linear);
        }
        let wp = self.state.cr0 & cr0::WP != 0;
        if let Some(phys) = self.tlb.lookup(linear, access == Access::Write, user, wp) {
            return Ok(phys);
        }
        self.walk(bus, linear, access, user)
    }

    fn walk<B: Bus>(&mut self, bus: &mut B, linear: u32, access: Access, user: bool) -> Result<u32> {
        let now = self.now();
        match self.read_tables(linear, access, user, |at| Some(bus.read_phys(at, 4, now))) {
            Ok(w) => Ok(self.complete_walk(bus, linear, access, w)),
            Err(Unwalked::Fault { present }) => {
                self.state.cr2 = linear;
                let write = access == Access::Write;
                let code = u32::from(present) | (u32::from(write) << 1) | (u32::from(user) << 2);
                Err(Fault::with_error(vector::PF, code))
            }
            Err(Unwalked::NotPlain) => unreachable!("every table is taken as plain here"),
        }
    }

    /// The reads of a walk for `linear` and what they decide, touching
    /// nothing: the page directory entry, the page table entry (the same
    /// for a 4 MiB page), and the permissions; stopped where `read` finds
    /// no entry it may read (`None`) at a table entry's physical address.
    fn read_tables(
        &self,
        linear: u32,
        access: Access,
        user: bool,
        mut read: impl FnMut(u32) -> Option<u32>,
    ) -> std::result::Result<Walked, Unwalked> {
        let pde_addr = (self.state.cr3 & 0xFFFF_F000) | ((linear >> 22) << 2);
        let pde = read(pde_addr).ok_or(Unwalked::NotPlain)?;
        if pde & PTE_P == 0 {
            return Err(Unwalked::Fault { present: false });
        }
        let large = pde & PDE_PS != 0 && self.state.cr4 & cr4::PSE != 0;
        let (pte_addr, pte) = if large {
            (pde_addr, pde)
        } else {
            let addr = (pde & 0xFFFF_F000) | (((linear >> 12) & 0x3FF) << 2);
            let pte = read(addr).ok_or(Unwalked::NotPlain)?;
            if pte & PTE_P == 0 {
                return Err(Unwalked::Fault { present: false });
            }
            (addr, pte)
        };
        let user_ok = pde & pte & PTE_US != 0;
        let writable = pde & pte & PTE_RW != 0;
        let wp = self.state.cr0 & cr0::WP != 0;
        if (user && !user_ok) || (access == Access::Write && !writable && (user || wp)) {
            return Err(Unwalked::Fault { present: true });
        }
        let phys_page = if large {
            (pte & 0xFFC0_0000) | (linear & 0x003F_F000)
        } else {
            pte & 0xFFFF_F000
        };
        Ok(Walked {
            pde_addr,
            pde,
            pte_addr,
            pte,
            large,
            user_ok,
            writable,
            phys_page,
        })
    }

    /// A walk that succeeds: accessed and dirty bits set (SDM 4.8), the TLB
    /// filled; the physical address.
    fn complete_walk<B: Bus>(&mut self, bus: &mut B, linear: u32, access: Access, w: Walked) -> u32 {
        if !w.large && w.pde & PTE_A == 0 {
            bus.write_phys(w.pde_addr, 4, w.pde | PTE_A, self.now());
        }
        let mut new_pte = w.pte | PTE_A;
        if access == Access::Write {
            new_pte |= PTE_D;
        }
        if new_pte != w.pte {
            bus.write_phys(w.pte_addr, 4, new_pte, self.now());
        }
        self.fill_entry(linear, &w, new_pte & PTE_D != 0)
    }

    /// The TLB fill that ends a walk; the physical address.
    fn fill_entry(&mut self, linear: u32, w: &Walked, dirty: bool) -> u32 {
        let vpn = linear >> 12;
        self.tlb.fills += 1;
        self.tlb.mark_used(vpn as usize % TLB_ENTRIES);
        self.tlb.host[vpn as usize % TLB_ENTRIES] = HostSlot::NONE;
        self.tlb.entries[vpn as usize % TLB_ENTRIES] = TlbEntry {
            tag: vpn + 1,
            phys_page: w.phys_page,
            user: w.user_ok,
            writable: w.writable,
            dirty,
            global: w.pte & PTE_G != 0 && self.state.cr4 & cr4::PGE != 0,
            large: w.large,
        };
        w.phys_page | (linear & 0xFFF)
    }

    /// The compiler's commonest fill, read straight from RAM: the walk
    /// [`Cpu::walk_without_evicting`] would make, where its slot is empty
    /// and both table entries lie in `ram` below `tables_end` (after the
    /// A20 gate, as the bus reads them: plain RAM, no watch) and already
    /// carry the accessed bit, and the dirty bit a store needs, so that the
    /// walk writes nothing but the TLB. `None`, with nothing touched, where
    /// any of that fails or the access faults: the general walk decides.
    #[inline]
    pub fn walk_in_ram(
        &mut self,
        ram: &[u8],
        a20_mask: u32,
        tables_end: u64,
        linear: u32,
        access: Access,
        user: bool,
    ) -> Option<u32> {
        if self.tlb.entries[(linear >> 12) as usize % TLB_ENTRIES].tag != 0 {
            return None;
        }
        let read = |at: u32| {
            let at = at & a20_mask;
            if u64::from(at) + 4 > tables_end {
                return None;
            }
            let bytes = ram.get(at as usize..at as usize + 4)?;
            Some(u32::from_le_bytes(bytes.try_into().ok()?))
        };
        let w = self.read_tables(linear, access, user, read).ok()?;
        let settled =
            (w.large || w.pde & PTE_A != 0) && w.pte & PTE_A != 0 && (access != Access::Write || w.pte & PTE_D != 0);
        settled.then(|| self.fill_entry(linear, &w, w.pte & PTE_D != 0))
    }

    /// The compiler's host slot fill, which must not change what the TLB
    /// already holds: the walk `translate` would make for `linear` (same
    /// reads, accessed and dirty bits, fill), made only when it succeeds,
    /// both levels of the tables lie where `plain` says plain RAM, and the
    /// fill evicts nothing: its slot is empty or holds the same page at the
    /// same physical address (a store to a page not yet dirty). Otherwise
    /// `None`, with nothing touched, and the access is the step's (whose
    /// walk may evict the entry of the code running, which the block engine
    /// checks after it).
    pub fn walk_without_evicting<B: Bus>(
        &mut self,
        bus: &mut B,
        linear: u32,
        access: Access,
        user: bool,
        plain: impl Fn(&B, u32) -> bool,
    ) -> Option<u32> {
        let vpn = linear >> 12;
        let held = self.tlb.entries[vpn as usize % TLB_ENTRIES];
        if held.tag != 0 && held.tag != vpn + 1 {
            return None;
        }
        let now = self.now();
        let w = self
            .read_tables(linear, access, user, |at| {
                plain(bus, at).then(|| bus.read_phys(at, 4, now))
            })
            .ok()?;
        if held.tag != 0 && held.phys_page != w.phys_page {
            return None;
        }
        Some(self.complete_walk(bus, linear, access, w))
    }

    /// Reads 1, 2 or 4 bytes at a linear address, splitting at page boundaries.
    pub fn read_linear<B: Bus>(&mut self, bus: &mut B, linear: u32, size: u8, user: bool) -> Result<u32> {
        if (linear & 0xFFF) + u32::from(size) <= 0x1000 {
            let phys = self.translate(bus, linear, Access::Read, user)?;
            return Ok(bus.read_phys(phys, size, self.now()));
        }
        // Translate every page first so a fault leaves nothing half done.
        let first = self.translate(bus, linear, Access::Read, user)?;
        let second_lin = (linear | 0xFFF).wrapping_add(1);
        let second = self.translate(bus, second_lin, Access::Read, user)?;
        let mut v = 0u32;
        for i in 0..u32::from(size) {
            let lin = linear.wrapping_add(i);
            let phys = if lin & !0xFFF == linear & !0xFFF {
                first + i
            } else {
                second + (lin & 0xFFF)
            };
            v |= bus.read_phys(phys, 1, self.now()) << (8 * i);
        }
        Ok(v)
    }

    /// Writes 1, 2 or 4 bytes at a linear address, splitting at page boundaries.
    pub fn write_linear<B: Bus>(&mut self, bus: &mut B, linear: u32, size: u8, value: u32, user: bool) -> Result<()> {
        if (linear & 0xFFF) + u32::from(size) <= 0x1000 {
            let phys = self.translate(bus, linear, Access::Write, user)?;
            bus.write_phys(phys, size, value, self.now());
            return Ok(());
        }
        let first = self.translate(bus, linear, Access::Write, user)?;
        let second_lin = (linear | 0xFFF).wrapping_add(1);
        let second = self.translate(bus, second_lin, Access::Write, user)?;
        for i in 0..u32::from(size) {
            let lin = linear.wrapping_add(i);
            let phys = if lin & !0xFFF == linear & !0xFFF {
                first + i
            } else {
                second + (lin & 0xFFF)
            };
            bus.write_phys(phys, 1, value >> (8 * i), self.now());
        }
        Ok(())
    }

    /// The physical address a linear address maps to, looked up in the page
    /// tables without any side effect: no accessed bits, no TLB fill, no
    /// fault. For the monitor's own reads of guest code and for debuggers;
    /// `None` when the page is not present.
    pub fn probe_translate<B: Bus>(&self, bus: &mut B, linear: u32) -> Option<u32> {
        if !self.state.paging() {
            return Some(linear);
        }
        let pde = bus.read_phys((self.state.cr3 & 0xFFFF_F000) | ((linear >> 22) << 2), 4, self.now());
        if pde & PTE_P == 0 {
            return None;
        }
        if pde & PDE_PS != 0 && self.state.cr4 & cr4::PSE != 0 {
            return Some((pde & 0xFFC0_0000) | (linear & 0x003F_FFFF));
        }
        let pte = bus.read_phys((pde & 0xFFFF_F000) | (((linear >> 12) & 0x3FF) << 2), 4, self.now());
        (pte & PTE_P != 0).then_some((pte & 0xFFFF_F000) | (linear & 0xFFF))
    }

    /// Checks that a write to `size` bytes at `linear` would succeed, without writing.
    pub fn probe_write<B: Bus>(&mut self, bus: &mut B, linear: u32, size: u32, user: bool) -> Result<()> {
        self.translate(bus, linear, Access::Write, user)?;
        let last = linear.wrapping_add(size.saturating_sub(1));
        if last & !0xFFF != linear & !0xFFF {
            self.translate(bus, last, Access::Write, user)?;
        }
        Ok(())
    }

    /// Fetches up to `out.len()` instruction bytes from a linear address. Stops
    /// early (returning the count) at a page that cannot be fetched, unless it is
    /// the very first byte, whose fault is returned: the decoder only needs the
    /// next page when the instruction really crosses into it.
    pub fn fetch_linear<B: Bus>(&mut self, bus: &mut B, linear: u32, out: &mut [u8]) -> Result<usize> {
        let user = self.state.cpl() == 3;
        let mut n = 0;
        while n < out.len() {
            let lin = linear.wrapping_add(n as u32);
            let phys = match self.translate(bus, lin, Access::Execute, user) {
                Ok(p) => p,
                Err(f) if n == 0 => return Err(f),
                Err(_) => break,
            };
            let in_page = (0x1000 - (lin & 0xFFF)) as usize;
            let take = in_page.min(out.len() - n);
            bus.fetch_phys(phys, &mut out[n..n + take]);
            n += take;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TLB as plain arrays, flushed by visiting every slot (as it was
    /// before flushes visited only the slots in use).
    #[derive(Clone)]
    struct Model {
        entries: Vec<(u32, bool, bool)>,
        host: Vec<HostSlot>,
    }

    impl Model {
        fn of(tlb: &Tlb) -> Model {
            Model {
                entries: tlb.entries.iter().map(|e| (e.tag, e.global, e.large)).collect(),
                host: tlb.host.to_vec(),
            }
        }

        fn drop_where(&mut self, drop: impl Fn(u32, bool, bool) -> bool) {
            for (e, h) in self.entries.iter_mut().zip(self.host.iter_mut()) {
                if drop(e.0, e.1, e.2) {
                    *e = (0, false, false);
                    *h = HostSlot::NONE;
                }
            }
        }
    }

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
    }

    /// Fills as a walk and the compiler's fill do: an entry with its host
    /// slot, or (paging off) a host slot alone.
    fn fill(tlb: &mut Tlb, rng: &mut Lcg) {
        let vpn = rng.next() & 0xF_FFFF;
        let i = vpn as usize % TLB_ENTRIES;
        if !rng.next().is_multiple_of(4) {
            tlb.mark_used(i);
            tlb.entries[i] = TlbEntry {
                tag: vpn + 1,
                phys_page: vpn << 12,
                global: rng.next().is_multiple_of(3),
                large: rng.next().is_multiple_of(5),
                ..TlbEntry::default()
            };
        }
        let slot = tlb.host_slot(vpn << 12);
        slot.read_tag = vpn << 12;
        slot.addend = u64::from(vpn);
    }

    #[test]
    fn flushes_reach_every_slot_in_use() {
        let mut rng = Lcg(7);
        let mut tlb = Tlb::new();
        let mut other = Tlb::new();
        for round in 0..3000 {
            for _ in 0..rng.next() % 64 {
                fill(&mut tlb, &mut rng);
                fill(&mut other, &mut rng);
            }
            let mut model = Model::of(&tlb);
            match rng.next() % 5 {
                0 => {
                    tlb.flush_all();
                    model.drop_where(|_, _, _| true);
                }
                1 => {
                    tlb.flush_non_global();
                    model.drop_where(|_, global, _| !global);
                }
                2 => {
                    tlb.clear_host();
                    model.host.fill(HostSlot::NONE);
                }
                3 => {
                    let linear = rng.next();
                    tlb.invlpg(linear);
                    let vpn = linear >> 12;
                    let region = linear >> 22;
                    model
                        .drop_where(|tag, _, large| tag == vpn + 1 || (large && tag != 0 && (tag - 1) >> 10 == region));
                }
                _ => {
                    tlb.copy_from(&other);
                    model = Model::of(&other);
                    model.host.fill(HostSlot::NONE);
                }
            }
            let after = Model::of(&tlb);
            assert!(after.entries == model.entries, "round {round}: entries");
            assert!(after.host == model.host, "round {round}: host slots");
            // Every slot holding anything is marked, so the next flush finds it.
            for i in 0..TLB_ENTRIES {
                if tlb.entries[i].tag != 0 || tlb.host[i] != HostSlot::NONE {
                    assert!(
                        tlb.used[i / 64] & 1 << (i % 64) != 0,
                        "round {round}: slot {i} unmarked"
                    );
                }
            }
        }
    }
}
