//! Helpers the end-to-end tests share. Each test file is a crate of its
//! own and uses a part of this, so what one does not use is not dead.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

pub const RINGBACK: &str = env!("CARGO_BIN_EXE_ringback");

/// Runs the ringback binary with no input.
pub fn ringback(args: &[&str]) -> Output {
    Command::new(RINGBACK)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ringback")
}

/// Writes `bytes` to a scratch file in a folder of this test process's
/// own (`tag` keeps test files apart); returns its path.
pub fn scratch(tag: &str, name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("ringback-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write scratch file");
    path.to_string_lossy().into_owned()
}

/// xorshift64*: small, seedable, the same on every host.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
