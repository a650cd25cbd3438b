//! Runs single-instruction test vectors in the SingleStepTests JSON-lines format
//! (one gzipped file per instruction form; see ../shared/data/README.md) through
//! the reference engine, and reports pass rates per form.
//!
//! Each vector starts in real mode with 1 MiB+ of RAM filled from `initial.ram`,
//! runs from CS:IP until the HLT that follows the instruction (exceptions vector
//! through the IVT in the vector's RAM to a HLT), and compares registers and the
//! listed RAM bytes with undefined flags masked out.
//!
//! The vectors come from an 80286; we model an i686. A vector that fails is run
//! again with one documented 80286 behaviour substituted for ours at a time
//! ([`KNOWN_DIFFERENCES`]); only if that makes it match exactly is it counted as
//! a known difference. Everything else is a failure.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use serde::Deserialize;

use crate::bus::Bus;
use crate::cpu::mmu::Access;
use crate::cpu::seg::check_segment;
use crate::cpu::state::{flags, reg, SegReg, Segment};
use crate::cpu::{vector, Cpu, CpuState, Fault, StepOutcome};
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
    fn read_phys(&mut self, addr: u32, size: u8, _now: u64) -> u32 {
        self.mem.read(addr, size)
    }
    fn write_phys(&mut self, addr: u32, size: u8, value: u32, _now: u64) {
        self.mem.write(addr, size, value)
    }
    fn io_read(&mut self, _port: u16, size: u8, _now: u64) -> u32 {
        crate::exec::flags::mask(size)
    }
    fn io_write(&mut self, _port: u16, _size: u8, _value: u32, _now: u64) {}
}

/// Differences between the 80286 the vectors were captured on and the i686 we
/// model, by key. A failing vector counts as one of these only when running it
/// again with exactly that 80286 behaviour substituted for ours (see [`Quirk`])
/// makes it match the vector completely; it is then reported as a known
/// difference, neither a pass nor a failure.
pub const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "fs-gs",
        "FS and GS exist from the 80386 on (SDM Vol. 1, 3.4.2 'Segment registers'); the 80286 raises #UD for \
         MOV to or from segment-register encodings 4 and 5",
    ),
    (
        "lock",
        "LOCK before anything but a read-modify-write of memory by the instructions listed raises #UD from \
         the 80386 on (SDM Vol. 2A, 'LOCK'; Vol. 3A, 22.35 'Bus locking'); the 80286 ignores the prefix",
    ),
    (
        "insn-length",
        "the 80286 raises #GP(0) for an instruction longer than 10 bytes (possible only with redundant \
         prefixes); from the 80386 on the limit is 15 bytes (SDM Vol. 2A, 2.1 'Instruction format'; \
         Vol. 3A, 6.15 'Interrupt 13')",
    ),
    (
        "ss-overrun",
        "a real-mode access through SS that crosses offset FFFFh raises #SS(0) on the 80386 and later \
         (SDM Vol. 3A, 22.33.1 'Segment wraparound'); the 80286 raises interrupt 13 (#GP) for an overrun \
         in any segment",
    ),
    (
        "overrun-state",
        "when a real-mode word access at offset FFFFh faults, the 80286 delivers interrupt 13 with SI/DI \
         (and CX under REP) of a string instruction, or SP of POP m16, already advanced for the accesses \
         it began; the 80386 and later report a fault with the state from before the instruction \
         (SDM Vol. 3A, 6.5 'Exception classifications'; 22.33.1 'Segment wraparound')",
    ),
    (
        "aam-de-flags",
        "AAM 0 raises #DE before producing the result SF, ZF and PF would describe, and a fault reports \
         the state from before the instruction (SDM Vol. 2A, 'AAM'; Vol. 3A, 6.5); the 80286 changes \
         those flags before raising the divide error. Checked with the status flags excluded",
    ),
    (
        "idiv-overflow",
        "the 80286's IDIV misses the divide error for some dividends whose quotient does not fit (e.g. \
         AX=81C1h by 7Ch, quotient -260) and leaves an undefined AX; the SDM requires #DE whenever the \
         quotient is out of range (SDM Vol. 2A, 'IDIV'); checked with AX and the undefined flags excluded",
    ),
    ("lock+ss-overrun", "both 'lock' and 'ss-overrun' apply"),
    ("lock+overrun-state", "both 'lock' and 'overrun-state' apply"),
];

/// One 80286 behaviour from [`KNOWN_DIFFERENCES`], substituted for ours when a
/// failing vector is run again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quirk {
    /// MOV with FS or GS raises #UD.
    FsGs,
    /// LOCK is ignored where we raise #UD for it.
    Lock,
    /// Instructions longer than 10 bytes raise #GP(0).
    InsnLength,
    /// #SS(0) for a real-mode stack overrun becomes #GP(0).
    SsOverrun,
    /// As `SsOverrun`, and the pointer registers keep the progress the 80286
    /// made before the overrun (see [`advance_like_286`]).
    OverrunState,
    /// The status flags are not compared (the instruction is run unchanged).
    AamFlags,
    /// An IDIV whose exact quotient is out of range retires without #DE; AX is
    /// not compared.
    IdivOverflow,
}

/// The substitutions tried for a failing vector, in order, with the key a
/// success is reported under.
const CANDIDATES: &[(&str, &[Quirk])] = &[
    ("fs-gs", &[Quirk::FsGs]),
    ("lock", &[Quirk::Lock]),
    ("insn-length", &[Quirk::InsnLength]),
    ("ss-overrun", &[Quirk::SsOverrun]),
    ("overrun-state", &[Quirk::OverrunState]),
    ("aam-de-flags", &[Quirk::AamFlags]),
    ("idiv-overflow", &[Quirk::IdivOverflow]),
    ("lock+ss-overrun", &[Quirk::Lock, Quirk::SsOverrun]),
    ("lock+overrun-state", &[Quirk::Lock, Quirk::OverrunState]),
];

impl Quirk {
    /// Whether the quirk can explain a failure of this vector at all: the
    /// instruction under test (`inst`, decoded as the 80286 would see it), the
    /// exception the vector records and the first one we raised must fit.
    fn applies(self, v: &Vector, inst: &Instruction, ours: Option<u8>) -> bool {
        let theirs = v.exception.as_ref().map(|e| e.number);
        // Combined with `Lock`, our first exception is the #UD the prefix causes.
        let ud_from_lock = ours == Some(vector::UD) && crate::exec::lock_is_invalid(inst);
        match self {
            Quirk::FsGs => theirs == Some(vector::UD) && names_fs_gs(inst),
            Quirk::Lock => crate::exec::lock_is_invalid(inst),
            Quirk::InsnLength => theirs == Some(vector::GP) && inst.len() > 10,
            Quirk::SsOverrun => theirs == Some(vector::GP) && (ours == Some(vector::SS) || ud_from_lock),
            Quirk::OverrunState => {
                theirs == Some(vector::GP)
                    && (matches!(ours, Some(vector::GP | vector::SS)) || ud_from_lock)
                    && (string_op(inst).is_some() || pops_to_memory(inst))
            }
            Quirk::AamFlags => inst.mnemonic() == Mnemonic::Aam && theirs == Some(vector::DE),
            Quirk::IdivOverflow => theirs.is_none() && ours == Some(vector::DE) && inst.mnemonic() == Mnemonic::Idiv,
        }
    }
}

/// What a run compares besides the registers and RAM the vector lists.
#[derive(Clone, Copy)]
struct Compare {
    /// FLAGS bits compared (in the register and in an exception's FLAGS image).
    flags_mask: u32,
    /// Whether AX is compared.
    ax: bool,
}

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
    let debug = debug_mode();
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
        match run_vector(&v, mask, bus) {
            Outcome::Pass => res.passed += 1,
            Outcome::Known(key, why) => {
                *res.known.entry(key.to_string()).or_default() += 1;
                if debug == Some(Debug::All) {
                    eprintln!("{form} {line}\n  => known difference {key}: {why}");
                }
            }
            Outcome::Fail(why) => {
                res.failed += 1;
                if debug.is_some() {
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

/// What `RINGBACK_CONFORMANCE_DEBUG` asks to print on stderr: every failing
/// vector when set, and every known difference too when set to `all`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Debug {
    Failures,
    All,
}

fn debug_mode() -> Option<Debug> {
    let v = std::env::var_os("RINGBACK_CONFORMANCE_DEBUG")?;
    Some(if v == "all" { Debug::All } else { Debug::Failures })
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
    /// A known difference, with what differed before the 80286 behaviour was substituted.
    Known(&'static str, String),
}

fn describe_exception(v: &Vector) -> String {
    match &v.exception {
        Some(e) => format!("exception {}", e.number),
        None => "no exception".into(),
    }
}

fn run_vector(v: &Vector, flags_mask: u32, bus: &mut VectorBus) -> Outcome {
    let mut ours = None;
    let full = Compare { flags_mask, ax: true };
    let why = match execute_vector(v, full, bus, &[], &mut ours) {
        Ok(()) => return Outcome::Pass,
        Err(why) => why,
    };
    // The instruction under test as the 80286 decodes it (real mode, 16-bit).
    let ip = v.initial.regs.get("ip").copied().unwrap_or(0);
    let inst = Decoder::with_ip(16, &v.bytes, u64::from(ip), DecoderOptions::NO_INVALID_CHECK).decode();
    if inst.is_invalid() {
        return Outcome::Fail(why);
    }
    for &(key, quirks) in CANDIDATES {
        if !quirks.iter().all(|q| q.applies(v, &inst, ours)) {
            continue;
        }
        let mut cmp = full;
        if quirks.contains(&Quirk::AamFlags) || quirks.contains(&Quirk::IdivOverflow) {
            cmp.flags_mask &= !flags::STATUS;
        }
        cmp.ax = !quirks.contains(&Quirk::IdivOverflow);
        if execute_vector(v, cmp, bus, quirks, &mut None).is_ok() {
            return Outcome::Known(key, why);
        }
    }
    Outcome::Fail(why)
}

fn names_fs_gs(inst: &Instruction) -> bool {
    (0..inst.op_count())
        .any(|i| inst.op_kind(i) == OpKind::Register && matches!(inst.op_register(i), Register::FS | Register::GS))
}

fn pops_to_memory(inst: &Instruction) -> bool {
    inst.mnemonic() == Mnemonic::Pop && inst.op0_kind() == OpKind::Memory
}

/// The memory accesses of a string instruction in the order the 80286 makes
/// them, each as (through SI rather than DI, how far a REP prefix has counted CX
/// down in this iteration when that access overruns), and the element size.
/// The counts are as the vectors show the 80286's microcode leaving them: one
/// per read and two per write, except that CMPS reads ES:DI before DS:SI and
/// counts only at the second read.
type Accesses = &'static [(bool, u32)];

fn string_op(inst: &Instruction) -> Option<(Accesses, u32)> {
    use Mnemonic as M;
    const MOVS: Accesses = &[(true, 1), (false, 2)];
    const CMPS: Accesses = &[(false, 0), (true, 1)];
    const READ_SI: Accesses = &[(true, 1)];
    const READ_DI: Accesses = &[(false, 1)];
    const WRITE_DI: Accesses = &[(false, 2)];
    Some(match inst.mnemonic() {
        M::Movsb => (MOVS, 1),
        M::Movsw => (MOVS, 2),
        M::Cmpsb => (CMPS, 1),
        M::Cmpsw => (CMPS, 2),
        M::Lodsb | M::Outsb => (READ_SI, 1),
        M::Lodsw | M::Outsw => (READ_SI, 2),
        M::Scasb => (READ_DI, 1),
        M::Scasw => (READ_DI, 2),
        M::Stosb | M::Insb => (WRITE_DI, 1),
        M::Stosw | M::Insw => (WRITE_DI, 2),
        _ => return None,
    })
}

/// Leaves the pointer registers as the 80286 does when an access overruns the
/// segment (we roll them back; see "overrun-state"). A string instruction has
/// advanced SI or DI for every access it began, the overrunning one included,
/// and under REP counted CX down as [`string_op`] lists. POP m16 has
/// incremented SP when its destination write overruns.
fn advance_like_286(cpu: &mut Cpu, inst: &Instruction) {
    let st = &mut cpu.state;
    let fits = |seg: &Segment, off: u32, size: u32| check_segment(seg, off, size, Access::Read, false).is_some();
    if pops_to_memory(inst) {
        let sp = st.regs[reg::ESP] & 0xFFFF;
        if fits(&st.segs[SegReg::Ss as usize], sp, 2) {
            st.regs[reg::ESP] = (st.regs[reg::ESP] & !0xFFFF) | (sp.wrapping_add(2) & 0xFFFF);
        }
        return;
    }
    let Some((accesses, size)) = string_op(inst) else {
        return;
    };
    let src = crate::exec::seg_of(inst.memory_segment());
    let at = |st: &CpuState, si: bool| {
        let (r, seg) = if si { (reg::ESI, src) } else { (reg::EDI, SegReg::Es) };
        (r, st.regs[r] & 0xFFFF, st.segs[seg as usize])
    };
    let Some(last) = accesses.iter().position(|&(si, _)| {
        let (_, off, seg) = at(st, si);
        !fits(&seg, off, size)
    }) else {
        return;
    };
    let step = if st.eflags & flags::DF != 0 {
        size.wrapping_neg()
    } else {
        size
    };
    for &(si, _) in &accesses[..=last] {
        let (r, off, _) = at(st, si);
        st.regs[r] = (st.regs[r] & !0xFFFF) | (off.wrapping_add(step) & 0xFFFF);
    }
    if inst.has_rep_prefix() || inst.has_repne_prefix() {
        let cx = st.regs[reg::ECX];
        st.regs[reg::ECX] = (cx & !0xFFFF) | (cx.wrapping_sub(accesses[last].1) & 0xFFFF);
    }
}

/// Whether the exact quotient of the IDIV `inst` is out of range, read from the
/// state before it (so that the SDM demands #DE).
fn idiv_overflows(cpu: &mut Cpu, bus: &mut VectorBus, inst: &Instruction) -> bool {
    let size = crate::exec::op_size(inst, 0);
    let Ok(divisor) = cpu.read_op(bus, inst, 0, size) else {
        return false;
    };
    let divisor = i64::from(crate::exec::flags::sext(divisor, size) as i32);
    let ax = cpu.state.regs[reg::EAX];
    let (dividend, bound) = if size == 1 {
        (i64::from(ax as u16 as i16), 128)
    } else {
        let dx = cpu.state.regs[reg::EDX] & 0xFFFF;
        (i64::from((dx << 16 | (ax & 0xFFFF)) as i32), 32768)
    };
    divisor != 0 && !(-bound..bound).contains(&(dividend / divisor))
}

/// One step of the instruction under test with 80286 behaviours substituted.
fn step_286(cpu: &mut Cpu, bus: &mut VectorBus, quirks: &[Quirk]) -> StepOutcome {
    if cpu.state.halted {
        return StepOutcome::Halted;
    }
    let mut inst = match cpu.decode(bus) {
        Ok(i) => i,
        Err(f) => return cpu.raise(bus, f),
    };
    for q in quirks {
        match q {
            Quirk::Lock if crate::exec::lock_is_invalid(&inst) => inst.set_has_lock_prefix(false),
            Quirk::FsGs if names_fs_gs(&inst) => return cpu.raise(bus, Fault::ud()),
            Quirk::InsnLength if inst.len() > 10 => return cpu.raise(bus, Fault::gp(0)),
            _ => {}
        }
    }
    match cpu.execute_or_fault(bus, &inst) {
        Ok(outcome) => outcome,
        Err(f) => {
            let overrun = quirks.contains(&Quirk::SsOverrun) || quirks.contains(&Quirk::OverrunState);
            let f = if overrun && f.vector == vector::SS && !cpu.state.protected_mode() {
                Fault::gp(0)
            } else {
                f
            };
            if quirks.contains(&Quirk::OverrunState) && f.vector == vector::GP {
                advance_like_286(cpu, &inst);
            }
            if quirks.contains(&Quirk::IdivOverflow) && f.vector == vector::DE && idiv_overflows(cpu, bus, &inst) {
                // Retire it instead; what the 80286 leaves in AX is not compared.
                cpu.state.eip = (cpu.state.eip + inst.len() as u32) & 0xFFFF;
                return StepOutcome::Retired;
            }
            cpu.raise(bus, f)
        }
    }
}

/// Runs one vector, with the 80286 behaviours `quirks` substituted for ours; on
/// a mismatch returns what differed. `first_exception` receives the first
/// exception we delivered.
fn execute_vector(
    v: &Vector,
    cmp: Compare,
    bus: &mut VectorBus,
    quirks: &[Quirk],
    first_exception: &mut Option<u8>,
) -> Result<(), String> {
    let flags_mask = cmp.flags_mask;
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
            return Err("did not reach HLT".into());
        }
        steps += 1;
        let outcome = if quirks.is_empty() {
            cpu.step(bus)
        } else {
            step_286(&mut cpu, bus, quirks)
        };
        match outcome {
            StepOutcome::TripleFault(f) => return Err(format!("triple fault ({f})")),
            StepOutcome::Halted => break,
            StepOutcome::Exception(f) => {
                first_exception.get_or_insert(f.vector);
                // The vector's IVT only leads to a HLT for the exception it expects;
                // any other would run through zeroed memory until the step limit.
                if v.exception.as_ref().map(|e| e.number) != Some(f.vector) {
                    return Err(format!("raised {f}, vector expects {}", describe_exception(v)));
                }
            }
            StepOutcome::Retired => {}
        }
    }
    let mut diffs = Vec::new();
    let want = |name: &str| v.expected.regs.get(name).copied().unwrap_or_else(|| get(name));
    for (i, n) in REG_NAMES.iter().enumerate() {
        let ours = cpu.state.regs[i] & 0xFFFF;
        if ours != want(n) && (cmp.ax || i != reg::EAX) {
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
        diffs.push(format!(
            "flags={ours_f:04x} want {want_f:04x} (xor {:04x})",
            ours_f ^ want_f
        ));
    }
    // The FLAGS image is the third word the exception pushed, at SS:(SP + 4) with
    // the final SP (the handler is a HLT). The vectors' flag_address is that
    // address rounded down to even, so it is one byte low when SP is odd.
    let flag_addr = v.exception.as_ref().map(|e| {
        let exact = (want("ss") << 4).wrapping_add(want("sp").wrapping_add(4) & 0xFFFF);
        if exact & !1 == e.flag_address & !1 {
            exact
        } else {
            e.flag_address
        }
    });
    for &(addr, byte) in &v.expected.ram {
        let mut ours = bus.mem.read(addr, 1) as u8;
        let mut want_b = byte;
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
            diffs.push(format!("[{addr:05x}]={ours:02x} want {want_b:02x}"));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join(", "))
    }
}
