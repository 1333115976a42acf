//! Descriptors opened with `O_PATH`: a place in the file system, not an open file (no reads,
//! writes or offset; `fstat`, `*at` calls, `fchdir` for a directory, passing on). They are
//! chosen by their flags (fdinfo shows `O_PATH`) before any other kind, whatever the file is:
//! a regular file, a directory, a FIFO or device (not opened through), or a symbolic link
//! opened itself with `O_PATH | O_NOFOLLOW` (its link in `/proc/PID/fd` names the link, and
//! `stat` through it sees the link).
//!
//! Restore opens the path again with `O_PATH` and the flags that mean something with it
//! (`O_DIRECTORY`, `O_NOFOLLOW`; a symbolic link always with `O_NOFOLLOW`, so that it is the
//! link again). Before the restart the file must be there, the same inode (unless relocated)
//! and, for a link, still a link. A file deleted since it was opened, or one of the `/proc/PID`
//! of a process, is refused at checkpoint time (as for open files).
use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler, PrepareCx};
use crate::KindError;

/// The handler.
pub struct OPath;

/// Whether a descriptor with these fdinfo flags is one of this kind.
pub(super) fn is_opath(flags: u32) -> bool {
    flags & libc::O_PATH as u32 != 0
}

impl FdHandler for OPath {
    fn name(&self) -> &'static str {
        "O_PATH descriptor"
    }
    /// Never by link and metadata: by the flags (see [`is_opath`]).
    fn claims(&self, _link: &str, _md: &Metadata) -> bool {
        false
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, _info: &FdInfo) -> Result<FdKind, KindError> {
        let pid = cx.pid;
        if !link.starts_with('/') {
            return super::unsupported::refuse(cx, fd, format!("{link}, open with O_PATH"), "only files with a path are reopened with O_PATH");
        }
        if link.ends_with(" (deleted)") {
            return super::unsupported::refuse(cx, fd, format!("{link}, open with O_PATH"), "files deleted while open with O_PATH are not saved");
        }
        let image: Vec<i32> = cx.all.iter().map(|o| o.pid).collect();
        super::refuse_unreopenable(pid, fd, link, &image)?;
        Ok(FdKind::Path { path: link.to_string(), dev: md.dev(), ino: md.ino(), symlink: md.file_type().is_symlink() })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Path { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Path { path, symlink, .. } = kind else { return String::new() };
        format!("{} {path} open with O_PATH", if *symlink { "symbolic link" } else { "file" })
    }
    fn open(&self, rec: &FdRecord, _cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Path { path, symlink, .. } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let mut flags = libc::O_PATH | (rec.flags as i32 & (libc::O_DIRECTORY | libc::O_NOFOLLOW));
        if *symlink {
            flags |= libc::O_NOFOLLOW;
        }
        let f = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path).map_err(|e| format!("fd {}: reopening {path} with O_PATH: {e}", rec.fd))?;
        let md = f.metadata().map_err(|e| format!("fd {}: {path}: {e}", rec.fd))?;
        if md.file_type().is_symlink() != *symlink {
            return Err(format!("fd {}: {path} is {} now", rec.fd, if *symlink { "not a symbolic link any more" } else { "a symbolic link" }));
        }
        Ok(super::Opened::Fd(f.into()))
    }
}
