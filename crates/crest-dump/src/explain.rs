//! Why a checkpoint cannot be made, told from `/proc`: refusals that need no freeze (a kernel
//! thread, init, a scope holding the checkpoint itself) and the causes behind a failed dump
//! (who traces the process, why ptrace refuses it, whether it ended meanwhile).
use crest_ptrace::sys;

use crate::checkpoint::{Error, Left};
use crate::{DumpError, Scope};

/// Whether `pid` is gone, dead, exiting (its memory already released) or has SIGKILL pending.
fn ended(pid: i32) -> bool {
    let Ok(s) = crest_proc::read(pid, "status") else { return true };
    let field = |k: &str| crest_proc::status_field(&s, k);
    let killed = |k: &str| field(k).and_then(|v| u64::from_str_radix(v, 16).ok()).is_some_and(|m| m & (1 << (libc::SIGKILL - 1)) != 0);
    field("State").is_some_and(|st| st.starts_with('Z') || st.starts_with('X')) || field("VmSize").is_none() || killed("SigPnd") || killed("ShdPnd")
}

/// `pid`'s ancestors, its parent first.
fn ancestors(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut at = pid;
    while let Some(st) = crest_proc::read(at, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok()) {
        if st.ppid <= 0 || out.len() > 4096 {
            break;
        }
        out.push(st.ppid);
        at = st.ppid;
    }
    out
}

/// Whether `pid` is a kernel thread (`PF_KTHREAD` in the flags of `/proc/PID/stat`).
fn kernel_thread(pid: i32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = crest_proc::read(pid, "stat") else { return false };
    let Some(close) = stat.rfind(')') else { return false };
    stat[close + 1..].split_whitespace().nth(6).and_then(|f| f.parse::<u64>().ok()).is_some_and(|f| f & PF_KTHREAD != 0)
}

/// `" (NAME)"` for `pid`, or nothing.
fn comm_of(pid: i32) -> String {
    crest_proc::read(pid, "comm").map(|c| format!(" ({})", c.trim())).unwrap_or_default()
}

fn kernel_thread_words(pid: i32) -> String {
    format!("it is a kernel thread{}, with no user-space memory or registers to save: kernel threads cannot be checkpointed", comm_of(pid))
}

const INIT_WORDS: &str = "it is the init process of this PID namespace, which cannot be checkpointed (it reaps every orphan, and a restored copy could only be PID 1 again in a new PID namespace); checkpoint the processes under it instead";

/// Refusals that need no freeze: a kernel thread, the init process, and a scope that holds
/// this process or its parent (BLCR's `CR_CHKPT_PROHIBIT_SELF`, `EDEADLK`: it would wait for
/// itself).
pub(crate) fn refuse_early(scope: Scope, pid: i32) -> Result<(), Error> {
    if pid <= 0 {
        return Err(Error::NotAnId(match (scope, pid) {
            (Scope::Sid, 0) => {
                "session 0 cannot be checkpointed: the kernel shows 0 as the session of processes whose session leader is outside this PID namespace; checkpoint them by --tree or --pgid instead"
                    .to_string()
            }
            (Scope::Pgid, 0) => {
                "process group 0 cannot be checkpointed: the kernel shows 0 as the group of processes whose group leader is outside this PID namespace; checkpoint them by --tree instead".to_string()
            }
            _ => format!("{pid} is not a process ID: give the PID (or, with --pgid or --sid, the group or session ID) of what to checkpoint"),
        }));
    }
    // A group or session may outlive its leader; a process must be there.
    if matches!(scope, Scope::Pid | Scope::Tree) && crest_proc::read(pid, "stat").is_err() {
        // Gone, or never there: said by the usual path.
        return Ok(());
    }
    if kernel_thread(pid) && matches!(scope, Scope::Pid | Scope::Tree) {
        return Err(Error::Prohibited { pid, why: kernel_thread_words(pid) });
    }
    if pid == 1 && matches!(scope, Scope::Pid | Scope::Tree) {
        return Err(Error::Prohibited { pid, why: INIT_WORDS.to_string() });
    }
    let me = std::process::id() as i32;
    let parent = std::os::unix::process::parent_id() as i32;
    let stat = |p: i32| crest_proc::read(p, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok());
    let Some(mine) = stat(me) else { return Ok(()) };
    let (holds, what) = match scope {
        Scope::Pid => (pid == me || pid == parent, format!("PID {pid}")),
        Scope::Tree => {
            // An ancestor of this process (or this process): its tree holds the checkpoint.
            let mut at = me;
            let mut found = false;
            for _ in 0..4096 {
                if at == pid {
                    found = true;
                    break;
                }
                match stat(at) {
                    Some(st) if st.ppid > 0 => at = st.ppid,
                    _ => break,
                }
            }
            (found, format!("the tree of PID {pid}{}", comm_of(pid)))
        }
        Scope::Pgid => (mine.pgrp == pid, format!("process group {pid}")),
        Scope::Sid => (mine.session == pid, format!("session {pid}")),
    };
    if holds {
        return Err(Error::ContainsSelf { what, parent, me });
    }
    Ok(())
}

/// Why ptrace refused `pid`, as far as it can be told from outside.
fn ptrace_refusal(pid: i32) -> String {
    if kernel_thread(pid) {
        return kernel_thread_words(pid);
    }
    if pid == 1 {
        return INIT_WORDS.to_string();
    }
    let status = crest_proc::read(pid, "status").unwrap_or_default();
    let ids = |k: &str| -> Vec<u32> { crest_proc::status_field(&status, k).map(|v| v.split_whitespace().filter_map(|x| x.parse().ok()).collect()).unwrap_or_default() };
    let (uids, gids) = (ids("Uid"), ids("Gid"));
    let me = sys::euid();
    if me != 0 {
        if uids.first().is_some_and(|&u| u != me) {
            return format!("it belongs to another user (uid {}); run as its owner or as root", uids[0]);
        }
        if uids.windows(2).any(|w| w[0] != w[1]) || gids.windows(2).any(|w| w[0] != w[1]) {
            return "it runs a set-user-ID or set-group-ID program (its real, effective and saved ids differ); run as root".to_string();
        }
    }
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok().and_then(|s| s.trim().parse::<u32>().ok()) {
        Some(1) if me != 0 => return "kernel.yama.ptrace_scope is 1: only a process's ancestors may trace it; run as root or set it to 0".to_string(),
        Some(2) if me != 0 => return "kernel.yama.ptrace_scope is 2: only root (CAP_SYS_PTRACE) may trace".to_string(),
        Some(3) => return "kernel.yama.ptrace_scope is 3: ptrace is disabled on this system until the next boot".to_string(),
        _ => {}
    }
    // The same access check guards /proc/PID/exe: refused too, the process is marked not
    // dumpable and outside what this user may trace.
    if std::fs::read_link(format!("/proc/{pid}/exe")).is_err_and(|e| e.raw_os_error() == Some(libc::EACCES)) {
        return "the kernel refuses access even to its /proc files: it is marked not dumpable (a set-user-ID program, or it made itself so) and belongs to a user namespace where this user lacks CAP_SYS_PTRACE".to_string();
    }
    "ptrace(PTRACE_SEIZE) failed with EPERM: a security module (SELinux, AppArmor) or a seccomp filter forbids tracing it".to_string()
}

/// The PID tracing `pid` (0: none).
pub(crate) fn tracer_of(pid: i32) -> i32 {
    crest_proc::read(pid, "status").ok().and_then(|s| crest_proc::status_field(&s, "TracerPid").and_then(|t| t.parse().ok())).unwrap_or(0)
}

/// The error a failed dump of the scope named by `pid` is reported as (not for
/// [`DumpError::Cancelled`], which the caller tells by its reason). `shown` names the
/// destination.
pub(crate) fn dump_error(pid: i32, e: DumpError, shown: &str, left: Left) -> Error {
    let me = std::process::id() as i32;
    match &e {
        DumpError::NoProcess(p) => return Error::NoProcess(*p),
        DumpError::Claimed { by, .. } => return Error::Claimed { pid, by: by.map(|b| (b, comm_of(b))) },
        DumpError::Busy { by, .. } => return Error::Busy { pid, by: *by, name: comm_of(*by) },
        DumpError::Permission { pid: p, .. } if kernel_thread(*p) => return Error::NotPermitted { pid: *p, why: ptrace_refusal(*p), left },
        _ if ended(pid) => return Error::Ended(pid),
        DumpError::Tracer { pid: p, tracee } => return Error::Tracer { pid: *p, name: comm_of(*p), tracee: *tracee, tracee_name: comm_of(*tracee) },
        DumpError::AllSkipped { why } => return Error::AllSkipped { why: why.clone() },
        DumpError::Traced { pid: traced, by } if *by != me => {
            // A debugger (strace, gdb) checkpointed together with what it traces.
            if *by == pid || ancestors(*by).contains(&pid) {
                return Error::TracerInScope { traced: *traced, traced_name: comm_of(*traced), by: *by, name: comm_of(*by) };
            }
            if crate::tree::ptrace_policy().0 == crate::Ptraced::Allow {
                return Error::SecondTracer { pid: *traced, by: *by, name: comm_of(*by) };
            }
            return Error::Traced { pid: *traced, by: *by, name: comm_of(*by) };
        }
        DumpError::Permission { pid: p, .. } if kernel_thread(*p) || (!ended(*p) && tracer_of(*p) == 0) => return Error::NotPermitted { pid: *p, why: ptrace_refusal(*p), left },
        DumpError::Permission { .. } => {
            let tracer = tracer_of(pid);
            if tracer != 0 && tracer != me {
                return Error::Traced { pid, by: tracer, name: comm_of(tracer) };
            }
        }
        _ => {}
    }
    match e {
        DumpError::Image(crest_image::ImageError::Io(source)) => Error::Write { shown: shown.to_string(), source, left },
        e => Error::Dump { source: e, left },
    }
}
