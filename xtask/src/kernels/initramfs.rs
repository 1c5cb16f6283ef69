//! The guest's initramfs: a tree of host files at their own paths (so the absolute paths baked
//! into the test binaries hold inside the guest), the shared libraries `ldd` lists for each
//! executable, busybox for everything else, written as a `newc` cpio archive.

use std::{
    collections::BTreeMap,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Where an entry's bytes come from.
enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

enum Node {
    Dir,
    File { source: Source, mode: u32 },
    Symlink(PathBuf),
    CharDev { major: u32, minor: u32, mode: u32 },
}

/// Guest paths are kept relative (`usr/bin/busybox`), in an order where every directory comes
/// before what it holds.
#[derive(Default)]
pub struct Tree {
    nodes: BTreeMap<PathBuf, Node>,
    /// Directory to strip debug info into (`objcopy --strip-debug`); `None` ships as is.
    strip_dir: Option<PathBuf>,
    /// Host files shipped with their debug info all the same.
    keep_debug: std::collections::BTreeSet<PathBuf>,
}

fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

impl Tree {
    pub fn new(strip_dir: Option<PathBuf>) -> Self {
        Self {
            nodes: BTreeMap::new(),
            strip_dir,
            keep_debug: std::collections::BTreeSet::new(),
        }
    }

    /// Ships `host` with its debug info even when the tree strips it from the others.
    pub fn keep_debug(&mut self, host: &Path) {
        self.keep_debug.insert(host.to_path_buf());
    }

    /// Follows the tree's own symlinks in the leading directories of `path`.
    fn resolve(&self, path: &Path) -> PathBuf {
        let mut out = PathBuf::new();
        let parts: Vec<_> = relative(path)
            .components()
            .map(|c| c.as_os_str().to_owned())
            .collect();
        for (i, part) in parts.iter().enumerate() {
            out.push(part);
            if i + 1 < parts.len()
                && let Some(Node::Symlink(target)) = self.nodes.get(&out)
            {
                out = if target.is_absolute() {
                    relative(target)
                } else {
                    relative(&out.parent().unwrap_or(Path::new("")).join(target))
                };
            }
        }
        out
    }

    pub fn dir(&mut self, path: &Path) {
        let rel = self.resolve(path);
        let mut cur = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            self.nodes.entry(cur.clone()).or_insert(Node::Dir);
        }
    }

    fn parent_dirs(&mut self, rel: &Path) {
        if let Some(parent) = rel.parent()
            && !parent.as_os_str().is_empty()
        {
            self.dir(parent);
        }
    }

    pub fn exists(&self, path: &Path) -> bool {
        self.nodes.contains_key(&self.resolve(path))
    }

    pub fn bytes(&mut self, path: &Path, data: impl Into<Vec<u8>>, mode: u32) {
        let rel = self.resolve(path);
        self.parent_dirs(&rel);
        self.nodes.insert(
            rel,
            Node::File {
                source: Source::Bytes(data.into()),
                mode,
            },
        );
    }

    pub fn symlink(&mut self, path: &Path, target: &Path) {
        let rel = self.resolve(path);
        self.parent_dirs(&rel);
        self.nodes.insert(rel, Node::Symlink(target.to_owned()));
    }

    pub fn char_dev(&mut self, path: &Path, major: u32, minor: u32, mode: u32) {
        let rel = self.resolve(path);
        self.parent_dirs(&rel);
        self.nodes.insert(rel, Node::CharDev { major, minor, mode });
    }

    /// The host's top-level symlinks (`/bin -> usr/bin` on a merged-/usr system), so every
    /// spelling of a path that works on the host works in the guest.
    pub fn host_layout(&mut self) {
        for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(name);
            if let Ok(target) = std::fs::read_link(&host) {
                self.symlink(&host, &target);
            }
        }
    }

    /// A host file (its content, following symlinks) at its canonical path; returns that path.
    pub fn host_file(&mut self, host: &Path) -> Result<PathBuf> {
        let parent = host
            .parent()
            .with_context(|| format!("{} has no parent", host.display()))?;
        let name = host
            .file_name()
            .with_context(|| format!("{} has no file name", host.display()))?;
        let canonical = std::fs::canonicalize(parent)
            .with_context(|| format!("{} not found", parent.display()))?
            .join(name);
        let meta =
            std::fs::metadata(host).with_context(|| format!("{} not found", host.display()))?;
        let rel = self.resolve(&canonical);
        self.parent_dirs(&rel);
        self.nodes.insert(
            rel,
            Node::File {
                source: Source::Host(host.to_owned()),
                mode: meta.permissions().mode() & 0o7777,
            },
        );
        Ok(canonical)
    }

    /// An executable and every shared library `ldd` lists for it, each at its own path.
    pub fn executable(&mut self, host: &Path) -> Result<PathBuf> {
        let path = self.host_file(host)?;
        for lib in shared_libraries(host)? {
            self.host_file(&lib)?;
        }
        Ok(path)
    }

    /// Writes the tree as a `newc` cpio archive; returns its size in bytes.
    pub fn write_cpio(&self, out: &Path) -> Result<u64> {
        let file =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = CpioWriter {
            out: std::io::BufWriter::new(file),
            ino: 1,
            written: 0,
        };
        for (path, node) in &self.nodes {
            let name = path.to_string_lossy();
            match node {
                Node::Dir => w.entry(&name, 0o040_755, 2, (0, 0), &[])?,
                Node::Symlink(target) => w.entry(
                    &name,
                    0o120_777,
                    1,
                    (0, 0),
                    target.as_os_str().as_encoded_bytes(),
                )?,
                Node::CharDev { major, minor, mode } => {
                    w.entry(&name, 0o020_000 | mode, 1, (*major, *minor), &[])?;
                }
                Node::File { source, mode } => {
                    let data = match source {
                        Source::Bytes(b) => b.clone(),
                        Source::Host(p) => self.contents(p)?,
                    };
                    w.entry(&name, 0o100_000 | mode, 1, (0, 0), &data)?;
                }
            }
        }
        w.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        w.out.flush()?;
        Ok(w.written)
    }

    /// A host file's bytes; ELF files with debug info are shipped stripped of it when a strip
    /// directory is set (the test binaries carry hundreds of MiB of DWARF the guest never reads).
    fn contents(&self, host: &Path) -> Result<Vec<u8>> {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let Some(dir) = &self.strip_dir else {
            return Ok(data);
        };
        if self.keep_debug.contains(host) {
            return Ok(data);
        }
        if data.len() < (4 << 20) || !data.starts_with(b"\x7fELF") {
            return Ok(data);
        }
        std::fs::create_dir_all(dir)?;
        let stripped = dir.join(relative(host).to_string_lossy().replace('/', "_"));
        let status = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(host)
            .arg(&stripped)
            .status();
        match status {
            Ok(s) if s.success() => {
                let out = std::fs::read(&stripped)?;
                let _ = std::fs::remove_file(&stripped);
                Ok(out)
            }
            _ => Ok(data),
        }
    }
}

struct CpioWriter<W: std::io::Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: std::io::Write> CpioWriter<W> {
    fn pad(&mut self) -> Result<()> {
        let n = (4 - (self.written % 4)) % 4;
        self.out.write_all(&[0u8; 3][..usize::try_from(n)?])?;
        self.written += n;
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<()> {
        let size = u32::try_from(data.len()).context("a file over 4 GiB")?;
        let namesize = u32::try_from(name.len() + 1)?;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, namesize, 0
        );
        self.ino += 1;
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += u64::try_from(header.len() + name.len() + 1)?;
        self.pad()?;
        self.out.write_all(data)?;
        self.written += u64::from(size);
        self.pad()
    }
}

/// The shared libraries (and the dynamic loader) an executable needs, by `ldd`; empty for a
/// static executable.
pub fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("running ldd (from libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            exe.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ldd(&text).with_context(|| format!("ldd {}", exe.display()))
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("statically linked") {
            continue;
        }
        if let Some((name, rest)) = line.split_once("=>") {
            let rest = rest.trim();
            if rest.starts_with("not found") {
                bail!("{} not found", name.trim());
            }
            if let Some(path) = rest
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/'))
            {
                libs.push(PathBuf::from(path));
            }
        } else if let Some(path) = line
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    #[test]
    fn tree_follows_its_own_symlinks_and_writes_newc() {
        let mut tree = Tree::new(None);
        tree.symlink(Path::new("/bin"), Path::new("usr/bin"));
        tree.bytes(Path::new("/bin/hello"), "hi", 0o755);
        assert!(tree.exists(Path::new("/usr/bin/hello")));
        assert!(tree.exists(Path::new("/bin/hello")));
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("t.cpio");
        let size = tree.write_cpio(&out).unwrap();
        let data = std::fs::read(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(size % 4, 0);
        let text = String::from_utf8_lossy(&data);
        // bin (a symlink to usr/bin), usr, usr/bin, usr/bin/hello ("hi"), the trailer: in
        // that order, the first name right after its 110-byte header.
        let mut at = 0;
        for name in [
            "bin\0",
            "usr/bin",
            "usr\0",
            "usr/bin\0",
            "usr/bin/hello\0",
            "hi",
            "TRAILER!!!\0",
        ] {
            let found = text[at..]
                .find(name)
                .unwrap_or_else(|| panic!("{name:?} missing after {at}"));
            at += found + name.len();
        }
        assert!(text.starts_with("070701"));
        assert_eq!(&text[110..114], "bin\0");
    }
}
