//! Pre-copy (the default `cr_checkpoint --run`): the pages of a running process are saved while
//! it runs, then it is frozen and only what it changed meanwhile is saved again. `mutate`
//! (tests/c/mutate.c) changes its memory in every way that can leave an earlier saved page
//! stale: mappings replaced at the same address, moved by mremap, grown and shrunk, pages
//! dropped with MADV_DONTNEED (anonymous, and of a private file mapping), pages rewritten here
//! and there. Each image must be the memory of the instant of its final freeze: restarted, the
//! process checks every word at once (it sees the pause) and again on SIGUSR2.
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// MiB of each region of `mutate`: enough for a pre-copy (a process with less than 64 MiB of
/// private memory is saved from a snapshot instead).
const MIB: &str = "32";

/// Starts `mutate`, checkpoints it `images` times in a row while it runs on (with
/// `CREST_NO_PRECOPY=1` when `no_precopy`), checks that it ran on unharmed, then restarts each
/// image and has the restored process check itself.
fn checkpoint_running_mutate(name: &str, images: usize, no_precopy: bool) {
    let d = Dir::new(name);
    let prog = d.0.join("mutate");
    gcc("tests/c/mutate.c", &prog, &[]);
    let out = d.0.join("out.txt");
    let mut child = Command::new(&prog).arg(MIB).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("mutate");
    let pid = child.id() as i32;
    let mut reaper = Reaper(vec![pid]);
    wait_for(&out, "tick 2\n", Duration::from_secs(60));

    let mut imgs: Vec<PathBuf> = Vec::new();
    for k in 0..images {
        // Not in step with the program's steps: checkpoints land during and between them.
        std::thread::sleep(Duration::from_millis(3 + 17 * k as u64));
        let img = d.0.join(format!("img{k}"));
        let mut cmd = Command::new(bin("cr_checkpoint"));
        cmd.arg("-f").arg(&img).arg(pid.to_string()).env("CREST_TIMING", "1");
        if no_precopy {
            cmd.env("CREST_NO_PRECOPY", "1");
        }
        let ck = cmd.output().expect("cr_checkpoint runs");
        assert!(ck.status.success(), "checkpoint {k} failed: {}", String::from_utf8_lossy(&ck.stderr));
        let timing = String::from_utf8_lossy(&ck.stderr).trim().to_string();
        eprintln!("{name}: checkpoint {k}: {timing}");
        let precopied = timing.split_whitespace().any(|f| f.starts_with("precopy_bytes=") && f != "precopy_bytes=0");
        assert_eq!(precopied, !no_precopy, "pre-copied as asked: {timing}");
        assert_untouched(pid, &format!("after checkpoint {k}"));
        imgs.push(img);
    }

    // The original runs on and its memory is intact.
    wait_new_tick(&out, Duration::from_secs(60), "the process did not run on after the checkpoints");
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let st = wait_child(&mut child, Duration::from_secs(60));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    reaper.0.clear();
    assert!(st.success() && text.ends_with("PASS\n") && !text.contains("FAIL"), "the original after the checkpoints: {st:?}\n{}", last_lines(&text));

    // Each image restarted. The restored process writes on at its saved offset: the file is cut
    // there first, so that what follows is its output only.
    for (k, img) in imgs.iter().enumerate() {
        let at = stdout_offset(img);
        std::fs::OpenOptions::new().write(true).open(&out).and_then(|f| f.set_len(at as u64)).expect("cut the output file");
        let since = || std::fs::read(&out).map(|b| String::from_utf8_lossy(&b[at.min(b.len())..]).into_owned()).unwrap_or_default();
        let mut rs = cr_restart_cmd().arg(img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
        reaper.0.push(rs.id() as i32);
        // Restored, it first sees the pause and checks all its memory by itself.
        let t = Instant::now();
        loop {
            let s = since();
            if s.contains("checked after a pause") || s.contains("FAIL") {
                break;
            }
            if let Some(st) = rs.try_wait().expect("try_wait") {
                let mut e = String::new();
                let _ = std::io::Read::read_to_string(rs.stderr.as_mut().expect("piped"), &mut e);
                reaper.0.clear();
                panic!("image {k}: cr_restart ended before the restored process checked itself: {st:?}\nstderr: {e}\noutput:\n{}", last_lines(&since()));
            }
            assert!(t.elapsed() < Duration::from_secs(60), "image {k}: the restored process did not check itself in 60 s:\n{}", last_lines(&s));
            std::thread::sleep(Duration::from_millis(20));
        }
        // Then on SIGUSR2 (unless it failed already, and ends by itself).
        if !since().contains("FAIL") {
            let rp = restored_child(&mut rs, Duration::from_secs(20));
            reaper.0.push(rp);
            let _ = Command::new("kill").arg("-USR2").arg(rp.to_string()).status();
        }
        let st = wait_child(&mut rs, Duration::from_secs(60));
        reaper.0.clear();
        let text = since();
        let mut e = String::new();
        let _ = std::io::Read::read_to_string(rs.stderr.as_mut().expect("piped"), &mut e);
        assert!(
            st.success() && text.contains("checked after a pause") && text.contains("PASS\n") && !text.contains("FAIL"),
            "{name}: image {k} restarted: {st:?}\ncr_restart stderr: {e}\noutput:\n{}",
            last_lines(&text)
        );
        eprintln!("{name}: image {k}: {}", text.lines().find(|l| l.starts_with("checked")).unwrap_or_default());
    }
}

fn last_lines(text: &str) -> String {
    let v: Vec<&str> = text.lines().filter(|l| !l.starts_with("tick")).collect();
    v[v.len().saturating_sub(8)..].join("\n")
}

/// Five pre-copied checkpoints in a row of a process that changes its memory in every way.
#[test]
fn precopied_images_are_of_the_final_freeze() {
    checkpoint_running_mutate("precopy", 5, false);
}

/// The same without pre-copy (`CREST_NO_PRECOPY=1`): saved from a copy-on-write snapshot.
#[test]
fn without_precopy_images_are_of_the_freeze_too() {
    checkpoint_running_mutate("noprecopy", 1, true);
}
