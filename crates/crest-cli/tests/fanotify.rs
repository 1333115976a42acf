//! fanotify groups come back with their flags and marks (tests/c/fanotifies.c); a group of a
//! class that gets permission events is refused, the process left as it was.
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn fanotify_groups_keep_their_marks() {
    if !is_root() {
        return skip("fanotify_init needs CAP_SYS_ADMIN");
    }
    run_c("fanotifies", &["notify", "DIR"]);
}

#[test]
fn fanotify_permission_class_is_refused() {
    if !is_root() {
        return skip("fanotify_init needs CAP_SYS_ADMIN");
    }
    let d = Dir::new("fanotify-content");
    let prog = d.0.join("fanotifies");
    gcc("tests/c/fanotifies.c", &prog, &[]);
    let out = d.0.join("out");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).arg("content").arg(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("fanotifies"));
    wait_for(&out, "ready", Duration::from_secs(30));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).args(["--kill", "-f"]).arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert_eq!(ck.status.code(), Some(95), "exit status (EOPNOTSUPP); stderr: {err}");
    assert!(err.contains("fanotify group") && err.contains("permission events") && err.contains(&format!("PID {pid}")), "the message names the process and the group: {err}");
    assert!(!img.exists(), "no image is written");
    assert_untouched(pid, "after a refused checkpoint");
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let st = wait_child(&mut procs.take(pid), Duration::from_secs(30));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "the process checks itself after the refusal: {st:?}\n{text}");
}
