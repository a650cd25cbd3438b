//! Traces end to end: every test guest recorded and replayed with digest
//! checks on every engine; seeking equals running straight there; serial
//! input replays with no host attached; damaged files give errors, not
//! panics.

mod common;

use std::path::PathBuf;

use replay::model::TraceHeader;
use replay::timeline::Predicate;
use replay::{ReplayOptions, Replayer, Trace, TraceError};
use vm::engine::jit::JitConfig;
use vm::engine::raw::RawConfig;
use vm::host::{HostInput, NoInput, ScriptedInput};
use vm::machine::{CaptureConsole, Engine, Kernel, Machine, StopReason};

const OUT_DIR: &str = env!("OUT_DIR");
const LIMIT: u64 = 200_000_000;

fn guest(name: &str) -> Vec<u8> {
    let path = format!("{OUT_DIR}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("test kernel {path}: {e}"))
}

fn multiboot(name: &str, append: &str) -> Kernel {
    Kernel::Multiboot {
        image: guest(&format!("{name}.elf")),
        cmdline: format!("{name}.elf {append}"),
        modules: vec![],
    }
}

/// A scratch path no other test (they run in parallel) uses.
fn temp(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("ringback-test-{}-{n}-{name}.rbt", std::process::id()))
}

/// Records `kernel` on `engine`; returns the trace bytes, the output and
/// the final machine.
fn record(
    name: &str,
    kernel: &Kernel,
    engine: Engine,
    raw: RawConfig,
    input: &[u8],
    interval: u64,
) -> (Vec<u8>, String, Machine) {
    record_with(name, kernel, engine, raw, input, interval, false)
}

fn record_with(
    name: &str,
    kernel: &Kernel,
    engine: Engine,
    raw: RawConfig,
    input: &[u8],
    interval: u64,
    adaptive: bool,
) -> (Vec<u8>, String, Machine) {
    let mut host = ScriptedInput::new(1_700_000_000, input).starting_at(1_000_000);
    let rtc_start = host.rtc_start();
    let mut m = Machine::boot(32 << 20, kernel, &mut NoInput { rtc_start }).expect("boot");
    m.engine = engine;
    m.raw.config = raw;
    let header = TraceHeader::for_machine("test", kernel, &m, rtc_start, interval, adaptive);
    let path = temp(name);
    let mut console = CaptureConsole::default();
    let summary = replay::record(&path, &header, &mut m, &mut host, &mut console, LIMIT, &mut |_| {}).expect("record");
    assert_ne!(summary.stop, StopReason::InsnLimit, "{name} did not finish");
    let bytes = std::fs::read(&path).expect("read trace");
    let _ = std::fs::remove_file(&path);
    (bytes, String::from_utf8_lossy(&console.serial).into_owned(), m)
}

fn replay_all(trace: &Trace, engine: Engine, raw: RawConfig, jit: JitConfig) -> (String, Replayer<'_>) {
    let mut r = Replayer::new(
        trace,
        ReplayOptions {
            engine: Some(engine),
            raw: Some(raw),
            jit: Some(jit),
        },
    )
    .expect("replayer");
    let divergence = r.run_all(true, &mut |_| {}).expect("replay");
    assert!(
        divergence.is_none(),
        "diverged: {}",
        divergence.map(|d| d.to_string()).unwrap_or_default()
    );
    (String::from_utf8_lossy(&r.console.serial).into_owned(), r)
}

const GUESTS: &[&str] = &[
    "hello",
    "paging",
    "pagefault",
    "pit",
    "syscall",
    "triplefault",
    "demo",
    "cpu",
    "echo",
    "platform",
    "ringleak",
    "patchbugs",
    "apic",
    "tasks",
    "testdev",
];

#[test]
fn every_guest_replays_identically_on_every_engine() {
    // Recorded on every engine, replayed on the reference and on every
    // engine configuration (the shared list in tests/common).
    let mut replay_on = vec![(Engine::Emulate, RawConfig::default(), JitConfig::OFF)];
    replay_on.extend(
        common::engine_configurations()
            .into_iter()
            .map(|(_, e, c, j)| (e, c, j)),
    );
    for name in GUESTS {
        let kernel = multiboot(name, "");
        let input = b"typed\nquit\n";
        for engine in Engine::ALL {
            let (bytes, out, m) = record(name, &kernel, engine, RawConfig::default(), input, 300_000);
            let trace = Trace::from_bytes(bytes).expect("open");
            assert!(trace.indexed && trace.end.is_some(), "{name}: a finished trace");
            for &(r_engine, r_raw, r_jit) in &replay_on {
                let (replayed, r) = replay_all(&trace, r_engine, r_raw, r_jit);
                assert_eq!(
                    replayed, out,
                    "{name}: recorded on {engine:?}, replayed on {r_engine:?}"
                );
                assert_eq!(r.machine.state(), m.state(), "{name}: final state");
                assert!(
                    r.machine.platform.mem.ram() == m.platform.mem.ram(),
                    "{name}: final RAM"
                );
            }
        }
    }
}

#[test]
fn seeking_equals_running_straight_there() {
    let kernel = multiboot("demo", "");
    // Adaptive checkpoints: irregular positions to seek between.
    let (bytes, _, m) = record_with("seek", &kernel, Engine::Raw, RawConfig::default(), b"", 100_000, true);
    let trace = Trace::from_bytes(bytes).expect("open");
    let marks: Vec<u64> = trace.checkpoint_frames().iter().map(|f| f.icount).collect();
    let gaps: std::collections::BTreeSet<u64> = marks.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() > 2, "the interval adapted: {marks:?}");
    let end = m.icount();
    let mut seeker = Replayer::new(&trace, ReplayOptions::default()).expect("replayer");
    // A fixed pseudo-random sequence, forwards and backwards.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..12 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let target = x % end;
        seeker.seek(target).expect("seek");
        let mut straight = Replayer::new(&trace, ReplayOptions::default()).expect("replayer");
        straight.run_to(target, false).expect("run");
        assert_eq!(seeker.icount(), target);
        assert_eq!(seeker.machine.state(), straight.machine.state(), "at {target}");
        assert!(
            seeker.machine.platform.mem.ram() == straight.machine.platform.mem.ram(),
            "RAM at {target}"
        );
        assert_eq!(
            seeker.console.serial, straight.console.serial,
            "serial output up to {target}"
        );
    }
}

/// The replay at `target` as a fresh replayer reaches it: the checkpoint
/// at or before it, restored, and run forward.
fn reference_at<'t>(trace: &'t Trace, target: u64) -> Replayer<'t> {
    let mut r = Replayer::new(trace, ReplayOptions::default()).expect("replayer");
    let k = r
        .checkpoint_icounts()
        .iter()
        .rposition(|&c| c <= target)
        .expect("a checkpoint");
    r.restore(k).expect("restore");
    r.run_to(target, false).expect("run");
    r
}

fn assert_same_place(r: &Replayer, reference: &Replayer, what: &str) {
    assert_eq!(r.icount(), reference.icount(), "{what}");
    assert_eq!(r.machine.state(), reference.machine.state(), "{what}");
    assert!(
        r.machine.platform.mem.ram() == reference.machine.platform.mem.ram(),
        "RAM {what}"
    );
    assert_eq!(r.console.serial, reference.console.serial, "serial output {what}");
    assert_eq!(r.input.cursor, reference.input.cursor, "input consumed {what}");
}

/// What a debugger does to a replay kept for going back (image, undo
/// records, snapshots): runs forward, steps back across checkpoints, jumps
/// back and forth. Every place is the one a fresh replayer reaches, and
/// the recording's digests hold when the replay goes on from there.
#[test]
fn going_back_through_history_lands_where_a_fresh_replay_does() {
    // Page tables rewritten all the time (TLB state matters), memory
    // rewritten all the time, and the demo's interrupts and output.
    for args in ["paging 200", "mem 1", ""] {
        let kernel = if args.is_empty() {
            multiboot("demo", "")
        } else {
            multiboot("bench", args)
        };
        go_back_through_history(&kernel, args);
    }
}

fn go_back_through_history(kernel: &Kernel, name: &str) {
    // Intervals long enough for a seek to leave several snapshots.
    let (bytes, _, m) = record("history", kernel, Engine::Raw, RawConfig::default(), b"", 1_000_000);
    let trace = Trace::from_bytes(bytes).expect("open");
    let end = m.icount();
    let marks: Vec<u64> = trace.checkpoint_frames().iter().map(|f| f.icount).collect();
    assert!(marks.len() > 3, "{name}: enough checkpoints to cross: {marks:?}");
    let mut r = Replayer::new(&trace, ReplayOptions::default()).expect("replayer");
    r.keep_history();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n.max(1)
    };
    for round in 0..6 {
        // Forward as gdb's continue does, to somewhere ahead.
        let here = r.icount();
        let target = here + next(end - here);
        r.resume(target, &[], &[]).expect("resume");
        assert_same_place(
            &r,
            &reference_at(&trace, target),
            &format!("{name} round {round}: after running to {target}"),
        );
        // Steps back, the first of them across a checkpoint when one is near.
        let crossing = marks.iter().rev().find(|&&c| c > 0 && c < target).map(|&c| c + 1);
        if let Some(c) = crossing.filter(|&c| c < target) {
            r.seek(c).expect("seek");
        }
        for _ in 0..3 {
            let t = r.icount().saturating_sub(1);
            r.seek(t).expect("step back");
            assert_same_place(
                &r,
                &reference_at(&trace, t),
                &format!("{name} round {round}: stepped back to {t}"),
            );
        }
        // Far back, then the recording's digests up to the next checkpoint.
        let t = next(r.icount());
        r.seek(t).expect("seek back");
        assert_same_place(
            &r,
            &reference_at(&trace, t),
            &format!("{name} round {round}: back to {t}"),
        );
        if let Some(&c) = marks.iter().find(|&&c| c > t) {
            let d = r.run_to(c, true).expect("verify");
            assert!(
                d.is_none(),
                "{name} round {round}: from {t}: {}",
                d.map(|d| d.to_string()).unwrap_or_default()
            );
        }
    }
}

#[test]
fn serial_input_replays_without_a_host() {
    let kernel = multiboot("echo", "");
    let (bytes, out, _) = record(
        "echo",
        &kernel,
        Engine::Raw,
        RawConfig::default(),
        b"hello there\nquit\n",
        1_000_000,
    );
    assert!(out.contains("hello there"), "{out}");
    let trace = Trace::from_bytes(bytes).expect("open");
    assert!(!trace.inputs().expect("inputs").is_empty());
    let (replayed, _) = replay_all(&trace, Engine::Raw, RawConfig::default(), JitConfig::EAGER);
    assert_eq!(replayed, out);
}

/// A damaged trace opens with an error or as a readable prefix, and
/// replaying whatever opened ends in a result, never a panic.
fn survives(bytes: Vec<u8>) -> Result<(), TraceError> {
    let trace = Trace::from_bytes(bytes)?;
    let mut r = Replayer::new(&trace, ReplayOptions::default())?;
    let straight = r.run_all(true, &mut |_| {});
    // Going back and forth too (the image, undo records and snapshots
    // are built from the damaged frames), whatever the straight run said.
    let mut back = Replayer::new(&trace, ReplayOptions::default())?;
    back.keep_history();
    let end = back.end_icount();
    for target in [end / 2, end, end / 3, end.saturating_sub(1), 0] {
        back.seek(target)?;
    }
    straight?;
    Ok(())
}

#[test]
fn damaged_traces_give_errors_not_panics() {
    let kernel = multiboot("hello", "");
    let (bytes, _, _) = record("damage", &kernel, Engine::Raw, RawConfig::default(), b"", 20_000);
    let trace = Trace::from_bytes(bytes.clone()).expect("open");
    // Truncated at every frame boundary and inside every frame.
    let mut cuts = vec![0, 7, 15, 16];
    for f in &trace.frames {
        let o = f.offset as usize;
        cuts.extend([o, o + 1, o + 27, o + 28, o + 28 + f.payload_len as usize / 2]);
    }
    cuts.push(bytes.len() - 1);
    for cut in cuts {
        let prefix = bytes[..cut.min(bytes.len())].to_vec();
        match Trace::from_bytes(prefix) {
            Err(e) => assert!(!e.to_string().is_empty()),
            Ok(t) => {
                assert!(!t.indexed, "a cut trace has no valid index (cut at {cut})");
                let _ = survives(bytes[..cut].to_vec());
            }
        }
    }
    // Flipped bytes all over the file.
    for pos in (0..bytes.len()).step_by(61) {
        let mut b = bytes.clone();
        b[pos] ^= 0x5A;
        let _ = survives(b);
    }
    // Wrong magic and a newer format.
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(matches!(Trace::from_bytes(b), Err(TraceError::NotATrace)));
    let mut b = bytes.clone();
    let next = replay::format::FORMAT_VERSION + 1;
    b[8..12].copy_from_slice(&next.to_le_bytes());
    let e = Trace::from_bytes(b).expect_err("future version");
    assert_eq!(
        e.to_string(),
        format!(
            "trace written by format {next}, this build reads {}",
            replay::format::FORMAT_VERSION
        )
    );
}

#[test]
fn a_killed_recorder_leaves_a_replayable_prefix() {
    let kernel = multiboot("demo", "");
    let (bytes, _, _) = record("killed", &kernel, Engine::Raw, RawConfig::default(), b"", 500_000);
    let trace = Trace::from_bytes(bytes.clone()).expect("open");
    // Cut in the middle of the fourth checkpoint frame, as SIGKILL could.
    let cps = trace.checkpoint_frames();
    let cut = cps[3].offset as usize + 40;
    let partial = Trace::from_bytes(bytes[..cut].to_vec()).expect("a prefix opens");
    assert!(partial.damage.is_some() && partial.end.is_none());
    let mut r = Replayer::new(&partial, ReplayOptions::default()).expect("replayer");
    assert_eq!(r.end_icount(), cps[2].icount);
    assert!(r.run_all(true, &mut |_| {}).expect("replay").is_none());
    // Where input came in, a checkpoint follows its learning and input
    // frames: cut inside any checkpoint, the file still opens and verifies
    // up to the checkpoint before.
    let kernel = multiboot("echo", "");
    let (bytes, _, _) = record(
        "killed-echo",
        &kernel,
        Engine::Raw,
        RawConfig::default(),
        b"typed\nquit\n",
        300_000,
    );
    let trace = Trace::from_bytes(bytes.clone()).expect("open");
    let cps = trace.checkpoint_frames();
    let inputs: Vec<u64> = trace
        .frames_of(replay::format::FrameKind::Inputs)
        .map(|f| f.icount)
        .collect();
    assert!(
        cps.iter().skip(1).any(|c| inputs.contains(&c.icount)),
        "a checkpoint after input"
    );
    for k in 1..cps.len() {
        let cut = cps[k].offset as usize + 40;
        let partial = Trace::from_bytes(bytes[..cut].to_vec()).expect("a prefix opens");
        let mut r = Replayer::new(&partial, ReplayOptions::default()).expect("replayer");
        assert_eq!(r.end_icount(), cps[k - 1].icount, "cut in checkpoint {k}");
        assert!(
            r.run_all(true, &mut |_| {}).expect("replay").is_none(),
            "cut in checkpoint {k}"
        );
    }
}

/// traces/ holds small recordings made by earlier builds: a change that
/// alters what a guest computes, or the format, fails here.
#[test]
fn golden_traces_replay_and_verify() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("traces");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("traces/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("rbt") {
            continue;
        }
        let trace = Trace::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(trace.indexed, "{}: finished recording", path.display());
        let events = trace
            .events(0, u64::MAX)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!events.is_empty(), "{}: events", path.display());
        for engine in [Engine::Raw, Engine::Emulate] {
            let mut r = Replayer::new(
                &trace,
                ReplayOptions {
                    engine: Some(engine),
                    raw: None,
                    jit: None,
                },
            )
            .expect("replayer");
            let d = r.run_all(true, &mut |_| {}).expect("replay");
            assert!(
                d.is_none(),
                "{} on {engine:?}: {}",
                path.display(),
                d.map(|d| d.to_string()).unwrap_or_default()
            );
            assert!(r.at_end());
        }
        n += 1;
    }
    assert!(n >= 4, "golden traces found: {n}");
}

#[test]
fn searching_backwards_finds_the_last_breakpoint_hit_and_the_last_write() {
    let kernel = multiboot("pit", "");
    let (bytes, _, m) = record("backwards", &kernel, Engine::Raw, RawConfig::default(), b"", 200_000);
    let trace = Trace::from_bytes(bytes).expect("open");
    let end = m.icount();
    let from = end * 3 / 4;
    // The oracle: replay straight to `from`, one instruction at a time,
    // noting where each pc last ran and where a word of RAM last changed.
    let mut straight = Replayer::new(&trace, ReplayOptions::default()).expect("replayer");
    straight.run_to(from / 2, false).expect("run");
    let pc = vm::engine::raw::pc(&straight.machine.cpu);
    // A word of RAM that the code between `from / 2` and `from` changes.
    let mut later = Replayer::new(&trace, ReplayOptions::default()).expect("replayer");
    later.run_to(from, false).expect("run");
    let (a, b) = (straight.machine.platform.mem.ram(), later.machine.platform.mem.ram());
    let phys = (0..a.len() / 4)
        .map(|w| w * 4)
        .find(|&o| a[o..o + 4] != b[o..o + 4])
        .expect("some word changes") as u32;
    let word = |r: &Replayer| r.machine.platform.mem.read(phys, 4);
    let mut last_pc = None;
    let mut last_change = None;
    let mut before = word(&straight);
    while straight.icount() < from {
        let at = straight.icount();
        if vm::engine::raw::pc(&straight.machine.cpu) == pc {
            last_pc = Some(at);
        }
        straight.step().expect("step");
        let now = word(&straight);
        if now != before {
            last_change = Some(at);
        }
        before = now;
    }
    let mut r = Replayer::new(&trace, ReplayOptions::default()).expect("replayer");
    r.seek(from).expect("seek");
    assert_eq!(r.find_previous(Predicate::Pc(pc)).expect("search"), last_pc);
    assert_eq!(r.icount(), last_pc.expect("the pc ran"));
    assert_eq!(vm::engine::raw::pc(&r.machine.cpu), pc);
    r.seek(from).expect("seek");
    let found = r
        .find_previous(Predicate::Writes {
            start: phys,
            end: phys + 4,
        })
        .expect("search")
        .expect("a write");
    let changed = last_change.expect("the word changed");
    assert!(found >= changed && found < from, "found {found}, last change {changed}");
    // Nothing before the start.
    r.seek(0).expect("seek");
    assert_eq!(r.find_previous(Predicate::Pc(pc)).expect("search"), None);
}

// The APIC-timer-driven kernel (its timer in one-shot, periodic and
// TSC-deadline modes, self-IPIs, NMIs, the I/O APIC) recorded on every
// engine with the command line, and `replay --verify` on each trace: the
// file checks, then a replay whose every checkpoint digest must match.
#[test]
fn apic_kernel_records_and_verifies_on_every_engine() {
    let elf = format!("{OUT_DIR}/apic.elf");
    for engine in ["emulate", "blocks", "raw"] {
        let trace = temp(&format!("apic-{engine}")).to_string_lossy().into_owned();
        let recorded = common::ringback(&[
            "record",
            "-o",
            &trace,
            &elf,
            "--engine",
            engine,
            "--serial",
            "none",
            "--checkpoint-interval",
            "100000",
        ]);
        assert_eq!(
            recorded.status.code(),
            Some(1),
            "{engine}: {}",
            String::from_utf8_lossy(&recorded.stderr)
        );
        let verified = common::ringback(&["replay", "--verify", &trace]);
        let err = String::from_utf8_lossy(&verified.stderr);
        assert_eq!(verified.status.code(), Some(0), "{engine}: {err}");
        assert!(err.contains("checkpoints verified"), "{engine}: {err}");
        let _ = std::fs::remove_file(&trace);
    }
}

/// A replay that restores any checkpoint is the recording from there on:
/// the guest (every later digest) and the raw engine too (the same scans,
/// traps, patches and device accesses, event for event). The recorder's
/// engine goes on learning across checkpoints (it scans and patches as a
/// plain run does), and a restore puts back what it had learned there
/// (the learning frames), which matters where that learning is
/// guest-visible: without the scanner (ring compression leaks), under
/// injected patch bugs, and under any real patch bug, which bisect's
/// intervals must reproduce.
#[test]
fn a_replay_restoring_any_checkpoint_repeats_the_recording_engine_and_all() {
    let configs = common::learning_configurations();
    // The demo does not survive ring compression without the scanner.
    for (name, append, configs) in [
        ("patchbugs", "", &configs[..]),
        ("bench", "trap 3", &configs[..]),
        ("demo", "", &configs[..1]),
    ] {
        let kernel = multiboot(name, append);
        for &raw in configs {
            let what = format!("{name} {append}, scanner {}, {:?}", raw.scanner, raw.inject);
            let (bytes, _, recorded) = record(name, &kernel, Engine::Raw, raw, b"", 100_000);
            let mut host = ScriptedInput::new(1_700_000_000, b"").starting_at(1_000_000);
            let rtc_start = host.rtc_start();
            let mut plain = Machine::boot(32 << 20, &kernel, &mut NoInput { rtc_start }).expect("boot");
            plain.engine = Engine::Raw;
            plain.raw.config = raw;
            plain.run(LIMIT, &mut host, &mut CaptureConsole::default());
            assert_eq!(plain.icount(), recorded.icount(), "{what}");
            assert_eq!(plain.state(), recorded.state(), "{what}");
            assert_eq!(recorded.raw.scanner.stats, plain.raw.scanner.stats, "{what}: scans");
            assert_eq!(recorded.raw.patch_totals(), plain.raw.patch_totals(), "{what}: patches");
            let trace = Trace::from_bytes(bytes).expect("open");
            let marks: Vec<u64> = trace.checkpoint_frames().iter().map(|f| f.icount).collect();
            assert!(marks.len() > 4, "{what}: {} checkpoints", marks.len());
            let mut r = Replayer::new(&trace, ReplayOptions::default()).expect("replayer");
            for k in 1..marks.len() - 1 {
                let end = marks[(k + 2).min(marks.len() - 1)];
                r.restore(k).expect("restore");
                let log = std::sync::Arc::new(std::sync::Mutex::new(vm::events::EventLog::default()));
                r.machine.events.attach(Box::new(log.clone()));
                let divergence = r.run_to(end, true).expect("replay");
                assert!(
                    divergence.is_none(),
                    "{what}: from checkpoint {k}: {}",
                    divergence.map(|d| d.to_string()).unwrap_or_default()
                );
                r.machine.events.flush();
                let replayed: Vec<_> = std::mem::take(&mut log.lock().expect("log").records)
                    .into_iter()
                    .filter(|e| e.icount < end)
                    .collect();
                let recorded = trace.events(marks[k], end).expect("events");
                assert!(
                    replayed == recorded,
                    "{what}: from checkpoint {k}: {} events replayed, {} recorded; first difference {:?}",
                    replayed.len(),
                    recorded.len(),
                    replayed.iter().zip(&recorded).find(|(a, b)| a != b)
                );
            }
        }
    }
}
