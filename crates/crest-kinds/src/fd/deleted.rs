//! Regular files deleted (unlinked) while open or mapped: `/proc/PID/fd/N` or the mapping's
//! name reads `PATH (deleted)`. Their contents are saved in the image, once per file (the
//! first descriptor or mapping of it carries them), up to `cr_checkpoint --deleted-max`
//! bytes; a larger file and one whose directory is gone too are refused. A descriptor of a
//! file still linked under another name in the same directory is saved as a regular file of
//! that name (the same inode, reopened); one whose other name cannot be found is refused.
//!
//! At restart `cr_restart` recreates each file once, before the husks ([`recreate_all`]):
//! under its old name in its old directory when that name is free, at once unlinked again
//! (so `/proc/PID/fd/N` reads as it did), else as an `O_TMPFILE` file in that directory (or a
//! temporary name there, unlinked, where the file system has no `O_TMPFILE`), with its
//! contents, size and permission bits. Every descriptor of it is a new open of that one file
//! with its own flags and offset, and every mapping maps it: a shared mapping and a
//! descriptor share pages again.
use std::fs::Metadata;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};

use crest_image::{DeletedFile, FdKind, FdRecord, Process, Vma, VmaBacking};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler, FileTable, PrepareCx};
use crate::{KindError, ObjId};

/// Largest deleted file (in bytes of data, holes not counted) saved unless `cr_checkpoint
/// --deleted-max` says otherwise.
pub const DEFAULT_MAX: u64 = 64 << 20;

/// `__O_TMPFILE`, which may stay in the status flags of a file made with `O_TMPFILE`.
const O_TMPFILE_BIT: u32 = 0o2000_0000;

/// The handler.
pub struct Deleted;

/// The identity of the file with device `dev` and inode `ino`, as the image names it.
pub fn file_id(dev: u64, ino: u64) -> u64 {
    (dev << 32) ^ ino
}

/// Refuses a deleted file that cannot be recreated as it was; `what` names it for messages.
fn refuse_unsaveable(what: &str, path: &str, md: &Metadata) -> Result<(), KindError> {
    // Shared memory behind /dev/zero or SysV segments, aio rings, ... are deleted files of
    // internal file systems, not files of a directory.
    if super::inotify::mount_of(md.dev()).is_none() {
        return Err(KindError::Unsupported(format!("{what}: {path} (deleted) is on no mounted file system (an object of the kernel's own, not a file); it is not supported")));
    }
    if md.nlink() > 0 {
        return Err(KindError::Unsupported(format!(
            "{what}: {path} was deleted but is still linked under another name ({} links), found nowhere in its directory; such files are not supported",
            md.nlink()
        )));
    }
    let dir = std::path::Path::new(path).parent().unwrap_or(std::path::Path::new("/"));
    if !dir.is_dir() {
        return Err(KindError::Unsupported(format!("{what}: the deleted file {path} was in {}, which is gone too; it could not be recreated there", dir.display())));
    }
    Ok(())
}

/// Another name of the file `md` (deleted as `path` but still linked): an entry of the
/// directory `path` was in, with the same device and inode.
fn other_link(path: &str, md: &Metadata) -> Option<String> {
    let dir = std::path::Path::new(path).parent()?;
    std::fs::read_dir(dir).ok()?.filter_map(Result::ok).find_map(|e| {
        let m = std::fs::symlink_metadata(e.path()).ok()?;
        (m.dev() == md.dev() && m.ino() == md.ino()).then(|| e.path().to_str().map(str::to_string))?
    })
}

/// The runs of data of `f` (`SEEK_DATA`, `SEEK_HOLE`), `size` bytes long.
fn extents(f: &std::fs::File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < size {
        let Some(start) = crest_ptrace::sys::seek_data(f, at, true)? else { break };
        if start >= size {
            break;
        }
        let end = crest_ptrace::sys::seek_data(f, start, false)?.unwrap_or(size).min(size);
        out.push((start, end - start));
        at = end;
    }
    Ok(out)
}

/// Saves the file `f` (metadata `md`) whole: its data runs, at most `max` bytes of them.
fn save(f: &std::fs::File, md: &Metadata, what: &str, path: &str, max: u64) -> Result<DeletedFile, KindError> {
    let err = |e: std::io::Error| KindError::io(format!("{what}: reading the deleted file {path}"), e);
    let ext = match extents(f, md.size()) {
        Ok(e) => e,
        // A file system without SEEK_DATA: all data.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => vec![(0, md.size())],
        Err(e) => return Err(err(e)),
    };
    let bytes: u64 = ext.iter().map(|e| e.1).sum();
    if bytes > max {
        return Err(KindError::Unsupported(format!("{what}: the deleted file {path} holds {bytes} bytes of data, more than --deleted-max {max} allows to save in the image")));
    }
    let mut data = vec![0u8; bytes as usize];
    let mut at = 0;
    for &(off, len) in &ext {
        f.read_exact_at(&mut data[at..at + len as usize], off).map_err(err)?;
        at += len as usize;
    }
    Ok(DeletedFile {
        size: md.size(),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        atime_ns: md.atime() * 1_000_000_000 + md.atime_nsec(),
        mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        extents: ext,
        data,
    })
}

/// A readable open file of `f`, which may be open for writing only: a new open through
/// `/proc/self/fd`, else `f` itself.
fn readable(f: std::fs::File) -> std::fs::File {
    std::fs::File::open(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap_or(f)
}

impl FdHandler for Deleted {
    fn name(&self) -> &'static str {
        "deleted file"
    }
    fn claims(&self, link: &str, md: &Metadata) -> bool {
        md.file_type().is_file() && link.starts_with('/') && link.ends_with(" (deleted)")
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let what = format!("pid {} fd {fd}", cx.pid);
        let path = link.trim_end_matches(" (deleted)").to_string();
        if md.nlink() > 0 {
            // Unlinked under this name, still linked under another: reopened by that one.
            if let Some(other) = other_link(&path, md) {
                let image: Vec<i32> = cx.all.iter().map(|o| o.pid).collect();
                super::refuse_unreopenable(cx.pid, fd, &other, &image)?;
                return Ok(FdKind::Regular { path: other, pos: info.pos, size: md.size(), dev: md.dev(), ino: md.ino() });
            }
        }
        refuse_unsaveable(&what, &path, md)?;
        let id = file_id(md.dev(), md.ino());
        let mut file = None;
        if cx.seen.insert(ObjId::deleted_file(id)) {
            let pidfd = cx.pidfd.as_ref().ok_or_else(|| KindError::Unsupported(format!("{what}: the deleted file {path} cannot be read (no pidfd)")))?;
            let theirs = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), fd).map_err(|e| KindError::io(format!("{what}: taking a copy of the descriptor"), e))?;
            file = Some(save(&readable(theirs.into()), md, &what, &path, cx.deleted_max)?);
        }
        Ok(FdKind::Deleted { id, path, pos: info.pos, file })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Deleted { .. })
    }
    fn sharing(&self, _kind: &FdKind) -> super::Sharing {
        super::Sharing::Image
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Deleted { path, pos, file, .. } = kind else { return String::new() };
        let held = file.as_ref().map_or(String::new(), |f| format!(", {} bytes, {} of data in the image", f.size, f.data.len()));
        format!("deleted file {path}{held}, at offset {pos}")
    }
    fn open(&self, rec: &FdRecord, cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Deleted { id, path, pos, file } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let key = (ObjId::deleted_file(*id), false);
        if cx.take(key).is_none() {
            let file = file.as_ref().ok_or_else(|| format!("fd {}: the contents of the deleted file {path} are in no record of the image", rec.fd))?;
            let f = recreate(path, file).map_err(|e| format!("fd {}: {e}", rec.fd))?;
            cx.park(key, f)?;
        }
        let parked = cx.take(key).expect("parked above")?;
        let acc = rec.flags & libc::O_ACCMODE as u32;
        // O_NOFOLLOW (shm_open sets it) only mattered when the file was opened by name; the
        // new open goes through the /proc/self/fd link, which it would refuse with ELOOP.
        let flags = super::reopen_flags(rec.flags & !O_TMPFILE_BIT) & !(libc::O_ACCMODE | libc::O_DIRECTORY | libc::O_NOFOLLOW);
        let f = std::fs::OpenOptions::new()
            .read(acc != libc::O_WRONLY as u32)
            .write(acc != libc::O_RDONLY as u32)
            .custom_flags(flags)
            .open(format!("/proc/self/fd/{}", parked.as_raw_fd()))
            .map_err(|e| format!("fd {}: opening the recreated deleted file {path}: {e}", rec.fd))?;
        std::io::Seek::seek(&mut &f, std::io::SeekFrom::Start(*pos)).map_err(|e| format!("fd {}: seeking the deleted file {path} to {pos}: {e}", rec.fd))?;
        Ok(super::Opened::Fd(f.into()))
    }
}

impl FileTable {
    /// Fills in the file (once per file in the image) of the mappings of deleted files among
    /// `vmas`, the mappings of the frozen process `pid`, read through `/proc/PID/map_files`
    /// (which needs `CAP_SYS_ADMIN`).
    pub fn deleted_mappings(&mut self, pid: i32, vmas: &mut [Vma]) -> Result<(), KindError> {
        for v in vmas.iter_mut() {
            let (start, end) = (v.start, v.end);
            let VmaBacking::Deleted { id, path, file, .. } = &mut v.backing else { continue };
            let what = format!("pid {pid}: mapping {start:#x}-{end:#x} of the deleted file {path}");
            let f = std::fs::File::open(format!("/proc/{pid}/map_files/{start:x}-{end:x}")).map_err(|e| {
                if e.raw_os_error() == Some(libc::EPERM) {
                    KindError::Unsupported(format!("{what}: reading it through /proc/{pid}/map_files needs CAP_SYS_ADMIN (checkpoint as root)"))
                } else {
                    KindError::io(what.clone(), e)
                }
            })?;
            let md = f.metadata().map_err(|e| KindError::io(what.clone(), e))?;
            if !md.file_type().is_file() {
                return Err(KindError::Unsupported(format!("{what}: it is not a regular file")));
            }
            refuse_unsaveable(&what, path, &md)?;
            *id = file_id(md.dev(), md.ino());
            if self.seen.insert(ObjId::deleted_file(*id)) {
                *file = Some(save(&f, &md, &what, path, self.deleted_max)?);
            }
        }
        Ok(())
    }
}

/// Makes a file in the directory of `path` that is linked nowhere, with the contents, size,
/// owner, permission bits and times of `file`: under the name of `path` when it is free,
/// unlinked at once; else `O_TMPFILE`; else a temporary name, unlinked.
pub fn recreate(path: &str, file: &DeletedFile) -> Result<std::os::fd::OwnedFd, String> {
    let p = std::path::Path::new(path);
    let dir = p.parent().unwrap_or(std::path::Path::new("/"));
    let err = |what: &str, e: std::io::Error| format!("recreating the deleted file {path}: {what}: {e}");
    let new = |at: &std::path::Path| std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(at);
    let f = match new(p) {
        Ok(f) => {
            std::fs::remove_file(p).map_err(|e| err("unlinking it", e))?;
            f
        }
        Err(_) => match std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE).mode(0o600).open(dir) {
            Ok(f) => f,
            Err(_) => {
                let mut n = 0;
                loop {
                    let at = dir.join(format!(".crest-deleted-{}-{n}", std::process::id()));
                    match new(&at) {
                        Ok(f) => {
                            std::fs::remove_file(&at).map_err(|e| err("unlinking it", e))?;
                            break f;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                        Err(e) => return Err(err(&format!("creating a file in {}", dir.display()), e)),
                    }
                }
            }
        },
    };
    let mut at = 0usize;
    for &(off, len) in &file.extents {
        let bytes = file.data.get(at..at + len as usize).ok_or_else(|| format!("the deleted file {path}: its extents hold more than its data"))?;
        f.write_all_at(bytes, off).map_err(|e| err("writing its contents", e))?;
        at += len as usize;
    }
    f.set_len(file.size).map_err(|e| err("setting its size", e))?;
    let md = f.metadata().map_err(|e| err("reading its attributes", e))?;
    if (md.uid(), md.gid()) != (file.uid, file.gid) {
        std::os::unix::fs::fchown(&f, Some(file.uid), Some(file.gid)).map_err(|e| err(&format!("giving it to user {} and group {}", file.uid, file.gid), e))?;
    }
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(file.mode)).map_err(|e| err("setting its mode", e))?;
    let time = |ns: i64| std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64);
    f.set_times(std::fs::FileTimes::new().set_accessed(time(file.atime_ns)).set_modified(time(file.mtime_ns))).map_err(|e| err("setting its times", e))?;
    Ok(f.into())
}

/// Recreates, once each, every deleted file the descriptors and mappings of `procs` name,
/// from the record that carries it: (id, the file).
pub fn recreate_all(procs: &[Process]) -> Result<Vec<(u64, std::os::fd::OwnedFd)>, String> {
    // id -> (path, the file)
    let mut files: std::collections::BTreeMap<u64, (&str, Option<&DeletedFile>)> = Default::default();
    for p in procs {
        let fds = p.fds.iter().filter_map(|f| match &f.kind {
            FdKind::Deleted { id, path, file, .. } => Some((*id, path.as_str(), file.as_ref())),
            _ => None,
        });
        let maps = p.vmas.iter().filter_map(|v| match &v.backing {
            VmaBacking::Deleted { id, path, file, .. } => Some((*id, path.as_str(), file.as_ref())),
            _ => None,
        });
        for (id, path, file) in fds.chain(maps) {
            let e = files.entry(id).or_insert((path, None));
            e.1 = e.1.or(file);
        }
    }
    let mut out = Vec::new();
    for (id, (path, file)) in files {
        let file = file.ok_or_else(|| format!("the contents of the deleted file {path} are in no record of the image"))?;
        out.push((id, recreate(path, file)?));
    }
    Ok(out)
}
