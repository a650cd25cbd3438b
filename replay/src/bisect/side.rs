//! The two sides of a bisect: how each runs guest code, its whole machine
//! (a clone is a snapshot), and when two sides agree.

use vm::engine::raw::RawConfig;
use vm::machine::{CaptureConsole, Engine, Machine};

use super::{Control, Stage};
use crate::reader::Trace;
use crate::replay::{FinalStop, ReplayInput, ReplayOptions, Replayer};

/// How one side runs guest code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SideConfig {
    pub engine: Engine,
    pub raw: RawConfig,
}

impl SideConfig {
    pub fn reference() -> Self {
        SideConfig {
            engine: Engine::Emulate,
            raw: RawConfig::default(),
        }
    }

    /// The configuration a trace was recorded with.
    pub fn recorded(trace: &Trace) -> Self {
        SideConfig {
            engine: trace.header.config.engine,
            raw: trace.header.config.raw,
        }
    }

    /// Whether the culprit search applies: the raw engine with patches.
    pub(super) fn patches(&self) -> bool {
        self.engine == Engine::Raw && self.raw.patching
    }

    pub fn describe(&self) -> String {
        match self.engine {
            Engine::Emulate => "emulate (reference)".into(),
            Engine::Blocks => "blocks".into(),
            Engine::Raw => {
                let mut parts = vec![if self.raw.patching { "patches on" } else { "no patches" }.to_string()];
                if !self.raw.scanner {
                    parts.push("no scanner".into());
                }
                let inject = self.raw.inject;
                let bugs: Vec<&str> = [
                    (inject.pushf_leak, "pushf-leak"),
                    (inject.sti_shadow, "sti-shadow"),
                    (inject.scan_miss, "scan-miss"),
                    (inject.stale_patch, "stale-patch"),
                ]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
                if !bugs.is_empty() {
                    parts.push(format!("injected {}", bugs.join(",")));
                }
                format!("raw ({})", parts.join(", "))
            }
        }
    }

    pub(super) fn options(&self) -> ReplayOptions {
        ReplayOptions {
            engine: Some(self.engine),
            raw: Some(self.raw),
            jit: None,
        }
    }
}

/// One side's whole machine with its input and output: cloning it is a
/// snapshot the run can go on from exactly as if it had not stopped.
#[derive(Clone)]
pub struct Side {
    pub machine: Machine,
    pub input: ReplayInput,
    pub console: CaptureConsole,
    /// The recording's stop, replayed where the side reaches it, as the
    /// replayer does.
    final_stop: FinalStop,
}

impl Side {
    pub(super) fn run_to(&mut self, target: u64) {
        self.final_stop
            .run(&mut self.machine, &mut self.input, &mut self.console, target, true);
    }

    pub(super) fn agrees_with(&self, other: &Side) -> bool {
        agree(
            (&self.machine, &self.input, &self.console),
            (&other.machine, &other.input, &other.console),
            None,
        )
    }

    /// Makes this side a copy of `src`, all of its RAM included (copied
    /// into this side's own, nothing allocated).
    pub(super) fn reset_to(&mut self, src: &mut Side) {
        let all: Vec<usize> = (0..src.machine.platform.mem.ram_size() / vm::mem::PAGE_SIZE).collect();
        self.copy_from(src, &all);
        self.machine.platform.mem.take_dirty();
    }

    /// Makes this side a copy of `src`, which differs from it in RAM only on
    /// `pages`.
    pub(super) fn copy_from(&mut self, src: &mut Side, pages: &[usize]) {
        self.machine.copy_from(&mut src.machine, pages);
        copy_io(&mut self.input, &mut self.console, &src.input, &src.console);
        self.final_stop.clone_from(&src.final_stop);
    }
}

impl Side {
    /// A new side with the replayer's machine configured as `config`.
    pub(super) fn from_replayer_with(r: &Replayer, config: SideConfig) -> Side {
        let mut side = Side {
            machine: r.machine.clone(),
            input: r.input.clone(),
            console: r.console.clone(),
            final_stop: r.final_stop.clone(),
        };
        side.machine.engine = config.engine;
        side.machine.raw.config = config.raw;
        side
    }

    /// Makes this side the replayer's machine (all of RAM copied into this
    /// side's own) at checkpoint `k`, which it restored, configured as
    /// `config`: with the raw engine's learning the recorder had there when
    /// `config` is the recorded one (it decides as the recorder's did),
    /// with none otherwise (the replayer's may be another configuration's).
    pub(super) fn copy_all_from_replayer(
        &mut self,
        r: &mut Replayer,
        config: SideConfig,
        k: usize,
    ) -> crate::error::Result<()> {
        let all: Vec<usize> = (0..r.machine.platform.mem.ram_size() / vm::mem::PAGE_SIZE).collect();
        self.machine.copy_from(&mut r.machine, &all);
        copy_io(&mut self.input, &mut self.console, &r.input, &r.console);
        self.final_stop.clone_from(&r.final_stop);
        self.machine.engine = config.engine;
        self.machine.raw.config = config.raw;
        self.machine.platform.mem.take_dirty();
        // At a checkpoint the TLB is empty: forgetting changes nothing else.
        self.machine.forget_cached_code();
        if config == SideConfig::recorded(&r.trace) {
            let offset = r.checkpoints.get(k).map_or(0, |c| c.offset);
            let learning = r.learning_at(k)?;
            crate::replay::put_learning(&mut self.machine, learning, k, offset)?;
        }
        Ok(())
    }
}

impl From<Replayer<'_>> for Side {
    fn from(r: Replayer<'_>) -> Side {
        let Replayer {
            machine,
            input,
            console,
            final_stop,
            ..
        } = r;
        Side {
            machine,
            input,
            console,
            final_stop,
        }
    }
}

/// Copies input position and output into existing buffers (the input log
/// itself is shared).
pub(super) fn copy_io(
    input: &mut ReplayInput,
    console: &mut CaptureConsole,
    src_input: &ReplayInput,
    src_console: &CaptureConsole,
) {
    input.records = src_input.records.clone();
    input.cursor = src_input.cursor;
    input.mismatch.clone_from(&src_input.mismatch);
    console.serial.clone_from(&src_console.serial);
    console.debugcon.clone_from(&src_console.debugcon);
}

pub(super) type View<'a> = (&'a Machine, &'a ReplayInput, &'a CaptureConsole);

/// Whether two machines are in the same state: CPU, devices, time, serial
/// output, input consumed, and RAM (only `pages` of it when the two are
/// known to agree elsewhere).
pub(super) fn agree(a: View, b: View, pages: Option<&[usize]>) -> bool {
    let (ra, rb) = (a.0.platform.mem.ram(), b.0.platform.mem.ram());
    let ps = vm::mem::PAGE_SIZE;
    let ram_equal = match pages {
        None => ra == rb,
        Some(pages) => pages
            .iter()
            .all(|&p| ra.get(p * ps..(p + 1) * ps) == rb.get(p * ps..(p + 1) * ps)),
    };
    a.0.icount() == b.0.icount()
        && a.0.cpu.state == b.0.cpu.state
        && ram_equal
        && a.0.state() == b.0.state()
        && a.2.serial == b.2.serial
        && a.1.cursor == b.1.cursor
        && a.1.mismatch == b.1.mismatch
}

/// Steps both sides (agreeing, their dirty pages taken) one instruction at
/// a time up to `until`: the icount before the first step after which they
/// differ.
pub(super) fn first_by_stepping(a: &mut Side, b: &mut Side, until: u64, ctl: &Control) -> Option<u64> {
    let mut steps = 0u64;
    while a.machine.icount() < until {
        let before = a.machine.icount();
        steps += 1;
        if steps % (1 << 16) == 1 {
            if ctl.cancelled() {
                return None;
            }
            (ctl.progress)(Stage::Stepping { at: before, until });
        }
        a.run_to(before + 1);
        b.run_to(before + 1);
        let da = a.machine.platform.mem.take_dirty();
        let db = b.machine.platform.mem.take_dirty();
        let pages = if db.is_empty() { da } else { union(&da, &db) };
        if !agree(
            (&a.machine, &a.input, &a.console),
            (&b.machine, &b.input, &b.console),
            Some(&pages),
        ) {
            return Some(before);
        }
        if a.machine.icount() == before {
            // The guest stopped (it exited, or can never run again).
            return None;
        }
    }
    None
}

pub(super) fn union(a: &[usize], b: &[usize]) -> Vec<usize> {
    let mut u: Vec<usize> = a.iter().chain(b).copied().collect();
    u.sort_unstable();
    u.dedup();
    u
}
