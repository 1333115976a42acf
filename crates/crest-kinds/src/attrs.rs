//! Process and thread settings that are neither memory nor files: interval timers, scheduling
//! policy and nice value, `oom_score_adj`, login uid, membarrier registrations, the prctl flags (child subreaper,
//! parent-death signal, dumpable, THP disabled, no_new_privs, timer slack) and the credentials
//! (uids, gids, groups, capability sets, securebits).
//!
//! Dump reads `/proc/PID/{status,oom_score_adj,loginuid}` and `sched_getattr` from outside,
//! and through remote syscalls `getitimer` and `prctl(PR_GET_*)`. Restore sets `loginuid`
//! inside the husk before it stops, the prctl flags, interval timers and credentials with
//! remote syscalls once the memory is in place, and the scheduling settings and
//! `oom_score_adj` from outside at the end.
//!
//! [`refuse`] is asked first, from `/proc` alone, before anything runs in the process: state
//! crest does not restore makes the checkpoint fail rather than come back wrong.
use crest_image::{Creds, ProcAttrs, SeccompFilter, ThreadAttrs};
use crest_ptrace::{Read, Remote};

use crate::{le_u64, KindError, Scratch};

const PR_SET_PDEATHSIG: u64 = 1;
const PR_GET_PDEATHSIG: u64 = 2;
const PR_GET_DUMPABLE: u64 = 3;
const PR_SET_DUMPABLE: u64 = 4;
const PR_SET_KEEPCAPS: u64 = 8;
const PR_CAPBSET_DROP: u64 = 24;
const PR_GET_SECUREBITS: u64 = 27;
const PR_SET_SECUREBITS: u64 = 28;
const PR_SET_TIMERSLACK: u64 = 29;
const PR_GET_TIMERSLACK: u64 = 30;
const PR_SET_CHILD_SUBREAPER: u64 = 36;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_SET_NO_NEW_PRIVS: u64 = 38;
const PR_GET_NO_NEW_PRIVS: u64 = 39;
const PR_SET_THP_DISABLE: u64 = 41;
const PR_GET_THP_DISABLE: u64 = 42;
const PR_CAP_AMBIENT: u64 = 47;
const PR_CAP_AMBIENT_RAISE: u64 = 2;
const CAP_SETGID: u64 = 6;
const SECBIT_KEEP_CAPS: u32 = 1 << 4;
const SECBIT_KEEP_CAPS_LOCKED: u32 = 1 << 5;
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;
/// The `MEMBARRIER_CMD_REGISTER_*` commands: global and private expedited, with core sync,
/// with rseq.
const MEMBARRIER_REGISTER: u32 = (1 << 2) | (1 << 4) | (1 << 6) | (1 << 8);
const SCHED_FLAG_RESET_ON_FORK: u64 = 1;
const SCHED_RESET_ON_FORK: u32 = 0x4000_0000;
const SCHED_DEADLINE: u32 = 6;
/// Where in the scratch page the structures of this module go.
const AT: u64 = 3584;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

fn field<'a>(status: &'a str, key: &str) -> &'a str {
    crest_proc::status_field(status, key).unwrap_or("").trim()
}

/// Refuses, from `/proc` alone (nothing runs in the process), a process that a system call run
/// inside it would harm: checked before the process is seized. `tids`: its threads, as just
/// listed.
pub fn refuse_before_seizing(pid: i32, status: &str, tids: &[i32]) -> Result<(), KindError> {
    let who = format!("PID {pid} ({})", field(status, "Name"));
    for &t in tids {
        // The leader's own status is the process's, read by the caller.
        let ts = if t == pid {
            std::borrow::Cow::Borrowed(status)
        } else {
            let Ok(ts) = crest_proc::read(pid, &format!("task/{t}/status")) else { continue };
            std::borrow::Cow::Owned(ts)
        };
        match field(&ts, "Seccomp") {
            "" | "0" => {}
            // Its filters, or its strict mode, are saved, and suspended for crest's system calls
            // in it (`PTRACE_O_SUSPEND_SECCOMP`), which only root may ask for.
            _ if crest_ptrace::suspend_seccomp() != 0 => {}
            "1" => {
                return Err(KindError::Unsupported(format!(
                    "{who}: thread {t} runs in seccomp strict mode: any system call crest made inside it would kill it, unless crest suspends it, which only root (CAP_SYS_ADMIN outside any user namespace) may; checkpoint as root"
                )))
            }
            _ => {
                return Err(KindError::Unsupported(format!(
                    "{who}: thread {t} runs under a seccomp filter, which crest saves only when checkpointing as root (CAP_SYS_ADMIN outside any user namespace)"
                )))
            }
        }
    }
    Ok(())
}

/// The namespaces a process must share with `cr_checkpoint`.
/// A time namespace is not among them: it is saved as the clocks it shows ([`crate::clocks`]).
const NAMESPACES: [&str; 8] = ["cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "user", "uts"];

/// This process's own namespaces ([`NAMESPACES`]), read once: a checkpoint of many processes
/// compares each with them.
fn own_namespaces() -> &'static [Option<std::path::PathBuf>] {
    static OWN: std::sync::OnceLock<Vec<Option<std::path::PathBuf>>> = std::sync::OnceLock::new();
    OWN.get_or_init(|| NAMESPACES.iter().map(|ns| std::fs::read_link(format!("/proc/self/ns/{ns}")).ok()).collect())
}

/// Refuses, from `/proc` alone, a frozen process whose state crest would not restore: threads
/// in control groups of their own, namespaces other than `cr_checkpoint`'s (the
/// restarted process gets `cr_restart`'s). `tids`: its threads, as frozen (a frozen process
/// starts none).
pub fn refuse(pid: i32, status: &str, tids: &[i32]) -> Result<(), KindError> {
    let who = format!("PID {pid} ({})", field(status, "Name"));
    // The leader is the process: only the other threads are compared with it.
    let mut own: Option<String> = None;
    for &t in tids.iter().filter(|&&t| t != pid) {
        let tcg = crest_proc::read(pid, &format!("task/{t}/cgroup")).unwrap_or_default();
        let own = own.get_or_insert_with(|| crest_proc::read(pid, "cgroup").unwrap_or_default());
        if !tcg.is_empty() && cgroups(&tcg) != cgroups(own) {
            return Err(KindError::Unsupported(format!("{who}: its thread {t} is in other control groups than the process; that is not supported")));
        }
    }
    for (ns, mine) in NAMESPACES.iter().zip(own_namespaces()) {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
        if theirs.is_some() && mine.is_some() && theirs.as_ref() != mine.as_ref() {
            return Err(KindError::Unsupported(format!("{who} is in another {ns} namespace than cr_checkpoint; namespaces are not supported")));
        }
    }
    Ok(())
}

/// The uids, gids and groups of a (task) `status`.
fn thread_ids(status: &str) -> Creds {
    let four = |k: &str| {
        let mut o = [0u32; 4];
        for (d, v) in o.iter_mut().zip(field(status, k).split_whitespace()) {
            *d = v.parse().unwrap_or(0);
        }
        o
    };
    Creds { uid: four("Uid"), gid: four("Gid"), groups: field(status, "Groups").split_whitespace().filter_map(|g| g.parse().ok()).collect(), ..Default::default() }
}

fn hexset(status: &str, key: &str) -> u64 {
    u64::from_str_radix(field(status, key), 16).unwrap_or(0)
}

/// The capability sets of a process from its `status` (securebits are read remotely).
pub fn capabilities(status: &str, creds: &mut Creds) {
    creds.cap_eff = hexset(status, "CapEff");
    creds.cap_prm = hexset(status, "CapPrm");
    creds.cap_inh = hexset(status, "CapInh");
    creds.cap_bnd = hexset(status, "CapBnd");
    creds.cap_amb = hexset(status, "CapAmb");
}

/// Bytes the process-wide reads of [`queue_process`] write.
const PROCESS_READS: u64 = 100;

/// Queues the reads of the process-wide settings on `remote` (on the leader): the three
/// interval timers at `at`, `at`+32, `at`+64, the subreaper flag at `at`+96.
fn queue_process(remote: &mut Remote<'_>, at: u64) -> Vec<Read> {
    [
        (libc::SYS_getitimer, &[0, at][..]),
        (libc::SYS_getitimer, &[1, at + 32]),
        (libc::SYS_getitimer, &[2, at + 64]),
        (libc::SYS_prctl, &[PR_GET_CHILD_SUBREAPER, at + 96]),
        (libc::SYS_prctl, &[PR_GET_DUMPABLE]),
        (libc::SYS_prctl, &[PR_GET_THP_DISABLE, 0, 0, 0, 0]),
        (libc::SYS_prctl, &[PR_GET_SECUREBITS]),
        (libc::SYS_membarrier, &[MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0]),
    ]
    .into_iter()
    .map(|(nr, args)| remote.queue_read(nr, args))
    .collect()
}

/// Reads the process-wide settings through `remote` (on the leader), all in one go where the
/// process has a batch area.
pub fn dump_process(remote: &mut Remote<'_>, scratch: &Scratch, pid: i32, creds: &mut Creds) -> Result<ProcAttrs, KindError> {
    let reads = queue_process(remote, scratch.addr + AT);
    remote.flush()?;
    let b = scratch.read(AT, PROCESS_READS as usize)?;
    take_process(remote, &b, &reads, pid, creds)
}

/// The results of `reads` once they have run (a failure `EIO` for one that did not).
fn results(remote: &Remote<'_>, reads: &[Read]) -> Vec<Result<u64, i32>> {
    reads.iter().map(|&k| remote.result(k).unwrap_or(Err(libc::EIO))).collect()
}

/// The process-wide settings once the reads [`queue_process`] queued have run, `b` what they
/// wrote.
fn take_process(remote: &Remote<'_>, b: &[u8], reads: &[Read], pid: i32, creds: &mut Creds) -> Result<ProcAttrs, KindError> {
    let r = results(remote, reads);
    let ok = |i: usize, what: &str| r[i].map_err(|e| KindError::io(format!("{what} (inside pid {pid})"), std::io::Error::from_raw_os_error(e)));
    for (i, what) in ["reading an interval timer", "reading an interval timer", "reading an interval timer", "reading the child subreaper flag"].into_iter().enumerate() {
        ok(i, what)?;
    }
    let mut itimers = [(0, 0); 3];
    for (which, t) in itimers.iter_mut().enumerate() {
        let us = |at: usize| le_u64(b, which * 32 + at) * 1_000_000 + le_u64(b, which * 32 + at + 8);
        *t = (us(0), us(16));
    }
    let child_subreaper = b[96..100] != [0, 0, 0, 0];
    let dumpable = ok(4, "reading the dumpable flag")? as u32;
    let thp_disable = ok(5, "reading the THP-disable flag")? != 0;
    creds.securebits = ok(6, "reading the securebits")? as u32;
    let membarrier = match r[7] {
        Ok(m) => m as u32 & MEMBARRIER_REGISTER,
        Err(libc::EINVAL) => 0, // before Linux 6.3: registrations cannot be read
        Err(e) => return Err(KindError::io("reading the membarrier registrations", std::io::Error::from_raw_os_error(e))),
    };
    let num = |f: &str| crest_proc::read(pid, f).ok().and_then(|s| s.trim().parse::<i64>().ok());
    Ok(ProcAttrs {
        itimers,
        oom_score_adj: num("oom_score_adj").unwrap_or(0) as i32,
        child_subreaper,
        dumpable,
        thp_disable,
        loginuid: num("loginuid").unwrap_or(u32::MAX as i64) as u32,
        membarrier,
        cgroups: cgroups(&crest_proc::read(pid, "cgroup")?),
        ..Default::default()
    })
}

/// Bytes the reads of [`queue_thread`] write.
pub const THREAD_READS: u64 = 4;

/// Queues the reads of the settings of the thread `remote` runs on (the parent-death signal
/// written at `at`), to run with others.
pub fn queue_thread(remote: &mut Remote<'_>, at: u64) -> Vec<Read> {
    [(libc::SYS_prctl, &[PR_GET_PDEATHSIG, at][..]), (libc::SYS_prctl, &[PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0]), (libc::SYS_prctl, &[PR_GET_TIMERSLACK]), (libc::SYS_prctl, &[PR_GET_SECUREBITS])]
        .into_iter()
        .map(|(nr, args)| remote.queue_read(nr, args))
        .collect()
}

/// The settings of thread `tid` once the reads [`queue_thread`] queued on `remote` (on that
/// thread) have run, `b` the [`THREAD_READS`] bytes they wrote.
pub fn take_thread(remote: &Remote<'_>, b: &[u8], reads: &[Read], pid: i32, tid: i32) -> Result<ThreadAttrs, KindError> {
    let s = crest_ptrace::sys::sched_get(tid).map_err(|e| KindError::io(format!("pid {pid}: reading the scheduling settings of thread {tid}"), e))?;
    if s.policy == SCHED_DEADLINE {
        return Err(KindError::Unsupported(format!("pid {pid}: thread {tid} runs under SCHED_DEADLINE, which is not supported yet")));
    }
    let r = results(remote, reads);
    let ok = |i: usize, what: &str| r[i].map_err(|e| KindError::io(format!("{what} (inside pid {pid}, thread {tid})"), std::io::Error::from_raw_os_error(e)));
    ok(0, "reading the parent-death signal")?;
    let pdeath_sig = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let no_new_privs = ok(1, "reading no_new_privs")? != 0;
    let timer_slack = ok(2, "reading the timer slack")?;
    let reset = if s.flags & SCHED_FLAG_RESET_ON_FORK != 0 { SCHED_RESET_ON_FORK } else { 0 };
    let status = crest_proc::read(pid, &format!("task/{tid}/status"))?;
    let mut creds = thread_ids(&status);
    capabilities(&status, &mut creds);
    creds.securebits = ok(3, "reading the securebits")? as u32;
    let seccomp = if field(&status, "Seccomp") == "2" { remote.tracee.seccomp_filters()?.into_iter().map(|(flags, insns)| SeccompFilter { flags, insns }).collect() } else { Vec::new() };
    let seccomp_strict = field(&status, "Seccomp") == "1";
    Ok(ThreadAttrs { policy: s.policy | reset, nice: s.nice, rt_priority: s.priority, pdeath_sig, no_new_privs, timer_slack, creds, seccomp, seccomp_strict })
}

/// The restarting program's login uid as [`note_loginuid`] read it: `u64::MAX` not read,
/// above `u32::MAX` unreadable, else the uid.
static LOGINUID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

fn read_loginuid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/loginuid").ok().and_then(|s| s.trim().parse::<u32>().ok())
}

/// In the restarting program, before it forks the husks: reads its login uid, which every husk
/// inherits, once rather than in each husk.
pub fn note_loginuid() {
    LOGINUID.store(read_loginuid().map_or(u64::from(u32::MAX) + 1, u64::from), std::sync::atomic::Ordering::Relaxed);
}

/// Inside the husk, before it stops: its login uid.
pub fn prepare(a: &ProcAttrs) -> Result<(), String> {
    let now = match LOGINUID.load(std::sync::atomic::Ordering::Relaxed) {
        u64::MAX => read_loginuid(),
        n => u32::try_from(n).ok(),
    };
    if now.is_some() && now != Some(a.loginuid) {
        std::fs::write("/proc/self/loginuid", a.loginuid.to_string()).map_err(|e| format!("setting the login uid to {}: {e}", a.loginuid as i32))?;
    }
    Ok(())
}

/// Inside the husk, once its descriptors are restored: the unix socket files that restore bound
/// again for it (as the restarter) get the owner the process would have given them, its saved
/// file-system uid and gid, so that it and its peers may still connect once its credentials
/// are restored.
pub fn own_bound_sockets(fds: &[crest_image::FdRecord], creds: &Creds) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    for r in fds {
        // A socket whose file was removed has none now.
        let crest_image::FdKind::Socket { family, addr, unlinked: false, .. } = &r.kind else { continue };
        // struct sockaddr_un: the family, then a NUL-terminated path (abstract names start with NUL).
        if *family != libc::AF_UNIX || addr.len() <= 3 || addr[2] == 0 {
            continue;
        }
        let path = &addr[2..];
        let path = &path[..path.iter().position(|&b| b == 0).unwrap_or(path.len())];
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
        let (uid, gid) = (creds.uid[3], creds.gid[3]);
        let md = std::fs::symlink_metadata(path).map_err(|e| format!("fd {}: the socket file {}: {e}", r.fd, path.display()))?;
        if std::os::unix::fs::MetadataExt::uid(&md) != uid || std::os::unix::fs::MetadataExt::gid(&md) != gid {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| format!("fd {}: giving the socket file {} to uid {uid} gid {gid}: {e}", r.fd, path.display()))?;
        }
    }
    Ok(())
}

/// Through `remote` on the husk's leader, once its memory is in place: membarrier
/// registrations, the interval timers and the process-wide prctl flags but `dumpable` (see
/// [`restore_dumpable`]).
pub fn restore_process(remote: &mut Remote<'_>, scratch: &Scratch, a: &ProcAttrs) -> Result<(), KindError> {
    if a.child_subreaper {
        remote.call("setting the child subreaper flag", libc::SYS_prctl, &[PR_SET_CHILD_SUBREAPER, 1])?;
    }
    if a.thp_disable {
        remote.call("disabling transparent huge pages", libc::SYS_prctl, &[PR_SET_THP_DISABLE, 1, 0, 0, 0])?;
    }
    for bit in 0..32 {
        if a.membarrier & MEMBARRIER_REGISTER & (1 << bit) != 0 {
            remote.call("registering for membarrier", libc::SYS_membarrier, &[1 << bit, 0, 0])?;
        }
    }
    for (which, &(interval, mut value)) in a.itimers.iter().enumerate() {
        if value == 0 && interval == 0 {
            continue;
        }
        // A periodic ITIMER_REAL that expired and whose SIGALRM is still pending reads as
        // disarmed with its period (the kernel arms it again as that signal is taken). Set
        // with a zero value, the period would be dropped too (setitimer clears it): it is
        // armed one period ahead instead, and the pending signal is delivered as saved.
        if value == 0 {
            value = interval;
        }
        let mut b = Vec::with_capacity(32);
        for us in [interval, value] {
            b.extend_from_slice(&(us / 1_000_000).to_le_bytes());
            b.extend_from_slice(&(us % 1_000_000).to_le_bytes());
        }
        let at = scratch.write(AT, &b)?;
        remote.call("setting an interval timer", libc::SYS_setitimer, &[which as u64, at, 0])?;
    }
    Ok(())
}

/// Through `remote` on the husk's leader, after the credentials (a change of uid resets it):
/// the dumpable flag.
pub fn restore_dumpable(remote: &mut Remote<'_>, a: &ProcAttrs) -> Result<(), KindError> {
    if a.dumpable <= 1 {
        // Queued: run with the fill's last calls.
        remote.queue("setting the dumpable flag", libc::SYS_prctl, &[PR_SET_DUMPABLE, u64::from(a.dumpable)]);
    }
    Ok(())
}

/// Through `remote` on thread `tid`: its parent-death signal, timer slack and no_new_privs.
/// Queued, to run at the caller's next flush (or call) on `remote`.
pub fn restore_thread(remote: &mut Remote<'_>, a: &ThreadAttrs) -> Result<(), KindError> {
    remote.queue("setting the parent-death signal", libc::SYS_prctl, &[PR_SET_PDEATHSIG, u64::from(a.pdeath_sig)]);
    if a.timer_slack != 0 {
        remote.queue("setting the timer slack", libc::SYS_prctl, &[PR_SET_TIMERSLACK, a.timer_slack]);
    }
    if a.no_new_privs {
        remote.queue("setting no_new_privs", libc::SYS_prctl, &[PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0]);
    }
    Ok(())
}

/// How many seccomp filters, the first installed first, every thread of `threads` has in
/// common: installed in the leader before it creates the other threads, they are one chain
/// shared by all, as after a `pthread_create` (which `SECCOMP_FILTER_FLAG_TSYNC` needs).
pub fn common_seccomp(threads: &[crest_image::Thread]) -> usize {
    let first = &threads[0].attrs.seccomp;
    (0..first.len()).take_while(|&k| threads.iter().all(|t| t.attrs.seccomp.get(k) == Some(&first[k]))).count()
}

/// In the thread of `remote` (thread `saved` of process `pid`), once it exists and before its
/// credentials drop privileges: the seccomp `filters`, the first installed first. The tracer's
/// `PTRACE_O_SUSPEND_SECCOMP` (root only) keeps them off every system call crest still runs in
/// it; they apply from the moment it is let go. Threads created afterwards inherit them: the
/// filters all threads share go in the leader before the others exist ([`common_seccomp`]),
/// each thread's own after.
pub fn restore_seccomp(remote: &mut Remote<'_>, pid: i32, saved: i32, filters: &[SeccompFilter]) -> Result<(), KindError> {
    const SECCOMP_SET_MODE_FILTER: u64 = 1;
    if filters.is_empty() {
        return Ok(());
    }
    if crest_ptrace::suspend_seccomp() == 0 {
        return Err(KindError::Unsupported(format!("pid {pid}: thread {saved} ran under seccomp filters, which only root (CAP_SYS_ADMIN outside any user namespace) can restore")));
    }
    let len = (filters.iter().map(|f| f.insns.len() as u64).max().unwrap_or(0) + 16).next_multiple_of(4096);
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let at = remote.call("mapping room for seccomp filters", libc::SYS_mmap, &[0, len, (libc::PROT_READ | libc::PROT_WRITE) as u64, flags, u64::MAX, 0])?;
    let tid = remote.tracee.tid;
    for (k, f) in filters.iter().enumerate() {
        // struct sock_fprog: the number of instructions (16 bits), padding, then a pointer.
        let mut prog = Vec::with_capacity(16 + f.insns.len());
        prog.extend_from_slice(&((f.insns.len() / 8) as u16).to_le_bytes());
        prog.extend_from_slice(&[0u8; 6]);
        prog.extend_from_slice(&(at + 16).to_le_bytes());
        prog.extend_from_slice(&f.insns);
        crest_ptrace::mem::write_vm(tid, at, &prog)?;
        remote.call(&format!("pid {pid}: thread {saved}: installing its seccomp filter {}", k + 1), libc::SYS_seccomp, &[SECCOMP_SET_MODE_FILTER, f.flags, at])?;
    }
    remote.call("unmapping the room for seccomp filters", libc::SYS_munmap, &[at, len])?;
    Ok(())
}

/// From outside, once the threads exist: scheduling policy, priority and nice value of thread
/// `tid` (restored as the saved `saved`).
pub fn restore_sched(tid: i32, saved: i32, a: &ThreadAttrs) -> Result<(), KindError> {
    let want = crest_ptrace::sys::SchedAttr {
        policy: a.policy & !SCHED_RESET_ON_FORK,
        flags: if a.policy & SCHED_RESET_ON_FORK != 0 { SCHED_FLAG_RESET_ON_FORK } else { 0 },
        nice: a.nice,
        priority: a.rt_priority,
    };
    let now = crest_ptrace::sys::sched_get(tid).map_err(|e| KindError::io(format!("reading the scheduling settings of thread {tid}"), e))?;
    if now != want {
        crest_ptrace::sys::sched_set(tid, &want)
            .map_err(|e| KindError::io(format!("thread {saved}: setting scheduling policy {} priority {} nice {} (raising them needs CAP_SYS_NICE)", want.policy, want.priority, want.nice), e))?;
    }
    Ok(())
}

/// The (controllers, path) pairs of a `/proc/PID/cgroup` text.
fn cgroups(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(|l| l.split_once(':').and_then(|(_, rest)| rest.split_once(':')).map(|(c, p)| (c.to_string(), p.to_string()))).collect()
}

/// Where the hierarchy of `controllers` is mounted (from this process's mountinfo): (mount
/// point, the path of the hierarchy mounted there).
fn cgroup_mount(controllers: &str) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want: Vec<&str> = controllers.split(',').filter(|c| !c.is_empty()).collect();
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (root, at, fstype, opts) = (pre.get(3)?, pre.get(4)?, post.first()?, post.get(2)?);
        let opts: Vec<&str> = opts.split(',').collect();
        let fits = if want.is_empty() { *fstype == "cgroup2" } else { *fstype == "cgroup" && want.iter().all(|c| opts.contains(c)) };
        let unescape = |s: &str| s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\");
        fits.then(|| (unescape(at), unescape(root)))
    })
}

/// From outside: moves the restored process `pid` into its saved control groups where it is
/// not in them already (writing `cgroup.procs`). A group that is gone or that the restarter
/// may not move processes into fails the restart.
pub fn restore_cgroups(pid: i32, a: &ProcAttrs) -> Result<(), KindError> {
    let now = cgroups(&crest_proc::read(pid, "cgroup")?);
    for (controllers, path) in &a.cgroups {
        if now.iter().any(|(c, p)| c == controllers && p == path) {
            continue;
        }
        let name = if controllers.is_empty() { "the unified hierarchy".to_string() } else { format!("the {controllers} hierarchy") };
        let what = format!("moving the process into control group {path} of {name}");
        let (at, root) = cgroup_mount(controllers).ok_or_else(|| KindError::Mismatch(format!("{what}: that hierarchy is not mounted here")))?;
        let rel = path.strip_prefix(root.trim_end_matches('/')).ok_or_else(|| KindError::Mismatch(format!("{what}: it is outside the part mounted at {at}")))?;
        let procs = format!("{}/{}/cgroup.procs", at.trim_end_matches('/'), rel.trim_start_matches('/'));
        std::fs::write(&procs, pid.to_string()).map_err(|e| KindError::io(format!("{what} ({procs})"), e))?;
    }
    Ok(())
}

/// From outside: `oom_score_adj` of the restored process `pid`.
pub fn restore_oom(pid: i32, a: &ProcAttrs) -> Result<(), KindError> {
    let path = format!("/proc/{pid}/oom_score_adj");
    let now = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<i32>().ok());
    if now != Some(a.oom_score_adj) {
        std::fs::write(&path, a.oom_score_adj.to_string()).map_err(|e| KindError::io(format!("setting oom_score_adj to {} (lowering it needs CAP_SYS_RESOURCE)", a.oom_score_adj), e))?;
    }
    Ok(())
}

/// Inside thread `tid` of the husk: the saved credentials. Supplementary groups (with
/// `CAP_SETGID`), gids and uids are set when they differ from the husk's (which needs
/// privilege, else `cr_restart`'s checks have refused the image), the bounding set is reduced, then the capability sets,
/// ambient capabilities and securebits are set as saved. Credentials are per thread: call it
/// for each thread, after the last `clone3` that needed privilege.
pub fn restore_creds(remote: &mut Remote<'_>, scratch: &Scratch, pid: i32, tid: i32, c: &Creds) -> Result<(), KindError> {
    let now = creds_now(remote, pid, tid)?;
    restore_creds_from(remote, scratch, pid, tid, &now, c)
}

/// The credentials a thread has before [`restore_creds_from`] sets the saved ones.
#[derive(Debug, Clone)]
pub struct CredsNow {
    status: String,
    securebits: u32,
}

/// The credentials of thread `tid` of `pid` (`remote` runs on it), as they are now. Threads
/// created afterwards by the same thread start with the same ones: read once, they serve for
/// every thread of the process.
pub fn creds_now(remote: &mut Remote<'_>, pid: i32, tid: i32) -> Result<CredsNow, KindError> {
    let status = crest_proc::read(pid, &format!("task/{tid}/status"))?;
    let securebits = remote.call(&format!("thread {tid}: reading the securebits"), libc::SYS_prctl, &[PR_GET_SECUREBITS])? as u32;
    Ok(CredsNow { status, securebits })
}

/// [`restore_creds`] of a thread whose credentials are `now` ([`creds_now`]): no system call
/// at all when they are the saved ones already.
pub fn restore_creds_from(remote: &mut Remote<'_>, scratch: &Scratch, pid: i32, tid: i32, now: &CredsNow, c: &Creds) -> Result<(), KindError> {
    let status = &now.status;
    let count = remote.count;
    let ids = |k: &str| -> Vec<u32> { field(status, k).split_whitespace().filter_map(|v| v.parse().ok()).collect() };
    let what = |s: &str| format!("thread {tid}: {s}");
    // The bounding set first: dropping needs CAP_SETPCAP, which may be dropped below.
    let bnd = hexset(status, "CapBnd");
    for cap in 0..64u64 {
        if bnd & !c.cap_bnd & (1 << cap) != 0 {
            remote.call(&what("dropping a capability from the bounding set"), libc::SYS_prctl, &[PR_CAPBSET_DROP, cap])?;
        }
    }
    let mut groups = ids("Groups");
    let mut want = c.groups.clone();
    groups.sort_unstable();
    want.sort_unstable();
    // Without CAP_SETGID the restarter's own groups stay (they include every saved one:
    // `cr_restart` checked), as BLCR did.
    let may_setgid = hexset(status, "CapEff") & (1 << CAP_SETGID) != 0;
    if groups != want && may_setgid {
        let b: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
        if b.len() as u64 > crate::SCRATCH_LEN - AT {
            return Err(KindError::Unsupported(format!("thread {tid}: {} supplementary groups are more than crest restores", c.groups.len())));
        }
        let at = scratch.write(AT, &b)?;
        remote.call(&what("setting the supplementary groups"), libc::SYS_setgroups, &[c.groups.len() as u64, at])?;
    }
    let securebits = now.securebits;
    let uid_change = ids("Uid") != c.uid;
    // Capabilities survive the change of uid only with SECBIT_KEEP_CAPS.
    let keep = uid_change && c.cap_prm != 0 && c.securebits & SECBIT_KEEP_CAPS_LOCKED == 0;
    let during = if keep { c.securebits | SECBIT_KEEP_CAPS } else { c.securebits };
    if during != securebits {
        if (during ^ securebits) == SECBIT_KEEP_CAPS {
            remote.call(&what("keeping capabilities across the change of uid"), libc::SYS_prctl, &[PR_SET_KEEPCAPS, u64::from(during & SECBIT_KEEP_CAPS != 0)])?;
        } else {
            remote.call(&what("setting the securebits"), libc::SYS_prctl, &[PR_SET_SECUREBITS, u64::from(during)])?;
        }
    }
    if ids("Gid") != c.gid {
        remote.call(&what("setting the gids"), libc::SYS_setresgid, &[u64::from(c.gid[0]), u64::from(c.gid[1]), u64::from(c.gid[2])])?;
        remote.call(&what("setting the filesystem gid"), libc::SYS_setfsgid, &[u64::from(c.gid[3])])?;
    }
    if uid_change {
        remote.call(&what("setting the uids"), libc::SYS_setresuid, &[u64::from(c.uid[0]), u64::from(c.uid[1]), u64::from(c.uid[2])])?;
        remote.call(&what("setting the filesystem uid"), libc::SYS_setfsuid, &[u64::from(c.uid[3])])?;
    }
    // Read again only when something above changed them.
    let changed = remote.count != count;
    let status = if changed { std::borrow::Cow::Owned(crest_proc::read(pid, &format!("task/{tid}/status"))?) } else { std::borrow::Cow::Borrowed(status.as_str()) };
    let (eff, prm, inh) = (hexset(&status, "CapEff"), hexset(&status, "CapPrm"), hexset(&status, "CapInh"));
    if (eff, prm, inh) != (c.cap_eff, c.cap_prm, c.cap_inh) {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&CAP_VERSION_3.to_le_bytes());
        b.extend_from_slice(&0i32.to_le_bytes()); // pid 0: the calling thread
        for half in [0, 32] {
            for v in [c.cap_eff, c.cap_prm, c.cap_inh] {
                b.extend_from_slice(&((v >> half) as u32).to_le_bytes());
            }
        }
        let at = scratch.write(AT, &b)?;
        remote.call(&what("setting the capability sets"), libc::SYS_capset, &[at, at + 8])?;
    }
    for cap in 0..64u64 {
        if c.cap_amb & (1 << cap) != 0 {
            remote.call(&what("raising an ambient capability"), libc::SYS_prctl, &[PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0])?;
        }
    }
    if during != c.securebits {
        remote.call(&what("setting the securebits"), libc::SYS_prctl, &[PR_SET_KEEPCAPS, u64::from(c.securebits & SECBIT_KEEP_CAPS != 0)])?;
    }
    Ok(())
}

use crate::process::{FillCx, HuskCx, ProcessKind, Stage};

/// The owners of the unix socket files restore bound again ([`own_bound_sockets`]).
pub struct SocketOwners;

impl ProcessKind for SocketOwners {
    fn name(&self) -> &'static str {
        "socket owners"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["fds", "creds"]
    }
    fn stage(&self) -> Stage {
        Stage::Husk
    }
    fn after(&self) -> &'static [&'static str] {
        // The files are made as the sockets are bound again.
        &["descriptors"]
    }
    fn prepare(&self, cx: &mut HuskCx<'_>) -> Result<(), String> {
        own_bound_sockets(&cx.p.fds, &cx.p.creds)
    }
}

/// The login uid ([`prepare`]).
pub struct LoginUid;

impl ProcessKind for LoginUid {
    fn name(&self) -> &'static str {
        "login uid"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["attrs.loginuid"]
    }
    fn stage(&self) -> Stage {
        Stage::Husk
    }
    fn prepare(&self, cx: &mut HuskCx<'_>) -> Result<(), String> {
        prepare(&cx.p.attrs)
    }
}

/// The seccomp filters every thread has in common ([`common_seccomp`]), in the leader.
pub struct SharedSeccomp;

impl ProcessKind for SharedSeccomp {
    fn name(&self) -> &'static str {
        "shared seccomp"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["threads.attrs.seccomp"]
    }
    fn stage(&self) -> Stage {
        Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // It maps room of its own for the filters: once the saved mappings are in place, so
        // that the room takes none of their addresses.
        &["memory"]
    }
    fn restore(&self, cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
        let leader = &cx.p.threads[0];
        restore_seccomp(cx.remote, cx.p.pid, leader.tid, &leader.attrs.seccomp[..cx.shared_filters])
    }
}

/// Interval timers, membarrier registrations and process-wide prctl flags ([`restore_process`]).
pub struct ProcessAttrs;

impl ProcessKind for ProcessAttrs {
    fn name(&self) -> &'static str {
        "process attributes"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["attrs.itimers", "attrs.membarrier", "attrs.child_subreaper", "attrs.thp_disable"]
    }
    fn stage(&self) -> Stage {
        Stage::Traced
    }
    fn dumps(&self) -> bool {
        true
    }
    fn dump_queue(&self, cx: &mut crate::process::CollectCx<'_, '_>) -> Result<(), KindError> {
        if let Some(at) = cx.room(PROCESS_READS) {
            let reads = queue_process(cx.remote, at);
            cx.queued(self.name(), at, reads);
        }
        Ok(())
    }
    fn dump(&self, cx: &mut crate::process::CollectCx<'_, '_>) -> Result<(), KindError> {
        // Every attribute of the process (oom score, control groups, login uid, dumpable,
        // ... restored by kinds of their own) and what the credentials lack in /proc.
        cx.out.attrs = match cx.reads.remove(self.name()) {
            Some((at, reads)) => {
                let b = cx.bytes(at, PROCESS_READS as usize)?.to_vec();
                take_process(cx.remote, &b, &reads, cx.pid, &mut cx.out.creds)?
            }
            None => dump_process(cx.remote, cx.scratch, cx.pid, &mut cx.out.creds)?,
        };
        Ok(())
    }
    fn after(&self) -> &'static [&'static str] {
        // The interval timers start counting as they are set: once the threads that may
        // take their signals exist.
        &[crate::process::THREADS]
    }
    fn restore(&self, cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
        restore_process(cx.remote, cx.scratch, &cx.p.attrs)
    }
}

/// The oom score adjustment ([`restore_oom`]).
pub struct Oom;

impl ProcessKind for Oom {
    fn name(&self) -> &'static str {
        "oom score"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["attrs.oom_score_adj"]
    }
    fn stage(&self) -> Stage {
        Stage::Traced
    }
    fn restore(&self, cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
        restore_oom(cx.pid, &cx.p.attrs)
    }
}

/// The control groups ([`restore_cgroups`]).
pub struct Cgroups;

impl ProcessKind for Cgroups {
    fn name(&self) -> &'static str {
        "cgroups"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["attrs.cgroups"]
    }
    fn stage(&self) -> Stage {
        Stage::Traced
    }
    fn restore(&self, cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
        restore_cgroups(cx.pid, &cx.p.attrs)
    }
}

/// The leader's own seccomp filters, beyond those its threads share.
pub struct Seccomp;

impl ProcessKind for Seccomp {
    fn name(&self) -> &'static str {
        "seccomp"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["threads.attrs.seccomp"]
    }
    fn stage(&self) -> Stage {
        Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // After the last clone3 (which may have needed CAP_CHECKPOINT_RESTORE for set_tid), so
        // that no thread inherits the leader's filters; after those the threads share, which
        // come first in its chain.
        &[crate::process::THREADS, "shared seccomp"]
    }
    fn restore(&self, cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
        let leader = &cx.p.threads[0];
        restore_seccomp(cx.remote, cx.p.pid, leader.tid, &leader.attrs.seccomp[cx.shared_filters..])
    }
}

/// `prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)`, run in a thread restored in strict mode once
/// everything else is done in it: from then on only `read`, `write`, `_exit` and
/// `rt_sigreturn` are allowed to it, crest's own system calls excepted while it holds the
/// thread (`PTRACE_O_SUSPEND_SECCOMP`, which every seizing asks for as root).
pub fn enter_strict_mode(remote: &mut Remote<'_>, pid: i32, saved: i32) -> Result<(), KindError> {
    const PR_SET_SECCOMP: u64 = 22;
    const SECCOMP_MODE_STRICT: u64 = 1;
    if crest_ptrace::suspend_seccomp() == 0 {
        return Err(KindError::Unsupported(format!("pid {pid}: thread {saved} ran in seccomp strict mode, which only root (CAP_SYS_ADMIN outside any user namespace) can restore")));
    }
    remote.call(&format!("pid {pid}: thread {saved}: entering seccomp strict mode"), libc::SYS_prctl, &[PR_SET_SECCOMP, SECCOMP_MODE_STRICT])?;
    Ok(())
}

/// The leader's seccomp strict mode ([`enter_strict_mode`]), the last thing done in it.
pub struct SeccompStrict;

impl ProcessKind for SeccompStrict {
    fn name(&self) -> &'static str {
        "seccomp strict"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["threads.attrs.seccomp_strict"]
    }
    fn stage(&self) -> Stage {
        Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // Last: after it, no system call of the leader's own but read, write, _exit and
        // rt_sigreturn would be allowed.
        &[
            crate::process::THREADS,
            "process attributes",
            "semaphore adjustments",
            "posix timers",
            "rlimits",
            "oom score",
            "cgroups",
            "seccomp",
            "credentials",
            "leader attributes",
            "dumpable",
            "pending signals",
        ]
    }
    fn restore(&self, cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
        let leader = &cx.p.threads[0];
        if leader.attrs.seccomp_strict {
            enter_strict_mode(cx.remote, cx.p.pid, leader.tid)?;
        }
        Ok(())
    }
}

/// The leader's credentials ([`restore_creds`]).
pub struct LeaderCreds;

impl ProcessKind for LeaderCreds {
    fn name(&self) -> &'static str {
        "credentials"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["creds", "threads.attrs.creds"]
    }
    fn stage(&self) -> Stage {
        Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // What is set from outside needs the restarter's ids on the husk (prlimit on a
        // process of another user needs CAP_SYS_RESOURCE, lowering the oom score too, moving
        // it into a group the right to write there); a filter is installed with privilege
        // (CAP_SYS_ADMIN) the saved credentials may not have; the threads are created with
        // the restarter's privilege too (clone3 with set_tid needs CAP_CHECKPOINT_RESTORE).
        &["rlimits", "oom score", "cgroups", "seccomp", crate::process::THREADS]
    }
    fn restore(&self, cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
        restore_creds(cx.remote, cx.scratch, cx.pid, cx.pid, cx.leader_creds)
    }
}

/// The leader's parent-death signal, timer slack and no_new_privs ([`restore_thread`]).
pub struct LeaderAttrs;

impl ProcessKind for LeaderAttrs {
    fn name(&self) -> &'static str {
        "leader attributes"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["threads.attrs.pdeath_sig", "threads.attrs.timer_slack", "threads.attrs.no_new_privs", "threads.attrs.policy", "threads.attrs.nice", "threads.attrs.rt_priority"]
    }
    fn stage(&self) -> Stage {
        Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // A change of ids clears the parent-death signal; no_new_privs would be inherited by
        // the threads created after it, and it is the leader's own.
        &["credentials", "seccomp", crate::process::THREADS]
    }
    fn restore(&self, cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
        restore_thread(cx.remote, &cx.p.threads[0].attrs)
    }
}

/// The dumpable flag ([`restore_dumpable`]).
pub struct Dumpable;

impl ProcessKind for Dumpable {
    fn name(&self) -> &'static str {
        "dumpable"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["attrs.dumpable"]
    }
    fn stage(&self) -> Stage {
        Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // A change of ids resets it.
        &["credentials"]
    }
    fn restore(&self, cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
        restore_dumpable(cx.remote, &cx.p.attrs)
    }
}
