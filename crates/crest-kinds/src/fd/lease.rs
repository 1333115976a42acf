//! File leases (`fcntl(F_SETLEASE)`): a read or write lease held through an open file
//! description, shown by the `lock:` lines of the fdinfo of each of its descriptors as
//! `LEASE  ACTIVE  READ|WRITE`, or `LEASE  BREAKING  READ|UNLCK` while another open of the file
//! breaks it (the type it is broken down to, which `F_GETLEASE` gives then). A lease is saved
//! once per open file description, on its first descriptor in the image.
//!
//! Restore takes the lease again with `F_SETLEASE` on that descriptor, then sets the file's
//! owner for I/O signals back as it was saved (taking a lease makes the caller the owner). A
//! lease that was being broken is taken as it was before the break (a write lease on a
//! descriptor open for writing, else a read lease: the kernel no longer shows which while it
//! breaks, and both break the same way) and broken again the same way: an open of the file
//! that conflicts with it (for writing to break it to none, for reading to break it down to a
//! read lease), non-blocking, which fails once it has started the break. The owner is cleared
//! meanwhile, so that the break signals nobody: the process had its signal for this break
//! before the checkpoint. The kernel's time to break the lease
//! (`/proc/sys/fs/lease-break-time`) starts again at the restart; the open that broke it is
//! not restored (it belonged to another process, or was interrupted by the checkpoint). The
//! break signal carries the number of the descriptor the lease was taken through (`si_fd`):
//! the kernel does not show it, and the lease is taken again through the first descriptor of
//! its open file description, which is that one unless the lease was taken through a later dup.
use std::os::unix::fs::OpenOptionsExt;

use crest_image::{FdRecord, FileLock, LockKind};

/// `FileLock.breaking`: broken down to a read lease.
const TO_READ: u8 = 1;
/// `FileLock.breaking`: broken down to none.
const TO_NONE: u8 = 2;

/// The lease of a `lock:` line's fields (`["1:", "LEASE", "ACTIVE", "READ", ...]`) of a
/// descriptor whose status flags are `flags`; none when the line is not one this build reads.
pub(super) fn parse(w: &[&str], flags: u32) -> Option<FileLock> {
    let lease = |write: bool, breaking: u8| FileLock { kind: LockKind::Lease, write, start: 0, len: 0, breaking };
    let writable = flags & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32;
    match (w.get(2).copied()?, w.get(3).copied()?) {
        ("ACTIVE", "READ") => Some(lease(false, 0)),
        ("ACTIVE", "WRITE") => Some(lease(true, 0)),
        // Only a write lease breaks down to a read one.
        ("BREAKING", "READ") => Some(lease(true, TO_READ)),
        ("BREAKING", "UNLCK") => Some(lease(writable, TO_NONE)),
        _ => None,
    }
}

/// The lease in words, for messages.
fn words(l: &FileLock) -> String {
    let ty = if l.write { "write" } else { "read" };
    match l.breaking {
        TO_READ => format!("{ty} lease being broken down to a read lease"),
        TO_NONE => format!("{ty} lease being broken"),
        _ => format!("{ty} lease"),
    }
}

/// Inside the husk, once the descriptors of the process are in place: takes lease `l` of `r`
/// again (see the module's documentation).
pub(super) fn take(r: &FdRecord, l: &FileLock) -> Result<(), String> {
    let fd = r.fd;
    let file = || std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_else(|_| format!("fd {fd}"));
    let fail = |what: &str, e: std::io::Error| {
        let busy = matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES));
        format!(
            "fd {fd}: {what} the {} on {}: {e}{}",
            words(l),
            file(),
            if busy { " (the file is open now in a way that conflicts with it; the restored process cannot go on without its lease)" } else { "" }
        )
    };
    crest_ptrace::sys::set_lease(fd, if l.write { libc::F_WRLCK } else { libc::F_RDLCK }).map_err(|e| fail("taking again", e))?;
    if l.breaking != 0 {
        crest_ptrace::sys::clear_file_owner(fd).map_err(|e| fail("clearing the owner before breaking", e))?;
        let write = l.breaking == TO_NONE;
        let breaker = std::fs::OpenOptions::new().read(!write).write(write).custom_flags(libc::O_NONBLOCK).open(format!("/proc/self/fd/{fd}"));
        match breaker {
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
            Err(e) => return Err(fail("breaking again", e)),
            Ok(_) => return Err(format!("fd {fd}: the {} on {} could not be broken again: an open that conflicts with it went through", words(l), file())),
        }
        let want = if l.breaking == TO_READ { libc::F_RDLCK } else { libc::F_UNLCK };
        match crest_ptrace::sys::lease(fd) {
            Ok(t) if t == want => {}
            Ok(t) => return Err(format!("fd {fd}: the {} on {} reads as lease type {t} once broken again, not {want}", words(l), file())),
            Err(e) => return Err(fail("reading back", e)),
        }
    }
    // Taking the lease made this process the owner: back to the saved one.
    if r.fown.pid != 0 || r.fown.signal != 0 {
        crest_ptrace::sys::set_file_owner(fd, r.fown.kind, r.fown.pid, r.fown.signal)
            .map_err(|e| format!("fd {fd}: setting its owner {} and signal {} after its lease: {e}", r.fown.pid, r.fown.signal))?;
    } else {
        crest_ptrace::sys::clear_file_owner(fd).map_err(|e| fail("clearing the owner after", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_lines_are_read() {
        let w = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let get = |l: &str, flags: i32| parse(&w(l).iter().map(String::as_str).collect::<Vec<_>>(), flags as u32).map(|l| (l.write, l.breaking));
        assert_eq!(get("1: LEASE  ACTIVE    READ 2095 fd:01:123 0 EOF", libc::O_RDONLY), Some((false, 0)));
        assert_eq!(get("1: LEASE  ACTIVE    WRITE 2095 fd:01:123 0 EOF", libc::O_RDWR), Some((true, 0)));
        assert_eq!(get("1: LEASE  BREAKING  READ 2095 fd:01:123 0 EOF", libc::O_WRONLY), Some((true, TO_READ)));
        assert_eq!(get("1: LEASE  BREAKING  UNLCK 2095 fd:01:123 0 EOF", libc::O_RDONLY), Some((false, TO_NONE)));
        assert_eq!(get("1: LEASE  BREAKING  UNLCK 2095 fd:01:123 0 EOF", libc::O_WRONLY), Some((true, TO_NONE)));
        assert_eq!(get("1: LEASE  BREAKER   UNLCK 2095 fd:01:123 0 EOF", libc::O_WRONLY), None);
    }
}
