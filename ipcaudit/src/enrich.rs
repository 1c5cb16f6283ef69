//! Process context the kernel records do not carry: the executable, the command line (bounded),
//! the parent chain up to pid 1, the systemd unit or container a process runs in (from its
//! cgroup), and its PID inside its own PID namespace. Read from /proc once per process (pure
//! parsers below, a bounded cache in [`Enricher`]).

use std::{collections::HashMap, sync::Arc};

use crate::event::{Ancestor, ProcessDetails, ProcessKey};

/// What a record says about a process beyond its identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessContext {
    /// The PID inside the process's PID namespace, when it differs from the host's.
    pub vpid: Option<u32>,
    /// Executable, command line, ancestors, unit, container.
    pub details: Arc<ProcessDetails>,
}

impl ProcessContext {
    pub fn container_id(&self) -> Option<&str> {
        self.details.container_id.as_deref()
    }

    pub fn executable(&self) -> Option<&str> {
        self.details.executable.as_deref()
    }
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

/// The systemd unit in a /proc/PID/cgroup text: the innermost `.service` or `.scope` component
/// of the unified hierarchy's path (`0::/system.slice/nginx.service` → `nginx.service`), else of
/// the `name=systemd` hierarchy (cgroup v1). A user manager's own unit (`user@1000.service`) is
/// only taken when nothing inside it is a unit.
pub fn systemd_unit(cgroup: &str) -> Option<String> {
    let path_of = |pred: &dyn Fn(&str) -> bool| {
        cgroup.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            pred(controllers).then_some(path)
        })
    };
    let unified = path_of(&|c: &str| c.is_empty());
    let named = path_of(&|c: &str| c == "name=systemd");
    [unified, named].into_iter().flatten().find_map(|path| {
        path.rsplit('/')
            // systemd names units in lower case: `.service`, `.scope`.
            .find(|part| {
                let kind = part.rsplit('.').next().unwrap_or("");
                part.contains('.') && (kind == "service" || kind == "scope")
            })
            .map(str::to_owned)
    })
}

/// The innermost PID of an `NSpid:` line of /proc/PID/status, when it differs from `pid`.
pub fn vpid(status: &str, pid: u32) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let inner: u32 = line.split_whitespace().last()?.parse().ok()?;
    (inner != pid).then_some(inner)
}

/// A /proc/PID/cmdline (NUL-separated arguments) as one line: arguments joined by spaces,
/// control characters escaped, at most `max` bytes (cut on a character boundary, ending in `…`
/// when cut). `None` for an empty command line (kernel threads, zombies).
pub fn command_line(raw: &[u8], max: usize) -> Option<String> {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let piece: String = match c {
            '\0' => " ".to_owned(),
            c if c.is_control() => c.escape_default().collect(),
            c => c.to_string(),
        };
        if out.len() + piece.len() > max.saturating_sub('…'.len_utf8()) {
            out.push('…');
            return Some(out);
        }
        out.push_str(&piece);
    }
    Some(out)
}

fn read_link(path: &str) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Reads what /proc says about process `pid` (empty fields for what is gone or unreadable).
pub fn read_details(pid: u32) -> (ProcessDetails, Option<u32>) {
    let read = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok();
    let cgroup = read("cgroup");
    let status = read("status");
    let details = ProcessDetails {
        executable: read_link(&format!("/proc/{pid}/exe")),
        command_line: std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .and_then(|raw| command_line(&raw, ProcessDetails::MAX_COMMAND_LINE)),
        ancestors: read_ancestors(pid),
        unit: cgroup.as_deref().and_then(systemd_unit),
        container_id: cgroup.as_deref().and_then(container_id),
    };
    (details, status.as_deref().and_then(|s| vpid(s, pid)))
}

/// The parent chain of `pid` up to pid 1 (parent first), from /proc/PID/stat.
pub fn read_ancestors(pid: u32) -> Vec<Ancestor> {
    let stat = |pid: u32| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        crate::snapshot::parse::parse_stat(&text, "stat").ok()
    };
    let mut out = Vec::new();
    let mut next = match stat(pid) {
        Some(s) => s.ppid,
        None => return out,
    };
    while next != 0 && out.len() < ProcessDetails::MAX_ANCESTORS {
        let Some(s) = stat(next) else { break };
        out.push(Ancestor {
            pid: next,
            name: s.comm,
            executable: read_link(&format!("/proc/{next}/exe")),
        });
        if next == 1 {
            break;
        }
        next = s.ppid;
    }
    out
}

/// One cached context and whether it was handed out for a record already.
struct Entry {
    context: ProcessContext,
    announced: bool,
}

/// Reads and caches process context. Bounded: the cache is cleared when it grows past its cap
/// (processes are re-read on their next event).
pub struct Enricher {
    cache: HashMap<ProcessKey, Entry>,
    cap: usize,
}

impl Default for Enricher {
    fn default() -> Self {
        Self {
            cache: HashMap::new(),
            cap: 65_536,
        }
    }
}

static NONE: std::sync::LazyLock<ProcessContext> =
    std::sync::LazyLock::new(ProcessContext::default);

impl Enricher {
    fn entry(&mut self, key: ProcessKey) -> &mut Entry {
        if self.cache.len() >= self.cap && !self.cache.contains_key(&key) {
            self.cache.clear();
        }
        self.cache.entry(key).or_insert_with(|| {
            let (details, vpid) = read_details(key.pid);
            Entry {
                context: ProcessContext {
                    vpid,
                    details: Arc::new(details),
                },
                announced: false,
            }
        })
    }

    /// The context of a process (read from /proc the first time; empty when it is gone).
    pub fn context(&mut self, key: ProcessKey) -> &ProcessContext {
        if key.pid == 0 {
            return &NONE;
        }
        &self.entry(key).context
    }

    /// The context of a process the first time it is asked for this way (read from /proc if
    /// needed), `None` afterwards: what is written once per process as a `process-context`
    /// record and handed to the model.
    pub fn announce(&mut self, key: ProcessKey) -> Option<&ProcessContext> {
        if key.pid == 0 {
            return None;
        }
        let e = self.entry(key);
        if e.announced || e.context.details.is_empty() {
            return None;
        }
        e.announced = true;
        Some(&e.context)
    }

    /// Whether the context of a process is cached.
    pub fn knows(&self, key: ProcessKey) -> bool {
        self.cache.contains_key(&key)
    }

    /// Whether the context of a process was announced (it did IPC).
    pub fn was_announced(&self, key: ProcessKey) -> bool {
        self.cache.get(&key).is_some_and(|e| e.announced)
    }

    /// Forgets a process that exited or exec'd (an exec'd process is read again).
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
    fn finds_the_systemd_unit() {
        assert_eq!(
            systemd_unit("0::/system.slice/nginx.service").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            systemd_unit("0::/system.slice/postgresql@16-main.service/payload").as_deref(),
            Some("postgresql@16-main.service")
        );
        assert_eq!(
            systemd_unit(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-cache-4711.scope"
            )
            .as_deref(),
            Some("app-cache-4711.scope")
        );
        assert_eq!(
            systemd_unit("0::/user.slice/user-1000.slice/session-3.scope").as_deref(),
            Some("session-3.scope")
        );
        // cgroup v1 with systemd's named hierarchy.
        assert_eq!(
            systemd_unit("4:memory:/x\n1:name=systemd:/system.slice/cron.service\n0::/").as_deref(),
            Some("cron.service")
        );
        assert_eq!(systemd_unit("0::/"), None);
        assert_eq!(
            systemd_unit("0::/init.scope").as_deref(),
            Some("init.scope")
        );
        assert_eq!(systemd_unit(""), None);
    }

    #[test]
    fn the_service_to_blame() {
        let d = |unit: Option<&str>, container: Option<&str>| ProcessDetails {
            executable: Some("/usr/bin/cache".into()),
            unit: unit.map(str::to_owned),
            container_id: container.map(str::to_owned),
            ..ProcessDetails::default()
        };
        assert_eq!(
            d(Some("cache.service"), None).service("cache").as_deref(),
            Some("cache.service")
        );
        assert_eq!(
            d(Some("docker-x.scope"), Some(ID))
                .service("cache")
                .as_deref(),
            Some("container 4f1b7e3c2a9d")
        );
        assert_eq!(
            d(Some("session-3.scope"), None).service("cache").as_deref(),
            Some("/usr/bin/cache (session-3.scope)")
        );
        assert_eq!(
            d(Some("user@1000.service"), None)
                .service("cache")
                .as_deref(),
            Some("/usr/bin/cache (user@1000.service)")
        );
        assert_eq!(
            ProcessDetails::default().service("cache").as_deref(),
            Some("cache")
        );
        assert_eq!(ProcessDetails::default().service(""), None);
    }

    #[test]
    fn command_lines_are_bounded_and_printable() {
        assert_eq!(
            command_line(b"/usr/bin/cache\0--size\08192\0", 512).as_deref(),
            Some("/usr/bin/cache --size 8192")
        );
        assert_eq!(command_line(b"", 512), None);
        assert_eq!(command_line(b"\0", 512), None);
        assert_eq!(command_line(b"a\nb\0c", 512).as_deref(), Some("a\\nb c"));
        let long = vec![b'x'; 2000];
        let cut = command_line(&long, 512).unwrap();
        assert!(cut.len() <= 512 && cut.ends_with('…'), "{}", cut.len());
        // Multi-byte characters are never split.
        let wide = "é".repeat(600);
        let cut = command_line(wide.as_bytes(), 512).unwrap();
        assert!(cut.len() <= 512 && cut.ends_with('…'));
    }

    #[test]
    fn reads_the_innermost_pid() {
        assert_eq!(vpid("Name:\tx\nNSpid:\t4711\t12\n", 4711), Some(12));
        assert_eq!(vpid("NSpid:\t4711\n", 4711), None);
        assert_eq!(vpid("no such line", 1), None);
    }

    #[test]
    fn our_own_context_is_read_and_announced_once() {
        let mut e = Enricher::default();
        let me = ProcessKey {
            pid: std::process::id(),
            start_ticks: 0,
        };
        let first = e.context(me).clone();
        assert_eq!(e.context(me), &first);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            first.executable(),
            Some(exe.to_string_lossy().as_ref()),
            "{first:?}"
        );
        assert!(first.details.command_line.is_some());
        // The chain ends at pid 1 (or at the first ancestor we may not see).
        let chain = &first.details.ancestors;
        assert!(!chain.is_empty());
        assert_eq!(chain[0].pid, std::os::unix::process::parent_id());
        assert!(!e.was_announced(me));
        assert!(e.announce(me).is_some());
        assert!(e.was_announced(me));
        assert!(e.announce(me).is_none());
        e.forget(me);
        assert!(!e.knows(me));
    }
}
