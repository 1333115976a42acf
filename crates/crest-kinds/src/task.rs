//! Per-process attributes: current and root directory, umask, personality, resource limits,
//! credentials and the command name.
//!
//! Dump reads `/proc/PID/{cwd,root,status,personality}` and `prlimit`. Restore sets directory,
//! umask and personality inside the husk before it stops, and the limits from outside with
//! `prlimit` at the end (so that a low limit cannot get in the way of the restore itself).
//! Credentials are recorded, not restored: the restored process runs with the credentials of
//! the user who runs `cr_restart`, as in BLCR, but never with a capability it did not have
//! when it was checkpointed ([`limit_capabilities`]): a `cr_restart` given
//! `CAP_CHECKPOINT_RESTORE` by its administrator does not pass it on.
use crest_image::{Creds, Process, Rlimit};
use crest_ptrace::Remote;

use crate::{KindError, Scratch};

/// Where in the scratch page the `capset` header and data go.
const CAPS_AT: u64 = 3584;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// What this module saves of a process.
#[derive(Debug, Clone, Default)]
pub struct TaskState {
    /// Current directory.
    pub cwd: String,
    /// Root directory.
    pub root: String,
    /// umask.
    pub umask: u32,
    /// personality.
    pub personality: u32,
    /// Limits.
    pub rlimits: Vec<Rlimit>,
    /// Credentials.
    pub creds: Creds,
}

fn ids(status: &str, key: &str) -> [u32; 4] {
    let mut out = [0; 4];
    if let Some(v) = crest_proc::status_field(status, key) {
        for (o, s) in out.iter_mut().zip(v.split_whitespace()) {
            *o = s.parse().unwrap_or(0);
        }
    }
    out
}

/// Reads the attributes of `pid`.
pub fn dump(pid: i32, status: &str) -> Result<TaskState, KindError> {
    let umask = crest_proc::status_field(status, "Umask").and_then(|v| u32::from_str_radix(v, 8).ok()).unwrap_or(0o022);
    let personality = u32::from_str_radix(crest_proc::read(pid, "personality")?.trim(), 16).unwrap_or(0);
    let mut rlimits = Vec::new();
    for r in 0..16u32 {
        let (cur, max) = match crest_ptrace::sys::get_rlimit(pid, r) {
            Ok(l) => l,
            // prlimit on a process with other ids needs CAP_SYS_RESOURCE; /proc does not.
            Err(e) => *crest_proc::parse_limits(&crest_proc::read(pid, "limits")?)?.get(r as usize).ok_or(e)?,
        };
        rlimits.push(Rlimit { resource: r, cur, max });
    }
    let creds = Creds {
        uid: ids(status, "Uid"),
        gid: ids(status, "Gid"),
        groups: crest_proc::status_field(status, "Groups").unwrap_or("").split_whitespace().filter_map(|g| g.parse().ok()).collect(),
        cap_eff: crest_proc::status_field(status, "CapEff").and_then(|v| u64::from_str_radix(v, 16).ok()).unwrap_or(0),
    };
    Ok(TaskState { cwd: crest_proc::readlink(pid, "cwd")?, root: crest_proc::readlink(pid, "root")?, umask, personality, rlimits, creds })
}

/// Inside the husk: root, directory, umask, personality and name.
pub fn prepare(p: &Process, cwd: &str) -> Result<(), String> {
    if p.root != "/" {
        crest_ptrace::sys::chroot(&p.root).map_err(|e| format!("changing root to {}: {e}", p.root))?;
    }
    std::env::set_current_dir(cwd).map_err(|e| format!("changing directory to {cwd}: {e}"))?;
    crest_ptrace::sys::set_umask(p.umask);
    crest_ptrace::sys::set_personality(p.personality).map_err(|e| format!("setting personality {:#x}: {e}", p.personality))?;
    if let Some(t) = p.threads.first() {
        crest_ptrace::sys::set_comm(&t.comm);
    }
    Ok(())
}

/// From outside: the resource limits of the restored process.
pub fn restore_rlimits(pid: i32, limits: &[Rlimit]) -> Result<(), KindError> {
    for l in limits {
        crest_ptrace::sys::set_rlimit(pid, l.resource, l.cur, l.max).map_err(|e| KindError::Mismatch(format!("{e} (a limit above the restarting user's hard limit needs CAP_SYS_RESOURCE)")))?;
    }
    Ok(())
}

/// Inside thread `tid` of the husk: drops every capability the saved process did not have in
/// its effective set (`saved_eff`), from the effective, permitted and inheritable sets (which
/// also clears them from the ambient set). Capabilities are per thread: call it for each
/// thread, after the last `clone3` that needed them. Does nothing when there is nothing to drop.
pub fn limit_capabilities(remote: &mut Remote<'_>, scratch: &Scratch, pid: i32, tid: i32, saved_eff: u64) -> Result<(), KindError> {
    let status = crest_proc::read(pid, &format!("task/{tid}/status"))?;
    let set = |k: &str| crest_proc::status_field(&status, k).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).unwrap_or(0);
    let (eff, prm, inh) = (set("CapEff"), set("CapPrm"), set("CapInh"));
    if (eff | prm | inh) & !saved_eff == 0 {
        return Ok(());
    }
    let (eff, prm, inh) = (eff & saved_eff, prm & saved_eff, inh & saved_eff);
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&CAP_VERSION_3.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes()); // pid 0: the calling thread
    for half in [0, 32] {
        for v in [eff, prm, inh] {
            b.extend_from_slice(&((v >> half) as u32).to_le_bytes());
        }
    }
    let at = scratch.write(CAPS_AT, &b)?;
    remote.call(&format!("dropping capabilities of thread {tid}"), libc::SYS_capset, &[at, at + 8])?;
    Ok(())
}
