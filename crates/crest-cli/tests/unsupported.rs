//! What crest cannot restore yet is refused at checkpoint time, named, with the process left
//! running untouched; `--drop-unsupported` checkpoints it anyway and the restored process finds
//! the object closed. Standard input, output and error leading outside the image follow
//! `cr_restart`'s own, and only when they are of the same kind.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const SECS: Duration = Duration::from_secs(30);

fn build(d: &Dir, name: &str) -> PathBuf {
    let p = d.0.join(name);
    gcc(&format!("tests/c/{name}.c"), &p, &[]);
    p
}

fn checkpoint(args: &[&str], pid: i32) -> std::process::Output {
    Command::new(bin("cr_checkpoint")).args(args).arg(pid.to_string()).output().expect("cr_checkpoint runs")
}

/// `cr_checkpoint` without `CAP_NET_ADMIN` (out of its bounding set), so without TCP repair.
fn checkpoint_without_net_admin(args: &[&str], pid: i32) -> std::process::Output {
    Command::new("setpriv").args(["--bounding-set=-net_admin", "--inh-caps=-net_admin"]).arg(bin("cr_checkpoint")).args(args).arg(pid.to_string()).output().expect("setpriv runs")
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).unwrap_or_default().lines().count()
}

/// Waits for `n` more lines in `p` than it has now.
fn more_lines(p: &Path, n: usize) {
    let start = lines(p);
    let t = std::time::Instant::now();
    while lines(p) < start + n {
        assert!(t.elapsed() < SECS, "no new output in {}", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `holder MODE`, checks that a checkpoint is refused naming `expect` (with --run and
/// with --kill) and leaves it intact, then checkpoints it with --drop-unsupported --kill,
/// checks that cr_info lists what was dropped, restarts it and has it check the object closed.
fn refused_then_dropped(mode: &str, expect: &str) {
    refused_then_dropped_by(mode, expect, "", checkpoint)
}

/// [`refused_then_dropped`] with another way to run `cr_checkpoint`, whose refusal must also
/// say `why`.
fn refused_then_dropped_by(mode: &str, expect: &str, why: &str, checkpoint: fn(&[&str], i32) -> std::process::Output) {
    let d = Dir::new(&format!("unsup-{mode}"));
    let prog = build(&d, "holder");
    let out = d.0.join("out");
    let mut procs = Procs::default();
    // The other side of unix-outside: a socket of the test's, outside the checkpoint.
    let listener = std::os::unix::net::UnixListener::bind(d.0.join("outside.sock")).expect("a unix listener");
    let pid = procs.add(Command::new(&prog).arg(mode).arg(&d.0).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("holder"));
    wait_for(&out, "ready", SECS);
    let _kept = (mode == "unix-outside").then(|| listener.accept().expect("the holder connects"));
    // The other side of pty: its slave, open here.
    let _slave = (mode == "pty").then(|| {
        std::os::unix::fs::OpenOptionsExt::custom_flags(std::fs::OpenOptions::new().read(true).write(true), libc::O_NOCTTY)
            .open(std::fs::read_to_string(d.0.join("pts")).expect("the slave's name"))
            .expect("the slave opens")
    });
    let img = d.0.join("img");
    for after in ["--run", "--kill"] {
        let ck = checkpoint(&[after, "-f", img.to_str().expect("utf-8")], pid);
        let err = String::from_utf8_lossy(&ck.stderr);
        assert_eq!(ck.status.code(), Some(95), "{mode} {after}: exit status (EOPNOTSUPP); stderr: {err}");
        assert!(err.contains(expect) && err.contains(&format!("PID {pid}")), "{mode} {after}: the message names the process and {expect:?}: {err}");
        assert!(err.contains("--drop-unsupported"), "{mode}: the message says how to checkpoint anyway: {err}");
        assert!(err.contains(why), "{mode}: the message says why ({why}): {err}");
        assert!(!img.exists(), "{mode} {after}: no image is written");
        assert_untouched(pid, &format!("{mode} after a refused checkpoint ({after})"));
        more_lines(&out, 2);
    }
    let _ = Command::new("kill").arg("-USR1").arg(pid.to_string()).status();
    let text = wait_for(&out, "intact OK", SECS);
    assert!(!text.contains("FAIL"), "{mode}: {text}");

    let ck = checkpoint(&["--drop-unsupported", "--kill", "-f", img.to_str().expect("utf-8")], pid);
    assert!(ck.status.success(), "{mode}: --drop-unsupported checkpoint: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = procs.take(pid).wait();
    let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("left out by --drop-unsupported") && info.contains(expect), "{mode}: cr_info lists what was dropped:\n{info}");

    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    procs.pids.push(rs.id() as i32);
    let p = restored_child(&mut rs, SECS);
    procs.pids.push(p);
    more_lines(&out, 2);
    let _ = Command::new("kill").arg("-USR2").arg(p.to_string()).status();
    let st = wait_child(&mut rs, SECS);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        st.success() && text.contains("closed OK"),
        "{mode}: the restored process sees its object closed ({st:?}):\n{}",
        text.lines().filter(|l| !l.starts_with("tick")).collect::<Vec<_>>().join("\n")
    );
}

/// TCP connections are saved in repair mode, which needs CAP_NET_ADMIN: without it, refused
/// with a message that says so, or dropped on request.
#[test]
fn tcp_connection_without_net_admin_is_refused_or_dropped() {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        return skip("needs root and setpriv, to take CAP_NET_ADMIN away from cr_checkpoint");
    }
    refused_then_dropped_by("tcp-conn", "connected to 127.0.0.1:", "CAP_NET_ADMIN", checkpoint_without_net_admin);
}

#[test]
fn netlink_socket_is_refused_or_dropped() {
    // Routing, socket diagnostics and device event sockets are saved (tests/c/netsocks.c):
    // a netfilter one, whose kernel side keeps state by port id, is not.
    refused_then_dropped("netlink", "netlink socket (protocol 12)");
}

/// Datagram data corked and not sent yet is not saved.
#[test]
fn corked_udp_data_is_refused_or_dropped() {
    refused_then_dropped_by("udp-corked", "UDP 127.0.0.1:", "UDP_CORK", checkpoint);
}

/// An eBPF program cannot be read back from a socket it filters.
#[test]
fn ebpf_socket_filter_is_refused_or_dropped() {
    if !is_root() {
        return skip("loading an eBPF program needs root");
    }
    refused_then_dropped_by("ebpf-filter", "UDP 0.0.0.0:0", "SO_ATTACH_BPF", checkpoint);
}

#[test]
fn unix_connection_to_outside_is_refused_or_dropped() {
    refused_then_dropped("unix-outside", "unix stream socket connected to /");
}

/// A pty master whose slave is open outside the image (here, in the test) cannot be restored
/// whole: refused, or dropped on request. (Pairs whose two ends are in the image: ptys.rs.)
#[test]
fn pty_with_its_slave_outside_is_refused_or_dropped() {
    refused_then_dropped_by("pty", "pty master /dev/ptmx (tty /dev/pts/", "its slave is open in PID", checkpoint);
}

/// A pidfd of a process outside the checkpoint (here, the test) would name another process, or
/// none, after a restart. (Pidfds of processes in the image, and of dead ones: fdkinds.rs.)
#[test]
fn pidfd_of_a_process_outside_is_refused_or_dropped() {
    refused_then_dropped("pidfd-outside", &format!("a pidfd of process {}", std::process::id()));
}

/// A counter whose standard output is a pipe to the test restarts onto cr_restart's pipe; onto
/// a file it is refused (standard output was a pipe), unless --relaxed-stdio.
#[test]
fn stdout_on_a_pipe_follows_cr_restart() {
    let d = Dir::new("unsup-stdio-pipe");
    let prog = d.0.join("counter");
    gcc("demo/counter.c", &prog, &[]);
    let mut procs = Procs::default();
    let mut child = Command::new(&prog).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().expect("counter");
    let pid = child.id() as i32;
    let mut pipe = child.stdout.take().expect("piped");
    procs.children.push(child);
    let mut first = [0u8; 64];
    let _ = std::io::Read::read(&mut pipe, &mut first).expect("the counter prints");
    let img = d.0.join("img");
    let ck = checkpoint(&["--kill", "-f", img.to_str().expect("utf-8")], pid);
    assert!(ck.status.success(), "checkpoint: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = procs.take(pid).wait();
    drop(pipe);

    // Onto a regular file: refused before anything starts, naming the descriptor.
    let file = d.0.join("out");
    let rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stdout(std::fs::File::create(&file).expect("out")).output().expect("cr_restart");
    let err = String::from_utf8_lossy(&rs.stderr);
    assert!(!rs.status.success() && err.contains("descriptor 1") && err.contains("a pipe") && err.contains("--relaxed-stdio"), "restart onto a file is refused: {err}");
    assert!(std::fs::read_to_string(&file).unwrap_or_default().is_empty(), "nothing ran");

    // Onto a pipe: the restored counter goes on there.
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    procs.pids.push(rs.id() as i32);
    let p = restored_child(&mut rs, SECS);
    procs.pids.push(p);
    let mut out = rs.stdout.take().expect("piped");
    let mut buf = [0u8; 256];
    let n = std::io::Read::read(&mut out, &mut buf).expect("the restored counter prints into cr_restart's pipe");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.contains(&format!("pid {}: count", if is_root() { pid } else { p })), "{text}");
    let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
    let _ = wait_child(&mut rs, SECS);

    // With --relaxed-stdio, onto a file.
    let mut rs = cr_restart_cmd().arg("--relaxed-stdio").arg(&img).stdin(Stdio::null()).stdout(std::fs::File::create(&file).expect("out")).stderr(Stdio::piped()).spawn().expect("cr_restart");
    procs.pids.push(rs.id() as i32);
    let p = restored_child(&mut rs, SECS);
    procs.pids.push(p);
    wait_for(&file, "count", SECS);
    let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
    let _ = wait_child(&mut rs, SECS);
}

/// A counter on a terminal (a pseudo-terminal made by `ptyrun`) restarts onto the terminal of
/// the cr_restart command (another one), and goes on counting there.
#[test]
fn stdout_on_a_terminal_follows_cr_restart() {
    let d = Dir::new("unsup-stdio-tty");
    let prog = d.0.join("counter");
    gcc("demo/counter.c", &prog, &[]);
    let ptyrun = build(&d, "ptyrun");
    let mut procs = Procs::default();
    let first = d.0.join("first");
    let runner = procs.add(Command::new(&ptyrun).arg(&prog).stdin(Stdio::null()).stdout(std::fs::File::create(&first).expect("out")).spawn().expect("ptyrun"));
    wait_for(&first, "count 2", SECS);
    let pid = child_of(runner).expect("the counter under ptyrun");
    procs.pids.push(pid);
    let img = d.0.join("img");
    let ck = checkpoint(&["--kill", "-f", img.to_str().expect("utf-8")], pid);
    assert!(ck.status.success(), "checkpoint: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = procs.take(runner).wait();
    procs.forget(pid);
    let info = String::from_utf8_lossy(&Command::new(bin("cr_info")).arg(&img).output().expect("cr_info").stdout).into_owned();
    assert!(info.contains("the terminal /dev/pts/"), "stdout is recorded as a terminal:\n{info}");

    let second = d.0.join("second");
    let mut restart = vec![bin("cr_restart").into_os_string()];
    if !is_root() {
        restart.push("--no-restore-pid".into());
    }
    restart.push(img.clone().into_os_string());
    let runner = procs.add(Command::new(&ptyrun).args(&restart).stdin(Stdio::null()).stdout(std::fs::File::create(&second).expect("out")).spawn().expect("ptyrun cr_restart"));
    let text = wait_for(&second, "count", SECS);
    let rs = child_of(runner).expect("cr_restart under ptyrun");
    procs.pids.push(rs);
    if let Some(p) = child_of(rs) {
        procs.pids.push(p);
    }
    let counts = |t: &str| t.lines().filter_map(|l| l.split("count ").nth(1)?.split(',').next()?.parse::<u64>().ok()).collect::<Vec<_>>();
    let n = *counts(&std::fs::read_to_string(&first).unwrap_or_default()).iter().max().expect("counted before");
    let next = *counts(&text).first().expect("counts after");
    assert_eq!(next, n + 1, "the restored counter goes on where it stopped, on the new terminal:\n{text}");
}

/// A tracer checkpointed with the process it traces is refused naming the traced process
/// (not the tracer) and saying the tracer is part of the checkpoint; the traced process alone
/// is refused naming its tracer.
#[test]
fn a_traced_process_is_named_as_such() {
    let d = Dir::new("unsup-traced");
    let prog = build(&d, "tracer");
    let out = d.0.join("out");
    let mut procs = Procs::default();
    let tracer = procs.add(Command::new(&prog).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("tracer"));
    let text = wait_for(&out, "ready", SECS);
    let tracee: i32 = text.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("the tracee's PID");
    procs.pids.push(tracee);
    let img = d.0.join("img");
    let ck = checkpoint(&["-f", img.to_str().expect("utf-8")], tracer);
    let err = String::from_utf8_lossy(&ck.stderr);
    assert_eq!(ck.status.code(), Some(56), "{err}");
    assert!(err.contains(&format!("PID {tracee} (tracer) is being traced by PID {tracer} (tracer), which is part of the checkpoint")), "{err}");
    let ck = checkpoint(&["--pid", "-f", img.to_str().expect("utf-8")], tracee);
    let err = String::from_utf8_lossy(&ck.stderr);
    assert_eq!(ck.status.code(), Some(56), "{err}");
    assert!(err.contains(&format!("PID {tracee} is already being traced by PID {tracer} (tracer)")), "{err}");
    assert!(!img.exists());
    assert_untouched(tracer, "the tracer after a refused checkpoint");
}
