//! The one table of exit codes of all the commands. The man pages' EXIT STATUS sections are
//! generated from it (`crest-gen`), the README holds it as [`markdown`] renders it (a test
//! compares them). The codes come from the libraries' one mapping of a failure to an exit
//! status, [`crest_kinds::exit::ErrorKind::code`], which the commands exit with.
//!
//! The convention is BLCR's: 0 for success, 255 for a usage error, and otherwise the errno
//! value of the cause, so that one number means one thing in every command.

use crest_kinds::exit::ErrorKind;

/// A usage error: unknown option, missing or extra operand, bad value (BLCR's `exit(-1)`).
pub const USAGE: i32 = ErrorKind::Usage.code();
/// BLCR's `CR_EPTRACED` (2360) as an exit code: the process is traced by someone else.
pub const PTRACED: i32 = ErrorKind::Traced.code();
/// BLCR's `CR_EPTRACER` (2361) as an exit code: the process traces others.
pub const PTRACER: i32 = ErrorKind::Tracer.code();

/// One exit code: its number, the errno name behind it, what it means, and which commands
/// use it.
pub struct Exit {
    /// The exit status.
    pub code: i32,
    /// The errno (or BLCR) name it comes from, empty when none.
    pub name: &'static str,
    /// What it means, in a sentence.
    pub meaning: &'static str,
    /// The commands that exit with it.
    pub commands: &'static [&'static str],
}

const CK: &str = "cr_checkpoint";
const RS: &str = "cr_restart";
const INFO: &str = "cr_info";
const CHECK: &str = "cr_check";
const RUN: &str = "cr_run";
const SLURM: &str = "cr_slurm";
const COORD: &str = "cr_coord";
/// Every command, for the table's "all".
const ALL: &[&str] = &[CK, RS, INFO, CHECK, RUN, SLURM, COORD];

/// Every exit code of every command, in numeric order.
pub const TABLE: &[Exit] = &[
    Exit {
        code: 0,
        name: "",
        meaning: "Success: the image was written (cr_checkpoint), described or verified (cr_info), checkpoint and restart work here \
                  (cr_check). cr_restart exits with the restored process's own status once it runs, or dies by the signal that \
                  killed it, as BLCR's did; cr_slurm likewise with its command's, whether started or restarted. cr_coord exits \
                  0 when every part did; otherwise with the status of the part that failed first (every other part \
                  called off), which is one of cr_checkpoint's or cr_restart's (or the transport's).",
        commands: ALL,
    },
    Exit {
        code: ErrorKind::NotPermitted.code(),
        name: "EPERM",
        meaning: "Not permitted: tracing the process is not allowed (another user's, set-user-ID, kernel.yama.ptrace_scope), \
                  restoring its PID needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN (try --no-restore-pid), or the image's \
                  process had credentials the restarting user lacks. cr_checkpoint also exits 1 when its checkpointing \
                  process was killed (as BLCR's); cr_check exits 1 when something checkpoint or restart needs is missing here.",
        commands: &[CK, RS, CHECK, SLURM],
    },
    Exit {
        code: ErrorKind::NotFound.code(),
        name: "ENOENT",
        meaning: "A file the image refers to is missing (see --relocate), or the directory of the destination does not exist.",
        commands: &[CK, RS, SLURM],
    },
    Exit { code: ErrorKind::NoProcess.code(), name: "ESRCH", meaning: "No such process, or it ended during the checkpoint.", commands: &[CK] },
    Exit { code: ErrorKind::Interrupted.code(), name: "EINTR", meaning: "Interrupted by SIGINT, SIGTERM, SIGHUP or SIGQUIT; the process was left running as it was.", commands: &[CK] },
    Exit {
        code: ErrorKind::Failed.code(),
        name: "EIO",
        meaning: "Any other failure; the message says what. (A few rarer causes exit with their own errno value, as in BLCR: \
                  20 ENOTDIR for a path that is not a directory any more, 12 ENOMEM, 10 ECHILD.)",
        commands: &[CK, RS, SLURM],
    },
    Exit { code: ErrorKind::BadDescriptor.code(), name: "EBADF", meaning: "The descriptor given with --fd is not open (for writing, or for reading).", commands: &[CK, RS] },
    Exit { code: 13, name: "EACCES", meaning: "Permission denied: the image (cr_slurm: the job's image directory) cannot be created in that directory.", commands: &[CK, SLURM] },
    Exit { code: ErrorKind::PidInUse.code(), name: "EBUSY", meaning: "The saved PID is in use (try --no-restore-pid).", commands: &[RS] },
    Exit { code: 17, name: "EEXIST", meaning: "The destination exists and --noclobber was given.", commands: &[CK] },
    Exit { code: 21, name: "EISDIR", meaning: "The destination is a directory (use --dir).", commands: &[CK] },
    Exit {
        code: ErrorKind::Invalid.code(),
        name: "EINVAL",
        meaning: "Invalid: the file is not a valid crest image (corrupt, truncated, foreign, a page checksum fails); or \
                  conflicting destinations, a bad --relocate, or an option that is not implemented (cr_restart --dir). cr_slurm: \
                  no image of the job is valid (each one tried, newest first).",
        commands: &[CK, RS, INFO, SLURM],
    },
    Exit { code: 28, name: "ENOSPC", meaning: "No space left on the device (27 EFBIG, 122 EDQUOT and 30 EROFS likewise name why the image could not be written).", commands: &[CK] },
    Exit {
        code: 2354 & 0xff,
        name: "CR_ETEMPFAIL",
        meaning: "A libcr callback of the process cancelled the checkpoint for now (CR_CHECKPOINT_TEMP_FAILURE); it runs on. A callback's own \
                  code v (CR_CHECKPOINT_TEMP_FAILURE_CODE(v)) gives v & 0xff instead.",
        commands: &[CK],
    },
    Exit {
        code: 2355 & 0xff,
        name: "CR_EPERMFAIL",
        meaning: "A libcr callback cannot let the process be checkpointed (CR_CHECKPOINT_PERM_FAILURE): every process of the request was killed.",
        commands: &[CK],
    },
    Exit {
        code: PTRACED,
        name: "CR_EPTRACED",
        meaning: "The process is already traced: by another checkpoint or by a debugger (see --ptraced-skip); or every process was left out by --ptraced-skip or --ptracer-skip.",
        commands: &[CK],
    },
    Exit { code: PTRACER, name: "CR_EPTRACER", meaning: "A process traces others outside the checkpoint, as a debugger does (see --ptracer-skip).", commands: &[CK] },
    Exit {
        code: libc::ERESTART,
        name: "ERESTART",
        meaning: "cr_slurm checkpointed its command and ended it (on the warning signal, or on a SIGTERM the command ignores) and the \
                  job was requeued (with --no-requeue: is left for SLURM's RequeueExit); the job restarts from that image.",
        commands: &[SLURM],
    },
    Exit { code: ErrorKind::Unsupported.code(), name: "EOPNOTSUPP", meaning: "The process holds something crest cannot save yet; it goes on unharmed.", commands: &[CK] },
    Exit { code: ErrorKind::TimedOut.code(), name: "ETIMEDOUT", meaning: "The --time limit ran out; the process was left running as it was.", commands: &[CK] },
    Exit {
        code: 127,
        name: "",
        meaning: "cr_run or cr_slurm could not start the command (not found, not executable); otherwise cr_run becomes the command and exits as it does.",
        commands: &[RUN, SLURM],
    },
    Exit {
        code: USAGE,
        name: "",
        meaning: "A usage error (unknown option, missing or extra operand, bad value); and for cr_restart and cr_info, an image \
                  that cannot be opened or read (missing, unreadable, a directory), as BLCR's cr_restart; for cr_slurm, no job \
                  (neither SLURM_JOB_ID nor --job-id).",
        commands: ALL,
    },
];

/// The rows of [`TABLE`] that `command` uses.
pub fn of(command: &str) -> impl Iterator<Item = &'static Exit> + '_ {
    TABLE.iter().filter(move |e| e.commands.contains(&command))
}

/// The table as Markdown, as the README holds it between its `exit-codes` markers.
pub fn markdown() -> String {
    let mut s = String::from("| exit | errno | meaning | commands |\n| --- | --- | --- | --- |\n");
    for e in TABLE {
        let meaning: String = e.meaning.split_whitespace().collect::<Vec<_>>().join(" ");
        let cmds = if e.commands.len() == ALL.len() { "all".to_string() } else { e.commands.join(", ") };
        s.push_str(&format!("| {} | {} | {} | {} |\n", e.code, if e.name.is_empty() { "" } else { e.name }, meaning, cmds));
    }
    s
}

#[cfg(test)]
mod tests {
    /// The README holds exactly the table the man pages are generated from.
    #[test]
    fn readme_holds_the_exit_code_table() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README.md");
        let begin = "<!-- exit-codes:begin (generated: crest-gen --exit-codes) -->\n";
        let end = "<!-- exit-codes:end -->";
        let at = readme.find(begin).expect("the README marks its exit-code table") + begin.len();
        let len = readme[at..].find(end).expect("the README ends its exit-code table");
        assert_eq!(&readme[at..at + len], super::markdown(), "README.md's exit-code table differs from crest_cli::exits::TABLE; paste `crest-gen --exit-codes`");
    }

    #[test]
    fn codes_are_in_order_and_fit_a_byte() {
        assert!(super::TABLE.windows(2).all(|w| w[0].code < w[1].code));
        assert!(super::TABLE.iter().all(|e| (0..=255).contains(&e.code)));
    }
}
