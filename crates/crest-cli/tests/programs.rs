//! The self-verifying C programs of `tests/c/`: each builds its state, is checkpointed with
//! --kill and restarted, then gets SIGUSR2, checks everything and exits 0 with PASS. Also
//! `sleep` and a chain of three checkpoint/restart rounds.
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn memory_256_mib_pattern() {
    run_c("mem256", &[]);
}

/// The same 256 MiB through a compressed image (zstd at level 1); cr_info --verify checks the
/// stored runs.
#[test]
fn memory_256_mib_compressed() {
    let d = Dir::new("mem256z");
    let prog = d.0.join("mem256");
    gcc("tests/c/mem256.c", &prog, &[]);
    let (st, out) = round_trip_verify_with(&d, &prog, &[], "ready", Duration::from_secs(60), &["--compress=1"]);
    assert!(st.success() && out.contains("PASS"), "mem256 after a compressed restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
    let info = Command::new(bin("cr_info")).arg("--verify").arg("--json").arg(d.0.join("img")).output().expect("cr_info");
    assert!(info.status.success(), "cr_info --verify: {}", String::from_utf8_lossy(&info.stderr));
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("\"zlen\": ") && text.lines().any(|l| l.trim().starts_with("\"zlen\"") && !l.contains(" 0")), "no compressed run in the image");
}

#[test]
fn file_offsets_continue() {
    run_c("fileoff", &["DIR"]);
}

#[test]
fn eventfds_and_epoll_sets() {
    run_c("events", &[]);
}

#[test]
fn timerfds_and_signalfds() {
    run_c("timerfds", &[]);
}

/// A process that unmapped its vDSO and `[vvar]` areas is checkpointed (crest runs its system
/// calls through a `syscall` instruction of the program's own code) and comes back without
/// them, its memory as it was (tests/c/novdso.c).
#[test]
fn process_without_a_vdso_comes_back_without_one() {
    run_c("novdso", &[]);
}

/// A process that unmapped only part of its vDSO areas is refused by name, and left as it was.
#[test]
fn process_with_part_of_its_vdso_areas_is_refused() {
    let d = Dir::new("novdso-partial");
    let prog = d.0.join("novdso");
    gcc("tests/c/novdso.c", &prog, &[]);
    let out = d.0.join("out");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).arg("partial").stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("novdso"));
    wait_for(&out, "ready", Duration::from_secs(30));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).args(["--kill", "-f"]).arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert!(!ck.status.success(), "the checkpoint is refused");
    assert!(err.contains("vDSO areas") && err.contains(&format!("PID {pid}")), "the message names the process and its vDSO areas: {err}");
    assert!(!img.exists(), "no image is written");
    assert_untouched(pid, "after a refused checkpoint");
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let st = wait_child(&mut procs.take(pid), Duration::from_secs(30));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "the process checks itself after the refusal: {st:?}\n{text}");
}

/// Guard regions (`MADV_GUARD_INSTALL`, Linux 6.13) in anonymous memory and in a private file
/// mapping fault again after a restart, in the process and in a child it forks, and the pages
/// around them keep their data.
#[test]
fn guard_regions_fault_again() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release.trim().split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    if (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (6, 13) {
        skip(&format!("guard regions need Linux 6.13 (this is {})", release.trim()));
        return;
    }
    run_c("guards", &[]);
}

/// A descriptor table shared by a process, its child and its grandchild (`CLONE_FILES`) is
/// one table again after a restart; a child of the child that had its own copy keeps its own.
#[test]
fn shared_descriptor_tables() {
    run_c("sharedfds", &[]);
}

/// POSIX timers keep their ids (with holes), clocks, notification, value, time left and
/// period.
#[test]
fn posix_timers_keep_ids_and_signals() {
    run_c("posixtimers", &[]);
}

/// A one-shot timer close to firing at the checkpoint fires after the restart.
#[test]
fn posix_timer_due_at_checkpoint_fires_after_restart() {
    run_c_in("posixtimers-expire", "posixtimers", &["expire"]);
}

#[test]
fn inotify_watches_keep_their_numbers() {
    run_c_as_root("finding an inotify watch's path by its file handle needs CAP_DAC_READ_SEARCH", "inotifies", &["DIR"]);
}

/// A watch on a file deleted while open is added again through the descriptor that holds it,
/// with its number; a write and a close of that descriptor are its events after the restart.
#[test]
fn inotify_watch_of_a_deleted_open_file() {
    run_c_as_root("finding an inotify watch's path by its file handle needs CAP_DAC_READ_SEARCH", "inotifydel", &["DIR"]);
}

#[test]
fn deleted_files_come_back_with_their_contents() {
    run_c_as_root("reading a mapped deleted file through /proc/PID/map_files needs CAP_SYS_ADMIN", "deleted", &["DIR"]);
}

/// A deleted file larger than `--deleted-max` is refused, named, and the process runs on.
#[test]
fn a_deleted_file_above_the_limit_is_refused() {
    if !is_root() {
        return skip("reading a mapped deleted file through /proc/PID/map_files needs CAP_SYS_ADMIN");
    }
    let d = Dir::new("deleted-max");
    let prog = d.0.join("deleted");
    gcc("tests/c/deleted.c", &prog, &[]);
    let out = d.0.join("out");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).arg(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("deleted"));
    wait_for(&out, "ready", Duration::from_secs(30));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).args(["--kill", "--deleted-max", "8K", "-f"]).arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert_eq!(ck.status.code(), Some(95), "refused as unsupported: {err}");
    let d1 = d.0.join("d1");
    assert!(err.contains(&format!("the deleted file {} holds 12388 bytes of data, more than --deleted-max 8192", d1.display())), "the message names the file and the limit: {err}");
    assert!(!img.exists(), "no image is written");
    assert_untouched(pid, "after a refused checkpoint");
}

#[test]
fn listening_and_bound_sockets() {
    run_c("listeners", &["DIR"]);
}

#[test]
fn unix_socket_pairs() {
    run_c("unixpairs", &["DIR"]);
}

/// Socket options (ints, linger, timeouts, buffer lock, TCP options, BPF filters, with root
/// SO_MARK and SO_BINDTODEVICE), an address bound with IP_FREEBIND since cleared, and how UDP
/// sockets and unix pair ends were shut down.
#[test]
fn socket_options_and_shutdown_states() {
    run_c("sockopts", &[if is_root() { "root" } else { "user" }]);
}

/// Unix datagram servers with clients (one in a child process), servers whose file was removed
/// or replaced, a listener whose file was removed, a directory since removed.
#[test]
fn unix_datagram_clients_and_removed_names() {
    run_c("unixdgram", &["DIR"]);
}

#[test]
fn file_locks_are_taken_again() {
    run_c("locks", &["DIR"]);
}

#[test]
fn signal_state_survives() {
    run_c("signals", &[]);
}

#[test]
fn heap_mmap_clocks_and_pid_after_restart() {
    run_c("heapgrow", &[if is_root() { "same-pid" } else { "any-pid" }]);
}

#[test]
fn blocking_syscalls_go_on() {
    run_c("sleeper", &[]);
}

#[test]
fn sleep_is_restored_asleep() {
    let d = Dir::new("sleep");
    let mut child = Command::new("sleep").arg("1000").stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("sleep");
    let pid = child.id() as i32;
    let mut reaper = Reaper(vec![pid]);
    std::thread::sleep(Duration::from_millis(100));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("--kill").arg("-f").arg(&img).arg(pid.to_string()).output().expect("runs");
    assert!(ck.status.success(), "{}", String::from_utf8_lossy(&ck.stderr));
    let _ = child.wait();
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).spawn().expect("cr_restart");
    reaper.0.push(rs.id() as i32);
    let rp = restored_child(&mut rs, Duration::from_secs(20));
    // The child exists from the start of the restore; it is the restored sleep once let go.
    // Before it is seized it also sleeps untraced (in pause()), so wait for sleep's command
    // line too.
    let t = std::time::Instant::now();
    let restored = || {
        std::fs::read(format!("/proc/{rp}/cmdline")).is_ok_and(|c| c == b"sleep\x001000\x00")
            && std::fs::read_to_string(format!("/proc/{rp}/status")).is_ok_and(|s| s.contains("TracerPid:\t0") && s.contains("State:\tS"))
    };
    while !restored() {
        assert!(t.elapsed() < Duration::from_secs(20), "the restored sleep was not let go");
        std::thread::sleep(Duration::from_millis(10));
    }
    reaper.0.push(rp);
    let cmdline = std::fs::read(format!("/proc/{rp}/cmdline")).expect("cmdline");
    assert_eq!(cmdline, b"sleep\x001000\x00");
    let status = std::fs::read_to_string(format!("/proc/{rp}/status")).expect("status");
    assert!(status.contains("State:\tS"), "restored sleep is asleep: {status}");
    assert!(status.contains("TracerPid:\t0"), "and not traced");
    assert!(std::fs::read_link(format!("/proc/{rp}/exe")).expect("exe").ends_with("sleep"));
    // A signal sent to cr_restart is forwarded; cr_restart then dies by the same signal.
    let _ = Command::new("kill").arg("-TERM").arg(rs.id().to_string()).status();
    let st = rs.wait().expect("wait");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(15), "cr_restart dies by the forwarded signal");
    assert!(!Path::new(&format!("/proc/{rp}/status")).exists() || std::fs::read_to_string(format!("/proc/{rp}/status")).is_ok_and(|s| s.contains("State:\tZ")), "the restored sleep got the SIGTERM");
}

#[test]
fn three_rounds_in_a_chain() {
    let d = Dir::new("chain");
    let prog = d.0.join("counter");
    gcc("demo/counter.c", &prog, &[]);
    let out = d.0.join("out.txt");
    let child = Command::new(&prog).arg("0").stdout(std::fs::File::create(&out).expect("out")).spawn().expect("counter");
    let mut pid = child.id() as i32;
    let mut original = Some(child);
    let mut reaper = Reaper(vec![pid]);
    let img = d.0.join("img");
    let mut restarts = Vec::new();
    for round in 1..=3 {
        wait_for(&out, &format!("count {},", round * 4), Duration::from_secs(20));
        let ck = Command::new(bin("cr_checkpoint")).arg("--kill").arg("-f").arg(&img).arg(pid.to_string()).output().expect("runs");
        assert!(ck.status.success(), "round {round}: {}", String::from_utf8_lossy(&ck.stderr));
        if let Some(mut c) = original.take() {
            let _ = c.wait();
        }
        let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).spawn().expect("cr_restart");
        reaper.0.push(rs.id() as i32);
        pid = restored_child(&mut rs, Duration::from_secs(20));
        reaper.0.push(pid);
        restarts.push(rs);
    }
    wait_for(&out, "count 16,", Duration::from_secs(20));
    let text = std::fs::read_to_string(&out).expect("out");
    let counts: Vec<u64> = text.lines().filter_map(|l| l.split("count ").nth(1)?.split(',').next()?.parse().ok()).collect();
    assert!(counts.windows(2).all(|w| w[1] == w[0] + 1), "gapless over three restarts:\n{text}");
    drop(reaper);
    for mut r in restarts {
        let _ = r.wait();
    }
}

/// The default checkpoint lets the process run on while its pages are saved from a
/// copy-on-write snapshot: the image must still be of one instant, and the process must see
/// nothing of it (no SIGCHLD, no child).
#[test]
fn running_process_checkpointed_at_one_instant() {
    let d = Dir::new("churn");
    let prog = d.0.join("churn");
    gcc("tests/c/churn.c", &prog, &[]);
    let out = d.0.join("out.txt");
    let mut child = Command::new(&prog).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("churn");
    let pid = child.id() as i32;
    let mut reaper = Reaper(vec![pid]);
    wait_for(&out, "tick 4", Duration::from_secs(30));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("-f").arg(&img).arg(pid.to_string()).env("CREST_TIMING", "1").output().expect("cr_checkpoint runs");
    assert!(ck.status.success(), "cr_checkpoint failed: {}", String::from_utf8_lossy(&ck.stderr));
    wait_new_tick(&out, Duration::from_secs(30), "the process did not run on after the checkpoint");
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let st = wait_child(&mut child, Duration::from_secs(30));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && text.ends_with("PASS\n"), "the original after the checkpoint: {st:?}\n{}", text.lines().rev().take(3).collect::<Vec<_>>().join("\n"));
    reaper.0.clear();

    // The restored process writes on at its saved offset, over what the original wrote after
    // the checkpoint: its lines are the ones after that offset.
    let at = stdout_offset(&img);
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    reaper.0.push(rs.id() as i32);
    let since = |at: usize| std::fs::read(&out).map(|b| String::from_utf8_lossy(&b[at.min(b.len())..]).into_owned()).unwrap_or_default();
    wait_while_restarting(&mut rs, Duration::from_secs(30), || since(at).contains("tick"));
    let rp = restored_child(&mut rs, Duration::from_secs(20));
    reaper.0.push(rp);
    let _ = Command::new("kill").arg("-USR2").arg(rp.to_string()).status();
    let st = wait_child(&mut rs, Duration::from_secs(30));
    let text = since(at);
    assert!(st.success() && text.contains("PASS\n") && !text.contains("FAIL"), "the restored process: {st:?}\n{}", text.lines().rev().take(3).collect::<Vec<_>>().join("\n"));
}

/// `--save-all` puts the executable's and the libraries' contents in the image: it restarts
/// after the executable is deleted. Without it, the same is refused, naming the file.
#[test]
fn save_all_restarts_without_the_executable() {
    for save in [true, false] {
        let d = Dir::new(if save { "saveall" } else { "savenone" });
        let prog = d.0.join("sleeper");
        gcc("tests/c/sleeper.c", &prog, &[]);
        let out = d.0.join("out.txt");
        let mut child = Command::new(&prog).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("sleeper");
        let pid = child.id() as i32;
        let mut reaper = Reaper(vec![pid]);
        wait_for(&out, "ready", Duration::from_secs(20));
        let img = d.0.join("img");
        let mut ck = Command::new(bin("cr_checkpoint"));
        ck.arg("--kill");
        if save {
            ck.arg("--save-all");
        }
        let o = ck.arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
        assert!(o.status.success(), "cr_checkpoint: {}", String::from_utf8_lossy(&o.stderr));
        let _ = child.wait();
        std::fs::remove_file(&prog).expect("delete the executable");
        let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
        reaper.0.push(rs.id() as i32);
        if !save {
            let st = wait_child(&mut rs, Duration::from_secs(30));
            let mut e = String::new();
            let _ = std::io::Read::read_to_string(rs.stderr.as_mut().expect("piped"), &mut e);
            assert!(!st.success() && e.contains(prog.to_str().expect("utf8")), "without --save-all the restart must be refused naming the executable: {st:?} {e}");
            assert!(child_of(rs.id() as i32).is_none());
            continue;
        }
        let lines = std::fs::read_to_string(&out).unwrap_or_default().lines().count();
        wait_while_restarting(&mut rs, Duration::from_secs(30), || std::fs::read_to_string(&out).unwrap_or_default().lines().count() > lines);
        let rp = restored_child(&mut rs, Duration::from_secs(20));
        reaper.0.push(rp);
        let _ = Command::new("kill").arg("-USR2").arg(rp.to_string()).status();
        let st = wait_child(&mut rs, Duration::from_secs(30));
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(st.success() && text.contains("PASS"), "restarted without its executable: {st:?}\n{text}");
    }
}

/// A lock the restored process would take again but another process holds now (here: the
/// original, checkpointed without --kill) refuses the restart, naming the file; nothing runs.
#[test]
fn a_lock_held_elsewhere_refuses_the_restart() {
    let d = Dir::new("locks-held");
    let prog = d.0.join("locks");
    gcc("tests/c/locks.c", &prog, &[]);
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).arg(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("locks"));
    wait_for(&out, "ready", Duration::from_secs(20));
    procs.pids.extend(children_of(pid));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(ck.status.success(), "{}", String::from_utf8_lossy(&ck.stderr));
    let rs = Command::new(bin("cr_restart")).arg("--no-restore-pid").arg(&img).stdin(Stdio::null()).output().expect("cr_restart");
    let err = String::from_utf8_lossy(&rs.stderr);
    assert!(!rs.status.success() && err.contains("lock on") && err.contains("another process holds a lock on it now"), "{err}");
    assert_untouched(pid, "the lock holder after a refused restart");
    assert_eq!(procs_running(&prog).len(), 2, "the original and its child, nothing restored");
}
