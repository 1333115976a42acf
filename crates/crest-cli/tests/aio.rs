//! AIO contexts (`io_setup`) come back at their addresses with their size, head, tail and
//! the completed events not yet consumed (tests/c/aiorings.c).
mod common;

use common::*;

#[test]
fn aio_rings_keep_their_events() {
    run_c("aiorings", &[]);
}

/// With a descriptor open with `O_DIRECT`, whose AIO requests the kernel runs after
/// `io_submit` returns, a request may be in flight unseen: refused, the process left as it was.
#[test]
fn aio_with_o_direct_is_refused() {
    let d = Dir::new("aio-direct");
    let p = start_c(&d, "aiorings", &["direct", "DIR"]);
    let text = wait_for(&p.out, "\n", std::time::Duration::from_secs(30));
    if text.contains("no O_DIRECT") {
        return skip("this file system takes no O_DIRECT open");
    }
    wait_for(&p.out, "ready", std::time::Duration::from_secs(30));
    let pid = format!("pid {}", p.pid);
    assert_refused_then_passes(p, &["O_DIRECT", "AIO context", &pid]);
}

/// A request the kernel still runs (a poll, an fsync) leaves no trace it shows: a checkpoint of
/// a process with an AIO context says so, naming the process and the context, rather than
/// pass over it in silence.
#[test]
fn a_checkpoint_with_an_aio_context_warns_of_requests_it_cannot_see() {
    use std::process::{Command, Stdio};
    use std::time::Duration;
    let d = Dir::new("aio-warn");
    let prog = d.0.join("aiorings");
    gcc("tests/c/aiorings.c", &prog, &[]);
    let out = d.0.join("out");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("aiorings"));
    wait_for(&out, "ready", Duration::from_secs(30));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert!(ck.status.success(), "cr_checkpoint: {err}");
    assert!(err.contains(&format!("warning: pid {pid}: AIO context 0x")) && err.contains("in flight") && err.contains("cannot be seen"), "the warning: {err}");
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let st = wait_child(&mut procs.take(pid), Duration::from_secs(30));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "the process runs on and checks itself: {st:?}\n{text}");
}
