//! `ringback bisect` on the golden traces of traces/bisect/, one per
//! injected patch-bug class (recorded on the raw engine with that bug), and
//! on a clean trace. The expected instruction comes from the recorded kernel
//! image itself (its symbols and the code the bug lives in), and a
//! brute-force oracle steps both engines one instruction at a time from the
//! start to confirm that no earlier instruction differs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use replay::{ReplayOptions, Replayer, Trace};
use vm::machine::{Engine, Kernel};

const RINGBACK: &str = env!("CARGO_BIN_EXE_ringback");
const OUT_DIR: &str = env!("OUT_DIR");

fn ringback(args: &[&str]) -> Output {
    Command::new(RINGBACK)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringback")
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("traces").join(name)
}

fn scratch(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("ringback-bisect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name).to_string_lossy().into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The kernel image recorded in a trace, as an ELF: (linear address,
/// bytes) of each loaded segment, and the symbols.
struct Image {
    segments: Vec<(u32, Vec<u8>)>,
    symbols: Vec<(String, u32)>,
}

impl Image {
    fn of(trace: &Trace) -> Image {
        let Kernel::Multiboot { image, .. } = &trace.header.kernel else {
            panic!("not a multiboot trace");
        };
        let elf = goblin::elf::Elf::parse(image).expect("recorded kernel is an ELF");
        let segments = elf
            .program_headers
            .iter()
            .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
            .map(|p| {
                let (o, n) = (p.p_offset as usize, p.p_filesz as usize);
                (p.p_vaddr as u32, image[o..o + n].to_vec())
            })
            .collect();
        let symbols = elf
            .syms
            .iter()
            .filter_map(|s| Some((elf.strtab.get_at(s.st_name)?.to_string(), s.st_value as u32)))
            .collect();
        Image { segments, symbols }
    }

    fn symbol(&self, name: &str) -> u32 {
        self.symbols
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no symbol {name}"))
            .1
    }

    /// Addresses where `pattern` occurs, at or after `from`.
    fn find(&self, pattern: &[u8], from: u32) -> Vec<u32> {
        let mut out = Vec::new();
        for (base, bytes) in &self.segments {
            for (i, w) in bytes.windows(pattern.len()).enumerate() {
                let at = base + i as u32;
                if w == pattern && at >= from {
                    out.push(at);
                }
            }
        }
        out
    }
}

/// Where each class must be found, read from the guest's code: the
/// instruction the bug is in.
fn expected_pc(class: &str, image: &Image) -> u32 {
    let only = |v: Vec<u32>, what: &str| -> u32 {
        assert_eq!(v.len(), 1, "{what}: {v:x?}");
        v[0]
    };
    match class {
        // cli; pushfl in section A: the PUSHF.
        "pushf-leak" => only(image.find(&[0xFA, 0x9C], 0), "cli; pushf") + 1,
        // Section A's cli; pushfl; popl %reg; sti: the STI, patched after
        // eight traps. Its patch drops the interrupt shadow the first time
        // it runs, with no interrupt pending, so the difference heals at the
        // next instruction: only stepping sees it. (Section B's STI is where
        // the same bug lets an interrupt in early, for good.)
        "sti-shadow" => {
            let sti = only(image.find(&[0xFA, 0x9C], 0), "cli; pushf") + 3;
            assert_eq!(
                image.find(&[0xFB], sti).first(),
                Some(&sti),
                "sti after cli; pushf; pop"
            );
            sti
        }
        // The first mov %cs,%eax after jt_dispatch: jump-table case 2.
        "scan-miss" => image.find(&[0x8C, 0xC8], image.symbol("jt_dispatch"))[0],
        // The rewritten code buffer.
        "stale-patch" => image.symbol("code"),
        _ => unreachable!(),
    }
}

/// Brute force: the reference and the recorded raw configuration stepped
/// one instruction at a time from the start, compared after every step;
/// the icount before the first step whose results differ.
fn first_difference_by_stepping(trace: &Trace) -> Option<u64> {
    let options = |engine| ReplayOptions {
        engine: Some(engine),
        raw: Some(trace.header.config.raw),
        jit: None,
    };
    let mut a = Replayer::new(trace, options(Engine::Emulate)).expect("replayer");
    let mut b = Replayer::new(trace, options(Engine::Raw)).expect("replayer");
    let checkpoints = a.checkpoint_icounts();
    let ps = vm::mem::PAGE_SIZE;
    while !a.at_end() {
        let before = a.icount();
        a.step().expect("step");
        b.step().expect("step");
        // Replaying takes the dirty pages at checkpoints: compare all of RAM
        // there, elsewhere the pages either side wrote.
        let ram_same = if checkpoints.contains(&a.icount()) {
            a.machine.platform.mem.ram() == b.machine.platform.mem.ram()
        } else {
            let mut pages = a.machine.platform.mem.take_dirty();
            pages.extend(b.machine.platform.mem.take_dirty());
            let (ra, rb) = (a.machine.platform.mem.ram(), b.machine.platform.mem.ram());
            pages
                .iter()
                .all(|&p| ra[p * ps..(p + 1) * ps] == rb[p * ps..(p + 1) * ps])
        };
        if !ram_same || a.machine.state() != b.machine.state() || a.console.serial != b.console.serial {
            return Some(before);
        }
    }
    None
}

const CLASSES: &[&str] = &["pushf-leak", "sti-shadow", "scan-miss", "stale-patch"];

fn check_class(class: &str) {
    let path = golden(&format!("bisect/{class}.rbt"));
    let out = ringback(&["bisect", path.to_str().expect("path"), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{class}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["diverged"], true);
    let found = &report["report"]["divergence"]["found"];
    let icount = found["icount"].as_u64().expect("icount");
    let pc = found["pc"].as_u64().expect("pc") as u32;

    let trace = Trace::open(&path).expect("golden trace");
    let image = Image::of(&trace);
    assert_eq!(pc, expected_pc(class, &image), "{class}: pc {pc:#x}");
    assert_eq!(
        first_difference_by_stepping(&trace),
        Some(icount),
        "{class}: bisect says icount {icount}"
    );

    let culprit = &found["culprit"];
    let patches = culprit["patches"].as_array().expect("culprit patches");
    let engine = &found["engine"];
    match class {
        // No patch is to blame: the site was never scanned, though its page was.
        "scan-miss" => {
            assert!(patches.is_empty(), "{culprit}");
            assert_eq!(engine["scanned"], false);
            assert_eq!(engine["page_scanned"], true);
            assert!(engine["patch"].is_null());
        }
        _ => {
            // The one patch named is the one at the site.
            assert_eq!(patches.len(), 1, "{culprit}");
            assert_eq!(patches[0]["site"].as_u64(), Some(u64::from(pc)), "{culprit}");
            assert_eq!(culprit["minimal"], true);
            let want = match class {
                "pushf-leak" => "pushfd",
                "sti-shadow" => "sti",
                _ => "mov eax,cs",
            };
            assert_eq!(patches[0]["instruction"], want, "{culprit}");
            assert_eq!(patches[0]["stale"], class == "stale-patch", "{culprit}");
            assert_eq!(engine["patch"]["site"], patches[0]["site"]);
        }
    }
    // The instruction is decoded from memory as it is at the divergence.
    let instruction = found["instruction"].as_str().expect("instruction");
    let want = match class {
        "pushf-leak" => "pushfd",
        "sti-shadow" => "sti",
        "scan-miss" => "mov eax,cs",
        _ => "mov eax,ds",
    };
    assert_eq!(instruction, want);
    // Ring-0 code, compressed, when it happened.
    assert_eq!(engine["cpl"], 0);
    assert!(
        engine["engine"].as_str().is_some_and(|e| e.contains("compressed")),
        "{engine}"
    );
}

#[test]
fn bisect_finds_pushf_leak() {
    check_class(CLASSES[0]);
}

#[test]
fn bisect_finds_sti_shadow() {
    check_class(CLASSES[1]);
}

#[test]
fn bisect_finds_scan_miss() {
    check_class(CLASSES[2]);
}

#[test]
fn bisect_finds_stale_patch() {
    check_class(CLASSES[3]);
}

#[test]
fn a_clean_trace_has_no_divergence() {
    let path = golden("patchbugs.rbt");
    let out = ringback(&["bisect", path.to_str().expect("path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("No divergence"), "{stdout}");
}

#[test]
fn injecting_on_the_command_line_finds_the_bug_in_a_clean_trace() {
    let path = golden("patchbugs.rbt");
    let out = ringback(&[
        "bisect",
        path.to_str().expect("path"),
        "--inject",
        "sti-shadow",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    let found = &report["report"]["divergence"]["found"];
    assert_eq!(found["instruction"], "sti");
    // The clean trace has no events from that run: the history is replayed.
    assert_eq!(found["history_source"], "replay");
}

#[test]
fn the_text_report_reads_as_a_story() {
    let path = golden("bisect/stale-patch.rbt");
    let out = ringback(&["bisect", path.to_str().expect("path")]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "DIVERGENCE at icount",
        "mov eax,ds",
        "eax",
        "The recording agrees with side b",
        "STALE",
        "write to code page",
        "Culprit",
        "monitor seek",
        "--at 914473",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

fn record(name: &str, inject: Option<&str>, append: &str, extra: &[&str]) -> String {
    let path = scratch(name);
    let kernel = format!("{OUT_DIR}/patchbugs.elf");
    // One RTC start for every recording: two recordings of the same guest
    // and input must agree on it.
    let mut args = vec![
        "record",
        "-o",
        &path,
        &kernel,
        "--serial",
        "none",
        "--rtc-base",
        "1700000000",
        "--append",
        append,
    ];
    args.extend(extra);
    if let Some(bug) = inject {
        args.extend(["--inject", bug]);
    }
    let out = ringback(&args);
    assert!(out.status.code().is_some(), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

#[test]
fn against_compares_two_recordings_digests_events_and_configurations() {
    let every = ["--checkpoint-interval", "200000"];
    let clean = record("against-clean.rbt", None, "", &every);
    let leaky = record("against-leaky.rbt", Some("pushf-leak"), "", &every);
    let out = ringback(&["bisect", &clean, "--against", &leaky, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&out);
    let rec = &report["recordings"];
    assert_eq!(rec["first_differing"].as_u64(), Some(200_000), "{rec}");
    assert_eq!(rec["last_agreeing"].as_u64(), Some(0), "{rec}");
    // The patch decisions are the same up to the bug: the first differing
    // event is what the leaked flag changed, after the PUSHF ran.
    let ev = &rec["first_event_difference"];
    assert!(ev["a"].is_string() || ev["b"].is_string(), "{rec}");
    let found = &report["report"]["divergence"]["found"];
    assert_eq!(found["instruction"], "pushfd");
    assert!(ev["icount"].as_u64() >= found["icount"].as_u64(), "{ev} {found}");
    assert_eq!(found["culprit"]["patches"][0]["instruction"], "pushfd");

    // With checkpoints only at the start and at each end (which differ),
    // the configurations are replayed from the start to a's end.
    let clean = record("against-clean-sparse.rbt", None, "", &[]);
    let leaky = record("against-leaky-sparse.rbt", Some("pushf-leak"), "", &[]);
    let out = ringback(&["bisect", &clean, "--against", &leaky, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&out);
    assert!(report["recordings"]["first_differing"].is_null());
    assert_eq!(report["report"]["divergence"]["found"]["instruction"], "pushfd");

    // Recorded with another RTC start: not the same input.
    let other_clock = scratch("against-other-clock.rbt");
    let kernel = format!("{OUT_DIR}/patchbugs.elf");
    ringback(&[
        "record",
        "-o",
        &other_clock,
        &kernel,
        "--serial",
        "none",
        "--rtc-base",
        "1600000000",
    ]);
    let out = ringback(&["bisect", &clean, "--against", &other_clock]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("the RTC start times differ"), "{err}");

    // The same recording against itself: nothing differs.
    let out = ringback(&["bisect", &clean, "--against", &clean]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("the event streams are identical"), "{text}");
}

#[test]
fn unusable_input_exits_125_for_git_bisect_run() {
    let garbage = scratch("garbage.rbt");
    std::fs::write(&garbage, b"not a trace at all").expect("write");
    for args in [
        vec!["bisect", garbage.as_str()],
        vec!["bisect", "/nonexistent/trace.rbt"],
    ] {
        let out = ringback(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert!(err.contains("cannot use trace"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Two recordings of different guests are not comparable.
    let hello = scratch("hello.rbt");
    let kernel = format!("{OUT_DIR}/hello.elf");
    ringback(&["record", "-o", &hello, &kernel, "--serial", "none"]);
    let patchbugs = golden("patchbugs.rbt");
    let out = ringback(&["bisect", &hello, "--against", patchbugs.to_str().expect("path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("not recordings of the same guest"), "{err}");
}

#[test]
fn ctrl_c_stops_a_long_bisect_with_the_partial_result() {
    // Long enough that the reference engine needs seconds for it.
    let path = record("long.rbt", None, "60", &[]);
    let child = Command::new(RINGBACK)
        .args(["bisect", &path, "--jobs", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on the child we spawned, still running (it has not
    // been waited for), with a valid signal number.
    let rc = unsafe { kill(child.id() as i32, 2) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(130),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("INTERRUPTED: a and b agree at every checkpoint up to icount"),
        "{text}"
    );
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
