//! Running system calls inside a stopped tracee.
//!
//! No code is injected. The target's vDSO already contains `syscall` instructions (its fallback
//! paths); [`find_syscall_insn`] locates one. A process that unmapped its vDSO has the bytes
//! of one in its own code ([`find_syscall_bytes`]). [`Remote::syscall`] points the thread's registers at
//! it with the syscall number and arguments, sets `orig_rax = -1` so the kernel applies no syscall
//! restart logic to the borrowed registers, and resumes the thread with `PTRACE_SYSCALL` twice:
//! once to the syscall-enter stop, once to the syscall-exit stop, where `rax` holds the result
//! and the thread has not yet executed another user instruction. The caller restores the
//! thread's own registers when done.
//!
//! The caller must keep the thread's signals blocked (`PTRACE_SETSIGMASK`) while it borrows the
//! thread, so that no handler runs on the borrowed registers.
//!
//! Each such syscall costs two stops and their wake-ups (one, once there is a batch area: see
//! below). Where many syscalls follow one another
//! and none needs the result of the one before (a restart mapping and filling a process's
//! memory), they may be queued instead ([`Remote::queue`]) and, once the caller has given an
//! area for it ([`Remote::map_batch`]), run in one go: a 67-byte loop written into that area
//! reads each call from a table beside it, makes it, stores its result and ends on `int3`.
//! That is the one piece of code crest ever writes into a process, only into a husk whose memory
//! is being replaced, and it is unmapped before the process runs.
use crate::tracee::{Regs, StopKind, Tracee};
use crate::{mem, RemoteResult, TraceError};

/// Finds a `syscall` instruction (0f 05) in `start..end` of process `pid` (its vDSO).
pub fn find_syscall_insn(pid: i32, start: u64, end: u64) -> Result<u64, TraceError> {
    let mut code = vec![0u8; (end - start) as usize];
    mem::read_exact(pid, start, &mut code)?;
    code.windows(2).position(|w| w == [0x0f, 0x05]).map(|off| start + off as u64).ok_or_else(|| TraceError::Unexpected { tid: pid, what: "no syscall instruction found in the vDSO".into() })
}

/// The address of the first bytes `0f 05` (a `syscall` instruction when jumped to) in
/// `start..end` of process `pid`, read a piece at a time; `None` when there are none.
pub fn find_syscall_bytes(pid: i32, start: u64, end: u64) -> Result<Option<u64>, TraceError> {
    const PIECE: u64 = 64 << 10;
    let mut at = start;
    let mut buf = Vec::new();
    while at < end {
        // One byte more than the piece, so that a pair across two pieces is seen.
        let len = (end - at).min(PIECE + 1);
        buf.resize(len as usize, 0);
        mem::read_exact(pid, at, &mut buf)?;
        if let Some(off) = buf.windows(2).position(|w| w == [0x0f, 0x05]) {
            return Ok(Some(at + off as u64));
        }
        at += PIECE;
    }
    Ok(None)
}

/// The loop run by [`Remote::flush`] (x86-64): `rbx` points at the table, `r12` holds the
/// number of entries; each entry is eight words, the syscall number, six arguments, and a word
/// that says whether the call may fail (bit 0) and takes the result. The loop stops after the
/// first failure of a call that may not fail, and at the end, on `int3`.
///
/// ```text
/// loop: test r12,r12 ; jz done
///       mov rax,[rbx] ; mov rdi,[rbx+8] ; mov rsi,[rbx+16] ; mov rdx,[rbx+24]
///       mov r10,[rbx+32] ; mov r8,[rbx+40] ; mov r9,[rbx+48] ; mov r13,[rbx+56]
///       syscall ; mov [rbx+56],rax ; add rbx,64 ; dec r12
///       cmp rax,-4095 ; jb loop ; test r13,1 ; jnz loop
/// done: int3
/// ```
pub(crate) const BATCH_CODE: [u8; 67] = [
    0x4d, 0x85, 0xe4, 0x74, 0x3d, 0x48, 0x8b, 0x03, 0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10, 0x48, 0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30,
    0x4c, 0x8b, 0x6b, 0x38, 0x0f, 0x05, 0x48, 0x89, 0x43, 0x38, 0x48, 0x83, 0xc3, 0x40, 0x49, 0xff, 0xcc, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x72, 0xc7, 0x49, 0xf7, 0xc5, 0x01, 0x00, 0x00, 0x00,
    0x75, 0xbe, 0xcc,
];

/// Size of the area [`Remote::map_batch`] maps: a page of code, then the table.
pub const BATCH_LEN: u64 = 4 * 4096;
/// Entries of the table that fit in the area.
const BATCH_ENTRIES: usize = ((BATCH_LEN - 4096) / 64) as usize;

/// Up to six syscall arguments, the missing ones 0.
fn six(args: &[u64]) -> [u64; 6] {
    let mut a = [0u64; 6];
    for (d, s) in a.iter_mut().zip(args) {
        *d = *s;
    }
    a
}

/// A syscall queued by [`Remote::queue`].
struct Queued {
    what: String,
    nr: libc::c_long,
    args: [u64; 6],
    /// A failure is ignored (advice the kernel may not take).
    may_fail: bool,
    /// The result it must return (a read of a known length), besides not failing.
    expect: Option<u64>,
    /// Where its result is kept ([`Remote::queue_read`]).
    keep: Option<usize>,
}

/// A syscall queued by [`Remote::queue_read`], whose result [`Remote::result`] gives once it
/// has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read(usize);

/// A stopped thread borrowed to run syscalls.
pub struct Remote<'a> {
    /// The thread.
    pub tracee: &'a Tracee,
    syscall_ip: u64,
    base: Regs,
    /// Number of syscalls run, for statistics.
    pub count: u64,
    /// Number of stops of the thread waited for while running them (each a wake-up of the
    /// thread and then of the tracer), for statistics.
    pub waits: u64,
    /// `PTRACE_GETEVENTMSG` of a ptrace event during the last syscall (a new thread's id).
    pub event_msg: Option<u64>,
    /// `SIGSTOP`s the thread dequeued on its way to a syscall, and that were discarded (a
    /// stopped process keeps a `SIGSTOP` sent to it pending; it cannot be blocked).
    pub stops: u32,
    queue: Vec<Queued>,
    /// Where the batch loop and its table are, once mapped.
    batch: Option<u64>,
    /// A table of this thread's own (address, entries), instead of the one beside the loop.
    table: Option<(u64, usize)>,
    /// Bytes mapped after the batch area with it ([`Remote::map_batch_with`]), unmapped with it.
    extra: u64,
    /// The results of the calls of [`Remote::queue_read`] that ran, by their [`Read`].
    kept: Vec<Option<Result<u64, i32>>>,
    /// A call alone runs by a single step over the `syscall` instruction ([`Remote::step_calls`]).
    step: bool,
}

impl<'a> Remote<'a> {
    /// Borrows `tracee`, whose registers are `base`, to run syscalls at `syscall_ip`.
    pub fn new(tracee: &'a Tracee, syscall_ip: u64, base: Regs) -> Self {
        Remote { tracee, syscall_ip, base, count: 0, waits: 0, event_msg: None, stops: 0, queue: Vec::new(), batch: None, table: None, extra: 0, kept: Vec::new(), step: false }
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
        // What was queued comes first.
        self.flush()?;
        // Once there is a batch area, a call alone runs from it too: one stop of the thread
        // (the loop's `int3`) instead of two (the syscall's entry and exit), each a wake-up of
        // the thread and then of the tracer.
        if let Some(area) = self.batch {
            self.event_msg = None;
            let results = self.execute(area, &[(nr, six(args), true)])?;
            return results.into_iter().next().ok_or_else(|| TraceError::Unexpected { tid: self.tracee.tid, what: format!("remote syscall {nr} did not run from the batch area") });
        }
        self.one(nr, args)
    }

    /// Makes each call alone that follows, until the batch area is unmapped
    /// ([`Remote::unmap_batch`]), run by a single step over the `syscall` instruction: one stop
    /// of the thread (a `SIGTRAP` once the call has returned) instead of two. The caller
    /// vouches that SIGTRAP is free in the process, as for a batch (the kernel forces the trap
    /// through, resetting a blocked SIGTRAP's action to the default): neither caught, ignored
    /// nor pending. The calls of a batch area's mapping and unmapping are such calls.
    pub fn step_calls(&mut self, on: bool) {
        self.step = on;
    }

    fn one(&mut self, nr: libc::c_long, args: &[u64]) -> RemoteResult {
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
        if self.step {
            return self.stepped(nr);
        }
        let mut stops = 0;
        while stops < 2 {
            t.syscall_step()?;
            self.waits += 1;
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

    /// Single-steps the thread, its registers set, over the `syscall` instruction.
    fn stepped(&mut self, nr: libc::c_long) -> RemoteResult {
        let t = self.tracee;
        loop {
            t.single_step()?;
            self.waits += 1;
            match t.wait_stop()? {
                StopKind::Signal(libc::SIGTRAP) => break,
                // As for a call made by its two stops: before the instruction runs, a group
                // stop is passed through and a SIGSTOP dequeued is discarded and counted.
                StopKind::Event => {}
                StopKind::Signal(libc::SIGSTOP) => self.stops += 1,
                other => return Err(TraceError::Unexpected { tid: t.tid, what: format!("{other:?} instead of the end of a single step in remote syscall {nr}") }),
            }
        }
        let end = t.regs()?;
        if end.rip != self.syscall_ip + 2 {
            return Err(TraceError::Unexpected { tid: t.tid, what: format!("a single step over remote syscall {nr} stopped at {:#x}, not after the instruction", end.rip) });
        }
        self.count += 1;
        let ret = end.rax as i64;
        Ok(if (-4095..0).contains(&ret) { Err(-ret as i32) } else { Ok(ret as u64) })
    }

    /// Like [`Remote::syscall`], turning a failed syscall into a [`TraceError`] that names `what`.
    pub fn call(&mut self, what: &str, nr: libc::c_long, args: &[u64]) -> Result<u64, TraceError> {
        self.syscall(nr, args)?.map_err(|e| TraceError::Sys { what: format!("{what} (inside pid {})", self.tracee.tid), err: std::io::Error::from_raw_os_error(e) })
    }

    /// Queues syscall `nr`, which must succeed, to be run at the next [`Remote::flush`] (or
    /// before the next syscall that is not queued); `what` names it if it fails.
    pub fn queue(&mut self, what: impl Into<String>, nr: libc::c_long, args: &[u64]) {
        self.push(what.into(), nr, args, false, None);
    }

    /// Queues syscall `nr`, whose failure is ignored.
    pub fn queue_may_fail(&mut self, nr: libc::c_long, args: &[u64]) {
        self.push(String::new(), nr, args, true, None);
    }

    /// Queues syscall `nr`, which must return `expect`; `what` names it if it does not.
    pub fn queue_expecting(&mut self, what: impl Into<String>, nr: libc::c_long, args: &[u64], expect: u64) {
        self.push(what.into(), nr, args, false, Some(expect));
    }

    /// Queues syscall `nr`, whose result (or failure, which does not stop the calls queued
    /// after it) [`Remote::result`] gives once it has run: reads that need no result of the
    /// one before, queued by several callers, then run in one go.
    pub fn queue_read(&mut self, nr: libc::c_long, args: &[u64]) -> Read {
        let k = self.kept.len();
        self.kept.push(None);
        self.queue.push(Queued { what: String::new(), nr, args: six(args), may_fail: true, expect: None, keep: Some(k) });
        Read(k)
    }

    /// The result of a call of [`Remote::queue_read`]: `None` until it has run.
    pub fn result(&self, read: Read) -> Option<Result<u64, i32>> {
        self.kept.get(read.0).copied().flatten()
    }

    /// Like [`Remote::result`], running what is queued first if it has not run, a failed
    /// syscall turned into a [`TraceError`] that names `what`.
    pub fn take(&mut self, what: &str, read: Read) -> Result<u64, TraceError> {
        if self.result(read).is_none() {
            self.flush()?;
        }
        let tid = self.tracee.tid;
        match self.result(read) {
            Some(Ok(n)) => Ok(n),
            Some(Err(e)) => Err(TraceError::Sys { what: format!("{what} (inside pid {tid})"), err: std::io::Error::from_raw_os_error(e) }),
            None => Err(TraceError::Unexpected { tid, what: format!("{what}: the call was not run") }),
        }
    }

    fn push(&mut self, what: String, nr: libc::c_long, args: &[u64], may_fail: bool, expect: Option<u64>) {
        self.queue.push(Queued { what, nr, args: six(args), may_fail, expect, keep: None });
    }

    /// Keeps the results of the calls of [`Remote::queue_read`] among `queued`.
    fn keep(&mut self, queued: &[Queued], results: &[Result<u64, i32>]) {
        for (q, r) in queued.iter().zip(results) {
            if let Some(slot) = q.keep.and_then(|k| self.kept.get_mut(k)) {
                *slot = Some(*r);
            }
        }
    }

    /// Maps the area where queued syscalls are run in one go: [`BATCH_LEN`] bytes at `addr`,
    /// which must be free in the tracee (`MAP_FIXED_NOREPLACE`; 0: where the kernel puts it).
    /// Until then, and after
    /// [`Remote::unmap_batch`], queued syscalls run one by one.
    pub fn map_batch(&mut self, addr: u64) -> Result<(), TraceError> {
        self.map_batch_with(addr, 0).map(drop)
    }

    /// [`Remote::map_batch`], with `extra` bytes of read-write memory right after the area, in
    /// the same mapping (one syscall rather than two, and one to unmap both): returns their
    /// address, and [`Remote::unmap_batch`] unmaps them too.
    pub fn map_batch_with(&mut self, addr: u64, extra: u64) -> Result<u64, TraceError> {
        self.map_area(addr, extra, false)
    }

    /// [`Remote::map_batch`] with two stops of the thread fewer: the area is mapped
    /// writable and executable, and the call that takes write access off its code is queued,
    /// to run first in the first batch (from the area itself). Where writable code is refused
    /// (a kernel or policy), as [`Remote::map_batch`].
    pub fn map_batch_protect_queued(&mut self, addr: u64) -> Result<(), TraceError> {
        self.map_area(addr, 0, true).map(drop)
    }

    /// [`Remote::map_batch_with`], the protection of the area's code queued as in
    /// [`Remote::map_batch_protect_queued`]: two stops of the thread fewer.
    pub fn map_batch_with_protect_queued(&mut self, addr: u64, extra: u64) -> Result<u64, TraceError> {
        self.map_area(addr, extra, true)
    }

    fn map_area(&mut self, addr: u64, extra: u64, protect_queued: bool) -> Result<u64, TraceError> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if addr != 0 { libc::MAP_FIXED_NOREPLACE } else { 0 };
        let len = BATCH_LEN + extra;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let wx = if protect_queued { Some(self.syscall(libc::SYS_mmap, &[addr, len, rw | libc::PROT_EXEC as u64, flags as u64, u64::MAX, 0])?) } else { None };
        let (at, writable_code) = match wx {
            Some(Ok(at)) => (at, true),
            _ => (self.call("mapping the batch area", libc::SYS_mmap, &[addr, len, rw, flags as u64, u64::MAX, 0])?, false),
        };
        let protect = [at, 4096, (libc::PROT_READ | libc::PROT_EXEC) as u64];
        let ready = mem::write_vm(self.tracee.tid, at, &BATCH_CODE).and_then(|()| if writable_code { Ok(0) } else { self.call("protecting the batch area's code", libc::SYS_mprotect, &protect) });
        if let Err(e) = ready {
            // Not left behind in the process.
            let _ = self.one(libc::SYS_munmap, &[at, len]);
            return Err(e);
        }
        if writable_code {
            self.queue("protecting the batch area's code", libc::SYS_mprotect, &protect);
        }
        self.batch = Some(at);
        self.extra = extra;
        Ok(at + BATCH_LEN)
    }

    /// Uses the batch area the process mapped for itself at `at` ([`crate::husk::map_batch_area`]),
    /// if its code is there: no call to map it. Returns whether it is used; if so,
    /// [`Remote::unmap_batch`] unmaps it.
    pub fn adopt_batch(&mut self, at: u64) -> Result<bool, TraceError> {
        let mut code = [0u8; BATCH_CODE.len()];
        if mem::read_exact(self.tracee.tid, at, &mut code).is_err() || code != BATCH_CODE {
            return Ok(false);
        }
        self.batch = Some(at);
        self.extra = 0;
        Ok(true)
    }

    /// The batch area, if mapped: another thread of the same process may use it
    /// ([`Remote::use_batch`]), one at a time.
    pub fn batch_area(&self) -> Option<u64> {
        self.batch
    }

    /// Uses the batch area `at` that a [`Remote`] on another thread of the same process mapped.
    /// That one unmaps it, after this one is done.
    pub fn use_batch(&mut self, at: Option<u64>) {
        self.batch = at;
    }

    /// Gives this thread a table of its own, `entries` entries (64 bytes each) at `at`, in
    /// memory of the process the caller mapped, instead of the one in the batch area: threads
    /// of one process with tables of their own may run their batches at the same time
    /// ([`Remote::flush_all`]).
    pub fn use_table(&mut self, at: u64, entries: usize) {
        self.table = Some((at, entries));
    }

    /// The table batches are written to, and how many entries it takes.
    fn table(&self, area: u64) -> (u64, usize) {
        self.table.unwrap_or((area + 4096, BATCH_ENTRIES))
    }

    /// Runs what is queued on each of `remotes`, threads of one process: at the same time on
    /// those that have the batch area and a table of their own ([`Remote::use_table`]) large
    /// enough for their queue (every one is started before any is waited for, so that their
    /// stops cost one wait rather than one each), one after another on the others. Each
    /// thread's calls run in order and stop at the first that fails (and may not); the first
    /// failure is returned once every thread has stopped.
    pub fn flush_all(remotes: &mut [Remote<'_>]) -> Result<(), TraceError> {
        let mut started = Vec::with_capacity(remotes.len());
        let mut first_err = None;
        for (k, r) in remotes.iter_mut().enumerate() {
            let (Some(area), Some((_, room))) = (r.batch, r.table) else { continue };
            if r.queue.is_empty() || r.queue.len() > room {
                continue;
            }
            let queued = std::mem::take(&mut r.queue);
            let entries: Vec<(libc::c_long, [u64; 6], bool)> = queued.iter().map(|q| (q.nr, q.args, q.may_fail)).collect();
            match r.start(area, &entries) {
                Ok(()) => started.push((k, queued)),
                Err(e) => {
                    first_err = Some(e);
                    break;
                }
            }
        }
        for (k, queued) in started {
            let r = &mut remotes[k];
            let area = r.batch.expect("started with a batch area");
            let done = r.collect(area, queued.len()).and_then(|results| {
                r.keep(&queued, &results);
                r.check(&queued, &results)
            });
            if let Err(e) = done {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        // What could not run at once (no table, or too much queued).
        remotes.iter_mut().try_for_each(|r| r.flush())
    }

    /// Runs what is queued, then unmaps the batch area (with what was mapped after it).
    pub fn unmap_batch(&mut self) -> Result<(), TraceError> {
        self.flush()?;
        if let Some(at) = self.batch.take() {
            let len = BATCH_LEN + std::mem::take(&mut self.extra);
            let r = self.call("unmapping the batch area", libc::SYS_munmap, &[at, len]);
            self.step = false;
            r?;
        }
        Ok(())
    }

    /// Runs every queued syscall, in order: in one go (per table's worth) in the batch area
    /// when there is one, else one after another. Stops at the first that fails (and may not).
    pub fn flush(&mut self) -> Result<(), TraceError> {
        let queued = std::mem::take(&mut self.queue);
        let Some(area) = self.batch else {
            for q in &queued {
                let r = self.one(q.nr, &q.args)?;
                self.keep(std::slice::from_ref(q), &[r]);
                self.check(std::slice::from_ref(q), &[r])?;
            }
            return Ok(());
        };
        for chunk in queued.chunks(self.table(area).1) {
            let entries: Vec<(libc::c_long, [u64; 6], bool)> = chunk.iter().map(|q| (q.nr, q.args, q.may_fail)).collect();
            let results = self.execute(area, &entries)?;
            self.keep(chunk, &results);
            self.check(chunk, &results)?;
        }
        Ok(())
    }

    /// The first failure among the `results` of `queued` (in order; fewer results than calls:
    /// the batch stopped at the last one).
    fn check(&self, queued: &[Queued], results: &[Result<u64, i32>]) -> Result<(), TraceError> {
        let tid = self.tracee.tid;
        for (q, r) in queued.iter().zip(results) {
            match (*r, q.expect) {
                (Err(_), _) if q.may_fail => {}
                (Err(e), _) => return Err(TraceError::Sys { what: format!("{} (inside pid {tid})", q.what), err: std::io::Error::from_raw_os_error(e) }),
                (Ok(n), Some(want)) if n != want => {
                    return Err(TraceError::Sys { what: format!("{} (inside pid {tid}): {n} instead of {want}", q.what), err: std::io::Error::from_raw_os_error(libc::EIO) })
                }
                _ => {}
            }
        }
        if results.len() < queued.len() {
            return Err(TraceError::Unexpected { tid, what: "a batch of syscalls stopped early without a failure".into() });
        }
        Ok(())
    }

    /// Runs `calls` (number and arguments) in order and returns each result; a failure does
    /// not stop the others. What was queued runs first. In one go where there is a batch area.
    pub fn run(&mut self, calls: &[(libc::c_long, &[u64])]) -> Result<Vec<Result<u64, i32>>, TraceError> {
        self.flush()?;
        let entries: Vec<(libc::c_long, [u64; 6], bool)> = calls.iter().map(|(nr, args)| (*nr, six(args), true)).collect();
        let Some(area) = self.batch else {
            return entries.iter().map(|(nr, args, _)| self.one(*nr, args)).collect();
        };
        let mut out = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(self.table(area).1) {
            out.extend(self.execute(area, chunk)?);
        }
        Ok(out)
    }

    /// Runs `entries` (number, arguments, may fail) from the batch area at `area`, at most
    /// a table's worth; returns the results of those that ran (all, unless one that may not
    /// fail did: it is the last).
    fn execute(&mut self, area: u64, entries: &[(libc::c_long, [u64; 6], bool)]) -> Result<Vec<Result<u64, i32>>, TraceError> {
        self.start(area, entries)?;
        self.collect(area, entries.len())
    }

    /// Writes `entries` into this thread's table and lets it run them from the loop at `area`.
    fn start(&mut self, area: u64, entries: &[(libc::c_long, [u64; 6], bool)]) -> Result<(), TraceError> {
        let tid = self.tracee.tid;
        let (table, _) = self.table(area);
        let mut words: Vec<u8> = Vec::with_capacity(entries.len() * 64);
        for (nr, args, may_fail) in entries {
            words.extend_from_slice(&(*nr as u64).to_ne_bytes());
            for a in args {
                words.extend_from_slice(&a.to_ne_bytes());
            }
            words.extend_from_slice(&u64::from(*may_fail).to_ne_bytes());
        }
        mem::write_vm(tid, table, &words)?;
        let mut r = self.base;
        r.rip = area;
        r.rbx = table;
        r.r12 = entries.len() as u64;
        r.orig_rax = u64::MAX;
        let t = self.tracee;
        t.set_regs(&r)?;
        t.cont(0)
    }

    /// Waits for the batch of `n` entries [`Remote::start`] started to end; returns the
    /// results of those that ran.
    fn collect(&mut self, area: u64, n: usize) -> Result<Vec<Result<u64, i32>>, TraceError> {
        let t = self.tracee;
        let tid = t.tid;
        let (table, _) = self.table(area);
        loop {
            self.waits += 1;
            match t.wait_stop()? {
                StopKind::Signal(libc::SIGTRAP) => break,
                // As in a single syscall: a SIGSTOP dequeued is discarded and counted; a group
                // stop is passed through.
                StopKind::Signal(libc::SIGSTOP) => {
                    self.stops += 1;
                    t.cont(0)?;
                }
                StopKind::Event => t.cont(0)?,
                // A tracer with PTRACE_O_TRACECLONE is told of each thread a clone3 of the
                // batch makes.
                StopKind::OtherEvent(_) => {
                    self.event_msg = Some(t.event_msg()?);
                    t.cont(0)?;
                }
                other => return Err(TraceError::Unexpected { tid, what: format!("{other:?} while running a batch of syscalls") }),
            }
        }
        let end = t.regs()?;
        if end.rip != area + BATCH_CODE.len() as u64 || end.r12 as usize > n {
            return Err(TraceError::Unexpected { tid, what: format!("a batch of syscalls stopped at {:#x}, not at its end", end.rip) });
        }
        let done = n - end.r12 as usize;
        self.count += done as u64;
        let mut results = vec![0u8; done * 64];
        mem::read_exact(tid, table, &mut results)?;
        Ok(results
            .chunks_exact(64)
            .map(|e| {
                let ret = i64::from_ne_bytes(e[56..64].try_into().expect("8 bytes"));
                if (-4095..0).contains(&ret) {
                    Err(-ret as i32)
                } else {
                    Ok(ret as u64)
                }
            })
            .collect())
    }
}
