//! Shared memory mappings of one process, as the kernel's vmas: address ranges `[start, end)`
//! with their offset into the segment. The kernel's `shm_nattch` counts these vmas (not
//! attaches): a munmap in the middle of an attachment splits it into two vmas and raises
//! nattch by one; a fork copies every vma (nattch doubles); mremap moves, shrinks or grows them
//! and `MREMAP_DONTUNMAP` leaves the old range mapped. Verified on Linux 6.18 (see the model's
//! module documentation).
//!
//! Pure range arithmetic: the functions here report, per object, how the number of vmas
//! changed (`Delta`); the model turns that into nattch and destroy decisions.

use std::collections::VecDeque;
use std::ops::Range;

use super::object::ObjectKey;

/// `MREMAP_DONTUNMAP`: the old range stays mapped.
pub(crate) const MREMAP_DONTUNMAP: u32 = 4;

/// One vma mapping (part of) a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Vma {
    /// Exclusive end address.
    pub end: u64,
    pub object: ObjectKey,
    /// Byte offset into the segment of the vma's first byte.
    pub offset: u64,
    /// Which `shmat` made it (the kernel gives each attach its own `struct file`; fragments of
    /// one attach and their fork copies share it). `shmdt` only detaches fragments of the attach
    /// it finds first.
    pub attach: u64,
}

/// A process's vmas by start address (non-overlapping), as `(start, vma)` sorted by start.
///
/// A ring buffer rather than a B-tree: most processes hold one or two attachments, which cost
/// 48 bytes each here against a ~540-byte B-tree leaf, and many thousands cost 48 to 60 bytes
/// each against ~90. Lookups are binary searches; the usual changes happen at an end (mmap
/// places attachments top-down, so a new one is the lowest; the newest or the oldest goes
/// first), where a ring buffer inserts and removes in O(1); a change in the middle moves the
/// shorter side.
#[derive(Clone, Debug, Default)]
pub(crate) struct VmaMap(VecDeque<(u64, Vma)>);

impl VmaMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The vmas by ascending start.
    pub fn iter(&self) -> impl Iterator<Item = &(u64, Vma)> {
        self.0.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &Vma> {
        self.0.iter().map(|(_, v)| v)
    }

    /// Index of the first vma starting at or above `addr`.
    fn lower_bound(&self, addr: u64) -> usize {
        self.0.partition_point(|(s, _)| *s < addr)
    }

    /// Indexes of the vmas overlapping `[start, end)`.
    fn overlapping(&self, start: u64, end: u64) -> Range<usize> {
        let hi = self.lower_bound(end);
        let mut lo = hi;
        while lo > 0 && self.0[lo - 1].1.end > start {
            lo -= 1;
        }
        lo..hi
    }

    /// The vma starting at or below `addr` nearest to it.
    fn at_or_below(&self, addr: u64) -> Option<(u64, Vma)> {
        let i = self.0.partition_point(|(s, _)| *s <= addr);
        i.checked_sub(1).map(|i| self.0[i])
    }

    fn get(&self, start: u64) -> Option<&Vma> {
        let i = self.lower_bound(start);
        self.0.get(i).filter(|(s, _)| *s == start).map(|(_, v)| v)
    }

    /// Puts a vma at `start`, replacing the one starting there if any.
    pub fn insert(&mut self, start: u64, v: Vma) {
        let i = self.lower_bound(start);
        if let Some(e) = self.0.get_mut(i).filter(|(s, _)| *s == start) {
            e.1 = v;
            return;
        }
        self.insert_at(i, (start, v));
    }

    fn insert_at(&mut self, i: usize, e: (u64, Vma)) {
        let len = self.0.len();
        if len == self.0.capacity() {
            // Exact for the first few (one or two attachments are the rule), then by a quarter:
            // still amortized O(1), with at most a fifth of the buffer unused.
            self.0.reserve_exact((len / 4).max(1));
        }
        self.0.insert(i, e);
    }

    pub fn remove(&mut self, start: u64) -> Option<Vma> {
        let i = self.lower_bound(start);
        if self.0.get(i).is_none_or(|(s, _)| *s != start) {
            return None;
        }
        let v = self.0.remove(i).map(|(_, v)| v);
        self.fit();
        v
    }

    /// Replaces the vmas at `range` by `pieces` (in order).
    fn splice(&mut self, range: Range<usize>, pieces: &[(u64, Vma)]) {
        let kept = range.len().min(pieces.len());
        for (slot, piece) in (range.start..).zip(&pieces[..kept]) {
            self.0[slot] = *piece;
        }
        if range.len() > kept {
            self.0.drain(range.start + kept..range.end);
            self.fit();
        }
        for (at, piece) in (range.start + kept..).zip(&pieces[kept..]) {
            self.insert_at(at, *piece);
        }
    }

    /// Removes the vmas of `range` that `gone` picks (called in ascending order).
    fn remove_in(&mut self, range: Range<usize>, mut gone: impl FnMut(u64, &Vma) -> bool) {
        let mut kept = range.start;
        for i in range.clone() {
            let (s, v) = self.0[i];
            if !gone(s, &v) {
                self.0.swap(kept, i);
                kept += 1;
            }
        }
        self.0.drain(kept..range.end);
        self.fit();
    }

    /// Gives memory back when the buffer is less than a quarter used (all of it when empty),
    /// keeping twice the length: a process going back and forth around a size does not
    /// reallocate each time.
    fn fit(&mut self) {
        let (len, cap) = (self.0.len(), self.0.capacity());
        if len == 0 {
            self.0 = VecDeque::new();
        } else if cap > 8 && len < cap / 4 {
            self.0.shrink_to(len * 2);
        }
    }
}

/// Change of the vma count per object.
#[derive(Clone, Debug, Default)]
pub(crate) struct Delta(pub Vec<(ObjectKey, i64)>);

impl Delta {
    pub fn add(&mut self, object: ObjectKey, d: i64) {
        if let Some(e) = self.0.iter_mut().find(|(k, _)| *k == object) {
            e.1 += d;
        } else {
            self.0.push((object, d));
        }
    }

    pub fn first_object(&self) -> Option<ObjectKey> {
        self.0.first().map(|(k, _)| *k)
    }
}

/// Rounds up to a whole number of pages (saturating).
pub(crate) fn page_up(x: u64, page: u64) -> u64 {
    let page = page.max(1);
    x.div_ceil(page).saturating_mul(page)
}

/// Removes `[start, end)` from the map: whole vmas go, overlapping ones are clipped, a vma
/// around the range is split in two (munmap semantics).
pub(crate) fn unmap(map: &mut VmaMap, start: u64, end: u64, delta: &mut Delta) {
    if start >= end {
        return;
    }
    let hits = map.overlapping(start, end);
    if hits.is_empty() {
        return;
    }
    // Counted from the top down, so that the delta lists the objects in that order.
    for &(s, v) in map.0.range(hits.clone()).rev() {
        delta.add(v.object, -1);
        if s < start {
            delta.add(v.object, 1);
        }
        if v.end > end {
            delta.add(v.object, 1);
        }
    }
    // Only the lowest hit can begin below the range, only the highest end above it.
    let (low_start, low) = map.0[hits.start];
    let (high_start, high) = map.0[hits.end - 1];
    let left = (low_start < start).then_some((low_start, Vma { end: start, ..low }));
    let right = (high.end > end).then(|| {
        let offset = high.offset.saturating_add(end - high_start);
        (end, Vma { offset, ..high })
    });
    match (left, right) {
        (Some(l), Some(r)) => map.splice(hits, &[l, r]),
        (Some(piece), None) | (None, Some(piece)) => map.splice(hits, &[piece]),
        (None, None) => map.splice(hits, &[]),
    }
}

/// Inserts a vma at `start` into a free range. With `merge`, it joins an adjacent vma of the
/// same attach whose offsets continue (what the kernel does when mremap moves a fragment back
/// next to its neighbour): with the left one if possible, else with the right one (never both:
/// the kernel does not delete a vma that has a close operation to merge three).
pub(crate) fn insert(map: &mut VmaMap, start: u64, v: Vma, merge: bool, delta: &mut Delta) {
    if start >= v.end {
        return;
    }
    if merge {
        let below = map.lower_bound(start).checked_sub(1);
        if let Some((ls, l)) = below.and_then(|i| map.0.get_mut(i))
            && l.end == start
            && l.attach == v.attach
            && l.object == v.object
            && l.offset.checked_add(start - *ls) == Some(v.offset)
        {
            l.end = v.end;
            return;
        }
        if let Some(r) = map.get(v.end)
            && r.attach == v.attach
            && r.object == v.object
            && v.offset.checked_add(v.end - start) == Some(r.offset)
            && let Some(r) = map.remove(v.end)
        {
            map.insert(start, Vma { end: r.end, ..v });
            return;
        }
    }
    map.insert(start, v);
    delta.add(v.object, 1);
}

/// `shmdt(addr)`, as `ksys_shmdt` does it: the first vma at or above `addr` that maps its
/// segment as if attached at `addr` (`(start - addr) / PAGE == pgoff`) determines the attach
/// and the segment size; it goes, and so does every later vma of the same attach mapped
/// consistently within `addr + size`. Returns the segment, or None (EINVAL).
pub(crate) fn shmdt(
    map: &mut VmaMap,
    addr: u64,
    page: u64,
    seg_size: impl Fn(&Vma) -> Option<u64>,
    delta: &mut Delta,
) -> Option<ObjectKey> {
    let page = page.max(1);
    let matches = |s: u64, v: &Vma| (s - addr) / page == v.offset / page;
    let len = map.0.len();
    let first_at = (map.lower_bound(addr)..len).find(|&i| {
        let (s, v) = &map.0[i];
        matches(*s, v)
    })?;
    let (first_start, first) = map.0[first_at];
    // Unknown segment size: at least what this vma maps.
    let size =
        seg_size(&first).unwrap_or_else(|| first.offset.saturating_add(first.end - first_start));
    let limit = addr.saturating_add(page_up(size, page));
    let until = (first_at + 1..len)
        .find(|&i| map.0[i].1.end > limit)
        .unwrap_or(len);
    map.remove_in(first_at..until, |s, v| {
        let gone = s == first_start || (matches(s, v) && v.attach == first.attach);
        if gone {
            delta.add(v.object, -1);
        }
        gone
    });
    Some(first.object)
}

/// A successful `mremap(old_addr, old_len, new_len, flags) = result`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Remap {
    pub old_addr: u64,
    pub old_len: u64,
    pub new_len: u64,
    pub flags: u32,
    pub result: u64,
}

/// Applies a successful mremap: the pages of the old range move to the result (keeping their
/// offsets and attach), a shrink unmaps the tail, a grow extends the last vma, and the old range
/// is unmapped unless `MREMAP_DONTUNMAP` (which the kernel allows for shared mappings: the old
/// vma stays whole). A move may span several vmas (Linux 6.17+).
pub(crate) fn mremap(map: &mut VmaMap, r: Remap, page: u64, delta: &mut Delta) {
    let Remap {
        old_addr,
        old_len,
        new_len,
        flags,
        result,
    } = r;
    let old_len = page_up(old_len, page);
    let new_len = page_up(new_len, page);
    if new_len == 0 {
        return;
    }
    let new_end = result.saturating_add(new_len);
    if old_len == 0 {
        // old_len 0 on a shared mapping: a second mapping of the same pages; the old stays.
        let Some((s, v)) = map.at_or_below(old_addr) else {
            return;
        };
        if v.end <= old_addr {
            return;
        }
        let new = Vma {
            end: new_end,
            offset: v.offset.saturating_add(old_addr - s),
            ..v
        };
        unmap(map, result, new_end, delta);
        insert(map, result, new, true, delta);
        return;
    }
    if result == old_addr && new_len == old_len {
        return;
    }
    let old_end = old_addr.saturating_add(old_len);
    let kept_end = old_addr.saturating_add(old_len.min(new_len));
    let mut pieces: Vec<(u64, Vma)> = map
        .0
        .range(map.overlapping(old_addr, kept_end))
        .map(|(s, v)| {
            let ps = (*s).max(old_addr);
            let pe = v.end.min(kept_end);
            (
                ps,
                Vma {
                    end: pe,
                    offset: v.offset.saturating_add(ps - *s),
                    ..*v
                },
            )
        })
        .collect();
    if new_len > old_len
        && let Some((_, last)) = pieces.last_mut()
        && last.end == old_end
    {
        last.end = old_addr.saturating_add(new_len);
    }
    if flags & MREMAP_DONTUNMAP == 0 {
        unmap(map, old_addr, old_end, delta);
    }
    unmap(map, result, new_end, delta);
    for (ps, v) in pieces {
        let ns = result.saturating_add(ps - old_addr);
        let ne = ns.saturating_add(v.end - ps);
        insert(map, ns, Vma { end: ne, ..v }, true, delta);
    }
}

/// Removes every vma of the process (exit, exec).
pub(crate) fn clear(map: &mut VmaMap, delta: &mut Delta) {
    for v in map.values() {
        delta.add(v.object, -1);
    }
    *map = VmaMap::new();
}

/// Removes every vma of `object` (the object vanished).
pub(crate) fn remove_object(map: &mut VmaMap, object: ObjectKey, delta: &mut Delta) {
    map.remove_in(0..map.0.len(), |_, v| {
        let gone = v.object == object;
        if gone {
            delta.add(object, -1);
        }
        gone
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::IpcType;

    const PAGE: u64 = 4096;

    fn key(id: i32) -> ObjectKey {
        ObjectKey {
            ns: 1,
            ty: IpcType::Shm,
            id,
            generation: 0,
        }
    }

    /// `shmat` of a one-page segment at `addr`, as the model does it.
    fn attach(map: &mut VmaMap, addr: u64, attach: u64) {
        let v = Vma {
            end: addr + PAGE,
            object: key(0),
            offset: 0,
            attach,
        };
        let mut d = Delta::default();
        unmap(map, addr, v.end, &mut d);
        insert(map, addr, v, false, &mut d);
    }

    fn detach(map: &mut VmaMap, addr: u64) -> Option<ObjectKey> {
        shmdt(map, addr, PAGE, |_| Some(PAGE), &mut Delta::default())
    }

    fn starts(map: &VmaMap) -> Vec<u64> {
        map.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn unmap_splits_clips_and_counts_from_the_top() {
        let mut map = VmaMap::new();
        let (a, b) = (key(1), key(2));
        let mut d = Delta::default();
        let vma = |end, object, offset| Vma {
            end,
            object,
            offset,
            attach: 7,
        };
        insert(&mut map, 0, vma(4 * PAGE, a, 0), false, &mut d);
        insert(&mut map, 4 * PAGE, vma(6 * PAGE, b, 0), false, &mut d);
        let mut d = Delta::default();
        // The middle of `a`: split in two, the second keeping its offset into the segment.
        unmap(&mut map, PAGE, 2 * PAGE, &mut d);
        assert_eq!(starts(&map), [0, 2 * PAGE, 4 * PAGE]);
        assert_eq!(map.get(2 * PAGE), Some(&vma(4 * PAGE, a, 2 * PAGE)));
        assert_eq!(d.0, [(a, 1)]);
        // Across `a`'s tail and `b`'s head: both clipped, `b` (above) counted first.
        let mut d = Delta::default();
        unmap(&mut map, 3 * PAGE, 5 * PAGE, &mut d);
        assert_eq!(starts(&map), [0, 2 * PAGE, 5 * PAGE]);
        assert_eq!(map.get(2 * PAGE), Some(&vma(3 * PAGE, a, 2 * PAGE)));
        assert_eq!(map.get(5 * PAGE), Some(&vma(6 * PAGE, b, PAGE)));
        assert_eq!(d.0, [(b, 0), (a, 0)]);
        let mut d = Delta::default();
        unmap(&mut map, 0, 6 * PAGE, &mut d);
        assert!(map.is_empty());
        assert_eq!(d.0, [(b, -1), (a, -2)]);
    }

    #[test]
    fn memory_follows_the_number_of_vmas() {
        let mut map = VmaMap::new();
        let top = 1 << 40;
        attach(&mut map, top, 0);
        attach(&mut map, top - 2 * PAGE, 1);
        assert_eq!(map.0.capacity(), 2, "one or two attachments: no spare room");
        assert_eq!(detach(&mut map, top), Some(key(0)));
        assert_eq!(detach(&mut map, top - 2 * PAGE), Some(key(0)));
        assert_eq!(map.0.capacity(), 0, "nothing mapped: nothing allocated");
        // Top-down (mmap's order), then most of them gone in the other order.
        let n = 10_000;
        for i in 0..n {
            attach(&mut map, top - i * 2 * PAGE, i);
        }
        assert!(map.0.capacity() <= 10_000 * 5 / 4);
        let expect: Vec<u64> = (0..n).rev().map(|i| top - i * 2 * PAGE).collect();
        assert_eq!(starts(&map), expect);
        for i in 0..n - 10 {
            assert_eq!(detach(&mut map, top - i * 2 * PAGE), Some(key(0)));
        }
        assert_eq!(starts(&map), expect[..10]);
        assert!(map.0.capacity() <= 40, "{}", map.0.capacity());
    }
}
