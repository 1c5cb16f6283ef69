//! NDJSON with Elastic Common Schema field names (nested objects: `{"event":{"action":…}}`).
//!
//! Every event record also carries `ipcaudit.syscall` (the raw arguments and return value), so
//! that `replay` rebuilds exactly the event the live collector saw: [`parse_event`] is the
//! inverse of [`encode_event`].

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::ndjson::key;
use super::{Session, Summary, ndjson, parse_entity_id};
use crate::enrich::ProcessContext;
use crate::{
    clock::{parse_rfc3339, rfc3339_nanos},
    decode::syscall_kind,
    event::{
        Action, CallSite, Errno, Event, EventKind, IpcType, ObjectType, PosixType, ProcessDetails,
        ProcessKey, SemOp, Task,
    },
    model::{Difference, FindingChange, ObjectRef, Severity},
    names::{errno_name, errno_value, ipc_command_name},
};

#[derive(Serialize, Deserialize, Default)]
pub struct EcsEvent {
    pub kind: Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub action: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub outcome: Option<Cow<'static, str>>,
}

#[derive(Serialize, Deserialize)]
pub struct EcsError {
    pub code: String,
}

#[derive(Serialize, Deserialize)]
pub struct EcsThread {
    pub id: u32,
}

#[derive(Serialize, Deserialize)]
pub struct EcsParent {
    pub pid: u32,
    /// The thread that forked.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub thread: Option<EcsThread>,
    pub entity_id: String,
}

#[derive(Serialize, Deserialize)]
pub struct EcsProcess {
    pub pid: u32,
    pub thread: EcsThread,
    pub name: String,
    pub entity_id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub parent: Option<EcsParent>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub executable: Option<String>,
    /// Bounded (`ProcessDetails::MAX_COMMAND_LINE`); on `process-context` records.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub command_line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_code: Option<u32>,
    /// The PID inside the process's own PID namespace, when it differs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vpid: Option<u32>,
}

#[derive(Serialize, Deserialize)]
pub struct EcsContainer {
    pub id: String,
}

#[derive(Serialize, Deserialize)]
pub struct EcsUser {
    pub id: String,
}

#[derive(Serialize, Deserialize)]
pub struct EcsShm {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub address: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct EcsSemOp {
    pub num: u16,
    pub op: i16,
    pub flags: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct EcsSem {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nsems: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ops: Option<Vec<EcsSemOp>>,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct EcsMsg {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", default)]
    pub mtype: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
    /// A POSIX message's priority.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub priority: Option<u32>,
}

#[derive(Serialize, Deserialize)]
pub struct EcsIpc {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", default)]
    pub ty: Option<ObjectType>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
    pub namespace: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shm: Option<EcsShm>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sem: Option<EcsSem>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub msg: Option<EcsMsg>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub command: Option<String>,
    /// A POSIX object's name (`/NAME`), file and inode.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub inode: Option<u64>,
}

/// The raw syscall, for exact replay.
#[derive(Serialize, Deserialize)]
pub struct RawSyscall {
    pub name: Cow<'static, str>,
    pub args: [u64; 6],
    pub ret: i64,
}

/// Bumped when a field changes meaning or goes away (adding fields does not bump it).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Default)]
pub struct Extra {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub syscall: Option<RawSyscall>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lost: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exec_tid: Option<u32>,
    /// A POSIX queue event: the queue's IPC namespace, when it is not the task's.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub queue_namespace: Option<u32>,
}

/// One event record.
#[derive(Serialize, Deserialize)]
pub struct EcsRecord {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EcsEvent,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<EcsError>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub process: Option<EcsProcess>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<EcsUser>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ipc: Option<EcsIpc>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host: Option<EcsHost>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub container: Option<EcsContainer>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ipcaudit: Option<Extra>,
}

#[derive(Serialize, Deserialize)]
pub struct EcsBoot {
    pub id: String,
}

#[derive(Serialize, Deserialize)]
pub struct EcsHost {
    pub name: String,
    pub id: String,
    pub boot: EcsBoot,
}

impl EcsHost {
    fn of(session: &Session) -> Option<Self> {
        session.host.as_ref().map(|h| Self {
            name: h.name.clone(),
            id: h.id.clone(),
            boot: EcsBoot {
                id: h.boot_id.clone(),
            },
        })
    }
}

/// Adds what every record carries: `host.*` and `ipcaudit.schema_version`.
pub(crate) fn stamp(session: &Session, value: &mut serde_json::Value) {
    if let Some(host) = EcsHost::of(session) {
        value["host"] = serde_json::to_value(host).unwrap_or_default();
    }
    if !value["ipcaudit"].is_object() {
        value["ipcaudit"] = serde_json::json!({});
    }
    value["ipcaudit"]["schema_version"] = SCHEMA_VERSION.into();
}

/// `ipc.key` as ECS keyword: `0x0000abcd`.
pub fn key_hex(key: i32) -> String {
    let mut hex = String::with_capacity(10);
    key_hex_into(&mut hex, key);
    hex
}

fn syscall_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::ShmGet { .. } => "shmget",
        EventKind::ShmAt { .. } => "shmat",
        EventKind::ShmDt { .. } => "shmdt",
        EventKind::ShmCtl { .. } => "shmctl",
        EventKind::SemGet { .. } => "semget",
        EventKind::SemOp { timed: false, .. } => "semop",
        EventKind::SemOp { timed: true, .. } => "semtimedop",
        EventKind::SemCtl { .. } => "semctl",
        EventKind::MsgGet { .. } => "msgget",
        EventKind::MsgSnd { .. } => "msgsnd",
        EventKind::MsgRcv { .. } => "msgrcv",
        EventKind::MsgCtl { .. } => "msgctl",
        EventKind::Munmap { .. } => "munmap",
        EventKind::Mremap { .. } => "mremap",
        EventKind::MqOpen { .. } => "mq_open",
        EventKind::MqUnlink { .. } => "mq_unlink",
        EventKind::MqSend { .. } => "mq_timedsend",
        EventKind::MqReceive { .. } => "mq_timedreceive",
        EventKind::MqNotify { .. } => "mq_notify",
        EventKind::Fork { .. }
        | EventKind::Exec { .. }
        | EventKind::Exit { .. }
        | EventKind::Lost { .. } => "",
    }
}

fn abi_kind(name: &str) -> Option<u16> {
    use ipcaudit_ebpf::kind;
    Some(match name {
        "shmget" => kind::SHMGET,
        "shmat" => kind::SHMAT,
        "shmdt" => kind::SHMDT,
        "shmctl" => kind::SHMCTL,
        "semget" => kind::SEMGET,
        "semop" | "semtimedop" => kind::SEMOP,
        "semctl" => kind::SEMCTL,
        "msgget" => kind::MSGGET,
        "msgsnd" => kind::MSGSND,
        "msgrcv" => kind::MSGRCV,
        "msgctl" => kind::MSGCTL,
        "munmap" => kind::MUNMAP,
        "mremap" => kind::MREMAP,
        "mq_open" => kind::MQ_OPEN,
        "mq_unlink" => kind::MQ_UNLINK,
        "mq_timedsend" => kind::MQ_SEND,
        "mq_timedreceive" => kind::MQ_RECEIVE,
        "mq_notify" => kind::MQ_NOTIFY,
        _ => return None,
    })
}

#[expect(
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "registers carry C ints and longs as u64"
)]
fn raw_syscall(kind: &EventKind) -> Option<RawSyscall> {
    fn ret<T>(r: &Result<T, Errno>, ok: impl Fn(&T) -> i64) -> i64 {
        match r {
            Ok(v) => ok(v),
            Err(e) => -i64::from(e.0),
        }
    }
    let i = |v: i32| u64::from(v as u32);
    let (args, ret) = match kind {
        EventKind::ShmGet {
            key,
            size,
            flags,
            result,
        } => (
            [i(*key), *size, i(*flags), 0, 0, 0],
            ret(result, |v| i64::from(*v)),
        ),
        EventKind::ShmAt {
            shmid,
            addr,
            flags,
            result,
        } => (
            [i(*shmid), *addr, i(*flags), 0, 0, 0],
            ret(result, |v| *v as i64),
        ),
        EventKind::ShmDt { addr, result } => ([*addr, 0, 0, 0, 0, 0], ret(result, |()| 0)),
        EventKind::ShmCtl { shmid, cmd, result } => {
            ([i(*shmid), i(*cmd), 0, 0, 0, 0], ret(result, |v| *v))
        }
        EventKind::SemGet {
            key,
            nsems,
            flags,
            result,
        } => (
            [i(*key), i(*nsems), i(*flags), 0, 0, 0],
            ret(result, |v| i64::from(*v)),
        ),
        EventKind::SemOp {
            semid,
            nsops,
            result,
            ..
        } => (
            [i(*semid), 0, u64::from(*nsops), 0, 0, 0],
            ret(result, |()| 0),
        ),
        EventKind::SemCtl {
            semid,
            semnum,
            cmd,
            arg,
            result,
        } => (
            [i(*semid), i(*semnum), i(*cmd), *arg, 0, 0],
            ret(result, |v| *v),
        ),
        EventKind::MsgGet { key, flags, result } => (
            [i(*key), i(*flags), 0, 0, 0, 0],
            ret(result, |v| i64::from(*v)),
        ),
        EventKind::MsgSnd {
            msqid,
            size,
            flags,
            result,
            ..
        } => ([i(*msqid), 0, *size, i(*flags), 0, 0], ret(result, |()| 0)),
        EventKind::MsgRcv {
            msqid,
            max_size,
            want_type,
            flags,
            result,
            ..
        } => (
            [i(*msqid), 0, *max_size, *want_type as u64, i(*flags), 0],
            ret(result, |v| *v as i64),
        ),
        EventKind::MsgCtl { msqid, cmd, result } => {
            ([i(*msqid), i(*cmd), 0, 0, 0, 0], ret(result, |v| *v))
        }
        EventKind::Munmap { addr, len, result } => ([*addr, *len, 0, 0, 0, 0], ret(result, |()| 0)),
        EventKind::Mremap {
            old_addr,
            old_len,
            new_len,
            flags,
            result,
        } => (
            [*old_addr, *old_len, *new_len, u64::from(*flags), 0, 0],
            ret(result, |v| *v as i64),
        ),
        // Pointers (a name, a buffer) are not kept: the name is `ipc.name`.
        EventKind::MqOpen {
            flags,
            mode,
            result,
            ..
        } => (
            [0, i(*flags), u64::from(*mode), 0, 0, 0],
            ret(result, |v| i64::from(*v)),
        ),
        EventKind::MqUnlink { result, .. } => ([0; 6], ret(result, |()| 0)),
        EventKind::MqSend {
            fd,
            size,
            prio,
            result,
            ..
        } => (
            [i(*fd), 0, *size, u64::from(*prio), 0, 0],
            ret(result, |()| 0),
        ),
        EventKind::MqReceive {
            fd,
            max_size,
            result,
            ..
        } => ([i(*fd), 0, *max_size, 0, 0, 0], ret(result, |v| *v as i64)),
        EventKind::MqNotify {
            fd,
            register,
            result,
            ..
        } => (
            [i(*fd), u64::from(*register), 0, 0, 0, 0],
            ret(result, |()| 0),
        ),
        EventKind::Fork { .. }
        | EventKind::Exec { .. }
        | EventKind::Exit { .. }
        | EventKind::Lost { .. } => {
            return None;
        }
    };
    Some(RawSyscall {
        name: syscall_name(kind).into(),
        args,
        ret,
    })
}

fn sem_flag_names(op: SemOp) -> impl Iterator<Item = &'static str> {
    [(op.undo(), "undo"), (op.nowait(), "nowait")]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
}

/// The `shm` object of an event record.
#[derive(Clone, Copy)]
struct ShmFields {
    size: Option<u64>,
    /// Written as `0x…`.
    address: Option<u64>,
}

/// The `sem` object of an event record.
#[derive(Clone, Copy)]
struct SemFields<'a> {
    nsems: Option<u64>,
    ops: Option<&'a [SemOp]>,
}

/// The `ipc` object of an event record, borrowed from the event: what [`event_record`] (serde)
/// and [`encode_event`] (written directly) both write, decided in one place.
struct IpcFields<'a> {
    ty: Option<ObjectType>,
    id: Option<i32>,
    /// Written as `0x0000abcd` ([`key_hex`]).
    key: Option<i32>,
    namespace: u32,
    shm: Option<ShmFields>,
    sem: Option<SemFields<'a>>,
    msg: Option<EcsMsg>,
    /// A control command: its name (`IPC_RMID`), or its number for one without a name.
    command: Option<(IpcType, i32)>,
    name: Option<&'a str>,
    path: Option<String>,
    inode: Option<u64>,
}

impl IpcFields<'_> {
    /// Only the namespace (a lifecycle event).
    fn namespace(namespace: u32) -> Self {
        Self {
            ty: None,
            id: None,
            key: None,
            namespace,
            shm: None,
            sem: None,
            msg: None,
            command: None,
            name: None,
            path: None,
            inode: None,
        }
    }

    fn to_ecs(&self) -> EcsIpc {
        EcsIpc {
            ty: self.ty,
            id: self.id,
            key: self.key.map(key_hex),
            namespace: self.namespace,
            shm: self.shm.map(|s| EcsShm {
                size: s.size,
                address: s.address.map(|a| format!("0x{a:x}")),
            }),
            sem: self.sem.map(|s| EcsSem {
                nsems: s.nsems,
                ops: s.ops.map(|ops| {
                    ops.iter()
                        .map(|&o| EcsSemOp {
                            num: o.num,
                            op: o.op,
                            flags: sem_flag_names(o).map(str::to_owned).collect(),
                        })
                        .collect()
                }),
            }),
            msg: self.msg,
            command: self
                .command
                .map(|(ty, cmd)| Named::command(ty, cmd).to_owned_string()),
            name: self.name.map(str::to_owned),
            path: self.path.clone(),
            inode: self.inode,
        }
    }

    fn write(&self, top: &mut ndjson::Obj<'_>) {
        let mut o = top.obj(key!("ipc"));
        if let Some(ty) = self.ty {
            o.name(key!("type"), ty.as_str());
        }
        o.opt_int(key!("id"), self.id);
        if let Some(key) = self.key {
            o.str_with(key!("key"), |out| key_hex_into(out, key));
        }
        o.int(key!("namespace"), self.namespace);
        if let Some(shm) = self.shm {
            let mut s = o.obj(key!("shm"));
            s.opt_int(key!("size"), shm.size);
            if let Some(address) = shm.address {
                s.str_with(key!("address"), |out| ndjson::hex(out, address));
            }
            s.close();
        }
        if let Some(sem) = self.sem {
            let mut s = o.obj(key!("sem"));
            s.opt_int(key!("nsems"), sem.nsems);
            if let Some(ops) = sem.ops {
                write_sem_ops(s.array(key!("ops")), ops);
            }
            s.close();
        }
        if let Some(msg) = self.msg {
            let mut m = o.obj(key!("msg"));
            m.opt_int(key!("type"), msg.mtype);
            m.opt_int(key!("size"), msg.size);
            m.opt_int(key!("priority"), msg.priority);
            m.close();
        }
        if let Some((ty, cmd)) = self.command {
            Named::command(ty, cmd).write(&mut o, key!("command"));
        }
        o.opt_str(key!("name"), self.name);
        o.opt_str(key!("path"), self.path.as_deref());
        o.opt_int(key!("inode"), self.inode);
        o.close();
    }
}

/// `ipc.sem.ops`: `{"num":…,"op":…,"flags":[…]}` each, and the closing `]`.
fn write_sem_ops(out: &mut String, ops: &[SemOp]) {
    for (i, &op) in ops.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut o = ndjson::Obj::open(out);
        o.int(key!("num"), op.num);
        o.int(key!("op"), op.op);
        let flags = o.array(key!("flags"));
        for (j, name) in sem_flag_names(op).enumerate() {
            if j > 0 {
                flags.push(',');
            }
            ndjson::string(flags, name);
        }
        flags.push(']');
        o.close();
    }
    out.push(']');
}

/// A name from a table (an errno's, a control command's), or the number it has none for,
/// written after a prefix (`E22`).
#[derive(Clone, Copy)]
enum Named {
    Name(&'static str),
    Number(&'static str, i32),
}

impl Named {
    fn command(ty: IpcType, cmd: i32) -> Self {
        ipc_command_name(ty, cmd).map_or(Self::Number("", cmd), Self::Name)
    }

    /// `error.code`: the errno's name, or `E<number>`.
    fn errno(e: Errno) -> Self {
        errno_name(e.0).map_or(Self::Number("E", e.0), Self::Name)
    }

    fn to_owned_string(self) -> String {
        match self {
            Self::Name(name) => name.to_owned(),
            Self::Number(prefix, n) => format!("{prefix}{n}"),
        }
    }

    fn write(self, o: &mut ndjson::Obj<'_>, key: ndjson::Key) {
        match self {
            Self::Name(name) => o.name(key, name),
            Self::Number(prefix, n) => o.str_with(key, |out| {
                out.push_str(prefix);
                ndjson::int(out, n);
            }),
        }
    }
}

/// [`key_hex`] into `out`.
fn key_hex_into(out: &mut String, key: i32) {
    let mut digits = [b'0'; 8];
    let mut v = key.cast_unsigned();
    for d in digits.iter_mut().rev() {
        *d = b"0123456789abcdef"[usize::try_from(v & 0xf).unwrap_or(0)];
        v >>= 4;
    }
    out.push_str("0x");
    ndjson::ascii(out, &digits);
}

/// The `ipc` object of a POSIX message queue event: the queue by name (the event's, or the
/// model's for a descriptor) and inode.
fn mq_ipc_fields<'a>(
    ev: &'a Event,
    posix: Option<&'a crate::model::PosixRef>,
) -> Option<IpcFields<'a>> {
    let (name, queue, msg) = match &ev.kind {
        EventKind::MqOpen { name, queue, .. } => (Some(name.as_str()), *queue, None),
        EventKind::MqUnlink { name, .. } => (Some(name.as_str()), None, None),
        EventKind::MqSend {
            queue, size, prio, ..
        } => (
            None,
            *queue,
            Some(EcsMsg {
                mtype: None,
                size: Some(*size),
                priority: Some(*prio),
            }),
        ),
        EventKind::MqReceive {
            queue,
            prio,
            result,
            ..
        } => (
            None,
            *queue,
            Some(EcsMsg {
                mtype: None,
                size: result.ok(),
                priority: *prio,
            }),
        ),
        EventKind::MqNotify { queue, .. } => (None, *queue, None),
        _ => return None,
    };
    let name = name.or_else(|| posix.map(|p| p.name.as_str()));
    let inode = queue
        .map(|q| q.ino)
        .or_else(|| posix.map(|p| p.ino))
        .filter(|i| *i != 0);
    let path = name.map(|n| {
        crate::model::PosixRef {
            ns: ev.ipc_ns,
            ty: PosixType::Pmsg,
            name: n.to_owned(),
            generation: 0,
            dev: 0,
            ino: 0,
            size: None,
        }
        .path()
    });
    Some(IpcFields {
        ty: Some(ObjectType::Posix(PosixType::Pmsg)),
        msg,
        name,
        path,
        inode,
        ..IpcFields::namespace(ev.ipc_ns)
    })
}

/// The `ipc` object of an event record.
fn ipc_fields<'a>(
    ev: &'a Event,
    object: Option<&ObjectRef>,
    posix: Option<&'a crate::model::PosixRef>,
) -> Option<IpcFields<'a>> {
    if ev.kind.posix_type().is_some() {
        return mq_ipc_fields(ev, posix);
    }
    let k = &ev.kind;
    let ipc = k.ipc_type().map(|ty| {
        let (id, command) = match k {
            EventKind::ShmGet { result, .. }
            | EventKind::SemGet { result, .. }
            | EventKind::MsgGet { result, .. } => (result.ok(), None),
            EventKind::ShmAt { shmid, .. } => (Some(*shmid), None),
            EventKind::ShmCtl { shmid: id, cmd, .. }
            | EventKind::SemCtl { semid: id, cmd, .. }
            | EventKind::MsgCtl { msqid: id, cmd, .. } => (Some(*id), Some((ty, *cmd))),
            EventKind::SemOp { semid, .. } => (Some(*semid), None),
            EventKind::MsgSnd { msqid, .. } | EventKind::MsgRcv { msqid, .. } => {
                (Some(*msqid), None)
            }
            _ => (object.map(|o| o.id), None),
        };
        let key = match k {
            EventKind::ShmGet { key, .. }
            | EventKind::SemGet { key, .. }
            | EventKind::MsgGet { key, .. } => Some(*key),
            _ => object.and_then(|o| o.key),
        };
        let shm = match k {
            EventKind::ShmGet { size, .. } => Some(ShmFields {
                size: Some(*size),
                address: None,
            }),
            EventKind::ShmAt { result, .. } => Some(ShmFields {
                size: object.and_then(|o| o.size),
                address: result.as_ref().ok().copied(),
            }),
            EventKind::ShmDt { addr, .. } => Some(ShmFields {
                size: object.and_then(|o| o.size),
                address: Some(*addr),
            }),
            _ => None,
        };
        let sem = match k {
            EventKind::SemGet { nsems, .. } => Some(SemFields {
                nsems: u64::try_from(*nsems).ok(),
                ops: None,
            }),
            EventKind::SemOp { ops, .. } => Some(SemFields {
                nsems: None,
                ops: Some(ops.as_slice()),
            }),
            _ => None,
        };
        let msg = match k {
            EventKind::MsgSnd { size, mtype, .. } => Some(EcsMsg {
                mtype: *mtype,
                size: Some(*size),
                priority: None,
            }),
            EventKind::MsgRcv { result, mtype, .. } => Some(EcsMsg {
                mtype: *mtype,
                size: result.ok(),
                priority: None,
            }),
            _ => None,
        };
        IpcFields {
            ty: Some(ObjectType::Sysv(ty)),
            id,
            key,
            shm,
            sem,
            msg,
            command,
            ..IpcFields::namespace(ev.ipc_ns)
        }
    });
    // munmap/mremap of an attachment (or an exit that destroyed a segment): name the object;
    // anything else still says which IPC namespace the process was in.
    ipc.or_else(|| {
        Some(IpcFields {
            ty: object.map(|o| ObjectType::Sysv(o.ty)),
            id: object.map(|o| o.id),
            key: object.and_then(|o| o.key),
            shm: match (k, object) {
                (
                    EventKind::Munmap { addr, .. } | EventKind::Mremap { old_addr: addr, .. },
                    Some(o),
                ) => Some(ShmFields {
                    size: o.size,
                    address: Some(*addr),
                }),
                _ => None,
            },
            ..IpcFields::namespace(ev.ipc_ns)
        })
    })
}

/// The `process` object of an event record, borrowed from the event.
struct ProcessFields<'a> {
    pid: u32,
    tid: u32,
    name: &'a str,
    /// Written as its entity id ([`Session::entity_id`]).
    entity: ProcessKey,
    /// The forking process of a `process-fork` record (the record is about the child): pid,
    /// thread, entity.
    parent: Option<(u32, u32, ProcessKey)>,
    executable: Option<&'a str>,
    exit_code: Option<u32>,
    vpid: Option<u32>,
}

impl<'a> ProcessFields<'a> {
    fn of(ev: &'a Event, context: &'a ProcessContext) -> Self {
        let t = &ev.task;
        let mut p = Self {
            pid: t.process.pid,
            tid: t.tid,
            name: &t.comm,
            entity: t.process,
            parent: None,
            executable: context.executable(),
            exit_code: None,
            vpid: context.vpid,
        };
        match &ev.kind {
            // The record is about the new process; the forking one is its parent.
            EventKind::Fork { child } => {
                p.parent = Some((p.pid, t.tid, p.entity));
                p.pid = child.pid;
                p.tid = child.pid;
                p.entity = *child;
            }
            EventKind::Exec { filename, .. } => p.executable = Some(filename),
            EventKind::Exit { code } => p.exit_code = Some(*code),
            _ => {}
        }
        p
    }

    fn to_ecs(&self, session: &Session) -> EcsProcess {
        EcsProcess {
            pid: self.pid,
            thread: EcsThread { id: self.tid },
            name: self.name.to_owned(),
            entity_id: session.entity_id(self.entity),
            parent: self.parent.map(|(pid, tid, entity)| EcsParent {
                pid,
                thread: Some(EcsThread { id: tid }),
                entity_id: session.entity_id(entity),
            }),
            executable: self.executable.map(str::to_owned),
            command_line: None,
            exit_code: self.exit_code,
            vpid: self.vpid,
        }
    }

    fn write(&self, session: &Session, top: &mut ndjson::Obj<'_>) {
        let mut o = top.obj(key!("process"));
        o.int(key!("pid"), self.pid);
        let mut thread = o.obj(key!("thread"));
        thread.int(key!("id"), self.tid);
        thread.close();
        o.str(key!("name"), self.name);
        o.str_with(key!("entity_id"), |out| {
            entity_id_into(out, session, self.entity);
        });
        if let Some((pid, tid, entity)) = self.parent {
            let mut parent = o.obj(key!("parent"));
            parent.int(key!("pid"), pid);
            let mut thread = parent.obj(key!("thread"));
            thread.int(key!("id"), tid);
            thread.close();
            parent.str_with(key!("entity_id"), |out| {
                entity_id_into(out, session, entity);
            });
            parent.close();
        }
        o.opt_str(key!("executable"), self.executable);
        o.opt_int(key!("exit_code"), self.exit_code);
        o.opt_int(key!("vpid"), self.vpid);
        o.close();
    }
}

/// [`Session::entity_id`] into `out`, escaped.
fn entity_id_into(out: &mut String, session: &Session, key: ProcessKey) {
    ndjson::escaped(out, &session.boot);
    out.push('-');
    ndjson::int(out, key.pid);
    out.push('-');
    ndjson::int(out, key.start_ticks);
}

/// `ipcaudit.*` of an event record.
fn extra(ev: &Event) -> Extra {
    let k = &ev.kind;
    Extra {
        schema_version: SCHEMA_VERSION,
        syscall: raw_syscall(k),
        lost: match k {
            EventKind::Lost { count } => Some(*count),
            _ => None,
        },
        timed: None,
        exec_tid: match k {
            EventKind::Exec { old_tid, .. } if *old_tid != ev.task.process.pid => Some(*old_tid),
            _ => None,
        },
        queue_namespace: match k {
            EventKind::MqOpen { queue, .. }
            | EventKind::MqSend { queue, .. }
            | EventKind::MqReceive { queue, .. }
            | EventKind::MqNotify { queue, .. } => {
                queue.map(|q| q.ns).filter(|ns| *ns != ev.ipc_ns)
            }
            _ => None,
        },
    }
}

impl Extra {
    fn write(&self, top: &mut ndjson::Obj<'_>) {
        let mut o = top.obj(key!("ipcaudit"));
        o.int(key!("schema_version"), self.schema_version);
        if let Some(raw) = &self.syscall {
            let mut s = o.obj(key!("syscall"));
            s.name(key!("name"), &raw.name);
            let args = s.array(key!("args"));
            for (i, a) in raw.args.iter().enumerate() {
                if i > 0 {
                    args.push(',');
                }
                ndjson::uint(args, *a);
            }
            args.push(']');
            s.int(key!("ret"), raw.ret);
            s.close();
        }
        o.opt_int(key!("lost"), self.lost);
        if let Some(timed) = self.timed {
            o.bool(key!("timed"), timed);
        }
        o.opt_int(key!("exec_tid"), self.exec_tid);
        o.opt_int(key!("queue_namespace"), self.queue_namespace);
        o.close();
    }
}

/// `event.outcome` of an event record: none for `events-lost`.
fn outcome(kind: &EventKind) -> Option<&'static str> {
    match kind {
        EventKind::Lost { .. } => None,
        k if k.errno().is_some() => Some("failure"),
        _ => Some("success"),
    }
}

/// The ECS record of an event (the serde shape: what `--format ecs`/`ocsf` convert, and the
/// reference [`encode_event`] writes the same bytes as).
pub fn event_record(
    session: &Session,
    ev: &Event,
    action: Action,
    object: Option<&ObjectRef>,
    posix: Option<&crate::model::PosixRef>,
    context: &ProcessContext,
) -> EcsRecord {
    let mut timestamp = String::with_capacity(32);
    rfc3339_nanos(ev.time_ns, &mut timestamp);
    let k = &ev.kind;
    let is_lost = matches!(k, EventKind::Lost { .. });
    EcsRecord {
        timestamp,
        event: EcsEvent {
            kind: "event".into(),
            action: Some(action.as_str().into()),
            outcome: outcome(k).map(Into::into),
        },
        error: k.errno().map(|e| EcsError {
            code: Named::errno(e).to_owned_string(),
        }),
        process: (!is_lost).then(|| ProcessFields::of(ev, context).to_ecs(session)),
        user: (!is_lost).then(|| EcsUser {
            id: ev.task.uid.to_string(),
        }),
        ipc: ipc_fields(ev, object, posix).map(|i| i.to_ecs()),
        host: EcsHost::of(session),
        container: context
            .container_id()
            .map(|id| EcsContainer { id: id.to_owned() }),
        ipcaudit: Some(extra(ev)),
    }
}

/// Room reserved for an event line: more than the longest the collector writes without a host,
/// a long executable path or many semaphore operations.
const LINE_RESERVE: usize = 768;

/// Appends the NDJSON line of an event (no newline): the bytes serde_json writes for
/// [`event_record`], written field by field from the borrowed event (no owned string per
/// field, constant keys, no revalidation).
pub fn encode_event(
    session: &Session,
    ev: &Event,
    action: Action,
    object: Option<&ObjectRef>,
    posix: Option<&crate::model::PosixRef>,
    context: &ProcessContext,
    out: &mut String,
) {
    // One reservation for the line (they are 300–500 bytes) rather than a check that can grow
    // the buffer at every write.
    out.reserve(LINE_RESERVE);
    let k = &ev.kind;
    let is_lost = matches!(k, EventKind::Lost { .. });
    let mut top = ndjson::Obj::open(out);
    top.str_with(key!("@timestamp"), |out| rfc3339_nanos(ev.time_ns, out));
    let mut event = top.obj(key!("event"));
    event.name(key!("kind"), "event");
    event.name(key!("action"), action.as_str());
    if let Some(outcome) = outcome(k) {
        event.name(key!("outcome"), outcome);
    }
    event.close();
    if let Some(e) = k.errno() {
        let mut error = top.obj(key!("error"));
        Named::errno(e).write(&mut error, key!("code"));
        error.close();
    }
    if !is_lost {
        ProcessFields::of(ev, context).write(session, &mut top);
        let mut user = top.obj(key!("user"));
        user.str_with(key!("id"), |out| ndjson::int(out, ev.task.uid));
        user.close();
    }
    if let Some(ipc) = ipc_fields(ev, object, posix) {
        ipc.write(&mut top);
    }
    if let Some(h) = &session.host {
        let mut host = top.obj(key!("host"));
        host.str(key!("name"), &h.name);
        host.str(key!("id"), &h.id);
        let mut boot = host.obj(key!("boot"));
        boot.str(key!("id"), &h.boot_id);
        boot.close();
        host.close();
    }
    if let Some(id) = context.container_id() {
        let mut container = top.obj(key!("container"));
        container.str(key!("id"), id);
        container.close();
    }
    extra(ev).write(&mut top);
    top.close();
}

/// The final `metric` line.
pub fn summary_value(session: &Session, time_ns: u64, summary: &Summary) -> serde_json::Value {
    let mut timestamp = String::new();
    rfc3339_nanos(time_ns, &mut timestamp);
    let counts: serde_json::Map<String, serde_json::Value> = summary
        .counts
        .iter()
        .map(|(a, n)| (a.as_str().to_owned(), (*n).into()))
        .collect();
    let mut value = serde_json::json!({
        "@timestamp": timestamp,
        "event": {"kind": "metric", "action": "session-summary", "duration": summary.duration_ns},
        "ipcaudit": {
            "records": {"by_action": counts, "total": summary.counts.values().sum::<u64>()},
            "received": summary.received,
            "lost": summary.lost,
            "undecodable": summary.undecodable,
            "output": summary.output,
            "evicted": summary.evicted,
        }
    });
    stamp(session, &mut value);
    value
}

/// ECS numeric severity of a finding (`event.severity`); `log.level` carries the name.
fn severity_number(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Warning => 2,
        Severity::Critical => 3,
    }
}

fn object_json(o: &ObjectRef) -> serde_json::Value {
    let mut ipc = serde_json::json!({"type": o.ty, "id": o.id, "namespace": o.ns});
    if let Some(key) = o.key {
        ipc["key"] = key_hex(key).into();
    }
    if let Some(size) = o.size {
        ipc["shm"] = serde_json::json!({"size": size});
    }
    if let Some(nsems) = o.nsems {
        ipc["sem"] = serde_json::json!({"nsems": nsems});
    }
    ipc
}

/// The `ipc` fields of a POSIX object: type, name, its file (path, inode), size.
pub fn posix_json(p: &crate::model::PosixRef) -> serde_json::Value {
    let mut ipc = serde_json::json!({
        "type": p.ty,
        "name": p.name,
        "path": p.path(),
        "namespace": p.ns,
    });
    if p.ino != 0 {
        ipc["inode"] = p.ino.into();
    }
    if let Some(size) = p.size {
        ipc["shm"] = serde_json::json!({"size": size});
    }
    ipc
}

/// An `alert` record: a finding raised (`finding-raised`) or no longer holding (`finding-cleared`).
/// `tick`: the change came from a grace tick of the live model (`ipcaudit.tick`), which `replay`
/// repeats at the same instant.
pub fn finding_value(
    session: &Session,
    time_ns: u64,
    change: &FindingChange,
    tick: bool,
) -> serde_json::Value {
    let f = change.finding();
    let mut timestamp = String::new();
    rfc3339_nanos(time_ns, &mut timestamp);
    let mut since = String::new();
    rfc3339_nanos(f.since_ns, &mut since);
    let evidence: Vec<serde_json::Value> = f
        .evidence
        .iter()
        .map(|e| {
            let mut v = serde_json::json!({
                "pid": e.pid,
                "name": e.name,
                "entity_id": e.entity.map(|k| session.entity_id(k)),
                "alive": e.alive,
                "role": e.role,
            });
            if let (serde_json::Value::Object(m), Ok(serde_json::Value::Object(d))) =
                (&mut v, serde_json::to_value(&*e.details))
            {
                m.extend(d);
            }
            if let Some(site) = &e.call_site {
                v["call_site"] = call_site_json(site);
            }
            v
        })
        .collect();
    let mut value = serde_json::json!({
        "@timestamp": timestamp,
        "event": {
            "kind": "alert",
            "action": if change.is_raised() { "finding-raised" } else { "finding-cleared" },
            "severity": severity_number(f.severity),
        },
        "log": {"level": f.severity.as_str()},
        "rule": {"name": f.rule.as_str(), "description": f.description},
        "ipcaudit": {"evidence": evidence, "since": since},
    });
    if let Some(o) = &f.object {
        value["ipc"] = object_json(o);
    }
    if let Some(p) = &f.posix {
        value["ipc"] = posix_json(p);
    }
    if let Some(remedy) = &f.remedy {
        value["ipcaudit"]["remedy"] = remedy.clone().into();
    }
    if tick {
        value["ipcaudit"]["tick"] = true.into();
    }
    if let Some(service) = &f.service {
        value["ipcaudit"]["service"] = service.clone().into();
    }
    stamp(session, &mut value);
    value
}

/// A `call-site` record: where in the code the object was created or attached, resolved after
/// the create or attach record (symbolization happens off the hot path). `replay` gives it to
/// the model as the live collector did.
pub fn call_site_value(
    session: &Session,
    r: &crate::stack::Resolved,
    object: &ObjectRef,
) -> serde_json::Value {
    let mut timestamp = String::new();
    rfc3339_nanos(r.time_ns, &mut timestamp);
    let t = &r.task;
    let mut ipc = object_json(object);
    if let Some(addr) = r.of.attach {
        ipc["shm"]["address"] = format!("0x{addr:x}").into();
    }
    let of = format!(
        "{}-{}",
        object.ty,
        if r.of.attach.is_some() {
            "attach"
        } else {
            "create"
        }
    );
    let mut value = serde_json::json!({
        "@timestamp": timestamp,
        "event": {"kind": "event", "action": "call-site"},
        "process": {
            "pid": t.process.pid,
            "thread": {"id": t.tid},
            "name": t.comm,
            "entity_id": session.entity_id(t.process),
        },
        "user": {"id": t.uid.to_string()},
        "ipc": ipc,
        "ipcaudit": {"call_site": call_site_json(&r.site), "call_site_of": of},
    });
    stamp(session, &mut value);
    value
}

/// Parses a `call-site` record back into what the model needs.
fn parse_call_site(value: &serde_json::Value) -> Result<Parsed, ParseError> {
    let time_ns = value
        .get("@timestamp")
        .and_then(serde_json::Value::as_str)
        .and_then(parse_rfc3339)
        .ok_or_else(|| field("@timestamp", "not RFC 3339 UTC"))?;
    let process = value
        .pointer("/process/entity_id")
        .and_then(serde_json::Value::as_str)
        .and_then(parse_entity_id)
        .ok_or_else(|| field("process.entity_id", "missing or not <boot>-<pid>-<ticks>"))?;
    let ipc = &value["ipc"];
    let ty: IpcType = serde_json::from_value(ipc["type"].clone())
        .map_err(|_| field("ipc.type", "missing or not shm, sem or msg"))?;
    let id = ipc["id"]
        .as_i64()
        .and_then(|v| i32::try_from(v).ok())
        .ok_or_else(|| field("ipc.id", "missing"))?;
    let ns = ipc["namespace"]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| field("ipc.namespace", "missing"))?;
    let of = value
        .pointer("/ipcaudit/call_site_of")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let attach = if of.ends_with("-attach") {
        let text = ipc["shm"]["address"]
            .as_str()
            .and_then(|a| a.strip_prefix("0x"))
            .ok_or_else(|| field("ipc.shm.address", "missing on an attach's call site"))?;
        Some(u64::from_str_radix(text, 16).map_err(|e| field("ipc.shm.address", e.to_string()))?)
    } else {
        None
    };
    let site: CallSite = serde_json::from_value(
        value
            .pointer("/ipcaudit/call_site")
            .cloned()
            .unwrap_or_default(),
    )
    .map_err(|e| field("ipcaudit.call_site", e.to_string()))?;
    Ok(Parsed::CallSite {
        time_ns,
        process,
        of: crate::stack::SiteOf { ns, ty, id, attach },
        site: Box::new(site),
    })
}

/// A call site as records carry it: the frames, how they were found, why the stack is short,
/// and a one-line summary.
pub fn call_site_json(site: &CallSite) -> serde_json::Value {
    let mut v = serde_json::to_value(site).unwrap_or_default();
    v["summary"] = site.summary(4).into();
    v["frame_count"] = site.frames.len().into();
    v
}

/// A `state` record with what /proc said about a process the first time it did IPC: its
/// executable, command line (bounded), parent chain up to pid 1, and systemd unit or container.
/// `replay` hands it to the model as the live collector did.
pub fn process_context_value(
    session: &Session,
    time_ns: u64,
    task: &Task,
    context: &ProcessContext,
) -> serde_json::Value {
    let mut timestamp = String::new();
    rfc3339_nanos(time_ns, &mut timestamp);
    let d = &context.details;
    let process = EcsProcess {
        pid: task.process.pid,
        thread: EcsThread {
            id: task.process.pid,
        },
        name: task.comm.clone(),
        entity_id: session.entity_id(task.process),
        parent: None,
        executable: d.executable.clone(),
        command_line: d.command_line.clone(),
        exit_code: None,
        vpid: context.vpid,
    };
    let mut value = serde_json::json!({
        "@timestamp": timestamp,
        "event": {"kind": "state", "action": "process-context"},
        "process": process,
        "ipcaudit": {"process": {}},
    });
    if !d.ancestors.is_empty() {
        value["ipcaudit"]["process"]["ancestors"] =
            serde_json::to_value(&d.ancestors).unwrap_or_default();
    }
    if let Some(unit) = &d.unit {
        value["ipcaudit"]["process"]["unit"] = unit.clone().into();
    }
    if let Some(service) = d.service(&task.comm) {
        value["ipcaudit"]["process"]["service"] = service.into();
    }
    if let Some(id) = &d.container_id {
        value["container"] = serde_json::json!({ "id": id });
    }
    stamp(session, &mut value);
    value
}

/// Parses a `process-context` record back into the process and what was known about it.
fn parse_process_context(
    value: &serde_json::Value,
) -> Result<(ProcessKey, String, ProcessDetails), ParseError> {
    let p = value
        .get("process")
        .ok_or_else(|| field("process", "missing"))?;
    let entity = p["entity_id"]
        .as_str()
        .ok_or_else(|| field("process.entity_id", "missing"))?;
    let key = parse_entity_id(entity)
        .ok_or_else(|| field("process.entity_id", "not <boot>-<pid>-<ticks>"))?;
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let extra = &value["ipcaudit"]["process"];
    let ancestors = match extra.get("ancestors") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(a) => serde_json::from_value(a.clone())
            .map_err(|e| field("ipcaudit.process.ancestors", e.to_string()))?,
    };
    let details = ProcessDetails {
        executable: text(&p["executable"]),
        command_line: text(&p["command_line"]),
        ancestors,
        unit: text(&extra["unit"]),
        container_id: text(&value["container"]["id"]),
    };
    Ok((key, text(&p["name"]).unwrap_or_default(), details))
}

/// A `model-resync` record: what the model had wrong and the kernel corrected.
pub fn resync_value(
    session: &Session,
    time_ns: u64,
    differences: &[Difference],
) -> serde_json::Value {
    let mut timestamp = String::new();
    rfc3339_nanos(time_ns, &mut timestamp);
    let mut value = serde_json::json!({
        "@timestamp": timestamp,
        "event": {"kind": "event", "action": "model-resync"},
        "ipcaudit": {"differences": differences, "corrections": differences.len()},
    });
    stamp(session, &mut value);
    value
}

/// A `state` record of one object as the model holds it (`watch --snapshot-every`).
pub fn state_value(
    session: &Session,
    time_ns: u64,
    object: &crate::model::ObjectView<'_>,
) -> serde_json::Value {
    let mut timestamp = String::new();
    rfc3339_nanos(time_ns, &mut timestamp);
    let mut value = serde_json::json!({
        "@timestamp": timestamp,
        "event": {"kind": "state", "action": "model-state"},
        "ipc": object_json(&object.object),
        "ipcaudit": {"object": object},
    });
    stamp(session, &mut value);
    value
}

/// A `state` record: the kernel snapshot the model was bootstrapped or reconciled with, so that
/// `replay` rebuilds exactly the same model.
/// `ticks_recorded`: the stream records the live model's grace ticks (`ipcaudit.tick` on the
/// findings they raise), so that `replay` ticks when the live model did instead of on its own.
pub fn snapshot_value(
    session: &Session,
    snapshot: &crate::snapshot::Snapshot,
    ticks_recorded: bool,
) -> serde_json::Value {
    let (time_ns, action) = (snapshot.taken_ns, "snapshot");
    let mut timestamp = String::new();
    rfc3339_nanos(time_ns, &mut timestamp);
    let mut value = serde_json::json!({
        "@timestamp": timestamp,
        "event": {"kind": "state", "action": action},
        "ipc": {"namespace": snapshot.ipc_ns},
        "ipcaudit": {"snapshot": snapshot},
    });
    if ticks_recorded {
        value["ipcaudit"]["ticks_recorded"] = true.into();
    }
    stamp(session, &mut value);
    value
}

/// A `metric` record of totals the kernel aggregated (`watch`): `usage` (one process's use of
/// semaphores and queues), `sem-totals` or `msg-totals` (one object's operations). The totals
/// are under `ipcaudit.aggregate` (what `replay` reads back); the process or object is also
/// named by the usual ECS fields.
pub fn aggregate_value(session: &Session, agg: &crate::model::Aggregate) -> serde_json::Value {
    use crate::model::Aggregate;
    let mut timestamp = String::new();
    rfc3339_nanos(agg.time_ns(), &mut timestamp);
    let mut value = serde_json::json!({
        "@timestamp": timestamp,
        "event": {"kind": "metric", "action": agg.action()},
        "ipcaudit": {"aggregate": agg},
    });
    match agg {
        Aggregate::Usage(u) => {
            value["process"] = serde_json::json!({
                "pid": u.task.process.pid,
                "thread": {"id": u.task.tid},
                "name": u.task.comm,
                "entity_id": session.entity_id(u.task.process),
            });
            value["user"] = serde_json::json!({"id": u.task.uid.to_string()});
            value["ipc"] = serde_json::json!({"namespace": u.ns});
        }
        Aggregate::Set(t) => {
            value["ipc"] = serde_json::json!({"namespace": t.ns, "type": "sem", "id": t.semid});
        }
        Aggregate::Queue(t) => {
            value["ipc"] = serde_json::json!({"namespace": t.ns, "type": "msg", "id": t.msqid});
        }
        Aggregate::Mqueue(t) => {
            value["ipc"] = serde_json::json!({"namespace": t.ns, "type": "pmsg", "inode": t.ino});
        }
    }
    stamp(session, &mut value);
    value
}

/// Why a recorded line could not be turned back into an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("bad `{field}`: {why}")]
    Field { field: &'static str, why: String },
}

fn field(field: &'static str, why: impl Into<String>) -> ParseError {
    ParseError::Field {
        field,
        why: why.into(),
    }
}

/// A recorded line: an event to replay, a kernel snapshot to bootstrap or reconcile with, or
/// another kind of record (alert, metric, resync note, derived action) that replay skips.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Event(Event, Action),
    /// A kernel snapshot, and whether the stream records the live model's grace ticks.
    Snapshot(Box<crate::snapshot::Snapshot>, bool),
    /// A finding raised or cleared by a grace tick of the live model, at `time_ns`.
    Tick {
        time_ns: u64,
    },
    /// Totals the kernel aggregated (`usage`, `sem-totals`, `msg-totals`).
    Aggregate(Box<crate::model::Aggregate>),
    /// Where in the code an object was created or attached (`call-site`).
    CallSite {
        time_ns: u64,
        process: ProcessKey,
        of: crate::stack::SiteOf,
        site: Box<CallSite>,
    },
    /// What was known about a process (`process-context`).
    Context {
        time_ns: u64,
        process: ProcessKey,
        comm: String,
        details: Box<ProcessDetails>,
    },
    Other {
        kind: String,
        time_ns: Option<u64>,
    },
}

/// Parses one NDJSON line written by this module back into what it recorded.
pub fn parse_event(line: &str) -> Result<Parsed, ParseError> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| ParseError::Json(e.to_string()))?;
    // A recording made by another schema version would be misread: refuse it.
    if let Some(version) = value.pointer("/ipcaudit/schema_version")
        && version.as_u64() != Some(u64::from(SCHEMA_VERSION))
    {
        return Err(field(
            "ipcaudit.schema_version",
            format!("{version} is not {SCHEMA_VERSION}, the version this ipcaudit reads"),
        ));
    }
    let kind = value
        .pointer("/event/kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let action = value
        .pointer("/event/action")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let other = |kind: &str| {
        let time_ns = value
            .get("@timestamp")
            .and_then(serde_json::Value::as_str)
            .and_then(parse_rfc3339);
        Ok(Parsed::Other {
            kind: kind.to_owned(),
            time_ns,
        })
    };
    match (kind, action) {
        ("state", "snapshot") => {
            let snap = value
                .pointer("/ipcaudit/snapshot")
                .ok_or_else(|| field("ipcaudit.snapshot", "missing"))?;
            let snap = serde_json::from_value(snap.clone())
                .map_err(|e| field("ipcaudit.snapshot", e.to_string()))?;
            let ticks = value.pointer("/ipcaudit/ticks_recorded") == Some(&true.into());
            return Ok(Parsed::Snapshot(Box::new(snap), ticks));
        }
        ("metric", "usage" | "sem-totals" | "msg-totals" | "mq-totals") => {
            let agg = value
                .pointer("/ipcaudit/aggregate")
                .ok_or_else(|| field("ipcaudit.aggregate", "missing"))?;
            let agg: crate::model::Aggregate = serde_json::from_value(agg.clone())
                .map_err(|e| field("ipcaudit.aggregate", e.to_string()))?;
            if agg.action() != action {
                return Err(field(
                    "ipcaudit.aggregate",
                    format!("holds {} totals in a {action} record", agg.action()),
                ));
            }
            return Ok(Parsed::Aggregate(Box::new(agg)));
        }
        ("state", "process-context") => {
            let time_ns = value
                .get("@timestamp")
                .and_then(serde_json::Value::as_str)
                .and_then(parse_rfc3339)
                .ok_or_else(|| field("@timestamp", "not RFC 3339 UTC"))?;
            let (process, comm, details) = parse_process_context(&value)?;
            return Ok(Parsed::Context {
                time_ns,
                process,
                comm,
                details: Box::new(details),
            });
        }
        ("event", "call-site") => return parse_call_site(&value),
        // Derived records (the model recomputes them) and resync notes are not events to apply.
        ("event", "shm-destroy" | "model-resync") => return other(action),
        ("event", _) => {}
        ("alert", _) if value.pointer("/ipcaudit/tick") == Some(&true.into()) => {
            let time_ns = value
                .get("@timestamp")
                .and_then(serde_json::Value::as_str)
                .and_then(parse_rfc3339)
                .ok_or_else(|| field("@timestamp", "not RFC 3339 UTC"))?;
            return Ok(Parsed::Tick { time_ns });
        }
        ("", _) => return Err(field("event.kind", "missing")),
        (kind, _) => return other(kind),
    }
    let record: EcsRecord =
        serde_json::from_value(value).map_err(|e| ParseError::Json(e.to_string()))?;
    let action_name = record
        .event
        .action
        .as_deref()
        .ok_or_else(|| field("event.action", "missing"))?;
    let action = Action::parse(action_name)
        .ok_or_else(|| field("event.action", format!("unknown {action_name:?}")))?;
    let time_ns =
        parse_rfc3339(&record.timestamp).ok_or_else(|| field("@timestamp", "not RFC 3339 UTC"))?;
    let ipc_ns = record.ipc.as_ref().map_or(0, |i| i.namespace);
    if action == Action::EventsLost {
        let count = record
            .ipcaudit
            .and_then(|x| x.lost)
            .ok_or_else(|| field("ipcaudit.lost", "missing"))?;
        let task = Task::kernel();
        return Ok(Parsed::Event(
            Event {
                time_ns,
                ipc_ns,
                task,
                kind: EventKind::Lost { count },
            },
            action,
        ));
    }
    let p = record.process.ok_or_else(|| field("process", "missing"))?;
    let key = parse_entity_id(&p.entity_id)
        .ok_or_else(|| field("process.entity_id", "not <boot>-<pid>-<ticks>"))?;
    let uid = record
        .user
        .and_then(|u| u.id.parse().ok())
        .ok_or_else(|| field("user.id", "missing or not a number"))?;
    let mut task = Task {
        process: key,
        tid: p.thread.id,
        comm: p.name,
        uid,
    };
    let kind = match action {
        Action::ProcessFork => {
            let parent = p
                .parent
                .ok_or_else(|| field("process.parent", "missing on process-fork"))?;
            let parent_key = parse_entity_id(&parent.entity_id)
                .ok_or_else(|| field("process.parent.entity_id", "not <boot>-<pid>-<ticks>"))?;
            task.process = parent_key;
            task.tid = parent.thread.map_or(parent.pid, |t| t.id);
            EventKind::Fork { child: key }
        }
        Action::ProcessExec => EventKind::Exec {
            filename: p.executable.unwrap_or_default(),
            old_tid: record
                .ipcaudit
                .as_ref()
                .and_then(|x| x.exec_tid)
                .unwrap_or(key.pid),
        },
        Action::ProcessExit => EventKind::Exit {
            code: p.exit_code.unwrap_or(0),
        },
        _ => {
            let raw = record
                .ipcaudit
                .as_ref()
                .and_then(|x| x.syscall.as_ref())
                .ok_or_else(|| field("ipcaudit.syscall", "missing"))?;
            let abi = abi_kind(&raw.name)
                .ok_or_else(|| field("ipcaudit.syscall.name", format!("unknown {:?}", raw.name)))?;
            let mtype = record
                .ipc
                .as_ref()
                .and_then(|i| i.msg.as_ref())
                .and_then(|m| m.mtype);
            let ops = record
                .ipc
                .as_ref()
                .and_then(|i| i.sem.as_ref())
                .and_then(|s| s.ops.as_ref())
                .map(|ops| {
                    let ops = ops
                        .iter()
                        .map(|o| SemOp {
                            num: o.num,
                            op: o.op,
                            flags: o.flags.iter().fold(0, |acc, f| match f.as_str() {
                                "undo" => acc | SemOp::SEM_UNDO,
                                "nowait" => acc | SemOp::IPC_NOWAIT,
                                _ => acc,
                            }),
                        })
                        .collect();
                    (ops, raw.name == "semtimedop")
                });
            if (ipcaudit_ebpf::kind::MQ_OPEN..=ipcaudit_ebpf::kind::MQ_NOTIFY).contains(&abi) {
                let ipc = record.ipc.as_ref();
                let name = ipc.and_then(|i| i.name.clone());
                let queue = ipc.and_then(|i| i.inode).map(|ino| crate::event::MqId {
                    ns: record
                        .ipcaudit
                        .as_ref()
                        .and_then(|x| x.queue_namespace)
                        .unwrap_or(ipc_ns),
                    ino,
                });
                let prio = ipc.and_then(|i| i.msg.as_ref()).and_then(|m| m.priority);
                crate::decode::mq_kind(abi, raw.args, raw.ret, name.as_deref(), queue, prio)
                    .ok_or_else(|| field("ipcaudit.syscall", "unusable"))?
            } else {
                syscall_kind(abi, raw.args, raw.ret, mtype, ops)
                    .ok_or_else(|| field("ipcaudit.syscall", "unusable"))?
            }
        }
    };
    // Errors named by string must agree with the raw return value.
    if let (Some(err), Some(e)) = (record.error.as_ref(), kind.errno())
        && errno_value(&err.code) != Some(e.0)
    {
        return Err(field(
            "error.code",
            format!("{} does not match the return value", err.code),
        ));
    }
    Ok(Parsed::Event(
        Event {
            time_ns,
            ipc_ns,
            task,
            kind,
        },
        action,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            boot: "abcdef01".into(),
            host: Some(super::super::Host {
                name: "box".into(),
                id: "0123456789abcdef0123456789abcdef".into(),
                boot_id: "abcdef01-0000-4000-8000-000000000000".into(),
            }),
        }
    }

    fn task() -> Task {
        Task {
            process: ProcessKey {
                pid: 4711,
                start_ticks: 990,
            },
            tid: 4713,
            comm: "we\"ird\n\u{1}".into(),
            uid: 1000,
        }
    }

    fn ev(kind: EventKind) -> Event {
        Event {
            time_ns: 1_795_353_784_123_456_789,
            ipc_ns: 4_026_531_839,
            task: task(),
            kind,
        }
    }

    fn json(ev: &Event, action: Action, object: Option<&ObjectRef>) -> serde_json::Value {
        let mut s = String::new();
        encode_event(
            &session(),
            ev,
            action,
            object,
            None,
            &ProcessContext::default(),
            &mut s,
        );
        assert!(!s.contains('\n'));
        serde_json::from_str(&s).unwrap()
    }

    #[test]
    fn shm_create_has_ecs_fields() {
        let e = ev(EventKind::ShmGet {
            key: 0x1234,
            size: 8192,
            flags: 0o1600,
            result: Ok(42),
        });
        let v = json(&e, Action::ShmCreate, None);
        assert_eq!(v["@timestamp"], "2026-11-22T13:23:04.123456789Z");
        assert_eq!(v["event"]["kind"], "event");
        assert_eq!(v["event"]["action"], "shm-create");
        assert_eq!(v["event"]["outcome"], "success");
        assert_eq!(v["process"]["pid"], 4711);
        assert_eq!(v["process"]["thread"]["id"], 4713);
        assert_eq!(v["process"]["name"], "we\"ird\n\u{1}");
        assert_eq!(v["process"]["entity_id"], "abcdef01-4711-990");
        assert_eq!(v["user"]["id"], "1000");
        assert_eq!(v["ipc"]["type"], "shm");
        assert_eq!(v["ipc"]["id"], 42);
        assert_eq!(v["ipc"]["key"], "0x00001234");
        assert_eq!(v["ipc"]["namespace"], 4_026_531_839u32);
        assert_eq!(v["ipc"]["shm"]["size"], 8192);
        assert!(v.get("error").is_none());
        assert_eq!(v["host"]["name"], "box");
        assert_eq!(
            v["host"]["boot"]["id"],
            "abcdef01-0000-4000-8000-000000000000"
        );
        assert_eq!(v["ipcaudit"]["schema_version"], SCHEMA_VERSION);
    }

    #[test]
    fn failures_carry_the_errno_name() {
        let e = ev(EventKind::ShmAt {
            shmid: 999_999,
            addr: 0,
            flags: 0,
            result: Err(Errno(22)),
        });
        let v = json(&e, Action::ShmAttach, None);
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(v["error"]["code"], "EINVAL");
        assert_eq!(v["ipc"]["id"], 999_999);
    }

    #[test]
    fn semop_and_ctl_fields() {
        let e = ev(EventKind::SemOp {
            semid: 3,
            ops: vec![SemOp {
                num: 0,
                op: -1,
                flags: SemOp::SEM_UNDO | SemOp::IPC_NOWAIT,
            }],
            nsops: 1,
            timed: true,
            result: Ok(()),
        });
        let v = json(&e, Action::SemOp, None);
        assert_eq!(
            v["ipc"]["sem"]["ops"],
            serde_json::json!([{"num":0,"op":-1,"flags":["undo","nowait"]}])
        );
        let e = ev(EventKind::SemCtl {
            semid: 3,
            semnum: 0,
            cmd: 16 | 0x100,
            arg: 1,
            result: Ok(0),
        });
        assert_eq!(
            json(&e, Action::SemControl, None)["ipc"]["command"],
            "SETVAL"
        );
    }

    #[test]
    fn queue_records_name_the_queue() {
        let e = ev(EventKind::MqSend {
            fd: 4,
            queue: Some(crate::event::MqId { ns: 1, ino: 77 }),
            size: 16,
            prio: 3,
            result: Ok(()),
        });
        let p = crate::model::PosixRef {
            ns: 1,
            ty: PosixType::Pmsg,
            name: "/jobs".into(),
            generation: 2,
            dev: 20,
            ino: 77,
            size: None,
        };
        let mut s = String::new();
        encode_event(
            &session(),
            &e,
            Action::MqSend,
            None,
            Some(&p),
            &ProcessContext::default(),
            &mut s,
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["ipc"]["type"], "pmsg");
        assert_eq!(v["ipc"]["name"], "/jobs");
        assert_eq!(v["ipc"]["path"], "/dev/mqueue/jobs");
        assert_eq!(v["ipc"]["inode"], 77);
        assert_eq!(
            v["ipc"]["msg"],
            serde_json::json!({"size": 16, "priority": 3})
        );
        assert_eq!(v["ipcaudit"]["syscall"]["name"], "mq_timedsend");
        assert!(v["ipc"].get("id").is_none());
    }

    #[test]
    fn fork_record_is_about_the_child() {
        let e = ev(EventKind::Fork {
            child: ProcessKey {
                pid: 5000,
                start_ticks: 1000,
            },
        });
        let v = json(&e, Action::ProcessFork, None);
        assert_eq!(v["process"]["pid"], 5000);
        assert_eq!(v["process"]["entity_id"], "abcdef01-5000-1000");
        assert_eq!(v["process"]["parent"]["pid"], 4711);
        assert_eq!(v["process"]["parent"]["entity_id"], "abcdef01-4711-990");
    }

    #[test]
    fn process_context_records_round_trip() {
        let details = ProcessDetails {
            executable: Some("/usr/bin/cache".into()),
            command_line: Some("/usr/bin/cache --size \"8192\"".into()),
            ancestors: vec![
                crate::event::Ancestor {
                    pid: 5,
                    name: "bash".into(),
                    executable: Some("/usr/bin/bash".into()),
                },
                crate::event::Ancestor {
                    pid: 1,
                    name: "systemd".into(),
                    executable: None,
                },
            ],
            unit: Some("cache.service".into()),
            container_id: None,
        };
        let context = ProcessContext {
            vpid: None,
            details: std::sync::Arc::new(details.clone()),
        };
        let v = process_context_value(&session(), 1_795_353_784_000_000_000, &task(), &context);
        assert_eq!(v["event"]["action"], "process-context");
        assert_eq!(
            v["process"]["command_line"],
            "/usr/bin/cache --size \"8192\""
        );
        assert_eq!(v["ipcaudit"]["process"]["service"], "cache.service");
        let Ok(Parsed::Context {
            process,
            details: parsed,
            ..
        }) = parse_event(&v.to_string())
        else {
            panic!("not a context record: {v}")
        };
        assert_eq!(process, task().process);
        assert_eq!(*parsed, details);
    }

    #[test]
    fn call_site_records_round_trip() {
        let site = CallSite {
            frames: vec![crate::event::Frame {
                function: Some("cache_attach".into()),
                file: Some("leaky.c".into()),
                line: Some(26),
                module: Some("/tmp/leaky".into()),
                build_id: Some("ab12".into()),
                address: 0x11ed,
            }],
            method: "eh-frame".into(),
            reason: Some("no frame pointers".into()),
        };
        let of = crate::stack::SiteOf {
            ns: 4_026_531_839,
            ty: IpcType::Shm,
            id: 42,
            attach: Some(0x7f00_0000_1000),
        };
        let r = crate::stack::Resolved {
            time_ns: 1_795_353_784_000_000_000,
            task: task(),
            of,
            site: site.clone(),
        };
        let object = ObjectRef {
            ns: of.ns,
            ty: IpcType::Shm,
            id: 42,
            generation: 3,
            key: Some(0),
            size: Some(8192),
            nsems: None,
        };
        let v = call_site_value(&session(), &r, &object);
        assert_eq!(v["ipcaudit"]["call_site_of"], "shm-attach");
        assert_eq!(
            v["ipcaudit"]["call_site"]["summary"],
            "cache_attach (leaky.c:26)"
        );
        assert_eq!(v["ipc"]["shm"]["address"], "0x7f0000001000");
        let Ok(Parsed::CallSite {
            process,
            of: parsed_of,
            site: parsed,
            ..
        }) = parse_event(&v.to_string())
        else {
            panic!("not a call-site record: {v}")
        };
        assert_eq!((process, parsed_of, *parsed), (task().process, of, site));
        // ECS and OCSF keep it (the native record under ipcaudit / unmapped).
        assert_eq!(
            super::super::ecs::from_native(v.clone())["ipcaudit"]["call_site"]["frame_count"],
            1
        );
        assert_eq!(
            super::super::ocsf::from_native(&v)["unmapped"]["ipcaudit"]["call_site_of"],
            "shm-attach"
        );
    }

    /// One event of every kind, with the action the model gives it.
    fn every_kind() -> Vec<(EventKind, Action)> {
        vec![
            (
                EventKind::ShmGet {
                    key: -1,
                    size: 1 << 40,
                    flags: 0o1777,
                    result: Ok(7),
                },
                Action::ShmCreate,
            ),
            (
                EventKind::ShmAt {
                    shmid: 7,
                    addr: 0,
                    flags: 0o10000,
                    result: Ok(0x7f00_0000_0000),
                },
                Action::ShmAttach,
            ),
            (
                EventKind::ShmDt {
                    addr: 0x7f00_0000_0000,
                    result: Err(Errno(22)),
                },
                Action::ShmDetach,
            ),
            (
                EventKind::ShmCtl {
                    shmid: 7,
                    cmd: 0,
                    result: Ok(0),
                },
                Action::ShmRemove,
            ),
            (
                EventKind::SemGet {
                    key: 5,
                    nsems: 2,
                    flags: 0o600,
                    result: Err(Errno(2)),
                },
                Action::SemOpen,
            ),
            (
                EventKind::SemOp {
                    semid: 1,
                    ops: vec![SemOp {
                        num: 1,
                        op: 2,
                        flags: SemOp::SEM_UNDO,
                    }],
                    nsops: 1,
                    timed: true,
                    result: Ok(()),
                },
                Action::SemOp,
            ),
            (
                EventKind::SemCtl {
                    semid: 1,
                    semnum: 1,
                    cmd: 16,
                    arg: 5,
                    result: Ok(0),
                },
                Action::SemControl,
            ),
            (
                EventKind::MsgGet {
                    key: 9,
                    flags: 0o1600,
                    result: Ok(3),
                },
                Action::MsgCreate,
            ),
            (
                EventKind::MsgSnd {
                    msqid: 3,
                    size: 10,
                    flags: 0,
                    mtype: Some(2),
                    result: Ok(()),
                },
                Action::MsgSend,
            ),
            (
                EventKind::MsgRcv {
                    msqid: 3,
                    max_size: 64,
                    want_type: -5,
                    flags: 0o4000,
                    mtype: Some(2),
                    result: Ok(10),
                },
                Action::MsgReceive,
            ),
            (
                EventKind::MsgCtl {
                    msqid: 3,
                    cmd: 2,
                    result: Ok(0),
                },
                Action::MsgControl,
            ),
            (
                EventKind::Munmap {
                    addr: 0x1000,
                    len: 4096,
                    result: Ok(()),
                },
                Action::ShmDetach,
            ),
            (
                EventKind::Mremap {
                    old_addr: 0x1000,
                    old_len: 4096,
                    new_len: 8192,
                    flags: 1,
                    result: Ok(0x5000),
                },
                Action::ShmDetach,
            ),
            (
                EventKind::Fork {
                    child: ProcessKey {
                        pid: 9,
                        start_ticks: 1,
                    },
                },
                Action::ProcessFork,
            ),
            (
                EventKind::Exec {
                    filename: "/usr/bin/x y".into(),
                    old_tid: 4713,
                },
                Action::ProcessExec,
            ),
            (EventKind::Exit { code: 9 }, Action::ProcessExit),
            (
                EventKind::MqOpen {
                    name: "/jobs q".into(),
                    flags: 0o1101,
                    mode: 0o600,
                    queue: Some(crate::event::MqId { ns: 1, ino: 77 }),
                    result: Ok(3),
                },
                Action::MqCreate,
            ),
            (
                EventKind::MqOpen {
                    name: "/gone".into(),
                    flags: 0,
                    mode: 0,
                    queue: None,
                    result: Err(Errno(2)),
                },
                Action::MqOpen,
            ),
            (
                EventKind::MqUnlink {
                    name: "/jobs q".into(),
                    result: Ok(()),
                },
                Action::MqRemove,
            ),
            (
                EventKind::MqSend {
                    fd: 3,
                    // The queue of another namespace (a descriptor passed over a socket).
                    queue: Some(crate::event::MqId { ns: 99, ino: 77 }),
                    size: 16,
                    prio: 5,
                    result: Ok(()),
                },
                Action::MqSend,
            ),
            (
                EventKind::MqReceive {
                    fd: 3,
                    queue: Some(crate::event::MqId { ns: 1, ino: 77 }),
                    max_size: 64,
                    prio: Some(5),
                    result: Ok(16),
                },
                Action::MqReceive,
            ),
            (
                EventKind::MqReceive {
                    fd: 9,
                    queue: None,
                    max_size: 64,
                    prio: None,
                    result: Err(Errno(9)),
                },
                Action::MqReceive,
            ),
            (
                EventKind::MqNotify {
                    fd: 3,
                    queue: Some(crate::event::MqId { ns: 1, ino: 77 }),
                    register: true,
                    result: Ok(()),
                },
                Action::MqNotify,
            ),
        ]
    }

    #[test]
    fn every_kind_round_trips_through_replay() {
        let cases = every_kind();
        for (kind, action) in cases {
            let e = ev(kind);
            let mut line = String::new();
            encode_event(
                &session(),
                &e,
                action,
                None,
                None,
                &ProcessContext::default(),
                &mut line,
            );
            assert_eq!(
                parse_event(&line),
                Ok(Parsed::Event(e.clone(), action)),
                "{line}"
            );
        }
    }

    #[test]
    fn replay_errors_name_the_field() {
        assert!(matches!(parse_event("{"), Err(ParseError::Json(_))));
        assert_eq!(
            parse_event(r#"{"event":{"kind":"alert"}}"#),
            Ok(Parsed::Other {
                kind: "alert".into(),
                time_ns: None
            })
        );
        let e = ev(EventKind::ShmDt {
            addr: 1,
            result: Ok(()),
        });
        let mut line = String::new();
        encode_event(
            &session(),
            &e,
            Action::ShmDetach,
            None,
            None,
            &ProcessContext::default(),
            &mut line,
        );
        let bad = line.replace("shm-detach", "shm-explode");
        assert!(matches!(
            parse_event(&bad),
            Err(ParseError::Field {
                field: "event.action",
                ..
            })
        ));
        let bad = line.replace("\"schema_version\":1", "\"schema_version\":2");
        assert!(
            matches!(
                parse_event(&bad),
                Err(ParseError::Field {
                    field: "ipcaudit.schema_version",
                    ..
                })
            ),
            "{bad}"
        );
        let bad = line.replace("2026-11-22T", "yesterday-");
        assert!(matches!(
            parse_event(&bad),
            Err(ParseError::Field {
                field: "@timestamp",
                ..
            })
        ));
    }

    #[test]
    fn aggregates_round_trip_and_name_their_process_or_object() {
        use crate::model::{
            Aggregate, MsgSlotTotals, QueueTotals, SemSlotTotals, SetTotals, Usage,
        };
        let usage = Aggregate::Usage(Usage {
            time_ns: 1_700_000_000_123_456_789,
            ns: 4_026_531_839,
            task: ev(EventKind::Exit { code: 0 }).task,
            sem: vec![SemSlotTotals {
                ns: 4_026_531_839,
                semid: 7,
                semnum: 2,
                first_ns: 10,
                last_ns: 20,
                calls: 5,
                net: -1,
                undo: 0,
                took: 3,
                gave: 2,
            }],
            msg: vec![MsgSlotTotals {
                ns: 4_026_531_839,
                msqid: 9,
                first_ns: 11,
                last_ns: 21,
                calls: 4,
                sent: 4,
                sent_bytes: 64,
                received: 0,
                received_bytes: 0,
            }],
        });
        let set = Aggregate::Set(SetTotals {
            time_ns: 1_700_000_000_000_000_001,
            ns: 1,
            semid: 7,
            first_ns: 10,
            ops: 5,
            delta: vec![0, 0, -1],
        });
        let queue = Aggregate::Queue(QueueTotals {
            time_ns: 1_700_000_000_000_000_002,
            ns: 1,
            msqid: 9,
            first_ns: 11,
            ops: 4,
            sent: 4,
            sent_bytes: 64,
            received: 0,
            received_bytes: 0,
        });
        let mqueue = Aggregate::Mqueue(crate::model::MqueueTotals {
            time_ns: 1_700_000_000_000_000_003,
            ns: 1,
            ino: 77,
            first_ns: 12,
            ops: 6,
            sent: 4,
            sent_bytes: 64,
            received: 2,
            received_bytes: 32,
        });
        for agg in [usage, set, queue, mqueue] {
            let value = aggregate_value(&session(), &agg);
            assert_eq!(value["event"]["kind"], "metric");
            assert_eq!(value["event"]["action"], agg.action());
            match &agg {
                Aggregate::Usage(u) => {
                    assert_eq!(value["process"]["pid"], u.task.process.pid);
                    assert_eq!(value["process"]["entity_id"], "abcdef01-4711-990");
                }
                Aggregate::Set(t) => assert_eq!(value["ipc"]["id"], t.semid),
                Aggregate::Queue(t) => assert_eq!(value["ipc"]["id"], t.msqid),
                Aggregate::Mqueue(t) => assert_eq!(value["ipc"]["inode"], t.ino),
            }
            let line = value.to_string();
            assert_eq!(
                parse_event(&line),
                Ok(Parsed::Aggregate(Box::new(agg.clone()))),
                "{line}"
            );
            // A usage record whose action says otherwise is refused, naming the field.
            let bad = line.replace(
                &format!("\"action\":\"{}\"", agg.action()),
                "\"action\":\"usage\"",
            );
            if agg.action() != "usage" {
                assert!(
                    matches!(
                        parse_event(&bad),
                        Err(ParseError::Field {
                            field: "ipcaudit.aggregate",
                            ..
                        })
                    ),
                    "{bad}"
                );
            }
        }
    }

    /// The directly written line is byte for byte what serde_json writes for the record, for
    /// every kind of event, with and without an object, a POSIX object, a host and a process
    /// context, and with what needs escaping or has no name (an errno, a command).
    #[test]
    fn encode_event_writes_what_serde_writes() {
        let mut cases = every_kind();
        cases.extend([
            (EventKind::Lost { count: 12 }, Action::EventsLost),
            (
                EventKind::ShmCtl {
                    shmid: -3,
                    cmd: 77,
                    result: Err(Errno(4000)),
                },
                Action::ShmControl,
            ),
            (
                EventKind::SemOp {
                    semid: 2,
                    ops: vec![
                        SemOp {
                            num: 0,
                            op: -1,
                            flags: SemOp::SEM_UNDO | SemOp::IPC_NOWAIT,
                        },
                        SemOp {
                            num: 65535,
                            op: i16::MIN,
                            flags: SemOp::IPC_NOWAIT,
                        },
                        SemOp {
                            num: 1,
                            op: 0,
                            flags: 0,
                        },
                    ],
                    nsops: 40,
                    timed: false,
                    result: Err(Errno(11)),
                },
                Action::SemOp,
            ),
        ]);
        let object = ObjectRef {
            ns: 7,
            ty: IpcType::Shm,
            id: 5,
            generation: 2,
            key: Some(-2),
            size: Some(u64::MAX),
            nsems: Some(3),
        };
        let posix = crate::model::PosixRef {
            ns: 7,
            ty: PosixType::Pmsg,
            name: "/q\\\"".into(),
            generation: 1,
            dev: 3,
            ino: 99,
            size: None,
        };
        let context = ProcessContext {
            vpid: Some(12),
            details: std::sync::Arc::new(ProcessDetails {
                executable: Some("/opt/a\tb/x".into()),
                container_id: Some("c0ffee".into()),
                ..ProcessDetails::default()
            }),
        };
        let mut odd = session();
        odd.boot = "b\"t".into();
        let sessions = [session(), Session::default(), odd];
        let contexts = [ProcessContext::default(), context];
        for (kind, action) in cases {
            let e = ev(kind);
            for s in &sessions {
                for c in &contexts {
                    for (o, p) in [(None, None), (Some(&object), Some(&posix))] {
                        let mut line = String::from("kept:");
                        encode_event(s, &e, action, o, p, c, &mut line);
                        let record = event_record(s, &e, action, o, p, c);
                        let reference = serde_json::to_string(&record).unwrap();
                        assert_eq!(line, format!("kept:{reference}"));
                    }
                }
            }
        }
    }
}
