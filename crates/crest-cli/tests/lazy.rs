//! `cr_restart --lazy`: the restored process runs before its pages are in, and gets every byte
//! right (uncompressed and compressed images, several threads touching memory at once, memory
//! moved, dropped and forked before it is all in); a page whose data is corrupt in the image
//! kills the process with a message naming it. Every test kills what it started, by PID, even
//! when it fails.
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// What a lazy round trip gave: cr_restart's status and stderr, the program's output.
struct Outcome {
    status: std::process::ExitStatus,
    stderr: String,
    out: String,
}

/// In a scratch directory of its own (`dir`), builds `tests/c/NAME.c`, runs it until "ready", checkpoints it (`--kill`, `ck_args`), lets
/// `damage` change the image, restarts it with `--lazy` and sends it SIGUSR2 as soon as it
/// runs (most of its pages not in yet).
fn lazy_round_trip(dir: &str, name: &str, ck_args: &[&str], damage: impl FnOnce(&Path)) -> Outcome {
    let d = Dir::new(dir);
    let mut procs = Procs::default();
    let (pid, out) = start_ready(&d, name, &["-pthread"], &mut procs, Duration::from_secs(30));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("--kill").args(ck_args).arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    assert!(ck.status.success(), "cr_checkpoint failed: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = procs.take(pid).wait();
    procs.forget(pid);
    damage(&img);
    let err = d.0.join("err.txt");
    let mut rs = cr_restart_cmd()
        .arg("--lazy")
        // Its standard error is the harness's pipe; cr_restart's is a file, to be read here.
        .arg("--relaxed-stdio")
        .arg(&img)
        .env("CREST_TIMING", "1")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("cr_restart runs");
    procs.pids.push(rs.id() as i32);
    let p = usr2_once_let_go(&mut rs, Duration::from_secs(30), |_| true);
    if let Some(p) = p {
        procs.pids.push(p);
    }
    let status = wait_child(&mut rs, Duration::from_secs(120));
    procs.forget(rs.id() as i32);
    if let Some(p) = p {
        procs.forget(p);
    }
    Outcome { status, stderr: std::fs::read_to_string(&err).unwrap_or_default(), out: std::fs::read_to_string(&out).unwrap_or_default() }
}

/// The `crest-timing: lazy` figures cr_restart printed: (faults, bytes on demand, in the
/// background).
fn lazy_figures(stderr: &str) -> Option<(u64, u64, u64)> {
    let line = stderr.lines().find(|l| l.starts_with("crest-timing: lazy"))?;
    let get = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse::<u64>().ok());
    Some((get("faults=")?, get("on_demand_bytes=")?, get("background_bytes=")?))
}

fn assert_passed(o: &Outcome, what: &str) {
    assert!(o.status.success() && o.out.contains("PASS"), "{what}: {:?}\nstderr: {}\noutput: {}", o.status, o.stderr, o.out.lines().rev().take(3).collect::<Vec<_>>().join(" | "));
    let (faults, on_demand, background) = lazy_figures(&o.stderr).unwrap_or_else(|| panic!("{what}: no lazy figures in {}", o.stderr));
    // 256 MiB were given by the lazy restore, not copied before the process ran.
    assert!(on_demand + background >= 256 << 20, "{what}: {on_demand} + {background} bytes given lazily");
    assert!(faults > 0, "{what}: the process ran before its pages were in, and faulted");
    let page_bytes = o.stderr.split_whitespace().find_map(|w| w.strip_prefix("page_bytes=")).and_then(|v| v.parse::<u64>().ok()).unwrap_or(u64::MAX);
    assert!(page_bytes < 16 << 20, "{what}: {page_bytes} bytes copied before it ran");
}

#[test]
fn every_byte_of_a_large_buffer_comes_in_on_demand() {
    if !lazy_possible() {
        return;
    }
    let o = lazy_round_trip("lazy-every-byte", "mem256", &[], |_| {});
    assert_passed(&o, "mem256 restarted with --lazy");
}

#[test]
fn compressed_runs_are_decompressed_on_demand() {
    if !lazy_possible() {
        return;
    }
    let o = lazy_round_trip("lazy-compressed", "mem256", &["--compress"], |_| {});
    assert_passed(&o, "mem256 from a compressed image, restarted with --lazy");
}

#[test]
fn threads_fork_mremap_and_madvise_before_the_pages_are_in() {
    if !lazy_possible() {
        return;
    }
    let o = lazy_round_trip("lazy-threads", "lazymem", &[], |_| {});
    assert_passed(&o, "lazymem (4 threads, a fork, mremap, MADV_DONTNEED) restarted with --lazy");
}

#[test]
fn a_corrupt_page_kills_the_process_with_its_address() {
    if !lazy_possible() {
        return;
    }
    let o = lazy_round_trip("lazy-corrupt", "mem256", &[], |img| {
        // The image is mostly the 256 MiB buffer's pages: one byte in its middle is changed.
        let len = std::fs::metadata(img).expect("image").len();
        let f = std::fs::OpenOptions::new().read(true).write(true).open(img).expect("open the image to damage it");
        let at = (len / 2) & !4095;
        let mut b = [0u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, at + 100).expect("read");
        b[0] ^= 0x5a;
        std::os::unix::fs::FileExt::write_all_at(&f, &b, at + 100).expect("write");
    });
    assert!(!o.out.contains("PASS"), "the process must not run on wrong data: {}", o.out);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&o.status), Some(libc::SIGKILL), "cr_restart dies as its process did, by SIGKILL: {:?}\n{}", o.status, o.stderr);
    let msg = o.stderr.lines().find(|l| l.contains("checksum mismatch")).unwrap_or_else(|| panic!("a message naming the bad page data: {}", o.stderr));
    assert!(msg.contains("killed") && msg.contains("0x"), "the message says which page data and that the process was killed: {msg}");
}

#[test]
fn refused_before_anything_starts_where_userfaultfd_is_not_permitted() {
    use std::os::unix::process::CommandExt;
    if !is_root() {
        skip("needs root to become an ordinary user");
        return;
    }
    const NOBODY: u32 = 65534;
    let d = Dir::new("lazy-refused");
    std::fs::set_permissions(&d.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let prog = build_steady(&d);
    let out = d.0.join("out.txt");
    let f = std::fs::File::create(&out).expect("out");
    std::os::unix::fs::chown(&out, Some(NOBODY), Some(NOBODY)).expect("chown");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).uid(NOBODY).gid(NOBODY).arg("16").arg(&d.0).stdout(f).stderr(Stdio::null()).stdin(Stdio::null()).spawn().expect("start"));
    procs.pids.push(pid);
    wait_for(&out, "ready", Duration::from_secs(30));
    let img = d.0.join("img");
    let o = Command::new(bin("cr_checkpoint")).uid(NOBODY).gid(NOBODY).arg("--kill").arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(o.status.success(), "the user checkpoints their own process: {}", String::from_utf8_lossy(&o.stderr));
    let _ = procs.take(pid).wait();
    procs.forget(pid);
    // The fork event, which a lazy restart needs, is for CAP_SYS_PTRACE only, whatever
    // vm.unprivileged_userfaultfd says.
    let o = Command::new(bin("cr_restart")).uid(NOBODY).gid(NOBODY).args(["--lazy", "--no-restore-pid"]).arg(&img).stdin(Stdio::null()).output().expect("cr_restart");
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(libc::EPERM), "{e}");
    assert!(e.contains("--lazy: userfaultfd") && e.contains("CAP_SYS_PTRACE") && e.contains("restart without --lazy"), "says why and what to do: {e}");
    assert_eq!(procs_running(&prog), Vec::<i32>::new(), "nothing was started");
}
