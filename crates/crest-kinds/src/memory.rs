//! Memory mappings and their page data.
//!
//! Dump: every mapping of `smaps` is classified ([`classify`]) and the pages that cannot be
//! read again from a file are listed from `pagemap` ([`pages_to_save`]): present or swapped
//! pages of private anonymous memory, the copied-on-write pages of private file mappings, and
//! the present pages of shared anonymous memory. The dump pipeline copies them into the image.
//!
//! Restore ([`restore`]): each mapping is recreated at its address with a remote `mmap`
//! (writable while it is filled), its saved pages are `pread` by the husk itself straight from
//! the image file (one copy, no staging) while a thread of the restorer writes in the last
//! part of them (so that two cores fault in and zero the fresh pages), then the final
//! protection and madvise flags are set.
//!
//! SysV shared memory is attached again with a remote `shmat` at its address (the segment
//! itself is recreated before, see [`crate::ipc`]); its pages are saved and restored like
//! those of shared anonymous memory, from every process of the image that has them mapped.
//!
//! Mappings of files deleted while mapped are [`VmaBacking::Deleted`]: the file's contents
//! are saved once per image ([`crate::fd::FileTable::deleted_mappings`]) and it is recreated,
//! unlinked, before the husks; each mapping maps the recreated file, so a shared mapping and a
//! descriptor of it share pages again.
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use crest_image::{madv_flags, vma_flags, PageRun, SpecialArea, Vma, VmaBacking};
use crest_proc::{pagemap, MapEntry, Pagemap};
use crest_ptrace::Remote;

use crate::progress::Progress;
use crate::{vdso, KindError};

/// Turns one `smaps` entry into a [`Vma`] without page data.
pub fn classify(pid: i32, m: &MapEntry) -> Result<Vma, KindError> {
    let range = format!("{:#x}-{:#x}", m.start, m.end);
    if m.has("um") {
        // Pages not present may be another process's to give: they are not in this one.
        return Err(KindError::Unsupported(format!(
            "pid {pid}: mapping {range} is registered with a userfaultfd in missing mode (a `cr_restart --lazy` still filling it in, or the program's own), so its missing pages are not in the process; checkpoint it once cr_restart has filled it in"
        )));
    }
    let mut flags = 0;
    if m.shared {
        flags |= vma_flags::SHARED;
    }
    if m.has("gd") {
        flags |= vma_flags::GROWSDOWN;
    }
    if m.has("lo") {
        flags |= vma_flags::LOCKED;
    }
    if m.has("dp") {
        flags |= vma_flags::DROPPABLE;
    }
    if m.has("nr") {
        flags |= vma_flags::NORESERVE;
    }
    let mut madv = 0;
    for (f, bit) in [
        ("dc", madv_flags::DONTFORK),
        ("wf", madv_flags::WIPEONFORK),
        ("dd", madv_flags::DONTDUMP),
        ("hg", madv_flags::HUGEPAGE),
        ("nh", madv_flags::NOHUGEPAGE),
        ("mg", madv_flags::MERGEABLE),
        ("rr", madv_flags::RANDOM),
        ("sr", madv_flags::SEQUENTIAL),
    ] {
        if m.has(f) {
            madv |= bit;
        }
    }
    let name = m.name.as_str();
    if name == "/[aio] (deleted)" {
        return crate::aio::classify(pid, m, flags, madv);
    }
    let backing = if maps_an_image(pid, m) {
        // Memory a restart mapped from its image: saved whole, as anonymous memory, so that the
        // new image does not depend on the old one.
        flags |= vma_flags::SAVED;
        VmaBacking::Anon
    } else if let Some(a) = vdso::special(name) {
        VmaBacking::Special(a)
    } else if name.is_empty() || name == "[heap]" || name == "[stack]" || name.starts_with("[anon:") {
        if name == "[heap]" {
            flags |= vma_flags::HEAP;
        }
        if name == "[stack]" {
            flags |= vma_flags::STACK;
        }
        if m.shared {
            VmaBacking::SharedAnon { id: (m.dev << 32) ^ m.ino, size: m.offset + (m.end - m.start) }
        } else {
            VmaBacking::Anon
        }
    } else if let Some(path) = name.strip_suffix(" (deleted)") {
        if m.shared && (path == "/dev/zero" || path.starts_with("/memfd:")) {
            VmaBacking::SharedAnon { id: (m.dev << 32) ^ m.ino, size: m.offset + (m.end - m.start) }
        } else if (path == "/dev/zero" || path.starts_with("/memfd:")) && crate::fd::on_internal_mount(m.dev) {
            // A private mapping of a shared memory object: the object's pages show through.
            VmaBacking::SharedPrivate { id: (m.dev << 32) ^ m.ino, size: m.offset + (m.end - m.start) }
        } else if path.starts_with("/SYSV") && m.shared {
            // The inode number of a SysV segment's mapping is its shmid.
            VmaBacking::SysvShm { id: m.ino as i32, offset: m.offset }
        } else if path.starts_with('/') {
            // The file is read once per image, with the descriptors.
            VmaBacking::Deleted { id: (m.dev << 32) ^ m.ino, path: path.to_string(), offset: m.offset, file: None }
        } else {
            return Err(KindError::Unsupported(format!("pid {pid}: mapping {range} is of the deleted file {path}, which is not supported")));
        }
    } else if name.starts_with('/') {
        let md = file_stat(name, m.ino).map_err(|e| KindError::io(format!("pid {pid}: mapping {range} of {name}"), e))?;
        if md.ino != m.ino {
            return Err(KindError::Mismatch(format!("pid {pid}: mapping {range}: {name} was replaced since it was mapped (inode {} now, {} mapped)", md.ino, m.ino)));
        }
        VmaBacking::File { path: name.to_string(), offset: m.offset, dev: md.dev, ino: m.ino, size: md.size, mtime_ns: md.mtime_ns }
    } else if name.starts_with("socket:[") {
        // The rings of a packet socket (no page saved: see `crate::fd::packet`).
        crate::fd::packet::ring_mapping(pid, m)?
    } else {
        return Err(KindError::Unsupported(format!("pid {pid}: mapping {range} ({name}) is of a kind crest cannot checkpoint")));
    };
    Ok(Vma { start: m.start, end: m.end, prot: m.prot, flags, madv, backing, pages: Vec::new(), need: 0, zero: 0, inherited: Vec::new(), guards: Vec::new() })
}

/// Whether the mapping `m` of `pid` is a private mapping of a crest image (its pages mapped
/// there by a restart, see `docs/architecture.md`): the file, through `/proc/PID/map_files`
/// (where the image may have been deleted or replaced since) or else by its path, begins with
/// the image magic. Page data begins at 4096 in an image, so a mapping from offset 0 is not one.
///
/// The answer is kept for each file (device and inode), asked about once for the libraries that
/// every process of a tree maps, until [`forget_images`].
pub fn maps_an_image(pid: i32, m: &MapEntry) -> bool {
    use std::os::unix::fs::FileExt;
    if m.shared || m.offset < crest_image::HEADER_LEN || !m.name.starts_with('/') {
        return false;
    }
    let mut known = IMAGES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&is) = known.as_ref().and_then(|k| k.get(&(m.dev, m.ino))) {
        return is;
    }
    let file = std::fs::File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)).or_else(|e| match m.name.strip_suffix(" (deleted)") {
        Some(_) => Err(e),
        None => std::fs::File::open(&m.name).and_then(|f| if f.metadata()?.ino() == m.ino { Ok(f) } else { Err(std::io::ErrorKind::NotFound.into()) }),
    });
    let Ok(file) = file else { return false };
    let mut magic = [0u8; 8];
    let is = file.read_exact_at(&mut magic, 0).is_ok() && magic == crest_image::MAGIC;
    known.get_or_insert_with(std::collections::HashMap::new).insert((m.dev, m.ino), is);
    is
}

/// What [`maps_an_image`] found of each file, by device and inode.
static IMAGES: std::sync::Mutex<Option<std::collections::HashMap<(u64, u64), bool>>> = std::sync::Mutex::new(None);

/// Forgets what [`maps_an_image`] found (before a new checkpoint: an inode may be reused).
pub fn forget_images() {
    *IMAGES.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// What [`classify`] records of a mapped file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStat {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
}

/// The files mapped by the processes of a checkpoint, by path, as [`file_stat`] found them.
static FILE_STATS: std::sync::Mutex<Option<std::collections::HashMap<String, FileStat>>> = std::sync::Mutex::new(None);

/// Forgets the mapped files [`file_stat`] looked at: called once every process of a checkpoint
/// is frozen, so that what the image records of a file is what it was at that checkpoint.
pub fn forget_file_stats() {
    *FILE_STATS.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// The attributes of the file at `path`, which a mapping of inode `ino` shows: looked up once
/// per path since [`forget_file_stats`] for the program and libraries every process of a tree
/// maps (several mappings each), again when the inode known is not `ino`.
fn file_stat(path: &str, ino: u64) -> std::io::Result<FileStat> {
    let mut known = FILE_STATS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(st) = known.as_ref().and_then(|k| k.get(path)).filter(|st| st.ino == ino) {
        return Ok(*st);
    }
    let md = std::fs::metadata(path)?;
    let st = FileStat { dev: md.dev(), ino: md.ino(), size: md.size(), mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec() };
    known.get_or_insert_with(std::collections::HashMap::new).insert(path.to_string(), st);
    Ok(st)
}

/// Which file mappings have their whole contents saved (BLCR's `--save-*` options).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SavePolicy {
    /// The executable's mappings (`--save-exe`).
    pub exe: bool,
    /// Every private file mapping: the executable and the libraries (`--save-private`).
    pub private: bool,
    /// Shared file mappings (`--save-shared`).
    pub shared: bool,
}

impl SavePolicy {
    /// Marks the mappings of `vmas` whose contents are to be saved whole ([`vma_flags::SAVED`]).
    pub fn mark(&self, vmas: &mut [Vma], exe: &str) {
        for v in vmas {
            let VmaBacking::File { path, .. } = &v.backing else { continue };
            let shared = v.flags & vma_flags::SHARED != 0;
            if (self.exe && path == exe) || (self.private && !shared) || (self.shared && shared) {
                v.flags |= vma_flags::SAVED;
            }
        }
    }
}

/// [`pages_to_save`] with `PAGEMAP_SCAN` (Linux 6.7): it walks the page tables without copying
/// out an entry per page, and it tells the shared zero page apart (mapped by a read of memory
/// never written, a guard page under a thread stack, say: present, but nothing to save), which
/// `pagemap` shows only to `CAP_SYS_ADMIN`. `None` where the kernel has no `PAGEMAP_SCAN`.
fn scan_to_save(vma: &Vma, pm: &Pagemap) -> Option<Vec<(u64, u64)>> {
    use crest_ptrace::wp::{category, scan};
    let private_file = matches!(vma.backing, VmaBacking::File { .. } | VmaBacking::Deleted { .. } | VmaBacking::SharedPrivate { .. });
    // Whether a page is the file's costs a look at its `struct page`: asked of file mappings only.
    let ret = category::PRESENT | category::SWAPPED | category::PFNZERO | if private_file { category::FILE } else { 0 };
    // A guard region's entry is a marker in the page table, reported as swapped: left out (a
    // kernel older than the category has no guard regions to report).
    let regions = scan(pm.file(), vma.start, vma.end, 0, category::PRESENT | category::SWAPPED, ret | category::GUARD)
        .or_else(|_| scan(pm.file(), vma.start, vma.end, 0, category::PRESENT | category::SWAPPED, ret))
        .ok()?;
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in regions {
        let c = r.categories;
        let swapped = c & category::SWAPPED != 0;
        if c & category::GUARD != 0 || (!swapped && (c & category::PFNZERO != 0 || (private_file && c & category::FILE != 0))) {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.0 + last.1 == r.start => last.1 += r.end - r.start,
            _ => out.push((r.start, r.end - r.start)),
        }
    }
    Some(out)
}

/// The address ranges of `vma` whose pages must be saved, from `pagemap`. For a mapping marked
/// [`vma_flags::SAVED`]: every page that the file backs (not those past its end).
pub fn pages_to_save(vma: &Vma, pm: &Pagemap, scratch: &mut Vec<u64>) -> Result<Vec<(u64, u64)>, KindError> {
    if let VmaBacking::SharedAnon { size, .. } = &vma.backing {
        // The object holds pages that no process maps any more (written by a process that has
        // exited, or swapped out), which this process's page tables do not show: ask the
        // object. Without access to it, every page of the mapping is read (zeros are skipped;
        // the kernel allocates the object's missing pages as they are read).
        return Ok(shared_object_pages(pm.pid(), vma, size - (vma.end - vma.start)).unwrap_or_else(|| vec![(vma.start, vma.end - vma.start)]));
    }
    if matches!(vma.backing, VmaBacking::Anon) && vma.flags & (vma_flags::SAVED | vma_flags::AIO) != 0 {
        // Mapped from an image by a restart ([`maps_an_image`]), or an AIO ring
        // ([`crate::aio`]): every page is data, whether the process read it in yet or not (the
        // dump leaves out those that are all zeros).
        return Ok(vec![(vma.start, vma.end - vma.start)]);
    }
    if let (VmaBacking::File { offset, size, .. }, true) = (&vma.backing, vma.flags & vma_flags::SAVED != 0) {
        let backed = size.saturating_sub(*offset).next_multiple_of(4096).min(vma.end - vma.start);
        return Ok(if backed > 0 { vec![(vma.start, backed)] } else { Vec::new() });
    }
    let want: fn(u64) -> bool = match (&vma.backing, vma.flags & vma_flags::SHARED != 0) {
        (VmaBacking::Special(_) | VmaBacking::PacketRing { .. }, _) | (VmaBacking::File { .. } | VmaBacking::Deleted { .. }, true) => return Ok(Vec::new()),
        (VmaBacking::File { .. } | VmaBacking::Deleted { .. } | VmaBacking::SharedPrivate { .. }, false) => {
            |e| e & pagemap::GUARD == 0 && ((e & pagemap::PRESENT != 0 && e & pagemap::FILE == 0) || e & pagemap::SWAPPED != 0)
        }
        _ => |e| e & pagemap::GUARD == 0 && e & (pagemap::PRESENT | pagemap::SWAPPED) != 0,
    };
    if let Some(r) = scan_to_save(vma, pm) {
        return Ok(r);
    }
    let mut out: Vec<(u64, u64)> = Vec::new();
    // Read pagemap in pieces to bound memory for huge sparse mappings.
    const STEP: u64 = 1 << 30;
    let mut at = vma.start;
    while at < vma.end {
        let end = (at + STEP).min(vma.end);
        pm.entries(at, end, scratch)?;
        for (i, &e) in scratch.iter().enumerate() {
            if want(e) {
                let a = at + i as u64 * 4096;
                match out.last_mut() {
                    Some(last) if last.0 + last.1 == a => last.1 += 4096,
                    _ => out.push((a, 4096)),
                }
            }
        }
        at = end;
    }
    Ok(out)
}

/// Finds the guard regions (`MADV_GUARD_INSTALL`) of the mappings `vmas` of the process `pm`
/// reads and records them in [`Vma::guards`]. Guard regions exist in private mappings only;
/// a kernel that cannot report them (older than Linux 6.14) has none to report. A locked
/// mapping with guard regions is refused.
pub fn find_guards(vmas: &mut [Vma], pm: &Pagemap, scratch: &mut Vec<u64>) -> Result<(), KindError> {
    use crest_ptrace::wp::{category, scan};
    let private = |v: &Vma| v.flags & vma_flags::SHARED == 0 && !matches!(v.backing, VmaBacking::Special(_) | VmaBacking::SysvShm { .. });
    // One scan for each run of private mappings, next to each other in address order (a
    // shared or special mapping between them ends a run): the regions found are cut at the
    // bounds of the mappings. Mappings that a scan could not answer for are asked one by one.
    let mut asked = vec![false; vmas.len()];
    let mut i = 0;
    while i < vmas.len() {
        if !private(&vmas[i]) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < vmas.len() && private(&vmas[j]) && vmas[j].start >= vmas[j - 1].end {
            j += 1;
        }
        if j - i > 1 {
            if let Ok(regions) = scan(pm.file(), vmas[i].start, vmas[j - 1].end, 0, category::GUARD, category::GUARD) {
                for (k, v) in vmas[i..j].iter_mut().enumerate() {
                    v.guards = regions
                        .iter()
                        .filter(|r| r.categories & category::GUARD != 0 && r.start < v.end && r.end > v.start)
                        .map(|r| (r.start.max(v.start), r.end.min(v.end) - r.start.max(v.start)))
                        .collect();
                    asked[i + k] = true;
                }
            }
        }
        i = j;
    }
    for (v, _) in vmas.iter_mut().zip(&asked).filter(|(v, asked)| private(v) && !**asked) {
        v.guards = match scan(pm.file(), v.start, v.end, 0, category::GUARD, category::GUARD) {
            Ok(regions) => regions.iter().filter(|r| r.categories & category::GUARD != 0).map(|r| (r.start, r.end - r.start)).collect(),
            Err(_) => {
                // No `PAGEMAP_SCAN`, or one without the category: ask `pagemap` itself.
                let mut out: Vec<(u64, u64)> = Vec::new();
                const STEP: u64 = 1 << 30;
                let mut at = v.start;
                while at < v.end {
                    let end = (at + STEP).min(v.end);
                    pm.entries(at, end, scratch)?;
                    for (i, _) in scratch.iter().enumerate().filter(|(_, &e)| e & pagemap::GUARD != 0) {
                        let a = at + i as u64 * 4096;
                        match out.last_mut() {
                            Some(last) if last.0 + last.1 == a => last.1 += 4096,
                            _ => out.push((a, 4096)),
                        }
                    }
                    at = end;
                }
                out
            }
        };
    }
    for v in vmas.iter() {
        if v.flags & vma_flags::LOCKED != 0 && !v.guards.is_empty() {
            // Only memory locked on fault can hold guards; `mlock` at restart would fail on them.
            return Err(KindError::Unsupported(format!(
                "pid {}: mapping {:#x}-{:#x} is locked in memory (mlock2 MLOCK_ONFAULT) and has guard regions (MADV_GUARD_INSTALL): crest restores locked memory with mlock, which fails on guards",
                pm.pid(),
                v.start,
                v.end
            )));
        }
    }
    Ok(())
}

/// Page frame number bits of a `pagemap` entry of a present page (read as 0 without
/// `CAP_SYS_ADMIN`).
const PFN_MASK: u64 = (1 << 55) - 1;

/// The ranges of `vma` (a mapping of the process `pm` reads, which [`Vma::shares_with`]
/// `parent`, a mapping of its parent, which `parent_pm` reads) whose pages the process still
/// shares copy-on-write with its parent: among the pages it would save (`to_save`), those
/// present in both at the same address with the same page frame, as `pagemap` shows it to
/// `CAP_SYS_ADMIN` (to others it shows no frame numbers: nothing is found shared then, and
/// every page is saved). Both processes must be frozen.
pub fn shared_with_parent(vma: &Vma, parent: &Vma, to_save: &[(u64, u64)], pm: &Pagemap, parent_pm: &Pagemap) -> Result<Vec<(u64, u64)>, KindError> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    if !vma.shares_with(parent) {
        return Ok(out);
    }
    let (mut mine, mut theirs) = (Vec::new(), Vec::new());
    const STEP: u64 = 1 << 30;
    for &(start, len) in to_save {
        let mut at = start;
        while at < start + len {
            let end = (at + STEP).min(start + len);
            pm.entries(at, end, &mut mine)?;
            parent_pm.entries(at, end, &mut theirs)?;
            if mine.iter().any(|&e| e & pagemap::PRESENT != 0 && e & PFN_MASK == 0) {
                // Page frames hidden (not CAP_SYS_ADMIN): nothing can be found shared.
                return Ok(Vec::new());
            }
            for (i, (&a, &b)) in mine.iter().zip(&theirs).enumerate() {
                let present = |e: u64| e & pagemap::PRESENT != 0 && e & pagemap::SWAPPED == 0 && e & PFN_MASK != 0;
                if present(a) && present(b) && a & PFN_MASK == b & PFN_MASK {
                    let page = at + i as u64 * 4096;
                    match out.last_mut() {
                        Some(last) if last.0 + last.1 == page => last.1 += 4096,
                        _ => out.push((page, 4096)),
                    }
                }
            }
            at = end;
        }
    }
    Ok(out)
}

/// `ranges` (sorted `(address, length)`) less `cut` (sorted, apart).
pub fn subtract_ranges(ranges: &[(u64, u64)], cut: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(a, len) in ranges {
        let (mut s, e) = (a, a + len);
        for &(cs, cl) in cut.iter().filter(|&&(cs, cl)| cs < e && cs + cl > a) {
            if cs > s {
                out.push((s, cs - s));
            }
            s = s.max(cs + cl);
        }
        if s < e {
            out.push((s, e - s));
        }
    }
    out
}

/// The address ranges of the shared anonymous mapping `vma` of `pid` (mapping its object from
/// `offset`) whose pages exist in the object, found with `SEEK_DATA` through
/// `/proc/PID/map_files` (which needs `CAP_SYS_ADMIN` or `CAP_CHECKPOINT_RESTORE`): `None`
/// when the object cannot be opened.
fn shared_object_pages(pid: i32, vma: &Vma, offset: u64) -> Option<Vec<(u64, u64)>> {
    let file = std::fs::File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", vma.start, vma.end)).ok()?;
    let end = offset + (vma.end - vma.start);
    let mut out = Vec::new();
    let mut at = offset;
    while at < end {
        let Some(data) = crest_ptrace::sys::seek_data(&file, at, true).ok()? else { break };
        if data >= end {
            break;
        }
        let hole = crest_ptrace::sys::seek_data(&file, data, false).ok()?.unwrap_or(end).min(end);
        let (from, to) = (data / 4096 * 4096, hole.next_multiple_of(4096).min(end));
        out.push((vma.start + (from - offset), to - from));
        at = to.max(at + 4096);
    }
    Some(out)
}

/// Descriptors inside the husk that back mappings: one per file path (opened read-write when
/// a shared writable mapping needs it), one per shared anonymous object, and the image.
#[derive(Debug, Default, Clone)]
pub struct MapFds {
    /// Path to descriptor.
    pub files: HashMap<String, i32>,
    /// Shared anonymous object id to memfd descriptor.
    pub shared: HashMap<u64, i32>,
    /// Deleted file id to the descriptor of its recreated file.
    pub deleted: HashMap<u64, i32>,
    /// The image file.
    pub image: i32,
    /// The images an incremental image's runs lie in ([`PageRun::image`] `k` in
    /// `parents[k - 1]`): its parent, that one's parent, and so on.
    pub parents: Vec<i32>,
    /// Whether stored runs of private anonymous memory are mapped from the image rather than
    /// read ([`mapped_from_image`]): the image file may be mapped (the caller checked it).
    pub map_image: bool,
    /// Whether the pages of the mappings that [`crate::lazy::eligible`] picks are left out,
    /// to be given on demand ([`crate::lazy`]): those mappings are made empty.
    pub lazy: bool,
    /// Start addresses of the private mappings already in place, with their pages, when
    /// [`restore`] runs (built before the husk was forked and moved there, so as to share pages
    /// with a parent or children): only their protection and advice are set.
    pub in_place: Vec<u64>,
}

impl MapFds {
    /// The descriptor of the image that holds run `r`.
    fn image_of(&self, r: &PageRun) -> i32 {
        match r.image {
            0 => self.image,
            k => self.parents.get(k as usize - 1).copied().unwrap_or(-1),
        }
    }
}

/// The file of the image that holds run `r`, among `images` (the image, then its parents).
fn file_of<'a>(images: &'a [std::fs::File], pid: i32, r: &PageRun) -> Result<&'a std::fs::File, KindError> {
    images.get(r.image as usize).ok_or_else(|| KindError::Mismatch(format!("pid {pid}: page run {:#x}+{:#x} lies in image {} of a chain of {}", r.vaddr, r.len, r.image, images.len())))
}

/// Files a process's mappings need open: (path, needs write), and shared objects: (id, size).
#[allow(clippy::type_complexity)]
pub fn needed_files(vmas: &[Vma]) -> (Vec<(String, bool)>, Vec<(u64, u64)>) {
    let mut files: Vec<(String, bool)> = Vec::new();
    let mut shared: Vec<(u64, u64)> = Vec::new();
    for v in vmas {
        match &v.backing {
            VmaBacking::File { path, .. } => {
                let w = v.flags & vma_flags::SHARED != 0 && v.prot & 2 != 0;
                match files.iter_mut().find(|f| &f.0 == path) {
                    Some(f) => f.1 |= w,
                    None => files.push((path.clone(), w)),
                }
            }
            VmaBacking::SharedAnon { id, size } | VmaBacking::SharedPrivate { id, size } if !shared.iter().any(|s| s.0 == *id) => shared.push((*id, *size)),
            _ => {}
        }
    }
    (files, shared)
}

/// Refuses a private mapping of a shared memory object ([`VmaBacking::SharedPrivate`]) of
/// process `pid` that none of its descriptors `fds` restores: the object's pages that show
/// through it would have nothing to come from.
pub fn refuse_unbacked_private(pid: i32, vmas: &[Vma], fds: &[crest_image::FdRecord]) -> Result<(), KindError> {
    for v in vmas {
        let VmaBacking::SharedPrivate { id, .. } = &v.backing else { continue };
        if !fds.iter().any(|f| matches!(&f.kind, crest_image::FdKind::Memfd { id: m, .. } if m == id)) {
            return Err(KindError::Unsupported(format!(
                "pid {pid}: mapping {:#x}-{:#x} is a private mapping of a shared memory object (memfd or shared anonymous memory) that no descriptor of the process holds; such mappings are not supported",
                v.start, v.end
            )));
        }
    }
    Ok(())
}

/// The deleted files a process's mappings need ([`VmaBacking::Deleted`] ids), once each.
pub fn needed_deleted(vmas: &[Vma]) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::new();
    for v in vmas {
        if let VmaBacking::Deleted { id, .. } = &v.backing {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
    }
    ids
}

/// What [`restore`] did with the page data.
#[derive(Debug, Default, Clone, Copy)]
pub struct Filled {
    /// Bytes of page data restored.
    pub bytes: u64,
    /// Of those, the bytes mapped from the image rather than copied.
    pub mapped: u64,
}

/// Recreates every mapping of `vmas` (special areas excepted) in the husk and fills it.
/// `images` are the image file and, for an incremental image, its parents (crest's own
/// descriptors), for compressed runs; `progress` counts the bytes filled.
pub fn restore(remote: &mut Remote<'_>, pid: i32, vmas: &[Vma], fds: &MapFds, images: &[std::fs::File], progress: &Progress) -> Result<Filled, KindError> {
    progress.add_total(vmas.iter().flat_map(|v| &v.pages).map(|r| r.len).sum());
    let mut bytes = 0;
    let mut mapped = 0;
    // SysV segments attached so far: (id, end of the attachment).
    let mut attached: Vec<(i32, u64, u64)> = Vec::new();
    for v in vmas {
        if fds.in_place.contains(&v.start) {
            let what = format!("pid {pid}: mapping {:#x}-{:#x} ({})", v.start, v.end, describe(&v.backing));
            // Queued, with the rest: its pages are in place already.
            if v.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32 {
                remote.queue(format!("{what}: setting protection"), libc::SYS_mprotect, &[v.start, v.end - v.start, u64::from(v.prot)]);
            }
            advise(remote, v)?;
            let n: u64 = v.pages.iter().map(|r| r.len).sum();
            progress.add_done(n);
            bytes += n;
            continue;
        }
        let (fd, off, mut flags) = match &v.backing {
            VmaBacking::Special(_) => continue,
            VmaBacking::SysvShm { id, offset } => {
                bytes += attach_sysv(remote, pid, v, *id, *offset, vmas, &mut attached, fds, images, progress)?;
                continue;
            }
            VmaBacking::Anon if v.flags & vma_flags::DROPPABLE != 0 => (-1i64, 0u64, MAP_DROPPABLE | libc::MAP_ANONYMOUS),
            VmaBacking::Anon => (-1i64, 0u64, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS),
            VmaBacking::SharedAnon { id, .. } => (i64::from(fds.shared[id]), 0, libc::MAP_SHARED),
            VmaBacking::SharedPrivate { id, .. } => (i64::from(fds.shared[id]), 0, libc::MAP_PRIVATE),
            VmaBacking::File { path, offset, .. } => (i64::from(fds.files[path]), *offset, if v.flags & vma_flags::SHARED != 0 { libc::MAP_SHARED } else { libc::MAP_PRIVATE }),
            VmaBacking::Deleted { id, offset, .. } => (i64::from(fds.deleted[id]), *offset, if v.flags & vma_flags::SHARED != 0 { libc::MAP_SHARED } else { libc::MAP_PRIVATE }),
            // The socket is in place (descriptors are restored before memory), its version and
            // rings set again: mapping it maps its new rings.
            VmaBacking::PacketRing { fd, .. } => (i64::from(*fd), 0, if v.flags & vma_flags::SHARED != 0 { libc::MAP_SHARED } else { libc::MAP_PRIVATE }),
        };
        flags |= libc::MAP_FIXED;
        if v.flags & vma_flags::NORESERVE != 0 {
            flags |= libc::MAP_NORESERVE;
        }
        if v.flags & vma_flags::GROWSDOWN != 0 {
            flags |= libc::MAP_GROWSDOWN;
        }
        let off = match &v.backing {
            // A shared anonymous mapping may map the object at an offset.
            VmaBacking::SharedAnon { size, .. } | VmaBacking::SharedPrivate { size, .. } => size - (v.end - v.start),
            _ => off,
        };
        // Droppable memory comes back empty, as if the kernel had dropped it.
        let droppable = v.flags & vma_flags::DROPPABLE != 0;
        // Given on demand: made empty, with its own protection (a userfaultfd copy does not
        // need write permission).
        let lazy = fds.lazy && crate::lazy::eligible(v);
        let prot_fill = if v.pages.is_empty() || droppable || lazy { v.prot } else { v.prot | libc::PROT_WRITE as u32 };
        let what = format!("pid {pid}: mapping {:#x}-{:#x} ({})", v.start, v.end, describe(&v.backing));
        // Queued: run with the rest in one go where the caller gave a batch area.
        remote.queue(what.clone(), libc::SYS_mmap, &[v.start, v.end - v.start, u64::from(prot_fill), flags as u64, fd as u64, off]);
        if lazy {
            // Counted as restored: the process has them from the moment it runs.
            progress.add_done(v.pages.iter().map(|r| r.len).sum());
        } else if !droppable {
            let from_image = (fds.map_image && mapped_from_image(v)).then_some(prot_fill);
            let (b, m) = fill(remote, pid, v, fds, images, progress, from_image)?;
            bytes += b;
            mapped += m;
        }
        if prot_fill != v.prot {
            remote.queue(format!("{what}: setting protection"), libc::SYS_mprotect, &[v.start, v.end - v.start, u64::from(v.prot)]);
        }
        advise(remote, v)?;
    }
    remote.flush()?;
    Ok(Filled { bytes, mapped })
}

/// Whether the stored runs of `v` may be mapped from the image (MAP_PRIVATE of the image file
/// over the anonymous mapping): plain private anonymous memory only. Not the heap or a stack
/// (`brk` and growing down expect anonymous memory at their edges), not memory that is locked,
/// droppable, or wiped in a child (`MADV_WIPEONFORK` applies to anonymous memory only).
pub fn mapped_from_image(v: &Vma) -> bool {
    let not = vma_flags::SHARED | vma_flags::GROWSDOWN | vma_flags::HEAP | vma_flags::STACK | vma_flags::LOCKED | vma_flags::DROPPABLE;
    matches!(v.backing, VmaBacking::Anon) && v.flags & not == 0 && v.madv & madv_flags::WIPEONFORK == 0
}

/// Stored runs shorter than this are copied even where they could be mapped: each mapped run
/// is a mapping of its own in the kernel (unless it continues the one before, in memory and
/// in the file), and a process may have only so many (`vm.max_map_count`).
const MAP_FROM: u64 = 256 << 10;
/// At most this many runs of one mapping are mapped from the image; the rest are copied.
const MAX_MAPPED_RUNS: usize = 1024;

/// `MADV_GUARD_INSTALL` (Linux 6.13): pages that fault when touched.
const MADV_GUARD_INSTALL: u64 = 102;

/// Sets the madvise() states of `v`, and installs its guard regions.
fn advise(remote: &mut Remote<'_>, v: &Vma) -> Result<(), KindError> {
    for (bit, advice) in [
        (madv_flags::DONTFORK, libc::MADV_DONTFORK),
        (madv_flags::WIPEONFORK, libc::MADV_WIPEONFORK),
        (madv_flags::DONTDUMP, libc::MADV_DONTDUMP),
        (madv_flags::HUGEPAGE, libc::MADV_HUGEPAGE),
        (madv_flags::NOHUGEPAGE, libc::MADV_NOHUGEPAGE),
        (madv_flags::MERGEABLE, libc::MADV_MERGEABLE),
        (madv_flags::RANDOM, libc::MADV_RANDOM),
        (madv_flags::SEQUENTIAL, libc::MADV_SEQUENTIAL),
    ] {
        if v.madv & bit != 0 {
            // Advice the kernel does not support (e.g. no KSM) is not worth failing for.
            remote.queue_may_fail(libc::SYS_madvise, &[v.start, v.end - v.start, advice as u64]);
        }
    }
    if v.flags & vma_flags::LOCKED != 0 {
        remote.queue(format!("locking {:#x}-{:#x} in memory (mlock)", v.start, v.end), libc::SYS_mlock, &[v.start, v.end - v.start]);
    }
    // A locked mapping with guard regions is refused at checkpoint ([`find_guards`]).
    for &(a, len) in &v.guards {
        remote.queue(format!("installing the guard region {a:#x}+{len:#x} of {:#x}-{:#x} (madvise MADV_GUARD_INSTALL, Linux 6.13)", v.start, v.end), libc::SYS_madvise, &[a, len, MADV_GUARD_INSTALL]);
    }
    Ok(())
}

/// One mapping of a SysV segment. The first mapping of an attachment (offset 0) attaches the
/// whole segment with a remote `shmat` at its address; the mappings that follow it (split by
/// `mprotect`) lie inside that attachment. Parts of the attachment the process had unmapped
/// are unmapped again.
#[allow(clippy::too_many_arguments)]
fn attach_sysv(
    remote: &mut Remote<'_>,
    pid: i32,
    v: &Vma,
    id: i32,
    offset: u64,
    vmas: &[Vma],
    attached: &mut Vec<(i32, u64, u64)>,
    fds: &MapFds,
    images: &[std::fs::File],
    progress: &Progress,
) -> Result<u64, KindError> {
    let what = format!("pid {pid}: SysV shared memory {id} at {:#x}-{:#x}", v.start, v.end);
    let inside = attached.iter().any(|&(i, s, e)| i == id && v.start >= s && v.end <= e && v.start - s == offset);
    if !inside {
        if offset != 0 {
            return Err(KindError::Unsupported(format!("{what}: only part of the segment (from offset {offset:#x}) is attached, which cannot be restored")));
        }
        // Attached writable while filled; the protection is set below.
        let at = remote.call(&format!("{what}: attaching it (shmat)"), libc::SYS_shmat, &[id as u64, v.start, 0])?;
        if at != v.start {
            return Err(KindError::Mismatch(format!("{what}: attached at {at:#x} instead")));
        }
        // A fresh attachment is one mapping: its end is the segment's size, rounded up.
        let maps = crest_proc::parse_smaps(&crest_proc::read(pid, "maps")?)?;
        let end = maps.iter().find(|m| m.start == v.start).map_or(v.end, |m| m.end);
        attached.push((id, v.start, end));
        // Unmap what the process had unmapped of it: the parts no saved mapping covers.
        let mut at = v.start;
        for w in vmas.iter().filter(|w| w.start >= v.start && w.start < end) {
            let same = matches!(w.backing, VmaBacking::SysvShm { id: i, offset: o } if i == id && o == w.start - v.start);
            if !same {
                break;
            }
            at = w.end;
        }
        if at < end {
            remote.call(&format!("{what}: unmapping the part not mapped at the checkpoint"), libc::SYS_munmap, &[at, end - at])?;
        }
    }
    let (bytes, _) = fill(remote, pid, v, fds, images, progress, None)?;
    if v.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32 {
        remote.call(&format!("{what}: setting protection"), libc::SYS_mprotect, &[v.start, v.end - v.start, u64::from(v.prot)])?;
    }
    advise(remote, v)?;
    Ok(bytes)
}

const MADV_POPULATE_WRITE: u64 = 23;
/// `MAP_DROPPABLE` (Linux 6.11).
const MAP_DROPPABLE: i32 = 0x08;

/// Brings the saved pages of `v` into place: with `map` (the protection `v` is mapped with),
/// stored runs of at least [`MAP_FROM`] are mapped privately from the image, with the
/// protection `map`, over the anonymous mapping; the husk `pread`s the other stored runs from
/// the image, one call per run of pages contiguous both in memory and in the file; meanwhile
/// compressed runs are decompressed here and written in with `process_vm_writev`, on all cores.
/// Each run is read from the image of the chain that holds it (`fds` in the husk, `images`
/// here). Returns the bytes restored and, of those, the bytes mapped.
fn fill(remote: &mut Remote<'_>, pid: i32, v: &Vma, fds: &MapFds, images: &[std::fs::File], progress: &Progress, map: Option<u32>) -> Result<(u64, u64), KindError> {
    let mut merged: Vec<PageRun> = Vec::new();
    let mut packed: Vec<PageRun> = Vec::new();
    for r in &v.pages {
        if r.zlen != 0 {
            packed.push(*r);
            continue;
        }
        // Runs to be mapped are merged without limit: one mapping each.
        let cap = if map.is_some() { u64::MAX } else { 1 << 30 };
        match merged.last_mut() {
            Some(m) if m.vaddr + m.len == r.vaddr && m.offset + m.len == r.offset && m.image == r.image && m.len < cap => m.len += r.len,
            _ => merged.push(*r),
        }
    }
    let mut mapped = 0;
    if let Some(prot) = map {
        let mut copied = Vec::new();
        let mut n = 0;
        for r in merged {
            if r.len < MAP_FROM || n == MAX_MAPPED_RUNS {
                copied.push(r);
                continue;
            }
            let flags = libc::MAP_PRIVATE | libc::MAP_FIXED | if v.flags & vma_flags::NORESERVE != 0 { libc::MAP_NORESERVE } else { 0 };
            remote.queue(
                format!("pid {pid}: mapping pages {:#x}+{:#x} from the image", r.vaddr, r.len),
                libc::SYS_mmap,
                &[r.vaddr, r.len, u64::from(prot), flags as u64, fds.image_of(&r) as u64, r.offset],
            );
            progress.add_done(r.len);
            mapped += r.len;
            n += 1;
        }
        // Copied runs longer than a pread can take at once are cut again.
        merged = copied.into_iter().flat_map(|r| (0..r.len).step_by(1 << 30).map(move |o| PageRun { vaddr: r.vaddr + o, offset: r.offset + o, len: (r.len - o).min(1 << 30), ..r })).collect();
    }
    // The compressed runs are decompressed on other threads while the husk reads the stored
    // ones: the two go on at once rather than one after the other. Without compressed runs, a
    // thread here writes in a share of the stored ones (the tail, in pieces), so that the
    // kernel's work of allocating and zeroing the fresh pages, the bulk of a restore, is done
    // on two cores.
    let (own, helped) = if packed.is_empty() { split_stored(&merged, HELPER_SHARE) } else { (merged, Vec::new()) };
    // Allocate the husk's pages in one pass, without a page fault for each, before filling
    // them. Only the saved ranges: memory the process never touched stays unallocated. Kernels
    // without MADV_POPULATE_WRITE (before 5.14) fault the pages in during the read instead.
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let mut theirs: Vec<&PageRun> = own.iter().chain(&packed).collect();
    theirs.sort_by_key(|r| r.vaddr);
    for r in theirs {
        match spans.last_mut() {
            Some(s) if s.0 + s.1 == r.vaddr && s.1 < (1 << 30) => s.1 += r.len,
            _ => spans.push((r.vaddr, r.len)),
        }
    }
    for (a, l) in spans {
        remote.queue_may_fail(libc::SYS_madvise, &[a, l, MADV_POPULATE_WRITE]);
    }
    if packed.is_empty() && helped.is_empty() {
        // Most mappings: no thread is worth starting. Their reads stay queued, to run with
        // those of the next mappings: a small process is filled in one batch.
        return Ok((queue_stored(remote, pid, &own, fds, progress) + mapped, mapped));
    }
    // The other threads write into the mappings: they must be there first.
    remote.flush()?;
    std::thread::scope(|s| {
        let unpacking = s.spawn(|| unpack(pid, images, &packed, progress));
        let helping = s.spawn(|| write_stored(pid, images, &helped, progress));
        let read = read_stored(remote, pid, &own, fds, progress);
        let unpacked = unpacking.join().unwrap_or_else(|_| Err(KindError::Mismatch("a decompression thread panicked".into())));
        let helped_bytes = helping.join().unwrap_or_else(|_| Err(KindError::Mismatch("a page writer thread panicked".into())));
        let total = read?;
        unpacked?;
        Ok((total + helped_bytes? + packed.iter().map(|r| r.len).sum::<u64>() + mapped, mapped))
    })
}

/// The share of a mapping's stored pages written in by a thread of the restorer rather than
/// read by the husk: it makes two copies (image to buffer, buffer to the husk) where the husk
/// makes one, both fault in and zero the same fresh pages.
const HELPER_SHARE: f64 = 0.45;
/// Below this, a mapping's pages are all read by the husk.
const HELP_FROM: u64 = 16 << 20;

/// Cuts `runs` in two at about `share` of their bytes from the end: (the husk's, the helper's).
fn split_stored(runs: &[PageRun], share: f64) -> (Vec<PageRun>, Vec<PageRun>) {
    let total: u64 = runs.iter().map(|r| r.len).sum();
    if total < HELP_FROM {
        return (runs.to_vec(), Vec::new());
    }
    let mut cut = ((total as f64 * (1.0 - share)) as u64).next_multiple_of(4096);
    let (mut own, mut helped) = (Vec::new(), Vec::new());
    for r in runs {
        if cut >= r.len {
            own.push(*r);
            cut -= r.len;
        } else if cut == 0 {
            helped.push(*r);
        } else {
            own.push(PageRun { len: cut, ..*r });
            helped.push(PageRun { vaddr: r.vaddr + cut, offset: r.offset + cut, len: r.len - cut, ..*r });
            cut = 0;
        }
    }
    (own, helped)
}

/// Writes the stored runs `runs` from `image` into the memory of `pid` (`process_vm_writev`),
/// in pieces of 4 MiB; returns their bytes.
fn write_stored(pid: i32, images: &[std::fs::File], runs: &[PageRun], progress: &Progress) -> Result<u64, KindError> {
    const PIECE: u64 = 4 << 20;
    let mut buf = Vec::new();
    let mut total = 0;
    for r in runs {
        let image = file_of(images, pid, r)?;
        let mut done = 0;
        while done < r.len {
            let n = (r.len - done).min(PIECE);
            buf.resize(n as usize, 0);
            std::os::unix::fs::FileExt::read_exact_at(image, &mut buf, r.offset + done)
                .map_err(|e| KindError::io(format!("pid {pid}: reading pages {:#x}+{n:#x} from the image", r.vaddr + done), e))?;
            crest_ptrace::mem::write_vm(pid, r.vaddr + done, &buf)?;
            progress.add_done(n);
            done += n;
        }
        total += r.len;
    }
    Ok(total)
}

/// Has the husk `pread` the stored (uncompressed) runs `runs` into place; returns their bytes.
fn read_stored(remote: &mut Remote<'_>, pid: i32, runs: &[PageRun], fds: &MapFds, progress: &Progress) -> Result<u64, KindError> {
    let total = queue_stored(remote, pid, runs, fds, progress);
    remote.flush()?;
    Ok(total)
}

/// Queues the `pread`s of [`read_stored`] on `remote`, without running them; counts them done.
fn queue_stored(remote: &mut Remote<'_>, pid: i32, runs: &[PageRun], fds: &MapFds, progress: &Progress) -> u64 {
    let mut total = 0;
    const PIECE: u64 = 1 << 30;
    for r in runs {
        let image_fd = fds.image_of(r);
        // One pread takes a piece of 1 GiB whole; fewer bytes means the image ends inside the
        // page data.
        for o in (0..r.len).step_by(PIECE as usize) {
            let n = (r.len - o).min(PIECE);
            remote.queue_expecting(
                format!("pid {pid}: reading pages {:#x}+{n:#x} from the image at offset {} (fewer bytes: the image ends inside the page data)", r.vaddr + o, r.offset + o),
                libc::SYS_pread64,
                &[image_fd as u64, r.vaddr + o, n, r.offset + o],
                n,
            );
        }
        total += r.len;
    }
    progress.add_done(total);
    total
}

/// Decompresses `runs` from `image` into the memory of `pid`, on as many threads as cores.
fn unpack(pid: i32, images: &[std::fs::File], runs: &[PageRun], progress: &Progress) -> Result<(), KindError> {
    if runs.is_empty() {
        return Ok(());
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(runs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| -> Result<(), KindError> {
                    // The image's own reader: checks each run's checksum and length as it goes.
                    let mut reader = crest_image::codec::RunReader::new().map_err(|e| KindError::Mismatch(e.to_string()))?;
                    let mut plain = Vec::new();
                    loop {
                        let Some(r) = runs.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) else { return Ok(()) };
                        reader.read(file_of(images, pid, r)?, pid, r, &mut plain).map_err(|e| KindError::Mismatch(e.to_string()))?;
                        crest_ptrace::mem::write_vm(pid, r.vaddr, &plain)?;
                        progress.add_done(r.len);
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(KindError::Mismatch("a decompression thread panicked".into()))))
    })
}

/// Words for a mapping's backing, for messages and `cr_info`.
pub fn describe(b: &VmaBacking) -> String {
    match b {
        VmaBacking::Anon => "anonymous".into(),
        VmaBacking::SharedAnon { .. } => "shared anonymous".into(),
        VmaBacking::SharedPrivate { .. } => "shared memory, mapped private".into(),
        VmaBacking::SysvShm { id, .. } => format!("SysV shared memory {id}"),
        VmaBacking::File { path, .. } => path.clone(),
        VmaBacking::Deleted { path, .. } => format!("{path} (deleted)"),
        VmaBacking::PacketRing { fd, .. } => format!("rings of the packet socket at fd {fd}"),
        VmaBacking::Special(SpecialArea::Vdso) => "[vdso]".into(),
        VmaBacking::Special(SpecialArea::Vvar) => "[vvar]".into(),
        VmaBacking::Special(SpecialArea::VvarVclock) => "[vvar_vclock]".into(),
        VmaBacking::Special(SpecialArea::Vsyscall) => "[vsyscall]".into(),
    }
}

/// The mappings and their pages ([`restore`]).
pub struct Memory;

impl crate::process::ProcessKind for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["vmas"]
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Traced
    }
    fn restore(&self, cx: &mut crate::process::FillCx<'_, '_>) -> Result<(), KindError> {
        cx.filled = restore(cx.remote, cx.pid, &cx.p.vmas, cx.map_fds, cx.images, cx.progress)?;
        // A lazy restart is of a standalone image (refused for a chain before anything starts).
        if let (Some(lazy), [image]) = (cx.lazy, cx.images) {
            lazy.start(cx.remote, cx.pid, cx.p.pid, &cx.p.vmas, &cx.map_fds.in_place, image)?;
        }
        Ok(())
    }
}

/// The restore's own descriptors in the husk (the image, the files mapped, the executable),
/// closed once what is made from them is made.
pub struct RestoreDescriptors;

impl crate::process::ProcessKind for RestoreDescriptors {
    fn name(&self) -> &'static str {
        "restore descriptors"
    }
    fn fields(&self) -> &'static [&'static str] {
        &[]
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // The mappings are made from the image and the files, the executable is set from its
        // descriptor.
        &["memory", "mm"]
    }
    fn restore(&self, cx: &mut crate::process::FillCx<'_, '_>) -> Result<(), KindError> {
        let aux = cx.aux;
        // They are numbered one after another: closed in one call.
        if let (Some(&first), Some(&last)) = (aux.iter().min(), aux.iter().max()) {
            if last - first + 1 == aux.len() as i32 {
                // Queued: run with the next calls, in order.
                cx.remote.queue_may_fail(libc::SYS_close_range, &[first as u64, last as u64, 0]);
            } else {
                for &fd in aux {
                    let _ = cx.remote.syscall(libc::SYS_close, &[fd as u64])?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(vaddr: u64, len: u64, offset: u64) -> PageRun {
        PageRun { vaddr, len, offset, zlen: 0, sum: 0, image: 0 }
    }

    /// A mapped file is looked at once per path, again when the mapping shows another inode
    /// (the path was replaced) or once forgotten.
    #[test]
    fn mapped_files_are_looked_at_once_per_path() {
        struct Gone(std::path::PathBuf);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = std::env::temp_dir().join(format!("crest-file-stat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _gone = Gone(dir.clone());
        let path = dir.join("lib.so");
        let name = path.to_str().unwrap();
        std::fs::write(&path, b"abc").unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        let first = file_stat(name, ino).unwrap();
        assert_eq!((first.ino, first.size), (ino, 3));
        // Grown in place: the first look stands until it is forgotten.
        std::fs::write(&path, b"abcdef").unwrap();
        assert_eq!(file_stat(name, ino).unwrap(), first);
        // Replaced by another file: looked at again.
        let other = dir.join("new.so");
        std::fs::write(&other, b"0123456789").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let new_ino = std::fs::metadata(&path).unwrap().ino();
        assert_ne!(new_ino, ino);
        let replaced = file_stat(name, new_ino).unwrap();
        assert_eq!((replaced.ino, replaced.size), (new_ino, 10));
        // A mapping of the old inode now sees the new one (and is refused by `classify`).
        assert_eq!(file_stat(name, ino).unwrap().ino, new_ino);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file_stat(name, new_ino).unwrap(), replaced, "known, not looked at");
        forget_file_stats();
        assert!(file_stat(name, new_ino).is_err(), "looked at again once forgotten");
    }

    #[test]
    fn ranges_are_cut_where_pages_are_shared() {
        let p = 4096;
        assert_eq!(subtract_ranges(&[(0, 10 * p)], &[(2 * p, p), (5 * p, 2 * p)]), vec![(0, 2 * p), (3 * p, 2 * p), (7 * p, 3 * p)]);
        assert_eq!(subtract_ranges(&[(0, 2 * p), (4 * p, p)], &[(0, 5 * p)]), vec![]);
        assert_eq!(subtract_ranges(&[(p, p)], &[]), vec![(p, p)]);
        assert_eq!(subtract_ranges(&[(p, 3 * p)], &[(0, 2 * p), (3 * p, 4 * p)]), vec![(2 * p, p)]);
    }

    #[test]
    fn stored_runs_are_shared_at_a_page_boundary() {
        let runs = [run(0, 40 << 20, 4096), run(100 << 20, 60 << 20, (40 << 20) + 4096)];
        let (own, helped) = split_stored(&runs, 0.45);
        let sum = |r: &[PageRun]| r.iter().map(|r| r.len).sum::<u64>();
        assert_eq!(sum(&own) + sum(&helped), 100 << 20);
        assert_eq!(sum(&own), 55 << 20);
        // The second run is cut: its tail goes to the helper, from the same place in the file.
        assert_eq!(own[1], run(100 << 20, 15 << 20, (40 << 20) + 4096));
        assert_eq!(helped, vec![run(115 << 20, 45 << 20, (55 << 20) + 4096)]);
        // Small mappings are the husk's alone.
        assert_eq!(split_stored(&[run(0, 1 << 20, 0)], 0.45).1, Vec::new());
    }
}
