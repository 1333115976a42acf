//! `cr_slurm [options] [--] COMMAND [ARGS...]`: runs a SLURM batch job's command so that the
//! job survives being requeued. It runs COMMAND (or, when the job's directory holds an image,
//! restarts it from the newest one with [`crest_restore::restart`]) as its child, and
//! checkpoints COMMAND's whole tree with [`crest_dump::checkpoint`]:
//!
//! - on the warning signal (`sbatch --signal=B:USR1@SECONDS`): COMMAND is killed once the
//!   image is whole, the job requeued (`scontrol requeue $SLURM_JOB_ID`, since a job that
//!   reaches its time limit is not requeued), and cr_slurm exits 85 (ERESTART);
//! - every `--period` seconds, COMMAND running on;
//! - on SIGTERM (preemption, `scontrol requeue`, `scancel`), only when every process of
//!   COMMAND ignores it: SLURM signals every process of the job, so a COMMAND that does not
//!   ignore SIGTERM is ending already, and an image taken now would hold that signal or a tree
//!   that has lost processes. The job then restarts from the last whole image.
//!
//! A tree that holds `srun` is not checkpointed: the job step's tasks run under slurmstepd,
//! outside it.
//!
//! cr_slurm stays single-threaded (a checkpoint runs in a forked worker, and restarts fork
//! their processes directly): every signal is blocked and taken with `sigtimedwait`. The worker, not
//! cr_slurm, traces COMMAND, so cr_slurm's own wait for COMMAND never takes the tracer's
//! stops. Images are `DIR/JOB/image.N`, N growing: the worker writes `image.N.part` (itself
//! written under a temporary name until whole), cr_slurm renames it to `image.N` when the
//! worker succeeded and no SIGTERM came meanwhile, and only then removes the images older than
//! the newest `--keep`. A restart tries the newest image, then older ones when it is not a
//! valid image.
/// Prints one line on stderr with a single write: the job's output file is shared with the
/// command's processes, and `eprintln!` writes a line in pieces, which their output can cut.
macro_rules! eline {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crest_cli::{exits, signal_name};
use crest_dump::{After, Cancel, Destination, Policy, Request, Scope};
use crest_kinds::exit::ErrorKind;
use crest_ptrace::sys::{self, ChildEnd, Forked};

/// The signals that end a job: SLURM's SIGTERM, and those of a terminal or `scancel --signal`.
const ENDING: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];
/// The signal that cancels a checkpoint in the worker: its parent-death signal, which nothing
/// else sends it (SLURM sends SIGCONT, SIGTERM and SIGKILL).
const WORKER_CANCEL: i32 = libc::SIGPWR;
/// The capability that lets a process trace what Yama would not let it (linux/capability.h).
const CAP_SYS_PTRACE: u32 = 19;

struct Job {
    /// The job's key and its image directory.
    key: String,
    dir: PathBuf,
    keep: u32,
    warning: i32,
    requeue: bool,
    quiet: bool,
    compress: Option<i32>,
    drop_unsupported: bool,
    /// Save the contents of shared file mappings (`--save-shared`).
    save_shared: bool,
    time_limit: Option<Duration>,
    /// Every signal cr_slurm takes (all but SIGKILL and SIGSTOP), blocked.
    signals: Vec<i32>,
}

impl Job {
    fn say(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eline!("cr_slurm: job {}: {msg}", self.key);
        }
    }

    fn fail(&self, msg: impl std::fmt::Display) {
        eline!("cr_slurm: job {}: {msg}", self.key);
    }

    fn image(&self, n: u64) -> PathBuf {
        self.dir.join(format!("image.{n}"))
    }
}

fn main() {
    let m = crest_cli::parse_args(crest_cli::commands::slurm());
    let quiet = m.get_flag("quiet");
    let usage = |msg: String| -> ! {
        eline!("cr_slurm: {msg}");
        std::process::exit(exits::USAGE)
    };
    let key = match m.get_one::<String>("job-id").cloned().or_else(|| std::env::var("SLURM_JOB_ID").ok()).filter(|k| !k.is_empty()) {
        Some(k) if !k.contains('/') && k != "." && k != ".." => k,
        Some(k) => usage(format!("{k:?} cannot name the job's image directory (no '/', not . or ..)")),
        None => usage("no job: SLURM_JOB_ID is not set (not inside a SLURM job?); give --job-id JOB".to_string()),
    };
    let base = m
        .get_one::<String>("dir")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CREST_SLURM_DIR").filter(|d| !d.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("crest-checkpoints"));
    let signals: Vec<i32> = (1..=64).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP).collect();
    let job = Job {
        dir: base.join(&key),
        key,
        keep: m.get_one::<u32>("keep").copied().unwrap_or(2),
        warning: m.get_one::<i32>("warning").copied().unwrap_or(libc::SIGUSR1),
        requeue: !m.get_flag("no-requeue"),
        quiet,
        compress: m.get_one::<i32>("compress").copied(),
        drop_unsupported: m.get_flag("drop-unsupported"),
        save_shared: m.get_flag("save-shared"),
        time_limit: m.get_one::<u64>("time").copied().filter(|&t| t > 0).map(Duration::from_secs),
        signals,
    };
    if ENDING.contains(&job.warning) {
        usage(format!("the warning signal cannot be {}, which SLURM sends every process of the job when it ends it", signal_name(job.warning)));
    }
    // The images hold the command's memory: the job's directory is the user's alone.
    let made = std::fs::create_dir_all(&base).and_then(|()| match std::fs::DirBuilder::new().mode(0o700).create(&job.dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && job.dir.is_dir() => Ok(()),
        r => r,
    });
    if let Err(e) = made {
        job.fail(format!("cannot make the image directory {}: {e}; give a writable --dir", job.dir.display()));
        std::process::exit(e.raw_os_error().map_or(ErrorKind::Failed.code(), |c| ErrorKind::of_errno(c).code()));
    }
    // Taken with sigtimedwait from here on; a child started below gets an empty mask.
    sys::block_signals(&job.signals);
    let words: Vec<String> = m.get_many::<String>("command").expect("required").cloned().collect();
    let period = m.get_one::<u64>("period").copied().filter(|&p| p > 0).map(Duration::from_secs);
    clean_partial(&job);
    warn_yama(&job);
    if m.get_flag("fresh") {
        for (_, p) in images(&job) {
            let _ = std::fs::remove_file(p);
        }
    }
    let (child, last) = match images(&job).first().map(|i| i.0) {
        Some(_) => restart(&job, !m.get_flag("no-restore-pid")),
        None => {
            warn_truncated_output(&job);
            (start(&job, &words), 0)
        }
    };
    supervise(&job, child, last, period)
}

/// SLURM truncates a job's output file when it starts it again unless it appends
/// (`sbatch --open-mode=append`), and a process cannot go on with a file that was truncated
/// under it: a restart would be refused. Says so at the start, when there is time to fix it.
fn warn_truncated_output(job: &Job) {
    let mut said = Vec::new();
    for (fd, name) in [(1, "output"), (2, "error")] {
        let regular = std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok_and(|m| m.is_file());
        let flags = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("flags:").and_then(|v| i64::from_str_radix(v.trim(), 8).ok())))
            .unwrap_or(0);
        if regular && flags & libc::O_APPEND as i64 == 0 {
            let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_default();
            if said.contains(&path) {
                continue;
            }
            job.fail(format!(
                "standard {name} is {path}, not opened to append: SLURM truncates it when the job is requeued, and a restart would then be refused; submit with sbatch --open-mode=append"
            ));
            said.push(path);
        }
    }
}

/// A checkpoint is taken by a worker that is the command's sibling, not its ancestor: Yama's
/// ptrace_scope 1 refuses that unless the user has CAP_SYS_PTRACE, and 2 or 3 always.
fn warn_yama(job: &Job) {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok().and_then(|s| s.trim().parse::<u32>().ok()).unwrap_or(0);
    let cap_ptrace = crest_proc::read(std::process::id() as i32, "status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").and_then(|v| u64::from_str_radix(v.trim(), 16).ok())))
        .is_some_and(|c| c & (1 << CAP_SYS_PTRACE) != 0);
    if scope >= 2 || (scope == 1 && !cap_ptrace) {
        job.fail(format!(
            "kernel.yama.ptrace_scope is {scope} on this node: checkpoints will be refused, and only an image taken elsewhere can be restarted here; see the administrator's guide (ptrace_scope 0)"
        ));
    }
}

/// Removes what a checkpoint that never finished left in the job's directory.
fn clean_partial(job: &Job) {
    for e in std::fs::read_dir(&job.dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("image.") && name.ends_with(".part") || name.starts_with(".image.") && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The job's images, newest first.
fn images(job: &Job) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> =
        std::fs::read_dir(&job.dir).into_iter().flatten().flatten().filter_map(|e| Some((e.file_name().to_str()?.strip_prefix("image.")?.parse::<u64>().ok()?, e.path()))).collect();
    v.sort_by_key(|i| std::cmp::Reverse(i.0));
    v
}

/// Starts COMMAND afresh, as a forked child that unblocks every signal and executes it (std's
/// spawn would hand it cr_slurm's blocked signals); exits 127 when it cannot be run.
fn start(job: &Job, words: &[String]) -> i32 {
    use std::os::unix::process::CommandExt;
    match sys::fork() {
        Ok(Forked::Child) => {
            sys::unblock_signals(&job.signals);
            let e = Command::new(&words[0]).args(&words[1..]).exec();
            eline!("cr_slurm: job {}: cannot run {}: {e}", job.key, words[0]);
            std::process::exit(127)
        }
        Ok(Forked::Parent(pid)) => {
            job.say(format!("started {} (PID {pid}); images go to {}", words.join(" "), job.dir.display()));
            pid
        }
        Err(e) => {
            job.fail(format!("cannot start {}: {e}", words[0]));
            std::process::exit(127)
        }
    }
}

/// Restarts COMMAND from the newest image that is valid; returns the restored eldest's PID and
/// the image's number. Exits with the restart's code when no image restarts.
fn restart(job: &Job, try_pids: bool) -> (i32, u64) {
    let mut first_failure = None;
    let restarts = std::env::var("SLURM_RESTART_COUNT").ok().map(|c| format!(" (SLURM restart {c})")).unwrap_or_default();
    for (n, path) in images(job) {
        let taken = std::fs::metadata(&path).and_then(|md| md.modified()).ok().and_then(|t| t.elapsed().ok()).map(|a| format!(", taken {}s ago", a.as_secs())).unwrap_or_default();
        // Said once every process is restored and before any of them runs again, so that the
        // job's output shows it before anything the restored command prints.
        let announce = |note: &'static str| {
            let line = format!("cr_slurm: job {}: restarted from checkpoint {n} ({}{taken}){restarts}{note}", job.key, path.display());
            let quiet = job.quiet;
            crest_restore::Barrier(std::sync::Arc::new(move || {
                if !quiet {
                    eline!("{line}");
                }
                Ok(())
            }))
        };
        let mut req = crest_restore::restart::Request::new(crest_restore::Source::Path(path.clone()));
        req.restore_pid = try_pids;
        req.barrier = Some(announce(""));
        let mut r = crest_restore::restart(&req);
        if try_pids {
            if let Err(e) = &r {
                if matches!(e.kind(), ErrorKind::PidInUse | ErrorKind::NotPermitted) {
                    req.restore_pid = false;
                    req.barrier = Some(announce(", with new PIDs (the saved ones are taken or need privileges)"));
                    r = crest_restore::restart(&req);
                }
            }
        }
        match r {
            Ok(done) => {
                job.say(format!("the restored command runs as PID {}", done.pid));
                return (done.pid, n);
            }
            Err(e) => {
                let kind = e.kind();
                job.fail(format!("cannot restart from {}: {e}", path.display()));
                first_failure.get_or_insert(kind.code());
                // Only an image that is not whole or not valid gives way to an older one.
                if kind != ErrorKind::Invalid {
                    break;
                }
            }
        }
    }
    job.fail(format!("no image of {} restarts; nothing was started. Fix the cause, or run with --fresh to start the command over (its progress is then lost)", job.dir.display()));
    std::process::exit(first_failure.unwrap_or(ErrorKind::Failed.code()))
}

/// Why a checkpoint is taken.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    Period,
    Warning,
    Ending(i32),
}

/// Waits for COMMAND, checkpointing it on the signals and the period; never returns.
fn supervise(job: &Job, child: i32, mut last: u64, period: Option<Duration>) -> ! {
    let mut next = period.map(|p| Instant::now() + p);
    let mut ending: Option<i32> = None;
    loop {
        let wait = next.map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(Instant::now()));
        let got = sys::wait_signal_timeout(&job.signals, wait);
        let why = match got {
            None if next.is_some_and(|t| Instant::now() >= t) => Why::Period,
            None => continue,
            Some((libc::SIGCHLD, _, _)) => {
                if let Ok(Some(end)) = sys::try_wait_child(child) {
                    ended(job, end, ending)
                }
                continue;
            }
            Some((sig, _, _)) if sig == job.warning => Why::Warning,
            Some((sig, _, _)) if ENDING.contains(&sig) => {
                ending.get_or_insert(sig);
                if ignores(child, sig) {
                    Why::Ending(sig)
                } else {
                    job.say(format!("{}: the job is being ended, and the command gets it too; it cannot be checkpointed now: {}", signal_name(sig), fallback(job)));
                    // Passed on, for a signal sent to cr_slurm alone (scancel --batch).
                    let _ = sys::kill(child, sig);
                    // No more periodic images: one taken while the command ends (in its own
                    // SIGTERM handler, say) would restart it into its ending.
                    next = None;
                    continue;
                }
            }
            Some((sig, _, _)) => {
                let _ = sys::kill(child, sig);
                continue;
            }
        };
        let after = if why == Why::Period { After::Run } else { After::Kill };
        // After the newest image there is, even one that did not restart.
        let n = images(job).first().map_or(last, |i| i.0.max(last)) + 1;
        match checkpoint(job, child, n, after) {
            Ok(n) => {
                last = n;
                if why != Why::Period {
                    // COMMAND was killed with the image whole.
                    let _ = sys::wait_child(child);
                    requeued(job, n, why)
                }
            }
            Err(msg) => {
                job.fail(msg);
                if why == Why::Warning {
                    job.fail("the command runs on; the job is not requeued (it ends as it would have without cr_slurm)");
                }
            }
        }
        if let (Some(p), Why::Period) = (period, why) {
            next = Some(Instant::now() + p).filter(|_| ending.is_none());
        }
    }
}

/// COMMAND ended by itself: cr_slurm ends as it did.
fn ended(job: &Job, end: ChildEnd, ending: Option<i32>) -> ! {
    if images(job).is_empty() {
        let _ = std::fs::remove_dir(&job.dir);
    }
    match (end, ending) {
        _ if images(job).is_empty() => {}
        (_, Some(sig)) => job.say(format!("the command ended after {}; the job's images stay in {}", signal_name(sig), job.dir.display())),
        (ChildEnd::Exited(0), None) => {
            let _ = std::fs::remove_dir_all(&job.dir);
            job.say("the command finished (status 0); its images were removed")
        }
        (ChildEnd::Exited(c), None) => job.say(format!("the command exited with status {c}; its images stay in {} (remove them, or a rerun of this job restarts from them)", job.dir.display())),
        (ChildEnd::Signaled(s), None) => job.say(format!("the command was killed by {}; its images stay in {}", signal_name(s), job.dir.display())),
    }
    match end {
        ChildEnd::Exited(c) => std::process::exit(c),
        ChildEnd::Signaled(s) => sys::die_by_signal(s),
    }
}

/// The image is whole and COMMAND gone: requeue the job (after the warning) and exit 85.
fn requeued(job: &Job, n: u64, why: Why) -> ! {
    let cause = match why {
        Why::Ending(s) => signal_name(s),
        _ => format!("the warning signal {}", signal_name(job.warning)),
    };
    if why == Why::Warning && job.requeue {
        match Command::new("scontrol").args(["requeue", &job.key]).output() {
            Ok(o) if o.status.success() => job.say(format!("checkpoint {n} taken on {cause}; the job was requeued and restarts from it")),
            Ok(o) => job.fail(format!(
                "checkpoint {n} taken on {cause}, but scontrol requeue {} failed: {}; resubmit the job with --job-id {} to restart from it",
                job.key,
                String::from_utf8_lossy(&o.stderr).trim(),
                job.key
            )),
            Err(e) => job.fail(format!("checkpoint {n} taken on {cause}, but scontrol cannot be run ({e}); resubmit the job with --job-id {} to restart from it", job.key)),
        }
    } else {
        job.say(format!("checkpoint {n} taken on {cause}; the command was ended; a requeued job restarts from it"));
    }
    std::process::exit(libc::ERESTART)
}

/// A process of the tree of `pid` that is SLURM's `srun`: a job step's tasks run under
/// slurmstepd, not below it, so a checkpoint of the tree would hold srun and not them.
fn job_step_launcher(pid: i32) -> Option<i32> {
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if crest_proc::read(p, "comm").is_ok_and(|c| c.trim_end() == "srun") {
            return Some(p);
        }
        for t in std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(kids.split_whitespace().filter_map(|k| k.parse::<i32>().ok()));
        }
    }
    None
}

/// Whether every process of the tree of `pid` ignores `sig`.
fn ignores(pid: i32, sig: i32) -> bool {
    let mut todo = vec![pid];
    let mut seen = 0;
    while let Some(p) = todo.pop() {
        seen += 1;
        let Ok(status) = crest_proc::read(p, "status") else { return false };
        let ign = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).unwrap_or(0);
        if ign & (1 << (sig - 1)) == 0 {
            return false;
        }
        for t in std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(kids.split_whitespace().filter_map(|k| k.parse::<i32>().ok()));
        }
    }
    seen > 0
}

/// Checkpoints the tree of `child` as image `n` in a forked worker; returns `n` once the image
/// has its name, or why not (the message says what became of COMMAND).
fn checkpoint(job: &Job, child: i32, n: u64, after: After) -> Result<u64, String> {
    let part = job.dir.join(format!("image.{n}.part"));
    let started = Instant::now();
    if let Some(srun) = job_step_launcher(child) {
        return Err(format!(
            "checkpoint {n} refused: PID {srun} (srun) runs a job step, whose tasks run under SLURM's slurmstepd, outside the command's tree, and cannot be saved with it; \
             the command runs on; {}. Run the tasks as the command's descendants instead (mpiexec.mpich -launcher fork, Open MPI's mpirun on one node)",
            fallback(job)
        ));
    }
    // Which ending signals the command ignores, while it is there to be asked.
    let ignored: Vec<i32> = ENDING.into_iter().filter(|&s| ignores(child, s)).collect();
    let worker = match sys::fork() {
        Ok(Forked::Child) => std::process::exit(worker(job, child, &part, after)),
        Ok(Forked::Parent(w)) => w,
        Err(e) => return Err(format!("checkpoint {n}: cannot start the checkpointing process: {e}; the command runs on")),
    };
    // Signals that come meanwhile: an ending one makes the image suspect; the warning is
    // honoured afterwards; others are passed on once the command runs again.
    let mut held = Vec::new();
    let end = loop {
        match sys::wait_signal_timeout(&job.signals, Duration::from_secs(1)) {
            Some((libc::SIGCHLD, _, _)) | None => match sys::try_wait_child(worker) {
                Ok(Some(end)) => break end,
                Ok(None) => {}
                Err(e) => break ChildEnd::Exited(e.raw_os_error().unwrap_or(libc::ECHILD)),
            },
            Some((sig, _, _)) => held.push(sig),
        }
    };
    // A SIGCHLD of COMMAND taken above must not be lost.
    for sig in held.iter().copied().chain([libc::SIGCHLD]) {
        let _ = sys::kill(std::process::id() as i32, sig);
    }
    let fail = |msg: String| {
        let _ = std::fs::remove_file(&part);
        let state = if is_alive(child) { "the command runs on" } else { "the command has ended" };
        Err(format!("checkpoint {n} failed: {msg}; {state}; {}", fallback(job)))
    };
    match end {
        ChildEnd::Exited(0) => {}
        ChildEnd::Exited(code) => return fail(format!("error {code}, {}, said above", errno_name(code))),
        ChildEnd::Signaled(s) => return fail(format!("the checkpointing process was killed by {}", signal_name(s))),
    }
    if let Some(sig) = held.iter().copied().find(|s| ENDING.contains(s) && !ignored.contains(s)) {
        let _ = std::fs::remove_file(&part);
        return Err(format!("checkpoint {n} was taken while {} came, which the command gets too: the image may hold it, so it was removed; {}", signal_name(sig), fallback(job)));
    }
    if let Err(e) = std::fs::rename(&part, job.image(n)) {
        return fail(format!("naming it {}: {e}", job.image(n).display()));
    }
    if let Ok(d) = std::fs::File::open(&job.dir) {
        let _ = d.sync_all();
    }
    let size = std::fs::metadata(job.image(n)).map(|m| m.len()).unwrap_or(0);
    if !job.quiet {
        eline!("cr_slurm: job {}: checkpoint {n} taken: {} ({}) in {:.2}s", job.key, job.image(n).display(), crest_cli::human_bytes(size), started.elapsed().as_secs_f64());
    }
    for (old, p) in images(job).into_iter().skip(job.keep as usize) {
        if old < n {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(n)
}

/// What a requeued job would restart from.
fn fallback(job: &Job) -> String {
    match images(job).first() {
        Some((k, _)) => format!("a requeued job restarts from checkpoint {k}"),
        None => "there is no image yet: a requeued job starts the command over".to_string(),
    }
}

/// The exit-code table's name of `code`, or "see the table".
fn errno_name(code: i32) -> &'static str {
    exits::TABLE.iter().find(|e| e.code == code && !e.name.is_empty()).map_or("see the exit codes", |e| e.name)
}

/// Whether `pid` runs (exists and is not a zombie).
fn is_alive(pid: i32) -> bool {
    crest_proc::read(pid, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok()).is_some_and(|st| st.state != 'Z' && st.state != 'X')
}

/// The worker: checkpoints the tree of `child` into `part`. Returns its exit status.
fn worker(job: &Job, child: i32, part: &Path, after: After) -> i32 {
    let cancel = Cancel::new();
    // cr_slurm killed: stop at the next safe point and let the command go as it was.
    if sys::set_parent_death_signal(WORKER_CANCEL).is_err() {
        cancel.cancel_by_signal(WORKER_CANCEL);
    }
    let by_signal = cancel.clone();
    std::thread::spawn(move || by_signal.cancel_by_signal(sys::wait_signal(&[WORKER_CANCEL])));
    let mut req = Request::new(child);
    req.scope = Scope::Tree;
    req.destination = Destination::Path { path: part.to_path_buf(), policy: Policy::Atomic };
    req.after = after;
    req.compress = job.compress;
    req.drop_unsupported = job.drop_unsupported;
    req.save.shared = job.save_shared;
    req.time_limit = job.time_limit;
    req.cancel = Some(cancel);
    match crest_dump::checkpoint(&req) {
        Ok(_) => 0,
        Err(e) => {
            job.fail(format!("checkpoint of PID {child}: {e}"));
            e.kind().code()
        }
    }
}
