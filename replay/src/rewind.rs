//! Going back quickly, as rr does. Three things make a step backwards
//! cheap on a long trace:
//!
//! - The *image*: guest RAM as of one checkpoint, kept beside the
//!   machine's. The machine's RAM is the image plus the pages written since
//!   (`touched`, fed from the memory's dirty bitmap), so putting the machine
//!   back at that checkpoint copies those pages only, not all of RAM.
//! - *Undo records*: when the image moves forward a checkpoint, the old
//!   contents of the pages it overwrites are kept (compressed, within a
//!   budget), so moving it back a checkpoint costs the same as forward,
//!   not a rebuild from the first checkpoint.
//! - *Snapshots* between checkpoints: a seek that replays far leaves
//!   snapshots behind it at distances doubling from its target, so the next
//!   steps backwards replay a few hundred thousand instructions, not a whole
//!   checkpoint interval. A snapshot holds the machine's position (state,
//!   TLB) and the pages that differ from the image; pages a later snapshot
//!   did not rewrite are shared with the one before it.
//!
//! None of this changes what the replay computes: every position is still
//! the recorded run's, reached from a checkpoint by the same inputs. A
//! checkpoint restores the raw engine's learning too (its learning frames);
//! a snapshot does not, so the engine starts cold there and gets the
//! recorded learning back at the next checkpoint: not guest-visible, except
//! where the learning is (no scanner, injected patch bugs), and such
//! traces get no snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;

use vm::machine::Position;
use vm::mem::PAGE_SIZE;

/// A seek replaying further than this leaves snapshots behind it.
pub const SNAPSHOT_SPACING: u64 = 200_000;
/// A run forward (a debugger's continue) leaves a snapshot at every
/// multiple of this many instructions; the most recent ones, those just
/// before where it stops, are the ones a step backwards wants.
pub const RUN_SNAPSHOT_SPACING: u64 = 1_000_000;
/// Snapshots kept at most, the least recently used dropped first.
pub(crate) const MAX_SNAPSHOTS: usize = 24;
/// Bytes of snapshot pages kept at most (pages shared between snapshots
/// counted in each).
pub(crate) const SNAPSHOT_BUDGET: usize = 512 << 20;
/// Compressed bytes of undo records kept at most (the oldest dropped first).
pub(crate) const UNDO_BUDGET: usize = 128 << 20;

/// Where the replay stands besides RAM: what a restore puts back.
#[derive(Clone, Debug)]
pub(crate) struct Mark {
    pub position: Position,
    pub inputs_consumed: usize,
    pub next_checkpoint: usize,
    pub replayed: Option<String>,
}

/// Guest RAM and the replay's mark at checkpoint `index`.
pub(crate) struct Image {
    pub index: usize,
    pub ram: Vec<u8>,
    /// Serial output up to the checkpoint.
    pub serial: Vec<u8>,
    pub mark: Mark,
}

/// The contents, at the checkpoint before, of the pages checkpoint `k`'s
/// image changed.
pub(crate) struct Undo {
    pub(crate) pages: Vec<u32>,
    /// The pages' bytes, one after another, zstd-compressed.
    pub(crate) bytes: Vec<u8>,
    /// Serial output up to the checkpoint before.
    pub(crate) serial_len: usize,
}

pub(crate) struct Snapshot {
    pub(crate) icount: u64,
    /// The image index its pages are relative to.
    pub(crate) base: usize,
    pub(crate) mark: Mark,
    pub(crate) serial: Vec<u8>,
    /// Pages that differ from the base image, by page number.
    pub(crate) pages: Vec<(u32, Arc<[u8]>)>,
    pub(crate) last_used: u64,
}

/// The image, undo records and snapshots of one replay.
#[derive(Default)]
pub(crate) struct Rewind {
    pub image: Option<Image>,
    /// Pages where the machine's RAM may differ from the image, besides
    /// those in the memory's dirty bitmap. Meaningless while `full`.
    pub(crate) touched: Vec<usize>,
    pub(crate) touched_bits: Vec<u64>,
    /// The machine's RAM has nothing to do with the image (not built yet).
    pub(crate) full: bool,
    /// Pages written since the last snapshot taken or restored, whose
    /// pages `last_pages` holds (relative to the same image).
    pub(crate) fresh_bits: Vec<u64>,
    pub(crate) last_pages: Vec<(u32, Arc<[u8]>)>,
    pub(crate) undo: BTreeMap<usize, Undo>,
    pub(crate) undo_bytes: usize,
    pub(crate) snapshots: Vec<Snapshot>,
    pub(crate) clock: u64,
    /// A debugger changed the machine: it is off the recorded run, so its
    /// RAM must not become an image or a snapshot.
    pub edited: bool,
    /// Build the image at the first checkpoint passed, not at the first
    /// restore: for interactive replays, which go back sooner or later.
    pub(crate) keep_history: bool,
}

pub(crate) fn set_bit(bits: &mut Vec<u64>, p: usize) -> bool {
    let (w, b) = (p / 64, 1u64 << (p % 64));
    if bits.len() <= w {
        bits.resize(w + 1, 0);
    }
    let was = bits[w] & b != 0;
    bits[w] |= b;
    !was
}

pub(crate) fn has_bit(bits: &[u64], p: usize) -> bool {
    bits.get(p / 64).is_some_and(|w| w & (1 << (p % 64)) != 0)
}

pub(crate) fn page_of(ram: &[u8], p: usize) -> &[u8] {
    &ram[p * PAGE_SIZE..(p + 1) * PAGE_SIZE]
}

impl Rewind {
    /// Takes note of pages the machine wrote (from its dirty bitmap).
    pub fn note_written(&mut self, pages: &[usize]) {
        for &p in pages {
            if set_bit(&mut self.touched_bits, p) {
                self.touched.push(p);
            }
            set_bit(&mut self.fresh_bits, p);
        }
    }

    pub(crate) fn clear_touched(&mut self) {
        for &p in &self.touched {
            self.touched_bits[p / 64] = 0;
        }
        self.touched.clear();
        self.fresh_bits.clear();
    }

    fn add_undo(&mut self, k: usize, undo: Undo) {
        self.undo_bytes += undo.bytes.len();
        self.undo.insert(k, undo);
        while self.undo_bytes > UNDO_BUDGET {
            let Some((_, old)) = self.undo.pop_first() else { break };
            self.undo_bytes -= old.bytes.len();
        }
    }

    /// Keeps the old contents of `pages` of the image (moving to `k`).
    pub(crate) fn record_undo(&mut self, k: usize, pages: &[u32]) {
        let Some(image) = &self.image else { return };
        if self.undo.contains_key(&k) {
            return;
        }
        let mut raw = Vec::with_capacity(pages.len() * PAGE_SIZE);
        for &p in pages {
            raw.extend_from_slice(page_of(&image.ram, p as usize));
        }
        let Ok(bytes) = zstd::bulk::compress(&raw, 1) else {
            return;
        };
        let serial_len = image.serial.len();
        self.add_undo(
            k,
            Undo {
                pages: pages.to_vec(),
                bytes,
                serial_len,
            },
        );
    }

    pub(crate) fn drop_snapshots_over_budget(&mut self) {
        let mut total: usize = self.snapshots.iter().map(|s| s.pages.len() * PAGE_SIZE).sum();
        while self.snapshots.len() > MAX_SNAPSHOTS || (total > SNAPSHOT_BUDGET && !self.snapshots.is_empty()) {
            let Some(oldest) = (0..self.snapshots.len()).min_by_key(|&i| self.snapshots[i].last_used) else {
                break;
            };
            total -= self.snapshots.swap_remove(oldest).pages.len() * PAGE_SIZE;
        }
    }
}

pub(crate) fn apply_pages(ram: &mut [u8], pages: &[(u32, Vec<u8>)]) {
    for (page, bytes) in pages {
        let start = *page as usize * PAGE_SIZE;
        if let Some(dst) = ram.get_mut(start..start + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
}
