//! `cr_restart`: BLCR's restart command. It restores the image's process as its own child,
//! stays in the foreground, forwards the signals it receives to it (those that end a job, to
//! every restored process: see [`forward`]), and exits with its exit status or dies by the
//! same signal. Options follow BLCR 0.8.6 (see the README).
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crest_cli::{chosen_signal, coordinate, exits, last_given, signal_name, Say};
use crest_kinds::exit::ErrorKind;
use crest_ptrace::libcr as proto;
use crest_ptrace::sys::{self, ChildEnd};
use crest_restore::preflight::Relocation;
use crest_restore::restart::Event;
use crest_restore::{Request, Source};

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
    take_notify();
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
            notify(&format!("ERR {} Restart failed: {}", f.code, f.msg.replace('\n', " ")));
            std::process::exit(f.code)
        }
    }
}

enum Never {}

/// Where libcr's `cr_request_restart`, which ran this command, waits for the outcome.
static NOTIFY: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Takes the descriptor named by `CREST_LIBCR_RESTART_NOTIFY` (set by `cr_request_restart`:
/// it is told the eldest restored PID, or `ERR CODE MESSAGE`)
/// out of reach of the restored processes and of the hooks: a close-on-exec copy, kept until
/// [`notify`], the original closed.
fn take_notify() {
    let Some(fd) = sys::take_inherited_fd(proto::RESTART_NOTIFY_ENV) else { return };
    if let Ok(copy) = sys::dup_above(fd.as_raw_fd(), 3) {
        drop(fd);
        *NOTIFY.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::fs::File::from(copy));
    }
}

/// Tells the waiting `cr_request_restart` one line, then end of file.
fn notify(line: &str) {
    if let Some(mut f) = NOTIFY.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes());
    }
}

fn run(m: &clap::ArgMatches, say: &Say) -> Result<Never, Failure> {
    let started = std::time::Instant::now();
    let sources = ["context", "file", "fd", "dir"].iter().filter(|s| m.contains_id(s)).count();
    if sources != 1 {
        return Err(fail(exits::USAGE, "args", "give exactly one image: FILE, --file FILE or --fd FD"));
    }
    if m.contains_id("dir") {
        return Err(fail(ErrorKind::Invalid.code(), "args", "--dir is not implemented (as in BLCR); give the image file"));
    }
    let args: Vec<String> = m.get_many::<String>("relocate").map(|v| v.cloned().collect()).unwrap_or_default();
    let relocations = Relocation::parse_all(&args).map_err(|e| fail(ErrorKind::Invalid.code(), "args", e.to_string()))?;
    let image = match m.get_one::<i32>("fd") {
        Some(&fd) => Source::Fd(fd),
        // `-f -`: standard input (an image stream from `cr_checkpoint --stream -f -`, or any
        // image through a pipe).
        None => match m.get_one::<String>("context").or(m.get_one::<String>("file")).expect("one source").as_str() {
            "-" => Source::Fd(0),
            p => Source::Path(PathBuf::from(p)),
        },
    };
    let progress = std::sync::Arc::new(crest_kinds::progress::Progress::default());
    // Signals that arrive while restoring wait; afterwards they are forwarded to the process.
    let forwarded: Vec<i32> = (1..=64).filter(|&s| ![libc::SIGCHLD, libc::SIGKILL, libc::SIGSTOP].contains(&s)).collect();
    let display = std::cell::RefCell::new(None);
    let events = |e: Event<'_>| match e {
        Event::SavedContents { path } => say_info(m, &format!("{path} is gone or has changed since the checkpoint: its contents come from the image")),
        Event::Restoring => {
            sys::block_signals(&forwarded);
            *display.borrow_mut() = Some(crest_cli::ProgressDisplay::start(progress.clone(), "restoring", m.get_flag("quiet")));
        }
    };
    let req = Request {
        image,
        relocations,
        restore_pid: last_given(m, &["restore-pid", "no-restore-pid"]) != Some("no-restore-pid"),
        restore_pgid: last_given(m, &["restore-pgid", "no-restore-pgid"]) == Some("restore-pgid"),
        restore_sid: last_given(m, &["restore-sid", "no-restore-sid"]) == Some("restore-sid"),
        verify: !m.get_flag("no-verify"),
        map_image: m.get_flag("map-pages") && !m.get_flag("copy-pages"),
        lazy: m.get_flag("lazy"),
        relaxed_stdio: m.get_flag("relaxed-stdio"),
        progress: Some(progress.clone()),
        on_event: Some(&events),
        // Run by libcr's cr_request_restart: its caller asked for the restart.
        requester: std::env::var(proto::REQUESTER_ENV).ok().and_then(|p| p.parse().ok()),
        // One part of a job restarted by cr_coord: its processes wait, restored and silent,
        // until every part is.
        stream_timeout: m.get_one::<f64>("stream-timeout").map_or(Some(crest_restore::DEFAULT_STREAM_TIMEOUT), |&s| (s > 0.0).then(|| std::time::Duration::from_secs_f64(s))),
        barrier: m.get_flag("coordinated").then(|| {
            crest_restore::Barrier(std::sync::Arc::new(|| {
                coordinate::tell("ready");
                coordinate::wait_go("restored")
            }))
        }),
    };
    let restored = crest_restore::restart(&req);
    drop(display.take());
    let restored = restored.map_err(|e| fail(e.kind().code(), e.class().name(), e.to_string()))?;
    let pid = restored.pid;
    if m.get_flag("coordinated") {
        coordinate::tell(&format!("running {pid}"));
    }
    // A lazy restart: the processes depend on this process for their pages until every one
    // is in; whatever way it leaves, it waits for that first.
    let lazy = restored.lazy.clone();
    let stream = restored.stream.clone();
    let finish_lazy = move |code: i32| {
        let Some(l) = &lazy else { return };
        let finished = l.finish();
        // Every page is in: a stream that ended badly after that took nothing from them.
        if let (Ok(_), Some(Some(Err(why)))) = (&finished, stream.as_ref().map(|a| a.ended())) {
            eprintln!("cr_restart: warning: every page had arrived, but then {why}");
        }
        match finished {
            Ok(s) => {
                if std::env::var_os("CREST_TIMING").is_some() && s.faults + s.on_demand + s.background > 0 {
                    eprintln!("crest-timing: lazy pid={pid} faults={} on_demand_bytes={} background_bytes={} fill_ms={:.3}", s.faults, s.on_demand, s.background, s.fill.as_secs_f64() * 1e3);
                }
            }
            Err(msg) => {
                eprintln!("cr_restart: {msg}");
                notify(&format!("ERR {code} {}", msg.replace('\n', " ")));
            }
        }
    };
    for note in &restored.notes {
        say_info(m, note);
    }
    if std::env::var_os("CREST_TIMING").is_some() {
        eprintln!(
            "crest-timing: restart pid={pid} page_bytes={} mapped_bytes={} remote_syscalls={} remote_stops={} running_after_ms={:.3}{}",
            restored.page_bytes,
            restored.mapped_bytes,
            restored.remote_syscalls,
            restored.remote_stops,
            started.elapsed().as_secs_f64() * 1e3,
            restored.stream.as_ref().map(|a| format!(" first_byte_to_running_ms={:.3} streamed_page_bytes_then={}", a.first_byte.elapsed().as_secs_f64() * 1e3, a.page_bytes())).unwrap_or_default()
                + &restored.steps.iter().map(|(n, d)| format!(" {n}_ms={:.3}", d.as_secs_f64() * 1e3)).collect::<String>()
        );
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
            sys::pidfd_send_signal(fd.as_raw_fd(), signal).map_err(|e| fail(ErrorKind::NoProcess.code(), "perm", format!("sending {} to PID {p} after the restart: {e}", signal_name(signal))))?;
        }
    }
    // The restart is complete: a cr_request_restart waiting for it learns the eldest's PID.
    notify(&pid.to_string());
    if m.contains_id("run-on-success") {
        // The hook runs once the restart is complete: every page in.
        finish_lazy(ErrorKind::Failed.code());
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
    let waited = sys::wait_child(pid);
    // Children it forked may still need pages.
    finish_lazy(ErrorKind::Failed.code());
    match waited {
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

/// A note on stderr, unless `-q`.
fn say_info(m: &clap::ArgMatches, msg: &str) {
    if !m.get_flag("quiet") {
        eprintln!("cr_restart: {msg}");
    }
}
