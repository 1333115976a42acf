//! fanotify groups. fdinfo shows the group's `fanotify_init` flags and the open flags of its
//! event files, then one line per mark: an inode mark with the inode's device, number and file
//! handle; a mount mark with the mount's id; a file system mark with its device; each with its
//! mark flags, mask and ignored mask. An inode's path is found by opening its handle (as for
//! inotify watches: `open_by_handle_at`, which needs `CAP_DAC_READ_SEARCH`), a mount's from
//! the process's `mountinfo`, a file system's from any mount of it.
//!
//! Restore makes a new group with the same flags and adds every mark again: its mask, then its
//! ignored mask, each with the mark's flags. A group of a class that gets permission events
//! (`FAN_CLASS_CONTENT`, `FAN_CLASS_PRE_CONTENT`) is refused at checkpoint: while the process
//! is frozen every access it is asked about would wait on it, crest's own included. Events
//! queued and not read at the checkpoint are lost (`cr_info` shows how many bytes); those the
//! restart itself causes are read away before the process runs ([`settle_restored`]).
use std::fs::Metadata;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use crest_image::{FanotifyMark, FdKind, FdRecord};
use crest_proc::FdInfo;

use super::inotify::{mount_of, path_of_handle, st_dev};
use super::{DumpCx, FdHandler, PrepareCx};
use crate::KindError;

/// The handler.
pub struct Fanotify;

/// `FAN_CLASS_CONTENT | FAN_CLASS_PRE_CONTENT`.
const PERMISSION_CLASSES: u32 = 0x4 | 0x8;
/// `FAN_MARK_ADD`, `FAN_MARK_MOUNT`, `FAN_MARK_FILESYSTEM`, `FAN_MARK_IGNORED_MASK`.
const MARK_ADD: u32 = 0x1;
const MARK_MOUNT: u32 = 0x10;
const MARK_FILESYSTEM: u32 = 0x100;
const MARK_IGNORED_MASK: u32 = 0x20;
/// `FAN_MARK_IGNORED_SURV_MODIFY`, `FAN_MARK_EVICTABLE`, `FAN_MARK_IGNORE`: the mark flags
/// fdinfo shows.
const MARK_SURV_MODIFY: u32 = 0x40;
const MARK_EVICTABLE: u32 = 0x200;
const MARK_IGNORE: u32 = 0x400;

/// What a mark line says.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    kind: u8,
    ino: u64,
    /// The kernel's encoding of the device (inode and file system marks).
    sdev: u64,
    mnt_id: u64,
    mflags: u32,
    mask: u64,
    ignored_mask: u64,
    handle_type: i32,
    handle: Vec<u8>,
}

/// `fanotify flags:X event-flags:Y`.
fn parse_flags(l: &str) -> Option<(u32, u32)> {
    let rest = l.strip_prefix("fanotify flags:")?;
    let (flags, ev) = rest.split_once(' ')?;
    Some((u32::from_str_radix(flags, 16).ok()?, u32::from_str_radix(ev.trim().strip_prefix("event-flags:")?, 16).ok()?))
}

/// One `fanotify ino:...`, `fanotify mnt_id:...` or `fanotify sdev:...` line.
fn parse_mark(l: &str) -> Option<Line> {
    let rest = l.strip_prefix("fanotify ")?;
    let get = |key: &str| rest.split_whitespace().find_map(|f| f.strip_prefix(key));
    let hex = |key: &str| get(key).and_then(|v| u64::from_str_radix(v, 16).ok());
    let mut line = Line { kind: 0, ino: 0, sdev: 0, mnt_id: 0, mflags: hex("mflags:")? as u32, mask: hex("mask:")?, ignored_mask: hex("ignored_mask:")?, handle_type: 0, handle: Vec::new() };
    if rest.starts_with("ino:") {
        let handle = get("f_handle:")?;
        line.handle = (0..handle.len() / 2).map(|i| u8::from_str_radix(handle.get(2 * i..2 * i + 2)?, 16).ok()).collect::<Option<Vec<u8>>>()?;
        line.handle_type = i32::from_str_radix(get("fhandle-type:")?, 16).ok()?;
        line.ino = hex("ino:")?;
        line.sdev = hex("sdev:")?;
    } else if rest.starts_with("mnt_id:") {
        line.kind = 1;
        line.mnt_id = hex("mnt_id:")?;
    } else if rest.starts_with("sdev:") {
        line.kind = 2;
        line.sdev = hex("sdev:")?;
    } else {
        return None;
    }
    Some(line)
}

/// The mount point (in the process's view) of mount `mnt_id` of `pid`, and its device.
fn mount_point(pid: i32, mnt_id: u64) -> Option<(String, u64)> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first()?.parse::<u64>().ok()? != mnt_id {
            return None;
        }
        let (ma, mi) = f.get(2)?.split_once(':')?;
        Some((f.get(4)?.replace("\\040", " "), crest_proc::makedev(ma.parse().ok()?, mi.parse().ok()?)))
    })
}

/// In `cr_restart`, once the restored process `pid` (with descriptors `recs`) is filled and
/// before it runs: reads away the events its fanotify groups queued while the restart opened
/// and closed files (events unread at the checkpoint are not restored), closing the event
/// files reading them opens.
pub fn settle_restored(pid: i32, recs: &[FdRecord]) -> Result<(), String> {
    let ours: Vec<&FdRecord> = recs.iter().filter(|r| matches!(r.kind, FdKind::Fanotify { .. })).collect();
    if ours.is_empty() {
        return Ok(());
    }
    let pidfd = crest_ptrace::sys::pidfd_open(pid).map_err(|e| format!("PID {pid}: {e}"))?;
    for r in ours {
        let f = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), r.fd).map_err(|e| format!("fd {}: fanotify: taking a copy of it: {e}", r.fd))?;
        let mut buf = vec![0u8; 8192];
        while crest_ptrace::sys::bytes_readable(f.as_raw_fd()).map_err(|e| format!("fd {}: fanotify: {e}", r.fd))? > 0 {
            let file = std::fs::File::from(f.try_clone().map_err(|e| format!("fd {}: {e}", r.fd))?);
            let n = std::io::Read::read(&mut &file, &mut buf).map_err(|e| format!("fd {}: fanotify: emptying its queue: {e}", r.fd))?;
            // struct fanotify_event_metadata: event_len (u32), vers, reserved, metadata_len
            // (u16), mask (u64), fd (i32), pid (i32).
            let mut at = 0;
            while at + 24 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or([0; 4])) as usize;
                let efd = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().unwrap_or([0; 4]));
                if efd >= 0 {
                    crest_ptrace::sys::close_unowned(efd);
                }
                if len == 0 {
                    break;
                }
                at += len;
            }
            if n == 0 {
                break;
            }
        }
    }
    Ok(())
}

impl FdHandler for Fanotify {
    fn name(&self) -> &'static str {
        "fanotify"
    }
    fn claims(&self, link: &str, _md: &Metadata) -> bool {
        link == "anon_inode:[fanotify]"
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, _link: &str, _md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let pid = cx.pid;
        let who = format!("PID {pid} fd {fd}: fanotify group");
        let (flags, event_flags) = info.text.lines().find_map(parse_flags).ok_or_else(|| KindError::Unsupported(format!("{who}: this kernel shows its flags in a form crest does not read")))?;
        if flags & PERMISSION_CLASSES != 0 {
            return Err(KindError::Unsupported(format!(
                "{who} is of a class that gets permission events (fanotify_init flags {flags:#x}): while the process is frozen every access it decides on would wait, crest's own included; not supported"
            )));
        }
        let mut marks = Vec::new();
        for text in info.text.lines().filter(|l| l.starts_with("fanotify ") && !l.starts_with("fanotify flags:")) {
            let l = parse_mark(text).ok_or_else(|| KindError::Unsupported(format!("{who}: a mark this kernel shows in a form crest does not read: {text}")))?;
            let (path, dev) = match l.kind {
                0 => {
                    let path = path_of_handle(l.sdev, l.ino, l.handle_type, &l.handle)
                        .map_err(|why| KindError::Unsupported(format!("{who}: the mark on inode {} of device {}:{}: its path cannot be found: {why}", l.ino, l.sdev >> 20, l.sdev & 0xf_ffff)))?;
                    (path, st_dev(l.sdev))
                }
                1 => mount_point(pid, l.mnt_id).ok_or_else(|| KindError::Unsupported(format!("{who}: the mark on mount {} (not in /proc/{pid}/mountinfo)", l.mnt_id)))?,
                _ => {
                    let dev = st_dev(l.sdev);
                    let path = mount_of(dev)
                        .ok_or_else(|| KindError::Unsupported(format!("{who}: the mark on the file system of device {}:{}: no mount of it was found", l.sdev >> 20, l.sdev & 0xf_ffff)))?;
                    (path, dev)
                }
            };
            marks.push(FanotifyMark { kind: l.kind, mflags: l.mflags, mask: l.mask, ignored_mask: l.ignored_mask, path, dev, ino: l.ino });
        }
        let lost = match cx.pidfd.as_ref() {
            Some(p) => crest_ptrace::sys::pidfd_getfd(p.as_raw_fd(), fd).and_then(|f| crest_ptrace::sys::bytes_readable(f.as_raw_fd())).map_or(0, |n| n.max(0) as u32),
            None => 0,
        };
        Ok(FdKind::Fanotify { flags, event_flags, marks, lost })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Fanotify { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Fanotify { flags, marks, lost, .. } = kind else { return String::new() };
        let list: Vec<String> =
            marks.iter().map(|m| format!("{} {} ({:#x}, ignoring {:#x})", ["inode", "mount", "file system"].get(usize::from(m.kind)).unwrap_or(&"?"), m.path, m.mask, m.ignored_mask)).collect();
        let lost = if *lost > 0 { format!("; {lost} bytes of events unread at the checkpoint are not restored") } else { "; events unread at a checkpoint are not restored".to_string() };
        format!("fanotify (flags {flags:#x}), {} marks: {}{lost}", marks.len(), list.join(", "))
    }
    fn open(&self, rec: &FdRecord, _cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Fanotify { flags, event_flags, marks, .. } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let fd = rec.fd;
        let g = crest_ptrace::sys::fanotify_init(*flags, *event_flags).map_err(|e| format!("fd {fd}: fanotify_init({flags:#x}, {event_flags:#x}): {e}"))?;
        // fdinfo lists the newest mark first: the oldest is added first, for the same order.
        for m in marks.iter().rev() {
            let what = ["inode", "mount", "file system"].get(usize::from(m.kind)).unwrap_or(&"?");
            match std::fs::metadata(&m.path) {
                Ok(md) if md.dev() == m.dev && (m.kind != 0 || md.ino() == m.ino) => {}
                Ok(_) => return Err(format!("fd {fd}: fanotify {what} mark on {}: it names another file system or file now", m.path)),
                Err(e) => return Err(format!("fd {fd}: fanotify {what} mark on {}: {e}", m.path)),
            }
            let on = match m.kind {
                1 => MARK_MOUNT,
                2 => MARK_FILESYSTEM,
                _ => 0,
            };
            let evictable = m.mflags & MARK_EVICTABLE;
            if m.mask != 0 {
                crest_ptrace::sys::fanotify_mark(g.as_raw_fd(), MARK_ADD | on | evictable, m.mask, &m.path)
                    .map_err(|e| format!("fd {fd}: fanotify {what} mark on {} (mask {:#x}): {e}", m.path, m.mask))?;
            }
            if m.ignored_mask != 0 {
                let how = if m.mflags & MARK_IGNORE != 0 { MARK_IGNORE } else { MARK_IGNORED_MASK };
                crest_ptrace::sys::fanotify_mark(g.as_raw_fd(), MARK_ADD | on | evictable | how | (m.mflags & MARK_SURV_MODIFY), m.ignored_mask, &m.path)
                    .map_err(|e| format!("fd {fd}: fanotify {what} mark on {} (ignored mask {:#x}): {e}", m.path, m.ignored_mask))?;
            }
        }
        // Blocking again if it was.
        super::set_status_flags(&g, rec.flags)?;
        Ok(super::Opened::Fd(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_lines_are_read() {
        assert_eq!(parse_flags("fanotify flags:10 event-flags:8000"), Some((0x10, 0x8000)));
        let l = parse_mark("fanotify ino:263 sdev:fe00000 mflags:0 mask:8 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:6302000000000000").expect("an inode mark");
        assert_eq!((l.kind, l.ino, l.sdev, l.mask, l.handle_type, l.handle.len()), (0, 0x263, 0xfe0_0000, 8, 1, 8));
        let l = parse_mark("fanotify mnt_id:1b mflags:40 mask:40000020 ignored_mask:3").expect("a mount mark");
        assert_eq!((l.kind, l.mnt_id, l.mflags, l.mask, l.ignored_mask), (1, 0x1b, 0x40, 0x4000_0020, 3));
        let l = parse_mark("fanotify sdev:800001 mflags:0 mask:2 ignored_mask:0").expect("a file system mark");
        assert_eq!((l.kind, l.sdev), (2, 0x80_0001));
        assert_eq!(parse_mark("fanotify flags:0 event-flags:0"), None);
    }
}
