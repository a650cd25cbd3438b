//! The code cache: one mapping, readable, writable and executable, filled
//! from the front. When it is full it is emptied whole (QEMU's policy for
//! its translation buffer): every translation is dropped at once, by a new
//! generation number, and hot code is compiled again as it runs.
//!
//! The mapping is reserved at its full size when the first block is compiled
//! and the host commits pages only as they are written, so a machine that
//! never compiles (the reference engine, a short test) costs nothing.

use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes of code at most, before the cache is emptied.
pub const DEFAULT_SIZE: usize = 128 << 20;

/// Generations are unique across caches, so a translation from one cache
/// is never taken for one of another (a cloned machine starts empty).
static NEXT_GENERATION: AtomicU32 = AtomicU32::new(1);

fn new_generation() -> u32 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

pub struct CodeCache {
    base: *mut u8,
    size: usize,
    used: usize,
    generation: u32,
}

// SAFETY: the mapping is owned by this value alone and only reached through
// it (`&mut self` to write, compiled code run by the thread that owns the
// machine), so moving it to another thread moves the only access.
unsafe impl Send for CodeCache {}

impl CodeCache {
    pub fn new(size: usize) -> CodeCache {
        CodeCache {
            base: std::ptr::null_mut(),
            size,
            used: 0,
            generation: new_generation(),
        }
    }

    /// The generation translations must carry to be valid.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Bytes of code held now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The address the next translation will be copied to, mapping the
    /// cache first if need be; `None` when the host refuses the mapping.
    pub fn next_address(&mut self) -> Option<usize> {
        if self.base.is_null() {
            // SAFETY: an anonymous private mapping at an address of the
            // kernel's choosing touches no existing memory; the result is
            // checked before use.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    self.size,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            self.base = p.cast();
        }
        Some(self.base as usize + self.used)
    }

    /// Whether `len` more bytes fit.
    pub fn fits(&self, len: usize) -> bool {
        self.used + len <= self.size
    }

    /// Drops every translation: the generation changes, the space is reused.
    pub fn flush(&mut self) {
        self.used = 0;
        self.generation = new_generation();
    }

    /// Copies `code`, assembled for [`CodeCache::next_address`], into the
    /// cache; returns its address. The caller has checked that it fits.
    pub fn install(&mut self, code: &[u8]) -> usize {
        assert!(!self.base.is_null() && self.fits(code.len()), "code cache misuse");
        // SAFETY: `base..base + size` is this cache's own mapping and the
        // assertion keeps the copy inside it; no compiled code runs while
        // `&mut self` is held, so nothing executes the bytes being written.
        unsafe {
            let dst = self.base.add(self.used);
            std::ptr::copy_nonoverlapping(code.as_ptr(), dst, code.len());
        }
        let at = self.base as usize + self.used;
        // Keep translations 16-byte aligned, as compilers align functions.
        self.used = (self.used + code.len() + 15) & !15;
        self.used = self.used.min(self.size);
        at
    }
}

impl CodeCache {
    /// Rewrites the 4-byte displacement at `at` (a jump in a translation of
    /// this generation) to `rel`.
    pub fn patch(&mut self, at: usize, rel: i32) {
        let base = self.base as usize;
        assert!(
            !self.base.is_null() && at >= base && at + 4 <= base + self.used,
            "code cache misuse"
        );
        // SAFETY: `at..at + 4` lies inside the installed part of this cache's
        // own mapping (asserted); no translation runs while `&mut self` is
        // held, and an unaligned write of four bytes is what the jump holds.
        unsafe {
            std::ptr::write_unaligned(at as *mut i32, rel);
        }
    }
}

impl Drop for CodeCache {
    fn drop(&mut self) {
        if !self.base.is_null() {
            // SAFETY: unmaps exactly the mapping made in `next_address`; the
            // cache is going away, so no translation in it can run again.
            unsafe {
                libc::munmap(self.base.cast(), self.size);
            }
        }
    }
}
