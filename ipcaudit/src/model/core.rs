//! State changes shared by events and snapshots: processes living and dying, objects appearing
//! and going, attachment counts, bookkeeping for the rules, forgetting.

use super::HashSet;

use crate::event::{Action, IpcType, ProcessKey};

use super::object::{Body, Object, ObjectKey, ObjectStatus};
use super::process::Process;
use super::rules::{Rule, Subject};
use super::shm::{self, Delta};
use super::{Cx, Model, NS_PER_SEC};

impl Model {
    pub(crate) fn page(&self) -> u64 {
        if self.cfg.page_size == 0 {
            4096
        } else {
            self.cfg.page_size
        }
    }

    /// Wall-clock start of a process, ns since the epoch.
    pub(crate) fn start_ns(&self, start_ticks: u64) -> u64 {
        let hz = u128::from(self.cfg.ticks_per_sec.max(1));
        let since_boot = u128::from(start_ticks) * u128::from(NS_PER_SEC) / hz;
        u64::try_from(since_boot)
            .unwrap_or(u64::MAX)
            .saturating_add(self.cfg.boot_time_ns)
    }

    /// Whether process `key` had started by `wall_secs` (a `ctime`-like field, whole seconds;
    /// one second of slack for truncation and boot time rounding).
    pub(crate) fn started_before(&self, key: ProcessKey, wall_secs: i64) -> bool {
        let Ok(secs) = u64::try_from(wall_secs) else {
            return false;
        };
        self.start_ns(key.start_ticks) <= secs.saturating_add(2).saturating_mul(NS_PER_SEC)
    }

    // ----- processes -----

    /// The process an event came from: created (alive) when unknown. Returns whether it is
    /// alive (an event that arrives after its process's exit finds it dead).
    pub(crate) fn ensure_process(
        &mut self,
        key: ProcessKey,
        comm: &str,
        uid: u32,
        ns: u32,
        cx: &mut Cx,
    ) -> bool {
        if let Some(p) = self.processes.get_mut(&key) {
            if p.comm() != comm && !comm.is_empty() {
                p.names_mut().comm = comm.into();
            }
            p.uid = uid;
            if ns != 0 {
                p.ns = ns;
            }
            return p.alive;
        }
        self.add_process(Process::new(key, comm, uid, ns), cx);
        true
    }

    /// Adds a process; a live process with the same pid is gone (PID reuse).
    pub(crate) fn add_process(&mut self, mut p: Process, cx: &mut Cx) {
        let key = p.key;
        let alive = p.alive;
        if let Some(d) = self.pending_details.remove(&key) {
            p.describe(d);
        }
        self.processes.insert(key, p);
        if alive {
            self.claim_pid(key, cx);
        }
    }

    /// Makes `key` the live process of its pid; a different live one with that pid is dead.
    pub(crate) fn claim_pid(&mut self, key: ProcessKey, cx: &mut Cx) {
        if let Some(old) = self.live_by_pid.insert(key.pid, key)
            && old != key
        {
            let now = cx.now;
            self.kill_process(old, now, None, cx);
            self.live_by_pid.insert(key.pid, key);
        }
    }

    /// A process ended (exit event, zombie or absent in a snapshot): drops its mappings
    /// (destroying removed segments it was the last to hold), gives back its `SEM_UNDO`
    /// adjustments and re-evaluates everything it related to.
    pub(crate) fn kill_process(
        &mut self,
        key: ProcessKey,
        now: u64,
        code: Option<u32>,
        cx: &mut Cx,
    ) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        if !p.alive {
            if p.exit_code().is_none() && code.is_some() {
                p.names_mut().exit_code = code;
            }
            return;
        }
        p.alive = false;
        if p.exit_code() != code {
            p.names_mut().exit_code = code;
        }
        p.exit_ns = Some(now);
        let mut delta = Delta::default();
        shm::clear(&mut p.vmas, &mut delta);
        let related: Vec<ObjectKey> = p.related.iter().collect();
        if self.live_by_pid.get(&key.pid) == Some(&key) {
            self.live_by_pid.remove(&key.pid);
        }
        let cause = std::mem::replace(&mut cx.cause, super::story::Cause::Exit { code });
        self.apply_delta(key, &delta, cx);
        cx.cause = cause;
        for okey in related {
            if let Some(o) = self.objects.get_mut(&okey) {
                o.process_died(key);
                self.evaluate_object(okey, now, cx);
            }
        }
        self.posix_process_died(key, now, cx);
    }

    /// A process thought dead is alive after all (a snapshot says so).
    pub(crate) fn revive_process(&mut self, key: ProcessKey, cx: &mut Cx) {
        let Some(p) = self.processes.get_mut(&key) else {
            return;
        };
        if p.alive {
            return;
        }
        p.alive = true;
        if p.exit_code().is_some() {
            p.names_mut().exit_code = None;
        }
        p.exit_ns = None;
        let related: Vec<ObjectKey> = p.related.iter().collect();
        self.claim_pid(key, cx);
        self.posix_process_revived(key);
        for okey in related {
            if let Some(o) = self.objects.get_mut(&okey) {
                o.process_revived(key);
                self.evaluate_object(okey, cx.now, cx);
            }
        }
    }

    /// Records that object `okey` refers to process `pkey`.
    pub(crate) fn relate(&mut self, pkey: ProcessKey, okey: ObjectKey) {
        if let Some(p) = self.processes.get_mut(&pkey) {
            p.related.insert(okey);
        }
    }

    // ----- objects -----

    /// The key of the latest object with this id (destroyed or not).
    pub(crate) fn latest(&self, ns: u32, ty: IpcType, id: i32) -> Option<ObjectKey> {
        self.objects.latest(ns, ty, id).map(|o| o.key)
    }

    /// The current object with this id, unless destroyed.
    pub(crate) fn lookup(&self, ns: u32, ty: IpcType, id: i32) -> Option<ObjectKey> {
        self.objects
            .latest(ns, ty, id)
            .filter(|o| o.exists())
            .map(|o| o.key)
    }

    /// The current object with this id; one the model never saw is created with unknown
    /// fields.
    pub(crate) fn lookup_or_create(
        &mut self,
        ns: u32,
        ty: IpcType,
        id: i32,
        cx: &mut Cx,
    ) -> ObjectKey {
        if let Some(k) = self.lookup(ns, ty, id) {
            return k;
        }
        let k = self.new_object(ns, ty, id, cx);
        self.story_push(k, cx.now, None, super::story::What::Appear);
        self.account(k, true);
        self.evaluate_limits(ns, ty, cx);
        k
    }

    /// A new object (new generation) for `id`; a previous one still thought to exist was
    /// missed being destroyed. The caller fills it in and accounts it.
    pub(crate) fn new_object(&mut self, ns: u32, ty: IpcType, id: i32, cx: &mut Cx) -> ObjectKey {
        if let Some(old) = self.lookup(ns, ty, id) {
            self.destroy_object(old, cx, false);
        }
        self.objects.create(ns, ty, id)
    }

    /// Sets the IPC key of an object (and the key index).
    pub(crate) fn set_ipc_key(&mut self, okey: ObjectKey, ipc_key: i32, cx: &mut Cx) {
        let Some(o) = self.objects.get_mut(&okey) else {
            return;
        };
        if let Some(old) = o.ipc_key()
            && old != 0
            && self.by_key.get(&(okey.ns, okey.ty, old)) == Some(&okey)
        {
            self.by_key.remove(&(okey.ns, okey.ty, old));
        }
        o.set_ipc_key(ipc_key);
        if ipc_key != 0 && o.status == ObjectStatus::Live {
            // Keys are unique among live objects: one still holding it is gone.
            if let Some(prev) = self.by_key.insert((okey.ns, okey.ty, ipc_key), okey)
                && prev != okey
                && self
                    .objects
                    .get(&prev)
                    .is_some_and(|p| p.ipc_key() == Some(ipc_key) && p.status == ObjectStatus::Live)
            {
                self.destroy_object(prev, cx, false);
                self.by_key.insert((okey.ns, okey.ty, ipc_key), okey);
            }
        }
    }

    /// A removed segment keeps its key for display, but no get finds it by key any more.
    pub(crate) fn unindex_key(&mut self, okey: ObjectKey) {
        if let Some(k) = self.objects.get(&okey).and_then(Object::ipc_key)
            && self.by_key.get(&(okey.ns, okey.ty, k)) == Some(&okey)
        {
            self.by_key.remove(&(okey.ns, okey.ty, k));
        }
    }

    /// Adds (or with `add == false` removes) an object's share of its namespace's usage.
    pub(crate) fn account(&mut self, okey: ObjectKey, add: bool) {
        let page = self.page();
        let Some(o) = self.objects.get(&okey) else {
            return;
        };
        let n = self.namespaces.entry(okey.ns).or_default();
        let upd = |v: &mut u64, by: u64| {
            *v = if add {
                v.saturating_add(by)
            } else {
                v.saturating_sub(by)
            };
        };
        match o.body() {
            Body::Shm(s) => {
                upd(&mut n.shm_count, 1);
                upd(&mut n.shm_pages, s.size.map_or(0, |b| b.div_ceil(page)));
            }
            Body::Sem(_) => {
                upd(&mut n.sem_sets, 1);
                upd(&mut n.sem_total, o.nsems().map_or(0, u64::from));
            }
            Body::Msg(_) => upd(&mut n.msg_count, 1),
        }
    }

    /// The object is gone: statuses, indexes, attachments (when it vanished under them),
    /// findings. With `derived`, a segment's destruction is reported as `ShmDestroy`.
    pub(crate) fn destroy_object(&mut self, okey: ObjectKey, cx: &mut Cx, derived: bool) {
        let Some(o) = self.objects.get(&okey) else {
            return;
        };
        if !o.exists() {
            return;
        }
        self.account(okey, false);
        self.note_removed(okey, cx);
        let Some(o) = self.objects.get_mut(&okey) else {
            return;
        };
        o.status = ObjectStatus::Destroyed;
        o.times.set_destroyed(cx.now);
        if o.times.removed().is_none() {
            o.times.set_removed(cx.now);
        }
        o.story_mut(None)
            .push(cx.now, None, super::story::What::Destroy);
        let r = o.object_ref();
        if let Some(k) = o.ipc_key()
            && self.by_key.get(&(okey.ns, okey.ty, k)) == Some(&okey)
        {
            self.by_key.remove(&(okey.ns, okey.ty, k));
        }
        // Mappings of a segment that vanished under them (missed events).
        if let Some(s) = o.shm_mut() {
            let holders: Vec<ProcessKey> = s.attached.keys().copied().collect();
            s.attached.clear();
            s.vmas = 0;
            s.external = 0;
            for pk in holders {
                if let Some(p) = self.processes.get_mut(&pk) {
                    let mut d = Delta::default();
                    shm::remove_object(&mut p.vmas, okey, &mut d);
                }
            }
            if derived {
                cx.derived.push((Action::ShmDestroy, r));
            }
        }
        for rule in Rule::for_type(okey.ty) {
            self.settle(
                super::rules::FindingKey::object(*rule, okey),
                false,
                cx.now,
                cx,
            );
        }
        self.evaluate_limits(okey.ns, okey.ty, cx);
    }

    /// Applies a change of vma counts made by process `pkey`: nattch, destroy of removed
    /// segments that lost their last attachment, rules.
    pub(crate) fn apply_delta(&mut self, pkey: ProcessKey, delta: &Delta, cx: &mut Cx) {
        for &(okey, d) in &delta.0 {
            let Some(o) = self.objects.get_mut(&okey) else {
                continue;
            };
            let status = o.status;
            let Some(s) = o.shm_mut() else { continue };
            let mut left = 0;
            if d != 0 {
                let cur = i64::try_from(s.vmas).unwrap_or(i64::MAX);
                s.vmas = u64::try_from(cur.saturating_add(d)).unwrap_or(0);
                let c = s.attached.get_or_insert_with(pkey, || 0);
                let n = i64::from(*c).saturating_add(d);
                *c = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
                left = u64::from(*c);
                if *c == 0 {
                    s.attached.remove(&pkey);
                }
            }
            let gone = !s.attached_any();
            if d != 0 {
                let p = self.processes.get(&pkey);
                o.story_mut(Some(pkey))
                    .mapped(pkey, p, d, left, cx.cause, cx.now);
            }
            if status == ObjectStatus::RemovedPendingDestroy && gone && !cx.sync {
                self.destroy_object(okey, cx, true);
            } else if d != 0 {
                let now = cx.now;
                self.evaluate_object(okey, now, cx);
            }
        }
    }

    // ----- stories -----

    /// Appends an entry to object `okey`'s story.
    pub(crate) fn story_push(
        &mut self,
        okey: ObjectKey,
        now: u64,
        process: Option<ProcessKey>,
        what: super::story::What,
    ) {
        let p = process.map(|k| (k, self.processes.get(&k)));
        if let Some(o) = self.objects.get_mut(&okey) {
            o.story_mut(process).push(now, p, what);
        }
    }

    /// The operations of process `pkey` on object `okey`.
    pub(crate) fn story_ops(
        &mut self,
        okey: ObjectKey,
        pkey: ProcessKey,
        now: u64,
        f: impl FnOnce(&mut super::story::OpSummary),
    ) {
        let p = self.processes.get(&pkey);
        if let Some(o) = self.objects.get_mut(&okey) {
            o.story_mut(Some(pkey)).ops(pkey, p, now).update(f);
        }
    }

    // ----- leaky-process -----

    /// `pkey` created `okey`: its program (from the names the object keeps, so that its
    /// removal credits the same one) is charged.
    pub(crate) fn note_create(&mut self, okey: ObjectKey, pkey: ProcessKey, cx: &mut Cx) {
        let seq = self.next_leak_seq;
        let Some(o) = self.objects.get_mut(&okey) else {
            return;
        };
        let Some(program) = o.creator_program().map(str::to_owned) else {
            return;
        };
        o.leak_seq = Some(seq);
        self.next_leak_seq = seq.checked_add(1).unwrap_or(std::num::NonZeroU32::MIN);
        // Looked up by `&str` first: the name is copied only for a program seen the first time.
        if let Some(totals) = self.program_totals.get_mut(program.as_str()) {
            totals.created += 1;
        } else if self.program_totals.len() < 4096 {
            self.program_totals
                .entry(program.clone())
                .or_default()
                .created += 1;
        }
        if !self.programs.contains_key(program.as_str()) {
            self.programs
                .insert(program.clone(), super::Program::default());
        }
        let Some(p) = self.programs.get_mut(program.as_str()) else {
            return;
        };
        p.push(cx.now, seq, pkey);
        let now = cx.now;
        self.evaluate_program(&program, now, cx);
    }

    /// `okey` was removed: it no longer counts against its creator's program.
    pub(crate) fn note_removed(&mut self, okey: ObjectKey, cx: &mut Cx) {
        let Some(o) = self.objects.get_mut(&okey) else {
            return;
        };
        let Some(seq) = o.leak_seq.take() else {
            return;
        };
        // The names at creation (shared, not copied): the program charged then.
        let Some(names) = o.creator_names().cloned() else {
            return;
        };
        let program = names.program();
        if let Some(t) = self.program_totals.get_mut(program) {
            t.removed += 1;
        }
        if let Some(p) = self.programs.get_mut(program)
            && p.remove(seq)
        {
            let now = cx.now;
            self.evaluate_program(program, now, cx);
        }
    }

    // ----- time -----

    pub(crate) fn tick_inner(&mut self, now: u64) -> Vec<super::FindingChange> {
        self.now_ns = self.now_ns.max(now);
        let mut cx = Cx::new(now);
        cx.findings.append(&mut self.outbox);
        self.expire_pending(now, &mut cx);
        let programs: Vec<String> = self.programs.keys().cloned().collect();
        for program in programs {
            self.evaluate_program(&program, now, &mut cx);
            if self
                .programs
                .get(&program)
                .is_some_and(super::Program::is_empty)
            {
                self.programs.remove(&program);
            }
        }
        if now >= self.last_sweep_ns.saturating_add(self.cfg.grace_ns) {
            self.last_sweep_ns = now;
            self.sweep(now);
        }
        cx.findings
    }

    // ----- caps -----

    /// Keeps the model within [`ModelConfig::max_processes`] and [`ModelConfig::max_objects`]:
    /// once over a cap, forgets down to 7/8 of it in one pass (so that the scan is amortised),
    /// least useful first — dead processes, oldest exit first, then live ones that hold and use
    /// nothing (their next event brings them back); destroyed objects, oldest first. What was
    /// forgotten is counted.
    pub(crate) fn enforce_caps(&mut self) {
        if self.processes.len() > self.cfg.max_processes {
            let target = self.cfg.max_processes - self.cfg.max_processes / 8;
            // Least useful first: dead processes nothing refers to, dead ones named as past
            // peers (a process the model does not know counts as dead, so the rules judge the
            // same), then live ones that hold and use nothing. Live holders are never evicted.
            let mut idle: Vec<(u8, u64, ProcessKey)> = self
                .processes
                .values()
                .filter_map(|p| {
                    let unrelated = p.related.is_empty();
                    let idle = unrelated && p.vmas.is_empty() && p.usage.is_empty();
                    match (p.alive, unrelated) {
                        (false, true) => Some((0, p.exit_ns.unwrap_or(0), p.key)),
                        (false, false) => Some((1, p.exit_ns.unwrap_or(0), p.key)),
                        (true, _) if idle => Some((2, p.key.start_ticks, p.key)),
                        (true, _) => None,
                    }
                })
                .collect();
            idle.sort_unstable();
            let excess = self.processes.len().saturating_sub(target);
            for (_, _, key) in idle.into_iter().take(excess) {
                self.processes.remove(&key);
                if self.live_by_pid.get(&key.pid) == Some(&key) {
                    self.live_by_pid.remove(&key.pid);
                }
                self.evicted.processes += 1;
            }
        }
        if self.objects.len() > self.cfg.max_objects {
            let target = self.cfg.max_objects - self.cfg.max_objects / 8;
            let mut destroyed: Vec<(u64, ObjectKey)> = self
                .objects
                .values()
                .filter(|o| o.status == ObjectStatus::Destroyed)
                .map(|o| (o.times.destroyed().unwrap_or(0), o.key))
                .collect();
            destroyed.sort_unstable();
            let excess = self.objects.len().saturating_sub(target);
            let mut refs = Vec::new();
            for (_, okey) in destroyed.into_iter().take(excess) {
                let Some(mut o) = self.objects.remove(&okey) else {
                    continue;
                };
                let processes = &self.processes;
                o.refresh_cast(|k| processes.get(&k));
                refs.clear();
                o.referenced(&mut refs);
                for pk in &refs {
                    if let Some(p) = self.processes.get_mut(pk) {
                        p.related.remove(&okey);
                    }
                }
                self.evicted.objects += 1;
                self.archive_object(o);
            }
        }
    }

    /// Keeps a forgotten (destroyed) object's story for `explain` and `report`, within
    /// [`ModelConfig::archive`].
    fn archive_object(&mut self, o: Box<super::object::Object>) {
        if self.cfg.archive > 0 {
            if self.archive.len() >= self.cfg.archive {
                self.archive.pop_front();
            }
            self.archive.push_back(o);
        }
    }

    /// Forgets destroyed objects older than the grace period and dead processes nothing
    /// refers to.
    pub(crate) fn sweep(&mut self, now: u64) {
        let grace = self.cfg.grace_ns;
        let mut old: Vec<ObjectKey> = self
            .objects
            .values()
            .filter(|o| {
                o.status == ObjectStatus::Destroyed
                    && o.times
                        .destroyed()
                        .is_some_and(|t| t.saturating_add(grace) <= now)
            })
            .map(|o| o.key)
            .collect();
        // Archived in key order (the archive keeps the latest ones).
        old.sort_unstable();
        let mut refs = Vec::new();
        for okey in old {
            let Some(mut o) = self.objects.remove(&okey) else {
                continue;
            };
            let processes = &self.processes;
            o.refresh_cast(|k| processes.get(&k));
            refs.clear();
            o.referenced(&mut refs);
            for pk in &refs {
                if let Some(p) = self.processes.get_mut(pk) {
                    p.related.remove(&okey);
                }
            }
            self.archive_object(o);
        }
        // Dead processes still referred to by an object or a finding are kept.
        let mut keep: HashSet<ProcessKey> = HashSet::default();
        refs.clear();
        for o in self.objects.values() {
            o.referenced(&mut refs);
        }
        self.posix_referenced(&mut refs);
        keep.extend(refs.iter().copied());
        for f in self.findings.values() {
            keep.extend(f.evidence.iter().filter_map(|e| e.entity));
        }
        for k in self.pending.keys() {
            if let Subject::Program(p) = &k.subject
                && let Some(prog) = self.programs.get(p)
            {
                keep.extend(prog.unremoved_creators());
            }
        }
        for prog in self.programs.values() {
            keep.extend(prog.unremoved_creators());
        }
        self.processes.retain(|k, p| {
            p.alive || keep.contains(k) || p.exit_ns.is_some_and(|t| t.saturating_add(grace) > now)
        });
        let processes = &self.processes;
        self.live_by_pid.retain(|_, k| processes.contains_key(k));
    }
}
