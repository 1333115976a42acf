//! Stopped processes (Ctrl-Z, SIGSTOP) are checkpointed as they are: a checkpoint that lets
//! them go leaves them stopped, and they come back stopped, their parent still able to see the
//! stop with `waitpid(WUNTRACED)` (`tests/c/stopped.c` checks itself).
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SECS: Duration = Duration::from_secs(30);

fn wait_state(pid: i32, want: char, what: &str) {
    let t = Instant::now();
    while proc_state(pid).map(|s| s.0) != Some(want) {
        assert!(t.elapsed() < SECS, "{what}: PID {pid} is {:?}, not {want}", proc_state(pid));
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lines(out: &Path) -> usize {
    std::fs::read_to_string(out).unwrap_or_default().lines().count()
}

/// A process stopped by SIGSTOP: a checkpoint with the default after-action leaves it stopped
/// and untraced; restarted from that image it is stopped, runs nothing until SIGCONT, then
/// goes on.
#[test]
fn stopped_process_stays_and_comes_back_stopped() {
    let d = Dir::new("stopped-single");
    let prog = d.0.join("stopped");
    gcc("tests/c/stopped.c", &prog, &[]);
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("stopped"));
    wait_for(&out, "tick 1", SECS);
    let _ = Command::new("kill").arg("-STOP").arg(pid.to_string()).status();
    wait_state(pid, 'T', "after SIGSTOP");
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(ck.status.success(), "cr_checkpoint: {}", String::from_utf8_lossy(&ck.stderr));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(proc_state(pid), Some(('T', 0)), "the original after the checkpoint: stopped, untraced");
    let info = Command::new(bin("cr_info")).arg("--json").arg(&img).output().expect("cr_info");
    assert!(String::from_utf8_lossy(&info.stdout).contains("\"stop_signal\": 19"), "the image says it is stopped by SIGSTOP");
    let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    let _ = procs.take(pid).wait();

    let before = lines(&out);
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    procs.pids.push(rs.id() as i32);
    let rp = restored_child(&mut rs, SECS);
    procs.pids.push(rp);
    let t = Instant::now();
    while std::fs::read(format!("/proc/{rp}/cmdline")).unwrap_or_default() != prog.as_os_str().as_encoded_bytes().iter().copied().chain([0]).collect::<Vec<u8>>() || proc_state(rp) != Some(('T', 0)) {
        assert!(t.elapsed() < SECS, "the restored process is not stopped and let go: {:?}", proc_state(rp));
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(proc_state(rp), Some(('T', 0)), "the restored process stays stopped");
    assert_eq!(lines(&out), before, "and runs nothing while stopped");
    let _ = Command::new("kill").arg("-CONT").arg(rp.to_string()).status();
    wait_for(&out, &format!("tick {}", before), SECS);
    let _ = Command::new("kill").arg("-USR2").arg(rp.to_string()).status();
    let st = wait_child(&mut rs, SECS);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "the restored process after SIGCONT: {st:?}\n{}", text.lines().rev().take(3).collect::<Vec<_>>().join("\n"));
}

/// A child stopped by SIGTSTP in a checkpointed tree: a checkpoint that lets the tree go leaves
/// it stopped; after a restart its parent still sees the stop, by SIGTSTP, and continues it.
#[test]
fn stopped_child_in_a_tree() {
    let d = Dir::new("stopped-tree");
    let prog = d.0.join("stopped");
    gcc("tests/c/stopped.c", &prog, &[]);
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).arg("tree").current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("stopped"));
    wait_for(&out, "ready", SECS);
    let child = children_of(pid).first().copied().expect("the stopped child");
    procs.pids.push(child);
    wait_state(child, 'T', "the child");
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(ck.status.success(), "cr_checkpoint: {}", String::from_utf8_lossy(&ck.stderr));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(proc_state(child), Some(('T', 0)), "the child after a checkpoint that let it go: stopped, untraced");
    assert_untouched(pid, "the parent after the checkpoint");
    let ck = Command::new(bin("cr_checkpoint")).arg("--kill").arg("-f").arg(d.0.join("img2")).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(ck.status.success(), "cr_checkpoint --kill: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = procs.take(pid).wait();
    procs.forget(child);

    let before = lines(&out);
    // Its own process group again, as when it stopped: a group whose parent is in another
    // group of the session is not orphaned, so SIGTSTP stops it (restored by default into
    // cr_restart's group, which may be orphaned here, the child is stopped by SIGSTOP).
    let mut rs = cr_restart_cmd().arg("--restore-pgid").arg(d.0.join("img2")).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    procs.pids.push(rs.id() as i32);
    wait_while_restarting(&mut rs, SECS, || lines(&out) > before);
    let rp = restored_child(&mut rs, SECS);
    procs.pids.push(rp);
    procs.pids.extend(children_of(rp));
    let _ = Command::new("kill").arg("-USR2").arg(rp.to_string()).status();
    let st = wait_child(&mut rs, SECS);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "the restored tree: {st:?}\n{}", text.lines().rev().take(3).collect::<Vec<_>>().join("\n"));
}
