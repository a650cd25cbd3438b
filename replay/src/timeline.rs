//! The replay's timeline, searched in both directions: runs forward that
//! stop at breakpoints and watched accesses, and the searches backwards
//! (reverse-continue, "who wrote this byte?") that replay checkpoint
//! intervals and remember the last hit in each, as rr's replay timeline
//! does. Used by the gdb server and the inspector.

use crate::error::Result;
use crate::replay::{Replayer, Stop};

/// What to look for when searching backwards (reverse-continue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Predicate {
    /// The next instruction is at this linear address (a breakpoint).
    Pc(u32),
    /// The next instruction writes guest-physical bytes in `[start, end)`
    /// (a write watchpoint); any write counts, whatever the value.
    Writes { start: u32, end: u32 },
    /// The next instruction reads (`write` false) or writes the range.
    Accesses {
        start: u32,
        end: u32,
        read: bool,
        write: bool,
    },
}

impl Predicate {
    /// The watch that makes the machine report this access, for the
    /// memory predicates.
    pub fn watch(&self) -> Option<vm::platform::Watch> {
        match *self {
            Predicate::Writes { start, end } => Some(vm::platform::Watch {
                start,
                end,
                read: false,
                write: true,
            }),
            Predicate::Accesses {
                start,
                end,
                read,
                write,
            } => Some(vm::platform::Watch {
                start,
                end,
                read,
                write,
            }),
            Predicate::Pc(_) => None,
        }
    }
}

impl Replayer<'_> {
    /// The last position before the current one where `pred` holds: for
    /// `Pc`, where the next instruction is at that address; for `Writes`,
    /// where the next instruction writes the range. Searches checkpoint
    /// intervals backwards, replaying each one instruction at a time, and
    /// leaves the replay at the match (or where it was, when none).
    pub fn find_previous(&mut self, pred: Predicate) -> Result<Option<u64>> {
        Ok(self.find_previous_any(&[pred])?.map(|(at, _)| at))
    }

    /// [`Replayer::find_previous`] for the first of several predicates to
    /// hold going backwards; also says which one held.
    pub fn find_previous_any(&mut self, preds: &[Predicate]) -> Result<Option<(u64, usize)>> {
        let here = self.machine.icount();
        let marks = self.checkpoint_icounts();
        let Some(mut k) = marks.iter().rposition(|&c| c < here) else {
            return Ok(None);
        };
        let pcs: Vec<(usize, u32)> = preds
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Predicate::Pc(pc) => Some((i, *pc)),
                _ => None,
            })
            .collect();
        let watches: Vec<(usize, vm::platform::Watch)> = preds
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.watch().map(|w| (i, w)))
            .collect();
        let mut armed: Vec<vm::platform::Watch> = watches.iter().map(|(_, w)| *w).collect();
        loop {
            // Interval k ends where interval k + 1 (already searched) begins.
            let upto = marks.get(k + 1).map_or(here, |&m| m.min(here));
            if pcs.is_empty() {
                // Watches alone: searched at engine speed.
                if let Some(hit) = self.last_watch_hit(k, upto, &watches)? {
                    self.seek(hit.0)?;
                    return Ok(Some(hit));
                }
                if k == 0 {
                    self.seek(here)?;
                    return Ok(None);
                }
                k -= 1;
                continue;
            }
            self.restore(k)?;
            let mut found = None;
            while self.machine.icount() < upto {
                let at = self.machine.icount();
                let pc = vm::engine::raw::pc(&self.machine.cpu);
                if let Some(&(i, _)) = pcs.iter().find(|(_, p)| *p == pc) {
                    found = Some((at, i));
                }
                if let Some(w) = self.step_watching(&watches, &mut armed)? {
                    found = Some((at, w));
                }
                if self.machine.icount() == at {
                    break; // the end of the trace, or a halted guest
                }
            }
            if let Some(hit) = found {
                self.seek(hit.0)?;
                return Ok(Some(hit));
            }
            if k == 0 {
                self.seek(here)?;
                return Ok(None);
            }
            k -= 1;
        }
    }

    /// Runs one instruction with `watches` armed; the predicate index of the
    /// watch it touched, if any.
    /// `armed` is `watches` without the indices, built once per search and
    /// swapped in and out for each step (no allocation per instruction).
    fn step_watching(
        &mut self,
        watches: &[(usize, vm::platform::Watch)],
        armed: &mut Vec<vm::platform::Watch>,
    ) -> Result<Option<usize>> {
        if watches.is_empty() {
            self.step()?;
            return Ok(None);
        }
        std::mem::swap(&mut self.machine.platform.watches, armed);
        self.machine.platform.watch_hit = None;
        let r = self.step();
        let hit = self.machine.platform.watch_hit.take();
        std::mem::swap(&mut self.machine.platform.watches, armed);
        r.map(|_| hit.and_then(|h| watches.get(h.index).map(|(i, _)| *i)))
    }

    /// Runs forward to `limit` (at most the end), stopping at a breakpoint
    /// (before the instruction there; not at the first instruction, which
    /// is being resumed from) or after an instruction that touches a watch.
    pub fn resume(&mut self, limit: u64, breakpoints: &[u32], watches: &[vm::platform::Watch]) -> Result<Stop> {
        self.resume_with(limit, breakpoints, watches, false)
    }

    /// `coarse`: a watch stops the run after the block that touched it
    /// (`Machine::last_step_start` says where that block began).
    fn resume_with(
        &mut self,
        limit: u64,
        breakpoints: &[u32],
        watches: &[vm::platform::Watch],
        coarse: bool,
    ) -> Result<Stop> {
        let end = self.end_icount();
        let limit = limit.min(end);
        self.machine.breakpoints = breakpoints.to_vec();
        self.machine.platform.watches = watches.to_vec();
        self.machine.platform.watch_hit = None;
        self.machine.resume_past_breakpoint = true;
        self.machine.coarse_watch = coarse;
        let result = self.resume_inner(limit, end);
        self.machine.breakpoints.clear();
        self.machine.platform.watches.clear();
        self.machine.platform.watch_hit = None;
        self.machine.resume_past_breakpoint = false;
        self.machine.coarse_watch = false;
        result
    }

    /// The last access to `watches` in `[from checkpoint k, here)`, found at
    /// full engine speed: blocks run with the watches armed, the last block
    /// that touched one is noted, and only that block is stepped through.
    fn last_watch_hit(
        &mut self,
        k: usize,
        here: u64,
        watches: &[(usize, vm::platform::Watch)],
    ) -> Result<Option<(u64, usize)>> {
        self.restore(k)?;
        let mut armed: Vec<vm::platform::Watch> = watches.iter().map(|(_, w)| *w).collect();
        let mut window = None;
        while self.machine.icount() < here {
            let before = self.machine.icount();
            match self.resume_with(here, &[], &armed, true)? {
                Stop::Watch { .. } => window = Some((self.machine.last_step_start, self.machine.icount())),
                _ => break,
            }
            if self.machine.icount() == before {
                break;
            }
        }
        let Some((start, stop)) = window else {
            return Ok(None);
        };
        self.seek(start)?;
        let mut found = None;
        while self.machine.icount() < stop {
            let at = self.machine.icount();
            if let Some(i) = self.step_watching(watches, &mut armed)? {
                found = Some((at, i));
            }
            if self.machine.icount() == at {
                break;
            }
        }
        Ok(found)
    }
}
