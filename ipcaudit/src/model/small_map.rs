//! [`SmallMap`]: the model's per-object maps keyed by process.

use crate::event::ProcessKey;

/// A map from process to `V` for an object's few processes (its story's cast and operations,
/// its peers): a boxed slice sorted by key, reallocated one element larger or smaller at each
/// insert or removal. A `BTreeMap` allocates a node for eleven entries however few it holds
/// (≈ 1.8 KB for a story's `ProcOps`), and most objects have one or two processes: this is
/// most of the collector's memory per object. (A boxed slice rather than a vector: it has no
/// capacity field, 8 bytes less in each of the several maps every object carries.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SmallMap<V>(Box<[(ProcessKey, V)]>);

impl<V> Default for SmallMap<V> {
    fn default() -> Self {
        Self(Box::default())
    }
}

impl<V> SmallMap<V> {
    fn find(&self, key: &ProcessKey) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }

    pub fn get(&self, key: &ProcessKey) -> Option<&V> {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, key: &ProcessKey) -> Option<&mut V> {
        self.find(key).ok().map(|i| &mut self.0[i].1)
    }

    #[cfg(test)]
    pub fn contains_key(&self, key: &ProcessKey) -> bool {
        self.find(key).is_ok()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Inserts `(key, value)` at `i`.
    fn insert_at(&mut self, i: usize, key: ProcessKey, value: V) {
        insert_exact(&mut self.0, i, (key, value));
    }

    /// Inserts or replaces.
    pub fn insert(&mut self, key: ProcessKey, value: V) {
        match self.find(&key) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.insert_at(i, key, value),
        }
    }

    /// The value of `key`, made with `make` when missing.
    pub fn get_or_insert_with(&mut self, key: ProcessKey, make: impl FnOnce() -> V) -> &mut V {
        let i = match self.find(&key) {
            Ok(i) => i,
            Err(i) => {
                self.insert_at(i, key, make());
                i
            }
        };
        &mut self.0[i].1
    }

    #[cfg(test)]
    pub fn clear(&mut self) {
        self.0 = Box::default();
    }

    pub fn remove(&mut self, key: &ProcessKey) -> Option<V> {
        let i = self.find(key).ok()?;
        Some(remove_exact(&mut self.0, i).1)
    }

    /// In key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ProcessKey, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&ProcessKey, &mut V)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &ProcessKey> {
        self.0.iter().map(|(k, _)| k)
    }
}

/// Inserts `value` at `index` of a boxed slice, which becomes exactly one element longer:
/// one allocation, no spare capacity (what the model keeps per object is mostly one to three
/// entries long, and a boxed slice has no capacity field to carry).
pub(crate) fn insert_exact<T>(slice: &mut Box<[T]>, index: usize, value: T) {
    let mut v = std::mem::take(slice).into_vec();
    v.reserve_exact(1);
    v.insert(index, value);
    *slice = v.into_boxed_slice();
}

/// Removes the element at `index` of a boxed slice, which shrinks to exactly the rest (freed
/// when none is left).
pub(crate) fn remove_exact<T>(slice: &mut Box<[T]>, index: usize) -> T {
    let mut v = std::mem::take(slice).into_vec();
    let value = v.remove(index);
    *slice = v.into_boxed_slice();
    value
}

/// Makes a boxed slice exactly `len` long: cut, or grown with copies of `value`.
pub(crate) fn resize_exact<T: Clone>(slice: &mut Box<[T]>, len: usize, value: T) {
    let mut v = std::mem::take(slice).into_vec();
    v.resize(len, value);
    *slice = v.into_boxed_slice();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: u32) -> ProcessKey {
        ProcessKey {
            pid,
            start_ticks: u64::from(pid) * 10,
        }
    }

    #[test]
    fn behaves_as_a_sorted_map() {
        let mut m = SmallMap::default();
        assert!(m.is_empty());
        for pid in [5, 1, 9, 3, 7] {
            m.insert(key(pid), pid * 100);
        }
        assert_eq!(m.len(), 5);
        assert_eq!(m.keys().map(|k| k.pid).collect::<Vec<_>>(), [1, 3, 5, 7, 9]);
        assert_eq!(m.get(&key(7)), Some(&700));
        assert!(m.get(&key(2)).is_none());
        m.insert(key(7), 1);
        assert_eq!(m.get(&key(7)), Some(&1), "insert replaces");
        *m.get_or_insert_with(key(2), || 0) += 5;
        *m.get_or_insert_with(key(2), || 0) += 5;
        assert_eq!(m.get(&key(2)), Some(&10));
        assert_eq!(m.remove(&key(1)), Some(100));
        assert_eq!(m.remove(&key(1)), None);
        assert!(!m.contains_key(&key(1)));
        for (_, v) in m.iter_mut() {
            *v += 1;
        }
        assert_eq!(
            m.iter().map(|(k, v)| (k.pid, *v)).collect::<Vec<_>>(),
            [(2, 11), (3, 301), (5, 501), (7, 2), (9, 901)]
        );
        m.clear();
        assert!(m.is_empty() && m.get(&key(2)).is_none());
    }

    #[test]
    fn is_two_words() {
        assert_eq!(std::mem::size_of::<SmallMap<[u8; 100]>>(), 16);
    }
}
