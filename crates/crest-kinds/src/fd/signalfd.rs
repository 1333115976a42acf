//! signalfd: the set of signals it reads, from fdinfo; restore makes a new one for the same
//! set (the flags, `O_NONBLOCK`, come with the descriptor). Signals pending for the process
//! are saved and queued again with the process's signal state, so a signalfd finds them.
use std::fs::Metadata;

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler, PrepareCx};
use crate::KindError;

/// The handler.
pub struct SignalFd;

impl FdHandler for SignalFd {
    fn name(&self) -> &'static str {
        "signalfd"
    }
    fn claims(&self, link: &str, _md: &Metadata) -> bool {
        link == "anon_inode:[signalfd]"
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, _link: &str, _md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let mask = info
            .text
            .lines()
            .find_map(|l| l.strip_prefix("sigmask:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or_else(|| KindError::Unsupported(format!("PID {} fd {fd}: a signalfd whose mask this kernel does not show in fdinfo", cx.pid)))?;
        Ok(FdKind::SignalFd { mask })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::SignalFd { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::SignalFd { mask } = kind else { return String::new() };
        format!("signalfd for signals {mask:#x}")
    }
    fn open(&self, rec: &FdRecord, _cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::SignalFd { mask } = rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let fd = crest_ptrace::sys::signalfd(mask, (rec.flags as i32) & libc::O_NONBLOCK).map_err(|e| format!("fd {}: signalfd for mask {mask:#x}: {e}", rec.fd))?;
        Ok(super::Opened::Fd(fd))
    }
}
