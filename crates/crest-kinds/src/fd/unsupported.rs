//! Objects crest cannot restore yet. Whatever no other kind claims (devices other than the
//! reopenable ones and terminals, timers, inotify and other anonymous-inode objects), and
//! what the other kinds turn down (sockets, pseudo-terminal masters, pipes to processes
//! outside the image beyond standard input, output and error), is refused at checkpoint time
//! with a message naming the process, the descriptor and what it is: restarting a program
//! without it would break it silently.
//!
//! With `cr_checkpoint --drop-unsupported` the checkpoint goes on without them instead (BLCR's
//! old behaviour, made explicit): each such descriptor is restored as a socket whose other end
//! is closed (reads see end of file, writes fail with `EPIPE`, listening fails), so the program
//! sees a connection that was closed and its number cannot be taken by another file; `cr_info`
//! lists what was dropped.
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler};
use crate::KindError;

/// The handler.
pub struct Unsupported;

/// Descriptor `fd`, which is `what`, cannot be saved because `why`: refused, or with
/// `--drop-unsupported` left out and noted.
pub(super) fn refuse(cx: &mut DumpCx<'_>, fd: i32, what: String, why: &str) -> Result<FdKind, KindError> {
    if cx.drop_unsupported {
        cx.dropped.push(format!("fd {fd}: {what}"));
        return Ok(FdKind::Dropped { what });
    }
    Err(KindError::Unsupported(format!(
        "PID {} fd {fd} is {what}: {why}; crest refuses to checkpoint what it cannot restore (--drop-unsupported checkpoints without it, and the restored process finds it closed)",
        cx.pid
    )))
}

impl FdHandler for Unsupported {
    fn name(&self) -> &'static str {
        "unsupported"
    }
    fn claims(&self, _link: &str, _md: &Metadata) -> bool {
        true
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, _info: &FdInfo) -> Result<FdKind, KindError> {
        let t = md.file_type();
        let dev = |kind: &str| format!("the {kind} device {link} ({}:{})", libc::major(md.rdev()), libc::minor(md.rdev()));
        let (what, why) = if t.is_char_device() {
            (dev("character"), "devices other than /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom and /dev/tty are not saved")
        } else if t.is_block_device() {
            (dev("block"), "devices are not saved")
        } else if let Some(kind) = link.strip_prefix("anon_inode:") {
            (format!("a {} descriptor", kind.trim_start_matches('[').trim_end_matches(']')), "this kind of descriptor is not saved yet")
        } else if link.ends_with(" (deleted)") {
            (link.to_string(), "files deleted while open are not saved yet")
        } else {
            (link.to_string(), "this kind of file is not saved yet")
        };
        refuse(cx, fd, what, why)
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Dropped { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Dropped { what } = kind else { return String::new() };
        format!("DROPPED: {what} (restored as a closed socket)")
    }
    fn open(&self, rec: &FdRecord, _cx: &mut super::PrepareCx) -> Result<super::Opened, String> {
        let (mine, other) = crest_ptrace::sys::socketpair(libc::AF_UNIX, libc::SOCK_STREAM).map_err(|e| format!("fd {}: a closed socket in place of what was dropped: {e}", rec.fd))?;
        drop(other);
        Ok(super::Opened::Fd(mine))
    }
}
