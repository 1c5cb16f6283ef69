//! The benchmark workload `cargo xtask bench` drives. It never touches an object it did not
//! create, and what it creates goes when it does (removed, or created in a private IPC
//! namespace that dies with it).
//!
//! `ipc-bench loops [--loops a,b,...] [--samples K] [--sample-ms MS] [--cpu N]`: hot System V
//! IPC loops (and one syscall ipcaudit does not trace), each timed in-process. Each loop runs
//! `K` samples of a fixed number of iterations (calibrated so that a sample takes about `MS`
//! ms); one tab-separated line per loop: `loop NAME WALL_NS CPU_NS ITERS MIN_WALL_NS` (medians
//! of wall-clock and thread-CPU ns per iteration, and the fastest sample).
//!
//! `ipc-bench stress --procs P --rate R --seconds S`: P processes creating, attaching,
//! detaching and removing objects (8 traced syscalls a cycle) at R syscalls/s in total, in a
//! private IPC namespace; prints `stress CALLS SECONDS`.
//!
//! `ipc-bench objects --count N`: in a private IPC namespace, N/3 segments (each attached once),
//! N/3 semaphore sets and N/3 queues; prints `ready OBJECTS ATTACHMENTS` and holds them until
//! stdin closes.
//!
//! `ipc-bench hold --procs P --segments K`: K segments (removed at once: they go with their
//! last attachment) attached by P processes each; prints `ready PROCESSES ATTACHMENTS` and
//! holds until stdin closes.
//!
//! `ipc-bench programs`: the loaded BPF programs named like ipcaudit's (root); prints
//! `programs COUNT NAMES`.
//!
//! The loops (one iteration each):
//! - `semop-glibc`: `semop()` −1 then +1 on one semaphore (glibc issues `semtimedop`);
//! - `semop-raw`: the same through `syscall(SYS_semop, ...)`;
//! - `msg`: `msgsnd` of 16 bytes then `msgrcv` of it (`IPC_NOWAIT`);
//! - `shmat`: `shmat` then `shmdt` of one 4 KiB segment;
//! - `shmget`: `shmget(IPC_PRIVATE, 4096)` then `shmctl(IPC_RMID)`;
//! - `getppid`: `syscall(SYS_getppid)`, which ipcaudit does not trace (the cost of being loaded).

use std::{
    io::Write as _,
    ptr,
    time::{Duration, Instant},
};

fn fail(what: &str) -> ! {
    eprintln!("ipc-bench: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(2);
}

/// The objects the loops use; removed on drop.
struct Objects {
    semid: i32,
    msqid: i32,
    shmid: i32,
}

impl Objects {
    fn create() -> Self {
        // SAFETY: plain syscall wrappers.
        unsafe {
            let sem = libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600);
            if sem < 0 {
                fail("semget");
            }
            if libc::semctl(sem, 0, libc::SETVAL, 1) != 0 {
                fail("semctl(SETVAL)");
            }
            let queue = libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600);
            if queue < 0 {
                fail("msgget");
            }
            let segment = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
            if segment < 0 {
                fail("shmget");
            }
            Self {
                semid: sem,
                msqid: queue,
                shmid: segment,
            }
        }
    }
}

impl Drop for Objects {
    fn drop(&mut self) {
        // SAFETY: removing the objects this process created.
        unsafe {
            libc::semctl(self.semid, 0, libc::IPC_RMID);
            libc::msgctl(self.msqid, libc::IPC_RMID, ptr::null_mut());
            libc::shmctl(self.shmid, libc::IPC_RMID, ptr::null_mut());
        }
    }
}

#[repr(C)]
struct Msg {
    mtype: libc::c_long,
    text: [u8; 16],
}

const LOOPS: [&str; 6] = [
    "semop-glibc",
    "semop-raw",
    "msg",
    "shmat",
    "shmget",
    "getppid",
];

/// One iteration of loop `name`.
fn iteration(name: &str) -> fn(&Objects) {
    match name {
        "semop-glibc" => |o| {
            let mut down = libc::sembuf {
                sem_num: 0,
                sem_op: -1,
                sem_flg: 0,
            };
            let mut up = libc::sembuf {
                sem_num: 0,
                sem_op: 1,
                sem_flg: 0,
            };
            // SAFETY: valid sembuf pointers.
            unsafe {
                if libc::semop(o.semid, &raw mut down, 1) != 0
                    || libc::semop(o.semid, &raw mut up, 1) != 0
                {
                    fail("semop");
                }
            }
        },
        "semop-raw" => |o| {
            let down = libc::sembuf {
                sem_num: 0,
                sem_op: -1,
                sem_flg: 0,
            };
            let up = libc::sembuf {
                sem_num: 0,
                sem_op: 1,
                sem_flg: 0,
            };
            // SAFETY: valid sembuf pointers.
            unsafe {
                if libc::syscall(libc::SYS_semop, o.semid, &raw const down, 1) != 0
                    || libc::syscall(libc::SYS_semop, o.semid, &raw const up, 1) != 0
                {
                    fail("semop (raw)");
                }
            }
        },
        "msg" => |o| {
            let mut m = Msg {
                mtype: 1,
                text: *b"ipcaudit bench!\n",
            };
            // SAFETY: valid message buffers.
            unsafe {
                if libc::msgsnd(o.msqid, (&raw const m).cast(), 16, libc::IPC_NOWAIT) != 0 {
                    fail("msgsnd");
                }
                if libc::msgrcv(o.msqid, (&raw mut m).cast(), 16, 0, libc::IPC_NOWAIT) != 16 {
                    fail("msgrcv");
                }
            }
        },
        "shmat" => |o| {
            // SAFETY: attach then detach at the address shmat chose.
            unsafe {
                let addr = libc::shmat(o.shmid, ptr::null(), 0);
                if addr as isize == -1 {
                    fail("shmat");
                }
                if libc::shmdt(addr) != 0 {
                    fail("shmdt");
                }
            }
        },
        "shmget" => |_| {
            // SAFETY: create then remove a private segment.
            unsafe {
                let id = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
                if id < 0 {
                    fail("shmget (loop)");
                }
                if libc::shmctl(id, libc::IPC_RMID, ptr::null_mut()) != 0 {
                    fail("shmctl(IPC_RMID)");
                }
            }
        },
        "getppid" => |_| {
            // SAFETY: no arguments.
            unsafe { libc::syscall(libc::SYS_getppid) };
        },
        other => {
            eprintln!(
                "ipc-bench: unknown loop {other:?}; loops: {}",
                LOOPS.join(",")
            );
            std::process::exit(2);
        }
    }
}

/// This thread's CPU time (user + system), ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Runs `iters` iterations: (wall ns, this thread's CPU ns) per iteration.
fn time_iters(f: fn(&Objects), o: &Objects, iters: u64) -> (f64, f64) {
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    for _ in 0..iters {
        f(o);
    }
    let wall = start.elapsed().as_nanos();
    let cpu = thread_cpu_ns().saturating_sub(cpu0);
    #[expect(
        clippy::cast_precision_loss,
        reason = "ns over a sample and iteration counts are far below 2^52"
    )]
    let per = |ns: f64| ns / iters as f64;
    #[expect(
        clippy::cast_precision_loss,
        reason = "ns over a sample are far below 2^52"
    )]
    (per(wall as f64), per(cpu as f64))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) != 0 {
            fail("sched_setaffinity");
        }
    }
}

fn arg_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn parse<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    match arg_value(args, name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("ipc-bench: bad value for {name}: {v:?}");
            std::process::exit(2);
        }),
    }
}

fn loops(args: &[String]) {
    let loops: Vec<String> = arg_value(args, "--loops").map_or_else(
        || LOOPS.iter().map(|s| (*s).to_owned()).collect(),
        |v| v.split(',').map(str::to_owned).collect(),
    );
    let samples: usize = parse(args, "--samples", 11);
    let sample_ms: u64 = parse(args, "--sample-ms", 20);
    if let Some(cpu) = arg_value(args, "--cpu") {
        pin(cpu.parse().unwrap_or_else(|_| fail("--cpu")));
    }
    let objects = Objects::create();
    let mut out = std::io::stdout().lock();
    for name in &loops {
        let f = iteration(name);
        // Warm up and calibrate: iterations for about `sample_ms`.
        let (probe, _) = time_iters(f, &objects, 2000);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a positive iteration count well inside u64"
        )]
        let iters = ((sample_ms as f64 * 1e6 / probe.max(1.0)) as u64).max(1000);
        let (mut wall, mut cpu): (Vec<f64>, Vec<f64>) =
            (0..samples).map(|_| time_iters(f, &objects, iters)).unzip();
        let fastest = wall.iter().copied().fold(f64::INFINITY, f64::min);
        let _ = writeln!(
            out,
            "loop\t{name}\t{:.1}\t{:.1}\t{iters}\t{fastest:.1}",
            median(&mut wall),
            median(&mut cpu)
        );
    }
    let _ = out.flush();
}

/// A private IPC namespace: what is created in it goes when the last process in it exits.
fn private_ipc_namespace() {
    // SAFETY: unshare of the IPC namespace only.
    if unsafe { libc::unshare(libc::CLONE_NEWIPC) } != 0 {
        fail("unshare(CLONE_NEWIPC)");
    }
}

/// Raises a limit of this (private) IPC namespace.
fn set_limit(name: &str, value: &str) {
    if let Err(e) = std::fs::write(format!("/proc/sys/kernel/{name}"), value) {
        eprintln!("ipc-bench: cannot set {name}: {e}");
        std::process::exit(2);
    }
}

/// Children die with the parent: nothing is left behind if the bench is killed.
fn die_with_parent() {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
}

fn wait_stdin_closed() {
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
}

fn monotonic() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// One lifecycle cycle: 8 traced syscalls.
fn lifecycle_cycle() {
    // SAFETY: create, attach, detach and remove objects of this process's namespace.
    unsafe {
        let segment = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
        if segment < 0 {
            fail("stress shmget");
        }
        let addr = libc::shmat(segment, ptr::null(), 0);
        if addr as isize == -1 {
            fail("stress shmat");
        }
        libc::shmdt(addr);
        libc::shmctl(segment, libc::IPC_RMID, ptr::null_mut());
        let sem = libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600);
        if sem < 0 {
            fail("stress semget");
        }
        libc::semctl(sem, 0, libc::IPC_RMID);
        let queue = libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600);
        if queue < 0 {
            fail("stress msgget");
        }
        libc::msgctl(queue, libc::IPC_RMID, ptr::null_mut());
    }
}

const CALLS_PER_CYCLE: u64 = 8;

fn stress(args: &[String]) {
    let procs: u64 = parse(args, "--procs", 4);
    let rate: u64 = parse(args, "--rate", 200_000);
    let seconds: f64 = parse(args, "--seconds", 3.0);
    private_ipc_namespace();
    // Each process paces itself to rate / 8 / procs cycles a second.
    let interval =
        Duration::from_nanos((1_000_000_000 * CALLS_PER_CYCLE * procs.max(1) / rate.max(1)).max(1));
    let total = Duration::from_secs_f64(seconds);
    let (rd, wr) = pipe();
    let start = monotonic();
    let mut children = Vec::new();
    for _ in 0..procs {
        // SAFETY: the child only makes syscalls, then _exits.
        let child = unsafe { libc::fork() };
        if child < 0 {
            fail("fork");
        }
        if child == 0 {
            die_with_parent();
            let mut next = start;
            let mut cycles = 0u64;
            while monotonic().saturating_sub(start) < total {
                lifecycle_cycle();
                cycles += 1;
                next += interval;
                let now = monotonic();
                if next > now {
                    std::thread::sleep(next.saturating_sub(now));
                }
            }
            let bytes = cycles.to_ne_bytes();
            // SAFETY: an 8-byte write to a pipe is atomic; then exit without the parent's
            // handlers.
            unsafe {
                libc::write(wr, bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
        }
        children.push(child);
    }
    // SAFETY: the parent's copy of the write end.
    unsafe { libc::close(wr) };
    let mut cycles = 0u64;
    let mut buf = [0u8; 8];
    // SAFETY: reading 8 bytes into an 8-byte buffer until every child wrote (or EOF).
    while unsafe { libc::read(rd, buf.as_mut_ptr().cast(), 8) } == 8 {
        cycles += u64::from_ne_bytes(buf);
    }
    for child in children {
        wait(child);
    }
    let elapsed = monotonic().saturating_sub(start).as_secs_f64();
    println!("stress\t{}\t{elapsed:.3}", cycles * CALLS_PER_CYCLE);
}
fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: valid out array of two ints.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        fail("pipe");
    }
    (fds[0], fds[1])
}

fn wait(child: i32) {
    let mut status = 0;
    // SAFETY: valid out pointer.
    unsafe { libc::waitpid(child, &raw mut status, 0) };
}

fn objects(args: &[String]) {
    let count: u64 = parse(args, "--count", 30_000);
    let per = count / 3;
    private_ipc_namespace();
    let limit = (per + 100).to_string();
    set_limit("shmmni", &limit);
    set_limit("msgmni", &limit);
    set_limit("sem", &format!("250 {} 32 {limit}", (per + 100) * 2));
    let mut attachments = 0u64;
    // SAFETY: creating and attaching objects in this private namespace.
    unsafe {
        for _ in 0..per {
            let shmid = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
            if shmid < 0 {
                fail("objects shmget");
            }
            if libc::shmat(shmid, ptr::null(), 0) as isize == -1 {
                fail("objects shmat");
            }
            attachments += 1;
            if libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600) < 0 {
                fail("objects semget");
            }
            if libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) < 0 {
                fail("objects msgget");
            }
        }
    }
    println!("ready\t{}\t{attachments}", per * 3);
    let _ = std::io::stdout().flush();
    wait_stdin_closed();
}

fn hold(args: &[String]) {
    let procs: u64 = parse(args, "--procs", 5000);
    let segments: u64 = parse(args, "--segments", 2);
    let ids: Vec<i32> = (0..segments)
        .map(|_| {
            // SAFETY: plain syscall wrapper.
            let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
            if id < 0 {
                fail("hold shmget");
            }
            id
        })
        .collect();
    let (rd, wr) = pipe();
    let mut children = Vec::new();
    for _ in 0..procs {
        // SAFETY: the child only makes syscalls and sleeps until killed.
        let child = unsafe { libc::fork() };
        if child < 0 {
            fail("fork");
        }
        if child == 0 {
            die_with_parent();
            for id in &ids {
                // SAFETY: attaching a segment the parent created.
                if unsafe { libc::shmat(*id, ptr::null(), 0) } as isize == -1 {
                    fail("hold shmat");
                }
            }
            // SAFETY: one byte to say it is attached, then sleep until killed.
            unsafe {
                libc::write(wr, [1u8].as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        children.push(child);
    }
    // SAFETY: the parent's copy of the write end; then one byte per attached child.
    unsafe { libc::close(wr) };
    let mut attached = 0u64;
    let mut buf = [0u8; 256];
    while attached < procs {
        // SAFETY: reading into a buffer of its length.
        let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        attached += u64::try_from(n).unwrap_or(0);
    }
    // Removed at once: the segments go with their last attachment, however this ends.
    for id in &ids {
        // SAFETY: removing segments this process created.
        unsafe { libc::shmctl(*id, libc::IPC_RMID, ptr::null_mut()) };
    }
    println!("ready\t{attached}\t{}", attached * segments);
    let _ = std::io::stdout().flush();
    wait_stdin_closed();
    for child in &children {
        // SAFETY: killing our own children.
        unsafe { libc::kill(*child, libc::SIGKILL) };
    }
    for child in children {
        wait(child);
    }
}

/// `bpf(2)` with an attribute buffer.
fn bpf(cmd: i32, attr: &mut [u8]) -> i64 {
    // SAFETY: `attr` is a valid buffer of the given size for the command's union member.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

/// Names of the BPF programs loaded in the kernel now (`BPF_PROG_GET_NEXT_ID`,
/// `BPF_PROG_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD`; root).
fn loaded_programs() -> Vec<String> {
    const GET_NEXT_ID: i32 = 11;
    const GET_FD_BY_ID: i32 = 13;
    const GET_INFO_BY_FD: i32 = 15;
    let mut names = Vec::new();
    let mut id = 0u32;
    loop {
        let mut attr = [0u8; 16];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        if bpf(GET_NEXT_ID, &mut attr) != 0 {
            break;
        }
        id = u32::from_ne_bytes([attr[4], attr[5], attr[6], attr[7]]);
        let mut attr = [0u8; 16];
        attr[..4].copy_from_slice(&id.to_ne_bytes());
        let Ok(fd) = i32::try_from(bpf(GET_FD_BY_ID, &mut attr)) else {
            continue;
        };
        if fd < 0 {
            continue;
        }
        // struct bpf_prog_info: name[16] at offset 64.
        let mut info = [0u8; 256];
        let mut attr = [0u8; 16];
        attr[..4].copy_from_slice(&fd.cast_unsigned().to_ne_bytes());
        attr[4..8].copy_from_slice(&256u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
        if bpf(GET_INFO_BY_FD, &mut attr) == 0 {
            let name = &info[64..80];
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            names.push(String::from_utf8_lossy(&name[..end]).into_owned());
        }
        // SAFETY: closing the fd we were given.
        unsafe { libc::close(fd) };
    }
    names
}

/// `ipc-bench programs`: how many loaded BPF programs have the names ipcaudit's programs have
/// (`sys_exit_*`, `fexit_*`, `sched_process_*`), and which.
fn programs() {
    let ours: Vec<String> = loaded_programs()
        .into_iter()
        .filter(|n| {
            n.starts_with("sys_exit_") || n.starts_with("fexit_") || n.starts_with("sched_process")
        })
        .collect();
    println!("programs\t{}\t{}", ours.len(), ours.join(","));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("loops") => loops(rest),
        Some("stress") => stress(rest),
        Some("objects") => objects(rest),
        Some("hold") => hold(rest),
        Some("programs") => programs(),
        _ => {
            eprintln!(
                "usage: ipc-bench loops|stress|objects|hold|programs [OPTIONS] (see the source)"
            );
            std::process::exit(2);
        }
    }
}
