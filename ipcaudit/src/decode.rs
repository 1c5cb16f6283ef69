//! Ring-buffer bytes → domain events. Pure and length-checked: every field is read at its
//! `offset_of!` in the ABI struct from a slice whose length was checked first; an unknown kind
//! or a short record is an error, never undefined behaviour.

use std::mem::{offset_of, size_of};

use ipcaudit_ebpf::{
    AGG_SEMNUMS, COMM_LEN, ExecRecord, ExitRecord, ForkRecord, Header, MAX_SEM_OPS, MQ_NAME_LEN,
    MqNameRecord, MqRecord, MqTotals, MqTotalsRecord, MsgTotals, MsgTotalsRecord, MsgUsage,
    ProcUsage, SemBuf, SemOpRecord, SemTotals, SemTotalsRecord, SemUsage, StackRecord,
    SyscallRecord, UsageRecord, flag, kind, stack_flag,
};
use thiserror::Error;

use crate::{
    clock::Clocks,
    event::{Errno, Event, EventKind, MqId, ProcessKey, SemOp, SysResult, Task},
    model::{Aggregate, MqueueTotals, MsgSlotTotals, QueueTotals, SemSlotTotals, SetTotals, Usage},
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than {need} bytes for kind {kind}")]
    Short { kind: u16, len: usize, need: usize },
    #[error("record kind {0} is unknown to this ipcaudit (ABI {abi})", abi = ipcaudit_ebpf::ABI_VERSION)]
    UnknownKind(u16),
    #[error("record kind {0} carries aggregated totals or a call stack, not an event")]
    NotAnEvent(u16),
}

/// A decoded record: an event, totals the kernel aggregated (`watch`), or a user call stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Event(Event),
    Aggregate(Aggregate),
    Stack(Box<crate::stack::RawStack>),
}

/// A record as the kernel wrote it, checked and typed, before clock conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub header: Header,
    pub body: RawBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawBody {
    Syscall {
        ret: i64,
        args: [u64; 6],
        aux: i64,
    },
    SemOp {
        ret: i64,
        args: [u64; 6],
        ops: Vec<SemBuf>,
    },
    Fork {
        child_tgid: u32,
        child_start_ns: u64,
    },
    Exec {
        old_tid: u32,
        filename: Vec<u8>,
    },
    Exit {
        exit_code: u32,
    },
    Usage(Box<ProcUsage>),
    SemTotals(SemTotals),
    MsgTotals(MsgTotals),
    /// `mq_open`, `mq_unlink`: the name, and the queue `mq_open` returned a descriptor of.
    MqName {
        ret: i64,
        args: [u64; 6],
        queue: Option<MqId>,
        name: Vec<u8>,
    },
    /// `mq_timedsend`, `mq_timedreceive`, `mq_notify`: the descriptor's queue, the priority.
    Mq {
        ret: i64,
        args: [u64; 6],
        aux: i64,
        queue: Option<MqId>,
    },
    MqTotals(MqTotals),
    Stack(Box<StackBody>),
}

/// A `StackRecord`'s body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackBody {
    pub of_kind: u16,
    pub ret: i64,
    pub arg0: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    pub frames: Vec<u64>,
    pub build_ids: Vec<crate::stack::BuildIdFrame>,
    pub stack: Vec<u8>,
}

fn stack_body(b: &[u8], flags: u16) -> StackBody {
    let frames_len =
        (u32_at(b, offset_of!(StackRecord, frames_len)) as usize).min(ipcaudit_ebpf::STACK_FRAMES);
    let frames_off = offset_of!(StackRecord, frames);
    let frames = (0..frames_len)
        .map(|i| u64_at(b, frames_off + 8 * i))
        .collect();
    let ids_len = if flags & stack_flag::BUILD_IDS == 0 {
        0
    } else {
        (u32_at(b, offset_of!(StackRecord, build_ids_len)) as usize)
            .min(ipcaudit_ebpf::STACK_FRAMES)
    };
    let ids_off = offset_of!(StackRecord, build_ids);
    let frame_size = size_of::<ipcaudit_ebpf::BuildIdFrame>();
    let build_ids = (0..ids_len)
        .map(|i| {
            let at = ids_off + frame_size * i;
            crate::stack::BuildIdFrame {
                status: u32_at(b, at + offset_of!(ipcaudit_ebpf::BuildIdFrame, status))
                    .cast_signed(),
                build_id: array(b, at + offset_of!(ipcaudit_ebpf::BuildIdFrame, build_id)),
                offset: u64_at(b, at + offset_of!(ipcaudit_ebpf::BuildIdFrame, offset)),
            }
        })
        .collect();
    let stack_len =
        (u32_at(b, offset_of!(StackRecord, stack_len)) as usize).min(ipcaudit_ebpf::STACK_COPY);
    let stack_off = offset_of!(StackRecord, stack);
    StackBody {
        of_kind: u16_at(b, offset_of!(StackRecord, of_kind)),
        ret: i64_at(b, offset_of!(StackRecord, ret)),
        arg0: u64_at(b, offset_of!(StackRecord, arg0)),
        ip: u64_at(b, offset_of!(StackRecord, ip)),
        sp: u64_at(b, offset_of!(StackRecord, sp)),
        bp: u64_at(b, offset_of!(StackRecord, bp)),
        frames,
        build_ids,
        stack: b
            .get(stack_off..stack_off + stack_len)
            .unwrap_or_default()
            .to_vec(),
    }
}

fn array<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0; N];
    if let Some(src) = b.get(off..off + N) {
        out.copy_from_slice(src);
    }
    out
}
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes(array(b, off))
}
fn i16_at(b: &[u8], off: usize) -> i16 {
    i16::from_ne_bytes(array(b, off))
}
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(array(b, off))
}
pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(array(b, off))
}
fn i64_at(b: &[u8], off: usize) -> i64 {
    i64::from_ne_bytes(array(b, off))
}

fn header(b: &[u8]) -> Header {
    Header {
        kind: u16_at(b, offset_of!(Header, kind)),
        flags: u16_at(b, offset_of!(Header, flags)),
        tgid: u32_at(b, offset_of!(Header, tgid)),
        tid: u32_at(b, offset_of!(Header, tid)),
        uid: u32_at(b, offset_of!(Header, uid)),
        ipc_ns: u32_at(b, offset_of!(Header, ipc_ns)),
        pad0: 0,
        ts_ns: u64_at(b, offset_of!(Header, ts_ns)),
        start_ns: u64_at(b, offset_of!(Header, start_ns)),
        comm: array::<COMM_LEN>(b, offset_of!(Header, comm)),
    }
}

fn syscall_fields(b: &[u8]) -> (i64, [u64; 6]) {
    let args_off = offset_of!(SyscallRecord, args);
    let mut args = [0u64; 6];
    for (i, arg) in args.iter_mut().enumerate() {
        *arg = u64_at(b, args_off + i * 8);
    }
    (i64_at(b, offset_of!(SyscallRecord, ret)), args)
}

fn sem_usage(b: &[u8], at: usize) -> SemUsage {
    let f = |off: usize| at + off;
    SemUsage {
        calls: u64_at(b, f(offset_of!(SemUsage, calls))),
        ns: u32_at(b, f(offset_of!(SemUsage, ns))),
        semid: u32_at(b, f(offset_of!(SemUsage, semid))).cast_signed(),
        semnum: u16_at(b, f(offset_of!(SemUsage, semnum))),
        pad0: [0; 3],
        entry_ts: u64_at(b, f(offset_of!(SemUsage, entry_ts))),
        first_ts: u64_at(b, f(offset_of!(SemUsage, first_ts))),
        last_ts: u64_at(b, f(offset_of!(SemUsage, last_ts))),
        net: i64_at(b, f(offset_of!(SemUsage, net))),
        undo: i64_at(b, f(offset_of!(SemUsage, undo))),
        took: u64_at(b, f(offset_of!(SemUsage, took))),
        gave: u64_at(b, f(offset_of!(SemUsage, gave))),
    }
}

fn msg_usage(b: &[u8], at: usize) -> MsgUsage {
    let f = |off: usize| at + off;
    MsgUsage {
        calls: u64_at(b, f(offset_of!(MsgUsage, calls))),
        ns: u32_at(b, f(offset_of!(MsgUsage, ns))),
        msqid: u32_at(b, f(offset_of!(MsgUsage, msqid))).cast_signed(),
        entry_ts: u64_at(b, f(offset_of!(MsgUsage, entry_ts))),
        first_ts: u64_at(b, f(offset_of!(MsgUsage, first_ts))),
        last_ts: u64_at(b, f(offset_of!(MsgUsage, last_ts))),
        first_jiffies: u64_at(b, f(offset_of!(MsgUsage, first_jiffies))),
        sent: u64_at(b, f(offset_of!(MsgUsage, sent))),
        sent_bytes: u64_at(b, f(offset_of!(MsgUsage, sent_bytes))),
        received: u64_at(b, f(offset_of!(MsgUsage, received))),
        received_bytes: u64_at(b, f(offset_of!(MsgUsage, received_bytes))),
    }
}

fn proc_usage(b: &[u8], at: usize) -> ProcUsage {
    let f = |off: usize| at + off;
    let sem_at = f(offset_of!(ProcUsage, sem));
    let msg_at = f(offset_of!(ProcUsage, msg));
    ProcUsage {
        start_ns: u64_at(b, f(offset_of!(ProcUsage, start_ns))),
        nsproxy: 0,
        ns: u32_at(b, f(offset_of!(ProcUsage, ns))),
        uid: u32_at(b, f(offset_of!(ProcUsage, uid))),
        comm: array::<COMM_LEN>(b, f(offset_of!(ProcUsage, comm))),
        sem: std::array::from_fn(|i| sem_usage(b, sem_at + i * size_of::<SemUsage>())),
        msg: std::array::from_fn(|i| msg_usage(b, msg_at + i * size_of::<MsgUsage>())),
    }
}

fn sem_totals(b: &[u8], at: usize) -> SemTotals {
    let f = |off: usize| at + off;
    let delta_at = f(offset_of!(SemTotals, delta));
    SemTotals {
        ops: u64_at(b, f(offset_of!(SemTotals, ops))),
        ns: u32_at(b, f(offset_of!(SemTotals, ns))),
        semid: u32_at(b, f(offset_of!(SemTotals, semid))).cast_signed(),
        first_ts: u64_at(b, f(offset_of!(SemTotals, first_ts))),
        written_ops: 0,
        delta: std::array::from_fn(|i| i64_at(b, delta_at + i * 8)),
    }
}

fn msg_totals(b: &[u8], at: usize) -> MsgTotals {
    let f = |off: usize| at + off;
    MsgTotals {
        ops: u64_at(b, f(offset_of!(MsgTotals, ops))),
        ns: u32_at(b, f(offset_of!(MsgTotals, ns))),
        msqid: u32_at(b, f(offset_of!(MsgTotals, msqid))).cast_signed(),
        first_ts: u64_at(b, f(offset_of!(MsgTotals, first_ts))),
        written_ops: 0,
        sent: u64_at(b, f(offset_of!(MsgTotals, sent))),
        sent_bytes: u64_at(b, f(offset_of!(MsgTotals, sent_bytes))),
        received: u64_at(b, f(offset_of!(MsgTotals, received))),
        received_bytes: u64_at(b, f(offset_of!(MsgTotals, received_bytes))),
    }
}

fn mq_totals(b: &[u8], at: usize) -> MqTotals {
    let f = |off: usize| at + off;
    MqTotals {
        ops: u64_at(b, f(offset_of!(MqTotals, ops))),
        ns: u32_at(b, f(offset_of!(MqTotals, ns))),
        pad0: 0,
        ino: u64_at(b, f(offset_of!(MqTotals, ino))),
        first_ts: u64_at(b, f(offset_of!(MqTotals, first_ts))),
        written_ops: 0,
        sent: u64_at(b, f(offset_of!(MqTotals, sent))),
        sent_bytes: u64_at(b, f(offset_of!(MqTotals, sent_bytes))),
        received: u64_at(b, f(offset_of!(MqTotals, received))),
        received_bytes: u64_at(b, f(offset_of!(MqTotals, received_bytes))),
        pad1: 0,
    }
}

/// The queue of a POSIX queue record, when the programs resolved it.
fn mq_queue(h: &Header, ino: u64, ns: u32) -> Option<MqId> {
    (h.flags & flag::HAS_QUEUE != 0 && ino != 0).then_some(MqId { ns, ino })
}

/// The size a record of `kind` must have at least.
fn needed(kind: u16) -> Option<usize> {
    Some(match kind {
        kind::MQ_OPEN | kind::MQ_UNLINK => size_of::<MqNameRecord>(),
        kind::MQ_SEND | kind::MQ_RECEIVE | kind::MQ_NOTIFY => size_of::<MqRecord>(),
        kind::MQ_TOTALS => size_of::<MqTotalsRecord>(),
        kind::SEMOP => size_of::<SemOpRecord>(),
        kind::FORK => size_of::<ForkRecord>(),
        kind::EXEC => size_of::<ExecRecord>(),
        kind::EXIT => size_of::<ExitRecord>(),
        kind::USAGE => size_of::<UsageRecord>(),
        kind::SEM_TOTALS => size_of::<SemTotalsRecord>(),
        kind::MSG_TOTALS => size_of::<MsgTotalsRecord>(),
        kind::STACK => size_of::<StackRecord>(),
        1..=kind::MAX => size_of::<SyscallRecord>(),
        _ => return None,
    })
}

impl TryFrom<&[u8]> for RawRecord {
    type Error = DecodeError;

    fn try_from(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < size_of::<Header>() {
            let kind = if b.len() >= 2 { u16_at(b, 0) } else { 0 };
            return Err(DecodeError::Short {
                kind,
                len: b.len(),
                need: size_of::<Header>(),
            });
        }
        let header = header(b);
        let need = needed(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
        if b.len() < need {
            return Err(DecodeError::Short {
                kind: header.kind,
                len: b.len(),
                need,
            });
        }
        let body = match header.kind {
            kind::SEMOP => {
                let (ret, args) = syscall_fields(b);
                let count = usize::try_from(args[2])
                    .unwrap_or(usize::MAX)
                    .min(MAX_SEM_OPS);
                let ops_off = offset_of!(SemOpRecord, ops);
                let ops = (0..count)
                    .map(|i| {
                        let at = ops_off + i * size_of::<SemBuf>();
                        SemBuf {
                            sem_num: u16_at(b, at),
                            sem_op: i16_at(b, at + 2),
                            sem_flg: i16_at(b, at + 4),
                        }
                    })
                    .collect();
                RawBody::SemOp { ret, args, ops }
            }
            kind::FORK => RawBody::Fork {
                child_tgid: u32_at(b, offset_of!(ForkRecord, child_tgid)),
                child_start_ns: u64_at(b, offset_of!(ForkRecord, child_start_ns)),
            },
            kind::EXEC => {
                let off = offset_of!(ExecRecord, filename);
                let raw = b
                    .get(off..off + ipcaudit_ebpf::EXEC_PATH_LEN)
                    .unwrap_or_default();
                let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
                RawBody::Exec {
                    old_tid: u32_at(b, offset_of!(ExecRecord, old_tid)),
                    filename: raw[..end].to_vec(),
                }
            }
            kind::EXIT => RawBody::Exit {
                exit_code: u32_at(b, offset_of!(ExitRecord, exit_code)),
            },
            kind::USAGE => RawBody::Usage(Box::new(proc_usage(b, offset_of!(UsageRecord, usage)))),
            kind::SEM_TOTALS => {
                RawBody::SemTotals(sem_totals(b, offset_of!(SemTotalsRecord, totals)))
            }
            kind::MSG_TOTALS => {
                RawBody::MsgTotals(msg_totals(b, offset_of!(MsgTotalsRecord, totals)))
            }
            kind::MQ_OPEN | kind::MQ_UNLINK => {
                let (ret, args) = syscall_fields(b);
                let off = offset_of!(MqNameRecord, name);
                let raw = b.get(off..off + MQ_NAME_LEN).unwrap_or_default();
                let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
                RawBody::MqName {
                    ret,
                    args,
                    queue: mq_queue(
                        &header,
                        u64_at(b, offset_of!(MqNameRecord, ino)),
                        u32_at(b, offset_of!(MqNameRecord, queue_ns)),
                    ),
                    name: raw[..end].to_vec(),
                }
            }
            kind::MQ_SEND | kind::MQ_RECEIVE | kind::MQ_NOTIFY => {
                let (ret, args) = syscall_fields(b);
                RawBody::Mq {
                    ret,
                    args,
                    aux: i64_at(b, offset_of!(SyscallRecord, aux)),
                    queue: mq_queue(
                        &header,
                        u64_at(b, offset_of!(MqRecord, ino)),
                        u32_at(b, offset_of!(MqRecord, queue_ns)),
                    ),
                }
            }
            kind::MQ_TOTALS => RawBody::MqTotals(mq_totals(b, offset_of!(MqTotalsRecord, totals))),
            kind::STACK => RawBody::Stack(Box::new(stack_body(b, header.flags))),
            _ => {
                let (ret, args) = syscall_fields(b);
                RawBody::Syscall {
                    ret,
                    args,
                    aux: i64_at(b, offset_of!(SyscallRecord, aux)),
                }
            }
        };
        Ok(Self { header, body })
    }
}

/// The text of a NUL-padded kernel string (lossy UTF-8).
pub fn cstr_lossy(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A syscall return value as a result: -4095..=-1 are errnos.
fn result(ret: i64) -> SysResult<i64> {
    if (-4095..0).contains(&ret) {
        Err(Errno(i32::try_from(-ret).unwrap_or(i32::MAX)))
    } else {
        Ok(ret)
    }
}

/// Syscall arguments are C ints/longs passed in 64-bit registers: take the low 32 bits.
#[expect(
    clippy::cast_possible_truncation,
    reason = "an int argument is the register's low 32 bits"
)]
fn int(arg: u64) -> i32 {
    (arg as u32).cast_signed()
}

/// Builds the domain event of a syscall record from its kind, arguments and result.
/// Shared by the ring-buffer path and by `replay` (which records the raw arguments).
pub fn syscall_kind(
    kind: u16,
    args: [u64; 6],
    ret: i64,
    mtype: Option<i64>,
    ops: Option<(Vec<SemOp>, bool)>,
) -> Option<EventKind> {
    let r = result(ret);
    #[expect(
        clippy::cast_sign_loss,
        reason = "non-negative results of these syscalls are sizes and addresses"
    )]
    let unsigned = |v: i64| v as u64;
    Some(match kind {
        kind::SHMGET => EventKind::ShmGet {
            key: int(args[0]),
            size: args[1],
            flags: int(args[2]),
            result: r.map(|v| i32::try_from(v).unwrap_or(-1)),
        },
        kind::SHMAT => EventKind::ShmAt {
            shmid: int(args[0]),
            addr: args[1],
            flags: int(args[2]),
            result: r.map(unsigned),
        },
        kind::SHMDT => EventKind::ShmDt {
            addr: args[0],
            result: r.map(drop),
        },
        kind::SHMCTL => EventKind::ShmCtl {
            shmid: int(args[0]),
            cmd: int(args[1]),
            result: r,
        },
        kind::SEMGET => EventKind::SemGet {
            key: int(args[0]),
            nsems: int(args[1]),
            flags: int(args[2]),
            result: r.map(|v| i32::try_from(v).unwrap_or(-1)),
        },
        kind::SEMOP => {
            let (ops, timed) = ops.unwrap_or_default();
            EventKind::SemOp {
                semid: int(args[0]),
                ops,
                nsops: u32::try_from(args[2]).unwrap_or(u32::MAX),
                timed,
                result: r.map(drop),
            }
        }
        kind::SEMCTL => EventKind::SemCtl {
            semid: int(args[0]),
            semnum: int(args[1]),
            cmd: int(args[2]),
            arg: args[3],
            result: r,
        },
        kind::MSGGET => EventKind::MsgGet {
            key: int(args[0]),
            flags: int(args[1]),
            result: r.map(|v| i32::try_from(v).unwrap_or(-1)),
        },
        kind::MSGSND => EventKind::MsgSnd {
            msqid: int(args[0]),
            size: args[2],
            flags: int(args[3]),
            mtype,
            result: r.map(drop),
        },
        kind::MSGRCV => EventKind::MsgRcv {
            msqid: int(args[0]),
            max_size: args[2],
            #[expect(clippy::cast_possible_wrap, reason = "msgtyp is a C long")]
            want_type: args[3] as i64,
            flags: int(args[4]),
            mtype,
            result: r.map(unsigned),
        },
        kind::MSGCTL => EventKind::MsgCtl {
            msqid: int(args[0]),
            cmd: int(args[1]),
            result: r,
        },
        kind::MUNMAP => EventKind::Munmap {
            addr: args[0],
            len: args[1],
            result: r.map(drop),
        },
        kind::MREMAP => EventKind::Mremap {
            old_addr: args[0],
            old_len: args[1],
            new_len: args[2],
            flags: u32::try_from(args[3] & 0xffff_ffff).unwrap_or(0),
            result: r.map(unsigned),
        },
        _ => return None,
    })
}

/// Builds the domain event of a POSIX queue record. Shared by the ring-buffer path and by
/// `replay` (which records the name, the queue and the priority beside the raw arguments).
pub fn mq_kind(
    kind: u16,
    args: [u64; 6],
    ret: i64,
    name: Option<&str>,
    queue: Option<MqId>,
    prio: Option<u32>,
) -> Option<EventKind> {
    let r = result(ret);
    #[expect(
        clippy::cast_sign_loss,
        reason = "a successful receive returns the message's size"
    )]
    let size = |v: i64| v as u64;
    // glibc passes the name without its leading slash (`mq_open("/q")` is the syscall's "q"):
    // the name as the API takes it has one.
    let api_name = |n: &str| {
        if n.starts_with('/') {
            n.to_owned()
        } else {
            format!("/{n}")
        }
    };
    Some(match kind {
        kind::MQ_OPEN => EventKind::MqOpen {
            name: api_name(name?),
            flags: int(args[1]),
            mode: u32::try_from(args[2] & 0xffff_ffff).unwrap_or(0),
            queue,
            result: r.map(|v| i32::try_from(v).unwrap_or(-1)),
        },
        kind::MQ_UNLINK => EventKind::MqUnlink {
            name: api_name(name?),
            result: r.map(drop),
        },
        kind::MQ_SEND => EventKind::MqSend {
            fd: int(args[0]),
            queue,
            size: args[2],
            prio: prio.unwrap_or_else(|| u32::try_from(args[3] & 0xffff_ffff).unwrap_or(0)),
            result: r.map(drop),
        },
        kind::MQ_RECEIVE => EventKind::MqReceive {
            fd: int(args[0]),
            queue,
            max_size: args[2],
            prio,
            result: r.map(size),
        },
        kind::MQ_NOTIFY => EventKind::MqNotify {
            fd: int(args[0]),
            queue,
            register: args[1] != 0,
            result: r.map(drop),
        },
        _ => return None,
    })
}

impl RawRecord {
    /// The domain record, with kernel clocks converted by `clocks`.
    pub fn into_record(self, clocks: &Clocks) -> Record {
        let h = self.header;
        let task = Task {
            process: ProcessKey {
                pid: h.tgid,
                start_ticks: clocks.start_ticks(h.start_ns),
            },
            tid: h.tid,
            comm: cstr_lossy(&h.comm),
            uid: h.uid,
        };
        let kind = match self.body {
            RawBody::Syscall { ret, args, aux } => {
                let mtype = (h.flags & flag::HAS_MTYPE != 0).then_some(aux);
                syscall_kind(h.kind, args, ret, mtype, None)
            }
            RawBody::SemOp { ret, args, ops } => {
                let ops = ops
                    .into_iter()
                    .map(|o| SemOp {
                        num: o.sem_num,
                        op: o.sem_op,
                        flags: o.sem_flg,
                    })
                    .collect();
                syscall_kind(
                    h.kind,
                    args,
                    ret,
                    None,
                    Some((ops, h.flags & flag::TIMED != 0)),
                )
            }
            RawBody::Fork {
                child_tgid,
                child_start_ns,
            } => Some(EventKind::Fork {
                child: ProcessKey {
                    pid: child_tgid,
                    start_ticks: clocks.start_ticks(child_start_ns),
                },
            }),
            RawBody::Exec { old_tid, filename } => Some(EventKind::Exec {
                filename: String::from_utf8_lossy(&filename).into_owned(),
                old_tid,
            }),
            RawBody::Exit { exit_code } => Some(EventKind::Exit { code: exit_code }),
            RawBody::Usage(u) => return Record::Aggregate(usage(&h, task, &u, clocks)),
            RawBody::Stack(s) => {
                return Record::Stack(Box::new(crate::stack::RawStack {
                    time_ns: clocks.wall_ns(h.ts_ns),
                    ipc_ns: h.ipc_ns,
                    task,
                    of_kind: s.of_kind,
                    ret: s.ret,
                    arg0: s.arg0,
                    regs: crate::stack::unwind::Regs {
                        ip: s.ip,
                        sp: s.sp,
                        bp: s.bp,
                    },
                    frames: s.frames,
                    build_ids: s.build_ids,
                    stack: s.stack,
                }));
            }
            RawBody::SemTotals(t) => {
                return Record::Aggregate(Aggregate::Set(SetTotals {
                    time_ns: clocks.wall_ns(h.ts_ns),
                    ns: t.ns,
                    semid: t.semid,
                    first_ns: clocks.wall_ns(t.first_ts),
                    ops: t.ops,
                    delta: t.delta.to_vec(),
                }));
            }
            RawBody::MqName {
                ret,
                args,
                queue,
                name,
            } => mq_kind(
                h.kind,
                args,
                ret,
                Some(&String::from_utf8_lossy(&name)),
                queue,
                None,
            ),
            RawBody::Mq {
                ret,
                args,
                aux,
                queue,
            } => {
                let prio = (h.flags & flag::HAS_PRIO != 0)
                    .then(|| u32::try_from(aux & 0xffff_ffff).unwrap_or(0));
                mq_kind(h.kind, args, ret, None, queue, prio)
            }
            RawBody::MqTotals(t) => {
                return Record::Aggregate(Aggregate::Mqueue(MqueueTotals {
                    time_ns: clocks.wall_ns(h.ts_ns),
                    ns: t.ns,
                    ino: t.ino,
                    first_ns: clocks.wall_ns(t.first_ts),
                    ops: t.ops,
                    sent: t.sent,
                    sent_bytes: t.sent_bytes,
                    received: t.received,
                    received_bytes: t.received_bytes,
                }));
            }
            RawBody::MsgTotals(t) => {
                return Record::Aggregate(Aggregate::Queue(QueueTotals {
                    time_ns: clocks.wall_ns(h.ts_ns),
                    ns: t.ns,
                    msqid: t.msqid,
                    first_ns: clocks.wall_ns(t.first_ts),
                    ops: t.ops,
                    sent: t.sent,
                    sent_bytes: t.sent_bytes,
                    received: t.received,
                    received_bytes: t.received_bytes,
                }));
            }
        };
        Record::Event(Event {
            time_ns: clocks.wall_ns(h.ts_ns),
            ipc_ns: h.ipc_ns,
            task,
            // Every kind that passed `needed()` maps to an event; Lost is never a record.
            kind: kind.unwrap_or(EventKind::Lost { count: 0 }),
        })
    }

    /// The domain event (an error for aggregated totals).
    pub fn into_event(self, clocks: &Clocks) -> Result<Event, DecodeError> {
        let kind = self.header.kind;
        match self.into_record(clocks) {
            Record::Event(ev) => Ok(ev),
            Record::Aggregate(_) | Record::Stack(_) => Err(DecodeError::NotAnEvent(kind)),
        }
    }
}

/// A process's usage totals: its used slots, times on the wall clock.
fn usage(h: &Header, task: Task, u: &ProcUsage, clocks: &Clocks) -> Aggregate {
    let sem = u
        .sem
        .iter()
        .filter(|s| s.ns != 0 && usize::from(s.semnum) < AGG_SEMNUMS)
        .map(|s| SemSlotTotals {
            ns: s.ns,
            semid: s.semid,
            semnum: s.semnum,
            first_ns: clocks.wall_ns(s.first_ts),
            last_ns: clocks.wall_ns(s.last_ts),
            calls: s.calls,
            net: s.net,
            undo: s.undo,
            took: s.took,
            gave: s.gave,
        })
        .collect();
    let msg = u
        .msg
        .iter()
        .filter(|s| s.ns != 0)
        .map(|s| MsgSlotTotals {
            ns: s.ns,
            msqid: s.msqid,
            first_ns: clocks.wall_ns(s.first_ts),
            // From jiffies (`MsgUsage::last_ts`), it can be up to a tick late: never after the
            // flush that shows it.
            last_ns: clocks.wall_ns(s.last_ts.min(h.ts_ns)),
            calls: s.calls,
            sent: s.sent,
            sent_bytes: s.sent_bytes,
            received: s.received,
            received_bytes: s.received_bytes,
        })
        .collect();
    Aggregate::Usage(Usage {
        time_ns: clocks.wall_ns(h.ts_ns),
        ns: h.ipc_ns,
        task,
        sem,
        msg,
    })
}

/// Decodes one ring-buffer record that is an event.
pub fn decode(bytes: &[u8], clocks: &Clocks) -> Result<Event, DecodeError> {
    RawRecord::try_from(bytes)?.into_event(clocks)
}

/// Decodes one ring-buffer record: an event or aggregated totals.
pub fn decode_record(bytes: &[u8], clocks: &Clocks) -> Result<Record, DecodeError> {
    RawRecord::try_from(bytes).map(|r| r.into_record(clocks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::IpcType;
    use proptest::prelude::*;

    const CLOCKS: Clocks = Clocks {
        mono_to_wall: 1_000_000_000_000,
        boot_wall_ns: 0,
        ticks_per_sec: 100,
    };

    fn put<const N: usize>(buf: &mut [u8], off: usize, bytes: [u8; N]) {
        buf[off..off + N].copy_from_slice(&bytes);
    }

    fn header_bytes(buf: &mut [u8], kind: u16, flags: u16) {
        put(buf, offset_of!(Header, kind), kind.to_ne_bytes());
        put(buf, offset_of!(Header, flags), flags.to_ne_bytes());
        put(buf, offset_of!(Header, tgid), 4711u32.to_ne_bytes());
        put(buf, offset_of!(Header, tid), 4712u32.to_ne_bytes());
        put(buf, offset_of!(Header, uid), 1000u32.to_ne_bytes());
        put(
            buf,
            offset_of!(Header, ipc_ns),
            4_026_531_839u32.to_ne_bytes(),
        );
        put(buf, offset_of!(Header, ts_ns), 5_000u64.to_ne_bytes());
        put(
            buf,
            offset_of!(Header, start_ns),
            2_500_000_000u64.to_ne_bytes(),
        );
        put(
            buf,
            offset_of!(Header, comm),
            *b"worker\0\0\0\0\0\0\0\0\0\0",
        );
    }

    fn syscall_bytes(kind: u16, flags: u16, args: [u64; 6], ret: i64, aux: i64) -> Vec<u8> {
        let mut b = vec![0u8; size_of::<SyscallRecord>()];
        header_bytes(&mut b, kind, flags);
        put(&mut b, offset_of!(SyscallRecord, ret), ret.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            put(
                &mut b,
                offset_of!(SyscallRecord, args) + i * 8,
                a.to_ne_bytes(),
            );
        }
        put(&mut b, offset_of!(SyscallRecord, aux), aux.to_ne_bytes());
        b
    }

    /// A POSIX queue record: a syscall record, the queue, and (name records) the name.
    fn mq_bytes(kind: u16, flags: u16, args: [u64; 6], ret: i64, aux: i64, name: &[u8]) -> Vec<u8> {
        let named = matches!(kind, kind::MQ_OPEN | kind::MQ_UNLINK);
        let len = if named {
            size_of::<MqNameRecord>()
        } else {
            size_of::<MqRecord>()
        };
        let mut b = syscall_bytes(kind, flags, args, ret, aux);
        b.resize(len, 0);
        let (ino, ns) = if named {
            (
                offset_of!(MqNameRecord, ino),
                offset_of!(MqNameRecord, queue_ns),
            )
        } else {
            (offset_of!(MqRecord, ino), offset_of!(MqRecord, queue_ns))
        };
        put(&mut b, ino, 77u64.to_ne_bytes());
        put(&mut b, ns, 4_026_532_000u32.to_ne_bytes());
        if named {
            let at = offset_of!(MqNameRecord, name);
            b[at..at + name.len()].copy_from_slice(name);
        }
        b
    }

    #[test]
    fn decodes_posix_queue_records() {
        let b = mq_bytes(
            kind::MQ_OPEN,
            flag::HAS_QUEUE,
            [0x7fff_0000, 0o1102, 0o600, 0, 0, 0],
            3,
            0,
            b"jobs\0garbage",
        );
        let queue = Some(MqId {
            ns: 4_026_532_000,
            ino: 77,
        });
        assert_eq!(
            decode(&b, &CLOCKS).unwrap().kind,
            EventKind::MqOpen {
                name: "/jobs".into(),
                flags: 0o1102,
                mode: 0o600,
                queue,
                result: Ok(3),
            }
        );
        // Without HAS_QUEUE the inode is not trusted.
        let b = mq_bytes(kind::MQ_UNLINK, 0, [0; 6], -2, 0, b"/jobs");
        assert_eq!(
            decode(&b, &CLOCKS).unwrap().kind,
            EventKind::MqUnlink {
                name: "/jobs".into(),
                result: Err(Errno(2)),
            }
        );
        let b = mq_bytes(
            kind::MQ_SEND,
            flag::HAS_QUEUE | flag::HAS_PRIO,
            [3, 0x5000, 16, 9, 0, 0],
            0,
            9,
            b"",
        );
        assert_eq!(
            decode(&b, &CLOCKS).unwrap().kind,
            EventKind::MqSend {
                fd: 3,
                queue,
                size: 16,
                prio: 9,
                result: Ok(()),
            }
        );
        let b = mq_bytes(
            kind::MQ_RECEIVE,
            flag::HAS_QUEUE,
            [3, 0x5000, 64, 0x6000, 0, 0],
            16,
            0,
            b"",
        );
        assert_eq!(
            decode(&b, &CLOCKS).unwrap().kind,
            EventKind::MqReceive {
                fd: 3,
                queue,
                max_size: 64,
                prio: None,
                result: Ok(16),
            }
        );
        let b = mq_bytes(
            kind::MQ_NOTIFY,
            flag::HAS_QUEUE,
            [3, 0, 0, 0, 0, 0],
            0,
            0,
            b"",
        );
        assert_eq!(
            decode(&b, &CLOCKS).unwrap().kind,
            EventKind::MqNotify {
                fd: 3,
                queue,
                register: false,
                result: Ok(()),
            }
        );
        // Totals.
        let mut b = vec![0u8; size_of::<MqTotalsRecord>()];
        header_bytes(&mut b, kind::MQ_TOTALS, 0);
        let t = offset_of!(MqTotalsRecord, totals);
        put(&mut b, t + offset_of!(MqTotals, ops), 5u64.to_ne_bytes());
        put(&mut b, t + offset_of!(MqTotals, ns), 9u32.to_ne_bytes());
        put(&mut b, t + offset_of!(MqTotals, ino), 77u64.to_ne_bytes());
        put(&mut b, t + offset_of!(MqTotals, sent), 3u64.to_ne_bytes());
        put(
            &mut b,
            t + offset_of!(MqTotals, received),
            2u64.to_ne_bytes(),
        );
        let Ok(Record::Aggregate(Aggregate::Mqueue(m))) = decode_record(&b, &CLOCKS) else {
            panic!("not queue totals");
        };
        assert_eq!((m.ns, m.ino, m.ops, m.sent, m.received), (9, 77, 5, 3, 2));
        assert!(matches!(
            decode_record(&b[..120], &CLOCKS),
            Err(DecodeError::Short { need: 136, .. })
        ));
    }

    #[test]
    fn decodes_shmget_with_header() {
        let b = syscall_bytes(kind::SHMGET, 0, [0x1234, 4096, 0o1600, 0, 0, 0], 32769, 0);
        let ev = decode(&b, &CLOCKS).unwrap();
        assert_eq!(ev.time_ns, 1_000_000_005_000);
        assert_eq!(ev.ipc_ns, 4_026_531_839);
        assert_eq!(
            ev.task.process,
            ProcessKey {
                pid: 4711,
                start_ticks: 250
            }
        );
        assert_eq!(ev.task.tid, 4712);
        assert_eq!(ev.task.comm, "worker");
        assert_eq!(ev.task.uid, 1000);
        assert_eq!(
            ev.kind,
            EventKind::ShmGet {
                key: 0x1234,
                size: 4096,
                flags: 0o1600,
                result: Ok(32769)
            }
        );
    }

    #[test]
    fn negative_returns_are_errnos() {
        let b = syscall_bytes(kind::SHMAT, 0, [99, 0, 0, 0, 0, 0], -22, 0);
        let ev = decode(&b, &CLOCKS).unwrap();
        assert_eq!(
            ev.kind,
            EventKind::ShmAt {
                shmid: 99,
                addr: 0,
                flags: 0,
                result: Err(Errno(22))
            }
        );
        assert_eq!(ev.kind.errno().unwrap().name(), "EINVAL");
    }

    #[test]
    fn int_arguments_take_the_low_32_bits() {
        // shmget(IPC_PRIVATE = 0) with garbage in the upper half of the register.
        let b = syscall_bytes(
            kind::SHMGET,
            0,
            [0xdead_beef_0000_0000, 1, 0, 0, 0, 0],
            1,
            0,
        );
        let EventKind::ShmGet { key, .. } = decode(&b, &CLOCKS).unwrap().kind else {
            panic!()
        };
        assert_eq!(key, 0);
        let b = syscall_bytes(kind::SHMGET, 0, [0xffff_ffff, 1, 0, 0, 0, 0], 1, 0);
        let EventKind::ShmGet { key, .. } = decode(&b, &CLOCKS).unwrap().kind else {
            panic!()
        };
        assert_eq!(key, -1);
    }

    #[test]
    fn msg_type_only_when_flagged() {
        let b = syscall_bytes(
            kind::MSGSND,
            flag::HAS_MTYPE,
            [7, 0x1000, 64, 0, 0, 0],
            0,
            3,
        );
        let EventKind::MsgSnd { mtype, size, .. } = decode(&b, &CLOCKS).unwrap().kind else {
            panic!()
        };
        assert_eq!((mtype, size), (Some(3), 64));
        let b = syscall_bytes(kind::MSGRCV, 0, [7, 0x1000, 64, 0, 0o4000, 0], -42, 99);
        let EventKind::MsgRcv {
            mtype,
            result,
            flags,
            ..
        } = decode(&b, &CLOCKS).unwrap().kind
        else {
            panic!()
        };
        assert_eq!((mtype, result, flags), (None, Err(Errno(42)), 0o4000));
    }

    #[test]
    fn decodes_semop_ops_up_to_nsops() {
        let mut b = vec![0u8; size_of::<SemOpRecord>()];
        b[..size_of::<SyscallRecord>()].copy_from_slice(&syscall_bytes(
            kind::SEMOP,
            flag::TIMED,
            [5, 0x1000, 2, 0, 0, 0],
            0,
            0,
        ));
        let ops = offset_of!(SemOpRecord, ops);
        put(&mut b, ops, 1u16.to_ne_bytes());
        put(&mut b, ops + 2, (-1i16).to_ne_bytes());
        put(&mut b, ops + 4, 0x1000i16.to_ne_bytes());
        put(&mut b, ops + 6, 0u16.to_ne_bytes());
        put(&mut b, ops + 8, 1i16.to_ne_bytes());
        let EventKind::SemOp {
            semid,
            ops,
            nsops,
            timed,
            result,
        } = decode(&b, &CLOCKS).unwrap().kind
        else {
            panic!()
        };
        assert_eq!((semid, nsops, timed, result), (5, 2, true, Ok(())));
        assert_eq!(
            ops,
            vec![
                SemOp {
                    num: 1,
                    op: -1,
                    flags: 0x1000
                },
                SemOp {
                    num: 0,
                    op: 1,
                    flags: 0
                }
            ]
        );
        assert!(ops[0].undo());
    }

    #[test]
    fn decodes_lifecycle() {
        let mut b = vec![0u8; size_of::<ForkRecord>()];
        header_bytes(&mut b, kind::FORK, 0);
        put(
            &mut b,
            offset_of!(ForkRecord, child_tgid),
            5000u32.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(ForkRecord, child_start_ns),
            3_000_000_000u64.to_ne_bytes(),
        );
        assert_eq!(
            decode(&b, &CLOCKS).unwrap().kind,
            EventKind::Fork {
                child: ProcessKey {
                    pid: 5000,
                    start_ticks: 300
                }
            }
        );

        let mut b = vec![0u8; size_of::<ExecRecord>()];
        header_bytes(&mut b, kind::EXEC, 0);
        put(
            &mut b,
            offset_of!(ExecRecord, old_tid),
            4712u32.to_ne_bytes(),
        );
        b[offset_of!(ExecRecord, filename)..][..9].copy_from_slice(b"/bin/tr\xff\0");
        assert_eq!(
            decode(&b, &CLOCKS).unwrap().kind,
            EventKind::Exec {
                filename: "/bin/tr\u{fffd}".into(),
                old_tid: 4712
            }
        );

        let mut b = vec![0u8; size_of::<ExitRecord>()];
        header_bytes(&mut b, kind::EXIT, 0);
        put(
            &mut b,
            offset_of!(ExitRecord, exit_code),
            9u32.to_ne_bytes(),
        );
        assert_eq!(
            decode(&b, &CLOCKS).unwrap().kind,
            EventKind::Exit { code: 9 }
        );
    }

    #[test]
    fn short_and_unknown_records_are_errors() {
        assert_eq!(
            decode(&[], &CLOCKS),
            Err(DecodeError::Short {
                kind: 0,
                len: 0,
                need: 56
            })
        );
        let b = syscall_bytes(kind::SHMDT, 0, [0; 6], 0, 0);
        assert_eq!(
            decode(&b[..100], &CLOCKS),
            Err(DecodeError::Short {
                kind: kind::SHMDT,
                len: 100,
                need: 120
            })
        );
        // A semop record needs its ops.
        let b = syscall_bytes(kind::SEMOP, 0, [0; 6], 0, 0);
        assert_eq!(
            decode(&b, &CLOCKS),
            Err(DecodeError::Short {
                kind: kind::SEMOP,
                len: 120,
                need: 168
            })
        );
        for k in [0, kind::MAX + 1, u16::MAX] {
            let b = syscall_bytes(k, 0, [0; 6], 0, 0);
            assert_eq!(decode(&b, &CLOCKS), Err(DecodeError::UnknownKind(k)));
        }
    }

    #[test]
    fn decodes_usage_totals_with_used_slots_only() {
        let mut b = vec![0u8; size_of::<UsageRecord>()];
        header_bytes(&mut b, kind::USAGE, 0);
        let at = offset_of!(UsageRecord, usage);
        let sem1 = at + offset_of!(ProcUsage, sem) + size_of::<SemUsage>();
        put(
            &mut b,
            sem1 + offset_of!(SemUsage, calls),
            7u64.to_ne_bytes(),
        );
        put(
            &mut b,
            sem1 + offset_of!(SemUsage, ns),
            4_026_531_839u32.to_ne_bytes(),
        );
        put(
            &mut b,
            sem1 + offset_of!(SemUsage, semid),
            42i32.to_ne_bytes(),
        );
        put(
            &mut b,
            sem1 + offset_of!(SemUsage, semnum),
            3u16.to_ne_bytes(),
        );
        put(
            &mut b,
            sem1 + offset_of!(SemUsage, first_ts),
            1_000u64.to_ne_bytes(),
        );
        put(
            &mut b,
            sem1 + offset_of!(SemUsage, last_ts),
            9_000u64.to_ne_bytes(),
        );
        put(
            &mut b,
            sem1 + offset_of!(SemUsage, net),
            (-1i64).to_ne_bytes(),
        );
        put(
            &mut b,
            sem1 + offset_of!(SemUsage, undo),
            2i64.to_ne_bytes(),
        );
        put(
            &mut b,
            sem1 + offset_of!(SemUsage, took),
            4u64.to_ne_bytes(),
        );
        put(
            &mut b,
            sem1 + offset_of!(SemUsage, gave),
            3u64.to_ne_bytes(),
        );
        let msg3 = at + offset_of!(ProcUsage, msg) + 3 * size_of::<MsgUsage>();
        put(&mut b, msg3 + offset_of!(MsgUsage, ns), 5u32.to_ne_bytes());
        put(
            &mut b,
            msg3 + offset_of!(MsgUsage, msqid),
            9i32.to_ne_bytes(),
        );
        put(
            &mut b,
            msg3 + offset_of!(MsgUsage, sent),
            10u64.to_ne_bytes(),
        );
        put(
            &mut b,
            msg3 + offset_of!(MsgUsage, received_bytes),
            160u64.to_ne_bytes(),
        );
        // A jiffies-based last use a tick past the flush (at 5,000): taken as the flush.
        put(
            &mut b,
            msg3 + offset_of!(MsgUsage, last_ts),
            7_000u64.to_ne_bytes(),
        );
        let Ok(Record::Aggregate(Aggregate::Usage(u))) = decode_record(&b, &CLOCKS) else {
            panic!("not a usage record")
        };
        assert_eq!(u.task.process.pid, 4711);
        assert_eq!(u.task.process.start_ticks, 250);
        assert_eq!(u.time_ns, 1_000_000_005_000);
        assert_eq!(
            u.sem,
            vec![SemSlotTotals {
                ns: 4_026_531_839,
                semid: 42,
                semnum: 3,
                first_ns: 1_000_000_001_000,
                last_ns: 1_000_000_009_000,
                calls: 7,
                net: -1,
                undo: 2,
                took: 4,
                gave: 3,
            }]
        );
        assert_eq!(u.msg.len(), 1);
        assert_eq!(
            (u.msg[0].msqid, u.msg[0].sent, u.msg[0].received_bytes),
            (9, 10, 160)
        );
        assert_eq!(u.msg[0].last_ns, 1_000_000_005_000);
        assert_eq!(
            decode(&b, &CLOCKS),
            Err(DecodeError::NotAnEvent(kind::USAGE))
        );
    }

    #[test]
    fn decodes_object_totals() {
        let mut b = vec![0u8; size_of::<SemTotalsRecord>()];
        header_bytes(&mut b, kind::SEM_TOTALS, 0);
        let at = offset_of!(SemTotalsRecord, totals);
        put(&mut b, at + offset_of!(SemTotals, ops), 12u64.to_ne_bytes());
        put(
            &mut b,
            at + offset_of!(SemTotals, semid),
            42i32.to_ne_bytes(),
        );
        put(
            &mut b,
            at + offset_of!(SemTotals, first_ts),
            77u64.to_ne_bytes(),
        );
        put(
            &mut b,
            at + offset_of!(SemTotals, delta) + 8 * 15,
            (-3i64).to_ne_bytes(),
        );
        let Ok(Record::Aggregate(Aggregate::Set(t))) = decode_record(&b, &CLOCKS) else {
            panic!("not set totals")
        };
        assert_eq!((t.semid, t.ops, t.first_ns), (42, 12, 1_000_000_000_077));
        assert_eq!(t.delta.len(), AGG_SEMNUMS);
        assert_eq!(t.delta[15], -3);
        let mut b = vec![0u8; size_of::<MsgTotalsRecord>()];
        header_bytes(&mut b, kind::MSG_TOTALS, 0);
        let at = offset_of!(MsgTotalsRecord, totals);
        put(
            &mut b,
            at + offset_of!(MsgTotals, msqid),
            8i32.to_ne_bytes(),
        );
        put(&mut b, at + offset_of!(MsgTotals, sent), 5u64.to_ne_bytes());
        put(
            &mut b,
            at + offset_of!(MsgTotals, received),
            4u64.to_ne_bytes(),
        );
        let Ok(Record::Aggregate(Aggregate::Queue(q))) = decode_record(&b, &CLOCKS) else {
            panic!("not queue totals")
        };
        assert_eq!((q.msqid, q.sent, q.received), (8, 5, 4));
        // Short records are errors, not panics.
        assert_eq!(
            decode_record(&b[..100], &CLOCKS),
            Err(DecodeError::Short {
                kind: kind::MSG_TOTALS,
                len: 100,
                need: size_of::<MsgTotalsRecord>()
            })
        );
    }

    #[test]
    fn stack_records_decode() {
        let mut b = vec![0u8; size_of::<StackRecord>()];
        header_bytes(&mut b, kind::STACK, stack_flag::BUILD_IDS);
        put(
            b.as_mut_slice(),
            offset_of!(StackRecord, of_kind),
            kind::SHMAT.to_ne_bytes(),
        );
        put(
            b.as_mut_slice(),
            offset_of!(StackRecord, frames_len),
            2u32.to_ne_bytes(),
        );
        put(
            b.as_mut_slice(),
            offset_of!(StackRecord, ret),
            0x7f00_0000_1000i64.to_ne_bytes(),
        );
        put(
            b.as_mut_slice(),
            offset_of!(StackRecord, arg0),
            42u64.to_ne_bytes(),
        );
        put(
            b.as_mut_slice(),
            offset_of!(StackRecord, ip),
            0x1111u64.to_ne_bytes(),
        );
        put(
            b.as_mut_slice(),
            offset_of!(StackRecord, sp),
            0x2222u64.to_ne_bytes(),
        );
        put(
            b.as_mut_slice(),
            offset_of!(StackRecord, bp),
            0x3333u64.to_ne_bytes(),
        );
        put(
            b.as_mut_slice(),
            offset_of!(StackRecord, stack_len),
            16u32.to_ne_bytes(),
        );
        put(
            b.as_mut_slice(),
            offset_of!(StackRecord, build_ids_len),
            1u32.to_ne_bytes(),
        );
        let frames = offset_of!(StackRecord, frames);
        put(b.as_mut_slice(), frames, 0x1111u64.to_ne_bytes());
        put(b.as_mut_slice(), frames + 8, 0x4444u64.to_ne_bytes());
        // A frame count beyond the array is capped, not trusted.
        let ids = offset_of!(StackRecord, build_ids);
        put(b.as_mut_slice(), ids, 1i32.to_ne_bytes());
        put(b.as_mut_slice(), ids + 4, [7u8; 20]);
        put(b.as_mut_slice(), ids + 24, 0x155u64.to_ne_bytes());
        put(b.as_mut_slice(), offset_of!(StackRecord, stack), [9u8; 16]);
        let Ok(Record::Stack(s)) = decode_record(&b, &CLOCKS) else {
            panic!("not a stack record")
        };
        assert_eq!(s.of_kind, kind::SHMAT);
        assert_eq!(s.task.process.pid, 4711);
        assert_eq!((s.regs.ip, s.regs.sp, s.regs.bp), (0x1111, 0x2222, 0x3333));
        assert_eq!(s.frames, [0x1111, 0x4444]);
        assert_eq!(s.build_ids.len(), 1);
        assert_eq!(s.build_ids[0].build_id, [7u8; 20]);
        assert_eq!(s.build_ids[0].offset, 0x155);
        assert_eq!(s.stack, [9u8; 16]);
        let of = s.site_of().unwrap();
        assert_eq!(
            (of.ty, of.id, of.attach),
            (IpcType::Shm, 42, Some(0x7f00_0000_1000))
        );
        // Lengths past the arrays are capped.
        put(
            b.as_mut_slice(),
            offset_of!(StackRecord, frames_len),
            1000u32.to_ne_bytes(),
        );
        put(
            b.as_mut_slice(),
            offset_of!(StackRecord, stack_len),
            u32::MAX.to_ne_bytes(),
        );
        let Ok(Record::Stack(s)) = decode_record(&b, &CLOCKS) else {
            panic!("not a stack record")
        };
        assert_eq!(s.frames.len(), ipcaudit_ebpf::STACK_FRAMES);
        assert_eq!(s.stack.len(), ipcaudit_ebpf::STACK_COPY);
        assert_eq!(
            decode(&b, &CLOCKS),
            Err(DecodeError::NotAnEvent(kind::STACK))
        );
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_err_without_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&b, &CLOCKS);
        }

        #[test]
        fn every_known_kind_with_enough_bytes_decodes(k in 1u16..=kind::MAX, extra in 0usize..16) {
            let mut b = vec![0u8; size_of::<StackRecord>() + extra];
            header_bytes(&mut b, k, 0);
            prop_assert!(decode_record(&b, &CLOCKS).is_ok());
            // Events decode as events; aggregated totals and call stacks are not events.
            let other = matches!(
                k,
                kind::USAGE | kind::SEM_TOTALS | kind::MSG_TOTALS | kind::MQ_TOTALS | kind::STACK
            );
            prop_assert_eq!(decode(&b, &CLOCKS).is_ok(), !other);
        }

        #[test]
        fn any_bytes_decode_as_records_or_err_without_panic(
            k in prop_oneof![
                Just(kind::USAGE),
                Just(kind::SEM_TOTALS),
                Just(kind::MSG_TOTALS),
                Just(kind::MQ_TOTALS),
                Just(kind::MQ_OPEN),
                Just(kind::MQ_SEND),
                Just(kind::STACK),
            ],
            b in proptest::collection::vec(any::<u8>(), 0..9700),
        ) {
            let mut b = b;
            if b.len() >= 2 {
                b[..2].copy_from_slice(&k.to_ne_bytes());
            }
            let _ = decode_record(&b, &CLOCKS);
        }
    }
}
