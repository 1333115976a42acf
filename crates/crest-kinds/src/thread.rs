//! A thread: registers, XSAVE area, blocked mask, pending signals, `clear_child_tid`, robust
//! futex list, alternate signal stack and rseq registration.
//!
//! Dump uses ptrace (`GETREGS`, `GETREGSET(NT_X86_XSTATE)`, `GETSIGMASK`, `PEEKSIGINFO`,
//! `GET_RSEQ_CONFIGURATION`), `get_robust_list`, and remote `prctl(PR_GET_TID_ADDRESS)` and
//! `sigaltstack`. Restore sets the same from inside the husk with remote `set_tid_address`,
//! `set_robust_list`, `sigaltstack` and `rseq`; registers, XSAVE and mask are set last by the
//! restore pipeline, just before the thread is let go.
//!
//! A thread stopped inside a system call keeps `orig_rax` and the kernel's `-ERESTART*` value in
//! `rax`; the kernel's own restart rules apply when it resumes (see `crest-restore`).
use crest_image::{Regs, Rseq, Thread};
use crest_ptrace::{Remote, Tracee};

use crate::{le_u64, KindError, Scratch};

const PR_GET_TID_ADDRESS: u64 = 40;
const SS_DISABLE: i32 = 2;

macro_rules! regs_conv {
    ($($f:ident),*) => {
        /// ptrace registers to the image record.
        pub fn regs_to_image(r: &crest_ptrace::Regs) -> Regs { Regs { $($f: r.$f),* } }
        /// Image record to ptrace registers.
        pub fn regs_from_image(r: &Regs) -> crest_ptrace::Regs {
            // All fields are assigned below; start from the tracee layout's zero value.
            let mut o = crest_ptrace::Regs { $($f: 0),* };
            $(o.$f = r.$f;)*
            o
        }
    };
}
regs_conv!(r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss, fs_base, gs_base, ds, es, fs, gs);

const ERESTARTNOINTR: u64 = (-513i64) as u64;
const ERESTART_RESTARTBLOCK: u64 = (-516i64) as u64;

/// The registers to let a restored thread go with. A thread stopped in a system call the
/// kernel restarts through `restart_syscall` (`-ERESTART_RESTARTBLOCK`) would find no restart
/// state in its new process (the kernel keeps it per task) and get `EINTR`; a `poll` without
/// timeout is restarted as it was called instead (its arguments are still in the registers), so
/// that a program that never expects `EINTR` from it (one that takes its signals through a
/// signalfd, as `script` does) goes on. Other such calls (sleeps, waits with a timeout) get
/// `EINTR`, with what is left of their time, as after a signal.
pub fn regs_to_resume(r: &Regs) -> crest_ptrace::Regs {
    let mut o = regs_from_image(r);
    if o.rax == ERESTART_RESTARTBLOCK && o.orig_rax == libc::SYS_poll as u64 && (o.rdx as i32) < 0 {
        o.rax = ERESTARTNOINTR;
    }
    o
}

/// What the freeze saw of a thread before it was borrowed: its own registers and mask, and
/// signals that were dequeued while stopping it.
#[derive(Debug, Clone)]
pub struct Frozen {
    /// Registers at the stop.
    pub regs: crest_ptrace::Regs,
    /// Blocked mask at the stop.
    pub sigmask: u64,
    /// Signals taken off the queue by signal-delivery-stops during the freeze.
    pub stolen: Vec<Vec<u8>>,
}

/// Creates a thread like the one `remote` runs on (a remote `clone3` with pthread's flags,
/// with `set_tid` = `tid` when given). The caller's tracer must have `PTRACE_O_TRACECLONE` set:
/// the new thread is then traced and stopped before it runs a single instruction. Returns it.
pub fn create(remote: &mut Remote<'_>, scratch: &Scratch, tid: Option<i32>) -> Result<Tracee, KindError> {
    let flags = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD | libc::CLONE_SYSVSEM) as u64;
    let set_tid = match tid {
        Some(t) => scratch.write(1200, &t.to_le_bytes())?,
        None => 0,
    };
    // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size,
    // tls, set_tid, set_tid_size, cgroup. No stack: the thread never runs on the borrowed one.
    let args: [u64; 11] = [flags, 0, 0, 0, 0, 0, 0, 0, set_tid, u64::from(tid.is_some()), 0];
    let bytes: Vec<u8> = args.iter().flat_map(|w| w.to_le_bytes()).collect();
    let at = scratch.write(1024, &bytes)?;
    let what = match tid {
        Some(t) => format!("creating thread {t}"),
        None => "creating a thread".to_string(),
    };
    let new = remote.call(&what, libc::SYS_clone3, &[at, bytes.len() as u64])? as i32;
    let t = Tracee::adopt(new);
    t.wait_event()?;
    Ok(t)
}

/// Dumps thread `t` of process `pid`, borrowed through `remote` (which must run on `t`).
pub fn dump(t: &Tracee, remote: &mut Remote<'_>, scratch: &Scratch, pid: i32, frozen: &Frozen) -> Result<Thread, KindError> {
    let tid = t.tid;
    remote.call("reading clear_child_tid", libc::SYS_prctl, &[PR_GET_TID_ADDRESS, scratch.addr])?;
    let clear_child_tid = le_u64(&scratch.read(0, 8)?, 0);
    remote.call("reading the alternate signal stack", libc::SYS_sigaltstack, &[0, scratch.addr])?;
    let ss = scratch.read(0, 24)?;
    let altstack = (le_u64(&ss, 0), i32::from_le_bytes([ss[8], ss[9], ss[10], ss[11]]), le_u64(&ss, 16));
    let mut pending = t.pending_signals(false)?;
    pending.extend(frozen.stolen.iter().cloned());
    Ok(Thread {
        tid,
        comm: crest_proc::read(pid, &format!("task/{tid}/comm"))?.trim_end_matches('\n').to_string(),
        regs: regs_to_image(&frozen.regs),
        xsave: t.xstate()?,
        sigmask: frozen.sigmask,
        pending,
        clear_child_tid,
        robust_list: crest_ptrace::sys::robust_list(tid)?,
        altstack,
        rseq: t.rseq()?.map(|(addr, len, sig)| Rseq { addr, len, sig }),
        attrs: crate::attrs::dump_thread(remote, scratch, pid, tid)?,
    })
}

/// Restores the per-thread kernel state of `th` from inside the husk (registers excepted).
pub fn restore(remote: &mut Remote<'_>, scratch: &Scratch, pid: i32, th: &Thread) -> Result<(), KindError> {
    let mut name = th.comm.as_bytes()[..th.comm.len().min(15)].to_vec();
    name.push(0);
    let at = scratch.write(3072, &name)?;
    // Queued, and run in one go where the husk has a batch area; the scratch page holds their
    // arguments until then.
    remote.queue("setting the thread name", libc::SYS_prctl, &[libc::PR_SET_NAME as u64, at]);
    remote.queue("setting clear_child_tid", libc::SYS_set_tid_address, &[th.clear_child_tid]);
    if th.robust_list.0 != 0 {
        remote.queue("setting the robust futex list", libc::SYS_set_robust_list, &[th.robust_list.0, th.robust_list.1]);
    }
    if th.altstack.1 & SS_DISABLE == 0 {
        let mut ss = Vec::with_capacity(24);
        ss.extend_from_slice(&th.altstack.0.to_le_bytes());
        ss.extend_from_slice(&((th.altstack.1 & !1) as u32).to_le_bytes()); // SS_ONSTACK is a state, not a setting
        ss.extend_from_slice(&0u32.to_le_bytes());
        ss.extend_from_slice(&th.altstack.2.to_le_bytes());
        let at = scratch.write(0, &ss)?;
        remote.queue("setting the alternate signal stack", libc::SYS_sigaltstack, &[at, 0]);
    }
    if let Some(r) = th.rseq {
        remote.queue(format!("registering rseq at {:#x}", r.addr), libc::SYS_rseq, &[r.addr, u64::from(r.len), 0, u64::from(r.sig)]);
    }
    remote.flush()?;
    crate::signals::restore_pending(remote, scratch, pid, Some(th.tid), &th.pending)
}

/// The leader's own state: registers aside (set last), its tid address, robust list,
/// alternate stack and rseq area ([`restore`]).
pub struct Leader;

impl crate::process::ProcessKind for Leader {
    fn name(&self) -> &'static str {
        "leader thread"
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // Its areas are in the saved memory.
        &["memory"]
    }
    fn restore(&self, cx: &mut crate::process::FillCx<'_, '_>) -> Result<(), KindError> {
        restore(cx.remote, cx.scratch, cx.pid, &cx.p.threads[0])
    }
}

/// Where the restorer creates the other threads of the process ([`crate::process::THREADS`]):
/// it does nothing itself. What the threads must inherit is listed here; what needs them
/// lists this.
pub struct Threads;

impl crate::process::ProcessKind for Threads {
    fn name(&self) -> &'static str {
        crate::process::THREADS
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // Each thread starts in the saved memory and inherits the filters they share.
        &["memory", "shared seccomp"]
    }
    fn restore(&self, _cx: &mut crate::process::FillCx<'_, '_>) -> Result<(), KindError> {
        Ok(())
    }
}
