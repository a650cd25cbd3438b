//! The compiler tier (issue 17, docs/raw-engine.md): blocks that have run
//! often enough are translated to host code, which the block engine enters
//! in place of interpreting them, in either view. A translation runs the
//! register-only integer instructions as host instructions and calls back
//! into the block engine for each other instruction, so it computes what
//! the interpreter computes, leaves at the same boundaries and keeps the
//! icount exact; the interpreter stays the first tier and the fallback.
//!
//! Only x86-64 hosts compile; elsewhere `compile` declines and the
//! interpreter runs everything.

#[cfg(target_arch = "x86_64")]
mod cache;
#[cfg(target_arch = "x86_64")]
mod emit;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests;

use crate::cpu::Cpu;
use crate::exec::compact::Op;

/// Returned by a translation: the block ran to its end.
pub const END: u32 = 0;
/// Returned by a translation: a step asked to leave; its caller holds why.
pub const LEAVE: u32 = 1;

/// The block engine's step for one instruction of a translated block: runs
/// instruction `index` as the interpreter would, with the checks at the
/// boundary after it; [`END`] to go on, [`LEAVE`] to leave the block.
pub type StepFn = extern "sysv64" fn(env: *mut Env, index: u32) -> u32;

/// What a translation is given besides the CPU. `repr(C)`: the generated
/// code reads its fields at fixed offsets.
#[repr(C)]
pub struct Env {
    pub step: StepFn,
    /// The icount at which the block engine must stop (the nearer of the
    /// limit and the next deadline).
    pub stop_icount: u64,
    /// Runs of a self-looping block made inside the translation.
    pub loops: u64,
    /// The step's own context.
    pub ctx: *mut (),
}

/// One instruction as the compiler sees it.
#[derive(Clone, Copy, Debug)]
pub struct Insn {
    pub op: Op,
    /// It may run as host code: a plain site (the raw engine's marked sites
    /// and patches go through the step).
    pub plain: bool,
    pub ip: u32,
    pub next_ip: u32,
}

/// A block to translate.
pub struct Shape<'a> {
    pub insns: &'a [Insn],
    /// Bytes from the first instruction's EIP that CS admits whenever the
    /// translation is entered (the block's extent when it is contiguous):
    /// a branch to them needs no limit check.
    pub extent: u32,
}

/// When to compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitConfig {
    pub enabled: bool,
    /// Entries of a block before it is compiled (0: at its first).
    pub threshold: u32,
}

impl Default for JitConfig {
    fn default() -> Self {
        JitConfig {
            enabled: cfg!(target_arch = "x86_64"),
            threshold: 2,
        }
    }
}

impl JitConfig {
    /// The interpreter only (`--no-jit`).
    pub const OFF: JitConfig = JitConfig {
        enabled: false,
        threshold: 0,
    };
    /// Every block compiled at its first entry: what the agreement tests
    /// run, so that every instruction they execute meets the compiler.
    pub const EAGER: JitConfig = JitConfig {
        enabled: true,
        threshold: 0,
    };
}

/// A translation: its address in the code cache of its generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Code {
    addr: usize,
    generation: u32,
}

/// Counters for the run summary and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Blocks translated.
    pub compiled: u64,
    /// Bytes of host code emitted.
    pub code_bytes: u64,
    /// Host nanoseconds spent translating (never seen by the guest).
    pub compile_nanos: u64,
    /// Times the code cache was emptied because it was full.
    pub flushes: u64,
    /// Instructions retired while a translation ran, and of those, the
    /// ones its steps ran (the rest ran as host code).
    pub retired: u64,
    pub stepped: u64,
}

/// The compiler and its code cache.
pub struct Jit {
    pub config: JitConfig,
    #[cfg(target_arch = "x86_64")]
    cache: cache::CodeCache,
    pub stats: JitStats,
}

impl Default for Jit {
    fn default() -> Self {
        Jit::new(JitConfig::default())
    }
}

/// A copy keeps the configuration and starts with an empty cache (the
/// copied blocks' translations belong to the other one's generation).
impl Clone for Jit {
    fn clone(&self) -> Self {
        Jit::new(self.config)
    }
}

impl std::fmt::Debug for Jit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jit")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Jit {
    pub fn new(config: JitConfig) -> Jit {
        Jit {
            config,
            #[cfg(target_arch = "x86_64")]
            cache: cache::CodeCache::new(cache::DEFAULT_SIZE),
            stats: JitStats::default(),
        }
    }

    /// Drops every translation (the blocks they belong to are going).
    pub fn flush(&mut self) {
        #[cfg(target_arch = "x86_64")]
        self.cache.flush();
    }

    /// Bytes of code the cache holds now.
    pub fn cache_bytes(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        return self.cache.used();
        #[cfg(not(target_arch = "x86_64"))]
        0
    }

    /// Whether `code` is still in the cache (not emptied since).
    #[inline(always)]
    pub fn is_current(&self, code: Code) -> bool {
        #[cfg(target_arch = "x86_64")]
        return code.generation == self.cache.generation();
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = code;
            false
        }
    }

    /// Translates a block; `None` when it is not worth it (no instruction
    /// would run as host code) or the host cannot run generated code.
    pub fn compile(&mut self, shape: &Shape<'_>) -> Option<Code> {
        #[cfg(target_arch = "x86_64")]
        {
            let started = std::time::Instant::now();
            let mut addr = self.cache.next_address()?;
            let mut bytes = emit::assemble(shape, addr)?;
            if !self.cache.fits(bytes.len()) {
                self.cache.flush();
                self.stats.flushes += 1;
                addr = self.cache.next_address()?;
                bytes = emit::assemble(shape, addr)?;
                if !self.cache.fits(bytes.len()) {
                    return None;
                }
            }
            let at = self.cache.install(&bytes);
            debug_assert_eq!(at, addr);
            self.stats.compiled += 1;
            self.stats.code_bytes += bytes.len() as u64;
            self.stats.compile_nanos += started.elapsed().as_nanos() as u64;
            Some(Code {
                addr: at,
                generation: self.cache.generation(),
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = shape;
            None
        }
    }

    /// Runs a translation.
    ///
    /// # Safety
    /// `code` is current ([`Jit::is_current`]); `cpu` is valid for reads
    /// and writes and nothing else touches it during the call but `env`'s
    /// step; `env.step` upholds what its context needs.
    pub unsafe fn run(&mut self, code: Code, cpu: *mut Cpu, env: *mut Env) -> u32 {
        debug_assert!(self.is_current(code));
        // SAFETY: `code.addr` is the start of a translation assembled by
        // `emit::assemble` with this ABI, still in the cache (current
        // generation, so not overwritten); the caller vouches for the
        // pointers it is given.
        unsafe {
            let f: extern "sysv64" fn(*mut Cpu, *mut Env) -> u32 = std::mem::transmute(code.addr);
            f(cpu, env)
        }
    }
}
