//! Per-process attributes: current and root directory, umask, personality, resource limits,
//! credentials and the command name.
//!
//! Dump reads `/proc/PID/{cwd,root,status,personality}` and `prlimit`. Restore sets directory,
//! umask and personality inside the husk before it stops, and the limits from outside with
//! `prlimit` at the end (so that a low limit cannot get in the way of the restore itself).
//! Credentials are read here and restored by [`crate::attrs::restore_creds`]: the restored
//! process gets its saved uids, gids, groups and capability sets, never more (a `cr_restart`
//! given `CAP_CHECKPOINT_RESTORE` by its administrator does not pass it on); `cr_restart`
//! refuses an image whose credentials its user could not have had.
use crest_image::{Creds, Process, Rlimit};

use crate::KindError;

/// What this module saves of a process.
#[derive(Debug, Clone, Default)]
pub struct TaskState {
    /// Current directory.
    pub cwd: String,
    /// It was deleted: its identity and what it was.
    pub cwd_deleted: Option<(u64, crest_image::Ghost)>,
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
        ..Default::default()
    };
    let mut creds = creds;
    crate::attrs::capabilities(status, &mut creds);
    let (cwd, root) = (crest_proc::readlink(pid, "cwd")?, crest_proc::readlink(pid, "root")?);
    if root.ends_with(" (deleted)") {
        return Err(KindError::Unsupported(format!("PID {pid}: its root directory {root} was deleted; that is not supported")));
    }
    // A deleted working directory is made again, empty, at restart (`crate::fd::ghost`).
    let (cwd, cwd_deleted) = match cwd.strip_suffix(" (deleted)") {
        Some(path) => {
            let md = std::fs::metadata(format!("/proc/{pid}/cwd")).map_err(|e| KindError::io(format!("PID {pid}: its deleted working directory {cwd}"), e))?;
            (path.to_string(), Some(crate::fd::ghost_of(&md)))
        }
        None => (cwd, None),
    };
    Ok(TaskState { cwd, cwd_deleted, root, umask, personality, rlimits, creds })
}

/// Inside the husk: root, directory, umask, personality and name.
pub fn prepare(p: &Process, cwd: Option<&str>) -> Result<(), String> {
    // The directory first: its path is seen from the restarter's root, not from the new one.
    // None: entered already (a deleted one, see `crate::fd::enter_deleted_cwd`).
    if let Some(cwd) = cwd {
        std::env::set_current_dir(cwd).map_err(|e| format!("changing directory to {cwd}: {e}"))?;
    }
    if p.root != "/" {
        crest_ptrace::sys::chroot(&p.root).map_err(|e| format!("changing root to {}: {e}", p.root))?;
    }
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

/// Directories, umask, personality and name, set inside the husk ([`prepare`]).
pub struct Task;

impl crate::process::ProcessKind for Task {
    fn name(&self) -> &'static str {
        "task"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["cwd", "cwd_deleted", "root", "umask", "personality", "threads.comm"]
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Husk
    }
    fn after(&self) -> &'static [&'static str] {
        // The descriptors' files are opened by the paths seen from the restarter's root and
        // directory, before they change.
        &["descriptors"]
    }
    fn prepare(&self, cx: &mut crate::process::HuskCx<'_>) -> Result<(), String> {
        prepare(cx.p, cx.cwd)
    }
}

/// The resource limits, set from outside ([`restore_rlimits`]).
pub struct Rlimits;

impl crate::process::ProcessKind for Rlimits {
    fn name(&self) -> &'static str {
        "rlimits"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["rlimits"]
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // A low limit must not get in the way of the restore itself: the mappings (address
        // space, locked memory), the threads (processes per user).
        &["memory", crate::process::THREADS]
    }
    fn restore(&self, cx: &mut crate::process::FillCx<'_, '_>) -> Result<(), KindError> {
        restore_rlimits(cx.pid, &cx.p.rlimits)
    }
}
