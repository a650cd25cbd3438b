//! Runs single-instruction test vectors in the SingleStepTests JSON-lines format
//! (one gzipped file per instruction form; see ../shared/data/README.md) through
//! the reference engine, and reports pass rates per form.
//!
//! Each vector starts in real mode with 1 MiB+ of RAM filled from `initial.ram`,
//! runs from CS:IP until the HLT that follows the instruction (exceptions vector
//! through the IVT in the vector's RAM to a HLT), and compares registers and the
//! listed RAM bytes with undefined flags masked out.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::bus::Bus;
use crate::cpu::state::{flags, SegReg, Segment};
use crate::cpu::{Cpu, CpuState, StepOutcome};
use crate::mem::PhysMem;
use crate::VmError;

/// Bits 12-15 of FLAGS behave differently on an 80286 (SDM Vol. 3A, 22.17.2 and
/// 22.12.1: IOPL and NT are not kept in real mode there); they are never compared.
const FLAGS_286_MASK: u32 = 0x0FFF;
/// Cap on retired instructions per vector (a REP with CX=0xFFFF needs 65535).
const STEP_LIMIT: u32 = 200_000;

#[derive(Deserialize)]
struct Vector {
    name: String,
    bytes: Vec<u8>,
    initial: VState,
    #[serde(rename = "final")]
    expected: VState,
    exception: Option<VException>,
    hash: String,
}

#[derive(Deserialize)]
struct VState {
    regs: BTreeMap<String, u32>,
    ram: Vec<(u32, u8)>,
}

#[derive(Deserialize)]
struct VException {
    number: u8,
    flag_address: u32,
}

/// The platform the vectors assume: flat RAM, ports that read as all ones.
struct VectorBus {
    mem: PhysMem,
}

impl Bus for VectorBus {
    fn read_phys(&mut self, addr: u32, size: u8) -> u32 {
        self.mem.read(addr, size)
    }
    fn write_phys(&mut self, addr: u32, size: u8, value: u32) {
        self.mem.write(addr, size, value)
    }
    fn io_read(&mut self, _port: u16, size: u8, _icount: u64) -> u32 {
        crate::exec::flags::mask(size)
    }
    fn io_write(&mut self, _port: u16, _size: u8, _value: u32, _icount: u64) {}
}

/// Differences between the 80286 the vectors were captured on and the i686 we
/// model. A vector that fails in exactly one of these ways is reported as a known
/// difference, not counted as a pass or a failure.
pub const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "fs-gs",
        "FS and GS exist from the 80386 on (SDM Vol. 1, 3.4.2); the 80286 raises #UD for MOV to/from them",
    ),
    (
        "stack-limit",
        "a real-mode stack access beyond offset FFFFh raises #SS on the 80386 and later, #GP on the 80286 \
         (SDM Vol. 3A, 22.18 'Exceptions' in chapter 22, IA-32 architecture compatibility)",
    ),
    (
        "lock",
        "LOCK on an instruction that is not a locked read-modify-write raises #UD from the 80386 on \
         (SDM Vol. 2A, LOCK); the 80286 ignores it",
    ),
    (
        "div-flags",
        "after DIV/IDIV (and AAM's divide error) all six status flags are undefined (SDM Vol. 2A, DIV, IDIV, AAM); \
         the vectors record the 80286 microcode's values",
    ),
];

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FormResult {
    pub form: String,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Vectors that differ in one of the ways listed in [`KNOWN_DIFFERENCES`], by key.
    pub known: BTreeMap<String, u64>,
    /// The first few failures: vector name and what differed.
    pub failures: Vec<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    pub forms: Vec<FormResult>,
    pub passed: u64,
    pub failed: u64,
    pub known: u64,
    pub skipped: u64,
}

impl Report {
    pub fn pass_rate(&self) -> f64 {
        let total = self.passed + self.failed + self.known;
        if total == 0 {
            0.0
        } else {
            self.passed as f64 / total as f64
        }
    }
}

struct Metadata {
    masks: BTreeMap<String, u32>,
}

impl Metadata {
    fn load(dir: &Path) -> Result<Self, VmError> {
        let path = dir.join("metadata.json");
        let mut masks = BTreeMap::new();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(_) => return Ok(Metadata { masks }),
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| VmError::BadVectors {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if let Some(ops) = v.get("opcodes").and_then(|o| o.as_object()) {
            for (op, info) in ops {
                if let Some(m) = info.get("flags-mask").and_then(|m| m.as_u64()) {
                    masks.insert(op.clone(), m as u32);
                }
                if let Some(regs) = info.get("reg").and_then(|r| r.as_object()) {
                    for (r, rinfo) in regs {
                        if let Some(m) = rinfo.get("flags-mask").and_then(|m| m.as_u64()) {
                            masks.insert(format!("{op}.{r}"), m as u32);
                        }
                    }
                }
            }
        }
        Ok(Metadata { masks })
    }

    fn flags_mask(&self, form: &str) -> u32 {
        self.masks.get(form).copied().unwrap_or(0xFFFF) & FLAGS_286_MASK
    }
}

fn load_revocations(dir: &Path) -> HashSet<String> {
    std::fs::read_to_string(dir.join("revocation_list.txt"))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The vector files of a directory, in name order.
pub fn vector_files(dir: &Path) -> Result<Vec<PathBuf>, VmError> {
    let rd = std::fs::read_dir(dir).map_err(|e| VmError::Io {
        path: dir.display().to_string(),
        source: e,
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz") || p.to_string_lossy().ends_with(".jsonl"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(VmError::BadVectors {
            path: dir.display().to_string(),
            reason: "no *.jsonl.gz files".into(),
        });
    }
    Ok(files)
}

fn form_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.trim_end_matches(".gz").trim_end_matches(".jsonl").to_string()
}

/// Runs every vector file in `dir`; `progress` is called after each form.
pub fn run_dir(dir: &Path, mut progress: impl FnMut(&FormResult)) -> Result<Report, VmError> {
    let meta = Metadata::load(dir)?;
    let revoked = load_revocations(dir);
    let mut report = Report::default();
    let mut bus = VectorBus {
        mem: PhysMem::new(2 << 20),
    };
    for path in vector_files(dir)? {
        let form = form_name(&path);
        let r = run_file(&path, &form, &meta, &revoked, &mut bus)?;
        report.failed += r.failed;
        report.known += r.known.values().sum::<u64>();
        report.passed += r.passed;
        report.skipped += r.skipped;
        progress(&r);
        report.forms.push(r);
    }
    Ok(report)
}

fn read_text(path: &Path) -> Result<String, VmError> {
    let raw = std::fs::read(path).map_err(|e| VmError::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .map_err(|e| VmError::BadVectors {
                path: path.display().to_string(),
                reason: format!("gzip: {e}"),
            })?;
        Ok(s)
    } else {
        String::from_utf8(raw).map_err(|e| VmError::BadVectors {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

fn run_file(
    path: &Path,
    form: &str,
    meta: &Metadata,
    revoked: &HashSet<String>,
    bus: &mut VectorBus,
) -> Result<FormResult, VmError> {
    let text = read_text(path)?;
    let mask = meta.flags_mask(form);
    let mut res = FormResult {
        form: form.to_string(),
        ..FormResult::default()
    };
    for (lineno, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Vector = serde_json::from_str(line).map_err(|e| VmError::BadVectors {
            path: path.display().to_string(),
            reason: format!("line {}: {e}", lineno + 1),
        })?;
        if revoked.contains(&v.hash) {
            res.skipped += 1;
            continue;
        }
        match run_vector(&v, form, mask, bus) {
            Outcome::Pass => res.passed += 1,
            Outcome::Known(key) => *res.known.entry(key.to_string()).or_default() += 1,
            Outcome::Fail(why) => {
                res.failed += 1;
                if std::env::var_os("RINGBACK_CONFORMANCE_DEBUG").is_some() {
                    eprintln!("{form} {line}\n  => {why}");
                }
                if res.failures.len() < 5 {
                    let bytes: Vec<String> = v.bytes.iter().map(|b| format!("{b:02x}")).collect();
                    res.failures.push(format!("{} [{}]: {why}", v.name, bytes.join(" ")));
                }
            }
        }
    }
    Ok(res)
}

const REG_NAMES: [&str; 8] = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"];
const SEG_NAMES: [(&str, SegReg); 4] = [
    ("es", SegReg::Es),
    ("cs", SegReg::Cs),
    ("ss", SegReg::Ss),
    ("ds", SegReg::Ds),
];

enum Outcome {
    Pass,
    Fail(String),
    Known(&'static str),
}

/// Names the known difference a failing vector shows, if any.
fn classify(v: &Vector, form: &str, ours: Option<u8>, flags_only: bool) -> Option<&'static str> {
    let theirs = v.exception.as_ref().map(|e| e.number);
    let names_fs_gs = v
        .name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w == "fs" || w == "gs");
    let lock_prefix = v
        .bytes
        .iter()
        .take_while(|b| matches!(b, 0xF0 | 0xF2 | 0xF3 | 0x26 | 0x2E | 0x36 | 0x3E))
        .any(|&b| b == 0xF0);
    if names_fs_gs && theirs == Some(6) && ours != Some(6) {
        Some("fs-gs")
    } else if ours == Some(12) && theirs == Some(13) {
        Some("stack-limit")
    } else if lock_prefix && ours == Some(6) && theirs != Some(6) {
        Some("lock")
    } else if flags_only && matches!(form, "F6.6" | "F6.7" | "F7.6" | "F7.7" | "D4") {
        Some("div-flags")
    } else {
        None
    }
}

fn describe_exception(v: &Vector) -> String {
    match &v.exception {
        Some(e) => format!("exception {}", e.number),
        None => "no exception".into(),
    }
}

fn run_vector(v: &Vector, form: &str, flags_mask: u32, bus: &mut VectorBus) -> Outcome {
    let mut first_exception = None;
    match execute_vector(v, flags_mask, bus, &mut first_exception) {
        Ok(()) => Outcome::Pass,
        Err((why, flags_only)) => match classify(v, form, first_exception, flags_only) {
            Some(k) => Outcome::Known(k),
            None => Outcome::Fail(why),
        },
    }
}

/// Runs one vector; on a mismatch returns the differences and whether only
/// flags (the register or the image an exception pushed) differ.
fn execute_vector(
    v: &Vector,
    flags_mask: u32,
    bus: &mut VectorBus,
    first_exception: &mut Option<u8>,
) -> Result<(), (String, bool)> {
    bus.mem.clear_dirty_pages();
    for &(addr, byte) in &v.initial.ram {
        bus.mem.write(addr, 1, u32::from(byte));
    }
    let get = |name: &str| v.initial.regs.get(name).copied().unwrap_or(0);
    let mut st = CpuState::reset();
    for (i, n) in REG_NAMES.iter().enumerate() {
        st.regs[i] = get(n) & 0xFFFF;
    }
    for (n, s) in SEG_NAMES {
        st.segs[s as usize] = Segment::real_mode(get(n) as u16);
    }
    st.segs[SegReg::Cs as usize].attr |= crate::cpu::state::attr::CODE;
    st.segs[SegReg::Fs as usize] = Segment::real_mode(0);
    st.segs[SegReg::Gs as usize] = Segment::real_mode(0);
    st.eip = get("ip") & 0xFFFF;
    st.eflags = (get("flags") & FLAGS_286_MASK & flags::WRITABLE) | flags::FIXED1;
    let mut cpu = Cpu::with_state(st);
    let mut steps = 0;
    while !cpu.state.halted {
        if steps >= STEP_LIMIT {
            return Err(("did not reach HLT".into(), false));
        }
        steps += 1;
        match cpu.step(bus) {
            StepOutcome::TripleFault(f) => return Err((format!("triple fault ({f})"), false)),
            StepOutcome::Halted => break,
            StepOutcome::Exception(f) => {
                first_exception.get_or_insert(f.vector);
                // The vector's IVT only leads to a HLT for the exception it expects;
                // any other would run through zeroed memory until the step limit.
                if v.exception.as_ref().map(|e| e.number) != Some(f.vector) {
                    return Err((format!("raised {f}, vector expects {}", describe_exception(v)), false));
                }
            }
            StepOutcome::Retired => {}
        }
    }
    let mut diffs = Vec::new();
    let mut flag_diffs = 0;
    let want = |name: &str| v.expected.regs.get(name).copied().unwrap_or_else(|| get(name));
    for (i, n) in REG_NAMES.iter().enumerate() {
        let ours = cpu.state.regs[i] & 0xFFFF;
        if ours != want(n) {
            diffs.push(format!("{n}={ours:04x} want {:04x}", want(n)));
        }
    }
    for (n, s) in SEG_NAMES {
        let ours = u32::from(cpu.state.segs[s as usize].selector);
        if ours != want(n) {
            diffs.push(format!("{n}={ours:04x} want {:04x}", want(n)));
        }
    }
    if cpu.state.eip & 0xFFFF != want("ip") {
        diffs.push(format!("ip={:04x} want {:04x}", cpu.state.eip & 0xFFFF, want("ip")));
    }
    let ours_f = cpu.state.eflags & flags_mask;
    let want_f = want("flags") & flags_mask;
    if ours_f != want_f {
        flag_diffs += 1;
        diffs.push(format!(
            "flags={ours_f:04x} want {want_f:04x} (xor {:04x})",
            ours_f ^ want_f
        ));
    }
    let flag_addr = v.exception.as_ref().map(|e| e.flag_address);
    for &(addr, byte) in &v.expected.ram {
        let mut ours = bus.mem.read(addr, 1) as u8;
        let mut want_b = byte;
        let is_flag_byte = flag_addr.is_some_and(|fa| addr == fa || addr == fa + 1);
        if let Some(fa) = flag_addr {
            let m = if addr == fa {
                Some(flags_mask as u8)
            } else if addr == fa + 1 {
                Some((flags_mask >> 8) as u8)
            } else {
                None
            };
            if let Some(m) = m {
                ours &= m;
                want_b &= m;
            }
        }
        if ours != want_b {
            if is_flag_byte {
                flag_diffs += 1;
            }
            diffs.push(format!("[{addr:05x}]={ours:02x} want {want_b:02x}"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err((diffs.join(", "), flag_diffs == diffs.len()))
    }
}
