//! Incremental images (`cr_checkpoint --track`, then `--incremental PARENT`): `incr`
//! (tests/c/incr.c) holds 128 MiB and rewrites 1 MiB of it between checkpoints. Each
//! incremental image holds only what was written since its parent, and each image of the
//! chain restarts with every word intact; a missing or changed parent is refused by name; a
//! process whose tracking is gone (a restarted one) gets a full image, and is told so.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn checkpoint(pid: i32, img: &Path, args: &[&str]) -> Output {
    let o = Command::new(bin("cr_checkpoint")).args(args).arg("-f").arg(img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    assert!(o.status.success(), "cr_checkpoint {args:?} {}: {}", img.display(), String::from_utf8_lossy(&o.stderr));
    o
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Waits until `pid` runs untraced its own program: a restored process once cr_restart let it go.
fn wait_running(pid: i32, prog: &Path) {
    let t = Instant::now();
    loop {
        let untraced = std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| s.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["TracerPid:", "0"]));
        if untraced && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == prog) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "restored process {pid} did not start running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asks `pid` to check its memory and waits for its verdict (it then ends).
fn verdict(d: &Dir, pid: i32) -> String {
    let result = d.0.join("result");
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let t = Instant::now();
    loop {
        let s = std::fs::read_to_string(&result).unwrap_or_default();
        if s.ends_with('\n') {
            return s;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no verdict from {pid}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Restarts `img` (with `args`), has the restored process check itself, and returns its verdict.
fn restart_and_check(d: &Dir, prog: &Path, img: &Path, reaper: &mut Reaper) -> String {
    restart_with(d, prog, img, &[], reaper)
}

fn restart_with(d: &Dir, prog: &Path, img: &Path, args: &[&str], reaper: &mut Reaper) -> String {
    let _ = std::fs::remove_file(d.0.join("result"));
    let mut rs = cr_restart_cmd().args(args).arg(img).current_dir(&d.0).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    reaper.0.push(rs.id() as i32);
    let rp = restored_child(&mut rs, Duration::from_secs(60));
    reaper.0.push(rp);
    wait_running(rp, prog);
    let v = verdict(d, rp);
    let st = wait_child(&mut rs, Duration::from_secs(60));
    reaper.0.clear();
    assert!(st.success(), "{}: cr_restart {st:?}, verdict {v}", img.display());
    v
}

/// Runs `cmd args img`, which must fail, and returns its stderr. A restart that goes ahead
/// after all is ended (its restored process too) rather than waited for.
fn refused(img: &Path, cmd: &str, args: &[&str]) -> String {
    let mut c = Command::new(bin(cmd)).args(args).arg(img).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("runs");
    let mut reaper = Reaper(vec![c.id() as i32]);
    let t = Instant::now();
    let st = loop {
        if let Some(st) = c.try_wait().expect("try_wait") {
            break st;
        }
        if let Some(p) = child_of(c.id() as i32) {
            reaper.0.push(p);
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{cmd} {} went on with a broken chain", img.display());
        std::thread::sleep(Duration::from_millis(20));
    };
    reaper.0.clear();
    let mut e = String::new();
    let _ = std::io::Read::read_to_string(c.stderr.as_mut().expect("stderr"), &mut e);
    assert!(!st.success(), "{cmd} {} should refuse a broken chain: {e}", img.display());
    e
}

/// Removes the notes of the trackers left in `pids` (beside the claim files), when dropped.
struct Notes(Vec<i32>);
impl Drop for Notes {
    fn drop(&mut self) {
        for dir in ["/run/lock", "/dev/shm", "/tmp"] {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if self.0.iter().any(|p| name.starts_with(&format!("crest-tracking-{p}-"))) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

#[test]
fn incremental_chain() {
    let mut notes = Notes(Vec::new());
    let d = Dir::new("incremental");
    let prog = d.0.join("incr");
    gcc("tests/c/incr.c", &prog, &[]);
    let out = d.0.join("out");
    let mut child = Command::new(&prog).arg("128").current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stderr(Stdio::null()).stdin(Stdio::null()).spawn().expect("incr");
    let pid = child.id() as i32;
    let mut reaper = Reaper(vec![pid]);
    notes.0.push(pid);
    wait_for(&out, "ready\n", Duration::from_secs(60));

    let imgs: Vec<PathBuf> = (0..4).map(|k| d.0.join(format!("img{k}"))).collect();
    checkpoint(pid, &imgs[0], &["--track"]);
    for k in 1..4 {
        let _ = Command::new("kill").arg("-USR1").arg(pid.to_string()).status();
        wait_for(&out, &format!("round {k}\n"), Duration::from_secs(60));
        let o = checkpoint(pid, &imgs[k], &["--incremental", imgs[k - 1].to_str().expect("utf-8")]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!e.contains("full image"), "checkpoint {k} fell back to a full image: {e}");
        // 1 MiB written: a few MiB of runs at most, against 128 MiB.
        assert!(len(&imgs[k]) * 10 < len(&imgs[0]), "image {k} is {} bytes, the full one {}", len(&imgs[k]), len(&imgs[0]));
        eprintln!("incremental: image {k}: {} bytes (full: {})", len(&imgs[k]), len(&imgs[0]));
    }
    // A mapping new since the last image is saved whole, and -v says so; the image is still
    // an incremental one.
    let _ = Command::new("kill").arg("-HUP").arg(pid.to_string()).status();
    wait_for(&out, "mapped\n", Duration::from_secs(60));
    let mapped = d.0.join("mapped");
    let o = checkpoint(pid, &mapped, &["-v", "--incremental", imgs[3].to_str().expect("utf-8")]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!e.contains("full image") && e.contains("is saved whole: it is new, moved or grown since the parent image"), "a new mapping: {e}");
    assert!(len(&mapped) * 10 < len(&imgs[0]), "a new mapping of 4 MiB: an image of {} bytes", len(&mapped));
    // The tracking now stands for that image: the chain goes on from it.
    let info = Command::new(bin("cr_info")).arg("--verify").arg(&imgs[3]).output().expect("cr_info");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success() && text.contains("chain of 4 images") && text.contains(&imgs[0].display().to_string()) && text.contains("the image is good"), "cr_info --verify: {text}");

    // The tracking now stands for img3: an image incremental to an older one would keep pages
    // of img1 written since. A full image instead, said so.
    let stale = d.0.join("stale");
    let o = checkpoint(pid, &stale, &["--incremental", imgs[1].to_str().expect("utf-8")]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("is a full image") && e.contains("armed again by a later checkpoint"), "{e}");
    assert!(len(&stale) * 2 > len(&imgs[0]), "a full image: {} bytes", len(&stale));

    // The original ran on, intact.
    let v = verdict(&d, pid);
    assert_eq!(v, "PASS round 3\n");
    let st = wait_child(&mut child, Duration::from_secs(60));
    assert!(st.success(), "the original: {st:?}");
    reaper.0.clear();

    // Every image of the chain restarts as it was.
    for (k, img) in imgs.iter().enumerate() {
        let v = restart_and_check(&d, &prog, img, &mut reaper);
        assert_eq!(v, format!("PASS round {k}\n"), "image {k} restarted");
    }
    // Read from the chain's files where they lie: mapped from each image (they are read-only),
    // and with cr_restart's default check of every run's checksum.
    let v = restart_with(&d, &prog, &imgs[3], &["--map-pages"], &mut reaper);
    assert_eq!(v, "PASS round 3\n", "the chain restarted with its pages mapped");

    // Merged into one standalone image, which restarts with the chain's files gone; a parent
    // is not a destination.
    let merged = d.0.join("merged");
    let o = Command::new(bin("cr_info")).arg("--merge").arg(&merged).arg(&imgs[3]).output().expect("cr_info --merge");
    assert!(o.status.success(), "cr_info --merge: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("chain of 4 images"), "{}", String::from_utf8_lossy(&o.stdout));
    let e = refused(&imgs[3], "cr_info", &["--merge", imgs[1].to_str().expect("utf-8")]);
    assert!(e.contains("is a parent in the chain") && e.contains("was not written"), "{e}");
    let info = Command::new(bin("cr_info")).arg("--verify").arg(&merged).output().expect("cr_info");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success() && !text.contains("\nincremental:") && text.contains("the image is good"), "cr_info --verify of the merged image: {text}");
    assert!(len(&merged) < len(&imgs[0]) + len(&imgs[3]), "the merged image holds each page once: {} bytes", len(&merged));
    let aside = d.0.join("aside");
    std::fs::create_dir(&aside).expect("mkdir");
    for img in &imgs[..3] {
        std::fs::rename(img, aside.join(img.file_name().expect("name"))).expect("move");
    }
    let v = restart_and_check(&d, &prog, &merged, &mut reaper);
    for img in &imgs[..3] {
        std::fs::rename(aside.join(img.file_name().expect("name")), img).expect("move back");
    }
    assert_eq!(v, "PASS round 3\n", "the merged image restarted without the chain");

    // Page data of a parent that changed in place (its trailer and length as they were): the
    // checksum of a run read from it does not match, and the restart is refused. One byte
    // flipped in a run of img0 that img3 still uses, then flipped back.
    let img0 = &imgs[0];
    let mut perm = std::fs::metadata(img0).expect("img0").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
    std::fs::set_permissions(img0, perm).expect("chmod");
    let top = Command::new(bin("cr_info")).arg("--json").arg(&imgs[3]).output().expect("cr_info");
    let meta: serde_json::Value = serde_json::from_slice(&top.stdout).expect("json");
    let runs: Vec<serde_json::Value> = meta["processes"][0]["vmas"].as_array().expect("vmas").iter().flat_map(|v| v["pages"].as_array().cloned().unwrap_or_default()).collect();
    let offset = runs.iter().filter(|r| r["image"].as_u64() == Some(3)).filter_map(|r| r["offset"].as_u64()).max().expect("a run of img0 in img3");
    let f = std::fs::OpenOptions::new().read(true).write(true).open(img0).expect("open");
    let mut byte = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut byte, offset).expect("read");
    std::os::unix::fs::FileExt::write_all_at(&f, &[byte[0] ^ 0xff], offset).expect("write");
    let e = refused(&imgs[3], "cr_restart", &[]);
    assert!(e.contains("checksum") && e.contains("in parent 3 of the chain"), "{e}");
    let e = refused(&imgs[3], "cr_info", &["--verify"]);
    assert!(e.contains("checksum"), "cr_info --verify: {e}");
    std::os::unix::fs::FileExt::write_all_at(&f, &byte, offset).expect("write back");
    drop(f);

    // A missing parent is refused, by name, by cr_restart and cr_info --verify.
    let away = d.0.join("away");
    std::fs::rename(&imgs[1], &away).expect("move");
    for (cmd, args) in [("cr_restart", &[][..]), ("cr_info", &["--verify"][..])] {
        let e = refused(&imgs[3], cmd, args);
        assert!(e.contains(&format!("{} is missing", imgs[1].display())), "{cmd}: {e}");
    }
    std::fs::rename(&away, &imgs[1]).expect("move back");

    // So is a changed one.
    let mut perm = std::fs::metadata(&imgs[0]).expect("img0").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
    std::fs::set_permissions(&imgs[0], perm).expect("chmod");
    let f = std::fs::OpenOptions::new().append(true).open(&imgs[0]).expect("open img0");
    std::io::Write::write_all(&mut &f, b"x").expect("append");
    let e = refused(&imgs[3], "cr_restart", &[]);
    assert!(e.contains(&imgs[0].display().to_string()) && e.contains("has changed"), "{e}");
    f.set_len(len(&imgs[0]) - 1).expect("truncate");
    drop(f);

    // A restarted process is not the one tracked: a full image, said so.
    let _ = std::fs::remove_file(d.0.join("result"));
    let mut rs = cr_restart_cmd().arg(&imgs[3]).current_dir(&d.0).stdin(Stdio::null()).stderr(Stdio::null()).spawn().expect("cr_restart");
    reaper.0.push(rs.id() as i32);
    let rp = restored_child(&mut rs, Duration::from_secs(60));
    reaper.0.push(rp);
    notes.0.push(rp);
    wait_running(rp, &prog);
    let full = d.0.join("img4");
    let o = checkpoint(rp, &full, &["--incremental", imgs[3].to_str().expect("utf-8")]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("is a full image") && e.contains("restarted"), "{e}");
    assert!(len(&full) * 2 > len(&imgs[0]), "a full image: {} bytes", len(&full));
    // A checkpoint without --track/--incremental ends the tracking instead of refusing the
    // userfaultfd crest left in the process.
    let trackers =
        || std::fs::read_dir(format!("/proc/{rp}/fd")).map(|d| d.flatten().filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("userfaultfd"))).count()).unwrap_or(0);
    assert_eq!(trackers(), 1, "the tracker left by --incremental");
    checkpoint(rp, &d.0.join("img5"), &[]);
    assert_eq!(trackers(), 0, "the tracker closed by a plain checkpoint");
    let v = verdict(&d, rp);
    assert_eq!(v, "PASS round 3\n");
    wait_child(&mut rs, Duration::from_secs(60));
    reaper.0.clear();
    let v = restart_and_check(&d, &prog, &full, &mut reaper);
    assert_eq!(v, "PASS round 3\n", "the full image made in place of an incremental one");
}

/// userfaultfd descriptors `pid` holds.
fn userfaultfds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.flatten().filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("userfaultfd"))).count()).unwrap_or(0)
}

/// A tracked process that forks: its child inherits the write tracker's descriptor, which is
/// crest's. The next checkpoint of the tree is still incremental for the parent, saves the new
/// child whole, closes the child's copy rather than refusing it, and the chain goes on; the
/// image restarts with the parent's memory intact.
#[test]
fn a_tracked_process_that_forks() {
    let mut notes = Notes(Vec::new());
    let d = Dir::new("incremental-fork");
    let prog = d.0.join("incr");
    gcc("tests/c/incr.c", &prog, &[]);
    let out = d.0.join("out");
    let mut child = Command::new(&prog).arg("32").current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stderr(Stdio::null()).stdin(Stdio::null()).spawn().expect("incr");
    let pid = child.id() as i32;
    let mut reaper = Reaper(vec![pid]);
    notes.0.push(pid);
    wait_for(&out, "ready\n", Duration::from_secs(60));
    let imgs: Vec<PathBuf> = (0..3).map(|k| d.0.join(format!("img{k}"))).collect();
    checkpoint(pid, &imgs[0], &["--tree", "--track"]);
    let _ = Command::new("kill").arg("-WINCH").arg(pid.to_string()).status();
    let s = wait_for(&out, "forked ", Duration::from_secs(60));
    let forked: i32 = s.lines().find_map(|l| l.strip_prefix("forked ")?.trim().parse().ok()).expect("the child's PID");
    reaper.0.push(forked);
    notes.0.push(forked);
    assert_eq!(userfaultfds(forked), 1, "the child inherited the tracker");
    for k in 1..3 {
        let _ = Command::new("kill").arg("-USR1").arg(pid.to_string()).status();
        wait_for(&out, &format!("round {k}\n"), Duration::from_secs(60));
        let o = checkpoint(pid, &imgs[k], &["-v", "--tree", "--incremental", imgs[k - 1].to_str().expect("utf-8")]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!e.contains("full image"), "checkpoint {k} of the parent fell back to a full image: {e}");
        assert_eq!(userfaultfds(forked), 0, "the child's copy of the tracker is closed");
        assert_eq!(userfaultfds(pid), 1, "the parent keeps its tracker");
    }
    let info = Command::new(bin("cr_info")).arg("--verify").arg(&imgs[2]).output().expect("cr_info");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success() && text.contains("chain of 3 images") && text.contains(&format!("process {forked} ")), "cr_info --verify: {text}");
    let v = verdict(&d, pid);
    assert_eq!(v, "PASS round 2\n");
    assert!(wait_child(&mut child, Duration::from_secs(60)).success(), "the original");
    let t = Instant::now();
    while Path::new(&format!("/proc/{forked}")).exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "the original's child ends after it (and is reaped: its PID is restored below)");
        std::thread::sleep(Duration::from_millis(20));
    }
    reaper.0.clear();
    for (k, img) in imgs.iter().enumerate() {
        let v = restart_and_check(&d, &prog, img, &mut reaper);
        assert_eq!(v, format!("PASS round {k}\n"), "image {k} restarted");
        // The restored child ends once its parent has: its PID is free again for the next.
        let t = Instant::now();
        while Path::new(&format!("/proc/{forked}")).exists() {
            assert!(t.elapsed() < Duration::from_secs(30), "the restored child {forked} of image {k} ends after its parent");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether `pid` is gone (or a zombie, ended).
fn gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X'])))
}

/// `cr_checkpoint --interval 1 --keep 1 -f ctx PID` as a child, its stderr into `err`.
fn periodic(pid: i32, ctx: &Path, err: &Path, more: &[&str]) -> std::process::Child {
    Command::new(bin("cr_checkpoint"))
        .args(["-v", "--interval", "1", "--keep", "1"])
        .args(more)
        .arg("-f")
        .arg(ctx)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(err).expect("stderr file"))
        .spawn()
        .expect("cr_checkpoint --interval")
}

/// The numbered images of `ctx` in its directory.
fn numbered(ctx: &Path) -> Vec<PathBuf> {
    let name = ctx.file_name().expect("name").to_string_lossy().into_owned();
    let mut v: Vec<PathBuf> = std::fs::read_dir(ctx.parent().expect("dir"))
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix(&format!("{name}."))).is_some_and(|k| k.parse::<u64>().is_ok()))
        .collect();
    v.sort();
    v
}

/// `cr_checkpoint --interval`: killed (SIGKILL) at random moments, it always leaves its link
/// naming a whole image, whose chain restarts with every word intact; run on, it starts a new
/// chain after 10 images and removes the older chain beyond --keep; it ends when the process
/// does.
#[test]
fn periodic_checkpoints_survive_kills() {
    let mut notes = Notes(Vec::new());
    let d = Dir::new("periodic");
    let prog = d.0.join("incr");
    gcc("tests/c/incr.c", &prog, &[]);
    let out = d.0.join("out");
    let mut child = Command::new(&prog).arg("64").current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stderr(Stdio::null()).stdin(Stdio::null()).spawn().expect("incr");
    let pid = child.id() as i32;
    let mut reaper = Reaper(vec![pid]);
    notes.0.push(pid);
    wait_for(&out, "ready\n", Duration::from_secs(60));
    let ctx = d.0.join("ctx");
    let own_pid: &[&str] = if is_root() { &["--no-restore-pid"] } else { &[] };
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |t| t.subsec_nanos() as u64) | 1;
    let mut restarted = 0;
    for k in 0..6 {
        let err = d.0.join(format!("periodic.{k}.err"));
        let mut ck = periodic(pid, &ctx, &err, &[]);
        let ck_pid = ck.id() as i32;
        let mut held = Reaper(vec![ck_pid]);
        let _ = Command::new("kill").arg("-USR1").arg(pid.to_string()).status();
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let at = Duration::from_millis(200 + (seed >> 33) % 3300);
        std::thread::sleep(at);
        let worker = child_of(ck_pid);
        let _ = Command::new("kill").arg("-KILL").arg(ck_pid.to_string()).status();
        wait_child(&mut ck, Duration::from_secs(30));
        // Its worker, killed with it, lets the process go; the next run waits for that.
        if let Some(w) = worker {
            held.0.push(w);
            let t = Instant::now();
            while !gone(w) {
                assert!(t.elapsed() < Duration::from_secs(60), "the worker {w} of a killed cr_checkpoint did not end");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        held.0.clear();
        eprintln!("periodic: run {k} killed after {at:?}: {:?}", std::fs::read_link(&ctx).ok());
        if std::fs::symlink_metadata(&ctx).is_err() {
            continue;
        }
        let info = Command::new(bin("cr_info")).arg("--verify").arg(&ctx).output().expect("cr_info");
        assert!(info.status.success(), "killed after {at:?}: the newest image is not whole: {}", String::from_utf8_lossy(&info.stderr));
        let v = restart_with(&d, &prog, &ctx, own_pid, &mut reaper);
        assert!(v.starts_with("PASS round "), "killed after {at:?}: restarted: {v}");
        reaper.0 = vec![pid];
        restarted += 1;
    }
    assert!(restarted >= 3, "only {restarted} of 6 killed runs had written an image");

    // Run on: a new chain after 10 images, the older one removed (--keep 1); the end of the
    // process ends it, with status 0.
    let err = d.0.join("periodic.end.err");
    let mut ck = periodic(pid, &ctx, &err, &[]);
    let ck_pid = ck.id() as i32;
    let mut held = Reaper(vec![ck_pid]);
    let t = Instant::now();
    loop {
        let text = std::fs::read_to_string(&err).unwrap_or_default();
        if text.matches("image 1 of its chain").count() >= 2 && text.matches("image 2 of its chain").count() >= 2 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "no second chain after {:?}: {text}", t.elapsed());
        let _ = Command::new("kill").arg("-USR1").arg(pid.to_string()).status();
        std::thread::sleep(Duration::from_millis(300));
    }
    let images = numbered(&ctx);
    assert!(images.len() <= 12, "older chains are removed: {images:?}");
    let info = Command::new(bin("cr_info")).arg(&ctx).output().expect("cr_info");
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success() && text.contains("chain of 2 images"), "the new chain: {text}");
    let v = verdict(&d, pid);
    assert!(v.starts_with("PASS round "), "the original: {v}");
    let st = wait_child(&mut child, Duration::from_secs(60));
    assert!(st.success(), "the original: {st:?}");
    let st = wait_child(&mut ck, Duration::from_secs(30));
    held.0.clear();
    reaper.0.clear();
    let text = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(st.success() && text.contains(&format!("process {pid} has ended")), "cr_checkpoint --interval at the end of the process: {st:?}: {text}");
}

/// An incremental checkpoint of a process that keeps writing: the pages written since the
/// parent are saved while it runs (`precopy_bytes` of `CREST_TIMING`), and what it writes
/// meanwhile is saved again while it is frozen. `rewrite 64 16 work` (bench/rewrite.c) rewrites
/// its first 16 MiB over and over; every image of the chain restarts with every word matching
/// the generation its page records (the restored process checks them and exits 0).
#[test]
fn incremental_checkpoints_of_a_busy_process() {
    let mut notes = Notes(Vec::new());
    let d = Dir::new("incremental-busy");
    let prog = d.0.join("rewrite");
    gcc("bench/rewrite.c", &prog, &[]);
    let out = d.0.join("out");
    let mut child =
        Command::new(&prog).args(["64", "16", "work"]).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stderr(Stdio::null()).stdin(Stdio::null()).spawn().expect("rewrite");
    let pid = child.id() as i32;
    let mut reaper = Reaper(vec![pid]);
    notes.0.push(pid);
    wait_for(&out, "work ", Duration::from_secs(60));

    let imgs: Vec<PathBuf> = (0..4).map(|k| d.0.join(format!("img{k}"))).collect();
    checkpoint(pid, &imgs[0], &["--track"]);
    for k in 1..4 {
        std::thread::sleep(Duration::from_millis(200));
        let o = Command::new(bin("cr_checkpoint"))
            .env("CREST_TIMING", "1")
            .args(["--incremental", imgs[k - 1].to_str().expect("utf-8"), "-f"])
            .arg(&imgs[k])
            .arg(pid.to_string())
            .output()
            .expect("cr_checkpoint runs");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "cr_checkpoint --incremental {k}: {e}");
        assert!(!e.contains("full image"), "checkpoint {k} fell back to a full image: {e}");
        let field = |name: &str| -> u64 { e.split_whitespace().find_map(|w| w.strip_prefix(name)?.split('.').next()?.parse().ok()).unwrap_or_else(|| panic!("no {name} in {e}")) };
        let (pre, all) = (field("precopy_bytes="), field("page_bytes="));
        assert!(pre > 0 && pre <= all, "checkpoint {k}: the pages written since the parent are saved while the process runs: {e}");
        assert!(len(&imgs[k]) < len(&imgs[0]), "image {k} is {} bytes, the full one {}", len(&imgs[k]), len(&imgs[0]));
        eprintln!("incremental busy: image {k}: {} bytes (full: {}), {pre} of {all} page bytes saved while it ran, frozen {} ms", len(&imgs[k]), len(&imgs[0]), field("frozen_ms="));
    }
    // The original ran on, intact.
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let st = wait_child(&mut child, Duration::from_secs(60));
    assert!(st.success(), "the original checked itself: {st:?}; {}", std::fs::read_to_string(&out).unwrap_or_default());
    reaper.0.clear();

    // Every image of the chain restarts with every word intact.
    for (k, img) in imgs.iter().enumerate() {
        let mut rs = cr_restart_cmd().arg(img).current_dir(&d.0).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
        reaper.0.push(rs.id() as i32);
        let rp = restored_child(&mut rs, Duration::from_secs(60));
        reaper.0.push(rp);
        wait_running(rp, &prog);
        let _ = Command::new("kill").arg("-USR2").arg(rp.to_string()).status();
        let st = wait_child(&mut rs, Duration::from_secs(60));
        reaper.0.clear();
        assert!(st.success(), "image {k} restarted and checked itself: cr_restart {st:?}");
    }
}
