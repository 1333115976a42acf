//! Queued remote syscalls run in one go inside a real process, and a failure among them is
//! named and stops the rest.
use crest_ptrace::{find_syscall_insn, Remote, StopKind, Tracee};

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

#[test]
fn queued_syscalls_run_in_one_go_and_a_failure_is_named() {
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
    let mut remote = Remote::new(&t, find_syscall_insn(pid, vs, ve).expect("syscall insn"), regs);
    // An address far from anything sleep maps.
    let area = 0x3f00_0000_0000;
    remote.map_batch(area).expect("batch area");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    assert!(maps.lines().any(|l| l.starts_with(&format!("{area:x}-")) && l.contains("r-xp")), "the code page is mapped read and execute:\n{maps}");
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
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    assert!(!maps.lines().any(|l| l.starts_with(&format!("{area:x}-"))), "the area is gone");
    t.set_regs(&regs).expect("registers back");
    t.detach(0).expect("detach");
}
