//! Damaged traces, thousands of them: recordings of real guests cut at and
//! between every frame boundary, with bits flipped in every frame kind, with
//! frames swapped, repeated and dropped, and with lying length, icount and
//! count fields whose checksums (and index) were made to agree. For every
//! mutant: no panic, no hang, and verification never says "verified" (exit
//! 0) or "diverged" (exit 1): the file is damaged, so the answer is an
//! error (exit 2), or, for a file cut at a frame boundary, "incomplete"
//! (exit 2 unless the user allows it).
//!
//! The random choices come from a seed: RINGBACK_MUTATION_SEED=N replays a
//! failing run; a failure names the seed and the mutant.

mod common;

use common::Rng;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use replay::format::{self, FrameKind};
use replay::model::{
    CheckpointFrame, EndInfo, EventBatch, FrameEntry, InputBatch, InputRecord, LearningFrame, TraceHeader, TraceIndex,
};
use replay::state::{SavedState, Section};
use replay::{ReplayOptions, Trace};
use vm::engine::raw::RawConfig;
use vm::host::{HostInput, NoInput, ScriptedInput};
use vm::machine::{CaptureConsole, Engine, Kernel, Machine};

const OUT_DIR: &str = env!("OUT_DIR");

fn guest(name: &str) -> Vec<u8> {
    let path = format!("{OUT_DIR}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("test kernel {path}: {e}"))
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ringback-mutations-{}-{name}.rbt", std::process::id()))
}

/// A recording of `kernel`, as bytes.
fn record(name: &str, kernel: Kernel, engine: Engine, input: &[u8], interval: u64) -> Vec<u8> {
    let mut host = ScriptedInput::new(1_700_000_000, input).starting_at(1_000_000);
    let rtc_start = host.rtc_start();
    let mut m = Machine::boot(8 << 20, &kernel, &mut NoInput { rtc_start }).expect("boot");
    m.engine = engine;
    m.raw.config = RawConfig::default();
    let header = TraceHeader::for_machine("test", &kernel, &m, rtc_start, interval, false);
    let path = temp(name);
    let mut console = CaptureConsole::default();
    replay::record(&path, &header, &mut m, &mut host, &mut console, 50_000_000, &mut |_| {}).expect("record");
    let bytes = std::fs::read(&path).expect("read trace");
    let _ = std::fs::remove_file(&path);
    bytes
}

/// The recordings mutated: serial input (input frames), many checkpoints
/// and events (patches), a run ending in a triple fault, and a two-byte
/// real-mode guest ending in a halt with interrupts off.
fn bases() -> Vec<(&'static str, Vec<u8>)> {
    let multiboot = |name: &str| Kernel::Multiboot {
        image: guest(&format!("{name}.elf")),
        cmdline: format!("{name}.elf"),
        modules: vec![],
    };
    vec![
        (
            "echo",
            record("echo", multiboot("echo"), Engine::Raw, b"mutate me\nquit\n", 20_000),
        ),
        (
            "patchbugs",
            record("patchbugs", multiboot("patchbugs"), Engine::Raw, b"", 150_000),
        ),
        (
            "triplefault",
            record("triplefault", multiboot("triplefault"), Engine::Blocks, b"", 2_000),
        ),
        (
            "cli-hlt",
            record(
                "clihlt",
                Kernel::Flat {
                    image: vec![0xFA, 0xF4],
                    addr: 0x7C00,
                },
                Engine::Emulate,
                b"",
                1_000,
            ),
        ),
    ]
}

/// A frame as the writer made it: kind, icount and uncompressed payload.
#[derive(Clone)]
struct Frame {
    kind: FrameKind,
    icount: u64,
    raw: Vec<u8>,
}

/// The frames of a finished trace (the index left out: `assemble` writes
/// a new one).
fn frames_of(bytes: &[u8]) -> (Vec<FrameEntry>, Vec<Frame>) {
    let trace = Trace::from_bytes(bytes.to_vec()).expect("the base trace opens");
    let frames = trace
        .frames
        .iter()
        .map(|f| {
            let (h, raw) = format::read_frame(bytes, f.offset as usize).expect("base frame");
            Frame {
                kind: h.kind,
                icount: h.icount,
                raw,
            }
        })
        .collect();
    (trace.frames.clone(), frames)
}

/// A well-formed file of `frames`: every frame with a right checksum, an
/// index listing them all and the trailer. Whatever is wrong with such a
/// file is in what the frames say.
fn assemble(frames: &[Frame]) -> Vec<u8> {
    let mut out = format::preamble().to_vec();
    let mut index = Vec::new();
    for f in frames {
        let offset = out.len() as u64;
        let n = format::write_frame(&mut out, f.kind, f.icount, &f.raw).expect("frame");
        index.push(FrameEntry {
            kind: f.kind as u8,
            offset,
            icount: f.icount,
            payload_len: (n - format::FRAME_HEADER_LEN as u64) as u32,
            raw_len: f.raw.len() as u32,
        });
    }
    let at = out.len() as u64;
    let raw = TraceIndex { frames: index }.to_bytes().expect("index");
    format::write_frame(&mut out, FrameKind::Index, 0, &raw).expect("index frame");
    out.extend_from_slice(&format::trailer(at));
    out
}

/// Rewrites the CRC of the frame header at `offset` to match what is
/// there now (a lying field a checksum cannot catch).
fn fix_crc(bytes: &mut [u8], offset: usize) {
    let len = u32::from_le_bytes(bytes[offset + 8..offset + 12].try_into().expect("4 bytes")) as usize;
    let end = (offset + format::FRAME_HEADER_LEN + len).min(bytes.len());
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[offset..offset + 24]);
    h.update(&bytes[offset + format::FRAME_HEADER_LEN..end]);
    let crc = h.finalize();
    bytes[offset + 24..offset + 28].copy_from_slice(&crc.to_le_bytes());
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("encode")
}

/// Every mutant of one base trace, with a name saying what was done.
fn mutants(bytes: &[u8], rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let (entries, frames) = frames_of(bytes);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let index_at = format::read_trailer(bytes).expect("trailer") as usize;
    let mut starts: Vec<usize> = entries.iter().map(|e| e.offset as usize).collect();
    starts.push(index_at);
    let kind_name = |k: u8| FrameKind::from_u8(k).map_or("unknown", |k| k.name());

    // Cut at and between every frame boundary, and inside the trailer.
    let mut cuts = vec![0, 1, 8, 15, format::PREAMBLE_LEN];
    for (i, &s) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(bytes.len() - format::TRAILER_LEN);
        cuts.extend([s, s + 1, s + 27, s + 28, s + 29, (s + end) / 2, end - 1]);
        if i > 0 {
            cuts.push(s + rng.below(end - s));
        }
    }
    cuts.extend([bytes.len() - 16, bytes.len() - 8, bytes.len() - 1]);
    cuts.sort_unstable();
    cuts.dedup();
    for c in cuts.into_iter().filter(|&c| c < bytes.len()) {
        out.push((format!("cut at byte {c}"), bytes[..c].to_vec()));
    }

    // Bit flips: every byte of every frame header, random payload bytes of
    // every frame, the preamble and the trailer.
    let mut flips: Vec<(usize, String)> = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let kind = if i < entries.len() {
            kind_name(entries[i].kind)
        } else {
            "index"
        };
        let end = starts.get(i + 1).copied().unwrap_or(bytes.len() - format::TRAILER_LEN);
        for b in 0..format::FRAME_HEADER_LEN {
            flips.push((s + b, format!("{kind} frame header byte {b}")));
        }
        for _ in 0..6 {
            let at = s + format::FRAME_HEADER_LEN + rng.below(end - s - format::FRAME_HEADER_LEN);
            flips.push((at, format!("{kind} frame payload")));
        }
    }
    for b in 0..format::PREAMBLE_LEN {
        flips.push((b, format!("preamble byte {b}")));
    }
    for b in 0..format::TRAILER_LEN {
        flips.push((bytes.len() - format::TRAILER_LEN + b, format!("trailer byte {b}")));
    }
    for (at, what) in flips {
        let bit = rng.below(8);
        let mut m = bytes.to_vec();
        m[at] ^= 1 << bit;
        out.push((format!("bit {bit} flipped at byte {at} ({what})"), m));
    }

    // Frames swapped, repeated and dropped, in place (index left as it was)
    // and with a new index that agrees (only the contents can tell).
    let raw_frame = |i: usize| bytes[starts[i]..starts[i + 1]].to_vec();
    let splice = |parts: Vec<Vec<u8>>| {
        let mut m = bytes[..format::PREAMBLE_LEN].to_vec();
        for p in parts {
            m.extend(p);
        }
        m.extend_from_slice(&bytes[index_at..]);
        m
    };
    let n = entries.len();
    for i in 0..n {
        let name = kind_name(entries[i].kind);
        if i + 1 < n {
            let mut parts: Vec<Vec<u8>> = (0..n).map(raw_frame).collect();
            parts.swap(i, i + 1);
            out.push((format!("frames {i} and {} swapped in place", i + 1), splice(parts)));
            let mut fs = frames.clone();
            fs.swap(i, i + 1);
            out.push((
                format!("frames {i} ({name}) and {} swapped, new index", i + 1),
                assemble(&fs),
            ));
        }
        let mut parts: Vec<Vec<u8>> = (0..n).map(raw_frame).collect();
        parts.insert(i, raw_frame(i));
        out.push((format!("frame {i} ({name}) repeated in place"), splice(parts)));
        let mut fs = frames.clone();
        fs.insert(i, frames[i].clone());
        out.push((format!("frame {i} ({name}) repeated, new index"), assemble(&fs)));
        let parts: Vec<Vec<u8>> = (0..n).filter(|&j| j != i).map(raw_frame).collect();
        out.push((format!("frame {i} ({name}) dropped in place"), splice(parts)));
        let mut fs = frames.clone();
        fs.remove(i);
        out.push((format!("frame {i} ({name}) dropped, new index"), assemble(&fs)));
        // The last checkpoint's kind changed.
        let mut fs = frames.clone();
        fs[i].kind = if fs[i].kind == FrameKind::Checkpoint {
            FrameKind::Events
        } else {
            FrameKind::Checkpoint
        };
        out.push((
            format!("frame {i} ({name}) relabelled {}, new index", fs[i].kind.name()),
            assemble(&fs),
        ));
    }
    // The checkpoint and index frames swapped at the end of the file.
    if let Some(last_cp) = entries.iter().rposition(|e| e.kind == FrameKind::Checkpoint as u8) {
        let mut parts: Vec<Vec<u8>> = (0..n).map(raw_frame).collect();
        let cp = parts.remove(last_cp);
        let mut m = splice(parts);
        let tail = m.split_off(m.len() - format::TRAILER_LEN);
        m.extend(cp);
        m.extend(tail);
        out.push(("the last checkpoint moved after the index".into(), m));
    }

    // Lying header fields with checksums made to agree: lengths, icounts.
    for (i, &s) in starts.iter().enumerate().take(n) {
        let name = kind_name(entries[i].kind);
        let lies: [(usize, &str, i64); 6] = [
            (8, "payload length", 1),
            (8, "payload length", -1),
            (12, "uncompressed length", 1),
            (12, "uncompressed length", -1),
            (16, "icount", 1),
            (16, "icount", -1),
        ];
        for (field, what, delta) in lies {
            let mut m = bytes.to_vec();
            if field == 16 {
                let v = u64::from_le_bytes(m[s + 16..s + 24].try_into().expect("8 bytes"));
                m[s + 16..s + 24].copy_from_slice(&v.wrapping_add_signed(delta).to_le_bytes());
            } else {
                let v = u32::from_le_bytes(m[s + field..s + field + 4].try_into().expect("4 bytes"));
                m[s + field..s + field + 4].copy_from_slice(&v.wrapping_add_signed(delta as i32).to_le_bytes());
            }
            fix_crc(&mut m, s);
            out.push((format!("frame {i} ({name}) {what} {delta:+}, checksum fixed"), m));
        }
        // The same icount lies with a new index that agrees.
        for delta in [1i64, -1, 1 << 40] {
            let mut fs = frames.clone();
            fs[i].icount = fs[i].icount.wrapping_add_signed(delta);
            out.push((format!("frame {i} ({name}) icount {delta:+}, new index"), assemble(&fs)));
        }
    }

    // Lying contents, re-encoded with good checksums and a new index.
    // Each page's contents as of the checkpoint before the one being lied
    // about: dropping a page that was written with the bytes it already
    // held changes nothing, so it is no lie.
    let mut ram: std::collections::HashMap<u32, Vec<u8>> = std::collections::HashMap::new();
    for (i, f) in frames.iter().enumerate() {
        let mut lie = |what: &str, raw: Vec<u8>| {
            let mut fs = frames.clone();
            fs[i].raw = raw;
            out.push((format!("frame {i} ({}) contents: {what}", f.kind.name()), assemble(&fs)));
        };
        match f.kind {
            FrameKind::Checkpoint => {
                let cp: CheckpointFrame = postcard::from_bytes(&f.raw).expect("checkpoint");
                let mut c = cp.clone();
                c.state.icount += 1;
                lie("state icount +1", encode(&c));
                let mut c = cp.clone();
                let mut state = c.state.machine_state().expect("saved state");
                state.cpu.regs[0] ^= 1;
                c.state = SavedState::of(&state).expect("encodes");
                lie("eax changed", encode(&c));
                // The saved parts: each must be there once, in the version
                // this build reads, and decode exactly.
                let part = rng.below(cp.state.sections.len());
                let name = cp.state.sections[part].name.clone();
                let mut c = cp.clone();
                c.state.sections[part].version += 1;
                lie(&format!("{name} section version +1"), encode(&c));
                let mut c = cp.clone();
                c.state.sections.remove(part);
                lie(&format!("{name} section dropped"), encode(&c));
                let mut c = cp.clone();
                c.state.sections.push(cp.state.sections[part].clone());
                lie(&format!("{name} section repeated"), encode(&c));
                let mut c = cp.clone();
                c.state.sections[part].data.push(0);
                lie(&format!("{name} section with a byte appended"), encode(&c));
                let mut c = cp.clone();
                c.state.sections[part].data.pop();
                lie(&format!("{name} section cut short"), encode(&c));
                let mut c = cp.clone();
                c.state.sections.push(Section {
                    name: "lapic".into(),
                    version: 1,
                    data: Vec::new(),
                });
                lie("a section for a part this build lacks", encode(&c));
                let mut c = cp.clone();
                c.digest[rng.below(32)] ^= 1;
                lie("digest changed", encode(&c));
                let mut c = cp.clone();
                c.inputs_consumed += 1;
                lie("inputs consumed +1", encode(&c));
                let mut c = cp.clone();
                c.events_before += 1;
                lie("events before +1", encode(&c));
                let mut c = cp.clone();
                c.sequence += 1;
                lie("sequence +1", encode(&c));
                let mut c = cp.clone();
                c.serial.push(b'!');
                lie("serial output longer", encode(&c));
                let mut c = cp.clone();
                c.stopped = match c.stopped {
                    Some(_) => None,
                    None => Some("halted with interrupts disabled".into()),
                };
                lie("stop changed", encode(&c));
                let changed: Vec<usize> = (cp.pages.iter().enumerate())
                    .filter(|(_, (page, bytes))| match ram.get(page) {
                        Some(old) => old != bytes,
                        None => bytes.iter().any(|&b| b != 0),
                    })
                    .map(|(k, _)| k)
                    .collect();
                if !changed.is_empty() {
                    let mut c = cp.clone();
                    c.pages.remove(changed[rng.below(changed.len())]);
                    lie("a changed page dropped", encode(&c));
                }
                if !cp.pages.is_empty() {
                    let mut c = cp.clone();
                    let p = rng.below(c.pages.len());
                    let b = rng.below(4096);
                    c.pages[p].1[b] ^= 0x80;
                    lie("a page byte changed", encode(&c));
                    let mut c = cp.clone();
                    c.pages[0].0 = u32::MAX;
                    lie("a page past the end of RAM", encode(&c));
                }
                let mut raw = f.raw.clone();
                raw.push(0);
                lie("a byte appended", raw);
                ram.extend(cp.pages);
            }
            FrameKind::Events => {
                let b = EventBatch::decode(&f.raw, 0).expect("events");
                let mut c = b.clone();
                c.events.reverse();
                if c != b {
                    lie("events reversed", c.encode());
                }
                let mut c = b.clone();
                c.events.pop();
                lie("the last event dropped", c.encode());
                let mut c = b.clone();
                c.events.clear();
                lie("no events", c.encode());
            }
            FrameKind::Inputs => {
                let b: InputBatch = postcard::from_bytes(&f.raw).expect("inputs");
                let mut c = b.clone();
                c.records.pop();
                lie("the last input dropped", encode(&c));
                let mut c = b.clone();
                c.records.push(b.records[0]);
                lie("an input repeated", encode(&c));
                // A user's stop that the end of the run does not tell of.
                let mut c = b.clone();
                let last = match *b.records.last().expect("a record") {
                    InputRecord::Serial { now, .. } | InputRecord::Wait { now, .. } | InputRecord::Stop { now } => now,
                };
                c.records.push(InputRecord::Stop { now: last });
                lie("the user's stop appended", encode(&c));
                let mut c = b.clone();
                c.records.insert(0, InputRecord::Stop { now: 0 });
                lie("the user's stop before other input", encode(&c));
            }
            FrameKind::Learning => {
                let l: LearningFrame = postcard::from_bytes(&f.raw).expect("learning");
                let mut c = l.clone();
                c.sequence += 1;
                lie("sequence +1", encode(&c));
                let mut c = l.clone();
                c.learning.full = !c.learning.full;
                lie("whole and changes swapped", encode(&c));
                let mut c = l.clone();
                c.learning.patch_count += 1;
                lie("a patch more than it holds", encode(&c));
                if let Some(p) = l.learning.patches.values().next() {
                    let mut c = l.clone();
                    if let Some(q) = c.learning.patches.values_mut().next() {
                        q.bytes = vec![0x0F; p.bytes.len() + 16];
                    }
                    lie("a patch's instruction too long", encode(&c));
                }
                if let Some((&page, sites)) = l.learning.scanned.iter().find(|(_, s)| !s.is_empty()) {
                    let mut c = l.clone();
                    let mut bad = sites.clone();
                    bad[0].offset = 0xFFF;
                    bad[0].len = 2;
                    c.learning.scanned.insert(page, bad);
                    lie("a scanned instruction past its page", encode(&c));
                }
                let mut raw = f.raw.clone();
                raw.push(0);
                lie("a byte appended", raw);
            }
            FrameKind::End => {
                let e: EndInfo = postcard::from_bytes(&f.raw).expect("end");
                let mut c = e.clone();
                c.icount += 1;
                lie("icount +1", encode(&c));
                let mut c = e.clone();
                c.events += 1;
                lie("events +1", encode(&c));
                let mut c = e.clone();
                c.serial_bytes += 1;
                lie("serial bytes +1", encode(&c));
                let mut c = e.clone();
                c.stop = "guest requested a reset".into();
                lie("stop changed", encode(&c));
            }
            FrameKind::Header => {
                let h: TraceHeader = postcard::from_bytes(&f.raw).expect("header");
                let mut c = h.clone();
                c.image_hashes.reverse();
                c.image_hashes.push("0".repeat(64));
                lie("image hashes wrong", encode(&c));
                for ram in [1 << 40, h.config.ram_bytes + 1, 0] {
                    let mut c = h.clone();
                    c.config.ram_bytes = ram;
                    lie(&format!("RAM size {ram}"), encode(&c));
                }
            }
            FrameKind::Index => {}
        }
    }
    out
}

/// What verifying a mutant came to.
enum Outcome {
    /// The file was refused, naming what is wrong (exit 2).
    Refused(String),
    /// Every frame there checked out and matched, but the recording never
    /// finished (exit 2 unless --allow-incomplete).
    Incomplete,
    /// Exit 1: a divergence.
    Diverged(String),
    /// Exit 0.
    Verified,
}

fn verify_bytes(bytes: Vec<u8>) -> Outcome {
    let trace = match Trace::from_bytes(bytes) {
        Ok(t) => t,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    match replay::verify(&trace, ReplayOptions::default(), &mut |_| {}, &mut |_| {}) {
        Err(e) => Outcome::Refused(e.to_string()),
        Ok(v) if v.divergence.is_some() => Outcome::Diverged(v.divergence.map(|d| d.to_string()).unwrap_or_default()),
        Ok(v) if v.complete => Outcome::Verified,
        Ok(_) => Outcome::Incomplete,
    }
}

/// Verifies on a thread of its own, so a hang is a failure naming the
/// mutant rather than a test that never ends.
fn verify_bounded(bytes: Vec<u8>) -> Result<Outcome, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(move || verify_bytes(bytes));
        let _ = tx.send(r.map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        }));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(panic)) => Err(format!("panicked: {panic}")),
        Err(_) => Err("did not finish within 60 s".into()),
    }
}

#[test]
fn no_damaged_trace_verifies_or_diverges() {
    let seed = std::env::var("RINGBACK_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005E_ED0F_7EA5_u64);
    let mut rng = Rng(seed | 1);
    let mut total = 0;
    let mut refused = 0;
    let mut failures = Vec::new();
    for (name, bytes) in bases() {
        // The base itself verifies: the mutants' failures are theirs.
        assert!(
            matches!(verify_bytes(bytes.clone()), Outcome::Verified),
            "{name}: the unmutated recording must verify"
        );
        for (what, m) in mutants(&bytes, &mut rng) {
            if m == bytes {
                continue; // a lie that changed nothing (e.g. a no-op swap)
            }
            total += 1;
            match verify_bounded(m) {
                Ok(Outcome::Refused(why)) => {
                    refused += 1;
                    // The error names where: a byte offset, or what is missing.
                    if !(why.contains("at byte")
                        || why.contains("has no")
                        || why.contains("bad magic")
                        || why.contains("format"))
                    {
                        failures.push(format!("{name}: {what}: refused without saying where: {why}"));
                    }
                }
                Ok(Outcome::Incomplete) => {}
                Ok(Outcome::Diverged(d)) => failures.push(format!("{name}: {what}: reported as a divergence: {d}")),
                Ok(Outcome::Verified) => failures.push(format!("{name}: {what}: verified")),
                Err(e) => failures.push(format!("{name}: {what}: {e}")),
            }
        }
    }
    eprintln!("trace mutations: {total} mutants of 4 recordings (seed {seed}), {refused} refused, the rest incomplete");
    assert!(total > 1000, "only {total} mutants");
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {total} damaged traces were not reported as damaged:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
