//! Tracking which pages of another process it writes: a userfaultfd in asynchronous
//! write-protect mode (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7) and the `PAGEMAP_SCAN` ioctl of
//! `/proc/PID/pagemap` that reads the result. And giving another process its pages on demand
//! ([`MissingPager`]): a userfaultfd in missing mode, whose faults and events are read here and
//! resolved with `UFFDIO_COPY` and `UFFDIO_ZEROPAGE` (the lazy restore).
//!
//! A userfaultfd belongs to the memory of the process that created it (made there by a remote
//! syscall, then taken with `pidfd_getfd`); its ioctls work from any process holding it. Once a
//! range is registered and write-protected, the first write to each page is resolved by the
//! kernel itself (no message, no stop): it clears the page's write-protect bit, and
//! `PAGEMAP_SCAN` reports the page `PAGE_IS_WRITTEN`. So does any page that became present
//! after the protection (a new page table entry carries no protect bit). Closing the last
//! descriptor unregisters every range.
//!
//! # Safety
//! Each ioctl gets a pointer to a live, correctly sized `#[repr(C)]` value of this module (or a
//! `Vec` of them, with its length); the kernel writes nothing beyond it.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

/// `UFFD_API`.
const UFFD_API: u64 = 0xAA;
/// `UFFD_FEATURE_WP_ASYNC`.
const FEATURE_WP_ASYNC: u64 = 1 << 15;
/// `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
const UFFDIO_API: u64 = 0xC018_AA3F;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)`.
const UFFDIO_REGISTER: u64 = 0xC020_AA00;
/// `_IOWR(0xAA, 0x06, struct uffdio_writeprotect)`.
const UFFDIO_WRITEPROTECT: u64 = 0xC018_AA06;
/// `UFFDIO_REGISTER_MODE_WP`.
const REGISTER_MODE_WP: u64 = 2;
/// `UFFDIO_WRITEPROTECT_MODE_WP`.
const WRITEPROTECT_MODE_WP: u64 = 1;
/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 = 0xC060_6610;

/// Flags of the remote `userfaultfd(2)` call that makes a tracker: close-on-exec,
/// non-blocking, user-mode faults only (allowed to every user).
pub const USERFAULTFD_FLAGS: u64 = (libc::O_CLOEXEC | libc::O_NONBLOCK | 1) as u64;

/// `UFFD_FEATURE_EVENT_FORK`: a fork of the process hands over a userfaultfd of the child.
const FEATURE_EVENT_FORK: u64 = 1 << 1;
/// `UFFD_FEATURE_EVENT_REMAP`: `mremap` of a registered range is told.
const FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `UFFD_FEATURE_EVENT_REMOVE`: `madvise(MADV_DONTNEED/MADV_REMOVE)` is told.
const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `UFFD_FEATURE_EVENT_UNMAP`: `munmap` is told.
const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// `UFFD_FEATURE_THREAD_ID`: a fault says which thread took it.
const FEATURE_THREAD_ID: u64 = 1 << 8;
/// `UFFDIO_REGISTER_MODE_MISSING`.
const REGISTER_MODE_MISSING: u64 = 1;
/// `_IOR(0xAA, 0x01, struct uffdio_range)`.
const UFFDIO_UNREGISTER: u64 = 0x8010_AA01;
/// `_IOR(0xAA, 0x02, struct uffdio_range)`.
const UFFDIO_WAKE: u64 = 0x8010_AA02;
/// `_IOWR(0xAA, 0x03, struct uffdio_copy)`.
const UFFDIO_COPY: u64 = 0xC028_AA03;
/// `_IOWR(0xAA, 0x04, struct uffdio_zeropage)`.
const UFFDIO_ZEROPAGE: u64 = 0xC020_AA04;
/// `UFFD_EVENT_*` of a `struct uffd_msg`.
const EVENT_PAGEFAULT: u8 = 0x12;
const EVENT_FORK: u8 = 0x13;
const EVENT_REMAP: u8 = 0x14;
const EVENT_REMOVE: u8 = 0x15;
const EVENT_UNMAP: u8 = 0x16;

/// Flags of the remote `userfaultfd(2)` call that makes a [`MissingPager`]: close-on-exec,
/// non-blocking, faults of the kernel too (a `read(2)` into a page not in yet waits for it like
/// the process itself; this needs `CAP_SYS_PTRACE` or `vm.unprivileged_userfaultfd = 1`).
pub const MISSING_FLAGS: u64 = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;

/// `PAGEMAP_SCAN` page categories.
pub mod category {
    /// Written since it was write-protected (or never protected).
    pub const WRITTEN: u64 = 1 << 1;
    /// A page of a file (or shared memory), not a private copy.
    pub const FILE: u64 = 1 << 2;
    /// In memory.
    pub const PRESENT: u64 = 1 << 3;
    /// In swap.
    pub const SWAPPED: u64 = 1 << 4;
    /// The shared zero page.
    pub const PFNZERO: u64 = 1 << 5;
    /// A guard region's page (`MADV_GUARD_INSTALL`), Linux 6.14.
    pub const GUARD: u64 = 1 << 8;
}

/// `PM_SCAN_WP_MATCHING`: write-protect the pages reported, in the same walk.
pub const SCAN_WP_MATCHING: u64 = 1;
/// `PM_SCAN_CHECK_WPASYNC`: fail with `EPERM` on a mapping that is not registered.
pub const SCAN_CHECK_WPASYNC: u64 = 1 << 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

/// One `struct uffd_msg`: the event, then its arguments (the union, as three words).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    arg: [u64; 3],
}

/// One `struct page_region`: pages `start..end` share `categories`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The categories asked for in `return_mask` that these pages have.
    pub categories: u64,
}

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

fn ioctl<T>(fd: i32, req: u64, arg: &mut T, what: &str) -> std::io::Result<i64> {
    // SAFETY: arg is a live, exclusively borrowed value of the type the request expects.
    let r = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if r == -1 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(r as i64)
}

/// [`ioctl`] with the kernel's error as it is (its errno kept).
fn ioctl_errno<T>(fd: i32, req: u64, arg: &mut T) -> std::io::Result<i64> {
    // SAFETY: arg is a live, exclusively borrowed value of the type the request expects.
    let r = unsafe { libc::ioctl(fd, req as _, arg as *mut T) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r as i64)
}

/// A userfaultfd of another process's memory, in asynchronous write-protect mode.
pub struct WriteTracker {
    fd: OwnedFd,
}

impl WriteTracker {
    /// Enables asynchronous write-protection on `fd`, a fresh userfaultfd.
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        let mut api = UffdioApi { api: UFFD_API, features: FEATURE_WP_ASYNC, ioctls: 0 };
        ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api, "UFFDIO_API with WP_ASYNC")?;
        Ok(WriteTracker { fd })
    }

    /// A userfaultfd already set up by [`WriteTracker::new`] (its mappings registered and
    /// protected earlier), taken again from the process it was left in.
    pub fn adopt(fd: OwnedFd) -> Self {
        WriteTracker { fd }
    }

    /// Registers `start..start+len` (whole mappings) for write-protection and protects every
    /// page of it now present. Writes from here on are seen by [`scan`].
    pub fn track(&self, start: u64, len: u64) -> std::io::Result<()> {
        let mut reg = UffdioRegister { range: UffdioRange { start, len }, mode: REGISTER_MODE_WP, ioctls: 0 };
        ioctl(self.fd.as_raw_fd(), UFFDIO_REGISTER, &mut reg, "UFFDIO_REGISTER")?;
        let mut wp = UffdioWriteprotect { range: UffdioRange { start, len }, mode: WRITEPROTECT_MODE_WP };
        ioctl(self.fd.as_raw_fd(), UFFDIO_WRITEPROTECT, &mut wp, "UFFDIO_WRITEPROTECT")?;
        Ok(())
    }
}

/// What a [`MissingPager`] reads: a fault to resolve, or a change of the memory to follow.
#[derive(Debug)]
pub enum Event {
    /// A thread (`tid`, in the process's PID namespace) touched `addr`, a page not in yet; it
    /// waits until the page is given.
    Fault {
        /// The address touched.
        addr: u64,
        /// The thread.
        tid: u32,
    },
    /// The process forked: the child's memory, as it was at the fork, has a userfaultfd of its
    /// own, here.
    Fork(MissingPager),
    /// `from..from+len` moved to `to` (`mremap`).
    Remap {
        /// Where it was.
        from: u64,
        /// Where it is.
        to: u64,
        /// Its length before the move.
        len: u64,
    },
    /// The pages of `start..end` were dropped (`MADV_DONTNEED`, `MADV_REMOVE`) or unmapped:
    /// they must not be given any more.
    Dropped {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
}

/// A userfaultfd of another process's memory in missing mode, with the events that follow
/// `fork`, `mremap`, `munmap` and `madvise` (asking for `UFFD_FEATURE_EVENT_FORK` needs
/// `CAP_SYS_PTRACE`).
#[derive(Debug)]
pub struct MissingPager {
    fd: OwnedFd,
}

impl MissingPager {
    /// Sets up `fd`, a fresh userfaultfd made with [`MISSING_FLAGS`].
    pub fn new(fd: OwnedFd) -> std::io::Result<Self> {
        let features = FEATURE_EVENT_FORK | FEATURE_EVENT_REMAP | FEATURE_EVENT_REMOVE | FEATURE_EVENT_UNMAP | FEATURE_THREAD_ID;
        let mut api = UffdioApi { api: UFFD_API, features, ioctls: 0 };
        ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api, "UFFDIO_API with the fork, remap, remove and unmap events")?;
        Ok(MissingPager { fd })
    }

    /// Whether this process may make and set up a [`MissingPager`]: a userfaultfd made here
    /// with [`MISSING_FLAGS`] (refused without `CAP_SYS_PTRACE` when
    /// `vm.unprivileged_userfaultfd` is 0; `ENOSYS` on a kernel without userfaultfd), then
    /// [`MissingPager::new`] on it (the fork event needs `CAP_SYS_PTRACE`), closed again.
    pub fn probe() -> std::io::Result<()> {
        // SAFETY: no pointers.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, MISSING_FLAGS as libc::c_long) } as libc::c_int;
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor just made, owned by nothing else.
        let fd: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        MissingPager::new(fd).map(drop)
    }

    /// Takes `fd`, a userfaultfd made with [`MISSING_FLAGS`] in another process (taken with
    /// `pidfd_getfd`), and sets it up as [`MissingPager::new`] does.
    pub fn from_fd(fd: OwnedFd) -> std::io::Result<Self> {
        MissingPager::new(fd)
    }

    /// The descriptor, to wait on.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Registers `start..start+len` (whole mappings of private anonymous memory): a touch of a
    /// page that is not there waits for [`MissingPager::copy`] or [`MissingPager::zero`].
    pub fn register(&self, start: u64, len: u64) -> std::io::Result<()> {
        let mut reg = UffdioRegister { range: UffdioRange { start, len }, mode: REGISTER_MODE_MISSING, ioctls: 0 };
        ioctl(self.fd.as_raw_fd(), UFFDIO_REGISTER, &mut reg, "UFFDIO_REGISTER")?;
        Ok(())
    }

    /// Unregisters `start..start+len`: pages not there are then zero-filled by the kernel.
    pub fn unregister(&self, start: u64, len: u64) -> std::io::Result<()> {
        let mut range = UffdioRange { start, len };
        ioctl(self.fd.as_raw_fd(), UFFDIO_UNREGISTER, &mut range, "UFFDIO_UNREGISTER")?;
        Ok(())
    }

    /// Copies `src` into the process at `dst` (page aligned, whole pages), waking the threads
    /// that wait for those pages. Pages already there are left as they are. Returns the bytes
    /// dealt with, and the error that stopped it short: `EAGAIN` while an event is waiting to
    /// be read (the memory is changing), `ENOENT` where `dst` is no longer registered, `ESRCH`
    /// when the process has no memory any more.
    pub fn copy(&self, dst: u64, src: &[u8]) -> (u64, Option<std::io::Error>) {
        let len = src.len() as u64;
        let mut done = 0;
        while done < len {
            let mut c = UffdioCopy { dst: dst + done, src: src.as_ptr() as u64 + done, len: len - done, mode: 0, copy: 0 };
            // `src` outlives the call; the kernel only reads the `len - done` bytes from `src + done`.
            match ioctl_errno(self.fd.as_raw_fd(), UFFDIO_COPY, &mut c) {
                Ok(_) => return (len, None),
                Err(e) => {
                    done += c.copy.max(0) as u64;
                    if e.raw_os_error() == Some(libc::EEXIST) {
                        // The page at `done` is there already (given before, or written since).
                        self.wake(dst + done, 4096);
                        done += 4096;
                    } else if done < len && c.copy <= 0 {
                        return (done, Some(e));
                    }
                }
            }
        }
        (len, None)
    }

    /// Maps zero pages over `start..start+len` (pages not in the image), waking the threads
    /// that wait for them; pages already there are left alone. Errors as [`MissingPager::copy`].
    pub fn zero(&self, start: u64, len: u64) -> std::io::Result<()> {
        let mut z = UffdioZeropage { range: UffdioRange { start, len }, mode: 0, zeropage: 0 };
        match ioctl_errno(self.fd.as_raw_fd(), UFFDIO_ZEROPAGE, &mut z) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.wake(start, len);
                Ok(())
            }
            r => r.map(drop),
        }
    }

    /// Wakes the threads that wait for pages of `start..start+len` (there by now).
    pub fn wake(&self, start: u64, len: u64) {
        let mut range = UffdioRange { start, len };
        let _ = ioctl_errno(self.fd.as_raw_fd(), UFFDIO_WAKE, &mut range);
    }

    /// Reads the waiting messages (without blocking) into `out`.
    pub fn read_events(&self, out: &mut Vec<Event>) -> std::io::Result<()> {
        let mut msgs = [UffdMsg::default(); 64];
        loop {
            // SAFETY: the buffer is a live array of `struct uffd_msg`; the kernel writes whole
            // messages, at most as many bytes as given.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), msgs.as_mut_ptr().cast(), std::mem::size_of_val(&msgs)) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return if e.kind() == std::io::ErrorKind::WouldBlock { Ok(()) } else { Err(e) };
            }
            let n = n as usize / std::mem::size_of::<UffdMsg>();
            for m in &msgs[..n] {
                out.push(match m.event {
                    EVENT_PAGEFAULT => Event::Fault { addr: m.arg[1], tid: m.arg[2] as u32 },
                    EVENT_FORK => {
                        let fd = m.arg[0] as u32 as i32;
                        // SAFETY: the kernel installed this descriptor in this process for the
                        // reader of the message; nothing else owns it.
                        Event::Fork(MissingPager { fd: unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) } })
                    }
                    EVENT_REMAP => Event::Remap { from: m.arg[0], to: m.arg[1], len: m.arg[2] },
                    EVENT_REMOVE | EVENT_UNMAP => Event::Dropped { start: m.arg[0], end: m.arg[1] },
                    _ => continue,
                });
            }
            if n < msgs.len() {
                return Ok(());
            }
        }
    }
}

/// Waits up to `timeout_ms` until one of `fds` can be read; returns which can.
pub fn wait_readable(fds: &[i32], timeout_ms: i32) -> std::io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: `p` is a live array of `p.len()` pollfd values.
    if unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) } == -1 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(p.iter().map(|p| p.revents != 0).collect())
}

/// The pages of `start..end` in `pagemap` (an open `/proc/PID/pagemap`) that have any of the
/// categories `anyof`, as regions of pages alike in the categories `ret`, in address order.
/// `flags`: [`SCAN_CHECK_WPASYNC`], [`SCAN_WP_MATCHING`]. Needs Linux 6.7.
pub fn scan(pagemap: &File, start: u64, end: u64, flags: u64, anyof: u64, ret: u64) -> std::io::Result<Vec<Region>> {
    scan_masked(pagemap, start, end, flags, 0, anyof, ret)
}

/// The pages of `start..end` not write-protected, roughly: [`scan`] asking for
/// [`category::WRITTEN`] alone, which the kernel answers from each page table entry's
/// protection bit without looking at the page (ten times faster at 4 GiB). That bit is read
/// even from entries of pages not in memory, where it is not the protection: a page in swap or
/// being moved may be reported either way, and a page never mapped (or dropped) as written. A
/// hint of where to look, never the truth about a page.
pub fn scan_unprotected(pagemap: &File, start: u64, end: u64) -> std::io::Result<Vec<Region>> {
    scan_masked(pagemap, start, end, SCAN_CHECK_WPASYNC, category::WRITTEN, 0, category::WRITTEN)
}

/// [`scan`] with a `category_mask` too: only pages that have all of `all`.
fn scan_masked(pagemap: &File, start: u64, end: u64, flags: u64, all: u64, anyof: u64, ret: u64) -> std::io::Result<Vec<Region>> {
    let mut out: Vec<Region> = Vec::new();
    let mut vec = vec![Region::default(); 512];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags,
            start: at,
            end,
            walk_end: 0,
            vec: vec.as_mut_ptr() as u64,
            vec_len: vec.len() as u64,
            max_pages: 0,
            category_inverted: 0,
            category_mask: all,
            category_anyof_mask: anyof,
            return_mask: ret,
        };
        let n = ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg, "PAGEMAP_SCAN")? as usize;
        for r in &vec[..n.min(vec.len())] {
            // A region cut by a full vector continues in the next call: join the halves.
            match out.last_mut() {
                Some(l) if l.end == r.start && l.categories == r.categories => l.end = r.end,
                _ => out.push(*r),
            }
        }
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<UffdioApi>(), 24);
        assert_eq!(std::mem::size_of::<UffdioRegister>(), 32);
        assert_eq!(std::mem::size_of::<UffdioWriteprotect>(), 24);
        assert_eq!(std::mem::size_of::<Region>(), 24);
        assert_eq!(std::mem::size_of::<UffdioCopy>(), 40);
        assert_eq!(std::mem::size_of::<UffdioZeropage>(), 32);
        assert_eq!(std::mem::size_of::<UffdMsg>(), 32);
        assert_eq!(std::mem::size_of::<PmScanArg>(), 96);
    }
}
