//! The workload the root integration tests drive: performs real System V and POSIX IPC and
//! prints what it did (ids, names, addresses, pids) as one JSON object per line on stdout, so
//! that a test can expect exact records from ipcaudit.
//!
//! Usage: `ipc-workload SCENARIO [ARG]`. Scenarios are listed in `main`.

use std::{io::Write as _, ptr, time::Duration};

use serde_json::json;

fn say(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn fail(what: &str) -> ! {
    eprintln!("ipc-workload: {what}: {}", std::io::Error::last_os_error());
    std::process::exit(2);
}

fn pid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

fn shmget(size: usize) -> i32 {
    // SAFETY: plain syscall wrapper.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, size, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        fail("shmget");
    }
    id
}

fn shmat(id: i32) -> usize {
    // SAFETY: plain syscall wrapper; the mapping is only touched through raw pointers here.
    let addr = unsafe { libc::shmat(id, ptr::null(), 0) };
    if addr as isize == -1 {
        fail("shmat");
    }
    addr as usize
}

fn shmdt(addr: usize) {
    // SAFETY: `addr` came from shmat.
    if unsafe { libc::shmdt(addr as *const libc::c_void) } != 0 {
        fail("shmdt");
    }
}

fn rmid_shm(id: i32) {
    // SAFETY: plain syscall wrapper.
    if unsafe { libc::shmctl(id, libc::IPC_RMID, ptr::null_mut()) } != 0 {
        fail("shmctl(IPC_RMID)");
    }
}

fn fork() -> i32 {
    // SAFETY: the child only runs async-signal-safe code paths below before exiting
    // (syscalls, and stdout writes of small buffers).
    let child = unsafe { libc::fork() };
    if child < 0 {
        fail("fork");
    }
    child
}

fn wait(child: i32) {
    let mut status = 0;
    // SAFETY: valid out pointer.
    unsafe { libc::waitpid(child, &raw mut status, 0) };
}

/// shmget → shmat → shmdt → IPC_RMID (destroyed at once: nothing attached).
fn shm_basic() {
    let id = shmget(8192);
    let addr = shmat(id);
    shmdt(addr);
    rmid_shm(id);
    say(&json!({"pid": pid(), "shmid": id, "addr": format!("0x{addr:x}"), "size": 8192}));
}

/// IPC_RMID while attached, then the last detach destroys it.
fn shm_rmid_attached() {
    let id = shmget(4096);
    let addr = shmat(id);
    rmid_shm(id);
    shmdt(addr);
    say(&json!({"pid": pid(), "shmid": id, "addr": format!("0x{addr:x}")}));
}

/// An attachment inherited by a forked child; the child detaches with munmap and exits.
fn shm_fork_munmap() {
    let id = shmget(8192);
    let addr = shmat(id);
    let child = fork();
    if child == 0 {
        // SAFETY: unmapping the inherited attachment.
        if unsafe { libc::munmap(addr as *mut libc::c_void, 8192) } != 0 {
            fail("munmap");
        }
        // SAFETY: exit without running the parent's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    wait(child);
    shmdt(addr);
    rmid_shm(id);
    say(&json!({"pid": pid(), "child": child, "shmid": id, "addr": format!("0x{addr:x}")}));
}

/// semget, semop through glibc (which issues semtimedop), SETVAL, IPC_RMID.
fn sem_basic() {
    // SAFETY: plain syscall wrappers.
    unsafe {
        let id = libc::semget(libc::IPC_PRIVATE, 2, libc::IPC_CREAT | 0o600);
        if id < 0 {
            fail("semget");
        }
        if libc::semctl(id, 1, libc::SETVAL, 1) != 0 {
            fail("semctl(SETVAL)");
        }
        let mut ops = [
            libc::sembuf {
                sem_num: 1,
                sem_op: -1,
                sem_flg: SEM_UNDO,
            },
            libc::sembuf {
                sem_num: 0,
                sem_op: 1,
                sem_flg: 0,
            },
        ];
        if libc::semop(id, ops.as_mut_ptr(), 2) != 0 {
            fail("semop");
        }
        if libc::semctl(id, 0, libc::IPC_RMID) != 0 {
            fail("semctl(IPC_RMID)");
        }
        say(&json!({"pid": pid(), "semid": id}));
    }
}

/// `SEM_UNDO` as `sembuf.sem_flg` holds it.
const SEM_UNDO: i16 = 0x1000;

#[repr(C)]
struct Msg {
    mtype: libc::c_long,
    text: [u8; 16],
}

/// msgget, msgsnd (type 7, 16 bytes), msgrcv, IPC_RMID.
fn msg_basic() {
    // SAFETY: plain syscall wrappers with valid buffers.
    unsafe {
        let id = libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600);
        if id < 0 {
            fail("msgget");
        }
        let mut m = Msg {
            mtype: 7,
            text: *b"hello, ipcaudit!",
        };
        if libc::msgsnd(id, (&raw const m).cast(), 16, 0) != 0 {
            fail("msgsnd");
        }
        m.mtype = 0;
        let n = libc::msgrcv(id, (&raw mut m).cast(), 16, 0, 0);
        if n != 16 {
            fail("msgrcv");
        }
        if libc::msgctl(id, libc::IPC_RMID, ptr::null_mut()) != 0 {
            fail("msgctl(IPC_RMID)");
        }
        say(&json!({"pid": pid(), "msqid": id, "received_type": m.mtype}));
    }
}

/// shmat on an id that does not exist: EINVAL.
fn bad_shmat() {
    // SAFETY: the call fails; nothing is mapped.
    let addr = unsafe { libc::shmat(0x7fff_fff0, ptr::null(), 0) };
    say(
        &json!({"pid": pid(), "failed": addr as isize == -1, "errno": std::io::Error::last_os_error().raw_os_error()}),
    );
}

/// A child that execs `true` (its attachments are dropped at exec).
fn exec_child() {
    let id = shmget(4096);
    let addr = shmat(id);
    let child = fork();
    if child == 0 {
        let prog = c"/bin/true";
        let argv = [prog.as_ptr(), ptr::null()];
        // SAFETY: valid NUL-terminated argv.
        unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
        // SAFETY: exec failed; leave without the parent's handlers.
        unsafe { libc::_exit(127) };
    }
    wait(child);
    shmdt(addr);
    rmid_shm(id);
    say(&json!({"pid": pid(), "child": child, "shmid": id}));
}

/// Sleeps until killed.
fn hold() -> ! {
    loop {
        std::thread::sleep(Duration::from_hours(1));
    }
}

fn semop(id: i32, num: u16, op: i16, flags: i16) {
    let mut ops = [libc::sembuf {
        sem_num: num,
        sem_op: op,
        sem_flg: flags,
    }];
    // SAFETY: valid sembuf array of one.
    if unsafe { libc::semop(id, ops.as_mut_ptr(), 1) } != 0 {
        fail("semop");
    }
}

/// Creates and attaches a segment, then holds it until killed.
fn hold_shm() {
    let id = shmget(8192);
    let addr = shmat(id);
    say(&json!({"pid": pid(), "shmid": id, "addr": format!("0x{addr:x}")}));
    hold();
}

/// Attaches a segment, says so, and on SIGUSR1 unmaps it with munmap (no shmdt) and holds on:
/// an attachment made before ipcaudit started and dropped while it runs.
fn hold_shm_munmap() {
    // SAFETY: blocking SIGUSR1 in this single-threaded process, so that sigwait takes it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGUSR1);
        if libc::sigprocmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) != 0 {
            fail("sigprocmask");
        }
        set
    };
    let id = shmget(8192);
    let addr = shmat(id);
    say(&json!({"pid": pid(), "shmid": id, "addr": format!("0x{addr:x}")}));
    let mut sig = 0;
    // SAFETY: waiting for the blocked signal, then unmapping our own attachment.
    unsafe {
        if libc::sigwait(&raw const set, &raw mut sig) != 0 {
            fail("sigwait");
        }
        if libc::munmap(addr as *mut libc::c_void, 8192) != 0 {
            fail("munmap");
        }
    }
    hold();
}

/// Attachments of every shape the start-up scan reads, held until killed: read-write,
/// read-only, one partly unmapped (its range starts one page into the segment), a child whose
/// main thread exited while another of its threads holds an attachment, and a zombie child
/// (exited, never reaped).
fn scan_shapes() {
    const PAGE: usize = 4096;
    let id = shmget(3 * PAGE);
    let rw = shmat(id);
    // SAFETY: plain syscall wrappers on this process's own attachments.
    let ro = unsafe { libc::shmat(id, ptr::null(), libc::SHM_RDONLY) };
    if ro as isize == -1 {
        fail("shmat SHM_RDONLY");
    }
    let cut = shmat(id);
    // SAFETY: as above.
    if unsafe { libc::munmap(cut as *mut libc::c_void, PAGE) } != 0 {
        fail("munmap");
    }
    let leader_exited = fork();
    if leader_exited == 0 {
        let _ = shmat(id);
        std::thread::spawn(|| hold());
        // SAFETY: `exit` (not `exit_group`) ends this thread only; the other one holds on.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
        fail("exit");
    }
    let zombie = fork();
    if zombie == 0 {
        // SAFETY: leaving at once, never reaped.
        unsafe { libc::_exit(0) };
    }
    // Until the zombie has exited and the other child's main thread is gone.
    let state = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.chars().next()))
            .flatten()
    };
    let threads =
        |pid: i32| std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
    while state(zombie) != Some('Z')
        || state(leader_exited) != Some('Z')
        || threads(leader_exited) != 2
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    say(&json!({
        "pid": pid(),
        "shmid": id,
        "rw": format!("0x{rw:x}"),
        "ro": format!("0x{:x}", ro as usize),
        "cut": format!("0x{:x}", cut + PAGE),
        "leader_exited": leader_exited,
        "zombie": zombie,
    }));
    hold();
}

/// A child creates a segment (no attach) and exits; the parent never reaps it: a zombie creator.
fn zombie_creator() {
    let mut fds = [0; 2];
    // SAFETY: valid array of two fds.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        fail("pipe");
    }
    let [rd, wr] = fds;
    let child = fork();
    if child == 0 {
        let id = shmget(4096);
        let bytes = id.to_ne_bytes();
        // SAFETY: writing 4 bytes from a valid buffer, then leaving.
        unsafe {
            libc::write(wr, bytes.as_ptr().cast(), 4);
            libc::_exit(0);
        }
    }
    let mut bytes = [0u8; 4];
    // SAFETY: reading 4 bytes into a valid buffer.
    if unsafe { libc::read(rd, bytes.as_mut_ptr().cast(), 4) } != 4 {
        fail("read");
    }
    // Wait for the child to have exited without reaping it (WNOWAIT): it is a zombie from here.
    // SAFETY: zeroed siginfo out-parameter for our own child.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe {
        libc::waitid(
            libc::P_PID,
            child.cast_unsigned(),
            &raw mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    } != 0
    {
        fail("waitid");
    }
    say(&json!({"pid": pid(), "child": child, "shmid": i32::from_ne_bytes(bytes)}));
    hold();
}

/// The parent attaches; three children inherit the attachment: one shmdt's, one munmaps, one
/// execs `sleep`. Everyone then holds (the test kills them).
fn fork_three() {
    let id = shmget(8192);
    let addr = shmat(id);
    let a = fork();
    if a == 0 {
        shmdt(addr);
        hold();
    }
    let b = fork();
    if b == 0 {
        // SAFETY: unmapping the inherited attachment.
        if unsafe { libc::munmap(addr as *mut libc::c_void, 8192) } != 0 {
            fail("munmap");
        }
        hold();
    }
    let c = fork();
    if c == 0 {
        let prog = c"/bin/sleep";
        let arg = c"3600";
        let argv = [prog.as_ptr(), arg.as_ptr(), ptr::null()];
        // SAFETY: valid NUL-terminated argv.
        unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
        // SAFETY: exec failed.
        unsafe { libc::_exit(127) };
    }
    say(&json!({"pid": pid(), "children": [a, b, c], "shmid": id}));
    hold();
}

/// Creates a one-semaphore set at 1 and takes the unit (with SEM_UNDO when `undo`), then holds.
fn sem_hold(undo: bool) {
    // SAFETY: plain syscall wrappers.
    let id = unsafe { libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        fail("semget");
    }
    // SAFETY: as above.
    if unsafe { libc::semctl(id, 0, libc::SETVAL, 1) } != 0 {
        fail("semctl(SETVAL)");
    }
    // Used as a lock: take and give back once, then take and keep.
    let flags = if undo { SEM_UNDO } else { 0 };
    semop(id, 0, -1, flags);
    semop(id, 0, 1, flags);
    semop(id, 0, -1, flags);
    say(&json!({"pid": pid(), "semid": id}));
    hold();
}

/// Blocks taking a unit of semaphore 0 of set `id`, then gives it back and exits.
fn sem_wait(id: i32) {
    say(&json!({"pid": pid(), "semid": id}));
    semop(id, 0, -1, 0);
    semop(id, 0, 1, 0);
}

/// Creates a queue and receives from it forever.
fn msg_reader() {
    // SAFETY: plain syscall wrappers with valid buffers.
    unsafe {
        let id = libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600);
        if id < 0 {
            fail("msgget");
        }
        say(&json!({"pid": pid(), "msqid": id}));
        let mut m = Msg {
            mtype: 0,
            text: [0; 16],
        };
        loop {
            if libc::msgrcv(id, (&raw mut m).cast(), 16, 0, 0) < 0 {
                fail("msgrcv");
            }
        }
    }
}

/// Sends a message to queue `id` every 50 ms until killed.
fn msg_producer(id: i32) {
    say(&json!({"pid": pid(), "msqid": id}));
    let m = Msg {
        mtype: 1,
        text: *b"tick tick tick!!",
    };
    loop {
        // SAFETY: valid message buffer.
        if unsafe { libc::msgsnd(id, (&raw const m).cast(), 16, libc::IPC_NOWAIT) } != 0 {
            fail("msgsnd");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The parent attaches, forks a child that holds the inherited attachment, then removes the
/// segment, detaches and holds.
fn rmid_child() {
    let id = shmget(4096);
    let addr = shmat(id);
    let child = fork();
    if child == 0 {
        hold();
    }
    rmid_shm(id);
    shmdt(addr);
    say(&json!({"pid": pid(), "child": child, "shmid": id}));
    hold();
}

/// A child creates a segment (with the key given as argument, else private) and exits; the
/// parent reaps it and exits: an orphaned segment whose creator is gone.
fn orphan_shm() {
    let key = std::env::args()
        .nth(2)
        .and_then(|a| i32::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .unwrap_or(libc::IPC_PRIVATE);
    let mut fds = [0; 2];
    // SAFETY: valid array of two fds.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        fail("pipe");
    }
    let [rd, wr] = fds;
    let child = fork();
    if child == 0 {
        // SAFETY: plain syscall wrapper.
        let id = unsafe { libc::shmget(key, 4096, libc::IPC_CREAT | libc::IPC_EXCL | 0o600) };
        let bytes = id.to_ne_bytes();
        // SAFETY: writing 4 bytes from a valid buffer, then leaving.
        unsafe {
            libc::write(wr, bytes.as_ptr().cast(), 4);
            libc::_exit(0);
        }
    }
    let mut bytes = [0u8; 4];
    // SAFETY: reading 4 bytes into a valid buffer.
    if unsafe { libc::read(rd, bytes.as_mut_ptr().cast(), 4) } != 4 {
        fail("read");
    }
    wait(child);
    let id = i32::from_ne_bytes(bytes);
    if id < 0 {
        eprintln!("ipc-workload: the child's shmget failed");
        std::process::exit(2);
    }
    say(&json!({"pid": pid(), "child": child, "shmid": id, "key": format!("0x{key:08x}")}));
}

/// Run in a fresh IPC namespace (`unshare --ipc`): leaves an orphaned segment (its creator, a
/// child, is gone), then on SIGUSR1 removes it and creates another segment under the same id
/// (`kernel.shm_next_id`), which this live process holds.
fn reuse_id() {
    // SAFETY: an empty signal set, then SIGUSR1 blocked so that sigwait receives it.
    let set = unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, ptr::null_mut());
        set
    };
    let child = fork();
    if child == 0 {
        shmget(4096);
        // SAFETY: leave without the parent's handlers.
        unsafe { libc::_exit(0) };
    }
    wait(child);
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    let old: i32 = text
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("ipc-workload: no segment in the new namespace");
            std::process::exit(2)
        });
    say(&json!({"pid": pid(), "child": child, "shmid": old}));
    let mut sig = 0;
    // SAFETY: `set` holds SIGUSR1, which is blocked.
    unsafe { libc::sigwait(&raw const set, &raw mut sig) };
    rmid_shm(old);
    if std::fs::write("/proc/sys/kernel/shm_next_id", old.to_string()).is_err() {
        fail("write shm_next_id");
    }
    let new = shmget(4096);
    if new != old {
        eprintln!("ipc-workload: the new segment got id {new}, not {old}");
        std::process::exit(3);
    }
    hold();
}

/// Renames the process (`comm`, raw bytes given in hex, truncated by the kernel to 15) and
/// does the shm-basic scenario.
fn renamed(hex: &str) {
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    let mut name = [0u8; 16];
    let n = bytes.len().min(15);
    name[..n].copy_from_slice(&bytes[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated buffer of up to 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    shm_basic();
}

/// Several processes in tight shmget/shmat/shmdt/IPC_RMID and semop loops for SECS seconds (and
/// the shm ones for at least `SHM_ROUNDS` rounds):
/// far more records than a collector can take. Prints the number of loop iterations done.
fn storm(secs: u64) {
    const PROCS: usize = 4;
    // The shm children go on past the deadline until each has done this many rounds (5 records
    // each, over 1 MiB together), within a hard cap: on a slow machine or an emulator 3 s of
    // shmget/shmat/shmdt/RMID is not always enough to fill the test's 1 MiB ring.
    const SHM_ROUNDS: u64 = 2000;
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let cap = deadline + Duration::from_mins(1);
    let mut children = Vec::new();
    for i in 0..PROCS {
        let child = fork();
        if child == 0 {
            let mut n = 0u64;
            // SAFETY: plain syscalls on objects this child creates and removes.
            unsafe {
                let sem = libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600);
                loop {
                    let now = std::time::Instant::now();
                    let more_shm = i % 2 == 0 && n < SHM_ROUNDS && now < cap;
                    if now >= deadline && !more_shm {
                        break;
                    }
                    if i % 2 == 0 {
                        let id = libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600);
                        let addr = libc::shmat(id, ptr::null(), 0);
                        libc::shmdt(addr);
                        libc::shmctl(id, libc::IPC_RMID, ptr::null_mut());
                    } else {
                        let mut ops = [libc::sembuf {
                            sem_num: 0,
                            sem_op: 1,
                            sem_flg: 0,
                        }];
                        libc::semop(sem, ops.as_mut_ptr(), 1);
                        ops[0].sem_op = -1;
                        libc::semop(sem, ops.as_mut_ptr(), 1);
                    }
                    n += 1;
                }
                libc::semctl(sem, 0, libc::IPC_RMID);
                // Exit code: iterations in thousands (capped), for the parent's report.
                libc::_exit(i32::try_from((n / 1000).min(250)).unwrap_or(250));
            }
        }
        children.push(child);
    }
    let mut total = 0;
    for child in children {
        let mut status = 0;
        // SAFETY: valid out pointer.
        unsafe { libc::waitpid(child, &raw mut status, 0) };
        total += libc::WEXITSTATUS(status);
    }
    say(&json!({"pid": pid(), "kiloiterations": total}));
}

/// Runs `argv[2..]` as a grandchild and reports its peak RSS on stderr as `peak-rss-kib N`,
/// exiting with its status. The kernel carries a process's `maxrss` across `exec` from the
/// image it replaced, so a program spawned straight from a big test process reports that
/// process's size; forked from this small one, the figure is the program's own.
fn peak_rss() {
    let words: Vec<std::ffi::CString> = std::env::args()
        .skip(2)
        .map(|a| std::ffi::CString::new(a).expect("no NUL in arguments"))
        .collect();
    if words.is_empty() {
        eprintln!("ipc-workload: peak-rss takes a command");
        std::process::exit(2);
    }
    let mut argv: Vec<*const libc::c_char> = words.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: fork in a single-threaded program; the child only calls execvp and _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: argv is a NULL-terminated array of valid C strings.
        unsafe {
            libc::execvp(argv[0], argv.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: out-pointers to locals; waiting for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::wait4(child, &raw mut status, 0, &raw mut usage) };
    eprintln!("peak-rss-kib {}", usage.ru_maxrss);
    std::process::exit(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    });
}

// ---------------------------------------------------------------------------------------------
// POSIX IPC

/// The name argument of the POSIX scenarios (`/NAME`), as a C string.
fn arg_name() -> std::ffi::CString {
    let name = std::env::args().nth(2).unwrap_or_else(|| {
        eprintln!("ipc-workload: this scenario takes a POSIX name argument (/NAME)");
        std::process::exit(2)
    });
    std::ffi::CString::new(name).unwrap_or_else(|_| {
        eprintln!("ipc-workload: a name has no NUL byte");
        std::process::exit(2)
    })
}

/// The inode of an open descriptor.
fn inode(fd: i32) -> u64 {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat fills the struct it is given.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        fail("fstat");
    }
    // SAFETY: zero-initialized plain data, filled by the kernel.
    unsafe { st.assume_init() }.st_ino
}

/// Maps a POSIX shared memory object (creating it, 8192 bytes, when `create`), closes the
/// descriptor (the mapping keeps it) and holds.
fn posix_shm_map(create: bool) {
    let name = arg_name();
    let flags = if create {
        libc::O_CREAT | libc::O_EXCL | libc::O_RDWR
    } else {
        libc::O_RDWR
    };
    // SAFETY: plain libc calls with a valid name.
    let fd = unsafe { libc::shm_open(name.as_ptr(), flags, 0o600) };
    if fd < 0 {
        fail("shm_open");
    }
    // SAFETY: as above.
    if create && unsafe { libc::ftruncate(fd, 8192) } != 0 {
        fail("ftruncate");
    }
    // SAFETY: a shared mapping of the object; written through a raw pointer once.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        fail("mmap");
    }
    let ino = inode(fd);
    // SAFETY: the mapping is 8192 bytes long; the descriptor is ours.
    unsafe {
        *addr.cast::<u8>() = 1;
        libc::close(fd);
    }
    say(
        &json!({"pid": pid(), "name": name.to_string_lossy(), "ino": ino, "addr": format!("0x{:x}", addr as usize)}),
    );
    hold();
}

/// Creates a named semaphore (value 1), takes it, and holds (mapped).
fn posix_sem_hold() {
    let name = arg_name();
    // SAFETY: sem_open with O_CREAT takes a mode and a value.
    let sem = unsafe { libc::sem_open(name.as_ptr(), libc::O_CREAT | libc::O_EXCL, 0o600, 1u32) };
    if sem == libc::SEM_FAILED {
        fail("sem_open");
    }
    // SAFETY: a semaphore sem_open returned.
    if unsafe { libc::sem_wait(sem) } != 0 {
        fail("sem_wait");
    }
    say(&json!({"pid": pid(), "name": name.to_string_lossy()}));
    hold();
}

/// Creates a queue (10 messages of up to 64 bytes) open for reading and receives forever.
fn posix_mq_reader() {
    let name = arg_name();
    // SAFETY: plain data.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = 10;
    attr.mq_msgsize = 64;
    // SAFETY: mq_open with O_CREAT takes a mode and an attribute pointer.
    let q = unsafe {
        libc::mq_open(
            name.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDONLY,
            0o600,
            &raw const attr,
        )
    };
    if q < 0 {
        fail("mq_open");
    }
    say(&json!({"pid": pid(), "name": name.to_string_lossy(), "ino": inode(q)}));
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: a buffer of the queue's message size.
        if unsafe { libc::mq_receive(q, buf.as_mut_ptr().cast(), 64, ptr::null_mut()) } < 0 {
            fail("mq_receive");
        }
    }
}

/// Opens an existing queue write-only, sends COUNT (3) messages of 16 bytes, and holds.
fn posix_mq_writer() {
    let name = arg_name();
    let count: u32 = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    // SAFETY: plain libc call with a valid name.
    let q = unsafe { libc::mq_open(name.as_ptr(), libc::O_WRONLY) };
    if q < 0 {
        fail("mq_open");
    }
    for _ in 0..count {
        // SAFETY: a 16-byte message from a valid buffer.
        if unsafe { libc::mq_send(q, b"tick tick tick!!".as_ptr().cast(), 16, 1) } != 0 {
            fail("mq_send");
        }
    }
    say(&json!({"pid": pid(), "name": name.to_string_lossy(), "sent": count}));
    hold();
}

/// Creates queue NAME (4 messages of up to 32 bytes), sends three messages (priorities 3, 1,
/// 1), receives one, registers and removes an `mq_notify`, lets a forked child send one through
/// the inherited descriptor, then unlinks the queue and closes it.
fn posix_mq_basic() {
    let name = arg_name();
    // SAFETY: plain data.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = 4;
    attr.mq_msgsize = 32;
    // SAFETY: mq_open with O_CREAT takes a mode and an attribute pointer.
    let q = unsafe {
        libc::mq_open(
            name.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            0o600,
            &raw const attr,
        )
    };
    if q < 0 {
        fail("mq_open");
    }
    let send = |text: &[u8], prio: u32| {
        // SAFETY: a message from a valid buffer.
        if unsafe { libc::mq_send(q, text.as_ptr().cast(), text.len(), prio) } != 0 {
            fail("mq_send");
        }
    };
    send(b"hello", 3);
    send(b"x", 1);
    send(b"y", 1);
    let mut buf = [0u8; 32];
    let mut prio = 0u32;
    // SAFETY: a buffer of the queue's message size, a valid priority pointer.
    let got = unsafe { libc::mq_receive(q, buf.as_mut_ptr().cast(), 32, &raw mut prio) };
    if got != 5 || prio != 3 {
        fail("mq_receive");
    }
    // SAFETY: a zeroed sigevent asking for no notification, then removing it.
    unsafe {
        let mut ev: libc::sigevent = std::mem::zeroed();
        ev.sigev_notify = libc::SIGEV_NONE;
        if libc::mq_notify(q, &raw const ev) != 0 || libc::mq_notify(q, ptr::null()) != 0 {
            fail("mq_notify");
        }
    }
    let child = fork();
    if child == 0 {
        // SAFETY: sending through the inherited descriptor, then leaving.
        unsafe {
            libc::mq_send(q, b"from child".as_ptr().cast(), 10, 2);
            libc::_exit(0);
        }
    }
    wait(child);
    let ino = inode(q);
    // SAFETY: removing and closing our queue.
    unsafe {
        if libc::mq_unlink(name.as_ptr()) != 0 {
            fail("mq_unlink");
        }
        libc::mq_close(q);
    }
    say(&json!({"pid": pid(), "child": child, "name": name.to_string_lossy(), "ino": ino}));
}

/// A child creates a shared memory object `PREFIX-shm`, a named semaphore `PREFIX-sem` and a
/// queue `PREFIX-mq` (with one message) and exits without closing or unlinking them: three
/// orphans nobody holds.
fn posix_orphans() {
    let prefix = arg_name().to_string_lossy().into_owned();
    let names = [
        format!("{prefix}-shm"),
        format!("{prefix}-sem"),
        format!("{prefix}-mq"),
    ];
    let c = |s: &str| std::ffi::CString::new(s).unwrap_or_default();
    let (shm, sem, mq) = (c(&names[0]), c(&names[1]), c(&names[2]));
    let child = fork();
    if child == 0 {
        // SAFETY: plain libc calls with valid arguments; the child leaves with _exit.
        unsafe {
            let fd = libc::shm_open(
                shm.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600,
            );
            if fd < 0 || libc::ftruncate(fd, 4096) != 0 {
                libc::_exit(3);
            }
            let s = libc::sem_open(sem.as_ptr(), libc::O_CREAT | libc::O_EXCL, 0o600, 0u32);
            if s == libc::SEM_FAILED {
                libc::_exit(4);
            }
            let mut attr: libc::mq_attr = std::mem::zeroed();
            attr.mq_maxmsg = 4;
            attr.mq_msgsize = 32;
            let q = libc::mq_open(
                mq.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o600,
                &raw const attr,
            );
            if q < 0 || libc::mq_send(q, b"left".as_ptr().cast(), 4, 0) != 0 {
                libc::_exit(5);
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: valid out pointer.
    unsafe { libc::waitpid(child, &raw mut status, 0) };
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        eprintln!("ipc-workload: the child failed to create the objects ({status:#x})");
        std::process::exit(2);
    }
    say(&json!({"pid": pid(), "child": child, "shm": names[0], "sem": names[1], "mq": names[2]}));
}

/// The id argument of the scenarios that take one.
fn arg_id() -> i32 {
    std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("ipc-workload: this scenario takes an IPC id argument");
            std::process::exit(2)
        })
}

fn main() {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    if scenario == "peak-rss" {
        peak_rss();
    }
    // Tests that must name this process to the tracer before it does anything start it with
    // IPC_WORKLOAD_STOP set: it stops itself here until they send SIGCONT.
    if std::env::var_os("IPC_WORKLOAD_STOP").is_some() {
        // SAFETY: stopping ourselves.
        unsafe { libc::raise(libc::SIGSTOP) };
    }
    // Give the tracer a moment after we started; tests start us after ipcaudit is attached.
    std::thread::sleep(Duration::from_millis(10));
    match scenario.as_str() {
        "shm-basic" => shm_basic(),
        "shm-rmid-attached" => shm_rmid_attached(),
        "shm-fork-munmap" => shm_fork_munmap(),
        "sem-basic" => sem_basic(),
        "msg-basic" => msg_basic(),
        "bad-shmat" => bad_shmat(),
        "exec-child" => exec_child(),
        "hold-shm" => hold_shm(),
        "hold-shm-munmap" => hold_shm_munmap(),
        "storm" => storm(
            std::env::args()
                .nth(2)
                .and_then(|a| a.parse().ok())
                .unwrap_or(3),
        ),
        "renamed" => renamed(&std::env::args().nth(2).unwrap_or_default()),
        "zombie-creator" => zombie_creator(),
        "scan-shapes" => scan_shapes(),
        "fork-three" => fork_three(),
        "sem-hold" => sem_hold(false),
        "sem-hold-undo" => sem_hold(true),
        "sem-wait" => sem_wait(arg_id()),
        "msg-reader" => msg_reader(),
        "msg-producer" => msg_producer(arg_id()),
        "rmid-child" => rmid_child(),
        "orphan-shm" => orphan_shm(),
        "reuse-id" => reuse_id(),
        "posix-shm-hold" => posix_shm_map(true),
        "posix-shm-map" => posix_shm_map(false),
        "posix-sem-hold" => posix_sem_hold(),
        "posix-mq-reader" => posix_mq_reader(),
        "posix-mq-writer" => posix_mq_writer(),
        "posix-orphans" => posix_orphans(),
        "posix-mq-basic" => posix_mq_basic(),
        other => {
            eprintln!(
                "ipc-workload: unknown scenario {other:?}; expected one of shm-basic, shm-rmid-attached, \
                 shm-fork-munmap, sem-basic, msg-basic, bad-shmat, exec-child, hold-shm, zombie-creator, \
                 fork-three, sem-hold, sem-hold-undo, sem-wait ID, msg-reader, msg-producer ID, rmid-child, \
                 orphan-shm [KEY], reuse-id, posix-shm-hold NAME, posix-shm-map NAME, \
                 posix-sem-hold NAME, posix-mq-reader NAME, posix-mq-writer NAME [COUNT], \
                 posix-orphans PREFIX, posix-mq-basic NAME, peak-rss CMD..."
            );
            std::process::exit(2);
        }
    }
}
