//! Kernel struct offsets from BTF (/sys/kernel/btf/vmlinux), resolved at load time and handed
//! to the programs as read-only globals: never offsets copied from one kernel.
//!
//! A minimal BTF reader: one pass indexes where each type starts, then the few structs needed
//! are found by name and their members looked up. (A general BTF library parses all of the
//! ~130k types the kernel has; done that way, this step was most of the start-up time.)

use std::path::Path;

use ipcaudit_ebpf::{Config, ScanOffsets};

use super::ProbeError;

/// The path of the kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// The types of a BTF blob, indexed (a minimal reader: see the module documentation).
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset in `types` of type id `i + 1`.
    starts: Vec<u32>,
}

/// One type's common part (`struct btf_type`).
#[derive(Clone, Copy, Debug)]
struct RawType {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    size_type: u32,
    /// Offset of the kind-specific data in `types`.
    data: usize,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn usize_of(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl<'a> Btf<'a> {
    /// Indexes the types of a BTF blob; `None` when it is not well-formed BTF.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return None;
        }
        let hdr_len = usize_of(u32_at(data, 4)?);
        let field = |i: usize| u32_at(data, 8 + 4 * i).map(usize_of);
        let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let types = data
            .get(hdr_len.checked_add(type_off)?..)?
            .get(..type_len)?;
        let strings = data.get(hdr_len.checked_add(str_off)?..)?.get(..str_len)?;
        let mut starts = Vec::with_capacity(type_len / 16);
        let mut at = 0usize;
        while at < types.len() {
            starts.push(u32::try_from(at).ok()?);
            let info = u32_at(types, at + 4)?;
            let vlen = usize_of(info & 0xffff);
            let extra = match (info >> 24) & 0x1f {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen.checked_mul(12)?,
                KIND_ENUM | KIND_FUNC_PROTO => vlen.checked_mul(8)?,
                _ => 0,
            };
            at = at.checked_add(12 + extra)?;
        }
        (at == types.len()).then_some(Self {
            types,
            strings,
            starts,
        })
    }

    fn raw(&self, id: u32) -> Option<RawType> {
        let at = usize_of(*self.starts.get(usize_of(id).checked_sub(1)?)?);
        let info = u32_at(self.types, at + 4)?;
        Some(RawType {
            name_off: u32_at(self.types, at)?,
            kind: (info >> 24) & 0x1f,
            vlen: info & 0xffff,
            kind_flag: info >> 31 == 1,
            size_type: u32_at(self.types, at + 8)?,
            data: at + 12,
        })
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let rest = self.strings.get(usize_of(off)..).unwrap_or_default();
        &rest[..rest.iter().position(|&c| c == 0).unwrap_or(rest.len())]
    }

    /// The id of the struct named `name`.
    fn find_struct(&self, name: &str) -> Option<u32> {
        (1..=u32::try_from(self.starts.len()).ok()?).find(|&id| {
            self.raw(id)
                .is_some_and(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == name.as_bytes())
        })
    }

    /// Strips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            let t = self.raw(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_type;
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// Byte offset of member `name` in struct/union `id`, looking through anonymous members;
    /// and the member's type id.
    fn member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32)> {
        let t = self.raw(id)?;
        if !matches!(t.kind, KIND_STRUCT | KIND_UNION) || depth > 8 {
            return None;
        }
        for i in 0..usize_of(t.vlen) {
            let m = t.data + i * 12;
            let (m_name, m_type, m_off) = (
                u32_at(self.types, m)?,
                u32_at(self.types, m + 4)?,
                u32_at(self.types, m + 8)?,
            );
            // With kind_flag, the offset's top byte is a bitfield size.
            let bits = if t.kind_flag {
                m_off & 0x00ff_ffff
            } else {
                m_off
            };
            let member_name = self.name(m_name);
            if member_name == name.as_bytes() {
                return Some((bits / 8, m_type));
            }
            if member_name.is_empty()
                && let Some(inner) = self.resolve(m_type)
                && let Some((off, found)) = self.member(inner, name, depth + 1)
            {
                return Some((bits / 8 + off, found));
            }
        }
        None
    }

    /// Whether enum `name` has the enumerator `value` (`bpf_func_id`, `BPF_FUNC_task_pt_regs`):
    /// how the kernel says which BPF helpers and map types it has.
    pub fn enum_has(&self, name: &str, value: &str) -> bool {
        let Ok(count) = u32::try_from(self.starts.len()) else {
            return false;
        };
        (1..=count).any(|id| {
            let Some(t) = self.raw(id) else {
                return false;
            };
            let entry = match t.kind {
                KIND_ENUM => 8,
                KIND_ENUM64 => 12,
                _ => return false,
            };
            self.name(t.name_off) == name.as_bytes()
                && (0..usize_of(t.vlen)).any(|i| {
                    u32_at(self.types, t.data + i * entry)
                        .is_some_and(|off| self.name(off) == value.as_bytes())
                })
        })
    }

    /// Offset of a member path inside struct `root` (`ipc_namespace`, `["ns", "inum"]`).
    pub fn offset_of(&self, root: &str, path: &[&str]) -> Result<u32, ProbeError> {
        let missing = || ProbeError::BtfMember(format!("{root}.{}", path.join(".")));
        let mut id = self.find_struct(root).ok_or_else(missing)?;
        let mut total = 0u32;
        for (i, name) in path.iter().enumerate() {
            let (off, member_ty) = self.member(id, name, 0).ok_or_else(missing)?;
            total = total.checked_add(off).ok_or_else(missing)?;
            if i + 1 < path.len() {
                id = self.resolve(member_ty).ok_or_else(missing)?;
            }
        }
        Ok(total)
    }
}

/// Reads the kernel's BTF (once: the loader needs it too).
pub fn read_vmlinux(path: &Path) -> Result<Vec<u8>, ProbeError> {
    std::fs::read(path).map_err(|e| ProbeError::Btf {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Fills the struct offsets of `config` from the kernel's BTF (`read_vmlinux`); returns the
/// start-up scan's offsets when the kernel has every field it reads (`None`: /proc is read
/// instead).
pub fn resolve_offsets(
    path: &Path,
    vmlinux: &[u8],
    config: &mut Config,
) -> Result<Option<ScanOffsets>, ProbeError> {
    let btf = Btf::parse(vmlinux).ok_or_else(|| ProbeError::Btf {
        path: path.to_owned(),
        reason: "not well-formed BTF (bad magic, header or type section)".to_owned(),
    })?;
    config.task_group_leader = btf.offset_of("task_struct", &["group_leader"])?;
    config.task_start_boottime = btf.offset_of("task_struct", &["start_boottime"])?;
    config.task_nsproxy = btf.offset_of("task_struct", &["nsproxy"])?;
    config.task_tgid = btf.offset_of("task_struct", &["tgid"])?;
    config.task_exit_code = btf.offset_of("task_struct", &["exit_code"])?;
    config.nsproxy_ipc_ns = btf.offset_of("nsproxy", &["ipc_ns"])?;
    config.ipc_ns_inum = btf.offset_of("ipc_namespace", &["ns", "inum"])?;
    // POSIX message queues: a descriptor to its queue (inode, superblock, namespace).
    config.task_files = btf.offset_of("task_struct", &["files"])?;
    config.files_fdt = btf.offset_of("files_struct", &["fdt"])?;
    config.fdtable_max_fds = btf.offset_of("fdtable", &["max_fds"])?;
    config.fdtable_fd = btf.offset_of("fdtable", &["fd"])?;
    config.file_inode = btf.offset_of("file", &["f_inode"])?;
    config.inode_ino = btf.offset_of("inode", &["i_ino"])?;
    config.inode_sb = btf.offset_of("inode", &["i_sb"])?;
    config.sb_magic = btf.offset_of("super_block", &["s_magic"])?;
    config.sb_fs_info = btf.offset_of("super_block", &["s_fs_info"])?;
    let scan = scan_offsets(&btf);
    if let Err(e) = &scan {
        log::debug!("no kernel scan: {e}");
    }
    Ok(scan.ok())
}

/// The offsets of the start-up scan's iterators (`scan.rs` of the kernel programs).
fn scan_offsets(btf: &Btf<'_>) -> Result<ScanOffsets, ProbeError> {
    let task = |path: &[&str]| btf.offset_of("task_struct", path);
    let vma = |field: &str| btf.offset_of("vm_area_struct", &[field]);
    Ok(ScanOffsets {
        task_pid: task(&["pid"])?,
        task_real_parent: task(&["real_parent"])?,
        task_real_cred: task(&["real_cred"])?,
        cred_uid: btf.offset_of("cred", &["uid"])?,
        task_comm: task(&["comm"])?,
        // `__state` since 5.14 (a `long state` before: its low half on little-endian).
        task_state: task(&["__state"]).or_else(|_| task(&["state"]))?,
        task_exit_state: task(&["exit_state"])?,
        task_flags: task(&["flags"])?,
        vma_start: vma("vm_start")?,
        vma_end: vma("vm_end")?,
        vma_flags: vma("vm_flags")?,
        vma_pgoff: vma("vm_pgoff")?,
        vma_file: vma("vm_file")?,
        file_dentry: btf.offset_of("file", &["f_path", "dentry"])?,
        dentry_parent: btf.offset_of("dentry", &["d_parent"])?,
        dentry_name: btf.offset_of("dentry", &["d_name", "name"])?,
    })
}

/// A BTF blob holding an `int` and the given enums (name, enumerators), for tests.
#[cfg(test)]
pub(super) fn enums_blob(enums: &[(&str, &[&str])]) -> Vec<u8> {
    let mut strings = b"\0int\0".to_vec();
    let mut add = |s: &str| {
        let off = u32::try_from(strings.len()).unwrap();
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        off
    };
    let mut words = vec![1, KIND_INT << 24, 4, 32];
    for (name, values) in enums {
        let vlen = u32::try_from(values.len()).unwrap();
        words.extend([add(name), (KIND_ENUM << 24) | vlen, 4]);
        for (i, v) in values.iter().enumerate() {
            words.extend([add(v), u32::try_from(i).unwrap()]);
        }
    }
    let types: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut b = Vec::new();
    b.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
    b.extend_from_slice(&[1, 0]);
    let tl = u32::try_from(types.len()).unwrap();
    let sl = u32::try_from(strings.len()).unwrap();
    for v in [24u32, 0, tl, tl, sl] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    b.extend_from_slice(&types);
    b.extend_from_slice(&strings);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs the kernel's BTF, which every supported kernel has; no root needed.
    #[test]
    fn resolves_this_kernels_offsets() {
        let mut config = Config::unresolved();
        let path = Path::new(VMLINUX_BTF);
        let vmlinux = read_vmlinux(path).unwrap();
        let scan = resolve_offsets(path, &vmlinux, &mut config)
            .unwrap()
            .expect("this kernel has the scan's fields");
        assert_ne!(scan.task_pid, config.task_tgid);
        assert_ne!(scan.vma_start, scan.vma_end);
        assert!(
            scan.task_comm < 16 * 1024 && scan.dentry_name < 1024,
            "{scan:?}"
        );
        // Sanity: fields are inside a task_struct (a few KiB) and distinct.
        let offs = [
            config.task_group_leader,
            config.task_start_boottime,
            config.task_nsproxy,
            config.task_tgid,
            config.task_exit_code,
        ];
        for (i, a) in offs.iter().enumerate() {
            assert!(*a < 16 * 1024, "{offs:?}");
            for b in &offs[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(config.ipc_ns_inum < 4096);
        for off in [
            config.task_files,
            config.files_fdt,
            config.fdtable_max_fds,
            config.fdtable_fd,
            config.file_inode,
            config.inode_ino,
            config.inode_sb,
            config.sb_magic,
            config.sb_fs_info,
        ] {
            assert!(off < 16 * 1024, "{config:?}");
        }
        assert_ne!(config.fdtable_max_fds, config.fdtable_fd);
        let btf = Btf::parse(&vmlinux).unwrap();
        assert!(matches!(
            btf.offset_of("task_struct", &["no_such_field"]),
            Err(ProbeError::BtfMember(_))
        ));
        assert!(btf.offset_of("no_such_struct", &["x"]).is_err());
    }

    /// A missing or malformed BTF file is one clear error naming the file, never a panic.
    #[test]
    fn missing_or_malformed_btf_is_a_clear_error() {
        let missing = Path::new("/nonexistent/vmlinux");
        let e = read_vmlinux(missing).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/vmlinux"), "{e}");
        assert!(e.contains("--btf FILE") && e.contains("`ls`"), "{e}");
        let mut config = Config::unresolved();
        for junk in [&b""[..], b"\x9f\xeb\x01\x00", &[0xffu8; 64][..]] {
            let e = resolve_offsets(missing, junk, &mut config)
                .unwrap_err()
                .to_string();
            assert!(e.contains("not well-formed BTF"), "{e}");
        }
    }

    /// The offset of a string in a NUL-separated table.
    fn name(s: &[u8], table: &[u8]) -> u32 {
        let pos = table
            .windows(s.len() + 2)
            .position(|w| w[0] == 0 && &w[1..=s.len()] == s && w[s.len() + 1] == 0)
            .unwrap();
        u32::try_from(pos + 1).unwrap()
    }

    /// A hand-built BTF: `struct inner { long x; int y; }`, `typedef struct inner inner_t`,
    /// `struct outer { int a; union { int b; const inner_t in; }; }`.
    fn synthetic() -> Vec<u8> {
        let strings = b"\0int\0long\0outer\0a\0b\0inner\0in\0x\0y\0inner_t\0".to_vec();
        let s = &strings;
        let mut types: Vec<u8> = Vec::new();
        let mut ty = |name_off: u32, kind: u32, vlen: u32, size_type: u32, extra: &[u32]| {
            for v in [name_off, (kind << 24) | vlen, size_type]
                .iter()
                .chain(extra)
            {
                types.extend_from_slice(&v.to_ne_bytes());
            }
        };
        ty(name(b"int", s), KIND_INT, 0, 4, &[32]); // 1
        ty(name(b"long", s), KIND_INT, 0, 8, &[64]); // 2
        let inner = [name(b"x", s), 2, 0, name(b"y", s), 1, 64];
        ty(name(b"inner", s), KIND_STRUCT, 2, 16, &inner); // 3
        ty(name(b"inner_t", s), KIND_TYPEDEF, 0, 3, &[]); // 4
        ty(0, KIND_CONST, 0, 4, &[]); // 5
        let union = [name(b"b", s), 1, 0, name(b"in", s), 5, 0];
        ty(0, KIND_UNION, 2, 16, &union); // 6
        let outer = [name(b"a", s), 1, 0, 0, 6, 64];
        ty(name(b"outer", s), KIND_STRUCT, 2, 24, &outer); // 7
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
        b.extend_from_slice(&[1, 0]);
        let tl = u32::try_from(types.len()).unwrap();
        let sl = u32::try_from(strings.len()).unwrap();
        for v in [24u32, 0, tl, tl, sl] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&types);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn finds_enumerators() {
        let blob = enums_blob(&[
            ("bpf_map_type", &["BPF_MAP_TYPE_UNSPEC"]),
            ("bpf_func_id", &["BPF_FUNC_unspec", "BPF_FUNC_task_pt_regs"]),
        ]);
        let btf = Btf::parse(&blob).unwrap();
        assert!(btf.enum_has("bpf_func_id", "BPF_FUNC_task_pt_regs"));
        assert!(btf.enum_has("bpf_func_id", "BPF_FUNC_unspec"));
        assert!(!btf.enum_has("bpf_func_id", "BPF_FUNC_get_current_task_btf"));
        assert!(!btf.enum_has("bpf_map_type", "BPF_FUNC_unspec"));
        assert!(!btf.enum_has("int", "BPF_FUNC_unspec"));
    }

    #[test]
    fn finds_members_through_anonymous_unions_typedefs_and_qualifiers() {
        let blob = synthetic();
        let btf = Btf::parse(&blob).unwrap();
        assert_eq!(btf.offset_of("outer", &["a"]).unwrap(), 0);
        assert_eq!(btf.offset_of("outer", &["b"]).unwrap(), 8);
        assert_eq!(btf.offset_of("outer", &["in", "y"]).unwrap(), 16);
        assert_eq!(btf.offset_of("inner", &["y"]).unwrap(), 8);
        assert!(btf.offset_of("outer", &["c"]).is_err());
        assert!(
            btf.offset_of("inner_t", &["x"]).is_err(),
            "a typedef is not a struct"
        );
        // Truncated or foreign data is not BTF.
        assert!(Btf::parse(&blob[..blob.len() - 30]).is_none());
        assert!(Btf::parse(b"not btf at all, not btf at all").is_none());
    }
}
