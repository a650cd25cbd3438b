//! x86-64 code for a block (dynasm-rs templates; docs/raw-engine.md).
//!
//! The guest's registers, EIP, EFLAGS and the icount stay where they live,
//! in `Cpu`, addressed from r15: a translation keeps nothing of the guest in
//! host registers across an instruction, so leaving it at any boundary needs
//! no write-back but the flags and the icount. Register-only integer
//! instructions run as the same host instruction on those memory slots;
//! their arithmetic flags are the host's, kept in the host EFLAGS from one
//! instruction to the next and written to the guest's only before a call
//! or an exit. Where the SDM leaves a flag undefined the reference's choice
//! is made explicit (AF after AND/OR/XOR/TEST is cleared), so no host
//! microarchitecture shows through. Everything else is a call to the block
//! engine's step for that one instruction, which runs it as the interpreter
//! does, with every check between instructions.
//!
//! Translation ABI: `extern "sysv64" fn(cpu: *mut Cpu, env: *mut Env) -> u32`,
//! returning `END` (the block ran to its end; EIP is the next one's) or
//! `LEAVE` (a step asked to leave).

use std::mem::offset_of;

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};

use super::{Env, Insn, Shape, END, LEAVE};
use crate::cpu::state::{flags, offsets, SegReg};
use crate::cpu::Cpu;
use crate::exec::alu::AluOp;
use crate::exec::compact::Op;
use crate::exec::Gpr;

/// The arithmetic flags the host computes for the guest.
const STATUS: u32 = flags::CF | flags::PF | flags::AF | flags::ZF | flags::SF | flags::OF;

const STATE: usize = offset_of!(Cpu, state);
const EFLAGS: i32 = (STATE + offsets::EFLAGS) as i32;
const EIP: i32 = (STATE + offsets::EIP) as i32;
const CS_LIMIT: i32 = (STATE + offsets::seg(SegReg::Cs as usize) + offsets::SEGMENT_LIMIT) as i32;
const ICOUNT: i32 = offset_of!(Cpu, icount) as i32;
const ENV_STEP: i32 = offset_of!(Env, step) as i32;
const ENV_STOP: i32 = offset_of!(Env, stop_icount) as i32;
const ENV_LOOPS: i32 = offset_of!(Env, loops) as i32;

fn reg(g: Gpr, size: u8) -> i32 {
    (STATE + offsets::REGS + g.byte_offset(size)) as i32
}

/// Whether the compiler runs `op` as host code.
pub fn is_native(op: &Op) -> bool {
    match *op {
        Op::Nop | Op::MovRR { .. } | Op::MovRI { .. } | Op::AluRR { .. } | Op::AluRI { .. } | Op::AluR { .. } => true,
        Op::MovxRR { .. } => true,
        Op::Lea { mem, .. } => mem.parts32().is_some(),
        Op::Jcc { .. } | Op::JmpRel { .. } => true,
        _ => false,
    }
}

/// Where the guest's arithmetic flags are, at a point of the code being
/// emitted.
#[derive(Clone, Copy)]
struct Flags {
    /// The host EFLAGS hold them.
    in_host: bool,
    /// ... and they differ from `CpuState::eflags`.
    dirty: bool,
    /// The last instruction to write them was a logical one: AF is the
    /// host's undefined value and the guest's is clear.
    clear_af: bool,
}

struct Emitter {
    ops: VecAssembler<X64Relocation>,
    flags: Flags,
    /// Instructions retired since the icount was last brought up to date.
    pending: u64,
    leave: DynamicLabel,
}

macro_rules! asm {
    ($ops:expr; $($t:tt)*) => {
        dynasm!($ops ; .arch x64 ; $($t)*)
    };
}

/// `op [r15 + at], eax/ax/al` for the ALU operations with a register source.
macro_rules! alu_mem_reg {
    ($ops:expr, $mn:ident, $size:expr, $at:expr) => {
        match $size {
            4 => asm!($ops; $mn DWORD [r15 + $at], eax),
            2 => asm!($ops; $mn WORD [r15 + $at], ax),
            _ => asm!($ops; $mn BYTE [r15 + $at], al),
        }
    };
}

/// `op [r15 + at], imm` for the ALU operations with an immediate source.
macro_rules! alu_mem_imm {
    ($ops:expr, $mn:ident, $size:expr, $at:expr, $imm:expr) => {
        match $size {
            4 => asm!($ops; $mn DWORD [r15 + $at], $imm as i32),
            2 => asm!($ops; $mn WORD [r15 + $at], $imm as i16),
            _ => asm!($ops; $mn BYTE [r15 + $at], $imm as i8),
        }
    };
}

/// `op [r15 + at]` for the one-operand ALU operations.
macro_rules! alu_mem {
    ($ops:expr, $mn:ident, $size:expr, $at:expr) => {
        match $size {
            4 => asm!($ops; $mn DWORD [r15 + $at]),
            2 => asm!($ops; $mn WORD [r15 + $at]),
            _ => asm!($ops; $mn BYTE [r15 + $at]),
        }
    };
}

impl Emitter {
    /// Makes the host EFLAGS hold the guest's arithmetic flags. Loaded with
    /// SAHF and an overflowing add, not POPF: faster, and no other host flag
    /// (TF, DF, AC) can be touched.
    fn load_flags(&mut self) {
        if self.flags.in_host {
            return;
        }
        asm!(self.ops
            ; mov eax, DWORD [r15 + EFLAGS]
            ; mov ecx, eax
            ; shr ecx, 11
            ; and cl, 1
            ; add cl, 0x7F
            ; mov ah, al
            ; sahf
        );
        self.flags = Flags {
            in_host: true,
            dirty: false,
            clear_af: false,
        };
    }

    /// Writes the host's arithmetic flags to the guest's EFLAGS if they
    /// changed. The host flags are left as they were.
    fn store_flags(&mut self) {
        if !(self.flags.in_host && self.flags.dirty) {
            return;
        }
        let keep = if self.flags.clear_af {
            STATUS & !flags::AF
        } else {
            STATUS
        };
        asm!(self.ops
            ; pushfq
            ; pop rax
            ; and eax, keep as i32
            ; mov ecx, DWORD [r15 + EFLAGS]
            ; and ecx, !STATUS as i32
            ; or ecx, eax
            ; mov DWORD [r15 + EFLAGS], ecx
        );
        self.flags.dirty = false;
    }

    /// Adds the instructions retired since the last update to the icount
    /// (without touching the host flags).
    fn store_icount(&mut self) {
        if self.pending == 0 {
            return;
        }
        let n = self.pending as i32;
        asm!(self.ops
            ; mov rax, QWORD [r15 + ICOUNT]
            ; lea rax, [rax + n]
            ; mov QWORD [r15 + ICOUNT], rax
        );
        self.pending = 0;
    }

    /// The guest state complete in memory: flags and icount.
    fn sync(&mut self) {
        self.store_flags();
        self.store_icount();
    }

    /// An instruction wrote every arithmetic flag.
    fn wrote_flags(&mut self, logical: bool) {
        self.flags = Flags {
            in_host: true,
            dirty: true,
            clear_af: logical,
        };
    }

    /// Calls the step for instruction `index`; leaves when it says so.
    fn step(&mut self, index: usize) {
        self.sync();
        let leave = self.leave;
        asm!(self.ops
            ; mov rdi, r14
            ; mov esi, index as i32
            ; call QWORD [r14 + ENV_STEP]
            ; test eax, eax
            ; jnz =>leave
        );
        self.flags.in_host = false;
        self.flags.dirty = false;
    }

    /// Returns [`END`] with EIP at `eip`.
    fn exit_to(&mut self, eip: u32) {
        self.sync();
        asm!(self.ops
            ; mov DWORD [r15 + EIP], eip as i32
            ; mov eax, END as i32
            ; jmp ->epilogue
        );
    }

    fn native(&mut self, op: &Op) {
        match *op {
            Op::Nop => {}
            Op::MovRR { size, dst, src } => {
                let (d, s) = (reg(dst, size), reg(src, size));
                match size {
                    4 => asm!(self.ops; mov eax, DWORD [r15 + s]; mov DWORD [r15 + d], eax),
                    2 => asm!(self.ops; mov ax, WORD [r15 + s]; mov WORD [r15 + d], ax),
                    _ => asm!(self.ops; mov al, BYTE [r15 + s]; mov BYTE [r15 + d], al),
                }
            }
            Op::MovRI { size, dst, imm } => {
                let d = reg(dst, size);
                match size {
                    4 => asm!(self.ops; mov DWORD [r15 + d], imm as i32),
                    2 => asm!(self.ops; mov WORD [r15 + d], imm as i16),
                    _ => asm!(self.ops; mov BYTE [r15 + d], imm as i8),
                }
            }
            Op::MovxRR {
                signed,
                dsize,
                ssize,
                dst,
                src,
            } => {
                let (d, s) = (reg(dst, dsize), reg(src, ssize));
                match (signed, ssize) {
                    (false, 1) => asm!(self.ops; movzx eax, BYTE [r15 + s]),
                    (false, _) => asm!(self.ops; movzx eax, WORD [r15 + s]),
                    (true, 1) => asm!(self.ops; movsx eax, BYTE [r15 + s]),
                    (true, _) => asm!(self.ops; movsx eax, WORD [r15 + s]),
                }
                match dsize {
                    4 => asm!(self.ops; mov DWORD [r15 + d], eax),
                    _ => asm!(self.ops; mov WORD [r15 + d], ax),
                }
            }
            Op::Lea { size, dst, mem } => {
                let Some((base, index, scale, disp)) = mem.parts32() else {
                    unreachable!("is_native admits 32-bit addressing only")
                };
                let disp = disp as i32;
                match base {
                    Some(b) => {
                        let b = (STATE + offsets::reg(usize::from(b))) as i32;
                        asm!(self.ops; mov eax, DWORD [r15 + b]);
                    }
                    None => asm!(self.ops; mov eax, 0),
                }
                match index {
                    Some(i) => {
                        let i = (STATE + offsets::reg(usize::from(i))) as i32;
                        asm!(self.ops; mov ecx, DWORD [r15 + i]);
                        match scale {
                            1 => asm!(self.ops; lea eax, [rax + rcx + disp]),
                            2 => asm!(self.ops; lea eax, [rax + rcx * 2 + disp]),
                            4 => asm!(self.ops; lea eax, [rax + rcx * 4 + disp]),
                            _ => asm!(self.ops; lea eax, [rax + rcx * 8 + disp]),
                        }
                    }
                    None => asm!(self.ops; lea eax, [rax + disp]),
                }
                let d = reg(dst, size);
                match size {
                    4 => asm!(self.ops; mov DWORD [r15 + d], eax),
                    _ => asm!(self.ops; mov WORD [r15 + d], ax),
                }
            }
            Op::AluRR { op, size, dst, src } => {
                let (d, s) = (reg(dst, size), reg(src, size));
                if matches!(op, AluOp::Adc | AluOp::Sbb) {
                    self.load_flags();
                }
                match size {
                    4 => asm!(self.ops; mov eax, DWORD [r15 + s]),
                    2 => asm!(self.ops; mov ax, WORD [r15 + s]),
                    _ => asm!(self.ops; mov al, BYTE [r15 + s]),
                }
                match op {
                    AluOp::Add => alu_mem_reg!(self.ops, add, size, d),
                    AluOp::Or => alu_mem_reg!(self.ops, or, size, d),
                    AluOp::Adc => alu_mem_reg!(self.ops, adc, size, d),
                    AluOp::Sbb => alu_mem_reg!(self.ops, sbb, size, d),
                    AluOp::And => alu_mem_reg!(self.ops, and, size, d),
                    AluOp::Sub => alu_mem_reg!(self.ops, sub, size, d),
                    AluOp::Xor => alu_mem_reg!(self.ops, xor, size, d),
                    AluOp::Cmp => alu_mem_reg!(self.ops, cmp, size, d),
                    AluOp::Test => alu_mem_reg!(self.ops, test, size, d),
                    _ => unreachable!("two-operand ALU operation"),
                }
                self.wrote_flags(op.is_logical());
            }
            Op::AluRI { op, size, dst, imm } => {
                let d = reg(dst, size);
                if matches!(op, AluOp::Adc | AluOp::Sbb) {
                    self.load_flags();
                }
                match op {
                    AluOp::Add => alu_mem_imm!(self.ops, add, size, d, imm),
                    AluOp::Or => alu_mem_imm!(self.ops, or, size, d, imm),
                    AluOp::Adc => alu_mem_imm!(self.ops, adc, size, d, imm),
                    AluOp::Sbb => alu_mem_imm!(self.ops, sbb, size, d, imm),
                    AluOp::And => alu_mem_imm!(self.ops, and, size, d, imm),
                    AluOp::Sub => alu_mem_imm!(self.ops, sub, size, d, imm),
                    AluOp::Xor => alu_mem_imm!(self.ops, xor, size, d, imm),
                    AluOp::Cmp => alu_mem_imm!(self.ops, cmp, size, d, imm),
                    AluOp::Test => alu_mem_imm!(self.ops, test, size, d, imm),
                    _ => unreachable!("two-operand ALU operation"),
                }
                self.wrote_flags(op.is_logical());
            }
            Op::AluR { op, size, dst } => {
                let d = reg(dst, size);
                match op {
                    AluOp::Inc | AluOp::Dec => {
                        // CF is kept: it must be the guest's going in.
                        self.load_flags();
                        if op == AluOp::Inc {
                            alu_mem!(self.ops, inc, size, d);
                        } else {
                            alu_mem!(self.ops, dec, size, d);
                        }
                        self.wrote_flags(false);
                    }
                    AluOp::Neg => {
                        alu_mem!(self.ops, neg, size, d);
                        self.wrote_flags(false);
                    }
                    AluOp::Not => alu_mem!(self.ops, not, size, d),
                    _ => unreachable!("one-operand ALU operation"),
                }
            }
            _ => unreachable!("not a native operation: {op:?}"),
        }
    }

    /// `jcc =>label` for condition `cc` (the low nibble of the opcode).
    fn jump_if(&mut self, cc: u8, label: DynamicLabel) {
        match cc & 15 {
            0 => asm!(self.ops; jo =>label),
            1 => asm!(self.ops; jno =>label),
            2 => asm!(self.ops; jb =>label),
            3 => asm!(self.ops; jae =>label),
            4 => asm!(self.ops; je =>label),
            5 => asm!(self.ops; jne =>label),
            6 => asm!(self.ops; jbe =>label),
            7 => asm!(self.ops; ja =>label),
            8 => asm!(self.ops; js =>label),
            9 => asm!(self.ops; jns =>label),
            10 => asm!(self.ops; jp =>label),
            11 => asm!(self.ops; jnp =>label),
            12 => asm!(self.ops; jl =>label),
            13 => asm!(self.ops; jge =>label),
            14 => asm!(self.ops; jle =>label),
            _ => asm!(self.ops; jg =>label),
        }
    }
}

/// Assembles the translation of `shape` for address `base`. `None` when no
/// instruction would run as host code: the interpreter does as well.
pub fn assemble(shape: &Shape<'_>, base: usize) -> Option<Vec<u8>> {
    let insns = shape.insns;
    if !insns
        .iter()
        .any(|i| i.plain && is_native(&i.op) && !matches!(i.op, Op::Nop))
    {
        return None;
    }
    let first_ip = insns.first()?.ip;
    let within = |target: u32| target.wrapping_sub(first_ip) < shape.extent;
    // A block with no step that branches to its own start loops here while
    // the icount budget lasts: nothing but the icount changes what the
    // block engine checks between runs of it.
    let pure = insns.iter().all(|i| i.plain && is_native(&i.op));
    let mut ops = VecAssembler::<X64Relocation>::new(base);
    let leave = ops.new_dynamic_label();
    let top = ops.new_dynamic_label();
    let mut e = Emitter {
        ops,
        flags: Flags {
            in_host: false,
            dirty: false,
            clear_af: false,
        },
        pending: 0,
        leave,
    };
    asm!(e.ops
        ; push r15
        ; push r14
        ; push rbx
        ; mov r15, rdi
        ; mov r14, rsi
        ;=>top
    );
    let n = insns.len();
    for (i, insn) in insns.iter().enumerate() {
        let last = i + 1 == n;
        if !(insn.plain && is_native(&insn.op)) {
            e.step(i);
            if last {
                // The step moved EIP on and counted the instruction.
                asm!(e.ops; mov eax, END as i32; jmp ->epilogue);
            }
            continue;
        }
        match insn.op {
            Op::Jcc { cc, target } => {
                debug_assert!(last, "a branch ends its block");
                e.load_flags();
                let taken = e.ops.new_dynamic_label();
                e.jump_if(cc, taken);
                e.pending += 1;
                let at_taken = (e.flags, e.pending);
                e.exit_to(insn.next_ip);
                asm!(e.ops; =>taken);
                (e.flags, e.pending) = at_taken;
                e.pending -= 1;
                branch_taken(&mut e, i, insn, target, within(target), pure && target == first_ip, top);
            }
            Op::JmpRel { target } => {
                branch_taken(&mut e, i, insn, target, within(target), pure && target == first_ip, top);
            }
            _ => {
                e.native(&insn.op);
                e.pending += 1;
                if last {
                    e.exit_to(insn.next_ip);
                }
            }
        }
    }
    asm!(e.ops
        ;=>leave
        ; mov eax, LEAVE as i32
        ;->epilogue:
        ; pop rbx
        ; pop r14
        ; pop r15
        ; ret
    );
    e.ops.finalize().ok()
}

/// The taken side of a branch at instruction `index`: the CS limit check
/// the reference makes (a target outside it faults at the branch, so the
/// step runs the branch), then the next run of a self-loop or the exit.
fn branch_taken(
    e: &mut Emitter,
    index: usize,
    insn: &Insn,
    target: u32,
    within: bool,
    self_loop: bool,
    top: DynamicLabel,
) {
    e.store_flags();
    if !within {
        let ok = e.ops.new_dynamic_label();
        asm!(e.ops
            ; cmp DWORD [r15 + CS_LIMIT], target as i32
            ; jae =>ok
        );
        let saved = (e.flags, e.pending);
        e.flags.in_host = false;
        e.step(index);
        asm!(e.ops; mov eax, END as i32; jmp ->epilogue; =>ok);
        (e.flags, e.pending) = saved;
        e.flags.in_host = false;
    }
    e.pending += 1;
    if self_loop {
        // Another run fits the budget when icount + n <= stop.
        let n = e.pending as i32;
        e.store_icount();
        let out = e.ops.new_dynamic_label();
        asm!(e.ops
            ; mov rax, QWORD [r15 + ICOUNT]
            ; add rax, n
            ; cmp rax, QWORD [r14 + ENV_STOP]
            ; ja =>out
            ; add QWORD [r14 + ENV_LOOPS], 1
            ; jmp =>top
            ;=>out
        );
        e.flags.in_host = false;
    }
    let _ = insn;
    e.exit_to(target);
}
