//! eventfd: the counter and `EFD_SEMAPHORE` come from fdinfo (`eventfd-count`, hexadecimal, and
//! `eventfd-semaphore`); restore creates a new eventfd and adds the counter with `write`.
use std::fs::Metadata;
use std::io::Write;

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{set_status_flags, DumpCx, FdHandler, PrepareCx};
use crate::KindError;

/// The handler.
pub struct EventFd;

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

impl FdHandler for EventFd {
    fn name(&self) -> &'static str {
        "eventfd"
    }
    fn claims(&self, link: &str, _md: &Metadata) -> bool {
        link == "anon_inode:[eventfd]"
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, _link: &str, _md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let count = field(&info.text, "eventfd-count:")
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .ok_or_else(|| KindError::Unsupported(format!("pid {} fd {fd}: eventfd without a readable counter", cx.pid)))?;
        let semaphore = field(&info.text, "eventfd-semaphore:").is_some_and(|v| v == "1");
        Ok(FdKind::EventFd { count, semaphore })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::EventFd { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::EventFd { count, semaphore } = kind else { return String::new() };
        format!("eventfd, counter {count}{}", if *semaphore { ", semaphore" } else { "" })
    }
    fn open(&self, rec: &FdRecord, _cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::EventFd { count, semaphore } = rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let f = crest_ptrace::sys::eventfd(0, if semaphore { libc::EFD_SEMAPHORE } else { 0 }).map_err(|e| format!("fd {}: {e}", rec.fd))?;
        if count > 0 {
            std::fs::File::from(f.try_clone().map_err(|e| e.to_string())?).write_all(&count.to_ne_bytes()).map_err(|e| format!("fd {}: setting the eventfd counter: {e}", rec.fd))?;
        }
        set_status_flags(&f, rec.flags)?;
        Ok(super::Opened::Fd(f))
    }
}
