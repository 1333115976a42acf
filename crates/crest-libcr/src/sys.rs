//! The system calls libcr makes that Rust's standard library does not wrap: futexes, the
//! signal handler and masks, `sigtimedwait`, errno, and starting the `cr_checkpoint` and
//! `cr_restart` helpers between `fork` and `exec`.
//!
//! # Safety
//! Every block passes pointers to live local values or to statics of the kernel's layout;
//! between `fork` and `exec` in a process that may have several threads, the child only makes
//! raw system calls (`read`, `dup2`, `close_range`, `execve`, `_exit`) on values prepared
//! before the fork.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Waits while `word` holds `expected`, at most `timeout` (a private futex).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec { tv_sec: t.as_secs() as libc::time_t, tv_nsec: t.subsec_nanos() as libc::c_long });
    let tp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the futex word is a live atomic; the timeout a live local or null.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, expected, tp) };
}

/// Wakes every thread waiting on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: as above; no timeout.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX) };
}

/// Sets errno.
pub fn set_errno(e: i32) {
    // SAFETY: glibc's errno location is this thread's, always valid.
    unsafe { *libc::__errno_location() = e };
}

/// Reads errno.
pub fn errno() -> i32 {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() }
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::gettid() }
}

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is a valid value to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is live.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: as above.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Blocks (`block`) or unblocks signal `sig` in the calling thread.
pub fn mask_signal(sig: i32, block: bool) {
    let set = sigset(&[sig]);
    // SAFETY: a live local set; the old mask is not asked for.
    unsafe { libc::pthread_sigmask(if block { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK }, &set, std::ptr::null_mut()) };
}

/// Blocks every signal in the calling thread.
pub fn block_all() {
    // SAFETY: a zeroed set is filled by sigfillset; both pointers are live or null.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// A signal taken by [`wait_signal`]: its value, `si_code`, sender and the sender's real
/// user id.
pub struct Taken {
    pub value: i32,
    pub code: i32,
    pub pid: i32,
    pub uid: u32,
}

/// This process's real and effective user ids.
pub fn own_uids() -> (u32, u32) {
    // SAFETY: no arguments.
    unsafe { (libc::getuid(), libc::geteuid()) }
}

/// The PID and real user id of the process at the other end of unix socket `fd`
/// (`SO_PEERCRED`: recorded by the kernel, not claimed by the peer).
pub fn peer_cred(fd: i32) -> Option<(i32, u32)> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into a live local ucred.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, &mut cred as *mut libc::ucred as *mut libc::c_void, &mut len) };
    (r == 0).then_some((cred.pid, cred.uid))
}

/// Waits up to `timeout` (forever: `None`) until `fd` can be read: `Ok(true)` when it can,
/// `Ok(false)` at the timeout, the error (`EINTR` included) otherwise.
pub fn wait_readable(fd: i32, timeout: Option<Duration>) -> std::io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    // SAFETY: one live pollfd.
    match unsafe { libc::poll(&mut p, 1, ms) } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// A pipe, both ends close-on-exec: (read, write).
pub fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: a live two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made by the kernel for this call, owned by nothing else.
    Ok(unsafe { (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) })
}

/// Takes signal `sig` (blocked in this thread), waiting at most `timeout` (forever: `None`).
pub fn wait_signal(sig: i32, timeout: Option<Duration>) -> Option<Taken> {
    let set = sigset(&[sig]);
    // SAFETY: a zeroed siginfo_t is valid for the kernel to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let ts = timeout.map(|t| libc::timespec { tv_sec: t.as_secs() as libc::time_t, tv_nsec: t.subsec_nanos() as libc::c_long });
    let tp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: live set, info and (or null) timeout.
    let r = unsafe { libc::sigtimedwait(&set, &mut info, tp) };
    if r != sig {
        return None;
    }
    // SAFETY: for a queued real-time signal the kernel filled the pid, uid and value fields.
    let (pid, uid, value) = unsafe { (info.si_pid(), info.si_uid(), info.si_value().sival_ptr as usize as i32) };
    Some(Taken { value, code: info.si_code, pid, uid })
}

/// The value, `si_code` and sender of a signal's `siginfo`, given to a handler.
///
/// # Safety
/// `info` is the pointer the kernel passed to an `SA_SIGINFO` handler.
pub unsafe fn taken_from(info: *const libc::siginfo_t) -> Taken {
    // SAFETY: the caller passes the kernel's siginfo.
    let info = unsafe { &*info };
    // SAFETY: the fields of a queued signal; for other codes the values are only compared.
    let (pid, uid, value) = unsafe { (info.si_pid(), info.si_uid(), info.si_value().sival_ptr as usize as i32) };
    Taken { value, code: info.si_code, pid, uid }
}

/// Installs `handler` for `sig`: `SA_SIGINFO | SA_RESTART`, every signal blocked while it runs.
pub fn install_handler(sig: i32, handler: extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void)) {
    // SAFETY: a zeroed sigaction is a valid start; its fields are set before it is passed.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigfillset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Sets the calling thread's name.
pub fn set_thread_name(name: &str) {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: a live NUL-terminated string.
    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
}

/// Allows process `pid` (and its descendants) to trace this one (`PR_SET_PTRACER`; 0 clears).
pub fn allow_tracer(pid: i32) {
    // SAFETY: no pointers.
    unsafe { libc::prctl(libc::PR_SET_PTRACER, pid as libc::c_ulong, 0, 0, 0) };
}

/// An anonymous memory file, close-on-exec: where a helper's messages are kept.
pub fn memfd(name: &str) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: a live NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    if fd == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel has just made for this call, owned by nothing else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Whether thread `tid` of this process exists.
pub fn thread_alive(tid: i32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// This process's group and session.
pub fn pgrp_and_session() -> (i32, i32) {
    // SAFETY: no pointers.
    unsafe { (libc::getpgrp(), libc::getsid(0)) }
}

/// Reaps child `pid` if it has ended, without waiting; its exit status.
pub fn try_reap(pid: i32, wait: bool) -> Option<i32> {
    let mut st = 0;
    // SAFETY: a live local status.
    let r = unsafe { libc::waitpid(pid, &mut st, if wait { 0 } else { libc::WNOHANG }) };
    (r == pid).then(|| if libc::WIFEXITED(st) { libc::WEXITSTATUS(st) } else { 128 + libc::WTERMSIG(st) })
}

/// The path of the file this library was loaded from.
pub fn own_path() -> Option<std::path::PathBuf> {
    // SAFETY: a zeroed Dl_info is filled by dladdr; the address is a function of this library.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(own_path as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(info.dli_fname).to_str().ok()?;
        std::fs::canonicalize(name).ok()
    }
}

/// Starts `argv[0]` with `argv` and `envp` as a child that keeps the descriptors `keep` (made
/// inheritable at the same numbers) and standard input, output and error, and closes every
/// other descriptor; its standard error is `stderr` when given. The child waits until `before_go(pid)` has run in the parent (which may
/// allow it to trace us). Returns its PID.
pub fn spawn(argv: &[CString], envp: &[CString], keep: &[i32], stderr: Option<i32>, before_go: impl FnOnce(i32)) -> std::io::Result<i32> {
    let mut keep: Vec<i32> = keep.iter().copied().filter(|&fd| fd >= 0).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut argp: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envpp: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envpp.push(std::ptr::null());
    let mut go = [0i32; 2];
    // SAFETY: a live two-int array.
    if unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the child below makes only raw system calls on values prepared above.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw system calls only, on live locals; the child ends in execve or _exit.
        unsafe {
            let mut b = 0u8;
            libc::close(go[1]);
            libc::read(go[0], &mut b as *mut u8 as *mut libc::c_void, 1);
            libc::close(go[0]);
            if let Some(fd) = stderr {
                libc::dup2(fd, 2);
            }
            let mut low = 3;
            for &fd in &keep {
                // dup2 onto itself keeps close-on-exec: go through a spare number.
                let spare = libc::fcntl(fd, libc::F_DUPFD, 3);
                libc::dup2(spare, fd);
                libc::close(spare);
                if fd >= low {
                    if fd > low {
                        libc::syscall(libc::SYS_close_range, low as u32, (fd - 1) as u32, 0u32);
                    }
                    low = fd + 1;
                }
            }
            libc::syscall(libc::SYS_close_range, low as u32, u32::MAX, 0u32);
            libc::execve(argp[0], argp.as_ptr(), envpp.as_ptr());
            libc::_exit(127);
        }
    }
    // SAFETY: closing our copy of the read end.
    unsafe { libc::close(go[0]) };
    if pid < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: our own descriptor.
        unsafe { libc::close(go[1]) };
        return Err(e);
    }
    before_go(pid);
    // SAFETY: closing the write end lets the child go (it reads end of file).
    unsafe { libc::close(go[1]) };
    Ok(pid)
}
