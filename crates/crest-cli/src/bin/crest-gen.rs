//! `crest-gen OUTDIR`: writes the man pages and shell completions of every crest command into
//! OUTDIR, from the same `clap` definitions the commands parse with (`crest_cli::commands`),
//! so `--help`, the manual and the completions cannot disagree. Run by `make install` and the
//! package targets; not installed itself (the Makefile installs the commands by name).
//!
//! ```text
//! OUTDIR/man/man1/CMD.1                  NAME, SYNOPSIS, DESCRIPTION, OPTIONS from clap,
//!                                        then EXIT STATUS, ENVIRONMENT, FILES, SEE ALSO below
//! OUTDIR/completions/bash/CMD            bash-completion (share/bash-completion/completions)
//! OUTDIR/completions/zsh/_CMD            zsh (share/zsh/site-functions)
//! OUTDIR/completions/fish/CMD.fish       fish (share/fish/vendor_completions.d)
//! ```
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
    let [out] = args.as_slice() else {
        eprintln!("usage: crest-gen OUTDIR");
        std::process::exit(2);
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
            clap_complete::generate(shell, &mut cmd.clone(), name.as_str(), &mut buf);
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
    for (heading, paragraphs) in extra(&name) {
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
    let others: Vec<&str> = ["cr_checkpoint", "cr_restart", "cr_info", "cr_check"].into_iter().filter(|n| *n != name).collect();
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

/// The sections clap does not know about, per command.
fn extra(name: &str) -> Vec<(&'static str, Vec<Para>)> {
    let timing = item("CREST_TIMING", "When set (to anything), print one line of timings on standard error.");
    match name {
        "cr_checkpoint" => vec![
            ("EXIT STATUS", vec![
                item("0", "The image was written (and the after-action, if any, done)."),
                item("1", "EPERM: not permitted to trace the process (another user's, a setuid program, or kernel.yama.ptrace_scope forbids it)."),
                item("3", "ESRCH: no such process."),
                item("21", "EISDIR: the destination is a directory (use --dir)."),
                item("22", "EINVAL: conflicting options."),
                item("95", "EOPNOTSUPP: the process holds something crest cannot save yet; it goes on unharmed."),
                item("255", "A usage error."),
                text("Other failures exit with the errno value of their cause, as BLCR did. A checkpoint that fails leaves the process running as it was and leaves no partial image."),
            ]),
            ("ENVIRONMENT", vec![
                timing.clone(),
                item("CREST_NO_SNAPSHOT", "When set, a checkpoint that lets the process run on keeps it frozen until the image is whole, instead of saving its pages from a copy-on-write snapshot while it runs."),
            ]),
            ("FILES", vec![item("context.PID", "The default image, in the current directory, mode 0400: it holds the process's memory.")]),
            ("SEE ALSO", vec![see_also(name)]),
        ],
        "cr_restart" => vec![
            ("EXIT STATUS", vec![
                text("Once the process runs, cr_restart waits for it and exits with its exit status, or dies by the signal that killed it. Before that, a failure exits with:"),
                item("1", "EPERM: restoring the saved PID needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN (try --no-restore-pid)."),
                item("2", "ENOENT: a file the image refers to is missing (see --relocate)."),
                item("16", "EBUSY: the saved PID is in use (try --no-restore-pid)."),
                item("22", "EINVAL: not a valid crest image (corrupt, truncated or foreign)."),
                item("255", "A usage error."),
                text("Other failures exit with the errno value of their cause. A --run-on-* command that exits non-zero replaces the status with its own."),
            ]),
            ("ENVIRONMENT", vec![timing]),
            ("SEE ALSO", vec![see_also(name)]),
        ],
        "cr_info" => vec![
            ("EXIT STATUS", vec![item("0", "The image was described."), item("1", "The image cannot be read or is not valid."), item("2", "A usage error.")]),
            ("SEE ALSO", vec![see_also(name)]),
        ],
        "cr_check" => vec![
            ("OUTPUT", vec![
                text("One line per check: OK, WARN (works, with a limit) or MISSING (does not work here), the check's name and what was found; under a WARN or MISSING line, what to change. The last line says whether checkpoint and restart are ready."),
            ]),
            ("EXIT STATUS", vec![
                item("0", "Checkpoint and restart work for this user on this kernel (WARN lines may limit them, for example to --no-restore-pid)."),
                item("1", "Something needed for checkpoint or restart is missing."),
                item("2", "A usage error."),
            ]),
            ("SEE ALSO", vec![see_also(name)]),
        ],
        _ => vec![("SEE ALSO", vec![see_also(name)])],
    }
}
