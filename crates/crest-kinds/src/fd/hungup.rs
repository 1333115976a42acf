//! The slave of a pseudo-terminal whose master was closed. Closing the master hangs the
//! terminal up (reads give end of file, writes and most ioctls `EIO`, and the session loses it
//! as its controlling terminal) and devpts removes its node: the descriptor reads as
//! `/dev/pts/N (deleted)`. Such a terminal holds no state any more but its hung-up state.
//!
//! Restore makes a new pseudo-terminal, opens its slave and closes the master, which hangs
//! the slave up the same way. Its index is whatever devpts hands out (the old node is gone,
//! and no name of it can be used again by the program).
use std::fs::Metadata;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler, PrepareCx};
use crate::KindError;

/// The handler.
pub struct HungUpPty;

/// Whether `link`, of a character device `md`, is the slave of a Unix98 pseudo-terminal
/// (majors 136 to 143) whose node is gone.
fn hung_up_slave(link: &str, md: &Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    link.starts_with("/dev/pts/") && link.ends_with(" (deleted)") && md.file_type().is_char_device() && (136..144).contains(&libc::major(md.rdev()))
}

impl FdHandler for HungUpPty {
    fn name(&self) -> &'static str {
        "hung-up pseudo-terminal"
    }
    fn claims(&self, link: &str, md: &Metadata) -> bool {
        hung_up_slave(link, md)
    }
    fn dump(&self, _cx: &mut DumpCx<'_>, _fd: i32, link: &str, _md: &Metadata, _info: &FdInfo) -> Result<FdKind, KindError> {
        Ok(FdKind::HungUpPty { path: link.trim_end_matches(" (deleted)").to_string() })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::HungUpPty { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::HungUpPty { path } = kind else { return String::new() };
        format!("the slave {path} of a pseudo-terminal whose master was closed (hung up)")
    }
    fn open(&self, rec: &FdRecord, _cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::HungUpPty { path } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let fd = rec.fd;
        let what = format!("fd {fd}: the hung-up pseudo-terminal slave {path}");
        let m: std::os::fd::OwnedFd =
            std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC).open("/dev/ptmx").map_err(|e| format!("{what}: opening /dev/ptmx: {e}"))?.into();
        crest_ptrace::sys::set_tty_int(m.as_raw_fd(), crest_ptrace::sys::TtyInt::Lock, 0).map_err(|e| format!("{what}: unlocking a new pseudo-terminal: {e}"))?;
        let s = crest_ptrace::sys::pty_peer(m.as_raw_fd(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC).map_err(|e| format!("{what}: opening the slave of a new pseudo-terminal: {e}"))?;
        // Closing the master hangs the slave up.
        drop(m);
        super::set_status_flags(&s, rec.flags)?;
        Ok(super::Opened::Fd(s))
    }
}
