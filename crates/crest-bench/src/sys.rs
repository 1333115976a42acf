//! The few system calls the benchmark makes itself, each with its `// SAFETY:`.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// kill(2), only ever on a PID this benchmark started (or one cr_restart restored for it).
pub fn kill(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: plain kill(2) on a positive PID; no memory is involved.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Waits until child `pid` has exited, without reaping it (waitid with WNOWAIT).
pub fn wait_exited(pid: i32) {
    loop {
        // SAFETY: siginfo_t is plain data, zeroed is a valid value for it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is a valid out pointer for the duration of the call.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Reaps child `pid` (one the benchmark started or adopted), waiting up to `timeout`:
/// `Some(true)` if it exited with status 0, `Some(false)` if it ended otherwise or is not (or
/// no longer) a child, `None` if it is still running.
pub fn wait_child(pid: i32, timeout: std::time::Duration) -> Option<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer; WNOHANG makes this a poll.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Some(false);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Makes this process the reaper of the processes it started: a restored process whose
/// cr_restart died comes back to it instead of to PID 1 (which here reaps nobody).
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Kills and reaps the children left at the end: by then every child the benchmark started
/// itself has been waited for, so these can only be orphaned descendants it adopted.
pub fn reap_orphans() -> usize {
    let me = std::process::id();
    let mut n = 0;
    for _ in 0..10 {
        let kids = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
        let pids: Vec<i32> = kids.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            kill(pid, libc::SIGKILL);
            let mut status = 0;
            // SAFETY: status is a valid out pointer; pid is our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            n += 1;
        }
    }
    n
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM make the benchmark stop at the next step and clean up, instead of dying
/// with its targets and images left behind.
pub fn catch_stop() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// MemAvailable from /proc/meminfo, in bytes.
pub fn mem_available() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).map_or(0, |kib| kib << 10)
}

/// Whether `dir` is on tmpfs (its files take memory), and the bytes free there.
pub fn fs_info(dir: &Path) -> std::io::Result<(bool, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: statfs is plain data, zeroed is a valid value for it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path and st a valid out pointer for the call.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_type == libc::TMPFS_MAGIC, st.f_bavail as u64 * st.f_bsize as u64))
}

/// Seconds to copy `len` bytes into a freshly mapped anonymous region on this one thread (first
/// touch of every page included), from `src` over and over (`src` is large enough not to stay
/// in cache, so each pass reads memory).
pub fn memcpy_fresh(src: &[u8], len: usize) -> Result<f64, String> {
    // SAFETY: anonymous private mapping of len bytes; checked for failure below.
    let dst = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if dst == libc::MAP_FAILED {
        return Err(format!("mmap of {} MiB failed: {}", len >> 20, std::io::Error::last_os_error()));
    }
    let dst = dst.cast::<u8>();
    let t = Instant::now();
    let mut at = 0;
    while at < len {
        let n = src.len().min(len - at);
        // SAFETY: dst is a fresh mapping of len bytes and at + n <= len; src has at least n
        // bytes; the two do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.add(at), n) };
        at += n;
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(dst);
    // SAFETY: unmapping exactly the mapping created above; nothing refers to it any more.
    unsafe { libc::munmap(dst.cast(), len) };
    Ok(secs)
}

/// `len` pseudo-random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Seconds to fork `k` children that exit at once and to reap them all: what creating and
/// ending `k` small processes costs the kernel, the baseline of the "processes" section.
pub fn fork_exit(k: usize) -> Result<f64, String> {
    let t = Instant::now();
    let mut pids = Vec::with_capacity(k);
    let mut failed = None;
    for _ in 0..k {
        // SAFETY: the child only calls _exit(2), which is async-signal-safe, so forking this
        // multi-threaded process is sound.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: ends the child at once, running no destructor or atexit handler.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            failed = Some(std::io::Error::last_os_error());
            break;
        }
        pids.push(pid);
    }
    for pid in &pids {
        let mut status = 0;
        // SAFETY: status is a valid out pointer; pid is a child forked above.
        while unsafe { libc::waitpid(*pid, &mut status, 0) } < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {}
    }
    let secs = t.elapsed().as_secs_f64();
    match failed {
        Some(e) => Err(format!("fork of {k} processes failed after {}: {e}", pids.len())),
        None => Ok(secs),
    }
}

/// CLOCK_MONOTONIC in seconds: the clock the benchmark programs stamp their progress with.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}
