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
//!
//! With `--stream` (see [`Streamed`]) the image is written into a spool file first, then sent
//! in its stream form, metadata first, for a restart that runs the processes before the pages
//! have all arrived.
//!
//! With `--interval SECONDS` the parent does that again and again (see [`periodic`]): each
//! round's worker writes an image incremental to the one before, and a link under the
//! destination's name points at the newest whole image.
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
    if let Some(&secs) = m.get_one::<u64>("interval") {
        periodic(&m, id, &say, secs);
    }
    match sys::fork() {
        Ok(Forked::Child) => std::process::exit(worker(&m, id, &say, me, None)),
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

/// One checkpoint of `--interval`: the image it writes, and the one it is incremental to.
struct Round {
    file: PathBuf,
    parent: Option<PathBuf>,
}

/// Images in one chain at most with `--interval`: the next image after that many is a full one,
/// which starts a new chain (a restart reads every image of its chain).
const MAX_CHAIN: usize = 10;
/// Chains kept by `--interval` without `--keep`.
const KEEP_CHAINS: usize = 2;

/// `--interval SECS`: checkpoints `id` every SECS seconds until it ends or this command is
/// stopped (SIGINT, SIGTERM, SIGHUP, SIGQUIT), then exits 0; a checkpoint that fails while the
/// process lives ends it with that checkpoint's status.
///
/// The images are `DEST.1`, `DEST.2`, ... (numbered on from the highest already there), each
/// written by a worker as a single checkpoint is (under a temporary name until whole), each
/// incremental to the one before and leaving the tracking armed for the next; after
/// [`MAX_CHAIN`] images of one chain, or when the tracking was lost, the image is a full one and
/// starts a new chain. Once an image is whole, `DEST` is made a symbolic link to it (a new
/// link renamed over the old: `DEST` always names a whole image, whose whole chain is there),
/// and only then are the chains older than the newest `--keep` removed. Killed at any moment,
/// even by SIGKILL, this leaves `DEST` naming the newest whole image, restartable.
fn periodic(m: &clap::ArgMatches, id: i32, say: &Say, secs: u64) -> ! {
    let fail = |code: i32, msg: String| -> ! {
        say.err(format!("Checkpoint failed: {msg}"));
        std::process::exit(code)
    };
    let base = match destination(m, id) {
        Ok(Destination::Path { path, .. }) => path,
        Ok(_) => fail(crest_cli::exits::USAGE, "--interval writes numbered image files beside the destination: give it as a file (-f) or directory (-d), not a descriptor".into()),
        Err((code, msg)) => fail(code, msg),
    };
    if chosen_signal(m) != 0 {
        fail(crest_cli::exits::USAGE, "--interval checkpoints a process that runs on: it takes no --kill, --term, --stop or signal option".into());
    }
    if m.get_one::<String>("incremental").is_some() {
        fail(crest_cli::exits::USAGE, "--interval chooses each image's parent itself: it takes no --incremental".into());
    }
    let keep = m.get_one::<u32>("keep").map_or(KEEP_CHAINS, |&k| k as usize);
    let verbose = m.get_flag("verbose") && !say.quiet;
    let dir = match base.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = base.file_name().map(|n| n.to_string_lossy().into_owned()) else { fail(crest_cli::exits::USAGE, format!("{} names no file", base.display())) };
    // The numbered images already there, and the chain an earlier run's link names (pruned in
    // its turn, once this run's first chain is whole).
    let numbered = |p: &Path| -> Option<u64> { p.file_name()?.to_str()?.strip_prefix(&format!("{name}."))?.parse().ok() };
    let mut next = std::fs::read_dir(&dir).into_iter().flatten().flatten().filter_map(|e| numbered(&e.path())).max().unwrap_or(0) + 1;
    let mut chains: Vec<Vec<PathBuf>> = Vec::new();
    if let Ok(c) = crest_image::ImageFile::open(&base).and_then(|i| crest_image::chain::Chain::open(i, &base.display().to_string())) {
        let ours: Vec<PathBuf> = c.paths.iter().rev().map(PathBuf::from).filter(|p| numbered(p).is_some() && p.parent().is_some_and(|d| same_dir(d, &dir))).collect();
        if !ours.is_empty() {
            chains.push(ours);
        }
    }
    let started = start_time(id).unwrap_or_else(|| fail(libc::ESRCH, format!("no process {id}")));
    let alive = || start_time(id) == Some(started);
    // Stopping signals (blocked, taken here: this process stays single-threaded, to fork its
    // workers): passed on to the worker of the moment, and the end of the loop.
    let stopped = std::cell::Cell::new(false);
    let take_signal = |w: i32, within: Duration| {
        if let Some((sig, _, _)) = sys::wait_signal_timeout(&CANCEL_SIGNALS, within) {
            stopped.set(true);
            if w > 0 {
                let _ = sys::kill(w, sig);
            }
        }
    };
    let me = std::process::id();
    let end = |why: String| -> ! {
        if verbose {
            eprintln!("cr_checkpoint: {why}; {} names the newest image", base.display());
        }
        std::process::exit(0)
    };
    loop {
        let began = std::time::Instant::now();
        take_signal(0, Duration::ZERO);
        if stopped.get() {
            end("stopped".into());
        }
        if !alive() {
            end(format!("process {id} has ended"));
        }
        let file = dir.join(format!("{name}.{next}"));
        next += 1;
        let parent = chains.last().filter(|c| c.len() < MAX_CHAIN).and_then(|c| c.last().cloned());
        let round = Round { file: file.clone(), parent };
        let code = match sys::fork() {
            Ok(Forked::Child) => std::process::exit(worker(m, id, say, me, Some(&round))),
            Ok(Forked::Parent(w)) => loop {
                match sys::try_wait_child(w) {
                    Ok(Some(ChildEnd::Exited(code))) => break code,
                    Ok(Some(_)) | Err(_) => break 1,
                    Ok(None) => take_signal(w, Duration::from_millis(20)),
                }
            },
            Err(e) => fail(e.raw_os_error().unwrap_or(libc::EAGAIN) & 0xff, format!("cannot start the checkpointing process: {e}")),
        };
        if stopped.get() {
            end("stopped".into());
        }
        if code != 0 {
            if !alive() {
                end(format!("process {id} has ended"));
            }
            std::process::exit(code);
        }
        let image = crest_image::ImageFile::open(&file).unwrap_or_else(|e| fail(crest_cli::image_error_code(&e), format!("{}: {e}", file.display())));
        if image.image.parent.is_none() {
            chains.push(Vec::new());
        }
        if let Some(c) = chains.last_mut() {
            c.push(file.clone());
        }
        if let Err(e) = point(&base, &file) {
            fail(e.raw_os_error().unwrap_or(libc::EIO), format!("making {} name {}: {e}", base.display(), file.display()));
        }
        if verbose {
            let len = chains.last().map_or(0, Vec::len);
            eprintln!("cr_checkpoint: {} is whole ({}, image {len} of its chain); {} names it", file.display(), crest_cli::human_bytes(image.len), base.display());
        }
        // Only now: the newest chain is whole and named.
        while chains.len() > keep {
            for old in chains.remove(0) {
                let _ = std::fs::remove_file(old);
            }
        }
        let wait = Duration::from_secs(secs).saturating_sub(began.elapsed());
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until && !stopped.get() && alive() {
            take_signal(0, until.saturating_duration_since(std::time::Instant::now()).min(Duration::from_millis(100)));
        }
    }
}

/// Whether `a` and `b` are the same directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    let c = |p: &Path| std::fs::canonicalize(if p.as_os_str().is_empty() { Path::new(".") } else { p }).ok();
    c(a).is_some() && c(a) == c(b)
}

/// Makes `link` a symbolic link to `target` (by its name: they are in one directory), replacing
/// what was there in one step, and syncs the directory.
fn point(link: &Path, target: &Path) -> std::io::Result<()> {
    let dir = link.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = target.file_name().ok_or(std::io::ErrorKind::InvalidInput)?;
    let tmp = dir.join(format!(".{}.link-{}", link.file_name().ok_or(std::io::ErrorKind::InvalidInput)?.to_string_lossy(), std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp)?;
    std::fs::rename(&tmp, link)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The start time of `pid`, which tells it from a later process with the same PID.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // A zombie has ended.
    if rest.split_whitespace().next() == Some("Z") {
        return None;
    }
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The worker: sets up what cancels the checkpoint, then does it. Returns the exit status.
fn worker(m: &clap::ArgMatches, id: i32, say: &Say, parent: u32, round: Option<&Round>) -> i32 {
    let cancel = Cancel::new();
    // cr_checkpoint killed: the kernel sends SIGTERM, taken below like any cancelling signal
    // (its disposition made the default, as an ignored signal would be dropped, not waited for).
    let _ = sys::set_sigaction_raw(libc::SIGTERM as u32, libc::SIG_DFL as u64, 0, 0, 0);
    if sys::set_parent_death_signal(libc::SIGTERM).is_err() || std::os::unix::process::parent_id() != parent {
        cancel.cancel_by_signal(libc::SIGTERM);
    }
    let by_signal = cancel.clone();
    std::thread::spawn(move || by_signal.cancel_by_signal(sys::wait_signal(&CANCEL_SIGNALS)));
    match run(m, id, say, cancel, round) {
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

fn run(m: &clap::ArgMatches, pid: i32, say: &Say, cancel: Cancel, round: Option<&Round>) -> Result<(), (i32, String)> {
    let scope = match last_given(m, &["tree", "pid", "pgid", "sid"]) {
        Some("pid") => crest_dump::Scope::Pid,
        Some("pgid") => crest_dump::Scope::Pgid,
        Some("sid") => crest_dump::Scope::Sid,
        _ => crest_dump::Scope::Tree,
    };
    let streamed = match (m.get_flag("stream"), round) {
        (true, Some(_)) => return Err((crest_cli::exits::USAGE, "--interval writes numbered image files: it takes no --stream".into())),
        (true, None) if m.contains_id("incremental") || m.get_flag("track") => {
            return Err((crest_cli::exits::USAGE, "--stream sends a whole image for a restart: it takes no --incremental or --track".into()));
        }
        (true, None) => Some(Streamed::open(m, pid)?),
        (false, _) => None,
    };
    let destination = match (round, &streamed) {
        (Some(r), _) => Destination::Path { path: r.file.clone(), policy: Policy::Atomic },
        (None, Some(s)) => Destination::File(s.spool.try_clone().map_err(|e| (ErrorKind::Failed.code(), format!("the spool file {}: {e}", s.spool_path.display())))?),
        (None, None) => destination(m, pid)?,
    };
    let sync = last_given(m, &["sync", "nosync"]) != Some("nosync") && streamed.is_none();
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
            // Every part freezes on one word, however long each took to start (a process that
            // is not there fails at once, with its own exit code).
            let missing = matches!(scope, crest_dump::Scope::Tree | crest_dump::Scope::Pid) && !std::path::Path::new(&format!("/proc/{pid}")).exists();
            if coordinated && !missing {
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
    let incremental = match round {
        Some(r) => r.parent.clone(),
        None => m.get_one::<String>("incremental").map(PathBuf::from),
    };
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
        network_lock: m.get_one::<String>("network-lock").is_none_or(|h| h != "skip"),
        deleted_max: m.get_one::<u64>("deleted-max").copied().unwrap_or(crest_kinds::fd::DELETED_MAX),
        external_unix: m.get_flag("ext-unix-sk"),
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
        track: m.get_flag("track") || round.is_some(),
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
    if let Some(s) = streamed {
        s.send(pid, say)?;
    }
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
    if !say.quiet {
        for c in &stats.unlocked {
            eprintln!("cr_checkpoint: warning: {c}: saved without a network lock (--network-lock=skip): its peer may see a reset if it sends before the restart");
        }
        for c in &stats.cautions {
            eprintln!("cr_checkpoint: warning: {c}");
        }
    }
    if let Some(why) = &done.full_because {
        if !say.quiet {
            eprintln!("cr_checkpoint: {} is a full image, not an incremental one: {why}", done.shown);
        }
    }
    if std::env::var_os("CREST_TIMING").is_some() {
        eprintln!(
            "crest-timing: checkpoint pid={pid} page_bytes={} precopy_bytes={} remote_syscalls={} remote_stops={} frozen_ms={:.3} total_ms={:.3}{}",
            stats.page_bytes,
            done.precopy_bytes,
            stats.remote_syscalls,
            stats.remote_stops,
            stats.frozen_secs * 1e3,
            done.elapsed.as_secs_f64() * 1e3,
            stats.steps.iter().map(|(n, d)| format!(" {n}_ms={:.3}", d.as_secs_f64() * 1e3)).collect::<String>()
        );
    }
    if verbose {
        for w in &stats.saved_whole {
            eprintln!("cr_checkpoint: incremental image: {w}");
        }
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

/// `--stream`: where the stream goes, and the spool file the image is written into first (a
/// stream carries the metadata before the pages, and the checkpoint knows the metadata only
/// once every page is read). The spool is removed once the stream is sent whole, and kept,
/// with a message naming it, when it could not be: the processes may be gone by then
/// (`--kill`), and their image is not lost.
struct Streamed {
    out: std::fs::File,
    shown: String,
    spool: std::fs::File,
    spool_path: PathBuf,
    /// The spool is kept (the stream could not be sent).
    kept: bool,
}

impl Drop for Streamed {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.spool_path);
        }
    }
}

impl Streamed {
    /// Opens the stream's destination (`-f -`: standard output; `--fd`; a socket by name is
    /// connected to; any other name is opened for writing, created, and a regular file emptied
    /// once the image is whole) and the spool,
    /// before anything is frozen.
    fn open(m: &clap::ArgMatches, pid: i32) -> Result<Streamed, (i32, String)> {
        let dup = |fd: i32, shown: String| -> Result<(std::fs::File, String), (i32, String)> {
            let f = sys::dup_above(fd, 3).map_err(|e| (ErrorKind::BadDescriptor.code(), format!("{shown}: {e}")))?;
            Ok((std::fs::File::from(f), shown))
        };
        let (out, shown) = match destination(m, pid)? {
            Destination::Fd(fd) => dup(fd, format!("descriptor {fd}"))?,
            Destination::Path { path, .. } if path.as_os_str() == "-" => dup(1, "standard output".into())?,
            Destination::Path { path, .. } => {
                let shown = path.display().to_string();
                let is_socket = std::fs::metadata(&path).is_ok_and(|md| std::os::unix::fs::FileTypeExt::is_socket(&md.file_type()));
                let f = if is_socket {
                    std::os::unix::net::UnixStream::connect(&path).map(|s| std::fs::File::from(std::os::fd::OwnedFd::from(s)))
                } else {
                    // A regular file is emptied only once the image is there to be sent.
                    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(&path)
                };
                (f.map_err(|e| (e.raw_os_error().unwrap_or(libc::EIO), format!("{shown}: {e}")))?, shown)
            }
            _ => return Err((crest_cli::exits::USAGE, "--stream writes into a file, a FIFO, a socket or a descriptor".into())),
        };
        let dir = std::env::temp_dir();
        let spool_path = dir.join(format!("crest-stream-{pid}-{}.img", std::process::id()));
        let spool = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&spool_path)
            .map_err(|e| (e.raw_os_error().unwrap_or(libc::EIO), format!("creating the spool file {} for --stream (set TMPDIR elsewhere?): {e}", spool_path.display())))?;
        Ok(Streamed { out, shown, spool, spool_path, kept: false })
    }

    /// Sends the image written into the spool as a stream.
    fn send(mut self, pid: i32, say: &Say) -> Result<(), (i32, String)> {
        let r = self.try_send(pid, say);
        self.kept = r.is_err();
        r
    }

    fn try_send(&self, pid: i32, say: &Say) -> Result<(), (i32, String)> {
        let t = std::time::Instant::now();
        let keep =
            |why: String| -> (i32, String) { (ErrorKind::Failed.code(), format!("{why}; the image of PID {pid} is kept whole in {} (cr_restart reads it as it is)", self.spool_path.display())) };
        let img = crest_image::ImageFile::from_file(self.spool.try_clone().map_err(|e| keep(format!("the spool file: {e}")))?).map_err(|e| keep(format!("reading back the image written: {e}")))?;
        let first = crest_kinds::lazy::before_running(&img.image);
        if self.out.metadata().is_ok_and(|md| md.is_file()) {
            self.out.set_len(0).map_err(|e| keep(format!("emptying {}: {e}", self.shown)))?;
        }
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &self.out);
        let sent = crest_image::stream::send(&img, &first, &mut out).map_err(|e| keep(format!("sending the image stream to {}: {e}", self.shown)))?;
        drop(out);
        if std::env::var_os("CREST_TIMING").is_some() {
            eprintln!("crest-timing: stream pid={pid} runs={} page_bytes={} stream_bytes={} send_ms={:.3}", sent.runs, sent.page_bytes, sent.bytes, t.elapsed().as_secs_f64() * 1e3);
        }
        let _ = say;
        Ok(())
    }
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
