//! Named pipes (FIFOs), reopened by path. The data buffered in the FIFO is read without
//! consuming it (as for pipes) from the first descriptor that can read it, once per FIFO.
//!
//! Restore (in `cr_restart`, once for all the processes that share the open file): the FIFO is
//! first opened read-write and kept open until every process has its descriptors, so that no
//! open blocks for want of the other side and the refilled data is not dropped; then it is
//! opened with the saved mode without blocking, and the saved status flags are set.
use std::fs::Metadata;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{reopen, set_status_flags, DumpCx, FdHandler, PrepareCx};
use crate::{KindError, ObjId};

/// The handler.
pub struct Fifo;

impl FdHandler for Fifo {
    fn name(&self) -> &'static str {
        "FIFO"
    }
    fn claims(&self, link: &str, md: &Metadata) -> bool {
        md.file_type().is_fifo() && link.starts_with('/') && !link.ends_with(" (deleted)")
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let reads = info.flags & libc::O_ACCMODE as u32 != libc::O_WRONLY as u32;
        let data = if reads && cx.seen.insert(ObjId::fifo(md)) {
            super::pipe::peek(cx, fd).map_err(|e| KindError::io(format!("pid {} fd {fd}: reading the data buffered in the FIFO {link}", cx.pid), e))?.0
        } else {
            Vec::new()
        };
        Ok(FdKind::Fifo { path: link.to_string(), data })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Fifo { .. })
    }
    fn sharing(&self, _kind: &FdKind) -> super::Sharing {
        super::Sharing::Image
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Fifo { path, data } = kind else { return String::new() };
        format!("FIFO {path}{}", if data.is_empty() { String::new() } else { format!(", {} bytes buffered", data.len()) })
    }
    fn open(&self, rec: &FdRecord, cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Fifo { path, data } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let md = std::fs::metadata(path).map_err(|e| format!("fd {}: the FIFO {path}: {e}", rec.fd))?;
        if !md.file_type().is_fifo() {
            return Err(format!("fd {}: {path} is no longer a FIFO", rec.fd));
        }
        let key = (ObjId::fifo(&md), false);
        if cx.take(key).is_none() {
            let both = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| format!("fd {}: opening the FIFO {path}: {e}", rec.fd))?;
            cx.park(key, both.into())?;
        }
        if !data.is_empty() {
            let w = cx.take(key).expect("parked above")?;
            std::fs::File::from(w).write_all(data).map_err(|e| format!("fd {}: refilling the FIFO {path}: {e}", rec.fd))?;
        }
        let f: std::os::fd::OwnedFd = reopen(path, rec, libc::O_NONBLOCK)?.into();
        set_status_flags(&f, rec.flags)?;
        Ok(super::Opened::Fd(f))
    }
}
