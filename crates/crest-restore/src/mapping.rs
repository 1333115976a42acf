//! Pages mapped from the image rather than copied (see `docs/architecture.md`, "Pages mapped
//! from the image"): whether an image file may be mapped into the restored processes
//! ([`mappable`]), and the check of every page run's checksum in place, on every core
//! ([`verify_in_place`]).
use std::os::unix::fs::MetadataExt;

use crest_image::{ImageError, ImageFile};

/// File systems whose files are in the page cache of this machine and change only through it:
/// a private mapping of such a file reads the bytes that were checked.
const LOCAL_FS: [(i64, &str); 8] =
    [(0x0102_1994, "tmpfs"), (0x8584_58f6, "ramfs"), (0xEF53, "ext2/3/4"), (0x5846_5342, "xfs"), (0x9123_683E, "btrfs"), (0xF2F5_2010, "f2fs"), (0x2FC1_2FC1, "zfs"), (0x3153_464a, "jfs")];

/// Whether the stored page runs of `file` (an open image) may be mapped into the restored
/// processes: `Err` says why not. Only a regular file that nobody can write (mode without any
/// write bit, owned by root or by this user: no one else could make it writable), on a local
/// file system with a page cache ([`LOCAL_FS`]; not a network or FUSE file system, whose
/// files can change under the mapping without this machine knowing, nor a DAX one).
pub fn mappable(file: &std::fs::File) -> Result<(), String> {
    let md = file.metadata().map_err(|e| format!("cannot stat the image: {e}"))?;
    if !md.file_type().is_file() {
        return Err("the image is not a regular file".into());
    }
    if md.mode() & 0o222 != 0 {
        return Err(format!("the image is writable (mode {:o}): it could change under the mapping", md.mode() & 0o7777));
    }
    let me = crest_ptrace::sys::euid();
    if md.uid() != 0 && md.uid() != me {
        return Err(format!("the image belongs to user {}, who could make it writable", md.uid()));
    }
    if md.nlink() == 0 {
        return Err("the image is deleted".into());
    }
    let fs = crest_ptrace::sys::fs_type(file).map_err(|e| format!("cannot tell the image's file system: {e}"))?;
    if !LOCAL_FS.iter().any(|&(m, _)| m == fs) {
        return Err(format!("the image is on a file system (type {fs:#x}) that crest does not map images from"));
    }
    Ok(())
}

/// Bytes checked per mapping of the image while verifying.
const WINDOW: u64 = 64 << 20;

/// The windows of the image that [`verify_in_place`] read, still mapped: unmapping them
/// (taking down a page-table entry per page, some 15% of the check's time at 4 GiB) waits until
/// the restored processes run ([`Windows::unmap_later`]).
#[must_use = "the windows are unmapped when dropped: drop them, or unmap them later"]
#[derive(Default)]
pub struct Windows(Vec<crest_ptrace::mapped::Mapped>);

impl Windows {
    /// Unmaps the windows on a thread of their own, at a low priority (nice 10): after the
    /// release, the restored processes come first.
    pub fn unmap_later(self) {
        if self.0.is_empty() {
            return;
        }
        let spawned = std::thread::Builder::new().name("crest-unmap".into()).spawn(move || {
            crest_ptrace::sys::lower_thread_priority(10);
            drop(self);
        });
        // Without a thread, they were unmapped as the spawn failed and dropped its closure.
        drop(spawned);
    }
}

/// Checks the checksum of every page run of `chain[0]` as stored, each in the image of the
/// chain that holds it (`chain[0]` alone for a standalone image), reading the page cache in
/// place (a read-only mapping of the file, no copy), on `workers` threads. The same check as
/// [`ImageFile::verify_checksums`], with the same messages. The windows read are handed back
/// mapped, to be unmapped once the restart no longer waits for it.
pub fn verify_in_place(chain: &[ImageFile], workers: usize) -> Result<Windows, ImageError> {
    let Some(img) = chain.first() else { return Ok(Windows::default()) };
    let mut runs: Vec<(i32, crest_image::PageRun)> = img.image.processes.iter().flat_map(|p| p.vmas.iter().flat_map(move |v| v.pages.iter().map(move |r| (p.pid, *r)))).collect();
    runs.sort_by_key(|(_, r)| (r.image, r.offset));
    // Windows of whole runs of one image, each mapped once.
    let mut windows: Vec<std::ops::Range<usize>> = Vec::new();
    let mut i = 0;
    while i < runs.len() {
        let start = runs[i].1.offset;
        let mut j = i + 1;
        while j < runs.len() && runs[j].1.image == runs[i].1.image && runs[j].1.offset + runs[j].1.stored_len() - start <= WINDOW {
            j += 1;
        }
        windows.push(i..j);
        i = j;
    }
    let lens = chain.iter().map(|i| i.file.metadata().map(|m| m.len())).collect::<Result<Vec<u64>, _>>()?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                s.spawn(|| -> Result<Vec<crest_ptrace::mapped::Mapped>, ImageError> {
                    let mut read = Vec::new();
                    loop {
                        let Some(w) = windows.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) else { return Ok(read) };
                        let group = &runs[w.clone()];
                        let k = group[0].1.image as usize;
                        let (Some(file), Some(&len)) = (chain.get(k).map(|i| &i.file), lens.get(k)) else {
                            return Err(ImageError::Invalid(format!("pid {}: page run {:#x} lies in image {k} of a chain of {}", group[0].0, group[0].1.vaddr, chain.len())));
                        };
                        let from = group[0].1.offset;
                        let to = group.iter().map(|(_, r)| r.offset + r.stored_len()).max().unwrap_or(from);
                        if to > len {
                            let (pid, r) = group.iter().find(|(_, r)| r.offset + r.stored_len() > len).copied().unwrap_or(group[0]);
                            return Err(ImageError::Invalid(format!(
                                "page data of pid {pid} at {:#x} lies past the end of the image ({} bytes needed, {len} there)",
                                r.vaddr,
                                r.offset + r.stored_len()
                            )));
                        }
                        let m = crest_ptrace::mapped::Mapped::new(file, from, (to - from) as usize)?;
                        for (pid, r) in group {
                            let at = (r.offset - from) as usize;
                            if crest_image::checksum(&m.bytes()[at..at + r.stored_len() as usize]) != r.sum {
                                return Err(ImageError::Checksum { what: format!("page data of pid {pid} at {:#x}..{:#x}", r.vaddr, r.vaddr.saturating_add(r.len)) });
                            }
                        }
                        read.push(m);
                    }
                })
            })
            .collect();
        let mut all = Windows::default();
        for h in handles {
            all.0.extend(h.join().unwrap_or_else(|_| Err(ImageError::Invalid("page verifier panicked".into())))?);
        }
        Ok(all)
    })
}
