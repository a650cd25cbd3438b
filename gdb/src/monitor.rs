//! `monitor` commands: where the replay is, moving it, and what the trace
//! says around it.

use gdbstub::target::ext::monitor_cmd::{output, outputln, ConsoleOutput, MonitorCmd};
use vm::engine::raw::patm::PatchState;

use crate::target::DebugTarget;
use crate::GdbError;

/// The most events `monitor events` lists.
const MAX_EVENTS: u64 = 100;

const HELP: &str = "\
ringback monitor commands:
  icount            the current position (instructions retired)
  seek N            move to icount N (forwards or backwards)
  restart           move to the start of the trace
  checkpoints       the trace's checkpoints
  events [N]        the N trace events around the position (default 10, at most 100)
  patches           the raw engine's patch table at this position
  quit              stop serving (the server exits)
  help              this text";

impl MonitorCmd for DebugTarget<'_> {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), GdbError> {
        let Ok(cmd) = std::str::from_utf8(cmd) else {
            outputln!(out, "monitor commands are text; try 'monitor help'");
            return Ok(());
        };
        let mut words = cmd.split_whitespace();
        let r = &mut self.replayer;
        match (words.next(), words.next()) {
            (Some("icount"), None) => {
                outputln!(out, "icount {} of {}", r.icount(), r.end_icount());
            }
            (Some("seek"), Some(n)) => match n.parse::<u64>() {
                Ok(n) => {
                    let target = n.min(r.end_icount());
                    seek_keeping_gdb_waiting(r, target, &mut out)?;
                    outputln!(
                        out,
                        "at icount {} (pc {:#x}); 'stepi 0' or 'info registers' to refresh gdb",
                        r.icount(),
                        vm::engine::raw::pc(&r.machine.cpu)
                    );
                }
                Err(_) => outputln!(out, "seek needs an instruction count, not '{n}'"),
            },
            (Some("restart"), None) => {
                seek_keeping_gdb_waiting(r, 0, &mut out)?;
                outputln!(out, "at icount 0");
            }
            (Some("checkpoints"), None) => {
                for (i, c) in r.checkpoint_icounts().iter().enumerate() {
                    outputln!(out, "checkpoint {i}: icount {c}");
                }
            }
            (Some("events"), n) => {
                let asked: u64 = n.and_then(|v| v.parse().ok()).unwrap_or(10).max(1);
                // The events are looked for within n thousand instructions
                // either way and each is a packet: a huge n would decode
                // the whole trace and send all of it.
                let n = asked.min(MAX_EVENTS);
                if n < asked {
                    outputln!(out, "at most {MAX_EVENTS} events at a time");
                }
                let here = r.icount();
                let before = r
                    .trace
                    .events(here.saturating_sub(n.saturating_mul(1000)), here)
                    .map_err(GdbError::Trace)?;
                let after = r
                    .trace
                    .events(here, here.saturating_add(n.saturating_mul(1000)))
                    .map_err(GdbError::Trace)?;
                let half = (n as usize).div_ceil(2);
                let shown = before
                    .iter()
                    .skip(before.len().saturating_sub(half))
                    .chain(after.iter().take(n as usize - half.min(n as usize)));
                let mut any = false;
                for e in shown {
                    any = true;
                    let mark = if e.icount < here { ' ' } else { '>' };
                    outputln!(out, "{mark} {:>12}  {:#010x}  {}", e.icount, e.pc, e.event);
                }
                if !any {
                    outputln!(out, "no events near icount {here}");
                }
            }
            (Some("patches"), None) => {
                let patches = &r.machine.raw.patches.patches;
                if patches.is_empty() {
                    outputln!(out, "no patches at this position");
                }
                for p in patches {
                    let state = match p.state {
                        PatchState::Enabled => "enabled".to_string(),
                        PatchState::Disabled => "disabled".to_string(),
                        PatchState::Dirty => "dirty".to_string(),
                        PatchState::Refused(why) => format!("refused: {why}"),
                    };
                    outputln!(
                        out,
                        "{:#010x}  {:<24} {:?} {state}; {} hits, {} traps avoided",
                        p.site,
                        p.inst.to_string(),
                        p.kind,
                        p.hits,
                        p.traps_avoided
                    );
                }
            }
            (Some("quit"), None) => {
                self.quit = true;
                outputln!(out, "the server stops when this client disconnects");
            }
            (Some("help"), _) | (None, _) => outputln!(out, "{HELP}"),
            _ => outputln!(out, "unknown command '{cmd}'; try 'monitor help'"),
        }
        Ok(())
    }
}

/// Checkpoints a seek passes between two chances to tell gdb it is still
/// at work.
const SEEK_STRIDE: usize = 64;

/// Seeks in strides of checkpoints, sending gdb a dot of console output
/// whenever half a second has passed: a first seek across a long trace
/// moves the replay's RAM image over every checkpoint on the way (a
/// second or more), and gdb takes a reply slower than its `remotetimeout`
/// (2 s) for a lost packet, which ends the session.
fn seek_keeping_gdb_waiting(
    r: &mut replay::Replayer,
    target: u64,
    out: &mut ConsoleOutput<'_>,
) -> Result<(), GdbError> {
    let here = r.icount();
    let icounts = r.checkpoint_icounts();
    let (low, high) = (here.min(target), here.max(target));
    let mut waypoints: Vec<u64> = icounts
        .iter()
        .copied()
        .filter(|&c| c > low && c < high)
        .step_by(SEEK_STRIDE)
        .collect();
    if target < here {
        waypoints.reverse();
    }
    let mut told = std::time::Instant::now();
    let mut dots = false;
    for at in waypoints.into_iter().chain(std::iter::once(target)) {
        r.seek(at).map_err(GdbError::Trace)?;
        if told.elapsed().as_millis() >= 500 {
            output!(out, ".");
            out.flush();
            told = std::time::Instant::now();
            dots = true;
        }
    }
    if dots {
        outputln!(out, "");
    }
    Ok(())
}
