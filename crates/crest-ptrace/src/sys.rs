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

/// `dup3(old, new, flags)`.
pub fn dup3(old: i32, new: i32, cloexec: bool) -> std::io::Result<()> {
    // SAFETY: no pointers; descriptors are plain numbers.
    if unsafe { libc::dup3(old, new, if cloexec { libc::O_CLOEXEC } else { 0 }) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `dup2(old, new)`, a no-op when equal.
pub fn dup2(old: i32, new: i32) -> std::io::Result<()> {
    // SAFETY: no pointers.
    if unsafe { libc::dup2(old, new) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `close(fd)`, errors ignored.
pub fn close(fd: i32) {
    // SAFETY: closing a number; callers only close descriptors they own.
    unsafe { libc::close(fd) };
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
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(name).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a valid C string.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), 0) };
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

/// `fcntl(fd, F_DUPFD_CLOEXEC, min)`: a copy of `fd` at the lowest free number >= `min`.
pub fn dup_above(fd: i32, min: i32) -> std::io::Result<i32> {
    // SAFETY: no pointers.
    let r = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
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

/// A pidfd of `pid` (`pidfd_open`).
pub fn pidfd_open(pid: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: no pointers.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int, "pidfd_open")
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

/// Takes ownership of descriptor number `fd`, which the caller owns and nobody else uses.
pub fn owned_fd(fd: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller passes a descriptor it owns (just returned by dup/fcntl).
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
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
