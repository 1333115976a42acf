//! `cr_checkpoint`: BLCR's checkpoint command. Options, defaults and exit codes follow BLCR
//! 0.8.6 (see the README); the image is written under a temporary name in the destination's
//! directory, mode 0400, synced and renamed only when whole.
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crest_cli::{chosen_signal, last_given, signal_name, Say, VERSION};
use crest_dump::DumpError;


/// How the image reaches its destination.
enum Dest {
    /// Temporary file renamed into place (with an optional backup name).
    Atomic { path: PathBuf, tmp: PathBuf, backup: Option<Option<String>> },
    /// Straight into the destination.
    Direct { path: PathBuf },
    /// An inherited descriptor.
    Fd(i32),
}

fn main() {
    let m = match crest_cli::commands::checkpoint().try_get_matches() {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            if e.kind() == clap::error::ErrorKind::DisplayVersion {
                println!("cr_checkpoint version {VERSION}");
                std::process::exit(0);
            }
            e.exit()
        }
        Err(e) => {
            if !std::env::args().any(|a| a == "-q" || a == "--quiet") {
                let _ = e.print();
            }
            std::process::exit(255)
        }
    };
    let say = Say { quiet: m.get_flag("quiet") };
    let id = *m.get_one::<i32>("id").expect("required by clap");
    let code = match run(&m, id, &say) {
        Ok(()) => 0,
        Err((code, msg)) => {
            say.err(format!("Checkpoint failed: {msg}"));
            code
        }
    };
    std::process::exit(code)
}

fn run(m: &clap::ArgMatches, pid: i32, say: &Say) -> Result<(), (i32, String)> {
    let einval = |s: String| (libc::EINVAL, s);
    let scope = last_given(m, &["tree", "pid", "pgid", "sid"]).unwrap_or("tree");
    if scope == "pgid" || scope == "sid" {
        return Err((libc::EOPNOTSUPP, "--pgid and --sid scopes are not supported yet; use --tree or --pid".into()));
    }
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
    let dest = match (target, m.get_one::<i32>("fd")) {
        (None, Some(&fd)) => Dest::Fd(fd),
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
    let sync = last_given(m, &["sync", "nosync"]) != Some("nosync");
    let signal = chosen_signal(m);
    let verbose = m.get_flag("verbose") && !say.quiet;

    // Open the destination before freezing: a bad destination must not stop the target at all.
    let (file, shown): (File, String) = match &dest {
        Dest::Fd(fd) => {
            let f = File::from(crest_cli_fd(*fd).map_err(|e| (e.raw_os_error().unwrap_or(libc::EBADF), format!("descriptor {fd}: {e}")))?);
            (f, format!("<fd{fd}>"))
        }
        Dest::Atomic { tmp, path, .. } => (open_new(tmp, false, true).map_err(|e| io_err(e, path))?, path.display().to_string()),
        Dest::Direct { path } => (open_new(path, mode == "noclobber", true).map_err(|e| io_err(e, path))?, path.display().to_string()),
    };
    if verbose {
        println!("targetfile='{shown}', scope={scope}, signal={signal}");
    }
    let cleanup = |dest: &Dest| match dest {
        Dest::Atomic { tmp, .. } => {
            let _ = std::fs::remove_file(tmp);
        }
        Dest::Direct { path } => {
            let _ = std::fs::remove_file(path);
        }
        Dest::Fd(_) => {}
    };
    let started = Instant::now();
    let result = (|| -> Result<_, DumpError> {
        let mut frozen = crest_dump::freeze(pid)?;
        // After the freeze, so that a missing or forbidden process is reported as such first.
        if scope == "tree" {
            let children = crest_proc::read(pid, &format!("task/{pid}/children")).unwrap_or_default();
            if !children.trim().is_empty() {
                return Err(DumpError::Unsupported(format!(
                    "PID {pid} has children ({}); process trees are not supported yet: use --pid to checkpoint the process alone",
                    children.trim()
                )));
            }
        }
        // When the process is to run on after the checkpoint, it runs on during the page copy
        // too (a copy-on-write snapshot holds its memory). When it is to die, it must not run
        // on beyond the moment the image describes.
        let snapshot = matches!(signal, 0 | libc::SIGSTOP | libc::SIGCONT) && std::env::var_os("CREST_NO_SNAPSHOT").is_none();
        let progress = std::sync::Arc::new(crest_kinds::progress::Progress::default());
        let shown = crest_cli::ProgressDisplay::start(progress.clone(), "saving", say.quiet);
        let opts = crest_dump::DumpOptions { scope, snapshot, compress: m.get_one::<i32>("compress").copied(), progress: &progress };
        let (_image, stats) = frozen.dump(&file, &opts)?;
        drop(shown);
        // Pipes and sockets cannot be synced; BLCR syncs what can be.
        if sync && file.metadata().is_ok_and(|m| m.file_type().is_file()) {
            file.sync_all().map_err(crest_image::ImageError::Io)?;
        }
        Ok((frozen, stats))
    })();
    let (frozen, stats) = match result {
        Ok(x) => x,
        Err(e) => {
            cleanup(&dest);
            return Err(dump_error(pid, e));
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
            std::fs::rename(tmp, path)?;
            if sync {
                let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let _ = File::open(dir).and_then(|d| d.sync_all());
            }
            Ok(())
        })();
        if let Err(e) = placed {
            cleanup(&dest);
            drop(frozen);
            return Err(io_err(e, path));
        }
    }
    let kill = signal == libc::SIGKILL;
    frozen.release(kill).map_err(|e| dump_error(pid, e))?;
    if signal != 0 && !kill {
        crest_ptrace::sys::kill(pid, signal).map_err(|e| (libc::ESRCH, format!("sending {} after the checkpoint: {e}", signal_name(signal))))?;
    }
    if std::env::var_os("CREST_TIMING").is_some() {
        eprintln!(
            "crest-timing: checkpoint pid={pid} page_bytes={} remote_syscalls={} frozen_ms={:.3} total_ms={:.3}",
            stats.page_bytes,
            stats.remote_syscalls,
            stats.frozen_secs * 1e3,
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    if verbose {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "checkpointed PID {pid} to {shown}: {} MiB of pages in {} mappings, {} remote syscalls, frozen {:.1} ms, total {:.1} ms",
            stats.page_bytes >> 20,
            stats.vmas,
            stats.remote_syscalls,
            stats.frozen_secs * 1e3,
            secs * 1e3
        );
    }
    Ok(())
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

fn io_err(e: std::io::Error, path: &Path) -> (i32, String) {
    (e.raw_os_error().unwrap_or(libc::EIO), format!("{}: {e}", path.display()))
}

fn dump_error(pid: i32, e: DumpError) -> (i32, String) {
    let code = match &e {
        DumpError::NoProcess(_) => libc::ESRCH,
        DumpError::Permission { .. } => libc::EPERM,
        DumpError::Unsupported(_) | DumpError::Kind(crest_kinds::KindError::Unsupported(_)) => libc::EOPNOTSUPP,
        DumpError::Image(crest_image::ImageError::Io(io)) => io.raw_os_error().unwrap_or(libc::EIO),
        _ => libc::EIO,
    };
    let hint = match &e {
        DumpError::NoProcess(_) => String::new(),
        _ => format!(" (PID {pid} was left running as it was)"),
    };
    (code, format!("{e}{hint}"))
}
