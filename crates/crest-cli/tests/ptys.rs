//! Pseudo-terminals inside the checkpoint: a pair whose master and slave are both in the
//! image comes back with its settings, window size, queued bytes, controlling terminal and
//! foreground group (tests/c/ptypair.c checks them from inside).
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SECS: Duration = Duration::from_secs(60);

fn build(d: &Dir) -> std::path::PathBuf {
    let p = d.0.join("ptypair");
    gcc("tests/c/ptypair.c", &p, &[]);
    p
}

/// Checkpointed with --kill, restarted, checked from inside.
#[test]
fn pty_pair_with_its_session_is_restored() {
    let d = Dir::new("pty-kill");
    let prog = build(&d);
    let (st, out) = round_trip_verify(&d, &prog, &[], "ready", SECS);
    assert!(st.success() && out.contains("PASS"), "ptypair after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

/// Checkpointed with the default --run, three times while it pings: the running program
/// notices nothing (what was queued was put back), and the image restarts once it is gone.
#[test]
fn pty_pair_checkpointed_while_running_goes_on() {
    let d = Dir::new("pty-run");
    let prog = build(&d);
    let mut procs = Procs::default();
    let out = d.0.join("out.txt");
    let pid = procs.add(Command::new(&prog).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("ptypair"));
    wait_for(&out, "ready", SECS);
    let img = d.0.join("img");
    for _ in 0..3 {
        let _ = std::fs::remove_file(&img);
        let ck = Command::new(bin("cr_checkpoint")).arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
        assert!(ck.status.success(), "cr_checkpoint: {}", String::from_utf8_lossy(&ck.stderr));
        wait_new_tick(&out, SECS, "after a checkpoint with --run");
    }
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let st = procs.take(pid).wait().expect("wait");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "the original after three checkpoints: {st:?}\n{}", text.lines().rev().take(5).collect::<Vec<_>>().join("\n"));

    // The restarted copy writes over the original's output from where it was; its exit
    // status tells (1 on any failed check).
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    procs.pids.push(rs.id() as i32);
    let p = restored_child(&mut rs, SECS);
    procs.pids.push(p);
    wait_new_tick(&out, SECS, "after the restart");
    let _ = Command::new("kill").arg("-USR2").arg(p.to_string()).status();
    let st = wait_child(&mut rs, SECS);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success(), "the restarted copy: {st:?}\n{}", text.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

/// The slave of a pseudo-terminal whose master was closed comes back hung up
/// (tests/c/hungup.c).
#[test]
fn hung_up_slave_stays_hung_up() {
    run_c("hungup", &[]);
}
