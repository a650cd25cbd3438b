//! What differs between two machine states, field by field and named by
//! path (`cpu.segs[1].selector`, `devices.pit...`), for bisect's reports
//! and replay's divergences alike: every field the state has, so a new
//! one is named without anyone listing it.

use serde::Serialize;
use vm::machine::MachineState;

/// A field that differs between two machine states.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FieldDiff {
    pub field: String,
    pub a: String,
    pub b: String,
}

/// Every field of the two states other than the general registers, EIP
/// and EFLAGS (listed on their own), by path, e.g. `cpu.interrupt_shadow`.
pub fn other_fields(a: &MachineState, b: &MachineState) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    let (Ok(va), Ok(vb)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        if a != b {
            out.push(FieldDiff {
                field: "machine state".into(),
                a: "differs".into(),
                b: "differs".into(),
            });
        }
        return out;
    };
    diff_values("", &va, &vb, &mut out);
    out
}

fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<FieldDiff>) {
    use serde_json::Value;
    // Listed on their own, with names.
    if a == b || out.len() >= 32 || path.starts_with("cpu.regs") || path == "cpu.eip" || path == "cpu.eflags" {
        return;
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            for (k, x) in ma {
                if let Some(y) = mb.get(k) {
                    diff_values(&join(k), x, y, out);
                }
            }
        }
        (Value::Array(xa), Value::Array(xb)) if xa.len() == xb.len() => {
            for (i, (x, y)) in xa.iter().zip(xb).enumerate() {
                diff_values(&format!("{path}[{i}]"), x, y, out);
            }
        }
        _ => {
            let show = |v: &Value| match v.as_u64() {
                Some(n) if n > 9 => format!("{n:#x}"),
                _ => v.to_string(),
            };
            out.push(FieldDiff {
                field: path.to_string(),
                a: show(a),
                b: show(b),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_fields_are_named_by_path() {
        let a = vm::machine::Machine::new(1 << 20, &mut vm::host::NoInput::default()).state();
        let mut b = a.clone();
        b.cpu.interrupt_shadow = true;
        b.cpu.segs[1].selector = 0x2b;
        b.cpu.regs[0] = 1;
        let d = other_fields(&a, &b);
        let names: Vec<&str> = d.iter().map(|f| f.field.as_str()).collect();
        assert!(names.contains(&"cpu.interrupt_shadow"), "{names:?}");
        assert!(names.contains(&"cpu.segs[1].selector"), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("cpu.regs")), "{names:?}");
    }
}
