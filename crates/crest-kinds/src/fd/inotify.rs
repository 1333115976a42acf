//! inotify instances. fdinfo lists each watch: its watch descriptor, mask, inode, device and
//! a file handle of the watched file. The path is found by opening the handle
//! (`open_by_handle_at` on a mount of that device, which needs `CAP_DAC_READ_SEARCH`) and
//! reading the link of the descriptor it gives; it is checked to still name that inode, else
//! the checkpoint is refused naming the descriptor and the inode.
//!
//! Restore makes a new instance with the same flags and adds every watch again with its mask,
//! in order of watch descriptor. The kernel hands out watch descriptors increasing from the
//! last one it gave: a watch that gets a lower one than it had is removed and added again
//! until it gets its own (the `IN_IGNORED` events this queues are read away before the
//! process runs); one that would get a higher one cannot, and the restart is refused.
//! Events queued and not read at the checkpoint are lost (`cr_info` shows how many bytes).
use std::fs::Metadata;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use crest_image::{FdKind, FdRecord, InotifyWatch};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler, PrepareCx};
use crate::KindError;

/// The handler.
pub struct Inotify;

/// `IN_DONT_FOLLOW`.
const DONT_FOLLOW: u32 = 0x0200_0000;
/// `IN_MASK_CREATE | IN_MASK_ADD`: how to add, not what to watch.
const HOW_TO_ADD: u32 = 0x1000_0000 | 0x2000_0000;

/// One `inotify wd:... ino:... sdev:... mask:... fhandle-bytes:... fhandle-type:... f_handle:...` line.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    wd: i32,
    ino: u64,
    /// The kernel's encoding (`MAJOR << 20 | MINOR`).
    sdev: u64,
    mask: u32,
    handle_type: i32,
    handle: Vec<u8>,
}

fn parse_line(l: &str) -> Option<Line> {
    let rest = l.strip_prefix("inotify ")?;
    let get = |key: &str| rest.split_whitespace().find_map(|f| f.strip_prefix(key));
    let hex = |key: &str| get(key).and_then(|v| u64::from_str_radix(v, 16).ok());
    let handle = get("f_handle:")?;
    let handle = (0..handle.len() / 2).map(|i| u8::from_str_radix(handle.get(2 * i..2 * i + 2)?, 16).ok()).collect::<Option<Vec<u8>>>()?;
    Some(Line { wd: get("wd:")?.parse().ok()?, ino: hex("ino:")?, sdev: hex("sdev:")?, mask: hex("mask:")? as u32, handle_type: get("fhandle-type:")?.parse().ok()?, handle })
}

/// `st_dev` of the kernel's `dev_t` encoding.
pub(super) fn st_dev(sdev: u64) -> u64 {
    crest_proc::makedev(sdev >> 20, sdev & 0xf_ffff)
}

/// A mount point of the file system on `dev` (as `st_dev`), the mount of its root first;
/// none for the kernel's internal file systems (shared memory, aio rings, ...).
pub(super) fn mount_of(dev: u64) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found: Option<String> = None;
    for l in info.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(mm), Some(root), Some(point)) = (f.get(2), f.get(3), f.get(4)) else { continue };
        let Some((ma, mi)) = mm.split_once(':') else { continue };
        let (Ok(ma), Ok(mi)) = (ma.parse::<u64>(), mi.parse::<u64>()) else { continue };
        if crest_proc::makedev(ma, mi) != dev {
            continue;
        }
        let point = point.replace("\\040", " ");
        if *root == "/" {
            return Some(point);
        }
        found.get_or_insert(point);
    }
    found
}

/// The path of the watched file of `l`, checked to be that inode.
fn watched_path(l: &Line) -> Result<String, String> {
    path_of_handle(l.sdev, l.ino, l.handle_type, &l.handle)
}

/// A path of inode `ino` on device `sdev` (the kernel's encoding), found by its file handle
/// (as fdinfo shows it), checked to be that inode.
pub(super) fn path_of_handle(sdev: u64, ino: u64, handle_type: i32, handle: &[u8]) -> Result<String, String> {
    let dev = st_dev(sdev);
    let mount = mount_of(dev).ok_or_else(|| format!("no mount of its device {}:{} was found", sdev >> 20, sdev & 0xf_ffff))?;
    let m = std::fs::File::open(&mount).map_err(|e| format!("opening the mount {mount}: {e}"))?;
    let f = crest_ptrace::sys::open_by_handle(m.as_raw_fd(), handle_type, handle, libc::O_PATH).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            "finding it by its file handle needs CAP_DAC_READ_SEARCH (checkpoint as root)".to_string()
        } else {
            format!("opening it by its file handle: {e}")
        }
    })?;
    let path = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).map_err(|e| format!("reading its path: {e}"))?;
    let path = path.to_str().ok_or("its path is not UTF-8")?.to_string();
    if path.ends_with(" (deleted)") || !path.starts_with('/') {
        return Err(format!("it has no path any more ({path})"));
    }
    match std::fs::symlink_metadata(&path) {
        Ok(md) if md.ino() == ino && md.dev() == dev => Ok(path),
        Ok(md) => Err(format!("{path} is inode {} of device {} now", md.ino(), md.dev())),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

/// A descriptor of the process open on the deleted file that the watch of `l` is on.
fn open_deleted(cx: &DumpCx<'_>, l: &Line) -> Option<i32> {
    let dev = st_dev(l.sdev);
    cx.own()
        .filter(|o| o.link.starts_with('/') && o.link.ends_with(" (deleted)"))
        .map(|o| o.fd)
        .find(|&n| std::fs::metadata(format!("/proc/{}/fd/{n}", cx.pid)).is_ok_and(|md| md.ino() == l.ino && md.dev() == dev && md.file_type().is_file()))
}

/// In `cr_restart`, once the restored process `pid` (with descriptors `recs`) is filled and
/// before it runs: empties the queues of its inotify instances. Events unread at the
/// checkpoint are not restored, so what is queued by then came from the restart itself (the
/// files it opened and closed again to make the process's descriptors, some of them watched).
pub fn settle_restored(pid: i32, recs: &[FdRecord]) -> Result<(), String> {
    let ours: Vec<&FdRecord> = recs.iter().filter(|r| matches!(r.kind, FdKind::Inotify { .. })).collect();
    if ours.is_empty() {
        return Ok(());
    }
    let pidfd = crest_ptrace::sys::pidfd_open(pid).map_err(|e| format!("PID {pid}: {e}"))?;
    for r in ours {
        let i = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), r.fd).map_err(|e| format!("fd {}: inotify: taking a copy of it: {e}", r.fd))?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = crest_ptrace::sys::bytes_readable(i.as_raw_fd()).map_err(|e| format!("fd {}: inotify: {e}", r.fd))?;
            if n <= 0 {
                break;
            }
            buf.resize(buf.len().max(n as usize), 0);
            std::io::Read::read(&mut &std::fs::File::from(i.try_clone().map_err(|e| format!("fd {}: {e}", r.fd))?), &mut buf).map_err(|e| format!("fd {}: inotify: emptying its queue: {e}", r.fd))?;
        }
    }
    Ok(())
}

impl FdHandler for Inotify {
    fn name(&self) -> &'static str {
        "inotify"
    }
    fn claims(&self, link: &str, _md: &Metadata) -> bool {
        link == "anon_inode:inotify"
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, _link: &str, _md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let pid = cx.pid;
        let mut watches = Vec::new();
        for text in info.text.lines().filter(|l| l.starts_with("inotify ")) {
            let l = parse_line(text).ok_or_else(|| KindError::Unsupported(format!("PID {pid} fd {fd}: an inotify watch this kernel shows in a form crest does not read: {text}")))?;
            let mut mask = l.mask & !HOW_TO_ADD;
            let path = match watched_path(&l) {
                Ok(path) => path,
                // A file deleted while open, watched and open in the process: watched again
                // through that descriptor (its file is made again for the image).
                Err(why) => match open_deleted(cx, &l) {
                    Some(other) => {
                        watches.push(InotifyWatch { wd: l.wd, mask, path: String::new(), dev: st_dev(l.sdev), ino: l.ino, open_as: Some(other) });
                        continue;
                    }
                    None => {
                        return Err(KindError::Unsupported(format!(
                            "PID {pid} fd {fd}: inotify watch {} on inode {} of device {}:{}: its path cannot be found: {why}, and no descriptor of the process holds it",
                            l.wd,
                            l.ino,
                            l.sdev >> 20,
                            l.sdev & 0xf_ffff
                        )))
                    }
                },
            };
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                mask |= DONT_FOLLOW;
            }
            watches.push(InotifyWatch { wd: l.wd, mask, path, dev: st_dev(l.sdev), ino: l.ino, open_as: None });
        }
        watches.sort_by_key(|w| w.wd);
        let lost = match cx.pidfd.as_ref() {
            Some(p) => crest_ptrace::sys::pidfd_getfd(p.as_raw_fd(), fd).and_then(|f| crest_ptrace::sys::bytes_readable(f.as_raw_fd())).map_or(0, |n| n.max(0) as u32),
            None => 0,
        };
        Ok(FdKind::Inotify { watches, lost })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Inotify { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Inotify { watches, lost } = kind else { return String::new() };
        let list: Vec<String> = watches.iter().map(|w| format!("{} {} ({:#x})", w.wd, w.path, w.mask)).collect();
        let lost = if *lost > 0 { format!("; {lost} bytes of events unread at the checkpoint are not restored") } else { "; events unread at a checkpoint are not restored".to_string() };
        format!("inotify, {} watches: {}{lost}", watches.len(), list.join(", "))
    }
    fn open(&self, rec: &FdRecord, cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Inotify { watches, .. } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let fd = rec.fd;
        // Watches of deleted files are added through the descriptors that hold them.
        let waits: Vec<i32> = watches.iter().filter_map(|w| w.open_as).filter(|o| !cx.placed.contains(o)).collect();
        if !waits.is_empty() {
            return Ok(super::Opened::NotYet(waits));
        }
        let i = crest_ptrace::sys::inotify_init(libc::O_NONBLOCK).map_err(|e| format!("fd {fd}: inotify: {e}"))?;
        let mut placed: Vec<i32> = Vec::new();
        for w in watches {
            let path = match w.open_as {
                Some(other) => format!("/proc/self/fd/{other}"),
                None => w.path.clone(),
            };
            loop {
                let got = crest_ptrace::sys::inotify_add_watch(i.as_raw_fd(), &path, w.mask).map_err(|e| format!("fd {fd}: watching {} again (inotify watch {}): {e}", w.path, w.wd))?;
                if got == w.wd {
                    break;
                }
                if got > w.wd || placed.contains(&got) {
                    let why = if placed.contains(&got) { format!("it is the file of watch {got} now") } else { format!("the kernel gives it {got}") };
                    return Err(format!("fd {fd}: inotify watch {} on {} cannot get its number back: {why}", w.wd, w.path));
                }
                crest_ptrace::sys::inotify_rm_watch(i.as_raw_fd(), got).map_err(|e| format!("fd {fd}: inotify: removing watch {got}: {e}"))?;
            }
            placed.push(w.wd);
        }
        // The IN_IGNORED events of the watches removed on the way.
        let mut buf = [0u8; 4096];
        while std::io::Read::read(&mut &std::fs::File::from(i.try_clone().map_err(|e| format!("fd {fd}: {e}"))?), &mut buf).is_ok_and(|n| n > 0) {}
        // Blocking again if it was.
        super::set_status_flags(&i, rec.flags)?;
        Ok(super::Opened::Fd(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_line_is_read() {
        let l = parse_line("inotify wd:3 ino:2a3 sdev:800001 mask:fce ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a3020000a8c3e9b3").expect("parsed");
        assert_eq!(l, Line { wd: 3, ino: 0x2a3, sdev: 0x800001, mask: 0xfce, handle_type: 1, handle: vec![0xa3, 0x02, 0, 0, 0xa8, 0xc3, 0xe9, 0xb3] });
        assert_eq!(st_dev(l.sdev), crest_proc::makedev(8, 1));
        assert_eq!(parse_line("pos:\t0"), None);
    }

    /// A watch of this process's own is found again by its handle, then restored with its
    /// number after a gap.
    #[test]
    fn watches_are_found_and_get_their_numbers_back() {
        if crest_ptrace::sys::euid() != 0 {
            return;
        }
        let dir = std::env::temp_dir().join(format!("crest-inotify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a test directory");
        let path = dir.to_str().expect("utf8").to_string();
        let i = crest_ptrace::sys::inotify_init(0).expect("inotify");
        let wd = crest_ptrace::sys::inotify_add_watch(i.as_raw_fd(), &path, libc::IN_CREATE).expect("a watch");
        let text = crest_proc::read(std::process::id() as i32, &format!("fdinfo/{}", i.as_raw_fd())).expect("fdinfo");
        let l = text.lines().find_map(parse_line).expect("a watch line");
        assert_eq!((l.wd, l.mask & libc::IN_CREATE), (wd, libc::IN_CREATE));
        assert_eq!(watched_path(&l), Ok(path.clone()));
        let rec = super::super::tests::record(10, 1, FdKind::Inotify { watches: vec![InotifyWatch { wd: 5, mask: libc::IN_CREATE, path: path.clone(), dev: 0, ino: 0, open_as: None }], lost: 0 });
        let Ok(super::super::Opened::Fd(f)) = Inotify.open(&rec, &mut PrepareCx::new(100)) else { panic!("not restored") };
        std::fs::write(dir.join("x"), b"").expect("a file");
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut std::fs::File::from(f), &mut buf).expect("an event");
        assert!(n >= 16 && i32::from_ne_bytes(buf[..4].try_into().expect("4 bytes")) == 5, "the event comes on watch 5");
        let _ = std::fs::remove_dir_all(dir);
    }
}
