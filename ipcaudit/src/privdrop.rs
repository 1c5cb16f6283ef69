//! `--user NAME`: after the programs are attached, become an unprivileged user, keeping only
//! CAP_BPF (reading the kernel's per-CPU counters is a bpf() call; consuming the ring buffer
//! is plain memory and needs nothing).

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DropError {
    #[error("no such user {0:?}")]
    NoUser(String),
    #[error("cannot look up user {name:?}: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error("dropping privileges to {name:?} failed at {step}: {source}")]
    Step {
        name: String,
        step: &'static str,
        source: std::io::Error,
    },
}

const CAP_BPF: u32 = 39;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn check(name: &str, step: &'static str, rc: libc::c_long) -> Result<(), DropError> {
    if rc < 0 {
        return Err(DropError::Step {
            name: name.to_owned(),
            step,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Becomes `name` (its uid, gid and no supplementary groups), keeping CAP_BPF only.
pub fn drop_to(name: &str) -> Result<(u32, u32), DropError> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|source| DropError::Lookup {
            name: name.to_owned(),
            source,
        })?
        .ok_or_else(|| DropError::NoUser(name.to_owned()))?;
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    // SAFETY: plain syscalls with valid arguments; each result is checked.
    unsafe {
        check(
            name,
            "PR_SET_KEEPCAPS",
            libc::c_long::from(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0)),
        )?;
        check(
            name,
            "setgroups",
            libc::c_long::from(libc::setgroups(1, &raw const gid)),
        )?;
        check(
            name,
            "setresgid",
            libc::c_long::from(libc::setresgid(gid, gid, gid)),
        )?;
        check(
            name,
            "setresuid",
            libc::c_long::from(libc::setresuid(uid, uid, uid)),
        )?;
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        let word = usize::try_from(CAP_BPF / 32).unwrap_or(1);
        data[word].effective = 1 << (CAP_BPF % 32);
        data[word].permitted = 1 << (CAP_BPF % 32);
        check(
            name,
            "capset(CAP_BPF)",
            libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()),
        )?;
        check(
            name,
            "PR_SET_NO_NEW_PRIVS",
            libc::c_long::from(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)),
        )?;
    }
    Ok((uid, gid))
}
