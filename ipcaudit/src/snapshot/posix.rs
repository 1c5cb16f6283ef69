//! POSIX IPC objects on the live system: the files of /dev/shm (shared memory objects and
//! named semaphores) and of the IPC namespace's mqueue filesystem (message queues).
//!
//! Everything goes through a descriptor of the directory, never through a path below it:
//! entries are looked at with `fstatat(AT_SYMLINK_NOFOLLOW)` (a symlink, a directory or a
//! device node is not an object), queue files are opened with `O_NOFOLLOW`, and removal is
//! `unlinkat` on the directory descriptor after checking that the name still is the same file.
//! /dev/shm itself is opened with `O_NOFOLLOW` and must be a tmpfs.
//!
//! The mqueue filesystem need not be mounted anywhere: with CAP_SYS_ADMIN a private mount of
//! it is made with `fsopen`/`fsmount` (Linux 5.2). That mount is attached to no mount
//! namespace (nothing appears in /proc/mounts, and it goes with its descriptor), and it shows
//! the queues of the IPC namespace of the thread that made it. Without the capability a
//! mounted /dev/mqueue is used; without either, the queues are not listed and a note says how
//! to mount it.
//!
//! /dev/shm belongs to a mount namespace, not to an IPC namespace: its objects are read only
//! when the calling thread is in ipcaudit's own IPC namespace (a thread that entered another
//! one still sees ipcaudit's /dev/shm).

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};

use super::parse::{PosixDir, parse_mqueue_file, posix_object_name};
use super::{MqState, PosixObject};
use crate::event::PosixType;

/// `TMPFS_MAGIC`.
const TMPFS_MAGIC: i64 = 0x0102_1994;
/// `MQUEUE_MAGIC`.
const MQUEUE_MAGIC: i64 = 0x1980_0202;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// Where /dev/shm is.
pub const SHM_DIR: &str = "/dev/shm";
/// Where the mqueue filesystem is conventionally mounted.
pub const MQUEUE_DIR: &str = "/dev/mqueue";

/// How to mount the mqueue filesystem, for the notes that need it.
pub const MOUNT_MQUEUE_HINT: &str =
    "as root: mkdir -p /dev/mqueue && mount -t mqueue none /dev/mqueue";

/// An open POSIX IPC directory.
#[derive(Debug)]
pub struct PosixDirFd {
    pub dir: PosixDir,
    fd: OwnedFd,
    /// `st_dev` of the filesystem: every object in it has this device.
    pub dev: u64,
    /// How it was reached, for messages: `/dev/shm`, `/dev/mqueue`, or a private mount.
    pub label: String,
}

impl PosixDirFd {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether the calling thread is in ipcaudit's own IPC namespace (not one it entered).
pub fn in_home_namespace() -> bool {
    let link = |p: &str| std::fs::read_link(p).ok();
    match (link("/proc/thread-self/ns/ipc"), link("/proc/self/ns/ipc")) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Opens /dev/shm without following a symlink; it must be a tmpfs.
pub fn open_shm_dir() -> Result<PosixDirFd, String> {
    let fd = nix::fcntl::open(
        SHM_DIR,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => {
            format!("{SHM_DIR} is not a directory (a symlink is not followed): {e}")
        }
        e => format!("{SHM_DIR}: {e}"),
    })?;
    let fs = nix::sys::statfs::fstatfs(&fd).map_err(|e| format!("{SHM_DIR}: fstatfs: {e}"))?;
    #[expect(
        clippy::useless_conversion,
        reason = "f_type is i64 on x86_64 but not on every target"
    )]
    let magic = i64::from(fs.filesystem_type().0);
    if magic != TMPFS_MAGIC {
        return Err(format!(
            "{SHM_DIR} is not a tmpfs (filesystem type {magic:#x}): not where shm_open puts objects"
        ));
    }
    let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("{SHM_DIR}: fstat: {e}"))?;
    Ok(PosixDirFd {
        dir: PosixDir::DevShm,
        fd,
        dev: st.st_dev,
        label: SHM_DIR.to_owned(),
    })
}

/// A private mount of the mqueue filesystem of the calling thread's IPC namespace.
fn mount_mqueue() -> Result<OwnedFd, Errno> {
    let take = |r: libc::c_long| -> Result<OwnedFd, Errno> {
        let fd = i32::try_from(r).map_err(|_| Errno::EBADF)?;
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: the syscall returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    // SAFETY: fsopen takes a NUL-terminated filesystem name and flags.
    let fs = take(unsafe { libc::syscall(libc::SYS_fsopen, c"mqueue".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    // SAFETY: fsmount takes the configured context, flags and mount attributes.
    take(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })
}

fn is_mqueue(fd: BorrowedFd<'_>) -> bool {
    #[expect(
        clippy::useless_conversion,
        reason = "f_type is i64 on x86_64 but not on every target"
    )]
    nix::sys::statfs::fstatfs(fd).is_ok_and(|fs| i64::from(fs.filesystem_type().0) == MQUEUE_MAGIC)
}

/// The mqueue filesystem of the calling thread's IPC namespace: a private mount of it, or (in
/// ipcaudit's own namespace, when it cannot mount) /dev/mqueue if it is mounted there. An
/// error says why neither works and how to mount it.
pub fn open_mqueue_dir(home: bool) -> Result<PosixDirFd, String> {
    let why = match mount_mqueue() {
        Ok(fd) => {
            let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("mqueue: fstat: {e}"))?;
            return Ok(PosixDirFd {
                dir: PosixDir::Mqueue,
                fd,
                dev: st.st_dev,
                label: "a private mount of the mqueue filesystem".to_owned(),
            });
        }
        Err(Errno::EPERM) => "mounting it needs CAP_SYS_ADMIN".to_owned(),
        Err(e) => format!("it could not be mounted ({e})"),
    };
    if !home {
        return Err(format!(
            "the message queues of this IPC namespace are not listed: {why}"
        ));
    }
    let fd = nix::fcntl::open(
        MQUEUE_DIR,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    match fd {
        Ok(fd) if is_mqueue(fd.as_fd()) => {
            let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("{MQUEUE_DIR}: fstat: {e}"))?;
            Ok(PosixDirFd {
                dir: PosixDir::Mqueue,
                fd,
                dev: st.st_dev,
                label: MQUEUE_DIR.to_owned(),
            })
        }
        _ => Err(format!(
            "POSIX message queues are not listed: the mqueue filesystem is not mounted at \
             {MQUEUE_DIR} and {why} ({MOUNT_MQUEUE_HINT})"
        )),
    }
}

/// The names in a directory (`.` and `..` left out).
pub fn list(dir: &PosixDirFd) -> io::Result<Vec<Vec<u8>>> {
    let fd = openat(
        dir.fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let raw = {
        use std::os::fd::IntoRawFd as _;
        fd.into_raw_fd()
    };
    // SAFETY: `raw` is a directory descriptor we own; fdopendir takes it over (closedir below
    // closes it).
    let dirp = unsafe { libc::fdopendir(raw) };
    if dirp.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed: the descriptor is still ours.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: `dirp` is an open directory stream used by this thread only.
        let entry = unsafe { libc::readdir64(dirp) };
        if entry.is_null() {
            break;
        }
        // SAFETY: readdir64 returned a valid entry whose d_name is NUL-terminated; it is
        // copied before the next call.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    // SAFETY: closing the stream we opened (and its descriptor).
    unsafe { libc::closedir(dirp) };
    Ok(names)
}

/// One entry of a POSIX IPC directory as an object: None when it is not one (not a regular
/// file, not a valid name) or is gone. A queue's state is read through its file (opened with
/// `O_NOFOLLOW`, checked to be the same inode) and `mq_getattr`; when it cannot be (no read
/// permission), `queue` is None.
pub fn read_entry(dir: &PosixDirFd, file: &[u8]) -> io::Result<Option<PosixObject>> {
    let Ok(file_str) = std::str::from_utf8(file) else {
        return Ok(None);
    };
    let Some((ty, name)) = posix_object_name(dir.dir, file_str) else {
        return Ok(None);
    };
    let st = match fstatat(
        dir.fd(),
        OsStr::from_bytes(file),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Ok(None);
    }
    let queue = if ty == PosixType::Pmsg {
        read_queue(dir, file, st.st_ino)
    } else {
        None
    };
    Ok(Some(PosixObject {
        ty,
        name,
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: u64::try_from(st.st_size).unwrap_or(0),
        memory: u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512),
        atime: st.st_atime,
        mtime: st.st_mtime,
        ctime: st.st_ctime,
        queue,
    }))
}

/// A queue's state through its file; None when it cannot be read (or it was replaced).
fn read_queue(dir: &PosixDirFd, file: &[u8], ino: u64) -> Option<MqState> {
    let fd = openat(
        dir.fd(),
        OsStr::from_bytes(file),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| log::debug!("mqueue {}: open: {e}", String::from_utf8_lossy(file)))
    .ok()?;
    if nix::sys::stat::fstat(&fd).ok()?.st_ino != ino {
        return None;
    }
    let mut attr = std::mem::MaybeUninit::<libc::mq_attr>::zeroed();
    // SAFETY: mq_getattr writes one `struct mq_attr`; the descriptor is an open queue (a file
    // of the mqueue filesystem, which is what mq_open returns too).
    let attr = (unsafe { libc::mq_getattr(fd.as_raw_fd(), attr.as_mut_ptr()) } == 0)
        // SAFETY: zero-initialized plain data, filled by the kernel.
        .then(|| unsafe { attr.assume_init() })?;
    let mut text = String::new();
    File::from(fd).read_to_string(&mut text).ok()?;
    let path = format!("mqueue:/{}", String::from_utf8_lossy(file));
    let f = parse_mqueue_file(&text, &path)
        .map_err(|e| log::debug!("{e}"))
        .ok()?;
    let n = |v: libc::c_long| u64::try_from(v).unwrap_or(0);
    Some(MqState {
        qsize: f.qsize,
        messages: n(attr.mq_curmsgs),
        max_messages: n(attr.mq_maxmsg),
        message_size: n(attr.mq_msgsize),
        notify_pid: f.notify_pid,
        notify: f.notify,
        signo: f.signo,
    })
}

/// The POSIX objects the calling thread can see, and notes on what it could not list.
pub struct Listing {
    pub objects: Vec<PosixObject>,
    /// The types listed (those whose directory could be read).
    pub listed: Vec<PosixType>,
    pub notes: Vec<String>,
}

/// Lists /dev/shm (in ipcaudit's own IPC namespace only) and the mqueue filesystem of the
/// calling thread's IPC namespace.
pub fn read_objects() -> Listing {
    let home = in_home_namespace();
    let mut out = Listing {
        objects: Vec::new(),
        listed: Vec::new(),
        notes: Vec::new(),
    };
    let mut dirs = Vec::new();
    if home {
        match open_shm_dir() {
            Ok(d) => dirs.push(d),
            Err(why) => out.notes.push(format!(
                "POSIX shared memory and semaphores are not listed: {why}"
            )),
        }
    } else {
        out.notes.push(format!(
            "POSIX shared memory and semaphores ({SHM_DIR}) are listed for ipcaudit's own \
             namespace only: /dev/shm belongs to a mount namespace"
        ));
    }
    match open_mqueue_dir(home) {
        Ok(d) => dirs.push(d),
        Err(why) => out.notes.push(why),
    }
    for dir in &dirs {
        let names = match list(dir) {
            Ok(n) => n,
            Err(e) => {
                out.notes.push(format!("{}: {e}", dir.label));
                continue;
            }
        };
        out.listed.extend(match dir.dir {
            PosixDir::DevShm => [PosixType::Pshm, PosixType::Psem].as_slice(),
            PosixDir::Mqueue => [PosixType::Pmsg].as_slice(),
        });
        for name in names {
            match read_entry(dir, &name) {
                Ok(Some(o)) => out.objects.push(o),
                Ok(None) => {}
                Err(e) => log::debug!("{}/{}: {e}", dir.label, String::from_utf8_lossy(&name)),
            }
        }
    }
    out.objects
        .sort_by(|a, b| (a.ty, &a.name).cmp(&(b.ty, &b.name)));
    out
}

/// Why an unlink was not done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnlinkError {
    /// No file has the name any more.
    Gone,
    /// The name is now another file (or not a regular file).
    Replaced { ino: u64 },
    /// A syscall failed.
    Failed { op: &'static str, errno: Errno },
}

/// Removes the file `file` directly in `dir` if it still is the object (`dev`, `ino`): checked
/// with `fstatat(AT_SYMLINK_NOFOLLOW)` immediately before `unlinkat` on the directory
/// descriptor (which never follows a symlink either).
pub fn unlink_object(dir: &PosixDirFd, file: &str, dev: u64, ino: u64) -> Result<(), UnlinkError> {
    let Ok(c) = CString::new(file) else {
        return Err(UnlinkError::Gone);
    };
    if file.contains('/') || file == "." || file == ".." {
        return Err(UnlinkError::Gone);
    }
    let st = match fstatat(dir.fd(), c.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Err(UnlinkError::Gone),
        Err(errno) => {
            return Err(UnlinkError::Failed {
                op: "fstatat",
                errno,
            });
        }
    };
    if st.st_dev != dev
        || st.st_ino != ino
        || SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG
    {
        return Err(UnlinkError::Replaced { ino: st.st_ino });
    }
    match nix::unistd::unlinkat(
        dir.fd(),
        c.as_c_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::ENOENT) => Err(UnlinkError::Gone),
        Err(errno) => Err(UnlinkError::Failed {
            op: "unlinkat",
            errno,
        }),
    }
}

/// Opens the directory holding objects of type `ty` (for `reap`).
pub fn open_dir_of(ty: PosixType) -> Result<PosixDirFd, String> {
    match PosixDir::of(ty) {
        PosixDir::DevShm => {
            if in_home_namespace() {
                open_shm_dir()
            } else {
                Err(format!(
                    "{SHM_DIR} is reached in ipcaudit's own namespace only"
                ))
            }
        }
        PosixDir::Mqueue => open_mqueue_dir(in_home_namespace()),
    }
}

#[cfg(test)]
mod tests {
    //! Against the live system (root for the private mqueue mount). Every object has a name
    //! with this process's pid, and is removed at the end.

    use super::*;

    fn name(what: &str) -> String {
        format!("/ipcaudit-unit-{what}-{}", std::process::id())
    }

    #[test]
    fn shm_objects_are_listed_with_their_inode_and_unlinked_only_while_the_same() {
        let n = name("shm");
        let c = CString::new(n.clone()).unwrap();
        // SAFETY: plain libc calls with valid arguments.
        let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600) };
        assert!(fd >= 0, "shm_open: {}", io::Error::last_os_error());
        // SAFETY: as above.
        assert_eq!(unsafe { libc::ftruncate(fd, 8192) }, 0);
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::close(fd) };
        let dir = open_shm_dir().expect("/dev/shm");
        let file = &n[1..];
        let o = read_entry(&dir, file.as_bytes())
            .expect("read")
            .expect("an object");
        assert_eq!(
            (o.ty, o.name.as_str(), o.size),
            (PosixType::Pshm, n.as_str(), 8192)
        );
        assert_eq!(o.dev, dir.dev);
        assert_eq!(o.queue, None);
        assert!(
            read_objects()
                .objects
                .iter()
                .any(|x| x.name == n && x.ino == o.ino)
        );
        // Another inode under the name: refused.
        assert_eq!(
            unlink_object(&dir, file, o.dev, o.ino + 1),
            Err(UnlinkError::Replaced { ino: o.ino })
        );
        assert_eq!(unlink_object(&dir, file, o.dev, o.ino), Ok(()));
        assert_eq!(
            unlink_object(&dir, file, o.dev, o.ino),
            Err(UnlinkError::Gone)
        );
        assert_eq!(
            unlink_object(&dir, "../etc", o.dev, o.ino),
            Err(UnlinkError::Gone)
        );
    }

    #[test]
    fn symlinks_and_directories_in_dev_shm_are_not_objects() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = open_shm_dir().expect("/dev/shm");
        let link = format!("ipcaudit-unit-link-{}", std::process::id());
        let path = format!("{SHM_DIR}/{link}");
        std::os::unix::fs::symlink("/etc/passwd", &path).expect("symlink");
        let got = read_entry(&dir, link.as_bytes());
        let st = std::fs::symlink_metadata(&path).expect("lstat");
        let refused = unlink_object(&dir, &link, st.dev(), st.ino());
        std::fs::remove_file(&path).expect("cleanup");
        assert_eq!(got.expect("read"), None);
        assert_eq!(refused, Err(UnlinkError::Replaced { ino: st.ino() }));
    }

    #[test]
    fn queues_are_listed_with_their_depth() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: the private mqueue mount needs root");
            return;
        }
        let n = name("mq");
        let c = CString::new(n.clone()).unwrap();
        // SAFETY: plain data.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = 4;
        attr.mq_msgsize = 32;
        // SAFETY: plain libc calls with valid arguments.
        let q = unsafe {
            libc::mq_open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_RDWR,
                0o600,
                &raw const attr,
            )
        };
        assert!(q >= 0, "mq_open: {}", io::Error::last_os_error());
        // SAFETY: sending 5 bytes, then a zero-length message.
        unsafe {
            assert_eq!(libc::mq_send(q, c"hello".as_ptr(), 5, 1), 0);
            assert_eq!(libc::mq_send(q, c"".as_ptr(), 0, 1), 0);
        }
        let dir = open_mqueue_dir(true).expect("mqueue");
        let file = &n[1..];
        let o = read_entry(&dir, file.as_bytes())
            .expect("read")
            .expect("object");
        // SAFETY: closing and removing our queue.
        unsafe {
            libc::mq_close(q);
        }
        let removed = unlink_object(&dir, file, o.dev, o.ino);
        assert_eq!(o.ty, PosixType::Pmsg);
        let st = o.queue.expect("queue state");
        assert_eq!(
            (st.messages, st.qsize, st.max_messages, st.message_size),
            (2, 5, 4, 32)
        );
        assert_eq!(removed, Ok(()));
    }
}
