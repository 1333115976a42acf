//! POSIX timers (`timer_create`).
//!
//! Dump reads each timer's id, signal, `sigev_value`, notification and clock from
//! `/proc/PID/timers`, and inside the frozen process (remote syscalls on its leader) the time
//! left and the period (`timer_gettime`) and the overrun count (`timer_getoverrun`, recorded
//! only: the kernel has no way to set it).
//!
//! Restore creates them inside the husk once its threads exist, in id order, each with its
//! saved id: with `prctl(PR_TIMER_CREATE_RESTORE_IDS)` (Linux 6.15) `timer_create` takes the id
//! it is given; before, the kernel hands ids out in increasing order from 0 in a new process, so
//! the ids in between are created and deleted again. An id that cannot be matched fails the
//! restart. Each timer is then armed with the time it had left and its period: the time the
//! process spent checkpointed does not count, as if it had been frozen, and a timer that was
//! about to fire fires right after the restart.
//!
//! Refused at checkpoint: a timer on the CPU clock of another process or thread, or on the
//! CPU clock of "the calling thread" in a process of several threads (which thread created it
//! is not known).
use crest_image::PosixTimer;
use crest_ptrace::{Read, Remote};

use crate::{le_u64, KindError, Scratch};

/// Where in the scratch page the structures of this module go.
const AT: u64 = 3072;
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const RESTORE_IDS_OFF: u64 = 0;
const RESTORE_IDS_ON: u64 = 1;
const SIGEV_THREAD_ID: i32 = 4;
/// `CPUCLOCK_PERTHREAD_MASK` of a CPU clock id.
const CPUCLOCK_PERTHREAD: i32 = 4;

/// The timers listed in a `/proc/PID/timers` text, without their times.
pub fn parse(text: &str) -> Result<Vec<PosixTimer>, String> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for line in text.lines() {
        let Some((key, val)) = line.split_once(':') else { continue };
        let val = val.trim();
        let bad = || format!("/proc timers: cannot read {line:?}");
        if key == "ID" {
            out.push(PosixTimer { id: val.parse().map_err(|_| bad())?, ..Default::default() });
            continue;
        }
        let Some(t) = out.last_mut() else { return Err(bad()) };
        match key {
            // signal: SIGNO/SIVAL_PTR (hexadecimal)
            "signal" => {
                let (sig, value) = val.split_once('/').ok_or_else(bad)?;
                t.signal = sig.parse().map_err(|_| bad())?;
                t.value = u64::from_str_radix(value.trim_start_matches("0x"), 16).map_err(|_| bad())?;
            }
            // notify: signal|none|thread / pid.N|tid.N
            "notify" => {
                let (how, to) = val.split_once('/').ok_or_else(bad)?;
                t.notify = match how {
                    "signal" => libc::SIGEV_SIGNAL,
                    "none" => libc::SIGEV_NONE,
                    "thread" => libc::SIGEV_THREAD,
                    _ => return Err(bad()),
                };
                let (kind, n) = to.split_once('.').ok_or_else(bad)?;
                if kind == "tid" {
                    t.notify |= SIGEV_THREAD_ID;
                    t.tid = n.parse().map_err(|_| bad())?;
                }
            }
            "ClockID" => t.clock = val.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    out.sort_by_key(|t| t.id);
    Ok(out)
}

/// The process or thread a CPU clock id names (0: the caller), and whether it is a thread's.
fn cpu_clock_target(clock: i32) -> (i32, bool) {
    (!(clock >> 3), clock & CPUCLOCK_PERTHREAD != 0)
}

/// A CPU clock id naming `target` (0: the caller) with the same kind and thread bit as `clock`.
fn cpu_clock_for(clock: i32, target: i32) -> i32 {
    ((!target) << 3) | (clock & 7)
}

/// Refuses a timer whose clock would not measure the same thing after a restart.
fn check_clock(pid: i32, tids: &[i32], t: &PosixTimer) -> Result<(), KindError> {
    let refuse = |why: String| Err(KindError::Unsupported(format!("PID {pid}: POSIX timer {} {why}; that is not supported", t.id)));
    if t.clock == libc::CLOCK_THREAD_CPUTIME_ID && tids.len() > 1 {
        return refuse("counts the CPU time of the thread that created it, and the process has several threads".into());
    }
    if t.clock >= 0 {
        return Ok(());
    }
    match cpu_clock_target(t.clock) {
        (0, true) if tids.len() > 1 => refuse("counts the CPU time of the thread that created it, and the process has several threads".into()),
        (0, _) => Ok(()),
        (p, false) if p == pid => Ok(()),
        (p, true) if tids.contains(&p) => Ok(()),
        (p, thread) => refuse(format!("counts the CPU time of {} {p}, outside the process", if thread { "thread" } else { "process" })),
    }
}

fn timespec_ns(b: &[u8], at: usize) -> u64 {
    le_u64(b, at).saturating_mul(1_000_000_000).saturating_add(le_u64(b, at + 8))
}

fn timespec(ns: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    b[8..].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
    b
}

/// Reads the POSIX timers of the frozen process `pid` (threads `tids`) through `remote` on its
/// leader.
pub fn dump(remote: &mut Remote<'_>, scratch: &Scratch, pid: i32, tids: &[i32]) -> Result<Vec<PosixTimer>, KindError> {
    let text = match crest_proc::read(pid, "timers") {
        Ok(t) => t,
        // Kernels without CONFIG_CHECKPOINT_RESTORE have no such file, and then no way to know.
        Err(_) => return Ok(Vec::new()),
    };
    let mut timers = parse(&text).map_err(|e| KindError::Unsupported(format!("PID {pid}: {e}")))?;
    for t in &timers {
        check_clock(pid, tids, t)?;
        if t.notify & SIGEV_THREAD_ID != 0 && !tids.contains(&t.tid) {
            return Err(KindError::Unsupported(format!("PID {pid}: POSIX timer {} signals thread {}, which is not one of the process", t.id, t.tid)));
        }
    }
    // The times of as many timers as fit in the scratch page from AT (32 bytes each) and their
    // overrun counts, read in one go where the process has a batch area.
    for chunk in timers.chunks_mut(((crate::SCRATCH_LEN - AT) / 32) as usize) {
        let reads: Vec<(Read, Read)> = chunk
            .iter()
            .enumerate()
            .map(|(k, t)| (remote.queue_read(libc::SYS_timer_gettime, &[t.id as u64, scratch.addr + AT + 32 * k as u64]), remote.queue_read(libc::SYS_timer_getoverrun, &[t.id as u64])))
            .collect();
        remote.flush()?;
        let b = scratch.read(AT, 32 * chunk.len())?;
        for (k, (t, (time, overrun))) in chunk.iter_mut().zip(reads).enumerate() {
            remote.take(&format!("reading POSIX timer {}", t.id), time)?;
            t.interval_ns = timespec_ns(&b, 32 * k);
            t.value_ns = timespec_ns(&b, 32 * k + 16);
            t.overrun = remote.take(&format!("reading the overrun count of POSIX timer {}", t.id), overrun)? as i32;
        }
    }
    Ok(timers)
}

/// Creates and arms the saved timers inside the husk, through `remote` on its leader, once every
/// thread exists; `tid` gives the new id of a saved thread (`saved_pid`: the process's own).
pub fn restore(remote: &mut Remote<'_>, scratch: &Scratch, saved_pid: i32, timers: &[PosixTimer], tid: &dyn Fn(i32) -> Option<i32>) -> Result<(), KindError> {
    if timers.is_empty() {
        return Ok(());
    }
    let by_id = match remote.syscall(libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_ON, 0, 0, 0])? {
        Ok(_) => true,
        Err(libc::EINVAL) => false, // before Linux 6.15: ids come in increasing order
        Err(e) => return Err(KindError::io("asking for timers with given ids (PR_TIMER_CREATE_RESTORE_IDS)", std::io::Error::from_raw_os_error(e))),
    };
    let created = create(remote, scratch, saved_pid, timers, tid, by_id);
    if by_id {
        remote.call("leaving PR_TIMER_CREATE_RESTORE_IDS", libc::SYS_prctl, &[PR_TIMER_CREATE_RESTORE_IDS, RESTORE_IDS_OFF, 0, 0, 0])?;
    }
    created?;
    for t in timers.iter().filter(|t| t.value_ns != 0) {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&timespec(t.interval_ns));
        b.extend_from_slice(&timespec(t.value_ns));
        let at = scratch.write(AT, &b)?;
        remote.call(&format!("arming POSIX timer {}", t.id), libc::SYS_timer_settime, &[t.id as u64, 0, at, 0])?;
    }
    Ok(())
}

fn create(remote: &mut Remote<'_>, scratch: &Scratch, saved_pid: i32, timers: &[PosixTimer], tid: &dyn Fn(i32) -> Option<i32>, by_id: bool) -> Result<(), KindError> {
    let mut next = 0i32;
    for t in timers {
        let what = format!("creating POSIX timer {}", t.id);
        let mut clock = t.clock;
        if clock < 0 {
            let (target, _) = cpu_clock_target(clock);
            if target != 0 {
                let now = if target == saved_pid { Some(0) } else { tid(target) };
                clock = cpu_clock_for(clock, now.ok_or_else(|| KindError::Mismatch(format!("{what}: thread {target} of its clock was not restored")))?);
            }
        }
        // struct sigevent: sigev_value, sigev_signo, sigev_notify, then the thread id; 64 bytes.
        let mut ev = vec![0u8; 64];
        ev[..8].copy_from_slice(&t.value.to_le_bytes());
        ev[8..12].copy_from_slice(&t.signal.to_le_bytes());
        ev[12..16].copy_from_slice(&t.notify.to_le_bytes());
        if t.notify & SIGEV_THREAD_ID != 0 {
            let to = tid(t.tid).ok_or_else(|| KindError::Mismatch(format!("{what}: the thread {} it signals was not restored", t.tid)))?;
            ev[16..20].copy_from_slice(&to.to_le_bytes());
        }
        ev.extend_from_slice(&t.id.to_le_bytes());
        let at = scratch.write(AT, &ev)?;
        loop {
            if by_id {
                scratch.write(AT + 64, &t.id.to_le_bytes())?;
            }
            remote.call(&what, libc::SYS_timer_create, &[clock as i64 as u64, at, at + 64])?;
            let b = scratch.read(AT + 64, 4)?;
            let got = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            if got == t.id {
                break;
            }
            if by_id || got < next || got > t.id {
                return Err(KindError::Mismatch(format!("{what}: the kernel gave it id {got}; a timer of the restored process must keep its id")));
            }
            // A hole: the id of a timer deleted before the checkpoint.
            next = got + 1;
            remote.call(&format!("deleting the placeholder POSIX timer {got}"), libc::SYS_timer_delete, &[got as u64])?;
        }
        next = t.id + 1;
    }
    Ok(())
}

/// The POSIX timers of a process ([`restore`]).
pub struct Timers;

impl crate::process::ProcessKind for Timers {
    fn name(&self) -> &'static str {
        "posix timers"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["attrs.posix_timers"]
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
        cx.out.attrs.posix_timers = dump(cx.remote, cx.scratch, cx.pid, cx.tids)?;
        Ok(())
    }
    fn after(&self) -> &'static [&'static str] {
        // Timers may signal any thread: after every thread exists.
        &[crate::process::THREADS]
    }
    fn restore(&self, cx: &mut crate::process::FillCx<'_, '_>) -> Result<(), KindError> {
        let (p, pid, threads) = (cx.p, cx.pid, &cx.threads);
        let new_tid = |saved: i32| crate::thread::new_tid(p, pid, threads, saved);
        restore(cx.remote, cx.scratch, cx.p.pid, &cx.p.attrs.posix_timers, &new_tid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_timers() {
        let text = "ID: 0\nsignal: 14/0000000000000000\nnotify: signal/pid.100\nClockID: 1\nID: 3\nsignal: 34/00007ffd12345678\nnotify: signal/tid.102\nClockID: 0\nID: 1\nsignal: 0/0000000000000000\nnotify: none/pid.100\nClockID: -6\n";
        let t = parse(text).expect("parses");
        assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!((t[0].signal, t[0].notify, t[0].clock, t[0].value), (14, libc::SIGEV_SIGNAL, 1, 0));
        assert_eq!((t[1].notify, t[1].clock), (libc::SIGEV_NONE, -6));
        assert_eq!((t[2].signal, t[2].notify, t[2].tid, t[2].value), (34, libc::SIGEV_SIGNAL | SIGEV_THREAD_ID, 102, 0x7ffd_1234_5678));
    }

    #[test]
    fn cpu_clocks() {
        // CLOCK_PROCESS_CPUTIME_ID as the kernel records it: the caller's process.
        assert_eq!(cpu_clock_target(-6), (0, false));
        assert_eq!(cpu_clock_target(-2), (0, true));
        let c = cpu_clock_for(-6, 1234);
        assert_eq!(cpu_clock_target(c), (1234, false));
        assert_eq!(c & 7, 2);
        let tids = [10, 11];
        let t = |clock| PosixTimer { clock, ..Default::default() };
        assert!(check_clock(10, &tids, &t(cpu_clock_for(-6, 10))).is_ok());
        assert!(check_clock(10, &tids, &t(cpu_clock_for(-2, 11))).is_ok());
        assert!(check_clock(10, &tids, &t(cpu_clock_for(-6, 99))).is_err());
        assert!(check_clock(10, &tids, &t(-2)).is_err());
        assert!(check_clock(10, &[10], &t(-2)).is_ok());
    }
}
