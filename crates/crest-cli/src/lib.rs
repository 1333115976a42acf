//! What the crest commands share: BLCR's after-action signal flags, version strings and the
//! user-facing error sentence.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use clap::{Arg, ArgAction, ArgMatches, Command};

pub mod commands;
pub mod preflight;

/// The version the commands print.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

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

/// The name of a signal number, for messages.
pub fn signal_name(sig: i32) -> String {
    let names = [
        "", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE",
        "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ",
        "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
    ];
    names.get(sig as usize).filter(|n| !n.is_empty()).map_or_else(|| format!("signal {sig}"), |n| n.to_string())
}

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
