//! `cr_restart`: BLCR's restart command. It restores the image's process as its own child,
//! stays in the foreground, forwards the signals it receives to it (those that end a job, to
//! every restored process: see [`forward`]), and exits with its exit status or dies by the
//! same signal. Options follow BLCR 0.8.6 (see the README).
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crest_cli::preflight::{self, Caller, Refusal};
use crest_cli::{chosen_signal, exits, last_given, signal_name, Say};
use crest_image::{ImageError, ImageFile, Process, VmaBacking};
use crest_ptrace::sys::{self, ChildEnd};
use crest_restore::{RestoreError, RestoreOptions};

/// A failure: exit code, BLCR class for the hooks, message.
struct Failure {
    code: i32,
    class: &'static str,
    msg: String,
}

fn fail(code: i32, class: &'static str, msg: impl Into<String>) -> Failure {
    Failure { code, class, msg: msg.into() }
}

fn hook(cmd: Option<&String>) -> Option<i32> {
    let cmd = cmd?;
    let st = std::process::Command::new("/bin/sh").arg("-c").arg(cmd).status().ok()?;
    st.code().filter(|&c| c != 0)
}

fn main() {
    let m = crest_cli::parse_args(crest_cli::commands::restart());
    let say = Say { quiet: m.get_flag("quiet") };
    match run(&m, &say) {
        Ok(never) => match never {},
        Err(f) => {
            // --run-on-failure sets all four hooks: of it and the class's own, the last given wins.
            let specific = format!("run-on-fail-{}", f.class);
            let chosen = last_given(&m, &[specific.as_str(), "run-on-failure"]);
            if let Some(code) = hook(chosen.and_then(|h| m.get_one::<String>(h))) {
                std::process::exit(code);
            }
            say.err(format!("Restart failed: {}", f.msg));
            std::process::exit(f.code)
        }
    }
}

enum Never {}

fn run(m: &clap::ArgMatches, say: &Say) -> Result<Never, Failure> {
    let started = std::time::Instant::now();
    let sources = ["context", "file", "fd", "dir"].iter().filter(|s| m.contains_id(s)).count();
    if sources != 1 {
        return Err(fail(exits::USAGE, "args", "give exactly one image: FILE, --file FILE or --fd FD"));
    }
    if m.contains_id("dir") {
        return Err(fail(libc::EINVAL, "args", "--dir is not implemented (as in BLCR); give the image file"));
    }
    let relocs = parse_relocations(m.get_many::<String>("relocate").map(|v| v.cloned().collect()).unwrap_or_default())?;
    let (file, shown) = if let Some(&fd) = m.get_one::<i32>("fd") {
        (File::open(format!("/proc/self/fd/{fd}")).map_err(|_| fail(libc::EBADF, "args", format!("descriptor {fd} is not open")))?, format!("<fd{fd}>"))
    } else {
        let p = m.get_one::<String>("context").or(m.get_one::<String>("file")).expect("one source");
        (crest_cli::open_image(p).map_err(|msg| fail(exits::USAGE, "args", msg))?, p.clone())
    };
    // Restore reads page data at offsets: an image arriving through a pipe or socket is first
    // copied into memory.
    let file = if file.metadata().is_ok_and(|m| m.file_type().is_file()) {
        file
    } else {
        let copy = File::from(sys::memfd("crest-image", 0).map_err(|e| fail(libc::ENOMEM, "temp", format!("{shown}: {e}")))?);
        std::io::copy(&mut &file, &mut &copy).map_err(|e| fail(libc::EIO, "perm", format!("{shown}: reading the image: {e}")))?;
        copy
    };
    let mut img = ImageFile::from_file(file).map_err(|e| image_failure(&shown, e))?;
    // Nothing starts unless every file is there and unchanged and this user could have
    // started the saved process.
    let caller = Caller::current().map_err(|e| fail(libc::EIO, "perm", format!("reading this process's credentials: {e}")))?;
    for p in img.image.processes.iter_mut().filter(|p| p.exit_status.is_none()) {
        let moved = relocate(p, &relocs);
        for path in crest_restore::use_saved_contents(p) {
            say_info(m, &format!("{path} is gone or has changed since the checkpoint: its contents come from the image"));
        }
        let refused = |r: Refusal| fail(r.code, r.class, format!("{shown}: {}", r.msg));
        preflight::credentials(p, &caller, std::fs::metadata(&p.exe).ok().as_ref()).map_err(refused)?;
        preflight::files(p, &|path| moved.contains(path)).map_err(refused)?;
        preflight::stdio(p, m.get_one::<i32>("fd").copied(), m.get_flag("relaxed-stdio")).map_err(refused)?;
    }
    let restore_pid = last_given(m, &["restore-pid", "no-restore-pid"]) != Some("no-restore-pid");
    let progress = std::sync::Arc::new(crest_kinds::progress::Progress::default());
    let restore_pgid = last_given(m, &["restore-pgid", "no-restore-pgid"]) == Some("restore-pgid");
    let restore_sid = last_given(m, &["restore-sid", "no-restore-sid"]) == Some("restore-sid");
    let opts = RestoreOptions { restore_pid, restore_pgid, restore_sid, verify: !m.get_flag("no-verify"), progress: Some(progress.clone()) };
    // Signals that arrive while restoring wait; afterwards they are forwarded to the process.
    let forwarded: Vec<i32> = (1..=64).filter(|&s| ![libc::SIGCHLD, libc::SIGKILL, libc::SIGSTOP].contains(&s)).collect();
    sys::block_signals(&forwarded);
    let display = crest_cli::ProgressDisplay::start(progress, "restoring", m.get_flag("quiet"));
    let restored = crest_restore::restore(&img, &opts).map_err(|e| restore_failure(&shown, e));
    drop(display);
    let restored = restored?;
    drop(img);
    let pid = restored.pid;
    if std::env::var_os("CREST_TIMING").is_some() {
        eprintln!("crest-timing: restart pid={pid} page_bytes={} remote_syscalls={} running_after_ms={:.3}", restored.page_bytes, restored.remote_syscalls, started.elapsed().as_secs_f64() * 1e3);
    }
    // Every restored process, the eldest first, by pidfd: a signal meant for one of them never
    // reaches another process that took its PID after it ended.
    let mut members: Vec<(i32, std::os::fd::OwnedFd)> = Vec::new();
    for p in std::iter::once(pid).chain(restored.pids.iter().map(|&(_, new)| new).filter(|&p| p != pid)) {
        if let Ok(fd) = sys::pidfd_open(p) {
            members.push((p, fd));
        }
    }
    let signal = chosen_signal(m);
    if signal != 0 {
        // As BLCR: every restored process gets it.
        for (p, fd) in &members {
            sys::pidfd_send_signal(fd.as_raw_fd(), signal).map_err(|e| fail(libc::ESRCH, "perm", format!("sending {} to PID {p} after the restart: {e}", signal_name(signal))))?;
        }
    }
    if let Some(code) = hook(m.get_one::<String>("run-on-success")) {
        std::process::exit(code);
    }
    let _ = say;
    std::thread::spawn(move || loop {
        let (sig, code) = sys::wait_signal_info(&forwarded);
        forward(sig, code, &members);
        if [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig) {
            let _ = sys::kill(std::process::id() as i32, libc::SIGSTOP);
        }
    });
    match sys::wait_child(pid) {
        Ok(ChildEnd::Exited(code)) => std::process::exit(code),
        Ok(ChildEnd::Signaled(sig)) => sys::die_by_signal(sig),
        Err(e) => Err(fail(libc::ECHILD, "perm", format!("waiting for the restored process {pid}: {e}"))),
    }
}

/// Signals that end a job: passed on to every restored process, not only the eldest.
const ENDING_SIGNALS: [i32; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

/// Passes on a signal that cr_restart received (`code` its `si_code`) to the restored
/// processes `members` (the eldest first). As BLCR's cr_restart, every signal goes to the
/// eldest; unlike it, the signals that end a job (SIGHUP, SIGINT, SIGQUIT, SIGTERM) also go to
/// every other restored process, so that none is left running when cr_restart is told to end
/// (with --restore-pgid or --restore-sid they are not in cr_restart's process group, where a
/// signal to the group would have reached them). A signal the kernel sent to cr_restart's
/// whole process group (a terminal's ^C, ^\, hang-up) already reached the restored
/// processes in that group, and is not sent to them twice.
fn forward(sig: i32, code: i32, members: &[(i32, std::os::fd::OwnedFd)]) {
    let own_group = crest_proc::read(std::process::id() as i32, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok()).map(|s| s.pgrp);
    let group_of = |p: i32| crest_proc::read(p, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok()).map(|s| s.pgrp);
    for (i, (p, fd)) in members.iter().enumerate() {
        if i > 0 && !ENDING_SIGNALS.contains(&sig) {
            break;
        }
        if code == libc::SI_KERNEL && own_group.is_some() && group_of(*p) == own_group {
            continue;
        }
        let _ = sys::pidfd_send_signal(fd.as_raw_fd(), sig);
    }
}

fn image_failure(shown: &str, e: ImageError) -> Failure {
    fail(crest_cli::image_error_code(&e), "perm", format!("{shown}: {e}"))
}

fn restore_failure(shown: &str, e: RestoreError) -> Failure {
    let code = match &e {
        RestoreError::Spawn(crest_ptrace::husk::SpawnError::PidInUse(_)) => libc::EBUSY,
        RestoreError::Spawn(crest_ptrace::husk::SpawnError::PidNeedsPrivilege(_)) => libc::EPERM,
        RestoreError::Refused(_) => libc::ENOENT,
        RestoreError::Image(_) => libc::EINVAL,
        _ => libc::EIO,
    };
    fail(code, e.class(), format!("{shown}: {e}"))
}

/// BLCR's `--relocate OLD=NEW` syntax: `\=` is a literal `=`, `\\` a literal `\`.
fn parse_relocations(args: Vec<String>) -> Result<Vec<(PathBuf, PathBuf)>, Failure> {
    if args.len() > 16 {
        return Err(fail(libc::EINVAL, "args", "Too many relocations (max is 16)"));
    }
    let mut out = Vec::new();
    for a in args {
        let mut parts = vec![String::new()];
        let mut chars = a.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                ('\\', Some('=')) | ('\\', Some('\\')) => parts.last_mut().expect("non-empty").push(chars.next().expect("peeked")),
                ('=', _) => parts.push(String::new()),
                _ => parts.last_mut().expect("non-empty").push(c),
            }
        }
        let [old, new] = parts.as_slice() else { return Err(fail(libc::EINVAL, "args", format!("--relocate {a}: needs exactly one OLD=NEW"))) };
        if !old.starts_with('/') || !new.starts_with('/') {
            return Err(fail(libc::EINVAL, "args", format!("--relocate {a}: both paths must be absolute")));
        }
        let trim = |s: &str| if s.len() > 1 { s.trim_end_matches('/').to_string() } else { s.to_string() };
        let (old, new) = (trim(old), trim(new));
        if old != new {
            out.push((PathBuf::from(old), PathBuf::from(new)));
        }
    }
    Ok(out)
}

fn relocate_path(path: &mut String, relocs: &[(PathBuf, PathBuf)]) {
    for (old, new) in relocs {
        if let Ok(rest) = std::path::Path::new(path.as_str()).strip_prefix(old) {
            *path = new.join(rest).to_string_lossy().into_owned();
            return;
        }
    }
}

/// Applies the relocations to every path of `p`; returns the new paths that were moved.
fn relocate(p: &mut Process, relocs: &[(PathBuf, PathBuf)]) -> std::collections::HashSet<String> {
    let mut moved = std::collections::HashSet::new();
    if relocs.is_empty() {
        return moved;
    }
    let mut apply = |path: &mut String| {
        let before = path.clone();
        relocate_path(path, relocs);
        if *path != before {
            moved.insert(path.clone());
        }
    };
    apply(&mut p.cwd);
    apply(&mut p.exe);
    for v in &mut p.vmas {
        if let VmaBacking::File { path, .. } = &mut v.backing {
            apply(path);
        }
    }
    for f in &mut p.fds {
        if let Some(path) = f.kind.path_mut() {
            apply(path);
        }
    }
    moved
}

/// A note on stderr, unless `-q`.
fn say_info(m: &clap::ArgMatches, msg: &str) {
    if !m.get_flag("quiet") {
        eprintln!("cr_restart: {msg}");
    }
}
