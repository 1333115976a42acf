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
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use crest_cli::{chosen_signal, last_given, signal_name, Say};
use crest_dump::DumpError;
use crest_ptrace::sys::{self, ChildEnd, Forked};

/// Signals that stop a checkpoint in progress (and are passed on to the worker).
const CANCEL_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Why the worker cancelled: 0 not at all, a signal number, or [`TIMED_OUT`].
static CANCEL_REASON: AtomicI32 = AtomicI32::new(0);
const TIMED_OUT: i32 = -1;

/// BLCR's `CR_EPTRACED` (2360) as an exit code: the target is traced by someone else.
const EXIT_PTRACED: i32 = 2360 & 0xff;

/// How the image reaches its destination.
enum Dest {
    /// Temporary file given its name when whole (with an optional backup name). `tmp` is the
    /// temporary name, used where the file system has no `O_TMPFILE`.
    Atomic { path: PathBuf, tmp: PathBuf, backup: Option<Option<String>> },
    /// Straight into the destination.
    Direct { path: PathBuf },
    /// An inherited descriptor.
    Fd(i32),
    /// A FIFO, a socket or a character device named by `--file` (or `--dir`): written into as a
    /// stream, as with `--fd`, never replaced or removed.
    Stream { path: PathBuf, kind: StreamKind },
}

/// What a [`Dest::Stream`] is.
#[derive(Clone, Copy)]
enum StreamKind {
    Fifo,
    Socket,
    CharDevice,
}

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
    match sys::wait_child(worker) {
        Ok(ChildEnd::Exited(code)) => std::process::exit(code),
        Ok(ChildEnd::Signaled(sig)) => {
            say.err(format!("Checkpoint failed: the checkpointing process was killed by signal {sig} ({})", signal_name(sig)));
            std::process::exit(1)
        }
        Err(e) => {
            say.err(format!("Checkpoint failed: waiting for the checkpointing process: {e}"));
            std::process::exit(1)
        }
    }
}

/// The worker: sets up what cancels the checkpoint, then does it. Returns the exit status.
fn worker(m: &clap::ArgMatches, id: i32, say: &Say, parent: u32) -> i32 {
    let cancel = |why: i32| {
        let _ = CANCEL_REASON.compare_exchange(0, why, Ordering::SeqCst, Ordering::SeqCst);
        crest_dump::cancel();
    };
    // cr_checkpoint killed: the kernel sends SIGTERM, taken below like any cancelling signal
    // (its disposition made the default, as an ignored signal would be dropped, not waited for).
    let _ = sys::set_sigaction_raw(libc::SIGTERM as u32, libc::SIG_DFL as u64, 0, 0, 0);
    if sys::set_parent_death_signal(libc::SIGTERM).is_err() || std::os::unix::process::parent_id() != parent {
        cancel(libc::SIGTERM);
    }
    std::thread::spawn(move || cancel(sys::wait_signal(&CANCEL_SIGNALS)));
    let limit = m.get_one::<u64>("time").copied().filter(|&t| t > 0);
    if let Some(secs) = limit {
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            cancel(TIMED_OUT);
        });
    }
    let r = run(m, id, say, limit);
    // Every process is let go (or killed) by now: other checkpoints may take them.
    crest_dump::claim::release_all();
    match r {
        Ok(()) => 0,
        Err((code, msg)) => {
            say.err(format!("Checkpoint failed: {msg}"));
            code
        }
    }
}

fn run(m: &clap::ArgMatches, pid: i32, say: &Say, limit: Option<u64>) -> Result<(), (i32, String)> {
    let einval = |s: String| (libc::EINVAL, s);
    let scope = match last_given(m, &["tree", "pid", "pgid", "sid"]) {
        Some("pid") => crest_dump::Scope::Pid,
        Some("pgid") => crest_dump::Scope::Pgid,
        Some("sid") => crest_dump::Scope::Sid,
        _ => crest_dump::Scope::Tree,
    };
    let dests: Vec<&str> = ["file", "fd", "cwd", "dir"].into_iter().filter(|d| m.value_source(d) == Some(clap::parser::ValueSource::CommandLine)).collect();
    if dests.len() > 1 {
        return Err(einval(format!("conflicting destinations: --{}", dests.join(" and --"))));
    }
    let target: Option<PathBuf> = match dests.first().copied() {
        Some("file") => Some(PathBuf::from(m.get_one::<String>("file").expect("has value"))),
        Some("dir") => Some(Path::new(m.get_one::<String>("dir").expect("has value")).join(format!("context.{pid}"))),
        Some("fd") => None,
        _ => Some(PathBuf::from(format!("context.{pid}"))),
    };
    let mode = last_given(m, &["atomic", "backup", "clobber", "noclobber"]).unwrap_or("atomic");
    // As BLCR: a symbolic link is followed (its target is what gets replaced, in the target's
    // directory); a FIFO, a socket or a character device is written into; a directory or a
    // block device is refused.
    let target = target.map(|p| follow_links(&p));
    let stream = match &target {
        Some(path) => match std::fs::metadata(path) {
            Ok(md) => {
                use std::os::unix::fs::FileTypeExt;
                let ft = md.file_type();
                if ft.is_dir() {
                    return Err((libc::EISDIR, format!("{} is a directory (use --dir)", path.display())));
                } else if ft.is_block_device() {
                    return Err(einval(format!("{} is a block device; an image goes to a regular file, a FIFO, a socket or a character device", path.display())));
                } else if ft.is_fifo() {
                    Some(StreamKind::Fifo)
                } else if ft.is_socket() {
                    Some(StreamKind::Socket)
                } else if ft.is_char_device() {
                    Some(StreamKind::CharDevice)
                } else {
                    None
                }
            }
            Err(_) => None,
        },
        None => None,
    };
    let dest = match (target, m.get_one::<i32>("fd")) {
        (None, Some(&fd)) => Dest::Fd(fd),
        (Some(path), _) if stream.is_some() => Dest::Stream { path, kind: stream.expect("checked") },
        (Some(path), _) => match mode {
            "clobber" | "noclobber" => Dest::Direct { path },
            _ => {
                if path.is_dir() {
                    return Err((libc::EISDIR, format!("{} is a directory (use --dir)", path.display())));
                }
                let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let base = path.file_name().map(|b| b.to_string_lossy().into_owned()).unwrap_or_default();
                let backup = (mode == "backup").then(|| m.get_one::<String>("backup").cloned());
                Dest::Atomic { tmp: dir.join(format!(".{base}.tmp")), path, backup }
            }
        },
        (None, None) => unreachable!("fd destination always has a value"),
    };
    // What cannot be checkpointed at all is refused before the destination is even opened.
    refuse_early(scope, pid)?;
    let sync = last_given(m, &["sync", "nosync"]) != Some("nosync");
    let signal = chosen_signal(m);
    let verbose = m.get_flag("verbose") && !say.quiet;

    // Open the destination before freezing: a bad destination must not stop the target at all.
    // An unnamed temporary file vanishes by itself if the worker dies; a named one is removed
    // on failure (and replaced by the next checkpoint to the same name).
    let mut unnamed = false;
    let (file, shown): (File, String) = match &dest {
        Dest::Fd(fd) => {
            let f = File::from(crest_cli_fd(*fd).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) | None => (libc::EBADF, format!("descriptor {fd} is not open")),
                Some(code) => (code, format!("descriptor {fd}: {e}")),
            })?);
            (f, format!("<fd{fd}>"))
        }
        Dest::Stream { path, kind } => (open_stream(path, *kind).map_err(|e| stream_error(e, path, *kind))?, path.display().to_string()),
        Dest::Atomic { tmp, path, .. } => {
            let f = match open_unnamed(parent_dir(path)).map_err(|e| open_error(e, path))? {
                Some(f) => {
                    unnamed = true;
                    f
                }
                None => open_new(tmp, false, true).map_err(|e| open_error(e, path))?,
            };
            (f, path.display().to_string())
        }
        Dest::Direct { path } => (open_new(path, mode == "noclobber", true).map_err(|e| open_error(e, path))?, path.display().to_string()),
    };
    if verbose {
        eprintln!("{}", plan_sentence(pid, scope, &dest, &shown, sync, signal));
    }
    let cleanup = |dest: &Dest| match dest {
        Dest::Atomic { tmp, .. } if !unnamed => {
            let _ = std::fs::remove_file(tmp);
        }
        Dest::Direct { path } => {
            let _ = std::fs::remove_file(path);
        }
        _ => {}
    };
    let started = Instant::now();
    // Set once the pages were pre-copied: a process missing after that has ended meanwhile.
    let mut precopied = false;
    let result = (|| -> Result<_, DumpError> {
        // When the process is to run on after the checkpoint, it runs on while its pages are
        // saved too: they are pre-copied while it runs, and only those it writes meanwhile are
        // saved again while it is frozen (a process that cannot be tracked so is saved from a
        // copy-on-write snapshot). When it is to die, it must not run on beyond the moment the
        // image describes.
        let run_on = matches!(signal, 0 | libc::SIGSTOP | libc::SIGCONT);
        let snapshot = run_on && std::env::var_os("CREST_NO_SNAPSHOT").is_none();
        let progress = std::sync::Arc::new(crest_kinds::progress::Progress::default());
        let shown = crest_cli::ProgressDisplay::start(progress.clone(), "saving", say.quiet);
        let opts = crest_dump::DumpOptions { snapshot, compress: m.get_one::<i32>("compress").copied(), progress: &progress, save: save_policy(m), drop_unsupported: m.get_flag("drop-unsupported") };
        let pre = if snapshot && std::env::var_os("CREST_NO_PRECOPY").is_none() { tracer_race_retried(pid, || crest_dump::precopy(scope, pid, &file, &opts))? } else { None };
        precopied = pre.is_some();
        let precopy_bytes = pre.as_ref().map_or(0, |p| p.bytes);
        let mut frozen = tracer_race_retried(pid, || crest_dump::freeze_scope(scope, pid))?;
        let (_image, stats) = frozen.dump(&file, &opts, pre)?;
        drop(shown);
        // Pipes and sockets cannot be synced; BLCR syncs what can be.
        if sync && file.metadata().is_ok_and(|m| m.file_type().is_file()) {
            file.sync_all().map_err(crest_image::ImageError::Io)?;
        }
        // Last chance to stop: once the image has its name the checkpoint is complete.
        if crest_dump::cancelled() {
            return Err(DumpError::Cancelled);
        }
        Ok((frozen, stats, precopy_bytes))
    })();
    let (frozen, stats, precopy_bytes) = match result {
        Ok(x) => x,
        Err(DumpError::NoProcess(_)) if precopied => {
            cleanup(&dest);
            return Err((libc::ESRCH, format!("PID {pid} ended during the checkpoint, so there is nothing to save; no image was written")));
        }
        Err(e) => {
            cleanup(&dest);
            return Err(dump_error(pid, e, &shown, matches!(dest, Dest::Fd(_) | Dest::Stream { .. }), limit));
        }
    };
    // The image is whole: put it in place, then apply the after-action.
    if let Dest::Atomic { path, tmp, backup } = &dest {
        let placed = (|| -> std::io::Result<()> {
            if let Some(name) = backup {
                if path.exists() {
                    let b = match name {
                        Some(n) => PathBuf::from(n),
                        None => (1..).map(|n| PathBuf::from(format!("{}.~{n}~", path.display()))).find(|p| !p.exists()).expect("some number is free"),
                    };
                    std::fs::rename(path, b)?;
                }
            }
            if unnamed {
                give_name(&file, path, tmp)?;
            } else {
                std::fs::rename(tmp, path)?;
            }
            if sync {
                let _ = File::open(parent_dir(path)).and_then(|d| d.sync_all());
            }
            Ok(())
        })();
        if let Err(e) = placed {
            cleanup(&dest);
            drop(frozen);
            return Err(open_error(e, path));
        }
    }
    let kill = signal == libc::SIGKILL;
    let pids = frozen.pids();
    let saved = pids.len();
    frozen.release(kill).map_err(|e| (libc::EIO, format!("the image {shown} was written, but letting PID {pid} go failed: {e}")))?;
    if signal != 0 && !kill {
        // As BLCR: every process of the scope gets the signal.
        for &p in &pids {
            crest_ptrace::sys::kill(p, signal).map_err(|e| (libc::ESRCH, format!("sending {} to PID {p} after the checkpoint: {e}", signal_name(signal))))?;
        }
    }
    if std::env::var_os("CREST_TIMING").is_some() {
        eprintln!(
            "crest-timing: checkpoint pid={pid} page_bytes={} precopy_bytes={precopy_bytes} remote_syscalls={} frozen_ms={:.3} total_ms={:.3}",
            stats.page_bytes,
            stats.remote_syscalls,
            stats.frozen_secs * 1e3,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    if verbose {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "Checkpointed {} to {shown}: {} of memory pages from {} mappings ({} system calls made inside the processes). \
             The processes were frozen for {:.1} ms; the checkpoint took {:.1} ms in all.",
            if saved == 1 { format!("PID {pid}") } else { format!("{saved} processes") },
            crest_cli::human_bytes(stats.page_bytes),
            stats.vmas,
            stats.remote_syscalls,
            stats.frozen_secs * 1e3,
            secs * 1e3
        );
    }
    Ok(())
}

/// What `-v` says before the checkpoint: what is saved, where, how, and what happens after.
fn plan_sentence(pid: i32, scope: crest_dump::Scope, dest: &Dest, shown: &str, sync: bool, signal: i32) -> String {
    let what = match scope {
        crest_dump::Scope::Tree => format!("PID {pid} and all its descendants"),
        crest_dump::Scope::Pid => format!("PID {pid} alone (all its threads)"),
        crest_dump::Scope::Pgid => format!("every process of process group {pid}"),
        crest_dump::Scope::Sid => format!("every process of session {pid}"),
    };
    let how = match dest {
        Dest::Atomic { backup: Some(Some(b)), .. } => format!("{shown}, under a temporary name until it is whole (an existing {shown} is kept as {b})"),
        Dest::Atomic { backup: Some(None), .. } => format!("{shown}, under a temporary name until it is whole (an existing {shown} is kept as {shown}.~N~)"),
        Dest::Atomic { .. } => format!("{shown}, under a temporary name until it is whole"),
        Dest::Direct { .. } => format!("{shown}, directly"),
        Dest::Fd(fd) => format!("descriptor {fd}"),
        Dest::Stream { .. } => format!("{shown}, written into as a stream"),
    };
    let synced = if sync && !matches!(dest, Dest::Fd(_) | Dest::Stream { .. }) { ", synced to disk" } else { "" };
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

/// `freeze` (which seizes `pid`), once more if it was refused while another tracer (a
/// concurrent checkpoint) was just letting the process go, so that a real refusal is told
/// from a race.
fn tracer_race_retried<T>(pid: i32, freeze: impl Fn() -> Result<T, DumpError>) -> Result<T, DumpError> {
    match freeze() {
        Err(DumpError::Permission { .. } | DumpError::Traced { .. }) if tracer_of(pid) == 0 => freeze(),
        r => r,
    }
}

/// The caller's descriptor `fd`, opened again through /proc so closing ours leaves theirs open.
fn crest_cli_fd(fd: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    OpenOptions::new().write(true).open(format!("/proc/self/fd/{fd}")).map(Into::into)
}

fn open_new(path: &Path, excl: bool, trunc: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).mode(0o400).custom_flags(libc::O_NOCTTY);
    if excl {
        o.create_new(true);
    } else {
        o.create(true).truncate(trunc);
    }
    match o.open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !excl && path.exists() => {
            // An existing read-only image (mode 0400) is replaced, as BLCR does.
            std::fs::remove_file(path)?;
            o.open(path)
        }
        r => r,
    }
}

/// `path` with every symbolic link of its last component followed (the directories above are
/// the kernel's to follow): the file an image named `path` must replace. A dangling link gives
/// the path it points to, which is then created.
fn follow_links(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&p) {
            Ok(to) => p = parent_dir(&p).join(to),
            Err(_) => return p,
        }
    }
    p
}

/// Opens a FIFO, a socket or a character device to write an image into. A FIFO must have a
/// reader already (as BLCR, it is opened without blocking), then is written with blocking
/// writes; a socket is connected to.
fn open_stream(path: &Path, kind: StreamKind) -> std::io::Result<File> {
    match kind {
        StreamKind::Socket => Ok(File::from(std::os::fd::OwnedFd::from(std::os::unix::net::UnixStream::connect(path)?))),
        StreamKind::Fifo => {
            let f = OpenOptions::new().write(true).custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK).open(path)?;
            let flags = sys::status_flags(f.as_raw_fd(), None)?;
            sys::status_flags(f.as_raw_fd(), Some(flags & !libc::O_NONBLOCK))?;
            Ok(f)
        }
        StreamKind::CharDevice => OpenOptions::new().write(true).custom_flags(libc::O_NOCTTY).open(path),
    }
}

fn stream_error(e: std::io::Error, path: &Path, kind: StreamKind) -> (i32, String) {
    let code = e.raw_os_error().unwrap_or(libc::EIO);
    let why = match (kind, code) {
        (StreamKind::Fifo, libc::ENXIO) => "it is a FIFO that no process has open for reading; start its reader first".to_string(),
        (StreamKind::Socket, libc::ECONNREFUSED) => "it is a socket that no process listens on".to_string(),
        _ => io_words(&e),
    };
    (code, format!("cannot write the image {}: {why}", path.display()))
}

/// The directory a destination path is in.
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// An unnamed file in `dir` (`O_TMPFILE`), mode 0400; `None` where the file system has none.
fn open_unnamed(dir: &Path) -> std::io::Result<Option<File>> {
    match OpenOptions::new().write(true).mode(0o400).custom_flags(libc::O_TMPFILE | libc::O_NOCTTY).open(dir) {
        Ok(f) => Ok(Some(f)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Gives the unnamed image its name: linked straight to `path` when that is free, else
/// linked as `tmp` and renamed over `path` (a `tmp` left by an earlier, killed run is replaced).
fn give_name(file: &File, path: &Path, tmp: &Path) -> std::io::Result<()> {
    match sys::link_fd(file.as_raw_fd(), path) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let _ = std::fs::remove_file(tmp);
            sys::link_fd(file.as_raw_fd(), tmp)?;
            std::fs::rename(tmp, path).inspect_err(|_| {
                let _ = std::fs::remove_file(tmp);
            })
        }
        r => r,
    }
}

/// What an errno means for the image file, in words, with what to do about it.
fn io_words(e: &std::io::Error) -> String {
    let elsewhere = "write the image elsewhere (--file or --dir)";
    match e.raw_os_error() {
        Some(libc::ENOSPC) => format!("no space left on the device; free some space or {elsewhere}"),
        Some(libc::EDQUOT) => format!("disk quota exceeded; free some space or {elsewhere}"),
        Some(libc::EFBIG) => format!("the file grew beyond what this file system or RLIMIT_FSIZE allows; {elsewhere}"),
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied; choose a directory you may write to (--file or --dir)".to_string(),
        Some(libc::EROFS) => format!("read-only file system; {elsewhere}"),
        Some(libc::ENOENT) => "no such file or directory; create the directory first".to_string(),
        Some(libc::ENOTDIR) => "a component of the path is not a directory".to_string(),
        Some(libc::EEXIST) => "the file exists (--noclobber); remove it or choose another name".to_string(),
        _ => e.to_string(),
    }
}

fn open_error(e: std::io::Error, path: &Path) -> (i32, String) {
    let dir = parent_dir(path);
    // No such file, though its directory is there: a file system that makes no files (/proc,
    // /sys), not a directory to create.
    let why = if e.raw_os_error() == Some(libc::ENOENT) && dir.is_dir() {
        format!("the file system of {} does not accept new files (as /proc and /sys); write the image elsewhere (--file or --dir)", dir.display())
    } else {
        io_words(&e)
    };
    (e.raw_os_error().unwrap_or(libc::EIO), format!("cannot write the image {}: {why}", path.display()))
}

/// Whether `pid` is gone, dead, exiting (its memory already released) or has SIGKILL pending.
fn ended(pid: i32) -> bool {
    let Ok(s) = crest_proc::read(pid, "status") else { return true };
    let field = |k: &str| crest_proc::status_field(&s, k);
    let killed = |k: &str| field(k).and_then(|v| u64::from_str_radix(v, 16).ok()).is_some_and(|m| m & (1 << (libc::SIGKILL - 1)) != 0);
    field("State").is_some_and(|st| st.starts_with('Z') || st.starts_with('X')) || field("VmSize").is_none() || killed("SigPnd") || killed("ShdPnd")
}

/// `pid`'s ancestors, its parent first.
fn ancestors(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut at = pid;
    while let Some(st) = crest_proc::read(at, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok()) {
        if st.ppid <= 0 || out.len() > 4096 {
            break;
        }
        out.push(st.ppid);
        at = st.ppid;
    }
    out
}

/// Whether `pid` is a kernel thread (`PF_KTHREAD` in the flags of `/proc/PID/stat`).
fn kernel_thread(pid: i32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = crest_proc::read(pid, "stat") else { return false };
    let Some(close) = stat.rfind(')') else { return false };
    stat[close + 1..].split_whitespace().nth(6).and_then(|f| f.parse::<u64>().ok()).is_some_and(|f| f & PF_KTHREAD != 0)
}

/// `" (NAME)"` for `pid`, or nothing.
fn comm_of(pid: i32) -> String {
    crest_proc::read(pid, "comm").map(|c| format!(" ({})", c.trim())).unwrap_or_default()
}

fn kernel_thread_words(pid: i32) -> String {
    format!("it is a kernel thread{}, with no user-space memory or registers to save: kernel threads cannot be checkpointed", comm_of(pid))
}

const INIT_WORDS: &str = "it is the init process of this PID namespace, which cannot be checkpointed (it reaps every orphan, and a restored copy could only be PID 1 again in a new PID namespace); checkpoint the processes under it instead";

/// Refusals that need no freeze: a kernel thread, the init process, and a scope that holds
/// this cr_checkpoint itself (BLCR's `CR_CHKPT_PROHIBIT_SELF`, `EDEADLK`: it would wait for
/// itself).
fn refuse_early(scope: crest_dump::Scope, pid: i32) -> Result<(), (i32, String)> {
    if crest_proc::read(pid, "stat").is_err() {
        // Gone, or never there: said by the usual path.
        return Ok(());
    }
    if kernel_thread(pid) && matches!(scope, crest_dump::Scope::Pid | crest_dump::Scope::Tree) {
        return Err((libc::EPERM, format!("not permitted to checkpoint PID {pid}: {}", kernel_thread_words(pid))));
    }
    if pid == 1 && matches!(scope, crest_dump::Scope::Pid | crest_dump::Scope::Tree) {
        return Err((libc::EPERM, format!("not permitted to checkpoint PID 1: {INIT_WORDS}")));
    }
    let me = std::process::id() as i32;
    let parent = std::os::unix::process::parent_id() as i32;
    let stat = |p: i32| crest_proc::read(p, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok());
    let Some(mine) = stat(me) else { return Ok(()) };
    let (holds, what) = match scope {
        crest_dump::Scope::Pid => (pid == me || pid == parent, format!("PID {pid}")),
        crest_dump::Scope::Tree => {
            // An ancestor of this process (or this process): its tree holds cr_checkpoint.
            let mut at = me;
            let mut found = false;
            for _ in 0..4096 {
                if at == pid {
                    found = true;
                    break;
                }
                match stat(at) {
                    Some(st) if st.ppid > 0 => at = st.ppid,
                    _ => break,
                }
            }
            (found, format!("the tree of PID {pid}{}", comm_of(pid)))
        }
        crest_dump::Scope::Pgid => (mine.pgrp == pid, format!("process group {pid}")),
        crest_dump::Scope::Sid => (mine.session == pid, format!("session {pid}")),
    };
    if holds {
        return Err((
            libc::EDEADLK,
            format!(
                "{what} contains cr_checkpoint itself (PID {parent}, working in PID {me}), which cannot checkpoint itself; nothing was frozen. Start the program to checkpoint in the background, or from another shell, and name its PID"
            ),
        ));
    }
    Ok(())
}

/// Why ptrace refused `pid`, as far as it can be told from outside.
fn ptrace_refusal(pid: i32) -> String {
    if kernel_thread(pid) {
        return kernel_thread_words(pid);
    }
    if pid == 1 {
        return INIT_WORDS.to_string();
    }
    let status = crest_proc::read(pid, "status").unwrap_or_default();
    let ids = |k: &str| -> Vec<u32> { crest_proc::status_field(&status, k).map(|v| v.split_whitespace().filter_map(|x| x.parse().ok()).collect()).unwrap_or_default() };
    let (uids, gids) = (ids("Uid"), ids("Gid"));
    let me = sys::euid();
    if me != 0 {
        if uids.first().is_some_and(|&u| u != me) {
            return format!("it belongs to another user (uid {}); run as its owner or as root", uids[0]);
        }
        if uids.windows(2).any(|w| w[0] != w[1]) || gids.windows(2).any(|w| w[0] != w[1]) {
            return "it runs a set-user-ID or set-group-ID program (its real, effective and saved ids differ); run as root".to_string();
        }
    }
    match std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok().and_then(|s| s.trim().parse::<u32>().ok()) {
        Some(1) if me != 0 => return "kernel.yama.ptrace_scope is 1: only a process's ancestors may trace it; run as root or set it to 0".to_string(),
        Some(2) if me != 0 => return "kernel.yama.ptrace_scope is 2: only root (CAP_SYS_PTRACE) may trace".to_string(),
        Some(3) => return "kernel.yama.ptrace_scope is 3: ptrace is disabled on this system until the next boot".to_string(),
        _ => {}
    }
    // The same access check guards /proc/PID/exe: refused too, the process is marked not
    // dumpable and outside what this user may trace.
    if std::fs::read_link(format!("/proc/{pid}/exe")).is_err_and(|e| e.raw_os_error() == Some(libc::EACCES)) {
        return "the kernel refuses access even to its /proc files: it is marked not dumpable (a set-user-ID program, or it made itself so) and belongs to a user namespace where this user lacks CAP_SYS_PTRACE".to_string();
    }
    "ptrace(PTRACE_SEIZE) failed with EPERM: a security module (SELinux, AppArmor) or a seccomp filter forbids tracing it".to_string()
}

/// The PID tracing `pid` (0: none).
fn tracer_of(pid: i32) -> i32 {
    crest_proc::read(pid, "status").ok().and_then(|s| crest_proc::status_field(&s, "TracerPid").and_then(|t| t.parse().ok())).unwrap_or(0)
}

fn dump_error(pid: i32, e: DumpError, shown: &str, stream: bool, limit: Option<u64>) -> (i32, String) {
    let left = if stream {
        format!("PID {pid} was left running as it was; what was written to {shown} is not a usable image")
    } else {
        format!("PID {pid} was left running as it was and no image was written")
    };
    match &e {
        DumpError::Cancelled => {
            return match CANCEL_REASON.load(Ordering::SeqCst) {
                TIMED_OUT => (libc::ETIMEDOUT, format!("the checkpoint did not finish within the --time limit of {} s; {left}", limit.unwrap_or(0))),
                sig => (libc::EINTR, format!("interrupted by {}; {left}", signal_name(sig))),
            }
        }
        DumpError::NoProcess(_) => return (libc::ESRCH, e.to_string()),
        DumpError::Claimed { by, .. } => {
            let who = match by {
                Some(by) => format!(" by PID {by}{}", crest_proc::read(*by, "comm").map(|c| format!(" ({})", c.trim())).unwrap_or_default()),
                None => String::new(),
            };
            return (EXIT_PTRACED, format!("PID {pid} is already being checkpointed{who}; try again when that checkpoint is done"));
        }
        DumpError::Busy { by, .. } => {
            let name = crest_proc::read(*by, "comm").map(|c| format!(" ({})", c.trim())).unwrap_or_default();
            return (EXIT_PTRACED, format!("PID {pid} is already being traced by PID {by}{name}, another checkpoint that is saving its pages from a snapshot; try again when it is done"));
        }
        DumpError::Permission { pid: p, .. } if kernel_thread(*p) => {
            return (libc::EPERM, format!("not permitted to checkpoint PID {p}: {} ({left})", ptrace_refusal(*p)));
        }
        _ if ended(pid) => return (libc::ESRCH, format!("PID {pid} ended during the checkpoint, so there is nothing to save; no image was written")),
        DumpError::Traced { pid: traced, by } if *by != std::process::id() as i32 => {
            let comm = |p: i32| crest_proc::read(p, "comm").map(|c| format!(" ({})", c.trim())).unwrap_or_default();
            let (name, traced_name) = (comm(*by), comm(*traced));
            // A debugger (strace, gdb) checkpointed together with what it traces.
            let in_scope = *by == pid || ancestors(*by).contains(&pid);
            if in_scope {
                return (
                    EXIT_PTRACED,
                    format!("PID {traced}{traced_name} is being traced by PID {by}{name}, which is part of the checkpoint itself: a tracer cannot be checkpointed together with the process it traces; checkpoint them when it has let go"),
                );
            }
            return (EXIT_PTRACED, format!("PID {traced} is already being traced by PID {by}{name}, another checkpoint or a debugger; try again when it is done"));
        }
        DumpError::Permission { pid: p, .. } if kernel_thread(*p) || (!ended(*p) && tracer_of(*p) == 0) => {
            return (libc::EPERM, format!("not permitted to checkpoint PID {p}: {} ({left})", ptrace_refusal(*p)));
        }
        DumpError::Permission { .. } => {
            let tracer = tracer_of(pid);
            if tracer != 0 && tracer != std::process::id() as i32 {
                let name = crest_proc::read(tracer, "comm").map(|c| format!(" ({})", c.trim())).unwrap_or_default();
                return (EXIT_PTRACED, format!("PID {pid} is already being traced by PID {tracer}{name}, another checkpoint or a debugger; try again when it is done"));
            }
        }
        DumpError::Image(crest_image::ImageError::Io(io)) => {
            return (io.raw_os_error().unwrap_or(libc::EIO), format!("writing the image {shown}: {}; {left}", io_words(io)));
        }
        _ => {}
    }
    let code = match &e {
        DumpError::Permission { .. } => libc::EPERM,
        DumpError::Unsupported(_) | DumpError::Kind(crest_kinds::KindError::Unsupported(_)) => libc::EOPNOTSUPP,
        _ => libc::EIO,
    };
    (code, format!("{e} ({left})"))
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
