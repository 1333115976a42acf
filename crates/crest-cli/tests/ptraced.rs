//! Processes under a debugger: BLCR's `--ptraced-error` (the default), `--ptraced-skip`,
//! `--ptraced-allow`, `--ptracer-error` (the default) and `--ptracer-skip`, with a real tracer
//! (tests/c/tracer.c: a parent tracing its child, as gdb or strace does) and with strace.
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SECS: Duration = Duration::from_secs(20);

fn checkpoint(args: &[&str], pid: i32) -> std::process::Output {
    Command::new(bin("cr_checkpoint")).args(args).arg(pid.to_string()).output().expect("cr_checkpoint runs")
}

/// Starts tests/c/tracer.c: (tracer, tracee).
fn start_tracer(d: &Dir, procs: &mut Procs) -> (i32, i32) {
    let prog = d.0.join("tracer");
    gcc("tests/c/tracer.c", &prog, &[]);
    let out = d.0.join("tracer.out");
    let tracer = procs.add(Command::new(&prog).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("tracer"));
    let text = wait_for(&out, "ready", SECS);
    let tracee: i32 = text.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("the tracee's PID");
    procs.pids.push(tracee);
    (tracer, tracee)
}

fn expect(ck: &std::process::Output, code: i32, words: &str, img: &Path) {
    let err = String::from_utf8_lossy(&ck.stderr);
    assert_eq!(ck.status.code(), Some(code), "{err}");
    assert!(err.contains(words), "expected {words:?} in: {err}");
    assert!(!img.exists(), "no image is left by a refused checkpoint");
}

/// A tracer checkpointed alone is refused with BLCR's CR_EPTRACER (57), naming what it traces;
/// with --ptracer-skip nothing is left (56). The traced process alone: refused naming its tracer
/// (56) by default, left out with --ptraced-skip (nothing left: 56), and with --ptraced-allow
/// refused saying to detach the tracer. Every refusal leaves both processes as they were.
#[test]
fn tracer_and_traced_alone() {
    let d = Dir::new("ptraced-alone");
    let mut procs = Procs::default();
    let (tracer, tracee) = start_tracer(&d, &mut procs);
    let img = d.0.join("img");
    let f = img.to_str().expect("utf-8");
    expect(&checkpoint(&["--pid", "-f", f], tracer), 57, &format!("PID {tracer} (tracer) traces PID {tracee} (tracer), which is not part of the checkpoint"), &img);
    expect(&checkpoint(&["--pid", "--ptracer-error", "-f", f], tracer), 57, "--ptracer-skip", &img);
    expect(&checkpoint(&["--pid", "--ptracer-skip", "-f", f], tracer), 56, &format!("no process left to checkpoint: PID {tracer} traces PID {tracee} (--ptracer-skip)"), &img);
    expect(&checkpoint(&["--pid", "-f", f], tracee), 56, &format!("PID {tracee} is already being traced by PID {tracer} (tracer)"), &img);
    expect(&checkpoint(&["--pid", "--ptraced-skip", "-f", f], tracee), 56, &format!("no process left to checkpoint: PID {tracee} is traced by PID {tracer} (--ptraced-skip)"), &img);
    expect(&checkpoint(&["--pid", "--ptraced-allow", "-f", f], tracee), 56, "Linux lets a process have one tracer only", &img);
    // The last option given wins.
    expect(&checkpoint(&["--pid", "--ptraced-skip", "--ptraced-error", "-f", f], tracee), 56, "is already being traced", &img);
    assert_untouched(tracer, "the tracer after the refused checkpoints");
    assert!(proc_state(tracee).is_some_and(|(_, by)| by == tracer), "the tracee is still traced by its tracer");
}

/// Under --tree, --ptracer-skip leaves out the tracer with its subtree (the tracee), and the
/// rest of the tree is checkpointed; --ptraced-skip alone leaves out the tracee,
/// but its tracer is then refused (it traces a process outside the checkpoint).
#[test]
fn skipped_subtrees() {
    let d = Dir::new("ptraced-tree");
    let prog = d.0.join("tracer");
    gcc("tests/c/tracer.c", &prog, &[]);
    let out = d.0.join("tracer.out");
    let mut procs = Procs::default();
    // sh, with the tracer (and its tracee) and a sleep as children.
    let script = format!("'{}' > '{}' & sleep 300 & wait", prog.display(), out.display());
    let sh = procs.add(Command::new("sh").arg("-c").arg(&script).stdin(Stdio::null()).spawn().expect("sh"));
    let text = wait_for(&out, "ready", SECS);
    let tracee: i32 = text.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("the tracee's PID");
    let kids = children_of(sh);
    procs.pids.extend(kids.iter().copied());
    procs.pids.push(tracee);
    let tracer = *kids.iter().find(|&&k| children_of(k).contains(&tracee)).expect("the tracer is a child of sh");
    let img = d.0.join("img");
    let f = img.to_str().expect("utf-8");
    expect(&checkpoint(&["--ptraced-skip", "-f", f], sh), 57, &format!("PID {tracer} (tracer) traces PID {tracee}"), &img);
    let ck = checkpoint(&["--ptracer-skip", "-f", f], sh);
    assert!(ck.status.success(), "{}", String::from_utf8_lossy(&ck.stderr));
    let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains(&format!("process {sh} ")), "sh is in the image: {text}");
    assert!(!text.contains(&format!("process {tracer} ")) && !text.contains(&format!("process {tracee} ")), "neither the tracer nor its tracee is in the image: {text}");
    assert_untouched(tracer, "the tracer left out");
    assert!(proc_state(tracee).is_some_and(|(_, by)| by == tracer), "the tracee is still traced by its tracer");
}

/// strace, the everyday tracer: the process it traces is refused naming strace, with
/// --ptraced-allow saying to detach it; strace itself is refused naming what it traces.
#[test]
fn under_strace() {
    if Command::new("strace").arg("-V").stdout(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true) {
        skip("strace is not installed");
        return;
    }
    let d = Dir::new("ptraced-strace");
    let mut procs = Procs::default();
    let st = procs.add(Command::new("strace").args(["-o", "/dev/null", "sleep", "300"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("strace"));
    let t = std::time::Instant::now();
    let sleep = loop {
        if let Some(&c) = children_of(st).first() {
            if proc_state(c).is_some_and(|(_, by)| by == st) && std::fs::read_link(format!("/proc/{c}/exe")).is_ok_and(|e| e.ends_with("sleep")) {
                break c;
            }
        }
        assert!(t.elapsed() < SECS, "strace did not start sleep");
        std::thread::sleep(Duration::from_millis(20));
    };
    procs.pids.push(sleep);
    let img = d.0.join("img");
    let f = img.to_str().expect("utf-8");
    expect(&checkpoint(&["--pid", "-f", f], sleep), 56, &format!("PID {sleep} is already being traced by PID {st} (strace)"), &img);
    expect(&checkpoint(&["--pid", "--ptraced-allow", "-f", f], sleep), 56, "detach the tracer first (quit strace", &img);
    expect(&checkpoint(&["--pid", "-f", f], st), 57, &format!("PID {st} (strace) traces PID {sleep} (sleep)"), &img);
    expect(&checkpoint(&["-f", f], st), 56, "which is part of the checkpoint itself", &img);
}
