//! Queued remote syscalls run in one go inside a real process, and a failure among them is
//! named and stops the rest.
use crest_ptrace::{find_syscall_insn, Regs, Remote, StopKind, Tracee};

/// A `sleep` child, killed and reaped however the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn vdso(pid: i32) -> (u64, u64) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let line = maps.lines().find(|l| l.ends_with("[vdso]")).expect("a vDSO");
    let range = line.split_whitespace().next().expect("a range");
    let (s, e) = range.split_once('-').expect("start-end");
    (u64::from_str_radix(s, 16).expect("hex"), u64::from_str_radix(e, 16).expect("hex"))
}

/// A `sleep` child stopped in an event stop with every signal blocked: the child, its tracee,
/// its registers, and a `syscall` instruction of its vDSO for remote calls.
fn stopped_sleep() -> (Child, Tracee, Regs, u64) {
    let child = Child(std::process::Command::new("sleep").arg("60").spawn().expect("sleep"));
    let pid = child.0.id() as i32;
    let t = Tracee::seize(pid).expect("seize");
    t.interrupt().expect("interrupt");
    while t.wait_stop().expect("stop") != StopKind::Event {
        t.cont(0).expect("cont");
    }
    t.set_sigmask(!0).expect("block signals");
    let regs = t.regs().expect("regs");
    let (vs, ve) = vdso(pid);
    let ip = find_syscall_insn(pid, vs, ve).expect("syscall insn");
    (child, t, regs, ip)
}

/// The line of `/proc/PID/maps` of the mapping that starts at `area`, and the whole file.
fn mapping_at(pid: i32, area: u64) -> (Option<String>, String) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    (maps.lines().find(|l| l.starts_with(&format!("{area:x}-"))).map(str::to_string), maps)
}

#[test]
fn queued_syscalls_run_in_one_go_and_a_failure_is_named() {
    let (child, t, regs, ip) = stopped_sleep();
    let pid = child.0.id() as i32;
    let mut remote = Remote::new(&t, ip, regs);
    // An address far from anything sleep maps.
    let area = 0x3f00_0000_0000;
    remote.map_batch(area).expect("batch area");
    let (line, maps) = mapping_at(pid, area);
    assert!(line.is_some_and(|l| l.contains("r-xp")), "the code page is mapped read and execute:\n{maps}");
    let before = remote.count;
    remote.queue_expecting("getpid", libc::SYS_getpid, &[], pid as u64);
    remote.queue_may_fail(libc::SYS_close, &[u64::MAX]);
    remote.queue_expecting("getppid", libc::SYS_getppid, &[], std::process::id() as u64);
    remote.flush().expect("three calls");
    assert_eq!(remote.count - before, 3, "every queued call ran");
    // A call that must succeed fails: the batch stops there and says which.
    remote.queue("closing descriptor 4000", libc::SYS_close, &[4000]);
    remote.queue_expecting("getpid again", libc::SYS_getpid, &[], pid as u64);
    let e = remote.flush().expect_err("close of a descriptor that is not open fails").to_string();
    assert!(e.contains("closing descriptor 4000") && e.contains(&pid.to_string()), "{e}");
    assert_eq!(remote.count - before, 4, "the call after the failure did not run");
    // A result other than the one expected is an error too.
    remote.queue_expecting("getpid, expecting 1", libc::SYS_getpid, &[], 1);
    assert!(remote.flush().is_err());
    // A plain syscall runs what is queued first.
    remote.queue_expecting("getpid before", libc::SYS_getpid, &[], pid as u64);
    assert_eq!(remote.syscall(libc::SYS_getpid, &[]).expect("traced"), Ok(pid as u64));
    remote.unmap_batch().expect("unmapped");
    assert!(mapping_at(pid, area).0.is_none(), "the area is gone");
    t.set_regs(&regs).expect("registers back");
    t.detach(0).expect("detach");
}

#[test]
fn the_batch_code_is_protected_by_the_first_batch() {
    let (child, t, regs, ip) = stopped_sleep();
    let pid = child.0.id() as i32;
    let mut remote = Remote::new(&t, ip, regs);
    let area = 0x3f00_0000_0000;
    remote.map_batch_protect_queued(area).expect("batch area");
    let before = remote.count;
    remote.queue_expecting("getpid", libc::SYS_getpid, &[], pid as u64);
    remote.queue_expecting("getppid", libc::SYS_getppid, &[], std::process::id() as u64);
    remote.flush().expect("the protection and two calls");
    assert_eq!(remote.count - before, 3, "the protection ran, then every queued call");
    let (line, maps) = mapping_at(pid, area);
    assert!(line.is_some_and(|l| l.contains("r-xp")), "the code page is read and execute once a batch ran:\n{maps}");
    remote.unmap_batch().expect("unmapped");
    assert!(mapping_at(pid, area).0.is_none(), "the area is gone");
    t.set_regs(&regs).expect("registers back");
    t.detach(0).expect("detach");
}

#[test]
fn reads_queued_keep_their_results_and_single_steps_cost_one_stop() {
    let (child, t, regs, ip) = stopped_sleep();
    let pid = child.0.id() as i32;
    let mut remote = Remote::new(&t, ip, regs);
    // sleep neither catches, ignores nor has pending SIGTRAP: calls alone may be single-stepped.
    remote.step_calls(true);
    assert_eq!(remote.syscall(libc::SYS_getpid, &[]).expect("traced"), Ok(pid as u64));
    assert_eq!(remote.waits, 1, "a call alone single-stepped is one stop");
    let area = 0x3f00_0000_0000;
    let extra = remote.map_batch_with_protect_queued(area, 4096).expect("batch area");
    assert_eq!(extra, area + crest_ptrace::BATCH_LEN);
    assert_eq!(remote.waits, 2, "the area is mapped in one stop");
    // Reads from several callers, a failure among them, run in one go after the protection.
    let me = remote.queue_read(libc::SYS_getpid, &[]);
    let bad = remote.queue_read(libc::SYS_close, &[4000]);
    let parent = remote.queue_read(libc::SYS_getppid, &[]);
    assert_eq!(remote.result(me), None, "not run yet");
    let before = remote.count;
    remote.flush().expect("the protection and three reads");
    assert_eq!(remote.count - before, 4, "the failure did not stop the reads after it");
    assert_eq!(remote.waits, 3, "in one stop");
    assert_eq!(remote.result(me), Some(Ok(pid as u64)));
    assert_eq!(remote.result(bad), Some(Err(libc::EBADF)));
    assert_eq!(remote.take("getppid", parent).expect("getppid"), u64::from(std::process::id()));
    let e = remote.take("closing descriptor 4000", bad).expect_err("a failed read").to_string();
    assert!(e.contains("closing descriptor 4000") && e.contains(&pid.to_string()), "{e}");
    let (line, maps) = mapping_at(pid, area);
    assert!(line.is_some_and(|l| l.contains("r-xp")), "the code page is read and execute once a batch ran:\n{maps}");
    remote.unmap_batch().expect("unmapped");
    assert_eq!(remote.waits, 4, "the area is unmapped in one stop");
    assert!(mapping_at(pid, area).0.is_none(), "the area is gone");
    // After the unmapping, a call alone makes its two stops again.
    assert_eq!(remote.syscall(libc::SYS_getpid, &[]).expect("traced"), Ok(pid as u64));
    assert_eq!(remote.waits, 6);
    t.set_regs(&regs).expect("registers back");
    t.detach(0).expect("detach");
}
