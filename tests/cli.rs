//! The `ringback` command line: the demo, limits, and bad input answered with
//! a clear message and a non-zero exit, never a panic.

mod common;

use std::process::{Command, Output, Stdio};

use common::{ringback, RINGBACK};

const OUT_DIR: &str = env!("OUT_DIR");

fn scratch(name: &str, bytes: &[u8]) -> String {
    common::scratch("cli", name, bytes)
}

fn assert_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn demo_prints_its_ring3_task_and_a_summary() {
    let out = ringback(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("ring 3 task says: goodbye"), "{stdout}");
    assert!(stderr.contains("guest exit (status 1)") && stderr.contains("instructions") && stderr.contains("MIPS"));
}

// A BIOS image must be whole 64 KiB blocks, as QEMU requires; and it is the
// firmware, so a kernel beside it is refused rather than ignored.
#[test]
fn bad_bios_images_and_a_kernel_beside_one() {
    let odd = scratch("odd.rom", &[0x90; 1000]);
    assert_error(&ringback(&["run", "--bios", &odd]), "whole number of 64 KiB blocks");
    assert_error(
        &ringback(&["run", "--bios", "/nonexistent/bios.bin"]),
        "/nonexistent/bios.bin",
    );
    let rom = scratch("ok.rom", &[0xF4; 64 << 10]);
    let kernel = format!("{OUT_DIR}/hello.elf");
    let both = ringback(&["run", "--bios", &rom, &kernel]);
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
    let neither = ringback(&["run"]);
    assert_eq!(neither.status.code(), Some(2));
}

// Port 0xE9's console goes with COM1 by default, or where --debugcon says
// (QEMU's -debugcon): a file, or nowhere.
#[test]
fn the_debug_console_goes_where_it_is_told() {
    // Real mode: 'D' to port 0xE9, 'S' to COM1, then isa-debug-exit.
    let code = [
        0xB0, b'D', 0xE6, 0xE9, 0xB0, b'S', 0xBA, 0xF8, 0x03, 0xEE, 0xB0, 0x00, 0xE6, 0xF4,
    ];
    let image = scratch("debugcon.bin", &code);
    let run = |extra: &[&str]| ringback(&[&["run", "--flat", "0x7c00", &image, "--serial", "stdout"], extra].concat());
    assert_eq!(run(&[]).stdout, b"DS");
    assert_eq!(run(&["--debugcon", "none"]).stdout, b"S");
    let file = std::env::temp_dir().join(format!("ringback-debugcon-{}.txt", std::process::id()));
    let file = file.to_string_lossy().into_owned();
    let out = run(&["--debugcon", &file]);
    assert_eq!((out.stdout.as_slice(), out.status.code()), (&b"S"[..], Some(1)));
    assert_eq!(std::fs::read(&file).expect("debugcon file"), b"D");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn max_insns_stops_the_run() {
    let out = ringback(&["demo", "--max-insns", "1000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("instruction limit reached: 1000 instructions"),
        "{stderr}"
    );
}

#[test]
fn serial_output_to_a_file() {
    let file = scratch("serial.txt", b"");
    let kernel = format!("{OUT_DIR}/syscall.elf");
    let out = ringback(&["run", &kernel, "--serial", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let text = std::fs::read_to_string(&file).expect("serial file");
    assert!(text.contains("syscall: all checks passed"), "{text}");
}

#[test]
fn missing_kernel_file() {
    assert_error(
        &ringback(&["run", "/nonexistent/kernel.elf"]),
        "cannot read kernel /nonexistent/kernel.elf",
    );
}

#[test]
fn non_multiboot_elf() {
    // A real ELF with no multiboot header: the ringback binary itself.
    assert_error(&ringback(&["run", RINGBACK]), "not a multiboot kernel");
}

#[test]
fn garbage_file() {
    let f = scratch("garbage.bin", &[0x5A; 3000]);
    assert_error(&ringback(&["run", &f]), "no multiboot v1 header");
}

#[test]
fn kernel_that_does_not_fit_in_memory() {
    // hello.elf loads at 1 MiB; with 2 MiB of RAM a 1.5 MiB module cannot fit after it.
    let module = scratch("big-module.bin", &vec![0u8; 3 << 19]);
    let kernel = format!("{OUT_DIR}/hello.elf");
    assert_error(
        &ringback(&["run", &kernel, "--mem", "2M", "--module", &module]),
        "does not fit in memory",
    );
}

#[test]
fn bad_mem_values() {
    let kernel = format!("{OUT_DIR}/hello.elf");
    for bad in ["lots", "1K", "0", "99999G", "3X"] {
        assert_error(&ringback(&["run", &kernel, "--mem", bad]), "bad memory size");
    }
}

#[test]
fn missing_module_file() {
    let kernel = format!("{OUT_DIR}/hello.elf");
    assert_error(
        &ringback(&["run", &kernel, "--module", "/nonexistent/mod args"]),
        "cannot read module",
    );
}

#[test]
fn wild_guest_jumping_into_garbage_stops_with_a_report() {
    // A boot sector that loads an empty IDT and jumps into 0xFF bytes: #UD
    // with no IDT entry escalates to a triple fault.
    let mut sector = vec![0u8; 512];
    // lidt [0x7c10] ; jmp 0x7c20   (real mode)
    sector[..9].copy_from_slice(&[0x0F, 0x01, 0x1E, 0x10, 0x7C, 0xE9, 0x18, 0x00, 0x90]);
    sector[0x20..0x30].fill(0xFF);
    sector[510] = 0x55;
    sector[511] = 0xAA;
    let f = scratch("wild.bin", &sector);
    let out = ringback(&["run", &f]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("triple fault") && err.contains("CPU state"), "{err}");
}

#[test]
fn serial_input_from_stdin_reaches_the_guest() {
    use std::io::Write;
    let kernel = format!("{OUT_DIR}/echo.elf");
    let mut child = Command::new(RINGBACK)
        .args(["run", &kernel])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringback");
    // A leading newline: a byte that arrives before the guest sets up its
    // UART may be dropped by the FIFO reset, as on QEMU; the lines after it
    // must all arrive.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"\nhello from the host\nquit\n")
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("echo: hello from the host\necho: quit\n"), "{stdout}");
}

#[test]
fn conformance_on_garbage_vectors() {
    let dir = std::env::temp_dir().join(format!("ringback-cli-vectors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let d = dir.to_str().expect("utf-8");
    std::fs::write(dir.join("00.jsonl"), "not json\n").expect("write");
    assert_error(&ringback(&["conformance", d]), "bad test vector file");
    std::fs::remove_file(dir.join("00.jsonl")).expect("remove");
    std::fs::write(dir.join("00.jsonl.gz"), b"\x1f\x8b garbage").expect("write");
    assert_error(&ringback(&["conformance", d]), "gzip");
    assert_error(
        &ringback(&["conformance", "/nonexistent/vectors"]),
        "cannot read /nonexistent/vectors",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn record_info_and_verified_replay() {
    let trace = scratch("pit.rbt", b"");
    let kernel = format!("{OUT_DIR}/pit.elf");
    let out = ringback(&[
        "record",
        "-o",
        &trace,
        &kernel,
        "--serial",
        "none",
        "--checkpoint-interval",
        "200000",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let info = ringback(&["info", &trace, "--json"]);
    assert_eq!(info.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(json["complete"], true);
    assert!(json["checkpoints"].as_u64().unwrap_or(0) >= 3, "{json}");
    assert!(
        json["events_by_kind"]["interrupt"].as_u64().unwrap_or(0) >= 50,
        "{json}"
    );
    let replay = ringback(&["replay", "--verify", "--engine", "emulate", &trace]);
    let err = String::from_utf8_lossy(&replay.stderr);
    assert_eq!(replay.status.code(), Some(0), "{err}");
    assert!(err.contains("checkpoints verified"), "{err}");
    assert!(String::from_utf8_lossy(&replay.stdout).contains("ticks: 50"));
}

#[test]
fn a_replay_that_departs_from_the_recording_reports_where() {
    // Recorded with an injected patch bug; the reference engine computes
    // what the guest should have: the replay diverges, with a report.
    let trace = scratch("bug.rbt", b"");
    let kernel = format!("{OUT_DIR}/patchbugs.elf");
    let out = ringback(&[
        "record",
        "-o",
        &trace,
        &kernel,
        "--serial",
        "none",
        "--inject",
        "pushf-leak",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let replay = ringback(&["replay", "--verify", "--engine", "emulate", &trace]);
    let err = String::from_utf8_lossy(&replay.stderr);
    assert_eq!(replay.status.code(), Some(1), "{err}");
    assert!(
        err.contains("divergence at icount") && err.contains("recorded"),
        "{err}"
    );
}

#[test]
fn unusable_traces_are_refused_with_a_reason() {
    assert_error(
        &ringback(&["replay", &scratch("garbage.rbt", b"not a trace at all")]),
        "not a ringback trace",
    );
    assert_error(&ringback(&["info", &scratch("short.rbt", b"RINGBACK")]), "truncated");
    let mut future = b"RINGBACK".to_vec();
    future.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0]);
    assert_error(
        &ringback(&["replay", &scratch("future.rbt", &future)]),
        &format!(
            "written by format 9, this build reads {}",
            replay::format::FORMAT_VERSION
        ),
    );
    assert_error(&ringback(&["replay", "/nonexistent/x.rbt"]), "cannot read");
}

#[test]
fn a_recorder_killed_with_sigkill_leaves_a_replayable_trace() {
    let trace = scratch("killed.rbt", b"");
    let kernel = format!("{OUT_DIR}/bench.elf");
    let mut child = Command::new(RINGBACK)
        .args([
            "record",
            "-o",
            &trace,
            &kernel,
            "--append",
            "int 100000",
            "--serial",
            "none",
        ])
        .args(["--checkpoint-interval", "1000000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ringback record");
    // Wait for a few checkpoints to reach the file, then SIGKILL.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::metadata(&trace).map_or(0, |m| m.len()) < 60_000 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().expect("kill");
    let _ = child.wait();
    let info = ringback(&["info", &trace, "--json"]);
    let err = String::from_utf8_lossy(&info.stderr);
    assert_eq!(info.status.code(), Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(json["complete"], false);
    assert!(json["checkpoints"].as_u64().unwrap_or(0) >= 2, "{json}");
    // Not "verified" unless the user accepts a partial trace.
    let replay = ringback(&["replay", "--verify", &trace]);
    let err = String::from_utf8_lossy(&replay.stderr);
    assert_eq!(replay.status.code(), Some(2), "{err}");
    assert!(
        err.contains("incomplete") && err.contains("--allow-incomplete"),
        "{err}"
    );
    let replay = ringback(&["replay", "--verify", "--allow-incomplete", &trace]);
    let err = String::from_utf8_lossy(&replay.stderr);
    assert_eq!(replay.status.code(), Some(0), "{err}");
    assert!(
        err.contains("incomplete") && err.contains("checkpoints verified"),
        "{err}"
    );
}

/// The defects an outside test found, through the command line: a damaged
/// finished trace is refused by verify (2), info (2) and bisect (125),
/// never verified; one cut at a frame boundary is incomplete, not verified.
#[test]
fn damaged_traces_are_never_verified() {
    let trace = scratch("intact.rbt", b"");
    let kernel = format!("{OUT_DIR}/pit.elf");
    let out = ringback(&[
        "record",
        "-o",
        &trace,
        &kernel,
        "--serial",
        "none",
        "--checkpoint-interval",
        "300000",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&trace).expect("trace");
    let t = replay::Trace::from_bytes(bytes.clone()).expect("intact trace");
    let events = t
        .frames_of(replay::format::FrameKind::Events)
        .next()
        .expect("an event frame")
        .clone();
    let cps = t.checkpoint_frames();
    let last_cp = cps.last().expect("checkpoints").clone();
    let end = t
        .frames_of(replay::format::FrameKind::End)
        .next()
        .expect("end frame")
        .clone();
    let frame_len = |f: &replay::model::FrameEntry| 28 + f.payload_len as usize;

    let mut bad_events = bytes.clone();
    bad_events[events.offset as usize + 28 + frame_len(&events) / 3] ^= 0x10;
    let mut no_last_cp = bytes[..last_cp.offset as usize].to_vec();
    no_last_cp.extend_from_slice(&bytes[last_cp.offset as usize + frame_len(&last_cp)..]);
    let mut relabelled = bytes.clone();
    relabelled[last_cp.offset as usize + 4] = replay::format::FrameKind::Events as u8;
    let mut header_bit = bytes.clone();
    header_bit[cps[1].offset as usize + 9] ^= 0x01;
    for (name, damaged, needle) in [
        ("bad-events.rbt", &bad_events, "events frame checksum"),
        ("no-last-checkpoint.rbt", &no_last_cp, "trace corrupt at byte"),
        ("relabelled.rbt", &relabelled, "checksum mismatch"),
        ("header-bit.rbt", &header_bit, "trace corrupt at byte"),
    ] {
        let path = scratch(name, damaged);
        assert_error(&ringback(&["replay", "--verify", &path]), needle);
        assert_error(&ringback(&["info", "--json", &path]), needle);
        let b = ringback(&["bisect", &path]);
        assert_eq!(
            b.status.code(),
            Some(125),
            "{name}: {}",
            String::from_utf8_lossy(&b.stderr)
        );
    }

    // Cut before the end frame: what a killed recorder leaves.
    let cut = scratch("cut.rbt", &bytes[..end.offset as usize]);
    let v = ringback(&["replay", "--verify", &cut]);
    let err = String::from_utf8_lossy(&v.stderr);
    assert_eq!(v.status.code(), Some(2), "{err}");
    assert!(err.contains("incomplete"), "{err}");
    assert_eq!(
        ringback(&["replay", "--verify", "--allow-incomplete", &cut])
            .status
            .code(),
        Some(0)
    );
    let info = ringback(&["info", "--json", &cut]);
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(json["complete"], false, "{json}");
    let v = ringback(&["replay", "--verify", &trace]);
    assert_eq!(v.status.code(), Some(0), "{}", String::from_utf8_lossy(&v.stderr));
}

/// Honest recordings that end without retiring their last step verify:
/// a halt with interrupts off, and a triple fault at the first instruction.
#[test]
fn stops_that_retire_nothing_verify_on_every_engine() {
    // cli; hlt — a real-mode guest that loads an IDT limit of zero, so its
    // int3 cannot be delivered (#GP, #DF, shutdown) — a real-mode stack
    // fault (a word pushed at SP 1: #SS, then nowhere to deliver it) — and
    // #UD right after STI, vectored into the zeroed vector table.
    let guests: [(&str, &[u8]); 4] = [
        ("clihlt.bin", &[0xFA, 0xF4]),
        ("lidt0.bin", &[0x0F, 0x01, 0x1E, 0x00, 0x7E, 0xCC]),
        ("stackfault.bin", &[0xBC, 0x01, 0x00, 0x50]),
        ("sti-ud.bin", &[0xFB, 0x0F, 0x0B]),
    ];
    for (name, code) in guests {
        let bin = scratch(name, code);
        for engine in ["raw", "blocks", "emulate"] {
            let trace = scratch(&format!("{name}-{engine}.rbt"), b"");
            let rec = ringback(&[
                "record",
                "-o",
                &trace,
                "--flat",
                "0x7c00",
                &bin,
                "--serial",
                "none",
                "--engine",
                engine,
                "--max-insns",
                "200000",
            ]);
            assert!(
                matches!(rec.status.code(), Some(0) | Some(4)),
                "{name} {engine}: {}",
                String::from_utf8_lossy(&rec.stderr)
            );
            let v = ringback(&["replay", "--verify", &trace]);
            let err = String::from_utf8_lossy(&v.stderr);
            assert_eq!(v.status.code(), Some(0), "{name} {engine}: {err}");
        }
    }
}

/// `run --gdb` records into a scratch trace; ended by a signal before any
/// debugger came, it leaves nothing behind.
#[test]
fn a_live_session_ended_by_a_signal_removes_its_scratch_trace() {
    for signal in ["TERM", "INT"] {
        let tmp = std::env::temp_dir().join(format!("ringback-cli-{}-signal-{signal}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("temp dir");
        let child = Command::new(RINGBACK)
            .args([
                "run",
                "--gdb",
                "127.0.0.1:0",
                &format!("{OUT_DIR}/hello.elf"),
                "--serial",
                "none",
            ])
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringback run --gdb");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let scratch = || std::fs::read_dir(&tmp).map_or(0, |d| d.count());
        while scratch() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(scratch(), 1, "the live session's scratch trace in {}", tmp.display());
        let killed = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "SIG{signal}: {err}");
        assert_eq!(scratch(), 0, "SIG{signal} left the scratch trace behind");
        let _ = std::fs::remove_dir(&tmp);
    }
}

/// Reports to a reader that went away (`| head`) end quietly with the
/// command's own status; to a full disk, with an error naming the cause.
#[test]
fn reports_survive_a_closed_pipe_and_a_full_disk() {
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/patchbugs.rbt");
    for args in [
        vec!["info", golden],
        vec!["info", "--json", golden],
        vec!["bisect", "--json", golden],
        vec!["replay", golden],
    ] {
        let mut child = Command::new(RINGBACK)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take()); // the reader is gone before a byte is read
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if std::path::Path::new("/dev/full").exists() {
            let full = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full");
            let out = Command::new(RINGBACK)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(full)
                .output()
                .expect("run");
            let err = String::from_utf8_lossy(&out.stderr);
            let expected = if args[0] == "bisect" { 125 } else { 2 };
            assert_eq!(out.status.code(), Some(expected), "{args:?} > /dev/full: {err}");
            assert!(err.contains("No space left on device"), "{args:?}: {err}");
        }
    }
}

/// A recording whose file stops growing (a full disk; here a file-size
/// limit, which fails writes the same way) ends with the writer's own error,
/// not "the writer stopped".
#[test]
fn a_recorder_that_cannot_write_says_why() {
    let trace = scratch("limited.rbt", b"");
    let kernel = format!("{OUT_DIR}/bench.elf");
    // SIGXFSZ ignored: the write fails with EFBIG instead of killing us.
    let script = format!(
        "trap '' XFSZ; ulimit -f 64; exec {RINGBACK} record -o {trace} {kernel} --append 'int 100000' \
         --serial none --checkpoint-interval 1000000"
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("File too large") && err.contains(&trace), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // What was written is a readable, incomplete trace.
    let info = ringback(&["info", "--json", &trace]);
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(json["complete"], false, "{json}");
}

/// A kernel or module that never ends is refused after reading one byte
/// more than guest RAM, not read until host memory runs out.
#[test]
fn endless_kernel_and_module_files_are_refused() {
    assert_error(
        &ringback(&["run", "/dev/zero", "--mem", "4M"]),
        "kernel /dev/zero is larger than guest RAM",
    );
    let hello = format!("{OUT_DIR}/hello.elf");
    assert_error(
        &ringback(&[
            "run",
            &hello,
            "--module",
            "/dev/zero",
            "--mem",
            "4M",
            "--serial",
            "none",
        ]),
        "module /dev/zero is larger than guest RAM",
    );
}

// `record` adapts the checkpoint interval unless it is given one: a guest
// that writes little memory gets fewer checkpoints than at a fixed 5M, and
// both traces replay to identical digests.
#[test]
fn record_adapts_the_checkpoint_interval_unless_given_one() {
    let kernel = format!("{OUT_DIR}/bench.elf");
    let mut summary = Vec::new();
    for (name, interval) in [("adapting.rbt", None), ("fixed.rbt", Some("5000000"))] {
        let trace = scratch(name, b"");
        let mut args = vec![
            "record", "-o", &trace, &kernel, "--append", "int 40", "--serial", "none",
        ];
        if let Some(n) = interval {
            args.extend(["--checkpoint-interval", n]);
        }
        // The workload ends by the exit device, with status 1.
        let out = ringback(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("guest exit (status 1)"), "{err}");
        let info = ringback(&["info", &trace, "--json"]);
        let json: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
        assert_eq!(json["complete"], true, "{json}");
        let verify = ringback(&["replay", "--verify", &trace]);
        assert_eq!(
            verify.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        summary.push((
            json["adaptive_checkpoints"].as_bool(),
            json["checkpoints"].as_u64().unwrap_or(0),
            json["instructions"].as_u64().unwrap_or(0),
        ));
    }
    let [(adapting, fewer, insns_a), (fixed, more, insns_f)] = summary[..] else {
        unreachable!("two recordings")
    };
    assert_eq!((adapting, fixed), (Some(true), Some(false)));
    assert_eq!(insns_a, insns_f);
    assert_eq!(
        more,
        insns_f.div_ceil(5_000_000) + 1,
        "a checkpoint every 5M and one at the start"
    );
    assert!(fewer * 3 < more, "{fewer} checkpoints adapting, {more} fixed");
}

// An interval of 0 would checkpoint after every instruction: refused.
#[test]
fn record_refuses_a_checkpoint_interval_of_zero() {
    let kernel = format!("{OUT_DIR}/bench.elf");
    let trace = scratch("zero-interval.rbt", b"");
    let out = ringback(&["record", "-o", &trace, &kernel, "--checkpoint-interval", "0"]);
    assert_error(&out, "--checkpoint-interval");
}
