//! Symbolic names the kernel does not print: errno values and IPC control commands.

use crate::event::IpcType;

/// Linux (x86_64 and the generic table) errno names, 1..=133, then the kernel-internal restart
/// codes a syscall exit tracepoint can show.
const ERRNO: [&str; 134] = [
    "",
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR",
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS",
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
    "ELOOP",
    "",
    "ENOMSG",
    "EIDRM",
    "ECHRNG",
    "EL2NSYNC",
    "EL3HLT",
    "EL3RST",
    "ELNRNG",
    "EUNATCH",
    "ENOCSI",
    "EL2HLT",
    "EBADE",
    "EBADR",
    "EXFULL",
    "ENOANO",
    "EBADRQC",
    "EBADSLT",
    "",
    "EBFONT",
    "ENOSTR",
    "ENODATA",
    "ETIME",
    "ENOSR",
    "ENONET",
    "ENOPKG",
    "EREMOTE",
    "ENOLINK",
    "EADV",
    "ESRMNT",
    "ECOMM",
    "EPROTO",
    "EMULTIHOP",
    "EDOTDOT",
    "EBADMSG",
    "EOVERFLOW",
    "ENOTUNIQ",
    "EBADFD",
    "EREMCHG",
    "ELIBACC",
    "ELIBBAD",
    "ELIBSCN",
    "ELIBMAX",
    "ELIBEXEC",
    "EILSEQ",
    "ERESTART",
    "ESTRPIPE",
    "EUSERS",
    "ENOTSOCK",
    "EDESTADDRREQ",
    "EMSGSIZE",
    "EPROTOTYPE",
    "ENOPROTOOPT",
    "EPROTONOSUPPORT",
    "ESOCKTNOSUPPORT",
    "EOPNOTSUPP",
    "EPFNOSUPPORT",
    "EAFNOSUPPORT",
    "EADDRINUSE",
    "EADDRNOTAVAIL",
    "ENETDOWN",
    "ENETUNREACH",
    "ENETRESET",
    "ECONNABORTED",
    "ECONNRESET",
    "ENOBUFS",
    "EISCONN",
    "ENOTCONN",
    "ESHUTDOWN",
    "ETOOMANYREFS",
    "ETIMEDOUT",
    "ECONNREFUSED",
    "EHOSTDOWN",
    "EHOSTUNREACH",
    "EALREADY",
    "EINPROGRESS",
    "ESTALE",
    "EUCLEAN",
    "ENOTNAM",
    "ENAVAIL",
    "EISNAM",
    "EREMOTEIO",
    "EDQUOT",
    "ENOMEDIUM",
    "EMEDIUMTYPE",
    "ECANCELED",
    "ENOKEY",
    "EKEYEXPIRED",
    "EKEYREVOKED",
    "EKEYREJECTED",
    "EOWNERDEAD",
    "ENOTRECOVERABLE",
    "ERFKILL",
    "EHWPOISON",
];

/// The name of an errno value, if it has one.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    match errno {
        512 => Some("ERESTARTSYS"),
        513 => Some("ERESTARTNOINTR"),
        514 => Some("ERESTARTNOHAND"),
        516 => Some("ERESTART_RESTARTBLOCK"),
        _ => usize::try_from(errno)
            .ok()
            .and_then(|i| ERRNO.get(i))
            .copied()
            .filter(|name| !name.is_empty()),
    }
}

/// The errno value of a name (`EINVAL` → 22), for parsing recorded streams.
pub fn errno_value(name: &str) -> Option<i32> {
    if let Some(i) = ERRNO.iter().position(|n| !n.is_empty() && *n == name) {
        return i32::try_from(i).ok();
    }
    match name {
        "ERESTARTSYS" => Some(512),
        "ERESTARTNOINTR" => Some(513),
        "ERESTARTNOHAND" => Some(514),
        "ERESTART_RESTARTBLOCK" => Some(516),
        _ => name.strip_prefix('E').and_then(|n| n.parse().ok()),
    }
}

/// `IPC_64`, which glibc ORs into every control command.
pub const IPC_64: i32 = 0x100;
pub const IPC_RMID: i32 = 0;
pub const IPC_SET: i32 = 1;
pub const IPC_STAT: i32 = 2;
pub const IPC_INFO: i32 = 3;
pub const SETVAL: i32 = 16;
pub const SETALL: i32 = 17;
/// `IPC_CREAT` and `IPC_EXCL` in a get's flags.
pub const IPC_CREAT: i32 = 0o1000;
pub const IPC_EXCL: i32 = 0o2000;
/// `IPC_PRIVATE`.
pub const IPC_PRIVATE: i32 = 0;

/// The name of a control command of one IPC family (`IPC_RMID`, `SETVAL`, …), `IPC_64` masked.
pub fn ipc_command_name(ty: IpcType, cmd: i32) -> Option<&'static str> {
    let cmd = cmd & !IPC_64;
    let common = match cmd {
        0 => Some("IPC_RMID"),
        1 => Some("IPC_SET"),
        2 => Some("IPC_STAT"),
        3 => Some("IPC_INFO"),
        _ => None,
    };
    common.or(match (ty, cmd) {
        (IpcType::Shm, 11) => Some("SHM_LOCK"),
        (IpcType::Shm, 12) => Some("SHM_UNLOCK"),
        (IpcType::Shm, 13) => Some("SHM_STAT"),
        (IpcType::Shm, 14) => Some("SHM_INFO"),
        (IpcType::Shm, 15) => Some("SHM_STAT_ANY"),
        (IpcType::Sem, 11) => Some("GETPID"),
        (IpcType::Sem, 12) => Some("GETVAL"),
        (IpcType::Sem, 13) => Some("GETALL"),
        (IpcType::Sem, 14) => Some("GETNCNT"),
        (IpcType::Sem, 15) => Some("GETZCNT"),
        (IpcType::Sem, 16) => Some("SETVAL"),
        (IpcType::Sem, 17) => Some("SETALL"),
        (IpcType::Sem, 18) => Some("SEM_STAT"),
        (IpcType::Sem, 19) => Some("SEM_INFO"),
        (IpcType::Sem, 20) => Some("SEM_STAT_ANY"),
        (IpcType::Msg, 11) => Some("MSG_STAT"),
        (IpcType::Msg, 12) => Some("MSG_INFO"),
        (IpcType::Msg, 13) => Some("MSG_STAT_ANY"),
        _ => None,
    })
}

/// The command value of a name, for parsing recorded streams.
pub fn ipc_command_value(ty: IpcType, name: &str) -> Option<i32> {
    (0..=20).find(|&cmd| ipc_command_name(ty, cmd) == Some(name))
}

/// The signal name of a signal number (`SIGKILL`), for exit records.
pub fn signal_name(sig: u32) -> Option<&'static str> {
    const SIGNALS: [&str; 32] = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(sig)
        .ok()
        .and_then(|i| SIGNALS.get(i))
        .copied()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_round_trip() {
        assert_eq!(errno_name(22), Some("EINVAL"));
        assert_eq!(errno_name(43), Some("EIDRM"));
        assert_eq!(errno_name(42), Some("ENOMSG"));
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_name(-3), None);
        assert_eq!(errno_name(9999), None);
        for i in 1..=133 {
            if let Some(name) = errno_name(i) {
                assert_eq!(errno_value(name), Some(i), "{name}");
            }
        }
        assert_eq!(errno_value("E4242"), Some(4242));
        assert_eq!(errno_value("nonsense"), None);
    }

    #[test]
    fn commands_mask_ipc_64() {
        assert_eq!(
            ipc_command_name(IpcType::Shm, IPC_RMID | IPC_64),
            Some("IPC_RMID")
        );
        assert_eq!(ipc_command_name(IpcType::Sem, SETVAL), Some("SETVAL"));
        assert_eq!(ipc_command_name(IpcType::Msg, 16), None);
        assert_eq!(ipc_command_value(IpcType::Sem, "GETNCNT"), Some(14));
        assert_eq!(signal_name(9), Some("SIGKILL"));
    }
}
