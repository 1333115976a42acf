//! `cr_check` on this machine: ready for the user running the tests, every check reported with
//! a known status, `-q` silent, `--json` well formed; as an ordinary user (when the tests run as
//! root) still ready, with PID restore reported as needing a capability.
mod common;

use std::process::Command;

use common::is_root;

const CHECKS: &[&str] = &[
    "architecture",
    "kernel",
    "capabilities",
    "seccomp",
    "ptrace scope",
    "ptrace",
    "rseq",
    "process_vm_readv",
    "pagemap",
    "remote syscalls",
    "pidfd_getfd",
    "PID restore",
    "PR_SET_MM_MAP",
    "exe link",
    "MADV_POPULATE_WRITE",
    "kcmp",
    "userfaultfd",
    "TCP repair",
    "vDSO",
];

fn cr_check() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cr_check"))
}

#[test]
fn reports_every_check_and_says_ready() {
    let out = cr_check().output().expect("cr_check runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for name in CHECKS {
        assert!(text.lines().any(|l| ["OK ", "WARN ", "MISSING "].iter().any(|s| l.starts_with(s)) && l[8..].trim_start().starts_with(name)), "no line for {name}:\n{text}");
    }
    assert!(!text.contains("MISSING"), "{text}");
    assert!(text.lines().last().is_some_and(|l| l.starts_with("ready: ")), "{text}");

    let quiet = cr_check().arg("-q").output().expect("cr_check -q runs");
    assert!(quiet.status.success() && quiet.stdout.is_empty() && quiet.stderr.is_empty(), "-q prints nothing");

    let json = cr_check().arg("--json").output().expect("cr_check --json runs");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let checks = v["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), CHECKS.len(), "{v}");
    assert!(checks.iter().all(|c| ["OK", "WARN", "MISSING"].contains(&c["status"].as_str().unwrap_or("")) && c["detail"].is_string()), "{v}");
    assert!(checks.iter().filter(|c| c["status"] != "OK").all(|c| c["fix"].is_string()), "every WARN and MISSING says what to change: {v}");
    if is_root() {
        assert_eq!(v["pid_restore"], true, "root may restore PIDs: {v}");
    }
}

#[test]
fn ordinary_user_is_ready_without_pid_restore() {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs root (to become nobody) and setpriv");
        return;
    }
    let out = Command::new("setpriv").args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]).arg(env!("CARGO_BIN_EXE_cr_check")).output().expect("setpriv runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let line = text.lines().find(|l| l.contains("PID restore")).unwrap_or_default();
    assert!(line.starts_with("WARN") && line.contains("CAP_CHECKPOINT_RESTORE"), "{text}");
    assert!(text.contains("to change: run cr_restart as root or with CAP_CHECKPOINT_RESTORE"), "{text}");
    assert!(text.contains("ready: checkpoint and restart work for this user, restarting with --no-restore-pid"), "{text}");
}
