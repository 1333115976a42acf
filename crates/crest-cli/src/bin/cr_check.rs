//! `cr_check`: whether this kernel and the calling user's privileges allow checkpoint and
//! restart. It is what loading BLCR's kernel modules was for: crest needs no module, but it
//! needs ptrace, a few `CONFIG_CHECKPOINT_RESTORE` interfaces and, for some features,
//! capabilities.
//!
//! Every check is a real probe, not a reading of the kernel config: a child is forked, seized
//! with ptrace, stopped, read (registers, XSAVE, rseq, memory, pagemap), made to run one system
//! call through its own vDSO, and killed; `clone3` is asked for this process's own PID (which
//! fails with `EEXIST` when PIDs may be chosen, `EPERM` when not, and creates nothing); the
//! other interfaces are called in ways that change nothing. Each line is OK, WARN (works, with
//! a limit, or a feature for later is unavailable) or MISSING (checkpoint or restart cannot
//! work), with what to change. Exit status 0 when nothing is MISSING, 1 otherwise, 255 for a
//! usage error.
use std::fmt::Write as _;
use std::os::fd::AsRawFd;

use crest_ptrace::husk::{self, SpawnError};
use crest_ptrace::{find_syscall_insn, sys, TraceError, Tracee};

/// The oldest kernel with everything crest calls unconditionally
/// (`PTRACE_GET_RSEQ_CONFIGURATION`, 5.13; `pidfd_getfd`, 5.6; `clone3` with `set_tid`, 5.5).
const MIN_KERNEL: (u32, u32) = (5, 13);

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_NET_ADMIN: u32 = 12;
const CAP_CHECKPOINT_RESTORE: u32 = 40;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Ok,
    Warn,
    Missing,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Missing => "MISSING",
        }
    }
}

/// One line of the report.
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    /// What to change, for WARN and MISSING.
    fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check { name, status: Status::Ok, detail: detail.into(), fix: None }
}

fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, status: Status::Warn, detail: detail.into(), fix: Some(fix.into()) }
}

fn missing(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, status: Status::Missing, detail: detail.into(), fix: Some(fix.into()) }
}

/// What the calling process is allowed, read once from `/proc/self/status` and `/proc/sys`.
struct Env {
    uid: u32,
    cap_eff: u64,
    seccomp: u32,
    yama: Option<u32>,
    /// The `cr_restart` installed beside this `cr_check`, when it has a file capability that
    /// allows choosing PIDs (the administrator's guide's way to avoid root).
    capable_restart: Option<std::path::PathBuf>,
}

impl Env {
    fn read() -> Env {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |k: &str| crest_proc::status_field(&status, k).map(str::to_string);
        Env {
            uid: field("Uid").and_then(|v| v.split_whitespace().nth(1).and_then(|u| u.parse().ok())).unwrap_or_else(sys::euid),
            cap_eff: field("CapEff").and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).unwrap_or(0),
            seccomp: field("Seccomp").and_then(|v| v.trim().parse().ok()).unwrap_or(0),
            yama: sysctl("kernel/yama/ptrace_scope"),
            capable_restart: std::env::current_exe().ok().and_then(|exe| {
                let restart = exe.with_file_name("cr_restart");
                let caps = sys::file_capabilities(&restart).ok()??;
                (caps & ((1 << CAP_CHECKPOINT_RESTORE) | (1 << CAP_SYS_ADMIN)) != 0).then_some(restart)
            }),
        }
    }

    fn has(&self, cap: u32) -> bool {
        self.cap_eff & (1 << cap) != 0
    }

    fn can_restore_pids(&self) -> bool {
        self.has(CAP_CHECKPOINT_RESTORE) || self.has(CAP_SYS_ADMIN)
    }
}

fn sysctl(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/sys/{name}")).ok()?.trim().parse().ok()
}

/// `(major, minor)` of a kernel release string such as `6.18.44-generic`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn cap_names(caps: u64) -> String {
    const NAMES: &[(u32, &str)] =
        &[(CAP_SYS_PTRACE, "CAP_SYS_PTRACE"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE"), (CAP_NET_ADMIN, "CAP_NET_ADMIN"), (24, "CAP_SYS_RESOURCE")];
    let v: Vec<&str> = NAMES.iter().filter(|(c, _)| caps & (1 << c) != 0).map(|(_, n)| *n).collect();
    if v.is_empty() {
        "none of those crest uses".into()
    } else {
        v.join(", ")
    }
}

fn main() {
    let m = crest_cli::parse_args(crest_cli::commands::check());
    let env = Env::read();
    let (release, _) = sys::uname();
    let checks = run_checks(&env, &release);
    let ready = checks.iter().all(|c| c.status != Status::Missing);
    let pid_restore = checks.iter().any(|c| c.name == "PID restore" && c.status == Status::Ok);
    let verdict = match (ready, pid_restore) {
        (false, _) => "not ready: checkpoint or restart cannot work here (see MISSING above)".to_string(),
        (true, true) => "ready: checkpoint and restart work for this user".to_string(),
        (true, false) => "ready: checkpoint and restart work for this user, restarting with --no-restore-pid".to_string(),
    };
    let out = if m.get_flag("json") {
        let list: Vec<serde_json::Value> = checks.iter().map(|c| serde_json::json!({ "name": c.name, "status": c.status.word(), "detail": c.detail, "fix": c.fix })).collect();
        let v = serde_json::json!({
            "version": crest_cli::VERSION,
            "kernel": release,
            "uid": env.uid,
            "ready": ready,
            "pid_restore": pid_restore,
            "verdict": verdict,
            "checks": list,
        });
        format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
    } else {
        let mut o = String::new();
        let _ = writeln!(o, "crest {} on Linux {release} ({}), uid {}", crest_cli::VERSION, std::env::consts::ARCH, env.uid);
        for c in &checks {
            let _ = writeln!(o, "{:<8} {:<19} {}", c.status.word(), c.name, c.detail);
            if let Some(f) = &c.fix {
                let _ = writeln!(o, "{:<8} {:<19} to change: {f}", "", "");
            }
        }
        let _ = writeln!(o, "{verdict}");
        o
    };
    if !m.get_flag("quiet") {
        // A closed pipe (`cr_check | head`) is not worth a message.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    }
    std::process::exit(if ready { 0 } else { 1 })
}

fn run_checks(env: &Env, release: &str) -> Vec<Check> {
    let mut v = Vec::new();
    v.push(if std::env::consts::ARCH == "x86_64" { ok("architecture", "x86_64") } else { missing("architecture", std::env::consts::ARCH, "crest supports x86_64 only") });
    v.push(match kernel_version(release) {
        Some(k) if k >= MIN_KERNEL => ok("kernel", format!("{}.{} (crest needs {}.{} or later)", k.0, k.1, MIN_KERNEL.0, MIN_KERNEL.1)),
        _ => missing("kernel", format!("{release}: crest needs Linux {}.{} or later", MIN_KERNEL.0, MIN_KERNEL.1), "boot a newer kernel (any distribution kernel since 2021 will do)"),
    });
    v.push(ok("capabilities", format!("effective: {}", cap_names(env.cap_eff))));
    v.push(seccomp(env));
    v.push(ptrace_scope(env));
    v.extend(child_probes(env));
    v.push(pid_restore(env));
    v.push(match sys::mm_map_size() {
        Ok(n) => ok("PR_SET_MM_MAP", format!("available ({n}-byte map): brk, stack, arguments and auxv are restored")),
        Err(e) => missing("PR_SET_MM_MAP", format!("prctl(PR_SET_MM_MAP_SIZE) failed: {e}"), "use a kernel built with CONFIG_CHECKPOINT_RESTORE=y (every mainstream distribution's is)"),
    });
    v.push(if env.can_restore_pids() || env.capable_restart.is_some() {
        ok("exe link", "restored processes get their saved /proc/PID/exe")
    } else {
        warn("exe link", "restored processes keep cr_restart's /proc/PID/exe (setting it needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN)", "the same as for PID restore; nothing else is affected")
    });
    v.push(match sys::madvise_known(libc::MADV_POPULATE_WRITE) {
        Ok(()) => ok("MADV_POPULATE_WRITE", "restores map their pages in at once"),
        Err(_) => warn("MADV_POPULATE_WRITE", "not known to this kernel (before 5.14): restores are slower", "a 5.14 or later kernel"),
    });
    v.push(kcmp());
    v.push(userfaultfd());
    v.push(match sys::tcp_repair_allowed() {
        Ok(()) => ok("TCP repair", "allowed (for TCP connections, which crest does not save yet)"),
        Err(e) => warn("TCP repair", format!("TCP_REPAIR refused ({e}); crest does not save sockets yet, so nothing is lost today"), "restoring TCP connections will need CAP_NET_ADMIN"),
    });
    v.push(vdso_layout());
    v
}

fn seccomp(env: &Env) -> Check {
    match env.seccomp {
        0 => ok("seccomp", "no filter"),
        2 => warn(
            "seccomp",
            "a seccomp filter is in force (a container runtime's?): the probes below show what it lets through",
            "if a probe below fails, run with a profile that allows ptrace, process_vm_readv, pidfd_getfd, kcmp and clone3",
        ),
        n => warn("seccomp", format!("mode {n}"), "run crest outside strict seccomp mode"),
    }
}

fn ptrace_scope(env: &Env) -> Check {
    let cap = env.has(CAP_SYS_PTRACE);
    let others = if cap { "; CAP_SYS_PTRACE: other users' processes too" } else { "; other users' processes need CAP_SYS_PTRACE" };
    match env.yama {
        None => ok("ptrace scope", format!("no Yama: a user may checkpoint their own processes{others}")),
        Some(0) => ok("ptrace scope", format!("kernel.yama.ptrace_scope = 0: a user may checkpoint their own processes{others}")),
        Some(s @ (1 | 2)) if cap => ok("ptrace scope", format!("kernel.yama.ptrace_scope = {s}, and CAP_SYS_PTRACE is held: any process may be checkpointed")),
        Some(1) => warn(
            "ptrace scope",
            "kernel.yama.ptrace_scope = 1: only a process's ancestors may trace it, so cr_checkpoint can save only processes it started",
            "set kernel.yama.ptrace_scope = 0 (a file in /etc/sysctl.d/), or give the user CAP_SYS_PTRACE (see the administrator's guide)",
        ),
        Some(2) => missing(
            "ptrace scope",
            "kernel.yama.ptrace_scope = 2: only CAP_SYS_PTRACE may trace",
            "give the user CAP_SYS_PTRACE (see the administrator's guide), or set kernel.yama.ptrace_scope = 0 or 1",
        ),
        Some(s) => {
            missing("ptrace scope", format!("kernel.yama.ptrace_scope = {s}: ptrace is disabled until reboot"), "set kernel.yama.ptrace_scope to 0 at boot (a file in /etc/sysctl.d/) and reboot")
        }
    }
}

/// The probes that need a traced child: ptrace itself, rseq, remote syscalls,
/// `process_vm_readv`, pagemap, `pidfd_getfd`.
fn child_probes(env: &Env) -> Vec<Check> {
    let why_refused = |e: &dyn std::fmt::Display| {
        let fix = if env.seccomp == 2 {
            "a seccomp filter forbids ptrace: run with a profile that allows it (see the administrator's guide)"
        } else {
            "allow ptrace: kernel.yama.ptrace_scope 0 or 1, or CAP_SYS_PTRACE; check LSM policies (SELinux deny_ptrace, AppArmor)"
        };
        missing("ptrace", format!("a child could not be traced: {e}"), fix)
    };
    // A descriptor the child inherits, to fetch back with pidfd_getfd.
    let marker = std::fs::File::open("/").ok();
    let tracee = match husk::spawn(None, Ok) {
        Ok(t) => t,
        Err(e) => return vec![why_refused(&e)],
    };
    let pid = tracee.tid;
    let checks = probe_tracee(&tracee, marker.as_ref().map(AsRawFd::as_raw_fd)).unwrap_or_else(|e| vec![why_refused(&e)]);
    let _ = sys::kill(pid, libc::SIGKILL);
    let _ = sys::wait_child(pid);
    checks
}

fn probe_tracee(t: &Tracee, marker: Option<i32>) -> Result<Vec<Check>, TraceError> {
    let pid = t.tid;
    let regs = t.regs()?;
    let xsave = t.xstate()?;
    let mut v = vec![ok("ptrace", format!("a child was seized, stopped and read (registers, {} bytes of XSAVE state)", xsave.len()))];
    v.push(match t.rseq() {
        Ok(_) => ok("rseq", "PTRACE_GET_RSEQ_CONFIGURATION works"),
        Err(e) => missing("rseq", format!("PTRACE_GET_RSEQ_CONFIGURATION failed: {e}"), "a 5.13 or later kernel"),
    });
    let mut word = [0u8; 8];
    v.push(match crest_ptrace::mem::read_exact(pid, regs.rsp, &mut word) {
        Ok(()) => ok("process_vm_readv", "reads the child's memory"),
        Err(e) => missing("process_vm_readv", e.to_string(), "use a kernel built with CONFIG_CROSS_MEMORY_ATTACH=y"),
    });
    v.push(
        match crest_proc::Pagemap::open(pid).and_then(|pm| {
            let mut e = Vec::new();
            pm.entries(regs.rsp & !0xfff, (regs.rsp & !0xfff) + 4096, &mut e).map(|()| e)
        }) {
            Ok(_) => ok("pagemap", "/proc/PID/pagemap is readable"),
            Err(e) => missing("pagemap", e.to_string(), "use a kernel built with CONFIG_PROC_PAGE_MONITOR=y"),
        },
    );
    v.push(remote_syscall(t, regs));
    v.push(match (sys::pidfd_open(pid), marker) {
        (Ok(pidfd), Some(fd)) => match sys::pidfd_getfd(pidfd.as_raw_fd(), fd) {
            Ok(_) => ok("pidfd_getfd", "copies the child's descriptors (for the data buffered in pipes)"),
            Err(e) => warn("pidfd_getfd", format!("{e}: pipes holding data cannot be saved"), "a 5.6 or later kernel, and a seccomp profile that allows pidfd_getfd"),
        },
        (Err(e), _) => warn("pidfd_getfd", format!("{e}: pipes holding data cannot be saved"), "a 5.6 or later kernel"),
        (_, None) => ok("pidfd_getfd", "not probed (no descriptor to fetch)"),
    });
    Ok(v)
}

/// Runs `getpid` inside the stopped child through a `syscall` instruction of its vDSO.
fn remote_syscall(t: &Tracee, regs: crest_ptrace::Regs) -> Check {
    let pid = t.tid;
    let maps = crest_proc::read(pid, "maps").unwrap_or_default();
    let Some((start, end)) = maps.lines().find(|l| l.ends_with("[vdso]")).and_then(|l| {
        let (s, e) = l.split_whitespace().next()?.split_once('-')?;
        Some((u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(e, 16).ok()?))
    }) else {
        return missing("remote syscalls", "processes have no vDSO, where crest finds the syscall instruction it runs them through", "do not boot with vdso=0");
    };
    let result = find_syscall_insn(pid, start, end).and_then(|ip| {
        let mut r = crest_ptrace::Remote::new(t, ip, regs);
        let got = r.call("getpid", libc::SYS_getpid, &[]);
        t.set_regs(&regs)?;
        got
    });
    match result {
        Ok(p) if p == pid as u64 => ok("remote syscalls", "the child ran a system call for crest through its vDSO"),
        Ok(p) => missing("remote syscalls", format!("getpid inside the child returned {p}, not {pid}"), "report this as a bug"),
        Err(e) => missing("remote syscalls", e.to_string(), "check seccomp and LSM policies for ptrace"),
    }
}

fn pid_restore(env: &Env) -> Check {
    let pid_max = sysctl("kernel/pid_max").map(|m| format!(" (pid_max {m})")).unwrap_or_default();
    let fix = "run cr_restart as root or with CAP_CHECKPOINT_RESTORE (see the administrator's guide), or restart with --no-restore-pid";
    // Asking for our own PID: EEXIST proves the right to choose PIDs and creates nothing.
    match husk::spawn(Some(std::process::id() as i32), Ok) {
        Err(SpawnError::PidInUse(_)) => ok("PID restore", format!("clone3 with set_tid is allowed: restored processes keep their PIDs{pid_max}")),
        Err(SpawnError::PidNeedsPrivilege(_)) if env.capable_restart.is_some() => ok(
            "PID restore",
            format!("{} has the file capability to choose PIDs: restored processes keep their PIDs{pid_max}", env.capable_restart.as_ref().map(|p| p.display().to_string()).unwrap_or_default()),
        ),
        Err(SpawnError::PidNeedsPrivilege(_)) => warn(
            "PID restore",
            if env.can_restore_pids() {
                "clone3 with set_tid refused despite the capability (a user or PID namespace not owned by this user?)".to_string()
            } else {
                "restoring saved PIDs needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN".to_string()
            },
            fix,
        ),
        Err(e) => warn("PID restore", format!("clone3 with set_tid failed: {e}"), format!("a seccomp profile that allows clone3; or {fix}")),
        Ok(t) => {
            // Cannot happen (the PID is ours), but never leave a child behind.
            let _ = sys::kill(t.tid, libc::SIGKILL);
            let _ = sys::wait_child(t.tid);
            warn("PID restore", "clone3 created a process with this process's own PID", "report this as a bug")
        }
    }
}

fn kcmp() -> Check {
    let probe = std::fs::File::open("/").and_then(|f| {
        let me = std::process::id() as i32;
        sys::same_file(me, f.as_raw_fd(), me, f.as_raw_fd())
    });
    match probe {
        Ok(true) => ok("kcmp", "available (to tell shared open files apart in process trees)"),
        Ok(false) => warn("kcmp", "kcmp answered that a file differs from itself", "report this as a bug"),
        Err(e) => warn("kcmp", format!("{e}; not needed yet (process trees will use it)"), "use a kernel built with CONFIG_KCMP=y"),
    }
}

fn userfaultfd() -> Check {
    const UFFD_USER_MODE_ONLY: i32 = 1;
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    let sysctl_note = sysctl("vm/unprivileged_userfaultfd").map(|v| format!(" (vm.unprivileged_userfaultfd = {v})")).unwrap_or_default();
    match sys::userfaultfd_allowed(flags) {
        Ok(()) => ok("userfaultfd", format!("allowed{sysctl_note}")),
        Err(e) => match sys::userfaultfd_allowed(flags | UFFD_USER_MODE_ONLY) {
            Ok(()) => ok("userfaultfd", format!("allowed for user-space faults{sysctl_note}")),
            Err(_) => warn(
                "userfaultfd",
                format!("refused ({e}){sysctl_note}; cr_restart --lazy needs it (with CAP_SYS_PTRACE), and pre-copies fall back to a snapshot without it"),
                "set vm.unprivileged_userfaultfd = 1, or give the user CAP_SYS_PTRACE, or access to /dev/userfaultfd",
            ),
        },
    }
}

fn vdso_layout() -> Check {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let areas: Vec<String> = maps
        .lines()
        .filter_map(|l| {
            let name = l.split_whitespace().nth(5)?;
            if !matches!(name, "[vvar]" | "[vvar_vclock]" | "[vdso]") {
                return None;
            }
            let (s, e) = l.split_whitespace().next()?.split_once('-')?;
            let len = u64::from_str_radix(e, 16).ok()? - u64::from_str_radix(s, 16).ok()?;
            Some(format!("{name} {} KiB", len >> 10))
        })
        .collect();
    if areas.is_empty() {
        missing("vDSO", "this process has no vDSO", "do not boot with vdso=0")
    } else {
        ok("vDSO", format!("{}: images restore on kernels with the same layout", areas.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(kernel_version("5.13"), Some((5, 13)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("5.4.0").is_some_and(|k| k < MIN_KERNEL));
        assert!(kernel_version("6.1.0").is_some_and(|k| k >= MIN_KERNEL));
    }

    #[test]
    fn capability_names() {
        assert_eq!(cap_names(0), "none of those crest uses");
        assert_eq!(cap_names((1 << CAP_SYS_ADMIN) | (1 << CAP_CHECKPOINT_RESTORE)), "CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE");
    }
}
