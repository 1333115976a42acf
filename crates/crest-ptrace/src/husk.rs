//! The husk: the process a restore fills.
//!
//! [`create`] `clone3`s a child (with `set_tid`, to give it a chosen PID), runs a preparation
//! closure in it (creating the husks of its own children, opening descriptors, setting the cwd
//! and signal dispositions: things a process does most cheaply for itself), then the child
//! reports on its status pipe (its PID, or what failed) and waits. [`await_ready`] reads the
//! report, [`seize`] takes the husk; from then on it is driven from outside with remote
//! syscalls. [`spawn`] is the three for one husk. A husk of a process tree is created by the
//! husk of its parent, so parent and child links are the saved ones; [`create_zombie`] makes a
//! child that ends at once with a saved wait status. In a deep tree the husks fork from memory
//! with a short history ([`fresh_memory`]), so that a fork costs the same at any depth.
//!
//! # Safety
//! `clone3` is only ever called by a single-threaded process, so the child may use the
//! allocator and std (a lock another thread held at the fork would stay held in the child for
//! ever). [`create`] sees to it itself: in a caller with other threads (a program using the
//! library, a test harness) it forks a single-threaded intermediate first with the C library's
//! `fork` (which leaves the allocator consistent in the child), and that one `clone3`s the husk
//! with `CLONE_PARENT`, so the husk is the caller's child all the same. The creators that only
//! run inside a husk refuse a caller with threads ([`SpawnError::Threaded`]). After a raw `clone3` glibc's cached thread id is
//! stale, so the child calls no pthread functions: it signals itself with raw `kill(getpid())`.
//! [`fresh_memory`] and a husk's `refresh` map private memory of the process again, in place,
//! with the same contents: single-threaded, with signals blocked, and touching nothing but the
//! stack and a scratch mapping while a region holds older contents.
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
    /// A creator that runs only in a single-threaded process was called by one with threads.
    #[error("this process has {0} threads: a restore process is forked only by a single-threaded one")]
    Threaded(usize),
}

/// The number of threads of the calling process.
pub fn threads_here() -> usize {
    // num_threads is the 20th field of /proc/self/stat, the 18th after the command's ')'.
    std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(17)?.parse().ok())).unwrap_or(usize::MAX)
}

/// The number of threads of the calling process, known without reading `/proc` in a husk
/// (which never has more than one while it is prepared): a husk asks before each fork, and
/// every level of a tree waits for its parent's.
fn threads_now() -> usize {
    if IN_HUSK.load(std::sync::atomic::Ordering::Relaxed) {
        1
    } else {
        threads_here()
    }
}

/// Refuses a caller with threads other than the calling one.
fn single_threaded() -> Result<(), SpawnError> {
    match threads_now() {
        1 => Ok(()),
        n => Err(SpawnError::Threaded(n)),
    }
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
/// In a caller with threads, the husk is made by a single-threaded intermediate (see the
/// module's safety note); it is the caller's child all the same.
pub fn create<F: FnOnce(i32) -> Result<i32, (i32, String)>>(pid: Option<i32>, status_fd: i32, prepare: F) -> Result<i32, SpawnError> {
    let parent = std::process::id() as i32;
    if threads_now() != 1 {
        return create_through_intermediate(pid, status_fd, parent, prepare);
    }
    let child = fork_with_pid(pid)?;
    if child == 0 {
        child_main(status_fd, parent, prepare);
    }
    Ok(child)
}

/// [`create`] for a caller with threads: a single-threaded intermediate, forked by the C
/// library, `clone3`s the husk as a sibling of its own (`CLONE_PARENT`: the caller's child),
/// reports its PID or what failed on a pipe, and exits; the caller reaps it.
fn create_through_intermediate<F: FnOnce(i32) -> Result<i32, (i32, String)>>(pid: Option<i32>, status_fd: i32, parent: i32, prepare: F) -> Result<i32, SpawnError> {
    let (rd, wr) = pipe()?;
    // SAFETY: the C library's fork takes the allocator's locks around the fork, so the child,
    // which has this one thread only, may allocate; it runs the clone below and exits.
    let forker = unsafe { libc::fork() };
    if forker == -1 {
        return Err(TraceError::sys("fork").into());
    }
    if forker == 0 {
        drop(rd);
        let (tag, text) = match fork_with(pid, libc::CLONE_PARENT as u64) {
            Ok(0) => {
                drop(wr);
                child_main(status_fd, parent, prepare)
            }
            Ok(child) => (0u8, child.to_string()),
            Err(SpawnError::PidInUse(p)) => (1, p.to_string()),
            Err(SpawnError::PidNeedsPrivilege(p)) => (2, p.to_string()),
            Err(e) => (3, e.to_string()),
        };
        let mut msg = vec![tag];
        msg.extend_from_slice(text.as_bytes());
        // SAFETY: wr is the pipe's write end; msg is live. _exit never returns and runs no
        // destructor or exit handler of the caller's copy.
        unsafe {
            libc::write(wr.as_raw_fd(), msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    drop(wr);
    let mut msg = Vec::new();
    let _ = std::fs::File::from(rd).read_to_end(&mut msg);
    let mut status = 0;
    // SAFETY: status is a live out pointer; forker is our child, not reaped yet.
    unsafe { libc::waitpid(forker, &mut status, 0) };
    let text = String::from_utf8_lossy(msg.get(1..).unwrap_or_default()).into_owned();
    match (msg.first(), text.parse::<i32>()) {
        (Some(0), Ok(child)) => Ok(child),
        (Some(1), Ok(p)) => Err(SpawnError::PidInUse(p)),
        (Some(2), Ok(p)) => Err(SpawnError::PidNeedsPrivilege(p)),
        (Some(3), _) => Err(SpawnError::Prepare(text)),
        _ => Err(SpawnError::Prepare(format!("the process that forks the restore process ended without a word (wait status {status:#x})"))),
    }
}

/// Like [`create`], but the husk shares the caller's descriptor table (`CLONE_FILES`), as the
/// process it stands for shared its parent's. Returns once the husk's `prepare` has ended, well
/// or not (or the husk died), so that the two never change the table they share at once.
/// `above`: the lowest number for the two descriptors used to wait, above every number either
/// places.
pub fn create_sharing_files<F: FnOnce(i32) -> Result<i32, (i32, String)>>(pid: Option<i32>, status_fd: i32, above: i32, prepare: F) -> Result<i32, SpawnError> {
    single_threaded()?;
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
    single_threaded()?;
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

/// Forks (or `clone3`s with PID `pid`) the stand-in leader of a process group whose leader has
/// ended: it makes the group (the caller makes it too, so that the group exists once this
/// returns) and waits, all signals blocked as the caller's are, until [`end_standin`] kills it.
pub fn create_standin(pid: Option<i32>) -> Result<i32, SpawnError> {
    single_threaded()?;
    let child = fork_with_pid(pid)?;
    if child == 0 {
        // SAFETY: integer arguments only; pause returns only for a signal, and SIGKILL (the
        // one that ends it) cannot be blocked.
        unsafe {
            libc::setpgid(0, 0);
            loop {
                libc::pause();
            }
        }
    }
    if let Err(e) = setpgid(child, child) {
        if group_of(child) != Some(child) {
            end_standin(child);
            return Err(SpawnError::Prepare(format!("making process group {child} around its stand-in leader: {e}")));
        }
    }
    Ok(child)
}

/// The process group of `pid`.
fn group_of(pid: i32) -> Option<i32> {
    // SAFETY: integer argument only.
    let g = unsafe { libc::getpgid(pid) };
    (g >= 0).then_some(g)
}

/// Ends and reaps a stand-in leader ([`create_standin`]) once the members of its group have
/// joined it, then takes back the SIGCHLD that its end queued for the caller (which has signals
/// blocked), so that the process being restored does not find it pending.
pub fn end_standin(pid: i32) {
    // SAFETY: integer arguments, a live status out pointer and a zeroed sigset the calls fill;
    // the zero timeout never blocks. `pid` is the caller's own child, not reaped yet.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        while libc::sigtimedwait(&set, std::ptr::null_mut(), &zero) == libc::SIGCHLD {}
    }
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
    // No PTRACE_O_TRACECLONE: the threads of a husk are made with CLONE_PTRACE, traced from
    // birth without stopping the thread that makes them.
    let t = Tracee::seize_with(pid, libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACESYSGOOD)?;
    t.interrupt()?;
    t.wait_event()?;
    Ok(t)
}

/// A raw `clone3` (no C library `fork`: in a husk made by `clone3` the library's idea of the
/// current thread is stale), with `set_tid` when a PID is wanted.
fn fork_with_pid(pid: Option<i32>) -> Result<i32, SpawnError> {
    fork_with(pid, 0)
}

/// [`fork_with_pid`] with clone flags (only `CLONE_FILES` and `CLONE_PARENT` are asked for).
fn fork_with(pid: Option<i32>, flags: u64) -> Result<i32, SpawnError> {
    let tid = pid.unwrap_or(0);
    // With CLONE_PARENT the kernel takes the caller's own exit signal (SIGCHLD: it was forked),
    // and refuses one given.
    let exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 { 0 } else { libc::SIGCHLD as u64 };
    let mut args = CloneArgs { flags, exit_signal, ..Default::default() };
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
    IN_HUSK.store(true, std::sync::atomic::Ordering::Relaxed);
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
    if !refresh_memory() {
        let msg = b"the restore process could not map its copy of cr_restart's memory again";
        // SAFETY: fd is the status pipe; msg is a static. The memory may be half replaced:
        // nothing else runs before _exit.
        unsafe {
            libc::write(fd, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    }
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

/// In a husk, once it is prepared: maps the area its tracer runs batches of syscalls from
/// ([`crate::Remote::adopt_batch`]), [`crate::BATCH_LEN`] bytes at `at` (only if that range is
/// free), its code written and made read and execute; the tracer then needs no calls of its
/// own to map it. Returns whether it is there.
pub fn map_batch_area(at: u64) -> bool {
    let len = crate::BATCH_LEN as usize;
    let code = &crate::remote::BATCH_CODE;
    // SAFETY: MAP_FIXED_NOREPLACE maps nothing over an existing mapping (it fails instead); the
    // copy writes the code into the first page of the fresh mapping, which is writable and
    // holds no value of this process; the last calls change only that mapping.
    unsafe {
        let m = libc::mmap(at as *mut libc::c_void, len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE, -1, 0);
        if m == libc::MAP_FAILED {
            return false;
        }
        if m as u64 != at {
            libc::munmap(m, len);
            return false;
        }
        std::ptr::copy_nonoverlapping(code.as_ptr(), m.cast::<u8>(), code.len());
        if libc::mprotect(m, 4096, libc::PROT_READ | libc::PROT_EXEC) != 0 {
            libc::munmap(m, len);
            return false;
        }
    }
    true
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

/// Set in a husk (by [`create`], in the child) before it runs its preparation.
static IN_HUSK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The descriptor table of a husk, which its preparation arranges number by number: it is to
/// become the restored process's, and no object of the restorer that owned a descriptor in it
/// runs on in the husk (the frames that hold them never resume there). The calls that put a
/// descriptor at a number, closing what was there, or close numbers outright are methods of
/// this, which only a husk can have ([`fd_table`]); elsewhere descriptors are closed by
/// dropping their owners. The preparation must not hold an owned descriptor (`OwnedFd`,
/// `File`) at a number it closes or writes over.
#[derive(Debug, Clone, Copy)]
pub struct FdTable(());

/// The descriptor table of this process if it is a husk (see [`FdTable`]).
pub fn fd_table() -> Option<FdTable> {
    IN_HUSK.load(std::sync::atomic::Ordering::Relaxed).then_some(FdTable(()))
}

impl FdTable {
    /// `dup3(old, new, flags)`: a copy of `old` at `new`, whatever was at `new` closed.
    pub fn dup3(self, old: i32, new: i32, cloexec: bool) -> std::io::Result<()> {
        // SAFETY: no pointers; `new` is a number of the husk's table (see FdTable).
        if unsafe { libc::dup3(old, new, if cloexec { libc::O_CLOEXEC } else { 0 }) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// `dup2(old, new)`, a no-op when equal.
    pub fn dup2(self, old: i32, new: i32) -> std::io::Result<()> {
        // SAFETY: no pointers; `new` is a number of the husk's table (see FdTable).
        if unsafe { libc::dup2(old, new) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Closes every descriptor from `first` to `last` (inclusive) but those in `keep`, with one
    /// `close_range` per run of numbers between kept ones: no listing of /proc/self/fd, whose
    /// cost grows with the number of descriptors open.
    pub fn close_all_but(self, first: i32, last: i32, keep: &[i32]) {
        let mut kept: Vec<i32> = keep.iter().copied().filter(|&k| k >= first && k <= last).collect();
        kept.sort_unstable();
        kept.dedup();
        let mut from = first.max(0);
        for k in kept.into_iter().chain(std::iter::once(last.saturating_add(1))) {
            if k > from {
                // SAFETY: no pointers; numbers of the husk's table (see FdTable).
                unsafe { libc::syscall(libc::SYS_close_range, from as libc::c_uint, (k - 1) as libc::c_uint, 0 as libc::c_uint) };
            }
            from = from.max(k.saturating_add(1));
        }
    }
}

/// A region of `cr_restart`'s memory mapped privately from a memfd that holds its contents as
/// they were when [`fresh_memory`] copied them.
#[derive(Clone, Copy, Default)]
struct Region {
    start: u64,
    end: u64,
    prot: i32,
    fd: i32,
}

/// The regions of [`fresh_memory`], read by the husks (inherited through the forks).
static FRESH: std::sync::Mutex<Vec<Region>> = std::sync::Mutex::new(Vec::new());

/// How deep a husk is in the tree: 0 in `cr_restart`, 1 in the husks it forks, ...
static DEPTH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Every this many levels of the tree a husk maps its memory again without history (see
/// [`fresh_memory`]): a husk's private mappings then descend from at most this many
/// ancestors. Doing it costs a husk about as much as forking at a depth of 15 to 25 with the
/// whole history; every 5 levels the two costs together are lowest.
pub const FRESH_EVERY: usize = 5;

/// At most this many regions are kept (a process has a few dozen mappings).
const MAX_FRESH: usize = 256;

/// The memfds behind `cr_restart`'s memory while husks are created; dropping it ends that
/// (the mappings stay, and the husks have their own copies of the descriptors).
pub struct FreshMemory {
    fds: Vec<OwnedFd>,
}

impl Drop for FreshMemory {
    fn drop(&mut self) {
        if let Ok(mut f) = FRESH.lock() {
            f.clear();
        }
        self.fds.clear();
    }
}

/// A mapping of `/proc/self/smaps` that may be copied: private, readable, none of the kernel's
/// special areas nor the stack (the code runs on it), copied into children (no `dc`, `wf`),
/// outside `keep`, and holding or able to hold pages of its own (writable, or with anonymous
/// pages: relocated read-only data). Returns (start, end, `PROT_*`) of each.
fn copyable(text: &str, keep: &[(u64, u64)]) -> Vec<(u64, u64, i32)> {
    struct Map {
        start: u64,
        end: u64,
        prot: i32,
        ok: bool,
        anon: bool,
    }
    let mut out: Vec<Map> = Vec::new();
    for line in text.lines() {
        if let Some(kb) = line.strip_prefix("Anonymous:") {
            if let Some(last) = out.last_mut() {
                last.anon = kb.trim().trim_end_matches("kB").trim() != "0";
            }
            continue;
        }
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(last) = out.last_mut() {
                last.ok &= !flags.split_whitespace().any(|f| f == "dc" || f == "wf");
            }
            continue;
        }
        let mut it = line.split_whitespace();
        let Some((a, b)) = it.next().and_then(|r| r.split_once('-')) else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
        let perms = it.next().unwrap_or("").as_bytes();
        if perms.len() < 4 {
            continue;
        }
        let prot = if perms[0] == b'r' { libc::PROT_READ } else { 0 } | if perms[1] == b'w' { libc::PROT_WRITE } else { 0 } | if perms[2] == b'x' { libc::PROT_EXEC } else { 0 };
        let name = it.nth(3).unwrap_or("");
        let ok = perms[3] == b'p' && prot & libc::PROT_READ != 0 && (!name.starts_with('[') || name == "[heap]") && !keep.iter().any(|&(s, e)| start < e && s < end);
        out.push(Map { start, end, prot, ok, anon: name.is_empty() });
    }
    out.into_iter().filter(|m| m.ok && (m.anon || m.prot & libc::PROT_WRITE != 0)).map(|m| (m.start, m.end, m.prot)).collect()
}

/// Makes `cr_restart`'s memory cheap to fork from, for the husks of a deep tree.
///
/// A fork copies, for each private mapping with anonymous pages, the chain of anon_vmas of
/// every process it descends from: a husk is forked by its parent's husk, so in a tree `d`
/// deep the fork of the deepest costs `d` times the number of such mappings, the whole tree
/// `d²` (and the husks' unmapping of them when they are filled, again). Here each private
/// mapping of this process but the stack is copied once into a memfd and mapped privately
/// from it in place: a file mapping with no anonymous pages, whose forks chain nothing. Every
/// [`FRESH_EVERY`] levels a husk, as it starts ([`create`]), maps these memfds again over its
/// own memory with only the pages written since (by its ancestors or itself) copied over: a
/// mapping with no history, so that no fork is more than [`FRESH_EVERY`] levels from one.
/// `keep`: ranges left alone (mappings whose pages are shared with the husks on purpose);
/// descriptors go at `above` or higher.
///
/// Does nothing (`None`) unless the caller is single-threaded: the mappings are replaced under
/// it (with signals blocked).
pub fn fresh_memory(above: i32, keep: &[(u64, u64)]) -> Result<Option<FreshMemory>, TraceError> {
    let read = |path: &str| std::fs::read_to_string(path).map_err(|err| TraceError::Sys { what: format!("reading {path}"), err });
    if read("/proc/self/status")?.lines().any(|l| l.starts_with("Threads:") && l.split_whitespace().nth(1) != Some("1")) {
        return Ok(None);
    }
    let mut wanted = copyable(&read("/proc/self/smaps")?, keep);
    wanted.truncate(MAX_FRESH);
    let mut fds = Vec::with_capacity(wanted.len());
    let mut regions = Vec::with_capacity(wanted.len());
    let old = sigmask(!0);
    let result = (|| -> Result<(), TraceError> {
        for &(start, end, prot) in &wanted {
            let len = (end - start) as usize;
            let fd = crate::sys::memfd("crest-husk", len as u64).map_err(|err| TraceError::Sys { what: "creating a memfd for the restart's memory".into(), err })?;
            let fd = crate::sys::dup_above(fd.as_raw_fd(), above).map_err(|err| TraceError::Sys { what: "moving a descriptor".into(), err })?;
            let mut done = 0;
            while done < len {
                // SAFETY: the range is a readable mapping of this process (from smaps, and
                // nothing has unmapped it since: one thread, signals blocked).
                let n = unsafe { libc::pwrite(fd.as_raw_fd(), (start as usize + done) as *const libc::c_void, len - done, done as libc::off_t) };
                if n <= 0 {
                    return Err(TraceError::sys(format!("copying the restart's memory at {start:#x}")));
                }
                done += n as usize;
            }
            // SAFETY: the memfd holds exactly the bytes of the range, copied just above with no
            // write to the range since (the code above writes only to the stack, which is not
            // among the ranges): every value living there reads the same after the call.
            let r = unsafe { libc::mmap(start as *mut libc::c_void, len, prot, libc::MAP_PRIVATE | libc::MAP_FIXED, fd.as_raw_fd(), 0) };
            if r as u64 != start {
                return Err(TraceError::sys(format!("mapping the restart's memory at {start:#x} from its copy")));
            }
            regions.push(Region { start, end, prot, fd: fd.as_raw_fd() });
            fds.push(fd);
        }
        Ok(())
    })();
    sigmask(old);
    result?;
    let mut f = FRESH.lock().map_err(|_| TraceError::Sys { what: "the restart's memory copies".into(), err: std::io::Error::from_raw_os_error(libc::EDEADLK) })?;
    *f = regions;
    Ok(Some(FreshMemory { fds }))
}

/// Sets the caller's signal mask; returns the old one.
fn sigmask(set: u64) -> u64 {
    let mut old: u64 = 0;
    // SAFETY: valid 8-byte masks; sigsetsize 8.
    unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &set as *const u64, &mut old as *mut u64, 8) };
    old
}

/// In a husk as it starts: one level deeper; every [`FRESH_EVERY`] levels, maps the regions of
/// [`fresh_memory`] again without history. Returns false when that failed halfway; the husk
/// must then end at once (its memory may not hold what it held).
fn refresh_memory() -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let depth = DEPTH.fetch_add(1, Relaxed) + 1;
    if !depth.is_multiple_of(FRESH_EVERY) {
        return true;
    }
    // What the loop below reads while a region is replaced lives on the stack.
    let mut regions = [Region::default(); MAX_FRESH];
    let n = match FRESH.lock() {
        Ok(f) if !f.is_empty() && f.len() <= MAX_FRESH => {
            regions[..f.len()].copy_from_slice(&f);
            f.len()
        }
        _ => return true,
    };
    // SAFETY: a C string literal.
    let pagemap = unsafe { libc::open(c"/proc/self/pagemap".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if pagemap < 0 {
        return true;
    }
    let ok = refresh(pagemap, &regions[..n]);
    // SAFETY: our own descriptor.
    unsafe { libc::close(pagemap) };
    ok
}

/// Maps `regions` again from their memfds, with the pages that are not the files' (written
/// since) copied over.
fn refresh(pagemap: i32, regions: &[Region]) -> bool {
    const PAGE: usize = 4096;
    let table = |r: &Region| ((r.end - r.start) as usize / PAGE * 8).next_multiple_of(PAGE);
    // Scratch memory: for each region, the entries of its pages in /proc/self/pagemap, then
    // room for all its pages.
    let total: usize = regions.iter().map(|r| table(r) + (r.end - r.start) as usize).sum();
    // SAFETY: a fresh anonymous mapping where the kernel likes.
    let tmp = unsafe { libc::mmap(std::ptr::null_mut(), total, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0) };
    if tmp == libc::MAP_FAILED {
        return false;
    }
    let mut kept = [0usize; MAX_FRESH];
    let mut ok = true;
    // First the pages of their own (present and not the file's, or swapped out) of every
    // region, packed in its room, each one's index noted over the entries read already. A
    // page not mapped here any more reads as absent, and is the memfd's again.
    let mut at = tmp as usize;
    for (r, kept) in regions.iter().zip(kept.iter_mut()) {
        let (start, pages) = (r.start as usize, (r.end - r.start) as usize / PAGE);
        // SAFETY: the region's entries go to the scratch mapping, which has room for them.
        let got = unsafe { libc::pread(pagemap, at as *mut libc::c_void, pages * 8, (start / PAGE * 8) as libc::off_t) };
        if got != (pages * 8) as isize {
            ok = false;
            break;
        }
        // SAFETY: the scratch mapping holds `pages` entries there, read just above; nothing
        // else refers to it.
        let entries = unsafe { std::slice::from_raw_parts_mut(at as *mut u64, pages) };
        let copy = at + table(r);
        for k in 0..pages {
            let e = entries[k];
            let (present, file, swapped) = ((e >> 63) & 1 == 1, (e >> 61) & 1 == 1, (e >> 62) & 1 == 1);
            if (present && !file) || swapped {
                // SAFETY: a page of the region, mapped and readable (present or swapped), to
                // the scratch mapping; they do not overlap.
                unsafe { std::ptr::copy_nonoverlapping((start + k * PAGE) as *const u8, (copy + *kept * PAGE) as *mut u8, PAGE) };
                entries[*kept] = k as u64;
                *kept += 1;
            }
        }
        at = copy + pages * PAGE;
    }
    // Then each region that has pages of its own (one that has none has been written by no
    // ancestor since the last time: it has no history) is mapped again and they are put back.
    let mut at = tmp as usize;
    for (r, &kept) in regions.iter().zip(kept.iter()) {
        let (start, len) = (r.start as usize, (r.end - r.start) as usize);
        let copy = at + table(r);
        let entries = at as *const u64;
        at = copy + len;
        if !ok || kept == 0 {
            continue;
        }
        // From here until the pages are copied back the region holds the memfd's contents:
        // nothing below touches memory but the stack and the scratch mapping.
        // SAFETY: the region gets the same bytes back: the memfd's (what it held when they
        // were copied there), then every page written since, put back below.
        let m = unsafe { libc::mmap(start as *mut libc::c_void, len, r.prot | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_FIXED, r.fd, 0) };
        if m as usize != start {
            ok = false;
            continue;
        }
        for i in 0..kept {
            // SAFETY: entry `i` holds the index of the page copied to slot `i` (above); from
            // the scratch mapping back to that page, writable (mapped so just above).
            unsafe { std::ptr::copy_nonoverlapping((copy + i * PAGE) as *const u8, (start + *entries.add(i) as usize * PAGE) as *mut u8, PAGE) };
        }
        // SAFETY: the region's own protection back.
        ok = r.prot & libc::PROT_WRITE != 0 || unsafe { libc::mprotect(start as *mut libc::c_void, len, r.prot) } == 0;
    }
    // SAFETY: the scratch mapping, ours.
    unsafe { libc::munmap(tmp, total) };
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_private_memory_but_the_stack_code_and_what_is_kept() {
        let smaps = "\
55d000000000-55d000001000 r--p 00000000 fe:00 1 /usr/bin/x
Anonymous:             0 kB
VmFlags: rd mr mw me
55d000001000-55d000002000 r-xp 00001000 fe:00 1 /usr/bin/x
Anonymous:             0 kB
55d000002000-55d000003000 r--p 00002000 fe:00 1 /usr/bin/x
Anonymous:             4 kB
55d000003000-55d000004000 rw-p 00003000 fe:00 1 /usr/bin/x
Anonymous:             0 kB
55d000100000-55d000200000 rw-p 00000000 00:00 0 [heap]
Anonymous:           120 kB
7f0000000000-7f0000001000 ---p 00000000 00:00 0
7f0000001000-7f0000002000 rw-p 00000000 00:00 0
Anonymous:             4 kB
7f0000002000-7f0000003000 rw-s 00000000 00:01 9 /memfd:shared (deleted)
7f0000003000-7f0000004000 rw-p 00000000 00:00 0
VmFlags: rd wr mr mw me dc
7f0000010000-7f0000020000 rw-p 00000000 00:00 0
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
7ffc00022000-7ffc00024000 r-xp 00000000 00:00 0 [vdso]
";
        let got = copyable(smaps, &[(0x7f00_0001_0000, 0x7f00_0002_0000)]);
        let want = vec![
            (0x55d0_0000_2000, 0x55d0_0000_3000, libc::PROT_READ),
            (0x55d0_0000_3000, 0x55d0_0000_4000, libc::PROT_READ | libc::PROT_WRITE),
            (0x55d0_0010_0000, 0x55d0_0020_0000, libc::PROT_READ | libc::PROT_WRITE),
            (0x7f00_0000_1000, 0x7f00_0000_2000, libc::PROT_READ | libc::PROT_WRITE),
        ];
        assert_eq!(got, want);
    }
}
