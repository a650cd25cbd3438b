//! Guest-physical memory: RAM in 4 KiB pages with a dirty bitmap, ROM ranges and
//! the A20 gate (SDM Vol. 3A, 21.33.1 for the wrap-around the A20 mask emulates).

use crate::hash::FastMap;

pub const PAGE_SIZE: usize = 4096;
pub const PAGE_SHIFT: u32 = 12;

/// A read-only range of guest-physical memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rom {
    pub base: u32,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct PhysMem {
    ram: Vec<u8>,
    dirty: Vec<u64>,
    /// The pages set in `dirty`, in the order they were first written: taking
    /// them costs the pages written, not a walk over the bitmap.
    dirty_list: Vec<u32>,
    /// Pages written at least once since the RAM was made (every write
    /// marks its page dirty first): the others are known to be zeros
    /// without reading them, which would make the host map them.
    written: Vec<u64>,
    roms: Vec<Rom>,
    /// Writes that hit ROM or nothing at all.
    pub dropped_writes: u64,
    /// Pages holding bytes an engine caches decoded code from (the fast
    /// filter of every store), and which of each such page's bytes those are.
    watched: Vec<u64>,
    code_bytes: FastMap<u32, Box<CodeBits>>,
    /// Writes that changed watched code bytes, one entry per page, until the
    /// engines take them.
    code_writes: Vec<CodeWrite>,
    /// See [`PhysMem::store_epoch`].
    store_epoch: u64,
}

/// One bit per byte of a page.
type CodeBits = [u64; PAGE_SIZE / 64];

/// The code bytes of one page that the guest changed: offsets `first..=last`
/// (a span over all the writes to that page since the engines last looked,
/// so it may include bytes between them that were not written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeWrite {
    pub page: u32,
    pub first: u16,
    pub last: u16,
}

impl CodeWrite {
    /// Whether the bytes `start..start + len` of the page meet the written span.
    pub fn overlaps(&self, start: u32, len: u32) -> bool {
        len != 0 && start <= u32::from(self.last) && start + len > u32::from(self.first)
    }
}

/// Asks the host to back `len` bytes at `ptr` with huge pages where it can
/// (Linux's transparent huge pages, when they are on for regions that ask).
/// Guest RAM is reached at random across hundreds of megabytes: with 4 KiB
/// pages most of those accesses miss the host's TLB. Only advice: the
/// memory works the same without it. (Not the code cache: its huge pages'
/// first faults made each translation 2-3 us slower, the boot no faster.)
fn advise_huge_pages(ptr: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        // madvise wants a page-aligned start; the advice applies to the
        // whole 2 MiB pages inside the range.
        let start = (ptr as usize).next_multiple_of(PAGE_SIZE);
        let end = ptr as usize + len;
        if end > start {
            // SAFETY: MADV_HUGEPAGE changes no contents and no access rights
            // of memory this process owns (`ptr..ptr + len` is one live
            // allocation); its failure is harmless and ignored.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

impl PhysMem {
    /// `ram_size` is rounded up to whole pages.
    pub fn new(ram_size: usize) -> Self {
        let pages = ram_size.div_ceil(PAGE_SIZE);
        let ram = vec![0; pages * PAGE_SIZE];
        advise_huge_pages(ram.as_ptr(), ram.len());
        PhysMem {
            ram,
            dirty: vec![0; pages.div_ceil(64)],
            dirty_list: Vec::new(),
            written: vec![0; pages.div_ceil(64)],
            roms: Vec::new(),
            dropped_writes: 0,
            watched: vec![0; pages.div_ceil(64)],
            code_bytes: FastMap::default(),
            code_writes: Vec::new(),
            store_epoch: 0,
        }
    }

    /// Watches the code bytes `phys..phys + len` (within RAM): a store that
    /// changes one is reported through [`PhysMem::take_code_writes`]. Stores
    /// to other bytes of the page, and stores of the bytes already there,
    /// are not: data sharing a page with code costs the code nothing.
    pub fn watch_code(&mut self, phys: u32, len: u32) {
        let end = (phys as usize).saturating_add(len as usize).min(self.ram.len());
        let mut addr = phys as usize;
        // A page at a time: one map lookup per page, not per byte.
        while addr < end {
            let page = addr >> PAGE_SHIFT;
            let stop = ((page + 1) << PAGE_SHIFT).min(end);
            if self.watched[page / 64] & (1 << (page % 64)) == 0 {
                self.watched[page / 64] |= 1 << (page % 64);
                self.store_epoch += 1;
            }
            let bits = self
                .code_bytes
                .entry(page as u32)
                .or_insert_with(|| Box::new([0; PAGE_SIZE / 64]));
            for a in addr..stop {
                let off = a & (PAGE_SIZE - 1);
                bits[off / 64] |= 1 << (off % 64);
            }
            addr = stop;
        }
    }

    /// Stops watching every code byte of `page` (an engine then watches
    /// again what it still holds there).
    pub fn unwatch_code_page(&mut self, page: u32) {
        if let Some(w) = self.watched.get_mut(page as usize / 64) {
            *w &= !(1 << (page % 64));
        }
        self.code_bytes.remove(&page);
    }

    /// Stops watching all code (the engines' caches were dropped).
    pub fn unwatch_all_code(&mut self) {
        self.watched.fill(0);
        self.code_bytes.clear();
        self.code_writes.clear();
    }

    /// Whether watched code was changed since the last `take_code_writes`.
    #[inline]
    pub fn code_written(&self) -> bool {
        !self.code_writes.is_empty()
    }

    /// The changes to watched code since the last call, by page. The bytes
    /// stay watched until the engines say otherwise.
    pub fn take_code_writes(&mut self, out: &mut Vec<CodeWrite>) {
        out.append(&mut self.code_writes);
    }

    #[inline]
    fn is_watched(&self, addr: usize) -> bool {
        let page = addr >> PAGE_SHIFT;
        self.watched[page / 64] & (1 << (page % 64)) != 0
    }

    /// Notes a store of `new` at `addr` (in RAM, on watched pages) before it
    /// is made: the bytes it changes that are code, one map lookup per page.
    #[cold]
    fn note_store(&mut self, addr: usize, new: &[u8]) {
        let end = addr + new.len();
        let mut a = addr;
        while a < end {
            let page = a >> PAGE_SHIFT;
            let stop = ((page + 1) << PAGE_SHIFT).min(end);
            let mut span: Option<(usize, usize)> = None;
            if let Some(bits) = self.code_bytes.get(&(page as u32)) {
                for b in a..stop {
                    let off = b & (PAGE_SIZE - 1);
                    if self.ram[b] != new[b - addr] && bits[off / 64] & (1 << (off % 64)) != 0 {
                        span = Some((span.map_or(off, |(first, _)| first), off));
                    }
                }
            }
            if let Some((first, last)) = span {
                self.note_page_write(page as u32, first as u16, last as u16);
            }
            a = stop;
        }
    }

    /// Records that the byte at `addr` (in RAM) changed, if it is code.
    fn note_code_change(&mut self, addr: usize) {
        let page = (addr >> PAGE_SHIFT) as u32;
        let off = addr & (PAGE_SIZE - 1);
        let is_code = self
            .code_bytes
            .get(&page)
            .is_some_and(|b| b[off / 64] & (1 << (off % 64)) != 0);
        if is_code {
            self.note_page_write(page, off as u16, off as u16);
        }
    }

    fn note_page_write(&mut self, page: u32, first: u16, last: u16) {
        match self.code_writes.iter_mut().rev().find(|w| w.page == page) {
            Some(w) => {
                w.first = w.first.min(first);
                w.last = w.last.max(last);
            }
            None => self.code_writes.push(CodeWrite { page, first, last }),
        }
    }

    /// Where RAM is in host memory, for the compiler's inline accesses.
    pub fn ram_ptr(&mut self) -> *mut u8 {
        self.ram.as_mut_ptr()
    }

    pub fn ram_size(&self) -> usize {
        self.ram.len()
    }

    /// A write that went nowhere (outside RAM, or to a ROM).
    pub fn count_dropped_write(&mut self) {
        self.dropped_writes += 1;
    }

    pub fn add_rom(&mut self, rom: Rom) {
        self.roms.push(rom);
    }

    #[inline]
    fn mark_dirty(&mut self, addr: usize) {
        self.set_dirty(addr >> PAGE_SHIFT);
    }

    #[inline]
    fn set_dirty(&mut self, page: usize) {
        let (word, bit) = (page / 64, 1u64 << (page % 64));
        if self.dirty[word] & bit == 0 {
            self.dirty[word] |= bit;
            self.written[word] |= bit;
            self.dirty_list.push(page as u32);
        }
    }

    /// Counts the changes that can make a page need [`PhysMem::write`] for
    /// a store where it did not before: its dirty bit cleared, its first
    /// watched code, new RAM. The compiler's host slots go when it moves.
    pub fn store_epoch(&self) -> u64 {
        self.store_epoch
    }

    /// The bitmaps of dirty pages and of pages holding watched code (a
    /// bit per page of RAM, as [`PhysMem::is_dirty`] and
    /// [`PhysMem::holds_watched_code`] read them), for the compiler's
    /// host code: they stay where they are as long as the memory does.
    pub fn page_bitmaps(&self) -> (*const u64, *const u64) {
        (self.dirty.as_ptr(), self.watched.as_ptr())
    }

    /// Whether `page` holds watched code.
    pub fn holds_watched_code(&self, page: usize) -> bool {
        page < self.ram.len() >> PAGE_SHIFT && self.is_watched(page << PAGE_SHIFT)
    }

    /// Marks `page` dirty ahead of a store to it that will not come through
    /// [`PhysMem::write`] (the compiler's inline store).
    pub fn mark_page_dirty(&mut self, page: usize) {
        if page < self.ram.len() >> PAGE_SHIFT {
            self.set_dirty(page);
        }
    }

    /// Whether page `page` was never written since the RAM was made: it
    /// holds zeros.
    pub fn never_written(&self, page: usize) -> bool {
        self.written.get(page / 64).is_some_and(|w| w & (1 << (page % 64)) == 0)
    }

    #[inline]
    pub fn read(&self, addr: u32, size: u8) -> u32 {
        let a = addr as usize;
        let n = size as usize;
        // Fixed sizes compile to single loads; a variable-length copy was a
        // call to memcpy on every access.
        match n {
            1 => {
                if let Some(&b) = self.ram.get(a) {
                    return u32::from(b);
                }
            }
            2 => {
                if let Some(&[b0, b1]) = self.ram.get(a..a + 2) {
                    return u32::from(u16::from_le_bytes([b0, b1]));
                }
            }
            4 => {
                if let Some(&[b0, b1, b2, b3]) = self.ram.get(a..a + 4) {
                    return u32::from_le_bytes([b0, b1, b2, b3]);
                }
            }
            _ => {
                if let Some(bytes) = self.ram.get(a..a + n) {
                    let mut v = [0u8; 4];
                    v[..n].copy_from_slice(bytes);
                    return u32::from_le_bytes(v);
                }
            }
        }
        let mut v = 0u32;
        for i in 0..n {
            v |= u32::from(self.read_slow(addr.wrapping_add(i as u32))) << (8 * i);
        }
        v
    }

    fn read_slow(&self, addr: u32) -> u8 {
        if let Some(b) = self.ram.get(addr as usize) {
            return *b;
        }
        for rom in &self.roms {
            if let Some(off) = addr.checked_sub(rom.base) {
                if let Some(b) = rom.bytes.get(off as usize) {
                    return *b;
                }
            }
        }
        0xFF
    }

    #[inline]
    pub fn write(&mut self, addr: u32, size: u8, value: u32) {
        let a = addr as usize;
        let n = size as usize;
        // A zero-size write touches nothing; `a + n - 1` below needs n > 0.
        if n != 0 && a + n <= self.ram.len() {
            // Only pages with watched code pay for the byte-wise look.
            if self.is_watched(a) || self.is_watched(a + n - 1) {
                self.note_store(a, &value.to_le_bytes()[..n]);
            }
            match n {
                1 => self.ram[a] = value as u8,
                2 => self.ram[a..a + 2].copy_from_slice(&(value as u16).to_le_bytes()),
                4 => self.ram[a..a + 4].copy_from_slice(&value.to_le_bytes()),
                _ => self.ram[a..a + n].copy_from_slice(&value.to_le_bytes()[..n]),
            }
            self.mark_dirty(a);
            if (a + n - 1) >> PAGE_SHIFT != a >> PAGE_SHIFT {
                self.mark_dirty(a + n - 1);
            }
            return;
        }
        for i in 0..n {
            let b = addr.wrapping_add(i as u32) as usize;
            if b < self.ram.len() {
                let byte = (value >> (8 * i)) as u8;
                if self.ram[b] != byte && self.is_watched(b) {
                    self.note_code_change(b);
                }
                self.ram[b] = byte;
                self.mark_dirty(b);
            } else {
                self.dropped_writes += 1;
            }
        }
    }

    /// Copies `data` into RAM (used by loaders). Errors when it does not fit.
    pub fn load(&mut self, addr: u32, data: &[u8]) -> Result<(), crate::VmError> {
        let start = addr as usize;
        let end = start
            .checked_add(data.len())
            .filter(|&e| e <= self.ram.len())
            .ok_or(crate::VmError::DoesNotFit {
                addr: u64::from(addr),
                len: data.len() as u64,
                ram: self.ram.len() as u64,
            })?;
        self.ram[start..end].copy_from_slice(data);
        self.touch(start, end);
        Ok(())
    }

    /// Sets `len` bytes from `addr` to `byte` (loaders zeroing bss). Errors
    /// when the range does not fit.
    pub fn fill(&mut self, addr: u32, len: u64, byte: u8) -> Result<(), crate::VmError> {
        let start = addr as usize;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|&e| e <= self.ram.len())
            .ok_or(crate::VmError::DoesNotFit {
                addr: u64::from(addr),
                len,
                ram: self.ram.len() as u64,
            })?;
        self.ram[start..end].fill(byte);
        self.touch(start, end);
        Ok(())
    }

    /// Marks the pages of `start..end` dirty and reports their watched code
    /// as written (loaders replace whole pages). An
    /// empty range touches no page: its start may be the end of RAM, one
    /// page past the bitmaps.
    fn touch(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        for p in (start >> PAGE_SHIFT)..=((end - 1) >> PAGE_SHIFT) {
            self.set_dirty(p);
            if self.is_watched(p << PAGE_SHIFT) {
                self.note_page_write(p as u32, 0, (PAGE_SIZE - 1) as u16);
            }
        }
    }

    /// Reads a range of RAM for host-side inspection; bytes outside RAM read as 0xFF.
    pub fn read_bytes(&self, addr: u32, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.read_slow(addr.wrapping_add(i as u32));
        }
    }

    pub fn ram(&self) -> &[u8] {
        &self.ram
    }

    /// The RAM for a bulk store into `start..start + len` (within RAM),
    /// its pages marked dirty; `None` when one of them holds watched code
    /// (the store must then be looked at byte by byte).
    pub fn bulk_store(&mut self, start: u32, len: u32) -> Option<&mut [u8]> {
        let (first, last) = (
            start as usize >> PAGE_SHIFT,
            (start + len.max(1) - 1) as usize >> PAGE_SHIFT,
        );
        if (first..=last).any(|p| self.is_watched(p << PAGE_SHIFT)) {
            return None;
        }
        for page in first..=last {
            self.set_dirty(page);
        }
        Some(&mut self.ram)
    }

    /// The RAM bytes, leaving none: for copying a machine without them.
    pub(crate) fn take_ram(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.ram)
    }

    pub(crate) fn put_ram(&mut self, ram: Vec<u8>) {
        self.store_epoch += 1;
        self.ram = ram;
    }

    pub fn page(&self, page: usize) -> Option<&[u8]> {
        // Page numbers can come from a trace file: no overflow on nonsense.
        let start = page.checked_mul(PAGE_SIZE)?;
        self.ram.get(start..start.checked_add(PAGE_SIZE)?)
    }

    pub fn is_dirty(&self, page: usize) -> bool {
        self.dirty.get(page / 64).is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    /// Returns the dirty page numbers, in ascending order, and clears the
    /// bitmap.
    pub fn take_dirty(&mut self) -> Vec<usize> {
        self.store_epoch += 1;
        let mut pages: Vec<usize> = self.dirty_list.drain(..).map(|p| p as usize).collect();
        for &p in &pages {
            self.dirty[p / 64] = 0;
        }
        pages.sort_unstable();
        pages
    }

    /// Zeroes every dirty page and clears the bitmap (cheap reset for test runners).
    pub fn clear_dirty_pages(&mut self) {
        for p in self.take_dirty() {
            self.ram[p * PAGE_SIZE..(p + 1) * PAGE_SIZE].fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 128 pages: the bitmaps are exactly two words, so a page index one past
    /// the end is outside them rather than a spare bit.
    const RAM: usize = 128 * PAGE_SIZE;

    #[test]
    fn loads_and_fills_ending_at_the_top_of_ram_mark_the_last_page_only() {
        for len in [0usize, 1, 2, PAGE_SIZE, PAGE_SIZE + 1] {
            let mut m = PhysMem::new(RAM);
            let top = RAM as u32;
            let start = top - len as u32;
            m.watch_code(127 * PAGE_SIZE as u32, PAGE_SIZE as u32);
            m.load(start, &vec![7; len]).unwrap();
            m.fill(start, len as u64, 9).unwrap();
            // And the empty range at the very top, which has no page at all.
            m.load(top, &[]).unwrap();
            m.fill(top, 0, 9).unwrap();
            let first = (RAM - len) / PAGE_SIZE;
            let expected: Vec<usize> = if len == 0 { vec![] } else { (first..128).collect() };
            assert_eq!(m.take_dirty(), expected, "{len} bytes");
            assert!(m.ram()[RAM - len..].iter().all(|&b| b == 9));
            let mut hits = Vec::new();
            m.take_code_writes(&mut hits);
            let whole = CodeWrite {
                page: 127,
                first: 0,
                last: PAGE_SIZE as u16 - 1,
            };
            assert_eq!(hits, if len == 0 { vec![] } else { vec![whole] }, "{len} bytes");
        }
    }

    #[test]
    fn only_changes_to_watched_code_bytes_are_reported() {
        let mut m = PhysMem::new(RAM);
        let mut hits = Vec::new();
        m.load(0x1010, &[0x90; 8]).unwrap();
        m.watch_code(0x1010, 8);
        // Data beside the code, and a store of the code bytes already there.
        m.write(0x1000, 4, 0xDEAD_BEEF);
        m.write(0x1018, 1, 0x55);
        m.write(0x1010, 4, 0x9090_9090);
        assert!(!m.code_written());
        // A dword whose changed bytes are all data, though it touches code.
        m.write(0x100E, 4, 0x9090_1234);
        assert!(!m.code_written());
        m.write(0x1012, 1, 0xCC);
        m.write(0x1017, 2, 0x00C3);
        m.take_code_writes(&mut hits);
        assert_eq!(
            hits,
            vec![CodeWrite {
                page: 1,
                first: 0x12,
                last: 0x17
            }]
        );
        // Still watched until the engine says otherwise; then nothing is.
        m.write(0x1011, 1, 0xCC);
        assert!(m.code_written());
        m.take_code_writes(&mut hits);
        m.unwatch_code_page(1);
        m.write(0x1013, 1, 0xCC);
        assert!(!m.code_written());
        assert!(hits[1].overlaps(0x10, 2) && !hits[1].overlaps(0x12, 4) && !hits[1].overlaps(0x0, 0x11));
    }

    #[test]
    fn a_store_across_two_watched_pages_reports_both() {
        let mut m = PhysMem::new(RAM);
        m.watch_code(0x1FFE, 4);
        m.write(0x1FFF, 2, 0xABCD);
        let mut hits = Vec::new();
        m.take_code_writes(&mut hits);
        assert_eq!(
            hits,
            vec![
                CodeWrite {
                    page: 1,
                    first: 0xFFF,
                    last: 0xFFF
                },
                CodeWrite {
                    page: 2,
                    first: 0,
                    last: 0
                }
            ]
        );
    }

    #[test]
    fn empty_ranges_touch_no_page() {
        let mut m = PhysMem::new(RAM);
        m.load(0x1000, &[]).unwrap();
        m.fill(0x2000, 0, 0).unwrap();
        assert!(m.take_dirty().is_empty());
    }

    #[test]
    fn ranges_past_the_top_or_4_gib_are_refused_untouched() {
        let mut m = PhysMem::new(RAM);
        let top = RAM as u32;
        for (addr, len) in [
            (top, 1u64),
            (top - 1, 2),
            (top + 1, 0),
            (u32::MAX, 0),
            (u32::MAX, 2),
            (0, RAM as u64 + 1),
            (0, u64::MAX),
            (1, u64::MAX),
        ] {
            assert!(
                matches!(m.fill(addr, len, 1), Err(crate::VmError::DoesNotFit { .. })),
                "fill {addr:#x}+{len:#x}"
            );
            if len <= 2 {
                assert!(m.load(addr, &vec![1; len as usize]).is_err(), "load {addr:#x}+{len}");
            }
        }
        assert!(m.take_dirty().is_empty());
        assert!(m.ram().iter().all(|&b| b == 0));
    }

    #[test]
    fn accesses_at_the_top_of_ram_and_4_gib() {
        let mut m = PhysMem::new(RAM);
        let top = RAM as u32;
        for size in [1u8, 2, 4] {
            m.write(top - u32::from(size), size, 0x0403_0201);
            assert_eq!(
                m.read(top - u32::from(size), size),
                0x0403_0201 & (u32::MAX >> (32 - 8 * size))
            );
        }
        assert_eq!(m.take_dirty(), vec![127]);
        // Straddling the top: the bytes inside RAM land, the rest are dropped.
        m.write(top - 1, 4, 0xAABB_CCDD);
        assert_eq!(m.read(top - 1, 4), 0xFFFF_FFDD);
        assert_eq!(m.dropped_writes, 3);
        m.write(top, 4, 1);
        m.write(u32::MAX, 2, 0x1234);
        assert_eq!(m.read(u32::MAX, 2), u32::from(m.ram()[0]) << 8 | 0xFF);
        // Zero-size accesses anywhere do nothing.
        for addr in [0, top - 1, top, u32::MAX] {
            m.write(addr, 0, 0xFF);
            assert_eq!(m.read(addr, 0), 0);
        }
        assert_eq!(m.take_dirty(), vec![0, 127]);
    }

    // A page counts as written from its first write on, whichever way the
    // write came (a store, a load, a fill, a bulk store), and stays written
    // when its dirty bit is taken: every page never written holds zeros.
    #[test]
    fn pages_never_written_are_known_without_reading_them() {
        let mut m = PhysMem::new(RAM);
        m.write(0x1000, 1, 0);
        m.load(0x3000, &[1, 2]).expect("fits");
        m.fill(0x5FFF, 2, 7).expect("fits");
        assert!(m.bulk_store(0x9000, 16).is_some());
        let written = [1, 3, 5, 6, 9];
        assert_eq!(m.take_dirty(), written);
        m.write(0x1000, 4, 0);
        for p in 0..=128 {
            assert_eq!(m.never_written(p), !written.contains(&p) && p < 128, "page {p}");
            if m.never_written(p) {
                assert!(m.page(p).is_some_and(|b| b.iter().all(|&x| x == 0)), "page {p}");
            }
        }
    }

    #[test]
    fn page_numbers_past_ram_have_no_page() {
        let m = PhysMem::new(RAM);
        assert_eq!(m.page(127).map(<[u8]>::len), Some(PAGE_SIZE));
        for p in [128, usize::MAX / PAGE_SIZE, usize::MAX] {
            assert!(m.page(p).is_none());
            assert!(!m.is_dirty(p));
        }
    }
}
