//! A program's recent creations, for the `leaky-process` rule.

use std::collections::VecDeque;
use std::num::NonZeroU32;

use super::HashMap;
use crate::event::ProcessKey;

/// Objects a program created recently and did not remove (for `leaky-process`).
///
/// One 16-byte entry per creation in the window, found again at removal by the sequence number
/// the object carries ([`super::Object::leak_seq`]). The creator is an index into a table of the
/// program's distinct creators, so a creation does not carry a 16-byte process key (32 bytes an
/// entry before; a program creating 30k objects in its window held 1 MiB of them).
#[derive(Clone, Debug, Default)]
pub(crate) struct Program {
    /// Creations in the window, oldest first, in increasing sequence (wrapping).
    window: VecDeque<Creation>,
    /// How many of them are not removed yet.
    unremoved: usize,
    creators: Creators,
}

/// One creation in a program's window.
#[derive(Clone, Copy, Debug)]
struct Creation {
    /// Exact to the nanosecond: the window's edge is compared in ns.
    time_ns: u64,
    /// From [`super::Model::next_leak_seq`].
    seq: NonZeroU32,
    /// The creator's slot in [`Creators`], or [`REMOVED`] once the object is removed (a removed
    /// creation no longer needs its creator, so its slot is released then).
    creator: u32,
}

/// [`Creation::creator`] of a removed creation.
const REMOVED: u32 = u32::MAX;

/// Below this capacity the window keeps its buffer when it shrinks (not worth reallocating).
const MIN_KEPT_CAPACITY: usize = 64;

/// A program's distinct creators with how many unremoved creations each has in the window.
///
/// Consecutive creations by the same process (the usual case) reuse the latest slot without
/// hashing; a slot no creation uses any more is freed for reuse, except the latest one, kept
/// until another process creates (so one process creating and removing in turn never hashes).
#[derive(Clone, Debug, Default)]
struct Creators {
    slots: Vec<Slot>,
    /// Freed slots, reused before the table grows.
    free: Vec<u32>,
    /// The slot of each creator that has one (in use or the latest).
    index: HashMap<ProcessKey, u32>,
    /// The slot of the latest creation (meaningless while `slots` is empty).
    latest: u32,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    key: ProcessKey,
    /// Unremoved creations in the window by `key`.
    uses: u32,
}

impl Creators {
    /// The slot of `key`, with one more use.
    #[inline]
    fn acquire(&mut self, key: ProcessKey) -> u32 {
        if let Some(s) = self.slots.get_mut(self.latest as usize)
            && s.key == key
        {
            s.uses = s.uses.saturating_add(1);
            return self.latest;
        }
        self.acquire_other(key)
    }

    /// [`Self::acquire`] when `key` is not the latest creator.
    #[inline(never)]
    fn acquire_other(&mut self, key: ProcessKey) -> u32 {
        self.retire_latest();
        // A full table (see `new_slot`) credits the latest creator: counts stay exact.
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => self.new_slot(key).unwrap_or(self.latest),
        };
        if let Some(s) = self.slots.get_mut(i as usize) {
            s.uses = s.uses.saturating_add(1);
        }
        self.latest = i;
        i
    }

    /// Frees the latest slot when no creation uses it (another process is creating now).
    fn retire_latest(&mut self) {
        if let Some(s) = self.slots.get(self.latest as usize)
            && s.uses == 0
            && self.index.remove(&s.key).is_some()
        {
            self.free.push(self.latest);
        }
    }

    /// A slot for `key`, which has none: a freed one, or a new one at the end; `None` when
    /// the table is full. Slots in use are at most the unremoved creations plus the latest, so
    /// it fills only with 2^32 creations in the window (64 GiB of entries, and their sequence
    /// numbers would collide first).
    fn new_slot(&mut self, key: ProcessKey) -> Option<u32> {
        let slot = Slot { key, uses: 0 };
        let i = if let Some(i) = self.free.pop() {
            *self.slots.get_mut(i as usize)? = slot;
            i
        } else {
            let i = u32::try_from(self.slots.len())
                .ok()
                .filter(|&i| i != REMOVED)?;
            self.slots.push(slot);
            i
        };
        self.index.insert(key, i);
        Some(i)
    }

    /// One use of slot `i` fewer; an unused slot is freed unless it is the latest.
    fn release(&mut self, i: u32) {
        let Some(s) = self.slots.get_mut(i as usize) else {
            return;
        };
        s.uses = s.uses.saturating_sub(1);
        if s.uses == 0 && i != self.latest && self.index.remove(&s.key).is_some() {
            self.free.push(i);
        }
    }

    /// Each creator with an unremoved creation, once.
    fn in_use(&self) -> impl Iterator<Item = ProcessKey> + '_ {
        self.slots.iter().filter(|s| s.uses > 0).map(|s| s.key)
    }
}

impl Program {
    /// Appends a creation (sequence numbers come from one counter: increasing).
    #[inline]
    pub fn push(&mut self, time_ns: u64, seq: NonZeroU32, creator: ProcessKey) {
        let creator = self.creators.acquire(creator);
        self.window.push_back(Creation {
            time_ns,
            seq,
            creator,
        });
        self.unremoved += 1;
    }

    /// How many creations in the window are not removed yet.
    pub fn unremoved(&self) -> usize {
        self.unremoved
    }

    /// Whether the window holds no creation at all.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// Each creator of a creation not removed yet, once (in no particular order).
    pub fn unremoved_creators(&self) -> impl Iterator<Item = ProcessKey> + '_ {
        self.creators.in_use()
    }

    /// Marks creation `seq` removed; false when it is not in the window (any more).
    pub fn remove(&mut self, seq: NonZeroU32) -> bool {
        let Some(front) = self.window.front().map(|c| c.seq.get()) else {
            return false;
        };
        // Distances from the front increase along the window, whatever the counter wrapped.
        let at = seq.get().wrapping_sub(front);
        // Where it is when the program made every creation since the front (a program
        // creating alone, the common case): no search.
        let guess = usize::try_from(at).ok().filter(|&i| {
            self.window
                .get(i)
                .is_some_and(|c| c.seq.get().wrapping_sub(front) == at)
        });
        let Some(i) = guess.or_else(|| {
            self.window
                .binary_search_by_key(&at, |c| c.seq.get().wrapping_sub(front))
                .ok()
        }) else {
            return false;
        };
        match self.window.get_mut(i) {
            Some(c) if c.creator != REMOVED => {
                let creator = std::mem::replace(&mut c.creator, REMOVED);
                self.creators.release(creator);
                self.unremoved -= 1;
                true
            }
            _ => false,
        }
    }

    /// Drops the creations older than `window_ns` at `now`, and gives memory back when the
    /// window shrank to a quarter of its buffer (to twice its length: it must halve again, or
    /// double, before the next reallocation, so sliding back and forth does not thrash).
    #[inline]
    pub fn slide(&mut self, now: u64, window_ns: u64) {
        let before = self.window.len();
        while let Some(c) = self.window.front() {
            if c.time_ns.saturating_add(window_ns) >= now {
                break;
            }
            let creator = c.creator;
            self.window.pop_front();
            if creator != REMOVED {
                self.creators.release(creator);
                self.unremoved -= 1;
            }
        }
        let len = self.window.len();
        let capacity = self.window.capacity();
        if len < before && capacity > MIN_KEPT_CAPACITY && len < capacity / 4 {
            self.window.shrink_to((len * 2).max(MIN_KEPT_CAPACITY));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_key as key;

    fn seq(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn creators(p: &Program) -> Vec<u32> {
        let mut v: Vec<u32> = p.unremoved_creators().map(|k| k.pid).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn a_window_finds_its_creations_across_the_counter_s_wrap() {
        assert_eq!(std::mem::size_of::<Creation>(), 16);
        let mut p = Program::default();
        for (t, s, pid) in [(0, u32::MAX - 1, 1), (1, u32::MAX, 2), (2, 1, 3), (3, 2, 4)] {
            p.push(t, seq(s), key(pid));
        }
        assert_eq!(p.unremoved(), 4);
        assert!(p.remove(seq(1)));
        assert!(!p.remove(seq(1)), "once");
        assert!(!p.remove(seq(7)), "not in the window");
        assert!(p.remove(seq(u32::MAX)));
        assert_eq!(p.unremoved(), 2);
        assert_eq!(creators(&p), [1, 4]);
        // Times are 0, 1, 2, 3: at 2 with a window of 0, the two first slide.
        p.slide(2, 0);
        assert_eq!(p.unremoved(), 1);
        assert!(!p.remove(seq(u32::MAX - 1)), "slid out");
        assert_eq!(creators(&p), [4]);
        assert!(p.remove(seq(2)));
        assert_eq!(p.unremoved(), 0);
        assert!(creators(&p).is_empty());
    }

    #[test]
    fn the_window_s_edge_is_exact_to_the_nanosecond() {
        let mut p = Program::default();
        let t = 1_700_000_000_123_456_789;
        p.push(t, seq(1), key(1));
        p.push(t + 1, seq(2), key(1));
        p.slide(t + 60, 60);
        assert_eq!(p.unremoved(), 2, "exactly on the edge: kept");
        p.slide(t + 61, 60);
        assert_eq!(p.unremoved(), 1, "one ns past it: gone");
        p.slide(t + 62, 60);
        assert!(p.is_empty());
    }

    #[test]
    fn creators_share_slots_and_free_them_when_unused() {
        let mut p = Program::default();
        // 1 1 2 1 3: three distinct creators, three slots (1 found again through the index).
        for (s, pid) in [(1, 1), (2, 1), (3, 2), (4, 1), (5, 3)] {
            p.push(u64::from(s), seq(s), key(pid));
        }
        assert_eq!(p.creators.slots.len(), 3);
        assert_eq!(creators(&p), [1, 2, 3]);
        // 2's only creation removed: its slot is free, and 4 takes it.
        assert!(p.remove(seq(3)));
        assert_eq!(creators(&p), [1, 3]);
        p.push(6, seq(6), key(4));
        assert_eq!(p.creators.slots.len(), 3);
        assert_eq!(creators(&p), [1, 3, 4]);
        // 1's creations slide out or are removed: it is gone from the evidence.
        p.slide(4, 0);
        assert_eq!(creators(&p), [1, 3, 4]);
        assert!(p.remove(seq(4)));
        assert_eq!(creators(&p), [3, 4]);
        assert_eq!(p.unremoved(), 2);
        assert_eq!(p.creators.index.len(), 2, "3 and 4 indexed, 1 and 2 freed");
    }

    #[test]
    fn one_process_creating_and_removing_in_turn_keeps_one_slot() {
        let mut p = Program::default();
        for s in 1..=1000 {
            p.push(u64::from(s), seq(s), key(7));
            assert!(p.remove(seq(s)));
        }
        assert_eq!(p.creators.slots.len(), 1);
        assert!(p.creators.free.is_empty());
        assert_eq!(p.unremoved(), 0);
        assert!(
            creators(&p).is_empty(),
            "kept as the latest slot, not as evidence"
        );
        // Another process then creates: the idle slot is freed and reused.
        p.push(1001, seq(1001), key(8));
        assert_eq!(p.creators.slots.len(), 1);
        assert_eq!(creators(&p), [8]);
    }

    #[test]
    fn processes_alternating_do_not_grow_the_table() {
        let mut p = Program::default();
        for s in 1..=1000 {
            p.push(u64::from(s), seq(s), key(s % 3));
        }
        assert_eq!(p.creators.slots.len(), 3);
        assert_eq!(creators(&p), [0, 1, 2]);
        assert_eq!(p.unremoved(), 1000);
    }

    #[test]
    fn the_window_gives_memory_back_without_thrashing() {
        let mut p = Program::default();
        let n = 30_000;
        for s in 1..=n {
            p.push(u64::from(s), seq(s), key(1));
        }
        let full = p.window.capacity();
        assert!(full >= 30_000);
        // Down to just over a quarter: nothing given back yet.
        let over_a_quarter = u32::try_from(full / 4 + 1).unwrap();
        p.slide(u64::from(n - over_a_quarter + 1), 0);
        assert_eq!(p.window.len(), full / 4 + 1);
        assert_eq!(p.window.capacity(), full);
        // Below a quarter: the buffer halves at least.
        p.slide(u64::from(n - 1000 + 1), 0);
        assert_eq!(p.window.len(), 1000);
        let shrunk = p.window.capacity();
        assert!((2000..full / 2).contains(&shrunk), "{shrunk}");
        // Sliding one creation at a time while one comes in: no reallocation.
        for s in n + 1..n + 5000 {
            p.push(u64::from(s), seq(s), key(1));
            p.slide(u64::from(s - 999), 0);
            assert_eq!(p.window.len(), 1000);
            assert_eq!(p.window.capacity(), shrunk);
        }
        // Empty: back to the small buffer kept.
        p.slide(u64::MAX, 0);
        assert!(p.is_empty());
        assert!(p.window.capacity() <= MIN_KEPT_CAPACITY * 2);
    }
}
