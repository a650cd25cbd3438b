//! The gdb server against Debian's real gdb, in batch mode, on a recorded
//! guest built with symbols; and raw-socket abuse that must leave the
//! server serving.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod common;

const RINGBACK: &str = env!("CARGO_BIN_EXE_ringback");
const OUT_DIR: &str = env!("OUT_DIR");

fn scratch(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("ringback-gdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name).to_string_lossy().into_owned()
}

fn record(name: &str, tag: &str) -> String {
    let trace = scratch(&format!("{name}-{tag}.rbt"));
    let kernel = format!("{OUT_DIR}/{name}.elf");
    let out = Command::new(RINGBACK)
        .args([
            "record",
            "-o",
            &trace,
            &kernel,
            "--serial",
            "none",
            "--checkpoint-interval",
            "2000",
        ])
        .output()
        .expect("record");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    trace
}

/// A server on a free loopback port for a trace; returns it and the port.
fn serve(trace: &str) -> (Child, u16) {
    serve_cmd(&["gdb", trace, "--listen", "127.0.0.1:0"])
}

fn gdb(tag: &str, script: &str) -> String {
    common::gdb_batch(tag, script)
}

/// The value printed after `key=` on the line starting with `tag`.
fn field(out: &str, tag: &str, key: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no {tag} line in gdb output:\n{out}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .to_string()
}

const REGS: &str = r#"printf "eax=%x ecx=%x edx=%x ebx=%x esp=%x ebp=%x esi=%x edi=%x eip=%x eflags=%x\n", $eax, $ecx, $edx, $ebx, $esp, $ebp, $esi, $edi, $eip, $eflags"#;

fn serve_cmd(args: &[&str]) -> (Child, u16) {
    common::serve(args)
}

#[test]
fn gdb_steps_and_continues_both_ways_on_a_trace() {
    let trace = record("gdbdemo", "both-ways");
    let (server, port) = serve(&trace);
    both_ways(server, port, "both-ways");
}

#[test]
fn the_same_session_works_live_on_run_gdb() {
    let elf = format!("{OUT_DIR}/gdbdemo.elf");
    let (server, port) = serve_cmd(&["run", &elf, "--serial", "none", "--gdb", "127.0.0.1:0"]);
    both_ways(server, port, "live");
}

// `ringback qemu ... -s -S`, a Makefile's `qemu -s -S` line with the one
// word changed: gdb attaches at :1234 as it would to QEMU. (No other test
// listens on 1234; the rest take a port of their own.)
#[test]
fn the_same_session_works_through_ringback_qemu_dash_s_dash_s() {
    let elf = format!("{OUT_DIR}/gdbdemo.elf");
    let (server, port) = serve_cmd(&["qemu", "-kernel", &elf, "-display", "none", "-s", "-S"]);
    assert_eq!(port, 1234);
    both_ways(server, port, "qemu");
}

fn both_ways(server: Child, port: u16, tag: &str) {
    let elf = format!("{OUT_DIR}/gdbdemo.elf");
    let script = format!(
        r#"set pagination off
set confirm off
file {elf}
target remote 127.0.0.1:{port}
printf "START\n"
monitor icount
printf "SYMS bump=%x counter=%x\n", bump, &counter
break bump
continue
printf "HIT1 eip=%x counter=%u\n", $eip, counter
continue
printf "HIT2 eip=%x counter=%u\n", $eip, counter
printf "BEFORE "
{REGS}
stepi
printf "STEPPED eip=%x\n", $eip
reverse-stepi
printf "AFTER "
{REGS}
reverse-continue
printf "RC eip=%x counter=%u\n", $eip, counter
delete
monitor seek 500
monitor icount
continue
printf "END eip=%x counter=%u\n", $eip, counter
watch counter
reverse-continue
printf "WATCH pc=%x counter=%u\n", $pc, counter
x/i $pc
delete
monitor seek 0
reverse-stepi
printf "BEGIN eip=%x\n", $eip
monitor quit
"#
    );
    let out = gdb(tag, &script);
    finish(server);
    let bump = field(&out, "SYMS", "bump");
    let counter = field(&out, "SYMS", "counter");
    assert!(out.contains("icount 0 of"), "gdb sees the guest at icount 0:\n{out}");
    // break at a function, continue, check registers and memory
    assert_eq!(field(&out, "HIT1", "eip"), bump);
    assert_eq!(field(&out, "HIT1", "counter"), "0");
    assert_eq!(field(&out, "HIT2", "counter"), "1");
    // stepi then reverse-stepi: identical registers
    let before = out
        .lines()
        .find(|l| l.starts_with("BEFORE"))
        .expect("BEFORE")
        .replace("BEFORE ", "");
    let after = out
        .lines()
        .find(|l| l.starts_with("AFTER"))
        .expect("AFTER")
        .replace("AFTER ", "");
    assert_eq!(before, after, "{out}");
    assert_ne!(field(&out, "STEPPED", "eip"), bump);
    // reverse-continue stops at the previous breakpoint hit
    assert_eq!(field(&out, "RC", "eip"), bump);
    assert_eq!(field(&out, "RC", "counter"), "0");
    // monitor seek moves the position; the end of the trace is reported
    assert!(out.contains("icount 500 of"), "{out}");
    assert!(out.contains("No more reverse-execution history"), "{out}");
    assert_eq!(field(&out, "END", "counter"), "5050");
    // a watchpoint and reverse-continue: the instruction that last wrote
    let pc = u32::from_str_radix(&field(&out, "WATCH", "pc"), 16).expect("pc");
    let bump_at = u32::from_str_radix(&bump, 16).expect("bump");
    assert!((bump_at..bump_at + 64).contains(&pc), "stopped in bump: {out}");
    assert_eq!(
        field(&out, "WATCH", "counter"),
        "4950",
        "the value before the last write"
    );
    let insn = out.lines().find(|l| l.starts_with("=> 0x")).expect("x/i line");
    assert!(
        insn.contains("mov") && insn.contains(&format!("0x{counter}")),
        "the writer: {insn}"
    );
    // the start of the trace
    assert_eq!(out.matches("No more reverse-execution history").count(), 2, "{out}");
}

/// Waits for the server to exit after `monitor quit`; kills it if it does
/// not, and says so.
fn finish(mut server: Child) {
    for _ in 0..100 {
        if let Ok(Some(_)) = server.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = server.kill();
    panic!("the server did not stop after 'monitor quit'");
}

fn packet(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    format!("${body}#{sum:02x}").into_bytes()
}

#[test]
fn hostile_packets_and_a_second_client_leave_the_server_serving() {
    let trace = record("gdbdemo", "hostile");
    let (server, port) = serve(&trace);
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        s
    };
    // Garbage, a bad checksum, a truncated packet, an oversized one, then
    // a disconnect in the middle of a packet.
    let mut s = connect();
    let _ = s.write_all(b"\x00\xff garbage without framing \x03\x03");
    let _ = s.write_all(b"$g#00");
    let _ = s.write_all(b"$qSupported:multiprocess+");
    let mut big = b"$m".to_vec();
    big.extend(std::iter::repeat_n(b'f', 100_000));
    big.extend(b"#00");
    let _ = s.write_all(&big);
    let _ = s.write_all(b"$m0,4");
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    // A well-behaved client still gets answers; a second one is refused
    // while it is connected.
    let mut first = connect();
    first.write_all(&packet("?")).expect("send");
    let mut buf = [0u8; 256];
    let n = first.read(&mut buf).expect("a reply");
    assert!(n > 0);
    let mut second = connect();
    let mut refused = Vec::new();
    let _ = second.read_to_end(&mut refused);
    assert!(
        String::from_utf8_lossy(&refused).contains("E01"),
        "second client: {refused:?}"
    );
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    // And real gdb works afterwards.
    let elf = format!("{OUT_DIR}/gdbdemo.elf");
    let out = gdb(
        "hostile",
        &format!(
        "set confirm off\nfile {elf}\ntarget remote 127.0.0.1:{port}\nbreak bump\ncontinue\nprintf \"OK counter=%u\\n\", counter\nmonitor events 18446744073709551615\nmonitor seek nowhere\nmonitor frobnicate\nmonitor quit\nx/4xb 0xfffff000\n"
        ),
    );
    finish(server);
    assert_eq!(field(&out, "OK", "counter"), "0", "{out}");
    assert!(
        out.contains("Cannot access memory at address 0xfffff000"),
        "unmapped memory is an error: {out}"
    );
    assert!(out.contains("seek needs an instruction count"), "{out}");
    assert!(out.contains("unknown command 'frobnicate'"), "{out}");
}

#[test]
fn nexti_and_reverse_nexti_step_over_a_call_both_ways() {
    let trace = record("gdbdemo", "nexti");
    let (server, port) = serve(&trace);
    let elf = format!("{OUT_DIR}/gdbdemo.elf");
    let script = format!(
        r#"set confirm off
file {elf}
target remote 127.0.0.1:{port}
break bump
continue
finish
printf "CALLER pc=%x counter=%u\n", $pc, counter
delete
reverse-nexti
printf "BACK pc=%x counter=%u\n", $pc, counter
nexti
printf "OVER pc=%x counter=%u\n", $pc, counter
monitor quit
"#
    );
    let out = gdb("nexti", &script);
    finish(server);
    // After `finish`, at the return address; reverse-nexti goes back over
    // the whole call to the CALL itself, nexti forwards over it again.
    assert_eq!(field(&out, "CALLER", "counter"), "1", "{out}");
    assert_eq!(field(&out, "BACK", "counter"), "0", "{out}");
    let (caller, back) = (field(&out, "CALLER", "pc"), field(&out, "BACK", "pc"));
    let hex = |s: &str| u32::from_str_radix(s, 16).expect("hex pc");
    assert!(
        hex(&back) < hex(&caller) && hex(&caller) - hex(&back) <= 7,
        "the call: {out}"
    );
    assert_eq!(field(&out, "OVER", "pc"), caller, "{out}");
    assert_eq!(field(&out, "OVER", "counter"), "1", "{out}");
}

#[test]
fn ctrl_c_interrupts_a_running_continue() {
    // A live run long enough that `continue` would take minutes.
    let elf = format!("{OUT_DIR}/bench.elf");
    let (mut server, port) = serve_cmd(&[
        "run",
        &elf,
        "--append",
        "int 100000",
        "--serial",
        "none",
        "--gdb",
        "127.0.0.1:0",
    ]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = [0u8; 512];
    s.write_all(&packet("?")).expect("send");
    let _ = s.read(&mut buf).expect("stop reply");
    s.write_all(b"+").expect("ack");
    s.write_all(&packet("c")).expect("continue");
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(b"\x03").expect("ctrl-c");
    let mut reply = Vec::new();
    while !String::from_utf8_lossy(&reply).contains("$S02") {
        let n = s.read(&mut buf).expect("a stop reply to Ctrl-C");
        assert!(n > 0, "server closed: {reply:?}");
        reply.extend_from_slice(&buf[..n]);
    }
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn edits_change_what_runs_next_and_going_back_forgets_them() {
    let trace = record("gdbdemo", "edit");
    let (server, port) = serve(&trace);
    let elf = format!("{OUT_DIR}/gdbdemo.elf");
    let script = format!(
        r#"set confirm off
file {elf}
target remote 127.0.0.1:{port}
break bump if i == 100
continue
set var counter = 1000
set $saved = $ecx
set $ecx = 0x1234
printf "EDITED counter=%u ecx=%x\n", counter, $ecx
set $ecx = $saved
delete
continue
printf "END counter=%u\n", counter
reverse-stepi
reverse-stepi
stepi
stepi
printf "REPLAYED counter=%u\n", counter
monitor quit
"#
    );
    let out = gdb("edit", &script);
    finish(server);
    assert_eq!(field(&out, "EDITED", "counter"), "1000", "{out}");
    assert_eq!(field(&out, "EDITED", "ecx"), "1234", "{out}");
    // The edited run adds 100 to 1000 instead of to 4950.
    assert_eq!(field(&out, "END", "counter"), "1100", "{out}");
    // Back and forth again: the recording's values, the edit forgotten.
    assert_eq!(field(&out, "REPLAYED", "counter"), "5050", "{out}");
}

/// The stop replies gdb received, from its `set debug remote 1` log.
fn stop_replies(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.split("Packet received: ").nth(1))
        .filter(|p| p.starts_with('T') || p.starts_with('S'))
        .collect()
}

#[test]
fn a_new_client_finds_none_of_the_last_ones_breakpoints_watchpoints_or_edits() {
    let trace = record("gdbdemo", "sessions");
    let (server, port) = serve(&trace);
    let elf = format!("{OUT_DIR}/gdbdemo.elf");
    // The first gdb inserts a breakpoint and a watchpoint at once (always
    // inserted), edits memory, and dies without removing anything, as a
    // crashed or killed gdb does.
    let first = gdb(
        "sessions-1",
        &format!(
            r#"set confirm off
set breakpoint always-inserted on
file {elf}
target remote 127.0.0.1:{port}
break bump
watch counter
set var counter = 1000
printf "EDITED counter=%u\n", counter
shell kill -9 $PPID
"#
        ),
    );
    assert_eq!(field(&first, "EDITED", "counter"), "1000", "{first}");
    // Time for the server to see the connection close.
    std::thread::sleep(Duration::from_millis(300));
    // The second sets only its own breakpoint, after the loop that calls
    // bump. gdb silently resumes from a stop it did not ask for, so a
    // leaked breakpoint shows in its remote log: more than one stop reply.
    let second = gdb(
        "sessions-2",
        &format!(
            r#"set confirm off
file {elf}
target remote 127.0.0.1:{port}
printf "START counter=%u\n", counter
break printf
set debug remote 1
continue
set debug remote 0
printf "MINE pc=%x counter=%u\n", $pc, counter
printf "SYMS printf=%x\n", printf
monitor quit
"#
        ),
    );
    finish(server);
    assert_eq!(field(&second, "START", "counter"), "0", "the edit is gone: {second}");
    assert_eq!(
        field(&second, "MINE", "pc"),
        field(&second, "SYMS", "printf"),
        "{second}"
    );
    assert_eq!(field(&second, "MINE", "counter"), "5050", "{second}");
    let stops = stop_replies(&second);
    assert_eq!(stops.len(), 1, "one stop, at its own breakpoint: {stops:?}");
    assert!(stops[0].contains("swbreak"), "{stops:?}");
}

/// The body of the next packet from the server, skipping acks; its
/// checksum checked. Panics when none comes within 5 s (a hang).
fn read_packet(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        assert!(
            Instant::now() < deadline,
            "no complete reply within 5 s: {} bytes so far",
            raw.len()
        );
        match s.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            Ok(_) => panic!("the server closed the connection after {} bytes", raw.len()),
            Err(e) => panic!("no complete reply within 5 s ({e}) after {} bytes", raw.len()),
        }
        if raw.first() == Some(&b'+') {
            raw.clear();
        }
        if raw.len() >= 3 && raw[raw.len() - 3] == b'#' {
            break;
        }
    }
    assert_eq!(
        raw[0],
        b'$',
        "a packet starts with $: {:?}",
        String::from_utf8_lossy(&raw)
    );
    let body = &raw[1..raw.len() - 3];
    let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    let given = std::str::from_utf8(&raw[raw.len() - 2..]).expect("checksum text");
    assert_eq!(
        format!("{sum:02x}"),
        given,
        "checksum of {:?}",
        String::from_utf8_lossy(body)
    );
    String::from_utf8(body.to_vec()).expect("a text reply")
}

/// A reply body with gdb's run-length encoding (`X*n`: n - 29 more X)
/// expanded.
fn unrle(body: &str) -> String {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '*' {
            let n = chars.next().expect("a count after *") as usize - 29;
            let last = out.chars().last().expect("something to repeat");
            out.extend(std::iter::repeat_n(last, n));
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn a_huge_memory_read_gets_one_packet_of_at_most_the_advertised_size() {
    let trace = record("gdbdemo", "huge-read");
    let (server, port) = serve(&trace);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(&packet("qSupported:multiprocess+")).expect("send");
    let features = read_packet(&mut s);
    let size = features
        .split(';')
        .find_map(|f| f.strip_prefix("PacketSize="))
        .and_then(|v| usize::from_str_radix(v, 16).ok())
        .unwrap_or_else(|| panic!("PacketSize in {features}"));
    s.write_all(b"+").expect("ack");
    // All of the address space: answered at once with as much as fits,
    // from the start (gdb asks again for the rest).
    for ask in ["m0,ffffffff", "m100000,ffffffffffffffff"] {
        s.write_all(&packet(ask)).expect("send");
        let body = read_packet(&mut s);
        s.write_all(b"+").expect("ack");
        let hex = unrle(&body);
        assert!(body.len() <= size, "{ask}: {} bytes", body.len());
        assert!(hex.len() <= size, "{ask}: {} hex digits", hex.len());
        assert!(
            !hex.is_empty() && hex.len().is_multiple_of(2) && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{ask}: memory, not an error: {body:.40}"
        );
    }
    // Unmapped memory is still an error, and a read running into it is
    // cut short there (the guest has 128 MiB of RAM and no paging yet).
    s.write_all(&packet("mfffffff0,ffffffff")).expect("send");
    assert!(read_packet(&mut s).starts_with('E'));
    s.write_all(&packet("m7fffff8,100")).expect("send");
    assert_eq!(unrle(&read_packet(&mut s)).len(), 16, "8 bytes, up to the end of RAM");
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    // gdb reads as before: across pages, as the ELF loaded them, and short
    // at the end of RAM.
    let elf = format!("{OUT_DIR}/gdbdemo.elf");
    let dump = scratch("huge-read.bin");
    let out = gdb(
        "huge-read",
        &format!(
            r#"set confirm off
file {elf}
target remote 127.0.0.1:{port}
dump binary memory {dump} 0x100000 0x101a38
x/16xb 0x100ff8
monitor quit
x/16xb 0x7fffff8
"#
        ),
    );
    finish(server);
    let image = std::fs::read(&elf).expect("elf");
    let parsed = goblin::elf::Elf::parse(&image).expect("an ELF");
    let load = parsed
        .program_headers
        .iter()
        .find(|p| p.p_type == goblin::elf::program_header::PT_LOAD && p.p_vaddr == 0x100000)
        .expect("the segment at 1 MiB");
    assert!(load.p_filesz >= 0x1a38, "{load:?}");
    let file = &image[load.p_offset as usize..][..0x1a38];
    assert!(
        std::fs::read(&dump).expect("dump") == file,
        "the dump is the loaded image"
    );
    let row = |addr: &str| {
        out.lines()
            .find(|l| l.starts_with(addr))
            .and_then(|l| l.split_once(':'))
            .unwrap_or_else(|| panic!("no {addr} row: {out}"))
            .1
            .split_whitespace()
            .map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).expect("a byte"))
            .collect::<Vec<u8>>()
    };
    assert_eq!(row("0x100ff8"), file[0xff8..0x1000]);
    assert_eq!(row("0x101000"), file[0x1000..0x1008]);
    assert_eq!(row("0x7fffff8").len(), 8, "{out}");
    assert!(out.contains("Cannot access memory at address 0x8000000"), "{out}");
}

#[test]
fn breakpoints_watchpoints_and_monitor_listings_are_bounded() {
    let trace = record("hello", "bounds");
    let (server, port) = serve(&trace);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // Each ack goes out at once, not after the server's delayed ack.
    s.set_nodelay(true).expect("nodelay");
    let mut ask = |body: &str| {
        s.write_all(&packet(body)).expect("send");
        let reply = read_packet(&mut s);
        s.write_all(b"+").expect("ack");
        reply
    };
    // A watchpoint over the whole address space, or very many: each is
    // translated page by page and compared with every memory access.
    assert!(ask("Z2,0,ffffffff").starts_with('E'), "a 4 GiB watchpoint is refused");
    assert!(ask("Z2,100000,10001").starts_with('E'), "64 KiB and a byte is refused");
    assert_eq!(ask("Z2,100000,10000"), "OK");
    let watches = (1..100)
        .take_while(|i| ask(&format!("Z2,{:x},4", 0x200000 + 4 * i)) == "OK")
        .count();
    assert_eq!(watches + 1, 64, "watchpoints at once");
    // Breakpoints: looked for at every instruction.
    let breaks = (0..2000)
        .take_while(|i| ask(&format!("Z0,{:x},1", 0x100000 + i)) == "OK")
        .count();
    assert_eq!(breaks, 1024, "breakpoints at once");
    // Removing one makes room; one already set is still fine.
    assert_eq!(ask("z0,100000,1"), "OK");
    assert_eq!(ask("Z0,300000,1"), "OK");
    assert_eq!(ask("Z0,300000,1"), "OK");
    assert!(ask("Z0,300001,1").starts_with('E'));
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    // `monitor events` with a huge count lists a bounded number (the trace
    // has over a thousand).
    let out = gdb(
        "bounds",
        &format!("set confirm off\ntarget remote 127.0.0.1:{port}\nmonitor events 1000000\nmonitor quit\n"),
    );
    finish(server);
    assert!(out.contains("at most 100 events at a time"), "{out}");
    let listed = out
        .lines()
        .filter(|l| l.starts_with('>') || l.starts_with("  "))
        .filter(|l| l.contains("  0x"))
        .count();
    assert!((1..=100).contains(&listed), "{listed} events listed:\n{out}");
}
