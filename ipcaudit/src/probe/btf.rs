//! Kernel struct offsets from BTF (/sys/kernel/btf/vmlinux), resolved at load time and handed
//! to the programs as read-only globals: never offsets copied from one kernel.

use btf_rs::{Btf, BtfType, Type};
use ipcaudit_ebpf::Config;

use super::ProbeError;

/// The path of the kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Strips typedefs and qualifiers.
fn resolve(btf: &Btf, mut ty: Type) -> Option<Type> {
    for _ in 0..16 {
        match ty {
            Type::Typedef(_)
            | Type::Const(_)
            | Type::Volatile(_)
            | Type::Restrict(_)
            | Type::TypeTag(_) => {
                ty = btf.resolve_chained_type(ty.as_btf_type()?).ok()?;
            }
            other => return Some(other),
        }
    }
    None
}

/// Byte offset of member `name` in struct/union `ty`, looking through anonymous members.
/// Returns the offset and the member's type.
fn member(btf: &Btf, ty: &Type, name: &str) -> Option<(u32, Type)> {
    let (Type::Struct(s) | Type::Union(s)) = ty else {
        return None;
    };
    for m in &s.members {
        let member_name = btf.resolve_name(m).unwrap_or_default();
        let member_ty = btf.resolve_type_by_id(m.get_type_id()?).ok()?;
        if member_name == name {
            return Some((m.bit_offset() / 8, member_ty));
        }
        if member_name.is_empty()
            && let Some(inner) = resolve(btf, member_ty)
            && let Some((off, found)) = member(btf, &inner, name)
        {
            return Some((m.bit_offset() / 8 + off, found));
        }
    }
    None
}

/// Offset of a member path inside struct `root` (`ipc_namespace`, `["ns", "inum"]`).
pub fn offset_of(btf: &Btf, root: &str, path: &[&str]) -> Result<u32, ProbeError> {
    let missing = || ProbeError::BtfMember(format!("{root}.{}", path.join(".")));
    let mut ty = btf
        .resolve_types_by_name(root)
        .map_err(|_| missing())?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(_)))
        .ok_or_else(missing)?;
    let mut total = 0;
    for (i, name) in path.iter().enumerate() {
        let (off, member_ty) = member(btf, &ty, name).ok_or_else(missing)?;
        total += off;
        if i + 1 < path.len() {
            ty = resolve(btf, member_ty).ok_or_else(missing)?;
        }
    }
    Ok(total)
}

/// Reads the kernel's BTF and fills the struct offsets of `config`.
pub fn resolve_offsets(config: &mut Config) -> Result<(), ProbeError> {
    let btf = Btf::from_file(VMLINUX_BTF).map_err(|e| ProbeError::Btf {
        path: VMLINUX_BTF,
        reason: e.to_string(),
    })?;
    config.task_group_leader = offset_of(&btf, "task_struct", &["group_leader"])?;
    config.task_start_boottime = offset_of(&btf, "task_struct", &["start_boottime"])?;
    config.task_nsproxy = offset_of(&btf, "task_struct", &["nsproxy"])?;
    config.task_tgid = offset_of(&btf, "task_struct", &["tgid"])?;
    config.task_exit_code = offset_of(&btf, "task_struct", &["exit_code"])?;
    config.nsproxy_ipc_ns = offset_of(&btf, "nsproxy", &["ipc_ns"])?;
    config.ipc_ns_inum = offset_of(&btf, "ipc_namespace", &["ns", "inum"])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs the kernel's BTF, which every supported kernel has; no root needed.
    #[test]
    fn resolves_this_kernels_offsets() {
        let mut config = Config::unresolved();
        resolve_offsets(&mut config).unwrap();
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
        let btf = Btf::from_file(VMLINUX_BTF).unwrap();
        assert!(matches!(
            offset_of(&btf, "task_struct", &["no_such_field"]),
            Err(ProbeError::BtfMember(_))
        ));
        assert!(offset_of(&btf, "no_such_struct", &["x"]).is_err());
    }
}
