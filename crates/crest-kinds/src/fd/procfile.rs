//! Files of `/proc/PID` (and that directory itself) open in a process of the image, `PID`
//! being a process of the image too (`/proc/self/maps`, a child's `/proc/CHILD/stat`): saved by
//! the PID and the path under it, and opened again at restart under the PID that process has
//! then, at the same offset. The process must be the holder itself, one of its ancestors or
//! one of its children (whose new PIDs are known when the holder's descriptors are restored);
//! another one is refused. A file of the `/proc/PID` of a process outside the image is a file
//! like another (reopened by path), unless that process is gone: then it is refused.
use std::fs::Metadata;
use std::os::unix::fs::OpenOptionsExt;

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler, PrepareCx};
use crate::KindError;

/// The handler.
pub struct ProcFile;

/// The PID and the path under `/proc/PID` of `link`, when it is in a `/proc/PID` directory.
fn split(link: &str) -> Option<(i32, &str)> {
    let rest = link.strip_prefix("/proc/")?;
    let (n, path) = rest.split_once('/').unwrap_or((rest, ""));
    Some((n.parse().ok()?, path))
}

fn parent_of(pid: i32) -> Option<i32> {
    Some(crest_proc::parse_stat(&crest_proc::read(pid, "stat").ok()?).ok()?.ppid)
}

/// Whether the restart knows the new PID of `owner` when it restores the descriptors of `pid`:
/// `pid` itself, its ancestors and its children are made before them.
fn known_at_restart(pid: i32, owner: i32) -> bool {
    if owner == pid || parent_of(owner) == Some(pid) {
        return true;
    }
    let mut at = pid;
    while let Some(p) = parent_of(at).filter(|&p| p > 0) {
        if p == owner {
            return true;
        }
        at = p;
    }
    false
}

impl FdHandler for ProcFile {
    fn name(&self) -> &'static str {
        "file of /proc/PID"
    }
    fn claims(&self, link: &str, md: &Metadata) -> bool {
        (md.file_type().is_file() || md.file_type().is_dir()) && !link.ends_with(" (deleted)") && split(link).is_some()
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let (owner, path) = split(link).expect("claimed");
        if !cx.all.iter().any(|o| o.pid == owner) {
            // Another process's: reopened by path (refused when that process is gone).
            return if md.file_type().is_dir() { super::directory::Directory.dump(cx, fd, link, md, info) } else { super::regular::Regular.dump(cx, fd, link, md, info) };
        }
        if !known_at_restart(cx.pid, owner) {
            return Err(KindError::Unsupported(format!(
                "pid {} fd {fd}: {link} is a file of process {owner}, in the checkpoint but neither this process, one of its ancestors nor one of its children; its new PID is not known when the descriptor is restored",
                cx.pid
            )));
        }
        if let Some(t) = path.strip_prefix("task/").and_then(|t| t.split('/').next()).and_then(|t| t.parse::<i32>().ok()) {
            if t != owner {
                return Err(KindError::Unsupported(format!(
                    "pid {} fd {fd}: {link} is a file of thread {t} of process {owner}, in the checkpoint; a thread gets a new ID at restart, and files of its /proc directory are not supported",
                    cx.pid
                )));
            }
        }
        Ok(FdKind::ProcFile { pid: owner, path: path.to_string(), pos: info.pos })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::ProcFile { .. })
    }
    fn sharing(&self, _kind: &FdKind) -> super::Sharing {
        // Opened in the husk, once the process it names has its new PID.
        super::Sharing::Process
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::ProcFile { pid, path, pos } = kind else { return String::new() };
        format!("/proc/{pid}/{path} of a process of the image, at offset {pos}")
    }
    fn open(&self, rec: &FdRecord, cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::ProcFile { pid, path, pos } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let now = cx.pids.get(pid).copied().ok_or_else(|| format!("fd {}: /proc/{pid}/{path}: process {pid} of the image has no new PID yet (it is not created before this one)", rec.fd))?;
        // The thread directory of the leader is named by the PID too.
        let own = format!("task/{pid}");
        let path = match path.strip_prefix(&own) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("task/{now}{rest}"),
            _ => path.clone(),
        };
        let full = if path.is_empty() { format!("/proc/{now}") } else { format!("/proc/{now}/{path}") };
        let acc = rec.flags & libc::O_ACCMODE as u32;
        let flags = super::reopen_flags(rec.flags) & !libc::O_ACCMODE;
        let f = std::fs::OpenOptions::new()
            .read(acc != libc::O_WRONLY as u32)
            .write(acc != libc::O_RDONLY as u32 && flags & libc::O_PATH == 0)
            .custom_flags(flags)
            .open(&full)
            .map_err(|e| format!("fd {}: reopening {full} (/proc/{pid}/{path} at the checkpoint): {e}", rec.fd))?;
        if *pos != 0 && flags & libc::O_PATH == 0 {
            std::io::Seek::seek(&mut &f, std::io::SeekFrom::Start(*pos)).map_err(|e| format!("fd {}: seeking {full} to {pos}: {e}", rec.fd))?;
        }
        Ok(super::Opened::Fd(f.into()))
    }
}
