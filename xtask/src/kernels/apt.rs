//! Debian's cloud kernels, fetched with `apt-get download` through a private apt configuration
//! under `target/kernels/apt` (its own sources list, state and cache: the host's apt state is
//! never touched), and cached as bare `vmlinuz` files under `target/kernels/images`.
//!
//! The columns are every kernel series (major.minor) that the configured suites carry as a
//! `-cloud-amd64` image; for each, the newest package version that downloads and holds a
//! `vmlinuz` is used, the `-unsigned` flavours first (Debian 7.x splits the image into a
//! `linux-binary[-unsigned]-*` package: both layouts are understood).

use std::{
    cmp::Ordering,
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};

const MIRROR: &str = "http://deb.debian.org/debian";
/// 5.10 (bullseye), 6.1 (bookworm), 6.12 (bookworm-backports, trixie), the newest (sid).
const SUITES: &[&str] = &[
    "bullseye",
    "bookworm",
    "bookworm-backports",
    "trixie",
    "sid",
];
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Package lists older than this are refreshed (`--refresh` forces it).
const LISTS_MAX_AGE: Duration = Duration::from_hours(24);

/// One downloadable kernel package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub package: String,
    pub version: String,
    pub suite: String,
    /// The kernel release (`uname -r`), e.g. `6.1.0-50-cloud-amd64`.
    pub release: String,
    /// `major.minor`, e.g. `6.1`.
    pub series: String,
    pub unsigned: bool,
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub series: String,
    pub release: String,
    pub package: String,
    pub version: String,
    pub suite: String,
    pub vmlinuz: PathBuf,
}

pub struct Apt {
    dir: PathBuf,
    images: PathBuf,
}

impl Apt {
    pub fn new(kernels_dir: &Path) -> Self {
        Self {
            dir: kernels_dir.join("apt"),
            images: kernels_dir.join("images"),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("apt.conf")
    }

    /// Writes the private configuration (idempotent).
    fn configure(&self) -> Result<()> {
        if !Path::new(KEYRING).exists() {
            bail!(
                "{KEYRING} is missing: install the `debian-archive-keyring` package (it verifies the kernel packages)"
            );
        }
        for sub in [
            "etc/sources.list.d",
            "etc/apt.conf.d",
            "etc/preferences.d",
            "state/lists/partial",
            "cache/archives/partial",
            "debs",
        ] {
            std::fs::create_dir_all(self.dir.join(sub))?;
        }
        let mut sources = String::new();
        for suite in SUITES {
            writeln!(
                sources,
                "deb [arch=amd64 signed-by={KEYRING}] {MIRROR} {suite} main"
            )?;
        }
        std::fs::write(self.dir.join("etc/sources.list"), sources)?;
        let status = self.dir.join("state/status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        let d = self.dir.display();
        // Check-Valid-Until: sid's Release file is often past its Valid-Until on mirrors and
        // snapshots; the signature is still checked.
        let conf = format!(
            "Dir::Etc \"{d}/etc\";\n\
             Dir::Etc::SourceList \"{d}/etc/sources.list\";\n\
             Dir::Etc::SourceParts \"{d}/etc/sources.list.d\";\n\
             Dir::Etc::Parts \"{d}/etc/apt.conf.d\";\n\
             Dir::Etc::Preferences \"{d}/etc/preferences\";\n\
             Dir::Etc::PreferencesParts \"{d}/etc/preferences.d\";\n\
             Dir::State \"{d}/state\";\n\
             Dir::State::status \"{d}/state/status\";\n\
             Dir::Cache \"{d}/cache\";\n\
             APT::Architecture \"amd64\";\n\
             APT::Architectures {{ \"amd64\"; }};\n\
             APT::Sandbox::User \"root\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::Check-Valid-Until \"false\";\n"
        );
        std::fs::write(self.config_path(), conf)?;
        Ok(())
    }

    fn apt_get(&self) -> Command {
        let mut cmd = Command::new("apt-get");
        cmd.env("APT_CONFIG", self.config_path());
        cmd
    }

    fn lists(&self) -> Vec<(String, PathBuf)> {
        let dir = self.dir.join("state/lists");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut lists: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let suite = name
                    .strip_suffix("_main_binary-amd64_Packages")?
                    .rsplit_once("_dists_")?
                    .1
                    .to_owned();
                Some((suite, e.path()))
            })
            .collect();
        lists.sort();
        lists
    }

    /// `apt-get update` on the private configuration when its lists are missing, older than a
    /// day, or `refresh` is set. A failed refresh with lists at hand is a warning.
    pub fn update(&self, refresh: bool) -> Result<()> {
        self.configure()?;
        let lists = self.lists();
        let fresh = lists.len() == SUITES.len()
            && lists.iter().all(|(_, p)| {
                std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age < LISTS_MAX_AGE)
            });
        if fresh && !refresh {
            return Ok(());
        }
        let result = crate::run(self.apt_get().args(["update", "-q"]));
        match result {
            Ok(()) => Ok(()),
            Err(e) if !lists.is_empty() => {
                eprintln!("xtask: WARNING: apt-get update failed ({e:#}); using the lists at hand");
                Ok(())
            }
            Err(e) => {
                Err(e.context("apt-get update (private configuration under target/kernels/apt)"))
            }
        }
    }

    /// Every cloud kernel package of the configured suites, newest first within a series.
    pub fn candidates(&self) -> Result<BTreeMap<String, Vec<Candidate>>> {
        let mut by_series: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        for (suite, path) in self.lists() {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            for stanza in text.split("\n\n") {
                let field = |name: &str| {
                    stanza.lines().find_map(|l| {
                        l.strip_prefix(name)
                            .and_then(|v| v.strip_prefix(':'))
                            .map(|v| v.trim().to_owned())
                    })
                };
                let (Some(package), Some(version)) = (field("Package"), field("Version")) else {
                    continue;
                };
                if let Some((release, series, unsigned)) = parse_kernel_package(&package) {
                    by_series
                        .entry(series.clone())
                        .or_default()
                        .push(Candidate {
                            package,
                            version,
                            suite: suite.clone(),
                            release,
                            series,
                            unsigned,
                        });
                }
            }
        }
        if by_series.is_empty() {
            bail!(
                "no -cloud-amd64 kernel packages in the package lists under {} (run with --refresh)",
                self.dir.display()
            );
        }
        for list in by_series.values_mut() {
            list.sort_by(|a, b| {
                compare_versions(&b.version, &a.version).then(b.unsigned.cmp(&a.unsigned))
            });
            list.dedup_by(|a, b| a.package == b.package && a.version == b.version);
        }
        Ok(by_series)
    }

    /// The newest kernel of `candidates` (one series) that is cached or downloads and holds a
    /// `vmlinuz`.
    pub fn fetch(&self, candidates: &[Candidate]) -> Result<Kernel> {
        let mut tried = Vec::new();
        for c in candidates {
            let dir = self.images.join(&c.release);
            let vmlinuz = dir.join("vmlinuz");
            let source = format!("{} {} {}\n", c.package, c.version, c.suite);
            if vmlinuz.exists()
                && std::fs::read_to_string(dir.join("source")).is_ok_and(|s| s == source)
            {
                return Ok(kernel(c, vmlinuz));
            }
            match self.download(c, &dir) {
                Ok(()) => {
                    std::fs::write(dir.join("source"), &source)?;
                    return Ok(kernel(c, vmlinuz));
                }
                Err(e) => {
                    eprintln!(
                        "xtask: {}={} ({}): {e:#}; trying the next version",
                        c.package, c.version, c.suite
                    );
                    tried.push(format!("{}={}", c.package, c.version));
                }
            }
        }
        bail!("no kernel package downloaded: tried {}", tried.join(", "))
    }

    fn download(&self, c: &Candidate, dir: &Path) -> Result<()> {
        let debs = self.dir.join("debs");
        let _ = std::fs::remove_dir_all(&debs);
        std::fs::create_dir_all(&debs)?;
        crate::run(self.apt_get().current_dir(&debs).args([
            "download",
            "-q",
            &format!("{}={}", c.package, c.version),
        ]))?;
        let deb = std::fs::read_dir(&debs)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download wrote no .deb")?;
        let extract = debs.join("x");
        crate::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extract))?;
        let image = find_vmlinuz(&extract)
            .with_context(|| format!("{} holds no vmlinuz (a meta package)", deb.display()))?;
        std::fs::create_dir_all(dir)?;
        std::fs::copy(&image, dir.join("vmlinuz"))
            .with_context(|| format!("copying {}", image.display()))?;
        let _ = std::fs::remove_dir_all(&debs);
        Ok(())
    }
}

fn kernel(c: &Candidate, vmlinuz: PathBuf) -> Kernel {
    Kernel {
        series: c.series.clone(),
        release: c.release.clone(),
        package: c.package.clone(),
        version: c.version.clone(),
        suite: c.suite.clone(),
        vmlinuz,
    }
}

/// `boot/vmlinuz-*` (up to 6.x) or `usr/lib/modules/*/vmlinuz*` (7.x `linux-binary-*`).
fn find_vmlinuz(root: &Path) -> Option<PathBuf> {
    let in_dir = |dir: &Path| -> Option<PathBuf> {
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.is_file()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
            })
    };
    in_dir(&root.join("boot")).or_else(|| {
        std::fs::read_dir(root.join("usr/lib/modules"))
            .ok()?
            .filter_map(Result::ok)
            .find_map(|e| in_dir(&e.path()))
    })
}

/// `(release, series, unsigned)` of a cloud kernel image package name; `None` for anything
/// else (meta packages, -dbg, headers, other flavours).
pub fn parse_kernel_package(name: &str) -> Option<(String, String, bool)> {
    const FORMS: &[(&str, &str, bool)] = &[
        ("linux-image-", "-cloud-amd64-unsigned", true),
        ("linux-binary-unsigned-", "-cloud-amd64", true),
        ("linux-image-", "-cloud-amd64", false),
        ("linux-binary-", "-cloud-amd64", false),
    ];
    FORMS.iter().find_map(|&(prefix, suffix, unsigned)| {
        let version = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
        let mut parts = version.split(['.', '-', '+']);
        let major: u32 = parts.next()?.parse().ok()?;
        let minor: u32 = parts.next()?.parse().ok()?;
        if version.contains("unsigned") {
            return None;
        }
        Some((
            format!("{version}-cloud-amd64"),
            format!("{major}.{minor}"),
            unsigned,
        ))
    })
}

/// Debian version ordering (`dpkg --compare-versions`): epoch, upstream version, revision;
/// each compared by alternating non-digit runs (`~` before everything, letters before other
/// characters) and numbers.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.bytes().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    fn part(mut a: &[u8], mut b: &[u8]) -> Ordering {
        while !a.is_empty() || !b.is_empty() {
            // Non-digit prefix.
            loop {
                let ca = a.first().copied().filter(|c| !c.is_ascii_digit());
                let cb = b.first().copied().filter(|c| !c.is_ascii_digit());
                if ca.is_none() && cb.is_none() {
                    break;
                }
                let o = order(ca).cmp(&order(cb));
                if o != Ordering::Equal {
                    return o;
                }
                if ca.is_some() {
                    a = &a[1..];
                }
                if cb.is_some() {
                    b = &b[1..];
                }
            }
            // Numeric part.
            let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
            let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
            let num = |s: &[u8]| {
                let s = std::str::from_utf8(s).unwrap_or("0");
                let s = s.trim_start_matches('0');
                (s.len(), s.to_owned())
            };
            let o = num(&a[..na]).cmp(&num(&b[..nb]));
            if o != Ordering::Equal {
                return o;
            }
            a = &a[na..];
            b = &b[nb..];
        }
        Ordering::Equal
    }
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| part(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| part(ra.as_bytes(), rb.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_version_order() {
        let less = [
            ("5.10.223-1", "6.1.176-1"),
            ("6.12.95-1~bpo12+1", "6.12.95-1"),
            ("6.12.95-1", "6.12.117-1"),
            ("1.0~rc1", "1.0"),
            ("1.0", "1.0a"),
            ("1.0a", "1.0+b1"),
            ("1:0.1", "2:0.0"),
            ("9.9", "1:0.0"),
            ("6.1.176-1", "6.1.176-1+deb12u1"),
        ];
        for (a, b) in less {
            assert_eq!(compare_versions(a, b), Ordering::Less, "{a} < {b}");
            assert_eq!(compare_versions(b, a), Ordering::Greater, "{b} > {a}");
        }
        assert_eq!(compare_versions("7.2.13-1", "7.2.13-1"), Ordering::Equal);
        assert_eq!(compare_versions("1.01", "1.1"), Ordering::Equal);
    }

    #[test]
    fn kernel_package_names() {
        assert_eq!(
            parse_kernel_package("linux-image-5.10.0-32-cloud-amd64-unsigned"),
            Some(("5.10.0-32-cloud-amd64".into(), "5.10".into(), true))
        );
        assert_eq!(
            parse_kernel_package("linux-image-6.12.117+deb13-cloud-amd64"),
            Some(("6.12.117+deb13-cloud-amd64".into(), "6.12".into(), false))
        );
        assert_eq!(
            parse_kernel_package("linux-binary-unsigned-7.2.13+deb14-cloud-amd64"),
            Some(("7.2.13+deb14-cloud-amd64".into(), "7.2".into(), true))
        );
        assert_eq!(
            parse_kernel_package("linux-binary-7.2.13+deb14-cloud-amd64"),
            Some(("7.2.13+deb14-cloud-amd64".into(), "7.2".into(), false))
        );
        for other in [
            "linux-image-cloud-amd64",
            "linux-image-6.1.0-50-cloud-amd64-dbg",
            "linux-image-6.1.0-50-amd64",
            "linux-headers-6.1.0-50-cloud-amd64",
            "linux-image-6.1.0-50-cloud-amd64-unsigned-dbg",
        ] {
            assert_eq!(parse_kernel_package(other), None, "{other}");
        }
    }
}
