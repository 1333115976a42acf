//! Safe wrappers of the few other syscalls crest needs on other processes.
//!
//! # Safety
//! Each call passes pointers to live, correctly sized local values only.
#![allow(unsafe_code)]

use crate::TraceError;

/// `get_robust_list(tid)`: head address and length.
pub fn robust_list(tid: i32) -> Result<(u64, u64), TraceError> {
    let mut head: u64 = 0;
    let mut len: usize = 0;
    // SAFETY: head and len are valid out pointers.
    let r = unsafe { libc::syscall(libc::SYS_get_robust_list, tid, &mut head as *mut u64, &mut len as *mut usize) };
    if r == -1 {
        return Err(TraceError::sys(format!("get_robust_list of thread {tid}")));
    }
    Ok((head, len as u64))
}

/// `prlimit(pid, resource)`: (soft, hard).
pub fn get_rlimit(pid: i32, resource: u32) -> Result<(u64, u64), TraceError> {
    let mut old = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: old is a valid out pointer; new is null.
    let r = unsafe { libc::prlimit64(pid, resource as _, std::ptr::null(), &mut old) };
    if r == -1 {
        return Err(TraceError::sys(format!("prlimit of pid {pid} resource {resource}")));
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// `prlimit(pid, resource, new)`.
pub fn set_rlimit(pid: i32, resource: u32, cur: u64, max: u64) -> Result<(), TraceError> {
    let new = libc::rlimit64 { rlim_cur: cur, rlim_max: max };
    // SAFETY: new is a valid pointer; old is null.
    let r = unsafe { libc::prlimit64(pid, resource as _, &new, std::ptr::null_mut()) };
    if r == -1 {
        return Err(TraceError::sys(format!("setting resource limit {resource} of pid {pid}")));
    }
    Ok(())
}

/// `kill(pid, sig)`.
pub fn kill(pid: i32, sig: i32) -> Result<(), TraceError> {
    // SAFETY: no pointers.
    if unsafe { libc::kill(pid, sig) } == -1 {
        return Err(TraceError::sys(format!("sending signal {sig} to pid {pid}")));
    }
    Ok(())
}

/// `uname -r` and host name.
pub fn uname() -> (String, String) {
    // SAFETY: utsname is plain bytes; zeroed is valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid out pointer.
    unsafe { libc::uname(&mut u) };
    let s = |a: &[libc::c_char]| a.iter().take_while(|&&c| c != 0).map(|&c| c as u8 as char).collect::<String>();
    (s(&u.release), s(&u.nodename))
}

/// The kernel's `struct sigaction` for `rt_sigaction`.
#[repr(C)]
struct KSigaction {
    handler: u64,
    flags: u64,
    restorer: u64,
    mask: u64,
}

/// `rt_sigaction(sig, act, NULL)` on the calling process with the kernel's raw fields.
pub fn set_sigaction_raw(sig: u32, handler: u64, flags: u64, restorer: u64, mask: u64) -> std::io::Result<()> {
    let act = KSigaction { handler, flags, restorer, mask };
    // SAFETY: act is a live kernel sigaction; oldact is null; sigsetsize is 8 as the kernel wants.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigaction, sig as libc::c_long, &act as *const KSigaction, std::ptr::null::<KSigaction>(), 8) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `rt_sigaction(sig, NULL, &old)` on the calling process: (handler, flags, restorer, mask).
pub fn sigaction_raw(sig: u32) -> std::io::Result<(u64, u64, u64, u64)> {
    let mut old = KSigaction { handler: 0, flags: 0, restorer: 0, mask: 0 };
    // SAFETY: act is null; old is a live kernel sigaction the kernel fills; sigsetsize is 8.
    let r = unsafe { libc::syscall(libc::SYS_rt_sigaction, sig as libc::c_long, std::ptr::null::<KSigaction>(), &mut old as *mut KSigaction, 8) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((old.handler, old.flags, old.restorer, old.mask))
}

/// Turns off the calling thread's alternate signal stack.
pub fn disable_sigaltstack() -> std::io::Result<()> {
    let ss = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
    // SAFETY: ss is a valid stack_t; the old-stack pointer is null.
    let r = unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks every signal in the calling thread.
pub fn block_all_signals() {
    let all: u64 = !0;
    // SAFETY: a valid 8-byte mask pointer; oldset null; sigsetsize 8.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &all as *const u64, std::ptr::null::<u64>(), 8) };
}

/// `umask(mask)`.
pub fn set_umask(mask: u32) {
    // SAFETY: no pointers.
    unsafe { libc::umask(mask as libc::mode_t) };
}

/// `personality(p)`.
pub fn set_personality(p: u32) -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::personality(p as libc::c_ulong) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Lowers the priority of the calling thread to `nice` (`setpriority` on its thread ID; on
/// Linux the nice value is per thread). Best effort.
pub fn lower_thread_priority(nice: i32) {
    // SAFETY: no pointers.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
}

/// `prctl(PR_SET_NAME)` of the calling thread.
pub fn set_comm(name: &str) {
    let mut b = [0u8; 16];
    for (d, s) in b.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    // SAFETY: b is a NUL-terminated 16-byte buffer.
    unsafe { libc::prctl(libc::PR_SET_NAME, b.as_ptr()) };
}

/// Makes `to` this process's standard error (`dup2(to, 2)`). (A descriptor put at any other
/// number that way is a husk's business: [`crate::husk::FdTable`].)
pub fn redirect_stderr(to: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: no pointers; standard error is no object's own descriptor (std writes to the
    // number, whatever file it is).
    if unsafe { libc::dup2(to.as_fd().as_raw_fd(), 2) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `lseek(fd, offset, SEEK_DATA)` (`data`) or `SEEK_HOLE`: the start of the next run of data
/// (or hole) at or after `offset`; `None` when there is no more data (`ENXIO`).
pub fn seek_data(fd: &impl std::os::fd::AsFd, offset: u64, data: bool) -> std::io::Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    let whence = if data { libc::SEEK_DATA } else { libc::SEEK_HOLE };
    // SAFETY: no pointers; the descriptor is borrowed for the call.
    let r = unsafe { libc::lseek(fd.as_fd().as_raw_fd(), offset as libc::off_t, whence) };
    if r == -1 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) };
    }
    Ok(Some(r as u64))
}

/// `fstatfs(fd)`: the magic number of the file system the file is on (`f_type`).
pub fn fs_type(fd: &impl std::os::fd::AsFd) -> std::io::Result<i64> {
    use std::os::fd::AsRawFd;
    // SAFETY: statfs is plain data; zeroed is valid, and the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: st is a live statfs; the descriptor is borrowed for the call.
    if unsafe { libc::fstatfs(fd.as_fd().as_raw_fd(), &mut st) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// Takes the descriptor named by the environment variable `var` (a number above 2), which the
/// program that started this one passed down open across `exec` for it; the variable is removed,
/// so it is taken once. `None` when the variable is not set, names no such number, or names a
/// descriptor that is not open or is close-on-exec: one this program opened itself (Rust opens
/// every file close-on-exec) is never taken over.
pub fn take_inherited_fd(var: &str) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd = std::env::var(var).ok().and_then(|v| v.parse::<i32>().ok()).filter(|&fd| fd > 2);
    std::env::remove_var(var);
    let fd = fd?;
    // SAFETY: no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 || flags & libc::FD_CLOEXEC != 0 {
        return None;
    }
    // SAFETY: an open descriptor that survived `exec` (not close-on-exec), named for this
    // program by the one that started it: no object of this program owns it (those are all
    // close-on-exec), and the variable naming it is gone, so it is taken once only.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `fcntl(fd, F_SETFD, FD_CLOEXEC or 0)`.
pub fn set_cloexec(fd: i32, on: bool) -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 }) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `memfd_create(name, 0)` sized to `size`.
pub fn memfd(name: &str, size: u64) -> std::io::Result<std::os::fd::OwnedFd> {
    memfd_with(name, size, 0)
}

/// `memfd_create(name, MFD_ALLOW_SEALING)` of `size` bytes: seals can be added to it.
pub fn memfd_sealable(name: &str, size: u64) -> std::io::Result<std::os::fd::OwnedFd> {
    memfd_with(name, size, libc::MFD_ALLOW_SEALING)
}

fn memfd_with(name: &str, size: u64, flags: libc::c_uint) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a valid C string.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), flags) };
    if fd == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.set_len(size)?;
    Ok(f.into())
}

/// `chroot(path)`.
pub fn chroot(path: &str) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a valid C string.
    if unsafe { libc::chroot(c.as_ptr()) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `geteuid()`.
pub fn euid() -> u32 {
    // SAFETY: no pointers, cannot fail.
    unsafe { libc::geteuid() }
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: a copy of `fd` at the lowest free number >= `min`, owned
/// by the caller.
pub fn dup_above(fd: i32, min: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: no pointers.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `r` is a descriptor the kernel has just made for this call: open, and owned by
    // nothing else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(r) })
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    /// Exited with this status.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// Waits until child `pid` exits or is killed.
pub fn wait_child(pid: i32) -> std::io::Result<ChildEnd> {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r == -1 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if libc::WIFEXITED(status) {
            return Ok(ChildEnd::Exited(libc::WEXITSTATUS(status)));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(ChildEnd::Signaled(libc::WTERMSIG(status)));
        }
    }
}

/// Like [`wait_child`] without waiting: how child `pid` ended, or `None` while it runs (or
/// has already been waited for).
pub fn try_wait_child(pid: i32) -> std::io::Result<Option<ChildEnd>> {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL | libc::WNOHANG) };
        if r == -1 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(None);
        }
        if libc::WIFEXITED(status) {
            return Ok(Some(ChildEnd::Exited(libc::WEXITSTATUS(status))));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Some(ChildEnd::Signaled(libc::WTERMSIG(status))));
        }
    }
}

/// Like [`wait_signal_info`], giving up after `timeout`: the signal and its `si_code` and
/// `si_pid`, or `None` when none of `signals` (which must be blocked) came in time.
pub fn wait_signal_timeout(signals: &[i32], timeout: std::time::Duration) -> Option<(i32, i32, i32)> {
    let set = sigset_of(signals);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ts = libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as libc::c_long };
        // SAFETY: siginfo_t is plain data, filled by sigtimedwait.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: set, info and ts are valid for the call.
        let sig = unsafe { libc::sigtimedwait(&set, &mut info, &ts) };
        if sig > 0 {
            // SAFETY: si_pid is set for the signals sent by kill() and for SIGCHLD, and reads 0
            // (the zeroed field) otherwise.
            let from = unsafe { info.si_pid() };
            return Some((sig, info.si_code, from));
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) || left.is_zero() {
            return None;
        }
    }
}

fn sigset_of(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: set is a valid sigset_t; invalid numbers are rejected by the call.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Blocks `signals` in the calling thread (and threads it creates later).
pub fn block_signals(signals: &[i32]) {
    let set = sigset_of(signals);
    // SAFETY: set is valid; oldset null.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Unblocks `signals` in the calling thread.
pub fn unblock_signals(signals: &[i32]) {
    let set = sigset_of(signals);
    // SAFETY: set is valid; oldset null.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for one of `signals` (which must be blocked) and returns its number.
pub fn wait_signal(signals: &[i32]) -> i32 {
    let set = sigset_of(signals);
    loop {
        let mut sig = 0;
        // SAFETY: set and sig are valid.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            return sig;
        }
    }
}

/// Dies by signal `sig` as the restored process did: default action, no core dump.
pub fn die_by_signal(sig: i32) -> ! {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain calls with valid arguments; after them the process ends.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        libc::signal(sig, libc::SIG_DFL);
        let set = sigset_of(&[sig]);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}

fn owned(fd: libc::c_int, what: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd == -1 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `eventfd(count, flags)`.
pub fn eventfd(count: u32, flags: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers.
    owned(unsafe { libc::eventfd(count, flags) }, "eventfd")
}

/// `pipe2(flags)`: (read end, write end).
pub fn pipe2(flags: i32) -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-int array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), flags) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((owned(fds[0], "pipe2")?, owned(fds[1], "pipe2")?))
}

/// `fcntl(F_GETPIPE_SZ)` / `fcntl(F_SETPIPE_SZ)`.
pub fn pipe_size(fd: i32, set: Option<i32>) -> std::io::Result<i32> {
    // SAFETY: no pointers.
    let r = unsafe {
        match set {
            Some(n) => libc::fcntl(fd, libc::F_SETPIPE_SZ, n),
            None => libc::fcntl(fd, libc::F_GETPIPE_SZ),
        }
    };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// `fcntl(F_GETFL)` / `fcntl(F_SETFL)`.
pub fn status_flags(fd: i32, set: Option<i32>) -> std::io::Result<i32> {
    // SAFETY: no pointers.
    let r = unsafe {
        match set {
            Some(f) => libc::fcntl(fd, libc::F_SETFL, f),
            None => libc::fcntl(fd, libc::F_GETFL),
        }
    };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// `tee(from, to, len, SPLICE_F_NONBLOCK)`: copies pipe data without consuming it.
pub fn tee(from: i32, to: i32, len: usize) -> std::io::Result<usize> {
    // SAFETY: no pointers.
    let r = unsafe { libc::tee(from, to, len, libc::SPLICE_F_NONBLOCK) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Whether the other side of `fd` is gone (`POLLHUP`: a pipe with no writer left).
pub fn hung_up(fd: i32) -> std::io::Result<bool> {
    let mut p = libc::pollfd { fd, events: 0, revents: 0 };
    // SAFETY: p is one live pollfd; a zero timeout never blocks.
    if unsafe { libc::poll(&mut p, 1, 0) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.revents & libc::POLLHUP != 0)
}

/// `epoll_create1(flags)`.
pub fn epoll_create(flags: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers.
    owned(unsafe { libc::epoll_create1(flags) }, "epoll_create1")
}

/// `epoll_ctl(EPOLL_CTL_ADD, fd, {events, data})`.
pub fn epoll_add(ep: i32, fd: i32, events: u32, data: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: ev is a live epoll_event.
    if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Adds the file of descriptor `file` to epoll instance `ep` as a target added with number
/// `number` (the number an epoll set keys its targets by, which need not be free here): done
/// by a child forked for it, which puts the file at `number` in its own copy of the table
/// (`dup2`), adds it (`epoll_ctl`, on the instance both share) and exits; this process's table
/// is left as it was.
pub fn epoll_add_as(ep: i32, file: i32, number: i32, events: u32, data: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: the child makes only async-signal-safe calls (dup2, epoll_ctl on a live
    // epoll_event of its copy of this stack, _exit) before it exits, so forking a process that
    // may have other threads is sound.
    let child = unsafe { libc::fork() };
    if child == -1 {
        return Err(std::io::Error::last_os_error());
    }
    if child == 0 {
        // SAFETY: see above; errno is read through the pointer libc gives this thread.
        unsafe {
            // The instance itself moves out of the way when it has that number.
            let ep = if ep == number { libc::fcntl(ep, libc::F_DUPFD, number + 1) } else { ep };
            let code = if ep == -1 || libc::dup2(file, number) == -1 || libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, number, &mut ev) == -1 { *libc::__errno_location() } else { 0 };
            libc::_exit(code.clamp(0, 255));
        }
    }
    let mut status = 0;
    // SAFETY: status is a live int.
    while unsafe { libc::waitpid(child, &mut status, 0) } == -1 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, errno) => Err(std::io::Error::from_raw_os_error(errno)),
        _ => Err(std::io::Error::other("the child adding an epoll target was killed")),
    }
}

/// A pidfd of `pid` (`pidfd_open`).
pub fn pidfd_open(pid: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int, "pidfd_open")
}

/// A pidfd of `pid` with `flags` (`PIDFD_NONBLOCK`, `PIDFD_THREAD`).
pub fn pidfd_open_with(pid: i32, flags: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) } as libc::c_int, "pidfd_open")
}

/// The first 64 bytes of the kernel's `struct pidfd_info` (`PIDFD_INFO_SIZE_VER0`).
#[repr(C)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    ids: [u32; 11],
    exit_code: i32,
}

/// The wait status of the dead process behind `pidfd` (`PIDFD_GET_INFO` with
/// `PIDFD_INFO_EXIT`); none when the kernel does not give it (older than 6.15, or the process
/// not reaped yet).
pub fn pidfd_exit_status(pidfd: i32) -> Option<i32> {
    const PIDFD_INFO_EXIT: u64 = 1 << 3;
    // _IOWR(0xFF, 11, 64 bytes).
    const PIDFD_GET_INFO: libc::c_ulong = (3 << 30) | (64 << 16) | (0xFF << 8) | 11;
    let mut info = PidfdInfo { mask: PIDFD_INFO_EXIT, cgroupid: 0, ids: [0; 11], exit_code: 0 };
    // SAFETY: info is a live 64-byte struct pidfd_info, the size the request encodes.
    let r = unsafe { libc::ioctl(pidfd, PIDFD_GET_INFO, &mut info as *mut PidfdInfo) };
    (r == 0 && info.mask & PIDFD_INFO_EXIT != 0).then_some(info.exit_code)
}

/// `fcntl(F_GETLEASE)`: `F_RDLCK`, `F_WRLCK` or `F_UNLCK` (while a lease is broken, the type
/// it is broken down to).
pub fn lease(fd: i32) -> std::io::Result<i32> {
    // SAFETY: no pointers.
    let r = unsafe { libc::fcntl(fd, libc::F_GETLEASE) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// `fcntl(F_SETLEASE, ty)`.
pub fn set_lease(fd: i32, ty: i32) -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, ty) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A copy of descriptor `fd` of the process behind `pidfd` (`pidfd_getfd`; needs ptrace rights).
pub fn pidfd_getfd(pidfd: i32, fd: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) } as libc::c_int, "pidfd_getfd")
}

/// Whether descriptor `fd1` of `pid1` and `fd2` of `pid2` are one open file description
/// (`kcmp(KCMP_FILE)`; needs ptrace rights on both).
pub fn same_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> std::io::Result<bool> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: no pointers; the kernel compares its own objects.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, KCMP_FILE, fd1 as libc::c_long, fd2 as libc::c_long) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r == 0)
}

/// `prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)`: the size of `struct prctl_mm_map` this kernel
/// expects; fails with `EINVAL` without `CONFIG_CHECKPOINT_RESTORE`. Changes nothing.
pub fn mm_map_size() -> std::io::Result<u32> {
    const PR_SET_MM_MAP_SIZE: libc::c_ulong = 15;
    let mut size: libc::c_uint = 0;
    // SAFETY: with PR_SET_MM_MAP_SIZE the kernel only writes an unsigned int to the third
    // argument, which points at `size`.
    let r = unsafe { libc::prctl(libc::PR_SET_MM, PR_SET_MM_MAP_SIZE, &mut size as *mut libc::c_uint, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

/// Whether this kernel knows `madvise` advice `advice`: `madvise(NULL, 0, advice)` validates
/// the advice and, on an empty range, touches nothing.
pub fn madvise_known(advice: i32) -> std::io::Result<()> {
    // SAFETY: a zero-length range: the kernel checks the advice and returns without looking at
    // any memory.
    if unsafe { libc::madvise(std::ptr::null_mut(), 0, advice) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `userfaultfd(flags)`, closed again: whether this user may create one.
pub fn userfaultfd_allowed(flags: i32) -> std::io::Result<()> {
    // SAFETY: no pointers.
    owned(unsafe { libc::syscall(libc::SYS_userfaultfd, flags as libc::c_long) } as libc::c_int, "userfaultfd").map(drop)
}

/// Whether this process may put a TCP socket into repair mode (`TCP_REPAIR`, which needs
/// `CAP_NET_ADMIN`): an unconnected socket is created, switched into repair mode and closed;
/// nothing is sent.
pub fn tcp_repair_allowed() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const TCP_REPAIR: libc::c_int = 19;
    // SAFETY: no pointers.
    let mut fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd == -1 {
        // SAFETY: no pointers (an IPv6-only host).
        fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    }
    let sock = owned(fd, "socket")?;
    let on: libc::c_int = 1;
    // SAFETY: optval points at a live int and optlen is its size.
    let r = unsafe { libc::setsockopt(sock.as_raw_fd(), libc::IPPROTO_TCP, TCP_REPAIR, (&on as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The permitted set of the file capabilities of `path` (its `security.capability`
/// attribute), or `None` when it has none.
pub fn file_capabilities(path: &std::path::Path) -> std::io::Result<Option<u64>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut buf = [0u8; 24];
    // SAFETY: c and the attribute name are NUL-terminated; buf is live and its length is passed.
    let n = unsafe { libc::getxattr(c.as_ptr(), c"security.capability".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n == -1 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENODATA) { Ok(None) } else { Err(e) };
    }
    // struct vfs_cap_data: magic_etc, then (permitted, inheritable) low words, then high words
    // (revision 2 and 3; revision 1 has only the low words).
    let word = |i: usize| buf.get(i * 4..i * 4 + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let high = if n >= 20 { word(3) } else { 0 };
    Ok(Some(u64::from(word(1)) | (u64::from(high) << 32)))
}

/// Which side of a [`fork`] the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// In the new child.
    Child,
    /// In the parent; the child's PID.
    Parent(i32),
}

/// `fork()`. Refused unless the calling process has a single thread: only then may the child
/// go on using the allocator and std.
pub fn fork() -> std::io::Result<Forked> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(std::io::Error::other(format!("fork needs a single-threaded process; this one has {threads} threads")));
    }
    // SAFETY: the process is single-threaded (checked above), so the child inherits no lock
    // held by another thread.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// A child of this process that does nothing until it is dropped (then it ends and is
/// reaped): a process that shares none of the objects a fork does not copy, as a reference for
/// `kcmp` (a process that never made one has no SysV semaphore undo list, whereas this one's
/// threads made one when the first of them was created).
#[derive(Debug)]
pub struct IdleChild {
    pid: i32,
    /// The write end of the pipe the child reads: closing it ends the child.
    wr: Option<std::os::fd::OwnedFd>,
}

impl IdleChild {
    /// Its PID.
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

impl Drop for IdleChild {
    fn drop(&mut self) {
        drop(self.wr.take());
        let mut status = 0;
        // SAFETY: status is a live out pointer; pid is this process's own child, not reaped.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// Starts an [`IdleChild`]. Callable with threads: the child makes only async-signal-safe
/// calls (`close`, `prctl`, `read`, `_exit`).
pub fn idle_child() -> std::io::Result<IdleChild> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut fds = [0i32; 2];
    // SAFETY: fds is a live array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just made by pipe2 and are owned by nothing else.
    let (rd, wr) = unsafe { (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child below calls only async-signal-safe functions on plain integers and
    // a stack buffer, then _exit, so no lock another thread held at the fork is needed.
    match unsafe { libc::fork() } {
        -1 => Err(std::io::Error::last_os_error()),
        0 => {
            let (r, w) = (rd.as_raw_fd(), wr.as_raw_fd());
            let mut b = [0u8; 1];
            // SAFETY: async-signal-safe calls on this process's own descriptors and a stack
            // buffer; _exit never returns and runs no destructor of the parent's copies.
            unsafe {
                libc::close(w);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                while libc::read(r, b.as_mut_ptr().cast(), 1) == -1 && *libc::__errno_location() == libc::EINTR {}
                libc::_exit(0)
            }
        }
        pid => Ok(IdleChild { pid, wr: Some(wr) }),
    }
}

/// `prctl(PR_SET_PDEATHSIG, sig)`: `sig` is sent to the calling process when its parent dies.
pub fn set_parent_death_signal(sig: i32) -> std::io::Result<()> {
    // SAFETY: integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the open file `fd` (an `O_TMPFILE` file, or any file) the name `path`: `linkat` of
/// `/proc/self/fd/FD` with `AT_SYMLINK_FOLLOW`, which needs no privilege. Fails with
/// `EEXIST` if `path` exists.
pub fn link_fd(fd: i32, path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).map_err(std::io::Error::other)?;
    let to = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both are NUL-terminated strings that live across the call.
    if unsafe { libc::linkat(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::AT_SYMLINK_FOLLOW) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `getsockopt(fd, level, opt)` of an `int` option.
pub fn sock_opt_int(fd: i32, level: i32, opt: i32) -> std::io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: v and len are live and len holds v's size.
    if unsafe { libc::getsockopt(fd, level, opt, (&mut v as *mut libc::c_int).cast(), &mut len) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

/// The raw `sockaddr` bytes of a socket's own address (`getsockname`) or, with `peer`, of the
/// address it is connected to (`getpeername`).
pub fn sock_addr(fd: i32, peer: bool) -> std::io::Result<Vec<u8>> {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
    // SAFETY: p points at ss, whose size len holds; the kernel writes at most len bytes.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: ss is live for the whole read and len is within it.
    Ok(unsafe { std::slice::from_raw_parts((&ss as *const libc::sockaddr_storage).cast::<u8>(), len) }.to_vec())
}

/// A `NETLINK_SOCK_DIAG` socket, to ask the kernel about sockets (requests and answers are
/// then written and read as plain bytes).
pub fn sock_diag_socket() -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers.
    owned(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) }, "socket(NETLINK_SOCK_DIAG)")
}

/// `socketpair(domain, type | SOCK_CLOEXEC)`.
pub fn socketpair(domain: i32, ty: i32) -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-int array.
    if unsafe { libc::socketpair(domain, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((owned(fds[0], "socketpair")?, owned(fds[1], "socketpair")?))
}

/// The number of the pseudo-terminal whose master is `fd` (`TIOCGPTN`: N of `/dev/pts/N`).
pub fn pty_number(fd: i32) -> std::io::Result<u32> {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int into n.
    if unsafe { libc::ioctl(fd, libc::TIOCGPTN, &mut n) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}

/// Whether `fd` is a terminal (`isatty`).
pub fn is_terminal(fd: i32) -> bool {
    // SAFETY: no pointers.
    unsafe { libc::isatty(fd) == 1 }
}

/// `timerfd_create(clock, flags)`.
pub fn timerfd_create(clock: i32, flags: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers.
    owned(unsafe { libc::timerfd_create(clock, flags) }, "timerfd_create")
}

/// `timerfd_settime(fd, flags, {interval, value})`, times in nanoseconds.
pub fn timerfd_settime(fd: i32, flags: i32, value_ns: u64, interval_ns: u64) -> std::io::Result<()> {
    let ts = |ns: u64| libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as libc::c_long };
    let its = libc::itimerspec { it_interval: ts(interval_ns), it_value: ts(value_ns) };
    // SAFETY: its is a live itimerspec; no old value is asked for.
    if unsafe { libc::timerfd_settime(fd, flags, &its, std::ptr::null_mut()) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the number of expirations a timerfd has not yet reported (`TFD_IOC_SET_TICKS`, a
/// `CONFIG_CHECKPOINT_RESTORE` ioctl).
pub fn timerfd_set_ticks(fd: i32, ticks: u64) -> std::io::Result<()> {
    // _IOW('T', 0, u64)
    const TFD_IOC_SET_TICKS: libc::c_ulong = 0x4008_5400;
    // SAFETY: the ioctl reads one u64 from the pointer, which points at ticks.
    if unsafe { libc::ioctl(fd, TFD_IOC_SET_TICKS, &ticks as *const u64) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The current time of `clock`, in nanoseconds.
pub fn clock_now_ns(clock: i32) -> std::io::Result<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a live timespec the kernel fills.
    if unsafe { libc::clock_gettime(clock, &mut ts) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// `unshare(CLONE_NEWTIME)`: the children this thread creates from now on are in a new time
/// namespace, whose offsets may be written to `/proc/self/timens_offsets` until the first one
/// is created.
pub fn unshare_time_namespace() -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `signalfd(-1, mask, flags)`: a new signalfd for the signals of the 64-bit `mask` (bit N-1
/// for signal N).
pub fn signalfd(mask: u64, flags: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers but the mask, 8 bytes as the kernel's sigset_t; the raw syscall
    // takes its size.
    owned(unsafe { libc::syscall(libc::SYS_signalfd4, -1, &mask as *const u64, 8usize, flags) } as libc::c_int, "signalfd")
}

/// `getsockopt(fd, level, opt)` into a buffer of `len` bytes; returns the bytes the kernel wrote.
pub fn sock_opt_bytes(fd: i32, level: i32, opt: i32, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut l = len as libc::socklen_t;
    // SAFETY: buf holds len bytes and l says so; the kernel writes at most l bytes.
    if unsafe { libc::getsockopt(fd, level, opt, buf.as_mut_ptr().cast(), &mut l) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(l as usize);
    Ok(buf)
}

/// `setsockopt(fd, level, opt)` of an `int` option.
pub fn set_sock_opt_int(fd: i32, level: i32, opt: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: value is a live int and its size is passed.
    if unsafe { libc::setsockopt(fd, level, opt, (&value as *const i32).cast(), std::mem::size_of::<i32>() as libc::socklen_t) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `socket(domain, type | SOCK_CLOEXEC, protocol)`.
pub fn socket(domain: i32, ty: i32, protocol: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers.
    owned(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) }, "socket")
}

/// `bind(fd, addr)`, with `addr` the raw `sockaddr` bytes (as [`sock_addr`] returns them).
pub fn bind_raw(fd: i32, addr: &[u8]) -> std::io::Result<()> {
    if addr.len() > std::mem::size_of::<libc::sockaddr_storage>() || addr.len() < 2 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: addr.len() fits in ss, checked above; the regions do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(addr.as_ptr(), (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(), addr.len()) };
    // SAFETY: ss is live, aligned for any sockaddr, and holds addr.len() valid bytes.
    if unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), addr.len() as libc::socklen_t) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `listen(fd, backlog)`.
pub fn listen(fd: i32, backlog: i32) -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::listen(fd, backlog) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Bytes waiting to be read on `fd` (`FIONREAD`).
pub fn bytes_readable(fd: i32) -> std::io::Result<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into n.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}

/// A moment in local time (the `TZ` variable, else `/etc/localtime`), as `localtime_r` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTime {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=60.
    pub second: u32,
    /// Seconds east of UTC.
    pub offset: i64,
    /// The zone's abbreviation ("UTC", "CET"), empty when unknown.
    pub zone: String,
}

/// `secs` seconds since the epoch in local time; `None` when out of range.
pub fn local_time(secs: i64) -> Option<LocalTime> {
    let t: libc::time_t = secs;
    // SAFETY: tm is plain data, filled by localtime_r below.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: tzset reads TZ and the zone files into libc's own state; it takes no arguments.
    unsafe { tzset() };
    // SAFETY: both pointers are valid for the call; localtime_r writes only into tm.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return None;
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: tm_zone points to a NUL-terminated name in libc's zone data, which lives
        // as long as the process (it is replaced only by another tzset, not freed under us
        // here: the name is copied at once).
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }.to_string_lossy().into_owned()
    };
    Some(LocalTime {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        offset: tm.tm_gmtoff,
        zone,
    })
}

extern "C" {
    /// POSIX `tzset` (glibc), not declared by the `libc` crate for this target.
    fn tzset();
}

/// Sends `sig` to the process behind `pidfd` (`pidfd_send_signal`): never to another process
/// that took its PID after it ended.
pub fn pidfd_send_signal(pidfd: i32, sig: i32) -> std::io::Result<()> {
    // SAFETY: no pointers (a null siginfo means "as kill() would").
    if unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, sig, std::ptr::null::<libc::siginfo_t>(), 0) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Like [`wait_signal`], and also returns the signal's `si_code` (`SI_USER` from `kill`,
/// `SI_KERNEL` from the kernel, e.g. a terminal's ^C to its foreground process group).
pub fn wait_signal_info(signals: &[i32]) -> (i32, i32) {
    let set = sigset_of(signals);
    loop {
        // SAFETY: siginfo_t is plain data, filled by sigwaitinfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: set and info are valid for the call.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig > 0 {
            return (sig, info.si_code);
        }
    }
}

/// One message read from a socket's queue without taking it ([`peek_message_full`]).
#[derive(Debug, Default)]
pub struct PeekedMessage {
    /// Its whole length (may exceed the buffer given: `MSG_TRUNC`).
    pub len: usize,
    /// The raw `sockaddr` of its sender, as `recvmsg` reports it (empty: unnamed).
    pub sender: Vec<u8>,
    /// The descriptors in flight it carries (`SCM_RIGHTS`), installed in this process by the
    /// peek, in order.
    pub fds: Vec<std::os::fd::OwnedFd>,
    /// It carries ancillary data other than descriptors (credentials), or more than could be
    /// looked at (`MSG_CTRUNC`).
    pub other_control: bool,
}

/// Reads the next message queued on socket `fd` without taking it (`MSG_PEEK`; with
/// `SO_PEEK_OFF` set, from the peek offset on, which it advances), with its sender's address
/// and the descriptors it carries (copies of them, now open in this process, close-on-exec).
/// `WouldBlock` when nothing is queued.
pub fn peek_message_full(fd: i32, buf: &mut [u8]) -> std::io::Result<PeekedMessage> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = [0u64; 512];
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: msghdr is plain data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers whose sizes it holds; the kernel writes within them.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC) };
    if n == -1 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = PeekedMessage { len: n as usize, other_control: msg.msg_flags & libc::MSG_CTRUNC != 0, ..Default::default() };
    let namelen = (msg.msg_namelen as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    if namelen > 2 {
        // SAFETY: name is live and namelen is within it.
        out.sender = unsafe { std::slice::from_raw_parts((&name as *const libc::sockaddr_storage).cast::<u8>(), namelen) }.to_vec();
    }
    if msg.msg_controllen > 0 {
        // SAFETY: the CMSG macros walk the control buffer the kernel filled, within msg_controllen;
        // each descriptor of SCM_RIGHTS was just installed in this process and is owned by nobody else.
        unsafe {
            use std::os::fd::FromRawFd;
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                    let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<libc::c_int>();
                    for i in 0..count {
                        out.fds.push(std::os::fd::OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                } else {
                    out.other_control = true;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
    }
    Ok(out)
}

/// `sendmsg(fd, data, MSG_DONTWAIT)` to `to` (raw `sockaddr` bytes; empty: the socket's peer),
/// carrying descriptors `fds` (`SCM_RIGHTS`) when there are any. Returns the bytes sent.
pub fn send_message(fd: i32, data: &[u8], to: &[u8], fds: &[i32]) -> std::io::Result<usize> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    if to.len() > std::mem::size_of::<libc::sockaddr_storage>() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: to.len() fits in name, checked above; the regions do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(to.as_ptr(), (&mut name as *mut libc::sockaddr_storage).cast::<u8>(), to.len()) };
    let space = if fds.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE is arithmetic.
        unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) as usize }
    };
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: msghdr is plain data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    if !to.is_empty() {
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = to.len() as libc::socklen_t;
    }
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: the control buffer holds CMSG_SPACE of the descriptors, zeroed; the header and
        // the descriptors are written within it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(c), std::mem::size_of_val(fds));
        }
    }
    // SAFETY: msg points at live buffers whose sizes it holds; the kernel only reads them.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `send(fd, data, MSG_DONTWAIT)`: one datagram on a datagram socket.
pub fn send_nonblocking(fd: i32, data: &[u8]) -> std::io::Result<usize> {
    // SAFETY: data is a live slice of data.len() bytes.
    let n = unsafe { libc::send(fd, data.as_ptr().cast(), data.len(), libc::MSG_DONTWAIT) };
    if n == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `shutdown(fd, how)`.
pub fn shutdown(fd: i32, how: i32) -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::shutdown(fd, how) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `flock(fd, op)`.
pub fn flock(fd: i32, op: i32) -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::flock(fd, op) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `fcntl(fd, cmd, &flock)` for a byte-range lock (`F_SETLK`, `F_OFD_SETLK`) of type `ty`
/// (`F_RDLCK`, `F_WRLCK`) on `len` bytes from `start` (0: to the end of the file).
pub fn set_lock(fd: i32, cmd: i32, ty: i32, start: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: flock is plain data; all zeroes is a valid value (and l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ty as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    // SAFETY: fl is a live struct flock the kernel reads.
    if unsafe { libc::fcntl(fd, cmd, &fl) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A thread's scheduling settings, as `sched_getattr` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedAttr {
    /// `SCHED_*`.
    pub policy: u32,
    /// `SCHED_FLAG_*`.
    pub flags: u64,
    /// Nice value.
    pub nice: i32,
    /// Real-time priority.
    pub priority: u32,
}

/// The kernel's `struct sched_attr` (version 1: with utilization clamps), as raw words.
#[repr(C)]
#[derive(Default)]
struct RawSchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// `sched_getattr(tid)`.
pub fn sched_get(tid: i32) -> std::io::Result<SchedAttr> {
    let mut a = RawSchedAttr::default();
    let size = std::mem::size_of::<RawSchedAttr>() as u32;
    // SAFETY: a is a valid out pointer of `size` bytes.
    let r = unsafe { libc::syscall(libc::SYS_sched_getattr, tid, &mut a as *mut RawSchedAttr, size, 0) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(SchedAttr { policy: a.policy, flags: a.flags, nice: a.nice, priority: a.priority })
}

/// `sched_setattr(tid)` with a policy, its flags, nice value and real-time priority.
pub fn sched_set(tid: i32, s: &SchedAttr) -> std::io::Result<()> {
    let a = RawSchedAttr { size: std::mem::size_of::<RawSchedAttr>() as u32, policy: s.policy, flags: s.flags, nice: s.nice, priority: s.priority, ..Default::default() };
    // SAFETY: a is a valid, fully initialised struct of the size it states.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &a as *const RawSchedAttr, 0) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

const F_SETSIG: libc::c_int = 10;
const F_GETSIG: libc::c_int = 11;
const F_SETOWN_EX: libc::c_int = 15;
const F_GETOWN_EX: libc::c_int = 16;

/// The kernel's `struct f_owner_ex`.
#[repr(C)]
struct OwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// `fcntl(F_GETOWN_EX)` and `fcntl(F_GETSIG)`: (owner type, owner pid, signal).
pub fn file_owner(fd: i32) -> std::io::Result<(i32, i32, i32)> {
    let mut o = OwnerEx { kind: 0, pid: 0 };
    // SAFETY: o is a valid out pointer to a struct f_owner_ex.
    if unsafe { libc::fcntl(fd, F_GETOWN_EX, &mut o as *mut OwnerEx) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: no pointers.
    let sig = unsafe { libc::fcntl(fd, F_GETSIG) };
    if sig == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((o.kind, o.pid, sig))
}

/// `fcntl(F_SETOWN_EX)` and `fcntl(F_SETSIG)`.
pub fn set_file_owner(fd: i32, kind: i32, pid: i32, sig: i32) -> std::io::Result<()> {
    let o = OwnerEx { kind, pid };
    // SAFETY: o is a valid pointer to a struct f_owner_ex.
    if pid != 0 && unsafe { libc::fcntl(fd, F_SETOWN_EX, &o as *const OwnerEx) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: no pointers.
    if sig != 0 && unsafe { libc::fcntl(fd, F_SETSIG, sig) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `fcntl(F_SETOWN, 0)`: no owner for I/O signals (none are sent).
pub fn clear_file_owner(fd: i32) -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::fcntl(fd, libc::F_SETOWN, 0) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `fcntl(F_GET_SEALS)`; 0 for a file that cannot be sealed.
pub fn seals(fd: i32) -> std::io::Result<u32> {
    // SAFETY: no pointers.
    let r = unsafe { libc::fcntl(fd, libc::F_GET_SEALS) };
    if r == -1 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::EINVAL) { Ok(0) } else { Err(e) };
    }
    Ok(r as u32)
}

/// `fcntl(F_ADD_SEALS)`.
pub fn add_seals(fd: i32, seals: u32) -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals as libc::c_int) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `kcmp(pid, pid, KCMP_EPOLL_TFD, fd, {epfd, tfd, toff})`: whether descriptor `fd` of `pid` is
/// the file the epoll instance `epfd` of `pid` watches as its `toff`-th target added as `tfd`.
pub fn epoll_target_is(pid: i32, fd: i32, epfd: i32, tfd: i32, toff: u32) -> std::io::Result<bool> {
    const KCMP_EPOLL_TFD: libc::c_long = 7;
    #[repr(C)]
    struct Slot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    let slot = Slot { efd: epfd as u32, tfd: tfd as u32, toff };
    // SAFETY: slot is a live struct kcmp_epoll_slot the kernel only reads.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, fd as libc::c_long, &slot as *const Slot) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r == 0)
}

/// Whether `fd` is close-on-exec (`F_GETFD`).
pub fn cloexec(fd: i32) -> std::io::Result<bool> {
    // SAFETY: no pointers.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r & libc::FD_CLOEXEC != 0)
}

/// `kcmp(pid1, pid2, kind, 0, 0)` for the kinds that compare a whole object of two processes
/// (`KCMP_VM` 1, `KCMP_FILES` 2, `KCMP_FS` 3, `KCMP_SIGHAND` 4, `KCMP_IO` 5, `KCMP_SYSVSEM` 6):
/// whether they share it.
pub fn share(pid1: i32, pid2: i32, kind: i32) -> std::io::Result<bool> {
    // SAFETY: no pointers; the kernel compares its own objects.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, kind as libc::c_long, 0 as libc::c_long, 0 as libc::c_long) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r == 0)
}

/// `kcmp(pid1, pid2, kind, idx1, idx2)` as an ordering. The kernel orders the objects it
/// compares by their (obfuscated) addresses, the same for every call of one boot: sorting by
/// it puts the descriptors of one open file description (`KCMP_FILE` 0, with the descriptor
/// numbers) or the processes that share one object (the kinds of [`share`], indexes 0) next
/// to each other, found in O(log n) comparisons instead of one with each. `None` when the
/// kernel gives no order.
pub fn kcmp_order(pid1: i32, pid2: i32, kind: i32, idx1: i32, idx2: i32) -> std::io::Result<Option<std::cmp::Ordering>> {
    // SAFETY: no pointers; the kernel compares its own objects.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, kind as libc::c_long, idx1 as libc::c_long, idx2 as libc::c_long) };
    Ok(match r {
        -1 => return Err(std::io::Error::last_os_error()),
        0 => Some(std::cmp::Ordering::Equal),
        1 => Some(std::cmp::Ordering::Less),
        2 => Some(std::cmp::Ordering::Greater),
        _ => None,
    })
}

/// `inotify_init1(flags)`: a new inotify instance.
pub fn inotify_init(flags: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers.
    owned(unsafe { libc::inotify_init1(flags | libc::IN_CLOEXEC) }, "inotify_init1")
}

/// `inotify_add_watch(fd, path, mask)`: the watch descriptor.
pub fn inotify_add_watch(fd: i32, path: &str, mask: u32) -> std::io::Result<i32> {
    let c = std::ffi::CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a NUL-terminated string that lives across the call.
    let wd = unsafe { libc::inotify_add_watch(fd, c.as_ptr(), mask) };
    if wd == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(wd)
}

/// `inotify_rm_watch(fd, wd)`.
pub fn inotify_rm_watch(fd: i32, wd: i32) -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::inotify_rm_watch(fd, wd) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `fanotify_init(flags, event_f_flags)`: a new fanotify group.
pub fn fanotify_init(flags: u32, event_f_flags: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers.
    owned(unsafe { libc::syscall(libc::SYS_fanotify_init, flags, event_f_flags) } as i32, "fanotify_init")
}

/// Closes `fd`, a descriptor the kernel opened in this process without handing it to an owner
/// (the file of a fanotify event that was read).
pub fn close_unowned(fd: i32) {
    // SAFETY: no pointers; the caller owns nothing else under that number.
    unsafe { libc::close(fd) };
}

/// `fanotify_mark(fd, flags, mask, AT_FDCWD, path)`.
pub fn fanotify_mark(fd: i32, flags: u32, mask: u64, path: &str) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a NUL-terminated string that lives across the call.
    if unsafe { libc::syscall(libc::SYS_fanotify_mark, fd, flags, mask, libc::AT_FDCWD, c.as_ptr()) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `open_by_handle_at(mount_fd, handle, flags)`: opens the file a file handle (`handle_type`
/// and its bytes, as `name_to_handle_at` gave them or fdinfo shows them) names, on the file
/// system of `mount_fd`. Needs `CAP_DAC_READ_SEARCH`.
pub fn open_by_handle(mount_fd: i32, handle_type: i32, handle: &[u8], flags: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    if handle.len() > 128 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }, in u32 words
    // so that it is aligned.
    let mut buf = vec![0u32; 2 + handle.len().div_ceil(4)];
    buf[0] = handle.len() as u32;
    buf[1] = handle_type as u32;
    for (i, b) in handle.iter().enumerate() {
        buf[2 + i / 4] |= u32::from(*b) << (8 * (i % 4));
    }
    // SAFETY: buf is a live, aligned struct file_handle whose handle_bytes says how many bytes
    // follow the header, all inside buf; the kernel only reads it.
    owned(unsafe { libc::syscall(libc::SYS_open_by_handle_at, mount_fd, buf.as_ptr(), flags | libc::O_CLOEXEC) } as libc::c_int, "open_by_handle_at")
}

/// Queues signal `sig` with value `value` to thread `tid` of process `pid`
/// (`rt_tgsigqueueinfo`, `si_code` `SI_QUEUE`, this process as the sender).
pub fn tg_sigqueue(pid: i32, tid: i32, sig: i32, value: i32) -> std::io::Result<()> {
    /// The x86-64 `siginfo_t` of a queued signal: 128 bytes.
    #[repr(C)]
    struct QueuedInfo {
        signo: i32,
        errno: i32,
        code: i32,
        pad: i32,
        pid: i32,
        uid: u32,
        value: u64,
        rest: [u64; 12],
    }
    let info = QueuedInfo { signo: sig, errno: 0, code: libc::SI_QUEUE, pad: 0, pid: std::process::id() as i32, uid: euid(), value: value as u32 as u64, rest: [0; 12] };
    // SAFETY: the kernel reads 128 bytes of siginfo from a live local value of that size.
    let r = unsafe { libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, sig, &info as *const QueuedInfo) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The PID of the process at the other end of unix socket `fd` (`SO_PEERCRED`).
pub fn peer_pid(fd: i32) -> std::io::Result<i32> {
    peer_cred(fd).map(|(pid, _)| pid)
}

/// The PID and real user id of the process at the other end of unix socket `fd`, as the
/// kernel recorded them when it connected (or listened): `SO_PEERCRED`.
pub fn peer_cred(fd: i32) -> std::io::Result<(i32, u32)> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into a live local ucred.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, &mut cred as *mut libc::ucred as *mut libc::c_void, &mut len) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((cred.pid, cred.uid))
}

/// A terminal's settings as `TCGETS2` reads them (speeds included).
pub type Termios2 = libc::termios2;

/// The settings of the terminal behind `fd` (`TCGETS2`; on a pty master, its slave's).
pub fn tty_termios(fd: i32) -> std::io::Result<Termios2> {
    // SAFETY: termios2 is plain data; all zeros is a valid value.
    let mut t: Termios2 = unsafe { std::mem::zeroed() };
    // SAFETY: TCGETS2 writes one struct termios2 into t.
    if unsafe { libc::ioctl(fd, libc::TCGETS2, &mut t) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(t)
}

/// Sets the settings of the terminal behind `fd` at once, without flushing (`TCSETS2`).
pub fn set_tty_termios(fd: i32, t: &Termios2) -> std::io::Result<()> {
    // SAFETY: TCSETS2 reads one struct termios2 from t.
    if unsafe { libc::ioctl(fd, libc::TCSETS2, t as *const Termios2) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The window size of the terminal behind `fd` (`TIOCGWINSZ`): rows, columns, x and y pixels.
pub fn tty_winsize(fd: i32) -> std::io::Result<[u16; 4]> {
    let mut w = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one struct winsize into w.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok([w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel])
}

/// Sets the window size of the terminal behind `fd` (`TIOCSWINSZ`).
pub fn set_tty_winsize(fd: i32, s: [u16; 4]) -> std::io::Result<()> {
    let w = libc::winsize { ws_row: s[0], ws_col: s[1], ws_xpixel: s[2], ws_ypixel: s[3] };
    // SAFETY: TIOCSWINSZ reads one struct winsize from w.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &w as *const libc::winsize) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A terminal setting that is one `int`, read with one ioctl and set with another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtyInt {
    /// Packet mode of a pty master (`TIOCGPKT`, `TIOCPKT`).
    Packet,
    /// The lock of a pty's slave (`TIOCGPTLCK`, `TIOCSPTLCK`).
    Lock,
    /// The foreground process group (`TIOCGPGRP`, `TIOCSPGRP`).
    Foreground,
    /// The session whose controlling terminal it is (`TIOCGSID`; not settable).
    Session,
    /// The modem control lines of a serial line (`TIOCMGET`, `TIOCMSET`).
    Modem,
    /// A virtual console's keyboard mode (`KDGKBMODE`, `KDSKBMODE`).
    Keyboard,
    /// A virtual console's display mode, `KD_TEXT` 0 or `KD_GRAPHICS` 1 (`KDGETMODE`; not set
    /// here).
    Display,
    /// Exclusive mode, 1 or 0 (`TIOCGEXCL`; set with `TIOCEXCL`, cleared with `TIOCNXCL`).
    Exclusive,
}

/// `KDGETMODE`, `KDGKBMODE`, `KDSKBMODE` and `VT_GETMODE` (linux/kd.h, linux/vt.h).
const KDGETMODE: libc::Ioctl = 0x4B3B;
const KDGKBMODE: libc::Ioctl = 0x4B44;
const KDSKBMODE: libc::Ioctl = 0x4B45;
const VT_GETMODE: libc::Ioctl = 0x5601;

impl TtyInt {
    fn requests(self) -> (libc::Ioctl, Option<libc::Ioctl>) {
        match self {
            TtyInt::Packet => (libc::TIOCGPKT, Some(libc::TIOCPKT)),
            TtyInt::Lock => (libc::TIOCGPTLCK, Some(libc::TIOCSPTLCK)),
            TtyInt::Foreground => (libc::TIOCGPGRP, Some(libc::TIOCSPGRP)),
            TtyInt::Session => (libc::TIOCGSID, None),
            TtyInt::Modem => (libc::TIOCMGET, Some(libc::TIOCMSET)),
            TtyInt::Keyboard => (KDGKBMODE, Some(KDSKBMODE)),
            TtyInt::Display => (KDGETMODE, None),
            TtyInt::Exclusive => (libc::TIOCGEXCL, None),
        }
    }
}

/// Reads `what` of the terminal behind `fd`.
pub fn tty_int(fd: i32, what: TtyInt) -> std::io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: each of these ioctls writes one int into v.
    if unsafe { libc::ioctl(fd, what.requests().0, &mut v) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}

/// Sets `what` of the terminal behind `fd`.
pub fn set_tty_int(fd: i32, what: TtyInt, value: i32) -> std::io::Result<()> {
    // Those two take the value itself as their argument, or none.
    let by_value = match what {
        TtyInt::Keyboard => Some((KDSKBMODE, value as libc::c_ulong)),
        TtyInt::Exclusive => Some((if value != 0 { libc::TIOCEXCL } else { libc::TIOCNXCL }, 0)),
        _ => None,
    };
    if let Some((req, arg)) = by_value {
        // SAFETY: the argument is a plain integer, no pointer.
        if unsafe { libc::ioctl(fd, req, arg) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(());
    }
    let req = what.requests().1.ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let v: libc::c_int = value;
    // SAFETY: each of these ioctls reads one int from v.
    if unsafe { libc::ioctl(fd, req, &v as *const libc::c_int) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How a virtual console is switched away from (`VT_GETMODE`): `VT_AUTO` 0 by the kernel,
/// `VT_PROCESS` 1 by asking the process that set it with a signal.
pub fn vt_switch_mode(fd: i32) -> std::io::Result<u8> {
    // struct vt_mode: mode, waitv (chars), then relsig, acqsig, frsig (shorts).
    let mut m = [0u8; 8];
    // SAFETY: VT_GETMODE writes one 8-byte struct vt_mode into m.
    if unsafe { libc::ioctl(fd, VT_GETMODE, m.as_mut_ptr()) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(m[0])
}

/// Makes the terminal behind `fd` the caller's controlling terminal (`TIOCSCTTY`, without
/// stealing it from another session).
pub fn set_controlling_tty(fd: i32) -> std::io::Result<()> {
    // SAFETY: the argument is a plain 0, no pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Puts `byte` in the input queue of the terminal behind `fd`, as if it had been received
/// (`TIOCSTI`; needs `CAP_SYS_ADMIN` unless it is the caller's controlling terminal).
pub fn tty_insert(fd: i32, byte: u8) -> std::io::Result<()> {
    // SAFETY: TIOCSTI reads one byte from the pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCSTI, &byte as *const u8) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the slave of the pty whose master is `fd` (`TIOCGPTPEER`) with `flags`.
pub fn pty_peer(fd: i32, flags: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: the argument is the open flags, no pointer.
    owned(unsafe { libc::ioctl(fd, libc::TIOCGPTPEER, flags) }, "TIOCGPTPEER")
}

/// `mknod(path, mode, rdev)`: a FIFO (`S_IFIFO`) or device node.
pub fn mknod(path: &std::path::Path, mode: u32, rdev: u64) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated string that lives across the call.
    if unsafe { libc::mknod(p.as_ptr(), mode, rdev) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The target of the symbolic link `fd` is open on (`O_PATH | O_NOFOLLOW`): `readlinkat(fd, "")`.
pub fn read_link_fd(fd: i32) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: an empty NUL-terminated string and a buffer of the length given, both live across the call.
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(std::ffi::OsStr::from_bytes(&buf).into())
}

/// Address ranges this process reserved with [`reserve`] (inherited by its forks): the only
/// memory the `reserved_*` calls below touch, where no Rust value lives.
static RESERVED: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());

fn in_reserved(addr: u64, len: u64) -> std::io::Result<()> {
    let ok = RESERVED.lock().map(|r| r.iter().any(|&(s, e)| addr >= s && addr.checked_add(len).is_some_and(|end| end <= e))).unwrap_or(false);
    if ok && addr.is_multiple_of(4096) {
        Ok(())
    } else {
        Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr:#x}+{len:#x} is not in a reserved range")))
    }
}

/// Reserves `len` bytes at `addr` (`PROT_NONE`, no memory committed; fails when anything is
/// mapped there), for the `reserved_*` calls of this process and of the processes it forks.
pub fn reserve(addr: u64, len: u64) -> std::io::Result<()> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping: it maps fresh memory where nothing
    // is, or fails.
    let r = unsafe { libc::mmap(addr as *mut libc::c_void, len as usize, libc::PROT_NONE, flags, -1, 0) };
    if r == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    if r as u64 != addr {
        // An old kernel that took the address as a hint: give it back.
        // SAFETY: the range was just mapped by this call and holds nothing.
        unsafe { libc::munmap(r, len as usize) };
        return Err(std::io::Error::from_raw_os_error(libc::EEXIST));
    }
    if let Ok(mut g) = RESERVED.lock() {
        g.push((addr, addr + len));
    }
    Ok(())
}

/// Gives back a range [`reserve`] made.
pub fn unreserve(addr: u64, len: u64) -> std::io::Result<()> {
    let mut g = RESERVED.lock().map_err(|_| std::io::Error::other("reserved ranges poisoned"))?;
    let Some(at) = g.iter().position(|&r| r == (addr, addr + len)) else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a reserved range"));
    };
    g.swap_remove(at);
    // SAFETY: the range is one `reserve` made, where no Rust value lives.
    if unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Maps `len` bytes at `addr`, inside a reserved range, readable and writable and private:
/// anonymous memory, or the file `fd` from `offset`.
pub fn reserved_map(addr: u64, len: u64, fd: Option<i32>, offset: u64) -> std::io::Result<()> {
    in_reserved(addr, len)?;
    let flags = libc::MAP_PRIVATE | libc::MAP_FIXED | if fd.is_none() { libc::MAP_ANONYMOUS } else { 0 };
    // SAFETY: the range lies inside a reserved range (checked), where no Rust value lives.
    let r = unsafe { libc::mmap(addr as *mut libc::c_void, len as usize, libc::PROT_READ | libc::PROT_WRITE, flags, fd.unwrap_or(-1), offset as libc::off_t) };
    if r == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `madvise(MADV_DONTNEED)` of a part of a reserved range: its private pages are dropped (it
/// reads zeros again, or its file's contents).
pub fn reserved_drop(addr: u64, len: u64) -> std::io::Result<()> {
    in_reserved(addr, len)?;
    // SAFETY: the range lies inside a reserved range (checked), where no Rust value lives.
    if unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, libc::MADV_DONTNEED) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Copies `data` to `addr`, inside a reserved range mapped readable and writable (through
/// `process_vm_writev` on this process: a part not mapped so fails with `EFAULT`).
pub fn reserved_write(addr: u64, data: &[u8]) -> std::io::Result<()> {
    in_reserved(addr, data.len() as u64)?;
    crate::mem::write_vm(std::process::id() as i32, addr, data).map_err(|e| std::io::Error::other(e.to_string()))
}

/// The state components of the XSAVE area this machine's kernel enables for processes (XCR0),
/// or `None` where the CPU has no XSAVE.
pub fn enabled_xfeatures() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::arch::is_x86_feature_detected!("xsave") {
            return None;
        }
        #[target_feature(enable = "xsave")]
        unsafe fn xcr0() -> u64 {
            // SAFETY: XGETBV with ECX=0 only reads XCR0; the caller checked the CPU has XSAVE
            // (and the kernel sets CR4.OSXSAVE wherever it reports the feature).
            unsafe { std::arch::x86_64::_xgetbv(0) }
        }
        // SAFETY: the CPU has XSAVE (checked above).
        Some(unsafe { xcr0() })
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}
