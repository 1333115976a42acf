//! The husk: the process a restore fills.
//!
//! [`spawn`] forks (or `clone3`s with `set_tid`, to give the child a chosen PID), runs a
//! preparation closure in the child (opening descriptors, setting the cwd and signal
//! dispositions: things a process does most cheaply for itself), then the child asks to be
//! traced and stops itself. From then on the parent drives it from outside with remote syscalls.
//! If the preparation fails, the child sends the message through a pipe and exits.
//!
//! # Safety
//! `fork`/`clone3` are called while the calling process is single-threaded (cr_restart is),
//! so the child may use the allocator and std. After a raw `clone3` glibc's cached thread id is
//! stale, so the child calls no pthread functions: it signals itself with raw `kill(getpid())`.
#![allow(unsafe_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{Tracee, TraceError};

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
    let parent = std::process::id() as i32;
    let child = match pid {
        Some(want) => {
            let tid = want;
            let args = CloneArgs { exit_signal: libc::SIGCHLD as u64, set_tid: &tid as *const i32 as u64, set_tid_size: 1, ..Default::default() };
            // SAFETY: args is a live clone_args of the size passed; no CLONE_VM, so the child
            // gets its own copy of memory, as with fork.
            let r = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
            if r == -1 {
                let err = std::io::Error::last_os_error();
                return Err(match err.raw_os_error() {
                    Some(libc::EEXIST) => SpawnError::PidInUse(want),
                    Some(libc::EPERM) => SpawnError::PidNeedsPrivilege(want),
                    _ => TraceError::Sys { what: format!("clone3 with PID {want}"), err }.into(),
                });
            }
            r as i32
        }
        None => {
            // SAFETY: the caller is single-threaded (module invariant).
            let r = unsafe { libc::fork() };
            if r == -1 {
                return Err(TraceError::sys("fork").into());
            }
            r
        }
    };
    if child == 0 {
        drop(rd);
        child_main(wr, parent, prepare);
    }
    drop(wr);
    let mut msg = Vec::new();
    let _ = std::fs::File::from(rd).read_to_end(&mut msg);
    if msg != [0] {
        let mut status = 0;
        // SAFETY: status is a valid out pointer; child is our child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        let text = String::from_utf8_lossy(&msg).trim_start_matches('\0').to_string();
        let how = if libc::WIFSIGNALED(status) { format!("killed by signal {}", libc::WTERMSIG(status)) } else { format!("exit status {}", libc::WEXITSTATUS(status)) };
        return Err(SpawnError::Prepare(if text.is_empty() { format!("the restore process died while being prepared ({how})") } else { text }));
    }
    let t = Tracee::seize_with(child, libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACECLONE)?;
    t.interrupt()?;
    t.wait_event()?;
    Ok(t)
}

fn child_main<F: FnOnce(i32) -> Result<i32, (i32, String)>>(wr: OwnedFd, parent: i32, prepare: F) -> ! {
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
    let fd = wr.as_raw_fd();
    std::mem::forget(wr);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(fd)));
    let (fd, msg) = match result {
        Ok(Ok(fd)) => (fd, vec![0u8]),
        Ok(Err((at, m))) => (at, m.into_bytes()),
        Err(_) => (fd, b"internal error while preparing the restore process".to_vec()),
    };
    // SAFETY: fd is our status pipe (moved by prepare to the number it returned); msg is live.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
        libc::close(fd);
    }
    if msg != [0] {
        // SAFETY: _exit never returns.
        unsafe { libc::_exit(127) };
    }
    loop {
        // SAFETY: pause takes no arguments; every signal is blocked, so only the tracer or
        // SIGKILL ends it.
        unsafe { libc::syscall(libc::SYS_pause) };
    }
}
