//! Bootstrap and reconcile: the model against a snapshot of one IPC namespace. The snapshot
//! wins: objects appear and vanish, mappings are replaced by /proc/PID/maps, semaphore values,
//! waiters and queue depths by what the kernel says; each correction is a [`Difference`].

use super::{HashMap, HashSet};
use std::collections::BTreeMap;

use serde::Serialize;

use crate::event::{IpcType, ProcessKey};
use crate::snapshot::{Blocked, ProcessInfo, SHM_DEST, Snapshot};

use super::object::{Body, Object, ObjectKey, ObjectRef, ObjectStatus, SemSlot};
use super::process::Process;
use super::shm::{Delta, Vma};
use super::{Cx, FindingChange, Model, NS_PER_SEC};

/// What a reconcile found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reconciled {
    pub differences: Vec<Difference>,
    /// Findings raised or cleared by the corrections (and grace periods that expired).
    pub findings: Vec<FindingChange>,
    /// The POSIX objects or their holders changed (not a correction: most of it is not traced).
    /// The snapshot must then be recorded for `replay` even without differences.
    pub posix_changed: bool,
}

/// A mapped range of a segment in a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MappedRange {
    pub start: u64,
    pub end: u64,
    /// Offset into the segment.
    pub offset: u64,
}

/// One way the model differed from the kernel (and was corrected).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Difference {
    /// The kernel has an object the model did not know.
    ObjectAppeared { object: ObjectRef },
    /// The model had an object the kernel does not (or the id now names another object).
    ObjectVanished {
        object: ObjectRef,
        model: ObjectStatus,
    },
    /// The kernel marks the segment removed (`SHM_DEST`), the model did not.
    Status {
        object: ObjectRef,
        model: ObjectStatus,
        kernel: ObjectStatus,
    },
    /// `shm_nattch`: the model's count of mapped ranges vs the kernel's.
    Nattch {
        object: ObjectRef,
        model: u64,
        kernel: u64,
    },
    /// A process's mapped ranges of a segment.
    Mappings {
        object: ObjectRef,
        process: ProcessKey,
        model: Vec<MappedRange>,
        kernel: Vec<MappedRange>,
    },
    SemValue {
        object: ObjectRef,
        semnum: u32,
        model: i32,
        kernel: i32,
    },
    QueueDepth {
        object: ObjectRef,
        model_messages: u64,
        model_bytes: u64,
        kernel_messages: u64,
        kernel_bytes: u64,
    },
    /// Permission bits (`IPC_SET` is not in the event stream).
    Mode {
        object: ObjectRef,
        model: u32,
        kernel: u32,
    },
    Owner {
        object: ObjectRef,
        model: u32,
        kernel: u32,
    },
    /// A process the model did not know.
    ProcessAppeared {
        process: ProcessKey,
        comm: String,
        alive: bool,
    },
    /// A process the model thought alive is a zombie.
    ProcessExited { process: ProcessKey },
    /// A process of the namespace the model thought alive is gone.
    ProcessVanished { process: ProcessKey },
    /// A process the model thought dead is alive.
    ProcessRevived { process: ProcessKey },
}

/// Where differences go (nowhere at bootstrap).
struct Diffs<'a>(Option<&'a mut Vec<Difference>>);

impl Diffs<'_> {
    fn push(&mut self, d: impl FnOnce() -> Difference) {
        if let Some(v) = self.0.as_deref_mut() {
            v.push(d());
        }
    }
}

type Pids<'s> = HashMap<u32, &'s ProcessInfo>;

fn secs_ns(secs: i64) -> u64 {
    u64::try_from(secs).unwrap_or(0).saturating_mul(NS_PER_SEC)
}

/// Since when an object from a snapshot has been unchanged: its latest activity time.
fn activity(times: &[i64], now: u64) -> u64 {
    let t = times.iter().copied().map(secs_ns).max().unwrap_or(0);
    if t == 0 || t > now { now } else { t }
}

impl Model {
    /// Returns whether the POSIX part changed.
    pub(crate) fn sync(
        &mut self,
        snap: &Snapshot,
        diffs: Option<&mut Vec<Difference>>,
        cx: &mut Cx,
    ) -> bool {
        let ns = snap.ipc_ns;
        let now = snap.taken_ns;
        self.now_ns = self.now_ns.max(now);
        cx.cause = super::story::Cause::Snapshot;
        let mut d = Diffs(diffs);
        self.namespaces.entry(ns).or_default().limits = Some(snap.limits);
        let before: HashMap<ObjectKey, u64> = self
            .ns_objects(ns)
            .filter_map(|k| {
                let o = self.objects.get(&k)?;
                o.shm().filter(|_| o.exists()).map(|s| (k, s.nattch()))
            })
            .collect();
        let pids: Pids<'_> = snap.processes.iter().map(|p| (p.key.pid, p)).collect();
        self.sync_processes(snap, &mut d, cx);
        // Objects whose id the kernel no longer lists: gone (reported before anything appears,
        // so that an appearing object never silently displaces one the model had).
        let listed: HashSet<(IpcType, i32)> = (snap.shm.iter().map(|x| (IpcType::Shm, x.perm.id)))
            .chain(snap.sem.iter().map(|x| (IpcType::Sem, x.perm.id)))
            .chain(snap.msg.iter().map(|x| (IpcType::Msg, x.perm.id)))
            .collect();
        let absent: Vec<ObjectKey> = self
            .ns_objects(ns)
            .filter(|k| !listed.contains(&(k.ty, k.id)))
            .filter(|k| self.objects.get(k).is_some_and(Object::exists))
            .collect();
        self.vanish(absent, &mut d, cx);
        let mut since: HashMap<ObjectKey, u64> = HashMap::default();
        let mut seen: HashSet<ObjectKey> = HashSet::default();
        self.sync_shm(snap, &pids, &mut d, &mut since, &mut seen, cx);
        self.sync_sem(snap, &mut d, &mut since, &mut seen, cx);
        self.sync_msg(snap, &pids, &mut d, &mut since, &mut seen, cx);
        let vanished: Vec<ObjectKey> = self
            .ns_objects(ns)
            .filter(|k| !seen.contains(k) && self.objects.get(k).is_some_and(Object::exists))
            .collect();
        self.vanish(vanished, &mut d, cx);
        self.sync_mappings(snap, &mut d, cx);
        self.sync_nattch(snap, &before, &mut d);
        self.sync_sem_values(snap, &pids, &mut d, &since);
        self.sync_waiters(snap, &pids);
        self.recount(ns);
        let keys: Vec<ObjectKey> = self.ns_objects(ns).collect();
        for k in keys {
            let s = since.get(&k).copied().unwrap_or(now);
            self.evaluate_object(k, s, cx);
        }
        for ty in IpcType::ALL {
            self.evaluate_limits(ns, ty, cx);
        }
        self.sync_posix(snap, cx)
    }

    /// Objects the kernel does not have: reported and destroyed.
    fn vanish(&mut self, keys: Vec<ObjectKey>, d: &mut Diffs<'_>, cx: &mut Cx) {
        for k in keys {
            if let Some(o) = self.objects.get(&k) {
                let (object, model) = (o.object_ref(), o.status);
                d.push(|| Difference::ObjectVanished { object, model });
            }
            self.destroy_object(k, cx, false);
        }
    }

    /// Keys of the objects of one namespace, in order.
    fn ns_objects(&self, ns: u32) -> impl Iterator<Item = ObjectKey> + '_ {
        let mut keys: Vec<ObjectKey> = self
            .objects
            .keys()
            .filter(|k| k.ns == ns)
            .copied()
            .collect();
        keys.sort_unstable();
        keys.into_iter()
    }

    fn sync_processes(&mut self, snap: &Snapshot, d: &mut Diffs<'_>, cx: &mut Cx) {
        let now = snap.taken_ns;
        let mut in_snap: HashSet<ProcessKey> = HashSet::default();
        for pi in &snap.processes {
            in_snap.insert(pi.key);
            let alive = pi.is_alive();
            if let Some(p) = self.processes.get_mut(&pi.key) {
                if !pi.comm.is_empty() && p.comm() != pi.comm {
                    p.names_mut().comm = pi.comm.as_str().into();
                }
                p.uid = pi.uid;
                if pi.ipc_ns != 0 {
                    p.ns = pi.ipc_ns;
                }
                if p.alive && !alive {
                    self.kill_process(pi.key, now, None, cx);
                    d.push(|| Difference::ProcessExited { process: pi.key });
                } else if !p.alive && alive {
                    self.revive_process(pi.key, cx);
                    d.push(|| Difference::ProcessRevived { process: pi.key });
                }
            } else {
                let mut p = Process::new(pi.key, &pi.comm, pi.uid, pi.ipc_ns);
                p.parent = self
                    .live_by_pid
                    .get(&pi.ppid)
                    .copied()
                    .filter(|_| pi.ppid != 0);
                p.alive = alive;
                if !alive {
                    p.exit_ns = Some(now);
                }
                self.add_process(p, cx);
                // A dead process the model does not know is one it forgot (dead processes
                // nothing refers to are swept) or never saw alive: it claimed nothing about it,
                // so there is nothing to correct (a zombie left unreaped would otherwise
                // "appear" again at every resync after each sweep).
                if alive {
                    d.push(|| Difference::ProcessAppeared {
                        process: pi.key,
                        comm: pi.comm.clone(),
                        alive,
                    });
                }
            }
        }
        let ns = snap.ipc_ns;
        let mut absent: Vec<ProcessKey> = self
            .processes
            .values()
            .filter(|p| p.alive && p.ns == ns && !in_snap.contains(&p.key))
            .map(|p| p.key)
            .collect();
        absent.sort();
        for k in absent {
            self.kill_process(k, now, None, cx);
            d.push(|| Difference::ProcessVanished { process: k });
        }
    }

    /// The snapshot's object `id` is the model's current one, or a new one (the model's is
    /// gone: reported and destroyed).
    fn match_object(
        &mut self,
        ns: u32,
        ty: IpcType,
        id: i32,
        same: impl Fn(&super::object::Object) -> bool,
        d: &mut Diffs<'_>,
        cx: &mut Cx,
    ) -> (ObjectKey, bool) {
        let cur = self.lookup(ns, ty, id);
        if let Some(k) = cur
            && self.objects.get(&k).is_some_and(same)
        {
            return (k, false);
        }
        if let Some(old) = cur {
            if let Some(o) = self.objects.get(&old) {
                let (object, model) = (o.object_ref(), o.status);
                d.push(|| Difference::ObjectVanished { object, model });
            }
            self.destroy_object(old, cx, false);
        }
        (self.new_object(ns, ty, id, cx), true)
    }

    /// Mode and owner from the snapshot (differences when the model knew other ones).
    fn sync_perm(&mut self, k: ObjectKey, mode: u32, uid: u32, d: &mut Diffs<'_>) {
        let Some(o) = self.objects.get_mut(&k) else {
            return;
        };
        let object = o.object_ref();
        if let Some(m) = o.mode()
            && m & 0o777 != mode & 0o777
        {
            d.push(|| Difference::Mode {
                object,
                model: m & 0o777,
                kernel: mode & 0o777,
            });
        }
        o.set_mode(Some(mode));
        if let Some(u) = o.owner_uid()
            && u != uid
        {
            d.push(|| Difference::Owner {
                object,
                model: u,
                kernel: uid,
            });
        }
        o.set_owner_uid(uid);
    }

    fn appeared(&mut self, k: ObjectKey, key: i32, d: &mut Diffs<'_>, cx: &mut Cx) {
        self.set_ipc_key(k, key, cx);
        self.story_push(k, cx.now, None, super::story::What::Appear);
        if let Some(object) = self.object_ref(k) {
            d.push(|| Difference::ObjectAppeared { object });
        }
    }

    fn sync_shm(
        &mut self,
        snap: &Snapshot,
        pids: &Pids<'_>,
        d: &mut Diffs<'_>,
        since: &mut HashMap<ObjectKey, u64>,
        seen: &mut HashSet<ObjectKey>,
        cx: &mut Cx,
    ) {
        let ns = snap.ipc_ns;
        let now = snap.taken_ns;
        for seg in &snap.shm {
            let removed = seg.perm.mode & SHM_DEST != 0;
            let same = |o: &super::object::Object| {
                // A segment is removed for good (no un-RMID), its size never changes, and its key
                // only changes to private at RMID.
                let size_ok = o
                    .shm()
                    .is_some_and(|s| s.size.is_none_or(|z| z == seg.size));
                let status_ok = removed || o.status != ObjectStatus::RemovedPendingDestroy;
                let key_ok = removed || o.ipc_key().is_none_or(|k| k == seg.perm.key);
                size_ok && status_ok && key_ok
            };
            let (k, new) = self.match_object(ns, IpcType::Shm, seg.perm.id, same, d, cx);
            seen.insert(k);
            if new {
                let creator = pids
                    .get(&seg.cpid)
                    .filter(|pi| self.started_before(pi.key, seg.ctime))
                    .map(|pi| pi.key);
                if let Some(o) = self.objects.get_mut(&k) {
                    o.creator =
                        super::object::Creator::new(creator, (seg.cpid != 0).then_some(seg.cpid));
                    if removed {
                        o.status = ObjectStatus::RemovedPendingDestroy;
                        o.times.set_removed(now);
                    }
                }
                if let Some(c) = creator {
                    self.relate(c, k);
                }
                since.insert(k, activity(&[seg.atime, seg.dtime, seg.ctime], now));
                if let Some(s) = self.objects.get_mut(&k).and_then(|o| o.shm_mut()) {
                    s.size = Some(seg.size);
                }
                self.sync_perm(k, seg.perm.mode, seg.perm.uid, d);
                self.appeared(k, seg.perm.key, d, cx);
                continue;
            }
            if let Some(s) = self.objects.get_mut(&k).and_then(|o| o.shm_mut()) {
                s.size = Some(seg.size);
            }
            let status = self.objects.get(&k).map(|o| o.status);
            if removed && status == Some(ObjectStatus::Live) {
                if let Some(object) = self.object_ref(k) {
                    d.push(|| Difference::Status {
                        object,
                        model: ObjectStatus::Live,
                        kernel: ObjectStatus::RemovedPendingDestroy,
                    });
                }
                self.note_removed(k, cx);
                self.unindex_key(k);
                if let Some(o) = self.objects.get_mut(&k) {
                    o.status = ObjectStatus::RemovedPendingDestroy;
                    o.times.set_removed(now);
                }
            }
            self.sync_perm(k, seg.perm.mode, seg.perm.uid, d);
            if self.objects.get(&k).is_some_and(|o| o.ipc_key().is_none()) {
                self.set_ipc_key(k, seg.perm.key, cx);
            }
        }
    }

    fn sync_sem(
        &mut self,
        snap: &Snapshot,
        d: &mut Diffs<'_>,
        since: &mut HashMap<ObjectKey, u64>,
        seen: &mut HashSet<ObjectKey>,
        cx: &mut Cx,
    ) {
        let ns = snap.ipc_ns;
        for set in &snap.sem {
            let same = |o: &super::object::Object| {
                o.sem().is_some()
                    && o.nsems().is_none_or(|n| n == set.nsems)
                    && o.ipc_key().is_none_or(|k| k == set.perm.key)
            };
            let (k, new) = self.match_object(ns, IpcType::Sem, set.perm.id, same, d, cx);
            seen.insert(k);
            if let Some(o) = self.objects.get_mut(&k)
                && o.key.ty == IpcType::Sem
            {
                o.set_nsems(Some(set.nsems));
                let n = usize::try_from(set.nsems).unwrap_or(usize::MAX);
                if let Some(Body::Sem(s)) = o.body_made()
                    && s.slots.len() > n
                {
                    super::small_map::resize_exact(&mut s.slots, n, SemSlot::default());
                }
            }
            self.sync_perm(k, set.perm.mode, set.perm.uid, d);
            if new {
                since.insert(k, activity(&[set.otime, set.ctime], snap.taken_ns));
                self.appeared(k, set.perm.key, d, cx);
            } else if self.objects.get(&k).is_some_and(|o| o.ipc_key().is_none()) {
                self.set_ipc_key(k, set.perm.key, cx);
            }
        }
    }

    fn sync_msg(
        &mut self,
        snap: &Snapshot,
        pids: &Pids<'_>,
        d: &mut Diffs<'_>,
        since: &mut HashMap<ObjectKey, u64>,
        seen: &mut HashSet<ObjectKey>,
        cx: &mut Cx,
    ) {
        let ns = snap.ipc_ns;
        for q in &snap.msg {
            let same = |o: &super::object::Object| {
                o.msg().is_some() && o.ipc_key().is_none_or(|k| k == q.perm.key)
            };
            let (k, new) = self.match_object(ns, IpcType::Msg, q.perm.id, same, d, cx);
            seen.insert(k);
            self.sync_perm(k, q.perm.mode, q.perm.uid, d);
            if new {
                since.insert(k, activity(&[q.stime, q.rtime, q.ctime], snap.taken_ns));
                // The last sender / receiver, when still the process that did it.
                let sender = pids
                    .get(&q.lspid)
                    .filter(|pi| self.started_before(pi.key, q.stime))
                    .map(|pi| (pi.key, pi.is_alive()));
                let receiver = pids
                    .get(&q.lrpid)
                    .filter(|pi| self.started_before(pi.key, q.rtime))
                    .map(|pi| (pi.key, pi.is_alive()));
                if let Some(s) = self.objects.get_mut(&k).and_then(|o| o.msg_mut()) {
                    match sender {
                        Some((pk, alive)) => {
                            s.peers
                                .make()
                                .senders
                                .touch(pk, alive, secs_ns(q.stime), 0, 0);
                        }
                        None => s.set_last_pid(true, q.lspid),
                    }
                    match receiver {
                        Some((pk, alive)) => {
                            s.peers
                                .make()
                                .receivers
                                .touch(pk, alive, secs_ns(q.rtime), 0, 0);
                        }
                        None => s.set_last_pid(false, q.lrpid),
                    }
                }
                for (pk, _) in sender.into_iter().chain(receiver) {
                    self.relate(pk, k);
                }
                self.appeared(k, q.perm.key, d, cx);
            } else if self.objects.get(&k).is_some_and(|o| o.ipc_key().is_none()) {
                self.set_ipc_key(k, q.perm.key, cx);
            }
            if let Some(o) = self.objects.get_mut(&k) {
                let object = o.object_ref();
                if let Some(s) = o.msg_mut() {
                    if (s.messages, s.bytes) != (q.qnum, q.cbytes) && !new {
                        let (model_messages, model_bytes) = (s.messages, s.bytes);
                        d.push(|| Difference::QueueDepth {
                            object,
                            model_messages,
                            model_bytes,
                            kernel_messages: q.qnum,
                            kernel_bytes: q.cbytes,
                        });
                    }
                    s.messages = q.qnum;
                    s.bytes = q.cbytes;
                    s.uncertain = false;
                }
            }
        }
    }

    /// Replaces the model's mapped ranges of this namespace's segments by /proc/PID/maps.
    fn sync_mappings(&mut self, snap: &Snapshot, d: &mut Diffs<'_>, cx: &mut Cx) {
        let ns = snap.ipc_ns;
        let mut kernel: BTreeMap<u32, Vec<(u64, Vma)>> = BTreeMap::new();
        for m in &snap.mappings {
            let Some(k) = self.lookup(ns, IpcType::Shm, m.shmid) else {
                continue;
            };
            if m.end <= m.start {
                continue;
            }
            let v = Vma {
                end: m.end,
                object: k,
                offset: m.offset,
                attach: 0,
            };
            kernel.entry(m.pid).or_default().push((m.start, v));
        }
        let now = snap.taken_ns;
        for pi in snap.processes.iter().filter(|p| p.is_alive()) {
            // (A snapshot with two live processes of one pid: the model keeps the later one.)
            if !self.is_alive(pi.key) {
                continue;
            }
            let mut want = kernel.remove(&pi.key.pid).unwrap_or_default();
            want.sort_by_key(|(s, _)| *s);
            want.dedup_by_key(|(s, _)| *s);
            let Some(p) = self.processes.get_mut(&pi.key) else {
                continue;
            };
            let have: Vec<(u64, Vma)> = p
                .vmas
                .iter()
                .filter(|(_, v)| v.object.ns == ns)
                .map(|(s, v)| (*s, *v))
                .collect();
            let strip = |l: &[(u64, Vma)]| -> Vec<(u64, u64, ObjectKey, u64)> {
                l.iter()
                    .map(|(s, v)| (*s, v.end, v.object, v.offset))
                    .collect()
            };
            if strip(&have) == strip(&want) {
                continue;
            }
            // Report per segment.
            let mut objs: Vec<ObjectKey> = have
                .iter()
                .chain(want.iter())
                .map(|(_, v)| v.object)
                .collect();
            objs.sort();
            objs.dedup();
            for ok in &objs {
                let ranges = |l: &[(u64, Vma)]| -> Vec<MappedRange> {
                    l.iter()
                        .filter(|(_, v)| v.object == *ok)
                        .map(|(s, v)| MappedRange {
                            start: *s,
                            end: v.end,
                            offset: v.offset,
                        })
                        .collect()
                };
                let (model, kern) = (ranges(&have), ranges(&want));
                if model != kern
                    && let Some(object) = self.objects.get(ok).map(Object::object_ref)
                {
                    d.push(|| Difference::Mappings {
                        object,
                        process: pi.key,
                        model,
                        kernel: kern,
                    });
                }
            }
            self.replace_mappings(pi.key, &have, want, now, cx);
        }
    }

    /// Replaces a process's mapped ranges of a namespace (`have`) by the kernel's (`want`).
    fn replace_mappings(
        &mut self,
        key: ProcessKey,
        have: &[(u64, Vma)],
        want: Vec<(u64, Vma)>,
        now: u64,
        cx: &mut Cx,
    ) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        // Keep the attach identity of ranges the model knew (same segment, same base).
        let mut attach_of: HashMap<(ObjectKey, u64), u64> = HashMap::default();
        for (s, v) in have {
            attach_of.insert((v.object, s.wrapping_sub(v.offset)), v.attach);
        }
        let mut delta = Delta::default();
        for (s, v) in have {
            p.vmas.remove(*s);
            delta.add(v.object, -1);
        }
        for (s, v) in want {
            let base = s.wrapping_sub(v.offset);
            let attach = *attach_of.entry((v.object, base)).or_insert_with(|| {
                let a = self.next_attach;
                self.next_attach = self.next_attach.wrapping_add(1);
                a
            });
            // Ranges the model has elsewhere (other namespaces) never overlap the kernel's.
            let mut d2 = Delta::default();
            super::shm::unmap(&mut p.vmas, s, v.end, &mut d2);
            for (k, n) in d2.0 {
                delta.add(k, n);
            }
            p.vmas.insert(s, Vma { attach, ..v });
            p.related.insert(v.object);
            delta.add(v.object, 1);
        }
        for &(ok, _) in &delta.0 {
            if let Some(s) = self.objects.get_mut(&ok).and_then(|o| o.shm_mut())
                && p.vmas.values().any(|v| v.object == ok)
            {
                s.attachers.touch(key, true, now, 0, 0);
            }
        }
        self.apply_delta(key, &delta, cx);
    }

    /// nattch: the kernel's count, whatever the mapped ranges explain.
    fn sync_nattch(
        &mut self,
        snap: &Snapshot,
        before: &HashMap<ObjectKey, u64>,
        d: &mut Diffs<'_>,
    ) {
        for seg in &snap.shm {
            let Some(k) = self.lookup(snap.ipc_ns, IpcType::Shm, seg.perm.id) else {
                continue;
            };
            let Some(o) = self.objects.get_mut(&k) else {
                continue;
            };
            let object = o.object_ref();
            let Some(s) = o.shm_mut() else { continue };
            if let Some(&model) = before.get(&k)
                && model != seg.nattch
            {
                d.push(|| Difference::Nattch {
                    object,
                    model,
                    kernel: seg.nattch,
                });
            }
            let vmas = i64::try_from(s.vmas).unwrap_or(i64::MAX);
            s.external = i64::try_from(seg.nattch)
                .unwrap_or(i64::MAX)
                .saturating_sub(vmas);
        }
    }

    fn sync_sem_values(
        &mut self,
        snap: &Snapshot,
        pids: &Pids<'_>,
        d: &mut Diffs<'_>,
        since: &HashMap<ObjectKey, u64>,
    ) {
        let ns = snap.ipc_ns;
        let otimes: HashMap<i32, i64> = snap.sem.iter().map(|s| (s.perm.id, s.otime)).collect();
        for (semid, vals) in &snap.sem_values {
            let Some(k) = self.lookup(ns, IpcType::Sem, *semid) else {
                continue;
            };
            let appeared = since.contains_key(&k);
            let otime = otimes.get(semid).copied().unwrap_or(0);
            let mut users: Vec<(ProcessKey, bool)> = Vec::new();
            let Some(o) = self.objects.get_mut(&k) else {
                continue;
            };
            let object = o.object_ref();
            if o.nsems().is_none() && o.key.ty == IpcType::Sem {
                o.set_nsems(u32::try_from(vals.len()).ok());
            }
            let Some((s, nsems)) = o.sem_sized_mut() else {
                continue;
            };
            for (i, v) in vals.iter().enumerate() {
                let Ok(num) = u16::try_from(i) else { break };
                let Some(slot) = s.slot_mut(num, nsems) else {
                    break;
                };
                if let Some(m) = slot.value
                    && m != v.value
                {
                    d.push(|| Difference::SemValue {
                        object,
                        semnum: u32::from(num),
                        model: m,
                        kernel: v.value,
                    });
                }
                slot.value = Some(v.value);
                slot.ncnt = v.ncnt;
                slot.zcnt = v.zcnt;
                slot.pid = v.pid;
                // Who operated last, for sets that predate the model.
                if appeared
                    && v.pid != 0
                    && let Some(pi) = pids.get(&v.pid)
                    && users.iter().all(|(u, _)| *u != pi.key)
                {
                    users.push((pi.key, pi.is_alive()));
                }
            }
            let mut related = Vec::new();
            for (pk, alive) in users {
                if self.started_before(pk, otime)
                    && let Some(s) = self.objects.get_mut(&k).and_then(|o| o.sem_mut())
                {
                    s.activity
                        .make()
                        .users
                        .touch(pk, alive, secs_ns(otime), 0, 0);
                    related.push(pk);
                }
            }
            for pk in related {
                self.relate(pk, k);
            }
        }
    }

    /// Blocked tasks: replaces the waiters of this namespace's sets and queues.
    fn sync_waiters(&mut self, snap: &Snapshot, pids: &Pids<'_>) {
        let ns = snap.ipc_ns;
        let keys: Vec<ObjectKey> = self.ns_objects(ns).collect();
        for k in &keys {
            match self.objects.get_mut(k).and_then(Object::body_made) {
                Some(Body::Sem(s)) => {
                    if let Some(r) = s.rare.made() {
                        r.waiters.clear();
                    }
                }
                Some(Body::Msg(s)) => {
                    if let Some(r) = s.rare.made() {
                        r.recv_waiters.clear();
                        r.send_waiters.clear();
                    }
                }
                _ => {}
            }
        }
        for w in &snap.waiters {
            let Some(pk) = pids.get(&w.pid).map(|pi| pi.key) else {
                continue;
            };
            let (ty, id) = match w.on {
                Blocked::Sem { semid } => (IpcType::Sem, semid),
                Blocked::MsgRcv { msqid } | Blocked::MsgSnd { msqid } => (IpcType::Msg, msqid),
            };
            let Some(k) = self.lookup(ns, ty, id) else {
                continue;
            };
            match (self.objects.get_mut(&k).map(Object::body_mut), w.on) {
                (Some(Body::Sem(s)), _) => {
                    s.rare.make().waiters.insert(pk);
                }
                (Some(Body::Msg(s)), Blocked::MsgRcv { .. }) => {
                    s.rare.make().recv_waiters.insert(pk);
                }
                (Some(Body::Msg(s)), _) => {
                    s.rare.make().send_waiters.insert(pk);
                }
                _ => continue,
            }
            self.relate(pk, k);
        }
    }

    /// Recomputes a namespace's usage from its objects.
    fn recount(&mut self, ns: u32) {
        if let Some(n) = self.namespaces.get_mut(&ns) {
            n.shm_count = 0;
            n.shm_pages = 0;
            n.sem_sets = 0;
            n.sem_total = 0;
            n.msg_count = 0;
        }
        let keys: Vec<ObjectKey> = self
            .ns_objects(ns)
            .filter(|k| self.objects.get(k).is_some_and(Object::exists))
            .collect();
        for k in keys {
            self.account(k, true);
        }
    }
}
