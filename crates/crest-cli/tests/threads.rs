//! Threads (`tests/c/threadstate.c`): the state each thread has of its own (name, mask, timer
//! slack, robust list, rseq, alternate stack, signals pending for it alone) comes back in every
//! thread of 50, when the threads are set up in batches at once (the usual way), one system
//! call at a time (a program that handles SIGTRAP, which a batch's end would disturb) and with
//! new thread ids (`--no-restore-pid`).
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn fifty_threads_keep_their_own_state() {
    run_c_in("threadstate", "threadstate", &["50"]);
}

#[test]
fn fifty_threads_keep_their_own_state_one_call_at_a_time() {
    run_c_in("threadstate-trap", "threadstate", &["50", "trap"]);
}

#[test]
fn fifty_threads_keep_their_own_state_with_new_ids() {
    let d = Dir::new("threadstate-newids");
    let prog = d.0.join("threadstate");
    gcc("tests/c/threadstate.c", &prog, &[]);
    let out = d.0.join("out.txt");
    let f = std::fs::File::create(&out).expect("output file");
    let mut child = Command::new(&prog).arg("50").current_dir(&d.0).stdout(f).stdin(Stdio::null()).spawn().expect("start program");
    let mut reaper = Reaper(vec![child.id() as i32]);
    wait_for(&out, "ready", Duration::from_secs(20));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("--kill").arg("-f").arg(&img).arg(child.id().to_string()).output().expect("cr_checkpoint runs");
    assert!(ck.status.success(), "cr_checkpoint failed: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = child.wait();
    let before = std::fs::read_to_string(&out).unwrap_or_default().lines().count();
    let mut rs = Command::new(bin("cr_restart")).arg("--no-restore-pid").arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart runs");
    reaper.0.push(rs.id() as i32);
    let p = restored_child(&mut rs, Duration::from_secs(20));
    reaper.0.push(p);
    // It runs: a new tick. Then it checks itself.
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&out).unwrap_or_default().lines().count() <= before && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill").arg("-USR2").arg(p.to_string()).status();
    let st = wait_child(&mut rs, Duration::from_secs(60));
    let mut e = String::new();
    if !st.success() {
        let _ = std::io::Read::read_to_string(rs.stderr.as_mut().expect("piped"), &mut e);
    }
    reaper.0.clear();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "threadstate after a restart with new ids: {st:?}, cr_restart: {e}\n{}", text.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}
