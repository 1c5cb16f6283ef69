//! tracefs: where it is, mounting it when it is missing, and tracepoint formats.

use std::path::{Path, PathBuf};

use super::ProbeError;

pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs root, mounting it at /sys/kernel/tracing when it is missing.
pub fn ensure_mounted() -> Result<PathBuf, ProbeError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; a null data pointer is allowed.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(ProbeError::Tracefs(std::io::Error::last_os_error()));
    }
    log::info!("mounted tracefs at {TRACEFS}");
    Ok(PathBuf::from(TRACEFS))
}

/// A field of a tracepoint's `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

/// Parses the `field:` lines of a tracepoint `format` file.
pub fn parse_format(text: &str) -> Vec<Field> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim().strip_prefix("field:")?;
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in line.split(';').map(str::trim) {
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                } else if decl.is_none() && !part.is_empty() {
                    decl = Some(part);
                }
            }
            // "unsigned char comm[16]" → "comm"
            let name = decl?.rsplit(' ').next()?.split('[').next()?.to_owned();
            Some(Field {
                name,
                offset: offset?,
                size: size?,
            })
        })
        .collect()
}

/// The offset of `field` in tracepoint `category/name`, if the kernel has that field.
pub fn field_offset(root: &Path, category: &str, name: &str, field: &str) -> Option<u32> {
    let text =
        std::fs::read_to_string(root.join("events").join(category).join(name).join("format"))
            .ok()?;
    parse_format(&text)
        .into_iter()
        .find(|f| f.name == field)
        .map(|f| f.offset)
}

/// Checks that a format has each `(field, offset, size)` the programs read at a fixed place;
/// why not, if not.
pub fn check_fields(text: &str, wanted: &[(&str, u32, u32)]) -> Result<(), String> {
    let fields = parse_format(text);
    for &(name, offset, size) in wanted {
        match fields.iter().find(|f| f.name == name) {
            None => return Err(format!("no field `{name}`")),
            Some(f) if f.offset != offset || f.size != size => {
                return Err(format!(
                    "field `{name}` at offset {} size {}, expected offset {offset} size {size}",
                    f.offset, f.size
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Checks that a `syscalls:sys_enter_*` format is what the `sys_enter_*` programs read:
/// `__syscall_nr` at offset 8, then `nargs` 8-byte arguments at 16, 24, …; why not, if not.
pub fn check_enter_format(text: &str, nargs: usize) -> Result<(), String> {
    let fields: Vec<Field> = parse_format(text)
        .into_iter()
        .filter(|f| !f.name.starts_with("common_"))
        .collect();
    match fields.first() {
        Some(f) if f.name == "__syscall_nr" && f.offset == 8 => {}
        _ => return Err("no __syscall_nr field at offset 8".to_owned()),
    }
    let args = &fields[1..];
    if args.len() != nargs {
        return Err(format!("{} arguments, expected {nargs}", args.len()));
    }
    for (i, f) in args.iter().enumerate() {
        let want = 16 + 8 * u32::try_from(i).unwrap_or(u32::MAX);
        if f.offset != want || f.size != 8 {
            return Err(format!(
                "argument `{}` at offset {} size {}, expected offset {want} size 8",
                f.name, f.offset, f.size
            ));
        }
    }
    Ok(())
}

/// The `format` file of tracepoint `category/name`.
pub fn format(root: &Path, category: &str, name: &str) -> std::io::Result<String> {
    std::fs::read_to_string(root.join("events").join(category).join(name).join("format"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_FORMAT: &str = "name: sched_process_exit
ID: 369
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:char comm[16];	offset:8;	size:16;	signed:0;
	field:pid_t pid;	offset:24;	size:4;	signed:1;
	field:int prio;	offset:28;	size:4;	signed:1;
	field:bool group_dead;	offset:32;	size:1;	signed:0;

print fmt: \"comm=%s pid=%d prio=%d group_dead=%s\", REC->comm, REC->pid, REC->prio, REC->group_dead ? \"true\" : \"false\"
";

    const ENTER_MSGGET: &str = "name: sys_enter_msgget
ID: 1024
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:int __syscall_nr;	offset:8;	size:4;	signed:1;
	field:key_t key;	offset:16;	size:8;	signed:0;
	field:int msgflg;	offset:24;	size:8;	signed:0;

print fmt: \"key: 0x%08lx, msgflg: 0x%08lx\", ((unsigned long)(REC->key)), ((unsigned long)(REC->msgflg))
";

    #[test]
    fn fixed_fields_are_checked() {
        assert_eq!(
            check_fields(EXIT_FORMAT, &[("pid", 24, 4), ("comm", 8, 16)]),
            Ok(())
        );
        assert_eq!(
            check_fields(EXIT_FORMAT, &[("prio", 24, 4)]),
            Err("field `prio` at offset 28 size 4, expected offset 24 size 4".to_owned())
        );
        assert_eq!(
            check_fields(EXIT_FORMAT, &[("ret", 16, 8)]),
            Err("no field `ret`".to_owned())
        );
    }

    #[test]
    fn enter_formats_are_checked() {
        assert_eq!(check_enter_format(ENTER_MSGGET, 2), Ok(()));
        assert_eq!(
            check_enter_format(ENTER_MSGGET, 3),
            Err("2 arguments, expected 3".to_owned())
        );
        let moved = ENTER_MSGGET.replace("offset:24;\tsize:8", "offset:20;\tsize:4");
        assert_eq!(
            check_enter_format(&moved, 2),
            Err("argument `msgflg` at offset 20 size 4, expected offset 24 size 8".to_owned())
        );
        assert!(check_enter_format(EXIT_FORMAT, 0).is_err());
    }

    #[test]
    fn parses_fields() {
        let fields = parse_format(EXIT_FORMAT);
        assert_eq!(fields.len(), 8);
        assert_eq!(
            fields[4],
            Field {
                name: "comm".into(),
                offset: 8,
                size: 16
            }
        );
        assert_eq!(
            fields[7],
            Field {
                name: "group_dead".into(),
                offset: 32,
                size: 1
            }
        );
        assert!(parse_format("garbage\nfield:;;\nfield:int x; offset:zz; size:4;").is_empty());
    }
}
