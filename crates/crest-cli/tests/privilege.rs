//! Privilege: an ordinary user (uid 65534 here) checkpoints and restarts their own process
//! (with --no-restore-pid, since choosing a PID needs privilege), and the image is theirs,
//! mode 0400; they cannot checkpoint another user's process; an image of a process that ran
//! with credentials they do not have (root's, a set-user-ID program's) is refused to them
//! before anything starts. These tests need root, to become that user.
mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const NOBODY: u32 = 65534;

fn as_nobody(c: &mut Command) -> &mut Command {
    c.uid(NOBODY).gid(NOBODY)
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory an ordinary user may write in.
fn open_dir(name: &str) -> Dir {
    let d = Dir::new(name);
    std::fs::set_permissions(&d.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    d
}

/// Starts `prog 16 DIR` (no PID check) with stdout to `out`, as `uid` if given.
fn start(procs: &mut Procs, prog: &Path, d: &Dir, out: &Path, uid: Option<u32>) -> i32 {
    let f = std::fs::File::create(out).expect("out");
    if let Some(u) = uid {
        std::os::unix::fs::chown(out, Some(u), Some(u)).expect("chown");
    }
    let mut c = Command::new(prog);
    if let Some(u) = uid {
        c.uid(u).gid(u);
    }
    // Its stderr is its own: one inherited from the test runner may be a file the user may
    // not open, which a restart as that user would rightly refuse to reopen.
    let pid = procs.add(c.arg("16").arg(&d.0).stdout(f).stderr(Stdio::null()).stdin(Stdio::null()).spawn().expect("start"));
    wait_for(out, "ready", Duration::from_secs(30));
    pid
}

#[test]
fn ordinary_user_checkpoints_and_restarts_their_own_process() {
    if !is_root() {
        skip("needs root to become another user");
        return;
    }
    let d = open_dir("priv-own");
    let prog = build_steady(&d);
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = start(&mut procs, &prog, &d, &out, Some(NOBODY));
    let img = d.0.join("img");
    let o = as_nobody(&mut Command::new(bin("cr_checkpoint"))).arg("--kill").arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(o.status.success(), "an ordinary user checkpoints their own process: {}", err(&o));
    let _ = procs.take(pid).wait();
    let md = std::fs::metadata(&img).expect("image");
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (NOBODY, NOBODY, 0o400), "the image is theirs and readable by them only");

    let o = as_nobody(&mut Command::new(bin("cr_restart"))).arg(&img).stdin(Stdio::null()).output().expect("cr_restart");
    assert_eq!(o.status.code(), Some(libc::EPERM), "{}", err(&o));
    assert!(err(&o).contains("needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE (try --no-restore-pid)"), "says what PID restore needs: {}", err(&o));
    assert_eq!(procs_running(&prog), Vec::<i32>::new());

    let rs = as_nobody(&mut Command::new(bin("cr_restart"))).arg("--no-restore-pid").arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = procs.add(rs);
    let rp = restored_child(procs.children.iter_mut().find(|c| c.id() as i32 == rs_pid).expect("cr_restart"), Duration::from_secs(30));
    procs.pids.push(rp);
    wait_for(&out, &format!("tick {}", 1), Duration::from_secs(30));
    verify_steady(rp, &out, 1);
    let status = std::fs::read_to_string(format!("/proc/{rp}/status")).expect("status");
    assert!(status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().skip(1).all(|u| u == "65534")), "runs as the user:\n{status}");
    let _ = Command::new("kill").arg("-9").arg(rp.to_string()).status();
    let st = procs.take(rs_pid).wait().expect("cr_restart");
    procs.forget(rp);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9), "cr_restart dies as its process did");
}

#[test]
fn ordinary_user_cannot_checkpoint_a_root_process() {
    if !is_root() {
        skip("needs root to become another user");
        return;
    }
    let d = open_dir("priv-root-target");
    let prog = build_steady(&d);
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = start(&mut procs, &prog, &d, &out, None);
    let img = d.0.join("img");
    let o = as_nobody(&mut Command::new(bin("cr_checkpoint"))).arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert_eq!(o.status.code(), Some(libc::EPERM), "{}", err(&o));
    assert!(err(&o).contains(&format!("not permitted to checkpoint PID {pid}")) && err(&o).contains("run as its owner or as root"), "{}", err(&o));
    assert!(!img.exists(), "no image");
    assert!(!names_in(&d.0).iter().any(|n| n.starts_with('.')), "no temporary file: {:?}", names_in(&d.0));
    assert_untouched(pid, "after a refused checkpoint");
    verify_steady(pid, &out, 1);
}

/// Checkpoints `pid` (as root, --kill) into `img` and gives the image to the ordinary user.
fn image_for_nobody(pid: i32, img: &Path) {
    let o = Command::new(bin("cr_checkpoint")).arg("--kill").arg("-f").arg(img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(o.status.success(), "{}", err(&o));
    std::os::unix::fs::chown(img, Some(NOBODY), Some(NOBODY)).expect("chown");
}

/// The ordinary user tries to restart `img`: refused before anything starts, with `words`.
fn refused_to_nobody(img: &Path, prog: &Path, words: &str) {
    let o = as_nobody(&mut Command::new(bin("cr_restart"))).arg("--no-restore-pid").arg(img).stdin(Stdio::null()).output().expect("cr_restart");
    assert_eq!(o.status.code(), Some(libc::EPERM), "{}", err(&o));
    assert!(err(&o).contains(words), "message lacks {words:?}: {}", err(&o));
    assert_eq!(procs_running(prog), Vec::<i32>::new(), "nothing started");
    let o = as_nobody(&mut Command::new(bin("cr_restart"))).args(["--no-restore-pid", "--run-on-fail-env=exit 77"]).arg(img).stdin(Stdio::null()).output().expect("cr_restart");
    assert_eq!(o.status.code(), Some(77), "a refusal is a failure of the environment");
}

#[test]
fn image_of_a_root_process_is_refused_to_an_ordinary_user() {
    if !is_root() {
        skip("needs root to become another user");
        return;
    }
    let d = open_dir("priv-root-image");
    let prog = build_steady(&d);
    let out = d.0.join("out.txt");
    std::fs::set_permissions(&d.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let mut procs = Procs::default();
    let pid = start(&mut procs, &prog, &d, &out, None);
    let img = d.0.join("img");
    image_for_nobody(pid, &img);
    let _ = procs.take(pid).wait();
    // Its files too, so that only the credentials stand in the way.
    for f in [&out, &d.0.join("steady.log")] {
        std::os::unix::fs::chown(f, Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    refused_to_nobody(&img, &prog, "the image's process ran as uid 0");
    refused_to_nobody(&img, &prog, "uid 65534 could not have started it: restart it as that user or as root");
}

#[test]
fn image_of_a_set_user_id_program_is_refused_to_its_user() {
    if !is_root() {
        skip("needs root to become another user");
        return;
    }
    let d = open_dir("priv-setuid");
    let plain = build_steady(&d);
    let prog = d.0.join("steady-suid");
    std::fs::copy(&plain, &prog).expect("cp");
    std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).expect("chmod u+s");
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = start(&mut procs, &prog, &d, &out, Some(NOBODY));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let euid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)).unwrap_or("");
    if euid != "0" {
        skip("set-user-ID programs do not run as their owner here (nosuid mount?)");
        return;
    }
    // Its own user may not checkpoint it (it is not dumpable); root may.
    let o = as_nobody(&mut Command::new(bin("cr_checkpoint"))).arg("-f").arg(d.0.join("mine")).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert_eq!(o.status.code(), Some(libc::EPERM), "{}", err(&o));
    assert_untouched(pid, "after a refused checkpoint");
    let img = d.0.join("img");
    image_for_nobody(pid, &img);
    let _ = procs.take(pid).wait();
    refused_to_nobody(&img, &prog, "ran as uid 0");
}
