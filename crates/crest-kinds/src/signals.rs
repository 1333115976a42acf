//! Signal dispositions and pending signals of a process.
//!
//! Dump: for each signal `/proc/PID/status` lists as caught or ignored, a remote
//! `rt_sigaction(sig, NULL, &old)` returns handler, flags, restorer and mask; pending signals
//! come with their full siginfo from `PTRACE_PEEKSIGINFO` without being dequeued.
//! Restore: the husk resets every disposition and its alternate stack, then sets the saved
//! dispositions with `rt_sigaction` before it stops (handler
//! addresses are only recorded by the kernel, so they need not be mapped yet); pending signals
//! are queued again from inside with `rt_tgsigqueueinfo`/`rt_sigqueueinfo` (allowed for any
//! `si_code` when a process signals itself) while every signal is still blocked.
use crest_image::SigAction;
use crest_ptrace::{Read, Remote};

use crate::{le_u64, KindError, Scratch};

fn mask_field(status: &str, key: &str) -> u64 {
    crest_proc::status_field(status, key).and_then(|v| u64::from_str_radix(v, 16).ok()).unwrap_or(0)
}

/// The signals whose dispositions are read: every caught or ignored one.
fn handled(status: &str) -> Vec<u32> {
    let set = mask_field(status, "SigCgt") | mask_field(status, "SigIgn");
    (1..=64u32).filter(|&s| set & (1 << (s - 1)) != 0 && s != libc::SIGKILL as u32 && s != libc::SIGSTOP as u32).collect()
}

/// Queues the reads of the dispositions of `signos`, each into its own 32 bytes from `at`.
fn queue_actions(remote: &mut Remote<'_>, at: u64, signos: &[u32]) -> Vec<Read> {
    signos.iter().enumerate().map(|(k, &signo)| remote.queue_read(libc::SYS_rt_sigaction, &[u64::from(signo), 0, at + 32 * k as u64, 8])).collect()
}

/// The dispositions of `signos` once the reads [`queue_actions`] queued have run, `b` what
/// they wrote.
fn take_actions(remote: &mut Remote<'_>, b: &[u8], signos: &[u32], reads: &[Read]) -> Result<Vec<SigAction>, KindError> {
    for (&signo, &r) in signos.iter().zip(reads) {
        remote.take(&format!("reading the action of signal {signo}"), r)?;
    }
    Ok(signos
        .iter()
        .enumerate()
        .map(|(k, &signo)| SigAction { signo, handler: le_u64(b, 32 * k), flags: le_u64(b, 32 * k + 8), restorer: le_u64(b, 32 * k + 16), mask: le_u64(b, 32 * k + 24) })
        .collect())
}

/// Reads the dispositions of every caught or ignored signal, each into its own 32 bytes of
/// the scratch page (64 of them fit), all in one go where the process has a batch area.
pub fn dump_actions(remote: &mut Remote<'_>, scratch: &Scratch, status: &str) -> Result<Vec<SigAction>, KindError> {
    let signos = handled(status);
    let reads = queue_actions(remote, scratch.addr, &signos);
    remote.flush()?;
    let b = if signos.is_empty() { Vec::new() } else { scratch.read(0, 32 * signos.len())? };
    take_actions(remote, &b, &signos, &reads)
}

/// Bit `signo - 1` set: the restarting program's action for `signo` is not the default one
/// (handler, flags, restorer and mask not all zero), as [`note_inherited_actions`] found it.
static INHERITED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Whether [`INHERITED`] holds what the husks inherit.
static NOTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// In the restarting program, before it forks the husks: notes which signal actions it has
/// that are not the default one, which every husk inherits, so that each husk resets only
/// those (a few, rather than all 64 with one call each).
pub fn note_inherited_actions() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut set = 0u64;
    for signo in 1..=64u32 {
        // A number the kernel does not accept has no action to reset.
        if crest_ptrace::sys::sigaction_raw(signo).is_ok_and(|a| a != (0, 0, 0, 0)) {
            set |= 1 << (signo - 1);
        }
    }
    INHERITED.store(set, Relaxed);
    NOTED.store(true, Relaxed);
}

/// Inside the husk: sets the saved dispositions on itself. Everything the husk inherited from
/// the restarting program (its own handlers, its alternate stack) is reset first, so a signal
/// the process left at its default keeps the default: every action that is not the default,
/// as noted before the forks ([`note_inherited_actions`]), or all of them.
pub fn prepare_actions(actions: &[SigAction]) -> Result<(), String> {
    use std::sync::atomic::Ordering::Relaxed;
    let inherited = if NOTED.load(Relaxed) { INHERITED.load(Relaxed) } else { u64::MAX };
    for signo in 1..=64u32 {
        if inherited & (1 << (signo - 1)) == 0 || signo == libc::SIGKILL as u32 || signo == libc::SIGSTOP as u32 || actions.iter().any(|a| a.signo == signo) {
            continue;
        }
        // A number the kernel does not accept has nothing to reset.
        let _ = crest_ptrace::sys::set_sigaction_raw(signo, 0, 0, 0, 0);
    }
    crest_ptrace::sys::disable_sigaltstack().map_err(|e| format!("turning off the alternate signal stack: {e}"))?;
    for a in actions {
        crest_ptrace::sys::set_sigaction_raw(a.signo, a.handler, a.flags, a.restorer, a.mask).map_err(|e| format!("restoring the action of signal {}: {e}", a.signo))?;
    }
    Ok(())
}

/// Queues `infos` again inside the husk: to thread `tid` when given, else to the process.
pub fn restore_pending(remote: &mut Remote<'_>, scratch: &Scratch, pid: i32, tid: Option<i32>, infos: &[Vec<u8>]) -> Result<(), KindError> {
    for info in infos {
        let signo = u64::from(u32::from_le_bytes([info[0], info[1], info[2], info[3]]));
        let at = scratch.write(0, info)?;
        let what = format!("queueing pending signal {signo} again");
        match tid {
            Some(t) => remote.call(&what, libc::SYS_rt_tgsigqueueinfo, &[pid as u64, t as u64, signo, at])?,
            None => remote.call(&what, libc::SYS_rt_sigqueueinfo, &[pid as u64, signo, at])?,
        };
    }
    Ok(())
}

use crate::process::{FillCx, HuskCx, ProcessKind, Stage};

/// The signal dispositions, set inside the husk ([`prepare_actions`]).
pub struct Actions;

impl ProcessKind for Actions {
    fn name(&self) -> &'static str {
        "signal actions"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["sigactions"]
    }
    fn stage(&self) -> Stage {
        Stage::Husk
    }
    fn dumps(&self) -> bool {
        true
    }
    fn dump_queue(&self, cx: &mut crate::process::CollectCx<'_, '_>) -> Result<(), KindError> {
        let signos = handled(cx.status);
        if let Some(at) = cx.room(32 * signos.len() as u64) {
            let reads = queue_actions(cx.remote, at, &signos);
            cx.queued(self.name(), at, reads);
        }
        Ok(())
    }
    fn dump(&self, cx: &mut crate::process::CollectCx<'_, '_>) -> Result<(), KindError> {
        cx.out.sigactions = match cx.reads.remove(self.name()) {
            Some((at, reads)) => {
                let signos = handled(cx.status);
                let b = cx.bytes(at, 32 * signos.len())?.to_vec();
                take_actions(cx.remote, &b, &signos, &reads)?
            }
            None => dump_actions(cx.remote, cx.scratch, cx.status)?,
        };
        Ok(())
    }
    fn prepare(&self, cx: &mut HuskCx<'_>) -> Result<(), String> {
        prepare_actions(&cx.p.sigactions)
    }
}

/// The signals pending for the whole process, queued again ([`restore_pending`]).
pub struct Pending;

impl ProcessKind for Pending {
    fn name(&self) -> &'static str {
        "pending signals"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["shared_pending", "threads.pending"]
    }
    fn stage(&self) -> Stage {
        Stage::Traced
    }
    fn dumps(&self) -> bool {
        true
    }
    fn dump(&self, cx: &mut crate::process::CollectCx<'_, '_>) -> Result<(), KindError> {
        // Read without dequeuing them.
        cx.out.shared_pending = cx.remote.tracee.pending_signals(true)?;
        Ok(())
    }
    fn after(&self) -> &'static [&'static str] {
        // Any thread may take a signal sent to the process: once they all exist. Last, after
        // the credentials and flags, so that no later remote call meets them.
        &[crate::process::THREADS, "credentials", "leader attributes", "dumpable"]
    }
    fn restore(&self, cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
        restore_pending(cx.remote, cx.scratch, cx.pid, None, &cx.p.shared_pending)
    }
}
