//! Pure parsers for the kernel's text about System V and POSIX IPC: text in, typed rows out,
//! no IO.
//!
//! Every parser takes `&str` (callers decode the raw bytes lossily) and never panics, whatever
//! the input. Failures are [`ParseError`]s naming the source, the 1-based line, the field and
//! the offending text.
//!
//! Formats (Linux 6.x, as `ipc/{shm,sem,msg}.c`, `fs/proc/{base,array,task_mmu}.c` print them):
//!
//! ```text
//! /proc/sysvipc/shm   "%10d %10d  %4o %21lu %5u %5u  %5lu %5u %5u %5u %5u %10llu %10llu %10llu
//!                      %21lu %21lu"
//!                     key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime
//!                     rss swap
//! /proc/sysvipc/sem   "%10d %10d  %4o %10u %5u %5u %5u %5u %10llu %10llu"
//!                     key semid perms nsems uid gid cuid cgid otime ctime
//! /proc/sysvipc/msg   "%10d %10d  %4o  %10lu %10lu %5u %5u %5u %5u %5u %5u %10llu %10llu %10llu"
//!                     key msqid perms cbytes qnum lspid lrpid uid gid cuid cgid stime rtime ctime
//! /proc/PID/maps      "7f2be741b000-7f2be741d000 rw-s 00000000 00:01 1    /SYSV00000000 (deleted)"
//! /proc/PID/stat      "6299 (t) S 1 6287 4952 0 -1 4194304 ... 66467 ..." (field 22: start time)
//! /proc/PID/task/TID/syscall  "220 0x1 0x7f2be722deca 0x1 0x0 0x0 0x7ffd... 0x7f2b... 0x7f2b..."
//!                             or "-1 SP PC" (blocked, not in a syscall) or "running"
//! /proc/PID/fdinfo/FD "pos:\t0\nflags:\t02000001\nmnt_id:\t21\nino:\t960411\n" (flags octal)
//! a queue's file      "QSIZE:%-10lu NOTIFY:%-5d SIGNO:%-5d NOTIFY_PID:%-6d\n" (ipc/mqueue.c)
//! ```
//!
//! The sysvipc tables are parsed by column name (taken from the header line), so a kernel that
//! adds or reorders columns still parses.

#![expect(
    clippy::similar_names,
    reason = "the kernel's own names: uid/cuid, gid/cgid, pid/ppid, stime/rtime"
)]

use std::fmt;
use std::num::IntErrorKind;

use super::{Blocked, IpcPerm, MsgQueue, SemSet, ShmMapping, ShmSegment, Waiter};
use crate::event::PosixType;

/// How much of the offending text a [`ParseError`] keeps.
const MAX_TEXT_CHARS: usize = 64;

/// What was wrong with a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No text at all (not even a header line).
    Empty,
    /// The header line lacks a required column.
    MissingColumn,
    /// The line ends before this field.
    Missing,
    /// Not a number in the base the format uses (10, 8 or 16).
    NotANumber { radix: u32 },
    /// A number too large (or negative) for the field.
    OutOfRange,
    /// Not the shape this field has.
    Malformed,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty input"),
            Self::MissingColumn => f.write_str("column missing from the header"),
            Self::Missing => f.write_str("missing (line too short)"),
            Self::NotANumber { radix: 8 } => f.write_str("not an octal number"),
            Self::NotANumber { radix: 16 } => f.write_str("not a hexadecimal number"),
            Self::NotANumber { radix: 10 } => f.write_str("not a decimal number"),
            Self::NotANumber { radix } => write!(f, "not a base-{radix} number"),
            Self::OutOfRange => f.write_str("number out of range"),
            Self::Malformed => f.write_str("malformed"),
        }
    }
}

/// A line of kernel text that could not be parsed: what was wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: field `{field}`: {problem}: {text:?}")]
pub struct ParseError {
    /// Where the text came from (`/proc/sysvipc/shm`, `/proc/1234/maps`).
    pub path: String,
    /// 1-based line number.
    pub line: usize,
    /// The column or field (`perms`, `starttime`, `header`).
    pub field: &'static str,
    pub problem: Problem,
    /// The offending text, truncated to 64 characters (an ellipsis marks the cut).
    pub text: String,
}

impl ParseError {
    fn new(path: &str, line: usize, field: &'static str, problem: Problem, text: &str) -> Self {
        Self {
            path: path.to_owned(),
            line,
            field,
            problem,
            text: truncate(text),
        }
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let mut s = String::with_capacity(cut + 3);
            s.push_str(&text[..cut]);
            s.push('…');
            s
        }
    }
}

/// Parses an integer of any width in `radix`, telling "not a number" from "out of range".
fn int<T: TryFrom<i128>>(s: &str, radix: u32) -> Result<T, Problem> {
    let wide = i128::from_str_radix(s, radix).map_err(|e| match e.kind() {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => Problem::OutOfRange,
        _ => Problem::NotANumber { radix },
    })?;
    T::try_from(wide).map_err(|_| Problem::OutOfRange)
}

/// A time64 as the sysvipc files print it (`%10llu`: a negative time shows as its two's
/// complement), back to seconds since the epoch.
fn time(s: &str) -> Result<i64, Problem> {
    let wide: i128 = int(s, 10)?;
    if let Ok(t) = i64::try_from(wide) {
        return Ok(t);
    }
    let unsigned = u64::try_from(wide).map_err(|_| Problem::OutOfRange)?;
    Ok(i64::from_ne_bytes(unsigned.to_ne_bytes()))
}

/// The low 32 bits of a syscall argument, as the kernel's `int` parameter sees them.
fn low_i32(v: u64) -> i32 {
    let b = v.to_le_bytes();
    i32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

// ---------------------------------------------------------------------------------------------
// /proc/sysvipc/{shm,sem,msg}

/// A column located in the header: its name and where it is (None: an optional column the
/// header does not have).
#[derive(Clone, Copy)]
struct Col {
    name: &'static str,
    index: Option<usize>,
}

/// One data line, split into fields.
struct Row<'t, 'r> {
    path: &'r str,
    line: usize,
    fields: &'r [&'t str],
}

impl<'t> Row<'t, '_> {
    fn err(&self, col: Col, problem: Problem, text: &str) -> ParseError {
        ParseError::new(self.path, self.line, col.name, problem, text)
    }

    fn text(&self, col: Col) -> Result<Option<&'t str>, ParseError> {
        let Some(index) = col.index else {
            return Ok(None);
        };
        match self.fields.get(index) {
            Some(s) => Ok(Some(*s)),
            None => Err(self.err(col, Problem::Missing, &self.fields.join(" "))),
        }
    }

    /// A number in `radix`; an optional column the header lacks reads as 0.
    fn num<T: TryFrom<i128> + Default>(&self, col: Col, radix: u32) -> Result<T, ParseError> {
        match self.text(col)? {
            None => Ok(T::default()),
            Some(s) => int(s, radix).map_err(|p| self.err(col, p, s)),
        }
    }

    fn dec<T: TryFrom<i128> + Default>(&self, col: Col) -> Result<T, ParseError> {
        self.num(col, 10)
    }

    fn time(&self, col: Col) -> Result<i64, ParseError> {
        match self.text(col)? {
            None => Ok(0),
            Some(s) => time(s).map_err(|p| self.err(col, p, s)),
        }
    }

    /// The `struct ipc64_perm` columns, in this order: key id perms uid gid cuid cgid.
    fn perm(&self, c: [Col; 7]) -> Result<IpcPerm, ParseError> {
        let [key, id, perms, uid, gid, cuid, cgid] = c;
        Ok(IpcPerm {
            key: self.dec(key)?,
            id: self.dec(id)?,
            mode: self.num(perms, 8)?,
            uid: self.dec(uid)?,
            gid: self.dec(gid)?,
            cuid: self.dec(cuid)?,
            cgid: self.dec(cgid)?,
        })
    }
}

/// Parses a table with a header line: finds the `required` and `optional` columns by name,
/// then hands each non-blank data line to `row`.
fn parse_table<const R: usize, const O: usize, T>(
    text: &str,
    path: &str,
    required: [&'static str; R],
    optional: [&'static str; O],
    mut row: impl FnMut(&Row<'_, '_>, [Col; R], [Col; O]) -> Result<T, ParseError>,
) -> Result<Vec<T>, ParseError> {
    let mut lines = text.lines();
    let header = match lines.next() {
        Some(h) if !h.trim().is_empty() => h,
        _ => return Err(ParseError::new(path, 1, "header", Problem::Empty, text)),
    };
    let find = |name: &str| header.split_ascii_whitespace().position(|c| c == name);
    let mut req = [Col {
        name: "",
        index: None,
    }; R];
    for (col, name) in req.iter_mut().zip(required) {
        let index = find(name)
            .ok_or_else(|| ParseError::new(path, 1, name, Problem::MissingColumn, header))?;
        *col = Col {
            name,
            index: Some(index),
        };
    }
    let mut opt = [Col {
        name: "",
        index: None,
    }; O];
    for (col, name) in opt.iter_mut().zip(optional) {
        *col = Col {
            name,
            index: find(name),
        };
    }

    let mut out = Vec::new();
    let mut fields: Vec<&str> = Vec::with_capacity(R + O);
    for (n, line) in lines.enumerate() {
        fields.clear();
        fields.extend(line.split_ascii_whitespace());
        if fields.is_empty() {
            continue;
        }
        out.push(row(
            &Row {
                path,
                line: n + 2,
                fields: &fields,
            },
            req,
            opt,
        )?);
    }
    Ok(out)
}

/// Parses /proc/sysvipc/shm (`source` names it in errors).
pub fn parse_sysvipc_shm(text: &str, source: &str) -> Result<Vec<ShmSegment>, ParseError> {
    const REQUIRED: [&str; 14] = [
        "key", "shmid", "perms", "uid", "gid", "cuid", "cgid", "size", "cpid", "lpid", "nattch",
        "atime", "dtime", "ctime",
    ];
    parse_table(
        text,
        source,
        REQUIRED,
        ["rss", "swap"],
        |r, c, [rss, swap]| {
            let [
                key,
                id,
                perms,
                uid,
                gid,
                cuid,
                cgid,
                size,
                cpid,
                lpid,
                nattch,
                atime,
                dtime,
                ctime,
            ] = c;
            Ok(ShmSegment {
                perm: r.perm([key, id, perms, uid, gid, cuid, cgid])?,
                size: r.dec(size)?,
                cpid: r.dec(cpid)?,
                lpid: r.dec(lpid)?,
                nattch: r.dec(nattch)?,
                atime: r.time(atime)?,
                dtime: r.time(dtime)?,
                ctime: r.time(ctime)?,
                rss: r.dec(rss)?,
                swap: r.dec(swap)?,
            })
        },
    )
}

/// Parses /proc/sysvipc/sem.
pub fn parse_sysvipc_sem(text: &str, source: &str) -> Result<Vec<SemSet>, ParseError> {
    const REQUIRED: [&str; 10] = [
        "key", "semid", "perms", "uid", "gid", "cuid", "cgid", "nsems", "otime", "ctime",
    ];
    parse_table(text, source, REQUIRED, [], |r, c, []| {
        let [key, id, perms, uid, gid, cuid, cgid, nsems, otime, ctime] = c;
        Ok(SemSet {
            perm: r.perm([key, id, perms, uid, gid, cuid, cgid])?,
            nsems: r.dec(nsems)?,
            otime: r.time(otime)?,
            ctime: r.time(ctime)?,
        })
    })
}

/// Parses /proc/sysvipc/msg.
pub fn parse_sysvipc_msg(text: &str, source: &str) -> Result<Vec<MsgQueue>, ParseError> {
    const REQUIRED: [&str; 14] = [
        "key", "msqid", "perms", "uid", "gid", "cuid", "cgid", "cbytes", "qnum", "lspid", "lrpid",
        "stime", "rtime", "ctime",
    ];
    parse_table(text, source, REQUIRED, [], |r, c, []| {
        let [
            key,
            id,
            perms,
            uid,
            gid,
            cuid,
            cgid,
            cbytes,
            qnum,
            lspid,
            lrpid,
            stime,
            rtime,
            ctime,
        ] = c;
        Ok(MsgQueue {
            perm: r.perm([key, id, perms, uid, gid, cuid, cgid])?,
            cbytes: r.dec(cbytes)?,
            qnum: r.dec(qnum)?,
            lspid: r.dec(lspid)?,
            lrpid: r.dec(lrpid)?,
            stime: r.time(stime)?,
            rtime: r.time(rtime)?,
            ctime: r.time(ctime)?,
        })
    })
}

// ---------------------------------------------------------------------------------------------
// /proc/PID/maps

/// The System V shared-memory mappings in a /proc/PID/maps text: lines whose pathname is
/// `/SYSV%08x` (the key), optionally followed by ` (deleted)`; the inode column is the shmid.
///
/// Other lines are skipped without being split (only lines containing `/SYSV` are looked at).
/// A System V line whose kernel-formatted columns do not parse is an error naming the line. A line
/// whose pathname merely looks like a System V one (a file can be named `/SYSV12345678`) but whose
/// inode cannot be a shmid (above `i32::MAX`) is skipped.
pub fn parse_maps_sysv(text: &str, pid: u32, source: &str) -> Result<Vec<ShmMapping>, ParseError> {
    const NEEDLE: &str = "/SYSV";
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(found) = text.get(from..).and_then(|rest| rest.find(NEEDLE)) {
        let at = from + found;
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        from = end;
        let line = &text[start..end];
        match maps_line(line, pid) {
            Ok(Some(mapping)) => out.push(mapping),
            Ok(None) => {}
            Err((field, problem, bad)) => {
                let line_no = text[..start].matches('\n').count() + 1;
                return Err(ParseError::new(source, line_no, field, problem, bad));
            }
        }
    }
    Ok(out)
}

type FieldError<'t> = (&'static str, Problem, &'t str);

/// Splits off the next space-separated field.
fn next_field<'t>(
    rest: &mut &'t str,
    name: &'static str,
    line: &'t str,
) -> Result<&'t str, FieldError<'t>> {
    let s = rest.trim_start_matches(' ');
    if s.is_empty() {
        return Err((name, Problem::Missing, line));
    }
    let (field, tail) = s.split_at(s.find(' ').unwrap_or(s.len()));
    *rest = tail;
    Ok(field)
}

/// The key of a System V shared-memory pathname (`/SYSV%08x`, optionally followed by
/// ` (deleted)`, as /proc/PID/maps and `PROCMAP_QUERY` show it), or None if it is not one.
pub fn parse_sysv_name(pathname: &str) -> Option<i32> {
    let rest = pathname.strip_prefix("/SYSV")?;
    let (hex, tail) = rest.split_at_checked(8)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) || !matches!(tail, "" | " (deleted)") {
        return None;
    }
    let key = u32::from_str_radix(hex, 16).ok()?;
    Some(i32::from_ne_bytes(key.to_ne_bytes()))
}

fn maps_line(line: &str, pid: u32) -> Result<Option<ShmMapping>, FieldError<'_>> {
    let mut rest = line;
    let range = next_field(&mut rest, "address", line)?;
    let perms = next_field(&mut rest, "perms", line)?;
    let offset = next_field(&mut rest, "offset", line)?;
    let _dev = next_field(&mut rest, "dev", line)?;
    let inode = next_field(&mut rest, "inode", line)?;
    let pathname = rest.trim_start_matches(' ');
    if pathname.is_empty() {
        return Err(("pathname", Problem::Missing, line));
    }
    let Some(key) = parse_sysv_name(pathname) else {
        return Ok(None);
    };

    let (start, end) = range
        .split_once('-')
        .ok_or(("address", Problem::Malformed, range))?;
    let start: u64 = int(start, 16).map_err(|p| ("address", p, range))?;
    let end: u64 = int(end, 16).map_err(|p| ("address", p, range))?;
    if perms.len() != 4 || !perms.is_ascii() {
        return Err(("perms", Problem::Malformed, perms));
    }
    let offset: u64 = int(offset, 16).map_err(|p| ("offset", p, offset))?;
    let inode: u64 = int(inode, 10).map_err(|p| ("inode", p, inode))?;
    let Ok(shmid) = i32::try_from(inode) else {
        return Ok(None);
    };
    Ok(Some(ShmMapping {
        pid,
        shmid,
        key,
        start,
        end,
        offset,
        writable: perms.as_bytes()[1] == b'w',
    }))
}

// ---------------------------------------------------------------------------------------------
// /proc/PID/stat, status, syscall, ns

/// The fields of /proc/PID/stat that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatFields {
    pub pid: u32,
    /// Between the first `(` and the last `)`: it may itself contain spaces and parentheses.
    pub comm: String,
    /// `R`, `S`, `D`, `Z`, ...
    pub state: char,
    pub ppid: u32,
    /// Field 22: start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Parses /proc/PID/stat (or /proc/PID/task/TID/stat).
pub fn parse_stat(text: &str, source: &str) -> Result<StatFields, ParseError> {
    let err = |field, problem, bad: &str| ParseError::new(source, 1, field, problem, bad);
    let line = text.trim_end_matches('\n');
    if line.is_empty() {
        return Err(err("pid", Problem::Empty, line));
    }
    let (Some(open), Some(close)) = (line.find('('), line.rfind(')')) else {
        return Err(err("comm", Problem::Malformed, line));
    };
    if close < open {
        return Err(err("comm", Problem::Malformed, line));
    }
    let pid_text = line[..open].trim();
    let pid = int(pid_text, 10).map_err(|p| err("pid", p, pid_text))?;
    let comm = line[open + 1..close].to_owned();
    // Fields after the comm: 3 = state, 4 = ppid, ..., 22 = starttime.
    let mut after = line[close + 1..].split_ascii_whitespace();
    let state_text = after
        .next()
        .ok_or_else(|| err("state", Problem::Missing, line))?;
    let mut chars = state_text.chars();
    let (Some(state), None) = (chars.next(), chars.next()) else {
        return Err(err("state", Problem::Malformed, state_text));
    };
    let ppid_text = after
        .next()
        .ok_or_else(|| err("ppid", Problem::Missing, line))?;
    let ppid = int(ppid_text, 10).map_err(|p| err("ppid", p, ppid_text))?;
    // After ppid (field 4), starttime (field 22) is the 18th.
    let start_text = after
        .nth(17)
        .ok_or_else(|| err("starttime", Problem::Missing, line))?;
    let start_ticks = int(start_text, 10).map_err(|p| err("starttime", p, start_text))?;
    Ok(StatFields {
        pid,
        comm,
        state,
        ppid,
        start_ticks,
    })
}

/// Field 20 of /proc/PID/stat: the number of threads of the process; None if unparsable.
pub fn parse_stat_num_threads(text: &str) -> Option<u32> {
    let (_, after) = text.rsplit_once(')')?;
    // After the comm, field 3 (state) comes first: field 20 is the 18th.
    after.split_ascii_whitespace().nth(17)?.parse().ok()
}

/// The real uid: the first number of the `Uid:` line of /proc/PID/status.
pub fn parse_status_uid(text: &str) -> Option<u32> {
    let line = text.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_ascii_whitespace().next()?.parse().ok()
}

/// The inode of a namespace link (`ipc:[4026531839]`, as readlink /proc/PID/ns/ipc shows it).
pub fn parse_ns_link(link: &str) -> Option<u32> {
    let (_, rest) = link.split_once(":[")?;
    rest.strip_suffix(']')?.parse().ok()
}

/// What a task blocked in an IPC syscall waits on, from /proc/PID/task/TID/syscall (`NR ARG1
/// ... ARG6 SP PC`, the arguments in hex). `running`, `-1 SP PC` (not in a syscall), other
/// syscalls and anything unparsable give None.
///
/// The numbers are this architecture's (`libc::SYS_*`; `x86_64`: semop 65, semtimedop 220, msgsnd
/// 69, msgrcv 70). A 32-bit task on a 64-bit kernel reports its own numbering, which this does
/// not decode.
pub fn parse_syscall(text: &str, pid: u32, tid: u32) -> Option<Waiter> {
    let mut fields = text.split_ascii_whitespace();
    let nr: libc::c_long = fields.next()?.parse().ok()?;
    let arg1 = fields.next()?.strip_prefix("0x")?;
    let id = low_i32(u64::from_str_radix(arg1, 16).ok()?);
    let on = if nr == libc::SYS_semop || nr == libc::SYS_semtimedop {
        Blocked::Sem { semid: id }
    } else if nr == libc::SYS_msgsnd {
        Blocked::MsgSnd { msqid: id }
    } else if nr == libc::SYS_msgrcv {
        Blocked::MsgRcv { msqid: id }
    } else {
        return None;
    };
    Some(Waiter { pid, tid, on })
}

// ---------------------------------------------------------------------------------------------
// POSIX IPC: the queue file, fdinfo, file mappings, names

/// What a POSIX message queue's file says (reading /dev/mqueue/NAME).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MqFile {
    /// Bytes of message data queued.
    pub qsize: u64,
    /// `sigev_notify` of the registration (0 `SIGEV_SIGNAL`, 1 `SIGEV_NONE`, 2 `SIGEV_THREAD`).
    pub notify: u32,
    pub signo: u32,
    /// The registered process (0: none).
    pub notify_pid: u32,
}

/// Parses a queue's file: `QSIZE:5          NOTIFY:0     SIGNO:0     NOTIFY_PID:0     `.
/// Fields are found by name, so their order and spacing do not matter; each is required.
pub fn parse_mqueue_file(text: &str, source: &str) -> Result<MqFile, ParseError> {
    let line = text.lines().next().unwrap_or_default();
    if line.trim().is_empty() {
        return Err(ParseError::new(source, 1, "QSIZE", Problem::Empty, text));
    }
    let field = |name: &'static str| -> Result<u64, ParseError> {
        let value = line
            .split_ascii_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| ParseError::new(source, 1, name, Problem::Missing, line))?;
        int(value, 10).map_err(|p| ParseError::new(source, 1, name, p, value))
    };
    let small = |name: &'static str| -> Result<u32, ParseError> {
        let v = field(name)?;
        u32::try_from(v)
            .map_err(|_| ParseError::new(source, 1, name, Problem::OutOfRange, &v.to_string()))
    };
    Ok(MqFile {
        qsize: field("QSIZE")?,
        notify: small("NOTIFY")?,
        signo: small("SIGNO")?,
        notify_pid: small("NOTIFY_PID")?,
    })
}

/// The `flags:` line of /proc/PID/fdinfo/FD (octal `f_flags`), or None.
pub fn parse_fdinfo_flags(text: &str) -> Option<u32> {
    let value = text.lines().find_map(|l| l.strip_prefix("flags:"))?;
    int(value.trim(), 8).ok()
}

/// The read and write access an open file's flags give (`O_ACCMODE`).
pub fn access_mode(flags: u32) -> (bool, bool) {
    match flags & 0o3 {
        0 => (true, false),
        1 => (false, true),
        _ => (true, true),
    }
}

/// A file mapping of one process: a /proc/PID/maps line with a device and an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMapping {
    pub start: u64,
    pub end: u64,
    pub writable: bool,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
}

/// The file mappings of a /proc/PID/maps text (lines whose inode is not 0), with their device
/// and inode: what a POSIX object's mapping is matched by (its pathname may be another name of
/// the file: glibc names a semaphore's file `sem.XXXXXX` while creating it, then links it).
/// A line whose columns do not parse is an error naming it.
pub fn parse_maps_files(text: &str, source: &str) -> Result<Vec<FileMapping>, ParseError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        match maps_file_line(line) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => {}
            Err((field, problem, bad)) => {
                return Err(ParseError::new(source, n + 1, field, problem, bad));
            }
        }
    }
    Ok(out)
}

fn maps_file_line(line: &str) -> Result<Option<FileMapping>, FieldError<'_>> {
    let mut rest = line;
    let range = next_field(&mut rest, "address", line)?;
    let perms = next_field(&mut rest, "perms", line)?;
    let _offset = next_field(&mut rest, "offset", line)?;
    let dev = next_field(&mut rest, "dev", line)?;
    let inode = next_field(&mut rest, "inode", line)?;
    let inode: u64 = int(inode, 10).map_err(|p| ("inode", p, inode))?;
    if inode == 0 {
        return Ok(None);
    }
    let (start, end) = range
        .split_once('-')
        .ok_or(("address", Problem::Malformed, range))?;
    let start: u64 = int(start, 16).map_err(|p| ("address", p, range))?;
    let end: u64 = int(end, 16).map_err(|p| ("address", p, range))?;
    if perms.len() != 4 || !perms.is_ascii() {
        return Err(("perms", Problem::Malformed, perms));
    }
    let (major, minor) = dev
        .split_once(':')
        .ok_or(("dev", Problem::Malformed, dev))?;
    Ok(Some(FileMapping {
        start,
        end,
        writable: perms.as_bytes()[1] == b'w',
        dev_major: int(major, 16).map_err(|p| ("dev", p, dev))?,
        dev_minor: int(minor, 16).map_err(|p| ("dev", p, dev))?,
        inode,
    }))
}

/// Where a POSIX object's file lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PosixDir {
    /// /dev/shm: shared memory objects and (`sem.NAME`) named semaphores.
    DevShm,
    /// The mqueue filesystem: message queues.
    Mqueue,
}

impl PosixDir {
    pub fn of(ty: PosixType) -> Self {
        match ty {
            PosixType::Pshm | PosixType::Psem => Self::DevShm,
            PosixType::Pmsg => Self::Mqueue,
        }
    }
}

/// The longest file name (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// The type and API name (`/NAME`) of the file `file` of a POSIX IPC directory: in /dev/shm
/// `sem.NAME` is a named semaphore, anything else a shared memory object; in the mqueue
/// filesystem, a queue. None for `.`, `..`, an empty name or one with a slash.
pub fn posix_object_name(dir: PosixDir, file: &str) -> Option<(PosixType, String)> {
    if file.is_empty() || file == "." || file == ".." || file.contains('/') {
        return None;
    }
    let (ty, rest) = match dir {
        PosixDir::Mqueue => (PosixType::Pmsg, file),
        PosixDir::DevShm => match file.strip_prefix("sem.") {
            Some(rest) if !rest.is_empty() => (PosixType::Psem, rest),
            _ => (PosixType::Pshm, file),
        },
    };
    Some((ty, format!("/{rest}")))
}

/// The file name of POSIX object `name` (`/NAME`, as the API takes it; the leading slash may
/// be left out) in its directory: `NAME`, or `sem.NAME` for a semaphore. An error says why a
/// name cannot be one (empty, a slash inside, `.` or `..`, too long).
pub fn posix_file_name(ty: PosixType, name: &str) -> Result<String, String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare == "." || bare == ".." {
        return Err(format!("{name:?} is not a POSIX IPC name (expected /NAME)"));
    }
    if bare.contains('/') {
        return Err(format!(
            "{name:?} is not a POSIX IPC name: only its first character may be a slash"
        ));
    }
    let file = match ty {
        PosixType::Psem => format!("sem.{bare}"),
        PosixType::Pshm | PosixType::Pmsg => bare.to_owned(),
    };
    if file.len() > NAME_MAX {
        return Err(format!(
            "{name:?} is too long for a POSIX IPC name ({} bytes, at most {NAME_MAX})",
            file.len()
        ));
    }
    // The same object must come back from the file name: `/sem.x` is a semaphore's file.
    match posix_object_name(PosixDir::of(ty), &file) {
        Some((t, _)) if t == ty => Ok(file),
        _ => Err(format!(
            "{name:?} names a {} in /dev/shm, not a {}",
            PosixType::Psem.describe(),
            ty.describe()
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// /proc/sys/kernel

/// /proc/sys/kernel/sem.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SemLimits {
    pub semmsl: u64,
    pub semmns: u64,
    pub semopm: u64,
    pub semmni: u64,
}

/// Parses /proc/sys/kernel/sem: `SEMMSL SEMMNS SEMOPM SEMMNI`, whitespace-separated.
pub fn parse_sem_limits(text: &str, source: &str) -> Result<SemLimits, ParseError> {
    let mut fields = text.split_ascii_whitespace();
    let mut next = |name: &'static str| {
        let s = fields
            .next()
            .ok_or_else(|| ParseError::new(source, 1, name, Problem::Missing, text))?;
        int(s, 10).map_err(|p| ParseError::new(source, 1, name, p, s))
    };
    Ok(SemLimits {
        semmsl: next("semmsl")?,
        semmns: next("semmns")?,
        semopm: next("semopm")?,
        semmni: next("semmni")?,
    })
}

/// Parses a file holding one unsigned decimal number (/proc/sys/kernel/shmmax, ...).
pub fn parse_number(text: &str, source: &str) -> Result<u64, ParseError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(ParseError::new(source, 1, "value", Problem::Empty, text));
    }
    int(s, 10).map_err(|p| ParseError::new(source, 1, "value", p, s))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // Captured on this machine (Linux 6.18, x86_64) with a test program holding three
    // attachments (one IPC_PRIVATE and removed: perms 1600 = SHM_DEST|0600), a set, two queues.
    const SHM: &str = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
         0          1  1600                  8192  6299  6299      1     0     0     0     0 1795443050          0 1795443050                  8192                     0
2147462093          2   640                  4096  6299  6299      1     0     0     0     0 1795443050          0 1795443050                     0                     0
        -2          3   640                  4096  6299  6299      1     0     0     0     0 1795443050          0 1795443050                     0                     0
-623977036          0   644                  4096  5883     0      0     0     0     0     0          0          0 1795443041                     0                     0
";
    const SEM: &str =
        "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime
         0          1   600          2     0     0     0     0          0 1795443050
1291024005          0   644          3     0     0     0     0          0 1795443041
";
    const MSG: &str = "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime
         0          1   600          10          1  6299     0     0     0     0     0 1795443050          0 1795443050
         0          2   600           0          0     0     0     0     0     0     0          0          0 1795443050
 782058677          0   644           0          0     0     0     0     0     0     0          0          0 1795443041
";
    const MAPS: &str = "55c17c3f8000-55c17c3f9000 r--p 00000000 fe:00 10011426                   /tmp/ipcx/t
55c1b7a76000-55c1b7a97000 rw-p 00000000 00:00 0                          [heap]
7f2be622d000-7f2be622e000 ---p 00000000 00:00 0 
7f2be7232000-7f2be7258000 r--p 00000000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
7f2be7407000-7f2be7414000 rw-p 00000000 00:00 0 
7f2be7419000-7f2be741a000 rw-s 00000000 00:01 3                          /SYSVfffffffe (deleted)
7f2be741a000-7f2be741b000 r--s 00000000 00:01 2                          /SYSV7fffabcd (deleted)
7f2be741b000-7f2be741d000 rw-s 00000000 00:01 1                          /SYSV00000000 (deleted)
7f2be741d000-7f2be741f000 rw-p 00000000 00:00 0 
7ffd06720000-7ffd06741000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";
    /// After munmap of the first page of a 3-page attachment.
    const MAPS_PARTIAL: &str = "7fb9b16ba000-7fb9b16bc000 rw-s 00001000 00:01 8                          /SYSV00000000 (deleted)\n";
    const STAT: &str = "6299 (t) S 1 6287 4952 0 -1 4194304 121 0 0 0 0 0 0 0 20 0 3 0 66467 19337216 339 18446744073709551615 94289501589504 94289501590633 140724711718720 0 0 0 0 6 0 0 0 0 17 1 0 0 0 0 0 94289501601232 94289501601912 94290498248704 140724711721721 140724711721725 140724711721725 140724711722996 0\n";
    /// `cp /bin/sleep '(a) b)'` and run it.
    const STAT_PARENS: &str = "10538 ((a) b)) S 1 10534 4952 0 -1 4194304 136 0 0 0 0 0 0 0 20 0 1 0 89777 2990080 413 18446744073709551615 94194453086208 94194453104137 140722909159488 0 0 0 0 6 0 1 0 0 17 1 0 0 0 0 0 94194453118224 94194453119488 94195358629888 140722909166310 140722909166323 140722909166323 140722909167599 0\n";
    const STAT_KTHREADD: &str = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 14 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    const STATUS: &str = "Name:\tt\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t6299\nNgid:\t0\nPid:\t6299\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t256\nGroups:\t \n";
    const SYSCALL_NANOSLEEP: &str = "230 0x0 0x0 0x7ffd0673fd70 0x7ffd0673fd70 0x0 0x7ffd0673fcc7 0x7ffd0673fd30 0x7f2be7301545\n";
    const SYSCALL_SEMTIMEDOP: &str =
        "220 0x1 0x7f2be722deca 0x1 0x0 0x0 0x7ffd0673fcc7 0x7f2be722deb8 0x7f2be733d5da\n";
    const SYSCALL_MSGRCV: &str =
        "70 0x2 0x7f2be6a2ce90 0x20 0x0 0x0 0x0 0x7f2be6a2ce50 0x7f2be733d423\n";

    fn perm(key: i32, id: i32, mode: u32) -> IpcPerm {
        IpcPerm {
            key,
            id,
            mode,
            uid: 0,
            gid: 0,
            cuid: 0,
            cgid: 0,
        }
    }

    #[test]
    fn shm_real() {
        let rows = parse_sysvipc_shm(SHM, "/proc/sysvipc/shm").unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0],
            ShmSegment {
                perm: perm(0, 1, 0o1600),
                size: 8192,
                cpid: 6299,
                lpid: 6299,
                nattch: 1,
                atime: 1_795_443_050,
                dtime: 0,
                ctime: 1_795_443_050,
                rss: 8192,
                swap: 0,
            }
        );
        assert_eq!(
            rows[0].perm.mode & crate::snapshot::SHM_DEST,
            crate::snapshot::SHM_DEST
        );
        assert_eq!(rows[1].perm.key, 0x7fff_abcd);
        assert_eq!(rows[1].perm.mode, 0o640);
        assert_eq!(rows[2].perm.key, -2);
        assert_eq!(rows[3].perm.key, -623_977_036);
        assert_eq!((rows[3].perm.id, rows[3].cpid, rows[3].lpid), (0, 5883, 0));
    }

    #[test]
    fn sem_real() {
        let rows = parse_sysvipc_sem(SEM, "/proc/sysvipc/sem").unwrap();
        assert_eq!(
            rows,
            vec![
                SemSet {
                    perm: perm(0, 1, 0o600),
                    nsems: 2,
                    otime: 0,
                    ctime: 1_795_443_050
                },
                SemSet {
                    perm: perm(1_291_024_005, 0, 0o644),
                    nsems: 3,
                    otime: 0,
                    ctime: 1_795_443_041
                },
            ]
        );
    }

    #[test]
    fn msg_real() {
        let rows = parse_sysvipc_msg(MSG, "/proc/sysvipc/msg").unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            MsgQueue {
                perm: perm(0, 1, 0o600),
                cbytes: 10,
                qnum: 1,
                lspid: 6299,
                lrpid: 0,
                stime: 1_795_443_050,
                rtime: 0,
                ctime: 1_795_443_050,
            }
        );
        assert_eq!(rows[2].perm.key, 782_058_677);
    }

    #[test]
    fn header_only_and_empty() {
        let header = SHM.lines().next().unwrap();
        assert_eq!(parse_sysvipc_shm(header, "s").unwrap(), vec![]);
        assert_eq!(
            parse_sysvipc_shm(&format!("{header}\n"), "s").unwrap(),
            vec![]
        );
        let e = parse_sysvipc_shm("", "/proc/sysvipc/shm").unwrap_err();
        assert_eq!((e.line, e.field, e.problem), (1, "header", Problem::Empty));
        let e = parse_sysvipc_sem("\n\n", "s").unwrap_err();
        assert_eq!(e.problem, Problem::Empty);
        // Blank lines among the data are skipped.
        let with_blank = SEM.replace("\n1291", "\n\n   \n1291");
        assert_eq!(parse_sysvipc_sem(&with_blank, "s").unwrap().len(), 2);
    }

    #[test]
    fn columns_by_name() {
        // Reordered, an extra column, rss/swap absent.
        let text = "shmid extra key size perms cpid lpid nattch uid gid cuid cgid atime dtime ctime
7 x -1 4096 2600 10 11 2 1000 100 1001 101 5 6 7
";
        let rows = parse_sysvipc_shm(text, "s").unwrap();
        assert_eq!(
            rows,
            vec![ShmSegment {
                perm: IpcPerm {
                    key: -1,
                    id: 7,
                    mode: 0o2600,
                    uid: 1000,
                    gid: 100,
                    cuid: 1001,
                    cgid: 101
                },
                size: 4096,
                cpid: 10,
                lpid: 11,
                nattch: 2,
                atime: 5,
                dtime: 6,
                ctime: 7,
                rss: 0,
                swap: 0,
            }]
        );
        // Extra trailing fields on a data line are ignored.
        let extra = SEM.replace("1795443041", "1795443041 99 100");
        assert_eq!(parse_sysvipc_sem(&extra, "s").unwrap().len(), 2);
    }

    #[test]
    fn missing_column() {
        let text = SEM.replacen("nsems", "nsem", 1);
        let e = parse_sysvipc_sem(&text, "/proc/sysvipc/sem").unwrap_err();
        assert_eq!(
            (e.line, e.field, e.problem),
            (1, "nsems", Problem::MissingColumn)
        );
        assert!(
            e.to_string()
                .starts_with("/proc/sysvipc/sem:1: field `nsems`: column missing")
        );
    }

    #[test]
    fn truncated_line() {
        let text = "       key      msqid perms      cbytes       qnum lspid lrpid   uid   gid  cuid  cgid      stime      rtime      ctime
         0          1   600          10          1  6299     0     0     0
";
        let e = parse_sysvipc_msg(text, "/proc/sysvipc/msg").unwrap_err();
        assert_eq!((e.line, e.problem), (2, Problem::Missing));
        assert_eq!(e.field, "cuid");
        // rss present in the header but missing from the line: an error, not a silent 0.
        let shm = SHM.replace(" 8192                     0\n", " 8192\n");
        let e = parse_sysvipc_shm(&shm, "s").unwrap_err();
        assert_eq!((e.line, e.field, e.problem), (2, "swap", Problem::Missing));
    }

    #[test]
    fn bad_numbers() {
        let text = SEM.replacen(" 600 ", " 6x0 ", 1);
        let e = parse_sysvipc_sem(&text, "/proc/sysvipc/sem").unwrap_err();
        assert_eq!(
            e,
            ParseError {
                path: "/proc/sysvipc/sem".into(),
                line: 2,
                field: "perms",
                problem: Problem::NotANumber { radix: 8 },
                text: "6x0".into(),
            }
        );
        assert_eq!(
            e.to_string(),
            "/proc/sysvipc/sem:2: field `perms`: not an octal number: \"6x0\""
        );
        // Octal: 8 is not a digit.
        let e = parse_sysvipc_sem(&SEM.replacen(" 600 ", " 680 ", 1), "s").unwrap_err();
        assert_eq!(e.problem, Problem::NotANumber { radix: 8 });
        // Negative pid.
        let e = parse_sysvipc_msg(&MSG.replacen(" 6299 ", " -6299 ", 1), "s").unwrap_err();
        assert_eq!((e.field, e.problem), ("lspid", Problem::OutOfRange));
        // Key beyond i32.
        let e = parse_sysvipc_sem(&SEM.replacen("1291024005", "3291024005", 1), "s").unwrap_err();
        assert_eq!(
            (e.line, e.field, e.problem),
            (3, "key", Problem::OutOfRange)
        );
    }

    #[test]
    fn huge_values() {
        let max = u64::MAX;
        let text = SHM.replacen("                  8192  6299", &format!("  {max}  6299"), 1);
        let rows = parse_sysvipc_shm(&text, "s").unwrap();
        assert_eq!(rows[0].size, u64::MAX);
        // One more: out of range, with the text quoted.
        let text = SHM.replacen(
            "                  8192  6299",
            "  18446744073709551616  6299",
            1,
        );
        let e = parse_sysvipc_shm(&text, "s").unwrap_err();
        assert_eq!(
            (e.field, e.problem, e.text.as_str()),
            ("size", Problem::OutOfRange, "18446744073709551616")
        );
        // Far beyond any width.
        let long = "9".repeat(100);
        let text = SHM.replacen("1795443050", &long, 1);
        let e = parse_sysvipc_shm(&text, "s").unwrap_err();
        assert_eq!((e.field, e.problem), ("atime", Problem::OutOfRange));
        assert_eq!(e.text.chars().count(), 65);
        assert!(e.text.ends_with('…'));
        // A negative time64 prints as %llu: it comes back negative.
        let text = SEM.replacen("1795443050", "18446744073709551615", 1);
        assert_eq!(parse_sysvipc_sem(&text, "s").unwrap()[0].ctime, -1);
    }

    #[test]
    fn maps_real() {
        let m = parse_maps_sysv(MAPS, 6299, "/proc/6299/maps").unwrap();
        assert_eq!(
            m,
            vec![
                ShmMapping {
                    pid: 6299,
                    shmid: 3,
                    key: -2,
                    start: 0x7f2b_e741_9000,
                    end: 0x7f2b_e741_a000,
                    offset: 0,
                    writable: true,
                },
                ShmMapping {
                    pid: 6299,
                    shmid: 2,
                    key: 0x7fff_abcd,
                    start: 0x7f2b_e741_a000,
                    end: 0x7f2b_e741_b000,
                    offset: 0,
                    writable: false,
                },
                ShmMapping {
                    pid: 6299,
                    shmid: 1,
                    key: 0,
                    start: 0x7f2b_e741_b000,
                    end: 0x7f2b_e741_d000,
                    offset: 0,
                    writable: true,
                },
            ]
        );
        let m = parse_maps_sysv(MAPS_PARTIAL, 1, "m").unwrap();
        assert_eq!(
            (m[0].shmid, m[0].offset, m[0].end - m[0].start),
            (8, 0x1000, 0x2000)
        );
    }

    #[test]
    fn maps_edge_cases() {
        assert_eq!(parse_maps_sysv("", 1, "m").unwrap(), vec![]);
        // No trailing newline, no " (deleted)", key ffffffff.
        let m = parse_maps_sysv("1000-2000 rw-s 00000000 00:01 5 /SYSVffffffff", 1, "m").unwrap();
        assert_eq!((m[0].key, m[0].shmid), (-1, 5));
        // Lookalikes are skipped: /SYSV elsewhere in the path, wrong length, suffix.
        let text = "1000-2000 rw-s 00000000 00:01 5 /home/SYSV00000001\n\
                    1000-2000 rw-s 00000000 00:01 5 /SYSV0000001\n\
                    1000-2000 rw-s 00000000 00:01 5 /SYSV000000011\n\
                    1000-2000 rw-s 00000000 00:01 5 /SYSV0000000g (deleted)\n\
                    1000-2000 rw-s 00000000 00:01 5 /SYSV00000001 (deleted) x\n\
                    1000-2000 rw-s 00000000 fe:00 4294967296 /SYSV00000001\n";
        assert_eq!(parse_maps_sysv(text, 1, "m").unwrap(), vec![]);
        // A SysV line that is malformed: an error naming the line.
        let text = format!("{MAPS}1000-20x0 rw-s 00000000 00:01 5 /SYSV00000001 (deleted)\n");
        let e = parse_maps_sysv(&text, 1, "/proc/1/maps").unwrap_err();
        assert_eq!(
            (e.line, e.field, e.problem),
            (12, "address", Problem::NotANumber { radix: 16 })
        );
        let e = parse_maps_sysv("x\n1000 rw-s 0 00:01 5 /SYSV00000001\n", 1, "m").unwrap_err();
        assert_eq!(
            (e.line, e.field, e.problem),
            (2, "address", Problem::Malformed)
        );
        let e = parse_maps_sysv("1000-2000 rws 0 00:01 5 /SYSV00000001\n", 1, "m").unwrap_err();
        assert_eq!((e.field, e.problem), ("perms", Problem::Malformed));
        let e = parse_maps_sysv("1000-2000 rw-s 0 00:01 -5 /SYSV00000001\n", 1, "m").unwrap_err();
        assert_eq!((e.field, e.problem), ("inode", Problem::OutOfRange));
        // Truncated: /SYSV but not where the pathname goes.
        let e = parse_maps_sysv("1000-2000 rw-s /SYSV00000001\n", 1, "m").unwrap_err();
        assert_eq!((e.field, e.problem), ("dev", Problem::Missing));
    }

    #[test]
    fn stat_real() {
        assert_eq!(
            parse_stat(STAT, "/proc/6299/stat").unwrap(),
            StatFields {
                pid: 6299,
                comm: "t".into(),
                state: 'S',
                ppid: 1,
                start_ticks: 66467,
            }
        );
        let s = parse_stat(STAT_PARENS, "s").unwrap();
        assert_eq!(
            (s.pid, s.comm.as_str(), s.ppid, s.start_ticks),
            (10538, "(a) b)", 1, 89777)
        );
        let s = parse_stat(STAT_KTHREADD, "s").unwrap();
        assert_eq!((s.pid, s.ppid, s.start_ticks), (2, 0, 14));
        let s = parse_stat("7 (a) b) Z 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 42", "s").unwrap();
        assert_eq!((s.comm.as_str(), s.state, s.start_ticks), ("a) b", 'Z', 42));
        let s = parse_stat("7 () R 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 1", "s").unwrap();
        assert_eq!(s.comm, "");
    }

    #[test]
    fn stat_errors() {
        let e = parse_stat("", "/proc/1/stat").unwrap_err();
        assert_eq!(e.problem, Problem::Empty);
        let e = parse_stat("12 comm S 1", "s").unwrap_err();
        assert_eq!((e.field, e.problem), ("comm", Problem::Malformed));
        let e = parse_stat(")12 (x S 1", "s").unwrap_err();
        assert_eq!((e.field, e.problem), ("comm", Problem::Malformed));
        let e = parse_stat("x12 (t) S 1", "s").unwrap_err();
        assert_eq!(
            (e.field, e.problem),
            ("pid", Problem::NotANumber { radix: 10 })
        );
        let e = parse_stat("12 (t)", "s").unwrap_err();
        assert_eq!((e.field, e.problem), ("state", Problem::Missing));
        let e = parse_stat("12 (t) SS 1", "s").unwrap_err();
        assert_eq!((e.field, e.problem), ("state", Problem::Malformed));
        let e = parse_stat("12 (t) S", "s").unwrap_err();
        assert_eq!((e.field, e.problem), ("ppid", Problem::Missing));
        let e = parse_stat("12 (t) S 1 6287 4952 0 -1", "/proc/12/stat").unwrap_err();
        assert_eq!(
            (e.line, e.field, e.problem),
            (1, "starttime", Problem::Missing)
        );
        let bad = STAT.replace(" 66467 ", " 66a67 ");
        let e = parse_stat(&bad, "s").unwrap_err();
        assert_eq!((e.field, e.text.as_str()), ("starttime", "66a67"));
    }

    #[test]
    fn stat_num_threads() {
        assert_eq!(parse_stat_num_threads(STAT), Some(3));
        assert_eq!(parse_stat_num_threads(STAT_PARENS), Some(1));
        assert_eq!(parse_stat_num_threads("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_num_threads(""), None);
    }

    #[test]
    fn sysv_names() {
        assert_eq!(parse_sysv_name("/SYSV00000000 (deleted)"), Some(0));
        assert_eq!(parse_sysv_name("/SYSVfffffffe (deleted)"), Some(-2));
        assert_eq!(parse_sysv_name("/SYSV7fffabcd"), Some(0x7fff_abcd));
        assert_eq!(parse_sysv_name("/SYSV7fffabcd (deleted) "), None);
        assert_eq!(parse_sysv_name("/SYSV7fffabc"), None);
        assert_eq!(parse_sysv_name("/SYSV+fffabcd"), None);
        assert_eq!(parse_sysv_name("/dev/shm/SYSV7fffabcd"), None);
        assert_eq!(parse_sysv_name(""), None);
    }

    #[test]
    fn status_uid() {
        assert_eq!(parse_status_uid(STATUS), Some(1000));
        assert_eq!(parse_status_uid(""), None);
        assert_eq!(parse_status_uid("Uid:\n"), None);
        assert_eq!(parse_status_uid("Uid:\tx\t0\n"), None);
        assert_eq!(
            parse_status_uid("Name:\tUid: 5\nUid:\t7\t7\t7\t7\n"),
            Some(7)
        );
    }

    #[test]
    fn ns_link() {
        assert_eq!(parse_ns_link("ipc:[4026531839]"), Some(4_026_531_839));
        assert_eq!(parse_ns_link("ipc:[4026531839"), None);
        assert_eq!(parse_ns_link("ipc:[99999999999]"), None);
        assert_eq!(parse_ns_link(""), None);
    }

    #[test]
    fn syscall_real() {
        assert_eq!(parse_syscall(SYSCALL_NANOSLEEP, 6299, 6299), None);
        assert_eq!(
            parse_syscall(SYSCALL_SEMTIMEDOP, 6299, 6301),
            Some(Waiter {
                pid: 6299,
                tid: 6301,
                on: Blocked::Sem { semid: 1 }
            })
        );
        assert_eq!(
            parse_syscall(SYSCALL_MSGRCV, 6299, 6328),
            Some(Waiter {
                pid: 6299,
                tid: 6328,
                on: Blocked::MsgRcv { msqid: 2 }
            })
        );
        let snd = "69 0x7 0x0 0x0 0x0 0x0 0x0 0x0 0x0\n";
        assert_eq!(
            parse_syscall(snd, 1, 1).map(|w| w.on),
            Some(Blocked::MsgSnd { msqid: 7 })
        );
        let semop = "65 0xffffffff 0x0 0x0 0x0 0x0 0x0 0x0 0x0\n";
        assert_eq!(
            parse_syscall(semop, 1, 1).map(|w| w.on),
            Some(Blocked::Sem { semid: -1 })
        );
        assert_eq!(parse_syscall("running\n", 1, 1), None);
        assert_eq!(
            parse_syscall("-1 0x7ffd0673fd70 0x7f2be7301545\n", 1, 1),
            None
        );
        assert_eq!(parse_syscall("", 1, 1), None);
        assert_eq!(parse_syscall("65", 1, 1), None);
        assert_eq!(parse_syscall("65 12", 1, 1), None);
        assert_eq!(parse_syscall("65 0xzz", 1, 1), None);
    }

    #[test]
    fn limits() {
        let l =
            parse_sem_limits("32000\t1024000000\t500\t32000\n", "/proc/sys/kernel/sem").unwrap();
        assert_eq!(
            l,
            SemLimits {
                semmsl: 32000,
                semmns: 1_024_000_000,
                semopm: 500,
                semmni: 32000
            }
        );
        let e = parse_sem_limits("32000\t1024000000\t500\n", "/proc/sys/kernel/sem").unwrap_err();
        assert_eq!((e.field, e.problem), ("semmni", Problem::Missing));
        let e = parse_sem_limits("-1 1 1 1", "s").unwrap_err();
        assert_eq!((e.field, e.problem), ("semmsl", Problem::OutOfRange));
        assert_eq!(
            parse_number("18446744073692774399\n", "shmmax").unwrap(),
            18_446_744_073_692_774_399
        );
        assert_eq!(parse_number("4096\n", "shmmni").unwrap(), 4096);
        assert_eq!(parse_number("", "x").unwrap_err().problem, Problem::Empty);
        assert_eq!(
            parse_number("12 13", "x").unwrap_err().problem,
            Problem::NotANumber { radix: 10 }
        );
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        let s = "é".repeat(100);
        let t = truncate(&s);
        assert_eq!(t.chars().count(), 65);
        assert_eq!(truncate("short"), "short");
        assert_eq!(truncate(&"x".repeat(64)), "x".repeat(64));
    }

    // --- property tests ------------------------------------------------------------------

    /// Text made of the pieces the formats are made of, to reach deep into the parsers.
    fn soup() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just(" ".to_owned()),
                Just("\n".to_owned()),
                Just("(".to_owned()),
                Just(")".to_owned()),
                Just("-".to_owned()),
                Just("/SYSV".to_owned()),
                Just(" (deleted)".to_owned()),
                Just("0x".to_owned()),
                Just("rw-s".to_owned()),
                Just("Uid:".to_owned()),
                Just("key shmid semid msqid perms size nsems qnum".to_owned()),
                "[0-9a-f]{1,24}",
                any::<String>(),
            ],
            0..40,
        )
        .prop_map(|v| v.concat())
    }

    fn all_parsers(s: &str) {
        let _ = parse_sysvipc_shm(s, "s");
        let _ = parse_sysvipc_sem(s, "s");
        let _ = parse_sysvipc_msg(s, "s");
        let _ = parse_maps_sysv(s, 1, "s");
        let _ = parse_stat(s, "s");
        let _ = parse_stat_num_threads(s);
        let _ = parse_sysv_name(s);
        let _ = parse_status_uid(s);
        let _ = parse_ns_link(s);
        let _ = parse_syscall(s, 1, 1);
        let _ = parse_sem_limits(s, "s");
        let _ = parse_number(s, "s");
        let _ = parse_mqueue_file(s, "s");
        let _ = parse_fdinfo_flags(s);
        let _ = parse_maps_files(s, "s");
        let _ = posix_object_name(PosixDir::DevShm, s);
        let _ = posix_object_name(PosixDir::Mqueue, s);
        for ty in PosixType::ALL {
            let _ = posix_file_name(ty, s);
        }
    }

    // Captured on this machine: a queue's file with two messages queued (5 bytes and 0), an
    // mq_open descriptor's fdinfo, and the maps of a process holding a POSIX shared memory
    // object and a named semaphore (whose mapping still shows glibc's temporary name).
    const MQ_FILE: &str = "QSIZE:5          NOTIFY:0     SIGNO:0     NOTIFY_PID:0     \n";
    const FDINFO: &str = "pos:\t0\nflags:\t02000001\nmnt_id:\t21\nino:\t960411\n";
    const POSIX_MAPS: &str = "556fc0490000-556fc0491000 r--p 00000000 fe:00 11345978                   /tmp/posixexp/shm
7fa00c11f000-7fa00c120000 rw-p 00000000 00:00 0
7fa00c120000-7fa00c121000 rw-s 00000000 00:1b 5                          /dev/shm/sem.ElIjKj (deleted)
7fa00c121000-7fa00c123000 r--s 00000000 00:1b 4                          /dev/shm/ipcaudit-exp-shm
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn mqueue_files_parse_by_field_name() {
        assert_eq!(
            parse_mqueue_file(MQ_FILE, "q"),
            Ok(MqFile {
                qsize: 5,
                notify: 0,
                signo: 0,
                notify_pid: 0
            })
        );
        let moved = "NOTIFY_PID:4711 SIGNO:10 QSIZE:0 NOTIFY:2";
        assert_eq!(
            parse_mqueue_file(moved, "q").map(|f| (f.notify_pid, f.signo, f.notify)),
            Ok((4711, 10, 2))
        );
        let e =
            parse_mqueue_file("QSIZE:x NOTIFY:0 SIGNO:0 NOTIFY_PID:0", "mqueue:/q").unwrap_err();
        assert_eq!(
            (e.field, e.problem),
            ("QSIZE", Problem::NotANumber { radix: 10 })
        );
        assert_eq!(e.path, "mqueue:/q");
        let e = parse_mqueue_file("QSIZE:1 NOTIFY:0 SIGNO:0", "q").unwrap_err();
        assert_eq!((e.field, e.problem), ("NOTIFY_PID", Problem::Missing));
        let e = parse_mqueue_file("", "q").unwrap_err();
        assert_eq!(e.problem, Problem::Empty);
        let e =
            parse_mqueue_file("QSIZE:1 NOTIFY:0 SIGNO:0 NOTIFY_PID:99999999999", "q").unwrap_err();
        assert_eq!((e.field, e.problem), ("NOTIFY_PID", Problem::OutOfRange));
    }

    #[test]
    fn fdinfo_flags_give_the_access_mode() {
        let flags = parse_fdinfo_flags(FDINFO).unwrap();
        assert_eq!(flags, 0o2_000_001);
        assert_eq!(access_mode(flags), (false, true));
        assert_eq!(access_mode(0o2_000_000), (true, false));
        assert_eq!(access_mode(0o2), (true, true));
        assert_eq!(parse_fdinfo_flags("pos:\t0\n"), None);
        assert_eq!(parse_fdinfo_flags("flags:\t9\n"), None);
    }

    #[test]
    fn file_mappings_carry_device_and_inode() {
        let m = parse_maps_files(POSIX_MAPS, "/proc/1/maps").unwrap();
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(
            m[1],
            FileMapping {
                start: 0x7fa0_0c12_0000,
                end: 0x7fa0_0c12_1000,
                writable: true,
                dev_major: 0,
                dev_minor: 0x1b,
                inode: 5,
            }
        );
        assert!(!m[2].writable);
        assert_eq!((m[0].dev_major, m[0].dev_minor), (0xfe, 0));
        let e = parse_maps_files("7f-80 rw-s 0 00:1b x /dev/shm/a\n", "/proc/1/maps").unwrap_err();
        assert_eq!((e.line, e.field), (1, "inode"));
        let e = parse_maps_files("\n7f-80 rw-s 0 001b 4 /dev/shm/a", "/proc/1/maps").unwrap_err();
        assert_eq!((e.line, e.field, e.problem), (2, "dev", Problem::Malformed));
    }

    #[test]
    fn posix_names_and_files() {
        use PosixType::{Pmsg, Psem, Pshm};
        assert_eq!(
            posix_object_name(PosixDir::DevShm, "cache"),
            Some((Pshm, "/cache".to_owned()))
        );
        assert_eq!(
            posix_object_name(PosixDir::DevShm, "sem.lock"),
            Some((Psem, "/lock".to_owned()))
        );
        // `sem.` alone is no semaphore's file.
        assert_eq!(
            posix_object_name(PosixDir::DevShm, "sem."),
            Some((Pshm, "/sem.".to_owned()))
        );
        assert_eq!(
            posix_object_name(PosixDir::Mqueue, "sem.x"),
            Some((Pmsg, "/sem.x".to_owned()))
        );
        for bad in ["", ".", "..", "a/b"] {
            assert_eq!(posix_object_name(PosixDir::DevShm, bad), None, "{bad:?}");
        }
        assert_eq!(posix_file_name(Pshm, "/cache"), Ok("cache".to_owned()));
        assert_eq!(posix_file_name(Pshm, "cache"), Ok("cache".to_owned()));
        assert_eq!(posix_file_name(Psem, "/lock"), Ok("sem.lock".to_owned()));
        assert_eq!(posix_file_name(Pmsg, "/q"), Ok("q".to_owned()));
        assert!(
            posix_file_name(Pshm, "/")
                .unwrap_err()
                .contains("expected /NAME")
        );
        assert!(posix_file_name(Pshm, "/..").is_err());
        assert!(posix_file_name(Pshm, "/a/b").unwrap_err().contains("slash"));
        assert!(posix_file_name(Pshm, "/../etc/passwd").is_err());
        // /dev/shm/sem.x is a semaphore's file, not a shared memory object's.
        assert!(
            posix_file_name(Pshm, "/sem.x")
                .unwrap_err()
                .contains("semaphore")
        );
        let long = format!("/{}", "a".repeat(252));
        assert!(posix_file_name(Pshm, &long).is_ok());
        assert!(
            posix_file_name(Psem, &long)
                .unwrap_err()
                .contains("too long")
        );
    }

    fn shm_line(r: &ShmSegment) -> String {
        let p = &r.perm;
        format!(
            "{:10} {:10}  {:4o} {:21} {:5} {:5}  {:5} {:5} {:5} {:5} {:5} {:10} {:10} {:10} {:21} {:21}\n",
            p.key,
            p.id,
            p.mode,
            r.size,
            r.cpid,
            r.lpid,
            r.nattch,
            p.uid,
            p.gid,
            p.cuid,
            p.cgid,
            u64::from_ne_bytes(r.atime.to_ne_bytes()),
            u64::from_ne_bytes(r.dtime.to_ne_bytes()),
            u64::from_ne_bytes(r.ctime.to_ne_bytes()),
            r.rss,
            r.swap
        )
    }

    fn arb_perm() -> impl Strategy<Value = IpcPerm> {
        (
            any::<i32>(),
            0..=i32::MAX,
            0..=0o177_777u32,
            any::<[u32; 4]>(),
        )
            .prop_map(|(key, id, mode, [uid, gid, cuid, cgid])| IpcPerm {
                key,
                id,
                mode,
                uid,
                gid,
                cuid,
                cgid,
            })
    }

    fn arb_shm() -> impl Strategy<Value = ShmSegment> {
        (
            arb_perm(),
            any::<[u64; 4]>(),
            any::<[u32; 2]>(),
            any::<[i64; 3]>(),
        )
            .prop_map(
                |(perm, [size, nattch, rss, swap], [cpid, lpid], [atime, dtime, ctime])| {
                    ShmSegment {
                        perm,
                        size,
                        cpid,
                        lpid,
                        nattch,
                        atime,
                        dtime,
                        ctime,
                        rss,
                        swap,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn never_panics_on_any_string(s in any::<String>()) {
            all_parsers(&s);
        }

        #[test]
        fn never_panics_on_soup(s in soup()) {
            all_parsers(&s);
            // Behind a valid header, every line is a data line.
            all_parsers(&format!("{}\n{s}", SHM.lines().next().unwrap_or_default()));
            all_parsers(&format!("{}\n{s}", MSG.lines().next().unwrap_or_default()));
        }

        #[test]
        fn never_panics_on_lossy_bytes(b in prop::collection::vec(any::<u8>(), 0..300)) {
            all_parsers(&String::from_utf8_lossy(&b));
        }

        #[test]
        fn shm_round_trip(rows in prop::collection::vec(arb_shm(), 0..5)) {
            let mut text = SHM.lines().next().unwrap_or_default().to_owned();
            text.push('\n');
            for r in &rows {
                text.push_str(&shm_line(r));
            }
            prop_assert_eq!(parse_sysvipc_shm(&text, "s").unwrap(), rows);
        }

        #[test]
        fn sem_round_trip(perm in arb_perm(), nsems: u32, otime: i64, ctime: i64) {
            let text = format!(
                "{}\n{:10} {:10}  {:4o} {:10} {:5} {:5} {:5} {:5} {:10} {:10}\n",
                SEM.lines().next().unwrap_or_default(),
                perm.key, perm.id, perm.mode, nsems, perm.uid, perm.gid, perm.cuid, perm.cgid,
                u64::from_ne_bytes(otime.to_ne_bytes()), u64::from_ne_bytes(ctime.to_ne_bytes()),
            );
            let want = SemSet { perm, nsems, otime, ctime };
            prop_assert_eq!(parse_sysvipc_sem(&text, "s").unwrap(), vec![want]);
        }

        #[test]
        fn msg_round_trip(perm in arb_perm(), n: [u64; 2], pids: [u32; 2], t: [i64; 3]) {
            let t64 = t.map(|t| u64::from_ne_bytes(t.to_ne_bytes()));
            let text = format!(
                "{}\n{:10} {:10}  {:4o}  {:10} {:10} {:5} {:5} {:5} {:5} {:5} {:5} {:10} {:10} {:10}\n",
                MSG.lines().next().unwrap_or_default(),
                perm.key, perm.id, perm.mode, n[0], n[1], pids[0], pids[1],
                perm.uid, perm.gid, perm.cuid, perm.cgid, t64[0], t64[1], t64[2],
            );
            let want = MsgQueue {
                perm, cbytes: n[0], qnum: n[1], lspid: pids[0], lrpid: pids[1],
                stime: t[0], rtime: t[1], ctime: t[2],
            };
            prop_assert_eq!(parse_sysvipc_msg(&text, "s").unwrap(), vec![want]);
        }

        #[test]
        fn maps_round_trip(
            key: i32, shmid in 0..=i32::MAX, start: u64, end: u64, pgoff in 0..(1u64 << 52),
            writable: bool, deleted: bool, before in "[ -~]{0,200}",
        ) {
            let perms = if writable { "rw-s" } else { "r--s" };
            let suffix = if deleted { " (deleted)" } else { "" };
            // Lines without /SYSV around it are skipped, whatever they hold.
            let before = before.replace("/SYSV", "");
            let text = format!(
                "{before}\n{start:08x}-{end:08x} {perms} {:08x} 00:01 {shmid:<26}/SYSV{key:08x}{suffix}\n{before}",
                pgoff << 12,
            );
            let want = ShmMapping { pid: 9, shmid, key, start, end, offset: pgoff << 12, writable };
            prop_assert_eq!(parse_maps_sysv(&text, 9, "m").unwrap(), vec![want]);
        }

        #[test]
        fn stat_round_trip(
            pid: u32, comm in "[^\n]{0,20}", state in "[RSDZTtXIWPK]", ppid: u32, start: u64,
        ) {
            let text = format!(
                "{pid} ({comm}) {state} {ppid} 1 2 0 -1 4194304 121 0 0 0 0 0 0 0 20 0 3 0 {start} 19337216 339\n"
            );
            let s = parse_stat(&text, "s").unwrap();
            prop_assert_eq!(s, StatFields {
                pid,
                comm,
                state: state.chars().next().unwrap_or_default(),
                ppid,
                start_ticks: start,
            });
        }

        #[test]
        fn syscall_round_trip(id: i32, which in 0..4usize, args: [u64; 7]) {
            let nrs = [libc::SYS_semop, libc::SYS_semtimedop, libc::SYS_msgsnd, libc::SYS_msgrcv];
            let arg1 = u64::from(u32::from_ne_bytes(id.to_ne_bytes())) | (args[0] << 32);
            let text = format!(
                "{} {arg1:#x} {:#x} {:#x} {:#x} {:#x} {:#x} {:#x} {:#x}\n",
                nrs[which], args[1], args[2], args[3], args[4], args[5], args[6], args[0],
            );
            let on = match which {
                0 | 1 => Blocked::Sem { semid: id },
                2 => Blocked::MsgSnd { msqid: id },
                _ => Blocked::MsgRcv { msqid: id },
            };
            prop_assert_eq!(parse_syscall(&text, 3, 4), Some(Waiter { pid: 3, tid: 4, on }));
        }
    }
}
