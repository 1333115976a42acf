//! End-to-end checks of the commands on real processes: a counting program and a 64-thread
//! program are checkpointed, killed and restarted, and must go on where they were; bad input
//! gets a clear refusal. Every test kills what it started, by PID, even when it fails.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "cr_checkpoint" => env!("CARGO_BIN_EXE_cr_checkpoint"),
        "cr_restart" => env!("CARGO_BIN_EXE_cr_restart"),
        _ => env!("CARGO_BIN_EXE_cr_info"),
    })
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A scratch directory removed on drop.
struct Dir(PathBuf);
impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("crest-smoke-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the PIDs it holds when dropped.
struct Reaper(Vec<i32>);
impl Drop for Reaper {
    fn drop(&mut self) {
        for &p in &self.0 {
            let _ = Command::new("kill").arg("-9").arg(p.to_string()).stderr(Stdio::null()).status();
        }
    }
}

fn gcc(src: &str, out: &Path, extra: &[&str]) {
    let st = Command::new("gcc").args(["-O1", "-Wall", "-o"]).arg(out).arg(root().join(src)).args(extra).status().expect("gcc runs");
    assert!(st.success(), "compiling {src}");
}

fn wait_for(path: &Path, what: &str, timeout: Duration) -> String {
    let t = Instant::now();
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.contains(what) {
            return s;
        }
        assert!(t.elapsed() < timeout, "timed out waiting for {what:?} in {}; it holds:\n{s}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_child(c: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = c.try_wait().expect("try_wait") {
            return st;
        }
        assert!(t.elapsed() < timeout, "pid {} did not finish in {timeout:?}", c.id());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
}

/// Starts `prog args` with stdout to a file, checkpoints it with --kill once `ready` shows
/// there, restarts it and returns cr_restart's exit status and the output.
fn round_trip(d: &Dir, prog: &Path, args: &[&str], ready: &str, timeout: Duration) -> (std::process::ExitStatus, String) {
    let out = d.0.join("out.txt");
    let f = std::fs::File::create(&out).expect("output file");
    let mut child = Command::new(prog).args(args).current_dir(&d.0).stdout(f).stdin(Stdio::null()).spawn().expect("start program");
    let pid = child.id() as i32;
    let mut reaper = Reaper(vec![pid]);
    wait_for(&out, ready, Duration::from_secs(20));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("--kill").arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    assert!(ck.status.success(), "cr_checkpoint failed: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = child.wait();
    let meta = std::fs::metadata(&img).expect("image exists");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o400, "image is owner-read-only");
    let mut cmd = Command::new(bin("cr_restart"));
    if !is_root() {
        cmd.arg("--no-restore-pid");
    }
    let mut rs = cmd.arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart runs");
    reaper.0.push(rs.id() as i32);
    let st = wait_child(&mut rs, timeout);
    if !st.success() {
        let mut e = String::new();
        let _ = std::io::Read::read_to_string(rs.stderr.as_mut().expect("piped"), &mut e);
        eprintln!("cr_restart stderr: {e}");
    }
    reaper.0.clear();
    (st, std::fs::read_to_string(&out).unwrap_or_default())
}

#[test]
fn counter_goes_on_counting() {
    let d = Dir::new("counter");
    let prog = d.0.join("counter");
    gcc("demo/counter.c", &prog, &[]);
    let (st, out) = round_trip(&d, &prog, &["30"], "count 5,", Duration::from_secs(30));
    assert!(st.success(), "restored counter exit: {st:?}\n{out}");
    let counts: Vec<u64> = out.lines().filter_map(|l| l.split("count ").nth(1)?.split(',').next()?.parse().ok()).collect();
    assert_eq!(counts, (1..=30).collect::<Vec<_>>(), "counts are gapless and end at 30:\n{out}");
    let pids: std::collections::HashSet<&str> = out.lines().filter_map(|l| l.split(':').next()).collect();
    if is_root() {
        assert_eq!(pids.len(), 1, "the PID is restored:\n{out}");
    }
}

#[test]
fn sixty_four_threads_keep_their_state() {
    let d = Dir::new("threads");
    let prog = d.0.join("threads");
    gcc("tests/threads/threads.c", &prog, &["-pthread"]);
    let (st, out) = round_trip(&d, &prog, &["3", "64"], "tick 3 ", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "threads after restart: {st:?}\n{out}");
}

#[test]
fn missing_pid_is_refused_clearly() {
    let out = Command::new(bin("cr_checkpoint")).arg("4194000").output().expect("runs");
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("no process with PID 4194000"), "message: {e}");
    assert!(!Path::new("context.4194000").exists());
}

#[test]
fn foreign_file_is_refused_before_anything_starts() {
    let d = Dir::new("foreign");
    let f = d.0.join("junk");
    std::fs::write(&f, b"#!/bin/sh\necho this is not an image\n").expect("write");
    for b in ["cr_restart", "cr_info"] {
        let out = Command::new(bin(b)).arg(&f).output().expect("runs");
        assert!(!out.status.success(), "{b} accepted a foreign file");
        assert!(String::from_utf8_lossy(&out.stderr).contains("not a crest image"), "{b}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
