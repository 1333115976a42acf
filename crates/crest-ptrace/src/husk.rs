//! The husk: the process a restore fills.
//!
//! [`create`] `clone3`s a child (with `set_tid`, to give it a chosen PID), runs a preparation
//! closure in it (creating the husks of its own children, opening descriptors, setting the cwd
//! and signal dispositions: things a process does most cheaply for itself), then the child
//! reports on its status pipe (its PID, or what failed) and waits. [`await_ready`] reads the
//! report, [`seize`] takes the husk; from then on it is driven from outside with remote
//! syscalls. [`spawn`] is the three for one husk. A husk of a process tree is created by the
//! husk of its parent, so parent and child links are the saved ones; [`create_zombie`] makes a
//! child that ends at once with a saved wait status.
//!
//! # Safety
//! `clone3` is called while the calling process is single-threaded (cr_restart is, and so is
//! every husk), so the child may use the allocator and std. After a raw `clone3` glibc's cached thread id is
//! stale, so the child calls no pthread functions: it signals itself with raw `kill(getpid())`.
#![allow(unsafe_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{TraceError, Tracee};

/// Why a husk could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The PID asked for is taken.
    #[error("PID {0} is in use (try --no-restore-pid)")]
    PidInUse(i32),
    /// Choosing a PID needs privilege.
    #[error("restoring PID {0} needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE (try --no-restore-pid)")]
    PidNeedsPrivilege(i32),
    /// The child's preparation failed.
    #[error("{0}")]
    Prepare(String),
    /// A syscall failed.
    #[error(transparent)]
    Trace(#[from] TraceError),
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), TraceError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(TraceError::sys("pipe2"));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Creates a husk with PID `pid` (or any PID) and runs `prepare` in it; returns it seized and
/// stopped (with `PTRACE_O_EXITKILL`, so it dies if the caller dies before detaching).
///
/// `prepare` gets the number of the child's status pipe and returns the number it moved it to
/// (the preparation may rearrange descriptors); a failure says where the pipe is by then, so
/// the message reaches the parent. On success the child reports through that
/// pipe, closes it and waits in `pause()` with every signal blocked; the parent then seizes and
/// interrupts it. `PR_SET_PDEATHSIG` kills it should the caller die before that.
pub fn spawn<F: FnOnce(i32) -> Result<i32, (i32, String)>>(pid: Option<i32>, prepare: F) -> Result<Tracee, SpawnError> {
    let (rd, wr) = pipe()?;
    let child = create(pid, wr.as_raw_fd(), prepare)?;
    drop(wr);
    let child = await_ready(rd, child)?;
    seize(child)
}

/// A status pipe for a husk that [`create`] will make (possibly inside another husk): the
/// caller keeps the read end for [`await_ready`], the write end is inherited down to the husk.
pub fn status_pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    Ok(pipe()?)
}

/// Forks (or `clone3`s with PID `pid`) a husk that runs `prepare`, reports on `status_fd` and
/// waits; returns its PID at once. Callable in a husk, to create the husks of its children.
pub fn create<F: FnOnce(i32) -> Result<i32, (i32, String)>>(pid: Option<i32>, status_fd: i32, prepare: F) -> Result<i32, SpawnError> {
    let parent = std::process::id() as i32;
    let child = fork_with_pid(pid)?;
    if child == 0 {
        child_main(status_fd, parent, prepare);
    }
    Ok(child)
}

/// Like [`create`], but the husk shares the caller's descriptor table (`CLONE_FILES`), as the
/// process it stands for shared its parent's. Returns once the husk's `prepare` has ended, well
/// or not (or the husk died), so that the two never change the table they share at once.
/// `above`: the lowest number for the two descriptors used to wait, above every number either
/// places.
pub fn create_sharing_files<F: FnOnce(i32) -> Result<i32, (i32, String)>>(pid: Option<i32>, status_fd: i32, above: i32, prepare: F) -> Result<i32, SpawnError> {
    let (rd, wr) = pipe()?;
    let rd = crate::sys::dup_above(rd.as_raw_fd(), above).map_err(|err| TraceError::Sys { what: "moving a descriptor".into(), err })?;
    let wr = crate::sys::dup_above(wr.as_raw_fd(), above).map_err(|err| TraceError::Sys { what: "moving a descriptor".into(), err })?;
    let w = wr.as_raw_fd();
    let parent = std::process::id() as i32;
    let child = fork_with(pid, libc::CLONE_FILES as u64)?;
    if child == 0 {
        child_main(status_fd, parent, move |fd| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(fd)));
            // SAFETY: w is the write end of the pipe, open in the table shared with the parent;
            // the byte is a live one-byte buffer.
            unsafe { libc::write(w, [1u8].as_ptr().cast(), 1) };
            r.unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
    }
    let mut fds = [libc::pollfd { fd: rd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
    loop {
        // SAFETY: fds is a live array of one pollfd.
        if unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) } > 0 {
            break;
        }
        // SAFETY: siginfo_t is plain data; zeroed is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is a live siginfo_t the kernel fills; WNOWAIT leaves a husk that died
        // to be reaped as any other.
        let r = unsafe { libc::waitid(libc::P_PID, child as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        // SAFETY: si_pid is set by waitid (0 while the child runs).
        if r == -1 || unsafe { info.si_pid() } != 0 {
            break;
        }
    }
    Ok(child)
}

/// Forks (or `clone3`s with PID `pid`) a child that becomes a zombie at once: it runs
/// `before` (joining its process group), then exits with the wait status `status` (an exit
/// code, or death by a signal, without a core dump).
pub fn create_zombie<F: FnOnce()>(pid: Option<i32>, status: i32, before: F) -> Result<i32, SpawnError> {
    let child = fork_with_pid(pid)?;
    if child == 0 {
        before();
        let sig = status & 0x7f;
        if sig != 0 {
            // SAFETY: plain syscalls with integer arguments, or a zeroed rlimit and sigset on
            // the stack; nothing here returns into Rust code that could observe the state.
            unsafe {
                let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                libc::signal(sig, libc::SIG_DFL);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, sig);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::syscall(libc::SYS_kill, libc::syscall(libc::SYS_getpid), sig);
            }
        }
        // SAFETY: _exit never returns.
        unsafe { libc::_exit((status >> 8) & 0xff) };
    }
    Ok(child)
}

/// Waits until a husk has reported on the pipe whose read end is `rd`; returns its PID (which
/// it reports itself: it may be a grandchild).
pub fn await_ready(rd: OwnedFd, child: i32) -> Result<i32, SpawnError> {
    let mut msg = Vec::new();
    let _ = std::fs::File::from(rd).read_to_end(&mut msg);
    if msg.len() == 5 && msg[0] == 0 {
        return Ok(i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]));
    }
    let mut how = String::new();
    if child > 0 {
        let mut status = 0;
        // SAFETY: status is a valid out pointer. The husk failed and exits; a husk that is not
        // our child (a grandchild) makes waitpid fail at once with ECHILD.
        if unsafe { libc::waitpid(child, &mut status, 0) } == child {
            how = if libc::WIFSIGNALED(status) { format!("killed by signal {}", libc::WTERMSIG(status)) } else { format!("exit status {}", libc::WEXITSTATUS(status)) };
        }
    }
    let text = String::from_utf8_lossy(&msg).trim_start_matches('\0').to_string();
    Err(SpawnError::Prepare(if text.is_empty() { format!("the restore process died while being prepared{}", if how.is_empty() { String::new() } else { format!(" ({how})") }) } else { text }))
}

/// Seizes a husk that has reported ready and stops it.
pub fn seize(pid: i32) -> Result<Tracee, SpawnError> {
    let t = Tracee::seize_with(pid, libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACECLONE)?;
    t.interrupt()?;
    t.wait_event()?;
    Ok(t)
}

/// A raw `clone3` (no C library `fork`: in a husk made by `clone3` the library's idea of the
/// current thread is stale), with `set_tid` when a PID is wanted.
fn fork_with_pid(pid: Option<i32>) -> Result<i32, SpawnError> {
    fork_with(pid, 0)
}

/// [`fork_with_pid`] with clone flags (only `CLONE_FILES` is asked for).
fn fork_with(pid: Option<i32>, flags: u64) -> Result<i32, SpawnError> {
    let tid = pid.unwrap_or(0);
    let mut args = CloneArgs { flags, exit_signal: libc::SIGCHLD as u64, ..Default::default() };
    if pid.is_some() {
        args.set_tid = &tid as *const i32 as u64;
        args.set_tid_size = 1;
    }
    // SAFETY: args is a live clone_args of the size passed (and set_tid points at a live i32);
    // no CLONE_VM, so the child gets its own copy of memory, as with fork (with CLONE_FILES it
    // shares the descriptor table, which no Rust object of the caller owns as a whole).
    let r = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if r == -1 {
        let err = std::io::Error::last_os_error();
        return Err(match (pid, err.raw_os_error()) {
            (Some(want), Some(libc::EEXIST)) => SpawnError::PidInUse(want),
            (Some(want), Some(libc::EPERM)) => SpawnError::PidNeedsPrivilege(want),
            (Some(want), _) => TraceError::Sys { what: format!("clone3 with PID {want}"), err }.into(),
            (None, _) => TraceError::Sys { what: "clone3".into(), err }.into(),
        });
    }
    Ok(r as i32)
}

fn child_main<F: FnOnce(i32) -> Result<i32, (i32, String)>>(fd: i32, parent: i32, prepare: F) -> ! {
    // SAFETY: plain prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // A cr_restart that got capabilities from its file is not dumpable, and neither would be
    // its child: then its own user could neither trace it here nor checkpoint it later.
    // SAFETY: plain prctl with integer arguments; any process may make itself dumpable.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1) };
    // A parent that died before the line above sends no signal: the child would wait in
    // pause() for ever.
    // SAFETY: getppid and _exit take no pointers.
    unsafe {
        if libc::getppid() != parent {
            libc::_exit(127);
        }
    }
    crate::sys::block_all_signals();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(fd)));
    let (fd, msg) = match result {
        Ok(Ok(fd)) => {
            // SAFETY: getpid takes no arguments (raw: after clone3 the C library's idea of
            // the process may be stale).
            let me = unsafe { libc::syscall(libc::SYS_getpid) } as i32;
            let mut m = vec![0u8];
            m.extend_from_slice(&me.to_le_bytes());
            (fd, m)
        }
        Ok(Err((at, m))) => (at, m.into_bytes()),
        Err(_) => (fd, b"internal error while preparing the restore process".to_vec()),
    };
    // SAFETY: fd is our status pipe (moved by prepare to the number it returned); msg is live.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
        libc::close(fd);
    }
    if msg.first() != Some(&0) {
        // SAFETY: _exit never returns.
        unsafe { libc::_exit(127) };
    }
    loop {
        // SAFETY: pause takes no arguments; every signal is blocked, so only the tracer or
        // SIGKILL ends it.
        unsafe { libc::syscall(libc::SYS_pause) };
    }
}

/// `setsid()` in the calling husk: a new session and process group led by it.
pub fn setsid() -> std::io::Result<()> {
    // SAFETY: no arguments.
    if unsafe { libc::setsid() } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `setpgid(pid, pgid)` (0 for the caller, 0 for a group of its own).
pub fn setpgid(pid: i32, pgid: i32) -> std::io::Result<()> {
    // SAFETY: integer arguments only.
    if unsafe { libc::setpgid(pid, pgid) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The process group and session of the caller.
pub fn group_and_session() -> (i32, i32) {
    // SAFETY: integer arguments only.
    unsafe { (libc::getpgid(0), libc::getsid(0)) }
}

/// Waits until the child `pid` has exited, without reaping it (it stays a zombie), then
/// takes back the SIGCHLD that its end queued for the caller (which has signals blocked), so
/// that the restored process does not get a signal it had not had.
pub fn await_zombie(pid: i32) -> std::io::Result<()> {
    // SAFETY: siginfo_t is plain data; zeroed is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: info is a live siginfo_t the kernel fills.
    if unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: set is a zeroed sigset the calls fill; the zero timeout never blocks.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGCHLD {}
    }
    Ok(())
}
