//! Which events a session keeps (`--pid`, `--uid`, `--comm`, `--exclude-comm`, `--exe`, `--type`,
//! `--key`, `--namespace`). Pure. `--pid`, `--uid` and `--type` are also applied in the kernel
//! (the probe's filter sets and type mask), so what they leave out never reaches the ring buffer;
//! this filter stays the exact one (a kernel set is a superset: e.g. a process's uid may change).

use crate::{
    cli::FilterArgs,
    event::{Event, EventKind, IpcType, ObjectType, PosixType},
};

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pids: Vec<u32>,
    uids: Vec<u32>,
    comms: Vec<glob::Pattern>,
    exclude_comms: Vec<glob::Pattern>,
    exes: Vec<glob::Pattern>,
    types: Vec<ObjectType>,
    keys: Vec<(i32, i32)>,
    namespaces: Vec<u32>,
}

impl From<&FilterArgs> for Filter {
    fn from(a: &FilterArgs) -> Self {
        Self {
            pids: a.pids.clone(),
            uids: a.uids.clone(),
            comms: a.comms.clone(),
            exclude_comms: a.exclude_comms.clone(),
            exes: a.exes.clone(),
            types: a.types.clone(),
            keys: a.keys.clone(),
            namespaces: a.namespaces.clone(),
        }
    }
}

impl Filter {
    /// The one process to filter on in the kernel, when there is exactly one.
    pub fn single_pid(&self) -> Option<u32> {
        match self.pids.as_slice() {
            [pid] => Some(*pid),
            _ => None,
        }
    }

    /// The processes to keep (empty: all).
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// The real uids to keep (empty: all).
    pub fn uids(&self) -> &[u32] {
        &self.uids
    }

    /// The kernel's type mask (`ipcaudit_ebpf::family` bits; 0: every family).
    pub fn type_mask(&self) -> u32 {
        self.types
            .iter()
            .map(|t| match t {
                ObjectType::Sysv(IpcType::Shm) => ipcaudit_ebpf::family::SHM,
                ObjectType::Sysv(IpcType::Sem) => ipcaudit_ebpf::family::SEM,
                ObjectType::Sysv(IpcType::Msg) => ipcaudit_ebpf::family::MSG,
                ObjectType::Posix(PosixType::Pmsg) => ipcaudit_ebpf::family::PMSG,
                ObjectType::Posix(PosixType::Pshm) => ipcaudit_ebpf::family::PSHM,
                ObjectType::Posix(PosixType::Psem) => ipcaudit_ebpf::family::PSEM,
            })
            .fold(0, |mask, bit| mask | bit)
    }

    /// Whether a finding is wanted: on an object (System V or POSIX) of a kept type and
    /// namespace (findings without an object — `leaky-process`, `near-limit` — pass).
    pub fn matches_finding(&self, finding: &crate::model::Finding) -> bool {
        let (ty, ns) = match (&finding.object, &finding.posix) {
            (Some(o), _) => (ObjectType::Sysv(o.ty), o.ns),
            (None, Some(p)) => (ObjectType::Posix(p.ty), p.ns),
            (None, None) => return true,
        };
        (self.types.is_empty() || self.types.contains(&ty))
            && (self.namespaces.is_empty() || self.namespaces.contains(&ns))
    }

    /// Whether the filter needs each process's executable path (read from /proc).
    pub fn needs_exe(&self) -> bool {
        !self.exes.is_empty()
    }

    /// Does the event pass? `object_type` and `key` are the type and key of the object the
    /// model says the event concerned (munmap/mremap of an attachment: shm); `exe` is the
    /// process's executable when known. Lost-record notices always pass.
    pub fn matches(
        &self,
        ev: &Event,
        object_type: Option<ObjectType>,
        key: Option<i32>,
        exe: Option<&str>,
    ) -> bool {
        if matches!(ev.kind, EventKind::Lost { .. }) {
            return true;
        }
        if !self.pids.is_empty() && !self.pids.contains(&ev.task.process.pid) {
            return false;
        }
        if !self.uids.is_empty() && !self.uids.contains(&ev.task.uid) {
            return false;
        }
        let comm = ev.task.comm.as_str();
        if !self.comms.is_empty() && !self.comms.iter().any(|g| g.matches(comm)) {
            return false;
        }
        if self.exclude_comms.iter().any(|g| g.matches(comm)) {
            return false;
        }
        if !self.exes.is_empty() && !exe.is_some_and(|exe| self.exes.iter().any(|g| g.matches(exe)))
        {
            return false;
        }
        if !self.namespaces.is_empty() && !self.namespaces.contains(&ev.ipc_ns) {
            return false;
        }
        if !self.keys.is_empty() {
            let key = match ev.kind {
                EventKind::ShmGet { key, .. }
                | EventKind::SemGet { key, .. }
                | EventKind::MsgGet { key, .. } => Some(key),
                _ => key,
            };
            if !key.is_some_and(|k| self.keys.iter().any(|&(lo, hi)| (lo..=hi).contains(&k))) {
                return false;
            }
        }
        if !self.types.is_empty() {
            match ev.kind.object_type().or(object_type) {
                Some(ty) => return self.types.contains(&ty),
                None => return false,
            }
        }
        true
    }

    /// Whether a record of aggregated totals is wanted: a process's usage by the process
    /// filters, an object's totals by the type and namespace filters (key ranges and
    /// executables cannot be told from totals: they pass).
    pub fn matches_aggregate(&self, agg: &crate::model::Aggregate) -> bool {
        use crate::model::Aggregate;
        let (ns, ty) = match agg {
            Aggregate::Usage(u) => {
                let comm = u.task.comm.as_str();
                if (!self.pids.is_empty() && !self.pids.contains(&u.task.process.pid))
                    || (!self.uids.is_empty() && !self.uids.contains(&u.task.uid))
                    || (!self.comms.is_empty() && !self.comms.iter().any(|g| g.matches(comm)))
                    || self.exclude_comms.iter().any(|g| g.matches(comm))
                {
                    return false;
                }
                (u.ns, None)
            }
            Aggregate::Set(t) => (t.ns, Some(ObjectType::Sysv(IpcType::Sem))),
            Aggregate::Queue(t) => (t.ns, Some(ObjectType::Sysv(IpcType::Msg))),
            Aggregate::Mqueue(t) => (t.ns, Some(ObjectType::Posix(PosixType::Pmsg))),
        };
        (self.namespaces.is_empty() || self.namespaces.contains(&ns))
            && (self.types.is_empty() || ty.is_none_or(|ty| self.types.contains(&ty)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ProcessKey, Task};

    fn ev(pid: u32, comm: &str, kind: EventKind) -> Event {
        Event {
            time_ns: 0,
            ipc_ns: 1,
            task: Task {
                process: ProcessKey {
                    pid,
                    start_ticks: 1,
                },
                tid: pid,
                comm: comm.into(),
                uid: 0,
            },
            kind,
        }
    }

    fn glob(s: &str) -> glob::Pattern {
        glob::Pattern::new(s).unwrap()
    }

    #[test]
    fn globs_keys_namespaces_and_exes() {
        let f = Filter {
            comms: vec![glob("ipc-*")],
            exclude_comms: vec![glob("*bench")],
            ..Filter::default()
        };
        let get = EventKind::ShmGet {
            key: 0x1234,
            size: 1,
            flags: 0,
            result: Ok(1),
        };
        assert!(f.matches(&ev(1, "ipc-workload", get.clone()), None, None, None));
        assert!(!f.matches(&ev(1, "ipc-bench", get.clone()), None, None, None));
        assert!(!f.matches(&ev(1, "other", get.clone()), None, None, None));
        let f = Filter {
            keys: vec![(0x1000, 0x1fff)],
            namespaces: vec![1],
            ..Filter::default()
        };
        assert!(f.matches(&ev(1, "x", get.clone()), None, None, None));
        let dt = EventKind::ShmDt {
            addr: 0,
            result: Ok(()),
        };
        assert!(f.matches(
            &ev(1, "x", dt.clone()),
            Some(ObjectType::Sysv(IpcType::Shm)),
            Some(0x1fff),
            None
        ));
        assert!(!f.matches(
            &ev(1, "x", dt.clone()),
            Some(ObjectType::Sysv(IpcType::Shm)),
            Some(0x2000),
            None
        ));
        assert!(!f.matches(
            &ev(1, "x", dt.clone()),
            Some(ObjectType::Sysv(IpcType::Shm)),
            None,
            None
        ));
        let mut other_ns = ev(1, "x", get);
        other_ns.ipc_ns = 2;
        assert!(!f.matches(&other_ns, None, None, None));
        let f = Filter {
            exes: vec![glob("/usr/bin/*")],
            ..Filter::default()
        };
        assert!(f.needs_exe());
        assert!(f.matches(&ev(1, "x", dt.clone()), None, None, Some("/usr/bin/ipcmk")));
        assert!(!f.matches(&ev(1, "x", dt.clone()), None, None, Some("/opt/x")));
        assert!(!f.matches(&ev(1, "x", dt), None, None, None));
    }

    #[test]
    fn filters_combine() {
        let f = Filter {
            pids: vec![1, 2],
            comms: vec![glob("a")],
            types: vec![ObjectType::Sysv(IpcType::Shm)],
            ..Filter::default()
        };
        let shmdt = EventKind::ShmDt {
            addr: 0,
            result: Ok(()),
        };
        assert!(f.matches(&ev(1, "a", shmdt.clone()), None, None, None));
        assert!(!f.matches(&ev(3, "a", shmdt.clone()), None, None, None));
        assert!(!f.matches(&ev(1, "b", shmdt), None, None, None));
        let exit = EventKind::Exit { code: 0 };
        assert!(
            !f.matches(&ev(1, "a", exit.clone()), None, None, None),
            "lifecycle left out under --type"
        );
        assert!(
            f.matches(
                &ev(1, "a", exit),
                Some(ObjectType::Sysv(IpcType::Shm)),
                None,
                None
            ),
            "an exit that destroyed a segment"
        );
        let munmap = EventKind::Munmap {
            addr: 0,
            len: 1,
            result: Ok(()),
        };
        assert!(f.matches(
            &ev(2, "a", munmap),
            Some(ObjectType::Sysv(IpcType::Shm)),
            None,
            None
        ));
        assert!(f.matches(&ev(9, "z", EventKind::Lost { count: 3 }), None, None, None));
        assert!(Filter::default().matches(
            &ev(9, "z", EventKind::Exit { code: 0 }),
            None,
            None,
            None
        ));
        assert_eq!(f.single_pid(), None);
        assert_eq!(
            Filter {
                pids: vec![7],
                ..Filter::default()
            }
            .single_pid(),
            Some(7)
        );
    }

    #[test]
    fn uids_and_the_kernel_type_mask() {
        let f = Filter {
            uids: vec![1000],
            types: vec![
                ObjectType::Sysv(IpcType::Sem),
                ObjectType::Sysv(IpcType::Msg),
                ObjectType::Posix(PosixType::Pmsg),
            ],
            ..Filter::default()
        };
        assert_eq!(
            f.type_mask(),
            ipcaudit_ebpf::family::SEM | ipcaudit_ebpf::family::MSG | ipcaudit_ebpf::family::PMSG
        );
        // Only audited POSIX types: a mask that traces no family (not 0, which is every one).
        let audited = Filter {
            types: vec![ObjectType::Posix(PosixType::Pshm)],
            ..Filter::default()
        };
        assert_eq!(audited.type_mask(), ipcaudit_ebpf::family::PSHM);
        assert_eq!(Filter::default().type_mask(), 0);
        let get = EventKind::SemGet {
            key: 0,
            nsems: 1,
            flags: 0,
            result: Ok(1),
        };
        let mut e = ev(1, "x", get);
        assert!(!f.matches(&e, None, None, None));
        e.task.uid = 1000;
        assert!(f.matches(&e, None, None, None));
        assert_eq!(f.uids(), [1000]);
    }
}
