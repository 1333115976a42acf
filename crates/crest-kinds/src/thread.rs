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
use crest_ptrace::{Read, Remote, Tracee};

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

/// Size of `struct clone_args` as crest passes it (up to `cgroup`).
const CLONE_ARGS_LEN: u64 = 88;
/// Room for one thread's `clone_args` and its `set_tid` in the scratch page.
const CLONE_SLOT: u64 = CLONE_ARGS_LEN + 8;

/// Creates threads like the one `remote` runs on, one for each entry of `tids` (remote
/// `clone3` calls with pthread's flags, with `set_tid` = the entry when given), all in one go
/// where the process has a batch area. `CLONE_PTRACE` makes each new thread traced by the
/// caller from its birth and stopped before it runs a single instruction, without stopping the
/// thread that creates them (its tracer needs no `PTRACE_O_TRACECLONE`). Returns them in the
/// order of `tids`, each waited for in that first stop. What was queued on `remote` runs first.
pub fn create(remote: &mut Remote<'_>, scratch: &Scratch, tids: &[Option<i32>]) -> Result<Vec<Tracee>, KindError> {
    let flags = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD | libc::CLONE_SYSVSEM | libc::CLONE_PTRACE) as u64;
    // The scratch page holds the arguments of every call of one batch.
    remote.flush()?;
    let mut made = Vec::with_capacity(tids.len());
    for chunk in tids.chunks((crate::SCRATCH_LEN / CLONE_SLOT) as usize) {
        let mut bytes = Vec::with_capacity(chunk.len() * CLONE_SLOT as usize);
        let mut args = Vec::with_capacity(chunk.len());
        for (k, tid) in chunk.iter().enumerate() {
            let at = scratch.addr + k as u64 * CLONE_SLOT;
            let set_tid = if tid.is_some() { at + CLONE_ARGS_LEN } else { 0 };
            // struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal, stack,
            // stack_size, tls, set_tid, set_tid_size, cgroup; then set_tid's one entry. No
            // stack: the thread never runs on the borrowed one.
            let words: [u64; 11] = [flags, 0, 0, 0, 0, 0, 0, 0, set_tid, u64::from(tid.is_some()), 0];
            bytes.extend(words.iter().flat_map(|w| w.to_le_bytes()));
            bytes.extend_from_slice(&i64::from(tid.unwrap_or(0)).to_le_bytes());
            args.push([at, CLONE_ARGS_LEN]);
        }
        scratch.write(0, &bytes)?;
        let calls: Vec<(libc::c_long, &[u64])> = args.iter().map(|a| (libc::SYS_clone3, &a[..])).collect();
        let results = remote.run(&calls)?;
        // Every thread made is collected before a failure is reported.
        let mut failed = None;
        let mut fresh = Vec::with_capacity(chunk.len());
        for (tid, r) in chunk.iter().zip(results) {
            match r {
                Ok(new) => fresh.push(Tracee::adopt(new as i32)),
                Err(e) => {
                    let what = match tid {
                        Some(t) => format!("creating thread {t} (inside pid {})", remote.tracee.tid),
                        None => format!("creating a thread (inside pid {})", remote.tracee.tid),
                    };
                    failed.get_or_insert(crest_ptrace::TraceError::Sys { what, err: std::io::Error::from_raw_os_error(e) });
                }
            }
        }
        for t in &fresh {
            t.wait_event()?;
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
        made.extend(fresh);
    }
    Ok(made)
}

/// The reads of a thread's own state [`queue_reads`] queued.
pub struct Reads {
    tid_address: Read,
    altstack: Read,
    attrs: Vec<Read>,
}

/// Bytes of the process's memory the reads of [`queue_reads`] write: `clear_child_tid`, the
/// alternate signal stack, then those of [`crate::attrs::queue_thread`].
pub const READS_LEN: u64 = 32 + crate::attrs::THREAD_READS;

/// Queues the reads of the state of the thread `remote` runs on, writing [`READS_LEN`] bytes
/// at `at`, to run with others.
pub fn queue_reads(remote: &mut Remote<'_>, at: u64) -> Reads {
    let tid_address = remote.queue_read(libc::SYS_prctl, &[PR_GET_TID_ADDRESS, at]);
    let altstack = remote.queue_read(libc::SYS_sigaltstack, &[0, at + 8]);
    Reads { tid_address, altstack, attrs: crate::attrs::queue_thread(remote, at + 32) }
}

/// Dumps thread `t` of process `pid`, borrowed through `remote` (which must run on `t`), once
/// the reads [`queue_reads`] queued there have run, `b` the [`READS_LEN`] bytes they wrote.
pub fn dump(t: &Tracee, remote: &mut Remote<'_>, b: &[u8], reads: &Reads, pid: i32, frozen: &Frozen) -> Result<Thread, KindError> {
    let tid = t.tid;
    remote.take("reading clear_child_tid", reads.tid_address)?;
    let clear_child_tid = le_u64(b, 0);
    remote.take("reading the alternate signal stack", reads.altstack)?;
    let ss = &b[8..32];
    let altstack = (le_u64(ss, 0), i32::from_le_bytes([ss[8], ss[9], ss[10], ss[11]]), le_u64(ss, 16));
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
        attrs: crate::attrs::take_thread(remote, &b[32..], &reads.attrs, pid, tid)?,
    })
}

/// Bytes of the process's memory [`queue`] writes a thread's arguments into.
pub const QUEUED_DATA: u64 = 64;

/// Restores the per-thread kernel state of `th` from inside the husk (registers excepted),
/// through `remote` on the thread. Queued on `remote` where it can be, to run with what the
/// caller queues after it; the arguments are in the scratch page (at 3072), which the caller
/// must not write there again before it flushes.
pub fn restore(remote: &mut Remote<'_>, scratch: &Scratch, pid: i32, th: &Thread) -> Result<(), KindError> {
    queue(remote, scratch.addr + 3072, th)?;
    restore_pending(remote, scratch, pid, th)
}

/// Queues on `remote` (on the thread) the per-thread kernel state of `th` but its pending
/// signals ([`restore_pending`]): name, `clear_child_tid`, robust futex list, alternate signal
/// stack and rseq registration. Their arguments are written at `at`, [`QUEUED_DATA`] bytes of
/// the process's writable memory that must stay as they are until the queue runs.
pub fn queue(remote: &mut Remote<'_>, at: u64, th: &Thread) -> Result<(), KindError> {
    // The name (16 bytes with its NUL), then a stack_t (24 bytes).
    let mut data = th.comm.as_bytes()[..th.comm.len().min(15)].to_vec();
    data.resize(16, 0);
    remote.queue("setting the thread name", libc::SYS_prctl, &[libc::PR_SET_NAME as u64, at]);
    remote.queue("setting clear_child_tid", libc::SYS_set_tid_address, &[th.clear_child_tid]);
    if th.robust_list.0 != 0 {
        remote.queue("setting the robust futex list", libc::SYS_set_robust_list, &[th.robust_list.0, th.robust_list.1]);
    }
    if th.altstack.1 & SS_DISABLE == 0 {
        data.extend_from_slice(&th.altstack.0.to_le_bytes());
        data.extend_from_slice(&((th.altstack.1 & !1) as u32).to_le_bytes()); // SS_ONSTACK is a state, not a setting
        data.extend_from_slice(&0u32.to_le_bytes());
        data.extend_from_slice(&th.altstack.2.to_le_bytes());
        remote.queue("setting the alternate signal stack", libc::SYS_sigaltstack, &[at + 16, 0]);
    }
    if let Some(r) = th.rseq {
        remote.queue(format!("registering rseq at {:#x}", r.addr), libc::SYS_rseq, &[r.addr, u64::from(r.len), 0, u64::from(r.sig)]);
    }
    crest_ptrace::mem::write_vm(remote.tracee.tid, at, &data)?;
    Ok(())
}

/// Queues again the signals that were pending for thread `th` alone, to the thread `remote`
/// runs on (by its new id: the saved one differs without `--restore-pid`), through the scratch
/// page. Runs what is queued on `remote` first.
pub fn restore_pending(remote: &mut Remote<'_>, scratch: &Scratch, pid: i32, th: &Thread) -> Result<(), KindError> {
    if th.pending.is_empty() {
        return Ok(());
    }
    remote.flush()?;
    let tid = remote.tracee.tid;
    crate::signals::restore_pending(remote, scratch, pid, Some(tid), &th.pending)
}

/// The leader's own state: registers aside (set last), its tid address, robust list,
/// alternate stack and rseq area ([`restore`]).
pub struct Leader;

impl crate::process::ProcessKind for Leader {
    fn name(&self) -> &'static str {
        "leader thread"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["threads.regs", "threads.xsave", "threads.sigmask", "threads.clear_child_tid", "threads.robust_list", "threads.altstack", "threads.rseq"]
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

/// The other threads of the process ([`crate::process::THREADS`]): created in one batch of
/// `clone3` in the leader ([`create`]), then each one's own state ([`queue`],
/// [`restore_pending`], seccomp filters, credentials, thread attributes) set by all of them at
/// once, each from a slot of its own ([`THREAD_SLOT`]) where a free range for them is found.
/// Registers, XSAVE area and mask are set last, by [`finish`]. What the threads must inherit
/// is listed in [`crate::process::ProcessKind::after`]; what needs them lists this.
pub struct Threads;

/// Room for each thread but the leader in the area its settings are made from: the table of
/// its batch (15 entries), then their arguments.
pub const THREAD_SLOT: u64 = 1024;

impl crate::process::ProcessKind for Threads {
    fn name(&self) -> &'static str {
        crate::process::THREADS
    }
    fn fields(&self) -> &'static [&'static str] {
        &["threads"]
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // Each thread starts in the saved memory and inherits the filters they share.
        &["memory", "shared seccomp"]
    }
    fn restore(&self, cx: &mut crate::process::FillCx<'_, '_>) -> Result<(), KindError> {
        let (p, pid, scratch) = (cx.p, cx.pid, cx.scratch);
        if p.threads.len() <= 1 {
            // The scratch page holds the arguments of what is queued.
            cx.remote.flush()?;
            return Ok(());
        }
        // Each other thread gets a slot of its own for its batch's table and arguments, so
        // that all of them make their settings at the same time.
        let slots_len = ((p.threads.len() - 1) as u64 * THREAD_SLOT).next_multiple_of(4096);
        let slots = cx.remote.batch_area().and_then(|_| (cx.free_range)(slots_len));
        if let Some(at) = slots {
            let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
            cx.remote.queue("mapping room for the threads' settings", libc::SYS_mmap, &[at, slots_len, (libc::PROT_READ | libc::PROT_WRITE) as u64, flags, u64::MAX, 0]);
        }
        // The other threads start with the leader's credentials as they are now: read once.
        let creds = crate::attrs::creds_now(cx.remote, pid, pid)?;
        let tids: Vec<Option<i32>> = p.threads[1..].iter().map(|th| cx.restore_pid.then_some(th.tid)).collect();
        let threads = create(cx.remote, scratch, &tids)?;
        let mut remotes = Vec::with_capacity(threads.len());
        for (k, (t, th)) in threads.iter().zip(&p.threads[1..]).enumerate() {
            let mut r = Remote::new(t, cx.remote.syscall_ip(), t.regs()?);
            r.use_batch(cx.remote.batch_area());
            let data = match slots {
                Some(at) => {
                    let slot = at + k as u64 * THREAD_SLOT;
                    r.use_table(slot, ((THREAD_SLOT - QUEUED_DATA) / 64) as usize);
                    slot + THREAD_SLOT - QUEUED_DATA
                }
                None => scratch.addr + 3072,
            };
            queue(&mut r, data, th)?;
            restore_pending(&mut r, scratch, pid, th)?;
            crate::attrs::restore_seccomp(&mut r, p.pid, th.tid, &th.attrs.seccomp[cx.shared_filters..])?;
            crate::attrs::restore_creds_from(&mut r, scratch, pid, t.tid, &creds, creds_of(p, th))?;
            // After the credentials: a change of ids clears the parent-death signal.
            crate::attrs::restore_thread(&mut r, &th.attrs)?;
            if th.attrs.seccomp_strict {
                // Last in this thread (nothing else is run in it before it is let go).
                r.flush()?;
                crate::attrs::enter_strict_mode(&mut r, p.pid, th.tid)?;
            }
            if slots.is_none() {
                // Its arguments are in the scratch page, which the next thread writes.
                r.flush()?;
            }
            remotes.push(r);
        }
        Remote::flush_all(&mut remotes)?;
        cx.syscalls += remotes.iter().map(|r| r.count).sum::<u64>();
        drop(remotes);
        if let Some(at) = slots {
            cx.remote.queue("unmapping the room for the threads' settings", libc::SYS_munmap, &[at, slots_len]);
        }
        cx.threads = threads;
        Ok(())
    }
}

/// The credentials of thread `th` of `p`: its own, or the process's when the image has none
/// for it.
pub fn creds_of<'a>(p: &'a crest_image::Process, th: &'a Thread) -> &'a crest_image::Creds {
    if th.attrs.creds.uid == [0; 4] && th.attrs.creds.gid == [0; 4] && th.attrs.creds.cap_bnd == 0 {
        &p.creds
    } else {
        &th.attrs.creds
    }
}

/// The new TID of saved thread `saved` of `p`, whose leader is now `pid` and whose other
/// threads are `others` (in the order of `p.threads[1..]`, as many as were created so far).
pub fn new_tid(p: &crest_image::Process, pid: i32, others: &[Tracee], saved: i32) -> Option<i32> {
    p.threads.iter().zip(std::iter::once(pid).chain(others.iter().map(|t| t.tid))).find(|(th, _)| th.tid == saved).map(|(_, n)| n)
}

/// The last settings of every thread of `p` (`threads`, the leader first): scheduling, then
/// each one's XSAVE area, registers and mask; each thread is interrupted once more and let go
/// from that event stop, so the kernel applies its syscall-restart rules.
pub fn finish(threads: &[&Tracee], p: &crest_image::Process) -> Result<(), KindError> {
    for (t, th) in threads.iter().zip(&p.threads) {
        crate::attrs::restore_sched(t.tid, th.tid, &th.attrs)?;
    }
    // Every thread is sent on its way to the event stop before any is waited for.
    for (t, th) in threads.iter().zip(&p.threads) {
        t.set_xstate(&th.xsave)?;
        t.set_regs(&regs_to_resume(&th.regs))?;
        t.set_sigmask(th.sigmask)?;
        t.interrupt()?;
        t.cont(0)?;
    }
    for t in threads {
        t.wait_event()?;
    }
    Ok(())
}
