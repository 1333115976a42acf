//! MPI jobs on one node, checkpointed whole (`cr_checkpoint --tree --kill` on the launcher:
//! the launcher, its proxies and the 4 ranks, with their shared memory and their unix and
//! TCP sockets on loopback) and restarted: the job must go on and end with the right answer
//! (tests/mpi/ring.c: a token ring that checks every value; tests/mpi/collect.c: MPI_Bcast and
//! MPI_Allreduce in a loop, checking every sum). Debian's MPICH (hydra, ch4:ucx) and Open MPI
//! (mpirun, vader shared memory). Each job runs under `killafter -1`, which reaps every orphan.
//!
//! MPICH's default UCX transports talk through shared memory and wake each other with unix
//! datagrams between abstract addresses that each rank holds; the wake-ups queued at the
//! checkpoint are saved and sent again by the restored ranks. Over UCX's TCP transport on
//! loopback the job restarts too (its launcher hangs in MPI_Finalize there, checkpoint or not).
//!
//! A launcher keeps its ranks' PIDs: after `cr_restart --no-restore-pid` the ranks end with the
//! right answer, but the launcher waits on for the old PIDs; the test checks the answer and
//! ends the launcher.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

/// One MPI job at a time: 4 ranks that poll for messages fill this machine's cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy)]
struct Flavour {
    name: &'static str,
    cc: &'static str,
    launcher: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    /// Whether the launcher ends once its ranks have printed their answer (MPICH over UCX's
    /// TCP transport hangs in MPI_Finalize on loopback here, checkpoint or not).
    ends: bool,
}

/// MPICH with hydra and UCX's default transports (shared memory).
const MPICH: Flavour = Flavour { name: "MPICH", cc: "mpicc.mpich", launcher: "mpiexec.mpich", args: &[], env: &[], ends: true };
/// MPICH with UCX's TCP transport on loopback only.
const MPICH_TCP: Flavour = Flavour { name: "MPICH over TCP", cc: "mpicc.mpich", launcher: "mpiexec.mpich", args: &[], env: &[("UCX_TLS", "self,tcp"), ("UCX_NET_DEVICES", "lo")], ends: false };
/// Open MPI: 4 ranks on 2 cores need --oversubscribe, and mpirun refuses root without these.
const OMPI: Flavour = Flavour {
    name: "Open MPI",
    cc: "mpicc.openmpi",
    launcher: "mpirun.openmpi",
    args: &["--oversubscribe"],
    env: &[("OMPI_ALLOW_RUN_AS_ROOT", "1"), ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")],
    ends: true,
};

const RANKS: usize = 4;

/// Every descendant of `pid`.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for t in std::fs::read_dir(format!("/proc/{p}/task")).map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).collect::<Vec<_>>()).unwrap_or_default() {
            for k in std::fs::read_to_string(format!("/proc/{p}/task/{t}/children")).unwrap_or_default().split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                out.push(k);
                queue.push(k);
            }
        }
    }
    out
}

/// The subreapers (`killafter -1`) a test started: on drop, everything below each is killed
/// and each is waited for, so that nothing is left running or unreaped.
#[derive(Default)]
struct Jobs(Vec<Child>);
impl Jobs {
    fn end(c: &mut Child) {
        for _ in 0..3 {
            for p in descendants(c.id() as i32) {
                let _ = Command::new("kill").arg("-9").arg(p.to_string()).stderr(Stdio::null()).status();
            }
            let t = Instant::now();
            while c.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if c.try_wait().ok().flatten().is_some() {
                return;
            }
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}
impl Drop for Jobs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            Jobs::end(c);
        }
    }
}

struct Setup {
    d: Dir,
    killafter: PathBuf,
    prog: PathBuf,
    out: PathBuf,
}

/// Builds `tests/mpi/PROG.c` with the flavour's compiler, or says why the test cannot run.
fn setup(f: Flavour, prog: &str) -> Option<Setup> {
    if !is_root() {
        skip("MPI jobs are checkpointed as root here (their shared memory is read through /proc/PID/map_files)");
        return None;
    }
    for tool in [f.cc, f.launcher] {
        if Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().map_or(true, |s| !s.success()) {
            skip(&format!("{tool} is not installed (apt-get install mpich libmpich-dev openmpi-bin libopenmpi-dev)"));
            return None;
        }
    }
    let d = Dir::new(&format!("mpi-{}-{prog}", f.cc));
    let killafter = build_killafter(&d);
    let exe = d.0.join(prog);
    let st = Command::new(f.cc).args(["-O1", "-Wall", "-o"]).arg(&exe).arg(root().join(format!("tests/mpi/{prog}.c"))).status().expect("the MPI compiler runs");
    assert!(st.success(), "{}: compiling tests/mpi/{prog}.c", f.cc);
    let out = d.0.join("out.txt");
    Some(Setup { d, killafter, prog: exe, out })
}

/// `killafter -1 CMD` in the test's directory with the flavour's environment, output to `out`
/// (appended, so that a restored launcher's output lands where its offset says).
fn under_reaper(s: &Setup, f: Flavour, cmd: &mut Command) -> Child {
    let o = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&s.out).expect("output file");
    let e = std::fs::OpenOptions::new().create(true).append(true).open(s.d.0.join("err.txt")).expect("error file");
    let mut c = Command::new(&s.killafter);
    c.arg("-1").arg(cmd.get_program()).args(cmd.get_args()).current_dir(&s.d.0).stdin(Stdio::null()).stdout(o).stderr(e);
    for (k, v) in f.env {
        c.env(k, v);
    }
    c.spawn().expect("killafter runs")
}

/// Starts the job: `LAUNCHER [ARGS] -n 4 PROG N 20`; returns the reaper and the launcher's PID.
fn start(s: &Setup, f: Flavour, n: u32) -> (Child, i32) {
    let mut cmd = Command::new(f.launcher);
    cmd.args(f.args).arg("-n").arg(RANKS.to_string()).arg(&s.prog).arg(n.to_string()).arg("20");
    let reaper = under_reaper(s, f, &mut cmd);
    let t = Instant::now();
    let launcher = loop {
        if let Some(p) = child_of(reaper.id() as i32) {
            break p;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{} did not start", f.launcher);
        std::thread::sleep(Duration::from_millis(10));
    };
    (reaper, launcher)
}

/// The lines rank 0 prints, in order, for a job of `n` steps: what the output must hold whole.
fn expected(prog: &str, n: u32) -> Vec<String> {
    let size = RANKS as i64;
    let mut v = Vec::new();
    let n = i64::from(n);
    match prog {
        "ring" => {
            v.extend((1..n).map(|r| format!("round {r} token {}", r * size)));
            v.push(format!("PASS ring {n} {size} {}", n * size));
        }
        _ => {
            let mut total = 0;
            for i in 0..n {
                let seed = i * 1000 + 17;
                let sum = seed * size + size * (size - 1) / 2;
                total += sum;
                v.push(format!("iter {i} sum {sum}"));
            }
            v.push(format!("PASS collect {n} {size} {total}"));
        }
    }
    v
}

/// The output must be exactly what the job prints without a checkpoint: nothing lost, nothing
/// twice (the launchers write only rank 0's lines here).
fn check_output(s: &Setup, prog: &str, n: u32, what: &str) {
    let got = std::fs::read_to_string(&s.out).unwrap_or_default();
    let lines: Vec<&str> = got.lines().filter(|l| !l.trim().is_empty()).collect();
    let want = expected(prog, n);
    let err = std::fs::read_to_string(s.d.0.join("err.txt")).unwrap_or_default();
    assert_eq!(lines, want, "{what}: the job's output is not the whole answer; stderr:\n{err}");
}

/// Waits for progress line `step` in the output.
fn wait_step(s: &Setup, prog: &str, step: u32) {
    let mark = if prog == "ring" { format!("round {step} ") } else { format!("iter {step} ") };
    wait_for(&s.out, &mark, Duration::from_secs(30));
}

fn checkpoint(args: &[&str], img: &Path, pid: i32) -> Result<(), String> {
    let ck = Command::new(bin("cr_checkpoint")).arg("--tree").args(args).arg("-f").arg(img).arg(pid.to_string()).output().expect("cr_checkpoint runs");
    if ck.status.success() {
        Ok(())
    } else {
        Err(format!("exit {:?}: {}", ck.status.code(), String::from_utf8_lossy(&ck.stderr)))
    }
}

fn restart_cmd(img: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin("cr_restart"));
    c.args(args).arg(img);
    c
}

/// Checkpoint with --kill in the middle of the job, then restart (with `restart_args`): the
/// output must be the whole answer. With the job's PIDs the launcher ends by itself, exit 0
/// (unless `f.ends` says it does not even without a checkpoint). With new PIDs the launcher
/// waits on for its ranks' old PIDs: the test says so and ends it.
fn round_trip(f: Flavour, prog: &str, n: u32, restart_args: &[&str]) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = setup(f, prog) else { return };
    let mut jobs = Jobs::default();
    let (reaper, launcher) = start(&s, f, n);
    jobs.0.push(reaper);
    wait_step(&s, prog, n / 4);
    let img = s.d.0.join("img");
    let t = Instant::now();
    checkpoint(&["--kill"], &img, launcher).unwrap_or_else(|e| panic!("{}: cr_checkpoint --tree --kill of {} (PID {launcher}): {e}", f.name, f.launcher));
    let took = t.elapsed();
    let st = wait_child(&mut jobs.0[0], Duration::from_secs(20));
    assert!(st.code() != Some(0), "{}: the job was killed at the checkpoint, not ended", f.name);
    let size = std::fs::metadata(&img).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    let reaper = under_reaper(&s, f, &mut restart_cmd(&img, restart_args));
    jobs.0.push(reaper);
    let ended = if f.ends && restart_args.is_empty() {
        let st = wait_child(&mut jobs.0[1], Duration::from_secs(40));
        let err = std::fs::read_to_string(s.d.0.join("err.txt")).unwrap_or_default();
        assert!(st.success(), "{}: the restarted job did not end well: {st:?}\n{err}", f.name);
        true
    } else {
        let pass = if prog == "ring" { "PASS ring" } else { "PASS collect" };
        wait_for(&s.out, pass, Duration::from_secs(40));
        // The time a launcher takes to notice that its ranks ended.
        let t = Instant::now();
        loop {
            if let Some(st) = jobs.0[1].try_wait().ok().flatten() {
                assert!(st.success(), "{}: the restarted job did not end well: {st:?}", f.name);
                break true;
            }
            if t.elapsed() > Duration::from_secs(3) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    check_output(&s, prog, n, f.name);
    let launcher_end = match (ended, restart_args.is_empty()) {
        (true, _) => "the launcher ended, exit 0",
        (false, true) => "the launcher did not end (it does not without a checkpoint either: the ranks hang in MPI_Finalize) and was ended by the test",
        (false, false) => "the launcher waits on for its ranks' old PIDs and was ended by the test",
    };
    eprintln!(
        "{} {prog} (restart {restart_args:?}): checkpoint of launcher, proxies and {RANKS} ranks in {took:?}, image {size} bytes; the ranks went on and ended with PASS in {:?}; {launcher_end}",
        f.name,
        t.elapsed()
    );
}

#[test]
fn mpich_tcp_ring_restarts_with_the_right_answer() {
    round_trip(MPICH_TCP, "ring", 150, &[]);
}

#[test]
fn mpich_tcp_collectives_restart_with_the_right_answer() {
    round_trip(MPICH_TCP, "collect", 150, &[]);
}

#[test]
fn mpich_tcp_ring_with_new_pids_gives_the_right_answer() {
    round_trip(MPICH_TCP, "ring", 150, &["--no-restore-pid"]);
}

#[test]
fn openmpi_ring_restarts_and_ends_right() {
    round_trip(OMPI, "ring", 150, &[]);
}

#[test]
fn openmpi_collectives_restart_and_end_right() {
    round_trip(OMPI, "collect", 150, &[]);
}

#[test]
fn openmpi_collectives_with_new_pids_give_the_right_answer() {
    round_trip(OMPI, "collect", 150, &["--no-restore-pid"]);
}

/// MPICH with UCX's default transports: shared memory, the ranks waking each other with
/// datagrams between abstract addresses each rank holds. The wake-ups queued at the
/// checkpoint are sent again by the restored ranks' own sockets; the launcher ends, exit 0.
#[test]
fn mpich_ring_restarts_and_ends_right() {
    round_trip(MPICH, "ring", 150, &[]);
}

#[test]
fn mpich_collectives_restart_and_end_right() {
    round_trip(MPICH, "collect", 150, &[]);
}

/// Open MPI's shared memory segments are named files in /dev/shm, mapped shared; writes
/// through those mappings do not change the files' modification times. A job that ran on after
/// a checkpoint taken with --save-shared is restarted from it: the ranks share the saved
/// contents of each segment again and the job ends right.
#[test]
fn openmpi_restarts_from_saved_segments_after_running_on() {
    let f = OMPI;
    let (prog, n) = ("ring", 150);
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = setup(f, prog) else { return };
    let mut jobs = Jobs::default();
    let (reaper, launcher) = start(&s, f, n);
    jobs.0.push(reaper);
    wait_step(&s, prog, 20);
    let saved = s.d.0.join("saved");
    checkpoint(&["--save-shared"], &saved, launcher).unwrap_or_else(|e| panic!("{}: cr_checkpoint --save-shared: {e}", f.name));
    // The job goes on (its segments change), then is ended by a later checkpoint.
    wait_step(&s, prog, 60);
    checkpoint(&["--kill"], &s.d.0.join("later"), launcher).unwrap_or_else(|e| panic!("{}: cr_checkpoint --kill: {e}", f.name));
    wait_child(&mut jobs.0[0], Duration::from_secs(20));
    let reaper = under_reaper(&s, f, &mut restart_cmd(&saved, &[]));
    jobs.0.push(reaper);
    let st = wait_child(&mut jobs.0[1], Duration::from_secs(40));
    let err = std::fs::read_to_string(s.d.0.join("err.txt")).unwrap_or_default();
    assert!(st.success(), "{}: the job restarted from saved segments did not end well: {st:?}\n{err}", f.name);
    check_output(&s, prog, n, f.name);
    eprintln!("{} {prog}: restarted from an image taken with --save-shared after the job ran on: the job ended with PASS", f.name);
}
