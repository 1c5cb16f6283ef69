//! What the model knows about one process (keyed by pid + start time, so PID reuse never merges
//! two processes).

use std::sync::Arc;

use crate::event::{ProcessDetails, ProcessKey};

use super::related::Related;
use super::shm::VmaMap;

#[derive(Clone, Debug)]
pub(crate) struct Process {
    pub key: ProcessKey,
    /// Shared (with the stories that name the process): a story entry costs a reference count,
    /// not a copy of the names.
    pub comm: Arc<str>,
    pub uid: u32,
    pub parent: Option<ProcessKey>,
    /// The file of its last exec, if seen.
    pub exe: Option<Arc<str>>,
    pub alive: bool,
    /// `task->exit_code` (signal in the low 7 bits, or status << 8).
    pub exit_code: Option<u32>,
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
    /// Executable, command line, parent chain, unit, container (`Model::describe_process`).
    pub details: Option<Arc<ProcessDetails>>,
}

impl Process {
    pub fn new(key: ProcessKey, comm: &str, uid: u32, ns: u32) -> Self {
        Self {
            key,
            comm: comm.into(),
            uid,
            parent: None,
            exe: None,
            alive: true,
            exit_code: None,
            exit_ns: None,
            ns,
            vmas: VmaMap::new(),
            related: Related::default(),
            usage: Vec::new(),
            details: None,
        }
    }

    /// What `leaky-process` charges: the executable, or `comm` when no exec was seen.
    pub fn program(&self) -> &str {
        self.exe.as_deref().unwrap_or(&self.comm)
    }
}
