//! Reading and writing another process's memory.
//!
//! # Safety
//! `process_vm_readv`/`process_vm_writev` are given iovecs that describe live local buffers
//! borrowed for the duration of the call; remote addresses are only interpreted by the kernel,
//! which checks them against the target's mappings.
#![allow(unsafe_code)]

use std::os::unix::fs::FileExt;

use crate::TraceError;

const IOV_BATCH: usize = 1024;

/// Reads `buf.len()` bytes at `addr` of process `pid` (`process_vm_readv`).
pub fn read_exact(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), TraceError> {
    read_scatter(pid, buf, &[(addr, buf.len() as u64)])
}

/// Reads the remote ranges `ranges` (address, length), back to back, into `buf`, which must be
/// exactly as long as their sum. Uses as few `process_vm_readv` calls as the kernel allows.
pub fn read_scatter(pid: i32, buf: &mut [u8], ranges: &[(u64, u64)]) -> Result<(), TraceError> {
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    assert_eq!(total, buf.len() as u64, "read_scatter: buffer length must equal the ranges' sum");
    let mut done = 0usize;
    let mut ri = 0usize;
    let mut skip = 0u64; // bytes of ranges[ri] already read
    while done < buf.len() {
        let remote: Vec<libc::iovec> = ranges[ri..]
            .iter()
            .take(IOV_BATCH)
            .enumerate()
            .map(|(i, &(a, l))| {
                let s = if i == 0 { skip } else { 0 };
                libc::iovec { iov_base: (a + s) as *mut libc::c_void, iov_len: (l - s) as usize }
            })
            .collect();
        let want: usize = remote.iter().map(|v| v.iov_len).sum();
        let local = libc::iovec { iov_base: buf[done..].as_mut_ptr().cast(), iov_len: want };
        // SAFETY: local describes buf[done..done+want], in bounds since the ranges sum to buf's
        // length; remote addresses are checked by the kernel.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, remote.as_ptr(), remote.len() as libc::c_ulong, 0) };
        if n <= 0 {
            return Err(TraceError::Sys {
                what: format!("reading memory of pid {pid} at {:#x}", ranges[ri].0 + skip),
                err: if n == 0 { std::io::Error::from_raw_os_error(libc::EFAULT) } else { std::io::Error::last_os_error() },
            });
        }
        let mut n = n as u64;
        done += n as usize;
        while n > 0 {
            let left = ranges[ri].1 - skip;
            if n >= left {
                n -= left;
                ri += 1;
                skip = 0;
            } else {
                skip += n;
                n = 0;
            }
        }
    }
    Ok(())
}

/// Writes `data` at `addr` of process `pid` (`process_vm_writev`; the pages must be writable).
pub fn write_vm(pid: i32, addr: u64, data: &[u8]) -> Result<(), TraceError> {
    let mut done = 0usize;
    while done < data.len() {
        let local = libc::iovec { iov_base: data[done..].as_ptr() as *mut libc::c_void, iov_len: data.len() - done };
        let remote = libc::iovec { iov_base: (addr + done as u64) as *mut libc::c_void, iov_len: data.len() - done };
        // SAFETY: local describes data[done..], which the kernel only reads; the remote range
        // is checked by the kernel against the target's mappings.
        let n = unsafe { libc::process_vm_writev(pid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            return Err(TraceError::Sys {
                what: format!("writing memory of pid {pid} at {:#x}", addr + done as u64),
                err: if n == 0 { std::io::Error::from_raw_os_error(libc::EFAULT) } else { std::io::Error::last_os_error() },
            });
        }
        done += n as usize;
    }
    Ok(())
}

/// Writes `data` at `addr` of process `pid` through `/proc/PID/mem`, which, like a debugger,
/// may write read-only pages.
pub fn write(pid: i32, addr: u64, data: &[u8]) -> Result<(), TraceError> {
    let f = std::fs::OpenOptions::new().write(true).open(format!("/proc/{pid}/mem")).map_err(|err| TraceError::Sys { what: format!("opening /proc/{pid}/mem"), err })?;
    f.write_all_at(data, addr).map_err(|err| TraceError::Sys { what: format!("writing memory of pid {pid} at {addr:#x}"), err })
}

/// Reads through `/proc/PID/mem`, which (like a debugger) can read pages the process itself
/// may not (`PROT_NONE`, write-only).
pub fn read_forced(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), TraceError> {
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).map_err(|err| TraceError::Sys { what: format!("opening /proc/{pid}/mem"), err })?;
    f.read_exact_at(buf, addr).map_err(|err| TraceError::Sys { what: format!("reading memory of pid {pid} at {addr:#x}"), err })
}
