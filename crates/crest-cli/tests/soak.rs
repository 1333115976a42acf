//! Soak: one process checkpointed (--kill) and restarted round after round, verifying its
//! whole state after each restart, with nothing leaking: no process, no descriptor of the test,
//! no file. 20 rounds in the normal suite; `CREST_SOAK_ROUNDS=200` (or `make soak`) for the
//! long run. Alone in its test binary, so that the descriptor count is the test's own.
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).unwrap_or_default().lines().count()
}

#[test]
fn checkpoint_restart_rounds() {
    let rounds: u32 = std::env::var("CREST_SOAK_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    fd_hygiene(); // its own descriptors stay open for the whole test process
    let fds_before = open_fds();
    let d = Dir::new("soak");
    let prog = build_steady(&d);
    let out = d.0.join("out.txt");
    let img = d.0.join("img");
    let me = std::process::id() as i32;
    let mut procs = Procs::default();
    // The process that holds the running program (and is waited for when it ends): first the
    // program itself, then the cr_restart whose child it is.
    let mut holder = procs.add(start_steady(&prog, &d, 16, &out));
    let mut pid = holder;
    let started = Instant::now();
    for round in 1..=rounds {
        let o = Command::new(bin("cr_checkpoint")).arg("--kill").arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
        assert!(o.status.success(), "round {round}: {}", String::from_utf8_lossy(&o.stderr));
        let _ = procs.take(holder).wait();
        procs.forget(pid);
        let before = lines(&out);
        let rs = procs.add(cr_restart_cmd().arg(&img).stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("cr_restart"));
        let p = restored_child(procs.children.last_mut().expect("cr_restart"), Duration::from_secs(30));
        procs.pids.push(p);
        let t = Instant::now();
        while lines(&out) <= before {
            assert!(t.elapsed() < Duration::from_secs(30), "round {round}: the restored process does not run");
            assert!(proc_state(rs).is_some_and(|s| s.0 != 'Z'), "round {round}: cr_restart ended");
            std::thread::sleep(Duration::from_millis(5));
        }
        verify_steady(p, &out, round);
        if is_root() {
            assert_eq!(p, pid, "round {round}: the PID is kept");
        }
        assert_eq!(procs_running(&prog), vec![p], "round {round}: one process runs the program");
        assert_eq!(children_of(me), vec![rs], "round {round}: the test's only child is the cr_restart of this round");
        holder = rs;
        pid = p;
    }
    let elapsed = started.elapsed();
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let _ = procs.take(holder).wait();
    procs.forget(pid);
    assert_eq!(procs_running(&prog), Vec::<i32>::new(), "nothing runs the program");
    assert_eq!(children_of(me), Vec::<i32>::new(), "no child left");
    assert_eq!(names_in(&d.0), ["img", "out.txt", "steady", "steady.log"], "no file left over");
    let text = std::fs::read_to_string(&out).expect("out");
    assert!(!text.contains("FAIL"), "a check failed");
    drop(d);
    assert_eq!(open_fds(), fds_before, "no descriptor left open");
    eprintln!("soak: {rounds} checkpoint/restart rounds in {elapsed:.1?}, the program verified its state after each; no process, descriptor or file left over");
}
