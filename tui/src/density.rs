//! Event density over the whole run, computed on a thread of its own so
//! opening a trace never waits for it: the picture fills in as batches are
//! read.

use std::sync::{Arc, Mutex};

use replay::format::FrameKind;
use replay::Trace;
use vm::events::{Event, EventKind};

/// The rows of the picture.
pub const ROWS: [&str; 4] = ["traps", "emulated", "patches", "interrupts"];

#[derive(Clone, Debug, Default)]
pub struct Density {
    /// The icount the slices cover, from 0.
    pub end: u64,
    /// Per slice of icount, counts per row of [`ROWS`].
    pub counts: Vec<[u32; 4]>,
    pub batches_read: usize,
    pub batches: usize,
    pub error: Option<String>,
}

impl Density {
    fn row(e: &Event) -> Option<usize> {
        match e.kind() {
            EventKind::Trap => Some(0),
            EventKind::Emulated => Some(1),
            EventKind::Patch => Some(2),
            EventKind::Interrupt | EventKind::Exception => Some(3),
            _ => None,
        }
    }

    pub fn slice_of(&self, icount: u64) -> usize {
        if self.end == 0 || self.counts.is_empty() {
            return 0;
        }
        let n = self.counts.len() as u128;
        ((u128::from(icount.min(self.end)) * n / (u128::from(self.end) + 1)) as usize).min(self.counts.len() - 1)
    }

    pub fn done(&self) -> bool {
        self.batches_read >= self.batches || self.error.is_some()
    }
}

/// Starts counting `slices` slices over `[0, end]`; the result grows in
/// the returned cell.
pub fn spawn(trace: Arc<Trace>, end: u64, slices: usize) -> Arc<Mutex<Density>> {
    let frames: Vec<_> = trace.frames_of(FrameKind::Events).cloned().collect();
    let cell = Arc::new(Mutex::new(Density {
        end,
        counts: vec![[0; 4]; slices.max(1)],
        batches_read: 0,
        batches: frames.len(),
        error: None,
    }));
    let out = cell.clone();
    std::thread::spawn(move || {
        for f in frames {
            let events = match trace.event_batch(&f) {
                Ok(e) => e,
                Err(e) => {
                    if let Ok(mut d) = out.lock() {
                        d.error = Some(e.to_string());
                    }
                    return;
                }
            };
            let Ok(mut d) = out.lock() else {
                return;
            };
            for e in &events {
                if let Some(row) = Density::row(&e.event) {
                    let s = d.slice_of(e.icount);
                    d.counts[s][row] = d.counts[s][row].saturating_add(1);
                }
            }
            d.batches_read += 1;
        }
    });
    cell
}
