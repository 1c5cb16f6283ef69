//! Read-only, serializable views of the model for `status --json`, `state` records and tests.

use serde::Serialize;

use crate::event::{CallSite, IpcType, ProcessKey};

use super::Model;
use super::object::{Body, Object, ObjectRef, ObjectStatus, Peer, Peers, SemAdj, SemSlot};
use super::process::Process;

/// A process as views name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessRef<'a> {
    pub pid: u32,
    pub entity: ProcessKey,
    /// `comm` ("" once the process is forgotten).
    pub name: &'a str,
    pub alive: bool,
}

/// A process's dealings with an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PeerView<'a> {
    #[serde(flatten)]
    pub process: ProcessRef<'a>,
    #[serde(flatten)]
    pub peer: Peer,
}

/// One mapped range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AttachmentView<'a> {
    pub process: ProcessRef<'a>,
    pub start: u64,
    pub end: u64,
    pub offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShmView<'a> {
    pub size: Option<u64>,
    /// `shm_nattch` as the model sees it (mapped ranges, plus any the kernel counted at the
    /// last reconcile that no known process maps).
    pub nattch: u64,
    /// Current mapped ranges, by process.
    pub attachments: Vec<AttachmentView<'a>>,
    /// Every process that attached (live ones and the most recent dead ones).
    pub attachers: Vec<PeerView<'a>>,
}

/// A process's adjustments of one semaphore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SemHoldingView<'a> {
    pub process: ProcessRef<'a>,
    pub semnum: u16,
    #[serde(flatten)]
    pub adj: SemAdj,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SemView<'a> {
    pub nsems: Option<u32>,
    pub values: &'a [SemSlot],
    /// Adjustments per process and semaphore (processes holding units first).
    pub adjustments: Vec<SemHoldingView<'a>>,
    pub users: Vec<PeerView<'a>>,
    pub waiters: Vec<ProcessRef<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MsgView<'a> {
    pub messages: u64,
    pub bytes: u64,
    /// The depth is a guess until the next reconcile.
    pub depth_uncertain: bool,
    pub senders: Vec<PeerView<'a>>,
    pub receivers: Vec<PeerView<'a>>,
    pub users: Vec<PeerView<'a>>,
    pub waiters: Vec<ProcessRef<'a>>,
}

/// One object with everything the model knows about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectView<'a> {
    #[serde(flatten)]
    pub object: ObjectRef,
    pub status: ObjectStatus,
    pub mode: Option<u32>,
    pub owner_uid: Option<u32>,
    pub creator: Option<ProcessRef<'a>>,
    /// The creator's pid (also when the process itself is unknown).
    pub creator_pid: Option<u32>,
    pub created_ns: Option<u64>,
    pub removed_ns: Option<u64>,
    pub destroyed_ns: Option<u64>,
    /// Where in the code it was created (the creator's user stack at the get).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_site: Option<&'a CallSite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm: Option<ShmView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sem: Option<SemView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<MsgView<'a>>,
}

/// One mapped range of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MappingView {
    pub object: ObjectRef,
    pub start: u64,
    pub end: u64,
    /// Offset into the segment.
    pub offset: u64,
}

/// One process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessView<'a> {
    pub entity: ProcessKey,
    pub pid: u32,
    pub comm: &'a str,
    pub uid: u32,
    pub parent: Option<ProcessKey>,
    pub exe: Option<&'a str>,
    pub alive: bool,
    pub exit_code: Option<u32>,
    pub exit_ns: Option<u64>,
    pub ipc_ns: u32,
    /// Its mapped ranges of segments.
    pub attachments: Vec<MappingView>,
}

impl Model {
    pub(super) fn pref(&self, key: ProcessKey) -> ProcessRef<'_> {
        let p = self.processes.get(&key);
        ProcessRef {
            pid: key.pid,
            entity: key,
            name: p.map_or("", Process::comm),
            alive: p.is_some_and(|p| p.alive),
        }
    }

    pub(super) fn peers_view(&self, peers: &Peers) -> Vec<PeerView<'_>> {
        peers
            .iter()
            .map(|(k, p)| PeerView {
                process: self.pref(*k),
                peer: *p,
            })
            .collect()
    }

    pub(crate) fn view<'a>(&'a self, o: &'a Object) -> ObjectView<'a> {
        let (mut shm, mut sem, mut msg) = (None, None, None);
        match o.body() {
            Body::Shm(s) => {
                let mut holders: Vec<ProcessKey> = s.attached.keys().copied().collect();
                holders.sort();
                let mut attachments = Vec::new();
                for k in holders {
                    let Some(p) = self.processes.get(&k) else {
                        continue;
                    };
                    for (start, v) in p.vmas.iter().filter(|(_, v)| v.object == o.key) {
                        attachments.push(AttachmentView {
                            process: self.pref(k),
                            start: *start,
                            end: v.end,
                            offset: v.offset,
                        });
                    }
                }
                shm = Some(ShmView {
                    size: s.size,
                    nattch: s.nattch(),
                    attachments,
                    attachers: self.peers_view(&s.attachers),
                });
            }
            Body::Sem(s) => {
                let mut adjustments: Vec<SemHoldingView<'_>> = s
                    .activity
                    .adjs
                    .iter()
                    .flat_map(|(k, m)| {
                        m.iter().map(|(n, a)| SemHoldingView {
                            process: self.pref(*k),
                            semnum: *n,
                            adj: *a,
                        })
                    })
                    .collect();
                adjustments.sort_by_key(|h| (h.adj.net >= 0, h.process.entity, h.semnum));
                sem = Some(SemView {
                    nsems: o.nsems(),
                    values: &s.slots,
                    adjustments,
                    users: self.peers_view(&s.activity.users),
                    waiters: s.rare.waiters.iter().map(|k| self.pref(*k)).collect(),
                });
            }
            Body::Msg(s) => {
                msg = Some(MsgView {
                    messages: s.messages,
                    bytes: s.bytes,
                    depth_uncertain: s.uncertain,
                    senders: self.peers_view(&s.peers.senders),
                    receivers: self.peers_view(&s.peers.receivers),
                    users: self.peers_view(&s.peers.users),
                    waiters: s
                        .rare
                        .recv_waiters
                        .iter()
                        .chain(s.rare.send_waiters.iter())
                        .map(|k| self.pref(*k))
                        .collect(),
                });
            }
        }
        ObjectView {
            object: o.object_ref(),
            status: o.status,
            mode: o.mode(),
            owner_uid: o.owner_uid(),
            creator: o.creator.key().map(|k| self.pref(k)),
            creator_pid: o.creator.pid(),
            created_ns: o.times.created(),
            removed_ns: o.times.removed(),
            destroyed_ns: o.times.destroyed(),
            call_site: o.story().create_site().map(std::sync::Arc::as_ref),
            shm,
            sem,
            msg,
        }
    }

    pub(crate) fn process_view<'a>(&'a self, p: &'a Process) -> ProcessView<'a> {
        let attachments = p
            .vmas
            .iter()
            .filter_map(|(s, v)| {
                let r = self.objects.get(&v.object)?.object_ref();
                Some(MappingView {
                    object: r,
                    start: *s,
                    end: v.end,
                    offset: v.offset,
                })
            })
            .collect();
        ProcessView {
            entity: p.key,
            pid: p.key.pid,
            comm: p.comm(),
            uid: p.uid,
            parent: p.parent,
            exe: p.exe().map(|e| &**e),
            alive: p.alive,
            exit_code: p.exit_code(),
            exit_ns: p.exit_ns,
            ipc_ns: p.ns,
            attachments,
        }
    }
}

impl ObjectView<'_> {
    pub fn ty(&self) -> IpcType {
        self.object.ty
    }

    /// `shm_nattch` (0 for other types).
    pub fn nattch(&self) -> u64 {
        self.shm.as_ref().map_or(0, |s| s.nattch)
    }
}
