//! Which events a session keeps (`--pid`, `--comm`, `--type`). Pure.

use crate::{
    cli::FilterArgs,
    event::{Event, EventKind, IpcType},
};

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pids: Vec<u32>,
    comms: Vec<String>,
    types: Vec<IpcType>,
}

impl From<&FilterArgs> for Filter {
    fn from(a: &FilterArgs) -> Self {
        Self {
            pids: a.pids.clone(),
            comms: a.comms.clone(),
            types: a.types.clone(),
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

    /// Does the event pass? `object_type` is the type of the object the model says the event
    /// concerned (munmap/mremap of an attachment: shm). Lost-record notices always pass.
    pub fn matches(&self, ev: &Event, object_type: Option<IpcType>) -> bool {
        if matches!(ev.kind, EventKind::Lost { .. }) {
            return true;
        }
        if !self.pids.is_empty() && !self.pids.contains(&ev.task.process.pid) {
            return false;
        }
        if !self.comms.is_empty() && !self.comms.contains(&ev.task.comm) {
            return false;
        }
        if !self.types.is_empty() {
            match ev.kind.ipc_type().or(object_type) {
                Some(ty) => return self.types.contains(&ty),
                None => return false,
            }
        }
        true
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

    #[test]
    fn filters_combine() {
        let f = Filter {
            pids: vec![1, 2],
            comms: vec!["a".into()],
            types: vec![IpcType::Shm],
        };
        let shmdt = EventKind::ShmDt {
            addr: 0,
            result: Ok(()),
        };
        assert!(f.matches(&ev(1, "a", shmdt.clone()), None));
        assert!(!f.matches(&ev(3, "a", shmdt.clone()), None));
        assert!(!f.matches(&ev(1, "b", shmdt), None));
        let exit = EventKind::Exit { code: 0 };
        assert!(
            !f.matches(&ev(1, "a", exit.clone()), None),
            "lifecycle left out under --type"
        );
        assert!(
            f.matches(&ev(1, "a", exit), Some(IpcType::Shm)),
            "an exit that destroyed a segment"
        );
        let munmap = EventKind::Munmap {
            addr: 0,
            len: 1,
            result: Ok(()),
        };
        assert!(f.matches(&ev(2, "a", munmap), Some(IpcType::Shm)));
        assert!(f.matches(&ev(9, "z", EventKind::Lost { count: 3 }), None));
        assert!(Filter::default().matches(&ev(9, "z", EventKind::Exit { code: 0 }), None));
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
}
