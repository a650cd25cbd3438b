//! The machine digest: BLAKE3 over the machine state and a hash of every RAM
//! page. Page hashes are kept and only the pages written since the last
//! digest are hashed again, so a digest costs little more than the pages
//! the guest dirtied.

use vm::machine::MachineState;
use vm::mem::{PhysMem, PAGE_SIZE};

#[derive(Clone, Debug)]
pub struct RamHasher {
    pages: Vec<[u8; 32]>,
}

impl RamHasher {
    /// Hashes every page of `mem`.
    pub fn new(mem: &PhysMem) -> Self {
        let n = mem.ram_size() / PAGE_SIZE;
        let zero = *blake3::hash(&[0u8; PAGE_SIZE]).as_bytes();
        // Pages never written are zeros: hashed once, not read (reading
        // them would make the host map every page of a large RAM).
        let pages = (0..n)
            .map(|p| match mem.page(p) {
                Some(_) if mem.never_written(p) => zero,
                Some(b) => *blake3::hash(b).as_bytes(),
                None => [0; 32],
            })
            .collect();
        RamHasher { pages }
    }

    /// The hashes of `pages` pages of zeros.
    pub fn zeroed(pages: usize) -> Self {
        let zero = *blake3::hash(&[0u8; PAGE_SIZE]).as_bytes();
        RamHasher {
            pages: vec![zero; pages],
        }
    }

    /// Hashes `bytes` as page `page` (ignored past the end of RAM).
    pub fn set_page(&mut self, page: usize, bytes: &[u8]) {
        if let Some(slot) = self.pages.get_mut(page) {
            *slot = *blake3::hash(bytes).as_bytes();
        }
    }

    /// Hashes again the given pages.
    pub fn update(&mut self, mem: &PhysMem, dirty: &[usize]) {
        for &p in dirty {
            if let (Some(slot), Some(bytes)) = (self.pages.get_mut(p), mem.page(p)) {
                *slot = *blake3::hash(bytes).as_bytes();
            }
        }
    }

    pub fn digest(&self, state: &MachineState) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        // postcard of plain data cannot fail; an empty encoding would still
        // be caught by the page hashes and the comparison of states.
        h.update(&postcard::to_allocvec(state).unwrap_or_default());
        // One call over the whole table: the same bytes as one update per
        // page hash (so the same digest), hashed with SIMD instead of 32
        // bytes at a time, which cost a millisecond per checkpoint at 128 MiB.
        h.update(self.pages.as_flattened());
        *h.finalize().as_bytes()
    }

    /// Every page of `mem` that is not all zeros, with its contents.
    pub fn nonzero_pages(mem: &PhysMem) -> Vec<(u32, Vec<u8>)> {
        (0..mem.ram_size() / PAGE_SIZE)
            .filter(|&p| !mem.never_written(p))
            .filter_map(|p| {
                let b = mem.page(p)?;
                b.iter().any(|&x| x != 0).then(|| (p as u32, b.to_vec()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pages never written are taken as zeros without being read: the
    // hashes are those of every page read, and only pages with a nonzero
    // byte are listed as contents.
    #[test]
    fn pages_never_written_hash_as_the_zeros_they_hold() {
        let mut mem = PhysMem::new(64 * PAGE_SIZE);
        mem.write(3 * PAGE_SIZE as u32 + 5, 4, 0xDEAD_BEEF);
        mem.write(7 * PAGE_SIZE as u32, 1, 1);
        mem.write(7 * PAGE_SIZE as u32, 1, 0);
        let hasher = RamHasher::new(&mem);
        let every: Vec<[u8; 32]> = (0..64)
            .map(|p| *blake3::hash(mem.page(p).expect("in RAM")).as_bytes())
            .collect();
        assert_eq!(hasher.pages, every);
        let listed: Vec<u32> = RamHasher::nonzero_pages(&mem).iter().map(|(p, _)| *p).collect();
        assert_eq!(listed, [3]);
    }
}
