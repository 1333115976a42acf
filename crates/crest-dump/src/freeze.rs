//! Freezing a process, dumping it, and letting it go.
use std::time::Instant;

use crest_image::Process;
use crest_kinds::{attrs, fd, memory, process, signals, task, thread, vdso, Scratch};
use crest_ptrace::{find_syscall_insn, Remote, StopKind, TraceError, Tracee};

use crate::{check_cancel, DumpError};

/// What [`Frozen::collect_own`] read of one process.
pub(crate) struct Collected {
    /// Its record, the mappings still without page data.
    pub process: Process,
    /// The copy its private pages are read from, if one was taken.
    pub snap: Option<crate::snapshot::Snapshot>,
    /// Remote syscalls made.
    pub remote_syscalls: u64,
    /// Stops of its threads waited for to run them (each a wake-up of the thread, then of
    /// the tracer).
    pub remote_stops: u64,
    /// The layout of its vDSO areas.
    pub vdso_layout: Vec<(crest_image::SpecialArea, u64)>,
    /// Its `/proc/PID/pagemap`, opened once for everything read from it while it is frozen
    /// (guard pages, pages shared with its parent, pages to save).
    pub pagemap: crest_proc::Pagemap,
    /// The pages to save of the mappings looked at already while it is frozen, by their start
    /// (those that share pages with the parent's), for [`crate::pages::Seen`].
    pub to_save: std::collections::HashMap<u64, Vec<(u64, u64)>>,
}

/// How to write the image.
#[derive(Clone, Copy)]
pub struct DumpOptions<'a> {
    /// Let the process run on while its pages are saved from a copy-on-write snapshot.
    pub snapshot: bool,
    /// Compress page runs with zstd at this level.
    pub compress: Option<i32>,
    /// Counts the page bytes saved, for a progress display.
    pub progress: &'a crest_kinds::progress::Progress,
    /// File mappings whose whole contents go into the image.
    pub save: memory::SavePolicy,
    /// Leave out (and list) descriptors and file locks that cannot be restored, rather than
    /// refuse the checkpoint (`--drop-unsupported`).
    pub drop_unsupported: bool,
    /// Largest deleted file whose contents are saved (`--deleted-max`).
    pub deleted_max: u64,
    /// Save unix datagram sockets connected to sockets outside the image (`--ext-unix-sk`).
    pub external_unix: bool,
    /// Leave the write tracking of a pre-copy armed in the processes after the checkpoint, for
    /// a later incremental checkpoint (`--incremental`).
    pub track: bool,
}

/// A frozen process: every thread seized and stopped.
pub struct Frozen {
    /// PID.
    pub pid: i32,
    threads: Vec<(Tracee, thread::Frozen, Borrow)>,
    since: Instant,
    released: bool,
    /// The job-control signal the process is stopped by, 0 when it runs: it was stopped when
    /// it was seized, or a `SIGSTOP` reached it while frozen.
    stop_signal: u32,
    /// It was stopped when it was seized: detaching it puts it back in that stop by itself
    /// (the kernel keeps the group stop while it is traced).
    was_stopped: bool,
    /// The `syscall` instruction in its vDSO found by [`Frozen::collect_own`], for the remote
    /// syscalls after it (reaping its children under `--kill`): not searched for again.
    syscall_ip: Option<u64>,
    /// SIGKILL was sent by [`Frozen::kill_now`]; its end is still to be waited for.
    killed: bool,
    /// The thread that froze it, when that is a tracer of the crew ([`crate::crew`]): every
    /// ptrace request for it is made there. `None`: the thread that froze it.
    tracer: Option<std::sync::Arc<crate::crew::Tracer>>,
}

/// Below this many bytes of private anonymous memory (with the private file mappings saved
/// whole) a process that runs on after the checkpoint is not forked a copy-on-write snapshot:
/// its pages are read while it is frozen
/// (about 1.6 ms per MiB here, written with the image), no longer than a fork of it takes in a
/// deep tree, and without the fork's copy of its page tables.
pub(crate) const SNAPSHOT_MIN_BYTES: u64 = 1 << 20;

/// The job-control stop signals.
const STOP_SIGNALS: [i32; 4] = [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

/// The signal number of a raw 128-byte `siginfo`.
fn signo(info: &[u8]) -> i32 {
    info.get(..4).map_or(0, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether thread `tid` of `pid` has exited (gone, or a zombie).
fn exited(pid: i32, tid: i32) -> bool {
    let stat = if pid == tid { crest_proc::read(pid, "stat") } else { crest_proc::read(pid, &format!("task/{tid}/stat")) };
    !stat.is_ok_and(|s| crest_proc::parse_stat(&s).is_ok_and(|st| !matches!(st.state, 'Z' | 'X')))
}

/// Whether remote syscalls may run in batches in process `pid` (`status`: its
/// /proc/PID/status). A batch ends on `int3`, whose SIGTRAP the kernel forces through: it would
/// reset a handler or an ignored disposition of SIGTRAP to the default, and take the place of a
/// SIGTRAP already pending. So only where SIGTRAP is neither caught, ignored nor pending.
fn trap_is_free(pid: i32, status: &str, tids: &[i32]) -> bool {
    let bit = 1u64 << (libc::SIGTRAP - 1);
    let has = |text: &str, key: &str| crest_proc::status_field(text, key).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).is_none_or(|m| m & bit != 0);
    if has(status, "SigCgt") || has(status, "SigIgn") || has(status, "ShdPnd") {
        return false;
    }
    // The leader's own pending signals are those of `status`: its file is not read again.
    tids.iter().all(|&t| if t == pid { !has(status, "SigPnd") } else { crest_proc::read(pid, &format!("task/{t}/status")).is_ok_and(|s| !has(&s, "SigPnd")) })
}

/// What the tracer has changed in a thread that must be undone before it may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Borrow {
    /// Nothing changed; signals it had dequeued still to be queued again.
    Untouched,
    /// Registers and mask borrowed for remote syscalls.
    Borrowed,
    /// Put back as it was and parked in an event stop: it may be detached at any time, and if
    /// the tracer dies the kernel lets it go correctly.
    Clean,
}

/// Seizes and stops every thread of `pid`. Whatever fails on the way, every thread seized so far
/// is let go (detached, running as before).
///
/// For tests, `CREST_FAIL_AT=STEP` makes it fail at one step: `seized` (a thread seized, not
/// yet asked to stop), `interrupted` (asked to stop, not waited for), `stopped` (a thread
/// stopped, not yet recorded) or `frozen` (every thread stopped).
pub fn freeze(pid: i32) -> Result<Frozen, DumpError> {
    freeze_seen(pid, None)
}

/// [`freeze`], with the `/proc/PID/stat` of `pid` read just before by the caller (walking the
/// tree), so that it is not read again.
pub(crate) fn freeze_seen(pid: i32, seen: Option<&crest_proc::Stat>) -> Result<Frozen, DumpError> {
    let status = crest_proc::read(pid, "status").map_err(|_| DumpError::NoProcess(pid))?;
    if let Some(by) = crest_proc::status_field(&status, "TracerPid").and_then(|t| t.parse::<i32>().ok()).filter(|t| *t != 0) {
        return Err(DumpError::Traced { pid, by });
    }
    // Its threads as they are now, for the checks below and the first of the seizes (the
    // threads it starts meanwhile are found by the listings after each round of seizes).
    let listed = crest_proc::tasks(pid).map_err(|_| DumpError::NoProcess(pid))?;
    if let Some(by) = snapshot_in_progress(pid, &listed) {
        return Err(DumpError::Busy { pid, by });
    }
    // Before anything is done to it: state that would not come back, or that a system call
    // run inside it would harm.
    attrs::refuse_before_seizing(pid, &status, &listed)?;
    let was_stopped = match seen {
        Some(st) => st.state == 'T',
        None => crest_proc::parse_stat(&crest_proc::read(pid, "stat").map_err(|_| DumpError::NoProcess(pid))?).is_ok_and(|st| st.state == 'T'),
    };
    let mut f = Frozen { pid, threads: Vec::new(), since: Instant::now(), released: false, stop_signal: 0, was_stopped, syscall_ip: None, killed: false, tracer: None };
    // Threads found to have exited, which /proc may go on listing until they are reaped.
    let mut gone_tids: Vec<i32> = Vec::new();
    let mut listed = Some(listed);
    loop {
        check_cancel()?;
        let tids = match listed.take() {
            Some(t) => t,
            None => crest_proc::tasks(pid).map_err(|_| DumpError::NoProcess(pid))?,
        };
        let new: Vec<i32> = tids.into_iter().filter(|t| !f.threads.iter().any(|(x, _, _)| x.tid == *t) && !gone_tids.contains(t)).collect();
        if new.is_empty() {
            break;
        }
        // Every new thread is seized and asked to stop first, then each stop is waited for:
        // the threads stop in parallel (a thread that is not on a CPU stops only once it is
        // scheduled again), not one scheduling delay after another.
        let mut asked = Vec::with_capacity(new.len());
        for tid in new {
            check_cancel()?;
            let t = match Tracee::seize(tid) {
                Ok(t) => t,
                Err(TraceError::Ptrace { err, .. }) if err.raw_os_error() == Some(libc::ESRCH) => {
                    gone_tids.push(tid); // exited meanwhile
                    continue;
                }
                // The kernel refuses to trace a thread that has already exited (a zombie not
                // yet reaped) with EPERM: that is an exit, not a permission problem.
                Err(TraceError::Ptrace { err, .. }) if err.raw_os_error() == Some(libc::EPERM) && exited(pid, tid) => {
                    gone_tids.push(tid);
                    continue;
                }
                Err(TraceError::Ptrace { err, .. }) if err.raw_os_error() == Some(libc::EPERM) => {
                    return Err(DumpError::Permission {
                        pid,
                        why: "ptrace was refused (another user's process, a setuid program, or kernel.yama.ptrace_scope forbids it; run as its owner or as root)".into(),
                    })
                }
                Err(e) => return Err(e.into()),
            };
            fail_at("seized")?;
            match t.interrupt() {
                Err(e) if gone(&e) => continue,
                r => r?,
            }
            asked.push(t);
            fail_at("interrupted")?;
        }
        for t in asked {
            let mut stolen = Vec::new();
            let mut sigstop = false;
            let mut group_stop = 0;
            let stopped = (|| -> Result<_, TraceError> {
                loop {
                    match t.wait_stop()? {
                        StopKind::Event => {
                            // Seizing a stopped thread makes it report its group stop, with
                            // the signal that stopped it.
                            if was_stopped {
                                group_stop = signo(&t.siginfo()?);
                            }
                            break;
                        }
                        // A SIGSTOP on its way is not queued again (it cannot be blocked, so
                        // the next remote syscall would stop on it): the process is noted as
                        // stopped, and stopped again when it is let go.
                        StopKind::Signal(libc::SIGSTOP) => {
                            sigstop = true;
                            t.cont(0)?;
                        }
                        StopKind::Signal(_) => {
                            stolen.push(t.siginfo()?);
                            t.cont(0)?;
                        }
                        StopKind::Syscall | StopKind::OtherEvent(_) => t.cont(0)?,
                    }
                }
                Ok((t.regs()?, t.sigmask()?))
            })();
            let (regs, sigmask) = match stopped {
                // A thread that exits while being frozen is left out; the leader's exit is
                // reported once the whole process has exited.
                Err(e) if gone(&e) && t.tid != pid => continue,
                Err(e) if gone(&e) && !crest_proc::read(pid, "stat").is_ok_and(|s| crest_proc::parse_stat(&s).is_ok_and(|st| !matches!(st.state, 'Z' | 'X'))) => return Err(DumpError::NoProcess(pid)),
                r => r?,
            };
            fail_at("stopped")?;
            if f.stop_signal == 0 && (was_stopped || sigstop) {
                f.stop_signal = if STOP_SIGNALS.contains(&group_stop) { group_stop as u32 } else { libc::SIGSTOP as u32 };
            }
            f.threads.push((t, thread::Frozen { regs, sigmask, stolen }, Borrow::Untouched));
        }
    }
    if f.threads.is_empty() {
        return Err(DumpError::NoProcess(pid));
    }
    fail_at("frozen")?;
    Ok(f)
}

/// Fails at `step` when the environment asks for it (`CREST_FAIL_AT`, for tests).
fn fail_at(step: &'static str) -> Result<(), DumpError> {
    match std::env::var_os("CREST_FAIL_AT") {
        Some(s) if s == step => Err(DumpError::Injected(step)),
        _ => Ok(()),
    }
}

/// Whether `e` says the thread ended (exited, or is gone) while it was being frozen.
fn gone(e: &TraceError) -> bool {
    matches!(e, TraceError::Died { .. }) || matches!(e, TraceError::Ptrace { err, .. } if err.raw_os_error() == Some(libc::ESRCH))
}

/// [`freeze_seen`] on `tracer`, which then makes every ptrace request for the process.
pub(crate) fn freeze_on(tracer: &std::sync::Arc<crate::crew::Tracer>, pid: i32, seen: Option<crest_proc::Stat>) -> Result<Frozen, DumpError> {
    let f = tracer.run(move || freeze_seen(pid, seen.as_ref()))??;
    Ok(f.traced_by(tracer.clone()))
}

impl Frozen {
    /// Number of threads.
    pub fn thread_count(&self) -> usize {
        self.threads.len()
    }

    /// Its threads, the leader first: every one it has while frozen (it starts no other).
    pub(crate) fn tids(&self) -> Vec<i32> {
        self.threads.iter().map(|(t, _, _)| t.tid).collect()
    }

    /// Notes that `tracer`, the thread that froze it, makes every ptrace request for it.
    pub(crate) fn traced_by(mut self, tracer: std::sync::Arc<crate::crew::Tracer>) -> Frozen {
        self.tracer = Some(tracer);
        self
    }

    /// Whether ptrace requests for it must be handed to another thread.
    fn elsewhere(&self) -> Option<std::sync::Arc<crate::crew::Tracer>> {
        self.tracer.as_ref().filter(|t| !t.is_current()).cloned()
    }

    /// An empty stand-in, left in place while the process is with its tracer thread: dropping
    /// it does nothing.
    fn stand_in(&self) -> Frozen {
        Frozen {
            pid: self.pid,
            threads: Vec::new(),
            since: self.since,
            released: true,
            stop_signal: self.stop_signal,
            was_stopped: self.was_stopped,
            syscall_ip: self.syscall_ip,
            killed: self.killed,
            tracer: self.tracer.clone(),
        }
    }

    /// Runs `job` on the thread that traces the process (here, when that is this thread).
    fn on_tracer<R: Send + 'static>(&mut self, job: impl FnOnce(&mut Frozen) -> R + Send + 'static) -> Result<R, DumpError> {
        let Some(tracer) = self.elsewhere() else { return Ok(job(self)) };
        let stand_in = self.stand_in();
        let mut me = std::mem::replace(self, stand_in);
        let (me, r) = tracer.run(move || {
            let r = job(&mut me);
            (me, r)
        })?;
        *self = me;
        Ok(r)
    }

    /// [`Frozen::collect_own`], begun on the thread that traces the process: the process
    /// comes back with the answer.
    pub(crate) fn start_collect(
        mut self,
        save: memory::SavePolicy,
        ppid: i32,
        snapshot: bool,
        known: Option<Vec<crest_proc::MapEntry>>,
    ) -> crate::crew::Pending<(Frozen, Result<Collected, DumpError>)> {
        match self.elsewhere() {
            Some(tracer) => tracer.start(move || {
                let r = self.collect_own(save, ppid, snapshot, known.as_deref());
                (self, r)
            }),
            None => {
                let r = self.collect_own(save, ppid, snapshot, known.as_deref());
                crate::crew::Pending::Ready((self, r))
            }
        }
    }

    /// Reads everything of the frozen process but its page data and its descriptors: `/proc`,
    /// registers, and through remote syscalls what only the process itself can tell. Runs on
    /// the thread that traces the process ([`Frozen::start_collect`]); the descriptors, compared
    /// across every process of the image, are added by [`add_files`].
    ///
    /// With `snapshot`, a copy-on-write copy of it is forked last ([`crate::snapshot`]):
    /// its private pages can then be read from the copy once the process is let go. Without
    /// (or when the copy cannot be made), they are read from the process while it is frozen.
    ///
    /// `known`: the mappings of the process with their flags, as read shortly before (by a
    /// pre-copy): when `/proc/PID/maps` shows the same mappings, their flags are taken from
    /// there rather than from `/proc/PID/smaps`, whose page counts cost a walk of every page
    /// table.
    pub(crate) fn collect_own(&mut self, save: memory::SavePolicy, ppid: i32, snapshot: bool, known: Option<&[crest_proc::MapEntry]>) -> Result<Collected, DumpError> {
        let pid = self.pid;
        check_cancel()?;
        // Private anonymous bytes, from `smaps` (none counted when the pre-copy's mappings
        // serve: such a process is not snapshotted).
        let mut anon = 0;
        let maps = match known.and_then(|k| same_maps(&crest_proc::parse_smaps(&crest_proc::read(pid, "maps").ok()?).ok()?, k)) {
            Some(m) => m,
            None => {
                let text = crest_proc::read(pid, "smaps")?;
                anon = crest_proc::smaps_anonymous(&text);
                crest_proc::parse_smaps(&text)?
            }
        };
        let stat = crest_proc::parse_stat(&crest_proc::read(pid, "stat")?)?;
        let status = crest_proc::read(pid, "status")?;
        // Its threads as frozen: it starts no other while it is.
        let tids = self.tids();
        attrs::refuse(pid, &status, &tids)?;
        let mut vmas: Vec<_> = maps.iter().map(|m| memory::classify(pid, m)).collect::<Result<_, _>>()?;
        let pagemap = crest_proc::Pagemap::open(pid)?;
        memory::find_guards(&mut vmas, &pagemap, &mut Vec::new())?;
        let mut ts = task::dump(pid, &status)?;
        let exe = crest_proc::readlink(pid, "exe")?;
        // Everything read from /proc is read now, while frozen: with a snapshot the process
        // runs on (and may even end) while its pages are saved.
        let cmdline = crest_proc::read_bytes(pid, "cmdline")?;
        save.mark(&mut vmas, &exe);
        // A small process's pages are read while it is frozen: that takes less than forking
        // its copy, whose page tables and reverse-map chains (as long as its line of forked
        // ancestors) the kernel copies. Private file mappings saved whole (or of a deleted
        // file) count with their size.
        let whole: u64 = vmas
            .iter()
            .filter(|v| v.flags & crest_image::vma_flags::SHARED == 0)
            .filter(|v| v.flags & crest_image::vma_flags::SAVED != 0 || matches!(v.backing, crest_image::VmaBacking::Deleted { .. }))
            .map(|v| v.end - v.start)
            .sum();
        let snapshot = snapshot && anon + whole >= SNAPSHOT_MIN_BYTES;
        if exe.ends_with(" (deleted)") {
            return Err(DumpError::Unsupported(format!("PID {pid}: its executable {exe} was deleted; that is not supported yet")));
        }
        vdso::refuse_partial(pid, &maps, &own_maps()?)?;
        let Some(ip) = syscall_insn(pid, &maps)? else {
            return Err(DumpError::Unsupported(format!("PID {pid} has no vDSO and no `syscall` instruction in its executable mappings; crest needs one to run system calls inside it")));
        };
        self.syscall_ip = Some(ip);

        // Borrow the leader (all signals blocked, so no handler runs on borrowed registers) for
        // the process-wide state and a scratch page, then each other thread for its own state.
        self.threads[0].2 = Borrow::Borrowed;
        let (leader, frozen, _) = &self.threads[0];
        leader.set_sigmask(!0)?;
        let mut remote = Remote::new(leader, ip, frozen.regs);
        // Reads that need no result of the one before run in one go from a batch area, mapped
        // for the time of the collection and unmapped with the scratch page; mapped first, so
        // that every call after it, alone or not, costs one stop of the thread rather than two.
        // The scratch page is mapped with it, and goes with it. The protection of the area's
        // code runs first in the first batch (one call alone fewer), where the kernel lets
        // the area be writable and executable for that long.
        // Where SIGTRAP is free for a batch's `int3`, it is for the trap of a single step too:
        // the calls that map and unmap the area then cost one stop each rather than two.
        let batch = if trap_is_free(pid, &status, &tids) {
            remote.step_calls(true);
            remote.map_batch_with_protect_queued(0, crest_kinds::SCRATCH_LEN)
        } else {
            Err(crest_ptrace::TraceError::Unexpected { tid: pid, what: "SIGTRAP is in use".into() })
        };
        let scratch = match &batch {
            Ok(at) => Scratch { pid, addr: *at },
            Err(_) => Scratch::map(&mut remote, pid, 0)?,
        };
        let mut remote_syscalls = 0;
        let mut remote_stops = 0;
        let mut states = vec![Borrow::Borrowed];
        let collected = (|| -> Result<_, DumpError> {
            // The per-process kinds read through the leader, in their declared order.
            // Their reads, and the leader's own, are queued first and run in one stop of the
            // leader; each kind then takes its results.
            let mut out = process::Dumped { creds: std::mem::take(&mut ts.creds), ..Default::default() };
            let mut cx =
                process::CollectCx { remote: &mut remote, scratch: &scratch, pid, status: &status, stat: &stat, tids: &tids, out: &mut out, used: 0, reads: Default::default(), copy: Vec::new() };
            let own_at = cx.room(thread::READS_LEN).ok_or_else(|| DumpError::Unsupported("no room in the scratch page for the leader's reads".into()))?;
            let own = thread::queue_reads(cx.remote, own_at);
            process::queue_all(&mut cx)?;
            process::run_queued(&mut cx)?;
            let own_bytes = cx.bytes(own_at, thread::READS_LEN as usize)?.to_vec();
            process::dump_all(&mut cx)?;
            let process::Dumped { sigactions, attrs: pattrs, mm: mmst, shared_pending, creds } = out;
            ts.creds = creds;
            let mut threads = Vec::with_capacity(self.threads.len());
            threads.push(thread::dump(leader, &mut remote, &own_bytes, &own, pid, frozen)?);
            let mut stops = 0;
            // Signals the freeze dequeued are in the image; queue them again in the live process.
            signals::restore_pending(&mut remote, &scratch, pid, Some(leader.tid), &frozen.stolen)?;
            for (t, fz, _) in &self.threads[1..] {
                states.push(Borrow::Borrowed);
                t.set_sigmask(!0)?;
                let mut r = Remote::new(t, ip, fz.regs);
                r.use_batch(remote.batch_area());
                // Its reads in one go.
                let reads = thread::queue_reads(&mut r, scratch.addr);
                r.flush()?;
                let b = scratch.read(0, thread::READS_LEN as usize)?;
                threads.push(thread::dump(t, &mut r, &b, &reads, pid, fz)?);
                signals::restore_pending(&mut r, &scratch, pid, Some(t.tid), &fz.stolen)?;
                remote_syscalls += r.count;
                remote_stops += r.waits;
                stops += r.stops;
                put_back(t, fz)?;
                *states.last_mut().expect("pushed above") = Borrow::Clean;
            }
            Ok((sigactions, mmst, threads, shared_pending, pattrs, stops))
        })();
        // The scratch page of a batch area goes with it.
        let unmapped = match &batch {
            Ok(_) => remote.unmap_batch().map_err(crest_kinds::KindError::from),
            Err(_) => scratch.unmap(&mut remote),
        };
        // No call alone is single-stepped after (a fork would inherit the trap flag).
        remote.step_calls(false);
        // The copy is forked last, without the scratch page. If it cannot be (a process limit),
        // the checkpoint goes on with the process frozen.
        let snap = match (&collected, &unmapped) {
            (Ok(_), Ok(())) if snapshot => crate::snapshot::take(&mut remote).ok(),
            _ => None,
        };
        remote_syscalls += remote.count;
        remote_stops += remote.waits;
        let leader_stops = remote.stops;
        for (i, st) in states.into_iter().enumerate() {
            self.threads[i].2 = st;
        }
        let discard = |snap: Option<crate::snapshot::Snapshot>| {
            if let Some(s) = snap {
                s.discard();
            }
        };
        let (sigactions, mmst, mut threads, mut shared_pending, mut pattrs, stops) = match collected {
            Ok(c) => c,
            Err(e) => {
                discard(snap);
                return Err(e);
            }
        };
        if let Err(e) = unmapped {
            discard(snap);
            return Err(e.into());
        }
        // Everything from here on reads from outside: put the leader back now, so that even a
        // tracer killed during the long page copy leaves the process running correctly.
        let (leader, frozen, _) = &self.threads[0];
        if let Err(e) = put_back(leader, frozen) {
            discard(snap);
            return Err(e);
        }
        self.threads[0].2 = Borrow::Clean;
        // A SIGSTOP still pending (sent to the process while it was stopped) or discarded on the
        // way to a remote syscall is not saved: the process is saved as stopped instead. (While
        // it is stopped, a pending stop signal changes nothing: the SIGCONT that continues it
        // discards them all.)
        let before = shared_pending.len() + threads.iter().map(|t| t.pending.len()).sum::<usize>();
        shared_pending.retain(|i| signo(i) != libc::SIGSTOP);
        for t in &mut threads {
            t.pending.retain(|i| signo(i) != libc::SIGSTOP);
        }
        let after = shared_pending.len() + threads.iter().map(|t| t.pending.len()).sum::<usize>();
        if self.stop_signal == 0 && (stops + leader_stops > 0 || after < before) {
            self.stop_signal = libc::SIGSTOP as u32;
        }
        pattrs.stop_signal = self.stop_signal;
        let process = Process {
            pid,
            ppid,
            pgid: stat.pgrp,
            sid: stat.session,
            exe,
            cmdline,
            creds: ts.creds,
            cwd: ts.cwd,
            root: ts.root,
            umask: ts.umask,
            personality: ts.personality,
            rlimits: ts.rlimits,
            mm: mmst,
            fds: Vec::new(),
            sigactions,
            shared_pending,
            threads,
            vmas,
            exit_status: None,
            dropped: Vec::new(),
            attrs: pattrs,
            cwd_deleted: ts.cwd_deleted,
            files_shared: false,
        };
        Ok(Collected { process, snap, remote_syscalls, remote_stops, vdso_layout: vdso::layout(&maps), pagemap, to_save: Default::default() })
    }

    /// Time since the process was frozen.
    pub(crate) fn frozen_for(&self) -> f64 {
        self.since.elapsed().as_secs_f64()
    }

    /// Whether it has been let go already.
    pub(crate) fn is_released(&self) -> bool {
        self.released
    }

    /// Reaps the child `child` of the frozen process from inside it (a remote `wait4`), so
    /// that a killed tree leaves no zombie behind.
    pub(crate) fn reap(&mut self, child: i32) -> Result<(), DumpError> {
        self.call_inside(&format!("reaping PID {child}"), libc::SYS_wait4, &[child as u64, 0, libc::__WALL as u64, 0]).map(drop)
    }

    /// Runs one system call inside the frozen process, on its leader (borrowed, all signals
    /// blocked, and put back). `None` when that would take more than one call: the process has
    /// no `syscall` instruction to borrow, or signals dequeued by the freeze are still to be
    /// queued again.
    pub(crate) fn call_inside(&mut self, what: &str, nr: libc::c_long, args: &[u64]) -> Result<Option<u64>, DumpError> {
        if self.elsewhere().is_some() {
            let (what, args) = (what.to_string(), args.to_vec());
            return self.on_tracer(move |f| f.call_inside(&what, nr, &args))?;
        }
        let ip = match self.syscall_ip {
            Some(ip) => ip,
            None => match vdso_syscall(self.pid)? {
                Some(ip) => ip,
                None => return Ok(None),
            },
        };
        let (t, fz, state) = &mut self.threads[0];
        if *state == Borrow::Untouched && !fz.stolen.is_empty() {
            return Ok(None);
        }
        t.set_sigmask(!0)?;
        *state = Borrow::Borrowed;
        let mut remote = Remote::new(t, ip, fz.regs);
        let r = remote.call(what, nr, args);
        put_back(t, fz)?;
        *state = Borrow::Clean;
        Ok(Some(r?))
    }

    /// Before the processes below it are killed: makes the frozen process, killed after them,
    /// the reaper of every orphan below it (`PR_SET_CHILD_SUBREAPER`, which the kernel passes on
    /// to the descendants it has now) with `SIGCHLD` ignored, so that the kernel releases each
    /// killed descendant once this tracer has seen its end, whichever of its ancestors is gone
    /// first: they can all be killed at once, none left a zombie to an init. The new action is
    /// written on its stack below the red zone (it never runs again). `false` when nothing was
    /// done (no vDSO, signals to queue again, a stack that cannot be written).
    pub(crate) fn adopt_descendants(&mut self) -> Result<bool, DumpError> {
        if self.elsewhere().is_some() {
            return self.on_tracer(|f| f.adopt_descendants())?;
        }
        let ip = match self.syscall_ip {
            Some(ip) => ip,
            None => match vdso_syscall(self.pid)? {
                Some(ip) => ip,
                None => return Ok(false),
            },
        };
        let (t, fz, state) = &mut self.threads[0];
        if *state == Borrow::Untouched && !fz.stolen.is_empty() {
            return Ok(false);
        }
        // The kernel's struct sigaction: handler, flags, restorer, mask.
        let at = fz.regs.rsp.wrapping_sub(512) & !15;
        let mut act = [0u8; 32];
        act[..8].copy_from_slice(&(libc::SIG_IGN as u64).to_le_bytes());
        if crest_ptrace::mem::write(self.pid, at, &act).is_err() {
            return Ok(false);
        }
        t.set_sigmask(!0)?;
        *state = Borrow::Borrowed;
        let mut remote = Remote::new(t, ip, fz.regs);
        let r = remote
            .call("ignoring SIGCHLD", libc::SYS_rt_sigaction, &[libc::SIGCHLD as u64, at, 0, 8])
            .and_then(|_| remote.call("becoming the reaper of its descendants", libc::SYS_prctl, &[libc::PR_SET_CHILD_SUBREAPER as u64, 1, 0, 0, 0]));
        put_back(t, fz)?;
        *state = Borrow::Clean;
        r?;
        Ok(true)
    }

    /// Sends SIGKILL to the frozen process without waiting for it to be gone: a later
    /// `release(true)` waits. Several processes killed this way end in parallel.
    pub(crate) fn kill_now(&mut self) -> Result<(), DumpError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        self.killed = true;
        Ok(crest_ptrace::sys::kill(self.pid, libc::SIGKILL)?)
    }

    /// Lets every thread go, as it was; the process is no longer frozen.
    pub(crate) fn let_go(&mut self) -> Result<(), DumpError> {
        if self.elsewhere().is_some() {
            return self.on_tracer(|f| f.let_go())?;
        }
        self.released = true;
        let mut first_err = None;
        // A process that was stopped goes back to its stop as it is detached; one that a SIGSTOP
        // reached meanwhile is stopped now (the signal waits, pending, until it is detached).
        if self.stop_signal != 0 && !self.was_stopped {
            if let Err(e) = crest_ptrace::sys::kill(self.pid, libc::SIGSTOP) {
                first_err.get_or_insert(e.into());
            }
        }
        for (t, fz, state) in std::mem::take(&mut self.threads) {
            if let Err(e) = release_thread(self.pid, t, &fz, state) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Lets the process go: registers, masks and kept signals back as they were, then detach.
    /// With `kill`, SIGKILL it instead (after a successful checkpoint with `--kill`; the
    /// process must not have been let go by a snapshot dump).
    pub fn release(mut self, kill: bool) -> Result<(), DumpError> {
        if let Some(tracer) = self.elsewhere() {
            return tracer.run(move || self.release(kill))?;
        }
        if kill && self.killed {
            for (t, _, _) in self.threads.iter().rev() {
                let _ = t.wait_stop();
            }
            return Ok(());
        }
        if kill && !self.released {
            self.released = true;
            crest_ptrace::sys::kill(self.pid, libc::SIGKILL)?;
            // The kernel reports the leader's exit last: reap the other threads first.
            for (t, _, _) in self.threads.iter().rev() {
                let _ = t.wait_stop();
            }
            return Ok(());
        }
        self.let_go()
    }
}

/// Adds to `c` its process's descriptors `fds` (with what was left out of them), dumped with
/// [`fd::dump_all`] through `files`, and the saved contents of its mappings of deleted files;
/// refuses private mappings that nothing could make again.
pub(crate) fn add_files(c: &mut Collected, files: &mut fd::FileTable, fds: (Vec<crest_image::FdRecord>, Vec<String>)) -> Result<(), DumpError> {
    let pid = c.process.pid;
    let (fds, dropped) = fds;
    files.deleted_mappings(pid, &mut c.process.vmas)?;
    memory::refuse_unbacked_private(pid, &c.process.vmas, &fds)?;
    c.process.fds = fds;
    c.process.dropped = dropped;
    Ok(())
}

/// This process's own mappings, as read first since [`forget_own_maps`]: what the kernel gives
/// a process (its vDSO areas), compared with each process of a checkpoint.
static OWN_MAPS: std::sync::Mutex<Option<std::sync::Arc<Vec<crest_proc::MapEntry>>>> = std::sync::Mutex::new(None);

/// Forgets this process's own mappings read for an earlier checkpoint.
pub(crate) fn forget_own_maps() {
    *OWN_MAPS.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

fn own_maps() -> Result<std::sync::Arc<Vec<crest_proc::MapEntry>>, DumpError> {
    let mut held = OWN_MAPS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = held.as_ref() {
        return Ok(m.clone());
    }
    let m = std::sync::Arc::new(crest_proc::parse_smaps(&crest_proc::read(std::process::id() as i32, "maps")?)?);
    *held = Some(m.clone());
    Ok(m)
}

/// `known`, when `now` (read from `/proc/PID/maps`) lists the same mappings.
pub(crate) fn same_maps(now: &[crest_proc::MapEntry], known: &[crest_proc::MapEntry]) -> Option<Vec<crest_proc::MapEntry>> {
    let same =
        |a: &crest_proc::MapEntry, b: &crest_proc::MapEntry| (a.start, a.end, a.prot, a.shared, a.offset, a.dev, a.ino, &a.name) == (b.start, b.end, b.prot, b.shared, b.offset, b.dev, b.ino, &b.name);
    (now.len() == known.len() && now.iter().zip(known).all(|(a, b)| same(a, b))).then(|| known.to_vec())
}

/// Puts one thread back as it was and detaches it.
fn release_thread(pid: i32, t: Tracee, fz: &thread::Frozen, state: Borrow) -> Result<(), DumpError> {
    match state {
        Borrow::Clean => {}
        Borrow::Untouched if fz.stolen.is_empty() => {}
        Borrow::Untouched => {
            requeue(pid, &t, fz)?;
            put_back(&t, fz)?;
        }
        Borrow::Borrowed => put_back(&t, fz)?,
    }
    t.detach(0)?;
    Ok(())
}

/// Gives a thread back its own registers and mask and parks it in an event stop. The thread
/// may sit in a syscall-exit stop after remote syscalls; from the event stop the kernel itself
/// applies its syscall-restart rules to the original registers when the thread resumes.
fn put_back(t: &Tracee, fz: &thread::Frozen) -> Result<(), DumpError> {
    t.set_regs(&fz.regs)?;
    t.set_sigmask(fz.sigmask)?;
    Ok(t.park()?)
}

/// The address of a `syscall` instruction in process `pid`, for remote syscalls: in its vDSO,
/// or, for a process that unmapped it, in one of its executable mappings
/// ([`syscall_insn`]); `None` when it has none.
pub(crate) fn vdso_syscall(pid: i32) -> Result<Option<u64>, DumpError> {
    let maps = crest_proc::parse_smaps(&crest_proc::read(pid, "maps")?)?;
    syscall_insn(pid, &maps)
}

/// A `syscall` instruction of process `pid` (mappings `maps`): the vDSO's, or, without a
/// vDSO, the first two bytes `0f 05` of an executable mapping (its program's or a library's
/// code: jumped to, they are a `syscall` wherever they lie, and the thread stops as the call
/// returns, before it runs the instruction after). Nothing is written into the process.
pub(crate) fn syscall_insn(pid: i32, maps: &[crest_proc::MapEntry]) -> Result<Option<u64>, DumpError> {
    if let Some((_, vs, ve)) = vdso::areas(maps).into_iter().find(|a| a.0 == crest_image::SpecialArea::Vdso) {
        return Ok(Some(find_syscall_insn(pid, vs, ve)?));
    }
    for m in maps.iter().filter(|m| m.prot & libc::PROT_EXEC as u32 != 0 && m.name != "[vsyscall]") {
        // A mapping that cannot be read whole (a file shorter than it) is passed over.
        if let Ok(Some(ip)) = crest_ptrace::find_syscall_bytes(pid, m.start, m.end) {
            return Ok(Some(ip));
        }
    }
    Ok(None)
}

/// Queues the signals taken during the freeze again, from inside the thread.
fn requeue(pid: i32, t: &Tracee, fz: &thread::Frozen) -> Result<(), DumpError> {
    let Some(ip) = vdso_syscall(pid)? else { return Ok(()) };
    t.set_sigmask(!0)?;
    let mut remote = Remote::new(t, ip, fz.regs);
    let scratch = Scratch::map(&mut remote, pid, 0)?;
    let r = signals::restore_pending(&mut remote, &scratch, pid, Some(t.tid), &fz.stolen);
    scratch.unmap(&mut remote)?;
    Ok(r?)
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.released && !self.threads.is_empty() {
            if let Some(tracer) = self.elsewhere() {
                // Its threads are let go by the thread that traces them.
                let stand_in = self.stand_in();
                let me = std::mem::replace(self, stand_in);
                let _ = tracer.run(move || drop(me));
                return;
            }
            for (t, fz, state) in std::mem::take(&mut self.threads) {
                let _ = release_thread(self.pid, t, &fz, state);
            }
        }
    }
}

/// The tracer of a snapshot of `pid` (threads `tids`) still being saved (by another
/// checkpoint, which let the process run on): a child of it with no exit signal, traced.
fn snapshot_in_progress(pid: i32, tids: &[i32]) -> Option<i32> {
    for &tid in tids {
        let children = crest_proc::read(pid, &format!("task/{tid}/children")).unwrap_or_default();
        for c in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
            // Only a child without exit signal (rare) has its status read.
            let exit_signal = crest_proc::read(c, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok()).map(|s| s.exit_signal);
            if exit_signal != Some(0) {
                continue;
            }
            let tracer = crest_proc::read(c, "status").ok().and_then(|s| crest_proc::status_field(&s, "TracerPid").and_then(|t| t.parse::<i32>().ok()));
            if let Some(t) = tracer.filter(|t| *t != 0) {
                return Some(t);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's mappings are read once per checkpoint: held until forgotten.
    #[test]
    fn own_maps_are_read_once_until_forgotten() {
        forget_own_maps();
        let first = own_maps().expect("own maps");
        assert!(first.iter().any(|m| m.name == "[stack]"));
        assert!(std::sync::Arc::ptr_eq(&first, &own_maps().expect("own maps")), "held, not read again");
        forget_own_maps();
        let again = own_maps().expect("own maps");
        assert!(!std::sync::Arc::ptr_eq(&first, &again), "read again once forgotten");
        assert_eq!(vdso::layout(&first), vdso::layout(&again));
    }
}
