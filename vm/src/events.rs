//! Typed events: every decision the raw engine's monitor, code scanner and
//! patch manager makes, and every exception and interrupt delivered to the
//! guest, with the icount and guest PC it happened at. They go to one sink
//! (the trace writer records them); with no sink attached, emitting is a
//! branch on `None`.

use std::fmt;

use crate::cpu::Fault;

pub mod sites;
use sites::{SiteAccess, SiteTable};

/// Why the raw engine handed control to the monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum ExitReason {
    /// An exception raised while running raw (a privileged instruction at
    /// ring 1 raises #GP; page faults and the guest's own faults land here too).
    Fault(u8),
    /// INT n, INT3, INTO or a single-step trap: the monitor forwards it
    /// through the guest IDT.
    SoftwareInterrupt(u8),
    /// A sensitive instruction the code scanner marked, unpatched: it exits
    /// before it can run with ring-1 state.
    Marked,
    /// A patch that could not run inline (its instruction faulted).
    PatchFault,
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Fault(v) => write!(f, "fault {}", crate::cpu::vector::name(*v)),
            ExitReason::SoftwareInterrupt(v) => write!(f, "software interrupt {v:#x}"),
            ExitReason::Marked => write!(f, "scanner-marked instruction"),
            ExitReason::PatchFault => write!(f, "fault inside a patch"),
        }
    }
}

/// Which engine runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum EngineKind {
    /// Cached blocks, guest ring 0 compressed into ring 1.
    RawRing0,
    /// Cached blocks, guest ring 3 as ring 3.
    RawRing3,
    /// The reference engine (real mode, V86, TF set, rings 1 and 2, ...).
    Reference,
    /// Cached blocks at the guest's true privilege: guest ring 0 with IF
    /// clear outside patch regions, which ring compression cannot run (as
    /// VirtualBox ran such code in its recompiler, not an instruction at a
    /// time).
    TrueBlocks,
}

/// Why a site got no patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RefuseReason {
    /// The instruction changes privilege, paging or descriptor tables, or
    /// halts: only the monitor can carry it out.
    NotInlinable,
    /// Patching is switched off (`--no-patch`).
    PatchingOff,
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::NotInlinable => write!(f, "changes privilege, paging or system state; trap and emulate"),
            RefuseReason::PatchingOff => write!(f, "patching is off"),
        }
    }
}

/// Why a patch was installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PatchCause {
    /// The scanner marked the site before it ever ran.
    Scanned,
    /// The site trapped this many times.
    Hot(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// The raw engine exited to the monitor.
    Trap { reason: ExitReason },
    /// The monitor emulated the instruction at the guest's true privilege.
    Emulated { reason: ExitReason },
    /// An exception was delivered through the guest's IDT.
    GuestException { fault: Fault },
    /// An external interrupt was delivered through the guest's IDT.
    Interrupt { vector: u8 },
    /// The engine running the guest changed.
    EngineSwitch { from: EngineKind, to: EngineKind },
    /// The code scanner walked guest ring-0 code from `entry` (linear).
    Scan { entry: u32, instructions: u32, marked: u32 },
    PatchInstalled {
        site: u32,
        phys: u32,
        mnemonic: String,
        cause: PatchCause,
    },
    PatchRefused {
        site: u32,
        phys: u32,
        mnemonic: String,
        reason: RefuseReason,
    },
    /// A patch was dropped because the guest wrote to its page.
    PatchRemoved { site: u32, phys: u32 },
    /// A patch was switched off or on again by hand (a debugger, a bisect).
    PatchToggled { site: u32, phys: u32, enabled: bool },
    /// The guest changed the bytes of a scanned or patched instruction.
    SelfModifyingWrite { page: u32 },
    /// A port access (`mmio` false, `addr` the port) or an MMIO access.
    Io {
        addr: u32,
        mmio: bool,
        size: u8,
        value: u32,
        write: bool,
    },
}

/// Events grouped as an inspector filters and counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    Trap,
    Emulated,
    Exception,
    Interrupt,
    EngineSwitch,
    Scan,
    /// Installed, refused, removed or toggled.
    Patch,
    SelfModifyingWrite,
    /// Port or MMIO access.
    Io,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::Trap,
        EventKind::Emulated,
        EventKind::Exception,
        EventKind::Interrupt,
        EventKind::EngineSwitch,
        EventKind::Scan,
        EventKind::Patch,
        EventKind::SelfModifyingWrite,
        EventKind::Io,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Trap => "trap",
            EventKind::Emulated => "emulated",
            EventKind::Exception => "exception",
            EventKind::Interrupt => "interrupt",
            EventKind::EngineSwitch => "engine",
            EventKind::Scan => "scan",
            EventKind::Patch => "patch",
            EventKind::SelfModifyingWrite => "smc",
            EventKind::Io => "i/o",
        }
    }
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Trap { .. } => EventKind::Trap,
            Event::Emulated { .. } => EventKind::Emulated,
            Event::GuestException { .. } => EventKind::Exception,
            Event::Interrupt { .. } => EventKind::Interrupt,
            Event::EngineSwitch { .. } => EventKind::EngineSwitch,
            Event::Scan { .. } => EventKind::Scan,
            Event::PatchInstalled { .. }
            | Event::PatchRefused { .. }
            | Event::PatchRemoved { .. }
            | Event::PatchToggled { .. } => EventKind::Patch,
            Event::SelfModifyingWrite { .. } => EventKind::SelfModifyingWrite,
            Event::Io { .. } => EventKind::Io,
        }
    }
}

/// An event with where and when it happened.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventRecord {
    pub icount: u64,
    /// Linear address (CS base + EIP) of the instruction concerned.
    pub pc: u32,
    pub event: Event,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Trap { reason } => write!(f, "trap: {reason}"),
            Event::Emulated { reason } => write!(f, "emulated after {reason}"),
            Event::GuestException { fault } => write!(f, "guest exception {fault}"),
            Event::Interrupt { vector } => write!(f, "interrupt vector {vector:#x}"),
            Event::EngineSwitch { from, to } => write!(f, "engine {from:?} -> {to:?}"),
            Event::Scan {
                entry,
                instructions,
                marked,
            } => write!(f, "scan from {entry:#x}: {instructions} instructions, {marked} marked"),
            Event::PatchInstalled {
                site, mnemonic, cause, ..
            } => write!(f, "patch installed at {site:#x} ({mnemonic}, {cause:?})"),
            Event::PatchRefused {
                site, mnemonic, reason, ..
            } => write!(f, "patch refused at {site:#x} ({mnemonic}): {reason}"),
            Event::PatchRemoved { site, .. } => write!(f, "patch removed at {site:#x} (code written)"),
            Event::PatchToggled { site, enabled, .. } => {
                write!(
                    f,
                    "patch at {site:#x} {}",
                    if *enabled { "enabled" } else { "disabled" }
                )
            }
            Event::SelfModifyingWrite { page } => write!(f, "write to code page {:#x}", page << 12),
            Event::Io {
                addr,
                mmio,
                size,
                value,
                write,
            } => {
                let what = if *mmio { "mmio" } else { "port" };
                let dir = if *write { "write" } else { "read" };
                write!(f, "{what} {dir} {addr:#x} ({size} bytes): {value:#x}")
            }
        }
    }
}

/// One port or MMIO access, logged while a recorder listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    /// Port number, or physical address for MMIO.
    pub addr: u32,
    pub mmio: bool,
    pub size: u8,
    pub value: u32,
    pub write: bool,
}

impl From<IoAccess> for Event {
    fn from(a: IoAccess) -> Event {
        Event::Io {
            addr: a.addr,
            mmio: a.mmio,
            size: a.size,
            value: a.value,
            write: a.write,
        }
    }
}

impl Event {
    /// The device access, if it is one.
    pub fn io_access(&self) -> Option<IoAccess> {
        match *self {
            Event::Io {
                addr,
                mmio,
                size,
                value,
                write,
            } => Some(IoAccess {
                addr,
                mmio,
                size,
                value,
                write,
            }),
            _ => None,
        }
    }
}

/// An event of a batch, as the batch hands it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventView<'a> {
    Io(IoAccess),
    Interrupt(u8),
    /// Any other event, kept whole.
    Other(&'a Event),
}

impl<'a> EventView<'a> {
    /// The view of a whole event.
    pub fn of(event: &'a Event) -> EventView<'a> {
        match (event.io_access(), event) {
            (Some(a), _) => EventView::Io(a),
            (None, Event::Interrupt { vector }) => EventView::Interrupt(*vector),
            (None, other) => EventView::Other(other),
        }
    }

    /// The event itself.
    pub fn to_event(self) -> Event {
        match self {
            EventView::Io(a) => Event::from(a),
            EventView::Interrupt(vector) => Event::Interrupt { vector },
            EventView::Other(event) => event.clone(),
        }
    }
}

/// A batch's entry: the frequent events (device accesses, interrupts) in 24
/// bytes, any other by its place in `EventBatch::others`. A trap loop logs
/// an access every few instructions, so what a log costs the guest's
/// thread is a store of this, nothing more.
///
/// A grouped entry ([`sites`]) holds up to three port accesses a
/// translation made: the icount, the values where the pc, address and
/// value go, and the site's number in the size byte and `past`.
/// `repr(C)`: compiled code appends device accesses to an [`IoStage`]
/// itself, at the offsets [`io_stage_layout`] gives.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Entry {
    /// With `past`, the icount.
    icount: u64,
    pc: u32,
    /// Io: the port or address; Other: the index in `others`.
    addr: u32,
    /// Io: the value; Interrupt: the vector.
    value: u32,
    size: u8,
    flags: u8,
    /// Instructions past `icount`: a translation stores the icount as its
    /// register holds it (last brought up to date) and the instructions
    /// since with the size and flags, which saves it an addition per
    /// access.
    past: u16,
}

impl Entry {
    /// The icount; a grouped entry's accesses are each some instructions
    /// past it ([`SiteAccess::past`]).
    #[inline]
    pub fn icount(&self) -> u64 {
        let past = if self.flags & ENTRY_SITE != 0 { 0 } else { self.past };
        self.icount.wrapping_add(u64::from(past))
    }

    /// A grouped entry's site number.
    #[inline]
    pub fn site(&self) -> Option<u32> {
        (self.flags & ENTRY_SITE != 0).then_some(u32::from(self.size) | u32::from(self.past) << 8)
    }

    /// A grouped entry's values, one per access of its site.
    #[inline]
    pub fn site_values(&self) -> [u32; sites::MAX_ACCESSES] {
        [self.pc, self.addr, self.value]
    }

    #[inline]
    pub fn pc(&self) -> u32 {
        self.pc
    }

    /// A device access's value (what [`EventBatch::view`] gives).
    #[inline]
    pub fn value(&self) -> u32 {
        self.value
    }

    /// The device access the entry holds, when it holds one.
    #[inline]
    pub fn access(&self) -> Option<IoAccess> {
        (self.flags & (ENTRY_INTERRUPT | ENTRY_OTHER | ENTRY_SITE) == 0).then_some(IoAccess {
            addr: self.addr,
            mmio: self.flags & ENTRY_MMIO != 0,
            size: self.size,
            value: self.value,
            write: self.flags & ENTRY_WRITE != 0,
        })
    }

    /// Whether the entry is a device access of at most `size` bytes:
    /// [`Entry::access`] without building it.
    #[inline]
    pub fn is_access_up_to(&self, size: u8) -> bool {
        self.flags & (ENTRY_INTERRUPT | ENTRY_OTHER | ENTRY_SITE) == 0 && self.size <= size
    }

    /// Whether both are the same kind of event from the same pc, and for
    /// device accesses to the same address with the same size and
    /// direction (the values aside).
    #[inline]
    pub fn same_shape(&self, other: &Entry) -> bool {
        self.pc == other.pc && self.addr == other.addr && self.size == other.size && self.flags == other.flags
    }
}

const ENTRY_MMIO: u8 = 1;
/// The flag of a write in an entry.
pub const ENTRY_WRITE: u8 = 2;
const ENTRY_INTERRUPT: u8 = 4;
const ENTRY_OTHER: u8 = 8;
/// The flag of a grouped entry.
const ENTRY_SITE: u8 = 16;

/// The 32 bits a grouped entry of site `number` holds at
/// [`io_stage_layout::SIZE_FLAGS_AND_PAST`]: one store of a constant.
pub const fn site_word(number: u32) -> u32 {
    (number & 0xFF) | (ENTRY_SITE as u32) << 8 | (number >> 8) << 16
}

/// Events in the order they happened, as the slot hands them to its sink.
#[derive(Debug, Default)]
pub struct EventBatch {
    entries: Vec<Entry>,
    others: Vec<Event>,
    /// The sites its grouped entries name (set when the slot hands it on).
    sites: Option<SiteTable>,
}

impl EventBatch {
    /// An empty batch with the room a slot fills: [`SLOT_BATCH`] events,
    /// and one more for the event after the room lent to translations is
    /// full. A sink that hands back fresh batches makes them so, and no
    /// batch grows.
    pub fn for_slot() -> EventBatch {
        EventBatch::with_capacity(BATCH_CAPACITY)
    }

    pub fn with_capacity(events: usize) -> EventBatch {
        EventBatch {
            entries: Vec::with_capacity(events),
            others: Vec::new(),
            sites: None,
        }
    }

    /// Its entries: events, but for a grouped entry's accesses
    /// ([`EventBatch::events`] counts those).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Its events, grouped entries' accesses each counted (a pass over
    /// the entries: the writer's encoder counts as it goes instead).
    pub fn events(&self) -> usize {
        self.entries
            .iter()
            .map(|e| e.site().map_or(1, |n| self.site(n).accesses().len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.others.clear();
        self.sites = None;
    }

    /// Appends a grouped entry of site `number` (what a translation stores,
    /// [`SinkSlot::io_stage`]), its accesses' values in `values`; the
    /// batch takes the sites numbered so far.
    pub fn push_site(&mut self, icount: u64, number: u32, values: [u32; sites::MAX_ACCESSES]) {
        let word = site_word(number);
        self.entries.push(Entry {
            icount,
            pc: values[0],
            addr: values[1],
            value: values[2],
            size: word as u8,
            flags: ENTRY_SITE,
            past: (word >> 16) as u16,
        });
        self.sites = Some(sites::table());
    }

    /// The site of a grouped entry of this batch.
    #[inline]
    pub fn site(&self, number: u32) -> &sites::Site {
        match self.sites.as_ref().and_then(|t| t.get(number)) {
            Some(site) => site,
            None => unreachable!("a grouped entry's site is numbered before its batch is handed on"),
        }
    }

    #[inline]
    pub fn push_io(&mut self, icount: u64, pc: u32, a: IoAccess) {
        self.entries.push(Entry {
            icount,
            pc,
            addr: a.addr,
            value: a.value,
            size: a.size,
            flags: if a.mmio { ENTRY_MMIO } else { 0 } | if a.write { ENTRY_WRITE } else { 0 },
            past: 0,
        });
    }

    pub fn push(&mut self, icount: u64, pc: u32, event: Event) {
        if let Some(a) = event.io_access() {
            return self.push_io(icount, pc, a);
        }
        match event {
            Event::Interrupt { vector } => self.entries.push(Entry {
                icount,
                pc,
                addr: 0,
                value: u32::from(vector),
                size: 0,
                flags: ENTRY_INTERRUPT,
                past: 0,
            }),
            other => {
                self.entries.push(Entry {
                    icount,
                    pc,
                    addr: self.others.len() as u32,
                    value: 0,
                    size: 0,
                    flags: ENTRY_OTHER,
                    past: 0,
                });
                self.others.push(other);
            }
        }
    }

    /// Each event's icount, pc and event, in order (a grouped entry's
    /// accesses one by one).
    pub fn iter(&self) -> impl Iterator<Item = (u64, u32, EventView<'_>)> + '_ {
        self.entries.iter().flat_map(move |e| {
            let mut out = [None; sites::MAX_ACCESSES];
            match e.site() {
                None => out[0] = Some((e.icount(), e.pc, self.view(e))),
                Some(number) => {
                    let values = e.site_values();
                    for (i, a) in self.site(number).accesses().iter().enumerate() {
                        out[i] = Some(site_event(e.icount, a, values[i]));
                    }
                }
            }
            out.into_iter().flatten()
        })
    }

    /// The entries themselves, for a reader that takes the frequent events
    /// from them field by field (the trace writer's encoder).
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The event `e`, an entry of this batch but not a grouped one, holds.
    #[inline]
    pub fn view(&self, e: &Entry) -> EventView<'_> {
        debug_assert!(e.flags & ENTRY_SITE == 0, "a grouped entry holds several events");
        if e.flags & ENTRY_OTHER != 0 {
            match self.others.get(e.addr as usize) {
                Some(event) => EventView::Other(event),
                None => unreachable!("an Other entry indexes the event pushed with it"),
            }
        } else {
            match e.access() {
                Some(a) => EventView::Io(a),
                None => EventView::Interrupt(e.value as u8),
            }
        }
    }

    /// The events as records.
    pub fn records(&self) -> impl Iterator<Item = EventRecord> + '_ {
        self.iter().map(|(icount, pc, view)| EventRecord {
            icount,
            pc,
            event: view.to_event(),
        })
    }
}

/// The event of access `a` of a grouped entry with `icount`.
fn site_event(icount: u64, a: &SiteAccess, value: u32) -> (u64, u32, EventView<'static>) {
    (
        icount.wrapping_add(u64::from(a.past)),
        a.pc,
        EventView::Io(a.access(value)),
    )
}

/// Where events go.
pub trait EventSink: Send {
    /// Takes the events of `batch`, in order, and returns an empty batch
    /// (the same one emptied, or a spare) for the slot to fill next.
    fn events(&mut self, batch: EventBatch) -> EventBatch;
    /// Passes on anything buffered (the recorder calls it at checkpoints).
    fn flush(&mut self) {}
}

/// A sink that keeps events in memory (tests, the run summary).
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    pub records: Vec<EventRecord>,
}

impl EventSink for EventLog {
    fn events(&mut self, mut batch: EventBatch) -> EventBatch {
        self.records.extend(batch.records());
        batch.clear();
        batch
    }
}

impl EventSink for std::sync::Arc<std::sync::Mutex<EventLog>> {
    fn events(&mut self, mut batch: EventBatch) -> EventBatch {
        if let Ok(mut log) = self.lock() {
            log.records.extend(batch.records());
        }
        batch.clear();
        batch
    }
}

/// Events the slot holds before it hands them to its sink: 768 KiB of
/// entries. Each batch is a send to the writer thread and a wake-up; a
/// trap loop recorded 12% faster with batches of 32,768 than of 8,192
/// (which made +13-18% over running of +30%), and slower with 1,024.
pub const SLOT_BATCH: usize = 32768;

/// A batch's room ([`EventBatch::for_slot`]).
const BATCH_CAPACITY: usize = SLOT_BATCH + 1;

/// Room at the end of the slot's batch where a translation logs device
/// accesses itself (docs/raw-engine.md): it stores an [`Entry`] (a grouped
/// one for a run of accesses) at `next` and moves `next` on while
/// `next < end`, and calls the block engine when there is no room. The
/// slot counts what was stored into its batch before it does anything
/// else with it, so the order is kept, and lends the room again after. `repr(C)`: the generated code works at the offsets
/// [`io_stage_layout`] gives.
#[repr(C)]
pub struct IoStage {
    pub next: *mut Entry,
    pub end: *mut Entry,
}

/// The slot's [`IoStage`], which compiled code writes through its address
/// while the slot reads and writes it too: owned through a raw pointer,
/// never a `Box` or a `&mut`, which would claim to be the only way to it.
struct StageCell(std::ptr::NonNull<IoStage>);

impl StageCell {
    fn new() -> StageCell {
        StageCell(std::ptr::NonNull::from(Box::leak(Box::new(IoStage {
            next: std::ptr::null_mut(),
            end: std::ptr::null_mut(),
        }))))
    }

    fn get(&self) -> *mut IoStage {
        self.0.as_ptr()
    }

    /// The room lent: `(next, end)`.
    fn room(&self) -> (*mut Entry, *mut Entry) {
        // SAFETY: the stage lives until `drop`; no reference to it exists,
        // and translations only touch it while the slot's owner runs them.
        unsafe { ((*self.get()).next, (*self.get()).end) }
    }

    fn set_room(&self, next: *mut Entry, end: *mut Entry) {
        // SAFETY: as in `room`.
        unsafe {
            (*self.get()).next = next;
            (*self.get()).end = end;
        }
    }
}

impl Drop for StageCell {
    fn drop(&mut self) {
        // SAFETY: made by `Box::leak` in `new`, and dropped once, here.
        unsafe { drop(Box::from_raw(self.get())) }
    }
}

// SAFETY: the stage and the batch its pointers lead into belong to the slot
// and move between threads with it; only code running the slot's machine,
// on its thread, follows them.
unsafe impl Send for StageCell {}

/// Where compiled code finds an [`IoStage`]'s fields and an entry's.
pub mod io_stage_layout {
    use super::{Entry, IoStage};
    use std::mem::{offset_of, size_of};
    pub const NEXT: usize = offset_of!(IoStage, next);
    pub const END: usize = offset_of!(IoStage, end);
    pub const ENTRY_SIZE: usize = size_of::<Entry>();
    pub const ICOUNT: usize = offset_of!(Entry, icount);
    pub const PC: usize = offset_of!(Entry, pc);
    pub const ADDR: usize = offset_of!(Entry, addr);
    pub const VALUE: usize = offset_of!(Entry, value);
    /// The size byte, with the flags byte and the 16-bit count past
    /// `ICOUNT` after it: one 32-bit store.
    pub const SIZE_FLAGS_AND_PAST: usize = offset_of!(Entry, size);
    const _: () = assert!(offset_of!(Entry, flags) == SIZE_FLAGS_AND_PAST + 1);
    const _: () = assert!(offset_of!(Entry, past) == SIZE_FLAGS_AND_PAST + 2);
    /// The pc with the address after it: one 64-bit store. A grouped
    /// entry's values at PC, PC + 4 and PC + 8.
    const _: () = assert!(ADDR == PC + 4 && VALUE == ADDR + 4);
    const _: () = assert!(ENTRY_SIZE == 24);
}

/// The machine's slot for a sink. Events wait in a batch until it is full,
/// the slot is flushed or the sink detached. Cloning a machine (a
/// checkpoint) does not clone where its events go.
#[derive(Default)]
pub struct SinkSlot {
    sink: Option<Box<dyn EventSink>>,
    batch: EventBatch,
    /// Where translations log device accesses while a sink listens.
    stage: Option<StageCell>,
}

impl Clone for SinkSlot {
    fn clone(&self) -> Self {
        SinkSlot::default()
    }
}

impl fmt::Debug for SinkSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SinkSlot({})", if self.sink.is_some() { "attached" } else { "none" })
    }
}

impl SinkSlot {
    /// Sends events to `sink` from now on (those waiting for an earlier
    /// sink go to it first).
    pub fn attach(&mut self, sink: Box<dyn EventSink>) {
        self.detach();
        self.batch = EventBatch::for_slot();
        self.stage = Some(StageCell::new());
        self.sink = Some(sink);
        self.lend_room();
    }

    /// Hands the waiting events to the sink and lets it go.
    pub fn detach(&mut self) -> Option<Box<dyn EventSink>> {
        self.pass_on();
        self.stage = None;
        self.sink.take()
    }

    /// The room a translation logs device accesses in; null when no sink
    /// listens (nothing is logged). The stage stays where it is until the
    /// sink is detached; the room it describes is the slot's to move.
    pub fn io_stage(&mut self) -> *mut IoStage {
        self.stage.as_ref().map_or(std::ptr::null_mut(), StageCell::get)
    }

    /// Counts the entries a translation stored in the lent room into the
    /// batch.
    #[inline]
    fn take_staged(&mut self) {
        if let Some(stage) = &self.stage {
            let entries = &mut self.batch.entries;
            let start = entries.as_mut_ptr().wrapping_add(entries.len());
            let (next, end) = stage.room();
            if !next.is_null() && next != start {
                let stored = (next.addr().wrapping_sub(start.addr())) / std::mem::size_of::<Entry>();
                assert!(
                    next > start && next <= end && stored <= entries.capacity() - entries.len(),
                    "a translation logged outside the room it was lent"
                );
                // SAFETY: the room lent lies in the batch's spare capacity
                // (`lend_room`), and the translation stored a whole entry
                // at each place up to `next`, every byte of it.
                unsafe { entries.set_len(entries.len() + stored) };
            }
            // Nothing lent until `lend_room`.
            stage.set_room(std::ptr::null_mut(), std::ptr::null_mut());
        }
    }

    /// Lends the batch's spare capacity, up to its [`SLOT_BATCH`] events,
    /// to translations (after anything that may have moved or filled it).
    #[inline]
    fn lend_room(&mut self) {
        if let Some(stage) = &self.stage {
            let entries = &mut self.batch.entries;
            if entries.capacity() < BATCH_CAPACITY {
                entries.reserve_exact(BATCH_CAPACITY - entries.len());
            }
            let room = SLOT_BATCH
                .saturating_sub(entries.len())
                .min(entries.capacity() - entries.len());
            let next = entries.as_mut_ptr().wrapping_add(entries.len());
            stage.set_room(next, next.wrapping_add(room));
        }
    }

    pub fn is_attached(&self) -> bool {
        self.sink.is_some()
    }

    /// Hands the waiting events to the sink and asks it to pass on what it
    /// buffers.
    pub fn flush(&mut self) {
        self.pass_on();
        if let Some(sink) = &mut self.sink {
            sink.flush();
        }
    }

    /// Hands the waiting events to the sink.
    pub fn pass_on(&mut self) {
        self.take_staged();
        if let Some(sink) = &mut self.sink {
            if !self.batch.is_empty() {
                // The sites its grouped entries name.
                self.batch.sites = Some(sites::table());
                let full = std::mem::take(&mut self.batch);
                self.batch = sink.events(full);
            }
        }
        self.lend_room();
    }

    #[inline]
    pub fn emit(&mut self, icount: u64, pc: u32, event: impl FnOnce() -> Event) {
        if self.sink.is_some() {
            self.take_staged();
            self.batch.push(icount, pc, event());
            self.pass_on_when_full();
            self.lend_room();
        }
    }

    /// Logs a device access (`emit` of an `Event::Io`, without building one).
    #[inline]
    pub fn io(&mut self, icount: u64, pc: u32, access: IoAccess) {
        if self.sink.is_some() {
            self.take_staged();
            self.batch.push_io(icount, pc, access);
            self.pass_on_when_full();
            self.lend_room();
        }
    }

    #[inline]
    fn pass_on_when_full(&mut self) {
        if self.batch.len() >= SLOT_BATCH {
            self.pass_on();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn io(n: u32) -> Event {
        Event::Io {
            addr: 0x20 + n,
            mmio: n.is_multiple_of(3),
            size: [1, 2, 4][n as usize % 3],
            value: n.wrapping_mul(0x9E37_79B9),
            write: n.is_multiple_of(2),
        }
    }

    /// Every kind of event, in a mixed order.
    fn sample() -> Vec<EventRecord> {
        let mut out = Vec::new();
        for n in 0..40u32 {
            let event = match n % 5 {
                0 => Event::Interrupt { vector: n as u8 },
                1 => Event::PatchInstalled {
                    site: n,
                    phys: n << 12,
                    mnemonic: format!("m{n}"),
                    cause: PatchCause::Hot(n),
                },
                2 => Event::Trap {
                    reason: ExitReason::Fault(13),
                },
                _ => io(n),
            };
            out.push(EventRecord {
                icount: u64::from(n) * 1_000_000_007,
                pc: 0xC000_0000 ^ n,
                event,
            });
        }
        out
    }

    #[test]
    fn a_batch_gives_back_every_event_in_order() {
        let mut batch = EventBatch::default();
        for r in sample() {
            batch.push(r.icount, r.pc, r.event);
        }
        assert_eq!(batch.records().collect::<Vec<_>>(), sample());
        batch.clear();
        assert!(batch.is_empty() && batch.records().next().is_none());
    }

    #[test]
    fn the_slot_passes_events_on_when_full_and_when_detached() {
        let log = Arc::new(Mutex::new(EventLog::default()));
        let mut slot = SinkSlot::default();
        slot.io(0, 0, io(0).io_access().expect("an access"));
        slot.attach(Box::new(log.clone()));
        let count = || log.lock().expect("log").records.len();
        for n in 0..SLOT_BATCH as u32 - 1 {
            slot.emit(u64::from(n), n, || io(n));
        }
        assert_eq!(count(), 0, "held until the batch is full");
        slot.emit(7, 7, || Event::Interrupt { vector: 7 });
        assert_eq!(count(), SLOT_BATCH, "a full batch goes at once");
        for r in sample() {
            slot.emit(r.icount, r.pc, || r.event.clone());
        }
        assert_eq!(count(), SLOT_BATCH);
        assert!(slot.detach().is_some());
        let records = log.lock().expect("log").records.clone();
        assert_eq!(records[SLOT_BATCH..], sample()[..], "the rest goes on detaching");
        assert_eq!(records[SLOT_BATCH - 1].event, Event::Interrupt { vector: 7 });
        assert!(records[..SLOT_BATCH - 1]
            .iter()
            .enumerate()
            .all(|(n, r)| r.event == io(n as u32)));
        slot.io(1, 1, io(1).io_access().expect("an access"));
        assert!(
            !slot.is_attached() && slot.batch.is_empty(),
            "nothing is kept without a sink"
        );
    }

    /// Stores an access in the room the slot lends, as a translation does
    /// (through the stage's address, at `io_stage_layout`'s offsets);
    /// false when there is no room.
    fn store_as_translation(slot: &mut SinkSlot, icount: u64, pc: u32, a: IoAccess) -> bool {
        let stage = slot.io_stage();
        assert!(!stage.is_null(), "a sink listens");
        // SAFETY: the stage is the slot's, alive while the sink is attached;
        // an entry is written only inside the room lent, as compiled code
        // does.
        unsafe {
            let next = (*stage).next;
            if next >= (*stage).end {
                return false;
            }
            let at = next.cast::<u8>();
            // Some of the icount as the count past it, as a translation
            // stores it.
            let past = (icount % 7) as u16;
            at.add(io_stage_layout::ICOUNT)
                .cast::<u64>()
                .write_unaligned(icount - u64::from(past));
            at.add(io_stage_layout::PC).cast::<u32>().write_unaligned(pc);
            at.add(io_stage_layout::ADDR).cast::<u32>().write_unaligned(a.addr);
            at.add(io_stage_layout::VALUE).cast::<u32>().write_unaligned(a.value);
            let flags = if a.write { ENTRY_WRITE } else { 0 } | if a.mmio { ENTRY_MMIO } else { 0 };
            let size_flags_and_past = u32::from(a.size) | u32::from(flags) << 8 | u32::from(past) << 16;
            at.add(io_stage_layout::SIZE_FLAGS_AND_PAST)
                .cast::<u32>()
                .write_unaligned(size_flags_and_past);
            (*stage).next = next.add(1);
        }
        true
    }

    /// Stores a grouped entry of site `number` in the lent room, as a
    /// translation does; false when there is no room.
    fn store_grouped(slot: &mut SinkSlot, icount: u64, number: u32, values: [u32; 3]) -> bool {
        let stage = slot.io_stage();
        // SAFETY: as in `store_as_translation`.
        unsafe {
            let next = (*stage).next;
            if next >= (*stage).end {
                return false;
            }
            let at = next.cast::<u8>();
            at.add(io_stage_layout::ICOUNT).cast::<u64>().write_unaligned(icount);
            at.add(io_stage_layout::PC).cast::<u32>().write_unaligned(values[0]);
            at.add(io_stage_layout::ADDR).cast::<u32>().write_unaligned(values[1]);
            at.add(io_stage_layout::VALUE).cast::<u32>().write_unaligned(values[2]);
            at.add(io_stage_layout::SIZE_FLAGS_AND_PAST)
                .cast::<u32>()
                .write_unaligned(site_word(number));
            (*stage).next = next.add(1);
        }
        true
    }

    // Grouped entries stored in the lent room give their accesses, one
    // event each, at their place among the events the slot is given: in
    // the sink's records, in the count of events, and through full
    // batches and a flush.
    #[test]
    fn grouped_entries_give_their_accesses_in_order() {
        let access = |pc: u32, addr: u32, write: bool, past: u16| SiteAccess {
            pc,
            addr,
            size: 1,
            write,
            past,
        };
        let groups: Vec<Vec<SiteAccess>> = vec![
            vec![access(0x7000_0100, 0x80, true, 6)],
            vec![access(0x7000_0200, 0x80, true, 6), access(0x7000_0204, 0x21, false, 10)],
            vec![
                access(0x7000_0300, 0x70, true, 0),
                access(0x7000_0302, 0x71, false, 1),
                access(0x7000_0304, 0x71, true, 2),
            ],
        ];
        let numbers: Vec<u32> = groups.iter().map(|g| sites::number(g).expect("numbered")).collect();
        let log = Arc::new(Mutex::new(EventLog::default()));
        let mut slot = SinkSlot::default();
        slot.attach(Box::new(log.clone()));
        let mut want = Vec::new();
        for n in 0..2 * SLOT_BATCH as u32 + 300 {
            let icount = u64::from(n) * 40;
            if n % 5 == 4 {
                slot.emit(icount, n, || Event::Interrupt { vector: n as u8 });
                want.push(EventRecord {
                    icount,
                    pc: n,
                    event: Event::Interrupt { vector: n as u8 },
                });
                continue;
            }
            let g = n as usize % groups.len();
            let values = [n, n ^ 0xFF, n.wrapping_mul(7)];
            if store_grouped(&mut slot, icount, numbers[g], values) {
                for (i, a) in groups[g].iter().enumerate() {
                    want.push(EventRecord {
                        icount: icount + u64::from(a.past),
                        pc: a.pc,
                        event: Event::Io {
                            addr: a.addr,
                            mmio: false,
                            size: 1,
                            value: values[i],
                            write: a.write,
                        },
                    });
                }
            } else {
                // No room: the step logs the first access itself.
                let a = groups[g][0];
                let access = IoAccess {
                    addr: a.addr,
                    mmio: false,
                    size: 1,
                    value: values[0],
                    write: a.write,
                };
                slot.io(icount + u64::from(a.past), a.pc, access);
                want.push(EventRecord {
                    icount: icount + u64::from(a.past),
                    pc: a.pc,
                    event: Event::from(access),
                });
            }
            if n == SLOT_BATCH as u32 / 2 {
                slot.flush();
            }
        }
        slot.detach();
        assert_eq!(log.lock().expect("log").records[..], want[..]);
        // A batch counts a grouped entry's accesses as events.
        let mut batch = EventBatch::default();
        batch.push_site(100, numbers[2], [1, 2, 3]);
        batch.push(200, 5, Event::Interrupt { vector: 9 });
        assert_eq!((batch.len(), batch.events()), (2, 4));
        assert_eq!(batch.records().count(), 4);
    }

    // Accesses a translation stores in the lent room and events the slot is
    // given arrive in the order they happened: mixed one by one, across
    // full batches (where the room runs out and the step logs instead),
    // through a flush and on detaching.
    #[test]
    fn accesses_stored_in_the_lent_room_keep_their_place() {
        let log = Arc::new(Mutex::new(EventLog::default()));
        let mut slot = SinkSlot::default();
        assert!(slot.io_stage().is_null(), "no room without a sink");
        slot.attach(Box::new(log.clone()));
        let mut want = Vec::new();
        let mut stored = 0;
        for n in 0..3 * SLOT_BATCH as u32 + 77 {
            let e = io(n);
            let a = e.io_access().expect("an access");
            let (icount, pc) = (u64::from(n) * 3, n ^ 0x5A5A);
            // Mostly stored by "translations", now and then logged by the
            // slot itself, and always by it when the room is full.
            if n % 7 == 3 || n % 1000 == 999 {
                if n % 2 == 0 {
                    slot.emit(icount, pc, || Event::Interrupt { vector: n as u8 });
                    want.push(EventRecord {
                        icount,
                        pc,
                        event: Event::Interrupt { vector: n as u8 },
                    });
                    continue;
                }
                slot.io(icount, pc, a);
            } else if store_as_translation(&mut slot, icount, pc, a) {
                stored += 1;
            } else {
                slot.io(icount, pc, a);
            }
            want.push(EventRecord { icount, pc, event: e });
            if n == SLOT_BATCH as u32 + 5 {
                slot.flush();
                assert_eq!(log.lock().expect("log").records[..], want[..], "flushed");
            }
        }
        slot.detach();
        assert!(stored > 2 * SLOT_BATCH, "stored: {stored}");
        assert_eq!(log.lock().expect("log").records[..], want[..]);
    }

    /// A sink like the recorder's: keeps each batch it is given (dropped
    /// here, so a room left in it would be written after it is freed) and
    /// hands back a fresh one of `fresh` events' capacity.
    struct Swapping {
        got: Arc<Mutex<Vec<EventRecord>>>,
        capacities: Arc<Mutex<Vec<usize>>>,
        fresh: usize,
    }

    impl EventSink for Swapping {
        fn events(&mut self, batch: EventBatch) -> EventBatch {
            self.capacities
                .lock()
                .expect("capacities")
                .push(batch.entries.capacity());
            self.got.lock().expect("got").extend(batch.records());
            EventBatch::with_capacity(self.fresh)
        }
    }

    // A sink that hands back other batches than it was given (the
    // recorder's writer thread keeps them) moves the room with them: the
    // order holds, and no batch grows past its room, whatever the fresh
    // batch's capacity.
    #[test]
    fn the_room_moves_to_each_batch_a_sink_hands_back() {
        for fresh in [0, 1, SLOT_BATCH, BATCH_CAPACITY] {
            let got = Arc::new(Mutex::new(Vec::new()));
            let capacities = Arc::new(Mutex::new(Vec::new()));
            let mut slot = SinkSlot::default();
            slot.attach(Box::new(Swapping {
                got: got.clone(),
                capacities: capacities.clone(),
                fresh,
            }));
            let mut want = Vec::new();
            for n in 0..4 * SLOT_BATCH as u32 + 3 {
                let (icount, pc) = (u64::from(n), n);
                let a = io(n).io_access().expect("an access");
                if n % 5000 == 17 || !store_as_translation(&mut slot, icount, pc, a) {
                    slot.io(icount, pc, a);
                }
                want.push(EventRecord {
                    icount,
                    pc,
                    event: io(n),
                });
            }
            slot.detach();
            assert_eq!(got.lock().expect("got")[..], want[..], "fresh {fresh}");
            let capacities = capacities.lock().expect("capacities").clone();
            assert!(
                capacities.iter().all(|&c| c == BATCH_CAPACITY),
                "fresh batches of {fresh}: {capacities:?}"
            );
        }
    }
}
