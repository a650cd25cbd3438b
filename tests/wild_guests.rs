//! Wild guests: random bytes executed as code, in real mode and in 32-bit
//! protected mode, with random descriptor tables and random port I/O. The
//! machine must always stop with a reason (a limit, a halt, a triple fault,
//! an exit or reset) and never panic or hang, and both engines must end in
//! the same state. Deterministic seeds, so a failure reproduces.

mod common;

use common::Rng;
use vm::cpu::state::{attr, cr0, flags, SegReg, Segment, TableReg};
use vm::host::NoInput;
use vm::machine::{CaptureConsole, Kernel, Machine, StopReason};

/// Cases per mode; RINGBACK_WILD_CASES raises it for a deeper local hunt.
fn cases() -> u64 {
    std::env::var("RINGBACK_WILD_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}
const STEPS: u64 = 20_000;

fn random_machine(seed: u64, protected: bool) -> Machine {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut image = vec![0u8; 0x2_0000];
    for chunk in image.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let kernel = Kernel::Flat { image, addr: 0x1_0000 };
    let mut m = Machine::boot(2 << 20, &kernel, &mut NoInput::default()).expect("boot");
    if protected {
        let st = &mut m.cpu.state;
        let flat = |code: bool, dpl: u16| Segment {
            selector: 0x08 | dpl,
            base: 0,
            limit: 0xFFFF_FFFF,
            attr: attr::P
                | attr::S
                | attr::RW
                | attr::DB
                | attr::G
                | (dpl << attr::DPL_SHIFT)
                | if code { attr::CODE } else { 0 },
        };
        let cpl = (rng.next() % 4) as u16;
        for s in SegReg::ALL {
            st.segs[s as usize] = flat(s == SegReg::Cs, cpl);
        }
        st.cr0 = cr0::PE | cr0::ET;
        st.eip = 0x1_0000 + (rng.next() % 0x1_0000) as u32;
        st.regs[4] = 0x1_8000;
        // Descriptor tables somewhere in the random bytes.
        st.gdtr = TableReg {
            base: 0x1_0000 + (rng.next() % 0x8000) as u32,
            limit: (rng.next() % 0x400) as u16,
        };
        st.idtr = TableReg {
            base: 0x1_0000 + (rng.next() % 0x8000) as u32,
            limit: (rng.next() % 0x800) as u16,
        };
        st.eflags = flags::FIXED1 | (rng.next() as u32 & (flags::IF | flags::DF | flags::IOPL));
    } else {
        m.cpu.state.eip = (rng.next() % 0x1_0000) as u32;
        let cs = 0x1000;
        m.cpu.state.segs[SegReg::Cs as usize].selector = cs;
        m.cpu.state.segs[SegReg::Cs as usize].base = u32::from(cs) << 4;
    }
    m
}

fn run_cases(protected: bool) {
    let mut stops = std::collections::BTreeMap::<&'static str, u64>::new();
    let cases = cases();
    let first = std::env::var("RINGBACK_WILD_FIRST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    for seed in first..cases {
        if std::env::var_os("RINGBACK_WILD_TRACE").is_some() {
            eprintln!("seed {seed} protected {protected}");
        }
        // The same chaos ends the same way on every engine.
        let (reference, _) = common::assert_engines_agree(&format!("seed {seed}"), |engine, config, jit| {
            let mut m = random_machine(seed, protected);
            m.engine = engine;
            m.raw.config = config;
            m.blocks.jit.config = jit;
            let mut console = CaptureConsole::default();
            let stop = m.run(STEPS, &mut NoInput::default(), &mut console);
            common::Run {
                stop,
                serial: console.serial,
                machine: m,
            }
        });
        let (stop, m) = (reference.stop, reference.machine);
        let kind = match stop {
            StopReason::InsnLimit => {
                assert_eq!(m.icount(), STEPS, "seed {seed}");
                "limit"
            }
            StopReason::TripleFault { .. } => "triple fault",
            StopReason::FaultLoop { .. } => "fault loop",
            StopReason::HaltedForever | StopReason::IdleForever => "halt",
            StopReason::ExitDevice(_) => "exit",
            StopReason::Reset => "reset",
            StopReason::Breakpoint(_) | StopReason::Watchpoint { .. } | StopReason::Stopped => {
                unreachable!("no debugger or console attached")
            }
        };
        *stops.entry(kind).or_default() += 1;
    }
    // Random code mostly faults its way into a shutdown; the point is that
    // every case ended, and that the mix is not degenerate.
    assert_eq!(stops.values().sum::<u64>(), cases - first);
    assert!(stops.len() >= 2, "every case stopped the same way: {stops:?}");
}

#[test]
fn random_real_mode_code_never_panics() {
    run_cases(false);
}

#[test]
fn random_protected_mode_code_never_panics() {
    run_cases(true);
}
