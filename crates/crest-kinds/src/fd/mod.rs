//! File descriptors. Each kind of file is one module behind [`FdHandler`]; [`HANDLERS`] is the
//! registry, asked in order. Adding a kind is one new file and one line there.
//!
//! Dump: `/proc/PID/fd/N` (the link and, through it, `stat` of the open file) and
//! `/proc/PID/fdinfo/N` (offset, flags). Restore happens inside the husk before it stops: each
//! file is opened again and moved to its number with `dup3`, close-on-exec included.
use std::fs::Metadata;

use crest_image::{FdKind, FdRecord, Fown, RECORD_VERSION};
use crest_proc::FdInfo;

use crate::KindError;

mod chardev;
mod directory;
mod epoll;
mod eventfd;
mod fifo;
mod inherited;
mod locks;
mod memfd;
mod pipe;
mod regular;
mod signalfd;
mod socket;
mod tcp;
mod timerfd;
mod tty;
mod unsupported;

pub use inherited::class_of;
pub use locks::restore as restore_locks;
pub use tcp::{keep_repair, leave_repair, leave_repair_restored};

/// One open descriptor of a process in the image, as `/proc` shows it.
#[derive(Debug, Clone)]
pub struct OpenFd {
    /// The process.
    pub pid: i32,
    /// The descriptor number.
    pub fd: i32,
    /// Its `/proc/PID/fd/N` link.
    pub link: String,
    /// Its fdinfo.
    pub info: FdInfo,
}

/// What the dump of one descriptor may need to know about the others.
pub struct DumpCx<'a> {
    /// The process.
    pub pid: i32,
    /// A pidfd of it, for `pidfd_getfd`.
    pub pidfd: Option<std::os::fd::OwnedFd>,
    /// Every descriptor of every process in the image.
    pub all: &'a [OpenFd],
    /// Objects already dumped in full (pipe data is saved once per image).
    pub seen: &'a mut std::collections::HashSet<u64>,
    /// Leave out what cannot be restored instead of refusing the checkpoint.
    pub drop_unsupported: bool,
    /// What was left out of this process, described.
    pub dropped: Vec<String>,
    /// The peers of unix sockets.
    pub unix_peers: &'a mut socket::UnixPeers,
}

impl DumpCx<'_> {
    /// The descriptors of this process.
    pub fn own(&self) -> impl Iterator<Item = &OpenFd> {
        self.all.iter().filter(move |o| o.pid == self.pid)
    }
}

/// A descriptor dumped: (pid, fd, file id).
type Dumped = (i32, i32, u64);

/// The descriptors of all the processes of one image, and which of them share an open file
/// description (found with `kcmp` among those on the same inode, across processes).
pub struct FileTable {
    all: Vec<OpenFd>,
    seen: std::collections::HashSet<u64>,
    /// (dev, ino) -> descriptors dumped so far on it.
    by_inode: std::collections::HashMap<(u64, u64), Vec<Dumped>>,
    next_file: u64,
    drop_unsupported: bool,
    unix_peers: socket::UnixPeers,
}

impl FileTable {
    /// Reads the descriptors of every process of `pids` (all frozen). With
    /// `drop_unsupported`, descriptors and file locks that cannot be restored are left out
    /// (and listed) rather than refused.
    pub fn new(pids: &[i32], drop_unsupported: bool) -> Result<Self, KindError> {
        let mut all = Vec::new();
        for &pid in pids {
            for fd in crest_proc::fds(pid)? {
                let link = crest_proc::readlink(pid, &format!("fd/{fd}"))?;
                let info = crest_proc::parse_fdinfo(&crest_proc::read(pid, &format!("fdinfo/{fd}"))?)?;
                all.push(OpenFd { pid, fd, link, info });
            }
        }
        Ok(FileTable { all, seen: Default::default(), by_inode: Default::default(), next_file: 1, drop_unsupported, unix_peers: Default::default() })
    }
}

/// What the restore of one descriptor may need from the others: objects created for an
/// earlier descriptor (the other end of a pipe, a dup), parked above every saved number.
pub struct PrepareCx {
    /// Lowest number the parked descriptors may use.
    pub high: i32,
    /// Parked descriptors by (object id, which end).
    pub parked: std::collections::HashMap<(u64, bool), std::os::fd::OwnedFd>,
    /// Parked objects handed out already (see [`PrepareCx::open_file`]).
    pub handed: std::collections::HashSet<(u64, bool)>,
}

impl PrepareCx {
    /// Parks `fd` for `key` above the saved numbers.
    pub fn park(&mut self, key: (u64, bool), fd: std::os::fd::OwnedFd) -> Result<(), String> {
        let n = crest_ptrace::sys::dup_above(std::os::fd::AsRawFd::as_raw_fd(&fd), self.high).map_err(|e| format!("moving a descriptor: {e}"))?;
        drop(fd);
        let parked = crest_ptrace::sys::owned_fd(n);
        self.parked.insert(key, parked);
        Ok(())
    }

    /// A new descriptor for the parked object `key`.
    pub fn take(&self, key: (u64, bool)) -> Option<Result<std::os::fd::OwnedFd, String>> {
        self.parked.get(&key).map(|f| f.try_clone().map_err(|e| format!("duplicating a descriptor: {e}")))
    }

    /// A new open file of the parked object `key`, for one saved open file description: the
    /// first time a dup of the parked descriptor, then a new open of it through
    /// `/proc/self/fd` with `flags` (the object was opened more than once, and each open file
    /// has its own status flags and offset).
    pub fn open_file(&mut self, key: (u64, bool), flags: i32) -> Option<Result<std::os::fd::OwnedFd, String>> {
        let parked = self.parked.get(&key)?;
        if self.handed.insert(key) {
            return Some(parked.try_clone().map_err(|e| format!("duplicating a descriptor: {e}")));
        }
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(parked));
        let acc = flags & libc::O_ACCMODE;
        let f = std::fs::OpenOptions::new().read(acc != libc::O_WRONLY).write(acc != libc::O_RDONLY).open(&path);
        Some(f.map(Into::into).map_err(|e| format!("opening the object again: {e}")))
    }
}

/// Refuses a file or directory opened with `O_PATH` (not reopened as such yet), or one of the
/// `/proc/PID` directory of a process of the image (`image`: their PIDs) or of one that is
/// gone: reopened by path after a restart it would be another process's, or none.
pub fn refuse_unreopenable(pid: i32, fd: i32, link: &str, flags: u32, image: &[i32]) -> Result<(), KindError> {
    if flags & libc::O_PATH as u32 != 0 {
        return Err(KindError::Unsupported(format!("pid {pid} fd {fd}: {link} is open with O_PATH, which is not supported yet")));
    }
    let Some(rest) = link.strip_prefix("/proc/") else { return Ok(()) };
    let Ok(owner) = rest.split('/').next().unwrap_or("").parse::<i32>() else { return Ok(()) };
    if image.contains(&owner) || crest_proc::read(owner, "stat").is_err() {
        return Err(KindError::Unsupported(format!("pid {pid} fd {fd}: {link} belongs to process {owner}, which is in the checkpoint or gone; files of its /proc/PID are not supported")));
    }
    Ok(())
}

/// Sets the status flags (`O_NONBLOCK`, ...) a descriptor had.
pub fn set_status_flags(fd: &std::os::fd::OwnedFd, flags: u32) -> Result<(), String> {
    let keep = (libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME) as u32;
    crest_ptrace::sys::status_flags(std::os::fd::AsRawFd::as_raw_fd(fd), Some((flags & keep) as i32)).map(drop).map_err(|e| format!("setting descriptor flags: {e}"))
}

/// One kind of file a descriptor can refer to.
pub trait FdHandler: Sync {
    /// Short name, for messages.
    fn name(&self) -> &'static str;
    /// Does a descriptor whose link reads `link` and whose open file is `md` belong here?
    fn claims(&self, link: &str, md: &Metadata) -> bool;
    /// Describes it for the image.
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError>;
    /// Does this handler restore records of this kind?
    fn restores(&self, kind: &FdKind) -> bool;
    /// Restored after every other descriptor (it refers to them, as epoll does).
    fn late(&self) -> bool {
        false
    }
    /// Inside the husk: opens the file again. `None` leaves the number as the husk inherited it.
    fn open(&self, rec: &FdRecord, cx: &mut PrepareCx) -> Result<Option<std::os::fd::OwnedFd>, String>;
}

/// The registry, asked in order; [`unsupported`] takes what no other kind claims.
pub static HANDLERS: &[&dyn FdHandler] = &[
    &memfd::Memfd,
    &regular::Regular,
    &directory::Directory,
    &chardev::CharDevice,
    &tty::Tty,
    &eventfd::EventFd,
    &timerfd::TimerFd,
    &signalfd::SignalFd,
    &epoll::Epoll,
    &pipe::Pipe,
    &fifo::Fifo,
    &socket::Socket,
    &inherited::Inherited,
    &unsupported::Unsupported,
];

/// Dumps every descriptor of `pid`, one of the processes `table` was made for. Descriptors
/// that share an open file description, in this process or another of the image, get the
/// same [`FdRecord::file`]. Also returns what was left out (`--drop-unsupported`).
pub fn dump_all(pid: i32, table: &mut FileTable) -> Result<(Vec<FdRecord>, Vec<String>), KindError> {
    let mut out: Vec<FdRecord> = Vec::new();
    let own: Vec<OpenFd> = table.all.iter().filter(|o| o.pid == pid).cloned().collect();
    let pidfd = crest_ptrace::sys::pidfd_open(pid).ok();
    let mut cx = DumpCx { pid, pidfd, all: &table.all, seen: &mut table.seen, drop_unsupported: table.drop_unsupported, dropped: Vec::new(), unix_peers: &mut table.unix_peers };
    for OpenFd { fd, link, info, .. } in own {
        let md = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).map_err(|e| KindError::io(format!("pid {pid} fd {fd} ({link})"), e))?;
        let locks = locks::dump(&mut cx, fd, &link, &info)?;
        let h = HANDLERS.iter().find(|h| h.claims(&link, &md)).expect("the last handler claims everything");
        let kind = h.dump(&mut cx, fd, &link, &md, &info)?;
        let same_inode = table.by_inode.entry((std::os::unix::fs::MetadataExt::dev(&md), std::os::unix::fs::MetadataExt::ino(&md))).or_default();
        let mut file = None;
        for &(other_pid, other, id) in same_inode.iter() {
            match crest_ptrace::sys::same_file(pid, fd, other_pid, other) {
                Ok(true) => {
                    file = Some(id);
                    break;
                }
                Ok(false) => {}
                Err(e) => return Err(KindError::io(format!("pid {pid}: comparing fd {fd} with fd {other} of pid {other_pid} (kcmp)"), e)),
            }
        }
        let file = file.unwrap_or_else(|| {
            table.next_file += 1;
            table.next_file - 1
        });
        same_inode.push((pid, fd, file));
        let fown = if matches!(kind, FdKind::Inherited { .. }) { Fown::default() } else { owner(&cx, fd)? };
        out.push(FdRecord { v: RECORD_VERSION, fd, flags: info.flags & !(libc::O_CLOEXEC as u32), cloexec: info.flags & libc::O_CLOEXEC as u32 != 0, file, kind, locks, fown });
    }
    Ok((out, cx.dropped))
}

/// The owner of `fd`'s open file for I/O signals (`F_GETOWN_EX`, `F_GETSIG`), read through a
/// copy of the descriptor.
fn owner(cx: &DumpCx<'_>, fd: i32) -> Result<Fown, KindError> {
    let Some(pidfd) = cx.pidfd.as_ref() else { return Ok(Fown::default()) };
    let what = || format!("pid {} fd {fd}: reading its owner for I/O signals", cx.pid);
    let theirs = crest_ptrace::sys::pidfd_getfd(std::os::fd::AsRawFd::as_raw_fd(pidfd), fd).map_err(|e| KindError::io(what(), e))?;
    let (kind, pid, signal) = match crest_ptrace::sys::file_owner(std::os::fd::AsRawFd::as_raw_fd(&theirs)) {
        Ok(o) => o,
        // An O_PATH descriptor has no owner.
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => return Ok(Fown::default()),
        Err(e) => return Err(KindError::io(what(), e)),
    };
    Ok(Fown { kind, pid, signal })
}

/// Sets the owner for I/O signals of `fd`'s open file as it was.
fn set_owner(r: &FdRecord) -> Result<(), String> {
    if r.fown.pid == 0 && r.fown.signal == 0 {
        return Ok(());
    }
    crest_ptrace::sys::set_file_owner(r.fd, r.fown.kind, r.fown.pid, r.fown.signal).map_err(|e| format!("fd {}: setting its owner {} and signal {}: {e}", r.fd, r.fown.pid, r.fown.signal))
}

/// Objects shared by several processes of an image (one open file description in several
/// processes, pipes and FIFOs between them), opened once by `cr_restart` before any husk is
/// forked and parked at numbers no husk uses; every husk inherits them and dups its own.
#[derive(Default)]
pub struct SharedFds {
    /// File id -> parked descriptor.
    pub by_file: std::collections::HashMap<u64, i32>,
    /// Owns the parked descriptors (and the other ends of pipes).
    cx: Option<PrepareCx>,
    opened: Vec<std::os::fd::OwnedFd>,
}

/// Whether a record of this kind is opened once for the whole image (else in its husk).
fn opened_once(kind: &FdKind) -> bool {
    !matches!(kind, FdKind::Inherited { .. } | FdKind::Epoll { .. })
}

/// Opens, in the caller (`cr_restart`), every object of `procs` (each process's descriptor
/// records) that more than one process has, and every pipe and FIFO, parked at `high` or above.
/// `memfds` are the memfds made for shared mappings, by object id: a memfd descriptor of the
/// same object takes its one.
pub fn prepare_shared(procs: &[&[FdRecord]], high: i32, memfds: &[(u64, i32)]) -> Result<SharedFds, String> {
    let mut users: std::collections::HashMap<u64, usize> = Default::default();
    for recs in procs {
        let mut ids: Vec<u64> = recs.iter().map(|r| r.file).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            *users.entry(id).or_default() += 1;
        }
    }
    let mut out = SharedFds { cx: Some(PrepareCx { high, parked: Default::default(), handed: Default::default() }), ..Default::default() };
    let cx = out.cx.as_mut().expect("set above");
    for &(id, fd) in memfds {
        let copy = crest_ptrace::sys::dup_above(fd, high).map_err(|e| format!("shared memory: {e}"))?;
        cx.park((id, false), crest_ptrace::sys::owned_fd(copy))?;
    }
    for r in procs.iter().flat_map(|recs| recs.iter()) {
        let once = matches!(r.kind, FdKind::Pipe { .. } | FdKind::Fifo { .. } | FdKind::Memfd { .. } | FdKind::UnixPair { .. }) || users.get(&r.file).copied().unwrap_or(0) > 1;
        if !once || !opened_once(&r.kind) || out.by_file.contains_key(&r.file) {
            continue;
        }
        let h = HANDLERS.iter().find(|h| h.restores(&r.kind)).ok_or_else(|| format!("fd {}: no handler", r.fd))?;
        let Some(f) = h.open(r, cx)? else { continue };
        let n = crest_ptrace::sys::dup_above(std::os::fd::AsRawFd::as_raw_fd(&f), high).map_err(|e| format!("fd {}: moving a descriptor: {e}", r.fd))?;
        drop(f);
        out.by_file.insert(r.file, n);
        out.opened.push(crest_ptrace::sys::owned_fd(n));
    }
    Ok(out)
}

/// Inside the husk: recreates every descriptor of `recs` at its number. Descriptors the husk
/// has that are neither restored nor kept are closed, except those in `keep` (the restore's
/// own); objects opened once for the image (`shared`) are dup'd into place. Every descriptor
/// at `parked` or above (the image's shared objects, other husks' status pipes) is closed at
/// the end.
pub fn prepare_all(recs: &[FdRecord], keep: &[i32], shared: &std::collections::HashMap<u64, i32>, parked: i32) -> Result<(), String> {
    let inherited: Vec<i32> = recs.iter().filter(|r| matches!(r.kind, FdKind::Inherited { .. })).map(|r| r.fd).collect();
    let own: Vec<i32> = std::fs::read_dir("/proc/self/fd").map_err(|e| format!("listing own descriptors: {e}"))?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    for &fd in &own {
        if !keep.contains(&fd) && !inherited.contains(&fd) && fd < parked {
            crest_ptrace::sys::close(fd);
        }
    }
    let high = parked.max(keep.iter().copied().max().unwrap_or(2).max(recs.iter().map(|r| r.fd).max().unwrap_or(2)) + 1);
    let mut cx = PrepareCx { high, parked: Default::default(), handed: Default::default() };
    let handler = |r: &FdRecord| HANDLERS.iter().find(|h| h.restores(&r.kind)).ok_or_else(|| format!("fd {}: no handler", r.fd));
    let mut order: Vec<(&FdRecord, &&dyn FdHandler)> = recs.iter().map(|r| Ok((r, handler(r)?))).collect::<Result<_, String>>()?;
    order.sort_by_key(|(_, h)| h.late());
    // file id -> the number of the first descriptor restored for it.
    let mut opened: std::collections::HashMap<u64, i32> = Default::default();
    for (r, h) in order {
        if let Some(&first) = opened.get(&r.file).or_else(|| shared.get(&r.file)) {
            if !matches!(r.kind, FdKind::Inherited { .. }) {
                crest_ptrace::sys::dup3(first, r.fd, r.cloexec).map_err(|e| format!("fd {}: sharing fd {first}'s open file: {e}", r.fd))?;
                opened.entry(r.file).or_insert(r.fd);
                set_owner(r)?;
                continue;
            }
        }
        opened.entry(r.file).or_insert(r.fd);
        match h.open(r, &mut cx)? {
            Some(f) => {
                let raw = std::os::fd::IntoRawFd::into_raw_fd(f);
                if raw != r.fd {
                    crest_ptrace::sys::dup3(raw, r.fd, r.cloexec).map_err(|e| format!("fd {}: {e}", r.fd))?;
                    crest_ptrace::sys::close(raw);
                } else {
                    crest_ptrace::sys::set_cloexec(raw, r.cloexec).map_err(|e| format!("fd {}: {e}", r.fd))?;
                }
                set_owner(r)?;
            }
            None => {
                let _ = crest_ptrace::sys::set_cloexec(r.fd, r.cloexec);
            }
        }
    }
    drop(cx);
    for fd in own.into_iter().filter(|&fd| fd >= parked && !keep.contains(&fd)) {
        crest_ptrace::sys::close(fd);
    }
    Ok(())
}

/// Opens `path` again with the access mode and status flags of `rec` (the descriptor `rec.fd`).
pub fn reopen(path: &str, rec: &FdRecord, extra: i32) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let acc = rec.flags & libc::O_ACCMODE as u32;
    std::fs::OpenOptions::new()
        .read(acc != libc::O_WRONLY as u32)
        .write(acc != libc::O_RDONLY as u32)
        .custom_flags((reopen_flags(rec.flags) & !libc::O_ACCMODE) | extra)
        .open(path)
        .map_err(|e| format!("fd {}: reopening {path}: {e}", rec.fd))
}

/// Open flags to reopen a file with: the saved access mode and status flags, without those
/// that only mean something at creation.
pub fn reopen_flags(flags: u32) -> i32 {
    (flags as i32) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY | libc::O_CLOEXEC)
}
