//! `ringback qemu`: a qemu-system-i386 command line, mapped onto ringback's
//! run options (docs/qemu.md lists every option). What cannot change a
//! guest's result (the display, the monitor, a name) is accepted with a
//! note; what ringback does differently is an error that says what it does
//! instead, never silently dropped.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::cli::RunArgs;

/// A QEMU command line as ringback runs it.
pub struct QemuRun {
    pub run: RunArgs,
    /// `-no-reboot`: QEMU exits at a reset instead of rebooting.
    pub no_reboot: bool,
    /// What was accepted without effect, for stderr.
    pub notes: Vec<String>,
    /// `-initrd`'s value, split into modules or kept as an initrd once the
    /// kernel's kind is known.
    initrd: Option<String>,
}

/// What `ringback qemu -h` prints.
pub const USAGE: &str = "\
Usage: ringback qemu [QEMU OPTIONS]   (as qemu-system-i386; docs/qemu.md)

Taken as QEMU takes them:
  -kernel FILE  -initrd FILE[ ARGS][,FILE...]  -append CMDLINE  -bios FILE
  -m SIZE | size=SIZE   -serial stdio|mon:stdio|file:PATH|none   -nographic
  -debugcon stdio|file:PATH|none   -no-reboot  -no-shutdown   -rtc base=utc|DATE
  -s -S  |  -gdb tcp::PORT -S  (gdb attaches with the guest stopped)
  -device isa-debug-exit,iobase=0xf4[,iosize=...]   -device pc-testdev
  -machine pc  -accel tcg  -cpu qemu32  -smp 1  -nic none  -net none
Accepted with a note: -display, -vga, -monitor, -name, -d, -D, -k, -boot, -usb,
  -parallel, -s/-gdb without -S (no gdb server then)
Anything else is an error naming the option and what ringback does instead.
";

/// The values of `-device isa-debug-exit` ringback's exit device has.
const DEBUG_EXIT: &str = "isa-debug-exit,iobase=0xf4,iosize=0x04";

/// QEMU's defaults: 128 MiB; COM1 on a display that -display none hides,
/// so nowhere; no debug console at 0xE9.
fn blank_run_args() -> RunArgs {
    RunArgs {
        mem: "128M".into(),
        serial: "none".into(),
        debugcon: "none".into(),
        ..RunArgs::defaults()
    }
}

/// Splits `key=value,key=value` option arguments.
fn properties(value: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    value
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
}

/// A `-serial` or `-debugcon` destination as ringback's `--serial` names it.
fn chardev(option: &str, value: &str) -> Result<String> {
    Ok(match value {
        "stdio" => "stdio".into(),
        "mon:stdio" => "stdio".into(),
        "none" | "null" => "none".into(),
        _ => match value.strip_prefix("file:") {
            Some(path) if !path.is_empty() => path.into(),
            _ => bail!(
                "{option} {value}: ringback connects a console to stdio, file:PATH or none only (no sockets, \
                 ptys or virtual consoles)"
            ),
        },
    })
}

/// Seconds since 1970 of a UTC date `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`
/// (QEMU's -rtc base=).
fn unix_seconds(date: &str) -> Option<u64> {
    use vm::devices::cmos::{days_from_civil, days_in_month};
    let (day, time) = date.split_once('T').unwrap_or((date, "00:00:00"));
    let mut d = day.splitn(3, '-').map(|p| p.parse::<u16>().ok());
    let (y, m, dd) = (i64::from(d.next()??), i64::from(d.next()??), i64::from(d.next()??));
    let mut t = time.splitn(3, ':').map(|p| p.parse::<u8>().ok());
    let (h, mi, s) = (u64::from(t.next()??), u64::from(t.next()??), u64::from(t.next()??));
    let valid_day = (1..=12).contains(&m) && dd >= 1 && dd <= days_in_month(y, m);
    if !valid_day || !(1970..=9999).contains(&y) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = u64::try_from(days_from_civil(y, m, dd)).ok()?;
    Some(days * 86_400 + h * 3600 + mi * 60 + s)
}

/// Parses a qemu-system-i386 argument list.
pub fn parse(args: &[String]) -> Result<QemuRun> {
    let mut q = QemuRun {
        run: blank_run_args(),
        no_reboot: false,
        notes: Vec::new(),
        initrd: None,
    };
    let (mut serial, mut nographic, mut gdb_stub, mut wait_for_gdb) = (None, false, None, false);
    let mut debugcon = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // QEMU takes --option as -option.
        let opt = match arg.strip_prefix("--") {
            Some(rest) => format!("-{rest}"),
            None => arg.clone(),
        };
        if !opt.starts_with('-') {
            bail!("{arg}: QEMU takes its kernel as -kernel FILE (a bare argument would be a disk image, which ringback has no disk for)");
        }
        let mut value = || -> Result<String> { it.next().cloned().with_context(|| format!("{opt} needs a value")) };
        match opt.as_str() {
            "-kernel" => q.run.kernel = Some(PathBuf::from(value()?)),
            "-initrd" => q.initrd = Some(value()?),
            "-append" => q.run.append = value()?,
            "-bios" => q.run.bios = Some(PathBuf::from(value()?)),
            "-m" => {
                let v = value()?;
                let mut size = None;
                for (k, val) in properties(&v) {
                    match (k, val) {
                        ("size", Some(s)) => size = Some(s.to_string()),
                        (s, None) if size.is_none() => size = Some(s.to_string()),
                        _ => bail!("-m {v}: ringback takes a RAM size only (no slots or maxmem: no memory hotplug)"),
                    }
                }
                let size = size.with_context(|| format!("-m {v}: no size"))?;
                // QEMU's unit is MiB, as ringback's.
                q.run.mem = size;
            }
            "-serial" => {
                let v = value()?;
                if serial.is_some() {
                    bail!("-serial {v}: ringback has one serial port (COM1); a second -serial would be COM2");
                }
                if v == "mon:stdio" {
                    q.notes
                        .push("-serial mon:stdio: ringback has no monitor; COM1 is on stdio".into());
                }
                serial = Some(chardev("-serial", &v)?);
            }
            "-nographic" => nographic = true,
            "-display" => {
                let v = value()?;
                if v != "none" {
                    q.notes.push(format!("-display {v}: ringback has no display"));
                }
            }
            "-vga" => {
                let v = value()?;
                if v != "none" {
                    q.notes.push(format!("-vga {v}: ringback has no display adapter"));
                }
            }
            "-monitor" => {
                let v = value()?;
                if v != "none" {
                    q.notes.push(format!("-monitor {v}: ringback has no monitor"));
                }
            }
            "-name" => {
                let v = value()?;
                q.notes.push(format!("-name {v}: accepted, nothing to name"));
            }
            "-no-reboot" => q.no_reboot = true,
            // There is no ACPI power-off to stop at.
            "-no-shutdown" => {}
            "-s" => gdb_stub = Some("127.0.0.1:1234".to_string()),
            "-gdb" => {
                let v = value()?;
                // Chardev options (",server,nowait,ipv4") describe how QEMU
                // listens; ringback's server always listens and waits.
                let spec = v.split(',').next().unwrap_or_default();
                let addr = match spec.strip_prefix("tcp:") {
                    Some(rest) => match rest.strip_prefix(':') {
                        Some(port) => format!("127.0.0.1:{port}"),
                        None => rest.to_string(),
                    },
                    None => bail!("-gdb {v}: ringback's gdb server listens on tcp::PORT or tcp:HOST:PORT only"),
                };
                gdb_stub = Some(addr);
            }
            "-S" => wait_for_gdb = true,
            "-device" => {
                let v = value()?;
                let mut props = properties(&v);
                match props.next() {
                    Some(("isa-debug-exit", None)) => {
                        // QEMU's own defaults are iobase 0x501, iosize 2.
                        let (mut iobase, mut iosize) = (0x501, 2);
                        for (k, val) in props {
                            let n = val.and_then(|v| crate::cli::parse_addr(v).ok());
                            match (k, n) {
                                ("iobase", Some(n)) => iobase = n,
                                ("iosize", Some(n)) => iosize = n,
                                ("id", _) => {}
                                _ => bail!("-device {v}: isa-debug-exit takes iobase, iosize and id"),
                            }
                        }
                        if iobase != 0xF4 || !matches!(iosize, 1 | 2 | 4) {
                            bail!("-device {v}: ringback's isa-debug-exit is -device {DEBUG_EXIT}");
                        }
                        if iosize != 4 {
                            q.notes.push(format!(
                                "-device {v}: ringback's isa-debug-exit decodes 0xf4-0xf7 (iosize=0x04)"
                            ));
                        }
                    }
                    Some(("pc-testdev", None)) => {}
                    _ => bail!(
                        "-device {v}: ringback has no such device; its devices beyond the PC's are -device \
                         {DEBUG_EXIT} and -device pc-testdev"
                    ),
                }
            }
            "-debugcon" => {
                let v = value()?;
                debugcon = Some(chardev("-debugcon", &v)?);
            }
            "-accel" => {
                let v = value()?;
                // tcg with its tuning properties, or a list that falls back to it.
                if !v.split(',').next().unwrap_or_default().split(':').any(|a| a == "tcg") {
                    bail!("-accel {v}: ringback runs the guest itself; leave -accel out (or say tcg)");
                }
            }
            "-enable-kvm" => bail!("-enable-kvm: ringback runs the guest itself; leave it out"),
            "-machine" | "-M" => {
                let v = value()?;
                for (k, val) in properties(&v) {
                    match (k, val) {
                        ("pc", None) | ("type", Some("pc")) => {}
                        ("accel", Some(list)) if list.split(':').any(|a| a == "tcg") => {}
                        (m, None) if m.starts_with("pc-i440fx") => {}
                        _ => bail!(
                            "-machine {v}: ringback models QEMU's pc machine (i440FX era: local and I/O APIC, \
                             8259s, ISA devices); use -machine pc"
                        ),
                    }
                }
            }
            "-cpu" => {
                let v = value()?;
                if v != "qemu32" {
                    bail!(
                        "-cpu {v}: ringback has one CPU model, a P6 (family 6; FPU, PSE, TSC, MSR, CX8, SEP, PGE, \
                         CMOV, APIC, no MMX or SSE); use -cpu qemu32, QEMU's default, or leave -cpu out"
                    );
                }
            }
            "-smp" => {
                let v = value()?;
                let ok = properties(&v).all(|(k, val)| {
                    matches!(
                        (k, val),
                        ("1", None) | ("cpus" | "maxcpus" | "sockets" | "cores" | "threads", Some("1"))
                    )
                });
                if !ok {
                    bail!("-smp {v}: ringback has one CPU; use -smp 1");
                }
            }
            "-nodefaults" | "-no-hpet" | "-no-acpi" | "-no-kvm" => {}
            // QEMU's own logging and host settings: nothing a guest sees.
            "-d" | "-D" | "-k" | "-boot" => {
                let v = value()?;
                q.notes.push(format!("{opt} {v}: accepted, no effect under ringback"));
            }
            "-usb" => q.notes.push("-usb: ringback has no USB controller".into()),
            "-parallel" => {
                let v = value()?;
                if v != "none" {
                    q.notes.push(format!("-parallel {v}: ringback has no parallel port"));
                }
            }
            "-rtc" => {
                let v = value()?;
                for (k, val) in properties(&v) {
                    match (k, val) {
                        // ringback's RTC runs on virtual time, as clock=vm.
                        ("base", Some("utc")) | ("clock", Some(_)) | ("driftfix", Some(_)) => {}
                        ("base", Some("localtime")) => {
                            q.notes.push(format!("-rtc {v}: the RTC starts at the host's UTC time"))
                        }
                        ("base", Some(date)) => {
                            q.run.rtc_base = Some(unix_seconds(date).with_context(|| {
                                format!("-rtc {v}: base must be utc, localtime or YYYY-MM-DD[THH:MM:SS]")
                            })?)
                        }
                        _ => bail!("-rtc {v}: ringback takes base= and clock= only"),
                    }
                }
            }
            "-net" | "-nic" => {
                let v = value()?;
                if v != "none" {
                    bail!("{opt} {v}: ringback has no network card; use {opt} none or leave it out");
                }
            }
            _ => bail!("{arg}: not a QEMU option ringback knows (docs/qemu.md lists those it takes)"),
        }
    }
    if let Some(s) = serial {
        q.run.serial = s;
    } else if nographic {
        q.run.serial = "stdio".into();
    }
    if let Some(d) = debugcon {
        if d == "stdio" && q.run.serial == "stdio" {
            // One stream, as QEMU's two chardevs on one terminal.
            q.run.debugcon = "serial".into();
        } else {
            q.run.debugcon = if d == "stdio" { "stdout".into() } else { d };
        }
    }
    match (gdb_stub, wait_for_gdb) {
        (Some(addr), true) => q.run.gdb = Some(addr),
        (Some(addr), false) => q.notes.push(format!(
            "-s/-gdb without -S: ringback's gdb server starts with the guest stopped, so this run has none; \
             add -S to attach at {addr}, or record (`ringback record --qemu`) and debug the trace"
        )),
        (None, true) => bail!("-S without -s or -gdb: nothing could start the guest (ringback has no monitor)"),
        (None, false) => {}
    }
    if q.initrd.is_some() && q.run.kernel.is_none() {
        bail!("-initrd without -kernel: an initrd needs a kernel to load it");
    }
    if q.run.kernel.is_none() && q.run.bios.is_none() {
        bail!("no -kernel FILE or -bios FILE: ringback has no disk to boot from");
    }
    if q.run.bios.is_some() && q.run.kernel.is_some() {
        bail!("-bios with -kernel: ringback's --bios ROM is the firmware and loads nothing else; give one of them");
    }
    Ok(q)
}

impl QemuRun {
    /// The run options, `-initrd` placed as the kernel's kind needs: a
    /// multiboot kernel's modules ("FILE ARGS,FILE ARGS", as QEMU splits
    /// them), a Linux kernel's initramfs.
    pub fn into_run_args(mut self) -> Result<(RunArgs, bool, Vec<String>)> {
        if let (Some(initrd), Some(kernel)) = (self.initrd.take(), &self.run.kernel) {
            let head = read_head(kernel)?;
            if vm::boot::is_multiboot(&head) {
                self.run.modules = initrd.split(',').map(str::to_string).collect();
            } else {
                self.run.initrd = Some(PathBuf::from(initrd));
            }
        }
        Ok((self.run, self.no_reboot, self.notes))
    }
}

/// The first 8 KiB of a kernel, where a multiboot header must be.
fn read_head(path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(8192).read_to_end(&mut head))
        .with_context(|| format!("cannot read kernel {}", path.display()))?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn ok(line: &str) -> QemuRun {
        parse(&args(line)).unwrap_or_else(|e| panic!("{line}: {e:#}"))
    }

    fn err(line: &str) -> String {
        match parse(&args(line)) {
            Ok(_) => panic!("{line}: accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    // Every option ringback takes, and what it becomes.
    #[test]
    fn supported_options_map_onto_run_options() {
        let q = ok(
            "-kernel k.elf -append a=b -m 64 -serial stdio -display none -no-reboot -no-shutdown \
                    -device isa-debug-exit,iobase=0xf4,iosize=0x04 -device pc-testdev -monitor none \
                    -accel tcg -machine pc -cpu qemu32 -smp 1 -nic none -vga none",
        );
        assert_eq!(q.run.kernel.as_deref(), Some(std::path::Path::new("k.elf")));
        assert_eq!(
            (q.run.append.as_str(), q.run.mem.as_str(), q.run.serial.as_str()),
            ("a=b", "64", "stdio")
        );
        assert!(q.no_reboot && q.run.gdb.is_none() && q.run.debugcon == "none" && q.notes.is_empty());
        type Holds = fn(&QemuRun) -> bool;
        let table: &[(&str, Holds)] = &[
            ("-kernel k -m size=1G", |q| q.run.mem == "1G"),
            ("-kernel k -nographic", |q| q.run.serial == "stdio"),
            ("-kernel k", |q| {
                q.run.serial == "none" && q.run.mem == "128M" && !q.no_reboot
            }),
            ("-kernel k -serial file:/tmp/out", |q| q.run.serial == "/tmp/out"),
            ("-kernel k -serial none -nographic", |q| q.run.serial == "none"),
            ("-kernel k -serial mon:stdio", |q| {
                q.run.serial == "stdio" && q.notes.len() == 1
            }),
            ("-kernel k -s -S", |q| q.run.gdb.as_deref() == Some("127.0.0.1:1234")),
            ("-kernel k -gdb tcp::4321 -S", |q| {
                q.run.gdb.as_deref() == Some("127.0.0.1:4321")
            }),
            ("-kernel k -gdb tcp:0.0.0.0:9 -S", |q| {
                q.run.gdb.as_deref() == Some("0.0.0.0:9")
            }),
            ("-kernel k -serial stdio -debugcon stdio", |q| {
                q.run.debugcon == "serial"
            }),
            ("-kernel k -debugcon stdio", |q| {
                q.run.debugcon == "stdout" && q.run.serial == "none"
            }),
            ("-kernel k -serial stdio -debugcon file:/tmp/d", |q| {
                q.run.debugcon == "/tmp/d"
            }),
            ("-kernel k -debugcon none", |q| q.run.debugcon == "none"),
            ("-kernel k -s", |q| q.run.gdb.is_none() && q.notes.len() == 1),
            ("-kernel k -gdb tcp::1234,server,nowait -S", |q| {
                q.run.gdb.as_deref() == Some("127.0.0.1:1234")
            }),
            ("-kernel k -device isa-debug-exit,iobase=0xf4,iosize=0x01,id=x", |q| {
                q.notes.len() == 1
            }),
            (
                "-kernel k -accel kvm:tcg -M pc,accel=kvm:tcg -accel tcg,thread=single",
                |_| true,
            ),
            (
                "-kernel k -d int,cpu_reset -D log.txt -boot c -usb -parallel none",
                |q| q.notes.len() == 4,
            ),
            ("-kernel k -rtc base=2023-11-14T22:13:20,clock=vm", |q| {
                q.run.rtc_base == Some(1_700_000_000)
            }),
            ("-kernel k -rtc base=utc", |q| q.run.rtc_base.is_none()),
            ("-bios rom.bin", |q| q.run.bios.is_some() && q.run.kernel.is_none()),
            ("--kernel k --no-reboot", |q| q.no_reboot),
            ("-kernel k -display gtk -name x -monitor stdio -vga std", |q| {
                q.notes.len() == 4
            }),
            ("-kernel k -M pc-i440fx-8.2,accel=tcg -smp cpus=1", |_| true),
            ("-kernel k -initrd m1,m2", |q| q.initrd.as_deref() == Some("m1,m2")),
        ];
        for (line, holds) in table {
            assert!(holds(&ok(line)), "{line}");
        }
    }

    // Every error names the option and says what ringback does instead.
    #[test]
    fn unsupported_options_are_errors_that_say_what_to_do() {
        for (line, needle) in [
            ("-kernel k -hda disk.img", "-hda: not a QEMU option ringback knows"),
            ("disk.img", "ringback has no disk"),
            ("-m 64", "no -kernel FILE or -bios FILE"),
            ("-kernel k -smp 2", "ringback has one CPU"),
            ("-kernel k -cpu pentium3", "use -cpu qemu32"),
            ("-kernel k -machine q35", "use -machine pc"),
            ("-kernel k -M isapc", "use -machine pc"),
            ("-kernel k -accel kvm", "runs the guest itself"),
            ("-kernel k -enable-kvm", "runs the guest itself"),
            (
                "-kernel k -device isa-debug-exit",
                "-device isa-debug-exit,iobase=0xf4,iosize=0x04",
            ),
            ("-kernel k -device isa-debug-exit,iobase=0x501,iosize=2", "iobase=0xf4"),
            (
                "-kernel k -device isa-debug-exit,iobase=0xf4,iosize=8",
                "iobase=0xf4,iosize=0x04",
            ),
            ("-kernel k -device e1000", "ringback has no such device"),
            ("-kernel k -serial tcp::4444,server", "stdio, file:PATH or none"),
            ("-kernel k -serial stdio -serial stdio", "one serial port"),
            ("-kernel k -rtc base=yesterday", "base must be utc"),
            ("-kernel k -rtc base=2023-02-29", "base must be utc"),
            ("-kernel k -rtc base=2023-01-01T-1:00:00", "base must be utc"),
            ("-initrd i -bios b", "-initrd without -kernel"),
            ("-kernel k -S", "nothing could start the guest"),
            ("-kernel k -gdb unix:/tmp/s -S", "tcp::PORT"),
            ("-kernel k -m 1G,slots=2,maxmem=4G", "no memory hotplug"),
            ("-kernel k -nic user", "no network card"),
            ("-kernel k -bios b", "give one of them"),
            ("-kernel", "-kernel needs a value"),
        ] {
            let e = err(line);
            assert!(e.contains(needle), "{line}: {e}");
        }
    }
}
