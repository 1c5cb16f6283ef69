//! Process context the kernel records do not carry: the container a process runs in (from its
//! cgroup path) and its PID inside its own PID namespace. Read from /proc once per process
//! (pure parsers below, a bounded cache in [`Enricher`]).

use std::collections::HashMap;

use crate::event::ProcessKey;

/// What a record says about a process beyond its identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessContext {
    /// Container id (docker, containerd, cri-o, podman, kubepods): 64 hex digits.
    pub container_id: Option<String>,
    /// The PID inside the process's PID namespace, when it differs from the host's.
    pub vpid: Option<u32>,
    /// The executable (`/proc/PID/exe`), read only when a filter needs it.
    pub exe: Option<String>,
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// The container id in a /proc/PID/cgroup text: the last path component that is (or wraps) a
/// 64-hex-digit id — `docker-<id>.scope`, `/docker/<id>`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, `/kubepods/.../pod<uid>/<id>`.
pub fn container_id(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.rsplit('/'))
        .map(|part| {
            let part = part.strip_suffix(".scope").unwrap_or(part);
            part.rsplit(['-', ':']).next().unwrap_or(part)
        })
        .find(|candidate| is_id(candidate))
        .map(str::to_owned)
}

/// The innermost PID of an `NSpid:` line of /proc/PID/status, when it differs from `pid`.
pub fn vpid(status: &str, pid: u32) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let inner: u32 = line.split_whitespace().last()?.parse().ok()?;
    (inner != pid).then_some(inner)
}

/// Reads and caches process context. Bounded: the cache is cleared when it grows past its cap
/// (processes are re-read on their next event).
pub struct Enricher {
    cache: HashMap<ProcessKey, ProcessContext>,
    cap: usize,
    /// Read executables too (`--exe` filters).
    exe: bool,
}

impl Default for Enricher {
    fn default() -> Self {
        Self {
            cache: HashMap::new(),
            cap: 65_536,
            exe: false,
        }
    }
}

impl Enricher {
    /// An enricher that also reads each process's executable (for `--exe` filters).
    pub fn new(exe: bool) -> Self {
        Self {
            exe,
            ..Self::default()
        }
    }

    /// The context of a process (read from /proc the first time; empty when it is gone).
    pub fn context(&mut self, key: ProcessKey) -> &ProcessContext {
        if key.pid == 0 {
            static NONE: ProcessContext = ProcessContext {
                container_id: None,
                vpid: None,
                exe: None,
            };
            return &NONE;
        }
        if self.cache.len() >= self.cap && !self.cache.contains_key(&key) {
            self.cache.clear();
        }
        let with_exe = self.exe;
        self.cache.entry(key).or_insert_with(|| {
            let read =
                |file: &str| std::fs::read_to_string(format!("/proc/{}/{file}", key.pid)).ok();
            ProcessContext {
                container_id: read("cgroup").as_deref().and_then(container_id),
                vpid: read("status").as_deref().and_then(|s| vpid(s, key.pid)),
                exe: with_exe
                    .then(|| std::fs::read_link(format!("/proc/{}/exe", key.pid)).ok())
                    .flatten()
                    .map(|p| p.to_string_lossy().into_owned()),
            }
        })
    }

    /// Forgets a process that exited.
    pub fn forget(&mut self, key: ProcessKey) {
        self.cache.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1b7e3c2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";

    #[test]
    fn finds_container_ids_of_every_runtime() {
        for cgroup in [
            format!("0::/system.slice/docker-{ID}.scope"),
            format!("12:memory:/docker/{ID}\n11:cpu:/docker/{ID}"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"
            ),
            format!("0::/machine.slice/libpod-{ID}.scope/container"),
            format!("0::/kubepods/besteffort/pod0f3b/{ID}"),
            format!("0::/system.slice/crio-{ID}.scope"),
        ] {
            assert_eq!(container_id(&cgroup).as_deref(), Some(ID), "{cgroup}");
        }
        assert_eq!(
            container_id("0::/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(container_id("0::/"), None);
        assert_eq!(container_id("garbage"), None);
    }

    #[test]
    fn reads_the_innermost_pid() {
        assert_eq!(vpid("Name:\tx\nNSpid:\t4711\t12\n", 4711), Some(12));
        assert_eq!(vpid("NSpid:\t4711\n", 4711), None);
        assert_eq!(vpid("no such line", 1), None);
    }

    #[test]
    fn our_own_context_is_read() {
        let mut e = Enricher::default();
        let me = ProcessKey {
            pid: std::process::id(),
            start_ticks: 0,
        };
        // Not in a container in CI; the call must work and be cached.
        let first = e.context(me).clone();
        assert_eq!(e.context(me), &first);
        e.forget(me);
        assert!(e.cache.is_empty());
    }
}
