//! The engines: everything that executes guest code, behind one contract
//! with the machine loop (`Executor`), so a new engine (the compiler tier)
//! comes in as one more implementation and one more entry in `Engine::ALL`,
//! which every engine-agreement test runs.
//!
//! Layers, one way: `reference` steps the CPU; `blocks` runs pre-decoded
//! blocks and asks whoever drives it in a ring view through
//! `blocks::RawHooks`; `raw` (scanner, patch manager, monitor) decides and
//! drives the blocks, never the other way round.

pub mod blocks;
pub mod jit;
pub mod raw;

use crate::cpu::{Cpu, StepOutcome};
use crate::events::SinkSlot;
use crate::platform::Platform;
use blocks::{BlockCache, RawHooks};

/// The engines that execute guest code. Guest-visible results never depend
/// on the choice (the differential tests hold them to it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Engine {
    /// The fast path: cached blocks, guest ring 0 compressed into ring 1,
    /// the monitor, the code scanner and the patch manager.
    #[default]
    Raw,
    /// The reference: decode and execute each instruction.
    Emulate,
    /// Cached blocks at the guest's true privilege: the raw engine without
    /// ring compression, for telling the two apart when diagnosing.
    Blocks,
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Engine::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| format!("unknown engine '{s}' (raw, emulate or blocks)"))
    }
}

impl Engine {
    /// Every engine, the reference first. The agreement tests hold every
    /// other one to the reference on the same guests.
    pub const ALL: [Engine; 3] = [Engine::Emulate, Engine::Blocks, Engine::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Raw => "raw",
            Engine::Emulate => "emulate",
            Engine::Blocks => "blocks",
        }
    }

    /// One step of this engine (see [`Executor`]).
    #[inline(always)]
    pub fn step(self, raw: &mut raw::RawEngine, parts: Parts<'_>, stop_icount: u64) -> StepOutcome {
        match self {
            Engine::Emulate => Reference.step(parts, stop_icount),
            Engine::Blocks => Blocks(raw).step(parts, stop_icount),
            Engine::Raw => raw.step(parts, stop_icount),
        }
    }
}

/// What an engine works on: the machine's parts, lent for one step.
pub struct Parts<'a> {
    pub cpu: &'a mut Cpu,
    pub platform: &'a mut Platform,
    /// The block cache, shared by the engines that use blocks.
    pub blocks: &'a mut BlockCache,
    pub events: &'a mut SinkSlot,
}

/// The contract every engine keeps with the machine loop. A step runs
/// guest code from CS:EIP: at least one instruction (or one attempt that
/// faults, or nothing when the CPU is halted), and goes on only while
/// [`outer_loop_would_act`] says the loop has nothing to do — so timers,
/// interrupts, device attention and the instruction limit (`stop_icount`,
/// the nearer of the limit and the next deadline) are taken at the same
/// instruction boundary whichever engine runs. It returns how the last
/// instruction ended: retired, halted, an exception delivered, a triple
/// fault.
pub trait Executor {
    fn step(&mut self, parts: Parts<'_>, stop_icount: u64) -> StepOutcome;
}

/// The reference: decode and execute one instruction.
pub struct Reference;

impl Executor for Reference {
    #[inline(always)]
    fn step(&mut self, parts: Parts<'_>, _stop_icount: u64) -> StepOutcome {
        parts.cpu.step(parts.platform)
    }
}

/// Cached blocks at the guest's true privilege. The raw engine is told of
/// writes to code, as when it runs: what it learned stays true.
pub struct Blocks<'a, H: RawHooks>(pub &'a mut H);

impl<H: RawHooks> Executor for Blocks<'_, H> {
    #[inline]
    fn step(&mut self, parts: Parts<'_>, stop_icount: u64) -> StepOutcome {
        parts
            .blocks
            .run(parts.cpu, parts.platform, stop_icount, &mut *self.0, parts.events)
    }
}

/// Whether the machine loop would do anything but run the engine again
/// after an instruction retired: the instruction limit or a deadline
/// (`stop_icount`), a halt, device attention, a watch hit, or an interrupt
/// the CPU can take now (the guest's own IF counts, whatever the ring
/// view). Engines that run many instructions per step stop exactly here.
#[inline(always)]
pub fn outer_loop_would_act(cpu: &Cpu, platform: &Platform, stop_icount: u64) -> bool {
    cpu.icount >= stop_icount
        || cpu.state.halted
        || platform.attention != Default::default()
        || platform.watch_hit.is_some()
        || (cpu.virtual_if() && !cpu.state.interrupt_shadow && platform.intr())
        || (platform.irq.nmi() && !cpu.state.nmi_blocked && !cpu.state.interrupt_shadow)
}
