//! The objects the model holds, hashed by (namespace, type, id) only: every generation of an id
//! lands on one hash, so the same table answers "this object" (full key) and "the latest object
//! with this id" (the newest of the few generations still remembered), with 8-byte entries (a
//! box) and no second index (a map by key plus one by id cost 24 + 16 bytes per object).

use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::event::IpcType;

use super::object::{Object, ObjectKey};

/// See the module documentation. It hands out the generations, so it knows which is newest even
/// once the counter wraps.
#[derive(Debug, Default)]
pub(crate) struct ObjectTable {
    table: HashTable<Box<Object>>,
    /// foldhash, seeded per process, as the model's other maps.
    state: foldhash::fast::RandomState,
    /// The generation of the next object created (unique within the model).
    next_generation: u32,
}

/// The hash of an object key without its generation.
fn id_hash(state: &foldhash::fast::RandomState, key: &ObjectKey) -> u64 {
    state.hash_one((key.ns, key.ty, key.id))
}

impl ObjectTable {
    /// The hash of every generation of (ns, ty, id).
    fn hash(&self, ns: u32, ty: IpcType, id: i32) -> u64 {
        id_hash(
            &self.state,
            &ObjectKey {
                ns,
                ty,
                id,
                generation: 0,
            },
        )
    }

    fn hash_key(&self, key: &ObjectKey) -> u64 {
        self.hash(key.ns, key.ty, key.id)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Object> {
        self.table
            .find(self.hash_key(key), |o| o.key == *key)
            .map(Box::as_ref)
    }

    pub fn get_mut(&mut self, key: &ObjectKey) -> Option<&mut Object> {
        self.table
            .find_mut(self.hash_key(key), |o| o.key == *key)
            .map(Box::as_mut)
    }

    /// The latest object with this id (destroyed or not): the newest generation among those
    /// remembered, newest counted back from the next generation (so a wrapped counter does
    /// not make an old object look new).
    pub fn latest(&self, ns: u32, ty: IpcType, id: i32) -> Option<&Object> {
        let next = self.next_generation;
        self.table
            .iter_hash(self.hash(ns, ty, id))
            .filter(|o| o.key.ns == ns && o.key.ty == ty && o.key.id == id)
            .min_by_key(|o| next.wrapping_sub(o.key.generation))
            .map(Box::as_ref)
    }

    /// A new object (new generation, unknown fields) for `id`; returns its key.
    pub fn create(&mut self, ns: u32, ty: IpcType, id: i32) -> ObjectKey {
        let key = ObjectKey {
            ns,
            ty,
            id,
            generation: self.next_generation,
        };
        self.next_generation = self.next_generation.wrapping_add(1);
        let state = &self.state;
        let object = Box::new(Object::new(key));
        match self.table.entry(
            id_hash(state, &key),
            |o| o.key == key,
            |o| id_hash(state, &o.key),
        ) {
            // A generation still remembered after the counter wrapped: the old object goes.
            Entry::Occupied(mut e) => *e.get_mut() = object,
            Entry::Vacant(e) => {
                e.insert(object);
            }
        }
        key
    }

    pub fn remove(&mut self, key: &ObjectKey) -> Option<Box<Object>> {
        let hash = self.hash_key(key);
        self.table
            .find_entry(hash, |o| o.key == *key)
            .ok()
            .map(|e| e.remove().0)
    }

    /// Every object's key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.table.iter().map(|o| &o.key)
    }

    /// Every object, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Object> {
        self.table.iter().map(Box::as_ref)
    }
}
