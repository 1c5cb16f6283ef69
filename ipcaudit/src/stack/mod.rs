//! Call sites: the user stack the kernel recorded when an object was created or attached
//! (`StackRecord`), unwound and symbolized off the hot path.
//!
//! The collector hands each stack, with the process's memory map read at once, to a worker
//! thread ([`Worker`]) and applies what comes back to the model (and writes a `call-site`
//! record). The worker ([`Resolver`]) unwinds the copied stack with the binaries' `.eh_frame`
//! (`unwind.rs`: full stacks without frame pointers), and names each frame with blazesym: the
//! function from the ELF symbols, file and line from DWARF, cached per binary. When the process
//! was gone before its memory map could be read, the kernel's frame-pointer walk (build id and
//! file offset per frame) is symbolized instead, by build id. A stack shorter than the
//! program's says why (`CallSite::reason`).

pub mod maps;
pub mod unwind;

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use blazesym::symbolize::{Input, Symbolized, Symbolizer, source::Elf, source::Source};

use crate::event::{CallSite, Frame, IpcType, Task};

use self::{
    maps::Mapping,
    unwind::{ElfCache, Memory, Regs, Stop},
};

/// One frame of the kernel's frame-pointer walk with its build id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildIdFrame {
    /// 1: `build_id` and `offset` (a file offset) are valid; 2: `offset` is an address.
    pub status: i32,
    pub build_id: [u8; 20],
    pub offset: u64,
}

/// A `StackRecord` as the kernel wrote it (decoded, times on the wall clock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawStack {
    pub time_ns: u64,
    pub ipc_ns: u32,
    pub task: Task,
    /// The ABI kind of the syscall it belongs to.
    pub of_kind: u16,
    pub ret: i64,
    pub arg0: u64,
    pub regs: Regs,
    /// The kernel's frame-pointer walk (return addresses).
    pub frames: Vec<u64>,
    /// The same with build ids.
    pub build_ids: Vec<BuildIdFrame>,
    /// The user stack from `regs.sp` up.
    pub stack: Vec<u8>,
}

/// What a call site belongs to: a creation (`attach: None`) or an attach at an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteOf {
    pub ns: u32,
    pub ty: IpcType,
    pub id: i32,
    pub attach: Option<u64>,
}

impl RawStack {
    /// The object and operation the stack is the call site of (`None` for a failed call).
    pub fn site_of(&self) -> Option<SiteOf> {
        use ipcaudit_ebpf::kind;
        if (-4095..0).contains(&self.ret) {
            return None;
        }
        let id = i32::try_from(self.ret).ok();
        let (ty, id, attach) = match self.of_kind {
            kind::SHMGET => (IpcType::Shm, id?, None),
            kind::SEMGET => (IpcType::Sem, id?, None),
            kind::MSGGET => (IpcType::Msg, id?, None),
            kind::SHMAT => (
                IpcType::Shm,
                u32::try_from(self.arg0 & 0xffff_ffff).ok()?.cast_signed(),
                Some(self.ret.cast_unsigned()),
            ),
            _ => return None,
        };
        Some(SiteOf {
            ns: self.ipc_ns,
            ty,
            id,
            attach,
        })
    }
}

/// A stack to resolve: the record, what it is the call site of, and the process's memory map
/// as read when the record arrived (empty if the process was gone).
pub struct Job {
    pub raw: RawStack,
    pub of: SiteOf,
    pub maps: Vec<Mapping>,
    /// The process's executable, when known (to find its build id if the map was empty).
    pub exe: Option<String>,
}

/// A resolved call site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub time_ns: u64,
    pub task: Task,
    pub of: SiteOf,
    pub site: CallSite,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Unwinds and symbolizes stacks, with caches per binary.
pub struct Resolver {
    symbolizer: Symbolizer,
    elf: ElfCache,
    /// Build id → a path of the binary (every binary seen so far).
    by_build_id: HashMap<Vec<u8>, PathBuf>,
    /// Whether ipcaudit's own binaries' build ids are known.
    seeded: bool,
}

impl Default for Resolver {
    fn default() -> Self {
        Self {
            symbolizer: Symbolizer::new(),
            elf: ElfCache::default(),
            by_build_id: HashMap::new(),
            seeded: false,
        }
    }
}

/// The path of a process's file as ipcaudit can open it: through `/proc/PID/root` while the
/// process lives (it may be in another mount namespace), else as named.
fn openable(pid: u32, path: &str) -> PathBuf {
    let rooted = PathBuf::from(format!("/proc/{pid}/root{path}"));
    if rooted.exists() {
        rooted
    } else {
        PathBuf::from(path)
    }
}

impl Resolver {
    /// Forgets the parsed binaries (symbols, DWARF, unwind tables) and unmaps them; the build
    /// ids seen so far are kept (a gone process's stack is named by them).
    fn release_caches(&mut self) {
        self.symbolizer = Symbolizer::new();
        self.elf = ElfCache::default();
    }

    /// Names `(module, file offset)` pairs: the function, file and line of each.
    fn symbolize(&mut self, pid: u32, frames: &mut [Frame]) {
        let mut by_module: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, f) in frames.iter().enumerate() {
            if let Some(m) = &f.module {
                by_module.entry(m.clone()).or_default().push(i);
            }
        }
        for (module, idx) in by_module {
            let path = openable(pid, &module);
            let offsets: Vec<u64> = idx.iter().map(|&i| frames[i].address).collect();
            let source = Source::Elf(Elf::new(&path));
            let Ok(syms) = self
                .symbolizer
                .symbolize(&source, Input::FileOffset(&offsets))
            else {
                log::debug!("cannot symbolize {}", path.display());
                continue;
            };
            for (&i, sym) in idx.iter().zip(syms) {
                if let Symbolized::Sym(sym) = sym {
                    let f = &mut frames[i];
                    f.function = Some(sym.name.to_string());
                    if let Some(ci) = &sym.code_info {
                        f.file = Some(ci.file.to_string_lossy().into_owned());
                        f.line = ci.line;
                    }
                }
            }
        }
    }

    fn note_build_id(&mut self, path: &Path, build_id: Option<&[u8]>) -> Option<String> {
        let id = build_id?;
        self.by_build_id
            .entry(id.to_vec())
            .or_insert_with(|| path.to_path_buf());
        Some(hex(id))
    }

    /// Learns the build ids of the binaries ipcaudit itself maps (the C library and the loader
    /// are shared with most processes) and of `exe`.
    fn seed(&mut self, exe: Option<&str>) {
        if !self.seeded {
            self.seeded = true;
            let own = std::process::id();
            for m in maps::read(own).iter().filter(|m| m.executable) {
                let info = self.elf.get(m, own);
                self.note_build_id(
                    Path::new(&m.path),
                    info.as_ref().and_then(|i| i.build_id.as_deref()),
                );
            }
        }
        if let Some(exe) = exe {
            let path = PathBuf::from(exe);
            if let Some(info) = unwind::ElfInfo::load(&path) {
                self.note_build_id(&path, info.build_id.as_deref());
            }
        }
    }

    /// A memory map rebuilt from the kernel's frame-pointer walk, for a process that was gone
    /// before its own could be read: each frame is a return address and, by build id, a file
    /// offset in a known binary, which places that binary's load segments.
    fn maps_from_build_ids(&mut self, job: &Job) -> Vec<Mapping> {
        self.seed(job.exe.as_deref());
        let raw = &job.raw;
        let mut out: Vec<Mapping> = Vec::new();
        for (b, &ip) in raw.build_ids.iter().zip(&raw.frames) {
            if b.status != 1 {
                continue;
            }
            let Some(path) = self.by_build_id.get(&b.build_id[..]).cloned() else {
                continue;
            };
            let path = path.to_string_lossy().into_owned();
            if out.iter().any(|m| m.path == path) {
                continue;
            }
            let probe = Mapping {
                start: 0,
                end: 0,
                offset: 0,
                executable: true,
                inode: 0,
                path: path.clone(),
            };
            let Some(info) = self.elf.get(&probe, u32::MAX) else {
                continue;
            };
            let bias = ip.wrapping_sub(b.offset);
            for &(offset, _, size) in info.segments() {
                let start = bias.wrapping_add(offset);
                out.push(Mapping {
                    start,
                    end: start.saturating_add(size),
                    offset,
                    executable: true,
                    inode: 0,
                    path: path.clone(),
                });
            }
        }
        out.sort_by_key(|m| m.start);
        out
    }

    /// Resolves one stack.
    pub fn resolve(&mut self, job: &Job) -> CallSite {
        let raw = &job.raw;
        let pid = raw.task.process.pid;
        let rebuilt;
        let maps = if job.maps.is_empty() {
            rebuilt = self.maps_from_build_ids(job);
            &rebuilt
        } else {
            &job.maps
        };
        if !maps.is_empty() && !raw.stack.is_empty() {
            let mem = Memory {
                base: raw.regs.sp,
                bytes: &raw.stack,
            };
            let (pcs, stop) = unwind::unwind(raw.regs, &mem, maps, pid, &mut self.elf);
            if !pcs.is_empty() {
                let mut frames: Vec<Frame> = pcs
                    .iter()
                    .enumerate()
                    .map(|(n, pc)| {
                        let m = pc.map.and_then(|i| maps.get(i));
                        // Return addresses point after the call: name the call.
                        let at = if n == 0 { pc.addr } else { pc.addr - 1 };
                        match m {
                            Some(m) => {
                                let elf = self.elf.get(m, pid);
                                let build_id = self.note_build_id(
                                    &openable(pid, &m.path),
                                    elf.as_ref().and_then(|e| e.build_id.as_deref()),
                                );
                                Frame {
                                    module: Some(m.path.clone()),
                                    build_id,
                                    address: m.file_offset(at),
                                    ..Frame::default()
                                }
                            }
                            None => Frame {
                                address: pc.addr,
                                ..Frame::default()
                            },
                        }
                    })
                    .collect();
                self.symbolize(pid, &mut frames);
                let reason = Self::why(&stop, &frames, job.maps.is_empty());
                return CallSite {
                    frames,
                    method: "eh-frame".to_owned(),
                    reason,
                };
            }
        }
        self.by_build_ids(job)
    }

    /// Why an `.eh_frame` walk ended before the outermost frame.
    fn why(stop: &Stop, frames: &[Frame], rebuilt: bool) -> Option<String> {
        let last = frames.last().map(|f| {
            f.function
                .clone()
                .unwrap_or_else(|| format!("{:#x}", f.address))
        });
        let name = |module: &str| module.rsplit('/').next().unwrap_or(module).to_owned();
        match stop {
            Stop::End => None,
            Stop::NotCode(addr) if rebuilt => Some(format!(
                "the process was gone before its memory map was read, and the return address \
                 {addr:#x} is in no binary its frame-pointer walk named"
            )),
            Stop::NotCode(addr) => Some(format!(
                "a return address ({addr:#x}) is outside the program's code"
            )),
            Stop::NoUnwindInfo { module } => Some(format!(
                "no frame pointers and no unwind tables (.eh_frame) in {} ({})",
                last.unwrap_or_default(),
                name(module)
            )),
            Stop::Unsupported { module } => Some(format!(
                "an unwind rule in {} ({}) that ipcaudit does not evaluate",
                last.unwrap_or_default(),
                name(module)
            )),
            Stop::StackCopyEnds(n) => Some(format!(
                "the copied stack ({n} bytes) ends before the outermost frame"
            )),
            Stop::Unreadable { module } => Some(format!("{module} could not be read")),
            Stop::Limit => Some("more frames than ipcaudit keeps".to_owned()),
        }
    }

    /// The kernel's frame-pointer walk, by build id (the process was gone before its memory
    /// map could be read).
    fn by_build_ids(&mut self, job: &Job) -> CallSite {
        let raw = &job.raw;
        self.seed(job.exe.as_deref());
        let mut frames: Vec<Frame> = Vec::new();
        for (n, b) in raw.build_ids.iter().enumerate() {
            let back = u64::from(n > 0);
            match b.status {
                1 => {
                    let id = b.build_id.to_vec();
                    let path = self.by_build_id.get(&id).cloned();
                    frames.push(Frame {
                        module: path.map(|p| p.to_string_lossy().into_owned()),
                        build_id: Some(hex(&id)),
                        address: b.offset.saturating_sub(back),
                        ..Frame::default()
                    });
                }
                2 => frames.push(Frame {
                    address: b.offset,
                    ..Frame::default()
                }),
                _ => break,
            }
        }
        if frames.is_empty() {
            frames = raw
                .frames
                .iter()
                .map(|&a| Frame {
                    address: a,
                    ..Frame::default()
                })
                .collect();
        }
        self.symbolize(u32::MAX, &mut frames);
        let no_regs = raw.regs.ip == 0 && raw.regs.sp == 0 && raw.stack.is_empty();
        let mut reason = if no_regs {
            // The kernel program had no user registers to copy the stack from.
            "this kernel gives BPF programs no user registers (bpf_task_pt_regs, Linux 5.15): \
             the kernel's frame-pointer walk"
                .to_owned()
        } else if job.maps.is_empty() {
            "the process was gone before its memory map was read: the kernel's frame-pointer walk"
                .to_owned()
        } else {
            "the stack could not be copied: the kernel's frame-pointer walk".to_owned()
        };
        if frames.len() <= 2 {
            reason.push_str(", and the program has no frame pointers");
        }
        CallSite {
            frames,
            method: "frame-pointers".to_owned(),
            reason: Some(reason),
        }
    }
}

/// How long the symbolizer thread waits for more stacks before it lets go of its per-binary
/// caches: blazesym's parsed ELF and DWARF and the mapped files cost megabytes per binary (16 MB
/// for a small program with debug information, 400 bytes per object of `ipc-bench objects`),
/// while a burst of creates and attaches needs them only for its duration. The next stack
/// parses the binary again, on this thread, off the collector's path.
const IDLE_RELEASE: Duration = Duration::from_millis(500);

/// The next job; the caches are dropped when none comes for [`IDLE_RELEASE`]. `None` once the
/// collector hung up.
fn next_job(rx: &mpsc::Receiver<Job>, resolver: &mut Resolver) -> Option<Job> {
    match rx.recv_timeout(IDLE_RELEASE) {
        Ok(job) => Some(job),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            resolver.release_caches();
            rx.recv().ok()
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => None,
    }
}

/// The resolver on its own thread: the collector submits jobs and polls for results.
pub struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Resolved>,
    pending: usize,
}

impl Worker {
    pub fn start() -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (tx, done) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("ipcaudit-stacks".to_owned())
            .spawn(move || {
                let mut resolver = Resolver::default();
                while let Some(job) = next_job(&rx, &mut resolver) {
                    let site = resolver.resolve(&job);
                    let done = Resolved {
                        time_ns: job.raw.time_ns,
                        task: job.raw.task,
                        of: job.of,
                        site,
                    };
                    if tx.send(done).is_err() {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("call sites are off: cannot start the symbolizer thread: {e}");
        }
        Self {
            jobs: Some(jobs),
            done,
            pending: 0,
        }
    }

    /// Queues a stack (a bounded number wait: past 4096 the new ones are dropped).
    pub fn submit(&mut self, job: Job) {
        if self.pending >= 4096 {
            log::debug!("symbolizer busy: a call site is dropped");
            return;
        }
        if let Some(jobs) = &self.jobs
            && jobs.send(job).is_ok()
        {
            self.pending += 1;
        }
    }

    /// The call sites resolved so far.
    pub fn poll(&mut self) -> Vec<Resolved> {
        let out: Vec<Resolved> = self.done.try_iter().collect();
        self.pending = self.pending.saturating_sub(out.len());
        out
    }

    /// Waits (at most `timeout`) for the stacks still queued.
    pub fn finish(&mut self, timeout: Duration) -> Vec<Resolved> {
        self.jobs = None;
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while self.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok(r) => {
                    self.pending -= 1;
                    out.push(r);
                }
                Err(_) => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ProcessKey;

    fn raw(of_kind: u16, ret: i64, arg0: u64) -> RawStack {
        RawStack {
            time_ns: 1,
            ipc_ns: 7,
            task: Task {
                process: ProcessKey {
                    pid: std::process::id(),
                    start_ticks: 1,
                },
                tid: 1,
                comm: "t".into(),
                uid: 0,
            },
            of_kind,
            ret,
            arg0,
            regs: Regs {
                ip: 0,
                sp: 0,
                bp: 0,
            },
            frames: Vec::new(),
            build_ids: Vec::new(),
            stack: Vec::new(),
        }
    }

    #[test]
    fn what_a_stack_is_the_call_site_of() {
        use ipcaudit_ebpf::kind;
        assert_eq!(
            raw(kind::SEMGET, 5, 0x1234).site_of(),
            Some(SiteOf {
                ns: 7,
                ty: IpcType::Sem,
                id: 5,
                attach: None
            })
        );
        assert_eq!(
            raw(kind::SHMAT, 0x7f00_0000_0000, 9).site_of(),
            Some(SiteOf {
                ns: 7,
                ty: IpcType::Shm,
                id: 9,
                attach: Some(0x7f00_0000_0000)
            })
        );
        assert_eq!(raw(kind::SHMGET, -22, 0).site_of(), None);
        assert_eq!(raw(kind::SEMOP, 0, 0).site_of(), None);
    }

    /// Symbolizes an address of this very test binary: function and module.
    #[test]
    fn names_a_function_of_this_binary() {
        let pid = std::process::id();
        let maps = maps::read(pid);
        let here = names_a_function_of_this_binary as *const () as u64;
        let m = maps::find(&maps, here).unwrap();
        let mut r = Resolver::default();
        // Twice: the second time after the idle thread dropped its caches.
        for _ in 0..2 {
            let mut frames = vec![Frame {
                module: Some(m.path.clone()),
                address: m.file_offset(here),
                ..Frame::default()
            }];
            r.symbolize(pid, &mut frames);
            let f = frames[0].function.as_deref().unwrap_or_default();
            assert!(f.contains("names_a_function_of_this_binary"), "{f}");
            assert!(
                frames[0]
                    .file
                    .as_deref()
                    .is_some_and(|p| p.ends_with("mod.rs")),
                "{frames:?}"
            );
            r.release_caches();
        }
    }

    #[test]
    fn a_gone_process_falls_back_to_build_ids() {
        let mut r = Resolver::default();
        let exe = std::env::current_exe().unwrap();
        let info = unwind::ElfInfo::load(&exe).unwrap();
        let id: [u8; 20] = info
            .build_id
            .as_deref()
            .and_then(|b| b.try_into().ok())
            .expect("test binaries have a 20-byte build id");
        let maps = maps::read(std::process::id());
        let here = a_gone_process_falls_back_to_build_ids as *const () as u64;
        let offset = maps::find(&maps, here).unwrap().file_offset(here);
        let mut s = raw(ipcaudit_ebpf::kind::SHMGET, 3, 0);
        // The kernel had the registers (the stack copy was lost with the process).
        s.regs.sp = 0x7ffd_0000_0000;
        s.build_ids = vec![BuildIdFrame {
            status: 1,
            build_id: id,
            offset,
        }];
        let mut no_regs = s.clone();
        no_regs.regs = Regs {
            ip: 0,
            sp: 0,
            bp: 0,
        };
        let site = r.resolve(&Job {
            raw: no_regs,
            of: SiteOf {
                ns: 7,
                ty: IpcType::Shm,
                id: 3,
                attach: None,
            },
            maps: maps.clone(),
            exe: None,
        });
        assert!(
            site.reason
                .as_deref()
                .is_some_and(|r| r.contains("no user registers")),
            "{site:?}"
        );
        let site = r.resolve(&Job {
            raw: s,
            of: SiteOf {
                ns: 7,
                ty: IpcType::Shm,
                id: 3,
                attach: None,
            },
            maps: Vec::new(),
            exe: Some(exe.to_string_lossy().into_owned()),
        });
        assert_eq!(site.method, "frame-pointers");
        assert!(
            site.frames[0]
                .function
                .as_deref()
                .is_some_and(|f| f.contains("a_gone_process_falls_back_to_build_ids")),
            "{site:?}"
        );
        assert!(
            site.reason
                .as_deref()
                .is_some_and(|r| r.contains("gone before") && r.contains("no frame pointers")),
            "{site:?}"
        );
    }
}
