//! `cr_checkpoint`: BLCR's checkpoint command. Options, defaults and exit codes follow BLCR
//! 0.8.6 (see the README); the image is written to an unnamed temporary file in the
//! destination's directory (`O_TMPFILE`, or `.NAME.tmp` where the file system has none), mode
//! 0400, synced and given its name only when whole.
//!
//! As in BLCR the command forks: the child (the worker) freezes and dumps the process, the
//! parent waits and exits with the worker's status. The worker is the tracer, so killing
//! `cr_checkpoint`, even with SIGKILL, never kills a tracer that holds the target's registers:
//! the worker gets SIGTERM as its parent-death signal, stops at the next safe point and lets
//! the target go as it was. SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to `cr_checkpoint` and
//! the `--time` limit stop it the same way.
use std::path::{Path, PathBuf};
use std::time::Duration;

use crest_cli::{chosen_signal, coordinate, last_given, signal_name, Say};
use crest_dump::checkpoint::{Event, Target};
use crest_dump::{After, Cancel, Destination, Policy, Request};
use crest_kinds::exit::ErrorKind;
use crest_ptrace::libcr as proto;
use crest_ptrace::sys::{self, ChildEnd, Forked};

/// Signals that stop a checkpoint in progress (and are passed on to the worker).
const CANCEL_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

fn main() {
    let m = crest_cli::parse_args(crest_cli::commands::checkpoint());
    let say = Say { quiet: m.get_flag("quiet") };
    let id = *m.get_one::<i32>("id").expect("required by clap");
    // Blocked before the fork: the worker inherits them blocked and takes them with sigwait.
    sys::block_signals(&CANCEL_SIGNALS);
    let me = std::process::id();
    match sys::fork() {
        Ok(Forked::Child) => std::process::exit(worker(&m, id, &say, me)),
        Ok(Forked::Parent(w)) => wait_for_worker(w, &say),
        Err(e) => {
            say.err(format!("Checkpoint failed: cannot start the checkpointing process: {e}; PID {id} was not touched"));
            std::process::exit(e.raw_os_error().unwrap_or(libc::EAGAIN) & 0xff)
        }
    }
}

/// The parent: passes the cancelling signals on, waits, and exits with the worker's status.
fn wait_for_worker(worker: i32, say: &Say) -> ! {
    std::thread::spawn(move || loop {
        let sig = sys::wait_signal(&CANCEL_SIGNALS);
        let _ = sys::kill(worker, sig);
    });
    let code = match sys::wait_child(worker) {
        Ok(ChildEnd::Exited(code)) => code,
        Ok(ChildEnd::Signaled(sig)) => {
            say.err(format!("Checkpoint failed: the checkpointing process was killed by signal {sig} ({})", signal_name(sig)));
            1
        }
        Err(e) => {
            say.err(format!("Checkpoint failed: waiting for the checkpointing process: {e}"));
            1
        }
    };
    notify_requester(code);
    std::process::exit(code)
}

/// Run by libcr for a process that checkpoints itself: tells its libcr thread the exit status
/// (`CREST_LIBCR_NOTIFY=PID:TID:HANDLE`), which its `cr_poll_checkpoint` returns.
fn notify_requester(code: i32) {
    let Ok(v) = std::env::var(proto::NOTIFY_ENV) else { return };
    let n: Vec<i64> = v.split(':').filter_map(|x| x.parse().ok()).collect();
    if let [pid, tid, handle] = n[..] {
        let _ = proto::send(pid as i32, tid as i32, proto::Msg::Done, handle as u8, code as u16);
    }
}

/// The worker: sets up what cancels the checkpoint, then does it. Returns the exit status.
fn worker(m: &clap::ArgMatches, id: i32, say: &Say, parent: u32) -> i32 {
    let cancel = Cancel::new();
    // cr_checkpoint killed: the kernel sends SIGTERM, taken below like any cancelling signal
    // (its disposition made the default, as an ignored signal would be dropped, not waited for).
    let _ = sys::set_sigaction_raw(libc::SIGTERM as u32, libc::SIG_DFL as u64, 0, 0, 0);
    if sys::set_parent_death_signal(libc::SIGTERM).is_err() || std::os::unix::process::parent_id() != parent {
        cancel.cancel_by_signal(libc::SIGTERM);
    }
    let by_signal = cancel.clone();
    std::thread::spawn(move || by_signal.cancel_by_signal(sys::wait_signal(&CANCEL_SIGNALS)));
    match run(m, id, say, cancel) {
        Ok(()) => 0,
        Err((code, msg)) => {
            say.err(format!("Checkpoint failed: {msg}"));
            code
        }
    }
}

/// The destination the options name.
fn destination(m: &clap::ArgMatches, pid: i32) -> Result<Destination, (i32, String)> {
    let dests: Vec<&str> = ["file", "fd", "cwd", "dir"].into_iter().filter(|d| m.value_source(d) == Some(clap::parser::ValueSource::CommandLine)).collect();
    if dests.len() > 1 {
        return Err((ErrorKind::Invalid.code(), format!("conflicting destinations: --{}", dests.join(" and --"))));
    }
    let path = match dests.first().copied() {
        Some("file") => PathBuf::from(m.get_one::<String>("file").expect("has value")),
        Some("dir") => Path::new(m.get_one::<String>("dir").expect("has value")).join(format!("context.{pid}")),
        Some("fd") => return Ok(Destination::Fd(*m.get_one::<i32>("fd").expect("has value"))),
        _ => PathBuf::from(format!("context.{pid}")),
    };
    let policy = match last_given(m, &["atomic", "backup", "clobber", "noclobber"]) {
        Some("clobber") => Policy::Clobber,
        Some("noclobber") => Policy::NoClobber,
        Some("backup") => Policy::Backup(m.get_one::<String>("backup").map(PathBuf::from)),
        _ => Policy::Atomic,
    };
    Ok(Destination::Path { path, policy })
}

fn run(m: &clap::ArgMatches, pid: i32, say: &Say, cancel: Cancel) -> Result<(), (i32, String)> {
    let scope = match last_given(m, &["tree", "pid", "pgid", "sid"]) {
        Some("pid") => crest_dump::Scope::Pid,
        Some("pgid") => crest_dump::Scope::Pgid,
        Some("sid") => crest_dump::Scope::Sid,
        _ => crest_dump::Scope::Tree,
    };
    let destination = destination(m, pid)?;
    let sync = last_given(m, &["sync", "nosync"]) != Some("nosync");
    let signal = chosen_signal(m);
    let verbose = m.get_flag("verbose") && !say.quiet;
    let progress = std::sync::Arc::new(crest_kinds::progress::Progress::default());
    // One part of a job checkpointed by cr_coord: each step waits for its word.
    let coordinated = m.get_flag("coordinated");
    let called_off = cancel.clone();
    let frozen_at = std::sync::Mutex::new(None);
    let wait_word = |word: &str, step: &str| {
        coordinate::tell(word);
        if let Err(why) = coordinate::wait_go(step) {
            say.err(format!("PID {pid}: {why}; the processes run on as they were"));
            called_off.cancel();
        }
    };
    let plan = |e: Event<'_>| match e {
        Event::Opened { target, shown } => {
            if verbose {
                eprintln!("{}", plan_sentence(pid, scope, target, shown, sync, signal));
            }
            // Every part freezes on one word, however long each took to start.
            if coordinated {
                wait_word("armed", "about to freeze");
            }
        }
        Event::Frozen { .. } if coordinated => {
            *frozen_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::SystemTime::now());
            wait_word("frozen", "frozen")
        }
        Event::Whole { .. } if coordinated => wait_word("whole", "saved"),
        _ => {}
    };
    let incremental = m.get_one::<String>("incremental").map(PathBuf::from);
    if let (Some(parent), Destination::Path { path, .. }) = (&incremental, &destination) {
        let same = |p: &Path| std::fs::canonicalize(p).ok();
        if same(parent).is_some() && same(parent) == same(path) {
            return Err((crest_cli::exits::USAGE, format!("the image {} would replace its own parent: write an incremental image under another name", path.display())));
        }
    }
    let req = Request {
        pid,
        scope,
        destination,
        after: After::from_signal(signal),
        compress: m.get_one::<i32>("compress").copied(),
        save: save_policy(m),
        drop_unsupported: m.get_flag("drop-unsupported"),
        deleted_max: m.get_one::<u64>("deleted-max").copied().unwrap_or(crest_kinds::fd::DELETED_MAX),
        sync,
        time_limit: m.get_one::<u64>("time").copied().filter(|&t| t > 0).map(Duration::from_secs),
        cancel: Some(cancel),
        progress: Some(progress.clone()),
        // A coordinated part stays frozen until every part is saved: no process of the job may
        // run on (and send to another part) before every part's state is read.
        precopy: !coordinated && std::env::var_os("CREST_NO_PRECOPY").is_none(),
        snapshot: !coordinated && std::env::var_os("CREST_NO_SNAPSHOT").is_none(),
        on_event: Some(&plan),
        // Run by libcr for a process that checkpoints itself (cr_request_checkpoint): that
        // process is the requester, and this command (its child) is left out of the scope.
        requester: std::env::var(proto::REQUESTER_ENV).ok().and_then(|p| p.parse().ok()),
        on_behalf: std::env::var_os(proto::REQUESTER_ENV).is_some(),
        track: m.get_flag("track"),
        incremental,
        ptraced: match last_given(m, &["ptraced-error", "ptraced-skip", "ptraced-allow"]) {
            Some("ptraced-skip") => crest_dump::Ptraced::Skip,
            Some("ptraced-allow") => crest_dump::Ptraced::Allow,
            _ => crest_dump::Ptraced::Error,
        },
        ptracer_skip: last_given(m, &["ptracer-error", "ptracer-skip"]) == Some("ptracer-skip"),
    };
    let shown = crest_cli::ProgressDisplay::start(progress, "saving", say.quiet);
    let done = crest_dump::checkpoint(&req);
    drop(shown);
    let done = done.map_err(|e| (e.kind().code(), e.to_string()))?;
    let stats = &done.stats;
    if coordinated {
        // From the start of the freeze to the end of the release, waits for the other parts
        // included, with the wall-clock times cr_coord lines up with the other hosts'.
        let now = std::time::SystemTime::now();
        let freeze = stats.steps.iter().find(|(n, _)| *n == "freeze").map_or(Duration::ZERO, |s| s.1);
        let began = frozen_at.lock().unwrap_or_else(|p| p.into_inner()).map_or(now, |t| t - freeze);
        let ns = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        coordinate::tell(&format!("done frozen_ms={:.3} from_ns={} to_ns={}", now.duration_since(began).unwrap_or_default().as_secs_f64() * 1e3, ns(began), ns(now)));
    }
    if let Some(why) = &done.full_because {
        if !say.quiet {
            eprintln!("cr_checkpoint: {} is a full image, not an incremental one: {why}", done.shown);
        }
    }
    if std::env::var_os("CREST_TIMING").is_some() {
        eprintln!(
            "crest-timing: checkpoint pid={pid} page_bytes={} precopy_bytes={} remote_syscalls={} frozen_ms={:.3} total_ms={:.3}{}",
            stats.page_bytes,
            done.precopy_bytes,
            stats.remote_syscalls,
            stats.frozen_secs * 1e3,
            done.elapsed.as_secs_f64() * 1e3,
            stats.steps.iter().map(|(n, d)| format!(" {n}_ms={:.3}", d.as_secs_f64() * 1e3)).collect::<String>()
        );
    }
    if verbose {
        let saved = done.pids.len();
        eprintln!(
            "Checkpointed {} to {}: {} of memory pages from {} mappings ({} system calls made inside the processes). \
             The processes were frozen for {:.1} ms; the checkpoint took {:.1} ms in all.",
            if saved == 1 { format!("PID {pid}") } else { format!("{saved} processes") },
            done.shown,
            crest_cli::human_bytes(stats.page_bytes),
            stats.vmas,
            stats.remote_syscalls,
            stats.frozen_secs * 1e3,
            done.elapsed.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// What `-v` says before the checkpoint: what is saved, where, how, and what happens after.
fn plan_sentence(pid: i32, scope: crest_dump::Scope, dest: &Target, shown: &str, sync: bool, signal: i32) -> String {
    let what = match scope {
        crest_dump::Scope::Tree => format!("PID {pid} and all its descendants"),
        crest_dump::Scope::Pid => format!("PID {pid} alone (all its threads)"),
        crest_dump::Scope::Pgid => format!("every process of process group {pid}"),
        crest_dump::Scope::Sid => format!("every process of session {pid}"),
    };
    let how = match dest {
        Target::Atomic { backup: Some(Some(b)), .. } => format!("{shown}, under a temporary name until it is whole (an existing {shown} is kept as {})", b.display()),
        Target::Atomic { backup: Some(None), .. } => format!("{shown}, under a temporary name until it is whole (an existing {shown} is kept as {shown}.~N~)"),
        Target::Atomic { .. } => format!("{shown}, under a temporary name until it is whole"),
        Target::Direct { .. } => format!("{shown}, directly"),
        Target::Fd(fd) => format!("descriptor {fd}"),
        Target::Stream { .. } | Target::File | Target::Writer => format!("{shown}, written into as a stream"),
    };
    let synced = if sync && !dest.is_stream() { ", synced to disk" } else { "" };
    let one = matches!(scope, crest_dump::Scope::Pid);
    let after = match (signal, one) {
        (0, true) => "It runs on afterwards.".to_string(),
        (0, false) => "They run on afterwards.".to_string(),
        (libc::SIGKILL, true) => "Then it is killed (SIGKILL).".to_string(),
        (libc::SIGKILL, false) => "Then they are killed (SIGKILL).".to_string(),
        (s, true) => format!("Then it gets {}.", signal_name(s)),
        (s, false) => format!("Then each of them gets {}.", signal_name(s)),
    };
    format!("Checkpointing {what} to {how}{synced}. {after}")
}

/// BLCR's `--save-*` options, applied left to right (`--save-none` resets).
fn save_policy(m: &clap::ArgMatches) -> crest_kinds::memory::SavePolicy {
    let mut given: Vec<(usize, &str)> = ["save-exe", "save-private", "save-shared", "save-all", "save-none"]
        .into_iter()
        .filter(|n| m.value_source(n) == Some(clap::parser::ValueSource::CommandLine))
        .filter_map(|n| Some((m.index_of(n)?, n)))
        .collect();
    given.sort_unstable();
    let mut p = crest_kinds::memory::SavePolicy::default();
    for (_, n) in given {
        match n {
            "save-exe" => p.exe = true,
            "save-private" => p.private = true,
            "save-shared" => p.shared = true,
            "save-all" => p = crest_kinds::memory::SavePolicy { exe: true, private: true, shared: true },
            _ => p = crest_kinds::memory::SavePolicy::default(),
        }
    }
    p
}
