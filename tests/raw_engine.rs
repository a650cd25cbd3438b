//! The raw engine as its users see it: what ring compression leaks without
//! the code scanner, that each injected patch-bug class changes what the
//! guest computes (and so fails the differential tests), that patching cuts
//! the trap-heavy loop's exits, and the events the monitor emits.

mod common;

use std::sync::{Arc, Mutex};

use vm::engine::blocks::BlockCache;
use vm::engine::jit::JitConfig;
use vm::engine::raw::{Injection, RawConfig};
use vm::events::{Event, EventLog, EventRecord, PatchCause};
use vm::host::NoInput;
use vm::machine::{CaptureConsole, Engine, Kernel, Machine, StopReason};

const OUT_DIR: &str = env!("OUT_DIR");
const LIMIT: u64 = 200_000_000;

fn kernel(name: &str, append: &str) -> Kernel {
    let path = format!("{OUT_DIR}/{name}.elf");
    Kernel::Multiboot {
        image: std::fs::read(&path).unwrap_or_else(|e| panic!("test kernel {path}: {e}")),
        cmdline: format!("{name}.elf {append}"),
        modules: vec![],
    }
}

fn run(kernel: &Kernel, engine: Engine, config: RawConfig) -> (String, Machine) {
    let mut host = NoInput::default();
    let mut m = Machine::boot(32 << 20, kernel, &mut host).expect("boot");
    m.engine = engine;
    m.raw.config = config;
    let mut console = CaptureConsole::default();
    let stop = m.run(LIMIT, &mut host, &mut console);
    let out = String::from_utf8_lossy(&console.serial).into_owned();
    assert_eq!(stop, StopReason::ExitDevice(1), "{engine:?} {config:?}:\n{out}");
    (out, m)
}

#[test]
fn ring_compression_shows_ring_1_values_without_the_scanner() {
    let k = kernel("ringleak", "");
    let (reference, _) = run(&k, Engine::Emulate, RawConfig::default());
    assert!(reference.contains("ring 0 sees: IOPL 3, IF 1, CS 0008"), "{reference}");
    // With the scanner, PUSHF, MOV r/m,CS and SGDT are patched before they run.
    let (scanned, _) = run(&k, Engine::Raw, RawConfig::default());
    assert_eq!(scanned, reference);
    // Without it they run at ring 1 and show what ring 1 sees.
    let no_scan = RawConfig {
        scanner: false,
        ..RawConfig::default()
    };
    let (leaked, m) = run(&k, Engine::Raw, no_scan);
    assert!(
        leaked.contains("ring 0 sees: IOPL 0, IF 1, CS 0009, GDT base ffc00000"),
        "{leaked}"
    );
    assert!(m.raw.monitor.engine_switches > 0);
}

/// The line of patchbugs' output that each class changes.
const CLASSES: &[(&str, &str)] = &[
    ("pushf-leak", "A pushf in cli"),
    ("sti-shadow", "B sti shadow"),
    ("scan-miss", "C jump table"),
    ("stale-patch", "D rewritten code"),
];

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' line in:\n{out}"))
}

#[test]
fn each_injected_patch_bug_changes_what_the_guest_computes() {
    let k = kernel("patchbugs", "");
    let (reference, e) = run(&k, Engine::Emulate, RawConfig::default());
    let (clean, r) = run(&k, Engine::Raw, RawConfig::default());
    assert_eq!(clean, reference, "no injection: the raw engine agrees");
    assert_eq!(r.state(), e.state());
    for &(bug, prefix) in CLASSES {
        let config = RawConfig {
            inject: bug.parse::<Injection>().expect("known bug"),
            ..RawConfig::default()
        };
        // The output differs, so the differential tests (same output, state
        // and RAM as the reference) fail.
        let (out, _) = run(&k, Engine::Raw, config);
        assert_ne!(
            line(&out, prefix),
            line(&reference, prefix),
            "{bug} must change '{prefix}'"
        );
    }
}

#[test]
fn a_call_into_the_middle_of_a_patched_block_runs_the_patch() {
    let k = kernel("patchbugs", "");
    let (reference, _) = run(&k, Engine::Emulate, RawConfig::default());
    let prefix = "E call into a patched block";
    let (raw, _) = run(&k, Engine::Raw, RawConfig::default());
    assert_eq!(line(&raw, prefix), line(&reference, prefix));
    // The section does exercise a sensitive site: unscanned, it leaks.
    let no_scan = RawConfig {
        scanner: false,
        ..RawConfig::default()
    };
    let (leaked, _) = run(&k, Engine::Raw, no_scan);
    assert_ne!(line(&leaked, prefix), line(&reference, prefix));
}

#[test]
fn patching_cuts_the_trap_heavy_loops_exits_tenfold() {
    let k = kernel("bench", "trap 4");
    let (with, patched) = run(&k, Engine::Raw, RawConfig::default());
    let no_patch = RawConfig {
        patching: false,
        ..RawConfig::default()
    };
    let (without, unpatched) = run(&k, Engine::Raw, no_patch);
    assert_eq!(with, without);
    let (a, b) = (patched.raw.monitor.exits, unpatched.raw.monitor.exits);
    assert!(
        b >= 80_000,
        "the loop traps at every sensitive instruction unpatched: {b}"
    );
    assert!(a * 10 <= b, "patched {a} exits, unpatched {b}");
    // Each kind of site in the loop got its patch.
    let mnemonics: Vec<String> = patched
        .raw
        .patches
        .patches
        .iter()
        .map(|p| format!("{:?}", p.inst.mnemonic()).to_lowercase())
        .collect();
    for m in ["cli", "sti", "pushfd", "popfd", "in", "out"] {
        assert!(mnemonics.iter().any(|x| x == m), "no {m} patch in {mnemonics:?}");
    }
}

#[test]
fn the_monitor_emits_typed_events_in_icount_order() {
    let k = kernel("patchbugs", "");
    let log = Arc::new(Mutex::new(EventLog::default()));
    let mut host = NoInput::default();
    let mut m = Machine::boot(32 << 20, &k, &mut host).expect("boot");
    m.events.attach(Box::new(log.clone()));
    let stop = m.run(LIMIT, &mut host, &mut CaptureConsole::default());
    assert_eq!(stop, StopReason::ExitDevice(1));
    let records = log.lock().expect("log").records.clone();
    if let Some(w) = records.windows(2).find(|w| w[0].icount > w[1].icount) {
        panic!("events out of order: {:?} then {:?}", w[0], w[1]);
    }
    let has = |f: &dyn Fn(&Event) -> bool| records.iter().any(|r| f(&r.event));
    assert!(has(&|e| matches!(e, Event::Scan { marked, .. } if *marked > 0)));
    assert!(has(&|e| matches!(
        e,
        Event::PatchInstalled {
            cause: PatchCause::Scanned,
            ..
        }
    )));
    assert!(has(&|e| matches!(
        e,
        Event::PatchInstalled {
            cause: PatchCause::Hot(_),
            ..
        }
    )));
    assert!(has(&|e| matches!(e, Event::Trap { .. })));
    assert!(has(&|e| matches!(e, Event::Emulated { .. })));
    assert!(has(&|e| matches!(e, Event::EngineSwitch { .. })));
    assert!(has(&|e| matches!(e, Event::Interrupt { vector: 0x20 })));
    assert!(has(&|e| matches!(e, Event::SelfModifyingWrite { .. })));
    assert!(has(&|e| matches!(e, Event::PatchRemoved { .. })));
    // Counters and events tell the same story.
    let traps = records.iter().filter(|r| matches!(r.event, Event::Trap { .. })).count() as u64;
    assert_eq!(traps, m.raw.monitor.exits);
}

#[test]
fn patches_switched_off_mid_run_trap_again_with_the_same_results() {
    let k = kernel("bench", "trap 3");
    let (reference, e) = run(&k, Engine::Emulate, RawConfig::default());
    let mut host = NoInput::default();
    let mut m = Machine::boot(32 << 20, &k, &mut host).expect("boot");
    let mut console = CaptureConsole::default();
    assert_eq!(m.run(e.icount() / 2, &mut host, &mut console), StopReason::InsnLimit);
    let installed = m.raw.patches.patches.len() as u32;
    assert!(installed > 0);
    let exits_before = m.raw.monitor.exits;
    let toggled = (0..installed).filter(|&i| m.set_patch_enabled(i, false)).count();
    assert!(toggled >= 6, "the loop's inline patches: {toggled}");
    assert_eq!(m.run(LIMIT, &mut host, &mut console), StopReason::ExitDevice(1));
    assert_eq!(String::from_utf8_lossy(&console.serial), reference);
    assert_eq!(m.state(), e.state());
    assert!(m.raw.monitor.exits - exits_before > 10_000, "disabled sites trap again");
}

/// Workloads for the event comparisons below: patches of every kind, trap
/// loops with interrupts on and off, data beside code, the local APIC's
/// MMIO and task switches.
const EVENT_WORKLOADS: [(&str, &str); 6] = [
    ("patchbugs", ""),
    ("bench", "trap 2"),
    ("bench", "trapoff 2"),
    ("bench", "datacode 1"),
    ("apic", ""),
    ("tasks", ""),
];

/// Instructions between the points where the event tests forget everything
/// cached, as a recorder's checkpoints do.
const SEGMENT: u64 = 250_000;

fn logging(m: &mut Machine) -> Arc<Mutex<EventLog>> {
    let log = Arc::new(Mutex::new(EventLog::default()));
    m.events.attach(Box::new(log.clone()));
    log
}

fn take_events(m: &mut Machine, log: &Arc<Mutex<EventLog>>) -> Vec<EventRecord> {
    m.events.flush();
    std::mem::take(&mut log.lock().expect("log").records)
}

/// The monitor's events (traps, patches, engine switches, device accesses,
/// each with its icount and PC) are the same whether blocks are
/// interpreted, compiled at their first entry or compiled when hot, with
/// everything cached forgotten every `SEGMENT` instructions: translations
/// and their chaining are invisible to the raw engine too, not only to the
/// guest.
#[test]
fn the_monitors_events_do_not_depend_on_the_compiler() {
    fn events(k: &Kernel, jit: JitConfig) -> (Vec<EventRecord>, String) {
        let mut host = NoInput::default();
        let mut m = Machine::boot(32 << 20, k, &mut host).expect("boot");
        m.blocks.jit.config = jit;
        let log = logging(&mut m);
        let mut console = CaptureConsole::default();
        let stop = loop {
            match m.run(m.icount() + SEGMENT, &mut host, &mut console) {
                StopReason::InsnLimit if m.icount() < LIMIT => m.forget_cached_code(),
                stop => break stop,
            }
        };
        assert_eq!(stop, StopReason::ExitDevice(1), "{jit:?}");
        let records = take_events(&mut m, &log);
        (records, String::from_utf8_lossy(&console.serial).into_owned())
    }
    for (name, append) in EVENT_WORKLOADS {
        let k = kernel(name, append);
        let (interpreted, out) = events(&k, JitConfig::OFF);
        assert!(interpreted.len() > 20, "{name} {append}: {} events", interpreted.len());
        for jit in [JitConfig::EAGER, JitConfig::default()] {
            let (compiled, compiled_out) = events(&k, jit);
            assert_eq!(compiled_out, out, "{name} {append} {jit:?}");
            first_difference(&interpreted, &compiled, &format!("{name} {append} {jit:?}"));
        }
    }
}

/// Every port and MMIO access is an event named after the instruction that
/// made it, on every engine: the block engine emits it right after that
/// instruction and goes on, the reference after each step.
#[test]
fn device_accesses_name_the_same_instruction_on_every_engine() {
    fn accesses(k: &Kernel, engine: Engine, jit: JitConfig) -> Vec<EventRecord> {
        let mut host = NoInput::default();
        let mut m = Machine::boot(32 << 20, k, &mut host).expect("boot");
        m.engine = engine;
        m.blocks.jit.config = jit;
        let log = logging(&mut m);
        let stop = m.run(LIMIT, &mut host, &mut CaptureConsole::default());
        assert_eq!(stop, StopReason::ExitDevice(1), "{engine:?} {jit:?}");
        let mut records = take_events(&mut m, &log);
        records.retain(|r| matches!(r.event, Event::Io { .. }));
        records
    }
    for (name, append) in EVENT_WORKLOADS {
        let k = kernel(name, append);
        let want = accesses(&k, Engine::Emulate, JitConfig::OFF);
        assert!(want.len() > 20, "{name} {append}: {} accesses", want.len());
        for engine in [Engine::Blocks, Engine::Raw] {
            for jit in [JitConfig::OFF, JitConfig::EAGER] {
                let got = accesses(&k, engine, jit);
                first_difference(&want, &got, &format!("{name} {append} on {engine:?}, {jit:?}"));
            }
        }
    }
}

/// What a replay restoring a checkpoint or a snapshot relies on: after the caches are
/// forgotten, a machine that sets its blocks and translations aside and
/// takes them back raises the same events and reaches the same state as
/// one that starts there with nothing cached at all.
#[test]
fn blocks_taken_back_after_a_checkpoint_act_as_blocks_built_anew() {
    for (name, append) in EVENT_WORKLOADS {
        let k = kernel(name, append);
        let mut host = NoInput::default();
        let mut warm = Machine::boot(32 << 20, &k, &mut host).expect("boot");
        let warm_log = logging(&mut warm);
        let mut console = CaptureConsole::default();
        let (mut taken_back, mut segments) = (0, 0);
        for segment in 0.. {
            segments += 1;
            let before = warm.blocks.stats.revived;
            let mut cold = warm.clone();
            cold.blocks = BlockCache::default();
            let cold_log = logging(&mut cold);
            let target = warm.icount() + SEGMENT;
            let stop = warm.run(target, &mut host, &mut console);
            let cold_stop = cold.run(target, &mut NoInput::default(), &mut CaptureConsole::default());
            let what = format!("{name} {append}, segment {segment}");
            assert_eq!(cold_stop, stop, "{what}");
            assert_eq!(cold.state(), warm.state(), "{what}");
            assert!(
                cold.platform.mem.ram() == warm.platform.mem.ram(),
                "{what}: RAM differs"
            );
            first_difference(
                &take_events(&mut cold, &cold_log),
                &take_events(&mut warm, &warm_log),
                &what,
            );
            taken_back += warm.blocks.stats.revived - before;
            if stop != StopReason::InsnLimit {
                assert_eq!(stop, StopReason::ExitDevice(1), "{what}");
                break;
            }
            warm.forget_cached_code();
        }
        assert!(
            segments == 1 || taken_back > 0,
            "{name} {append}: no block was taken back in {segments} segments"
        );
    }
}

fn first_difference(a: &[EventRecord], b: &[EventRecord], what: &str) {
    if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
        panic!("{what}: event {i} differs: {:?} against {:?}", a.get(i), b.get(i));
    }
}

/// The raw engine's learning saved as a trace would keep it (whole once,
/// then what changed since the save before) and put back into a copy of
/// the machine that has forgotten everything cached: from there the copy
/// decides exactly as the engine that went on learning, event for event,
/// where those decisions are guest-visible too (no scanner, injected patch
/// bugs). The saves folded together are the whole learning at each point.
const LEARNING_SEGMENT: u64 = 40_000;

#[test]
fn learning_put_back_decides_as_the_engine_it_was_saved_from() {
    let configs = common::learning_configurations();
    for (name, append) in [("patchbugs", ""), ("bench", "trap 1"), ("bench", "trapoff 1")] {
        let k = kernel(name, append);
        for raw in configs {
            let mut host = NoInput::default();
            let mut warm = Machine::boot(32 << 20, &k, &mut host).expect("boot");
            warm.raw.config = raw;
            let warm_log = logging(&mut warm);
            let mut console = CaptureConsole::default();
            let mut saved: Option<vm::engine::raw::learning::RawLearning> = None;
            let mut put_back = 0;
            for segment in 0.. {
                let what = format!(
                    "{name} {append}, scanner {}, {:?}, segment {segment}",
                    raw.scanner, raw.inject
                );
                // What a checkpoint does that the guest could see.
                warm.cpu.tlb.flush_all();
                let delta = warm.save_learning(saved.is_none());
                let learning = saved.get_or_insert_with(Default::default);
                learning.merge(&delta);
                assert_eq!(*learning, warm.clone().save_learning(true), "{what}: folded saves");
                let mut cold = warm.clone();
                cold.forget_cached_code();
                cold.restore_learning(learning).expect("put back");
                put_back += learning.scanned.len()
                    + learning.patch_count as usize
                    + learning.hot.len()
                    + learning.hot_entries.len();
                let cold_log = logging(&mut cold);
                // Short segments, so that saves fall between a site's first
                // traps and the patch they lead to.
                let target = warm.icount() + LEARNING_SEGMENT;
                let stop = warm.run(target, &mut host, &mut console);
                let cold_stop = cold.run(target, &mut NoInput::default(), &mut CaptureConsole::default());
                assert_eq!(cold_stop, stop, "{what}");
                assert_eq!(cold.state(), warm.state(), "{what}");
                assert!(cold.platform.mem.ram() == warm.platform.mem.ram(), "{what}: RAM");
                first_difference(
                    &take_events(&mut cold, &cold_log),
                    &take_events(&mut warm, &warm_log),
                    &what,
                );
                if stop != StopReason::InsnLimit {
                    break;
                }
            }
            assert!(put_back > 0, "{name} {append} {raw:?}: nothing learned was put back");
        }
    }
}

/// Bisect's delta debugging suppresses patches. Since a restore puts back
/// the patches the recorder had made, suppressing reaches those too: each
/// is switched off as if it had been installed so (its site traps, the
/// region it owned goes), and runs no more.
#[test]
fn suppressing_patches_switches_off_those_already_made() {
    use vm::engine::raw::patm::PatchState;
    let k = kernel("bench", "trap 2");
    let mut host = NoInput::default();
    let mut m = Machine::boot(32 << 20, &k, &mut host).expect("boot");
    let mut console = CaptureConsole::default();
    m.run(400_000, &mut host, &mut console);
    let enabled: Vec<_> = m
        .raw
        .patches
        .patches
        .iter()
        .filter(|p| p.state == PatchState::Enabled)
        .map(|p| (p.key(), p.region.clone()))
        .collect();
    assert!(
        enabled.iter().any(|(_, region)| !region.is_empty()),
        "a patch with a region: {enabled:?}"
    );
    m.suppress_patches(enabled.iter().map(|(key, _)| *key).collect());
    let hits = |m: &mut Machine| -> Vec<u64> {
        m.save_learning(false);
        m.raw.patches.patches.iter().map(|p| p.hits).collect()
    };
    let before = hits(&mut m);
    for (key, region) in &enabled {
        for &site in region {
            assert!(!m.raw.patches.in_region(site), "{key:?}: {site:?} still in a region");
        }
    }
    m.run(800_000, &mut host, &mut console);
    let after = hits(&mut m);
    for (i, p) in m.raw.patches.patches.iter().enumerate() {
        if enabled.iter().any(|(key, _)| *key == p.key()) && i < before.len() {
            assert_ne!(p.state, PatchState::Enabled, "{:?}", p.key());
            assert_eq!(after[i], before[i], "{:?} ran while suppressed", p.key());
        }
    }
    assert!(
        m.raw.monitor.exits > 1000,
        "the suppressed sites trap: {} exits",
        m.raw.monitor.exits
    );
}
