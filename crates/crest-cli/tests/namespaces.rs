//! Descriptors of namespace files (`/proc/self/ns/KIND`): those of the namespaces the process
//! is in come back as the restored process's own (`tests/c/nsfiles.c` checks them); one of a
//! namespace it is not in is refused, naming it, and the process is left running.
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn own_namespace_files_name_the_restored_process_namespaces() {
    run_c("nsfiles", &[]);
}

/// As root: a descriptor of the UTS namespace of a child that made its own and ended.
#[test]
fn a_namespace_the_process_is_not_in_is_refused() {
    if !is_root() {
        skip("namespace files: making a UTS namespace needs root");
        return;
    }
    let d = Dir::new("nsfiles-other");
    let prog = d.0.join("nsfiles");
    gcc("tests/c/nsfiles.c", &prog, &[]);
    let out = d.0.join("out");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).arg("other").stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("nsfiles"));
    wait_for(&out, "ready", Duration::from_secs(30));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).args(["--kill", "-f"]).arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert_eq!(ck.status.code(), Some(95), "exit status (EOPNOTSUPP); stderr: {err}");
    assert!(err.contains(&format!("PID {pid} fd 33")) && err.contains("uts namespace") && err.contains("not in"), "the message names the process, the descriptor and the namespace: {err}");
    assert!(!img.exists(), "no image is written");
    assert_untouched(pid, "after a refused checkpoint");
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let st = wait_child(&mut procs.take(pid), Duration::from_secs(30));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "the process checks itself after the refusal: {st:?}\n{text}");
}
