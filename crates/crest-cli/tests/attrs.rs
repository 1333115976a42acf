//! Process settings that are neither memory nor files come back after a restart (`tests/c/attrs.c`
//! checks each one); what crest does not restore yet is refused at checkpoint time with the
//! process named and left running untouched, decided from `/proc` before anything runs inside
//! it (a process in seccomp strict mode would be killed by the first remote system call).
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SECS: Duration = Duration::from_secs(30);

fn build(d: &Dir) -> PathBuf {
    let p = d.0.join("attrs");
    gcc("tests/c/attrs.c", &p, &[]);
    p
}

#[test]
fn process_settings_survive() {
    let d = Dir::new("attrs");
    let prog = build(&d);
    let (st, out) = round_trip_verify(&d, &prog, &[], "ready", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "attrs after restart: {st:?}\n{}", out.lines().filter(|l| !l.starts_with("tick")).collect::<Vec<_>>().join("\n"));
}

/// As root: the restored process has its saved uids, gids, groups and capability sets, not
/// the restarter's, and a thread that kept other credentials than its process keeps them.
#[test]
fn credentials_survive() {
    if !is_root() {
        skip("credentials: needs root to become another user");
        return;
    }
    let d = Dir::new("attrs-creds");
    let prog = build(&d);
    std::fs::set_permissions(&d.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let (st, out) = round_trip_verify(&d, &prog, &["creds"], "ready", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "attrs creds after restart: {st:?}\n{}", out.lines().filter(|l| !l.starts_with("tick")).collect::<Vec<_>>().join("\n"));
}

/// Starts `attrs refuse MODE`, checks that `cr_checkpoint --kill` exits 95 naming the process
/// and `expect`, writes no image and leaves the process running as it was, then has it check
/// itself.
fn refused(mode: &str, expect: &str) {
    refused_by(mode, expect, &[]);
}

/// [`refused`], with `cr_checkpoint` run under `prefix` (a command that takes privileges away).
fn refused_by(mode: &str, expect: &str, prefix: &[&str]) {
    let d = Dir::new(&format!("attrs-{mode}"));
    let prog = build(&d);
    let out = d.0.join("out");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).args(["refuse", mode]).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("attrs"));
    wait_for(&out, "ready", SECS);
    std::thread::sleep(Duration::from_millis(100));
    let img = d.0.join("img");
    let cr_checkpoint = bin("cr_checkpoint");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&cr_checkpoint);
            c
        }
        None => Command::new(&cr_checkpoint),
    };
    let ck = cmd.args(["--kill", "-f"]).arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert_eq!(ck.status.code(), Some(95), "{mode}: exit status (EOPNOTSUPP); stderr: {err}");
    assert!(err.contains(expect) && err.contains(&format!("PID {pid}")), "{mode}: the message names the process and {expect:?}: {err}");
    assert!(!img.exists(), "{mode}: no image is written");
    assert_untouched(pid, &format!("{mode} after a refused checkpoint"));
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let st = wait_child(&mut procs.take(pid), SECS);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "{mode}: the process checks itself after the refusal: {st:?}\n{text}");
}

/// A timer on the CPU clock of another process would count another clock after a restart.
#[test]
fn cpu_timer_of_another_process_is_refused() {
    refused("cputimer", "outside the process");
}

/// Without the privilege to suspend it (`PTRACE_O_SUSPEND_SECCOMP` needs `CAP_SYS_ADMIN`),
/// strict mode is refused before anything runs inside (which would kill the process); as root
/// it is saved and restored (tests/seccomp.rs).
#[test]
fn seccomp_strict_mode_is_refused_before_anything_runs_inside() {
    if is_root() {
        if Command::new("setpriv").arg("--version").output().is_err() {
            return skip("needs setpriv, to take CAP_SYS_ADMIN away from cr_checkpoint");
        }
        refused_by("seccomp", "seccomp strict mode", &["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]);
    } else {
        refused("seccomp", "seccomp strict mode");
    }
}

/// Two children sharing a descriptor table their parent has left: no process of the image
/// could have made them share it (a table shared with a parent comes back, see programs.rs).
#[test]
fn descriptor_table_shared_without_the_parent_is_refused() {
    refused("sharedfiles", "share one descriptor table");
}

/// Memory locked on fault with a guard region: `mlock` would fail on the guard at restart.
#[test]
fn locked_memory_with_a_guard_region_is_refused() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release.trim().split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    if (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (6, 13) {
        skip(&format!("guard regions need Linux 6.13 (this is {})", release.trim()));
        return;
    }
    refused("lockedguard", "has guard regions");
}

#[test]
fn group_without_its_leader_is_refused() {
    refused("orphangroup", "whose leader is not in the checkpoint");
}
