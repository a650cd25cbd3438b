//! Where compiled code logs port accesses from: what a translation knows
//! of each access before it runs (pc, port, size, direction, instructions
//! past the icount it stores), numbered once per process. A translation
//! then logs the accesses of a run of IN and OUT instructions as one
//! grouped [`super::Entry`]: the icount, the site's number and the values,
//! up to [`MAX_ACCESSES`] of them (docs/raw-engine.md, "Events").
//! A port loop logs an access every few instructions, and the fewer stores
//! a log takes, the less recording costs it.
//!
//! Numbers only grow: a batch in flight holds the table as it was when it
//! left the slot (an `Arc`, never changed after), which has every site its
//! entries name, since a site is numbered before any code that logs it is
//! made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Accesses one grouped entry holds at most: its 12 bytes of pc, address
/// and value.
pub const MAX_ACCESSES: usize = 3;

/// Sites the process numbers at most (a number could take 24 bits, the
/// entry's size byte and its 16-bit `past`): numbers are never given back,
/// and a guest that compiles ever new port accesses (code at new places)
/// must not grow the table without end. Past it, accesses log one entry
/// each. At about 50 bytes a site, 50 MiB at most.
pub const MAX_SITES: usize = 1 << 20;

/// Sites a chunk of the table holds: adding one copies at most the last
/// chunk and the list of chunks (while a batch in flight holds the table
/// as it was), not the whole table.
const CHUNK: usize = 1024;

/// One access a grouped entry holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SiteAccess {
    pub pc: u32,
    pub addr: u32,
    pub size: u8,
    pub write: bool,
    /// Instructions past the icount the entry holds.
    pub past: u16,
}

impl SiteAccess {
    /// The access it made, with `value`.
    #[inline]
    pub fn access(&self, value: u32) -> super::IoAccess {
        super::IoAccess {
            addr: self.addr,
            mmio: false,
            size: self.size,
            value,
            write: self.write,
        }
    }
}

/// The accesses one grouped entry holds, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Site {
    accesses: [SiteAccess; MAX_ACCESSES],
    len: u8,
}

impl Site {
    /// `None` for none or more than [`MAX_ACCESSES`].
    pub fn new(accesses: &[SiteAccess]) -> Option<Site> {
        if accesses.is_empty() || accesses.len() > MAX_ACCESSES {
            return None;
        }
        let mut site = Site {
            accesses: [SiteAccess::default(); MAX_ACCESSES],
            len: accesses.len() as u8,
        };
        site.accesses[..accesses.len()].copy_from_slice(accesses);
        Some(site)
    }

    #[inline]
    pub fn accesses(&self) -> &[SiteAccess] {
        &self.accesses[..usize::from(self.len)]
    }
}

/// The sites numbered so far, by number: as it was when taken, whatever
/// is numbered after.
#[derive(Clone, Debug, Default)]
pub struct SiteTable(Arc<Vec<Arc<Vec<Site>>>>);

impl SiteTable {
    #[inline]
    pub fn get(&self, number: u32) -> Option<&Site> {
        let n = number as usize;
        self.0.get(n / CHUNK)?.get(n % CHUNK)
    }

    pub fn len(&self) -> usize {
        self.0.last().map_or(0, |last| (self.0.len() - 1) * CHUNK + last.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, site: Site) {
        let chunks = Arc::make_mut(&mut self.0);
        match chunks.last_mut() {
            Some(last) if last.len() < CHUNK => Arc::make_mut(last).push(site),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(site);
                chunks.push(Arc::new(chunk));
            }
        }
    }
}

#[derive(Default)]
struct Numbering {
    numbers: HashMap<Site, u32>,
    table: SiteTable,
}

static SITES: Mutex<Option<Numbering>> = Mutex::new(None);

/// The number of the site with `accesses`, numbering it if it is new;
/// `None` when it cannot be (no access, too many, or the numbers are all
/// taken): the translation then logs its accesses one entry each.
pub fn number(accesses: &[SiteAccess]) -> Option<u32> {
    let site = Site::new(accesses)?;
    let mut sites = SITES.lock().unwrap_or_else(PoisonError::into_inner);
    let n = sites.get_or_insert_with(Numbering::default);
    if let Some(&number) = n.numbers.get(&site) {
        return Some(number);
    }
    if n.table.len() >= MAX_SITES {
        return None;
    }
    let number = n.table.len() as u32;
    n.table.push(site);
    n.numbers.insert(site, number);
    Some(number)
}

/// Every site numbered so far.
pub fn table() -> SiteTable {
    let mut sites = SITES.lock().unwrap_or_else(PoisonError::into_inner);
    sites.get_or_insert_with(Numbering::default).table.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(pc: u32, addr: u32, write: bool, past: u16) -> SiteAccess {
        SiteAccess {
            pc,
            addr,
            size: 1,
            write,
            past,
        }
    }

    #[test]
    fn a_site_keeps_its_number_and_the_table_has_it() {
        let a = [access(0x5000_1000, 0x80, true, 3), access(0x5000_1004, 0x21, false, 7)];
        let n = number(&a).expect("numbered");
        assert_eq!(number(&a), Some(n), "numbered once");
        let other = number(&a[..1]).expect("a prefix is a site of its own");
        assert_ne!(other, n);
        let table = table();
        assert_eq!(table.get(n).map(Site::accesses), Some(&a[..]));
        assert_eq!(table.get(other).map(Site::accesses), Some(&a[..1]));
        // A table taken earlier stays as it was.
        let later = number(&[access(0x5000_2000, 0x60, false, 1)]).expect("numbered");
        assert!(later as usize >= table.len() && table.get(later).is_none());
        assert_eq!(self::table().get(later).map(|s| s.accesses()[0].addr), Some(0x60));
    }

    // A table holds every site across its chunks, and one taken before a
    // chunk filled keeps what it had.
    #[test]
    fn the_table_grows_by_chunks() {
        let mut t = SiteTable::default();
        let site = |n: u32| Site::new(&[access(n, n % 0x100, false, 1)]).expect("a site");
        for n in 0..CHUNK as u32 {
            t.push(site(n));
        }
        let before = t.clone();
        for n in CHUNK as u32..3 * CHUNK as u32 + 5 {
            t.push(site(n));
        }
        assert_eq!((t.len(), before.len()), (3 * CHUNK + 5, CHUNK));
        for n in [
            0,
            1,
            CHUNK as u32 - 1,
            CHUNK as u32,
            2 * CHUNK as u32 + 7,
            3 * CHUNK as u32 + 4,
        ] {
            assert_eq!(t.get(n).map(|s| s.accesses()[0].pc), Some(n));
        }
        assert!(t.get(3 * CHUNK as u32 + 5).is_none() && before.get(CHUNK as u32).is_none());
        assert_eq!(
            before.get(CHUNK as u32 - 1).map(|s| s.accesses()[0].pc),
            Some(CHUNK as u32 - 1)
        );
    }

    #[test]
    fn no_site_without_accesses_or_with_too_many() {
        assert_eq!(number(&[]), None);
        assert_eq!(number(&[access(1, 2, false, 0); MAX_ACCESSES + 1]), None);
    }
}
