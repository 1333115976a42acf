//! Faults during checkpoint and restart, on real processes. A checkpoint that fails for any
//! reason (the target dies, the disk fills, the directory is not writable, `--time` runs out,
//! another checkpoint is under way, cr_checkpoint is killed) must leave the target running
//! exactly as before (checked by `steady`'s own verification) and leave no partial image; a
//! restart that fails (a file missing or changed, the PID taken, cr_restart killed) must leave
//! nothing half-restored running. Every test kills and reaps what it started, by PID.
mod common;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn ck() -> Command {
    Command::new(bin("cr_checkpoint"))
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a clear failure: exit `code` and a message with `words`, never a panic.
fn failed_with(o: &Output, code: i32, words: &str) {
    let e = err(o);
    assert_eq!(o.status.code(), Some(code), "exit status; stderr: {e}");
    assert!(e.contains(words), "message lacks {words:?}: {e}");
    assert!(!e.contains("panicked"), "{e}");
}

/// `cr_checkpoint --kill -f IMG PID`, which must succeed; the killed process is reaped.
fn checkpoint_and_kill(procs: &mut Procs, pid: i32, img: &Path) {
    let o = ck().arg("--kill").arg("-f").arg(img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(o.status.success(), "{}", err(&o));
    let _ = procs.take(pid).wait();
}

/// A `steady` program built and started in its scratch directory for a test.
struct Steady {
    /// Its PID is here (killed on drop), and whatever else the test starts.
    procs: Procs,
    pid: i32,
    prog: PathBuf,
    /// Its standard output.
    out: PathBuf,
}

/// Builds `steady` into `d` and starts it with `mib` MiB, its output in `d/out.txt`, and
/// waits until it is ready.
fn steady(d: &Dir, mib: u32) -> Steady {
    let prog = build_steady(d);
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = procs.add(start_steady(&prog, d, mib, &out));
    Steady { procs, pid, prog, out }
}

fn verified(img: &Path) -> bool {
    Command::new(bin("cr_info")).arg("--verify").arg(img).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A small pseudo-random sequence; the seed is printed so that a run can be repeated
/// (`CREST_FAULT_SEED=N`).
struct Rng(u64);
impl Rng {
    fn new(what: &str) -> Rng {
        let seed = std::env::var("CREST_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
        eprintln!("{what}: CREST_FAULT_SEED={seed}");
        Rng(seed | 1)
    }
    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Reads `r` to its end at about `bytes_per_sec`.
fn drain_slowly(mut r: impl Read + Send + 'static, bytes_per_sec: usize) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0;
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
            std::thread::sleep(Duration::from_secs_f64(n as f64 / bytes_per_sec as f64));
        }
        total
    })
}

/// A checkpoint of a 256 MiB `steady` into a pipe, under `env`, once the first MiB of the
/// image has come out of it (nobody reads the pipe until then: the dump is certainly under
/// way). Returns the processes (the target, then cr_checkpoint), their PIDs, the pipe and
/// that first MiB.
fn dump_into_pipe(d: &Dir, env: &[(&str, &str)]) -> (Procs, i32, i32, std::process::ChildStdout, Vec<u8>) {
    let Steady { mut procs, pid, .. } = steady(d, 256);
    let mut c = ck().envs(env.iter().copied()).args(["--fd", "1"]).arg(pid.to_string()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cr_checkpoint");
    let mut pipe = c.stdout.take().expect("piped");
    let cpid = procs.add(c);
    let mut first = vec![0u8; 1 << 20];
    pipe.read_exact(&mut first).expect("the image starts");
    (procs, pid, cpid, pipe, first)
}

/// The target dies while it is frozen (no snapshot: it stays frozen for the whole dump).
#[test]
fn target_killed_mid_dump_through_a_pipe() {
    let d = Dir::new("fault-dies-pipe");
    let (mut procs, pid, cpid, pipe, _) = dump_into_pipe(&d, &[("CREST_NO_SNAPSHOT", "1")]);
    assert_ne!(proc_state(pid).map(|s| s.1), Some(0), "the target is frozen while the image is written");
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let drained = drain_slowly(pipe, 1 << 30);
    let o = procs.take(cpid).wait_with_output().expect("cr_checkpoint ends");
    let _ = drained.join();
    failed_with(&o, libc::ESRCH, &format!("PID {pid} ended during the checkpoint"));
    let _ = procs.take(pid).wait();
}

/// The target dies while its pages are pre-copied (it runs on meanwhile, and the checkpoint's
/// instant is still to come): the checkpoint fails cleanly, saying so.
#[test]
fn target_killed_while_its_pages_are_precopied() {
    let d = Dir::new("fault-dies-pre");
    let (mut procs, pid, cpid, pipe, _) = dump_into_pipe(&d, &[]);
    assert_eq!(proc_state(pid).map(|s| s.1), Some(0), "the target runs on while its pages are pre-copied");
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let _ = procs.take(pid).wait();
    let drained = drain_slowly(pipe, 1 << 30);
    let o = procs.take(cpid).wait_with_output().expect("cr_checkpoint ends");
    let _ = drained.join();
    failed_with(&o, libc::ESRCH, &format!("PID {pid} ended during the checkpoint"));
}

/// The target dies while its pages are saved from a snapshot (a process that cannot be
/// tracked for a pre-copy; it runs on meanwhile): the snapshot still holds the memory of the
/// checkpoint's instant, so the image is complete and valid.
#[test]
fn target_killed_while_its_snapshot_is_saved() {
    let d = Dir::new("fault-dies-snap");
    let (mut procs, pid, cpid, mut pipe, mut image) = dump_into_pipe(&d, &[("CREST_NO_PRECOPY", "1")]);
    assert_eq!(proc_state(pid).map(|s| s.1), Some(0), "the target runs on while its snapshot is saved");
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let _ = procs.take(pid).wait();
    pipe.read_to_end(&mut image).expect("the rest of the image");
    let o = procs.take(cpid).wait_with_output().expect("cr_checkpoint ends");
    assert!(o.status.success(), "cr_checkpoint: {:?} {}", o.status, err(&o));
    let img = d.0.join("img");
    std::fs::write(&img, &image).expect("image");
    assert!(verified(&img), "a complete image");
}

#[test]
fn target_killed_mid_dump_to_a_file() {
    let d = Dir::new("fault-dies-file");
    let Steady { mut procs, pid, .. } = steady(&d, 512);
    let img = d.0.join("img");
    let cpid = procs.add(ck().arg("-f").arg(&img).arg(pid.to_string()).stderr(Stdio::piped()).spawn().expect("cr_checkpoint"));
    // Kill it as soon as it is frozen (or when the checkpoint is over, if that came first).
    let t = Instant::now();
    while proc_state(pid).is_some_and(|s| s.1 == 0) && proc_state(cpid).is_some_and(|s| s.0 != 'Z') && t.elapsed() < Duration::from_secs(60) {
        std::hint::spin_loop();
    }
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let o = procs.take(cpid).wait_with_output().expect("cr_checkpoint ends");
    let _ = procs.take(pid).wait();
    if o.status.success() {
        eprintln!("the checkpoint was complete before the target died");
        assert!(verified(&img), "a complete image");
    } else {
        failed_with(&o, libc::ESRCH, &format!("PID {pid} ended during the checkpoint"));
        assert!(!img.exists(), "no image");
    }
    assert_eq!(names_in(&d.0).into_iter().filter(|n| n.contains("tmp") || n.starts_with('.')).count(), 0, "no temporary file: {:?}", names_in(&d.0));
}

#[test]
fn full_disk_leaves_no_partial_image() {
    if !is_root() {
        skip("mounting a small tmpfs needs root");
        return;
    }
    let d = Dir::new("fault-full");
    let Steady { procs: _procs, pid, out, .. } = steady(&d, 64);
    let small = Mount::tmpfs(&d.0.join("small"), "size=16m");
    for mode in ["--atomic", "--clobber", "--backup"] {
        let o = ck().arg(mode).arg("-f").arg(small.0.join("img")).arg(pid.to_string()).output().expect("cr_checkpoint");
        failed_with(&o, libc::ENOSPC, "no space left on the device");
        assert!(err(&o).contains("left running as it was"), "{}", err(&o));
        assert_eq!(names_in(&small.0), Vec::<String>::new(), "{mode}: nothing left on the full disk");
        assert_untouched(pid, mode);
    }
    verify_steady(pid, &out, 1);
}

#[test]
fn unwritable_directory_is_refused_before_freezing() {
    if !is_root() {
        skip("needs root (a read-only mount, another user)");
        return;
    }
    let d = Dir::new("fault-unwritable");
    let Steady { mut procs, pid, prog, out } = steady(&d, 16);
    let ro = Mount::tmpfs(&d.0.join("ro"), "size=1m,ro");
    let o = ck().arg("-f").arg(ro.0.join("img")).arg(pid.to_string()).output().expect("cr_checkpoint");
    failed_with(&o, libc::EROFS, "read-only file system");
    assert_untouched(pid, "read-only file system");
    verify_steady(pid, &out, 1);

    // An ordinary user, its own process, a directory it may not write to.
    let d2 = Dir::new("fault-unwritable-user");
    std::fs::set_permissions(&d2.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let locked = d2.0.join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o555)).expect("chmod");
    let out2 = d2.0.join("out.txt");
    let f = std::fs::File::create(&out2).expect("out");
    let user_pid = procs.add(Command::new(&prog).uid(65534).gid(65534).arg("16").arg(&d2.0).stdout(f).spawn().expect("steady as nobody"));
    wait_for(&out2, "ready", Duration::from_secs(30));
    let o = ck().uid(65534).gid(65534).arg("-f").arg(locked.join("img")).arg(user_pid.to_string()).output().expect("cr_checkpoint");
    failed_with(&o, libc::EACCES, "permission denied");
    assert_eq!(names_in(&locked), Vec::<String>::new());
    assert_untouched(user_pid, "unwritable directory");
    verify_steady(user_pid, &out2, 1);
}

#[test]
fn time_limit_stops_the_checkpoint_and_lets_the_target_go() {
    let d = Dir::new("fault-time");
    let Steady { mut procs, pid, out, .. } = steady(&d, 256);
    // Read at 8 MiB/s, 256 MiB of pages take half a minute: the one-second limit always
    // runs out first.
    let mut c = ck().args(["--time", "1", "--fd", "1"]).arg(pid.to_string()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("cr_checkpoint");
    let drained = drain_slowly(c.stdout.take().expect("piped"), 8 << 20);
    let cpid = procs.add(c);
    let o = procs.take(cpid).wait_with_output().expect("cr_checkpoint ends");
    let got = drained.join().expect("reader");
    failed_with(&o, libc::ETIMEDOUT, "did not finish within the --time limit of 1 s");
    assert!(got < 256 << 20, "the dump stopped early ({got} bytes)");
    assert_untouched(pid, "after --time ran out");
    verify_steady(pid, &out, 1);

    // With a limit it can keep, the checkpoint is made as usual.
    let img = d.0.join("img");
    let o = ck().args(["--time", "600", "-f"]).arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(o.status.success(), "{}", err(&o));
    assert!(verified(&img));
}

#[test]
fn concurrent_checkpoints_of_one_process() {
    let d = Dir::new("fault-concurrent");
    let Steady { procs: _procs, pid, out, .. } = steady(&d, 64);
    let (mut both, mut one) = (0, 0);
    for round in 0..6 {
        let imgs = [d.0.join("a"), d.0.join("b")];
        let cs: Vec<_> = imgs.iter().map(|i| ck().arg("-f").arg(i).arg(pid.to_string()).stderr(Stdio::piped()).spawn().expect("cr_checkpoint")).collect();
        let outs: Vec<Output> = cs.into_iter().map(|c| c.wait_with_output().expect("ends")).collect();
        let mut ok = 0;
        for (o, img) in outs.iter().zip(&imgs) {
            if o.status.success() {
                ok += 1;
                assert!(verified(img), "round {round}: image {} is whole", img.display());
                let _ = std::fs::remove_file(img);
            } else {
                failed_with(o, 56, &format!("PID {pid} is already being checkpointed by PID"));
                assert!(!img.exists(), "round {round}: no image from the one that failed");
            }
        }
        assert!(ok >= 1, "round {round}: one of two concurrent checkpoints succeeds");
        if ok == 2 {
            both += 1;
        } else {
            one += 1;
        }
        assert_untouched(pid, "after two checkpoints at once");
    }
    eprintln!("concurrent checkpoints: {one} rounds where one was refused as the other held the process, {both} where they did not overlap");
    assert_eq!(names_in(&d.0), ["out.txt", "steady", "steady.log"]);
    verify_steady(pid, &out, 1);
}

/// Whether a checkpoint of `pid` has claimed it (its claim file exists).
fn claimed(pid: i32) -> bool {
    ["/run/lock", "/dev/shm", "/tmp"].iter().any(|d| names_in(Path::new(d)).iter().any(|n| n.starts_with(&format!("crest-checkpoint-{pid}-"))))
}

/// A second checkpoint started while a first one works on the process is refused, naming the
/// first, whatever the first is doing: saving pages ahead while the process runs untraced
/// (pre-copy), saving them from a snapshot while it runs, or saving them while it is frozen.
/// The first one's image is whole, and restarts.
#[test]
fn a_second_checkpoint_is_refused_in_every_phase_of_the_first() {
    let d = Dir::new("fault-second");
    let Steady { mut procs, pid, out, .. } = steady(&d, 512);
    /// The first one's phase, its environment, and when the second starts (ms after the claim).
    type Phase<'a> = (&'a str, &'a [(&'a str, &'a str)], u64);
    let phases: [Phase; 4] =
        [("pre-copy", &[], 50), ("pre-copy", &[], 300), ("snapshot", &[("CREST_NO_PRECOPY", "1")], 150), ("frozen", &[("CREST_NO_PRECOPY", "1"), ("CREST_NO_SNAPSHOT", "1")], 150)];
    let mut checks = 0;
    for (phase, env, delay_ms) in phases {
        let (a, b) = (d.0.join("a"), d.0.join("b"));
        let first = ck().envs(env.iter().copied()).arg("-f").arg(&a).arg(pid.to_string()).stderr(Stdio::piped()).spawn().expect("cr_checkpoint");
        let t = Instant::now();
        while !claimed(pid) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        let worker = children_of(first.id() as i32);
        let second = ck().arg("-f").arg(&b).arg(pid.to_string()).output().expect("cr_checkpoint");
        let first_out = first.wait_with_output().expect("ends");
        assert!(first_out.status.success(), "{phase}: the first checkpoint: {}", err(&first_out));
        let when = format!("{phase}, {delay_ms} ms in");
        assert!(t.elapsed() > Duration::from_millis(delay_ms + 50), "{when}: the first checkpoint ended before the second began; the test proves nothing");
        failed_with(&second, 56, &format!("PID {pid} is already being checkpointed by PID {}", worker.first().copied().unwrap_or(0)));
        assert!(!b.exists(), "{when}: no image from the second");
        assert!(verified(&a), "{when}: the first image is whole");
        assert!(!claimed(pid), "{when}: the claim is given up at the end");
        std::fs::remove_file(&a).expect("rm");
        assert_untouched(pid, &when);
        checks += 1;
        verify_steady(pid, &out, checks);
    }
    // A claim whose holder was killed outright (its lock file left behind) blocks nothing;
    // while the holder lives, it is named.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let start = stat[stat.rfind(')').expect(")") + 1..].split_whitespace().nth(19).expect("start time").to_string();
    let file = crest_dump::claim::path_of(pid).expect("a lock directory");
    assert!(file.file_name().is_some_and(|n| n.to_string_lossy() == format!("crest-checkpoint-{pid}-{start}.lock")), "the claim file {} is named after the PID and start time", file.display());
    // `flock -o`: the lock stays with flock itself, not with the command it runs.
    let holder = procs.add(Command::new("flock").arg("-o").arg(&file).arg("sleep").arg("600").spawn().expect("flock"));
    let t = Instant::now();
    while !std::fs::read_to_string("/proc/locks").unwrap_or_default().contains(&format!(" {holder} ")) {
        assert!(t.elapsed() < Duration::from_secs(10), "flock took its lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = ck().arg("-f").arg(d.0.join("b")).arg(pid.to_string()).output().expect("cr_checkpoint");
    failed_with(&o, 56, &format!("PID {pid} is already being checkpointed by PID {holder}"));
    let mut h = procs.take(holder);
    let sleeper = children_of(holder);
    procs.pids.extend(&sleeper);
    h.kill().expect("kill");
    h.wait().expect("reaped");
    assert!(file.exists(), "the killed holder left its file");
    let o = ck().arg("-f").arg(d.0.join("b")).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(o.status.success(), "after a killed checkpoint: {}", err(&o));
    assert!(verified(&d.0.join("b")));
    assert!(!file.exists(), "the claim file left by the killed one is removed");
    std::fs::remove_file(d.0.join("b")).expect("rm");
    checks += 1;
    verify_steady(pid, &out, checks);

    // The image of a pre-copy that a second checkpoint tried to disturb restarts whole.
    let a = d.0.join("a");
    let first = ck().arg("--stop").arg("-f").arg(&a).arg(pid.to_string()).stderr(Stdio::piped()).spawn().expect("cr_checkpoint");
    let t = Instant::now();
    while !claimed(pid) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    let second = ck().arg("-f").arg(d.0.join("c")).arg(pid.to_string()).output().expect("cr_checkpoint");
    failed_with(&second, 56, "is already being checkpointed by PID");
    let first_out = first.wait_with_output().expect("ends");
    assert!(first_out.status.success(), "{}", err(&first_out));
    let mut orig = procs.take(pid);
    orig.kill().expect("kill");
    orig.wait().expect("reaped");
    // The original may have ticked once more between the image and its SIGSTOP: its log goes
    // back to where the image has it.
    let o = Command::new(bin("cr_info")).arg("--json").arg(&a).output().expect("cr_info");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let fds = v["processes"][0]["fds"].as_array().expect("fds").clone();
    let log = fds.iter().find(|f| f["kind"]["Regular"]["path"].as_str().is_some_and(|p| p.ends_with("steady.log"))).expect("the log is open");
    let pos = log["kind"]["Regular"]["pos"].as_u64().expect("offset");
    std::fs::OpenOptions::new().write(true).open(d.0.join("steady.log")).and_then(|f| f.set_len(pos)).expect("truncate the log");
    let mut rs = cr_restart_cmd().arg(&a).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let restored = restored_child(&mut rs, Duration::from_secs(30));
    procs.pids.push(restored);
    wait_while_restarting(&mut rs, Duration::from_secs(60), || proc_state(restored).is_some_and(|(_, tracer)| tracer == 0));
    let rs_pid = procs.add(rs);
    procs.pids.push(rs_pid);
    verify_steady(restored, &out, checks + 1);
}

#[test]
fn killing_cr_checkpoint_never_hurts_the_target() {
    let d = Dir::new("fault-kill-ck");
    let killafter = build_killafter(&d);
    let Steady { procs: _procs, pid, out, .. } = steady(&d, 128);
    let img = d.0.join("img");
    let t = Instant::now();
    let o = ck().arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    let full = t.elapsed();
    assert!(o.status.success(), "{}", err(&o));
    std::fs::remove_file(&img).expect("rm");
    // Half the points in the first 10 ms (freeze and the system calls inside the target),
    // half over the whole checkpoint.
    let mut rng = Rng::new("killing cr_checkpoint");
    let delays: Vec<u64> = (0..20).map(|i| if i < 10 { ((i as f64 + rng.next()) * 1000.0) as u64 } else { (rng.next() * full.as_micros() as f64 * 1.2) as u64 }).collect();
    let (mut stopped, mut completed) = (0, 0);
    for (i, us) in delays.iter().enumerate() {
        let o = Command::new(&killafter).arg(us.to_string()).arg(bin("cr_checkpoint")).arg("-f").arg(&img).arg(pid.to_string()).output().expect("killafter");
        assert!(!err(&o).contains("panicked"), "{}", err(&o));
        let when = format!("cr_checkpoint killed after {us} us");
        assert_untouched(pid, &when);
        verify_steady(pid, &out, i as u32 + 1);
        if img.exists() {
            assert!(verified(&img), "{when}: an image that exists is whole");
            std::fs::remove_file(&img).expect("rm");
            completed += 1;
        } else {
            stopped += 1;
        }
        assert_eq!(names_in(&d.0), ["killafter", "out.txt", "steady", "steady.log"], "{when}: no temporary file left");
    }
    eprintln!("killed cr_checkpoint at 20 points over {full:?}: {stopped} stopped it, {completed} came after the image was complete; the target verified itself every time");
}

/// Whether `pid` runs free: not traced, not stopped, no SIGKILL on its way, running `exe`.
fn runs_free(pid: i32, exe: &Path) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default();
    let kill_pending = |k: &str| u64::from_str_radix(&field(k), 16).is_ok_and(|m| m & (1 << 8) != 0);
    field("TracerPid:") == "0"
        && matches!(field("State:").chars().next(), Some('S' | 'R'))
        && !kill_pending("SigPnd:")
        && !kill_pending("ShdPnd:")
        && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)
}

/// Runs `killafter USEC cr_restart IMG`; a restored process found running free is verified
/// (its output goes to `out`, the file it had open, at the saved offset) and killed. Returns
/// whether one was, and killafter's report of what it reaped. The files `steady` writes are
/// first cut back to their size at the checkpoint (`sizes`), as a restored process finds them.
fn restart_killed_after(killafter: &Path, us: i64, img: &Path, prog: &Path, out: &Path, sizes: &[(std::path::PathBuf, u64)]) -> (bool, String) {
    for (f, len) in sizes {
        std::fs::OpenOptions::new().write(true).open(f).and_then(|f| f.set_len(*len)).expect("cut back");
    }
    let mut procs = Procs::default();
    let mut k = Command::new(killafter).arg(us.to_string()).arg(bin("cr_restart")).arg(img).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("killafter");
    let mut stderr = k.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let kpid = k.id() as i32;
    procs.reapers.push(k);
    let mut found = false;
    let t = Instant::now();
    while procs.reapers[0].try_wait().expect("try_wait").is_none() {
        for p in procs_running(prog) {
            if !procs.pids.contains(&p) && runs_free(p, prog) {
                procs.pids.push(p);
                verify_steady(p, out, 1);
                let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
                found = true;
            }
        }
        if t.elapsed() > Duration::from_secs(60) {
            let left: Vec<String> = children_of(kpid)
                .into_iter()
                .map(|c| format!("{c}: {:?} {:?} {}", proc_state(c), std::fs::read_link(format!("/proc/{c}/exe")), std::fs::read_to_string(format!("/proc/{c}/wchan")).unwrap_or_default()))
                .collect();
            panic!("killafter {kpid} did not end (cr_restart killed after {us} us); it still has {left:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // killafter ended: everything it adopted was reaped.
    procs.pids.clear();
    (found, reader.join().unwrap_or_default())
}

#[test]
fn killing_cr_restart_leaves_nothing_half_restored() {
    if !is_root() {
        skip("telling a restored process by its executable needs root (PR_SET_MM_EXE_FILE)");
        return;
    }
    let d = Dir::new("fault-kill-rs");
    let killafter = build_killafter(&d);
    let Steady { mut procs, pid, prog, out } = steady(&d, 128);
    let img = d.0.join("img");
    checkpoint_and_kill(&mut procs, pid, &img);
    let sizes: Vec<_> = [out.clone(), d.0.join("steady.log")].into_iter().map(|f| (f.clone(), std::fs::metadata(&f).expect("size").len())).collect();
    // One whole restart, to know how long it takes.
    let t = Instant::now();
    let (found, report) = restart_killed_after(&killafter, -1, &img, &prog, &out, &sizes);
    assert!(found, "the restart works: {report}");
    let full = t.elapsed();
    let mut rng = Rng::new("killing cr_restart");
    let (mut nothing, mut whole) = (0, 0);
    for i in 0..20 {
        let us = (if i < 5 { rng.next() * 5000.0 } else { rng.next() * full.as_micros() as f64 }) as i64;
        let (found, report) = restart_killed_after(&killafter, us, &img, &prog, &out, &sizes);
        // Everything reaped died by SIGKILL (cr_restart by ours, the restore process by the
        // kernel when its tracer died, a whole restored process by the test) or is a restore
        // process that saw its parent gone before it was seized and exited with 127. None ran
        // part of the image and crashed.
        for l in report.lines().filter(|l| l.starts_with("killafter: reaped")) {
            assert!(l.ends_with("signal 9") || l.ends_with("exit 127"), "cr_restart killed after {us} us: {l}\n{report}");
        }
        assert_eq!(procs_running(&prog), Vec::<i32>::new(), "cr_restart killed after {us} us: nothing from the image runs");
        if is_root() {
            assert!(std::fs::read_link(format!("/proc/{pid}/exe")).map_or(true, |e| e != prog), "the saved PID {pid} is free again");
        }
        if found {
            whole += 1;
        } else {
            nothing += 1;
        }
    }
    eprintln!("killed cr_restart at 20 points over {full:?}: {nothing} left nothing running, {whole} came after the process was whole (verified); none half-restored");
}

/// Cuts the regular files the image's process had open back to their size at the checkpoint
/// (a process that went on running after it made them longer).
fn cut_back_files(img: &Path) {
    let o = Command::new(bin("cr_info")).arg("--json").arg(img).output().expect("cr_info");
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).expect("cr_info --json");
    for f in meta["processes"][0]["fds"].as_array().expect("fds") {
        if let (Some(path), Some(size)) = (f["kind"]["Regular"]["path"].as_str(), f["kind"]["Regular"]["size"].as_u64()) {
            std::fs::OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(size)).expect("cut back");
        }
    }
}

/// Restarts `img` with `args`, expecting a refusal before anything starts.
fn refused(img: &Path, prog: &Path, args: &[&str], code: i32, words: &str) -> String {
    let o = cr_restart_cmd().args(args).arg(img).stdin(Stdio::null()).output().expect("cr_restart");
    failed_with(&o, code, words);
    assert_eq!(procs_running(prog), Vec::<i32>::new(), "nothing started");
    err(&o)
}

#[test]
fn missing_or_changed_files_are_refused_and_relocate_finds_a_moved_copy() {
    if !is_root() {
        skip("telling a restored process by its executable needs root (PR_SET_MM_EXE_FILE)");
        return;
    }
    let d = Dir::new("fault-files");
    let Steady { mut procs, pid, prog, out } = steady(&d, 16);
    let img = d.0.join("img");
    checkpoint_and_kill(&mut procs, pid, &img);
    let log = d.0.join("steady.log");
    let saved = std::fs::read(&log).expect("log");
    // A copy of everything elsewhere, modification times kept, for --relocate at the end.
    let moved = Dir::new("fault-files-moved");
    let st = Command::new("cp").arg("-a").arg(&prog).arg(&log).arg(&out).arg(&moved.0).status().expect("cp");
    assert!(st.success());

    let f = std::fs::OpenOptions::new().write(true).open(&log).expect("log");
    f.set_len(saved.len() as u64 - 16).expect("truncate");
    refused(&img, &prog, &[], libc::ESTALE, "was truncated since the checkpoint");
    std::fs::remove_file(&log).expect("rm");
    let e = refused(&img, &prog, &[], libc::ENOENT, &format!("{}, open as descriptor", log.display()));
    assert!(e.contains("--relocate"), "says what to do: {e}");
    // Another file under the same name (as an editor saves): same size, new inode.
    let other = d.0.join("other");
    std::fs::write(&other, &saved).expect("write");
    std::fs::rename(&other, &log).expect("rename");
    refused(&img, &prog, &[], libc::ESTALE, "is another file now");
    // The executable changed (its pages are mapped from it).
    let mut f = std::fs::OpenOptions::new().append(true).open(&prog).expect("open exe");
    std::io::Write::write_all(&mut f, b"\0").expect("append");
    drop(f);
    refused(&img, &prog, &[], libc::ESTALE, &format!("{}, which the process had mapped into memory, has changed since the checkpoint", prog.display()));
    // A failure of the environment runs --run-on-fail-env; its non-zero status is the exit status.
    let o = cr_restart_cmd().arg("--run-on-fail-env=exit 42").arg(&img).stdin(Stdio::null()).output().expect("cr_restart");
    assert_eq!(o.status.code(), Some(42), "{}", err(&o));
    assert!(!err(&o).contains("Restart failed"), "the hook's status replaces the message: {}", err(&o));

    // The copy, with new inodes, is found through --relocate (the output file too: it was a
    // file in the moved directory).
    let out2 = moved.0.join("out.txt");
    let rs =
        cr_restart_cmd().arg(format!("--relocate={}={}", d.0.display(), moved.0.display())).arg(&img).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = procs.add(rs);
    let rp = restored_child(procs.children.iter_mut().find(|c| c.id() as i32 == rs_pid).expect("cr_restart"), Duration::from_secs(30));
    procs.pids.push(rp);
    wait_for(&out2, "tick", Duration::from_secs(30));
    verify_steady(rp, &out2, 1);
    assert_eq!(std::fs::read_link(format!("/proc/{rp}/cwd")).expect("cwd"), moved.0, "the working directory was relocated");
    assert_eq!(std::fs::read_link(format!("/proc/{rp}/exe")).expect("exe"), moved.0.join("steady"), "the executable was relocated");
    let _ = Command::new("kill").arg("-9").arg(rp.to_string()).status();
    let _ = procs.take(rs_pid).wait();
    procs.forget(rp);
}

#[test]
fn taken_pid_and_the_run_on_hooks() {
    if !is_root() {
        skip("restoring a PID needs root");
        return;
    }
    let d = Dir::new("fault-hooks");
    let killafter = build_killafter(&d);
    let Steady { mut procs, pid, prog, out } = steady(&d, 16);
    let img = d.0.join("img");
    // Checkpointed without --kill: the original keeps the PID.
    let o = ck().arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(o.status.success(), "{}", err(&o));
    let rs = |args: &[&str]| Command::new(bin("cr_restart")).args(args).arg(&img).stdin(Stdio::null()).stdout(Stdio::null()).output().expect("cr_restart");
    let o = rs(&[]);
    failed_with(&o, libc::EBUSY, &format!("PID {pid} is in use (try --no-restore-pid)"));
    let o = rs(&["--run-on-fail-temp=exit 7"]);
    assert_eq!((o.status.code(), err(&o).contains("Restart failed")), (Some(7), false), "a failing hook's status: {}", err(&o));
    let o = rs(&["--run-on-fail-temp=true"]);
    failed_with(&o, libc::EBUSY, "is in use");
    let o = rs(&["--run-on-fail-temp=exit 7", "--run-on-failure=exit 9"]);
    assert_eq!(o.status.code(), Some(9), "--run-on-failure given last replaces the temp hook");
    let o = rs(&["--run-on-failure=exit 9", "--run-on-fail-temp=exit 7"]);
    assert_eq!(o.status.code(), Some(7), "the temp hook given last wins");
    let o = rs(&["--run-on-fail-env=exit 5", "--run-on-fail-perm=exit 6"]);
    failed_with(&o, libc::EBUSY, "is in use");
    for x in procs_running(&prog) {
        assert_eq!(x, pid, "nothing restored while the PID is taken");
    }
    let o = Command::new(bin("cr_restart")).arg("--run-on-fail-args=exit 3").arg(d.0.join("no-such-image")).output().expect("cr_restart");
    assert_eq!(o.status.code(), Some(3), "a missing image is an argument failure");
    let junk = d.0.join("junk");
    std::fs::write(&junk, vec![0u8; 8192]).expect("junk");
    let o = Command::new(bin("cr_restart")).arg("--run-on-fail-perm=exit 4").arg(&junk).output().expect("cr_restart");
    assert_eq!(o.status.code(), Some(4), "a bad image is a permanent failure");

    // Success: the hook runs once the process is restored; a non-zero status makes cr_restart
    // exit with it at once, leaving the restored process running.
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let _ = procs.take(pid).wait();
    cut_back_files(&img);
    let marker = d.0.join("restarted");
    let log = std::fs::OpenOptions::new().append(true).open(&out).expect("out");
    let hook = format!("--run-on-success=touch {} && exit 5", marker.display());
    let k = Command::new(&killafter).arg("-1").arg(bin("cr_restart")).arg(&hook).arg(&img).stdin(Stdio::null()).stdout(log).spawn().expect("killafter");
    let kpid = k.id() as i32;
    procs.reapers.push(k);
    let t = Instant::now();
    while !(children_of(kpid).contains(&pid) && runs_free(pid, &prog)) {
        assert!(t.elapsed() < Duration::from_secs(30), "cr_restart exited and the restored process runs on under the subreaper");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(marker.exists(), "the success hook ran");
    verify_steady(pid, &out, 1);
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let st = procs.reapers.pop().expect("killafter").wait().expect("killafter");
    assert_eq!(st.code(), Some(5), "cr_restart exited with the hook's status");
}
