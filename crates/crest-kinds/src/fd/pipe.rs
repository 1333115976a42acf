//! Pipes whose both ends are open in the processes of the image (or whose write end is closed
//! everywhere). The data buffered in the pipe is read
//! without consuming it: a copy of the read end is taken with `pidfd_getfd` and `tee`d into a
//! pipe of ours. Restore creates one pipe per saved pipe, refills it, and hands out its ends
//! (dup'd descriptors share one end, as before). A pipe with an end outside the process is left
//! to [`super::inherited`] on standard input, output or error, as BLCR did, and refused
//! elsewhere.
use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use crest_image::{FdKind, FdRecord, StdioClass};
use crest_proc::FdInfo;

use super::{set_status_flags, DumpCx, FdHandler, PrepareCx};
use crate::{KindError, ObjId};

/// The handler.
pub struct Pipe;

fn inode(link: &str) -> Option<u64> {
    link.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok()
}

fn is_write(flags: u32) -> bool {
    flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32
}

/// The bytes buffered in the pipe behind `fd` of the process, left in place.
pub(super) fn peek(cx: &DumpCx<'_>, fd: i32) -> std::io::Result<(Vec<u8>, u32)> {
    let pidfd = cx.pidfd.as_ref().ok_or_else(|| std::io::Error::other("no pidfd for the process"))?;
    let theirs = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), fd)?;
    let size = crest_ptrace::sys::pipe_size(theirs.as_raw_fd(), None)?;
    let (r, w) = crest_ptrace::sys::pipe2(libc::O_CLOEXEC | libc::O_NONBLOCK)?;
    crest_ptrace::sys::pipe_size(w.as_raw_fd(), Some(size))?;
    let n = match crest_ptrace::sys::tee(theirs.as_raw_fd(), w.as_raw_fd(), size as usize) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => 0,
        Err(e) => return Err(e),
    };
    drop(w);
    let mut data = Vec::with_capacity(n);
    std::fs::File::from(r).read_to_end(&mut data)?;
    Ok((data, size as u32))
}

/// Whether some process still holds the write end of the pipe behind `fd`.
fn writer_alive(cx: &DumpCx<'_>, fd: i32) -> bool {
    let Some(pidfd) = cx.pidfd.as_ref() else { return true };
    let Ok(theirs) = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), fd) else { return true };
    !crest_ptrace::sys::hung_up(theirs.as_raw_fd()).unwrap_or(false)
}

impl FdHandler for Pipe {
    fn name(&self) -> &'static str {
        "pipe"
    }
    fn claims(&self, link: &str, _md: &Metadata) -> bool {
        inode(link).is_some()
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, _md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let id = inode(link).unwrap_or(0);
        let ends: Vec<bool> = cx.all.iter().filter(|o| o.link == link).map(|o| is_write(o.info.flags)).collect();
        let both = ends.contains(&true) && ends.contains(&false);
        // Only the read end, and no writer is left anywhere: restored as a pipe holding its
        // data whose write end is closed.
        if !both && !ends.contains(&true) && !writer_alive(cx, fd) {
            let (data, size) =
                if cx.seen.insert(ObjId::pipe(id)) { peek(cx, fd).map_err(|e| KindError::io(format!("pid {} fd {fd}: reading the data buffered in {link}", cx.pid), e))? } else { (Vec::new(), 0) };
            return Ok(FdKind::Pipe { id, write_end: false, size, data });
        }
        if !both {
            // One end leads outside the image: on standard input, output or error, like a
            // terminal, it follows cr_restart's own.
            let end = if is_write(info.flags) { "write end" } else { "read end" };
            return super::inherited::outside(
                cx,
                fd,
                StdioClass::Pipe,
                true,
                format!("the {end} of {link}, whose other end is outside the checkpoint"),
                "a pipe to a process outside the checkpoint is only kept on standard input, output or error",
            );
        }
        let write_end = is_write(info.flags);
        let (data, size) = if !write_end && cx.seen.insert(ObjId::pipe(id)) {
            peek(cx, fd).map_err(|e| KindError::io(format!("pid {} fd {fd}: reading the data buffered in {link}", cx.pid), e))?
        } else {
            (Vec::new(), 0)
        };
        Ok(FdKind::Pipe { id, write_end, size, data })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Pipe { .. })
    }
    fn sharing(&self, _kind: &FdKind) -> super::Sharing {
        super::Sharing::Image
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Pipe { id, write_end, data, .. } = kind else { return String::new() };
        format!("{} end of pipe {id}{}", if *write_end { "write" } else { "read" }, if data.is_empty() { String::new() } else { format!(", {} bytes buffered", data.len()) })
    }
    fn open(&self, rec: &FdRecord, cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Pipe { id, write_end, size, data } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let err = |e: std::io::Error| format!("fd {}: pipe: {e}", rec.fd);
        let id = ObjId::pipe(*id);
        if cx.take((id, false)).is_none() {
            let (r, w) = crest_ptrace::sys::pipe2(libc::O_CLOEXEC).map_err(err)?;
            if *size > 0 {
                crest_ptrace::sys::pipe_size(w.as_raw_fd(), Some(*size as i32)).map_err(err)?;
            }
            cx.park((id, false), r)?;
            cx.park((id, true), w)?;
        }
        if !data.is_empty() {
            let w = cx.take((id, true)).expect("parked above")?;
            std::fs::File::from(w).write_all(data).map_err(err)?;
        }
        let f = cx.open_file((id, *write_end), rec.flags as i32).expect("parked above")?;
        set_status_flags(&f, rec.flags)?;
        Ok(super::Opened::Fd(f))
    }
}
