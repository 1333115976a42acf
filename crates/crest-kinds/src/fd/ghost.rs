//! Nodes other than regular files deleted while in use: a directory (open, or a working
//! directory), a FIFO with the bytes it buffers, a character device, a symbolic link open with
//! `O_PATH`. `/proc/PID/fd/N` reads `PATH (deleted)` (a working directory: `/proc/PID/cwd`).
//!
//! Dump saves what the node was ([`Ghost`]: type, permission bits, owner, device number, link
//! target) and, for a FIFO, the bytes it buffers (read without consuming them, as for pipes).
//! A character device is saved only when it is one of those that are the same for every
//! opener (`/dev/null`, `/dev/zero`, ..., as [`super::chardev`] reopens them).
//!
//! Restart (`cr_restart`, before the husks, once per node for the image: [`recreate_all`])
//! makes the node again under its old name, or when that name is taken under a free name in the
//! same directory; directories missing above it are made for the time being. It opens it
//! (`O_PATH`, a FIFO read-write so that its refilled bytes stay), then removes it and the
//! directories it made: the program finds an open, deleted node as before, and nothing is left
//! in the file system. A directory under `/proc/N` (the directory of a process that ended) is
//! made as one: the `/proc` directory of a short-lived child, opened before it is reaped (as
//! a working directory only: a descriptor of one is refused).
//! Every descriptor of it is then a new open of that node through `/proc/self/fd`, with its
//! own flags (a symbolic link's `O_PATH` descriptor is the one made).
use std::fs::Metadata;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};

use crest_image::{FdKind, FdRecord, Ghost as Node, Process};
use crest_proc::FdInfo;

use super::{set_status_flags, DumpCx, FdHandler, PrepareCx};
use crate::{KindError, ObjId};

/// The handler.
pub struct Ghost;

/// The devices that are the same for every opener, by device number: memory devices 1:3
/// (`null`), 1:5 (`zero`), 1:7 (`full`), 1:8 (`random`), 1:9 (`urandom`), and 5:0 (`tty`).
const SAME_FOR_ALL: &[(u32, u32)] = &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)];

/// The identity of the node `md` in the image, and what it is.
pub fn ghost_of(md: &Metadata) -> (u64, Node) {
    (super::deleted::file_id(md.dev(), md.ino()), Node { mode: md.mode(), rdev: if md.file_type().is_char_device() { md.rdev() } else { 0 }, uid: md.uid(), gid: md.gid(), target: String::new() })
}

fn kind_of(mode: u32) -> u32 {
    mode & libc::S_IFMT
}

fn noun(mode: u32) -> &'static str {
    match kind_of(mode) {
        libc::S_IFDIR => "directory",
        libc::S_IFIFO => "FIFO",
        libc::S_IFCHR => "character device",
        libc::S_IFLNK => "symbolic link",
        _ => "node",
    }
}

impl FdHandler for Ghost {
    fn name(&self) -> &'static str {
        "deleted node"
    }
    fn claims(&self, link: &str, md: &Metadata) -> bool {
        let t = md.file_type();
        link.starts_with('/') && link.ends_with(" (deleted)") && (t.is_dir() || t.is_fifo() || t.is_char_device() || t.is_symlink())
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let path = link.trim_end_matches(" (deleted)").to_string();
        let (id, mut node) = ghost_of(md);
        let what = format!("pid {} fd {fd}", cx.pid);
        if md.file_type().is_char_device() && !SAME_FOR_ALL.contains(&(libc::major(md.rdev()), libc::minor(md.rdev()))) {
            let what = format!("the deleted character device {path} ({}:{})", libc::major(md.rdev()), libc::minor(md.rdev()));
            return super::unsupported::refuse(cx, fd, what, "only deleted nodes of /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom and /dev/tty are made again");
        }
        if md.file_type().is_dir() && is_proc_dir(&path) {
            let what = format!("the /proc directory {path} of a process that ended");
            return super::unsupported::refuse(cx, fd, what, "it can be made again as a working directory, not as an open descriptor");
        }
        let mut data = Vec::new();
        if md.file_type().is_symlink() {
            let pidfd = cx.pidfd.as_ref().ok_or_else(|| KindError::Unsupported(format!("{what}: the deleted symbolic link {path} cannot be read (no pidfd)")))?;
            let theirs = crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), fd).map_err(|e| KindError::io(format!("{what}: taking a copy of the descriptor"), e))?;
            let target = crest_ptrace::sys::read_link_fd(theirs.as_raw_fd()).map_err(|e| KindError::io(format!("{what}: reading the deleted symbolic link {path}"), e))?;
            node.target = target.to_str().ok_or_else(|| KindError::Unsupported(format!("{what}: the deleted symbolic link {path} points to a path that is not UTF-8")))?.to_string();
        } else if md.file_type().is_fifo() {
            let reads = info.flags & libc::O_ACCMODE as u32 != libc::O_WRONLY as u32;
            if reads && cx.seen.insert(ObjId::fifo(md)) {
                data = super::pipe::peek(cx, fd).map_err(|e| KindError::io(format!("{what}: reading the data buffered in the deleted FIFO {path}"), e))?.0;
            }
        }
        Ok(FdKind::Ghost { id, path, pos: info.pos, node, data })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Ghost { .. })
    }
    fn sharing(&self, _kind: &FdKind) -> super::Sharing {
        super::Sharing::Image
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Ghost { path, node, data, .. } = kind else { return String::new() };
        let extra = match kind_of(node.mode) {
            libc::S_IFLNK => format!(" to {}", node.target),
            libc::S_IFCHR => format!(" ({}:{})", libc::major(node.rdev), libc::minor(node.rdev)),
            libc::S_IFIFO if !data.is_empty() => format!(", {} bytes buffered", data.len()),
            _ => String::new(),
        };
        format!("deleted {} {path}{extra}", noun(node.mode))
    }
    fn open(&self, rec: &FdRecord, cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Ghost { id, path, node, data, .. } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let key = (ObjId::deleted_file(*id), false);
        if cx.take(key).is_none() {
            let f = recreate(path, node).map_err(|e| format!("fd {}: {e}", rec.fd))?;
            cx.park(key, f)?;
        }
        let parked = cx.take(key).expect("parked above")?;
        let what = noun(node.mode);
        if kind_of(node.mode) == libc::S_IFLNK {
            return Ok(super::Opened::Fd(parked));
        }
        if !data.is_empty() {
            std::io::Write::write_all(&mut std::fs::File::from(parked.try_clone().map_err(|e| format!("fd {}: {e}", rec.fd))?), data)
                .map_err(|e| format!("fd {}: refilling the deleted FIFO {path}: {e}", rec.fd))?;
        }
        let acc = rec.flags & libc::O_ACCMODE as u32;
        let mut flags = super::reopen_flags(rec.flags) & !libc::O_ACCMODE;
        match kind_of(node.mode) {
            libc::S_IFIFO => flags |= libc::O_NONBLOCK,
            libc::S_IFDIR => flags |= libc::O_DIRECTORY,
            _ => {}
        }
        let f: std::os::fd::OwnedFd = std::fs::OpenOptions::new()
            .read(acc != libc::O_WRONLY as u32)
            .write(acc != libc::O_RDONLY as u32 && flags & libc::O_PATH == 0)
            .custom_flags(flags)
            .open(format!("/proc/self/fd/{}", parked.as_raw_fd()))
            .map_err(|e| format!("fd {}: opening the deleted {what} {path} made again: {e}", rec.fd))?
            .into();
        if flags & libc::O_PATH == 0 {
            set_status_flags(&f, rec.flags)?;
        }
        Ok(super::Opened::Fd(f))
    }
}

/// Removes what was made for a node once it is open: the node (when `node` is set) and then
/// the directories made above it, deepest first.
fn remove(node: Option<(&std::path::Path, bool)>, made: &[std::path::PathBuf]) -> Result<(), String> {
    if let Some((p, dir)) = node {
        let r = if dir { std::fs::remove_dir(p) } else { std::fs::remove_file(p) };
        r.map_err(|e| format!("removing {} again: {e}", p.display()))?;
    }
    for d in made.iter().rev() {
        std::fs::remove_dir(d).map_err(|e| format!("removing the directory {}, made for the time being: {e}", d.display()))?;
    }
    Ok(())
}

/// The directory of a process that ended: the `/proc` directory of a child of ours, opened
/// before it is reaped.
fn dead_proc_dir() -> Result<std::os::fd::OwnedFd, String> {
    let mut child = std::process::Command::new("/bin/true").spawn().map_err(|e| format!("starting a process for its /proc directory: {e}"))?;
    let dir = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY).open(format!("/proc/{}", child.id()));
    child.wait().map_err(|e| format!("waiting for the process started for its /proc directory: {e}"))?;
    Ok(dir.map_err(|e| format!("opening the /proc directory of process {}: {e}", child.id()))?.into())
}

/// Whether `path` names the `/proc` directory of a process.
fn is_proc_dir(path: &str) -> bool {
    path.strip_prefix("/proc/").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Enters the deleted working directory `path`, made again and open at `dir` (see
/// [`recreate_all`]). The directory of a process that ended cannot be entered through a
/// descriptor (its permission check wants the process): the `/proc` directory of a child of
/// ours is entered before the child is reaped.
pub fn enter_deleted_cwd(path: &str, dir: i32) -> Result<(), String> {
    if !is_proc_dir(path) {
        return std::env::set_current_dir(format!("/proc/self/fd/{dir}")).map_err(|e| format!("entering the deleted directory {path} made again: {e}"));
    }
    let mut child = std::process::Command::new("/bin/true").spawn().map_err(|e| format!("starting a process for its /proc directory: {e}"))?;
    let entered = std::env::set_current_dir(format!("/proc/{}", child.id()));
    child.wait().map_err(|e| format!("waiting for the process started for its /proc directory: {e}"))?;
    entered.map_err(|e| format!("entering the /proc directory of process {}: {e}", child.id()))
}

/// Makes the node `node` at `path` (or at a free name beside it), opens it and removes it
/// again: an open node linked nowhere.
pub fn recreate(path: &str, node: &Node) -> Result<std::os::fd::OwnedFd, String> {
    let what = noun(node.mode);
    let err = |doing: &str, e: std::io::Error| format!("making the deleted {what} {path} again: {doing}: {e}");
    let kind = kind_of(node.mode);
    if kind == libc::S_IFDIR && is_proc_dir(path) {
        return dead_proc_dir();
    }
    let p = std::path::Path::new(path);
    let dir = p.parent().unwrap_or(std::path::Path::new("/"));
    // The directories missing above it, made for the time being (outermost first).
    let mut made = Vec::new();
    let mut missing: Vec<&std::path::Path> = dir.ancestors().take_while(|d| std::fs::symlink_metadata(d).is_err()).collect();
    missing.reverse();
    for d in missing {
        if let Err(e) = std::fs::create_dir(d) {
            let _ = remove(None, &made);
            return Err(err(&format!("making the directory {}", d.display()), e));
        }
        made.push(d.to_path_buf());
    }
    let make = |at: &std::path::Path| -> std::io::Result<()> {
        match kind {
            libc::S_IFDIR => std::fs::DirBuilder::new().mode(0o700).create(at),
            libc::S_IFLNK => std::os::unix::fs::symlink(&node.target, at),
            libc::S_IFIFO => crest_ptrace::sys::mknod(at, libc::S_IFIFO | 0o600, 0),
            libc::S_IFCHR => crest_ptrace::sys::mknod(at, libc::S_IFCHR | 0o600, node.rdev),
            _ => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        }
    };
    use std::os::unix::fs::DirBuilderExt;
    let mut at = p.to_path_buf();
    let mut n = 0;
    loop {
        match make(&at) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                at = dir.join(format!(".crest-deleted-{}-{n}", std::process::id()));
                n += 1;
            }
            Err(e) => {
                let _ = remove(None, &made);
                return Err(err(&format!("making it at {}", at.display()), e));
            }
        }
    }
    let opened = (|| -> Result<std::os::fd::OwnedFd, String> {
        if kind != libc::S_IFLNK {
            std::fs::set_permissions(&at, std::os::unix::fs::PermissionsExt::from_mode(node.mode & 0o7777)).map_err(|e| err("setting its mode", e))?;
        }
        let md = std::fs::symlink_metadata(&at).map_err(|e| err("reading its attributes", e))?;
        if (md.uid(), md.gid()) != (node.uid, node.gid) {
            std::os::unix::fs::lchown(&at, Some(node.uid), Some(node.gid)).map_err(|e| err(&format!("giving it to user {} and group {}", node.uid, node.gid), e))?;
        }
        let mut o = std::fs::OpenOptions::new();
        match kind {
            libc::S_IFIFO => o.read(true).write(true),
            libc::S_IFLNK => o.read(true).custom_flags(libc::O_PATH | libc::O_NOFOLLOW),
            _ => o.read(true).custom_flags(libc::O_PATH),
        };
        Ok(o.open(&at).map_err(|e| err("opening it", e))?.into())
    })();
    let removed = remove(Some((&at, kind == libc::S_IFDIR)), &made);
    let f = opened?;
    removed.map_err(|e| format!("making the deleted {what} {path} again: {e}"))?;
    Ok(f)
}

/// Makes again, once each, every deleted node the descriptors and working directories of
/// `procs` name: (id, the node open).
pub fn recreate_all(procs: &[Process]) -> Result<Vec<(u64, std::os::fd::OwnedFd)>, String> {
    let mut nodes: std::collections::BTreeMap<u64, (&str, &Node)> = Default::default();
    for p in procs {
        if let Some((id, node)) = &p.cwd_deleted {
            nodes.entry(*id).or_insert((p.cwd.as_str(), node));
        }
        for f in &p.fds {
            if let FdKind::Ghost { id, path, node, .. } = &f.kind {
                nodes.entry(*id).or_insert((path.as_str(), node));
            }
        }
    }
    nodes.into_iter().map(|(id, (path, node))| Ok((id, recreate(path, node)?))).collect()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;

    use crest_image::Ghost as Node;

    fn dir(test: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("crest-kinds-ghost-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("a test directory");
        d
    }

    fn node(mode: u32) -> Node {
        Node { mode, rdev: 0, uid: own_uid(), gid: own_gid(), target: String::new() }
    }

    fn own_uid() -> u32 {
        std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
    }

    fn own_gid() -> u32 {
        std::fs::metadata("/proc/self").map(|m| m.gid()).unwrap_or(0)
    }

    /// A directory whose parent is gone too is made with its parent, opened, and both are
    /// removed: an open deleted directory with its mode, nothing left behind.
    #[test]
    fn a_directory_is_made_with_its_missing_parents_and_removed() {
        let d = dir("dir");
        let path = d.join("gone/sub");
        let f = super::recreate(path.to_str().expect("utf8"), &node(libc::S_IFDIR | 0o751)).expect("made again");
        let md = std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd())).expect("its metadata");
        assert!(md.is_dir() && md.nlink() == 0 && md.mode() & 0o7777 == 0o751, "{md:?}");
        assert_eq!(std::fs::read_dir(&d).expect("listed").count(), 0, "something was left in {}", d.display());
        let link = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).expect("its link");
        assert_eq!(link.to_str(), Some(format!("{} (deleted)", path.display()).as_str()));
        drop(f);
        let _ = std::fs::remove_dir_all(d);
    }

    /// A FIFO whose name is taken again is made under another name beside it, which is removed;
    /// what has the name is left alone.
    #[test]
    fn a_fifo_whose_name_is_taken_is_made_beside_it() {
        let d = dir("fifo");
        let path = d.join("fifo");
        std::fs::write(&path, b"someone else's").expect("a file in the way");
        let f = super::recreate(path.to_str().expect("utf8"), &node(libc::S_IFIFO | 0o640)).expect("made again");
        let md = std::fs::metadata(format!("/proc/self/fd/{}", f.as_raw_fd())).expect("its metadata");
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&md.file_type()) && md.nlink() == 0 && md.mode() & 0o7777 == 0o640, "{md:?}");
        assert_eq!(std::fs::read(&path).expect("the file in the way"), b"someone else's");
        assert_eq!(std::fs::read_dir(&d).expect("listed").count(), 1, "only the file in the way is left");
        drop(f);
        let _ = std::fs::remove_dir_all(d);
    }
}
