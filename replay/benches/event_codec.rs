//! The trace writer's encoder, per event: a recorded port loop logs an
//! event every few nanoseconds, and the recording waits for the writer
//! when it falls behind (docs/raw-engine.md, "Events"). Prints
//! nanoseconds per event, best of several rounds, for the shapes that
//! matter: `trap`'s loop (an OUT whose value changes, an IN whose value
//! does not), and a stream of accesses that never repeat.

use std::time::Instant;

use replay::event_codec::{Encoder, MAX_EVENTS};
use vm::events::{EventBatch, IoAccess, SLOT_BATCH};

fn port(addr: u32, value: u32, write: bool) -> IoAccess {
    IoAccess {
        addr,
        mmio: false,
        size: 1,
        value,
        write,
    }
}

/// A batch as the guest's slot hands it to the writer.
fn batch(f: impl Fn(u32) -> (u64, u32, IoAccess)) -> EventBatch {
    let mut batch = EventBatch::for_slot();
    for i in 0..SLOT_BATCH as u32 {
        let (icount, pc, access) = f(i);
        batch.push_io(icount, pc, access);
    }
    batch
}

/// Nanoseconds per event, best of 15 rounds of encoding `batch` as the
/// writer does: frames of MAX_EVENTS.
fn per_event(batch: &EventBatch) -> (f64, f64) {
    let mut encoder = Encoder::with_capacity(MAX_EVENTS * 8);
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..8 {
            let mut at = 0;
            while encoder.push_from(batch, &mut at) {
                bytes = encoder.bytes().len();
                encoder.clear();
            }
        }
        best = best.min(t.elapsed().as_nanos() as f64 / (8 * batch.len()) as f64);
    }
    (best, bytes as f64 / MAX_EVENTS as f64)
}

fn main() {
    let trap = batch(|i| {
        let iteration = u64::from(i / 2);
        if i % 2 == 0 {
            (
                1_000 + iteration * 10,
                0x104090,
                port(0x80, iteration as u32 & 0xff, true),
            )
        } else {
            (1_005 + iteration * 10, 0x1040a0, port(0x21, 0xff, false))
        }
    });
    let scattered = batch(|i| {
        let mix = i.wrapping_mul(2_654_435_761);
        (
            u64::from(i) * 37 + u64::from(mix % 7),
            0xc010_0000 + (mix >> 20),
            port(mix % 0x400, mix >> 24, mix & 1 == 0),
        )
    });
    // `cargo bench -p replay -- trap`: the shapes whose names hold a word.
    let words: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    for (name, b) in [("trap loop", &trap), ("scattered accesses", &scattered)] {
        if !words.is_empty() && !words.iter().any(|w| name.contains(w.as_str())) {
            continue;
        }
        let (ns, bytes) = per_event(b);
        println!("{name:>20}: {ns:.2} ns/event, {bytes:.2} bytes/event");
    }
}
