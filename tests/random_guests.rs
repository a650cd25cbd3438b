//! Random guests, recorded and verified: short programs in real and
//! protected mode, assembled from instruction snippets and random bytes,
//! each recorded on every engine with small, random checkpoint intervals
//! and then verified as recorded and on the reference engine. Every way a
//! run can end (a halt with interrupts off or waiting for input that never
//! comes, a triple fault, a fault loop, the instruction limit, the exit
//! port, a wild jump) must replay to the recorded state: verification may
//! never report a divergence on an honest recording, and neither may bisect
//! (the reference against the raw engine with its patches) on the raw
//! engine's recordings.
//!
//! RINGBACK_GUEST_SEED=N replays a failing run; a failure names the seed,
//! the program's bytes and the engine.

mod common;

use common::Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;

use replay::bisect::{Bisector, Control, SideConfig};
use replay::model::TraceHeader;
use replay::{ReplayOptions, Trace};
use vm::engine::jit::JitConfig;
use vm::engine::raw::RawConfig;
use vm::host::{NoInput, ScriptedInput};
use vm::machine::{CaptureConsole, Engine, Kernel, Machine, StopReason};

const BASE: u32 = 0x7C00;
/// Image layout (offsets from BASE): code, then the protected-mode tables.
const GDT: u16 = 0x1C0;
const GDT_DESC: u16 = 0x1D8;
const IDT_DESC: u16 = 0x1E0;
const ZERO_DESC: u16 = 0x1E8; // six zero bytes: an IDT of limit 0
const UD2_HANDLER: u16 = 0x1F0; // ud2, the #UD handler of the fault loops
const IDT: u16 = 0x200; // 8 gates, all to UD2_HANDLER
const CODE_LIMIT: usize = GDT as usize;
const IMAGE_LEN: usize = IDT as usize + 64;

fn lo(v: u16) -> u8 {
    v.to_le_bytes()[0]
}
fn hi(v: u16) -> u8 {
    v.to_le_bytes()[1]
}

/// Snippets valid in both modes' encodings (no memory operands).
const COMMON: &[&[u8]] = &[
    &[0x90],                                                       // nop
    &[0x40],                                                       // inc (e)ax
    &[0x01, 0xD8],                                                 // add (e)ax, (e)bx
    &[0x29, 0xC8],                                                 // sub (e)ax, (e)cx
    &[0xF7, 0xF3],                                                 // div (e)bx: #DE when ebx is 0
    &[0x50, 0x5B],                                                 // push (e)ax; pop (e)bx
    &[0x9C, 0x9D],                                                 // pushf; popf
    &[0xFA],                                                       // cli
    &[0xFB],                                                       // sti
    &[0xFB, 0x0F, 0x0B],                                           // sti; ud2 (#UD in the interrupt shadow)
    &[0xE4, 0x40],                                                 // in al, 0x40 (PIT)
    &[0xE6, 0x80],                                                 // out 0x80, al
    &[0xB0, 0x34, 0xE6, 0x43, 0xB0, 0x10, 0xE6, 0x40, 0xE6, 0x40], // PIT channel 0, rate generator
    &[0xE4, 0x21],                                                 // in al, 0x21 (PIC mask)
    &[0xB0, 0x00, 0xE6, 0x21],                                     // unmask every PIC line
    &[0x0F, 0xA2],                                                 // cpuid
    &[0x0F, 0x31],                                                 // rdtsc
    &[0xF4],                                                       // hlt
    &[0xCC],                                                       // int3
    &[0xCF],                                                       // iret
    &[0x0F, 0x0B],                                                 // ud2
    &[0x8E, 0xD0],                                                 // mov ss, ax
    &[0xF3, 0xA4],                                                 // rep movsb
    &[0xD1, 0xE0],                                                 // shl (e)ax, 1
    &[0x0F, 0x20, 0xC0],                                           // mov (e)ax, cr0
    &[0xEB, 0x02, 0x90, 0x90],                                     // jmp over two bytes
];

/// How a program ends when nothing before derails it.
#[derive(Clone, Copy, Debug)]
enum Ending {
    HaltInterruptsOff,
    ExitPort,
    TripleFault,
    FaultLoop,
    InsnLimit,
    RandomBytes,
}

const ENDINGS: [Ending; 6] = [
    Ending::HaltInterruptsOff,
    Ending::ExitPort,
    Ending::TripleFault,
    Ending::FaultLoop,
    Ending::InsnLimit,
    Ending::RandomBytes,
];

/// A flat image entered in real mode at BASE. `protected`: a prologue
/// switches to 32-bit protected mode with flat segments first.
fn program(rng: &mut Rng, protected: bool, ending: Ending, body_len: usize) -> Vec<u8> {
    let mut code: Vec<u8> = Vec::new();
    let addr = |off: u16| BASE as u16 + off;
    if protected {
        code.push(0xFA); // cli
        code.extend([0x0F, 0x01, 0x16, lo(addr(GDT_DESC)), hi(addr(GDT_DESC))]); // lgdt
        code.extend([0x0F, 0x20, 0xC0, 0x0C, 0x01, 0x0F, 0x22, 0xC0]); // cr0.PE
        let pm = BASE + code.len() as u32 + 8;
        code.extend([0x66, 0xEA]);
        code.extend(pm.to_le_bytes());
        code.extend([0x08, 0x00]); // jmp 0x08:pm
        code.extend([0x66, 0xB8, 0x10, 0x00, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0]); // ds, es, ss
        code.extend([0xBC, 0x00, 0x00, 0x09, 0x00]); // mov esp, 0x90000
    } else {
        // A stack segment of its own, so a runaway stack never wraps onto
        // the code or the vector table.
        code.extend([0xB8, 0x00, 0x10, 0x8E, 0xD0, 0xBC, 0x00, 0x80]);
    }
    for _ in 0..body_len {
        if rng.below(5) == 0 {
            code.push(rng.next() as u8);
        } else {
            code.extend_from_slice(COMMON[rng.below(COMMON.len())]);
        }
    }
    match ending {
        Ending::HaltInterruptsOff => code.extend([0xFA, 0xF4]),
        Ending::ExitPort => code.extend([0xB0, rng.next() as u8 & 0x7F, 0xE6, 0xF4]),
        Ending::TripleFault => {
            // An IDT of limit 0: int3 cannot be delivered, nor #GP, nor #DF.
            if protected {
                code.extend([0x0F, 0x01, 0x1D]);
                code.extend(u32::from(addr(ZERO_DESC)).to_le_bytes());
            } else {
                code.extend([0x0F, 0x01, 0x1E, lo(addr(ZERO_DESC)), hi(addr(ZERO_DESC))]);
            }
            code.push(0xCC);
        }
        Ending::FaultLoop => {
            // #UD whose handler is a ud2: delivered again and again.
            if protected {
                code.extend([0x0F, 0x01, 0x1D]);
                code.extend(u32::from(addr(IDT_DESC)).to_le_bytes());
            } else {
                code.extend([0xC7, 0x06, 0x18, 0x00, lo(addr(UD2_HANDLER)), hi(addr(UD2_HANDLER))]);
                code.extend([0xC7, 0x06, 0x1A, 0x00, 0x00, 0x00]);
            }
            code.extend([0x0F, 0x0B]);
        }
        Ending::InsnLimit => code.extend([0xEB, 0xFE]),
        Ending::RandomBytes => {
            for _ in 0..16 {
                code.push(rng.next() as u8);
            }
        }
    }
    code.truncate(CODE_LIMIT);
    let mut image = vec![0u8; IMAGE_LEN];
    image[..code.len()].copy_from_slice(&code);
    let gdt: [u64; 3] = [0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF];
    for (i, d) in gdt.iter().enumerate() {
        let at = GDT as usize + i * 8;
        image[at..at + 8].copy_from_slice(&d.to_le_bytes());
    }
    let desc = |image: &mut Vec<u8>, at: u16, limit: u16, base: u32| {
        image[at as usize..at as usize + 2].copy_from_slice(&limit.to_le_bytes());
        image[at as usize + 2..at as usize + 6].copy_from_slice(&base.to_le_bytes());
    };
    desc(&mut image, GDT_DESC, 23, BASE + u32::from(GDT));
    desc(&mut image, IDT_DESC, 8 * 8 - 1, BASE + u32::from(IDT));
    image[UD2_HANDLER as usize..UD2_HANDLER as usize + 2].copy_from_slice(&[0x0F, 0x0B]);
    let handler = BASE + u32::from(UD2_HANDLER);
    for v in 0..8 {
        let at = IDT as usize + v * 8;
        let [h0, h1, h2, h3] = handler.to_le_bytes();
        image[at..at + 8].copy_from_slice(&[h0, h1, 0x08, 0x00, 0x00, 0x8E, h2, h3]);
    }
    image
}

fn temp(n: usize) -> PathBuf {
    std::env::temp_dir().join(format!("ringback-random-{}-{n}.rbt", std::process::id()))
}

fn stop_kind(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::ExitDevice(_) => "exit port",
        StopReason::HaltedForever => "halt with interrupts off",
        StopReason::IdleForever => "idle waiting for input",
        StopReason::InsnLimit => "instruction limit",
        StopReason::Reset => "reset",
        StopReason::TripleFault { .. } => "triple fault",
        StopReason::FaultLoop { .. } => "fault loop",
        StopReason::Breakpoint(_) | StopReason::Watchpoint { .. } => "debugger",
        StopReason::Stopped => "stopped by the user",
    }
}

#[test]
fn random_guests_verify_on_every_engine() {
    let seed = std::env::var("RINGBACK_GUEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6E57_0000_C0DEu64);
    let mut rng = Rng(seed | 1);
    let programs = 72;
    let mut stops = BTreeMap::<&'static str, usize>::new();
    let mut failures = Vec::new();
    let mut recordings = 0;
    let mut bisected = 0;
    for n in 0..programs {
        let protected = n % 2 == 1;
        let ending = ENDINGS[(n / 2) % ENDINGS.len()];
        // The first twelve are their endings alone, in both modes, so each
        // ending is reached at least once whatever the random bodies do.
        let body = if n < 2 * ENDINGS.len() { 0 } else { 1 + rng.below(24) };
        let image = program(&mut rng, protected, ending, body);
        let kernel = Kernel::Flat {
            image: image.clone(),
            addr: BASE,
        };
        let interval = 1 + rng.below(3000) as u64;
        let max = 5_000 + rng.below(40_000) as u64;
        for engine in Engine::ALL {
            let what = format!(
                "program {n} ({} mode, {ending:?}, engine {engine:?}, interval {interval}, limit {max}): {:02x?}",
                if protected { "protected" } else { "real" },
                &image[..CODE_LIMIT.min(image.iter().rposition(|&b| b != 0).unwrap_or(0) + 1)]
            );
            let mut host = ScriptedInput::new(1_700_000_000, b"");
            let mut m = Machine::boot(
                4 << 20,
                &kernel,
                &mut NoInput {
                    rtc_start: 1_700_000_000,
                },
            )
            .expect("boot");
            m.engine = engine;
            m.raw.config = RawConfig::default();
            // Every block compiled at its first run; verified below without
            // the compiler and on the reference.
            m.blocks.jit.config = JitConfig::EAGER;
            let header = TraceHeader::for_machine("test", &kernel, &m, 1_700_000_000, interval, n % 3 == 0);
            let path = temp(n);
            let mut console = CaptureConsole::default();
            let summary = match replay::record(&path, &header, &mut m, &mut host, &mut console, max, &mut |_| {}) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{what}: recording failed: {e}"));
                    continue;
                }
            };
            recordings += 1;
            *stops.entry(stop_kind(&summary.stop)).or_default() += 1;
            let trace = Trace::open(&path).expect("open the recording");
            let _ = std::fs::remove_file(&path);
            for replay_engine in [None, Some(Engine::Emulate)] {
                let options = ReplayOptions {
                    engine: replay_engine,
                    raw: None,
                    jit: Some(JitConfig::OFF),
                };
                match replay::verify(&trace, options, &mut |_| {}, &mut |_| {}) {
                    Ok(v) if v.verified_complete() => {}
                    Ok(v) => failures.push(format!(
                        "{what}: stopped with {}; verify on {replay_engine:?}: {}",
                        summary.stop,
                        v.divergence.map_or("incomplete".into(), |d| d.to_string())
                    )),
                    Err(e) => failures.push(format!("{what}: verify on {replay_engine:?}: {e}")),
                }
            }
            if engine == Engine::Raw {
                let cancel = std::sync::atomic::AtomicBool::new(false);
                let ctl = Control {
                    cancel: &cancel,
                    progress: &|_| {},
                    jobs: 1,
                    culprit_budget: 20,
                };
                let patched = SideConfig {
                    engine: Engine::Raw,
                    raw: RawConfig::default(),
                };
                match Bisector::new(&trace, SideConfig::reference(), patched).and_then(|b| b.run(None, &ctl)) {
                    Ok(report) if report.divergence.is_none() => bisected += 1,
                    Ok(report) => {
                        failures.push(format!("{what}: bisect reports a divergence: {:?}", report.divergence))
                    }
                    Err(e) => failures.push(format!("{what}: bisect: {e}")),
                }
            }
        }
    }
    eprintln!(
        "random guests: {programs} programs, {recordings} recordings, each verified twice, {bisected} bisected \
         (seed {seed}); stops: {stops:?}"
    );
    assert!(
        failures.is_empty(),
        "seed {seed}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for kind in [
        "exit port",
        "halt with interrupts off",
        "triple fault",
        "fault loop",
        "instruction limit",
    ] {
        assert!(stops.contains_key(kind), "no program ended in a {kind}: {stops:?}");
    }
}
