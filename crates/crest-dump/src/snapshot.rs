//! A copy-on-write snapshot of a frozen process's memory, so that it can run on while its pages
//! are saved.
//!
//! While the process is frozen, a remote `clone` with no flags and no exit signal forks a copy
//! of it: the kernel copies the page tables and shares every private page copy-on-write, so the
//! copy's memory is the process's memory at that instant, whatever the process writes later.
//! `PTRACE_O_TRACECLONE` makes the copy ours and stops it before it runs one instruction. The
//! process is let go at once and its pages are read from the copy. Then the copy is killed and,
//! in one short stop of the leader, reaped from inside (a remote `wait4`): having no exit
//! signal, it never raised SIGCHLD, and a plain `wait` in the process never saw it.
//!
//! Not in a snapshot: shared mappings (they are the same pages in both, so they are read while
//! the process is frozen) and mappings marked `MADV_DONTFORK` or `MADV_WIPEONFORK` (absent or
//! empty in the copy; read while frozen too).
use crest_image::{vma_flags, Vma, VmaBacking};
use crest_ptrace::{Remote, StopKind, Tracee};

use crate::DumpError;

/// `madv` bits whose pages a forked copy does not have as they are.
const NOT_INHERITED: u32 = crest_image::madv_flags::DONTFORK | crest_image::madv_flags::WIPEONFORK;

/// Whether the pages of `v` must be read from the frozen process itself.
pub fn read_while_frozen(v: &Vma) -> bool {
    v.flags & (vma_flags::SHARED | vma_flags::AIO) != 0 || matches!(v.backing, VmaBacking::SharedAnon { .. }) || v.madv & NOT_INHERITED != 0
}

/// The stopped copy.
pub struct Snapshot {
    /// The copy, traced by us and stopped.
    pub child: Tracee,
    /// The process it was forked from.
    pub parent: i32,
}

/// Forks the copy through `remote` (running on the frozen leader `leader`).
pub fn take(remote: &mut Remote<'_>) -> Result<Snapshot, DumpError> {
    let leader = remote.tracee;
    leader.set_options(libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_TRACECLONE)?;
    // clone(flags = 0: no exit signal; stack pointer 16; parent_tid, child_tid, tls unused).
    // The copy must never run: it is created stopped and traced, and killed with its tracer
    // (PTRACE_O_EXITKILL, set at once). Should it be let go all the same, in the moment before
    // that, it would return into the vDSO with every signal blocked and an unmapped stack, and
    // die at its first stack access instead of running a second copy of the program.
    let r = remote.call("forking a copy-on-write snapshot", libc::SYS_clone, &[0, 16, 0, 0, 0]);
    leader.set_options(libc::PTRACE_O_TRACESYSGOOD)?;
    let child = Tracee::adopt(r? as i32);
    child.wait_event()?;
    child.set_options(libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL)?;
    Ok(Snapshot { child, parent: leader.tid })
}

impl Snapshot {
    /// Kills the copy and has the process reap it. Best effort: when the process is gone or
    /// traced by someone else by now, the copy stays a zombie until the process exits.
    pub fn discard(self) {
        let pid = self.child.tid;
        let _ = crest_ptrace::sys::kill(pid, libc::SIGKILL);
        while self.child.wait_stop().is_ok() {}
        let _ = reap_inside(self.parent, pid);
    }
}

/// Stops only the leader of `parent` for a moment and runs `wait4(child, WNOHANG | __WALL)` in it.
fn reap_inside(parent: i32, child: i32) -> Result<(), DumpError> {
    let t = Tracee::seize(parent)?;
    t.interrupt()?;
    loop {
        match t.wait_stop()? {
            StopKind::Event => break,
            // A signal on its way to the process goes on to it.
            StopKind::Signal(sig) => t.cont(sig)?,
            _ => t.cont(0)?,
        }
    }
    let regs = t.regs()?;
    let mask = t.sigmask()?;
    let result = (|| -> Result<(), DumpError> {
        let Some(ip) = crate::freeze::vdso_syscall(parent)? else { return Ok(()) };
        t.set_sigmask(!0)?;
        let mut remote = Remote::new(&t, ip, regs);
        remote.call("reaping the snapshot", libc::SYS_wait4, &[child as u64, 0, (libc::WNOHANG | libc::__WALL) as u64, 0])?;
        Ok(())
    })();
    t.set_regs(&regs)?;
    t.set_sigmask(mask)?;
    t.park()?;
    t.detach(0)?;
    result
}
