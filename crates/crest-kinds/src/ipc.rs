//! SysV IPC objects used by the processes of an image: shared memory segments, semaphore
//! sets and message queues.
//!
//! Dump ([`dump`]): the segments the processes have attached (their mappings name the shmid),
//! the semaphore sets that one of the processes operated on last (`GETPID` of any of its
//! semaphores), with their values, and the message queues one of them sent to or received
//! from last (`msg_lspid`, `msg_lrpid`), with their messages in order, from `/proc/sysvipc`
//! and `IPC_STAT`. Messages are copied with `MSG_COPY`, which leaves the queue as it was; on a
//! kernel without it (`CONFIG_CHECKPOINT_RESTORE` off) they are taken out and sent back in
//! the same order while the processes are frozen. An object the processes use without having
//! been the last to touch it (a queue they only created) is not found this way. Segment
//! contents are saved with the mappings ([`crate::memory`]).
//!
//! Restore ([`restore`], in `cr_restart` before any process exists): each object gets back its
//! id (through `/proc/sys/kernel/{shm,sem}_next_id`, which needs `CAP_SYS_ADMIN`) and key, so
//! ids kept in the processes' memory stay valid. An object still there with the same id and
//! key (the original processes were killed, the object outlived them) is used again: a
//! semaphore set gets its saved values, a segment its saved pages, if no process has it
//! attached. [`finish`] removes again the segments that had been removed (`IPC_RMID`) at the
//! checkpoint, once every process has attached them.
//!
//! Semaphore adjustments (`SEM_UNDO`, what the kernel adds to a semaphore when the process
//! exits) are per process and no interface shows them. [`dump_semadj`] finds whether a process
//! has any (`kcmp(KCMP_SYSVSEM)` against an idle child of crest, which has no undo list) and, if so, measures
//! each by remote `semop` calls in the frozen process that can never succeed: one call sets the
//! semaphore to a known value, moves the adjustment by a chosen amount and ends with an
//! operation that cannot be done without waiting (`IPC_NOWAIT`), so the kernel undoes the
//! whole call; it fails with `ERANGE` rather than `EAGAIN` exactly when the adjustment would
//! have left its range (-32768..=32767). A binary search on the amount gives the adjustment.
//! [`restore_semadj`] gives it back in the restored process with one `semop` that moves the
//! value away and back, the move back with `SEM_UNDO`.
use std::collections::HashSet;

use crest_image::{IpcKind, IpcObject, Process, VmaBacking};
use crest_ptrace::{ipc, Remote};

use crate::{KindError, Scratch};

/// `semop` flags.
const IPC_NOWAIT: i16 = 0o4000;
const SEM_UNDO: i16 = 0x1000;
/// The largest semaphore value and adjustment (`SEMVMX`, `SEMAEM`).
const SEMVMX: i32 = 32767;
/// `kcmp` kind comparing the undo lists of two processes.
const KCMP_SYSVSEM: i32 = 6;

/// `SHM_DEST`: a removed segment that lives on while attached.
const SHM_DEST: u32 = 0o1000;

/// The SysV objects the processes `procs` use.
pub fn dump(procs: &[Process]) -> Result<Vec<IpcObject>, KindError> {
    let pids: HashSet<i32> = procs.iter().map(|p| p.pid).collect();
    let mut out = Vec::new();
    let mut shm_ids: Vec<i32> = procs.iter().flat_map(|p| &p.vmas).filter_map(|v| if let VmaBacking::SysvShm { id, .. } = v.backing { Some(id) } else { None }).collect();
    shm_ids.sort_unstable();
    shm_ids.dedup();
    for id in shm_ids {
        let st = ipc::shm_stat(id).map_err(|e| KindError::io(format!("SysV shared memory {id}"), e))?;
        out.push(IpcObject { key: st.key, id, mode: st.mode & 0o777, uid: st.uid, gid: st.gid, kind: IpcKind::Shm { size: st.size, removed: st.mode & SHM_DEST != 0 } });
    }
    // Sets the processes hold adjustments on are theirs even if someone else used them last.
    let adjusted: HashSet<i32> = procs.iter().flat_map(|p| &p.attrs.semadj).map(|(id, _, _)| *id).collect();
    for (id, n) in sem_sets()? {
        // A set that is gone by now, or that this user may not read, is not theirs.
        let Ok(last) = (0..n as i32).map(|i| ipc::sem_last_pid(id, i)).collect::<Result<Vec<i32>, _>>() else {
            if adjusted.contains(&id) {
                return Err(KindError::Unsupported(format!("SysV semaphore set {id}: the processes hold SEM_UNDO adjustments on it, but it cannot be read")));
            }
            continue;
        };
        if !last.iter().any(|p| pids.contains(p)) && !adjusted.contains(&id) {
            continue;
        }
        let st = ipc::sem_stat(id).map_err(|e| KindError::io(format!("SysV semaphore set {id}"), e))?;
        let values = ipc::sem_values(id, n).map_err(|e| KindError::io(format!("SysV semaphore set {id}"), e))?;
        out.push(IpcObject { key: st.key, id, mode: st.mode & 0o777, uid: st.uid, gid: st.gid, kind: IpcKind::Sem { values } });
    }
    let table = std::fs::read_to_string("/proc/sysvipc/msg").map_err(|e| KindError::io("reading /proc/sysvipc/msg", e))?;
    for line in table.lines().skip(1) {
        let Some(Ok(id)) = line.split_whitespace().nth(1).map(|s| s.parse::<i32>()) else { continue };
        // A queue gone by now, or that this user may not read, is not theirs.
        let Ok(st) = ipc::msg_stat(id) else { continue };
        if !pids.contains(&st.lspid) && !pids.contains(&st.lrpid) {
            continue;
        }
        let messages = messages(id, &st)?;
        out.push(IpcObject { key: st.perm.key, id, mode: st.perm.mode & 0o777, uid: st.perm.uid, gid: st.perm.gid, kind: IpcKind::Msg { qbytes: st.perm.size, messages } });
    }
    Ok(out)
}

/// The messages of queue `id`, oldest first, the queue left as it was.
fn messages(id: i32, st: &ipc::MsgStat) -> Result<Vec<(i64, Vec<u8>)>, KindError> {
    let what = format!("SysV message queue {id} (key {:#x})", st.perm.key);
    // No message is longer than all the bytes queued.
    let max = (st.cbytes as usize).max(1);
    let mut out = Vec::with_capacity(st.qnum as usize);
    for index in 0..st.qnum {
        match ipc::msg_copy(id, index, max) {
            Ok(m) => out.push(m),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) && index == 0 => return take_and_send_back(id, st, max, &what),
            Err(e) => return Err(KindError::io(format!("{what}: copying message {index} of {}", st.qnum), e)),
        }
    }
    Ok(out)
}

/// Without `MSG_COPY`: every message taken out, then sent back in the same order.
fn take_and_send_back(id: i32, st: &ipc::MsgStat, max: usize, what: &str) -> Result<Vec<(i64, Vec<u8>)>, KindError> {
    let mut out = Vec::with_capacity(st.qnum as usize);
    let mut failed = None;
    for index in 0..st.qnum {
        match ipc::msg_take(id, max) {
            Ok(m) => out.push(m),
            Err(e) if e.raw_os_error() == Some(libc::ENOMSG) => break,
            Err(e) => {
                failed = Some(KindError::io(format!("{what}: taking message {index} of {} (this kernel has no MSG_COPY)", st.qnum), e));
                break;
            }
        }
    }
    for (k, (mtype, data)) in out.iter().enumerate() {
        ipc::msg_send(id, *mtype, data)
            .map_err(|e| KindError::io(format!("{what}: sending message {k} back after reading it (this kernel has no MSG_COPY); {} of {} messages are lost", out.len() - k, out.len()), e))?;
    }
    failed.map_or(Ok(out), Err)
}

/// The semaphore sets of this IPC namespace, as (id, number of semaphores).
fn sem_sets() -> Result<Vec<(i32, usize)>, KindError> {
    let table = std::fs::read_to_string("/proc/sysvipc/sem").map_err(|e| KindError::io("reading /proc/sysvipc/sem", e))?;
    Ok(parse_sem_sets(&table))
}

fn parse_sem_sets(table: &str) -> Vec<(i32, usize)> {
    parse_sem_table(table).into_iter().map(|s| (s.id, s.n)).collect()
}

/// A line of `/proc/sysvipc/sem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SemSet {
    id: i32,
    /// Its number of semaphores.
    n: usize,
    /// When a semop on it last went through, in seconds since the epoch (0: never).
    otime: u64,
}

fn parse_sem_table(table: &str) -> Vec<SemSet> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(SemSet { id: f.get(1)?.parse().ok()?, n: f.get(3)?.parse().ok()?, otime: f.get(8)?.parse().ok()? })
        })
        .collect()
}

/// Clock ticks of `/proc/PID/stat`'s start time per second (`USER_HZ`, 100 in the kernel's
/// ABI on every architecture crest runs on).
const USER_HZ: u64 = 100;

/// How much earlier than a process's start a set's last semop may seem and still be taken as
/// possibly the process's: the wall clock of `otime` may have been stepped forward since.
const CLOCK_SLACK: u64 = 60;

/// When process `pid` started, in seconds since the epoch (rounded down), if known.
fn started(pid: i32) -> Option<u64> {
    static BTIME: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let btime = (*BTIME.get_or_init(|| std::fs::read_to_string("/proc/stat").ok()?.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())))?;
    let st = crest_proc::parse_stat(&crest_proc::read(pid, "stat").ok()?).ok()?;
    Some(btime + st.start_time / USER_HZ)
}

/// Whether a process started at `start` may hold an adjustment on `set`: only if a semop on it
/// went through since (an adjustment is made by a semop that goes through).
fn may_hold(set: &SemSet, start: Option<u64>) -> bool {
    set.otime != 0 && start.is_none_or(|s| set.otime + CLOCK_SLACK >= s)
}

/// The semaphore sets as [`sem_sets`] read them first since [`forget_sem_sets`], for the
/// SEM_UNDO adjustments of every process of one checkpoint: one read of the global table rather
/// than one per process. A process can hold an adjustment only on a set that existed when it
/// was frozen, and the table is forgotten once all of them are ([`forget_sem_sets`]): a set
/// made after that holds none of theirs, and one removed since is passed over (`EIDRM`).
static SEM_SETS: std::sync::Mutex<Option<Vec<SemSet>>> = std::sync::Mutex::new(None);

/// Forgets the semaphore sets read for an earlier checkpoint: called once every process of a
/// checkpoint is frozen, before their adjustments are read ([`dump_semadj`]).
pub fn forget_sem_sets() {
    *SEM_SETS.lock().unwrap_or_else(|p| p.into_inner()) = None;
    *NO_UNDO.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// The global tables a checkpoint reads once (the semaphore sets, the process of reference
/// for undo lists): forgotten when this is made, once every process is frozen, and again when
/// it is dropped, at the end of the checkpoint (which ends that process).
pub struct OnceTables(());

impl OnceTables {
    /// Starts a checkpoint's use of the tables.
    pub fn start() -> Self {
        forget_sem_sets();
        OnceTables(())
    }
}

impl Drop for OnceTables {
    fn drop(&mut self) {
        forget_sem_sets();
    }
}

/// A process with no SysV semaphore undo list, for [`dump_semadj`]'s `kcmp`: made when first
/// needed, ended by [`forget_sem_sets`]. `None` inside: it could not be made.
static NO_UNDO: std::sync::Mutex<Option<Option<crest_ptrace::sys::IdleChild>>> = std::sync::Mutex::new(None);

/// Whether process `pid` has no undo list (has never made a `semop` with `SEM_UNDO` nor had
/// a second thread), as `kcmp(KCMP_SYSVSEM)` against [`NO_UNDO`] tells; false when unknown.
fn has_no_undo_list(pid: i32) -> bool {
    let mut held = NO_UNDO.lock().unwrap_or_else(|p| p.into_inner());
    let reference = held.get_or_insert_with(|| crest_ptrace::sys::idle_child().ok());
    reference.as_ref().is_some_and(|r| crest_ptrace::sys::share(pid, r.pid(), KCMP_SYSVSEM).unwrap_or(false))
}

fn sem_sets_once() -> Result<Vec<SemSet>, KindError> {
    let mut held = SEM_SETS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(sets) = held.as_ref() {
        return Ok(sets.clone());
    }
    let table = std::fs::read_to_string("/proc/sysvipc/sem").map_err(|e| KindError::io("reading /proc/sysvipc/sem", e))?;
    let sets = parse_sem_table(&table);
    *held = Some(sets.clone());
    Ok(sets)
}

/// Runs `semop` on set `id` with `ops` (semaphore, operation, flags) inside the process.
fn remote_semop(remote: &mut Remote<'_>, scratch: &Scratch, id: i32, ops: &[(u16, i16, i16)]) -> Result<Result<u64, i32>, KindError> {
    let bytes: Vec<u8> = ops.iter().flat_map(|(n, op, flg)| [n.to_ne_bytes(), op.to_ne_bytes(), flg.to_ne_bytes()].concat()).collect();
    let at = scratch.write(0, &bytes)?;
    Ok(remote.syscall(libc::SYS_semop, &[id as u64, at, ops.len() as u64])?)
}

/// Operations that add `amount` (any size) to semaphore `n` in steps an `i16` holds, with
/// `flags`, each followed by one that takes it back without them when `back` is set.
fn steps(n: u16, amount: i32, flags: i16, back: bool, ops: &mut Vec<(u16, i16, i16)>) {
    let mut left = amount;
    while left != 0 {
        let step = left.clamp(-SEMVMX, SEMVMX);
        ops.push((n, step as i16, flags | IPC_NOWAIT));
        if back {
            ops.push((n, -step as i16, IPC_NOWAIT));
        }
        left -= step;
    }
}

/// Whether moving the adjustment of semaphore `n` of set `id` by `-delta` (an operation of
/// `delta` with `SEM_UNDO`) would take it out of its range, asked by a `semop` that the kernel
/// always undoes. `value` is the semaphore's value: the call first brings it to 0 (`delta`
/// positive) or to `SEMVMX` (negative) so that the value itself stays in range.
fn out_of_range(remote: &mut Remote<'_>, scratch: &Scratch, what: &str, id: i32, n: u16, value: i32, delta: i32) -> Result<bool, KindError> {
    let start = if delta > 0 { 0 } else { SEMVMX };
    let mut ops = Vec::new();
    if value != start {
        ops.push((n, (start - value) as i16, IPC_NOWAIT));
    }
    // Up to 0 or down from SEMVMX in steps of at most SEMVMX, each but the last brought back
    // without SEM_UNDO.
    let mut left = delta;
    while left != 0 {
        let step = left.clamp(-SEMVMX, SEMVMX);
        ops.push((n, step as i16, SEM_UNDO | IPC_NOWAIT));
        left -= step;
        if left != 0 {
            ops.push((n, -step as i16, IPC_NOWAIT));
        }
    }
    // No value can drop by 32768: the call can never complete, and the kernel undoes it.
    ops.push((n, i16::MIN, IPC_NOWAIT));
    match remote_semop(remote, scratch, id, &ops)? {
        Err(libc::ERANGE) => Ok(true),
        Err(libc::EAGAIN) => Ok(false),
        Err(e) => Err(KindError::io(format!("{what}: measuring the SEM_UNDO adjustment of semaphore {n}"), std::io::Error::from_raw_os_error(e))),
        Ok(_) => Err(KindError::Mismatch(format!("{what}: a semop measuring the SEM_UNDO adjustment of semaphore {n} went through (the value changed meanwhile?)"))),
    }
}

/// The SEM_UNDO adjustment of semaphore `n` of set `id` in the process.
fn semadj_of(remote: &mut Remote<'_>, scratch: &Scratch, what: &str, id: i32, n: u16, value: i32) -> Result<i16, KindError> {
    // Adjustment a: an operation of delta with SEM_UNDO makes it a - delta, out of range when
    // a - delta > 32767 (delta = t - 32767: a > t) or a - delta < -32768 (delta = t + 32768: a < t).
    let above = |remote: &mut Remote<'_>, t: i32| out_of_range(remote, scratch, what, id, n, value, t - SEMVMX);
    let below = |remote: &mut Remote<'_>, t: i32| out_of_range(remote, scratch, what, id, n, value, t + SEMVMX + 1);
    if above(remote, 0)? {
        // 0 < a: the smallest t in 1..=32767 with !(a > t).
        let (mut lo, mut hi) = (1, SEMVMX);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if above(remote, mid)? {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        return Ok(lo as i16);
    }
    if below(remote, 0)? {
        // a < 0: the largest t in -32768..=-1 with !(a < t).
        let (mut lo, mut hi) = (-SEMVMX - 1, -1);
        while lo < hi {
            let mid = (lo + hi + 1).div_euclid(2);
            if below(remote, mid)? {
                hi = mid - 1;
            } else {
                lo = mid;
            }
        }
        return Ok(lo as i16);
    }
    Ok(0)
}

/// The SEM_UNDO adjustments of process `pid` (frozen, `remote` running in it), as (set id,
/// semaphore, adjustment), the non-zero ones. See the [module documentation](self).
pub fn dump_semadj(remote: &mut Remote<'_>, scratch: &Scratch, pid: i32) -> Result<Vec<(i32, u16, i16)>, KindError> {
    // The kernel makes a process's undo list at its first semop with SEM_UNDO, or when it
    // creates its first thread (threads share one): one without a list holds no adjustment.
    // (crest's own list cannot serve as the reference: its tracer threads made one.)
    if has_no_undo_list(pid) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let start = started(pid);
    for SemSet { id, n, .. } in sem_sets_once()?.into_iter().filter(|set| may_hold(set, start)) {
        let what = format!("pid {pid}: SysV semaphore set {id}");
        let values = match ipc::sem_values(id, n) {
            Ok(v) => v,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => continue,
            Err(e) => return Err(KindError::io(format!("{what}: reading its values"), e)),
        };
        for (num, v) in values.iter().enumerate() {
            let adj = match semadj_of(remote, scratch, &what, id, num as u16, i32::from(*v)) {
                Ok(a) => a,
                Err(KindError::Io { err, .. }) if err.raw_os_error() == Some(libc::EACCES) => {
                    return Err(KindError::Unsupported(format!(
                        "{what}: the process has a SEM_UNDO list (made by a semop with SEM_UNDO, or by its threads) and may not change this set, so whether it holds an adjustment on it cannot be read"
                    )))
                }
                Err(KindError::Io { err, .. }) if matches!(err.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) => break,
                Err(e) => return Err(e),
            };
            if adj != 0 {
                out.push((id, num as u16, adj));
            }
        }
    }
    Ok(out)
}

/// Gives the restored process (`remote` running in it) its SEM_UNDO adjustments, once the
/// sets have their values ([`restore`]); the values are left as they are.
pub fn restore_semadj(remote: &mut Remote<'_>, scratch: &Scratch, pid: i32, semadj: &[(i32, u16, i16)]) -> Result<(), KindError> {
    for &(id, n, adj) in semadj {
        let what = format!("pid {pid}: SysV semaphore set {id}, semaphore {n}");
        let value = ipc::sem_values(id, usize::from(n) + 1).map_err(|e| KindError::io(format!("{what}: reading its value"), e))?[usize::from(n)];
        let value = i32::from(value);
        // Down to 0, up by the adjustment, down again with SEM_UNDO (which adds it to the
        // adjustment), back up to the value; or, for a negative one, up with SEM_UNDO.
        let mut ops = Vec::new();
        if value != 0 {
            ops.push((n, -value as i16, IPC_NOWAIT));
        }
        if adj > 0 {
            steps(n, i32::from(adj), 0, false, &mut ops);
            steps(n, -i32::from(adj), SEM_UNDO, false, &mut ops);
        } else {
            steps(n, -i32::from(adj), SEM_UNDO, true, &mut ops);
        }
        if value != 0 {
            ops.push((n, value as i16, IPC_NOWAIT));
        }
        remote_semop(remote, scratch, id, &ops)?.map_err(|e| KindError::io(format!("{what}: giving back its SEM_UNDO adjustment {adj:+}"), std::io::Error::from_raw_os_error(e)))?;
    }
    Ok(())
}

/// Writes `id` into `/proc/sys/kernel/NAME` so that the next object created gets that id.
fn next_id(name: &str, id: i32) -> Result<(), KindError> {
    let path = format!("/proc/sys/kernel/{name}");
    std::fs::write(&path, id.to_string()).map_err(|e| KindError::io(format!("choosing SysV id {id} ({path}; needs CAP_SYS_ADMIN)"), e))
}

/// Recreates (or takes back) every object of `objs`, with its id.
pub fn restore(objs: &[IpcObject]) -> Result<(), KindError> {
    for o in objs {
        let id = o.id;
        match &o.kind {
            IpcKind::Shm { size, .. } => {
                let what = format!("SysV shared memory {id} (key {:#x})", o.key);
                match ipc::shm_stat(id) {
                    Ok(st) => {
                        if st.key != o.key || st.size != *size {
                            return Err(KindError::Mismatch(format!("{what}: id {id} is taken by another segment (key {:#x}, {} bytes)", st.key, st.size)));
                        }
                        if st.nattch > 0 {
                            return Err(KindError::Mismatch(format!("{what}: still attached by {} processes (is the checkpointed job still running?)", st.nattch)));
                        }
                    }
                    Err(_) => {
                        next_id("shm_next_id", id)?;
                        let got = ipc::shm_create(o.key, *size, o.mode).map_err(|e| KindError::io(format!("{what}: creating it"), e))?;
                        if got != id {
                            let _ = ipc::shm_remove(got);
                            return Err(KindError::Mismatch(format!("{what}: created with id {got}, not {id}")));
                        }
                        ipc::shm_set_owner(id, o.uid, o.gid, o.mode).map_err(|e| KindError::io(format!("{what}: setting its owner"), e))?;
                    }
                }
            }
            IpcKind::Sem { values } => {
                let what = format!("SysV semaphore set {id} (key {:#x})", o.key);
                match ipc::sem_stat(id) {
                    Ok(st) if st.key != o.key || st.size != values.len() as u64 => {
                        return Err(KindError::Mismatch(format!("{what}: id {id} is taken by another set (key {:#x}, {} semaphores)", st.key, st.size)));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        next_id("sem_next_id", id)?;
                        let got = ipc::sem_create(o.key, values.len(), o.mode).map_err(|e| KindError::io(format!("{what}: creating it"), e))?;
                        if got != id {
                            let _ = ipc::sem_remove(got);
                            return Err(KindError::Mismatch(format!("{what}: created with id {got}, not {id}")));
                        }
                        ipc::sem_set_owner(id, o.uid, o.gid, o.mode).map_err(|e| KindError::io(format!("{what}: setting its owner"), e))?;
                    }
                }
                ipc::sem_set_values(id, values).map_err(|e| KindError::io(format!("{what}: setting its values"), e))?;
            }
            IpcKind::Msg { qbytes, messages } => restore_queue(o, *qbytes, messages)?,
        }
    }
    Ok(())
}

/// A message queue with its id, owner, limit and messages. One still there with the same id
/// and key (it outlived the processes) is emptied and filled again with the saved messages.
fn restore_queue(o: &IpcObject, qbytes: u64, messages: &[(i64, Vec<u8>)]) -> Result<(), KindError> {
    let id = o.id;
    let what = format!("SysV message queue {id} (key {:#x})", o.key);
    match ipc::msg_stat(id) {
        Ok(st) if st.perm.key != o.key => {
            return Err(KindError::Mismatch(format!("{what}: id {id} is taken by another queue (key {:#x}); remove it (ipcrm -q {id}) or restart where that id is free", st.perm.key)));
        }
        Ok(st) => {
            let max = (st.cbytes as usize).max(1);
            for _ in 0..st.qnum {
                match ipc::msg_take(id, max) {
                    Err(e) if e.raw_os_error() == Some(libc::ENOMSG) => break,
                    r => {
                        r.map_err(|e| KindError::io(format!("{what}: emptying it before putting the saved messages back"), e))?;
                    }
                }
            }
        }
        Err(_) => {
            next_id("msg_next_id", id)?;
            let got = ipc::msg_create(o.key, o.mode).map_err(|e| {
                let e = if e.raw_os_error() == Some(libc::EEXIST) { std::io::Error::new(e.kind(), format!("{e}: another queue has key {:#x}", o.key)) } else { e };
                KindError::io(format!("{what}: creating it"), e)
            })?;
            if got != id {
                let _ = ipc::msg_remove(got);
                return Err(KindError::Mismatch(format!("{what}: created with id {got}, not {id}")));
            }
        }
    }
    ipc::msg_set(id, o.uid, o.gid, o.mode, qbytes).map_err(|e| KindError::io(format!("{what}: setting its owner, mode and limit of {qbytes} bytes"), e))?;
    for (k, (mtype, data)) in messages.iter().enumerate() {
        ipc::msg_send(id, *mtype, data).map_err(|e| KindError::io(format!("{what}: queueing message {k} of {} (type {mtype}, {} bytes)", messages.len(), data.len()), e))?;
    }
    Ok(())
}

/// Once every process has attached its segments: removes those removed at the checkpoint.
pub fn finish(objs: &[IpcObject]) -> Result<(), KindError> {
    for o in objs {
        if let IpcKind::Shm { removed: true, .. } = o.kind {
            ipc::shm_remove(o.id).map_err(|e| KindError::io(format!("SysV shared memory {}: removing it again", o.id), e))?;
        }
    }
    Ok(())
}

/// The SEM_UNDO adjustments a process holds ([`dump_semadj`], [`restore_semadj`]).
pub struct SemUndo;

impl crate::process::ProcessKind for SemUndo {
    fn name(&self) -> &'static str {
        "semaphore adjustments"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["attrs.semadj"]
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Traced
    }
    fn dumps(&self) -> bool {
        true
    }
    fn dump_after(&self) -> &'static [&'static str] {
        // They are kept among the process attributes, which that kind's dump makes.
        &["process attributes"]
    }
    fn dump(&self, cx: &mut crate::process::CollectCx<'_, '_>) -> Result<(), KindError> {
        cx.out.attrs.semadj = dump_semadj(cx.remote, cx.scratch, cx.pid)?;
        Ok(())
    }
    fn after(&self) -> &'static [&'static str] {
        // Made by semop calls of the process itself, while it still has the restarter's
        // credentials (its own may not allow changing the set); the sets exist by then.
        &["process attributes"]
    }
    fn restore(&self, cx: &mut crate::process::FillCx<'_, '_>) -> Result<(), KindError> {
        restore_semadj(cx.remote, cx.scratch, cx.p.pid, &cx.p.attrs.semadj)
    }
}

/// What `cr_info` shows of a SysV object.
pub fn describe(obj: &IpcObject) -> String {
    let what = match &obj.kind {
        IpcKind::Shm { size, removed } => format!("SysV shared memory, {size} bytes{}", if *removed { ", removed" } else { "" }),
        IpcKind::Sem { values } => format!("SysV semaphore set, values {values:?}"),
        IpcKind::Msg { qbytes, messages } => {
            let bytes: usize = messages.iter().map(|(_, d)| d.len()).sum();
            format!("SysV message queue, {} messages, {bytes} bytes (limit {qbytes})", messages.len())
        }
    };
    format!("ipc {} (key {:#x}, mode {:o}, uid {}): {what}", obj.id, obj.key, obj.mode, obj.uid)
}

/// The SysV objects of the image ([`dump`], [`restore`], [`finish`]).
pub struct SysvIpc;

impl crate::image::ImageKind for SysvIpc {
    fn name(&self) -> &'static str {
        "SysV IPC"
    }
    fn record(&self) -> (&'static str, &'static str) {
        ("ipc", "IpcObject")
    }
    fn describe(&self, image: &crest_image::Image) -> Vec<String> {
        image.ipc.iter().map(describe).collect()
    }
    fn dump(&self, procs: &[Process], out: &mut crate::image::ImageObjects) -> Result<(), KindError> {
        out.ipc = dump(procs)?;
        Ok(())
    }
    fn restore(&self, image: &crest_image::Image) -> Result<(), KindError> {
        restore(&image.ipc)
    }
    fn finish(&self, image: &crest_image::Image) -> Result<(), KindError> {
        finish(&image.ipc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cr_info` shows every kind of SysV object, naming it.
    #[test]
    fn every_object_is_described() {
        let kinds = [IpcKind::Shm { size: 4096, removed: true }, IpcKind::Sem { values: vec![1, 2] }, IpcKind::Msg { qbytes: 16384, messages: vec![(1, b"hi".to_vec())] }];
        for (n, kind) in kinds.into_iter().enumerate() {
            let obj = IpcObject { key: 0x1234, id: 7 + n as i32, mode: 0o600, uid: 0, gid: 0, kind };
            let text = describe(&obj);
            assert!(text.starts_with(&format!("ipc {} (key 0x1234", obj.id)) && text.contains("SysV"), "{text}");
        }
    }

    #[test]
    fn sem_table_parses_ids_and_sizes() {
        let table = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n\
                     0x0000162e          3   600          2     0     0     0     0          0 1700000000\n\
                     0x00000000         98   666         17  1000  1000  1000  1000          0 1700000001\n";
        assert_eq!(parse_sem_sets(table), vec![(3, 2), (98, 17)]);
    }

    /// A set no semop went through since a process started cannot hold an adjustment of it;
    /// one operated on since (or a minute before, for a clock stepped since), or with the start
    /// unknown, may.
    #[test]
    fn only_sets_operated_on_since_the_start_may_hold_adjustments() {
        let set = |otime| SemSet { id: 1, n: 1, otime };
        let start = Some(1_700_000_000);
        assert!(!may_hold(&set(0), start), "never operated on");
        assert!(!may_hold(&set(0), None), "never operated on, start unknown");
        assert!(!may_hold(&set(1_700_000_000 - CLOCK_SLACK - 1), start), "last operated on well before the start");
        assert!(may_hold(&set(1_700_000_000 - CLOCK_SLACK), start), "within the clock's slack");
        assert!(may_hold(&set(1_700_000_005), start), "operated on since");
        assert!(may_hold(&set(1), None), "start unknown");
        let table = "       key      semid perms      nsems   uid   gid  cuid  cgid      otime      ctime\n\
                     0x0000162e          3   600          2     0     0     0     0 1700000123 1700000000\n";
        assert_eq!(parse_sem_table(table), vec![SemSet { id: 3, n: 2, otime: 1_700_000_123 }]);
    }

    /// A process started just now is seen as starting now, within the clock's resolution.
    #[test]
    fn a_process_start_reads_in_seconds_since_the_epoch() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let me = started(std::process::id() as i32).expect("own start");
        assert!(me <= now + 1 && me + 3600 > now, "started {me}, now {now}");
    }

    /// The table is read once until it is forgotten, then read again.
    #[test]
    fn sem_sets_are_read_once_per_checkpoint() {
        forget_sem_sets();
        let fake = SemSet { id: -1, n: 1, otime: 0 };
        *SEM_SETS.lock().unwrap() = Some(vec![fake]);
        assert_eq!(sem_sets_once().unwrap(), vec![fake], "held, not read again");
        forget_sem_sets();
        let now = sem_sets_once().unwrap();
        assert!(!now.contains(&fake), "read again after being forgotten");
        assert_eq!(SEM_SETS.lock().unwrap().as_ref(), Some(&now));
        forget_sem_sets();
    }
}
