//! A read-only view of part of a file through `mmap`: the page cache's own pages, read without
//! copying them (`cr_restart` checks the checksums of an image's page runs this way).
//!
//! # Safety
//! The mapping is `PROT_READ`, `MAP_SHARED` of a file the caller opened for reading; the slice
//! handed out lives no longer than the [`Mapped`] that unmaps it on drop. A file truncated
//! under the mapping would make a read of the pages past its new end raise `SIGBUS`: callers
//! map only files that nobody may write (see `docs/architecture.md`, "Pages mapped from the
//! image").
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// `len` bytes of a file from `offset`, mapped read-only.
pub struct Mapped {
    base: *mut libc::c_void,
    map_len: usize,
    skip: usize,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this value; reading it from several
// threads at once is as safe as reading any shared slice.
unsafe impl Send for Mapped {}
// SAFETY: as above: only shared reads are possible through `&Mapped`.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps `len` bytes of `file` from `offset` (any offset: the mapping starts at the page
    /// below it), its pages populated at once.
    pub fn new(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Mapped> {
        if len == 0 {
            return Ok(Mapped { base: std::ptr::null_mut(), map_len: 0, skip: 0, len: 0 });
        }
        let skip = (offset % 4096) as usize;
        let map_len = len + skip;
        // SAFETY: a fresh mapping chosen by the kernel (no MAP_FIXED), of a descriptor that is
        // open for reading for the duration of the call; nothing else refers to it.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ, libc::MAP_SHARED | libc::MAP_POPULATE, file.as_raw_fd(), (offset - skip as u64) as libc::off_t) };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { base, map_len, skip, len })
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: base..base+map_len is a live read-only mapping owned by self, and
        // skip + len == map_len.
        unsafe { std::slice::from_raw_parts(self.base.cast::<u8>().add(self.skip), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.map_len != 0 {
            // SAFETY: the mapping made in new(), unmapped once; no slice of it outlives self.
            unsafe { libc::munmap(self.base, self.map_len) };
        }
    }
}
