//! The run summary printed when a run ends: how it stopped, guest MIPS, and
//! for the raw engine where the guest paid for virtualization (exits by
//! reason, the hottest trap sites, patches).

use std::fmt::Write;

use vm::machine::{Engine, Machine, StopReason};

/// Trap sites listed at most.
const TOP_SITES: usize = 5;

pub fn render(machine: &Machine, stop: &StopReason, wall: f64) -> String {
    let mut out = String::new();
    let insns = machine.icount();
    let e = machine.exits;
    let s = machine.platform.stats;
    let mips = if wall > 0.0 { insns as f64 / wall / 1e6 } else { 0.0 };
    let engine = match machine.engine {
        Engine::Raw => "raw",
        Engine::Emulate => "emulate",
        Engine::Blocks => "blocks",
    };
    let _ = writeln!(
        out,
        "ringback: {stop}: {insns} instructions in {wall:.3} s ({mips:.1} MIPS, {engine}); port-io {} \
         (unmapped reads {}, writes {}), interrupts {}, exceptions {}, halts {}",
        s.port_reads + s.port_writes,
        s.unmapped_port_reads,
        s.unmapped_port_writes,
        e.interrupts,
        e.exceptions,
        e.halts
    );
    if machine.engine == Engine::Emulate {
        return out;
    }
    let b = machine.blocks.stats;
    let _ = writeln!(
        out,
        "ringback: blocks: {} built, {} taken back after a restore, {} run, {} dropped by writes",
        b.built, b.revived, b.executed, b.invalidated
    );
    let jit = &machine.blocks.jit;
    if jit.config.enabled {
        let j = jit.stats;
        let total = machine.icount().max(1);
        let _ = writeln!(
            out,
            "ringback: compiler: {} blocks translated ({:.1} us each, {} KiB of code, {} KiB held now, \
             {} cache flushes, {} made again for a segment no longer flat, {} without groups of memory \
             operands); {:.1}% of instructions ran in translations, {:.1}% as host code; {} entries, {} \
             chained entries",
            j.compiled,
            j.compile_nanos as f64 / 1e3 / j.compiled.max(1) as f64,
            j.code_bytes / 1024,
            jit.cache_bytes() / 1024,
            j.flushes,
            j.flat_refusals,
            j.group_refusals,
            100.0 * j.retired as f64 / total as f64,
            100.0 * (j.retired - j.stepped) as f64 / total as f64,
            j.entries,
            j.chained_entries,
        );
        let g = j.grouped_entries;
        if g.iter().any(|&n| n != 0) {
            let _ = writeln!(
                out,
                "ringback: compiler: port accesses logged as grouped entries in {} translations' runs \
                 (of 1, 2 and 3 accesses: {}, {}, {})",
                g.iter().sum::<u64>(),
                g[0],
                g[1],
                g[2],
            );
        }
    } else {
        let _ = writeln!(out, "ringback: compiler: off");
    }
    if machine.engine != Engine::Raw {
        return out;
    }
    let raw = &machine.raw;
    let m = &raw.monitor;
    let mut reasons: Vec<_> = m.exits_by_reason.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r}: {n}")).collect();
    let _ = writeln!(
        out,
        "ringback: monitor: {} exits ({} emulated, {} delivered to the guest){}{}; {} engine switches, \
         {} reference steps, {} true-privilege block runs",
        m.exits,
        m.emulated,
        m.delivered,
        if reasons.is_empty() { "" } else { " - " },
        reasons.join(", "),
        m.engine_switches,
        m.reference_steps,
        m.true_block_runs
    );
    let top = m.top_sites(TOP_SITES);
    if !top.is_empty() {
        let sites: Vec<String> = top.iter().map(|(pc, n)| format!("{pc:#x} ({n})")).collect();
        let _ = writeln!(out, "ringback: top trap sites: {}", sites.join(", "));
    }
    let sc = raw.scanner.stats;
    let t = raw.patch_totals();
    let _ = writeln!(
        out,
        "ringback: scanner: {} scans, {} instructions, {} sensitive marked; patches: {} installed, \
         {} refused, {} dirty; {} patch hits, {} traps avoided",
        sc.scans, sc.instructions, sc.marked, t.installed, t.refused, t.dirty, t.hits, t.traps_avoided
    );
    if raw.config.inject.any() {
        let _ = writeln!(out, "ringback: INJECTED PATCH BUGS: {:?}", raw.config.inject);
    }
    out
}
