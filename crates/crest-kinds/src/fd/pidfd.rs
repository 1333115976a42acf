//! pidfds (`pidfd_open`, `clone(CLONE_PIDFD)`): a descriptor that names a process. fdinfo gives
//! the PID it names (-1 once that process is dead and reaped).
//!
//! A pidfd of a process of the image is made again on that process once it is restored
//! (`pidfd_open` in the husk of the holder, with `PIDFD_NONBLOCK` and `PIDFD_THREAD` as they
//! were); the husk waits for the named process's husk to exist, and checks that it descends
//! from `cr_restart`. That needs the processes restored under their own PIDs: with
//! `cr_restart --no-restore-pid` the restart is refused, naming the descriptor (unless it names
//! its holder). A pidfd of a process outside the image is refused at checkpoint time: after a
//! restart its PID would name another process, or none. So is one naming a thread
//! (`PIDFD_THREAD` on a thread that does not lead its process) or a zombie. A pidfd whose open
//! file several processes share (inherited through `fork`) comes back as one open file in
//! each: they name the same process, but no longer share their status flags.
//!
//! A pidfd of a dead process: nothing of that process is left but the pidfd, which answers
//! that it is dead (no PID in fdinfo, `ESRCH` from `pidfd_send_signal`, readable to `poll`)
//! and, since Linux 6.15, how it ended (`PIDFD_INFO_EXIT`). `cr_restart` makes a process that
//! ends the same way at once, opens on it every pidfd that named that one dead process (they
//! share their inode on pidfs, and keep sharing it), and reaps it before any husk is made: the
//! restored pidfds name a process that is dead, as they did, and nothing else. The PID number
//! the process had is not kept (nothing reads it from the pidfd of a dead process); what else
//! the kernel keeps of a dead process for its pidfds beyond the exit status (its control group,
//! `PIDFD_INFO_CGROUPID`) is that of the process made for it, which is `cr_restart`'s.
use std::fs::Metadata;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicI32, Ordering};

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler, Opened, PrepareCx, Sharing};
use crate::KindError;

/// The handler.
pub struct Pidfd;

/// `PIDFD_NONBLOCK` (`O_NONBLOCK`) and `PIDFD_THREAD` (`O_EXCL`): the flags `pidfd_open` takes.
const OPEN_FLAGS: u32 = (libc::O_NONBLOCK | libc::O_EXCL) as u32;

/// The PID of `cr_restart` when it restores processes under their own PIDs (0 otherwise), for
/// the husks it forks.
static RESTORER: AtomicI32 = AtomicI32::new(0);

/// Says, before the husks are made, whether the image's processes get their own PIDs back:
/// pidfds of them can then be made again (see the module's documentation).
pub fn pids_kept(kept: bool) {
    RESTORER.store(if kept { std::process::id() as i32 } else { 0 }, Ordering::SeqCst);
}

/// How long a husk waits for the husk of a process it has a pidfd of.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

fn field<'a>(info: &'a FdInfo, key: &str) -> Option<&'a str> {
    info.text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// The command name of process `pid`, for messages.
fn comm(pid: i32) -> String {
    crest_proc::read(pid, "comm").map(|c| c.trim().to_string()).unwrap_or_else(|_| "?".into())
}

/// The parent of `pid`, from `/proc/PID/stat`.
fn parent(pid: i32) -> Option<i32> {
    let stat = crest_proc::read(pid, "stat").ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` descends from `ancestor`.
fn descends(pid: i32, ancestor: i32) -> bool {
    let mut p = pid;
    for _ in 0..4096 {
        match parent(p) {
            Some(q) if q == ancestor => return true,
            Some(q) if q > 1 => p = q,
            _ => return false,
        }
    }
    false
}

/// A pidfd of `pid`, a process of the image restored by `cr_restart` (`restorer`), once its
/// husk exists.
fn open_restored(fd: i32, pid: i32, flags: u32, restorer: i32) -> Result<std::os::fd::OwnedFd, String> {
    let start = std::time::Instant::now();
    loop {
        if descends(pid, restorer) {
            let p = crest_ptrace::sys::pidfd_open_with(pid, flags).map_err(|e| format!("fd {fd}: a pidfd of process {pid} again: {e}"))?;
            // Still the same process, now that the pidfd holds it.
            if descends(pid, restorer) {
                return Ok(p);
            }
        }
        if start.elapsed() > WAIT {
            return Err(format!("fd {fd}: a pidfd of process {pid}: no restored process {pid} appeared within {} s", WAIT.as_secs()));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

impl FdHandler for Pidfd {
    fn name(&self) -> &'static str {
        "pidfd"
    }
    fn claims(&self, link: &str, _md: &Metadata) -> bool {
        link == "anon_inode:[pidfd]"
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, _link: &str, md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let me = cx.pid;
        let pid: i32 =
            field(info, "Pid:").and_then(|v| v.parse().ok()).ok_or_else(|| KindError::Unsupported(format!("PID {me} fd {fd}: a pidfd whose process this kernel does not show in fdinfo")))?;
        if pid == -1 {
            let exit = cx.pidfd.as_ref().and_then(|p| crest_ptrace::sys::pidfd_getfd(p.as_raw_fd(), fd).ok()).and_then(|f| crest_ptrace::sys::pidfd_exit_status(f.as_raw_fd()));
            return Ok(FdKind::Pidfd { pid: -1, own: false, ino: md.ino(), exit });
        }
        use super::unsupported::refuse;
        if pid == 0 {
            return refuse(cx, fd, "a pidfd of a process in another PID namespace".into(), "it cannot be named again after a restart");
        }
        if cx.image.contains(&pid) {
            return Ok(FdKind::Pidfd { pid, own: pid == me, ino: md.ino(), exit: None });
        }
        let zombie = crest_proc::read(pid, "stat").ok().and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z'))).unwrap_or(false);
        if zombie {
            return refuse(cx, fd, format!("a pidfd of zombie process {pid}"), "pidfds of zombies are not saved yet");
        }
        let tgid: Option<i32> = crest_proc::read(pid, "status").ok().and_then(|s| s.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok()));
        match tgid {
            Some(t) if t != pid && cx.image.contains(&t) => refuse(cx, fd, format!("a pidfd of thread {pid} of process {t}"), "pidfds of threads are not saved yet"),
            _ => refuse(
                cx,
                fd,
                format!("a pidfd of process {pid} ({}), which is not in the checkpoint", comm(pid)),
                "after a restart that PID would name another process, or none; checkpoint that process too (its tree or session)",
            ),
        }
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Pidfd { .. })
    }
    fn sharing(&self, kind: &FdKind) -> Sharing {
        match kind {
            // The dead process is made once for the image, by cr_restart.
            FdKind::Pidfd { pid: -1, .. } => Sharing::Image,
            // The named process exists only once the husks do.
            _ => Sharing::Process,
        }
    }
    fn describe(&self, kind: &FdKind) -> String {
        match kind {
            FdKind::Pidfd { pid: -1, exit: Some(s), .. } => format!("pidfd of a dead process (wait status {s:#x})"),
            FdKind::Pidfd { pid: -1, .. } => "pidfd of a dead process".to_string(),
            FdKind::Pidfd { own: true, .. } => "pidfd of its own process".to_string(),
            FdKind::Pidfd { pid, .. } => format!("pidfd of process {pid}"),
            _ => String::new(),
        }
    }
    fn open(&self, rec: &FdRecord, cx: &mut PrepareCx) -> Result<Opened, String> {
        let FdKind::Pidfd { pid, own, ino, exit } = rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let flags = rec.flags & OPEN_FLAGS;
        if own {
            let me = std::process::id() as i32;
            return crest_ptrace::sys::pidfd_open_with(me, flags).map(Opened::Fd).map_err(|e| format!("fd {}: a pidfd of its own process: {e}", rec.fd));
        }
        if pid != -1 {
            let restorer = RESTORER.load(Ordering::SeqCst);
            if restorer == 0 {
                return Err(format!("fd {}: a pidfd of process {pid}, which is restored under another PID (cr_restart --no-restore-pid): pidfds of other processes need their PIDs kept", rec.fd));
            }
            return open_restored(rec.fd, pid, flags, restorer).map(Opened::Fd);
        }
        // A dead process: one per inode, kept unreaped until every pidfd of it is open.
        let helper = match cx.dead.iter().find(|d| d.0 == ino) {
            Some(&(_, helper)) => helper,
            None => {
                let status = exit.unwrap_or(0);
                let helper = crest_ptrace::husk::create_zombie(None, status, || {}).map_err(|e| format!("fd {}: a process to stand for the dead one its pidfd named: {e}", rec.fd))?;
                cx.dead.push((ino, helper));
                crest_ptrace::husk::await_zombie(helper).map_err(|e| format!("fd {}: waiting for the process standing for a dead one: {e}", rec.fd))?;
                helper
            }
        };
        crest_ptrace::sys::pidfd_open_with(helper, flags).map(Opened::Fd).map_err(|e| format!("fd {}: a pidfd of a dead process: {e}", rec.fd))
    }
}
