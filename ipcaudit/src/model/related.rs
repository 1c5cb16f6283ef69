//! [`Related`]: the objects that refer to one process.

use crate::event::IpcType;

use super::HashSet;
use super::object::ObjectKey;
use super::small_map::{insert_exact, remove_exact};

/// The objects that refer to a process (creator, attacher, user, sender, reader, waiter): the
/// ones to re-evaluate when it dies. Grouped by (namespace, type), of which a process has one
/// to three: a group's set holds (id, generation), 8 bytes an entry instead of a whole
/// object key's 16 (a process that created 30k objects held 1.1 MB of keys), and hashes two
/// words instead of four.
#[derive(Clone, Debug, Default)]
pub(crate) struct Related(Box<[Group]>);

#[derive(Clone, Debug)]
struct Group {
    ns: u32,
    ty: IpcType,
    /// Never empty: the last removal drops the group.
    objects: HashSet<(i32, u32)>,
}

impl Related {
    fn group(&self, ns: u32, ty: IpcType) -> Option<usize> {
        self.0.iter().position(|g| g.ns == ns && g.ty == ty)
    }

    /// Adds `key` (no-op when present).
    pub fn insert(&mut self, key: ObjectKey) {
        let i = self.group(key.ns, key.ty).unwrap_or_else(|| {
            let group = Group {
                ns: key.ns,
                ty: key.ty,
                objects: HashSet::default(),
            };
            let end = self.0.len();
            insert_exact(&mut self.0, end, group);
            end
        });
        self.0[i].objects.insert((key.id, key.generation));
    }

    /// Removes `key` (no-op when absent).
    pub fn remove(&mut self, key: &ObjectKey) {
        let Some(i) = self.group(key.ns, key.ty) else {
            return;
        };
        let objects = &mut self.0[i].objects;
        if objects.remove(&(key.id, key.generation)) && objects.is_empty() {
            remove_exact(&mut self.0, i);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = ObjectKey> + '_ {
        self.0.iter().flat_map(|g| {
            g.objects.iter().map(|&(id, generation)| ObjectKey {
                ns: g.ns,
                ty: g.ty,
                id,
                generation,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: u32, ty: IpcType, id: i32, generation: u32) -> ObjectKey {
        ObjectKey {
            ns,
            ty,
            id,
            generation,
        }
    }

    fn sorted(r: &Related) -> Vec<ObjectKey> {
        let mut v: Vec<ObjectKey> = r.iter().collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn behaves_as_a_set_of_keys() {
        let mut r = Related::default();
        assert!(r.is_empty());
        let keys = [
            key(1, IpcType::Shm, 5, 0),
            key(1, IpcType::Sem, 5, 1),
            key(2, IpcType::Shm, 5, 2),
            key(1, IpcType::Shm, 5, 3),
            key(1, IpcType::Shm, 6, 4),
        ];
        for k in keys {
            r.insert(k);
            r.insert(k);
        }
        let mut all = keys.to_vec();
        all.sort_unstable();
        assert_eq!(sorted(&r), all);
        assert_eq!(r.0.len(), 3, "one group per (namespace, type)");
        r.remove(&key(1, IpcType::Sem, 5, 0));
        r.remove(&key(3, IpcType::Msg, 5, 0));
        assert_eq!(sorted(&r), all, "absent keys are not removed");
        r.remove(&keys[1]);
        assert_eq!(r.0.len(), 2, "an emptied group goes");
        for k in keys {
            r.remove(&k);
        }
        assert!(r.is_empty() && sorted(&r).is_empty());
    }
}
