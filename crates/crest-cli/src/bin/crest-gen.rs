//! `crest-gen OUTDIR`: writes the man pages and shell completions of every crest command into
//! OUTDIR, from the same `clap` definitions the commands parse with (`crest_cli::commands`),
//! so `--help`, the manual and the completions cannot disagree. Run by `make install` and the
//! package targets; not installed itself (the Makefile installs the commands by name).
//!
//! ```text
//! OUTDIR/man/man1/CMD.1                  NAME, SYNOPSIS, DESCRIPTION, OPTIONS from clap,
//!                                        EXIT STATUS from crest_cli::exits, then
//!                                        ENVIRONMENT, FILES, SEE ALSO below
//! OUTDIR/completions/bash/CMD            bash-completion (share/bash-completion/completions)
//! OUTDIR/completions/zsh/_CMD            zsh (share/zsh/site-functions)
//! OUTDIR/completions/fish/CMD.fish       fish (share/fish/vendor_completions.d)
//! ```
//!
//! The completions offer the options `--help` shows that work (`commands::offered`).
//! `crest-gen --exit-codes` prints the exit-code table as the README holds it.
//!
//! The output is byte-for-byte reproducible: no dates, no paths of the build machine.
#![forbid(unsafe_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;
use roff::{bold, italic, roman, Inline, Roff};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args == ["--exit-codes"] {
        print!("{}", crest_cli::exits::markdown());
        return;
    }
    let [out] = args.as_slice() else {
        eprintln!("usage: crest-gen OUTDIR | crest-gen --exit-codes");
        std::process::exit(crest_cli::exits::USAGE);
    };
    if let Err(e) = generate(Path::new(out)) {
        eprintln!("crest-gen: {e}");
        std::process::exit(1);
    }
}

fn generate(out: &Path) -> std::io::Result<()> {
    let man = out.join("man/man1");
    fs::create_dir_all(&man)?;
    for cmd in crest_cli::commands::all() {
        let name = cmd.get_name().to_string();
        let mut page = Vec::new();
        render_man(cmd.clone(), &mut page)?;
        write(&man.join(format!("{name}.1")), &page)?;
        for (shell, dir, file) in [(Shell::Bash, "bash", name.clone()), (Shell::Zsh, "zsh", format!("_{name}")), (Shell::Fish, "fish", format!("{name}.fish"))] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut crest_cli::commands::offered(&cmd), name.as_str(), &mut buf);
            let d = out.join("completions").join(dir);
            fs::create_dir_all(&d)?;
            write(&d.join(file), &buf)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path`, naming the path in any error.
fn write(path: &PathBuf, bytes: &[u8]) -> std::io::Result<()> {
    fs::File::create(path).and_then(|mut f| f.write_all(bytes)).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// One man page: clap's sections, then the hand-written ones of [`extra`].
fn render_man(cmd: Command, w: &mut Vec<u8>) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let man = clap_mangen::Man::new(cmd.clone()).source(format!("crest {}", crest_cli::VERSION)).manual("crest manual");
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    let mut roff = Roff::new();
    let mut sections = extra(&name);
    let hidden: Vec<String> = cmd.get_arguments().filter(|a| a.is_hide_set()).filter_map(|a| a.get_long()).map(|l| format!("--{l}")).collect();
    if !hidden.is_empty() {
        let at = sections.iter().position(|s| s.0 == "EXIT STATUS").unwrap_or(0);
        sections.insert(at, ("COMPATIBILITY", vec![text(&format!("Accepted so that BLCR's scripts run, and without effect in crest: {}.", hidden.join(", ")))]));
    }
    for (heading, paragraphs) in sections {
        roff.control("SH", [heading]);
        for p in paragraphs {
            match p {
                Para::Text(t) => {
                    roff.control("PP", []).text(t);
                }
                Para::Item(tag, t) => {
                    roff.control("TP", []).text(tag).text(t);
                }
            }
        }
    }
    roff.to_writer(w)?;
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

/// A paragraph of a hand-written section.
#[derive(Clone)]
enum Para {
    Text(Vec<Inline>),
    /// A tagged paragraph (`.TP`): the tag, then its text.
    Item(Vec<Inline>, Vec<Inline>),
}

fn text(s: &str) -> Para {
    Para::Text(vec![roman(s)])
}

fn item(tag: &str, s: &str) -> Para {
    Para::Item(vec![bold(tag)], vec![roman(s)])
}

fn see_also(name: &str) -> Para {
    let others: Vec<&str> = ["cr_checkpoint", "cr_restart", "cr_info", "cr_check", "cr_run", "cr_slurm", "cr_coord"].into_iter().filter(|n| *n != name).collect();
    let mut v = Vec::new();
    for (i, n) in others.iter().enumerate() {
        v.push(bold(*n));
        v.push(roman(if i + 1 < others.len() { "(1), " } else { "(1)" }));
    }
    v.push(roman(". The administrator's guide, "));
    v.push(italic("admin-guide.md"));
    v.push(roman(", is installed in the crest documentation directory (PREFIX/share/doc/crest)."));
    Para::Text(v)
}

/// The EXIT STATUS section of `name`: its rows of the one table of exit codes.
fn exit_status(name: &str) -> (&'static str, Vec<Para>) {
    let mut v: Vec<Para> = crest_cli::exits::of(name)
        .map(|e| {
            let meaning = e.meaning.split_whitespace().collect::<Vec<_>>().join(" ");
            item(&e.code.to_string(), &if e.name.is_empty() { meaning } else { format!("{}: {meaning}", e.name) })
        })
        .collect();
    v.push(text("The commands share one table of exit codes (BLCR's convention: 0, an errno value, 255 for a usage error); the README holds all of it."));
    if name == "cr_restart" {
        v.push(text("A --run-on-* command that exits non-zero replaces the status with its own, as in BLCR."));
    }
    ("EXIT STATUS", v)
}

/// The sections clap does not know about, per command.
fn extra(name: &str) -> Vec<(&'static str, Vec<Para>)> {
    let timing = item("CREST_TIMING", "When set (to anything), print one line of timings on standard error.");
    match name {
        "cr_checkpoint" => vec![
            exit_status(name),
            ("ENVIRONMENT", vec![
                timing.clone(),
                item("CREST_NO_SNAPSHOT", "When set, a checkpoint that lets the process run on keeps it frozen until the image is whole, instead of saving its pages from a copy-on-write snapshot while it runs."),
            ]),
            ("FILES", vec![item("context.PID", "The default image, in the current directory, mode 0400: it holds the process's memory.")]),
            ("SEE ALSO", vec![see_also(name)]),
        ],
        "cr_restart" => vec![
            ("SIGNALS", vec![
                text("cr_restart stays in the foreground as the parent of the eldest restored process. The signal chosen with --term, --kill, --signal and the like goes to every restored process, as in BLCR."),
                text("A signal sent to cr_restart is passed on to the eldest restored process, as BLCR's cr_restart did (SIGTSTP, SIGTTIN and SIGTTOU also stop cr_restart). The signals that end a job, SIGHUP, SIGINT, SIGQUIT and SIGTERM, go to every restored process still alive, so that none is left running when cr_restart is told to end, even with --restore-pgid or --restore-sid (BLCR left the eldest's descendants running then). A signal the kernel sent to cr_restart's whole process group, such as a terminal's ^C, is not sent again to the restored processes in that group. SIGKILL cannot be passed on."),
            ]),
            exit_status(name),
            ("ENVIRONMENT", vec![timing]),
            ("SEE ALSO", vec![see_also(name)]),
        ],
        "cr_info" => vec![
            exit_status(name),
            ("SEE ALSO", vec![see_also(name)]),
        ],
        "cr_check" => vec![
            ("OUTPUT", vec![
                text("One line per check: OK, WARN (works, with a limit) or MISSING (does not work here), the check's name and what was found; under a WARN or MISSING line, what to change. The last line says whether checkpoint and restart are ready."),
            ]),
            exit_status(name),
            ("SEE ALSO", vec![see_also(name)]),
        ],
        "cr_run" => vec![
            exit_status(name),
            ("ENVIRONMENT", vec![
                item("LD_PRELOAD", "Set for COMMAND to the preload library's soname, followed by the entries it had, less any libcr_run or libcr_omit; the library is found by the dynamic loader's search (ld.so.cache, LD_LIBRARY_PATH)."),
            ]),
            ("FILES", vec![
                item("libcr_run.so.0, libcr_omit.so.0", "The preload libraries, installed in PREFIX/lib with libcr.so.0, the library BLCR-aware programs link with (-lcr, or pkg-config libcr)."),
            ]),
            ("SEE ALSO", vec![see_also(name)]),
        ],
        "cr_slurm" => vec![
            ("SIGNALS", vec![
                item("the warning signal (SIGUSR1, or --warning)", "Checkpoint the command, kill it once the image is whole, requeue the job with scontrol requeue and exit 85. Ask SLURM for it with sbatch --signal=B:USR1@SECONDS (B: sends it to the batch shell only, which should exec cr_slurm), and with PreemptParameters=send_user_signal at preemption. If the checkpoint fails, the command runs on and the job is not requeued."),
                item("SIGTERM, SIGINT, SIGHUP, SIGQUIT", "SLURM sends SIGTERM to every process of the job when it ends, preempts or requeues it. A command that does not ignore the signal ends by it, so cr_slurm takes no checkpoint then: the job restarts from the last whole image (hence --period). A command whose every process ignores it is checkpointed and killed, and cr_slurm exits 85. A checkpoint in progress when such a signal comes is finished but its image is thrown away, as it may hold the signal."),
                item("other signals", "Passed on to the command (its eldest process), as cr_restart does."),
            ]),
            exit_status(name),
            ("ENVIRONMENT", vec![
                item("SLURM_JOB_ID", "The job's key, unless --job-id gives one: its images are DIR/JOB."),
                item("CREST_SLURM_DIR", "The image directory DIR, unless --dir gives one."),
                item("SLURM_RESTART_COUNT", "Shown in the message of a restart."),
            ]),
            ("FILES", vec![
                item("DIR/JOB/image.N", "The job's images, N counting up; the newest --keep are kept, mode 0400. They are removed when the command ends with status 0."),
                item("DIR/JOB/image.N.part", "An image being written; renamed to image.N when whole, removed when cr_slurm starts."),
            ]),
            ("SEE ALSO", vec![see_also(name), Para::Text(vec![bold("sbatch"), roman("(1), "), bold("scontrol"), roman("(1).")])]),
        ],
        "cr_coord" => vec![
            ("STEPS", vec![
                text("Each part's command tells cr_coord where it stands on its standard output, one word a line, and waits for go on its standard input; any transport that carries both joins them (ssh HOST, srun -w HOST, nsenter)."),
                item("checkpoint", "armed: the part is started and its image file open, nothing frozen yet (cr_coord says go once every part is armed, so that parts started at different moments freeze together). frozen: the part's processes are frozen, nothing read yet. whole: its image is written, not named yet. done: named, and the processes let go (or killed, or signalled). cr_coord says go once every part has said frozen, and again once every part has said whole."),
                item("restart", "ready: the part's processes are restored, not running, their TCP connections in repair mode (silent). running PID: they run. cr_coord says go once every part is ready."),
                item("calling off", "A part that fails, or ends without its word, makes cr_coord say abort to every other part: a checkpoint part lets its processes go as they were and names no image; a restart part kills what it restored."),
            ]),
            ("DOWNTIME", vec![text("After a checkpoint cr_coord prints how long each part stood frozen and how long the whole job did, from the first freeze to the last release, by the hosts' clocks (their skew is in that figure). Every part stays frozen until every part is saved, so a part on a slow file system holds the whole job.")]),
            exit_status(name),
            ("SEE ALSO", vec![see_also(name), Para::Text(vec![bold("ssh"), roman("(1), "), bold("srun"), roman("(1), "), bold("nsenter"), roman("(1).")])]),
        ],
        _ => vec![("SEE ALSO", vec![see_also(name)])],
    }
}
