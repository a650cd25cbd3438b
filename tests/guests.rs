//! End-to-end: boot the test kernels in guests/ (built from source by build.rs)
//! on the reference engine and check what they print and how they exit.
//! Each kernel checks its own feature and reports on COM1; exit statuses are
//! QEMU's isa-debug-exit ones: 1 = all checks passed, 3 = a check failed,
//! 5 = an unexpected interrupt or exception.

mod common;

use vm::boot::Module;
use vm::engine::jit::JitConfig;
use vm::engine::raw::RawConfig;
use vm::host::{NoInput, ScriptedInput};
use vm::machine::{CaptureConsole, Kernel, Machine, StopReason};

const OUT_DIR: &str = env!("OUT_DIR");
const LIMIT: u64 = 200_000_000;

fn guest(name: &str) -> Vec<u8> {
    let path = format!("{OUT_DIR}/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("test kernel {path} (built by build.rs): {e}"))
}

fn multiboot(name: &str, append: &str, modules: Vec<Module>) -> Kernel {
    Kernel::Multiboot {
        image: guest(&format!("{name}.elf")),
        cmdline: format!("{name}.elf {append}"),
        modules,
    }
}

/// Boots `kernel` on the reference engine with no input.
fn boot(kernel: &Kernel) -> (StopReason, String, Machine) {
    let (stop, serial, m) = boot_on(kernel, vm::machine::Engine::Emulate, b"");
    (stop, String::from_utf8_lossy(&serial).into_owned(), m)
}

fn assert_passes(name: &str, last_line: &str) -> (String, Machine) {
    let (stop, out, m) = boot(&multiboot(name, "", vec![]));
    assert_eq!(stop, StopReason::ExitDevice(1), "{name} output:\n{out}");
    assert!(!out.contains("FAIL"), "{name} reported a failure:\n{out}");
    assert!(out.trim_end().ends_with(last_line), "{name} output:\n{out}");
    (out, m)
}

#[test]
fn multiboot_info_command_line_memory_map_and_modules() {
    let modules = vec![
        Module {
            data: b"This is module one, some text\n".to_vec(),
            cmdline: "mod1.txt modarg".into(),
        },
        Module {
            data: b"second module data 0123456789\n".to_vec(),
            cmdline: "mod2.txt".into(),
        },
    ];
    let (stop, out, _) = boot(&multiboot("hello", "hello arg1 arg2", modules));
    assert_eq!(stop, StopReason::ExitDevice(1), "{out}");
    for line in [
        "magic: 2badb002",
        "flags: 0000024f",
        "cmdline: 'hello.elf hello arg1 arg2'",
        "mem_lower: 639 KiB, mem_upper: 31616 KiB",
        "mmap[3]: base 0000000000100000 len 0000000001ee0000 type 1",
        "mmap[5]: base 00000000fffc0000 len 0000000000040000 type 2",
        "modules: 2",
        "module[0]: size 30, page aligned: yes, cmdline 'mod1.txt modarg'",
        "  first bytes: 'This is module o'",
        "module[1]: size 30, page aligned: yes, cmdline 'mod2.txt'",
        "hello done",
    ] {
        assert!(out.lines().any(|l| l == line), "missing line {line:?} in:\n{out}");
    }
}

#[test]
fn real_mode_boot_sector_switches_to_protected_mode() {
    let (stop, out, m) = boot(&Kernel::Flat {
        image: guest("realmode.bin"),
        addr: 0x7C00,
    });
    assert_eq!(stop, StopReason::ExitDevice(1), "{out}");
    assert_eq!(
        out,
        "real mode\nprotected mode\na20 on: 0x500 and 0x100500 are distinct\n"
    );
    assert!(m.cpu.state.protected_mode());
}

#[test]
fn paging_4k_and_4m_pages_accessed_dirty_wp_invlpg() {
    let (out, m) = assert_passes("paging", "paging: all checks passed");
    assert_eq!(out.lines().filter(|l| l.starts_with("ok ")).count(), 15, "{out}");
    assert!(m.cpu.state.paging());
}

#[test]
fn page_faults_are_handled_by_the_guest() {
    let (out, m) = assert_passes("pagefault", "pagefault: all faults handled as expected");
    for code in [
        "err 0x0 from ring 0",
        "err 0x2 from ring 0",
        "err 0x4 from ring 3",
        "err 0x7 from ring 3",
    ] {
        assert!(out.contains(code), "missing {code} in:\n{out}");
    }
    assert!(m.exits.exceptions >= 4);
}

#[test]
fn pit_interrupts_are_counted() {
    let (out, m) = assert_passes("pit", "latched counter counts down: ok");
    assert!(out.contains("ticks: 50\n"), "{out}");
    assert!(
        m.exits.interrupts >= 50,
        "only {} interrupts delivered",
        m.exits.interrupts
    );
}

#[test]
fn ring3_system_calls_through_an_interrupt_gate() {
    let (out, _) = assert_passes("syscall", "syscall: all checks passed");
    for line in [
        "hello from ring 3",
        "ring 3 task exited with code 42",
        "syscall runs on the TSS esp0 stack: ok",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert_eq!(out.matches("vector 13 error code 0").count(), 2, "{out}");
}

#[test]
fn triple_fault_stops_the_machine_with_its_state() {
    let (stop, out, _) = boot(&multiboot("triplefault", "", vec![]));
    assert_eq!(out, "triplefault test: loading an empty IDT and executing int3\n");
    match stop {
        StopReason::TripleFault { state, .. } => {
            assert_eq!(state.idtr.limit, 0);
            assert!(state.protected_mode());
        }
        other => panic!("expected a triple fault, got {other:?}"),
    }
}

#[test]
fn demo_kernel_runs_its_ring3_task() {
    let (out, _) = assert_passes("demo", "ringback demo kernel: done");
    assert!(
        out.contains("ring 3 task says: the primes below 1000 add up to 76127"),
        "{out}"
    );
    assert!(out.contains("task exited with code 0 after 5 writes"), "{out}");
}

#[test]
fn cpu_self_test_completes() {
    let (out, _) = assert_passes("cpu", "cpu self-test done");
    assert!(out.contains("#DE count: 17"), "{out}");
}

#[test]
fn same_input_same_machine_state() {
    // The determinism invariant on a guest with timer interrupts: two runs
    // from the same image end in identical machine states.
    let kernel = multiboot("demo", "", vec![]);
    let (_, out1, a) = boot(&kernel);
    let (_, out2, b) = boot(&kernel);
    assert_eq!(out1, out2);
    assert_eq!(a.state(), b.state());
    assert_eq!(a.platform.mem.ram(), b.platform.mem.ram());
}

#[test]
fn instruction_limit_stops_exactly() {
    let kernel = multiboot("cpu", "", vec![]);
    let mut host = NoInput {
        rtc_start: 1_700_000_000,
    };
    let mut m = Machine::boot(32 << 20, &kernel, &mut host).expect("boot");
    let stop = m.run(12_345, &mut host, &mut CaptureConsole::default());
    assert_eq!(stop, StopReason::InsnLimit);
    assert_eq!(m.icount(), 12_345);
    // Running on from there reaches the same end as running straight through.
    let stop = m.run(LIMIT, &mut host, &mut CaptureConsole::default());
    let (straight_stop, _, straight) = boot(&kernel);
    assert_eq!(stop, straight_stop);
    assert_eq!(m.state(), straight.state());
}

#[test]
fn serial_input_reaches_the_guest_through_the_host_interface() {
    let kernel = multiboot("echo", "", vec![]);
    // Typing starts 10 ms (virtual) after power-on, once the guest is up.
    let mut host = ScriptedInput::new(0, b"hello there\nsecond line\nquit\nnever read\n").starting_at(1_000_000);
    let mut m = Machine::boot(32 << 20, &kernel, &mut host).expect("boot");
    let mut console = CaptureConsole::default();
    let stop = m.run(LIMIT, &mut host, &mut console);
    let out = String::from_utf8_lossy(&console.serial);
    assert_eq!(stop, StopReason::ExitDevice(1), "{out}");
    assert!(
        out.starts_with("echo ready\necho: hello there\necho: second line\necho: quit\necho done after "),
        "{out}"
    );
    assert!(m.exits.interrupts >= 3);
    // Without input the guest idles and the run ends instead of hanging.
    let mut none = NoInput::default();
    let mut idle = Machine::boot(32 << 20, &kernel, &mut none).expect("boot");
    assert_eq!(
        idle.run(LIMIT, &mut none, &mut CaptureConsole::default()),
        StopReason::IdleForever
    );
}

#[test]
fn aout_kludge_kernel_loads_with_zeroed_bss() {
    let kernel = Kernel::Multiboot {
        image: guest("aout.bin"),
        cmdline: "aout.bin".into(),
        modules: vec![],
    };
    let (stop, out, _) = boot(&kernel);
    assert_eq!(out, "a.out kludge kernel: loaded, bss zeroed, info ok\n");
    assert_eq!(stop, StopReason::ExitDevice(1));
}

#[test]
fn platform_registers_read_as_on_a_pc() {
    let (out, _) = assert_passes("platform", "unmapped port 0x2f0: ff ffff ffffffff");
    for line in [
        "fw_cfg signature: QEMU",
        "fw_cfg cpus: 1",
        "fw_cfg ram: 0000000002000000",
        "cmos extended memory: 31744 KiB",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

// The local APIC and the I/O APIC as a PC kernel uses them (guests/apic.c):
// self-IPIs in priority order, nesting, TPR, the timer in every mode, the
// I/O APIC routing the PIT and COM1.
#[test]
fn apic_kernel_passes() {
    let (out, _) = assert_passes("apic", "apic: all ok");
    for line in [
        "taken: 81 45 35",
        "nested: 60 91 38",
        "TPR 0x50: 66",
        "NMI: 2 taken with interrupts off, 0 nested",
        "one-shot: 1 interrupt(s), current count 0",
        "TSC deadline: fired and disarmed: ok",
        "COM1 through pin 4: 1 interrupt, IIR 2",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

// Hardware task switching (guests/tasks.c): CALL, JMP, INT and a double
// fault through task gates, IRET along the back link, and the #TS and #GP
// cases, with what the CPU left in the TSSs and descriptors.
#[test]
fn task_switching_kernel_passes() {
    let (out, _) = assert_passes("tasks", "tasks: all ok");
    for line in [
        "CALL: B ran 1, link 28, NT in B 1; back in A: TR 28, NT 0",
        "after IRET: A busy 1, B busy 0, CR0.TS 1",
        "DR7 in B: 402",
        "JMP: C ran 1; A busy 1, C busy 0, link in C 00",
        "double fault: error 0, link 28, saved EIP at the fault yes, DF busy after 0",
        "short TSS: vector 10, error 48, TR 28",
        "bad DS in the new task: vector 10, error 38, in task 30; back in 28",
        "JMP to the busy TSS: vector 13, error 28",
        "IRET to a task that is not busy: vector 10, error 38",
        "16-bit TSS: link 28, saved IP 0001, AX 1234, flags 0002; A busy 1, D busy 0",
        "T flag: #DB at E's first instruction yes, DR6.BT 1, in task 60; E ran 1",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

// QEMU's pc-testdev (guests/testdev.c): the scratch register's lanes, IRQ
// lines raised by port writes through the 8259 and the I/O APIC, scratch
// memory behind MMIO at every width.
#[test]
fn test_device_kernel_passes() {
    let (out, _) = assert_passes("testdev", "testdev: all ok");
    for line in [
        "scratch register: cdefab44, byte 3 cd",
        "IRQ 5 raised through port 0x2005: 1 interrupt",
        "IRQ 10 level through the I/O APIC: 3 deliveries until dropped",
        "iomem: deadbeef 12340000 00005600",
        "after add: deadbeff",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

/// Boots `kernel` on `engine` with scripted serial input.
fn boot_on(kernel: &Kernel, engine: vm::machine::Engine, input: &[u8]) -> (StopReason, Vec<u8>, Machine) {
    boot_with(kernel, engine, RawConfig::default(), JitConfig::default(), input)
}

fn boot_with(
    kernel: &Kernel,
    engine: vm::machine::Engine,
    config: RawConfig,
    jit: JitConfig,
    input: &[u8],
) -> (StopReason, Vec<u8>, Machine) {
    let mut host = ScriptedInput::new(1_700_000_000, input).starting_at(1_000_000);
    let mut m = Machine::boot(32 << 20, kernel, &mut host).expect("boot");
    m.engine = engine;
    m.raw.config = config;
    m.blocks.jit.config = jit;
    let mut console = CaptureConsole::default();
    let stop = m.run(LIMIT, &mut host, &mut console);
    (stop, console.serial, m)
}

#[test]
fn every_guest_runs_identically_on_both_engines() {
    let mut kernels: Vec<(&str, Kernel)> = [
        "hello",
        "paging",
        "pagefault",
        "pit",
        "syscall",
        "triplefault",
        "demo",
        "cpu",
    ]
    .iter()
    .chain(["echo", "platform", "ringleak", "patchbugs", "apic", "tasks", "testdev"].iter())
    .map(|name| (*name, multiboot(name, "", vec![])))
    .collect();
    kernels.push((
        "realmode",
        Kernel::Flat {
            image: guest("realmode.bin"),
            addr: 0x7C00,
        },
    ));
    kernels.push((
        "resetrom",
        Kernel::Bios {
            image: guest("resetrom.bin"),
        },
    ));
    kernels.push((
        "aout",
        Kernel::Multiboot {
            image: guest("aout.bin"),
            cmdline: "aout.bin".into(),
            modules: vec![],
        },
    ));
    for (name, kernel) in &kernels {
        assert_engines_agree(name, kernel, b"some typed input\nquit\n");
    }
}

#[test]
fn self_modifying_code_is_seen_at_once_by_the_blocks_engine() {
    // Real mode at 0000:7C00: a loop that rewrites the immediate of an
    // instruction it executes next, in the same block.
    //   mov cx, 3
    // top:
    //   mov byte [patch+1], cl   ; patch the imm8 of "mov al, imm8" below
    //   mov al, 0                ; patch: B0 imm8
    //   add bl, al
    //   loop top
    //   mov al, bl ; out 0xF4, al  (exit code = 3 + 2 + 1 = 6)
    let program: Vec<u8> = vec![
        0xB9, 0x03, 0x00, // 7C00: mov cx, 3
        0x88, 0x0E, 0x08, 0x7C, // 7C03: mov [7C08], cl
        0xB0, 0x00, // 7C07: mov al, 0   (imm8 at 7C08)
        0x00, 0xC3, // 7C09: add bl, al
        0xE2, 0xF6, // 7C0B: loop 7C03
        0x88, 0xD8, // 7C0D: mov al, bl
        0xE6, 0xF4, // 7C0F: out 0xF4, al
    ];
    let kernel = Kernel::Flat {
        image: program,
        addr: 0x7C00,
    };
    for engine in [vm::machine::Engine::Emulate, vm::machine::Engine::Blocks] {
        let (stop, _, m) = boot_on(&kernel, engine, b"");
        assert_eq!(stop, StopReason::ExitDevice((6 << 1) | 1), "{engine:?}");
        if engine == vm::machine::Engine::Blocks {
            assert!(m.blocks.stats.invalidated >= 3, "{:?}", m.blocks.stats);
        }
    }
}

#[test]
fn data_beside_code_costs_the_cached_code_nothing() {
    // Real mode at 0000:7C00, with its stack, its data and its code on one
    // page: a loop of 1000 stores to data 0x50 bytes past the code (and
    // calls that push on the same page), then a store into the code of the
    // subroutine the loop called, which must be seen.
    //   xor ax, ax ; mov ss, ax ; mov sp, 0x7C00 ; mov cx, 1000
    // top: mov [0x7C80], cx ; call sub ; add [0x7C82], al ; loop top
    //   mov byte [sub+1], 5 ; call sub ; add al, [0x7C82] ; out 0xF4, al
    // sub (0x7C30): mov al, 1 ; ret
    let mut program: Vec<u8> = vec![
        0x31, 0xC0, 0x8E, 0xD0, 0xBC, 0x00, 0x7C, 0xB9, 0xE8, 0x03, // 7C00
        0x89, 0x0E, 0x80, 0x7C, // 7C0A: mov [7C80], cx
        0xE8, 0x1F, 0x00, // 7C0E: call 7C30
        0x00, 0x06, 0x82, 0x7C, // 7C11: add [7C82], al
        0xE2, 0xF3, // 7C15: loop 7C0A
        0xC6, 0x06, 0x31, 0x7C, 0x05, // 7C17: mov byte [7C31], 5
        0xE8, 0x11, 0x00, // 7C1C: call 7C30
        0x02, 0x06, 0x82, 0x7C, // 7C1F: add al, [7C82]
        0xE6, 0xF4, // 7C23: out 0xF4, al
    ];
    program.resize(0x30, 0);
    program.extend([0xB0, 0x01, 0xC3]); // 7C30: mov al, 1 ; ret
    let kernel = Kernel::Flat {
        image: program,
        addr: 0x7C00,
    };
    // 1000 & 0xFF from the loop, plus the rewritten immediate.
    let expected = StopReason::ExitDevice(((0xE8 + 5) << 1) | 1);
    let (reference, others) = common::assert_engines_agree("data beside code", |engine, config, jit| {
        let (stop, serial, machine) = boot_with(&kernel, engine, config, jit, b"");
        common::Run { stop, serial, machine }
    });
    assert_eq!(reference.stop, expected);
    for (label, run) in others {
        let stats = run.machine.blocks.stats;
        if stats.executed == 0 {
            continue;
        }
        // Dropping the page's blocks at every store built thousands; only the
        // subroutine's block is written, once.
        assert!(stats.built < 20 && stats.invalidated <= 2, "{label}: {stats:?}");
    }
}

#[test]
fn benchmark_workloads_run_identically_on_both_engines() {
    for workload in common::BENCH_WORKLOADS {
        let kernel = Kernel::Multiboot {
            image: guest("bench.elf"),
            cmdline: format!("bench.elf {workload}"),
            modules: vec![],
        };
        assert_engines_agree(workload, &kernel, b"");
    }
}

/// Runs `kernel` on every engine (the shared harness in tests/common): the
/// same stop, output, machine state and RAM as the reference; and the
/// engines that run blocks ran some.
fn assert_engines_agree(name: &str, kernel: &Kernel, input: &[u8]) {
    let (_, others) = common::assert_engines_agree(name, |engine, config, jit| {
        let (stop, serial, machine) = boot_with(kernel, engine, config, jit, input);
        common::Run { stop, serial, machine }
    });
    for (label, run) in others {
        // Raw runs ring-0 code with IF clear on the reference, and some
        // guests never set IF.
        assert!(
            run.machine.engine == vm::machine::Engine::Raw || run.machine.blocks.stats.executed > 0,
            "{name} on {label}: no block ran"
        );
    }
}
