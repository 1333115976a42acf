//! File descriptors. Each kind of file is one module behind [`FdHandler`]; [`HANDLERS`] is the
//! registry, asked in order. Adding a kind is one new file and one line there.
//!
//! Dump: `/proc/PID/fd/N` (the link and, through it, `stat` of the open file) and
//! `/proc/PID/fdinfo/N` (offset, flags). Restore happens inside the husk before it stops: each
//! file is opened again and moved to its number with `dup3`, close-on-exec included.
use std::fs::Metadata;

use crest_image::{FdKind, FdRecord, RECORD_VERSION};
use crest_proc::FdInfo;

use crate::KindError;

mod chardev;
mod directory;
mod inherited;
mod regular;

/// One kind of file a descriptor can refer to.
pub trait FdHandler: Sync {
    /// Short name, for messages.
    fn name(&self) -> &'static str;
    /// Does a descriptor whose link reads `link` and whose open file is `md` belong here?
    fn claims(&self, link: &str, md: &Metadata) -> bool;
    /// Describes it for the image.
    fn dump(&self, pid: i32, fd: i32, link: &str, md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError>;
    /// Does this handler restore records of this kind?
    fn restores(&self, kind: &FdKind) -> bool;
    /// Inside the husk: opens the file again. `None` leaves the number as the husk inherited it.
    fn open(&self, rec: &FdRecord) -> Result<Option<std::os::fd::OwnedFd>, String>;
}

/// The registry, asked in order; [`inherited`] takes what no other kind claims.
pub static HANDLERS: &[&dyn FdHandler] = &[&regular::Regular, &directory::Directory, &chardev::CharDevice, &inherited::Inherited];

/// Dumps every descriptor of `pid`.
pub fn dump_all(pid: i32) -> Result<Vec<FdRecord>, KindError> {
    let mut out = Vec::new();
    for fd in crest_proc::fds(pid)? {
        let link = crest_proc::readlink(pid, &format!("fd/{fd}"))?;
        let md = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).map_err(|e| KindError::io(format!("pid {pid} fd {fd} ({link})"), e))?;
        let info = crest_proc::parse_fdinfo(&crest_proc::read(pid, &format!("fdinfo/{fd}"))?)?;
        let h = HANDLERS.iter().find(|h| h.claims(&link, &md)).ok_or_else(|| KindError::Unsupported(format!("pid {pid} fd {fd}: {link} is not supported")))?;
        let kind = h.dump(pid, fd, &link, &md, &info)?;
        out.push(FdRecord { v: RECORD_VERSION, fd, flags: info.flags & !(libc::O_CLOEXEC as u32), cloexec: info.flags & libc::O_CLOEXEC as u32 != 0, kind });
    }
    Ok(out)
}

/// Inside the husk: recreates every descriptor of `recs` at its number. Descriptors the husk
/// has that are neither restored nor kept are closed, except those in `keep` (the restore's own).
pub fn prepare_all(recs: &[FdRecord], keep: &[i32]) -> Result<(), String> {
    let inherited: Vec<i32> = recs.iter().filter(|r| matches!(r.kind, FdKind::Inherited { .. })).map(|r| r.fd).collect();
    let own: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("listing own descriptors: {e}"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in own {
        if !keep.contains(&fd) && !inherited.contains(&fd) {
            crest_ptrace::sys::close(fd);
        }
    }
    for r in recs {
        let h = HANDLERS.iter().find(|h| h.restores(&r.kind)).ok_or_else(|| format!("fd {}: no handler", r.fd))?;
        match h.open(r)? {
            Some(f) => {
                let raw = std::os::fd::IntoRawFd::into_raw_fd(f);
                if raw != r.fd {
                    crest_ptrace::sys::dup3(raw, r.fd, r.cloexec).map_err(|e| format!("fd {}: {e}", r.fd))?;
                    crest_ptrace::sys::close(raw);
                } else {
                    crest_ptrace::sys::set_cloexec(raw, r.cloexec).map_err(|e| format!("fd {}: {e}", r.fd))?;
                }
            }
            None => {
                let _ = crest_ptrace::sys::set_cloexec(r.fd, r.cloexec);
            }
        }
    }
    Ok(())
}

/// Open flags to reopen a file with: the saved access mode and status flags, without those
/// that only mean something at creation.
pub fn reopen_flags(flags: u32) -> i32 {
    (flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY | libc::O_CLOEXEC)
}
