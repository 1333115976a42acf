//! File descriptors. Each kind of file is one module behind [`FdHandler`]; [`HANDLERS`] is the
//! registry, asked in order. Adding a kind is one new file and one line there, besides its
//! record (a variant of [`FdKind`], whose paths [`FdKind::path`] declares) and its section of
//! `docs/image-format.md`; a test fails while any of them is missing.
//!
//! A handler says how its kind dumps, restores, is shared among processes ([`Sharing`]) and is
//! described (`cr_info`). Restore order comes from the handlers: `open` may answer
//! [`Opened::NotYet`] with the descriptors it waits for (an epoll set waits for the files it
//! watches), and is called again once those are in place.
//!
//! Dump: `/proc/PID/fd/N` (the link and, through it, `stat` of the open file) and
//! `/proc/PID/fdinfo/N` (offset, flags). Restore happens inside the husk before it stops: each
//! file is opened again and moved to its number with `dup3`, close-on-exec included.
use std::fs::Metadata;

use crest_image::{FdKind, FdRecord, Fown};
use crest_proc::FdInfo;

use crate::ident::{ObjId, Slot};
use crate::KindError;

mod accept;
mod chardev;
mod deleted;
mod directory;
mod epoll;
mod eventfd;
mod fanotify;
mod fifo;
mod ghost;
mod hungup;
mod inherited;
mod inotify;
mod lease;
mod locks;
mod memfd;
mod namespace;
mod netlink;
pub mod netlock;
mod opath;
pub(crate) mod packet;
mod pidfd;
mod pipe;
mod procfile;
mod pty;
mod raw;
mod regular;
mod signalfd;
mod socket;
mod sockopt;
mod tcp;
mod timerfd;
mod tty;
mod unsupported;

pub use deleted::{recreate_all as recreate_deleted, DEFAULT_MAX as DELETED_MAX};
pub use fanotify::settle_restored as settle_fanotify;
pub use ghost::{enter_deleted_cwd, ghost_of, recreate_all as recreate_ghosts};
pub use inherited::class_of;
pub use inotify::settle_restored as settle_inotify;
pub use locks::{restore as restore_locks, Locks};
pub use pidfd::pids_kept;
pub use pty::{controlling, set_foreground, take_controlling};
pub use socket::{refill_deferred, settle_restored};
pub use tcp::{fins_restored, keep_repair, leave_repair, leave_repair_restored};

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
    pub seen: &'a mut std::collections::HashSet<ObjId>,
    /// Leave out what cannot be restored instead of refusing the checkpoint.
    pub drop_unsupported: bool,
    /// What was left out of this process, described.
    pub dropped: Vec<String>,
    /// The peers of unix sockets.
    pub unix_peers: &'a mut socket::UnixPeers,
    /// Largest deleted file whose contents are saved (`--deleted-max`).
    pub deleted_max: u64,
    /// Save unix datagram sockets connected outside the image (`--ext-unix-sk`).
    pub external_unix: bool,
    /// The PIDs of the processes of the image.
    pub image: &'a [i32],
    /// For a descriptor in flight (`pid` is the checkpoint's own, holding a copy) carried by a
    /// pair of unix sockets both in the image: copies of the pair's two ends here, each with
    /// which end it is (`FdKind::UnixPair.end`).
    pub pair_ends: Option<[(i32, bool); 2]>,
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
    pids: Vec<i32>,
    seen: std::collections::HashSet<ObjId>,
    /// (dev, ino) -> one descriptor dumped so far of each open file description on it, in
    /// the kernel's order of descriptions (`kcmp`).
    by_inode: std::collections::HashMap<(u64, u64), Vec<Dumped>>,
    next_file: u64,
    drop_unsupported: bool,
    unix_peers: socket::UnixPeers,
    /// Largest deleted file whose contents are saved (`cr_checkpoint --deleted-max`).
    pub deleted_max: u64,
    /// Save unix datagram sockets connected to sockets outside the image, to be connected
    /// again to their address at restart (`cr_checkpoint --ext-unix-sk`).
    pub external_unix: bool,
}

impl FileTable {
    /// Leaves descriptor `fd` of `pid` out of the image, as if it were not open (a descriptor
    /// crest itself keeps in the process).
    pub fn hide(&mut self, pid: i32, fd: i32) {
        self.all.retain(|o| o.pid != pid || o.fd != fd);
    }

    /// Reads the descriptors of every process of `pids` (all frozen) but those of `shared`,
    /// which share their parent's descriptor table (its descriptors are saved once, with the
    /// parent). With `drop_unsupported`, descriptors and file locks that cannot be restored
    /// are left out (and listed) rather than refused.
    pub fn new(pids: &[i32], shared: &std::collections::HashSet<i32>, drop_unsupported: bool) -> Result<Self, KindError> {
        let own: Vec<i32> = pids.iter().copied().filter(|p| !shared.contains(p)).collect();
        let read = |pids: &[i32]| -> Result<Vec<OpenFd>, KindError> {
            let mut out = Vec::new();
            for &pid in pids {
                for fd in crest_proc::fds(pid)? {
                    let link = crest_proc::readlink(pid, &format!("fd/{fd}"))?;
                    let info = crest_proc::parse_fdinfo(&crest_proc::read(pid, &format!("fdinfo/{fd}"))?)?;
                    out.push(OpenFd { pid, fd, link, info });
                }
            }
            Ok(out)
        };
        // Many processes: read in two halves at once, kept in order (the first failure first).
        let mut all = if own.len() >= 32 {
            let (a, b) = own.split_at(own.len() / 2);
            let (ra, rb) = std::thread::scope(|s| {
                let other = s.spawn(|| read(b));
                (read(a), other.join())
            });
            let mut all = ra?;
            all.extend(rb.unwrap_or_else(|p| std::panic::resume_unwind(p))?);
            all
        } else {
            read(&own)?
        };
        // Descriptors in flight in unix socket queues are known as descriptors of this process.
        let mut unix_peers = socket::UnixPeers::default();
        let in_flight = socket::collect_in_flight(&all, &mut unix_peers);
        all.extend(in_flight);
        Ok(FileTable {
            all,
            pids: pids.to_vec(),
            seen: Default::default(),
            by_inode: Default::default(),
            next_file: 1,
            drop_unsupported,
            unix_peers,
            deleted_max: deleted::DEFAULT_MAX,
            external_unix: false,
        })
    }
}

/// What the restore of one descriptor may need from the others: objects created for an
/// earlier descriptor (the other end of a pipe, a dup), parked above every saved number.
pub struct PrepareCx {
    /// Lowest number the parked descriptors may use.
    pub high: i32,
    /// The numbers the process's records restore.
    pub saved: std::collections::HashSet<i32>,
    /// Those restored so far.
    pub placed: std::collections::HashSet<i32>,
    /// Parked descriptors by object and end.
    pub parked: std::collections::HashMap<Slot, std::os::fd::OwnedFd>,
    /// Parked objects handed out already (see [`PrepareCx::open_file`]).
    pub handed: std::collections::HashSet<Slot>,
    /// Unix sockets bound again, by their inode at the checkpoint: the address that reaches
    /// each (its own, or another name of its file when its own was removed).
    pub unix_names: std::collections::HashMap<u64, Vec<u8>>,
    /// Files and directories made for the restore, removed by [`PrepareCx::clean_up`] once
    /// every object is made (in the order given).
    pub temporary: Vec<std::path::PathBuf>,
    /// What was restored otherwise than it was saved, in words (a pseudo-terminal with a new
    /// index), for `cr_restart --verbose`.
    pub notes: Vec<String>,
    /// Processes made to stand for dead ones that pidfds named, by the pidfds' inode at the
    /// checkpoint: (inode, PID). Reaped by [`PrepareCx::clean_up`], once every pidfd of them is
    /// open.
    pub dead: Vec<(u64, i32)>,
    /// The PIDs the processes of the image have now, by their PID at the checkpoint (those
    /// created so far), for files of their `/proc/PID`.
    pub pids: std::collections::HashMap<i32, i32>,
}

impl PrepareCx {
    /// A context whose parked descriptors go at `high` or above.
    pub fn new(high: i32) -> Self {
        PrepareCx {
            high,
            saved: Default::default(),
            placed: Default::default(),
            parked: Default::default(),
            handed: Default::default(),
            unix_names: Default::default(),
            temporary: Default::default(),
            notes: Vec::new(),
            dead: Vec::new(),
            pids: Default::default(),
        }
    }

    /// Reaps the processes that stood for dead ones (see `dead`), then removes the files made
    /// for the restore, then the directories (see `temporary`).
    pub fn clean_up(&mut self) -> Result<(), String> {
        for (_, helper) in std::mem::take(&mut self.dead) {
            crest_ptrace::sys::wait_child(helper).map_err(|e| format!("reaping process {helper}, which stood for a dead process a pidfd named: {e}"))?;
        }
        let all = std::mem::take(&mut self.temporary);
        let (dirs, files): (Vec<_>, Vec<_>) = all.into_iter().partition(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
        for path in files {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(format!("removing {}, made for the restore: {e}", path.display())),
                _ => {}
            }
        }
        for path in dirs {
            std::fs::remove_dir(&path).map_err(|e| format!("removing the directory {}, made for the restore: {e}", path.display()))?;
        }
        Ok(())
    }

    /// Parks `fd` for `key` above the saved numbers.
    pub fn park(&mut self, key: Slot, fd: std::os::fd::OwnedFd) -> Result<(), String> {
        let parked = crest_ptrace::sys::dup_above(std::os::fd::AsRawFd::as_raw_fd(&fd), self.high).map_err(|e| format!("moving a descriptor: {e}"))?;
        drop(fd);
        self.parked.insert(key, parked);
        Ok(())
    }

    /// A new descriptor for the parked object `key`.
    pub fn take(&self, key: Slot) -> Option<Result<std::os::fd::OwnedFd, String>> {
        self.parked.get(&key).map(|f| f.try_clone().map_err(|e| format!("duplicating a descriptor: {e}")))
    }

    /// A new open file of the parked object `key`, for one saved open file description: the
    /// first time a dup of the parked descriptor, then a new open of it through
    /// `/proc/self/fd` with `flags` (the object was opened more than once, and each open file
    /// has its own status flags and offset).
    pub fn open_file(&mut self, key: Slot, flags: i32) -> Option<Result<std::os::fd::OwnedFd, String>> {
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

/// Refuses a file or directory of the `/proc/PID` directory of a process of the image
/// (`image`: their PIDs) or of one that is gone: reopened by path after a restart it would be
/// another process's, or none.
pub fn refuse_unreopenable(pid: i32, fd: i32, link: &str, image: &[i32]) -> Result<(), KindError> {
    let Some(rest) = link.strip_prefix("/proc/") else { return Ok(()) };
    let Ok(owner) = rest.split('/').next().unwrap_or("").parse::<i32>() else { return Ok(()) };
    if image.contains(&owner) || crest_proc::read(owner, "stat").is_err() {
        return Err(KindError::Unsupported(format!("pid {pid} fd {fd}: {link} belongs to process {owner}, which is in the checkpoint or gone; files of its /proc/PID are not supported")));
    }
    Ok(())
}

/// Whether the device `dev` is of no mounted file system (the kernel's internal shmem mount of
/// memfds and shared anonymous memory, among others).
pub fn on_internal_mount(dev: u64) -> bool {
    inotify::mount_of(dev).is_none()
}

/// Sets the status flags (`O_NONBLOCK`, ...) a descriptor had.
pub fn set_status_flags(fd: &std::os::fd::OwnedFd, flags: u32) -> Result<(), String> {
    let keep = (libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME) as u32;
    crest_ptrace::sys::status_flags(std::os::fd::AsRawFd::as_raw_fd(fd), Some((flags & keep) as i32)).map(drop).map_err(|e| format!("setting descriptor flags: {e}"))
}

/// What [`FdHandler::open`] made of a record.
#[derive(Debug)]
pub enum Opened {
    /// The open file, to be moved to the record's number.
    Fd(std::os::fd::OwnedFd),
    /// Nothing to do: the number stays as the husk has it (handed over from `cr_restart`).
    AsIs,
    /// Not yet: these descriptors of the process must be restored first; call again then.
    NotYet(Vec<i32>),
}

/// Who makes the object of a record at restore, and who shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// `cr_restart` makes the object once for the whole image, before the husks, whoever holds
    /// it: its descriptors are several open files of one object (a pipe's two ends, the opens
    /// of a FIFO or memfd, a socket pair's ends).
    Image,
    /// `cr_restart` opens the file once when several processes share the open file
    /// description; otherwise the process's husk opens it.
    File,
    /// Always made in the process's husk (it refers to the process's other descriptors); its
    /// dups in the process share it.
    Process,
    /// Each descriptor on its own, as the husk has it.
    Descriptor,
}

/// One kind of file a descriptor can refer to.
pub trait FdHandler: Sync {
    /// Short name, for messages.
    fn name(&self) -> &'static str;
    /// Does a descriptor whose link reads `link` and whose open file is `md` belong here?
    fn claims(&self, link: &str, md: &Metadata) -> bool;
    /// Describes it for the image.
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError>;
    /// Does this handler restore records of this kind? (A kind that is only refused or handed
    /// to another kind at checkpoint time restores none.)
    fn restores(&self, _kind: &FdKind) -> bool {
        false
    }
    /// Who makes the object of a record of this kind, and who shares it.
    fn sharing(&self, _kind: &FdKind) -> Sharing {
        Sharing::File
    }
    /// The record in words, for `cr_info`.
    fn describe(&self, kind: &FdKind) -> String {
        let _ = kind;
        self.name().to_string()
    }
    /// Opens the file again (inside the husk, or in `cr_restart` for shared objects), or says
    /// what it waits for.
    fn open(&self, rec: &FdRecord, _cx: &mut PrepareCx) -> Result<Opened, String> {
        Err(wrong_kind(self, rec))
    }
}

/// The error of a handler asked to open a record it does not restore.
fn wrong_kind<H: FdHandler + ?Sized>(h: &H, rec: &FdRecord) -> String {
    format!("fd {}: the {} handler cannot restore this record", rec.fd, h.name())
}

/// The handler that restores records of this kind.
pub fn handler_for(kind: &FdKind) -> Option<&'static dyn FdHandler> {
    HANDLERS.iter().copied().find(|h| h.restores(kind))
}

/// A record in words, for `cr_info`.
pub fn describe(kind: &FdKind) -> String {
    handler_for(kind).map_or_else(|| "a descriptor of a kind this build does not know".to_string(), |h| h.describe(kind))
}

/// The registry, asked in order; [`unsupported`] takes what no other kind claims.
pub static HANDLERS: &[&dyn FdHandler] = &[
    &memfd::Memfd,
    &deleted::Deleted,
    &hungup::HungUpPty,
    &ghost::Ghost,
    &procfile::ProcFile,
    &regular::Regular,
    &directory::Directory,
    &chardev::CharDevice,
    &pty::Pty,
    &tty::Tty,
    &eventfd::EventFd,
    &timerfd::TimerFd,
    &signalfd::SignalFd,
    &inotify::Inotify,
    &fanotify::Fanotify,
    &pidfd::Pidfd,
    &opath::OPath,
    &namespace::Namespace,
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
    let mut cx = DumpCx {
        pid,
        pidfd,
        all: &table.all,
        seen: &mut table.seen,
        drop_unsupported: table.drop_unsupported,
        dropped: Vec::new(),
        unix_peers: &mut table.unix_peers,
        deleted_max: table.deleted_max,
        external_unix: table.external_unix,
        pair_ends: None,
        image: &table.pids,
    };
    for OpenFd { fd, link, info, .. } in own {
        let md = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).map_err(|e| KindError::io(format!("pid {pid} fd {fd} ({link})"), e))?;
        let locks = locks::dump(&mut cx, fd, &link, &info)?;
        // O_PATH descriptors by their flags, whatever the file is, but for nodes deleted while
        // open, which are made again whatever their flags.
        let h: &dyn FdHandler =
            if opath::is_opath(info.flags) && !ghost::Ghost.claims(&link, &md) { &opath::OPath } else { *HANDLERS.iter().find(|h| h.claims(&link, &md)).expect("the last handler claims everything") };
        let kind = h.dump(&mut cx, fd, &link, &md, &info)?;
        let same_inode = table.by_inode.entry((std::os::unix::fs::MetadataExt::dev(&md), std::os::unix::fs::MetadataExt::ino(&md))).or_default();
        // One descriptor of each open file description on the inode, in the kernel's order of
        // descriptions: a binary search finds this one's (or where it goes), so that the
        // descriptors of many processes on one inode (a terminal, /dev/null opened by each)
        // cost O(log n) comparisons each, not one per description seen.
        let mut failed = None;
        let mut unordered = false;
        let at = same_inode.binary_search_by(|&(other_pid, other, _)| match crest_ptrace::sys::kcmp_order(other_pid, pid, 0, other, fd) {
            Ok(Some(o)) => o,
            Ok(None) => {
                unordered = true;
                std::cmp::Ordering::Less
            }
            Err(e) => {
                failed.get_or_insert((other_pid, other, e));
                std::cmp::Ordering::Less
            }
        });
        if let Some((other_pid, other, e)) = failed {
            return Err(KindError::io(format!("pid {pid}: comparing fd {fd} with fd {other} of pid {other_pid} (kcmp)"), e));
        }
        let mut file = at.ok().map(|i| same_inode[i].2);
        if unordered && file.is_none() {
            // No order from this kernel: one comparison with each.
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
        }
        let found = file.is_some();
        let file = file.unwrap_or_else(|| {
            table.next_file += 1;
            table.next_file - 1
        });
        // A lease belongs to the open file description: taken again once, through its first
        // descriptor in the image.
        let locks = if found { locks.into_iter().filter(|l| l.kind != crest_image::LockKind::Lease).collect() } else { locks };
        if !found {
            match at {
                Err(i) if !unordered => same_inode.insert(i, (pid, fd, file)),
                _ => same_inode.push((pid, fd, file)),
            }
        }
        let fown = if matches!(kind, FdKind::Inherited { .. }) { Fown::default() } else { owner(&cx, fd)? };
        out.push(FdRecord { fd, flags: info.flags & !(libc::O_CLOEXEC as u32), cloexec: info.flags & libc::O_CLOEXEC as u32 != 0, file, kind, locks, fown });
    }
    Ok((out, cx.dropped))
}

/// The record of a descriptor in flight (`SCM_RIGHTS`) in a unix socket queue, whose copy is
/// `fd` of this process ([`socket::collect_in_flight`]): dumped by its kind as if this process
/// held it. Refused, naming it, when it could not be made again on its own at restore (an
/// object that refers to the descriptors of a process, such as an epoll set), or when it is
/// an open file of a path shared with a descriptor of the image (their offset would part).
pub(crate) fn dump_in_flight(cx: &mut DumpCx<'_>, fd: i32, pair_ends: Option<[(i32, bool); 2]>) -> Result<FdRecord, String> {
    let me = std::process::id() as i32;
    let link = crest_proc::readlink(me, &format!("fd/{fd}")).map_err(|e| e.to_string())?;
    let md = std::fs::metadata(format!("/proc/self/fd/{fd}")).map_err(|e| format!("{link}: {e}"))?;
    let info = crest_proc::parse_fdinfo(&crest_proc::read(me, &format!("fdinfo/{fd}")).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let h = HANDLERS.iter().find(|h| h.claims(&link, &md)).expect("the last handler claims everything");
    // Kinds whose dump or restore follows the processes that hold them (a TCP connection put in
    // repair mode, a terminal, a file recreated from its saved contents) are refused before
    // anything is done to them.
    let inet = link.starts_with("socket:") && matches!(crest_ptrace::sys::sock_opt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN), Ok(libc::AF_INET | libc::AF_INET6 | libc::AF_NETLINK | libc::AF_PACKET));
    if inet || matches!(h.name(), "pseudo-terminal" | "terminal" | "deleted file") {
        return Err(format!("{link} is one, and a {} in flight is not saved yet", if inet { "socket other than a unix socket" } else { h.name() }));
    }
    let mut sub = DumpCx {
        pid: me,
        pidfd: crest_ptrace::sys::pidfd_open(me).ok(),
        all: cx.all,
        seen: &mut *cx.seen,
        drop_unsupported: false,
        dropped: Vec::new(),
        unix_peers: &mut *cx.unix_peers,
        deleted_max: cx.deleted_max,
        external_unix: false,
        pair_ends,
        image: cx.image,
    };
    let kind = h.dump(&mut sub, fd, &link, &md, &info).map_err(|e| format!("{link}: {e}"))?;
    let restorable = handler_for(&kind).map(|hh| hh.sharing(&kind));
    // An epoll set in flight that watches only the ends of the pair carrying it is made by
    // that pair ([`epoll::open_carried`]).
    let carried_epoll = matches!(&kind, FdKind::Epoll { sources, .. } if sources.iter().all(|&s| s < 0));
    if matches!(kind, FdKind::Inherited { .. } | FdKind::Dropped { .. }) || !(carried_epoll || matches!(restorable, Some(Sharing::Image | Sharing::File))) {
        return Err(format!("{link} ({}) is one, and a descriptor of that kind ({}) cannot be made again on its own, so it is not saved in flight", describe(&kind), h.name()));
    }
    if kind.uses_socket_queues() || matches!(&kind, FdKind::UnixPair { state: Some(s), .. } if s.queues.iter().any(|q| !q.is_empty())) || socket::holds_messages(cx.unix_peers, &link) {
        return Err(format!("{link} is one, and a socket in flight that holds messages itself is not saved"));
    }
    if kind.path().is_some() {
        if let Some(o) = cx.all.iter().find(|o| o.pid != me && o.link == link && crest_ptrace::sys::same_file(me, fd, o.pid, o.fd).unwrap_or(false)) {
            return Err(format!("{link} is one, and it is also fd {} of PID {}: an open file shared that way is not saved in flight yet", o.fd, o.pid));
        }
    }
    Ok(FdRecord { fd: -1, flags: info.flags & !(libc::O_CLOEXEC as u32), cloexec: true, file: 0, kind, locks: Vec::new(), fown: Fown::default() })
}

/// Makes again a descriptor in flight saved by [`dump_in_flight`], to be sent with the message
/// that carries it; objects shared with the image's descriptors (a pipe) come from `cx`.
pub(crate) fn open_in_flight(rec: &FdRecord, cx: &mut PrepareCx) -> Result<std::os::fd::OwnedFd, String> {
    let h = handler_for(&rec.kind).ok_or_else(|| "a descriptor of a kind this build does not know".to_string())?;
    match h.open(rec, cx)? {
        Opened::Fd(f) => Ok(f),
        _ => Err(format!("{} cannot be made again on its own", describe(&rec.kind))),
    }
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

impl SharedFds {
    /// The descriptor parked for `key`, which every husk inherits until it has placed its own
    /// (the slave of a pseudo-terminal a session leader takes as its controlling terminal).
    pub fn parked(&self, key: Slot) -> Option<i32> {
        self.cx.as_ref()?.parked.get(&key).map(std::os::fd::AsRawFd::as_raw_fd)
    }

    /// What was restored otherwise than it was saved, in words.
    pub fn notes(&self) -> &[String] {
        self.cx.as_ref().map_or(&[], |cx| &cx.notes)
    }
}

/// Opens, in the caller (`cr_restart`), every object of `procs` (each process's descriptor
/// records) that more than one process has, and every pipe and FIFO, parked at `high` or above.
/// `memfds` are the memfds made for shared mappings, by object id: a memfd descriptor of the
/// same object takes its one; `deleted` are the deleted files recreated for the image
/// ([`recreate_deleted`]), by id.
pub fn prepare_shared(procs: &[&[FdRecord]], high: i32, memfds: &[(u64, i32)], deleted: &[(u64, i32)]) -> Result<SharedFds, String> {
    let mut users: std::collections::HashMap<u64, usize> = Default::default();
    for recs in procs {
        let mut ids: Vec<u64> = recs.iter().map(|r| r.file).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            *users.entry(id).or_default() += 1;
        }
    }
    let mut out = SharedFds { cx: Some(PrepareCx::new(high)), ..Default::default() };
    let cx = out.cx.as_mut().expect("set above");
    for &(id, fd) in memfds {
        let copy = crest_ptrace::sys::dup_above(fd, high).map_err(|e| format!("shared memory: {e}"))?;
        cx.park((ObjId::shared_memory(id), false), copy)?;
    }
    for &(id, fd) in deleted {
        let copy = crest_ptrace::sys::dup_above(fd, high).map_err(|e| format!("a deleted file: {e}"))?;
        cx.park((ObjId::deleted_file(id), false), copy)?;
    }
    let mut queue = Vec::new();
    for r in procs.iter().flat_map(|recs| recs.iter()) {
        let h = handler_for(&r.kind).ok_or_else(|| format!("fd {}: no handler", r.fd))?;
        let once = match h.sharing(&r.kind) {
            Sharing::Image => true,
            Sharing::File => users.get(&r.file).copied().unwrap_or(0) > 1,
            Sharing::Process | Sharing::Descriptor => false,
        };
        if once {
            queue.push((r, h));
        }
    }
    // Rounds, as in a husk: an object that needs another one made first (a datagram socket
    // connected to another) waits for the next round.
    while !queue.is_empty() {
        let tried = queue.len();
        let mut waiting = Vec::new();
        for (r, h) in std::mem::take(&mut queue) {
            if out.by_file.contains_key(&r.file) {
                continue;
            }
            match h.open(r, cx)? {
                Opened::Fd(f) => {
                    let n = crest_ptrace::sys::dup_above(std::os::fd::AsRawFd::as_raw_fd(&f), high).map_err(|e| format!("fd {}: moving a descriptor: {e}", r.fd))?;
                    drop(f);
                    out.by_file.insert(r.file, std::os::fd::AsRawFd::as_raw_fd(&n));
                    out.opened.push(n);
                }
                Opened::NotYet(_) => waiting.push((r, h)),
                Opened::AsIs => {}
            }
        }
        if waiting.len() == tried {
            let what: Vec<String> = waiting.iter().map(|(r, h)| format!("fd {} ({})", r.fd, h.describe(&r.kind))).collect();
            return Err(format!("objects shared by the image wait for each other and none can be made first: {}", what.join(", ")));
        }
        queue = waiting;
    }
    cx.clean_up()?;
    Ok(out)
}

/// Inside the husk: recreates every descriptor of `recs` at its number. Descriptors the husk
/// has that are neither restored nor kept are closed, except those in `keep` (the restore's
/// own); objects opened once for the image (`shared`) are dup'd into place. Every descriptor
/// at `parked` or above (the image's shared objects, other husks' status pipes) is closed at
/// the end. `pids` are the new PIDs of the processes of the image created so far, by their
/// PID at the checkpoint.
pub fn prepare_all(recs: &[FdRecord], keep: &[i32], shared: &std::collections::HashMap<u64, i32>, parked: i32, pids: std::collections::HashMap<i32, i32>) -> Result<(), String> {
    let table = in_husk()?;
    let inherited: Vec<i32> = recs.iter().filter(|r| matches!(r.kind, FdKind::Inherited { .. })).map(|r| r.fd).collect();
    table.close_all_but(0, parked - 1, &keep.iter().chain(&inherited).copied().collect::<Vec<i32>>());
    let high = parked.max(keep.iter().copied().max().unwrap_or(2).max(recs.iter().map(|r| r.fd).max().unwrap_or(2)) + 1);
    let mut cx = PrepareCx::new(high);
    cx.saved = recs.iter().map(|r| r.fd).collect();
    cx.pids = pids;
    let mut queue: Vec<(&FdRecord, &dyn FdHandler)> = recs.iter().map(|r| Ok((r, handler_for(&r.kind).ok_or_else(|| format!("fd {}: no handler", r.fd))?))).collect::<Result<_, String>>()?;
    // file id -> the number of the first descriptor restored for it.
    let mut opened: std::collections::HashMap<u64, i32> = Default::default();
    // Rounds: what waits for descriptors not restored yet is tried again in the next round.
    while !queue.is_empty() {
        let mut waiting = Vec::new();
        let mut why = Vec::new();
        let tried = queue.len();
        for (r, h) in std::mem::take(&mut queue) {
            match place(table, r, h, &mut cx, &mut opened, shared)? {
                None => {
                    cx.placed.insert(r.fd);
                }
                Some(waits) => {
                    why.push(format!("fd {} waits for {waits:?}", r.fd));
                    waiting.push((r, h));
                }
            }
        }
        if waiting.len() == tried {
            return Err(format!("descriptors wait for each other and none can be restored first: {}", why.join(", ")));
        }
        queue = waiting;
    }
    cx.clean_up()?;
    drop(cx);
    table.close_all_but(parked, i32::MAX, keep);
    Ok(())
}

/// The descriptors of a process, as one kind of per-process state: every one recreated at its
/// number inside the husk ([`prepare_all`]), each by its file's handler.
pub struct Descriptors;

impl crate::process::ProcessKind for Descriptors {
    fn name(&self) -> &'static str {
        "descriptors"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["fds", "files_shared"]
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Husk
    }
    fn prepare(&self, cx: &mut crate::process::HuskCx<'_>) -> Result<(), String> {
        if !cx.owns_files {
            return Ok(());
        }
        prepare_all(&cx.p.fds, cx.keep, cx.shared_files, cx.parked, std::mem::take(&mut cx.pids))
    }
}

/// The husk's descriptor table, which only the husk may arrange number by number.
pub(crate) fn in_husk() -> Result<crest_ptrace::husk::FdTable, String> {
    crest_ptrace::husk::fd_table().ok_or_else(|| "descriptors are put at their saved numbers only inside a restore process".to_string())
}

/// Restores the descriptor of `r` at its number: a dup of the file already restored for it (in
/// this process, or by `cr_restart` for the image), or `h`'s open. `Some` lists what it waits
/// for.
fn place(
    table: crest_ptrace::husk::FdTable,
    r: &FdRecord,
    h: &dyn FdHandler,
    cx: &mut PrepareCx,
    opened: &mut std::collections::HashMap<u64, i32>,
    shared: &std::collections::HashMap<u64, i32>,
) -> Result<Option<Vec<i32>>, String> {
    if h.sharing(&r.kind) != Sharing::Descriptor {
        if let Some(&first) = opened.get(&r.file).or_else(|| shared.get(&r.file)) {
            table.dup3(first, r.fd, r.cloexec).map_err(|e| format!("fd {}: sharing fd {first}'s open file: {e}", r.fd))?;
            opened.entry(r.file).or_insert(r.fd);
            set_owner(r)?;
            return Ok(None);
        }
    }
    match h.open(r, cx)? {
        Opened::Fd(f) => {
            let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
            if raw != r.fd {
                table.dup3(raw, r.fd, r.cloexec).map_err(|e| format!("fd {}: {e}", r.fd))?;
                drop(f);
            } else {
                // The descriptor stays at its number, for the restored process.
                let raw = std::os::fd::IntoRawFd::into_raw_fd(f);
                crest_ptrace::sys::set_cloexec(raw, r.cloexec).map_err(|e| format!("fd {}: {e}", r.fd))?;
            }
            set_owner(r)?;
        }
        Opened::AsIs => {
            let _ = crest_ptrace::sys::set_cloexec(r.fd, r.cloexec);
        }
        Opened::NotYet(waits) => return Ok(Some(waits)),
    }
    opened.entry(r.file).or_insert(r.fd);
    Ok(None)
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    use crest_image::{FdKind, FdRecord, Fown};

    use super::{DumpCx, FdHandler, Opened, PrepareCx};
    use crate::ObjId;

    /// A directory of its own for one test, with a FIFO in it.
    fn fifo(test: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("crest-kinds-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a test directory");
        let path = dir.join("fifo").to_str().expect("a UTF-8 path").to_string();
        assert!(std::process::Command::new("mkfifo").arg(&path).status().expect("mkfifo runs").success());
        (dir, path)
    }

    pub(super) fn record(fd: i32, file: u64, kind: FdKind) -> FdRecord {
        FdRecord { fd, flags: libc::O_RDONLY as u32, cloexec: true, file, kind, locks: Vec::new(), fown: Fown::default() }
    }

    /// A FIFO whose inode number is that of a pipe dumped before it keeps its own data: the
    /// two are different objects (regression: both were keyed by the inode number alone).
    #[test]
    fn fifo_data_is_dumped_after_a_pipe_with_its_inode_number() {
        let (dir, path) = fifo("dump");
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("the FIFO opens");
        (&f).write_all(b"fifo data").expect("the FIFO takes data");
        let (pid, fd) = (std::process::id() as i32, f.as_raw_fd());
        let md = std::fs::metadata(format!("/proc/self/fd/{fd}")).expect("its metadata");
        let info = crest_proc::parse_fdinfo(&crest_proc::read(pid, &format!("fdinfo/{fd}")).expect("its fdinfo")).expect("parsed");
        let mut seen = std::collections::HashSet::from([ObjId::pipe(md.ino())]);
        let mut peers = Default::default();
        let mut cx = DumpCx {
            pid,
            pidfd: crest_ptrace::sys::pidfd_open(pid).ok(),
            all: &[],
            seen: &mut seen,
            drop_unsupported: false,
            dropped: Vec::new(),
            unix_peers: &mut peers,
            deleted_max: super::DELETED_MAX,
            external_unix: false,
            pair_ends: None,
            image: &[],
        };
        let kind = super::fifo::Fifo.dump(&mut cx, fd, &path, &md, &info).expect("the FIFO dumps");
        assert_eq!(kind, FdKind::Fifo { path: path.clone(), data: b"fifo data".to_vec() });
        // A second descriptor of the same FIFO does not carry the data again.
        let kind = super::fifo::Fifo.dump(&mut cx, fd, &path, &md, &info).expect("the FIFO dumps");
        assert_eq!(kind, FdKind::Fifo { path, data: Vec::new() });
        drop(f);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// At restore, a pipe whose saved id is the inode number of a FIFO and that FIFO are made as
    /// two objects, each refilled with its own data (regression: the FIFO took the pipe's
    /// parked read end for its own and failed to refill it).
    #[test]
    fn a_pipe_and_a_fifo_with_one_inode_number_are_restored_apart() {
        let (dir, path) = fifo("restore");
        let ino = std::fs::metadata(&path).expect("the FIFO exists").ino();
        let mut cx = PrepareCx::new(100);
        let pipe = record(50, 1, FdKind::Pipe { id: ino, write_end: false, size: 0, data: b"pipe data".to_vec() });
        let fifo = record(51, 2, FdKind::Fifo { path, data: b"fifo data".to_vec() });
        let Ok(Opened::Fd(p)) = super::pipe::Pipe.open(&pipe, &mut cx) else { panic!("the pipe is not made") };
        let Ok(Opened::Fd(f)) = super::fifo::Fifo.open(&fifo, &mut cx) else { panic!("the FIFO is not reopened") };
        let mut buf = [0u8; 64];
        let n = std::fs::File::from(p).read(&mut buf).expect("the pipe reads");
        assert_eq!(&buf[..n], b"pipe data");
        let n = std::fs::File::from(f).read(&mut buf).expect("the FIFO reads");
        assert_eq!(&buf[..n], b"fifo data");
        drop(cx);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// One record of every kind. The match makes a new variant of [`FdKind`] a compile error
    /// here until it has a sample, and so a place in the checks below.
    fn one_of_each() -> Vec<FdKind> {
        let s = String::new;
        let all = vec![
            FdKind::Regular { path: "/f".into(), pos: 0, size: 0, dev: 0, ino: 0 },
            FdKind::Directory { path: "/".into(), pos: 0 },
            FdKind::CharDevice { path: "/dev/null".into(), rdev: 0 },
            FdKind::EventFd { count: 0, semaphore: false },
            FdKind::Pipe { id: 1, write_end: false, size: 0, data: Vec::new() },
            FdKind::Epoll { targets: Vec::new(), sources: Vec::new() },
            FdKind::Fifo { path: "/p".into(), data: Vec::new() },
            FdKind::Memfd { id: 1, name: s(), size: 0, pos: 0, data: Vec::new(), seals: 0, mode: 0 },
            FdKind::Inherited { what: s(), class: crest_image::StdioClass::Pipe },
            FdKind::TimerFd { clock: 0, settime_flags: 0, value_ns: 0, interval_ns: 0, ticks: 0 },
            FdKind::Socket {
                family: 0,
                ty: 0,
                protocol: 0,
                addr: Vec::new(),
                listen: None,
                options: Vec::new(),
                what: "a socket".into(),
                byte_options: Vec::new(),
                ino: 0,
                peer: 0,
                unlinked: false,
                shutdown: 0,
                queue: Vec::new(),
                pending: false,
                file_attrs: None,
                dest: Vec::new(),
            },
            FdKind::UnixPair { id: 1, end: false, ty: 0, options: Vec::new(), state: None, what: "a pair".into(), byte_options: Vec::new(), alone: false },
            FdKind::SignalFd { mask: 0 },
            FdKind::Dropped { what: s() },
            FdKind::Inet { family: 0, ty: 0, protocol: 0, local: Vec::new(), peer: Vec::new(), options: Vec::new(), tcp: None, what: "a connection".into(), byte_options: Vec::new(), shutdown: 0 },
            FdKind::Inotify { watches: vec![crest_image::InotifyWatch { wd: 1, mask: 2, path: "/".into(), dev: 0, ino: 2, open_as: None }], lost: 0 },
            FdKind::Deleted { id: 1, path: "/tmp/f".into(), pos: 0, file: None },
            FdKind::Pty { index: 0, master: true, state: None },
            FdKind::Pidfd { pid: 1, own: false, ino: 0, exit: None },
            FdKind::Path { path: "/".into(), dev: 0, ino: 0, symlink: false },
            FdKind::ProcFile { pid: 1, path: "stat".into(), pos: 0 },
            FdKind::Ghost { id: 1, path: "/tmp/d".into(), pos: 0, node: crest_image::Ghost { mode: libc::S_IFDIR | 0o700, rdev: 0, uid: 0, gid: 0, target: s() }, data: Vec::new() },
            FdKind::Namespace { kind: "net".into() },
            FdKind::Fanotify { flags: 0, event_flags: 0, marks: vec![crest_image::FanotifyMark { kind: 1, mflags: 0, mask: 0x20, ignored_mask: 0, path: "/".into(), dev: 0, ino: 0 }], lost: 0 },
            FdKind::HungUpPty { path: "/dev/pts/3".into() },
            FdKind::Terminal {
                path: "/dev/tty5".into(),
                rdev: libc::makedev(4, 5),
                settings: crest_image::TermSettings { flags: [0; 4], line: 0, cc: vec![0; 19], speed: (38400, 38400), winsize: [25, 80, 0, 0], modem: None, exclusive: false, keyboard: Some(3) },
            },
        ];
        let rank = |k: &FdKind| match k {
            FdKind::Regular { .. } => 0,
            FdKind::Directory { .. } => 1,
            FdKind::CharDevice { .. } => 2,
            FdKind::EventFd { .. } => 3,
            FdKind::Pipe { .. } => 4,
            FdKind::Epoll { .. } => 5,
            FdKind::Fifo { .. } => 6,
            FdKind::Memfd { .. } => 7,
            FdKind::Inherited { .. } => 8,
            FdKind::TimerFd { .. } => 9,
            FdKind::Socket { .. } => 10,
            FdKind::UnixPair { .. } => 11,
            FdKind::SignalFd { .. } => 12,
            FdKind::Dropped { .. } => 13,
            FdKind::Inet { .. } => 14,
            FdKind::Inotify { .. } => 15,
            FdKind::Deleted { .. } => 16,
            FdKind::Pty { .. } => 17,
            FdKind::Pidfd { .. } => 18,
            FdKind::Path { .. } => 19,
            FdKind::ProcFile { .. } => 20,
            FdKind::Ghost { .. } => 21,
            FdKind::Namespace { .. } => 22,
            FdKind::Fanotify { .. } => 23,
            FdKind::HungUpPty { .. } => 24,
            FdKind::Terminal { .. } => 25,
        };
        assert_eq!(all.iter().map(rank).collect::<Vec<_>>(), (0..all.len()).collect::<Vec<_>>(), "one sample of each kind, in order");
        all
    }

    /// Every kind of descriptor record has a handler that restores it and describes it (for
    /// `cr_info`), a section in docs/image-format.md, and one declaration of its path.
    #[test]
    fn every_kind_is_restored_described_and_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/image-format.md")).expect("docs/image-format.md");
        for k in one_of_each() {
            let debug = format!("{k:?}");
            let name = debug.split([' ', '{', '(']).next().expect("a name");
            let h = super::handler_for(&k).unwrap_or_else(|| panic!("no handler restores {name} records"));
            assert!(!h.describe(&k).is_empty(), "the {} handler does not describe {name} records for cr_info", h.name());
            assert_eq!(super::HANDLERS.iter().filter(|h| h.restores(&k)).count(), 1, "{name} records are restored by more than one handler");
            assert!(doc.contains(&format!("`{name} {{")) || doc.contains(&format!("`{name}`")), "docs/image-format.md has no section on {name} records");
            assert_eq!(k.path().map(str::to_string), k.clone().path_mut().map(|p| p.clone()), "{name}: path and path_mut disagree");
        }
    }

    /// An epoll set whose watched descriptor comes after it in the records waits for it, and is
    /// restored once it is in place.
    #[test]
    fn epoll_waits_for_what_it_watches() {
        let mut cx = PrepareCx::new(100);
        cx.saved = [60, 61].into();
        let ep = record(60, 1, FdKind::Epoll { targets: vec![(61, libc::EPOLLIN as u32, 7)], sources: vec![61] });
        let h = super::handler_for(&ep.kind).expect("a handler");
        match h.open(&ep, &mut cx) {
            Ok(Opened::NotYet(w)) => assert_eq!(w, vec![61]),
            other => panic!("the epoll set did not wait for fd 61: {other:?}"),
        }
    }
}
