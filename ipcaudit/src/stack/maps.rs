//! The file-backed mappings of a process (/proc/PID/maps), to place return addresses in
//! binaries: which file, at which file offset.

/// One file-backed mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub executable: bool,
    pub inode: u64,
    /// The file as the process sees it (in its mount namespace).
    pub path: String,
}

impl Mapping {
    /// The file offset of `addr` (which must be inside the mapping).
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }
}

/// Parses /proc/PID/maps: the mappings of files (paths starting with `/`; ` (deleted)` kept
/// as part of the path), in address order. Malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.splitn(6, ' ');
            let range = f.next()?;
            let perms = f.next()?;
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let _dev = f.next()?;
            let inode: u64 = f.next()?.parse().ok()?;
            let path = f.next()?.trim_start();
            if !path.starts_with('/') || inode == 0 {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset,
                executable: perms.as_bytes().get(2) == Some(&b'x'),
                inode,
                path: path.to_owned(),
            })
        })
        .collect();
    out.sort_by_key(|m| m.start);
    out
}

/// Reads /proc/PID/maps (empty when the process is gone).
pub fn read(pid: u32) -> Vec<Mapping> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// The executable mapping that contains `addr`.
pub fn find(maps: &[Mapping], addr: u64) -> Option<&Mapping> {
    let i = maps.partition_point(|m| m.start <= addr);
    maps[..i].last().filter(|m| m.executable && addr < m.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c8a00000-55d0c8a01000 r--p 00000000 fd:01 1234                       /tmp/leaky
55d0c8a01000-55d0c8a02000 r-xp 00001000 fd:01 1234                       /tmp/leaky
55d0c8a02000-55d0c8a03000 r--p 00002000 fd:01 1234                       /tmp/leaky
55d0c9e5e000-55d0c9e7f000 rw-p 00000000 00:00 0                          [heap]
7f5a2e400000-7f5a2e428000 r--p 00000000 fd:01 5678                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f5a2e428000-7f5a2e5bd000 r-xp 00028000 fd:01 5678                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f5a2e7f0000-7f5a2e7f1000 rw-s 00000000 00:01 42                         /SYSV00000000 (deleted)
7ffd3c5a1000-7ffd3c5c2000 rw-p 00000000 00:00 0                          [stack]
7ffd3c5f9000-7ffd3c5fb000 r-xp 00000000 00:00 0                          [vdso]
garbage line
";

    #[test]
    fn parses_file_mappings_and_finds_addresses() {
        let maps = parse(MAPS);
        assert_eq!(maps.len(), 6);
        assert_eq!(maps[5].path, "/SYSV00000000 (deleted)");
        let m = find(&maps, 0x55d0_c8a0_1155).unwrap();
        assert_eq!(m.path, "/tmp/leaky");
        assert_eq!(m.file_offset(0x55d0_c8a0_1155), 0x1155);
        let libc = find(&maps, 0x7f5a_2e50_0000).unwrap();
        assert_eq!(libc.file_offset(0x7f5a_2e50_0000), 0x10_0000);
        // Not executable, or not a file.
        assert!(find(&maps, 0x55d0_c8a0_0010).is_none());
        assert!(find(&maps, 0x7ffd_3c5f_9010).is_none());
        assert!(find(&maps, 0).is_none());
        assert!(find(&maps, u64::MAX).is_none());
    }

    #[test]
    fn our_own_maps_contain_our_code() {
        let maps = read(std::process::id());
        let here = parses_file_mappings_and_finds_addresses as *const () as u64;
        let m = find(&maps, here).expect("this function is in a mapping");
        assert!(m.executable);
    }
}
