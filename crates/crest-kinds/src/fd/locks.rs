//! File locks held through a descriptor: `flock` locks, POSIX (`fcntl`) record locks and
//! open-file-description locks, each with its mode and byte range, read from the `lock:` lines
//! of the descriptor's fdinfo. They are taken again inside the husk once its descriptors are in
//! place (a POSIX lock then belongs to the restored process, a `flock` or OFD lock to the open
//! file, shared as before), without waiting: if another process holds a conflicting lock now,
//! the restart is refused, naming the file. Leases are [`super::lease`]'s; other kinds of lock
//! are refused at checkpoint time (or dropped with `--drop-unsupported`).
use crest_image::{FdRecord, FileLock, LockKind};
use crest_proc::FdInfo;

use super::DumpCx;
use crate::KindError;

/// The locks held through descriptor `fd` (which is `link`).
pub(super) fn dump(cx: &mut DumpCx<'_>, fd: i32, link: &str, info: &FdInfo) -> Result<Vec<FileLock>, KindError> {
    let mut out = Vec::new();
    for line in info.text.lines().filter_map(|l| l.strip_prefix("lock:")) {
        // "1: POSIX  ADVISORY  WRITE 14174 fe:00:10010679 0 9"; "1: -> ..." is a waiter.
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.get(1) == Some(&"->") {
            continue;
        }
        let (kind, mode) = (w.get(1).copied().unwrap_or("?"), w.get(3).copied().unwrap_or("?"));
        let kind = match kind {
            "FLOCK" => LockKind::Flock,
            "POSIX" => LockKind::Posix,
            "OFDLCK" => LockKind::Ofd,
            "LEASE" if super::lease::parse(&w, info.flags).is_some() => {
                out.extend(super::lease::parse(&w, info.flags));
                continue;
            }
            other => {
                let what = format!("a {} on {link}", if other == "LEASE" { "lease".to_string() } else { format!("{other} lock") });
                if cx.drop_unsupported {
                    cx.dropped.push(format!("fd {fd}: {what} (not held after a restart)"));
                    continue;
                }
                return Err(KindError::Unsupported(format!(
                    "PID {} holds {what} through fd {fd} ({}): this kind of lock is not saved yet; crest refuses to checkpoint it (--drop-unsupported checkpoints without it)",
                    cx.pid,
                    line.trim()
                )));
            }
        };
        let start: u64 = w.get(6).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len = match w.get(7) {
            Some(&"EOF") | None => 0,
            Some(e) => e.parse::<u64>().map(|e| e + 1 - start).unwrap_or(0),
        };
        out.push(FileLock { kind, write: mode == "WRITE", start, len, breaking: 0 });
    }
    Ok(out)
}

/// The file locks of a process, taken again inside the husk.
pub struct Locks;

impl crate::process::ProcessKind for Locks {
    fn name(&self) -> &'static str {
        "file locks"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["fds"]
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Husk
    }
    fn after(&self) -> &'static [&'static str] {
        // Taken through the descriptors.
        &["descriptors"]
    }
    fn prepare(&self, cx: &mut crate::process::HuskCx<'_>) -> Result<(), String> {
        restore(&cx.p.fds)
    }
}

/// Inside the husk, once every descriptor of `recs` is in place: takes their locks again.
pub fn restore(recs: &[FdRecord]) -> Result<(), String> {
    for r in recs {
        for l in &r.locks {
            let (what, res) = match l.kind {
                LockKind::Flock => ("flock", crest_ptrace::sys::flock(r.fd, if l.write { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB)),
                LockKind::Lease => {
                    super::lease::take(r, l)?;
                    continue;
                }
                LockKind::Posix | LockKind::Ofd => {
                    let cmd = if l.kind == LockKind::Posix { libc::F_SETLK } else { libc::F_OFD_SETLK };
                    (
                        if l.kind == LockKind::Posix { "POSIX" } else { "open-file-description" },
                        crest_ptrace::sys::set_lock(r.fd, cmd, if l.write { libc::F_WRLCK } else { libc::F_RDLCK }, l.start, l.len),
                    )
                }
            };
            res.map_err(|e| {
                let file = std::fs::read_link(format!("/proc/self/fd/{}", r.fd)).map(|p| p.display().to_string()).unwrap_or_else(|_| format!("fd {}", r.fd));
                let busy = matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES));
                format!(
                    "fd {}: taking the {what} {} lock on {file} again: {e}{}",
                    r.fd,
                    if l.write { "write" } else { "read" },
                    if busy { " (another process holds a lock on it now; the restored process cannot go on without its own)" } else { "" }
                )
            })?;
        }
    }
    Ok(())
}
