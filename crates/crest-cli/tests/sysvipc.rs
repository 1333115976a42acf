//! SysV message queues and semaphore adjustments (`SEM_UNDO`): saved with the processes that
//! use them and restored with the same ids, or refused by name.
mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

/// The SysV objects a test program made (its "ipc Q1 Q2 SEM1 SEM2" line), removed on drop whatever
/// the outcome.
struct Objects(Vec<(&'static str, i32)>);
impl Objects {
    fn from_output(text: &str) -> Objects {
        let f: Vec<i32> = text.lines().find_map(|l| l.strip_prefix("ipc ")).map(|l| l.split_whitespace().filter_map(|x| x.parse().ok()).collect()).unwrap_or_default();
        Objects(f.iter().enumerate().map(|(i, id)| (if i >= 2 { "-s" } else { "-q" }, *id)).collect())
    }
}
impl Drop for Objects {
    fn drop(&mut self) {
        for (flag, id) in &self.0 {
            let _ = Command::new("ipcrm").arg(flag).arg(id.to_string()).stderr(std::process::Stdio::null()).status();
        }
    }
}

/// Runs tests/c/sysvmsg.c through a checkpoint with --kill and a restart.
fn sysvmsg(dir: &str, args: &[&str]) {
    if !is_root() {
        skip("restoring SysV ids needs root (/proc/sys/kernel/msg_next_id)");
        return;
    }
    let d = Dir::new(dir);
    let prog = d.0.join("sysvmsg");
    gcc("tests/c/sysvmsg.c", &prog, &[]);
    let out = d.0.join("out.txt");
    // Whatever happens, the objects the program printed go.
    let guard = std::thread::spawn({
        let out = out.clone();
        move || {
            for _ in 0..500 {
                let text = std::fs::read_to_string(&out).unwrap_or_default();
                if text.contains("ipc ") && text.lines().any(|l| l.starts_with("ipc ") && l.split_whitespace().count() == 5) {
                    return Objects::from_output(&text);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Objects(Vec::new())
        }
    });
    let (st, text) = round_trip_verify(&d, &prog, args, "ready", Duration::from_secs(60));
    let _objects = guard.join().expect("the output watcher");
    assert!(st.success() && text.contains("PASS"), "sysvmsg after restart: {st:?}\n{}", text.lines().filter(|l| !l.starts_with("tick")).collect::<Vec<_>>().join("\n"));
}

/// Builds `tests/c/sysvmsg.c` into `d` and starts it there, its output in `d/out.txt`; once it
/// is ready, it and its child are in `procs`. Returns its PID, its output file and the objects
/// it made (removed on drop).
fn start_sysvmsg(d: &Dir, procs: &mut Procs) -> (i32, PathBuf, Objects) {
    let prog = d.0.join("sysvmsg");
    gcc("tests/c/sysvmsg.c", &prog, &[]);
    let out = d.0.join("out.txt");
    let pid = procs.add(Command::new(&prog).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(std::process::Stdio::null()).spawn().expect("sysvmsg"));
    let text = wait_for(&out, "ready", Duration::from_secs(20));
    let objects = Objects::from_output(&text);
    procs.pids.extend(children_of(pid));
    (pid, out, objects)
}

/// Two queues (one private, one keyed with its own mode and byte limit) come back with the same
/// ids and their messages in order, types and bytes kept, an empty and a 6000-byte one among
/// them; a child's SEM_UNDO adjustments of +1 and -3, and of +32767 and -32768 (the extremes),
/// come back and are applied when it exits.
#[test]
fn message_queues_and_semaphore_adjustments() {
    sysvmsg("sysvmsg", &[]);
}

/// A queue whose id another queue (of another key) holds at restart: the restart is refused
/// naming the queue and what to do, and nothing is restored.
#[test]
fn queue_id_taken_by_another_is_refused() {
    if !is_root() {
        skip("restoring SysV ids needs root (/proc/sys/kernel/msg_next_id)");
        return;
    }
    let d = Dir::new("sysvmsg-taken");
    let mut procs = Procs::default();
    let (pid, _, mut objects) = start_sysvmsg(&d, &mut procs);
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).args(["--kill", "-f"]).arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(ck.status.success(), "{}", String::from_utf8_lossy(&ck.stderr));
    let _ = procs.take(pid).wait();
    // The private queue goes, and a queue of another key takes its id.
    let (_, q1) = objects.0[0];
    let _ = Command::new("ipcrm").arg("-q").arg(q1.to_string()).status();
    std::fs::write("/proc/sys/kernel/msg_next_id", q1.to_string()).expect("msg_next_id");
    let mk = Command::new("ipcmk").arg("-Q").output().expect("ipcmk");
    let made: i32 = String::from_utf8_lossy(&mk.stdout).split_whitespace().last().and_then(|x| x.parse().ok()).expect("ipcmk's id");
    objects.0.push(("-q", made));
    assert_eq!(made, q1, "the other queue took the id");
    let rs = cr_restart_cmd().arg(&img).stdin(std::process::Stdio::null()).output().expect("cr_restart");
    let err = String::from_utf8_lossy(&rs.stderr);
    assert!(!rs.status.success(), "the restart is refused: {err}");
    assert!(err.contains(&format!("SysV message queue {q1} (key 0x0): id {q1} is taken by another queue")) && err.contains(&format!("ipcrm -q {q1}")), "{err}");
    assert!(children_of(std::process::id() as i32).iter().all(|c| *c != pid), "nothing restored");
}

/// A checkpoint that lets the processes run on leaves the queues and the adjustments as they
/// were: the original passes the same checks afterwards.
#[test]
fn the_original_runs_on_unchanged() {
    if !is_root() {
        skip("restoring SysV ids needs root (/proc/sys/kernel/msg_next_id)");
        return;
    }
    let d = Dir::new("sysvmsg-run");
    let mut procs = Procs::default();
    let (pid, out, _objects) = start_sysvmsg(&d, &mut procs);
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(ck.status.success(), "{}", String::from_utf8_lossy(&ck.stderr));
    let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("SysV message queue, 4 messages, 6009 bytes")
            && info.contains("#0 +1, set")
            && info.contains("#1 -3")
            && info.contains("#2 -2")
            && info.contains("#0 +32767, set")
            && info.contains("#1 -32768"),
        "the image holds the queues and adjustments: {info}"
    );
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let st = wait_child(&mut procs.take(pid), Duration::from_secs(20));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "the original after the checkpoint: {st:?}\n{}", text.lines().filter(|l| !l.starts_with("tick")).collect::<Vec<_>>().join("\n"));
}

/// Runs tests/c/semforeign.c with `args` (as root; it becomes user 65534), the sets it printed
/// removed whatever the outcome: checkpointed with --kill and restarted, it passes.
fn semforeign_round_trip(dir: &str, args: &[&str]) {
    let d = Dir::new(dir);
    let p = start_c(&d, "semforeign", args);
    let text = wait_for(&p.out, "ready", Duration::from_secs(20));
    let _objects = Objects(text.lines().find_map(|l| l.strip_prefix("ipc ")).unwrap_or("").split_whitespace().filter_map(|x| x.parse().ok()).map(|id| ("-s", id)).collect());
    let (pid, out, mut procs) = (p.pid, p.out, p.procs);
    let ck = Command::new(bin("cr_checkpoint")).args(["--kill", "-f"]).arg(&p.img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    assert!(ck.status.success(), "the checkpoint of a process of another user beside sets it may not change ({args:?}): {}", String::from_utf8_lossy(&ck.stderr));
    let _ = procs.take(pid).wait();
    let mut rs = cr_restart_cmd().arg(&p.img).stdout(std::fs::File::options().append(true).open(&out).expect("out")).stdin(std::process::Stdio::null()).spawn().expect("cr_restart");
    let restored = restored_child(&mut rs, Duration::from_secs(30));
    procs.pids.push(restored);
    let _ = Command::new("kill").arg("-USR2").arg(restored.to_string()).status();
    let st = wait_child(&mut rs, Duration::from_secs(30));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "semforeign {args:?} after restart: {st:?}\n{text}");
}

/// Semaphore sets on the system that a process may not change hold none of its adjustments
/// when it has no SEM_UNDO list (a single thread that never used SEM_UNDO), whenever they were
/// used; nor, with threads (which share a list the kernel made), when no semop went through
/// them since it started: its checkpoint is not refused for them.
#[test]
fn sets_a_process_may_not_change_are_not_its_own() {
    if !is_root() {
        return skip("the test program makes root's sets, then becomes another user");
    }
    semforeign_round_trip("sysvipc-foreign-single", &["operated"]);
    semforeign_round_trip("sysvipc-foreign-threads", &["threads"]);
}

/// A process with threads (a SEM_UNDO list) that may not change a set a semop went through
/// since it started might hold an adjustment on it that nobody can read: refused, naming the
/// set, the process left running.
#[test]
fn a_set_used_since_a_threaded_process_started_that_it_may_not_change_is_refused() {
    if !is_root() {
        return skip("the test program makes root's sets, then becomes another user");
    }
    let d = Dir::new("sysvipc-foreign-refused");
    let p = start_c(&d, "semforeign", &["threads", "operated"]);
    let text = wait_for(&p.out, "ready", Duration::from_secs(20));
    let ids: Vec<i32> = text.lines().find_map(|l| l.strip_prefix("ipc ")).unwrap_or("").split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let _objects = Objects(ids.iter().map(|&id| ("-s", id)).collect());
    let set = format!("SysV semaphore set {}", ids.get(1).expect("two sets"));
    assert_refused_then_passes(p, &[&set, "SEM_UNDO list", "may not change"]);
}
