//! `cr_slurm` under a real SLURM: a batch job (`sbatch --requeue --signal`) computes and checks
//! a long sum (tests/c/longsum.c) with a progress line per step; it is preempted and must come
//! back from its checkpoints, not start over, and finish with the right answer. Two jobs run
//! an MPI token ring (tests/mpi/ring.c, 4 ranks on the one node) the same way: MPICH's
//! `mpiexec -launcher fork` requeued twice, Open MPI's `mpirun` warned twice.
//!
//! The test installs nothing: it needs a running single-node SLURM, started by
//! `scripts/slurm-up.sh` (as root; `.ci/run` does it) and found through `SLURM_CONF` or at
//! that script's default place. Without one it says why, and fails when `CI` is set. Each job
//! is cancelled (and waited for) even when the test fails; its files are removed. One test
//! runs cr_slurm outside SLURM (the restart's fallbacks) and needs none.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The SLURM configuration of a running SLURM, or why there is none.
fn slurm() -> Result<PathBuf, String> {
    let conf = std::env::var_os("SLURM_CONF").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("crest-slurm/slurm.conf"));
    if !conf.is_file() {
        return Err(format!("no SLURM configuration at {} (start one with scripts/slurm-up.sh as root, or set SLURM_CONF)", conf.display()));
    }
    let o = Command::new("sinfo").args(["-h", "-N", "-o", "%t"]).env("SLURM_CONF", &conf).output().map_err(|e| format!("sinfo cannot run ({e}): SLURM's clients are not installed"))?;
    let state = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if !o.status.success() || !["idle", "mix", "alloc"].iter().any(|s| state.starts_with(s)) {
        return Err(format!("SLURM of {} does not answer or has no usable node (sinfo: {state:?} {})", conf.display(), String::from_utf8_lossy(&o.stderr).trim()));
    }
    Ok(conf)
}

/// One batch job, cancelled and waited for when dropped.
struct Job {
    id: String,
    conf: PathBuf,
    out: PathBuf,
}

impl Job {
    /// Submits a job script that runs `cr_slurm --dir D/ck ARGS -- COMMAND`, COMMAND made of
    /// the path of the longsum program.
    fn submit(conf: &Path, d: &Dir, cr_slurm_args: &str, command: impl Fn(&Path) -> String) -> Job {
        let prog = d.0.join("longsum");
        gcc("tests/c/longsum.c", &prog, &[]);
        Job::submit_script(conf, d, "", cr_slurm_args, &command(&prog))
    }

    /// Submits a job script that sets `env` (shell lines) and runs `cr_slurm --dir D/ck ARGS
    /// -- COMMAND`.
    fn submit_script(conf: &Path, d: &Dir, env: &str, cr_slurm_args: &str, command: &str) -> Job {
        let script = d.0.join("job.sh");
        let cr_slurm = env!("CARGO_BIN_EXE_cr_slurm");
        std::fs::write(&script, format!("#!/bin/sh\n{env}exec {cr_slurm} --dir {}/ck {cr_slurm_args} -- {command}\n", d.0.display())).expect("job script");
        let out = d.0.join("out");
        let o = Command::new("sbatch")
            .args(["--parsable", "--requeue", "--open-mode=append", "--signal=B:USR1@600", "-J", "crest-test", "-n", "1"])
            .arg(format!("--chdir={}", d.0.display()))
            .arg(format!("--output={}", out.display()))
            .arg(&script)
            .env("SLURM_CONF", conf)
            .output()
            .expect("sbatch runs");
        assert!(o.status.success(), "sbatch: {}", String::from_utf8_lossy(&o.stderr));
        let id = String::from_utf8_lossy(&o.stdout).trim().split(';').next().unwrap_or_default().to_string();
        assert!(id.parse::<u32>().is_ok(), "sbatch --parsable printed {id:?}");
        Job { id, conf: conf.to_path_buf(), out }
    }

    fn slurm(&self, cmd: &str, args: &[&str]) -> String {
        let o = Command::new(cmd).args(args).env("SLURM_CONF", &self.conf).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until `ready` holds of the job's output; fails with the output after `limit`.
    fn wait(&self, what: &str, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let s = self.output();
            if ready(&s) {
                return s;
            }
            assert!(t.elapsed() < limit, "job {}: no {what} after {limit:?}; state {}; its output:\n{s}", self.id, self.field("JobState"));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A field of `scontrol show job`, e.g. `JobState`.
    fn field(&self, name: &str) -> String {
        let o = Command::new("scontrol").args(["show", "job", &self.id]).env("SLURM_CONF", &self.conf).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        o.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).unwrap_or("?").to_string()
    }

    /// Preempts the job twice with `scontrol requeue` (SIGTERM to every process of the job),
    /// each time once `checkpointed` holds of its output (a checkpoint taken in this run), and
    /// waits for it to restart from a checkpoint.
    fn requeue_twice(&self, checkpointed: impl Fn(&str) -> bool) {
        for round in 1..=2 {
            self.wait("checkpoint in this run", Duration::from_secs(90), &checkpointed);
            self.slurm("scontrol", &["requeue", &self.id]);
            self.wait(&format!("restart {round}"), Duration::from_secs(90), |s| s.matches("restarted from checkpoint").count() == round);
        }
    }

    /// Waits until the job's output has `result` and says its images were removed, and then
    /// until SLURM has the job COMPLETED; returns the output.
    fn completed(&self, result: &str) -> String {
        let s = self.wait("result", Duration::from_secs(90), |s| s.contains(result) && s.contains("images were removed"));
        self.wait_state("COMPLETED", Duration::from_secs(30));
        s
    }

    fn wait_state(&self, state: &str, limit: Duration) {
        let t = Instant::now();
        while self.field("JobState") != state {
            assert!(t.elapsed() < limit, "job {} is {}, not {state}, after {limit:?}; its output:\n{}", self.id, self.field("JobState"), self.output());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = Command::new("scancel").arg(&self.id).env("SLURM_CONF", &self.conf).status();
        let t = Instant::now();
        while ["RUNNING", "PENDING", "COMPLETING", "REQUEUED"].contains(&self.field("JobState").as_str()) && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The expected sum of i*i for i = 1..steps*10^6, modulo 2^64, as longsum prints it.
fn expected_sum(steps: u32) -> u64 {
    let n = steps as u128 * 1_000_000;
    (n * (n + 1) * (2 * n + 1) / 6) as u64
}

/// The numbers of longsum's progress lines, in order.
fn steps_of(s: &str) -> Vec<u64> {
    s.lines().filter_map(|l| l.strip_prefix("step ")?.split('/').next()?.parse().ok()).collect()
}

/// Whether the output has a checkpoint taken after its last start or restart.
fn checkpointed_since_start(s: &str) -> bool {
    let from = s.rfind("restarted from checkpoint").or_else(|| s.rfind(": started ")).unwrap_or(s.len());
    s[from..].contains(" taken: ")
}

/// The job's output `s` holds `restarts` restarts from checkpoints, and after each the job went
/// on from the `unit` (a step or a round, numbered from 1: `of` lists those of a run's output)
/// after one it had reached, never from the first; in each run they come in order. Returns the
/// last one reached.
fn resumed_each_time(s: &str, restarts: usize, unit: &str, of: fn(&str) -> Vec<u64>) -> u64 {
    let parts: Vec<&str> = s.split("restarted from checkpoint").collect();
    assert_eq!(parts.len(), restarts + 1, "{restarts} restarts from checkpoints expected:\n{s}");
    let mut reached = 0;
    for (i, part) in parts.iter().enumerate() {
        let r = of(part);
        if i > 0 {
            let first = *r.first().unwrap_or_else(|| panic!("no {unit} after restart {i}:\n{s}"));
            assert!(first > 1 && first <= reached + 1, "after restart {i} the job went on at {unit} {first}, having reached {unit} {reached}: it should resume, not start over:\n{s}");
        }
        assert!(r.windows(2).all(|w| w[1] == w[0] + 1), "{unit}s out of order in run {i}:\n{s}");
        reached = reached.max(r.last().copied().unwrap_or(0));
    }
    reached
}

/// After each restart, the job went on from the `unit` right after the last one of the run
/// before (`of` lists those of a run's output): none was done twice, as the checkpoint came
/// with `when`.
fn assert_none_again(s: &str, unit: &str, of: fn(&str) -> Vec<u64>, when: &str) {
    let parts: Vec<&str> = s.split("restarted from checkpoint").collect();
    for w in parts.windows(2) {
        assert_eq!(of(w[1]).first().copied(), of(w[0]).last().map(|l| l + 1), "no {unit} is done twice when the checkpoint came with {when}:\n{s}");
    }
}

/// After each restart, the job goes on from the step after one it had reached (it may do a
/// few again, those after its last checkpoint), never from step 1; every step is done.
fn assert_resumed(s: &str, steps: u32, restarts: usize) {
    let reached = resumed_each_time(s, restarts, "step", steps_of);
    assert_eq!(reached, u64::from(steps), "the job did every step:\n{s}");
    assert_eq!(s.matches("begin pid").count(), 1, "the program started once, then only resumed:\n{s}");
    assert_eq!(s.matches("RESULT ok").count(), 1, "one result:\n{s}");
    assert!(s.contains(&format!("RESULT ok {}", expected_sum(steps))), "the sum is right:\n{s}");
}

/// Preempted twice with `scontrol requeue` (SIGTERM to every process of the job): the job
/// comes back each time from the last periodic checkpoint and finishes with the right sum.
#[test]
fn requeued_twice_resumes_from_checkpoints() {
    let conf = match slurm() {
        Ok(c) => c,
        Err(why) => return skip(&why),
    };
    let d = Dir::new("slurm-requeue");
    let steps = 60;
    let job = Job::submit(&conf, &d, "--period 2", |p| format!("{} {steps} 250", p.display()));
    let t = Instant::now();
    job.requeue_twice(|s| checkpointed_since_start(s) && steps_of(s).len() > 2);
    let s = job.completed("RESULT");
    assert_eq!(job.field("Restarts"), "2", "SLURM ran the job three times");
    assert_eq!(job.field("ExitCode"), "0:0");
    assert!(s.contains("SIGTERM: the job is being ended"), "cr_slurm said why it took no checkpoint at SIGTERM:\n{s}");
    assert_resumed(&s, steps, 2);
    assert!(!d.0.join("ck").join(&job.id).exists(), "the images are removed once the job finished");
    eprintln!("slurm: job {} requeued twice, finished in {:.0} s", job.id, t.elapsed().as_secs_f64());
}

/// The warning signal (`sbatch --signal=B:USR1@...`, sent here at once with `scancel
/// --batch`): cr_slurm checkpoints, ends the command and requeues the job itself; the job
/// goes on from exactly the step it had reached.
#[test]
fn warning_signal_checkpoints_and_requeues() {
    let conf = match slurm() {
        Ok(c) => c,
        Err(why) => return skip(&why),
    };
    let d = Dir::new("slurm-warning");
    let steps = 30;
    let job = Job::submit(&conf, &d, "", |p| format!("{} {steps} 250", p.display()));
    job.wait("progress", Duration::from_secs(90), |s| steps_of(s).len() >= 5);
    job.slurm("scancel", &["--signal=USR1", "--batch", &job.id]);
    let s = job.wait("requeue", Duration::from_secs(60), |s| s.contains("the job was requeued"));
    assert!(s.contains("checkpoint 1 taken on the warning signal SIGUSR1"), "{s}");
    job.wait("restart", Duration::from_secs(90), |s| s.contains("restarted from checkpoint 1"));
    let s = job.completed("RESULT");
    assert_resumed(&s, steps, 1);
    assert_none_again(&s, "step", steps_of, "the warning");
}

/// A command whose every process ignores SIGTERM (a shell that ignores it, and the program it
/// waits for): `scontrol requeue` gets it checkpointed at once, both processes, and the job
/// goes on from exactly the step it had reached.
#[test]
fn sigterm_ignored_tree_is_checkpointed_at_preemption() {
    let conf = match slurm() {
        Ok(c) => c,
        Err(why) => return skip(&why),
    };
    let d = Dir::new("slurm-ignored");
    let steps = 30;
    let job = Job::submit(&conf, &d, "", |p| format!("sh -c \"trap '' TERM; {} {steps} 250 & wait\"", p.display()));
    job.wait("progress", Duration::from_secs(90), |s| steps_of(s).len() >= 5);
    job.slurm("scontrol", &["requeue", &job.id]);
    let s = job.wait("checkpoint", Duration::from_secs(60), |s| s.contains("taken on SIGTERM"));
    assert!(s.contains("checkpoint 1 taken on SIGTERM; the command was ended"), "{s}");
    job.wait("restart", Duration::from_secs(90), |s| s.contains("restarted from checkpoint 1"));
    let s = job.completed("RESULT");
    assert_eq!(job.field("ExitCode"), "0:0");
    assert_resumed(&s, steps, 1);
    assert_none_again(&s, "step", steps_of, "SIGTERM");
}

/// Outside SLURM (`--job-id` names the job): when the newest image is cut short, the restart
/// says so and takes the one before; when the saved PIDs are taken (here by the job the images
/// were copied from, still running) it restarts with new ones. Needs no SLURM.
#[test]
fn restart_falls_back_to_an_older_image_and_to_new_pids() {
    let d = Dir::new("slurm-fallback");
    let prog = d.0.join("longsum");
    gcc("tests/c/longsum.c", &prog, &[]);
    let ck = d.0.join("ck");
    let out = d.0.join("out");
    let mut reaper = Reaper(Vec::new());
    let appending = |p: &Path| std::fs::OpenOptions::new().create(true).append(true).open(p).expect("output file");
    let run = |job: &str, log: &Path, period: &str| {
        Command::new(env!("CARGO_BIN_EXE_cr_slurm"))
            .args(["--job-id", job, "--period", period, "--dir"])
            .arg(&ck)
            .arg("--")
            .arg(&prog)
            .args(["16", "250"])
            .stdin(std::process::Stdio::null())
            .stdout(appending(&out))
            .stderr(appending(log))
            .spawn()
            .expect("cr_slurm runs")
    };
    let log_a = d.0.join("a.log");
    let mut a = run("a", &log_a, "1");
    reaper.0.push(a.id() as i32);
    let s = wait_for(&log_a, "checkpoint 3 taken", Duration::from_secs(30));
    reaper.0.extend(s.lines().filter_map(|l| l.split("(PID ").nth(1)?.split(')').next()?.parse::<i32>().ok()));
    // Job b: a copy of a's images, the newest cut short.
    std::fs::create_dir_all(ck.join("b")).expect("b");
    let mut newest = 0;
    for e in std::fs::read_dir(ck.join("a")).expect("a's images").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix("image.").and_then(|n| n.parse::<u32>().ok()) {
            std::fs::copy(e.path(), ck.join("b").join(&name)).expect("copy");
            newest = newest.max(n);
        }
    }
    let cut = ck.join("b").join(format!("image.{newest}"));
    let len = std::fs::metadata(&cut).expect("image").len();
    std::fs::OpenOptions::new().write(true).open(&cut).and_then(|f| f.set_len(len / 2)).unwrap_or_else(|e| panic!("{}: {e}", cut.display()));
    let log_b = d.0.join("b.log");
    let mut b = run("b", &log_b, "0");
    reaper.0.push(b.id() as i32);
    let s = wait_for(&log_b, "the restored command runs as PID", Duration::from_secs(30));
    reaper.0.extend(s.lines().filter_map(|l| l.split("runs as PID ").nth(1)?.trim().parse::<i32>().ok()));
    assert!(wait_child(&mut b, Duration::from_secs(60)).success() && wait_child(&mut a, Duration::from_secs(60)).success(), "both jobs finish");
    // All ended and waited for: nothing left to kill (their PIDs may be reused by now).
    reaper.0.clear();
    let s = std::fs::read_to_string(&log_b).expect("b's log");
    assert!(s.contains(&format!("cannot restart from {}", cut.display())), "the cut image is named:\n{s}");
    assert!(s.contains(&format!("restarted from checkpoint {}", newest - 1)), "the one before is taken:\n{s}");
    assert!(s.contains("with new PIDs"), "a's PIDs are taken:\n{s}");
    let o = std::fs::read_to_string(&out).expect("output");
    assert_eq!(o.matches(&format!("RESULT ok {}", expected_sum(16))).count(), 2, "both finish with the right sum:\n{o}");
    assert!(!ck.join("a").exists() && !ck.join("b").exists(), "the images are removed once each finished");
}

/// One MPI job at a time: 4 ranks that poll for messages fill this machine's cores.
static ONE_MPI_JOB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Ranks of the MPI jobs (tests/mpi/ring.c), on the one node.
const RANKS: u64 = 4;

/// Builds tests/mpi/ring.c with `cc` into the test's directory, or says why it cannot.
fn mpi_ring(d: &Dir, cc: &str, launcher: &str) -> Option<PathBuf> {
    for tool in [cc, launcher] {
        if Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(std::process::Stdio::null()).status().map_or(true, |s| !s.success()) {
            skip(&format!("{tool} is not installed (apt-get install mpich libmpich-dev openmpi-bin libopenmpi-dev)"));
            return None;
        }
    }
    let exe = d.0.join("ring");
    let st = Command::new(cc).args(["-O1", "-Wall", "-o"]).arg(&exe).arg(root().join("tests/mpi/ring.c")).status().expect("the MPI compiler runs");
    assert!(st.success(), "{cc}: compiling tests/mpi/ring.c");
    Some(exe)
}

/// The round numbers of the ring's progress lines (`round R token T`), each token checked.
fn rounds_of(s: &str) -> Vec<u64> {
    s.lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("round ")?.split(' ');
            let r: u64 = w.next()?.parse().ok()?;
            let t: u64 = w.nth(1)?.parse().ok()?;
            assert_eq!(t, r * RANKS, "a wrong token in {l:?}");
            Some(r)
        })
        .collect()
}

/// The MPI job started once (one `round 1`), went on after each of its `restarts` from the
/// round after one it had reached (never from round 1), did every round in order in each run,
/// and ended with the ring's own check passed, once.
fn assert_ring_resumed(s: &str, rounds: u64, restarts: usize) {
    let reached = resumed_each_time(s, restarts, "round", rounds_of);
    assert_eq!(reached, rounds - 1, "the job did every round:\n{s}");
    assert_eq!(s.matches("round 1 token").count(), 1, "the job started once, then only resumed:\n{s}");
    assert_eq!(s.matches("PASS ring").count(), 1, "one result:\n{s}");
    assert!(s.contains(&format!("PASS ring {rounds} {RANKS} {}", rounds * RANKS)), "the ring's final token is right:\n{s}");
}

/// How an MPI job is preempted, twice.
#[derive(Clone, Copy)]
enum Preempt {
    /// `scontrol requeue` (SIGTERM to every process of the job), each time once a periodic
    /// checkpoint was taken in the run: the job comes back from the last periodic image.
    Requeue,
    /// The warning signal (`scancel --signal=USR1 --batch`): cr_slurm checkpoints, ends the
    /// command and requeues the job itself, which goes on from exactly the round it reached.
    Warning,
}

/// The MPI ring (built with `cc`) run by `launch` (the command line before the ring's path,
/// its first word the launcher) inside a batch job that sets `env` (shell lines), under
/// `cr_slurm ARGS`, and preempted twice by `preempt`: SLURM ran the job three times, it ended
/// well, and the ring resumed each time and passed its check. `what` names the MPI for the
/// figures printed.
fn mpi_job_preempted_twice(dir: &str, what: &str, cc: &str, launch: &str, env: &str, cr_slurm_args: &str, preempt: Preempt) {
    let conf = match slurm() {
        Ok(c) => c,
        Err(why) => return skip(&why),
    };
    let _one = ONE_MPI_JOB.lock().unwrap_or_else(|e| e.into_inner());
    let d = Dir::new(dir);
    let launcher = launch.split(' ').next().unwrap_or_default();
    let Some(ring) = mpi_ring(&d, cc, launcher) else { return };
    let rounds = 300;
    let job = Job::submit_script(&conf, &d, env, cr_slurm_args, &format!("{launch} {} {rounds} 40", ring.display()));
    let since_restart = |s: &str| rounds_of(&s[s.rfind("restarted from checkpoint").unwrap_or(0)..]).len();
    let t = Instant::now();
    match preempt {
        Preempt::Requeue => job.requeue_twice(|s| checkpointed_since_start(s) && since_restart(s) > 2),
        Preempt::Warning => {
            for round in 1..=2 {
                job.wait("progress in this run", Duration::from_secs(90), |s| since_restart(s) > 10);
                job.slurm("scancel", &["--signal=USR1", "--batch", &job.id]);
                job.wait(&format!("requeue {round}"), Duration::from_secs(60), |s| s.matches("the job was requeued").count() == round);
                job.wait(&format!("restart {round}"), Duration::from_secs(90), |s| s.matches("restarted from checkpoint").count() == round);
            }
        }
    }
    let s = job.completed("PASS ring");
    assert_eq!(job.field("Restarts"), "2", "SLURM ran the job three times");
    assert_eq!(job.field("ExitCode"), "0:0");
    assert_ring_resumed(&s, rounds, 2);
    match preempt {
        Preempt::Requeue => {
            assert!(!d.0.join("ck").join(&job.id).exists(), "the images are removed once the job finished");
            eprintln!("slurm: {what} job {} requeued twice, finished in {:.0} s", job.id, t.elapsed().as_secs_f64());
        }
        Preempt::Warning => {
            assert_none_again(&s, "round", rounds_of, "the warning");
            eprintln!("slurm: {what} job {} warned and requeued twice, finished in {:.0} s", job.id, t.elapsed().as_secs_f64());
        }
    }
}

/// MPICH's `mpiexec -launcher fork -n 4` inside the batch job under `cr_slurm --period`: the
/// launcher, its proxy and the 4 ranks are one tree below the batch script. Preempted twice
/// with `scontrol requeue` (SIGTERM to every process of the job), the job comes back each time
/// from the last periodic image and ends with the ring's check passed. (Without `-launcher
/// fork`, hydra starts its proxy with `srun` inside a SLURM job, outside the tree.)
#[test]
fn mpich_job_requeued_twice_resumes_from_checkpoints() {
    mpi_job_preempted_twice("slurm-mpich", "MPICH", "mpicc.mpich", &format!("mpiexec.mpich -launcher fork -n {RANKS}"), "", "--period 2", Preempt::Requeue);
}

/// Open MPI's `mpirun --oversubscribe -n 4` inside the batch job under `cr_slurm`, warned twice
/// (`scancel --signal=USR1 --batch`, as `sbatch --signal=B:USR1@...` or a preemption with
/// `send_user_signal` does): each time cr_slurm checkpoints the launcher and the ranks, ends
/// them and requeues the job, which goes on from exactly the round it had reached. (At
/// `scontrol requeue` without a warning, mpirun ends on SIGTERM: see the administrator's guide
/// for why a periodic image of it does not restart then.)
#[test]
fn openmpi_job_warned_twice_resumes_from_checkpoints() {
    let env = "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n";
    mpi_job_preempted_twice("slurm-openmpi", "Open MPI", "mpicc.openmpi", &format!("mpirun.openmpi --oversubscribe -n {RANKS}"), env, "", Preempt::Warning);
}

/// A job step started with `srun` (as MPICH's hydra does for its proxy inside a SLURM job,
/// unless told `-launcher fork`) runs its tasks under slurmstepd, outside the command's tree:
/// cr_slurm refuses the checkpoint, naming srun, and the command runs on. Needs no SLURM: a
/// copy of sleep named srun stands for it.
#[test]
fn srun_in_the_tree_is_refused() {
    let d = Dir::new("slurm-srun");
    let srun = d.0.join("srun");
    std::fs::copy("/bin/sleep", &srun).expect("a copy of sleep");
    let log = d.0.join("log");
    let mut reaper = Reaper(Vec::new());
    let mut c = Command::new(env!("CARGO_BIN_EXE_cr_slurm"))
        .args(["--job-id", "srun", "--period", "1", "--dir"])
        .arg(d.0.join("ck"))
        .arg("--")
        .arg("sh")
        .arg("-c")
        .arg(format!("{} 3; echo sleep ended", srun.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::OpenOptions::new().create(true).append(true).open(d.0.join("out")).expect("output file"))
        .stderr(std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file"))
        .spawn()
        .expect("cr_slurm runs");
    reaper.0.push(c.id() as i32);
    let s = wait_for(&log, "checkpoint 1 refused", Duration::from_secs(10));
    reaper.0.extend(s.lines().filter_map(|l| l.split("(PID ").nth(1)?.split(')').next()?.parse::<i32>().ok()));
    reaper.0.extend(s.lines().filter_map(|l| l.split("refused: PID ").nth(1)?.split(' ').next()?.parse::<i32>().ok()));
    assert!(s.contains("checkpoint 1 refused: PID ") && s.contains("(srun) runs a job step") && s.contains("the command runs on"), "{s}");
    assert!(wait_child(&mut c, Duration::from_secs(20)).success(), "the command ran on and ended well");
    reaper.0.clear();
    assert_eq!(std::fs::read_to_string(d.0.join("out")).unwrap_or_default(), "sleep ended\n");
    assert!(!d.0.join("ck").join("srun").exists(), "no image was kept");
}
