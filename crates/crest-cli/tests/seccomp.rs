//! Seccomp filters (`tests/c/seccomp.c`): a filter shared by two threads and one of each
//! thread's own come back in each thread, in order, with no_new_privs; only root can save and
//! restore them (`PTRACE_O_SUSPEND_SECCOMP`, `PTRACE_SECCOMP_GET_FILTER`).
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Whether crest may suspend seccomp filters here: root outside any user namespace.
fn can_suspend() -> bool {
    is_root() && std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

#[test]
fn seccomp_filters_come_back_per_thread() {
    if !can_suspend() {
        skip("seccomp filters are saved and restored by root outside a user namespace only");
        return;
    }
    let d = Dir::new("seccomp");
    let prog = d.0.join("seccomp");
    gcc("tests/c/seccomp.c", &prog, &["-pthread"]);
    let (st, out) = round_trip_verify(&d, &prog, &[], "ready", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "seccomp after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

#[test]
fn seccomp_filters_are_refused_without_root() {
    if can_suspend() {
        // As root they are saved (the test above); a user's checkpoint refuses them.
        return;
    }
    let d = Dir::new("seccomp-user");
    let prog = d.0.join("seccomp");
    gcc("tests/c/seccomp.c", &prog, &["-pthread"]);
    let out = d.0.join("out.txt");
    let mut child = Command::new(&prog).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).spawn().expect("start");
    let pid = child.id() as i32;
    let _reaper = Reaper(vec![pid]);
    wait_for(&out, "ready", Duration::from_secs(20));
    let ck = Command::new(bin("cr_checkpoint")).arg("-f").arg(d.0.join("img")).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(!ck.status.success() && String::from_utf8_lossy(&ck.stderr).contains("seccomp filter"), "refused: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = child.kill();
    let _ = child.wait();
}

/// Seccomp strict mode is entered again, as the last step, in processes restored as root
/// (tests/c/strictmode.c): the restored children still only read and write, and are killed
/// for anything else.
#[test]
fn seccomp_strict_mode_comes_back() {
    run_c_as_root("checkpointing a process in seccomp strict mode needs root (PTRACE_O_SUSPEND_SECCOMP)", "strictmode", &[]);
}
