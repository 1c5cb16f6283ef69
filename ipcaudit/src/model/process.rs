//! What the model knows about one process (keyed by pid + start time, so PID reuse never merges
//! two processes).

use std::sync::Arc;

use crate::event::{ProcessDetails, ProcessKey};

use super::related::Related;
use super::shm::VmaMap;

/// A process's names and how it ended: what a story remembers of a process it names (the
/// model may forget the process itself). Whether it is alive is not kept: the model only forgets
/// dead processes, so a story's character is read only for a dead one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Character {
    pub comm: Arc<str>,
    /// The file of its last exec, if seen.
    pub exe: Option<Arc<str>>,
    /// Executable, command line, parent chain, unit, container (`Model::describe_process`).
    pub details: Option<Arc<ProcessDetails>>,
    /// `task->exit_code` (signal in the low 7 bits, or status << 8).
    pub exit_code: Option<u32>,
}

impl Character {
    /// What `leaky-process` charges: the executable, or `comm` when no exec was seen.
    pub fn program(&self) -> &str {
        self.exe.as_deref().unwrap_or(&self.comm)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Process {
    pub key: ProcessKey,
    /// Shared with the stories that name the process (a story entry costs a reference count,
    /// not a copy of the names) and replaced copy-on-write when they change, so each story
    /// keeps the process as it was at its last entry there.
    names: Arc<Character>,
    pub uid: u32,
    pub parent: Option<ProcessKey>,
    pub alive: bool,
    pub exit_ns: Option<u64>,
    /// IPC namespace (inode) it was last seen in; 0 = unknown.
    pub ns: u32,
    /// Its System V shared memory mappings.
    pub vmas: VmaMap,
    /// Objects that refer to this process (creator, attacher, user, sender, reader, waiter):
    /// the ones to re-evaluate when it dies.
    pub related: Related,
    /// Its kernel usage slots' totals consumed so far (aggregation; `aggregate.rs`).
    pub usage: Vec<(super::aggregate::SlotId, super::aggregate::SlotCounts)>,
}

impl Process {
    pub fn new(key: ProcessKey, comm: &str, uid: u32, ns: u32) -> Self {
        Self {
            key,
            names: Arc::new(Character {
                comm: comm.into(),
                ..Character::default()
            }),
            uid,
            parent: None,
            alive: true,
            exit_ns: None,
            ns,
            vmas: VmaMap::new(),
            related: Related::default(),
            usage: Vec::new(),
        }
    }

    /// Its names, as the stories that name it share them.
    pub fn names(&self) -> &Arc<Character> {
        &self.names
    }

    /// Its names, to change (copied first if a story shares them).
    pub fn names_mut(&mut self) -> &mut Character {
        Arc::make_mut(&mut self.names)
    }

    pub fn comm(&self) -> &str {
        &self.names.comm
    }

    pub fn exe(&self) -> Option<&Arc<str>> {
        self.names.exe.as_ref()
    }

    pub fn details(&self) -> Option<&Arc<ProcessDetails>> {
        self.names.details.as_ref()
    }

    pub fn exit_code(&self) -> Option<u32> {
        self.names.exit_code
    }

    /// Takes what /proc says about it; its executable too, unless an exec named it.
    pub fn describe(&mut self, details: Arc<ProcessDetails>) {
        let n = self.names_mut();
        if n.exe.is_none() {
            n.exe = details.executable.as_deref().map(Arc::from);
        }
        n.details = Some(details);
    }
}
