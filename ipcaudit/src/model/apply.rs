//! Events: what each one does to the model and which `event.action` it gets.

use crate::event::{Action, Event, EventKind, IpcType, ProcessKey, SemOp, SysResult};
use crate::snapshot::SHM_LOCKED;

use super::object::{Object, ObjectKey, ObjectRef, ObjectStatus};
use super::process::Process;
use super::shm::{self, Delta, Remap, Vma};
use super::story::{Cause, What};
use super::{Applied, Cx, Model};

const IPC_CREAT: i32 = 0o1000;
const IPC_EXCL: i32 = 0o2000;
/// glibc ORs this into ctl commands.
const IPC_64: i32 = 0x100;
const IPC_RMID: i32 = 0;
const IPC_SET: i32 = 1;
const IPC_INFO: i32 = 3;
const SHM_LOCK: i32 = 11;
const SHM_UNLOCK: i32 = 12;
const SHM_STAT: i32 = 13;
const SHM_INFO: i32 = 14;
const SHM_STAT_ANY: i32 = 15;
const GETPID: i32 = 11;
const GETVAL: i32 = 12;
const GETNCNT: i32 = 14;
const GETZCNT: i32 = 15;
const SETVAL: i32 = 16;
const SETALL: i32 = 17;
const SEM_STAT: i32 = 18;
const SEM_INFO: i32 = 19;
const SEM_STAT_ANY: i32 = 20;
const MSG_STAT: i32 = 11;
const MSG_INFO: i32 = 12;
const MSG_STAT_ANY: i32 = 13;
const MSG_NOERROR: i32 = 0o10000;
const MSG_COPY: i32 = 0o40000;
/// `SEMVMX`.
const SEM_MAX: i64 = 32_767;

type Outcome = (Option<Action>, Option<ObjectRef>);

/// The calling process, as the handlers need it.
#[derive(Clone, Copy)]
struct Caller {
    key: ProcessKey,
    alive: bool,
    uid: u32,
    ns: u32,
}

/// A get's arguments.
#[derive(Clone, Copy)]
struct Get {
    ty: IpcType,
    key: i32,
    flags: i32,
    /// Size (shm) or nsems (sem) asked for.
    dim: Option<u64>,
}

impl Model {
    pub(crate) fn apply_event(&mut self, ev: &Event) -> Applied {
        self.now_ns = self.now_ns.max(ev.time_ns);
        let mut cx = Cx::new(ev.time_ns);
        let (action, object) = if let EventKind::Lost { count } = ev.kind {
            self.lost_events = self.lost_events.saturating_add(count);
            self.needs_reconcile = true;
            (Some(Action::EventsLost), None)
        } else {
            let t = &ev.task;
            let alive = self.ensure_process(t.process, &t.comm, t.uid, ev.ipc_ns, &mut cx);
            let c = Caller {
                key: t.process,
                alive,
                uid: t.uid,
                ns: ev.ipc_ns,
            };
            self.dispatch(ev, c, &mut cx)
        };
        Applied {
            action,
            object,
            derived: cx.derived,
            findings: cx.findings,
            posix: cx.posix,
        }
    }

    #[expect(clippy::too_many_lines, reason = "one short arm per event kind")]
    fn dispatch(&mut self, ev: &Event, c: Caller, cx: &mut Cx) -> Outcome {
        match &ev.kind {
            EventKind::ShmGet {
                key,
                size,
                flags,
                result,
            } => {
                let g = Get {
                    ty: IpcType::Shm,
                    key: *key,
                    flags: *flags,
                    dim: Some(*size),
                };
                self.on_get(c, g, *result, cx)
            }
            EventKind::SemGet {
                key,
                nsems,
                flags,
                result,
            } => {
                let dim = u64::try_from(*nsems).ok().filter(|n| *n > 0);
                let g = Get {
                    ty: IpcType::Sem,
                    key: *key,
                    flags: *flags,
                    dim,
                };
                self.on_get(c, g, *result, cx)
            }
            EventKind::MsgGet { key, flags, result } => {
                let g = Get {
                    ty: IpcType::Msg,
                    key: *key,
                    flags: *flags,
                    dim: None,
                };
                self.on_get(c, g, *result, cx)
            }
            EventKind::ShmAt { shmid, result, .. } => self.on_shmat(c, *shmid, *result, cx),
            EventKind::ShmDt { addr, result } => self.on_shmdt(c, *addr, *result, cx),
            EventKind::ShmCtl { shmid, cmd, result } => {
                self.on_ctl(c, IpcType::Shm, *shmid, *cmd, *result, (0, 0), cx)
            }
            EventKind::SemCtl {
                semid,
                semnum,
                cmd,
                arg,
                result,
            } => self.on_ctl(c, IpcType::Sem, *semid, *cmd, *result, (*semnum, *arg), cx),
            EventKind::MsgCtl { msqid, cmd, result } => {
                self.on_ctl(c, IpcType::Msg, *msqid, *cmd, *result, (0, 0), cx)
            }
            EventKind::SemOp {
                semid,
                ops,
                nsops,
                result,
                ..
            } => self.on_semop(c, *semid, ops, *nsops, *result, cx),
            EventKind::MsgSnd {
                msqid,
                size,
                result,
                ..
            } => self.on_msgsnd(c, *msqid, *size, *result, cx),
            EventKind::MsgRcv {
                msqid,
                max_size,
                flags,
                result,
                ..
            } => self.on_msgrcv(c, *msqid, *max_size, *flags, *result, cx),
            EventKind::Munmap { addr, len, result } => {
                if result.is_err() {
                    return (None, None);
                }
                self.on_munmap(c, *addr, *len, cx)
            }
            EventKind::Mremap {
                old_addr,
                old_len,
                new_len,
                flags,
                result,
            } => {
                let Ok(result) = *result else {
                    return (None, None);
                };
                let r = Remap {
                    old_addr: *old_addr,
                    old_len: *old_len,
                    new_len: *new_len,
                    flags: *flags,
                    result,
                };
                cx.cause = Cause::Mremap { addr: *old_addr };
                let touched =
                    self.with_vmas(c.key, cx, |map, page, d| shm::mremap(map, r, page, d));
                (None, touched.and_then(|k| self.object_ref(k)))
            }
            EventKind::Fork { child } => {
                self.on_fork(ev, *child, cx);
                (Some(Action::ProcessFork), None)
            }
            EventKind::Exec { filename, .. } => {
                self.on_exec(c, filename, cx);
                (Some(Action::ProcessExec), None)
            }
            EventKind::Exit { code } => {
                let now = cx.now;
                self.kill_process(c.key, now, Some(*code), cx);
                (Some(Action::ProcessExit), None)
            }
            EventKind::Lost { .. } => (Some(Action::EventsLost), None),
            EventKind::MqOpen { .. }
            | EventKind::MqUnlink { .. }
            | EventKind::MqSend { .. }
            | EventKind::MqReceive { .. }
            | EventKind::MqNotify { .. } => (Some(self.on_mq(ev, c.key, c.alive, cx)), None),
        }
    }

    fn on_munmap(&mut self, c: Caller, addr: u64, len: u64, cx: &mut Cx) -> Outcome {
        let end = addr.saturating_add(shm::page_up(len, self.page()));
        cx.cause = Cause::Munmap { addr };
        match self.with_vmas(c.key, cx, |map, _, d| shm::unmap(map, addr, end, d)) {
            Some(k) => (Some(Action::ShmDetach), self.object_ref(k)),
            None => (None, None),
        }
    }

    /// Exec: a new program (charged by `leaky-process` from now on); every attachment goes.
    fn on_exec(&mut self, c: Caller, filename: &str, cx: &mut Cx) {
        if let Some(p) = self.processes.get_mut(&c.key) {
            p.names_mut().exe = Some(filename.into());
        }
        cx.cause = Cause::Exec;
        self.with_vmas(c.key, cx, |map, _, d| shm::clear(map, d));
        let now = cx.now;
        self.posix_exec(c.key, now, cx);
    }

    pub(crate) fn object_ref(&self, k: ObjectKey) -> Option<ObjectRef> {
        self.objects.get(&k).map(Object::object_ref)
    }

    /// Runs a change of one process's mappings and applies its consequences. Returns the first
    /// object it touched.
    fn with_vmas(
        &mut self,
        pkey: ProcessKey,
        cx: &mut Cx,
        f: impl FnOnce(&mut shm::VmaMap, u64, &mut Delta),
    ) -> Option<ObjectKey> {
        let page = self.page();
        let p = self.processes.get_mut(&pkey)?;
        if p.vmas.is_empty() {
            return None;
        }
        let mut delta = Delta::default();
        f(&mut p.vmas, page, &mut delta);
        self.apply_delta(pkey, &delta, cx);
        delta.first_object()
    }

    // ----- get -----

    fn on_get(&mut self, c: Caller, g: Get, result: SysResult<i32>, cx: &mut Cx) -> Outcome {
        let (create, open) = match g.ty {
            IpcType::Shm => (Action::ShmCreate, Action::ShmOpen),
            IpcType::Sem => (Action::SemCreate, Action::SemOpen),
            IpcType::Msg => (Action::MsgCreate, Action::MsgOpen),
        };
        let creat = g.flags & IPC_CREAT != 0;
        // IPC_PRIVATE always creates (the kernel ignores IPC_CREAT for it).
        let Ok(id) = result else {
            return (Some(if creat || g.key == 0 { create } else { open }), None);
        };
        let existing = self.lookup(c.ns, g.ty, id).filter(|k| {
            self.objects
                .get(k)
                .is_some_and(|o| o.status == ObjectStatus::Live)
        });
        let is_create = g.key == 0 || (creat && (g.flags & IPC_EXCL != 0 || existing.is_none()));
        if is_create {
            let okey = self.new_object(c.ns, g.ty, id, cx);
            let names = self.processes.get(&c.key).map(|p| p.names().clone());
            let mut implied = false;
            if let Some(o) = self.objects.get_mut(&okey) {
                implied = o.set_created(c.key, cx.now, names);
                o.set_owner_uid(c.uid);
                o.set_mode(u32::try_from(g.flags & 0o777).ok());
                if let Some(s) = o.shm_mut() {
                    s.size = g.dim;
                } else if o.key.ty == IpcType::Sem {
                    o.set_nsems(g.dim.and_then(|n| u32::try_from(n).ok()));
                }
            }
            self.set_ipc_key(okey, g.key, cx);
            self.account(okey, true);
            self.relate(c.key, okey);
            if !implied {
                self.story_push(okey, cx.now, Some(c.key), What::Create);
                self.story_ops(okey, c.key, cx.now, |o| {
                    o.created = o.created.saturating_add(1);
                });
            }
            self.note_create(okey, c.key, cx);
            self.evaluate_limits(c.ns, g.ty, cx);
            let now = cx.now;
            self.evaluate_object(okey, now, cx);
            return (Some(create), self.object_ref(okey));
        }
        let okey = if let Some(k) = existing {
            k
        } else {
            let k = self.new_object(c.ns, g.ty, id, cx);
            self.account(k, true);
            self.evaluate_limits(c.ns, g.ty, cx);
            k
        };
        if self
            .objects
            .get(&okey)
            .is_some_and(|o| o.ipc_key().is_none())
        {
            self.set_ipc_key(okey, g.key, cx);
        }
        let now = cx.now;
        let mut first = false;
        self.story_ops(okey, c.key, now, |o| {
            o.opened = o.opened.saturating_add(1);
            first = o.opened == 1;
        });
        if first {
            self.story_push(okey, now, Some(c.key), What::Open);
        }
        if let Some(o) = self.objects.get_mut(&okey) {
            if let Some(s) = o.sem_mut() {
                s.activity.make().users.touch(c.key, c.alive, now, 0, 0);
            } else if let Some(s) = o.msg_mut() {
                s.peers.make().users.touch(c.key, c.alive, now, 0, 0);
            }
        }
        if g.ty != IpcType::Shm {
            self.relate(c.key, okey);
        }
        self.evaluate_object(okey, now, cx);
        (Some(open), self.object_ref(okey))
    }

    // ----- shm -----

    fn on_shmat(&mut self, c: Caller, shmid: i32, result: SysResult<u64>, cx: &mut Cx) -> Outcome {
        let Ok(addr) = result else {
            let found = self.lookup(c.ns, IpcType::Shm, shmid);
            if let Some(k) = found {
                self.story_ops(k, c.key, cx.now, |o| o.failed = o.failed.saturating_add(1));
            }
            return (
                Some(Action::ShmAttach),
                found.and_then(|k| self.object_ref(k)),
            );
        };
        let okey = self.lookup_or_create(c.ns, IpcType::Shm, shmid, cx);
        let page = self.page();
        let now = cx.now;
        let size = self
            .objects
            .get(&okey)
            .and_then(|o| o.shm())
            .and_then(|s| s.size);
        let len = shm::page_up(size.unwrap_or(page), page).max(page);
        if let Some(s) = self.objects.get_mut(&okey).and_then(|o| o.shm_mut()) {
            s.attachers.touch(c.key, c.alive, now, 1, 0);
        }
        self.relate(c.key, okey);
        if c.alive {
            let attach = self.next_attach;
            self.next_attach = self.next_attach.wrapping_add(1);
            if let Some(p) = self.processes.get_mut(&c.key) {
                let mut delta = Delta::default();
                let end = addr.saturating_add(len);
                // SHM_REMAP replaces what was mapped there.
                shm::unmap(&mut p.vmas, addr, end, &mut delta);
                let vma = Vma {
                    end,
                    object: okey,
                    offset: 0,
                    attach,
                };
                shm::insert(&mut p.vmas, addr, vma, false, &mut delta);
                cx.cause = Cause::Shmat { addr };
                self.apply_delta(c.key, &delta, cx);
            }
        }
        self.evaluate_object(okey, now, cx);
        (Some(Action::ShmAttach), self.object_ref(okey))
    }

    fn on_shmdt(&mut self, c: Caller, addr: u64, result: SysResult<()>, cx: &mut Cx) -> Outcome {
        if result.is_err() {
            return (Some(Action::ShmDetach), None);
        }
        let page = self.page();
        let Some(p) = self.processes.get_mut(&c.key) else {
            return (Some(Action::ShmDetach), None);
        };
        let objects = &self.objects;
        let mut delta = Delta::default();
        let found = shm::shmdt(
            &mut p.vmas,
            addr,
            page,
            |v| {
                objects
                    .get(&v.object)
                    .and_then(|o| o.shm())
                    .and_then(|s| s.size)
            },
            &mut delta,
        );
        let r = found.and_then(|k| self.object_ref(k));
        cx.cause = Cause::Shmdt { addr };
        self.apply_delta(c.key, &delta, cx);
        (Some(Action::ShmDetach), r)
    }

    // ----- ctl -----

    #[expect(
        clippy::too_many_arguments,
        reason = "one handler for the three ctl syscalls"
    )]
    fn on_ctl(
        &mut self,
        c: Caller,
        ty: IpcType,
        id: i32,
        cmd: i32,
        result: SysResult<i64>,
        (semnum, arg): (i32, u64),
        cx: &mut Cx,
    ) -> Outcome {
        let cmd = cmd & !IPC_64;
        let (remove, control) = match ty {
            IpcType::Shm => (Action::ShmRemove, Action::ShmControl),
            IpcType::Sem => (Action::SemRemove, Action::SemControl),
            IpcType::Msg => (Action::MsgRemove, Action::MsgControl),
        };
        if cmd == IPC_RMID {
            return if result.is_ok() {
                let okey = self.lookup_or_create(c.ns, ty, id, cx);
                let r = self.object_ref(okey);
                self.story_push(okey, cx.now, Some(c.key), What::Remove);
                self.story_ops(okey, c.key, cx.now, |o| {
                    o.controls = o.controls.saturating_add(1);
                });
                self.remove_object(okey, cx);
                (Some(remove), r)
            } else {
                let found = self.lookup(c.ns, ty, id);
                if let Some(k) = found {
                    self.story_ops(k, c.key, cx.now, |o| o.failed = o.failed.saturating_add(1));
                }
                (Some(remove), found.and_then(|k| self.object_ref(k)))
            };
        }
        let info = cmd == IPC_INFO
            || matches!(
                (ty, cmd),
                (IpcType::Shm, SHM_INFO) | (IpcType::Sem, SEM_INFO) | (IpcType::Msg, MSG_INFO)
            );
        if info {
            return (Some(control), None);
        }
        // Only commands that change the object are part of its story: read-only ones (IPC_STAT,
        // GETVAL, ..., ipcaudit's own snapshots among them) are not.
        let changes = cmd == IPC_SET
            || matches!(
                (ty, cmd),
                (IpcType::Shm, SHM_LOCK | SHM_UNLOCK) | (IpcType::Sem, SETVAL | SETALL)
            );
        let by_index = matches!(
            (ty, cmd),
            (IpcType::Shm, SHM_STAT | SHM_STAT_ANY)
                | (IpcType::Sem, SEM_STAT | SEM_STAT_ANY)
                | (IpcType::Msg, MSG_STAT | MSG_STAT_ANY)
        );
        let okey = match (result, by_index) {
            // *_STAT take an index and return the id.
            (Ok(v), true) => match i32::try_from(v) {
                Ok(id) => self.lookup_or_create(c.ns, ty, id, cx),
                Err(_) => return (Some(control), None),
            },
            (Err(_), true) => return (Some(control), None),
            (Ok(_), false) => self.lookup_or_create(c.ns, ty, id, cx),
            (Err(_), false) => {
                let found = self.lookup(c.ns, ty, id);
                if changes && let Some(k) = found {
                    self.story_ops(k, c.key, cx.now, |o| o.failed = o.failed.saturating_add(1));
                }
                return (Some(control), found.and_then(|k| self.object_ref(k)));
            }
        };
        if changes && result.is_ok() {
            self.story_ops(okey, c.key, cx.now, |o| {
                o.controls = o.controls.saturating_add(1);
            });
            let command = crate::names::ipc_command_name(ty, cmd)
                .map_or_else(|| cmd.to_string(), str::to_owned);
            let command = if ty == IpcType::Sem && cmd == SETVAL {
                let v = u32::try_from(arg & 0xffff_ffff).unwrap_or(0).cast_signed();
                format!("{command} #{semnum} = {v}")
            } else {
                command
            };
            self.story_push(okey, cx.now, Some(c.key), What::Control { command });
        }
        if let Ok(v) = result {
            self.ctl_effect(okey, ty, cmd, v, semnum, arg, cx);
        }
        (Some(control), self.object_ref(okey))
    }

    /// What a successful ctl command tells or changes.
    #[expect(clippy::too_many_arguments, reason = "the ctl arguments, as passed")]
    fn ctl_effect(
        &mut self,
        okey: ObjectKey,
        ty: IpcType,
        cmd: i32,
        result: i64,
        semnum: i32,
        arg: u64,
        cx: &mut Cx,
    ) {
        let Some(o) = self.objects.get_mut(&okey) else {
            return;
        };
        match ty {
            IpcType::Shm => match cmd {
                SHM_LOCK => o.update_mode(|m| m | SHM_LOCKED),
                SHM_UNLOCK => o.update_mode(|m| m & !SHM_LOCKED),
                _ => {}
            },
            IpcType::Sem => {
                let Some((s, nsems)) = o.sem_sized_mut() else {
                    return;
                };
                let num = u16::try_from(semnum).ok();
                let val = i32::try_from(result).ok();
                match (cmd, num) {
                    (GETVAL, Some(n)) => {
                        if let Some(slot) = s.slot_mut(n, nsems) {
                            slot.value = val;
                        }
                    }
                    (GETNCNT, Some(n)) => {
                        if let Some(slot) = s.slot_mut(n, nsems) {
                            slot.ncnt = u32::try_from(result).unwrap_or(0);
                        }
                    }
                    (GETZCNT, Some(n)) => {
                        if let Some(slot) = s.slot_mut(n, nsems) {
                            slot.zcnt = u32::try_from(result).unwrap_or(0);
                        }
                    }
                    (GETPID, Some(n)) => {
                        if let Some(slot) = s.slot_mut(n, nsems) {
                            slot.pid = u32::try_from(result).unwrap_or(0);
                        }
                    }
                    (SETVAL, Some(n)) => {
                        // union semun by value: the int in the low 32 bits.
                        let v = u32::try_from(arg & 0xffff_ffff).unwrap_or(0).cast_signed();
                        if let Some(slot) = s.slot_mut(n, nsems) {
                            slot.value = Some(v);
                        }
                        s.rare.make().reset_ns.insert(n, cx.now);
                        let adjs = s.activity.made().map(|a| &mut a.adjs);
                        for m in adjs.into_iter().flat_map(|m| m.values_mut()) {
                            if let Some(a) = m.get_mut(&n) {
                                a.net = 0;
                                a.undo = 0;
                            }
                        }
                        s.prune_dead();
                    }
                    (SETALL, _) => {
                        for slot in &mut s.slots {
                            slot.value = None;
                        }
                        s.rare.make().reset_all_ns = cx.now;
                        let adjs = s.activity.made().map(|a| &mut a.adjs);
                        for a in adjs
                            .into_iter()
                            .flat_map(|m| m.values_mut())
                            .flat_map(|m| m.values_mut())
                        {
                            a.net = 0;
                            a.undo = 0;
                        }
                        s.prune_dead();
                    }
                    _ => {}
                }
                let now = cx.now;
                self.evaluate_object(okey, now, cx);
            }
            IpcType::Msg => {}
        }
    }

    /// A successful `IPC_RMID`: semaphore sets and queues go at once; a segment goes when
    /// unattached, else it waits for its last attachment (its key turns private).
    fn remove_object(&mut self, okey: ObjectKey, cx: &mut Cx) {
        if okey.ty != IpcType::Shm {
            self.destroy_object(okey, cx, false);
            return;
        }
        let Some(o) = self.objects.get(&okey) else {
            return;
        };
        if o.status != ObjectStatus::Live {
            return;
        }
        let attached = o.shm().is_some_and(super::object::ShmState::attached_any);
        if !attached {
            self.destroy_object(okey, cx, true);
            return;
        }
        self.note_removed(okey, cx);
        self.unindex_key(okey);
        if let Some(o) = self.objects.get_mut(&okey) {
            o.status = ObjectStatus::RemovedPendingDestroy;
            o.times.set_removed(cx.now);
            o.update_mode(|m| m | crate::snapshot::SHM_DEST);
        }
        let now = cx.now;
        self.evaluate_object(okey, now, cx);
    }

    // ----- sem -----

    fn on_semop(
        &mut self,
        c: Caller,
        semid: i32,
        ops: &[SemOp],
        nsops: u32,
        result: SysResult<()>,
        cx: &mut Cx,
    ) -> Outcome {
        let now = cx.now;
        let okey = if result.is_ok() {
            self.lookup_or_create(c.ns, IpcType::Sem, semid, cx)
        } else {
            // A failed attempt still shows the process uses the set.
            let Some(k) = self.lookup(c.ns, IpcType::Sem, semid) else {
                return (Some(Action::SemOp), None);
            };
            k
        };
        self.story_ops(okey, c.key, now, |o| {
            if result.is_err() {
                o.failed = o.failed.saturating_add(1);
                return;
            }
            o.sem_ops = o.sem_ops.saturating_add(1);
            for op in ops {
                if op.op < 0 {
                    o.takes = o.takes.saturating_add(1);
                } else if op.op > 0 {
                    o.gives = o.gives.saturating_add(1);
                }
                let sum = if op.undo() {
                    &mut o.undo_net
                } else {
                    &mut o.net
                };
                *sum = sum.saturating_add(i64::from(op.op));
            }
        });
        let Some((s, nsems)) = self.objects.get_mut(&okey).and_then(Object::sem_sized_mut) else {
            return (Some(Action::SemOp), None);
        };
        s.activity
            .make()
            .users
            .touch(c.key, c.alive, now, u64::from(result.is_ok()), 0);
        if result.is_ok() {
            let was_waiter = s.rare.made().is_some_and(|r| r.waiters.remove(&c.key));
            let mut valid: Vec<SemOp> = Vec::with_capacity(ops.len());
            for op in ops {
                let Some(slot) = s.slot_mut(op.num, nsems) else {
                    continue;
                };
                if let Some(v) = slot.value {
                    let nv = i64::from(v) + i64::from(op.op);
                    slot.value = if (0..=SEM_MAX).contains(&nv) {
                        i32::try_from(nv).ok()
                    } else {
                        None
                    };
                }
                slot.pid = c.key.pid;
                if was_waiter {
                    if op.op < 0 {
                        slot.ncnt = slot.ncnt.saturating_sub(1);
                    } else if op.op == 0 {
                        slot.zcnt = slot.zcnt.saturating_sub(1);
                    }
                }
                valid.push(*op);
            }
            if !valid.is_empty() {
                let m = s.activity.make().adjs.entry(c.key).or_default();
                for op in valid {
                    let a = m.entry(op.num).or_default();
                    if op.undo() {
                        a.undo = a.undo.saturating_add(i64::from(op.op));
                    } else {
                        a.net = a.net.saturating_add(i64::from(op.op));
                    }
                    a.took |= op.op < 0;
                    a.gave |= op.op > 0;
                }
            }
            if usize::try_from(nsops).is_ok_and(|n| n > ops.len()) {
                // Operations the event does not carry: values unknown until reconcile.
                for slot in &mut s.slots {
                    slot.value = None;
                }
            }
        }
        self.relate(c.key, okey);
        self.evaluate_object(okey, now, cx);
        (Some(Action::SemOp), self.object_ref(okey))
    }

    // ----- msg -----

    fn on_msgsnd(
        &mut self,
        c: Caller,
        msqid: i32,
        size: u64,
        result: SysResult<()>,
        cx: &mut Cx,
    ) -> Outcome {
        if result.is_err() {
            let found = self.lookup(c.ns, IpcType::Msg, msqid);
            if let Some(k) = found {
                self.story_ops(k, c.key, cx.now, |o| o.failed = o.failed.saturating_add(1));
            }
            return (
                Some(Action::MsgSend),
                found.and_then(|k| self.object_ref(k)),
            );
        }
        let now = cx.now;
        let okey = self.lookup_or_create(c.ns, IpcType::Msg, msqid, cx);
        self.story_ops(okey, c.key, now, |o| {
            o.sent = o.sent.saturating_add(1);
            o.sent_bytes = o.sent_bytes.saturating_add(size);
        });
        if let Some(s) = self.objects.get_mut(&okey).and_then(|o| o.msg_mut()) {
            s.messages = s.messages.saturating_add(1);
            s.bytes = s.bytes.saturating_add(size);
            s.peers.make().senders.touch(c.key, c.alive, now, 1, size);
            s.not_waiting(true, &c.key);
        }
        self.relate(c.key, okey);
        self.evaluate_object(okey, now, cx);
        (Some(Action::MsgSend), self.object_ref(okey))
    }

    fn on_msgrcv(
        &mut self,
        c: Caller,
        msqid: i32,
        max_size: u64,
        flags: i32,
        result: SysResult<u64>,
        cx: &mut Cx,
    ) -> Outcome {
        let Ok(n) = result else {
            let found = self.lookup(c.ns, IpcType::Msg, msqid);
            if let Some(k) = found {
                self.story_ops(k, c.key, cx.now, |o| o.failed = o.failed.saturating_add(1));
            }
            return (
                Some(Action::MsgReceive),
                found.and_then(|k| self.object_ref(k)),
            );
        };
        let now = cx.now;
        let okey = self.lookup_or_create(c.ns, IpcType::Msg, msqid, cx);
        if flags & MSG_COPY == 0 {
            self.story_ops(okey, c.key, now, |o| {
                o.received = o.received.saturating_add(1);
                o.received_bytes = o.received_bytes.saturating_add(n);
            });
        }
        if let Some(s) = self.objects.get_mut(&okey).and_then(|o| o.msg_mut()) {
            // MSG_COPY (checkpoint/restore) copies without dequeuing.
            if flags & MSG_COPY == 0 {
                if s.messages == 0 {
                    s.uncertain = true;
                } else {
                    s.messages -= 1;
                }
                if s.bytes < n {
                    s.uncertain = true;
                    s.bytes = 0;
                } else {
                    s.bytes -= n;
                }
                if flags & MSG_NOERROR != 0 && n == max_size {
                    // Possibly truncated: the message may have been bigger.
                    s.uncertain = true;
                }
                s.peers.make().receivers.touch(c.key, c.alive, now, 1, n);
            }
            s.not_waiting(false, &c.key);
        }
        self.relate(c.key, okey);
        self.evaluate_object(okey, now, cx);
        (Some(Action::MsgReceive), self.object_ref(okey))
    }

    // ----- lifecycle -----

    fn on_fork(&mut self, ev: &Event, child: ProcessKey, cx: &mut Cx) {
        let parent = ev.task.process;
        if child == parent {
            return;
        }
        let (exe, pvmas) = match self.processes.get(&parent) {
            Some(p) => (p.exe().cloned(), p.vmas.clone()),
            None => (None, shm::VmaMap::new()),
        };
        if let Some(p) = self.processes.get_mut(&child) {
            p.parent.get_or_insert(parent);
            if p.exe().is_none() && exe.is_some() {
                p.names_mut().exe = exe;
            }
        } else {
            let mut p = Process::new(child, &ev.task.comm, ev.task.uid, ev.ipc_ns);
            p.parent = Some(parent);
            p.names_mut().exe = exe;
            self.add_process(p, cx);
        }
        // The child inherits every attachment (each vma is copied: nattch grows by as many).
        let now = cx.now;
        self.posix_fork(parent, child, now);
        let Some(p) = self.processes.get_mut(&child) else {
            return;
        };
        if pvmas.is_empty() || !p.alive || !p.vmas.is_empty() {
            return;
        }
        let mut delta = Delta::default();
        for v in pvmas.values() {
            delta.add(v.object, 1);
            p.related.insert(v.object);
        }
        p.vmas = pvmas;
        for &(okey, _) in &delta.0 {
            if let Some(s) = self.objects.get_mut(&okey).and_then(|o| o.shm_mut()) {
                s.attachers.touch(child, true, now, 0, 0);
            }
        }
        cx.cause = Cause::Fork;
        self.apply_delta(child, &delta, cx);
    }
}
