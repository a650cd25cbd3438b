//! Typed events: every decision the raw engine's monitor, code scanner and
//! patch manager makes, and every exception and interrupt delivered to the
//! guest, with the icount and guest PC it happened at. They go to one sink
//! (the trace writer records them); with no sink attached, emitting is a
//! branch on `None`.

use std::fmt;

use crate::cpu::Fault;

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

/// Where events go.
pub trait EventSink: Send {
    fn event(&mut self, record: EventRecord);
    /// Passes on anything buffered (the recorder calls it at checkpoints).
    fn flush(&mut self) {}
}

/// A sink that keeps events in memory (tests, the run summary).
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    pub records: Vec<EventRecord>,
}

impl EventSink for EventLog {
    fn event(&mut self, record: EventRecord) {
        self.records.push(record);
    }
}

impl EventSink for std::sync::Arc<std::sync::Mutex<EventLog>> {
    fn event(&mut self, record: EventRecord) {
        if let Ok(mut log) = self.lock() {
            log.records.push(record);
        }
    }
}

/// The machine's slot for a sink. Cloning a machine (a checkpoint) does not
/// clone where its events go.
#[derive(Default)]
pub struct SinkSlot(pub Option<Box<dyn EventSink>>);

impl Clone for SinkSlot {
    fn clone(&self) -> Self {
        SinkSlot(None)
    }
}

impl fmt::Debug for SinkSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SinkSlot({})", if self.0.is_some() { "attached" } else { "none" })
    }
}

impl SinkSlot {
    pub fn flush(&mut self) {
        if let Some(sink) = &mut self.0 {
            sink.flush();
        }
    }

    #[inline]
    pub fn emit(&mut self, icount: u64, pc: u32, event: impl FnOnce() -> Event) {
        if let Some(sink) = &mut self.0 {
            sink.event(EventRecord {
                icount,
                pc,
                event: event(),
            });
        }
    }
}
