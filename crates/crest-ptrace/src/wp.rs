//! Tracking which pages of another process it writes: a userfaultfd in asynchronous
//! write-protect mode (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7) and the `PAGEMAP_SCAN` ioctl of
//! `/proc/PID/pagemap` that reads the result.
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

/// The pages of `start..end` in `pagemap` (an open `/proc/PID/pagemap`) that have any of the
/// categories `anyof`, as regions of pages alike in the categories `ret`, in address order.
/// `flags`: [`SCAN_CHECK_WPASYNC`], [`SCAN_WP_MATCHING`]. Needs Linux 6.7.
pub fn scan(pagemap: &File, start: u64, end: u64, flags: u64, anyof: u64, ret: u64) -> std::io::Result<Vec<Region>> {
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
            category_mask: 0,
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
        assert_eq!(std::mem::size_of::<PmScanArg>(), 96);
    }
}
