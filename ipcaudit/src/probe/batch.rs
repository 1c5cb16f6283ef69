//! `BPF_MAP_UPDATE_BATCH` (Linux 5.6+), which aya 0.14 does not wrap: seeding a map with
//! thousands of entries in one system call instead of one each (the start-up seeds one entry
//! per process that maps a segment).

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `bpf_attr` as the batch commands read it (`struct { ... } batch` in linux/bpf.h).
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const _: () = assert!(size_of::<BatchAttr>() == 56);

/// The `bpf(2)` command number.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// Sets `keys[i]` to `values[i]` in the map behind `fd`, in one call. On error nothing is
/// known about which entries were written, except that writing them again is harmless
/// (`BPF_ANY`): the caller falls back to one update per entry.
pub fn update<K: Copy, V: Copy>(fd: BorrowedFd<'_>, keys: &[K], values: &[V]) -> io::Result<()> {
    if keys.len() != values.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    if keys.is_empty() {
        return Ok(());
    }
    let count =
        u32::try_from(keys.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let map_fd =
        u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `attr` describes `count` keys and values that live for the call; the kernel
    // reads them and writes only `attr.count`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &raw mut attr,
            size_of::<BatchAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
