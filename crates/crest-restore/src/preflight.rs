//! What a restart checks before it starts anything: that the files the image needs are
//! there and unchanged, and that the restarting user could have started the saved process.
//!
//! Files. A file the process had mapped must have the size and modification time it had at
//! the checkpoint (its pages are mapped again from it). A file the process had open must
//! still be there, still be the same file (same inode; not checked for a path moved with
//! `--relocate`, whose copy is a new inode), and not be shorter than at the checkpoint (the
//! process's offset and what it read or wrote would be gone); growing is allowed, as BLCR
//! allowed appends. The working directory, open directories, FIFOs and devices must be there
//! and of the same kind. Every path is found through one list ([`paths`]), which relocation
//! ([`relocate`]) goes through too: a kind that names a path is relocated and checked alike.
//!
//! Credentials. A restored process gets its saved uids, gids, supplementary groups (when the
//! restarter may set them) and capability sets. So that nobody gets the memory of a process
//! they could not have run, each saved real, effective, saved and file-system uid must be one
//! the restarting process has, unless it has `CAP_SETUID` (likewise gids and supplementary
//! groups with `CAP_SETGID`); the saved effective and permitted capabilities must be among the
//! restarter's permitted ones; and a set-user-ID or set-group-ID executable needs its owner
//! (or group), or the capability.
use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use crest_kinds::exit::ErrorKind;

use crest_image::{FdKind, Process, VmaBacking};

/// Why a restart is refused before anything starts: what kind of failure it is (the errno
/// of the cause, as BLCR) and what is wrong and what to do. BLCR's failure class for
/// `--run-on-fail-*` is `env` for all of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct Refusal {
    /// The kind of failure (and exit code).
    pub kind: ErrorKind,
    /// What is wrong and what to do.
    pub msg: String,
}

fn refuse(code: i32, msg: String) -> Refusal {
    Refusal { kind: ErrorKind::of_errno(code), msg }
}

const RELOCATE: &str = "put it back, or give its new place with --relocate OLD=NEW";

/// Checks that every descriptor of `p` that is to follow `cr_restart`'s own (standard input,
/// output or error that led outside the image, [`FdKind::Inherited`]) finds there an object of
/// the class it had: a terminal for a terminal, a pipe or FIFO for a pipe, a socket for a
/// socket. `image_fd` is the descriptor the image is read from, which is never handed over.
/// With `relaxed` (`--relaxed-stdio`), any open descriptor will do.
pub fn stdio(p: &Process, image_fd: Option<i32>, relaxed: bool) -> Result<(), Refusal> {
    for f in &p.fds {
        let FdKind::Inherited { what, class } = &f.kind else { continue };
        let mine = if image_fd == Some(f.fd) { None } else { crest_kinds::fd::class_of(f.fd) };
        let open = image_fd != Some(f.fd) && std::fs::metadata(format!("/proc/self/fd/{}", f.fd)).is_ok();
        if mine == Some(*class) || (relaxed && open) {
            continue;
        }
        let have = if image_fd == Some(f.fd) {
            "the image being read".to_string()
        } else {
            match std::fs::read_link(format!("/proc/self/fd/{}", f.fd)) {
                Ok(l) => match mine {
                    Some(c) => format!("{} ({})", c.name(), l.display()),
                    None => format!("{}", l.display()),
                },
                Err(_) => "closed".to_string(),
            }
        };
        return Err(refuse(
            libc::EBADF,
            format!(
                "descriptor {} of PID {} was {} ({what}) at the checkpoint, and the restored process would get cr_restart's own descriptor {}, which is {have}: run cr_restart with its descriptor {} on {}{}",
                f.fd,
                p.pid,
                class.name(),
                f.fd,
                f.fd,
                class.name(),
                if open { ", or give --relaxed-stdio to hand it over all the same" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// Where in a [`Process`] a path is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Cwd,
    Exe,
    Vma(usize),
    Fd(usize),
    /// Watch `.1` of the inotify descriptor `.0`.
    Watch(usize, usize),
    /// Descriptor in flight `.1` of the socket descriptor `.0` ([`FdKind::in_flight`]).
    InFlight(usize, usize),
}

/// What a path of an image names, and so what must be found there at restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// The working directory: a directory.
    WorkingDirectory,
    /// The executable (`/proc/PID/exe`): a file.
    Executable,
    /// A mapped file: a regular file with the saved size and modification time (its pages are
    /// mapped again from it).
    Mapped {
        /// Size at the checkpoint.
        size: u64,
        /// Modification time at the checkpoint, in nanoseconds.
        mtime_ns: i64,
    },
    /// An open regular file: the same inode (unless relocated), no shorter than it was.
    OpenFile {
        /// The descriptor.
        fd: i32,
        /// Size at the checkpoint.
        size: u64,
        /// Inode at the checkpoint.
        ino: u64,
    },
    /// An open directory.
    OpenDirectory {
        /// The descriptor.
        fd: i32,
    },
    /// An open named pipe (FIFO).
    OpenFifo {
        /// The descriptor.
        fd: i32,
    },
    /// An open character device.
    OpenDevice {
        /// The descriptor.
        fd: i32,
    },
    /// A file opened with `O_PATH`: the same inode (unless relocated), and a symbolic link when
    /// it was one (looked at itself, not followed).
    OpenPath {
        /// The descriptor.
        fd: i32,
        /// Inode at the checkpoint.
        ino: u64,
        /// It was a symbolic link.
        symlink: bool,
    },
    /// A file deleted while open or mapped: it is recreated, unlinked, in the directory the
    /// path names, which must be there.
    Deleted,
    /// A file or directory an inotify descriptor watches: it must be there.
    Watched {
        /// The descriptor.
        fd: i32,
        /// The watch descriptor.
        wd: i32,
    },
}

impl Named {
    /// The path in words, for messages.
    fn what(self, path: &str) -> String {
        match self {
            Named::WorkingDirectory => format!("the process's working directory {path}"),
            Named::Executable => format!("{path}, the process's executable,"),
            Named::Mapped { .. } => format!("{path}, which the process had mapped into memory,"),
            Named::OpenFile { fd, .. } | Named::OpenDirectory { fd } | Named::OpenFifo { fd } | Named::OpenDevice { fd } => format!("{path}, open as descriptor {fd},"),
            Named::OpenPath { fd, .. } => format!("{path}, open as descriptor {fd} (O_PATH),"),
            Named::Deleted => format!("the directory of {path}, a file deleted while the process had it open or mapped,"),
            Named::Watched { fd, wd } => format!("{path}, which inotify descriptor {fd} watches (watch {wd}),"),
        }
    }
}

/// Every path `p` names, once each, with what it names: the one list that relocation and the
/// file checks go through, so that every kind that names a path is relocated and checked by
/// the same rule. The working directory comes first, the executable last (it is mapped too,
/// and said so first).
fn named(p: &Process) -> Vec<(Place, Named)> {
    // A deleted working directory is made again where it was, missing directories included.
    let mut out = if p.cwd_deleted.is_some() { Vec::new() } else { vec![(Place::Cwd, Named::WorkingDirectory)] };
    for (i, v) in p.vmas.iter().enumerate() {
        match &v.backing {
            VmaBacking::File { size, mtime_ns, .. } => out.push((Place::Vma(i), Named::Mapped { size: *size, mtime_ns: *mtime_ns })),
            VmaBacking::Deleted { .. } => out.push((Place::Vma(i), Named::Deleted)),
            _ => {}
        }
    }
    for (i, f) in p.fds.iter().enumerate() {
        // The files in flight in a socket's queue are opened by their path at restart too.
        for (k, r) in f.kind.in_flight().into_iter().enumerate() {
            let n = match &r.kind {
                FdKind::Regular { size, ino, .. } => Named::OpenFile { fd: f.fd, size: *size, ino: *ino },
                FdKind::Directory { .. } => Named::OpenDirectory { fd: f.fd },
                FdKind::Fifo { .. } => Named::OpenFifo { fd: f.fd },
                FdKind::CharDevice { .. } => Named::OpenDevice { fd: f.fd },
                FdKind::Deleted { .. } => Named::Deleted,
                _ => continue,
            };
            out.push((Place::InFlight(i, k), n));
        }
        let n = match &f.kind {
            FdKind::Regular { size, ino, .. } => Named::OpenFile { fd: f.fd, size: *size, ino: *ino },
            FdKind::Directory { .. } => Named::OpenDirectory { fd: f.fd },
            FdKind::Fifo { .. } => Named::OpenFifo { fd: f.fd },
            FdKind::CharDevice { .. } => Named::OpenDevice { fd: f.fd },
            FdKind::Deleted { .. } => Named::Deleted,
            FdKind::Path { ino, symlink, .. } => Named::OpenPath { fd: f.fd, ino: *ino, symlink: *symlink },
            FdKind::Inotify { watches, .. } => {
                // A watch of a deleted file names no path: it follows the descriptor holding it.
                out.extend(watches.iter().enumerate().filter(|(_, w)| w.open_as.is_none()).map(|(j, w)| (Place::Watch(i, j), Named::Watched { fd: f.fd, wd: w.wd })));
                continue;
            }
            _ => continue,
        };
        out.push((Place::Fd(i), n));
    }
    if !p.exe.is_empty() {
        out.push((Place::Exe, Named::Executable));
    }
    out
}

fn path_at(p: &Process, at: Place) -> &str {
    match at {
        Place::Cwd => &p.cwd,
        Place::Exe => &p.exe,
        Place::Vma(i) => match &p.vmas[i].backing {
            VmaBacking::File { path, .. } | VmaBacking::Deleted { path, .. } => path,
            _ => "",
        },
        Place::Fd(i) => p.fds[i].kind.path().unwrap_or(""),
        Place::InFlight(i, k) => p.fds[i].kind.in_flight().get(k).and_then(|r| r.kind.path()).unwrap_or(""),
        Place::Watch(i, j) => match &p.fds[i].kind {
            FdKind::Inotify { watches, .. } => &watches[j].path,
            _ => "",
        },
    }
}

fn path_at_mut(p: &mut Process, at: Place) -> Option<&mut String> {
    match at {
        Place::Cwd => Some(&mut p.cwd),
        Place::Exe => Some(&mut p.exe),
        Place::Vma(i) => match &mut p.vmas[i].backing {
            VmaBacking::File { path, .. } | VmaBacking::Deleted { path, .. } => Some(path),
            _ => None,
        },
        Place::Fd(i) => p.fds[i].kind.path_mut(),
        Place::InFlight(i, k) => p.fds[i].kind.in_flight_mut().into_iter().nth(k).and_then(|r| r.kind.path_mut()),
        Place::Watch(i, j) => match &mut p.fds[i].kind {
            FdKind::Inotify { watches, .. } => Some(&mut watches[j].path),
            _ => None,
        },
    }
}

/// Every path `p` names, with what it names (see [`Named`]).
pub fn paths(p: &Process) -> Vec<(String, Named)> {
    named(p).into_iter().map(|(at, n)| (path_at(p, at).to_string(), n)).collect()
}

/// A relocation (BLCR's `--relocate OLD=NEW`): paths under `old` are taken from under `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relocation {
    /// The saved prefix.
    pub old: PathBuf,
    /// Its replacement.
    pub new: PathBuf,
}

/// BLCR's limit on relocations.
pub const MAX_RELOCATIONS: usize = 16;

/// A bad `--relocate` argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelocationError {
    /// More than [`MAX_RELOCATIONS`].
    #[error("Too many relocations (max is 16)")]
    TooMany,
    /// Not one `OLD=NEW`.
    #[error("--relocate {0}: needs exactly one OLD=NEW")]
    NotOnePair(String),
    /// A relative path.
    #[error("--relocate {0}: both paths must be absolute")]
    Relative(String),
}

impl Relocation {
    /// Parses BLCR's `OLD=NEW` syntax: `\=` is a literal `=`, `\\` a literal `\`; trailing
    /// slashes are ignored. `None` when both sides are the same (nothing to do).
    pub fn parse(a: &str) -> Result<Option<Relocation>, RelocationError> {
        let mut parts = vec![String::new()];
        let mut chars = a.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                ('\\', Some('=')) | ('\\', Some('\\')) => parts.last_mut().expect("non-empty").push(chars.next().expect("peeked")),
                ('=', _) => parts.push(String::new()),
                _ => parts.last_mut().expect("non-empty").push(c),
            }
        }
        let [old, new] = parts.as_slice() else { return Err(RelocationError::NotOnePair(a.to_string())) };
        if !old.starts_with('/') || !new.starts_with('/') {
            return Err(RelocationError::Relative(a.to_string()));
        }
        let trim = |s: &str| if s.len() > 1 { s.trim_end_matches('/').to_string() } else { s.to_string() };
        let (old, new) = (trim(old), trim(new));
        Ok((old != new).then(|| Relocation { old: PathBuf::from(old), new: PathBuf::from(new) }))
    }

    /// Parses every argument; at most [`MAX_RELOCATIONS`].
    pub fn parse_all<S: AsRef<str>>(args: &[S]) -> Result<Vec<Relocation>, RelocationError> {
        if args.len() > MAX_RELOCATIONS {
            return Err(RelocationError::TooMany);
        }
        Ok(args.iter().map(|a| Relocation::parse(a.as_ref())).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect())
    }
}

fn relocate_path(path: &mut String, relocs: &[Relocation]) {
    for r in relocs {
        if let Ok(rest) = std::path::Path::new(path.as_str()).strip_prefix(&r.old) {
            *path = r.new.join(rest).to_string_lossy().into_owned();
            return;
        }
    }
}

/// Applies the relocations to every path of `p` (each that [`paths`] lists); returns the new
/// paths that were moved.
pub fn relocate(p: &mut Process, relocs: &[Relocation]) -> HashSet<String> {
    let mut moved = HashSet::new();
    if relocs.is_empty() {
        return moved;
    }
    for (at, _) in named(p) {
        let Some(path) = path_at_mut(p, at) else { continue };
        let before = path.clone();
        relocate_path(path, relocs);
        if *path != before {
            moved.insert(path.clone());
        }
    }
    moved
}

/// Checks every path of `p` (already relocated) by one rule: it must be there, of the kind it
/// was, and unchanged as far as its kind needs (see [`Named`]). `relocated(path)` says
/// whether a path was changed by a relocation (its copy is a new inode).
pub fn files(p: &Process, relocated: &dyn Fn(&str) -> bool) -> Result<(), Refusal> {
    files_looked(p, relocated, &mut Looked::default())
}

/// The metadata of the paths one restart has looked at, so that a path many processes name
/// (their executable, the libraries they map, their directory) is looked up once.
#[derive(Default)]
pub struct Looked(std::collections::HashMap<(String, bool), std::fs::Metadata>);

impl Looked {
    /// The metadata of `path` (of a symbolic link itself with `symlink`), looked up once.
    pub fn get(&mut self, path: &str, symlink: bool) -> std::io::Result<std::fs::Metadata> {
        if let Some(md) = self.0.get(&(path.to_string(), symlink)) {
            return Ok(md.clone());
        }
        let md = if symlink { std::fs::symlink_metadata(path) } else { std::fs::metadata(path) }?;
        self.0.insert((path.to_string(), symlink), md.clone());
        Ok(md)
    }
}

/// [`files`], with the paths already looked at in `looked`.
pub fn files_looked(p: &Process, relocated: &dyn Fn(&str) -> bool, looked: &mut Looked) -> Result<(), Refusal> {
    let mut seen = BTreeSet::new();
    for (at, n) in named(p) {
        let path = path_at(p, at);
        if matches!(n, Named::Mapped { .. } | Named::Deleted) && !seen.insert(path) {
            continue;
        }
        let what = n.what(path);
        // A deleted file is recreated in its directory.
        let looked_at = match n {
            Named::Deleted => std::path::Path::new(path).parent().and_then(|d| d.to_str()).unwrap_or("/"),
            _ => path,
        };
        // A watched symbolic link is watched itself.
        let found = looked.get(looked_at, matches!(n, Named::Watched { .. } | Named::OpenPath { symlink: true, .. }));
        let md = match found {
            Ok(m) => m,
            Err(e) => return Err(refuse(e.raw_os_error().unwrap_or(libc::ENOENT), format!("{what} cannot be used ({e}); {RELOCATE}"))),
        };
        let ft = md.file_type();
        let (fits, kind, code) = match n {
            Named::WorkingDirectory | Named::OpenDirectory { .. } | Named::Deleted => (ft.is_dir(), "a directory", libc::ENOTDIR),
            Named::Watched { .. } | Named::OpenPath { symlink: false, .. } => (true, "", 0),
            Named::OpenPath { symlink: true, .. } => (ft.is_symlink(), "a symbolic link", libc::EINVAL),
            Named::Executable | Named::Mapped { .. } | Named::OpenFile { .. } => (ft.is_file(), "a regular file", libc::EINVAL),
            Named::OpenFifo { .. } => (ft.is_fifo(), "a FIFO", libc::EINVAL),
            Named::OpenDevice { .. } => (ft.is_char_device(), "a character device", libc::EINVAL),
        };
        if !fits {
            return Err(refuse(code, format!("{what} is not {kind} any more; {RELOCATE}")));
        }
        match n {
            Named::Mapped { size, mtime_ns } => {
                let mtime = md.mtime() * 1_000_000_000 + md.mtime_nsec();
                if md.size() != size || mtime != mtime_ns {
                    return Err(refuse(
                        libc::ESTALE,
                        format!(
                            "{path}, which the process had mapped into memory, has changed since the checkpoint (size {size} then, {} now; modified {} then, {} now); the process cannot be restored with it: restore the file as it was",
                            md.size(),
                            when(mtime_ns),
                            when(mtime)
                        ),
                    ));
                }
            }
            Named::OpenPath { fd, ino, .. } if md.ino() != ino && !relocated(path) => {
                return Err(refuse(
                    libc::ESTALE,
                    format!("{path}, open as descriptor {fd} (O_PATH), is another file now (inode {ino} then, {} now): it was replaced since the checkpoint; restore the original, or give a copy's place with --relocate OLD=NEW", md.ino()),
                ));
            }
            Named::OpenFile { fd, size, ino } => {
                if md.ino() != ino && !relocated(path) {
                    return Err(refuse(
                        libc::ESTALE,
                        format!("{path}, open as descriptor {fd}, is another file now (inode {ino} then, {} now): it was replaced since the checkpoint; restore the original, or give a copy's place with --relocate OLD=NEW", md.ino()),
                    ));
                }
                if md.size() < size {
                    return Err(refuse(
                        libc::ESTALE,
                        format!(
                            "{path}, open as descriptor {fd}, was truncated since the checkpoint ({size} bytes then, {} now); the process cannot go on with it: restore the file as it was",
                            md.size()
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A modification time in nanoseconds since the epoch, for messages (UTC).
fn when(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:09} UTC", rem / 3600, rem / 60 % 60, rem % 60, ns.rem_euclid(1_000_000_000))
}

/// The credentials of the restarting process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// Real, effective, saved, file-system uid.
    pub uid: [u32; 4],
    /// Real, effective, saved, file-system gid.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Permitted capabilities.
    pub cap_prm: u64,
}

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;

impl Caller {
    /// The calling process's credentials, from `/proc/self/status`.
    pub fn current() -> std::io::Result<Caller> {
        let s = std::fs::read_to_string("/proc/self/status")?;
        let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(':'))).unwrap_or("").trim().to_string();
        let ids = |k: &str| {
            let mut out = [0u32; 4];
            for (o, v) in out.iter_mut().zip(field(k).split_whitespace()) {
                *o = v.parse().unwrap_or(u32::MAX);
            }
            out
        };
        Ok(Caller {
            uid: ids("Uid"),
            gid: ids("Gid"),
            groups: field("Groups").split_whitespace().filter_map(|g| g.parse().ok()).collect(),
            cap_prm: u64::from_str_radix(&field("CapPrm"), 16).unwrap_or(0),
        })
    }

    fn has(&self, cap: u32) -> bool {
        self.cap_prm & (1 << cap) != 0
    }
}

/// Capability names, by number, for messages.
const CAP_NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn cap_names(mask: u64) -> String {
    (0..64).filter(|b| mask & (1 << b) != 0).map(|b| CAP_NAMES.get(b as usize).map_or_else(|| format!("capability {b}"), |n| n.to_string())).collect::<Vec<_>>().join(", ")
}

/// Refuses `p` if `me` could not have started it (see the module documentation). `exe` is the
/// executable's metadata now, if it can be read.
pub fn credentials(p: &Process, me: &Caller, exe: Option<&std::fs::Metadata>) -> Result<(), Refusal> {
    let what = "restart it as that user or as root";
    let mine: Vec<u32> = me.gid.iter().chain(&me.groups).copied().collect();
    // The process's credentials and those of each thread (threads may have their own).
    let threads = p.threads.iter().map(|t| &t.attrs.creds).filter(|c| c.uid != [0; 4] || c.gid != [0; 4] || c.cap_bnd != 0);
    for c in std::iter::once(&p.creds).chain(threads) {
        let foreign_uid = c.uid.iter().any(|u| !me.uid.contains(u));
        if foreign_uid && !me.has(CAP_SETUID) {
            return Err(refuse(
                libc::EPERM,
                format!("the image's process ran as uid {} (real, effective, saved, file system: {:?}); uid {} could not have started it: {what}", c.uid[1], c.uid, me.uid[1]),
            ));
        }
        let foreign_gid = c.gid.iter().any(|g| !me.gid.contains(g)) || c.groups.iter().any(|g| !mine.contains(g));
        if foreign_gid && !me.has(CAP_SETGID) {
            return Err(refuse(
                libc::EPERM,
                format!("the image's process ran with gid {} and groups {:?}; a process with gid {} and groups {:?} could not have started it: {what}", c.gid[1], c.groups, me.gid[1], me.groups),
            ));
        }
        let missing = (c.cap_eff | c.cap_prm) & !me.cap_prm;
        if missing != 0 {
            return Err(refuse(libc::EPERM, format!("the image's process had capabilities this restart does not have ({}): {what}", cap_names(missing))));
        }
    }
    if let (Some(md), false) = (exe, p.exe.is_empty()) {
        let mode = md.mode();
        if mode & libc::S_ISUID != 0 && !me.uid.contains(&md.uid()) && !me.has(CAP_SETUID) {
            return Err(refuse(libc::EPERM, format!("the image's executable {} is set-user-ID (owner uid {}); restarting it needs that user or CAP_SETUID: {what}", p.exe, md.uid())));
        }
        if mode & libc::S_ISGID != 0 && !mine.contains(&md.gid()) && !me.has(CAP_SETGID) {
            return Err(refuse(libc::EPERM, format!("the image's executable {} is set-group-ID (group {}); restarting it needs that group or CAP_SETGID: {what}", p.exe, md.gid())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crest_image::Creds;

    fn process(uid: u32, gid: u32, groups: Vec<u32>, cap_eff: u64) -> Process {
        Process {
            pid: 1,
            ppid: 0,
            pgid: 1,
            sid: 1,
            creds: Creds { uid: [uid; 4], gid: [gid; 4], groups, cap_eff, ..Default::default() },
            cwd: "/".into(),
            root: "/".into(),
            umask: 0o022,
            ..Default::default()
        }
    }

    fn user(uid: u32, gid: u32, groups: Vec<u32>) -> Caller {
        Caller { uid: [uid; 4], gid: [gid; 4], groups, cap_prm: 0 }
    }

    #[test]
    fn own_process_is_allowed() {
        assert_eq!(credentials(&process(1000, 1000, vec![1000, 20], 0), &user(1000, 1000, vec![1000, 20, 30]), None), Ok(()));
    }

    #[test]
    fn root_may_restart_anything() {
        let root = Caller { uid: [0; 4], gid: [0; 4], groups: vec![0], cap_prm: (1 << 41) - 1 };
        assert_eq!(credentials(&process(1000, 1000, vec![1000, 20], 0), &root, None), Ok(()));
        assert_eq!(credentials(&process(0, 0, vec![0], (1 << 41) - 1), &root, None), Ok(()));
    }

    #[test]
    fn another_users_process_is_refused() {
        let r = credentials(&process(0, 0, vec![0], 0), &user(65534, 65534, vec![]), None).unwrap_err();
        assert_eq!(r.kind.code(), libc::EPERM);
        assert!(r.msg.contains("ran as uid 0") && r.msg.contains("uid 65534 could not have started it"), "{}", r.msg);
        let mut setuid_like = process(1000, 1000, vec![], 0);
        setuid_like.creds.uid = [1000, 0, 0, 0];
        assert!(credentials(&setuid_like, &user(1000, 1000, vec![]), None).is_err(), "an effective uid 0 is not the user's");
    }

    #[test]
    fn foreign_groups_and_capabilities_are_refused() {
        let r = credentials(&process(1000, 1000, vec![1000, 27], 0), &user(1000, 1000, vec![1000]), None).unwrap_err();
        assert!(r.msg.contains("groups"), "{}", r.msg);
        let r = credentials(&process(1000, 1000, vec![], 1 << 13), &user(1000, 1000, vec![]), None).unwrap_err();
        assert!(r.msg.contains("CAP_NET_RAW"), "{}", r.msg);
    }

    #[test]
    fn set_user_id_executable_needs_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let f = std::env::temp_dir().join(format!("crest-preflight-suid-{}", std::process::id()));
        std::fs::write(&f, b"").expect("temp file");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        let md = std::fs::metadata(&f).expect("stat");
        let _ = std::fs::remove_file(&f);
        let other = md.uid().wrapping_add(1);
        let mut p = process(other, 1000, vec![], 0);
        p.exe = f.display().to_string();
        let r = credentials(&p, &user(other, 1000, vec![]), Some(&md)).unwrap_err();
        assert!(r.msg.contains("set-user-ID"), "{}", r.msg);
        p.creds.uid = [md.uid(); 4];
        assert_eq!(credentials(&p, &user(md.uid(), 1000, vec![]), Some(&md)), Ok(()), "its owner may");
    }

    fn fifo(fd: i32, path: &str) -> crest_image::FdRecord {
        crest_image::FdRecord { fd, flags: 0, cloexec: false, file: fd as u64, kind: FdKind::Fifo { path: path.into(), data: Vec::new() }, locks: Vec::new(), fown: Default::default() }
    }

    /// A FIFO names a path like a file does: it is relocated, and refused by the same rule when
    /// it is gone or is something else now.
    #[test]
    fn every_kind_that_names_a_path_is_relocated_and_checked() {
        let d = std::env::temp_dir().join(format!("crest-preflight-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("new")).expect("temp dir");
        let mut p = process(0, 0, vec![], 0);
        p.fds.push(fifo(3, "/old/place/f"));
        let r = files(&p, &|_| false).unwrap_err();
        assert_eq!(r.kind.code(), libc::ENOENT);
        assert!(r.msg.starts_with("/old/place/f, open as descriptor 3, cannot be used (") && r.msg.ends_with(RELOCATE), "{}", r.msg);

        let relocs = Relocation::parse_all(&[format!("/old/place={}", d.join("new").display())]).expect("parses");
        let moved = relocate(&mut p, &relocs);
        let at = d.join("new/f").display().to_string();
        assert_eq!(paths(&p).last(), Some(&(at.clone(), Named::OpenFifo { fd: 3 })));
        assert!(moved.contains(&at));
        std::fs::write(&at, b"").expect("a plain file where the FIFO was");
        let r = files(&p, &|_| false).unwrap_err();
        assert_eq!((r.kind.code(), r.msg.clone()), (libc::EINVAL, format!("{at}, open as descriptor 3, is not a FIFO any more; {RELOCATE}")));
        std::fs::remove_file(&at).expect("remove");
        assert!(std::process::Command::new("mkfifo").arg(&at).status().is_ok_and(|s| s.success()), "mkfifo");
        assert_eq!(files(&p, &|_| false), Ok(()));
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A deleted file needs its directory, and an inotify watch its path; both are relocated.
    #[test]
    fn deleted_files_and_watches_are_checked_and_relocated() {
        let d = std::env::temp_dir().join(format!("crest-preflight-deleted-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("new/w")).expect("temp dir");
        let mut p = process(0, 0, vec![], 0);
        let rec = |fd: i32, kind: FdKind| crest_image::FdRecord { fd, flags: 0, cloexec: false, file: fd as u64, kind, locks: Vec::new(), fown: Default::default() };
        p.fds.push(rec(3, FdKind::Deleted { id: 1, path: "/old/gone".into(), pos: 0, file: None }));
        let r = files(&p, &|_| false).unwrap_err();
        assert!(r.msg.starts_with("the directory of /old/gone, a file deleted while the process had it open or mapped, cannot be used ("), "{}", r.msg);
        let watch = crest_image::InotifyWatch { wd: 2, mask: 0x100, path: "/old/w".into(), dev: 0, ino: 0, open_as: None };
        p.fds.push(rec(4, FdKind::Inotify { watches: vec![watch], lost: 0 }));
        let relocs = Relocation::parse_all(&[format!("/old={}", d.join("new").display())]).expect("parses");
        relocate(&mut p, &relocs);
        assert_eq!(files(&p, &|_| false), Ok(()));
        assert!(paths(&p).contains(&(d.join("new/w").display().to_string(), Named::Watched { fd: 4, wd: 2 })));
        std::fs::remove_dir(d.join("new/w")).expect("remove");
        let r = files(&p, &|_| false).unwrap_err();
        assert!(r.msg.contains("which inotify descriptor 4 watches (watch 2), cannot be used"), "{}", r.msg);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// An O_PATH descriptor's path must name the same inode (unless relocated), and a symbolic
    /// link that was opened itself must still be a link, looked at without following it.
    #[test]
    fn o_path_files_and_links_are_checked_and_relocated() {
        use std::os::unix::fs::MetadataExt;
        let d = std::env::temp_dir().join(format!("crest-preflight-opath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("new")).expect("temp dir");
        let (file, link) = (d.join("f"), d.join("l"));
        std::fs::write(&file, b"x").expect("a file");
        std::os::unix::fs::symlink("f", &link).expect("a link");
        let ino = |p: &std::path::Path| std::fs::symlink_metadata(p).expect("stat").ino();
        let mut p = process(0, 0, vec![], 0);
        let rec = |fd: i32, kind: FdKind| crest_image::FdRecord { fd, flags: libc::O_PATH as u32, cloexec: false, file: fd as u64, kind, locks: Vec::new(), fown: Default::default() };
        let path = |p: &std::path::Path| p.display().to_string();
        p.fds.push(rec(3, FdKind::Path { path: path(&file), dev: 0, ino: ino(&file), symlink: false }));
        p.fds.push(rec(4, FdKind::Path { path: path(&link), dev: 0, ino: ino(&link), symlink: true }));
        assert_eq!(files(&p, &|_| false), Ok(()));
        // The link replaced by a file of its own: not a link any more.
        std::fs::remove_file(&link).expect("remove");
        std::fs::write(&link, b"").expect("a file in its place");
        let r = files(&p, &|_| false).unwrap_err();
        assert_eq!((r.kind.code(), r.msg.clone()), (libc::EINVAL, format!("{}, open as descriptor 4 (O_PATH), is not a symbolic link any more; {RELOCATE}", path(&link))));
        // The file replaced: another inode.
        std::fs::remove_file(&link).expect("remove");
        std::os::unix::fs::symlink("f", &link).expect("a link again");
        p.fds[1].kind = FdKind::Path { path: path(&link), dev: 0, ino: ino(&link), symlink: true };
        // (Made before the first is gone, so that it cannot get its inode number.)
        std::fs::write(d.join("g"), b"x").expect("another file");
        std::fs::rename(d.join("g"), &file).expect("in its place");
        let r = files(&p, &|_| false).unwrap_err();
        assert!(r.kind.code() == libc::ESTALE && r.msg.contains("open as descriptor 3 (O_PATH), is another file now"), "{}", r.msg);
        // Relocated: a copy is another inode, and that is expected.
        std::fs::copy(&file, d.join("new/f")).expect("a copy");
        std::os::unix::fs::symlink("f", d.join("new/l")).expect("a link in the new place");
        let relocs = Relocation::parse_all(&[format!("{}={}", d.display(), d.join("new").display())]).expect("parses");
        let moved = relocate(&mut p, &relocs);
        assert!(paths(&p).contains(&(path(&d.join("new/l")), Named::OpenPath { fd: 4, ino: ino(&link), symlink: true })));
        assert_eq!(files(&p, &|q| moved.contains(q)), Ok(()));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn relocations_parse_as_blcr_does() {
        assert_eq!(Relocation::parse("/a/=/b").expect("parses"), Some(Relocation { old: "/a".into(), new: "/b".into() }));
        assert_eq!(Relocation::parse("/a\\=b=/c").expect("parses"), Some(Relocation { old: "/a=b".into(), new: "/c".into() }));
        assert_eq!(Relocation::parse("/a=/a/").expect("parses"), None);
        assert_eq!(Relocation::parse("a=/b"), Err(RelocationError::Relative("a=/b".into())));
        assert_eq!(Relocation::parse("/a=/b=/c"), Err(RelocationError::NotOnePair("/a=/b=/c".into())));
        assert_eq!(Relocation::parse_all(&vec!["/a=/b"; 17]), Err(RelocationError::TooMany));
    }

    #[test]
    fn dates_read_as_dates() {
        assert_eq!(when(0), "1970-01-01 00:00:00.000000000 UTC");
        assert_eq!(when(1_700_000_000_123_456_789), "2023-11-14 22:13:20.123456789 UTC");
    }
}

/// The XSAVE state components, by bit, as people name them.
const XFEATURES: &[(u32, &str)] = &[
    (2, "AVX"),
    (3, "MPX bound registers"),
    (4, "MPX configuration"),
    (5, "AVX-512 opmask"),
    (6, "AVX-512 upper halves of ZMM0-15"),
    (7, "AVX-512 ZMM16-31"),
    (9, "protection keys (PKRU)"),
    (17, "AMX tile configuration"),
    (18, "AMX tile data"),
    (19, "APX extended registers"),
];

/// The state components a thread's saved XSAVE area holds in use (`XSTATE_BV`, bytes 512 to
/// 519 of the area), without x87 and SSE, which every x86-64 machine has.
fn in_use(xsave: &[u8]) -> u64 {
    xsave.get(512..520).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes"))) & !0b11
}

/// Refuses an image whose threads used CPU state this machine does not give processes
/// (`enabled`: its XCR0; an image from a machine with AVX-512 restarted on one without, say):
/// the program would fault, or lose its registers, on its first instruction that uses it.
pub fn cpu_features(p: &Process, enabled: Option<u64>) -> Result<(), Refusal> {
    xfeatures(p.pid, p.threads.iter().map(|t| t.xsave.as_slice()), enabled)
}

/// The CPU state the threads of `p` used beyond x87 and SSE, as people name it: what a machine
/// the image is restarted on must give processes.
pub fn cpu_state_used(p: &Process) -> Vec<String> {
    let used = p.threads.iter().fold(0u64, |acc, t| acc | in_use(&t.xsave));
    (0..64).filter(|b| used & (1u64 << b) != 0).map(|b| XFEATURES.iter().find(|f| f.0 == b).map_or(format!("XSAVE component {b}"), |f| f.1.to_string())).collect()
}

/// [`cpu_features`] of the saved XSAVE areas `areas` of process `pid`.
fn xfeatures<'a>(pid: i32, areas: impl Iterator<Item = &'a [u8]>, enabled: Option<u64>) -> Result<(), Refusal> {
    let Some(enabled) = enabled else { return Ok(()) };
    let used = areas.fold(0u64, |acc, a| acc | in_use(a));
    let missing = used & !enabled;
    if missing == 0 {
        return Ok(());
    }
    let names: Vec<String> = (0..64).filter(|b| missing & (1u64 << b) != 0).map(|b| XFEATURES.iter().find(|f| f.0 == b).map_or(format!("XSAVE component {b}"), |f| f.1.to_string())).collect();
    Err(refuse(
        libc::ENOEXEC,
        format!(
            "PID {pid} used CPU state this machine does not give processes: {} (this CPU lacks it, or its kernel has it disabled); restart it on a machine with the same CPU features",
            names.join(", ")
        ),
    ))
}

#[cfg(test)]
mod cpu_tests {
    use super::*;

    fn area(bv: u64) -> Vec<u8> {
        let mut xsave = vec![0u8; 576];
        xsave[512..520].copy_from_slice(&bv.to_le_bytes());
        xsave
    }

    fn check(bv: u64, enabled: Option<u64>) -> Result<(), Refusal> {
        xfeatures(42, std::iter::once(area(bv).as_slice()), enabled)
    }

    #[test]
    fn state_the_machine_lacks_is_refused_by_name() {
        // AVX and AVX-512 in use; the machine enables x87, SSE and AVX only.
        let e = check(0b1110_0111, Some(0b111)).unwrap_err();
        assert!(e.msg.contains("AVX-512 opmask") && e.msg.contains("ZMM16-31") && !e.msg.contains("AVX,"), "{}", e.msg);
        assert!(check(0b1110_0111, Some(0b1110_0111)).is_ok());
        assert!(check(0b11, Some(0b11)).is_ok(), "x87 and SSE are always there");
        assert!(check(0b1110_0111, None).is_ok(), "no XSAVE here: nothing to compare");
    }

    #[test]
    fn this_machine_restarts_what_it_checkpoints() {
        let enabled = crest_ptrace::sys::enabled_xfeatures();
        if let Some(x) = enabled {
            assert!(x & 0b11 == 0b11, "x87 and SSE enabled: {x:#x}");
            assert!(check(x, enabled).is_ok());
        }
    }
}
