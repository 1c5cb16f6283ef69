//! Shared memory mappings of one process, as the kernel's vmas: address ranges `[start, end)`
//! with their offset into the segment. The kernel's `shm_nattch` counts these vmas (not
//! attaches): a munmap in the middle of an attachment splits it into two vmas and raises
//! nattch by one; a fork copies every vma (nattch doubles); mremap moves, shrinks or grows them
//! and `MREMAP_DONTUNMAP` leaves the old range mapped. Verified on Linux 6.18 (see the model's
//! module documentation).
//!
//! Pure range arithmetic: the functions here report, per object, how the number of vmas
//! changed (`Delta`); the model turns that into nattch and destroy decisions.

use std::collections::BTreeMap;

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

/// A process's vmas by start address (non-overlapping).
pub(crate) type VmaMap = BTreeMap<u64, Vma>;

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
    let hits: Vec<u64> = map
        .range(..end)
        .rev()
        .take_while(|(_, v)| v.end > start)
        .map(|(s, _)| *s)
        .collect();
    for s in hits {
        let Some(v) = map.remove(&s) else { continue };
        delta.add(v.object, -1);
        if s < start {
            map.insert(s, Vma { end: start, ..v });
            delta.add(v.object, 1);
        }
        if v.end > end {
            let offset = v.offset.saturating_add(end - s);
            map.insert(
                end,
                Vma {
                    end: v.end,
                    offset,
                    ..v
                },
            );
            delta.add(v.object, 1);
        }
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
        if let Some((&ls, l)) = map.range(..start).next_back()
            && l.end == start
            && l.attach == v.attach
            && l.object == v.object
            && l.offset.checked_add(start - ls) == Some(v.offset)
            && let Some(l) = map.get_mut(&ls)
        {
            l.end = v.end;
            return;
        }
        if let Some(r) = map.get(&v.end)
            && r.attach == v.attach
            && r.object == v.object
            && v.offset.checked_add(v.end - start) == Some(r.offset)
            && let Some(r) = map.remove(&v.end)
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
    let (first_start, first) = map
        .range(addr..)
        .find(|(s, v)| matches(**s, v))
        .map(|(s, v)| (*s, *v))?;
    // Unknown segment size: at least what this vma maps.
    let size =
        seg_size(&first).unwrap_or_else(|| first.offset.saturating_add(first.end - first_start));
    let limit = addr.saturating_add(page_up(size, page));
    map.remove(&first_start);
    delta.add(first.object, -1);
    let rest: Vec<u64> = map
        .range(first_start.saturating_add(1)..)
        .take_while(|(_, v)| v.end <= limit)
        .filter(|(s, v)| matches(**s, v) && v.attach == first.attach)
        .map(|(s, _)| *s)
        .collect();
    for s in rest {
        if let Some(v) = map.remove(&s) {
            delta.add(v.object, -1);
        }
    }
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
        let Some((s, v)) = map.range(..=old_addr).next_back().map(|(s, v)| (*s, *v)) else {
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
        .range(..kept_end)
        .rev()
        .take_while(|(_, v)| v.end > old_addr)
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
    pieces.reverse();
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
    map.clear();
}

/// Removes every vma of `object` (the object vanished).
pub(crate) fn remove_object(map: &mut VmaMap, object: ObjectKey, delta: &mut Delta) {
    map.retain(|_, v| {
        if v.object == object {
            delta.add(object, -1);
            false
        } else {
            true
        }
    });
}
