//! The command-line definitions of every crest command, in one place: the commands parse
//! with them, and the man pages and shell completions are generated from them, so `--help`,
//! the manual and the completions never disagree.
use clap::{Arg, ArgAction, Command};

use crate::{signal_args, VERSION};

/// The words an option's help starts with when the command accepts it but refuses to carry
/// it out (it exits 22, EINVAL). Such an option is documented in `--help` and the man page,
/// and shell completions do not offer it; every other documented option works.
pub const NOT_IMPLEMENTED: &str = "not implemented";

/// Every command, for generators.
pub fn all() -> Vec<Command> {
    vec![checkpoint(), restart(), info(), check(), run(), slurm(), coord()]
}

/// Whether the help of `arg` says that the command refuses it ([`NOT_IMPLEMENTED`]).
pub fn is_refused(arg: &Arg) -> bool {
    arg.get_help().is_some_and(|h| h.to_string().contains(NOT_IMPLEMENTED))
}

/// `cmd` as shell completions offer it: only the options `--help` shows and that work (not
/// the hidden ones kept for BLCR's scripts, not the refused ones).
pub fn offered(cmd: &Command) -> Command {
    // A command's name must live for ever; the commands' names are a few bytes, once.
    let name: &'static str = Box::leak(cmd.get_name().to_string().into_boxed_str());
    let mut c = Command::new(name).disable_help_flag(true).disable_version_flag(true);
    if let Some(about) = cmd.get_about() {
        c = c.about(about.clone());
    }
    cmd.get_arguments().filter(|a| !a.is_hide_set() && !is_refused(a)).fold(c, |c, a| c.arg(a.clone()))
}

/// `-h`/`-?`/`--help` and `--version` (also `-v` where BLCR had it so), the same in every command.
fn help_and_version(cmd: Command, short_version: bool) -> Command {
    let version = Arg::new("version").long("version").action(ArgAction::Version).help("print the version");
    let version = if short_version { version.short('v').help("print the version (-v as in BLCR's cr_restart)") } else { version };
    cmd.disable_help_flag(true).disable_version_flag(true).version(VERSION).arg(Arg::new("help").short('h').short_alias('?').long("help").action(ArgAction::Help).help("print this help")).arg(version)
}

/// `cr_checkpoint`'s options, as BLCR 0.8.6 spells them.
pub fn checkpoint() -> Command {
    let cmd = Command::new("cr_checkpoint")
        .about("Checkpoint a running process to a file")
        .override_usage("cr_checkpoint [options] ID")
        .arg(Arg::new("id").value_name("ID").required(true).value_parser(clap::value_parser!(i32)).help("PID (or PGID/SID with --pgid/--sid)"))
        .arg(Arg::new("tree").short('T').long("tree").action(ArgAction::SetTrue).help("ID is a PID: the process and all its descendants (the default)"))
        .arg(Arg::new("pid").short('p').long("pid").visible_alias("process").action(ArgAction::SetTrue).help("ID is a PID: that one process, all of its threads"))
        .arg(Arg::new("pgid").short('g').long("pgid").visible_alias("group").action(ArgAction::SetTrue).help("ID is a process group: every process in it"))
        .arg(Arg::new("sid").short('s').long("sid").visible_alias("session").action(ArgAction::SetTrue).help("ID is a session: every process in it"))
        .arg(Arg::new("file").short('f').long("file").value_name("FILE").help("write the image to FILE"))
        .arg(Arg::new("fd").short('F').long("fd").value_name("FD").value_parser(clap::value_parser!(i32).range(0..)).help("write the image to the open descriptor FD"))
        .arg(Arg::new("stream").long("stream").action(ArgAction::SetTrue).help(
            "write the image in its stream form, metadata first (for `cr_restart --lazy`, which runs the processes while the pages arrive); with it `-f -` is standard output, and a FILE that is a socket is connected to",
        ))
        .arg(Arg::new("cwd").short('c').long("cwd").action(ArgAction::SetTrue).help("write context.ID in the current directory (the default)"))
        .arg(Arg::new("dir").short('d').long("dir").value_name("DIR").help("write context.ID in DIR"))
        .arg(Arg::new("atomic").long("atomic").action(ArgAction::SetTrue).help("write a temporary file and rename it when whole (the default)"))
        .arg(Arg::new("backup").long("backup").value_name("NAME").num_args(0..=1).require_equals(true).help("like --atomic, and keep an existing file as NAME (default FILE.~N~)"))
        .arg(Arg::new("clobber").long("clobber").action(ArgAction::SetTrue).help("write straight into the destination"))
        .arg(Arg::new("noclobber").long("noclobber").action(ArgAction::SetTrue).help("fail if the destination exists"))
        .arg(Arg::new("sync").long("sync").action(ArgAction::SetTrue).help("fsync the image and its directory (the default)"))
        .arg(Arg::new("nosync").long("nosync").action(ArgAction::SetTrue).help("do not fsync"))
        .arg(Arg::new("time").short('t').long("time").value_name("SEC").value_parser(clap::value_parser!(u64)).help("give up after SEC seconds (0: no limit)"))
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("print nothing on stderr"))
        .arg(Arg::new("verbose").short('v').long("verbose").action(ArgAction::SetTrue).help("say what is saved, where and what happens after, then what was saved (on stderr)"))
        .arg(compress_arg("compress page data with zstd at LEVEL (1..19, default 3), on all cores"))
        .arg(Arg::new("track").long("track").action(ArgAction::SetTrue).help("leave the write tracking armed in the processes (they must run on), for a later --incremental checkpoint"))
        .arg(
            Arg::new("incremental")
                .long("incremental")
                .value_name("PARENT")
                .help("save only the pages written since the checkpoint into PARENT (taken with --track or --incremental), in an image that names PARENT; a full image when that tracking is lost; implies --track"),
        )
        .arg(
            Arg::new("interval")
                .long("interval")
                .value_name("SECONDS")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help("checkpoint every SECONDS until the process ends or cr_checkpoint is stopped: images FILE.1, FILE.2, ..., each incremental to the one before (a full one every 10, or when the tracking was lost), FILE a symbolic link to the newest whole one"),
        )
        .arg(
            Arg::new("keep")
                .long("keep")
                .value_name("N")
                .value_parser(clap::value_parser!(u32).range(1..))
                .help("with --interval (of no effect without it), keep the newest N chains (a full image and those incremental to it; default 2): older ones are removed once a newer one is whole"),
        )
        .arg(
            Arg::new("deleted-max")
                .long("deleted-max")
                .value_name("SIZE")
                .value_parser(parse_size)
                .help("save the contents of files deleted while open or mapped up to SIZE bytes each (suffixes K, M, G; default 64M); a larger one is refused"),
        )
        .arg(
            Arg::new("drop-unsupported")
                .long("drop-unsupported")
                .action(ArgAction::SetTrue)
                .help("checkpoint even a process holding what crest cannot restore yet (sockets, terminals other than standard input, output and error, file locks, other devices): leave those out, restore each such descriptor as a closed socket, and list them in the image (cr_info); without it such a checkpoint is refused"),
        )
        .arg(
            Arg::new("ext-unix-sk")
                .long("ext-unix-sk")
                .action(ArgAction::SetTrue)
                .help("save a unix datagram socket connected to a socket outside the checkpoint: cr_restart connects it again to that socket's address, which must then be bound (to the same socket, or whatever holds the address then); without it such a checkpoint is refused"),
        )
        .arg(
            Arg::new("network-lock")
                .long("network-lock")
                .value_name("HOW")
                .value_parser(["nftables", "skip"])
                .default_value("nftables")
                .help("with --kill, how the TCP connections saved are locked until cr_restart has them back, so that a peer outside the image sees no reset: nftables (the default: their packets are dropped by a table of nft's, which cr_restart removes; a checkpoint where nft cannot run is refused) or skip (no lock: a peer that sends before the restart may see a reset)"),
        );
    let cmd = signal_args(help_and_version(cmd, false)).arg(coordinated_arg("checkpoint"));
    let cmd = [
        ("save-exe", "save the executable's contents in the image"),
        ("save-private", "save the contents of private file mappings (the executable and libraries)"),
        ("save-shared", "save the contents of shared file mappings"),
        ("save-all", "all of the above: the image restarts even where those files changed or are gone"),
        ("save-none", "save no file contents (the default); the --save options add up left to right, this one resets"),
    ]
    .iter()
    .fold(cmd, |c, (n, h)| c.arg(Arg::new(*n).long(*n).action(ArgAction::SetTrue).help(*h)));
    let cmd = [
        ("ptraced-error", "refuse the checkpoint when a process is traced by another (a debugger, strace) (the default)"),
        ("ptraced-skip", "leave out the processes traced by another, and under --tree their descendants; refused only when nothing is left"),
        ("ptraced-allow", "checkpoint traced processes too; Linux lets a process have one tracer only, so while a debugger holds one the checkpoint is refused saying to detach it"),
        ("ptracer-error", "refuse the checkpoint when a process traces one outside it (the default)"),
        ("ptracer-skip", "leave out the processes that trace others, and under --tree their descendants"),
    ]
    .iter()
    .fold(cmd, |c, (n, h)| c.arg(Arg::new(*n).long(*n).action(ArgAction::SetTrue).help(*h)));
    ["kmsg-none", "kmsg-error", "kmsg-warning"].iter().fold(cmd, |c, n| c.arg(Arg::new(*n).long(*n).action(ArgAction::SetTrue).hide(true)))
}

/// A size in bytes, with an optional suffix K, M or G (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (a number of bytes, with K, M or G after it)"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

/// `cr_restart`'s options, as BLCR 0.8.6 spells them.
pub fn restart() -> Command {
    let cmd = Command::new("cr_restart")
        .about("Restart a process from a checkpoint file")
        .override_usage("cr_restart [options] [FILE]")
        .arg(Arg::new("context").value_name("FILE").help("the checkpoint image"))
        .arg(Arg::new("file").short('f').long("file").value_name("FILE").help("the checkpoint image"))
        .arg(Arg::new("fd").short('F').long("fd").value_name("FD").value_parser(clap::value_parser!(i32).range(0..)).help("read the image from descriptor FD"))
        .arg(Arg::new("dir").short('d').long("dir").value_name("DIR").help(format!("{NOT_IMPLEMENTED} (as in BLCR; exits 22): give the image as FILE")))
        .arg(Arg::new("restore-pid").long("restore-pid").action(ArgAction::SetTrue).help("give the process its saved PID (the default)"))
        .arg(Arg::new("no-restore-pid").long("no-restore-pid").action(ArgAction::SetTrue).help("give the process a new PID"))
        .arg(Arg::new("restore-pgid").long("restore-pgid").action(ArgAction::SetTrue).help("give the processes their saved process groups"))
        .arg(Arg::new("no-restore-pgid").long("no-restore-pgid").action(ArgAction::SetTrue).help("join cr_restart's process group (the default)"))
        .arg(Arg::new("restore-sid").long("restore-sid").action(ArgAction::SetTrue).help("give the processes their saved sessions"))
        .arg(Arg::new("no-restore-sid").long("no-restore-sid").action(ArgAction::SetTrue).help("join cr_restart's session (the default)"))
        .arg(Arg::new("relocate").long("relocate").value_name("OLD=NEW").action(ArgAction::Append).help("paths under OLD are looked for under NEW (up to 16)"))
        .arg(Arg::new("run-on-success").long("run-on-success").value_name("CMD").help("run CMD after a successful restart"))
        .arg(Arg::new("run-on-failure").long("run-on-failure").value_name("CMD").help("run CMD after any failure"))
        .arg(Arg::new("run-on-fail-args").long("run-on-fail-args").value_name("CMD").help("run CMD after a usage error"))
        .arg(Arg::new("run-on-fail-temp").long("run-on-fail-temp").value_name("CMD").help("run CMD after a temporary failure (PID in use)"))
        .arg(Arg::new("run-on-fail-env").long("run-on-fail-env").value_name("CMD").help("run CMD after a failure due to the environment (missing file, permission)"))
        .arg(Arg::new("run-on-fail-perm").long("run-on-fail-perm").value_name("CMD").help("run CMD after any other failure"))
        .arg(Arg::new("no-verify").long("no-verify").action(ArgAction::SetTrue).help("do not check page checksums before the restored processes run"))
        .arg(Arg::new("map-pages").long("map-pages").action(ArgAction::SetTrue).help(
            "map the pages of an uncompressed image that nobody can write, on a local file system, from it (shared with the page cache until written) instead of copying them; that memory then behaves as a private mapping of the image: MADV_DONTNEED refills it from the image rather than with zeros, and growing it with mremap maps the image",
        ))
        .arg(Arg::new("lazy").long("lazy").action(ArgAction::SetTrue).help(
            "let the restored processes run before the pages of their private anonymous memory are in: each page is given from the image when first touched (userfaultfd; its page run checked against its checksum first) and the rest are filled in in the background. A page whose data fails its checksum kills the process with a message naming it. cr_restart must stay until every page is in: it does (it waits for the processes anyway), and the --run-on-success hook runs only once every page is in. Needs CAP_SYS_PTRACE (as root) or vm.unprivileged_userfaultfd = 1; shared, locked and droppable memory is restored before the processes run, as without --lazy; overrides --map-pages",
        ))
        .arg(Arg::new("stream-timeout").long("stream-timeout").value_name("SECONDS").value_parser(clap::value_parser!(f64)).help(
            "from an image stream (cr_checkpoint --stream): once its metadata is in, take the stream as lost when no byte comes in for SECONDS (default 60; 0 waits for ever): the restored processes are killed and cr_restart fails, as when the stream is cut short. The sender keeps the image it could not send",
        ))
        .arg(Arg::new("copy-pages").long("copy-pages").action(ArgAction::SetTrue).help("copy every page into the restored processes (the default); overrides --map-pages"))
        .arg(Arg::new("relaxed-stdio").long("relaxed-stdio").action(ArgAction::SetTrue).help(
            "hand cr_restart's standard input, output and error to the restored processes even where they are of another kind than at the checkpoint (a file where there was a terminal); by default such a restart is refused",
        ))
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("print nothing on stderr"));
    let cmd = signal_args(help_and_version(cmd, true)).arg(coordinated_arg("restart"));
    ["omit-maybe", "omit-always", "omit-never", "kmsg-none", "kmsg-error", "kmsg-warning", "early-stop", "early-abrt"]
        .iter()
        .fold(cmd, |c, n| c.arg(Arg::new(*n).long(*n).action(ArgAction::SetTrue).hide(true)))
}

/// `cr_info`'s options.
pub fn info() -> Command {
    let cmd = Command::new("cr_info").about("Describe a crest checkpoint image").override_usage("cr_info [options] FILE");
    help_and_version(cmd, false)
        .arg(Arg::new("file").value_name("FILE").required(true).help("the checkpoint image"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print the whole metadata as JSON"))
        .arg(Arg::new("verify").long("verify").action(ArgAction::SetTrue).help("also read every page run as cr_restart does: its checksum, and that a compressed one decompresses"))
        .arg(Arg::new("merge").long("merge").value_name("OUT").help(
            "write FILE and the chain of images it is incremental to as one standalone image OUT (every run's checksum checked as it is copied; under a temporary name until whole, mode 0400); the images of the chain may then be deleted. OUT may be FILE itself, not one of its parents",
        ))
}

/// `cr_check`'s options.
pub fn check() -> Command {
    let cmd = Command::new("cr_check")
        .about("Report whether this kernel and these privileges allow checkpoint and restart")
        .long_about(
            "Report whether this kernel and these privileges allow checkpoint and restart. Each check prints OK, WARN or MISSING \
             and, when something is missing, what to change. The checks run as the calling user: run cr_check as the user who \
             will run cr_checkpoint and cr_restart.",
        )
        .override_usage("cr_check [options]");
    help_and_version(cmd, false)
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("print nothing; the exit status tells"))
        .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("print the results as JSON"))
}

/// `cr_run`'s options, as BLCR 0.8.6 spells them: only leading options, then the command.
pub fn run() -> Command {
    let cmd = Command::new("cr_run")
        .about("Run a program with libcr's preload library")
        .long_about(
            "Run COMMAND with BLCR's preload library (libcr_run.so.0, or libcr_omit.so.0 with --omit) added to LD_PRELOAD, \
             as BLCR's cr_run did. crest checkpoints any process without it; libcr_omit leaves the program out of every \
             checkpoint that would hold it. A statically linked program cannot preload a library: cr_run says so and runs it \
             as it is.",
        )
        .override_usage("cr_run [--omit|--run] [--] COMMAND [ARGS...]");
    help_and_version(cmd, false)
        .arg(Arg::new("omit").long("omit").action(ArgAction::SetTrue).help("preload libcr_omit: the program is left out of every checkpoint"))
        .arg(Arg::new("run").long("run").action(ArgAction::SetTrue).help("preload libcr_run (the default); overrides an earlier --omit"))
        .arg(Arg::new("command").value_name("COMMAND").required(true).num_args(1..).trailing_var_arg(true).help("the program to run, and its arguments"))
}

/// `cr_slurm`'s options: the batch-job wrapper (no BLCR counterpart).
pub fn slurm() -> Command {
    let cmd = Command::new("cr_slurm")
        .about("Run a batch job's command so that it survives requeueing: checkpoint it when warned, restart it when run again")
        .long_about(
            "Run COMMAND as a SLURM batch job's work, and checkpoint its whole process tree into a directory kept per job: on \
             the warning signal (sbatch --signal=B:USR1@SECONDS), every --period seconds, and on SIGTERM when COMMAND ignores \
             it. After the warning's checkpoint COMMAND is ended and the job requeued (scontrol requeue); when the job runs \
             again and an image is there, cr_slurm restarts COMMAND from the newest image instead of starting it over, with \
             its saved PIDs when they are free and new ones otherwise. An image is written under a temporary name and given \
             its name only when whole; the older ones beyond --keep are removed only then. When COMMAND ends by itself, \
             cr_slurm exits as it did, and removes the job's images if that was with status 0.",
        )
        .override_usage("cr_slurm [options] [--] COMMAND [ARGS...]");
    help_and_version(cmd, false)
        .arg(Arg::new("dir").short('d').long("dir").value_name("DIR").help("keep the images in DIR/JOB (default: $CREST_SLURM_DIR, else crest-checkpoints in the current directory)"))
        .arg(Arg::new("job-id").short('j').long("job-id").value_name("JOB").help("the key of the job's images (default: $SLURM_JOB_ID); give the old one to a resubmitted job to restart it"))
        .arg(Arg::new("keep").short('k').long("keep").value_name("N").value_parser(clap::value_parser!(u32).range(1..)).help("keep the newest N images (default 2)"))
        .arg(
            Arg::new("period")
                .short('p')
                .long("period")
                .value_name("SEC")
                .value_parser(clap::value_parser!(u64))
                .help("also checkpoint every SEC seconds while COMMAND runs on (0: never, the default)"),
        )
        .arg(
            Arg::new("warning")
                .short('w')
                .long("warning")
                .value_name("SIG")
                .value_parser(parse_signal)
                .help("the warning signal: checkpoint, end COMMAND, requeue the job (default USR1; a name or a number)"),
        )
        .arg(
            Arg::new("no-requeue")
                .long("no-requeue")
                .action(ArgAction::SetTrue)
                .help("after the warning's checkpoint, exit 85 without running scontrol requeue (for a site that lists 85 in RequeueExit)"),
        )
        .arg(Arg::new("no-restore-pid").long("no-restore-pid").action(ArgAction::SetTrue).help("restart with new PIDs even when the saved ones are free"))
        .arg(Arg::new("fresh").long("fresh").action(ArgAction::SetTrue).help("start COMMAND over, ignoring (and removing) the job's images"))
        .arg(
            Arg::new("time")
                .short('t')
                .long("time")
                .value_name("SEC")
                .value_parser(clap::value_parser!(u64))
                .help("give up a checkpoint after SEC seconds, COMMAND running on (0: no limit, the default)"),
        )
        .arg(compress_arg("compress page data with zstd at LEVEL (1..19, default 3)"))
        .arg(
            Arg::new("drop-unsupported")
                .long("drop-unsupported")
                .action(ArgAction::SetTrue)
                .help("checkpoint even what holds objects crest cannot restore yet, leaving those out (as cr_checkpoint --drop-unsupported)"),
        )
        .arg(
            Arg::new("save-shared")
                .long("save-shared")
                .action(ArgAction::SetTrue)
                .help("save the contents of shared file mappings (an MPI job's segments in /dev/shm), as cr_checkpoint --save-shared: needed with --period when the command runs on after its images"),
        )
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("print only failures on stderr"))
        .arg(Arg::new("command").value_name("COMMAND").required(true).num_args(1..).trailing_var_arg(true).help("the program to run, and its arguments"))
}

/// `--coordinated`: the command is one part of a job checkpointed or restarted at one
/// instant by `cr_coord`, which it answers on standard input and output.
fn coordinated_arg(what: &'static str) -> Arg {
    Arg::new("coordinated").long("coordinated").action(ArgAction::SetTrue).help(format!(
        "{what} one part of a job spread over several hosts at one instant with the others: run by cr_coord, which it tells and waits for on standard input and output at each step (see cr_coord)"
    ))
}

/// `cr_coord`'s options: one checkpoint or restart of a job spread over several hosts (no
/// BLCR counterpart).
pub fn coord() -> Command {
    let cmd = Command::new("cr_coord")
        .about("Checkpoint or restart at one instant a job whose processes run on several hosts")
        .long_about(
            "Checkpoint (or with --restart, restart) at one instant a job whose processes run on several hosts and talk \
             over TCP. cr_coord runs cr_checkpoint --coordinated --tree (or cr_restart --coordinated) for each PART on its \
             host, through the command --via names (ssh by default; srun inside a SLURM allocation), and steps them \
             together: every part frozen before any is saved, every image whole before any is named and its processes let \
             go or killed; at restart, every part restored, its connections still silent in repair mode, before any runs. \
             A part that fails calls the others off: at checkpoint every process runs on as it was and no image is named. \
             Connections between parts are saved at both ends while both are frozen, so that none loses or repeats a byte. \
             A checkpoint part is HOST:PID:IMAGE (the process tree under PID on HOST, into the file IMAGE there), a \
             restart part HOST:IMAGE. At restart cr_coord waits until every part's restored processes end, as mpiexec \
             does.",
        )
        .override_usage("cr_coord [options] HOST:PID:IMAGE...\n       cr_coord --restart [options] HOST:IMAGE...");
    signal_args(help_and_version(cmd, false))
        .arg(Arg::new("restart").long("restart").action(ArgAction::SetTrue).help("restart every part from its image (HOST:IMAGE) rather than checkpoint it"))
        .arg(
            Arg::new("via")
                .long("via")
                .value_name("COMMAND")
                .help("how to run a command on a host: words, {host} replaced by the part's host (default: ssh {host}; e.g. srun -N1 -n1 --overlap -w {host}, or nsenter --net=/run/netns/{host})"),
        )
        .arg(Arg::new("bin-dir").long("bin-dir").value_name("DIR").help("where cr_checkpoint and cr_restart are on the hosts (default: found on each host's PATH)"))
        .arg(
            Arg::new("option")
                .long("option")
                .short('o')
                .value_name("OPT")
                .action(ArgAction::Append)
                .allow_hyphen_values(true)
                .help("pass OPT on to every part's cr_checkpoint or cr_restart (repeatable)"),
        )
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("print only failures on stderr"))
        .arg(Arg::new("part").value_name("PART").required(true).num_args(1..).help("HOST:PID:IMAGE to checkpoint, HOST:IMAGE with --restart"))
}

/// A signal by name (`USR1`, `SIGUSR1`, any case) or number (1..64).
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) { Ok(n) } else { Err(format!("{n} is not a signal number (1..64)")) };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    (1..=64).find(|&n| crate::signal_name(n).strip_prefix("SIG") == Some(name)).ok_or_else(|| format!("{s:?} is not a signal (a name such as USR1, or a number)"))
}

/// `-z`/`--compress[=LEVEL]`, as `cr_checkpoint` and `cr_slurm` take it.
fn compress_arg(help: &'static str) -> Arg {
    Arg::new("compress").short('z').long("compress").value_name("LEVEL").num_args(0..=1).require_equals(true).default_missing_value("3").value_parser(clap::value_parser!(i32).range(1..=19)).help(help)
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals_read_by_name_or_number() {
        assert_eq!(super::parse_signal("USR1"), Ok(libc::SIGUSR1));
        assert_eq!(super::parse_signal("sigterm"), Ok(libc::SIGTERM));
        assert_eq!(super::parse_signal("12"), Ok(12));
        assert!(super::parse_signal("0").is_err() && super::parse_signal("NOPE").is_err());
    }

    #[test]
    fn sizes_read_with_their_suffixes() {
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert_eq!(super::parse_size("8K"), Ok(8 << 10));
        assert_eq!(super::parse_size("64m"), Ok(64 << 20));
        assert_eq!(super::parse_size("2G"), Ok(2 << 30));
        assert!(super::parse_size("big").is_err() && super::parse_size("-1").is_err() && super::parse_size("99999999999G").is_err());
    }
}
