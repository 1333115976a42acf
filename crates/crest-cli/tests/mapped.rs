//! Pages mapped from the image by a restart: the restored process writes to them and forks,
//! is checkpointed again once the first image is deleted, and comes back from the second
//! image with everything intact; images that may change are not mapped. Every test kills
//! what it started, by PID, even when it fails.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// The mappings of `pid` whose line names `path`.
fn maps_of(pid: i32, path: &Path) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    maps.lines().filter(|l| l.contains(&*path.to_string_lossy())).map(String::from).collect()
}

fn checkpoint(pid: i32, img: &Path) {
    let ck = Command::new(bin("cr_checkpoint")).arg("--kill").arg("-f").arg(img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    assert!(ck.status.success(), "cr_checkpoint failed: {}", String::from_utf8_lossy(&ck.stderr));
}

fn restart(img: &Path, extra: &[&str], procs: &mut Procs) -> (Child, i32) {
    let mut rs = cr_restart_cmd().args(extra).arg(img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart runs");
    let p = restored_child(&mut rs, Duration::from_secs(20));
    procs.pids.push(p);
    // Restored once cr_restart has let it go: its own program mapped, no tracer.
    let t = std::time::Instant::now();
    loop {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let maps = std::fs::read_to_string(format!("/proc/{p}/maps")).unwrap_or_default();
        if status.lines().any(|l| l.starts_with("TracerPid:") && l.ends_with("\t0")) && maps.contains("/mapped\n") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "pid {p} not restored after 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    (rs, p)
}

/// Builds `tests/c/mapped.c` into `d`, starts it there (its PID in `procs`), and once it is
/// ready checkpoints it with `--kill` into `img`; returns the file of its output.
fn start_and_checkpoint(d: &Dir, procs: &mut Procs, img: &Path) -> PathBuf {
    let (pid, out) = start_ready(d, "mapped", &[], procs, Duration::from_secs(20));
    checkpoint(pid, img);
    let _ = procs.take(pid).wait();
    procs.forget(pid);
    out
}

fn usr2(pid: i32) {
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
}

#[test]
fn mapped_memory_is_written_forked_and_checkpointed_again_without_its_image() {
    let d = Dir::new("mapped");
    let mut procs = Procs::default();
    let (first, second) = (d.0.join("first"), d.0.join("second"));
    let out = start_and_checkpoint(&d, &mut procs, &first);

    let (rs, p) = restart(&first, &["--map-pages"], &mut procs);
    procs.children.push(rs);
    let mapped = maps_of(p, &first);
    assert!(!mapped.is_empty(), "the restored memory is a mapping of the image:\n{}", std::fs::read_to_string(format!("/proc/{p}/maps")).unwrap_or_default());
    assert!(mapped.iter().all(|l| l.split_whitespace().nth(1).is_some_and(|perm| perm.ends_with('p'))), "private mappings: {mapped:?}");
    usr2(p);
    wait_for(&out, "written", Duration::from_secs(30));
    // The first image goes; the second must hold every page itself.
    std::fs::remove_file(&first).expect("delete the first image");
    checkpoint(p, &second);
    let rs = procs.children.pop().expect("cr_restart");
    let mut rs = rs;
    let _ = wait_child(&mut rs, Duration::from_secs(20));
    procs.forget(p);

    let (mut rs, p) = restart(&second, &["--map-pages"], &mut procs);
    assert!(maps_of(p, &first).is_empty(), "nothing maps the deleted first image");
    usr2(p);
    let st = wait_child(&mut rs, Duration::from_secs(30));
    procs.forget(p);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "restored twice: {st:?}\n{text}");
}

#[test]
fn images_that_may_change_are_copied() {
    let d = Dir::new("mapped-copy");
    let mut procs = Procs::default();
    let img = d.0.join("img");
    let out = start_and_checkpoint(&d, &mut procs, &img);
    // Writable: copied, not mapped. Asked to copy: copied. Not asked to map: copied.
    std::fs::set_permissions(&img, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let before = std::fs::read_to_string(&out).expect("output");
    for (mode, extra) in [(0o600, &["--map-pages"][..]), (0o400, &["--map-pages", "--copy-pages"][..]), (0o400, &[][..])] {
        // The output as at the checkpoint: the restored copy writes on from there.
        std::fs::write(&out, &before).expect("output");
        std::fs::set_permissions(&img, std::os::unix::fs::PermissionsExt::from_mode(mode)).expect("chmod");
        let (mut rs, p) = restart(&img, extra, &mut procs);
        assert!(maps_of(p, &img).is_empty(), "mode {mode:o} {extra:?}: the image is not mapped");
        usr2(p);
        wait_for(&out, "written", Duration::from_secs(30));
        let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
        let _ = wait_child(&mut rs, Duration::from_secs(20));
        procs.forget(p);
    }
}
