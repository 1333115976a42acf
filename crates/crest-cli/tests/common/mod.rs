//! What the end-to-end tests share: scratch directories, a PID reaper, building test
//! programs, and the checkpoint-kill-restart round trip.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Makes the programs the tests start hold only what the tests give them. crest refuses
/// descriptors that lead outside a checkpoint other than standard input, output and error, and
/// hands those over only to a `cr_restart` whose own are of the same kind; so the descriptors
/// this test process inherited from whatever started it (a CI runner's pipe, a terminal's)
/// are marked close-on-exec, and its standard error (a terminal, a file or a pipe, depending on
/// how the tests are run) is put behind a pipe, copied to it by a thread: a program started
/// here and a `cr_restart` given the test's standard error both have a pipe there, however the
/// tests are run.
pub fn fd_hygiene() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use crest_ptrace::sys;
        for e in std::fs::read_dir("/proc/self/fd").expect("own descriptors").flatten() {
            if let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()).filter(|&fd| fd > 2) {
                let _ = sys::set_cloexec(fd, true);
            }
        }
        let (Ok(orig), Ok((r, w))) = (sys::dup_above(2, 3), sys::pipe2(libc::O_CLOEXEC)) else { return };
        if sys::redirect_stderr(&w).is_ok() {
            let mut orig = std::fs::File::from(orig);
            // A plain read and write loop: std::io::copy would splice, which does not keep
            // to the file offset the test harness's own output shares with it.
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let (mut r, mut buf) = (std::fs::File::from(r), vec![0u8; 1 << 16]);
                while let Ok(n @ 1..) = r.read(&mut buf) {
                    let _ = orig.write_all(&buf[..n]);
                }
            });
        }
    });
}

/// A test that cannot run here (not root, a tool missing) calls this and returns: it says so in
/// the test output (past the harness's capture of printed output), and fails when `CI` is set,
/// so that a green CI means every test ran.
pub fn skip(why: &str) {
    let name = std::thread::current().name().unwrap_or("a test").to_string();
    assert!(std::env::var_os("CI").is_none(), "{name} cannot run here, and CI is set: {why}");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("SKIPPED {name}: {why}\n").as_bytes());
}

/// Whether a lazy restart can be done here; says why not otherwise.
pub fn lazy_possible() -> bool {
    match crest_ptrace::wp::MissingPager::probe() {
        Ok(()) => true,
        Err(e) => {
            skip(&format!("this user may not use userfaultfd with the fork event here ({e})"));
            false
        }
    }
}

pub fn bin(name: &str) -> PathBuf {
    fd_hygiene();
    PathBuf::from(match name {
        "cr_checkpoint" => env!("CARGO_BIN_EXE_cr_checkpoint"),
        "cr_restart" => env!("CARGO_BIN_EXE_cr_restart"),
        "cr_coord" => env!("CARGO_BIN_EXE_cr_coord"),
        _ => env!("CARGO_BIN_EXE_cr_info"),
    })
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A scratch directory removed on drop.
pub struct Dir(pub PathBuf);
impl Dir {
    pub fn new(name: &str) -> Dir {
        fd_hygiene();
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
pub struct Reaper(pub Vec<i32>);
impl Drop for Reaper {
    fn drop(&mut self) {
        for &p in &self.0 {
            let _ = Command::new("kill").arg("-9").arg(p.to_string()).stderr(Stdio::null()).status();
        }
    }
}

pub fn gcc(src: &str, out: &Path, extra: &[&str]) {
    let st = Command::new("gcc").args(["-O1", "-Wall", "-o"]).arg(out).arg(root().join(src)).args(extra).status().expect("gcc runs");
    assert!(st.success(), "compiling {src}");
}

pub fn wait_for(path: &Path, what: &str, timeout: Duration) -> String {
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

pub fn wait_child(c: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = c.try_wait().expect("try_wait") {
            return st;
        }
        assert!(t.elapsed() < timeout, "pid {} did not finish in {timeout:?}; its processes now:\n{}", c.id(), tree_state(c.id() as i32));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Each process of the tree under `pid` (it included): PID, name, state, where it waits in the
/// kernel, and its threads' states, one line each, for a test that timed out.
pub fn tree_state(pid: i32) -> String {
    let mut out = String::new();
    let mut todo = vec![(pid, 0usize)];
    while let Some((p, depth)) = todo.pop() {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let (comm, rest) = stat.rsplit_once(')').map(|(a, b)| (a.split_once('(').map_or("?", |x| x.1).to_string(), b.to_string())).unwrap_or_default();
        let state = rest.split_whitespace().next().unwrap_or("gone").to_string();
        let wchan = std::fs::read_to_string(format!("/proc/{p}/wchan")).unwrap_or_default();
        let threads: Vec<String> = std::fs::read_dir(format!("/proc/{p}/task"))
            .map(|rd| {
                rd.filter_map(|e| {
                    let st = std::fs::read_to_string(e.ok()?.path().join("stat")).ok()?;
                    Some(st.rsplit_once(')')?.1.split_whitespace().next()?.to_string())
                })
                .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!("{}{p} {comm} {state} wchan {wchan} threads {}\n", "  ".repeat(depth), threads.join("")));
        todo.extend(children_of(p).into_iter().map(|c| (c, depth + 1)));
    }
    out
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
}

/// `cr_restart`, with `--no-restore-pid` when PIDs cannot be restored (not root).
pub fn cr_restart_cmd() -> Command {
    let mut cmd = Command::new(bin("cr_restart"));
    if !is_root() {
        cmd.arg("--no-restore-pid");
    }
    cmd
}

/// Starts `prog args` with stdout to a file, checkpoints it with --kill once `ready` shows
/// there, restarts it and returns cr_restart's exit status and the output.
pub fn round_trip(d: &Dir, prog: &Path, args: &[&str], ready: &str, timeout: Duration) -> (std::process::ExitStatus, String) {
    round_trip_with(d, prog, args, ready, timeout, false, &[])
}

/// Like [`round_trip`] for a program that waits for SIGUSR2 to verify itself: once the
/// restored program has printed a new line, it gets SIGUSR2.
pub fn round_trip_verify(d: &Dir, prog: &Path, args: &[&str], ready: &str, timeout: Duration) -> (std::process::ExitStatus, String) {
    round_trip_with(d, prog, args, ready, timeout, true, &[])
}

/// Like [`round_trip_verify`], with more options for cr_checkpoint.
pub fn round_trip_verify_with(d: &Dir, prog: &Path, args: &[&str], ready: &str, timeout: Duration, ck_args: &[&str]) -> (std::process::ExitStatus, String) {
    round_trip_with(d, prog, args, ready, timeout, true, ck_args)
}

/// Waits until cr_restart (`rs`) has a restored child and returns its PID; panics with
/// cr_restart's exit status if it ends first.
pub fn restored_child(rs: &mut Child, timeout: Duration) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(p) = child_of(rs.id() as i32) {
            return p;
        }
        if let Some(st) = rs.try_wait().expect("try_wait") {
            let mut e = String::new();
            if let Some(err) = rs.stderr.as_mut() {
                let _ = std::io::Read::read_to_string(err, &mut e);
            }
            panic!("cr_restart ended without a restored process: {st:?}; stderr: {e}");
        }
        assert!(t.elapsed() < timeout, "no restored process after {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The PID of the restored process: cr_restart's only child.
pub fn child_of(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?.split_whitespace().next()?.parse().ok()
}

fn round_trip_with(d: &Dir, prog: &Path, args: &[&str], ready: &str, timeout: Duration, verify: bool, ck_args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = d.0.join("out.txt");
    let f = std::fs::File::create(&out).expect("output file");
    let mut child = Command::new(prog).args(args).current_dir(&d.0).stdout(f).stdin(Stdio::null()).spawn().expect("start program");
    let pid = child.id() as i32;
    let mut reaper = Reaper(vec![pid]);
    wait_for(&out, ready, Duration::from_secs(20));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).arg("--kill").args(ck_args).arg("-f").arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    assert!(ck.status.success(), "cr_checkpoint failed: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = child.wait();
    let meta = std::fs::metadata(&img).expect("image exists");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o400, "image is owner-read-only");
    let mut cmd = cr_restart_cmd();
    let lines_before = std::fs::read_to_string(&out).unwrap_or_default().lines().count();
    let mut rs = cmd.arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart runs");
    reaper.0.push(rs.id() as i32);
    if verify {
        let t = Instant::now();
        while std::fs::read_to_string(&out).unwrap_or_default().lines().count() <= lines_before {
            if rs.try_wait().ok().flatten().is_some() || t.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let p = restored_child(&mut rs, Duration::from_secs(20));
        reaper.0.push(p);
        let _ = Command::new("kill").arg("-USR2").arg(p.to_string()).status();
    }
    let st = wait_child(&mut rs, timeout);
    if !st.success() {
        let mut e = String::new();
        let _ = std::io::Read::read_to_string(rs.stderr.as_mut().expect("piped"), &mut e);
        eprintln!("cr_restart stderr: {e}");
    }
    reaper.0.clear();
    (st, std::fs::read_to_string(&out).unwrap_or_default())
}

/// Processes a test started: on drop, every PID is sent SIGKILL and every child is waited for
/// (PID 1 here does not reap orphans, so nothing may be left to it).
/// `reapers` are subreapers (`killafter`): they are left to end by themselves once the PIDs
/// are killed, so that they reap what they adopted.
#[derive(Default)]
pub struct Procs {
    pub children: Vec<Child>,
    pub pids: Vec<i32>,
    pub reapers: Vec<Child>,
}
impl Procs {
    /// Stops killing `pid` on drop (it ended and was reaped: its number may be reused).
    pub fn forget(&mut self, pid: i32) {
        self.pids.retain(|&p| p != pid);
    }
    /// Keeps `c` and returns its PID.
    pub fn add(&mut self, c: Child) -> i32 {
        let pid = c.id() as i32;
        self.children.push(c);
        pid
    }
    /// The child with PID `pid`, taken out to be waited for by the caller.
    pub fn take(&mut self, pid: i32) -> Child {
        let i = self.children.iter().position(|c| c.id() as i32 == pid).expect("a child of this test");
        self.children.remove(i)
    }
}
impl Drop for Procs {
    fn drop(&mut self) {
        for &p in &self.pids {
            let _ = Command::new("kill").arg("-9").arg(p.to_string()).stderr(Stdio::null()).status();
        }
        for r in &mut self.reapers {
            for p in children_of(r.id() as i32) {
                let _ = Command::new("kill").arg("-9").arg(p.to_string()).stderr(Stdio::null()).status();
            }
            let t = Instant::now();
            while r.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = r.kill();
            let _ = r.wait();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A file system mounted for a test, unmounted on drop.
pub struct Mount(pub PathBuf);
impl Mount {
    /// `mount -t tmpfs -o OPTIONS` at `at` (created if needed).
    pub fn tmpfs(at: &Path, options: &str) -> Mount {
        std::fs::create_dir_all(at).expect("mount point");
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", options, "crest-test"]).arg(at).status().expect("mount runs");
        assert!(st.success(), "mounting a tmpfs at {}", at.display());
        Mount(at.to_path_buf())
    }
}
impl Drop for Mount {
    fn drop(&mut self) {
        if !Command::new("umount").arg(&self.0).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// State letter and tracer of `pid`, from /proc/PID/status.
pub fn proc_state(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
    let state = field("State:")?.chars().next()?;
    let tracer = field("TracerPid:")?.parse().ok()?;
    Some((state, tracer))
}

/// Asserts that `pid` runs on as before: alive, not traced, not stopped.
pub fn assert_untouched(pid: i32, when: &str) {
    let (state, tracer) = proc_state(pid).unwrap_or_else(|| panic!("{when}: PID {pid} is gone"));
    assert_eq!(tracer, 0, "{when}: PID {pid} is still traced");
    assert!(!matches!(state, 'T' | 't' | 'Z' | 'X'), "{when}: PID {pid} is in state {state}");
}

/// Sends SIGUSR2 to a `steady` program and waits for its `PASS n` line in `out`.
pub fn verify_steady(pid: i32, out: &Path, n: u32) {
    let _ = Command::new("kill").arg("-USR2").arg(pid.to_string()).status();
    let text = wait_for(out, &format!("PASS {n}\n"), Duration::from_secs(30));
    assert!(!text.contains("FAIL"), "steady failed its check:\n{}", text.lines().filter(|l| !l.starts_with("tick")).collect::<Vec<_>>().join("\n"));
}

/// Builds `tests/c/steady.c` into `d`.
pub fn build_steady(d: &Dir) -> PathBuf {
    let s = d.0.join("steady");
    gcc("tests/c/steady.c", &s, &[]);
    s
}

/// Builds the `tests/c/killafter.c` helper into `d`.
pub fn build_killafter(d: &Dir) -> PathBuf {
    let k = d.0.join("killafter");
    gcc("tests/c/killafter.c", &k, &[]);
    k
}

/// Starts `steady MIB DIR [same-pid]` in `d` with stdout to `out`, and waits for "ready".
pub fn start_steady(prog: &Path, d: &Dir, mib: u32, out: &Path) -> Child {
    let f = std::fs::File::create(out).expect("output file");
    let mut cmd = Command::new(prog);
    cmd.arg(mib.to_string()).arg(&d.0);
    if is_root() {
        cmd.arg("same-pid");
    }
    let c = cmd.stdout(f).stdin(Stdio::null()).spawn().expect("start steady");
    wait_for(out, "ready", Duration::from_secs(60));
    c
}

/// PIDs of the processes running the executable `exe`.
pub fn procs_running(exe: &Path) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).filter(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == exe)).collect()
}

/// Children of `pid` (of all its threads).
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    rd.filter_map(|e| e.ok()).flat_map(|t| std::fs::read_to_string(t.path().join("children")).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>()).collect()
}

/// Names in directory `d`, sorted.
pub fn names_in(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d).map(|rd| rd.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned())).collect()).unwrap_or_default();
    v.sort();
    v
}

/// Waits until `ready()` holds while cr_restart (`rs`, stderr piped) runs; panics with its exit
/// status and stderr if it ends first, or after `timeout`.
pub fn wait_while_restarting(rs: &mut Child, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ready() {
        if let Some(st) = rs.try_wait().expect("try_wait") {
            let mut e = String::new();
            if let Some(err) = rs.stderr.as_mut() {
                let _ = std::io::Read::read_to_string(err, &mut e);
            }
            panic!("cr_restart ended early: {st:?}: {e}");
        }
        assert!(t.elapsed() < timeout, "the restored process did not get going in {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The offset of descriptor 1 saved in the image `img` (a regular file): where the restored
/// process goes on writing its output.
pub fn stdout_offset(img: &Path) -> usize {
    let o = Command::new(bin("cr_info")).arg("--json").arg(img).output().expect("cr_info");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let fds = v["processes"][0]["fds"].as_array().expect("fds");
    let out = fds.iter().find(|f| f["fd"] == 1).expect("fd 1");
    out["kind"]["Regular"]["pos"].as_u64().expect("a regular file at an offset") as usize
}

/// Waits until `out` has more lines starting with "tick" than now: the process runs on.
pub fn wait_new_tick(out: &Path, timeout: Duration, what: &str) {
    let ticks = || std::fs::read_to_string(out).unwrap_or_default().lines().filter(|l| l.starts_with("tick")).count();
    let seen = ticks();
    let t = Instant::now();
    while ticks() <= seen {
        assert!(t.elapsed() < timeout, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Builds `tests/c/NAME.c`, runs it with `args` ("DIR" stands for its scratch directory),
/// checkpoints it with `--kill`, restarts it and checks that it says PASS.
pub fn run_c(name: &str, args: &[&str]) {
    run_c_in(name, name, args);
}

/// [`run_c`] as root; elsewhere the test is skipped, saying `why` it needs root.
pub fn run_c_as_root(why: &str, name: &str, args: &[&str]) {
    if !is_root() {
        return skip(why);
    }
    run_c(name, args);
}

/// [`run_c`] in a scratch directory of its own (`dir`), for a second test of one program.
pub fn run_c_in(dir: &str, name: &str, args: &[&str]) {
    let d = Dir::new(dir);
    let prog = d.0.join(name);
    gcc(&format!("tests/c/{name}.c"), &prog, &[]);
    let dir = d.0.to_str().expect("utf8").to_string();
    let args: Vec<&str> = args.iter().map(|a| if *a == "DIR" { dir.as_str() } else { a }).collect();
    let (st, out) = round_trip_verify(&d, &prog, &args, "ready", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "{name} after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

/// One HTTP/1.1 request for `path` on `s`, the connection kept open (keep-alive): the body.
pub fn http_get_on(s: &mut std::net::TcpStream, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
            if len.is_some_and(|n| body.len() >= n) {
                return Ok(body.to_string());
            }
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("connection closed after {text:?}")));
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// Size of image `img` in KiB (0 when it is not there), for the figures a test prints.
pub fn image_kib(img: &Path) -> u64 {
    std::fs::metadata(img).map(|m| m.len()).unwrap_or(0) / 1024
}

/// `cr_checkpoint ARGS -f IMG PID`, which must succeed; returns how long it took.
pub fn timed_checkpoint(args: &[&str], img: &Path, pid: i32) -> Duration {
    let t = Instant::now();
    let ck = Command::new(bin("cr_checkpoint")).args(args).arg("-f").arg(img).arg(pid.to_string()).output().expect("cr_checkpoint");
    let took = t.elapsed();
    assert!(ck.status.success(), "cr_checkpoint {args:?} of pid {pid}: {}", String::from_utf8_lossy(&ck.stderr));
    took
}

/// Waits until `pid` is gone, or a zombie (killed by a checkpoint with --kill).
pub fn wait_gone(pid: i32, what: &str) {
    let t = Instant::now();
    while proc_state(pid).is_some_and(|(s, _)| s != 'Z') {
        assert!(t.elapsed() < Duration::from_secs(10), "{what} (pid {pid}) did not end with --kill");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A test program of tests/c started for a refusal test: built into its scratch directory,
/// its output in `out`, its PID in `procs` (killed on drop).
pub struct CProgram {
    pub procs: Procs,
    pub pid: i32,
    pub out: PathBuf,
    pub img: PathBuf,
}

/// Builds `tests/c/NAME.c` into `d` and starts it with `args` ("DIR" stands for `d`), its
/// output in `d/out`; does not wait for it.
pub fn start_c(d: &Dir, name: &str, args: &[&str]) -> CProgram {
    let prog = d.0.join(name);
    gcc(&format!("tests/c/{name}.c"), &prog, &[]);
    let dir = d.0.to_str().expect("utf8").to_string();
    let args: Vec<&str> = args.iter().map(|a| if *a == "DIR" { dir.as_str() } else { a }).collect();
    let out = d.0.join("out");
    let mut procs = Procs::default();
    let child = Command::new(&prog).args(&args).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let pid = procs.add(child);
    CProgram { procs, pid, out, img: d.0.join("img") }
}

/// Builds `tests/c/NAME.c` (with the compiler options `cflags`) into `d` and starts it there,
/// its output in `d/out.txt` and its PID in `procs` (killed on drop); waits until it says
/// "ready", failing after `limit`. Returns its PID and its output file.
pub fn start_ready(d: &Dir, name: &str, cflags: &[&str], procs: &mut Procs, limit: Duration) -> (i32, PathBuf) {
    let prog = d.0.join(name);
    gcc(&format!("tests/c/{name}.c"), &prog, cflags);
    let out = d.0.join("out.txt");
    let child = Command::new(&prog).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("start");
    let pid = procs.add(child);
    procs.pids.push(pid);
    wait_for(&out, "ready", limit);
    (pid, out)
}

/// `cr_checkpoint --kill` of `p` is refused with EOPNOTSUPP (exit 95), its message holding
/// every one of `names` (the process, the object), and no image; the process runs on
/// untouched, and after SIGUSR2 it checks itself and says PASS.
pub fn assert_refused_then_passes(mut p: CProgram, names: &[&str]) {
    let ck = Command::new(bin("cr_checkpoint")).args(["--kill", "-f"]).arg(&p.img).arg(p.pid.to_string()).output().expect("cr_checkpoint runs");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert_eq!(ck.status.code(), Some(95), "exit status (EOPNOTSUPP); stderr: {err}");
    for n in names {
        assert!(err.contains(n), "the message names {n:?}: {err}");
    }
    assert!(!p.img.exists(), "no image is written");
    assert_untouched(p.pid, "after a refused checkpoint");
    let _ = Command::new("kill").arg("-USR2").arg(p.pid.to_string()).status();
    let st = wait_child(&mut p.procs.take(p.pid), Duration::from_secs(30));
    let text = std::fs::read_to_string(&p.out).unwrap_or_default();
    assert!(st.success() && text.contains("PASS"), "the process checks itself after the refusal: {st:?}\n{text}");
}

/// The restored process that `rs` (a cr_restart) runs, its child for which `is_it` holds
/// (`None` if cr_restart ends first or `timeout` passes); once cr_restart has let it go (no
/// tracer), it is sent SIGUSR2, which tells the test programs to check themselves.
pub fn usr2_once_let_go(rs: &mut Child, timeout: Duration, is_it: impl Fn(i32) -> bool) -> Option<i32> {
    let t = Instant::now();
    let p = loop {
        if let Some(p) = child_of(rs.id() as i32).filter(|&p| is_it(p)) {
            break p;
        }
        if rs.try_wait().ok().flatten().is_some() || t.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let t = Instant::now();
    while proc_state(p).is_some_and(|(_, tracer)| tracer != 0) && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = Command::new("kill").arg("-USR2").arg(p.to_string()).status();
    Some(p)
}
