//! End-to-end checks of the commands on real processes: a counting program and a 64-thread
//! program are checkpointed, killed and restarted, and must go on where they were; bad input
//! gets a clear refusal. Every test kills what it started, by PID, even when it fails.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

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

#[test]
fn ordinary_user_round_trip_with_new_pid() {
    if !is_root() || Command::new("setpriv").arg("--version").output().is_err() {
        skip("needs root (to become nobody) and setpriv");
        return;
    }
    let d = Dir::new("nobody");
    std::fs::set_permissions(&d.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let prog = d.0.join("counter");
    gcc("demo/counter.c", &prog, &[]);
    let as_nobody = |script: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", "sh", "-c", script])
            .env("CK", bin("cr_checkpoint"))
            .env("RS", bin("cr_restart"))
            .current_dir(&d.0)
            .output()
            .expect("setpriv runs")
    };
    let forbidden = as_nobody("\"$CK\" 1");
    let msg = String::from_utf8_lossy(&forbidden.stderr);
    assert!(!forbidden.status.success() && msg.contains("not permitted to checkpoint PID 1"), "another user's process: {msg}");
    let out = as_nobody("./counter 20 > out.txt & p=$!; sleep 0.5; \"$CK\" --kill $p || exit 10; wait $p; \"$RS\" context.$p; echo \"default=$?\"; \"$RS\" --no-restore-pid context.$p");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "as nobody: {text}");
    assert!(text.contains("needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE"), "restoring the PID says what it needs: {text}");
    let log = std::fs::read_to_string(d.0.join("out.txt")).unwrap_or_default();
    assert!(log.contains("count 20,"), "the restored counter finished:\n{log}");
}

/// A real image of a small program, for the corruption tests.
fn small_image(d: &Dir) -> Vec<u8> {
    let prog = d.0.join("counter");
    gcc("demo/counter.c", &prog, &[]);
    let mut child = Command::new(&prog).arg("0").stdout(std::process::Stdio::null()).spawn().expect("counter");
    let _reaper = Reaper(vec![child.id() as i32]);
    std::thread::sleep(Duration::from_millis(300));
    let img = d.0.join("good");
    let ck = Command::new(bin("cr_checkpoint")).arg("--kill").arg("-f").arg(&img).arg(child.id().to_string()).output().expect("runs");
    assert!(ck.status.success(), "{}", String::from_utf8_lossy(&ck.stderr));
    let _ = child.wait();
    std::fs::read(&img).expect("image")
}

fn refused(d: &Dir, name: &str, bytes: &[u8]) {
    let f = d.0.join(name);
    std::fs::write(&f, bytes).expect("write");
    for b in ["cr_info", "cr_restart"] {
        let mut cmd = Command::new(bin(b));
        if b == "cr_info" {
            cmd.arg("--verify");
        }
        let out = cmd.arg(&f).output().expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{b} accepted the {name} image");
        assert!(!err.is_empty() && !err.contains("panicked"), "{b} on the {name} image: {err}");
    }
}

#[test]
fn corrupt_and_truncated_images_are_refused() {
    let d = Dir::new("corrupt");
    let good = small_image(&d);
    refused(&d, "empty", &[]);
    refused(&d, "half", &good[..good.len() / 2]);
    refused(&d, "no-trailer", &good[..good.len() - 1]);
    let mut meta = good.clone();
    let n = meta.len();
    meta[n - 200] ^= 0x40;
    refused(&d, "metadata-flipped", &meta);
    let mut page = good.clone();
    page[4096 + 100] ^= 0x01;
    refused(&d, "page-flipped", &page);
    let mut head = good.clone();
    head[9] ^= 0x01;
    refused(&d, "version-flipped", &head);
    let rand: Vec<u8> = (0..good.len()).map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) as u8).collect();
    refused(&d, "random", &rand);
}

#[test]
fn image_streams_through_a_pipe() {
    stream_through_a_pipe("pipe", "");
}

/// The same, compressed: stored and compressed runs interleave in the stream.
#[test]
fn compressed_image_streams_through_a_pipe() {
    stream_through_a_pipe("pipez", "--compress");
}

fn stream_through_a_pipe(name: &str, ck_opts: &str) {
    let d = Dir::new(name);
    let prog = d.0.join("counter");
    gcc("demo/counter.c", &prog, &[]);
    let out = d.0.join("out.txt");
    let mut child = Command::new(&prog).arg("15").stdout(std::fs::File::create(&out).expect("out")).spawn().expect("counter");
    let pid = child.id() as i32;
    let _reaper = Reaper(vec![pid]);
    wait_for(&out, "count 3,", Duration::from_secs(20));
    let restore_pid = if is_root() { "" } else { "--no-restore-pid" };
    let script = format!("\"$CK\" --kill {ck_opts} --fd 1 {pid} | \"$RS\" {restore_pid} --fd 0");
    let mut sh = Command::new("sh").arg("-c").arg(&script).env("CK", bin("cr_checkpoint")).env("RS", bin("cr_restart")).spawn().expect("sh");
    let _ = child.wait();
    let st = wait_child(&mut sh, Duration::from_secs(30));
    let text = std::fs::read_to_string(&out).expect("out");
    assert!(st.success() && text.contains("count 15,"), "{st:?}\n{text}");
}
