//! Guest memory at linear addresses for debuggers (gdb, the inspector,
//! bisect's reports), without side effects, a page at a time: one
//! translation through the guest's page tables per page, then a copy of
//! the run, where reading byte by byte walked the tables for every byte.

/// The unit of translation: 4 KiB pages (a 4 MiB page is translated per
/// 4 KiB of it, which gives the same addresses).
const PAGE: usize = 0x1000;

/// What the runs need of a machine: a translation without side effects
/// and the RAM.
pub trait GuestMemory {
    /// The physical address of `lin`; `None` when it is not mapped.
    fn translate(&mut self, lin: u32) -> Option<u32>;
    fn ram(&self) -> &[u8];
    /// Writes bytes known to lie in RAM, as the guest's own stores would
    /// (pages marked dirty, translated code there dropped).
    fn write_ram(&mut self, phys: u32, bytes: &[u8]);
}

/// The physical run `[addr + done, ...)` starts, and its length: to the
/// page's end or `want` bytes, and no further than RAM goes. `None` when
/// nothing is wanted, or where the address space ends or the page is not
/// mapped or not RAM.
fn run(mem: &mut impl GuestMemory, addr: u32, done: usize, want: usize) -> Option<(u32, usize)> {
    if want == 0 {
        return None;
    }
    let lin = addr.checked_add(u32::try_from(done).ok()?)?;
    let len = (PAGE - lin as usize % PAGE).min(want);
    let phys = mem.translate(lin)?;
    let len = len.min(mem.ram().len().checked_sub(phys as usize)?);
    (len > 0).then_some((phys, len))
}

/// Copies guest memory at `addr` into `out`; the count copied, short at
/// the first byte that is not mapped to RAM (or at the top of the address
/// space: a read does not wrap around).
pub fn read(mem: &mut impl GuestMemory, addr: u32, out: &mut [u8]) -> usize {
    let mut done = 0;
    while let Some((phys, len)) = run(mem, addr, done, out.len() - done) {
        let phys = phys as usize;
        let Some(src) = mem.ram().get(phys..phys + len) else {
            break;
        };
        out[done..done + len].copy_from_slice(src);
        done += len;
    }
    done
}

/// Writes `data` to guest memory at `addr`, all of it or, when any byte is
/// not mapped to RAM, none of it.
pub fn write(mem: &mut impl GuestMemory, addr: u32, data: &[u8]) -> bool {
    let mut runs = Vec::new();
    let mut done = 0;
    while let Some((phys, len)) = run(mem, addr, done, data.len() - done) {
        runs.push((phys, done, len));
        done += len;
    }
    if done < data.len() {
        return false;
    }
    for (phys, from, len) in runs {
        mem.write_ram(phys, &data[from..from + len]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages mapped in reverse order, with holes and one page past RAM.
    struct Fake {
        ram: Vec<u8>,
        map: Vec<Option<u32>>,
        translations: usize,
    }

    impl Fake {
        fn new() -> Fake {
            let ram = (0..8 * PAGE).map(|i| (i * 7 + i / PAGE) as u8).collect();
            // Linear page i: physical page 7 - i; 3 unmapped; 5 beyond RAM.
            let mut map: Vec<Option<u32>> = (0..8).map(|i| Some(((7 - i) * PAGE) as u32)).collect();
            map[3] = None;
            map[5] = Some((9 * PAGE) as u32);
            Fake {
                ram,
                map,
                translations: 0,
            }
        }

        /// The byte at `lin`, translated on its own.
        fn byte(&self, lin: u32) -> Option<u8> {
            let page = self.map.get(lin as usize / PAGE).copied().flatten()?;
            self.ram.get(page as usize + lin as usize % PAGE).copied()
        }
    }

    impl GuestMemory for Fake {
        fn translate(&mut self, lin: u32) -> Option<u32> {
            self.translations += 1;
            let page = self.map.get(lin as usize / PAGE).copied().flatten()?;
            Some(page + lin % PAGE as u32)
        }

        fn ram(&self) -> &[u8] {
            &self.ram
        }

        fn write_ram(&mut self, phys: u32, bytes: &[u8]) {
            self.ram[phys as usize..][..bytes.len()].copy_from_slice(bytes);
        }
    }

    #[test]
    fn reads_match_byte_by_byte_translation_and_stop_where_it_fails() {
        let mut mem = Fake::new();
        for (addr, len) in [
            (0, 3 * PAGE),
            (100, 10),
            (PAGE - 5, 10),
            (10, 3 * PAGE),
            (4 * PAGE + 1, 3 * PAGE),
        ] {
            let expect: Vec<u8> = (addr..addr + len).map_while(|a| mem.byte(a as u32)).collect();
            let mut out = vec![0u8; len];
            let n = read(&mut mem, addr as u32, &mut out);
            assert_eq!(out[..n], expect[..], "{addr:#x}+{len:#x}");
        }
        // A read across pages 0..3 translates once per page.
        mem.translations = 0;
        read(&mut mem, 10, &mut [0u8; 3 * PAGE]);
        assert_eq!(mem.translations, 4);
        // Short at the top of the address space: no wrap to 0.
        let mut top = Fake::new();
        top.map = vec![Some(0); 1 << 20];
        assert_eq!(read(&mut top, u32::MAX - 3, &mut [0u8; 16]), 4);
    }

    #[test]
    fn writes_are_all_or_nothing() {
        let mut mem = Fake::new();
        let data: Vec<u8> = (0..PAGE + 20).map(|i| i as u8 ^ 0x5A).collect();
        assert!(write(&mut mem, (PAGE - 10) as u32, &data));
        let mut back = vec![0u8; data.len()];
        assert_eq!(read(&mut mem, (PAGE - 10) as u32, &mut back), data.len());
        assert_eq!(back, data);
        // Into the unmapped page 3, and past RAM at page 5: nothing changes.
        for addr in [3 * PAGE - 4, 5 * PAGE - 4] {
            let before = mem.ram.clone();
            assert!(!write(&mut mem, addr as u32, &[1u8; 8]), "{addr:#x}");
            assert!(mem.ram == before, "{addr:#x}");
        }
    }
}
