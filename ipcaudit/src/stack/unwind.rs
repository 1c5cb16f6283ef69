//! Unwinding a copy of a user stack with the binaries' `.eh_frame` (x86_64): no frame pointers
//! needed. Where a function has no unwind table entry, its frame pointer is followed if it
//! points into the copied stack; where neither works the walk stops and says why.

use std::{collections::HashMap, path::Path, sync::Arc};

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, LittleEndian, Register, RegisterRule,
    UnwindContext, UnwindSection as _, X86_64,
};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

use super::maps::{self, Mapping};

/// What unwinding needs of one ELF file.
#[derive(Debug, Default)]
pub struct ElfInfo {
    eh_frame: Vec<u8>,
    eh_frame_addr: u64,
    eh_frame_hdr: Vec<u8>,
    eh_frame_hdr_addr: u64,
    text_addr: u64,
    /// PT_LOAD segments: (file offset, virtual address, file size).
    segments: Vec<(u64, u64, u64)>,
    /// GNU build id.
    pub build_id: Option<Vec<u8>>,
}

impl ElfInfo {
    /// Reads an ELF file's unwind tables, load segments and build id (only those parts are
    /// read: binaries with debug info are large).
    pub fn load(path: &Path) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        let cache = object::ReadCache::new(file);
        Self::parse(&cache)
    }

    fn parse<'data, R: object::ReadRef<'data>>(data: R) -> Option<Self> {
        let file = object::File::parse(data).ok()?;
        let section = |name: &str| {
            file.section_by_name(name).and_then(|s| {
                let bytes = s.data().ok()?.to_vec();
                Some((bytes, s.address()))
            })
        };
        let (eh_frame, eh_frame_addr) = section(".eh_frame").unwrap_or_default();
        let (eh_frame_hdr, eh_frame_hdr_addr) = section(".eh_frame_hdr").unwrap_or_default();
        let text_addr = file.section_by_name(".text").map_or(0, |s| s.address());
        let segments = file
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, s.address(), size)
            })
            .collect();
        Some(Self {
            eh_frame,
            eh_frame_addr,
            eh_frame_hdr,
            eh_frame_hdr_addr,
            text_addr,
            segments,
            build_id: file.build_id().ok().flatten().map(<[u8]>::to_vec),
        })
    }

    /// Its load segments: (file offset, virtual address, file size).
    pub fn segments(&self) -> &[(u64, u64, u64)] {
        &self.segments
    }

    /// Whether it has unwind tables at all.
    pub fn has_eh_frame(&self) -> bool {
        !self.eh_frame.is_empty()
    }

    /// The virtual address (as linked) of a file offset.
    pub fn vaddr(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(off, _, size)| (*off..off.saturating_add(*size)).contains(&offset))
            .map(|(off, vaddr, _)| vaddr + (offset - off))
    }

    /// The unwind rules at `pc` (a linked address): CFA, and where the return address and the
    /// frame pointer of the caller are.
    fn rules(&self, pc: u64) -> Option<Rules> {
        if self.eh_frame.is_empty() {
            return None;
        }
        let eh = EhFrame::new(&self.eh_frame, LittleEndian);
        let bases = BaseAddresses::default()
            .set_eh_frame(self.eh_frame_addr)
            .set_eh_frame_hdr(self.eh_frame_hdr_addr)
            .set_text(self.text_addr);
        let mut ctx = UnwindContext::new();
        let row = if self.eh_frame_hdr.is_empty() {
            eh.unwind_info_for_address(&bases, &mut ctx, pc, EhFrame::cie_from_offset)
                .ok()?
                .clone()
        } else {
            let hdr = EhFrameHdr::new(&self.eh_frame_hdr, LittleEndian)
                .parse(&bases, 8)
                .ok()?;
            match hdr.table() {
                Some(table) => table
                    .unwind_info_for_address(&eh, &bases, &mut ctx, pc, EhFrame::cie_from_offset)
                    .ok()?
                    .clone(),
                None => eh
                    .unwind_info_for_address(&bases, &mut ctx, pc, EhFrame::cie_from_offset)
                    .ok()?
                    .clone(),
            }
        };
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => (*register, *offset),
            CfaRule::Expression(_) => return Some(Rules::Unsupported),
        };
        let saved = |r: Register| match row.register(r) {
            None | Some(RegisterRule::SameValue) => Saved::Same,
            Some(RegisterRule::Undefined) => Saved::Undefined,
            Some(RegisterRule::Offset(o)) => Saved::At(o),
            Some(_) => Saved::Unsupported,
        };
        Some(Rules::Cfa {
            cfa,
            ra: saved(X86_64::RA),
            bp: saved(X86_64::RBP),
        })
    }
}

#[derive(Clone, Copy, Debug)]
enum Saved {
    Same,
    Undefined,
    /// At CFA + offset.
    At(i64),
    Unsupported,
}

#[derive(Clone, Copy, Debug)]
enum Rules {
    Cfa {
        cfa: (Register, i64),
        ra: Saved,
        bp: Saved,
    },
    Unsupported,
}

/// The user registers at the syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// A copy of the stack from `base` up.
pub struct Memory<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
}

impl Memory<'_> {
    fn read(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let b = self.bytes.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

/// One frame found: an instruction address, and the mapping it is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pc {
    pub addr: u64,
    /// Index into the maps.
    pub map: Option<usize>,
}

/// Why a walk ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The outermost frame (its return address is undefined: `_start`, a thread's start).
    End,
    /// A return address outside every executable mapping.
    NotCode(u64),
    /// A function with no unwind table entry whose frame pointer does not point into the
    /// copied stack either.
    NoUnwindInfo { module: String },
    /// A rule this unwinder does not evaluate (DWARF expressions: PLT stubs, signal frames).
    Unsupported { module: String },
    /// The frame lies beyond the copied part of the stack.
    StackCopyEnds(usize),
    /// The binary could not be read.
    Unreadable { module: String },
    /// The frame limit.
    Limit,
}

/// A cache of ELF unwind information, by path and inode.
#[derive(Default)]
pub struct ElfCache {
    files: HashMap<(String, u64), Option<Arc<ElfInfo>>>,
}

impl ElfCache {
    /// The information of a mapping's file, read through `/proc/PID/root` when the process may
    /// run in another mount namespace.
    pub fn get(&mut self, m: &Mapping, pid: u32) -> Option<Arc<ElfInfo>> {
        if self.files.len() > 1024 {
            self.files.clear();
        }
        self.files
            .entry((m.path.clone(), m.inode))
            .or_insert_with(|| {
                let rooted = format!("/proc/{pid}/root{}", m.path);
                ElfInfo::load(Path::new(&rooted))
                    .or_else(|| ElfInfo::load(Path::new(&m.path)))
                    .map(Arc::new)
            })
            .clone()
    }
}

const MAX_FRAMES: usize = 64;

/// Walks the stack: frame 0 is `regs.ip`.
pub fn unwind(
    regs: Regs,
    mem: &Memory<'_>,
    maps: &[Mapping],
    pid: u32,
    cache: &mut ElfCache,
) -> (Vec<Pc>, Stop) {
    let mut frames = Vec::new();
    let (mut pc, mut sp, mut bp) = (regs.ip, regs.sp, regs.bp);
    loop {
        if frames.len() >= MAX_FRAMES {
            return (frames, Stop::Limit);
        }
        // A return address points after the call: look up the call itself.
        let lookup = if frames.is_empty() {
            pc
        } else {
            pc.saturating_sub(1)
        };
        let Some(m) = maps::find(maps, lookup) else {
            return (frames, Stop::NotCode(pc));
        };
        let index = maps.iter().position(|x| std::ptr::eq(x, m));
        frames.push(Pc {
            addr: pc,
            map: index,
        });
        let module = m.path.clone();
        let Some(elf) = cache.get(m, pid) else {
            return (frames, Stop::Unreadable { module });
        };
        let rules = elf.vaddr(m.file_offset(lookup)).and_then(|v| elf.rules(v));
        let (cfa, ra, next_bp) = match rules {
            Some(Rules::Cfa { cfa, ra, bp: rbp }) => {
                let base = if cfa.0 == X86_64::RSP {
                    sp
                } else if cfa.0 == X86_64::RBP {
                    bp
                } else {
                    return (frames, Stop::Unsupported { module });
                };
                let cfa = base.wrapping_add_signed(cfa.1);
                let at = |o: i64| mem.read(cfa.wrapping_add_signed(o));
                let ra = match ra {
                    Saved::Undefined => return (frames, Stop::End),
                    Saved::At(o) => match at(o) {
                        Some(v) => v,
                        None => return (frames, Stop::StackCopyEnds(mem.bytes.len())),
                    },
                    Saved::Same | Saved::Unsupported => {
                        return (frames, Stop::Unsupported { module });
                    }
                };
                let next_bp = match rbp {
                    Saved::At(o) => at(o).unwrap_or(bp),
                    _ => bp,
                };
                (cfa, ra, next_bp)
            }
            Some(Rules::Unsupported) => return (frames, Stop::Unsupported { module }),
            None => {
                // No unwind table entry: the frame pointer, if it points into the stack copy.
                match (mem.read(bp), mem.read(bp.wrapping_add(8))) {
                    (Some(saved_bp), Some(ra))
                        if bp >= sp && maps::find(maps, ra.wrapping_sub(1)).is_some() =>
                    {
                        (bp + 16, ra, saved_bp)
                    }
                    _ => return (frames, Stop::NoUnwindInfo { module }),
                }
            }
        };
        if ra == 0 {
            return (frames, Stop::End);
        }
        if cfa <= sp {
            // No progress: a corrupt frame.
            return (frames, Stop::Unsupported { module });
        }
        (pc, sp, bp) = (ra, cfa, next_bp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_binary_s_unwind_tables() {
        let exe = std::env::current_exe().unwrap();
        let elf = ElfInfo::load(&exe).unwrap();
        assert!(elf.has_eh_frame());
        assert!(!elf.segments.is_empty());
        // Our own code: its address in the file, as linked, has unwind rules.
        let maps = maps::read(std::process::id());
        let here = reads_this_binary_s_unwind_tables as *const () as u64;
        let m = maps::find(&maps, here).unwrap();
        let v = elf.vaddr(m.file_offset(here)).unwrap();
        assert!(matches!(elf.rules(v), Some(Rules::Cfa { .. })), "{v:#x}");
    }

    #[test]
    fn memory_reads_stay_inside_the_copy() {
        let bytes: Vec<u8> = (0..32u8).collect();
        let m = Memory {
            base: 0x1000,
            bytes: &bytes,
        };
        assert_eq!(m.read(0x1000), Some(0x0706_0504_0302_0100));
        assert_eq!(m.read(0x1018), Some(0x1f1e_1d1c_1b1a_1918));
        assert_eq!(m.read(0x1019), None);
        assert_eq!(m.read(0xfff), None);
        assert_eq!(m.read(u64::MAX), None);
    }

    #[test]
    fn garbage_stops_with_a_reason() {
        let mut cache = ElfCache::default();
        let mem = Memory {
            base: 0x1000,
            bytes: &[0; 64],
        };
        let (frames, stop) = unwind(
            Regs {
                ip: 0x10,
                sp: 0x1000,
                bp: 0,
            },
            &mem,
            &[],
            std::process::id(),
            &mut cache,
        );
        assert!(frames.is_empty());
        assert_eq!(stop, Stop::NotCode(0x10));
    }
}
