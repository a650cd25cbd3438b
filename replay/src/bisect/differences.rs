//! What differs between the two sides after an instruction: registers and
//! flags by name, other state fields by path, RAM in runs.

use serde::Serialize;

use super::side::Side;
use crate::state_diff::other_fields;
pub use crate::state_diff::FieldDiff;

/// A run of RAM bytes that differ (physical address).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MemDiff {
    pub phys: u32,
    pub a: Vec<u8>,
    pub b: Vec<u8>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Differences {
    pub registers: Vec<FieldDiff>,
    /// EFLAGS bits by name ("IF", "ZF", ...).
    pub flags: Vec<FieldDiff>,
    /// Every other field of the machine state (segments, system registers,
    /// interrupt shadow, devices, time), by path.
    pub other: Vec<FieldDiff>,
    pub memory: Vec<MemDiff>,
    /// Differing RAM bytes in all (only the first runs are listed).
    pub memory_bytes: u64,
}

impl Differences {
    pub(super) fn between(a: &Side, b: &Side) -> Differences {
        let (sa, sb) = (a.machine.state(), b.machine.state());
        let mut d = Differences::default();
        for (i, name) in vm::cpu::state::reg::NAMES.iter().enumerate() {
            if sa.cpu.regs[i] != sb.cpu.regs[i] {
                d.registers.push(FieldDiff {
                    field: (*name).into(),
                    a: format!("{:#010x}", sa.cpu.regs[i]),
                    b: format!("{:#010x}", sb.cpu.regs[i]),
                });
            }
        }
        if sa.cpu.eip != sb.cpu.eip {
            d.registers.push(FieldDiff {
                field: "eip".into(),
                a: format!("{:#010x}", sa.cpu.eip),
                b: format!("{:#010x}", sb.cpu.eip),
            });
        }
        for (name, mask) in FLAG_NAMES {
            let (fa, fb) = (sa.cpu.eflags & mask, sb.cpu.eflags & mask);
            if fa != fb {
                let show = |v: u32| (v / (mask & mask.wrapping_neg())).to_string();
                d.flags.push(FieldDiff {
                    field: (*name).into(),
                    a: show(fa),
                    b: show(fb),
                });
            }
        }
        d.other = other_fields(&sa, &sb);
        if a.console.serial != b.console.serial {
            d.other.push(FieldDiff {
                field: "serial output".into(),
                a: format!("{} bytes", a.console.serial.len()),
                b: format!("{} bytes", b.console.serial.len()),
            });
        }
        if a.input.cursor != b.input.cursor || a.input.mismatch != b.input.mismatch {
            let show = |s: &Side| match &s.input.mismatch {
                Some((now, what)) => format!("{} records; at {now}: {what}", s.input.cursor),
                None => format!("{} records", s.input.cursor),
            };
            d.other.push(FieldDiff {
                field: "host input consumed".into(),
                a: show(a),
                b: show(b),
            });
        }
        let (ra, rb) = (a.machine.platform.mem.ram(), b.machine.platform.mem.ram());
        let ps = vm::mem::PAGE_SIZE;
        for (p, (pa, pb)) in ra.chunks(ps).zip(rb.chunks(ps)).enumerate() {
            if pa == pb {
                continue;
            }
            for (i, (x, y)) in pa.iter().zip(pb).enumerate() {
                if x == y {
                    continue;
                }
                d.memory_bytes += 1;
                let addr = (p * ps + i) as u32;
                let runs = d.memory.len();
                match d.memory.last_mut() {
                    // Runs closer than 4 bytes are one run, gap included.
                    Some(run) if addr - (run.phys + run.a.len() as u32) < 4 && run.a.len() < 16 => {
                        let from = (run.phys + run.a.len() as u32) as usize;
                        run.a.extend_from_slice(&ra[from..=addr as usize]);
                        run.b.extend_from_slice(&rb[from..=addr as usize]);
                    }
                    _ if runs < 8 => d.memory.push(MemDiff {
                        phys: addr,
                        a: vec![*x],
                        b: vec![*y],
                    }),
                    _ => {}
                }
            }
        }
        d
    }

    pub fn is_empty(&self) -> bool {
        self.registers.is_empty() && self.flags.is_empty() && self.other.is_empty() && self.memory_bytes == 0
    }
}

pub(super) const FLAG_NAMES: &[(&str, u32)] = {
    use vm::cpu::state::flags::*;
    &[
        ("CF", CF),
        ("PF", PF),
        ("AF", AF),
        ("ZF", ZF),
        ("SF", SF),
        ("TF", TF),
        ("IF", IF),
        ("DF", DF),
        ("OF", OF),
        ("IOPL", IOPL),
        ("NT", NT),
        ("RF", RF),
        ("VM", VM),
        ("AC", AC),
        ("VIF", VIF),
        ("VIP", VIP),
        ("ID", ID),
    ]
};
