//! What the crest commands share: their option definitions, argument parsing (help, version
//! and usage errors alike in every command), BLCR's after-action signal flags, the table of
//! exit codes, and the user-facing error sentence.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use clap::{Arg, ArgAction, ArgMatches, Command};

pub mod commands;
pub mod coordinate;
pub mod exits;

/// The version the commands print.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parses the command line with `cmd`, the same way in every command: `--help` prints the
/// usage on stdout and exits 0, `--version` prints `NAME version VERSION` (BLCR's words) and
/// exits 0, and a usage error prints the usage on stderr (nothing with `-q`) and exits
/// [`exits::USAGE`] (255, as BLCR's commands).
pub fn parse_args(cmd: Command) -> ArgMatches {
    parse_from(cmd, std::env::args_os())
}

/// [`parse_args`] over the arguments `args` (the first one is the command's name).
pub fn parse_from(cmd: Command, args: impl IntoIterator<Item = std::ffi::OsString>) -> ArgMatches {
    let name = cmd.get_name().to_string();
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    match cmd.try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp => e.exit(),
            clap::error::ErrorKind::DisplayVersion => {
                println!("{name} version {VERSION}");
                std::process::exit(0)
            }
            _ => {
                let quiet = args.iter().skip(1).any(|a| a == "-q" || a == "--quiet");
                if !quiet {
                    let _ = e.print();
                }
                std::process::exit(exits::USAGE)
            }
        },
    }
}

/// Opens the image `path` for reading, as `cr_restart` and `cr_info` do
/// ([`crest_restore::restart::open_image`]). A file that cannot be opened, or a directory, is
/// refused with a sentence; the caller exits [`exits::USAGE`], as BLCR's `cr_restart` did for a
/// missing or unreadable file.
pub fn open_image(path: &str) -> Result<std::fs::File, String> {
    crest_restore::restart::open_image(path).map_err(|e| e.to_string())
}

/// The exit code for an image that was opened but cannot be used (see [`exits::TABLE`]):
/// the errno of a read that failed, else EINVAL (not a valid image; a read past the end of a
/// truncated file, which has no errno, included).
pub fn image_error_code(e: &crest_image::ImageError) -> i32 {
    crest_restore::restart::image_error_kind(e).code()
}

/// A size for people: bytes below 1 KiB, then KiB, MiB, GiB with one decimal where it helps.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 && v.fract() != 0.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// BLCR's after-action flags, in the order they are declared.
const SIGNAL_FLAGS: &[(&str, i32, &str)] = &[
    ("run", 0, "let the process(es) run on (the default)"),
    ("stop", libc::SIGSTOP, "send SIGSTOP afterwards"),
    ("term", libc::SIGTERM, "send SIGTERM afterwards"),
    ("abort", libc::SIGABRT, "send SIGABRT afterwards"),
    ("kill", libc::SIGKILL, "send SIGKILL afterwards"),
    ("cont", libc::SIGCONT, "send SIGCONT afterwards"),
];

/// Adds `--run/--stop/--term/--abort/--kill/--cont/--signal NUM` to `cmd`.
pub fn signal_args(mut cmd: Command) -> Command {
    for (name, _, help) in SIGNAL_FLAGS {
        let mut a = Arg::new(*name).long(*name).action(ArgAction::SetTrue).help(*help);
        if *name == "stop" {
            a = a.visible_alias("freeze");
        }
        cmd = cmd.arg(a);
    }
    cmd.arg(Arg::new("signal").short('S').long("signal").value_name("NUM").help("send signal NUM afterwards (1..64)").value_parser(clap::value_parser!(i32).range(1..=64)))
}

/// The signal to send after the operation: the last of the flags given wins, as in BLCR.
pub fn chosen_signal(m: &ArgMatches) -> i32 {
    let names: Vec<&str> = SIGNAL_FLAGS.iter().map(|f| f.0).chain(["signal"]).collect();
    match last_given(m, &names) {
        Some("signal") => m.get_one::<i32>("signal").copied().unwrap_or(0),
        Some(name) => SIGNAL_FLAGS.iter().find(|f| f.0 == name).map_or(0, |f| f.1),
        None => 0,
    }
}

/// Of the flags `names`, the one given last on the command line (BLCR's "last one wins").
/// Flags left at their default do not count.
pub fn last_given<'a>(m: &ArgMatches, names: &[&'a str]) -> Option<&'a str> {
    names.iter().copied().filter(|n| m.value_source(n) == Some(clap::parser::ValueSource::CommandLine)).max_by_key(|n| m.index_of(n))
}

pub use crest_kinds::exit::signal_name;

/// Whether stderr messages are wanted (`-q` silences them).
pub struct Say {
    /// Quiet.
    pub quiet: bool,
}

impl Say {
    /// Prints a message on stderr unless quiet.
    pub fn err(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }
}

/// A progress bar on stderr for a long copy of page data: shown only on a terminal, only when
/// not quiet, and only once the copy has taken a second. Stops when dropped.
///
/// The thread is fully started when [`ProgressDisplay::start`] returns, and allocates nothing
/// until the copy has begun (a total is set): `cr_restart` forks its restore process in
/// between, and a fork from a process whose other thread holds the allocator's lock would
/// leave the child stuck.
pub struct ProgressDisplay {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressDisplay {
    /// Starts watching `p`; `verb` says what is being done ("saving", "restoring").
    pub fn start(p: std::sync::Arc<crest_kinds::progress::Progress>, verb: &'static str, quiet: bool) -> Self {
        use std::io::IsTerminal;
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if quiet || !std::io::stderr().is_terminal() {
            return ProgressDisplay { stop, thread: None };
        }
        let flag = stop.clone();
        let (started, wait_started) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::spawn(move || {
            let _ = started.send(());
            let t = std::time::Instant::now();
            while t.elapsed() < std::time::Duration::from_secs(1) || p.get().1 == 0 {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix} {bytes}/{total_bytes} of memory, {binary_bytes_per_sec}, {eta} left {wide_bar}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_prefix(verb);
            while !flag.load(Ordering::Relaxed) {
                let (done, total) = p.get();
                bar.set_length(total);
                bar.set_position(done);
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        let _ = wait_started.recv();
        ProgressDisplay { stop, thread: Some(thread) }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
