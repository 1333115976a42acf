//! memfds (`memfd_create`) open as descriptors, and descriptors of the memory object behind a
//! shared anonymous mapping (`/dev/zero (deleted)`, opened through `/proc/PID/map_files`),
//! which is restored as a memfd: both are files of the kernel's internal shmem mount. Their contents are read through a copy of the
//! descriptor (`pidfd_getfd`) once per object; the object is the same one that shared mappings
//! of it use ([`crest_image::VmaBacking::SharedAnon`] with the same id), so restore takes the
//! memfd `cr_restart` made for those mappings when there is one, writes the contents into it
//! and hands it out at the saved offset, then seals it as it was (`F_ADD_SEALS`). A memfd sealed
//! against writes that is also mapped shared is refused: its mapping could not be refilled.
use std::fs::Metadata;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler, PrepareCx};
use crate::{KindError, ObjId};

/// Largest memfd saved through its descriptor.
const MAX: u64 = 256 << 20;

/// The handler.
pub struct Memfd;

/// The link of a descriptor of the object behind a shared anonymous mapping.
const SHARED_ZERO: &str = "/dev/zero (deleted)";
/// The name of the memfd that stands for it after a restart (the name shared anonymous
/// mappings' memfds have).
const ZERO_NAME: &str = "crest-shared";

const F_SEAL_WRITE: u32 = 8;
const F_SEAL_FUTURE_WRITE: u32 = 16;

/// Whether a process of the image maps the memfd with inode `ino` shared.
fn mapped_shared(cx: &DumpCx<'_>, ino: u64) -> bool {
    let mut pids: Vec<i32> = cx.all.iter().map(|o| o.pid).collect();
    pids.dedup();
    pids.into_iter()
        .any(|pid| crest_proc::read(pid, "maps").ok().and_then(|m| crest_proc::parse_smaps(&m).ok()).is_some_and(|maps| maps.iter().any(|m| m.shared && m.ino == ino && m.name.starts_with("/memfd:"))))
}

/// The id of a shared memory object, as [`crate::memory::classify`] computes it from `maps`
/// (whose device numbers are encoded as `st_dev` is).
pub fn object_id(md: &Metadata) -> u64 {
    (md.dev() << 32) ^ md.ino()
}

impl FdHandler for Memfd {
    fn name(&self) -> &'static str {
        "memfd"
    }
    fn claims(&self, link: &str, md: &Metadata) -> bool {
        md.file_type().is_file() && ((link.starts_with("/memfd:") && link.ends_with(" (deleted)")) || (link == SHARED_ZERO && super::inotify::mount_of(md.dev()).is_none()))
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let id = object_id(md);
        // The object of a shared anonymous mapping is named as the memfd made for it at restart.
        let name = if link == SHARED_ZERO { ZERO_NAME.to_string() } else { link.trim_start_matches("/memfd:").trim_end_matches(" (deleted)").to_string() };
        let size = md.size();
        let mut data = Vec::new();
        let what = || format!("pid {} fd {fd}: reading the seals of the memfd {name}", cx.pid);
        let pidfd = cx.pidfd.as_ref().ok_or_else(|| KindError::Unsupported(what()))?;
        let theirs = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), fd).map_err(|e| KindError::io(what(), e))?;
        let seals = crest_ptrace::sys::seals(theirs.as_raw_fd()).map_err(|e| KindError::io(what(), e))?;
        if seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE) != 0 && mapped_shared(cx, md.ino()) {
            return Err(KindError::Unsupported(format!("pid {} fd {fd}: the memfd {name} is sealed against writes and mapped shared; that is not supported yet", cx.pid)));
        }
        if cx.seen.insert(ObjId::memfd(md)) {
            if size > MAX {
                return Err(KindError::Unsupported(format!("pid {} fd {fd}: the memfd {name} holds {size} bytes; more than {MAX} is not supported yet", cx.pid)));
            }
            let what = || format!("pid {} fd {fd}: reading the memfd {name}", cx.pid);
            let pidfd = cx.pidfd.as_ref().ok_or_else(|| KindError::Unsupported(what()))?;
            let theirs = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), fd).map_err(|e| KindError::io(what(), e))?;
            data = vec![0u8; size as usize];
            std::fs::File::from(theirs).read_exact_at(&mut data, 0).map_err(|e| KindError::io(what(), e))?;
        }
        Ok(FdKind::Memfd { id, name, size, pos: info.pos, data, seals, mode: md.mode() & 0o7777 })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Memfd { .. })
    }
    fn sharing(&self, _kind: &FdKind) -> super::Sharing {
        super::Sharing::Image
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Memfd { name, size, pos, .. } = kind else { return String::new() };
        format!("memfd {name}, {size} bytes, at offset {pos}")
    }
    fn open(&self, rec: &FdRecord, cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Memfd { id, name, size, pos, data, seals, mode } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let err = |e: std::io::Error| format!("fd {}: the memfd {name}: {e}", rec.fd);
        let key = (ObjId::shared_memory(*id), false);
        if cx.take(key).is_none() {
            let f = crest_ptrace::sys::memfd_sealable(name, *size).map_err(err)?;
            cx.park(key, f)?;
        }
        let f = std::fs::File::from(cx.open_file(key, rec.flags as i32).expect("parked above")?);
        if f.metadata().map_err(err)?.len() < *size {
            f.set_len(*size).map_err(err)?;
        }
        if !data.is_empty() {
            f.write_all_at(data, 0).map_err(err)?;
        }
        std::io::Seek::seek(&mut &f, std::io::SeekFrom::Start(*pos)).map_err(err)?;
        if f.metadata().map_err(err)?.mode() & 0o7777 != *mode {
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(*mode)).map_err(err)?;
        }
        let now = crest_ptrace::sys::seals(f.as_raw_fd()).map_err(err)?;
        if now != *seals {
            crest_ptrace::sys::add_seals(f.as_raw_fd(), *seals & !now).map_err(|e| format!("fd {}: sealing the memfd {name} ({seals:#x}): {e}", rec.fd))?;
        }
        let f: std::os::fd::OwnedFd = f.into();
        super::set_status_flags(&f, rec.flags)?;
        Ok(super::Opened::Fd(f))
    }
}
