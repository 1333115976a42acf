//! libcr end to end: C programs built against `libcr.h` and the library, checkpointed and
//! restarted by the commands. The header must match the library (layouts, constants, error
//! texts); the examples of `examples/c/` must print what they promise (a callback that
//! flushes its buffer sees the checkpoint go on, then the restart; a critical section holds a
//! checkpoint off; a program checkpoints itself); and each failure a callback can cause has
//! its exit status and message: a callback that hangs (bounded by `--time`), one that gives
//! TEMP or PERM failure, OMIT, a process killed in its callback. Everything started is killed
//! by PID and waited for, even on failure.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// The built library, found beside the commands (or among cargo's dependencies).
fn library() -> PathBuf {
    let dir = bin("cr_checkpoint").parent().expect("bin dir").to_path_buf();
    [dir.join("libcrest_libcr.so"), dir.join("deps/libcrest_libcr.so")].into_iter().find(|p| p.exists()).expect("libcrest_libcr.so is built (cargo build --release)")
}

/// A directory of `d` where the library has its link name and soname.
fn libdir(d: &Dir) -> PathBuf {
    let l = d.0.join("lib");
    std::fs::create_dir_all(&l).expect("lib dir");
    for name in ["libcr.so", "libcr.so.0"] {
        let _ = std::os::unix::fs::symlink(library(), l.join(name));
    }
    l
}

/// Builds `src` against libcr.h and the library.
fn build(d: &Dir, src: &str, name: &str) -> PathBuf {
    let out = d.0.join(name);
    let inc = root().join("crates/crest-libcr/include");
    gcc(src, &out, &[&format!("-I{}", inc.display()), &format!("-L{}", libdir(d).display()), "-lcr"]);
    out
}

/// Starts `prog args` in `d` with its output in `out`, the library on its path.
fn start(d: &Dir, prog: &Path, args: &[&str], out: &Path) -> Child {
    let f = std::fs::File::create(out).expect("output file");
    Command::new(prog).args(args).current_dir(&d.0).env("LD_LIBRARY_PATH", libdir(d)).stdout(f).stdin(Stdio::null()).spawn().expect("start program")
}

fn checkpoint(args: &[&str], pid: i32) -> Output {
    Command::new(bin("cr_checkpoint")).args(args).arg(pid.to_string()).output().expect("cr_checkpoint runs")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn header_matches_the_library() {
    let d = Dir::new("libcr-abi");
    let prog = build(&d, "tests/c/libcr_abi.c", "abi");
    let o = Command::new(&prog).env("LD_LIBRARY_PATH", libdir(&d)).output().expect("runs");
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let has = |line: String| assert!(out.lines().any(|l| l == line), "expected {line:?} in:\n{out}");
    use crest_libcr::*;
    has(format!("sizeof cr_checkpoint_args_t {}", std::mem::size_of::<cr_checkpoint_args_t>()));
    has(format!("sizeof cr_restart_args_t {}", std::mem::size_of::<cr_restart_args_t>()));
    has(format!("sizeof cr_checkpoint_info {}", std::mem::size_of::<cr_checkpoint_info>()));
    has(format!("sizeof cr_restart_info {}", std::mem::size_of::<cr_restart_info>()));
    has(format!("sizeof cr_rstrt_relocate {}", std::mem::size_of::<cr_rstrt_relocate>()));
    has(format!("offset cr_checkpoint_args_t.cr_flags {}", std::mem::offset_of!(cr_checkpoint_args_t, cr_flags)));
    has(format!("offset cr_restart_args_t.cr_relocate {}", std::mem::offset_of!(cr_restart_args_t, cr_relocate)));
    has(format!("offset cr_checkpoint_info.scope {}", std::mem::offset_of!(cr_checkpoint_info, scope)));
    has(format!("offset cr_restart_info.src {}", std::mem::offset_of!(cr_restart_info, src)));
    // BLCR's measured sizes (BLCR-REFERENCE.md §5.2).
    assert_eq!((std::mem::size_of::<cr_checkpoint_args_t>(), std::mem::size_of::<cr_restart_args_t>()), (28, 24));
    has(format!("CR_THREAD_CONTEXT {}", crest_libcr::core::c::THREAD_CONTEXT));
    has(format!("CR_SIGNAL_CONTEXT {}", crest_libcr::core::c::SIGNAL_CONTEXT));
    has(format!("CR_SIGNUM {0} cri_signum {0}", crest_ptrace::libcr::SIGNUM));
    has("CR_ETEMPFAIL 2354".into());
    has("CR_ERESTARTED 2363".into());
    has("CR_ENOINIT 2365".into());
    has("CR_MAX_ERRCODE 2366".into());
    for (_, v, t) in ERRCODES {
        has(format!("strerror {v} {}", t.to_str().expect("utf-8")));
    }
    has("checkpoint outside -2364".into());
    has("register before init -1".into());
    has("init args 0 scope -1 target 0 fd -1".into());
    has("cr_init 0 1".into());
    has("first signal id 0x2000000".into());
    has("first thread id 0x4000000".into());
    has("tryenter 0 leave 0 status 0".into());
}

#[test]
fn flush_example_goes_on_then_restarts() {
    let d = Dir::new("libcr-flush");
    let prog = build(&d, "examples/c/flush.c", "flush");
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = procs.add(start(&d, &prog, &[], &out));
    wait_for(&out, "ready", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let img = d.0.join("img");
    let o = checkpoint(&["-f", img.to_str().expect("utf-8")], pid);
    assert!(o.status.success(), "{}", text(&o));
    let s = wait_for(&out, "continuing\n", Duration::from_secs(10));
    // The buffered lines were written before the checkpoint, and the callback was told where.
    assert!(s.contains("tick 1\n"), "the buffer was flushed:\n{s}");
    assert!(s.contains(&format!("callback: flushed, checkpoint to {}\n", img.display())), "{s}");
    assert_untouched(pid, "after the checkpoint");

    let o = checkpoint(&["--kill", "-f", img.to_str().expect("utf-8")], pid);
    assert!(o.status.success(), "{}", text(&o));
    let _ = procs.take(pid).wait();
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = rs.id() as i32;
    let s = wait_for(&out, "restarted by", Duration::from_secs(10));
    let restored = restored_child(&mut rs, Duration::from_secs(10));
    procs.pids.push(restored);
    procs.children.push(rs);
    assert!(s.contains(&format!("restarted by {rs_pid} from {}\n", img.display())), "the restarted copy learns who restarted it and from what:\n{s}");
}

#[test]
fn critical_section_holds_the_checkpoint_off() {
    let d = Dir::new("libcr-cs");
    let prog = build(&d, "examples/c/critical.c", "critical");
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = procs.add(start(&d, &prog, &[], &out));
    wait_for(&out, "ready", Duration::from_secs(10));
    for i in 0..3 {
        let o = checkpoint(&["-f", d.0.join(format!("img{i}")).to_str().expect("utf-8")], pid);
        assert!(o.status.success(), "{}", text(&o));
    }
    let s = wait_for(&out, "continuing\ncallback", Duration::from_secs(10));
    let s = if s.matches("continuing").count() < 3 { wait_for(&out, "continuing\n", Duration::from_secs(10)) } else { s };
    assert_eq!(s.matches("consistent").count(), 3, "{s}");
    assert!(!s.contains("INCONSISTENT"), "a checkpoint ran inside the critical section:\n{s}");
}

#[test]
fn a_program_checkpoints_itself() {
    let d = Dir::new("libcr-self");
    let prog = build(&d, "examples/c/self.c", "self");
    let img = d.0.join("img");
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = procs.add(start(&d, &prog, &[img.to_str().expect("utf-8")], &out));
    let st = wait_child(procs.children.last_mut().expect("child"), Duration::from_secs(30));
    procs.forget(pid);
    let s = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && s.contains("checkpointed: counter 42"), "{st:?}: {s}");
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let st = wait_child(&mut rs, Duration::from_secs(30));
    let s = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(st.success() && s.contains("restarted: counter 42"), "the restarted copy sees CR_ERESTARTED: {st:?}: {s}");
}

/// Starts `libcr_cases MODE` and waits until it is ready.
fn case(d: &Dir, mode: &str, procs: &mut Procs) -> (i32, PathBuf) {
    let prog = build(d, "tests/c/libcr_cases.c", "cases");
    let out = d.0.join(format!("{mode}.txt"));
    let pid = procs.add(start(d, &prog, &[mode], &out));
    wait_for(&out, "ready", Duration::from_secs(10));
    (pid, out)
}

#[test]
fn a_callback_that_hangs_is_bounded_by_time() {
    let d = Dir::new("libcr-hang");
    let mut procs = Procs::default();
    let (pid, out) = case(&d, "hang", &mut procs);
    let t = std::time::Instant::now();
    let o = checkpoint(&["--time", "2", "-f", d.0.join("img").to_str().expect("utf-8")], pid);
    assert_eq!(o.status.code(), Some(libc::ETIMEDOUT), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert!(text(&o).contains("--time limit of 2 s"), "{}", text(&o));
    wait_for(&out, "thread: hanging", Duration::from_secs(5));
    assert_untouched(pid, "after the timeout");
    assert!(!d.0.join("img").exists());
}

#[test]
fn temporary_failure_cancels_and_the_process_goes_on() {
    let d = Dir::new("libcr-temp");
    let mut procs = Procs::default();
    let (pid, out) = case(&d, "temp", &mut procs);
    let o = checkpoint(&["-f", d.0.join("img").to_str().expect("utf-8")], pid);
    assert_eq!(o.status.code(), Some(50), "CR_ETEMPFAIL & 0xff: {}", text(&o));
    assert!(text(&o).contains("cancelled by the application"), "{}", text(&o));
    wait_for(&out, "thread: returned -2354 (Temporary error: checkpoint cancelled)", Duration::from_secs(5));
    assert_untouched(pid, "after the cancelled checkpoint");
    // With the callback's own code.
    let (pid, out) = case(&d, "code", &mut procs);
    let o = checkpoint(&["-f", d.0.join("img").to_str().expect("utf-8")], pid);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    wait_for(&out, "thread: returned -7", Duration::from_secs(5));
}

#[test]
fn permanent_failure_kills_the_request() {
    let d = Dir::new("libcr-perm");
    let mut procs = Procs::default();
    let (pid, _) = case(&d, "perm", &mut procs);
    let o = checkpoint(&["-f", d.0.join("img").to_str().expect("utf-8")], pid);
    assert_eq!(o.status.code(), Some(51), "CR_EPERMFAIL & 0xff: {}", text(&o));
    let st = wait_child(&mut procs.take(pid), Duration::from_secs(10));
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL));
}

#[test]
fn omit_returns_eomitted_and_nothing_is_checkpointed() {
    let d = Dir::new("libcr-omit");
    let mut procs = Procs::default();
    let (pid, out) = case(&d, "omit", &mut procs);
    let o = checkpoint(&["-f", d.0.join("img").to_str().expect("utf-8")], pid);
    assert_eq!(o.status.code(), Some(libc::ESRCH), "{}", text(&o));
    assert!(text(&o).contains("no processes checkpointed"), "{}", text(&o));
    wait_for(&out, "thread: returned -2358 (Process omitted from checkpoint at a callback's request)", Duration::from_secs(5));
    assert_untouched(pid, "after omitting itself");
}

#[test]
fn omit_leaves_the_process_out_and_the_rest_of_the_tree_is_checkpointed() {
    // As BLCR: the parent's callback answers OMIT, its child's READY; the child alone is
    // checkpointed (and killed by --kill), the parent runs on, and a restart brings the child
    // back, told that it was restarted.
    let d = Dir::new("libcr-omittree");
    let mut procs = Procs::default();
    let (pid, out) = case(&d, "omittree", &mut procs);
    let s = wait_for(&out, "child ", Duration::from_secs(10));
    let child: i32 = s.lines().find_map(|l| l.strip_prefix("child ")?.parse().ok()).expect("child PID");
    procs.pids.push(child);
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&out).unwrap_or_default().matches("ready").count() < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "the child is not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let img = d.0.join("img");
    let o = checkpoint(&["--tree", "--kill", "-f", img.to_str().expect("utf-8")], pid);
    assert!(o.status.success(), "{}", text(&o));
    wait_for(&out, "thread: returned -2358 (Process omitted from checkpoint at a callback's request)", Duration::from_secs(5));
    wait_for(&out, "child ended", Duration::from_secs(10));
    procs.forget(child);
    assert_untouched(pid, "after omitting itself");
    let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info");
    let listing = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(listing.contains(&format!("process {child} (parent 0,")) && !listing.contains(&format!("process {pid} ")), "the image holds the child alone:\n{listing}");
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let _ = wait_child(&mut procs.take(pid), Duration::from_secs(10));
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = rs.id() as i32;
    let s = wait_for(&out, "thread: restarted by", Duration::from_secs(10));
    procs.pids.push(restored_child(&mut rs, Duration::from_secs(10)));
    procs.children.push(rs);
    assert!(s.contains(&format!("thread: restarted by {rs_pid}")), "{s}");
}

#[test]
fn a_process_killed_in_its_callback_ends_the_checkpoint() {
    let d = Dir::new("libcr-killed");
    let mut procs = Procs::default();
    let (pid, out) = case(&d, "hang", &mut procs);
    let killer = std::thread::spawn(move || {
        wait_for(&out, "thread: hanging", Duration::from_secs(10));
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    });
    let o = checkpoint(&["--time", "20", "-f", d.0.join("img").to_str().expect("utf-8")], pid);
    killer.join().expect("killer");
    assert_eq!(o.status.code(), Some(libc::ESRCH), "{}", text(&o));
    assert!(text(&o).contains("ended during the checkpoint"), "{}", text(&o));
}

#[test]
fn signal_context_callbacks_run_in_their_thread() {
    let d = Dir::new("libcr-signal");
    let mut procs = Procs::default();
    let (pid, out) = case(&d, "signal", &mut procs);
    let img = d.0.join("img");
    let o = checkpoint(&["--kill", "-f", img.to_str().expect("utf-8")], pid);
    assert!(o.status.success(), "{}", text(&o));
    let _ = procs.take(pid).wait();
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = rs.id() as i32;
    let s = wait_for(&out, "signal: restarted", Duration::from_secs(10));
    procs.pids.push(restored_child(&mut rs, Duration::from_secs(10)));
    procs.children.push(rs);
    assert!(s.contains(&format!("signal: restarted by {rs_pid}")), "{s}");
}

/// A directory of `d` with the preload libraries under their sonames.
fn preload_dir(d: &Dir) -> PathBuf {
    let dir = bin("cr_checkpoint").parent().expect("bin dir").to_path_buf();
    let l = d.0.join("preload");
    std::fs::create_dir_all(&l).expect("dir");
    for (built, name) in [("libcrest_libcr_run.so", "libcr_run.so.0"), ("libcrest_libcr_omit.so", "libcr_omit.so.0")] {
        let src = [dir.join(built), dir.join("deps").join(built)].into_iter().find(|p| p.exists()).expect("the preload libraries are built");
        let _ = std::os::unix::fs::symlink(src, l.join(name));
    }
    l
}

#[test]
fn cr_run_preloads_and_omit_leaves_the_program_out() {
    let d = Dir::new("libcr-run");
    let cr_run = bin("cr_checkpoint").with_file_name("cr_run");
    let lib = preload_dir(&d);
    let o = Command::new(&cr_run).args(["sh", "-c", "echo $LD_PRELOAD; grep -c libcr_run /proc/self/maps"]).env("LD_LIBRARY_PATH", &lib).env("LD_PRELOAD", "libcr_omit.so.0").output().expect("cr_run");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "libcr_run.so.0\n4\n", "{}", text(&o));
    // Under --omit the program is left out of a checkpoint that names it.
    let mut procs = Procs::default();
    let out = d.0.join("out.txt");
    let child =
        Command::new(&cr_run).args(["--omit", "sh", "-c", "echo ready; exec sleep 60"]).env("LD_LIBRARY_PATH", &lib).stdout(std::fs::File::create(&out).expect("out")).spawn().expect("cr_run --omit");
    let pid = procs.add(child);
    wait_for(&out, "ready", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(200));
    let o = checkpoint(&["-f", d.0.join("img").to_str().expect("utf-8")], pid);
    assert_eq!(o.status.code(), Some(libc::ESRCH), "{}", text(&o));
    assert!(text(&o).contains("asked to be left out"), "{}", text(&o));
    // A static program is named as one that cannot take the preload, and runs.
    let src = d.0.join("st.c");
    std::fs::write(&src, "int main(void) { return 3; }\n").expect("write");
    let st = d.0.join("st");
    let built = Command::new("gcc").arg("-static").arg("-o").arg(&st).arg(&src).status().is_ok_and(|s| s.success());
    if !built {
        return skip("cr_run on a static program: gcc -static fails here (no static libc)");
    }
    let o = Command::new(&cr_run).arg(&st).output().expect("cr_run static");
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).contains("is statically linked"), "{}", text(&o));
}

/// Waits until `path` holds `what` `n` times.
fn wait_count(path: &Path, what: &str, n: usize, timeout: Duration) -> String {
    let t = std::time::Instant::now();
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.matches(what).count() >= n {
            return s;
        }
        assert!(t.elapsed() < timeout, "timed out waiting for {n} of {what:?} in {}; it holds:\n{s}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn no_failure(s: &str) {
    assert!(!s.contains("FAIL"), "a call returned what the client does not expect:\n{s}");
}

/// Kills `pids` and waits until `parent` (a subreaper) has no children left.
fn kill_under(parent: i32, pids: &[i32]) {
    for p in pids {
        let _ = Command::new("kill").arg("-9").arg(p.to_string()).stderr(Stdio::null()).status();
    }
    let t = std::time::Instant::now();
    while !children_of(parent).is_empty() && t.elapsed() < Duration::from_secs(10) {
        for p in children_of(parent) {
            let _ = Command::new("kill").arg("-9").arg(p.to_string()).stderr(Stdio::null()).status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn mpich_hydra_and_nemesis_checkpoint_the_proxy_tree_and_restart_it() {
    // The hydra proxy omits itself from the checkpoint of its own tree (cr_checkpoint(OMIT)
    // gives -CR_EOMITTED) and polls until it is done; its two nemesis ranks are checkpointed,
    // continue, and after hydra's cr_request_restart learn the proxy's PID as the requester.
    let d = Dir::new("libcr-hydra");
    let hydra = build(&d, "tests/c/client_hydra.c", "hydra");
    let nemesis = build(&d, "tests/c/client_nemesis.c", "nemesis");
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let dir = d.0.to_str().expect("utf-8");
    let proxy = procs.add(start(&d, &hydra, &["checkpoint", dir, "2", nemesis.to_str().expect("utf-8")], &out));
    wait_count(&out, "ready", 2, Duration::from_secs(10));
    procs.pids.extend(children_of(proxy));
    std::thread::sleep(Duration::from_millis(200));
    let _ = Command::new("kill").arg("-USR1").arg(proxy.to_string()).status();
    let s = wait_for(&out, "hydra: ranks stopped", Duration::from_secs(30));
    no_failure(&s);
    assert!(s.contains("hydra: checkpoint done (poll 1), callback got -CR_EOMITTED"), "{s}");
    assert_eq!(s.matches("continuing").count(), 2, "each rank's callback went on:\n{s}");
    let st = wait_child(&mut procs.take(proxy), Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    let img = std::fs::read_dir(&d.0).expect("dir").flatten().map(|e| e.path()).find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("context-num0-"))).expect("the image");
    let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info");
    let listing = String::from_utf8_lossy(&info.stdout).into_owned();
    assert_eq!(listing.matches("\nprocess ").count(), 2, "the ranks alone are in the image:\n{listing}");
    assert!(!listing.contains(&format!("process {proxy} ")), "{listing}");

    // The ranks' output goes on in out.txt (the restart checks it is as it was).
    let restart_out = d.0.join("restart.txt");
    let restarter = procs.add(start(&d, &hydra, &["restart", dir, img.to_str().expect("utf-8"), "2"], &restart_out));
    let s = wait_count(&out, "restarted, requester", 2, Duration::from_secs(30));
    no_failure(&s);
    no_failure(&std::fs::read_to_string(&restart_out).unwrap_or_default());
    for rank in 0..2 {
        assert!(s.contains(&format!("nemesis {rank}: restarted, requester {restarter}, env PMI_RANK={rank}")), "rank {rank} found its env file by the proxy's PID:\n{s}");
    }
    let under: Vec<i32> = children_of(restarter).into_iter().flat_map(|c| std::iter::once(c).chain(children_of(c))).collect();
    kill_under(restarter, &under);
}

#[test]
fn open_mpi_checkpoints_itself_and_restarts() {
    // Open MPI's crs/blcr: thread and signal callbacks that go on only for its own requests,
    // hooks, a critical section, a self-checkpoint polled until done (the restarted copy sees
    // CR_ERESTARTED), the older cr_request_file and cr_status, and callbacks disabled at the end.
    let d = Dir::new("libcr-ompi");
    let prog = build(&d, "tests/c/client_ompi.c", "ompi");
    let dir = d.0.to_str().expect("utf-8");
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = procs.add(start(&d, &prog, &["self", dir], &out));
    let st = wait_child(procs.children.last_mut().expect("child"), Duration::from_secs(30));
    procs.forget(pid);
    let s = std::fs::read_to_string(&out).unwrap_or_default();
    no_failure(&s);
    assert!(st.success() && s.contains("ompi: continued, thread callback 0, signal callback 0, hooks 0x1\nompi: finalized\n"), "{st:?}: {s}");
    let img = d.0.join(format!("ompi_blcr_context.{pid}"));
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let st = wait_child(&mut rs, Duration::from_secs(30));
    let s = std::fs::read_to_string(&out).unwrap_or_default();
    no_failure(&s);
    assert!(st.success() && s.contains("ompi: restarted, thread callback restart, signal callback restart, hooks 0x8\nompi: finalized\n"), "{st:?}: {s}");

    // The older calls.
    let out = d.0.join("old.txt");
    let pid = procs.add(start(&d, &prog, &["old", dir], &out));
    let st = wait_child(procs.children.last_mut().expect("child"), Duration::from_secs(30));
    procs.forget(pid);
    let s = std::fs::read_to_string(&out).unwrap_or_default();
    no_failure(&s);
    assert!(st.success() && s.contains("ompi: continued, thread callback 0") && s.contains("ompi: finalized"), "{st:?}: {s}");
    assert!(d.0.join(format!("ompi_blcr_context.{pid}")).exists());

    // A checkpoint another process asks for is one Open MPI's callbacks leave out.
    let out = d.0.join("peer.txt");
    let pid = procs.add(start(&d, &prog, &["peer", dir], &out));
    wait_for(&out, "ompi: ready", Duration::from_secs(10));
    let o = checkpoint(&["--pid", "-f", d.0.join("peer.img").to_str().expect("utf-8")], pid);
    assert_eq!(o.status.code(), Some(libc::ESRCH), "{}", text(&o));
    let s = wait_for(&out, "ompi: finalized", Duration::from_secs(10));
    assert!(s.contains("ompi: peer checkpoint, thread callback -CR_EOMITTED"), "{s}");
}

#[test]
fn slurm_srun_cr_checkpoints_itself_without_srun() {
    // srun_cr runs srun under cr_run --omit: a checkpoint of its tree holds srun_cr alone; its
    // callback finds the image's directory in the checkpoint info, and after a restart reads
    // the image's path. Without a directory it answers PERM_FAILURE: the request is killed.
    let d = Dir::new("libcr-srun-cr");
    let prog = build(&d, "tests/c/client_srun_cr.c", "srun_cr");
    let lib = preload_dir(&d);
    let cr_run = bin("cr_checkpoint").with_file_name("cr_run");
    // Under a subreaper (killafter) that reaps srun when srun_cr is killed.
    let killafter = build_killafter(&d);
    let start_srun_cr = |procs: &mut Procs, out: &Path| -> (i32, i32) {
        let f = std::fs::File::create(out).expect("output file");
        let libs = format!("{}:{}", libdir(&d).display(), lib.display());
        let c = Command::new(&killafter)
            .args(["-1", prog.to_str().expect("utf-8"), cr_run.to_str().expect("utf-8"), "sleep", "60"])
            .current_dir(&d.0)
            .env("LD_LIBRARY_PATH", libs)
            .stdout(f)
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("srun_cr");
        procs.reapers.push(c);
        let s = wait_for(out, "srun_cr: ready, pid ", Duration::from_secs(10));
        let line = s.lines().find_map(|l| l.strip_prefix("srun_cr: ready, pid ")).expect("ready line");
        let (pid, srun) = line.split_once(", srun ").and_then(|(p, s)| Some((p.parse().ok()?, s.parse().ok()?))).expect("PIDs");
        procs.pids.extend([pid, srun]);
        // srun has exec'd with libcr_omit preloaded.
        let t = std::time::Instant::now();
        while !crest_ptrace::libcr::omits_itself(srun) {
            assert!(t.elapsed() < Duration::from_secs(10), "srun did not start under cr_run --omit");
            std::thread::sleep(Duration::from_millis(20));
        }
        (pid, srun)
    };
    let mut procs = Procs::default();
    let out = d.0.join("out.txt");
    let (pid, srun) = start_srun_cr(&mut procs, &out);
    let img = d.0.join("ckpt").join("script.ckpt");
    std::fs::create_dir_all(img.parent().expect("dir")).expect("mkdir");
    let o = checkpoint(&["-T", "-f", img.to_str().expect("utf-8")], pid);
    assert!(o.status.success(), "{}", text(&o));
    let s = wait_for(&out, "srun_cr: continuing", Duration::from_secs(10));
    assert!(s.contains(&format!("srun_cr: step images go to {}\n", d.0.join("ckpt").display())), "{s}");
    assert_untouched(srun, "srun, left out");
    let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info");
    let listing = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(listing.contains(&format!("process {pid} ")) && !listing.contains(&format!("process {srun} ")), "srun_cr without srun:\n{listing}");
    // Restarted: it reads the image's path.
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let _ = wait_child(procs.reapers.last_mut().expect("killafter"), Duration::from_secs(10));
    procs.forget(pid);
    procs.forget(srun);
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let s = wait_for(&out, "srun_cr: restarted from", Duration::from_secs(10));
    procs.pids.push(restored_child(&mut rs, Duration::from_secs(10)));
    procs.children.push(rs);
    assert!(s.contains(&format!("srun_cr: restarted from {}\n", img.display())), "{s}");

    // An image that is not a file leaves it no directory: PERM_FAILURE.
    let out = d.0.join("perm.txt");
    let (pid, _) = start_srun_cr(&mut procs, &out);
    let o = Command::new(bin("cr_checkpoint")).args(["-T", "--fd", "1"]).arg(pid.to_string()).stdin(Stdio::null()).output().expect("cr_checkpoint");
    assert_eq!(o.status.code(), Some(51), "{}", text(&o));
    // killafter exits with 128 + the signal srun_cr died by.
    let st = wait_child(procs.reapers.last_mut().expect("killafter"), Duration::from_secs(10));
    assert_eq!(st.code(), Some(128 + libc::SIGKILL));
    procs.forget(pid);
    assert!(std::fs::read_to_string(&out).unwrap_or_default().contains("srun_cr: no directory for the step images"));
}

#[test]
fn gasnet_waits_and_reaps_its_checkpoint_and_its_restart() {
    // GASNet: a self-checkpoint with CR_CHKPT_ASYNC_ERR, waited for (looping on EINTR), its
    // messages read, reaped: 0 in the original, CR_ERESTARTED in the copy; and a restart through
    // cr_request_restart, waited for and reaped: the PID of the restored process.
    let d = Dir::new("libcr-gasnet");
    let prog = build(&d, "tests/c/client_gasnet.c", "gasnet");
    let img = d.0.join("img");
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = procs.add(start(&d, &prog, &["checkpoint", img.to_str().expect("utf-8")], &out));
    let s = wait_for(&out, "gasnet: checkpointed", Duration::from_secs(30));
    no_failure(&s);
    assert!(s.contains(&format!("gasnet: checkpointed, reap 0, pid {pid}\n")), "{s}");
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let _ = wait_child(&mut procs.take(pid), Duration::from_secs(10));
    let restarter = procs.add(start(&d, &prog, &["restart", img.to_str().expect("utf-8")], &d.0.join("restart.txt")));
    let r = wait_for(&d.0.join("restart.txt"), "gasnet: restart", Duration::from_secs(30));
    let s = wait_for(&out, "gasnet: restarted", Duration::from_secs(30));
    let under: Vec<i32> = children_of(restarter).into_iter().flat_map(|c| std::iter::once(c).chain(children_of(c))).collect();
    kill_under(restarter, &under);
    no_failure(&r);
    assert!(r.contains(&format!("gasnet: restart reaped: {pid}\n")), "cr_reap_restart gives the restored PID:\n{r}");
    assert!(s.contains(&format!("gasnet: restarted, pid {pid}\n")), "{s}");
}

/// Waits until a line `prefix N` with N above `above` is in `path`.
fn wait_tick(path: &Path, prefix: &str, above: i64, timeout: Duration) {
    let t = std::time::Instant::now();
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.lines().filter_map(|l| l.strip_prefix(prefix)?.trim().parse::<i64>().ok()).any(|n| n > above) {
            return;
        }
        assert!(t.elapsed() < timeout, "no {prefix:?} above {above} in {}:\n{s}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `prefix N` in `s` (-1: none).
fn last_tick(s: &str, prefix: &str) -> i64 {
    s.lines().filter_map(|l| l.strip_prefix(prefix)?.trim().parse::<i64>().ok()).max().unwrap_or(-1)
}

/// A checkpoint of one process (`--pid`) whose callback forwards it to its child
/// (`cr_forward_checkpoint`, by PID or as its own tree): the child's callbacks run, both are in
/// the image, and a restart brings both back, each told it was restarted, their ticks going on.
fn forwarded(mode: &str) {
    let d = Dir::new(&format!("libcr-forward-{mode}"));
    let prog = build(&d, "tests/c/libcr_forward.c", "forward");
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = procs.add(start(&d, &prog, &[mode], &out));
    let s = wait_for(&out, "child: ready", Duration::from_secs(10));
    let child: i32 = s.lines().find_map(|l| l.strip_prefix("child ")?.parse().ok()).expect("child PID");
    procs.pids.push(child);
    assert!(s.contains("outside a callback: forward -1 CR_ENOTCB"), "{s}");
    let img = d.0.join("img");
    let o = checkpoint(&["--pid", "-f", img.to_str().expect("utf-8")], pid);
    assert!(o.status.success(), "{}", text(&o));
    let s = wait_for(&out, "child: continuing", Duration::from_secs(10));
    let s = if s.contains("parent: continuing") { s } else { wait_for(&out, "parent: continuing", Duration::from_secs(10)) };
    for line in ["parent: forward 0", "parent: forward again 0", "parent: bad scope -1 EINVAL", "parent: no such process -1 ESRCH", "parent: after cr_checkpoint -1 EINVAL"] {
        assert!(s.contains(line), "expected {line:?}:\n{s}");
    }
    assert!(s.contains(&format!("child: callback, scope 0 target {pid}")), "the child's callback ran, told of the request:\n{s}");
    let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info");
    let listing = String::from_utf8_lossy(&info.stdout).into_owned();
    assert!(listing.contains(&format!("process {pid} ")) && listing.contains(&format!("process {child} (parent {pid},")), "the image holds both, the child under its parent:\n{listing}");
    assert_untouched(pid, "after the checkpoint");
    assert_untouched(child, "after the checkpoint");

    // Both end (the parent reaps its child), then come back from the image.
    let _ = Command::new("kill").arg("-9").arg(child.to_string()).status();
    wait_for(&out, "parent: child ended", Duration::from_secs(10));
    procs.forget(child);
    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    let _ = wait_child(&mut procs.take(pid), Duration::from_secs(10));
    let before = std::fs::read_to_string(&out).unwrap_or_default();
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = rs.id() as i32;
    let restored = restored_child(&mut rs, Duration::from_secs(10));
    procs.pids.extend([child, restored]);
    procs.children.push(rs);
    let s = wait_for(&out, "child: restarted by", Duration::from_secs(10));
    let s = if s.contains("parent: restarted by") { s } else { wait_for(&out, "parent: restarted by", Duration::from_secs(10)) };
    assert!(s.contains(&format!("parent: restarted by {rs_pid}")) && s.contains(&format!("child: restarted by {rs_pid}")), "{s}");
    assert_eq!(restored, pid);
    wait_tick(&out, "child: tick ", last_tick(&before, "child: tick "), Duration::from_secs(10));
    wait_tick(&out, "parent: tick ", last_tick(&before, "parent: tick "), Duration::from_secs(10));
    // The restored child is the restored parent's, which reaps it.
    let _ = Command::new("kill").arg("-9").arg(child.to_string()).status();
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&out).unwrap_or_default().matches("parent: child ended").count() < 2 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    procs.forget(child);
}

#[test]
fn forward_checkpoint_takes_the_named_process_into_the_request() {
    forwarded("pid");
}

#[test]
fn forward_checkpoint_to_its_own_tree() {
    forwarded("tree");
}

/// Puts a sysctl file back to the value it had, whatever happens to the test.
struct Restore(&'static str, String);
impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0, &self.1);
    }
}

/// A process that checkpoints itself, alone or with its child (which uses libcr too), as an
/// unprivileged user (nobody, when the test runs as root) and, where Yama is there, under
/// `ptrace_scope` 1, where only a process's ancestors may trace it: the `cr_checkpoint` that
/// libcr runs is its child, so the library lets it trace the requester, and the child lets it
/// when asked for its callbacks by that checkpoint. Another checkpoint, by a process of the
/// same user that is not in that tree, gets no such leave: it cannot trace the child.
#[test]
fn self_checkpoints_under_yama_ptrace_scope_1() {
    const YAMA: &str = "/proc/sys/kernel/yama/ptrace_scope";
    let _restore = match std::fs::read_to_string(YAMA) {
        Err(_) => {
            eprintln!("Yama is absent here ({YAMA} does not exist): the self-checkpoints run without ptrace_scope 1");
            None
        }
        Ok(old) if is_root() => {
            let guard = Restore(YAMA, old.trim().to_string());
            std::fs::write(YAMA, "1").expect("set ptrace_scope to 1");
            eprintln!("Yama: ptrace_scope set to 1 (was {}) for this test", old.trim());
            Some(guard)
        }
        Ok(v) if v.trim() == "1" => None,
        Ok(v) => return skip(&format!("ptrace_scope is {} and only root may set it to 1", v.trim())),
    };
    let under_yama = std::fs::read_to_string(YAMA).is_ok_and(|v| v.trim() == "1");
    let d = Dir::new("libcr-yama");
    let prog = build(&d, "tests/c/libcr_selftree.c", "selftree");
    std::fs::set_permissions(&d.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    // As nobody when root: root may trace anything, whatever Yama says.
    let as_user = |prog: &Path| {
        let mut c = if is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(prog);
            c
        } else {
            Command::new(prog)
        };
        c.current_dir(&d.0).env("LD_LIBRARY_PATH", libdir(&d)).stdin(Stdio::null());
        c
    };
    for scope in ["proc", "tree"] {
        let out = d.0.join(format!("{scope}.txt"));
        let img = d.0.join(format!("{scope}.img"));
        let mut procs = Procs::default();
        let pid = procs.add(as_user(&prog).args([scope, img.to_str().expect("utf-8")]).stdout(std::fs::File::create(&out).expect("out")).spawn().expect("start"));
        let s = wait_for(&out, "child ", Duration::from_secs(30));
        let child: i32 = s.lines().find_map(|l| l.strip_prefix("child ")?.parse().ok()).expect("child PID");
        procs.pids.push(child);
        assert!(s.contains("parent: checkpointed"), "{scope}: the self-checkpoint was refused{}:\n{s}", if under_yama { " under ptrace_scope 1" } else { "" });
        let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info");
        let listing = String::from_utf8_lossy(&info.stdout).into_owned();
        assert!(listing.contains(&format!("process {pid} ")), "{listing}");
        if scope == "tree" {
            wait_for(&out, "child: continuing", Duration::from_secs(10));
            assert!(listing.contains(&format!("process {child} (parent {pid},")), "the tree holds the child:\n{listing}");
        }
        if under_yama {
            // A checkpoint by a process that is no ancestor, and not the tree's own, is refused.
            let mut c = as_user(&bin("cr_checkpoint"));
            let o = c.args(["--pid", "-f", "/dev/null"]).arg(child.to_string()).output().expect("cr_checkpoint");
            assert_eq!(o.status.code(), Some(1), "{scope}: {}", text(&o));
            assert!(text(&o).contains("ptrace_scope"), "{}", text(&o));
            eprintln!("Yama ptrace_scope 1: {scope} self-checkpoint as an unprivileged user passed");
        }
        let _ = Command::new("kill").arg("-9").arg(child.to_string()).status();
        wait_for(&out, "parent: child ended", Duration::from_secs(10));
        procs.forget(child);
    }
}

/// The numbers of the last line `round N (how): callback C main M other O hooks 0xH` in `s`,
/// after checking that the *_NO_CALLBACKS hook of the outcome ran (in the thread without
/// callbacks).
fn hold_round(s: &str, how: &str) -> (i32, i32, i32) {
    let l = s.lines().rev().find(|l| l.contains(&format!("({how}): "))).unwrap_or_else(|| panic!("no {how} round in:\n{s}"));
    let hook = if how == "restart" { "hooks 0x20" } else { "hooks 0x4" };
    assert!(l.ends_with(hook), "CR_HOOK_{}_NO_CALLBACKS ran, and no other: {l}", if how == "restart" { "RSTRT" } else { "CONT" });
    let n: Vec<i32> = l.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (n[1], n[2], n[3])
}

/// cr_hold_ctrl's barrier, as BLCR: by default (CR_HOLD_BOTH) a thread whose callbacks are done,
/// and a thread that never called cr_init, wait after the checkpoint, and after a restart,
/// until the slow thread-context callback is done too; with CR_HOLD_NONE they run on at once.
/// The thread without callbacks runs the *_NO_CALLBACKS hook of the outcome.
#[test]
fn hold_ctrl_holds_threads_until_every_callback_is_done() {
    let d = Dir::new("libcr-hold");
    let prog = build(&d, "tests/c/libcr_hold.c", "hold");
    let mut procs = Procs::default();
    // Held: after the checkpoint and after the restart.
    let out = d.0.join("held.txt");
    let pid = procs.add(start(&d, &prog, &["held"], &out));
    let s = wait_for(&out, "ready", Duration::from_secs(10));
    assert!(s.contains("read: thread 4 init 3 uninit 3\nDFLT for INIT: -1 EINVAL\nscope 7: -1 EINVAL\n"), "BLCR's defaults and refusals:\n{s}");
    let img = d.0.join("img");
    let o = checkpoint(&["-f", img.to_str().expect("utf-8")], pid);
    assert!(o.status.success(), "{}", text(&o));
    let s = wait_for(&out, "(continue)", Duration::from_secs(10));
    let (cb, main, other) = hold_round(&s, "continue");
    assert!(main > cb && other > cb, "held threads ran on only once the callback was done:\n{s}");
    let o = checkpoint(&["--kill", "-f", img.to_str().expect("utf-8")], pid);
    assert!(o.status.success(), "{}", text(&o));
    let _ = procs.take(pid).wait();
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    procs.pids.push(restored_child(&mut rs, Duration::from_secs(10)));
    procs.children.push(rs);
    let s = wait_for(&out, "(restart)", Duration::from_secs(10));
    let (cb, main, other) = hold_round(&s, "restart");
    assert!(main > cb && other > cb, "held after the restart too:\n{s}");

    // Not held: both run on while the callback still works.
    let out = d.0.join("free.txt");
    let pid = procs.add(start(&d, &prog, &["free"], &out));
    let s = wait_for(&out, "ready", Duration::from_secs(10));
    assert!(s.contains("set: thread 4 uninit 3\n"), "the previous values:\n{s}");
    let o = checkpoint(&["-f", d.0.join("img2").to_str().expect("utf-8")], pid);
    assert!(o.status.success(), "{}", text(&o));
    let s = wait_for(&out, "(continue)", Duration::from_secs(10));
    let (cb, main, other) = hold_round(&s, "continue");
    assert!(main < cb && other < cb, "threads not held ran on at once:\n{s}");
}

/// The manual, libcr(3), names every symbol the three libraries export, every name their
/// headers define (functions, macros, types, constants, structure fields), and each of BLCR's
/// error codes with its number and its cr_strerror text.
#[test]
fn man_page_documents_every_symbol() {
    let page = std::fs::read_to_string(root().join("crates/crest-libcr/libcr.3")).expect("crates/crest-libcr/libcr.3");
    let text = page.replace("\\-", "-").replace("\\fB", " ").replace("\\fI", " ").replace("\\fR", " ").replace("\\fP", " ");
    let words: std::collections::BTreeSet<&str> = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
    let mut names = std::collections::BTreeSet::new();
    let dir = library().parent().expect("dir").to_path_buf();
    for built in ["libcrest_libcr.so", "libcrest_libcr_run.so", "libcrest_libcr_omit.so"] {
        let lib = [dir.join(built), dir.join("deps").join(built)].into_iter().find(|p| p.exists()).unwrap_or_else(|| panic!("{built} is built"));
        let o = Command::new("nm").args(["-D", "--defined-only", "--format=posix"]).arg(&lib).output().expect("nm runs");
        assert!(o.status.success(), "nm {}", lib.display());
        let exported: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect();
        assert!(exported.iter().any(|s| s == "cri_signum"), "{built} exports: {exported:?}");
        names.extend(exported);
    }
    for h in ["libcr.h", "blcr_common.h", "blcr_errcodes.h"] {
        let src = std::fs::read_to_string(root().join("crates/crest-libcr/include").join(h)).expect("header");
        for tok in src.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let ours = ["cr_", "cri_", "CR_", "LIBCR_", "_CR_"].iter().any(|p| tok.starts_with(p));
            if ours && !tok.ends_with('_') && !tok.ends_with("_H") {
                names.insert(tok.to_string());
            }
        }
    }
    assert!(names.len() > 150, "found only {} names", names.len());
    let missing: Vec<&String> = names.iter().filter(|n| !words.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "libcr(3) does not name: {missing:?}");
    for (name, value, why) in crest_libcr::ERRCODES {
        let why = why.to_str().expect("utf-8");
        assert!(text.lines().any(|l| l.contains(name) && l.contains(&format!("({value})"))), "libcr(3) gives {name}'s number {value}");
        assert!(text.contains(why), "libcr(3) gives {name}'s text {why:?}");
    }
}
