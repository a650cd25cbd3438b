//! Delta debugging (Zeller's ddmin) over the patch set.

use std::sync::atomic::{AtomicBool, Ordering};

/// Zeller's ddmin: a 1-minimal subset of `items` for which `fails` holds
/// (it holds for all of them). Returns the set and whether the search ran
/// to the end.
pub(super) fn ddmin<T: Clone + PartialEq>(
    items: Vec<T>,
    fails: &mut dyn FnMut(&[T]) -> bool,
    budget: u32,
    cancel: &AtomicBool,
) -> (Vec<T>, bool) {
    let mut c = items;
    let mut n = 2usize;
    let mut spent = 0u32;
    while c.len() >= 2 {
        let chunk = c.len().div_ceil(n);
        let parts: Vec<Vec<T>> = c.chunks(chunk).map(<[T]>::to_vec).collect();
        let mut reduced = false;
        for part in &parts {
            if spent >= budget || cancel.load(Ordering::Relaxed) {
                return (c, false);
            }
            spent += 1;
            if fails(part) {
                c = part.clone();
                n = 2;
                reduced = true;
                break;
            }
        }
        if !reduced && parts.len() > 2 {
            for i in 0..parts.len() {
                if spent >= budget || cancel.load(Ordering::Relaxed) {
                    return (c, false);
                }
                let complement: Vec<T> = parts
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .flat_map(|(_, p)| p.iter().cloned())
                    .collect();
                spent += 1;
                if fails(&complement) {
                    c = complement;
                    n = (n - 1).max(2);
                    reduced = true;
                    break;
                }
            }
        }
        if !reduced {
            if n >= c.len() {
                break;
            }
            n = (2 * n).min(c.len());
        }
    }
    (c, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddmin_finds_a_pair_that_fails_only_together() {
        let items: Vec<u32> = (0..40).collect();
        let mut calls = 0;
        let (set, minimal) = ddmin(
            items,
            &mut |s: &[u32]| {
                calls += 1;
                s.contains(&7) && s.contains(&31)
            },
            1000,
            &AtomicBool::new(false),
        );
        assert_eq!(set, vec![7, 31]);
        assert!(minimal);
        assert!(calls < 100, "{calls} tests");
    }

    #[test]
    fn ddmin_single_culprit_and_budget() {
        let items: Vec<u32> = (0..64).collect();
        let (set, minimal) = ddmin(
            items.clone(),
            &mut |s: &[u32]| s.contains(&42),
            1000,
            &AtomicBool::new(false),
        );
        assert_eq!((set, minimal), (vec![42], true));
        // Cut short, the set still fails but is not the smallest.
        let (set, minimal) = ddmin(items, &mut |s: &[u32]| s.contains(&42), 1, &AtomicBool::new(false));
        assert!(!minimal);
        assert!(set.contains(&42));
    }
}
