//! Refusals that say what really stands in the way: a kernel thread, the init process, a scope
//! that holds cr_checkpoint itself, another user's process, a file system that makes no files;
//! and a tree whose processes come and go during the freeze, which is checkpointed rather than
//! refused. Every test kills and reaps what it started, by PID.
mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn ck() -> Command {
    Command::new(bin("cr_checkpoint"))
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts exit `code` and a message with `words` and without `not`.
fn says(o: &Output, code: i32, words: &str, not: &str) {
    let e = err(o);
    assert_eq!(o.status.code(), Some(code), "exit status; stderr: {e}");
    assert!(e.contains(words), "message lacks {words:?}: {e}");
    assert!(!e.contains(not), "message says {not:?}: {e}");
    assert!(!e.contains("panicked"), "{e}");
}

/// A kernel thread of this machine other than kthreadd (a kworker), if there is one.
fn a_kworker() -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|&p| p > 2 && std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.starts_with("kworker")))
}

#[test]
fn kernel_threads_are_named_as_such() {
    let d = Dir::new("msg-kthread");
    let img = d.0.join("img");
    let mut pids = vec![2];
    pids.extend(a_kworker());
    for pid in pids {
        for scope in ["--tree", "--pid"] {
            let o = ck().arg(scope).arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
            says(&o, libc::EPERM, &format!("not permitted to checkpoint PID {pid}: it is a kernel thread"), "ended during the checkpoint");
            assert!(!img.exists());
        }
    }
}

#[test]
fn the_init_process_is_refused_as_such() {
    let d = Dir::new("msg-init");
    let img = d.0.join("img");
    let o = ck().arg("-f").arg(&img).arg("1").output().expect("cr_checkpoint");
    says(&o, libc::EPERM, "not permitted to checkpoint PID 1: it is the init process of this PID namespace", "ptrace_scope");
    assert!(!img.exists());
}

#[test]
fn a_scope_that_holds_cr_checkpoint_is_refused_before_freezing() {
    let d = Dir::new("msg-self");
    // The shell that runs cr_checkpoint: its tree, its session and its group hold
    // cr_checkpoint; a child of the shell keeps running untouched meanwhile. The shell leads
    // a session of its own (the test's may have its leader outside this PID namespace, where
    // the kernel shows it as session 0).
    let script = r#"sleep 30 & s=$!; "$CK" -f "$D/img" $$; echo "tree=$?"; "$CK" --sid -f "$D/img" $(ps -o sid= $$); echo "sid=$?"; "$CK" --pgid -f "$D/img" $(ps -o pgid= $$); echo "pgid=$?"; "$CK" --sid -f "$D/img" 0; echo "zero=$?"; grep TracerPid /proc/$s/status; kill $s; wait $s"#;
    let o = Command::new("setsid").arg("-w").arg("sh").arg("-c").arg(script).env("CK", bin("cr_checkpoint")).env("D", &d.0).stdin(Stdio::null()).output().expect("setsid sh");
    let out = String::from_utf8_lossy(&o.stdout);
    let e = err(&o);
    for scope in ["tree", "sid", "pgid"] {
        assert!(out.contains(&format!("{scope}={}", libc::EDEADLK)), "--{scope} of the shell: exit {}; out: {out}; err: {e}", libc::EDEADLK);
    }
    assert!(e.contains("contains cr_checkpoint itself") && e.contains("nothing was frozen"), "{e}");
    assert!(out.contains(&format!("zero={}", libc::EINVAL)) && e.contains("session 0 cannot be checkpointed"), "--sid 0: {out}; {e}");
    assert!(out.contains("TracerPid:\t0"), "the shell's child was never traced: {out}");
    assert!(!d.0.join("img").exists(), "no image");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn another_users_process_says_whose_it_is() {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipped: needs root (to become nobody) and setpriv");
        return;
    }
    let d = Dir::new("msg-other-user");
    std::fs::set_permissions(&d.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new("sleep").arg("60").spawn().expect("sleep"));
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin("cr_checkpoint"))
        .arg("-f")
        .arg(d.0.join("img"))
        .arg(pid.to_string())
        .output()
        .expect("setpriv");
    says(&o, libc::EPERM, &format!("not permitted to checkpoint PID {pid}: it belongs to another user (uid 0); run as its owner or as root"), "ptrace_scope");
    assert_untouched(pid, "after a refused checkpoint");
}

#[test]
fn a_directory_on_a_file_system_that_makes_no_files_says_so() {
    let mut procs = Procs::default();
    let pid = procs.add(Command::new("sleep").arg("60").spawn().expect("sleep"));
    let o = ck().arg("-d").arg("/proc").arg(pid.to_string()).output().expect("cr_checkpoint");
    says(&o, libc::ENOENT, "the file system of /proc does not accept new files", "create the directory");
    assert_untouched(pid, "after a refused destination");
}

/// A shell loop forks a short-lived child again and again: a checkpoint that freezes it while a
/// child ends must leave that child out (or save it as the zombie it became), never fail
/// with "thread N died while traced". The last image restarts.
#[test]
fn children_that_end_during_the_freeze_do_not_fail_the_checkpoint() {
    let d = Dir::new("msg-loop");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new("bash").arg("-c").arg("while :; do /bin/true; done").stdin(Stdio::null()).spawn().expect("bash"));
    std::thread::sleep(Duration::from_millis(200));
    let img = d.0.join("img");
    for round in 0..100 {
        let o = ck().arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
        assert!(o.status.success(), "round {round}: {}", err(&o));
        assert_untouched(pid, &format!("round {round}"));
    }
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let _ = procs.take(pid).wait();
    let mut rs = Command::new(bin("cr_restart")).arg("--no-restore-pid").arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let restored = restored_child(&mut rs, Duration::from_secs(20));
    procs.pids.push(restored);
    wait_while_restarting(&mut rs, Duration::from_secs(20), || proc_state(restored).is_some_and(|(_, tracer)| tracer == 0));
    let rs_pid = procs.add(rs);
    procs.pids.push(rs_pid);
    std::thread::sleep(Duration::from_millis(300));
    assert_untouched(restored, "the restored loop runs on");
    assert!(std::fs::read_to_string(format!("/proc/{restored}/comm")).is_ok_and(|c| c.trim() == "bash"), "the restored process is the loop");
}
