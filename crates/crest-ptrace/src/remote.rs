//! Running system calls inside a stopped tracee.
//!
//! No code is injected. The target's vDSO already contains `syscall` instructions (its fallback
//! paths); [`find_syscall_insn`] locates one. [`Remote::syscall`] points the thread's registers at
//! it with the syscall number and arguments, sets `orig_rax = -1` so the kernel applies no syscall
//! restart logic to the borrowed registers, and resumes the thread with `PTRACE_SYSCALL` twice:
//! once to the syscall-enter stop, once to the syscall-exit stop, where `rax` holds the result
//! and the thread has not yet executed another user instruction. The caller restores the
//! thread's own registers when done.
//!
//! The caller must keep the thread's signals blocked (`PTRACE_SETSIGMASK`) while it borrows the
//! thread, so that no handler runs on the borrowed registers.
use crate::tracee::{Regs, StopKind, Tracee};
use crate::{mem, RemoteResult, TraceError};

/// Finds a `syscall` instruction (0f 05) in `start..end` of process `pid` (its vDSO).
pub fn find_syscall_insn(pid: i32, start: u64, end: u64) -> Result<u64, TraceError> {
    let mut code = vec![0u8; (end - start) as usize];
    mem::read_exact(pid, start, &mut code)?;
    code.windows(2).position(|w| w == [0x0f, 0x05]).map(|off| start + off as u64).ok_or_else(|| TraceError::Unexpected { tid: pid, what: "no syscall instruction found in the vDSO".into() })
}

/// A stopped thread borrowed to run syscalls.
pub struct Remote<'a> {
    /// The thread.
    pub tracee: &'a Tracee,
    syscall_ip: u64,
    base: Regs,
    /// Number of syscalls run, for statistics.
    pub count: u64,
    /// `PTRACE_GETEVENTMSG` of a ptrace event during the last syscall (a new thread's id).
    pub event_msg: Option<u64>,
    /// `SIGSTOP`s the thread dequeued on its way to a syscall, and that were discarded (a
    /// stopped process keeps a `SIGSTOP` sent to it pending; it cannot be blocked).
    pub stops: u32,
}

impl<'a> Remote<'a> {
    /// Borrows `tracee`, whose registers are `base`, to run syscalls at `syscall_ip`.
    pub fn new(tracee: &'a Tracee, syscall_ip: u64, base: Regs) -> Self {
        Remote { tracee, syscall_ip, base, count: 0, event_msg: None, stops: 0 }
    }

    /// Where the `syscall` instruction is.
    pub fn syscall_ip(&self) -> u64 {
        self.syscall_ip
    }

    /// Changes where the `syscall` instruction is (after the vDSO moved).
    pub fn set_syscall_ip(&mut self, ip: u64) {
        self.syscall_ip = ip;
    }

    /// Runs syscall `nr` with up to six arguments inside the tracee. The outer `Result` is the
    /// tracer's; the inner one is the syscall's (`Err(errno)` for a negative return).
    pub fn syscall(&mut self, nr: libc::c_long, args: &[u64]) -> RemoteResult {
        let mut r = self.base;
        let a = |i: usize| args.get(i).copied().unwrap_or(0);
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        r.rdi = a(0);
        r.rsi = a(1);
        r.rdx = a(2);
        r.r10 = a(3);
        r.r8 = a(4);
        r.r9 = a(5);
        r.rip = self.syscall_ip;
        let t = self.tracee;
        t.set_regs(&r)?;
        self.event_msg = None;
        let mut stops = 0;
        while stops < 2 {
            t.syscall_step()?;
            match t.wait_stop()? {
                StopKind::Syscall => stops += 1,
                // Before the syscall is entered, the thread passes through the kernel's signal
                // path, where a process stopped by job control traps once more (the stop that
                // `PTRACE_SEIZE` of a stopped thread leaves pending) and dequeues a `SIGSTOP`
                // sent to it while it was stopped (all other signals are blocked). No user
                // instruction has run: go on to the syscall. The `SIGSTOP` is discarded and
                // counted; whoever borrows the thread stops the process again when it lets it go.
                StopKind::Event if stops == 0 => {}
                StopKind::Signal(libc::SIGSTOP) if stops == 0 => self.stops += 1,
                // clone/fork/exec events stop between entry and exit; note what they report.
                StopKind::OtherEvent(_) => self.event_msg = Some(t.event_msg()?),
                other => return Err(TraceError::Unexpected { tid: t.tid, what: format!("{other:?} instead of a syscall stop in remote syscall {nr}") }),
            }
        }
        self.count += 1;
        let ret = t.regs()?.rax as i64;
        Ok(if (-4095..0).contains(&ret) { Err(-ret as i32) } else { Ok(ret as u64) })
    }

    /// Like [`Remote::syscall`], turning a failed syscall into a [`TraceError`] that names `what`.
    pub fn call(&mut self, what: &str, nr: libc::c_long, args: &[u64]) -> Result<u64, TraceError> {
        self.syscall(nr, args)?.map_err(|e| TraceError::Sys { what: format!("{what} (inside pid {})", self.tracee.tid), err: std::io::Error::from_raw_os_error(e) })
    }
}
