//! Moving the replay: restoring a checkpoint, seeking, and the snapshots
//! seeks and runs forward leave behind ([`crate::rewind`] says how the
//! image, undo records and snapshots make going back quick).

use std::sync::Arc;

use vm::machine::Position;
use vm::mem::PAGE_SIZE;

use crate::error::{Result, TraceError};
use crate::replay::Replayer;
use crate::rewind::{apply_pages, has_bit, page_of, Image, Mark, Snapshot, SNAPSHOT_SPACING};

impl Replayer<'_> {
    /// Readies the replay for going back (a debugger's, an inspector's):
    /// the image is kept from the first checkpoint the replay passes, and
    /// runs forward leave snapshots. Costs a copy of guest RAM.
    pub fn keep_history(&mut self) {
        self.rewind.keep_history = true;
    }

    /// A debugger changed registers or memory: the machine is off the
    /// recorded run until the next restore, so nothing of it is kept.
    pub fn note_edit(&mut self) {
        self.rewind.edited = true;
    }

    fn collect_written(&mut self) {
        let dirty = self.machine.platform.mem.take_dirty();
        self.rewind.note_written(&dirty);
    }

    /// The replay is where the recording was: no debugger edit, no input
    /// it did not expect, the raw configuration it was recorded with (not
    /// bisect's patched side). Only such RAM and state are kept.
    fn on_recorded_line(&self) -> bool {
        !self.rewind.edited && self.input.mismatch.is_none() && self.machine.raw.config == self.trace.header.config.raw
    }

    /// Snapshots between checkpoints keep no engine learning (a restore
    /// starts it cold), so they need it invisible to the guest: not so
    /// without the scanner or under injected patch bugs.
    fn snapshots_allowed(&self) -> bool {
        self.on_recorded_line() && !self.machine.raw.config.learning_guest_visible()
    }

    /// The replay's mark where it stands; at a checkpoint (`checkpoint`),
    /// as restoring the checkpoint from the trace makes it (TLB empty, no
    /// fault loop under way).
    fn mark(&self, checkpoint: bool) -> Mark {
        Mark {
            position: if checkpoint {
                Position::from_state(self.machine.state())
            } else {
                self.machine.position()
            },
            inputs_consumed: self.input.cursor,
            next_checkpoint: self.next_checkpoint,
            replayed: self.final_stop.replayed.clone(),
        }
    }

    fn return_to(&mut self, mark: &Mark, serial: &[u8]) {
        self.machine.restore_position(&mark.position);
        self.input.cursor = mark.inputs_consumed;
        self.input.mismatch = None;
        self.console.serial.clear();
        self.console.serial.extend_from_slice(serial);
        self.console.debugcon.clear();
        self.next_checkpoint = mark.next_checkpoint;
        self.final_stop.replayed = mark.replayed.clone();
        self.ram = None;
        self.recorded_ram = None;
        self.rewind.edited = false;
    }

    /// The mark of checkpoint `k` as its frame records it.
    fn checkpoint_mark(&self, k: usize, cp: &crate::model::Checkpoint) -> Mark {
        Mark {
            position: Position::from_state(cp.state.clone()),
            inputs_consumed: usize::try_from(cp.inputs_consumed).unwrap_or(usize::MAX),
            next_checkpoint: k + 1,
            replayed: if Some(k) == self.stop_checkpoint {
                cp.stopped.clone()
            } else {
                None
            },
        }
    }

    /// Rebuilds the image of checkpoint `k` from the trace: the first
    /// checkpoint's pages, then each later one's.
    fn build_image(&mut self, k: usize) -> Result<()> {
        let size = self.machine.platform.mem.ram_size();
        let (mut ram, mut serial) = match self.rewind.image.take() {
            Some(mut old) => {
                old.ram.fill(0);
                old.serial.clear();
                (old.ram, old.serial)
            }
            None => (vec![0u8; size], Vec::new()),
        };
        let first = self.checkpoints.first().ok_or(TraceError::Missing("checkpoint"))?;
        let cp = self.trace.checkpoint(first)?;
        apply_pages(&mut ram, &cp.pages);
        serial.extend_from_slice(&cp.serial);
        let mark = self.checkpoint_mark(0, &cp);
        self.rewind.image = Some(Image {
            index: 0,
            ram,
            serial,
            mark,
        });
        self.rewind.full = true;
        // The rest going forward, keeping undo records: the next steps
        // backwards cross them.
        self.move_image(k)
    }

    /// Moves the image to checkpoint `k`: forward by the checkpoints'
    /// pages, back by undo records, from scratch when one is missing. The
    /// pages it changes join `touched`.
    fn move_image(&mut self, k: usize) -> Result<()> {
        let moved = self.move_image_or_fail(k);
        if moved.is_err() {
            // Part of the way: its RAM and mark may not belong together.
            self.rewind.image = None;
            self.rewind.full = true;
        }
        moved
    }

    fn move_image_or_fail(&mut self, k: usize) -> Result<()> {
        let Some(index) = self.rewind.image.as_ref().map(|i| i.index) else {
            return self.build_image(k);
        };
        if index == k {
            return Ok(());
        }
        self.rewind.last_pages.clear();
        if index < k {
            let mut last = None;
            for j in index + 1..=k {
                let cp = self.trace.checkpoint(&self.checkpoints[j])?;
                // Page numbers come from the file: only those in RAM.
                let in_ram = self.machine.platform.mem.ram_size() / PAGE_SIZE;
                let pages: Vec<u32> = cp
                    .pages
                    .iter()
                    .map(|(p, _)| *p)
                    .filter(|&p| (p as usize) < in_ram)
                    .collect();
                self.rewind.record_undo(j, &pages);
                let Some(image) = self.rewind.image.as_mut() else { break };
                apply_pages(&mut image.ram, &cp.pages);
                image.serial.extend_from_slice(&cp.serial);
                image.index = j;
                let written: Vec<usize> = pages.iter().map(|&p| p as usize).collect();
                self.rewind.note_written(&written);
                last = Some(cp);
            }
            if let Some(cp) = last {
                let mark = self.checkpoint_mark(k, &cp);
                if let Some(image) = self.rewind.image.as_mut() {
                    image.mark = mark;
                }
            }
            return Ok(());
        }
        if (k + 1..=index).any(|j| !self.rewind.undo.contains_key(&j)) {
            return self.build_image(k);
        }
        for j in (k + 1..=index).rev() {
            let Some(undo) = self.rewind.undo.get(&j) else { break };
            let raw = zstd::bulk::decompress(&undo.bytes, undo.pages.len() * PAGE_SIZE)
                .map_err(|source| TraceError::Undo { checkpoint: j, source })?;
            let pages = undo.pages.clone();
            let serial_len = undo.serial_len;
            let Some(image) = self.rewind.image.as_mut() else { break };
            for (i, &p) in pages.iter().enumerate() {
                let at = p as usize * PAGE_SIZE;
                if let Some(dst) = image.ram.get_mut(at..at + PAGE_SIZE) {
                    dst.copy_from_slice(&raw[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]);
                }
            }
            image.serial.truncate(serial_len);
            image.index = j - 1;
            let written: Vec<usize> = pages.iter().map(|&p| p as usize).collect();
            self.rewind.note_written(&written);
        }
        let cp = self.trace.checkpoint(&self.checkpoints[k])?;
        let mark = self.checkpoint_mark(k, &cp);
        if let Some(image) = self.rewind.image.as_mut() {
            image.mark = mark;
        }
        Ok(())
    }

    /// Makes the machine's RAM the image plus `pages` (sorted), copying
    /// only what may differ.
    fn sync_ram(&mut self, pages: &[(u32, Arc<[u8]>)]) -> Result<()> {
        self.collect_written();
        let Some(image) = self.rewind.image.as_ref() else {
            return Err(TraceError::Missing("checkpoint"));
        };
        let mem = &mut self.machine.platform.mem;
        let load = |mem: &mut vm::mem::PhysMem, p: usize, bytes: &[u8]| {
            mem.load((p * PAGE_SIZE) as u32, bytes).map_err(TraceError::Boot)
        };
        if self.rewind.full {
            mem.load(0, &image.ram).map_err(TraceError::Boot)?;
        } else {
            for &p in &self.rewind.touched {
                if pages.binary_search_by_key(&(p as u32), |(q, _)| *q).is_err() {
                    load(mem, p, page_of(&image.ram, p))?;
                }
            }
        }
        for (p, bytes) in pages {
            load(mem, *p as usize, bytes)?;
        }
        mem.take_dirty();
        self.rewind.full = false;
        self.rewind.clear_touched();
        let written: Vec<usize> = pages.iter().map(|(p, _)| *p as usize).collect();
        self.rewind.note_written(&written);
        self.rewind.fresh_bits.clear();
        self.rewind.last_pages = pages.to_vec();
        Ok(())
    }

    /// Puts the machine in the state of checkpoint `k`: CPU, devices, RAM,
    /// input cursor and serial output.
    pub fn restore(&mut self, k: usize) -> Result<()> {
        if k >= self.checkpoints.len() {
            return Err(TraceError::Missing("checkpoint"));
        }
        self.move_image(k)?;
        self.sync_ram(&[])?;
        let Some(image) = self.rewind.image.take() else {
            return Err(TraceError::Missing("checkpoint"));
        };
        self.return_to(&image.mark, &image.serial);
        self.rewind.image = Some(image);
        self.put_back_learning(k)
    }

    /// At checkpoint `k`, passed going forward (after what the recorder did
    /// there, with `written` the pages taken from the dirty bitmap): the
    /// image follows the replay, keeping what it overwrites as an undo
    /// record.
    pub(crate) fn passed_checkpoint(&mut self, k: usize, written: &[usize]) {
        self.rewind.note_written(written);
        // Otherwise the image keeps to the checkpoints.
        if !self.on_recorded_line() {
            return;
        }
        if self.rewind.image.is_none() && self.rewind.keep_history {
            let ram = self.machine.platform.mem.ram().to_vec();
            self.rewind.image = Some(Image {
                index: k,
                ram,
                serial: self.console.serial.clone(),
                mark: self.mark(true),
            });
            self.rewind.full = false;
            self.rewind.clear_touched();
            self.rewind.last_pages.clear();
            return;
        }
        let follows = self.rewind.image.as_ref().is_some_and(|i| i.index + 1 == k);
        if !follows || self.rewind.full {
            return;
        }
        let mut pages: Vec<u32> = self.rewind.touched.iter().map(|&p| p as u32).collect();
        pages.sort_unstable();
        self.rewind.record_undo(k, &pages);
        let mark = self.mark(true);
        let mem = &self.machine.platform.mem;
        let Some(image) = self.rewind.image.as_mut() else {
            return;
        };
        for &p in &pages {
            if let Some(src) = mem.page(p as usize) {
                image.ram[p as usize * PAGE_SIZE..(p as usize + 1) * PAGE_SIZE].copy_from_slice(src);
            }
        }
        let from = image.serial.len().min(self.console.serial.len());
        image.serial.extend_from_slice(&self.console.serial[from..]);
        image.index = k;
        image.mark = mark;
        self.rewind.clear_touched();
        self.rewind.last_pages.clear();
    }

    /// Keeps a snapshot of where the replay stands.
    pub(crate) fn take_snapshot(&mut self) {
        if !self.snapshots_allowed() || self.rewind.full {
            return;
        }
        let icount = self.machine.icount();
        let Some(base) = self.rewind.image.as_ref().map(|i| i.index) else {
            return;
        };
        if base + 1 != self.next_checkpoint || self.rewind.snapshots.iter().any(|s| s.icount == icount) {
            return;
        }
        self.collect_written();
        let mut touched = self.rewind.touched.clone();
        touched.sort_unstable();
        let mem = &self.machine.platform.mem;
        let r = &self.rewind;
        let pages: Vec<(u32, Arc<[u8]>)> = touched
            .iter()
            .filter_map(|&p| {
                let q = p as u32;
                if !has_bit(&r.fresh_bits, p) {
                    if let Ok(i) = r.last_pages.binary_search_by_key(&q, |(x, _)| *x) {
                        return Some((q, r.last_pages[i].1.clone()));
                    }
                }
                mem.page(p).map(|b| (q, Arc::from(b)))
            })
            .collect();
        self.rewind.clock += 1;
        let snapshot = Snapshot {
            icount,
            base,
            mark: self.mark(false),
            serial: self.console.serial.clone(),
            pages: pages.clone(),
            last_used: self.rewind.clock,
        };
        self.rewind.last_pages = pages;
        self.rewind.fresh_bits.clear();
        self.rewind.snapshots.push(snapshot);
        self.rewind.drop_snapshots_over_budget();
    }

    /// The latest snapshot at or before `target`, if any is later than
    /// `after`.
    fn snapshot_before(&self, target: u64, after: u64) -> Option<usize> {
        (0..self.rewind.snapshots.len())
            .filter(|&i| {
                let at = self.rewind.snapshots[i].icount;
                at <= target && at > after
            })
            .max_by_key(|&i| self.rewind.snapshots[i].icount)
    }

    fn restore_snapshot(&mut self, i: usize) -> Result<()> {
        let base = self.rewind.snapshots[i].base;
        self.move_image(base)?;
        self.rewind.clock += 1;
        let clock = self.rewind.clock;
        let s = &mut self.rewind.snapshots[i];
        s.last_used = clock;
        let (pages, mark, serial) = (s.pages.clone(), s.mark.clone(), s.serial.clone());
        self.sync_ram(&pages)?;
        self.return_to(&mark, &serial);
        // Snapshots keep no learning: the engine starts cold here, which
        // only the engine's own events and views can tell (no snapshot is
        // taken where the guest could), until the next checkpoint.
        self.engine_cold = true;
        Ok(())
    }

    /// The first half of a seek, for callers that run the rest in chunks
    /// (`run_to` on the way): puts the replay at the latest place at or
    /// before `target` it can start from (where it is, a snapshot, a
    /// checkpoint). Returns the target, clamped to the trace's end.
    pub fn begin_seek(&mut self, target: u64) -> Result<u64> {
        let target = target.min(self.end_icount());
        let k = self
            .checkpoints
            .iter()
            .rposition(|c| c.icount <= target)
            .ok_or(TraceError::Missing("checkpoint"))?;
        let from = self.checkpoints[k].icount;
        let here = self.machine.icount();
        let run_on = here >= from && here <= target && self.next_checkpoint >= k;
        match self.snapshot_before(target, if run_on { here } else { from }) {
            Some(i) => self.restore_snapshot(i)?,
            None if run_on => {}
            None => self.restore(k)?,
        }
        Ok(target)
    }

    /// Moves to `target`: starts from the latest place at or before it
    /// ([`Replayer::begin_seek`]) and runs, leaving snapshots behind at
    /// distances doubling from the target when it replays far, so the next
    /// steps backwards are short.
    pub fn seek(&mut self, target: u64) -> Result<()> {
        let target = self.begin_seek(target)?;
        let start = self.machine.icount();
        if self.snapshots_allowed() && target.saturating_sub(start) > SNAPSHOT_SPACING {
            let mut stops = Vec::new();
            let mut back = SNAPSHOT_SPACING;
            while let Some(at) = target.checked_sub(back).filter(|&at| at > start) {
                stops.push(at);
                back = back.saturating_mul(2);
            }
            for &at in stops.iter().rev() {
                self.run_to(at, false)?;
                if self.machine.icount() != at {
                    break;
                }
                self.take_snapshot();
            }
        }
        self.run_to(target, false)?;
        Ok(())
    }
}
