//! The commands' interface against their own documentation: every option documented as working
//! is accepted and not refused, every option the code refuses says so in its help (and is not
//! offered by the completions); help, version and usage errors behave alike in every
//! command; and the exit codes are those of the one table (`crest_cli::exits`).
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use clap::ArgAction;
use common::*;

fn exe(name: &str) -> PathBuf {
    PathBuf::from(match name {
        "cr_checkpoint" => env!("CARGO_BIN_EXE_cr_checkpoint"),
        "cr_restart" => env!("CARGO_BIN_EXE_cr_restart"),
        "cr_info" => env!("CARGO_BIN_EXE_cr_info"),
        "cr_check" => env!("CARGO_BIN_EXE_cr_check"),
        "cr_run" => env!("CARGO_BIN_EXE_cr_run"),
        "cr_slurm" => env!("CARGO_BIN_EXE_cr_slurm"),
        "cr_coord" => env!("CARGO_BIN_EXE_cr_coord"),
        _ => panic!("no command {name}"),
    })
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A PID no process has.
fn free_pid() -> i32 {
    (20000..32000).rev().find(|p| !Path::new(&format!("/proc/{p}")).exists()).expect("a free PID")
}

/// A value that the option `long` of `command` accepts, for a run that fails only later (on a
/// missing process or an invalid image).
fn value_for(command: &str, long: &str, d: &Dir, junk: &Path) -> String {
    let dir = d.0.to_string_lossy().into_owned();
    match (command, long) {
        ("cr_checkpoint", "file") => format!("{dir}/img"),
        ("cr_checkpoint", "dir") => dir,
        ("cr_checkpoint", "fd") => "1".into(),
        ("cr_checkpoint", "backup") => format!("{dir}/old"),
        ("cr_checkpoint", "compress") => "3".into(),
        ("cr_checkpoint", "deleted-max") => "64M".into(),
        ("cr_checkpoint", "network-lock") => "skip".into(),
        ("cr_restart", "file") => junk.to_string_lossy().into_owned(),
        ("cr_restart", "fd") => "0".into(),
        ("cr_restart", "dir") => dir,
        ("cr_slurm", "dir") => format!("{dir}/images"),
        ("cr_slurm", "warning") => "USR2".into(),
        // A transport that fails at once: the part fails after the options were taken.
        ("cr_coord", "via") => "false {host}".into(),
        (_, "relocate") => "/nowhere-old=/nowhere-new".into(),
        (_, l) if l.starts_with("run-on-") => "true".into(),
        (_, "signal") => "15".into(),
        (_, "time") => "30".into(),
        _ => "1".into(),
    }
}

/// Runs `command` with the single option `long` (and its value), on an operand that makes it
/// fail after the options were taken: a PID no process has, an image that is not one.
fn run_with_option(cmd: &clap::Command, arg: &clap::Arg, d: &Dir, junk: &Path, pid: i32) -> (Vec<String>, Output) {
    let name = cmd.get_name();
    let long = arg.get_long().expect("a long option");
    let takes_value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
    let mut args = Vec::new();
    if takes_value {
        let v = value_for(name, long, d, junk);
        if arg.is_require_equals_set() {
            args.push(format!("--{long}={v}"));
        } else {
            args.push(format!("--{long}"));
            args.push(v);
        }
    } else {
        args.push(format!("--{long}"));
    }
    match name {
        "cr_checkpoint" => args.push(pid.to_string()),
        "cr_restart" if !["file", "fd", "dir"].contains(&long) => args.push(junk.to_string_lossy().into_owned()),
        "cr_info" => args.push(junk.to_string_lossy().into_owned()),
        "cr_run" | "cr_slurm" => args.push("true".into()),
        "cr_coord" => {
            if long != "via" {
                args.extend(["--via".into(), "false {host}".into()]);
            }
            args.push(if long == "restart" { "nohost:img".into() } else { format!("nohost:{pid}:img") });
        }
        _ => {}
    }
    let stdin = std::fs::File::open(junk).expect("junk");
    // cr_slurm outside a job: the job is named by the environment, as SLURM does.
    let o = Command::new(exe(name)).args(&args).current_dir(&d.0).stdin(stdin).env("SLURM_JOB_ID", "interface").output().expect("runs");
    (args, o)
}

/// Every option of every command: one documented as working is not refused (the command goes
/// on to fail on the missing process or the invalid image, as without it), one documented as
/// not implemented is refused with exit 22 and says so; the completions offer the first kind
/// only, and no help says "not supported".
#[test]
fn every_documented_option_works_and_every_refused_one_says_so() {
    let d = Dir::new("options");
    let junk = d.0.join("junk");
    std::fs::write(&junk, b"this is not a crest image\n").expect("junk");
    let pid = free_pid();
    let mut checked = 0;
    for cmd in crest_cli::commands::all() {
        let name = cmd.get_name().to_string();
        let offered: Vec<String> = crest_cli::commands::offered(&cmd).get_arguments().filter_map(|a| a.get_long()).map(str::to_string).collect();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(!help.contains("not supported"), "{name} --{long}: the help says {help:?}; an option works or is \"{}\"", crest_cli::commands::NOT_IMPLEMENTED);
            if !arg.is_hide_set() {
                assert!(!help.is_empty(), "{name} --{long} has a help line");
            }
            if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) {
                continue;
            }
            let refused = crest_cli::commands::is_refused(arg);
            assert_eq!(offered.contains(&long.to_string()), !refused && !arg.is_hide_set(), "{name} --{long}: the completions offer what works and is shown");
            let (args, o) = run_with_option(&cmd, arg, &d, &junk, pid);
            let out = text(&o);
            let said_refused = out.contains(crest_cli::commands::NOT_IMPLEMENTED) || out.contains("not supported");
            if refused {
                assert!(o.status.code() == Some(libc::EINVAL) && said_refused, "{name} {args:?} is documented as refused but exited {:?}: {out}", o.status);
            } else {
                let expected = match name.as_str() {
                    "cr_checkpoint" => vec![libc::ESRCH],
                    "cr_restart" | "cr_info" => vec![libc::EINVAL],
                    "cr_run" | "cr_slurm" => vec![0],
                    // The part's transport (`false`) exits 1.
                    "cr_coord" => vec![1],
                    _ => vec![0, 1],
                };
                assert!(!said_refused && o.status.code().is_some_and(|c| expected.contains(&c)), "{name} {args:?}: documented as working, but exited {:?} (not one of {expected:?}): {out}", o.status);
            }
            checked += 1;
        }
    }
    assert!(checked > 60, "only {checked} options were tried");
    let _ = pid;
}

/// Help, version and usage errors alike in every command: `--help`/`-h`/`-?` on stdout with
/// exit 0, `--version` as BLCR's `NAME version V`, a usage error on stderr with exit 255
/// (silent with -q where the command has it).
#[test]
fn help_version_and_usage_errors_are_alike() {
    for name in ["cr_checkpoint", "cr_restart", "cr_info", "cr_check", "cr_run", "cr_slurm", "cr_coord"] {
        for h in ["--help", "-h", "-?"] {
            let o = Command::new(exe(name)).arg(h).output().expect("runs");
            assert_eq!(o.status.code(), Some(0), "{name} {h}");
            assert!(String::from_utf8_lossy(&o.stdout).contains("Usage: "), "{name} {h} prints the usage on stdout");
        }
        let o = Command::new(exe(name)).arg("--version").output().expect("runs");
        assert_eq!((o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned()), (Some(0), format!("{name} version {}\n", crest_cli::VERSION)), "{name} --version");
        let o = Command::new(exe(name)).arg("--no-such-option").output().expect("runs");
        assert_eq!(o.status.code(), Some(crest_cli::exits::USAGE), "{name} with an unknown option");
        assert!(o.stdout.is_empty() && !o.stderr.is_empty(), "{name}: the usage error goes to stderr");
    }
    for name in ["cr_checkpoint", "cr_restart", "cr_check", "cr_slurm", "cr_coord"] {
        let o = Command::new(exe(name)).args(["-q", "--no-such-option"]).output().expect("runs");
        assert_eq!((o.status.code(), o.stderr.len()), (Some(crest_cli::exits::USAGE), 0), "{name} -q: a silent usage error");
    }
    // Missing or extra operands are usage errors too.
    for (name, args) in [
        ("cr_checkpoint", vec![]),
        ("cr_checkpoint", vec!["1", "2"]),
        ("cr_checkpoint", vec!["x"]),
        ("cr_info", vec![]),
        ("cr_restart", vec![]),
        ("cr_check", vec!["extra"]),
        ("cr_run", vec![]),
        ("cr_slurm", vec![]),
        ("cr_coord", vec![]),
        ("cr_coord", vec!["nohost:img"]),
    ] {
        let o = Command::new(exe(name)).args(&args).output().expect("runs");
        assert_eq!(o.status.code(), Some(crest_cli::exits::USAGE), "{name} {args:?}: {}", text(&o));
    }
    // -v: cr_checkpoint's --verbose and cr_restart's --version, as BLCR's.
    let o = Command::new(exe("cr_restart")).arg("-v").output().expect("runs");
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("cr_restart version {}\n", crest_cli::VERSION));
}

/// The exit codes of the table, for the failures every command shares: an image that cannot
/// be opened (a missing file, a directory) is 255 in cr_restart and cr_info alike, one that is
/// not valid 22, a descriptor that is not open 9.
#[test]
fn exit_codes_follow_the_table() {
    let d = Dir::new("exits");
    let junk = d.0.join("junk");
    std::fs::write(&junk, b"this is not a crest image\n").expect("junk");
    let missing = d.0.join("missing");
    let empty = d.0.join("empty");
    std::fs::write(&empty, b"").expect("empty");
    let dir = d.0.to_string_lossy().into_owned();
    for name in ["cr_restart", "cr_info"] {
        for (what, path, code) in [
            ("a directory", dir.as_str(), 255),
            ("a missing file", missing.to_str().expect("utf8"), 255),
            ("not an image", junk.to_str().expect("utf8"), 22),
            ("an empty file", empty.to_str().expect("utf8"), 22),
        ] {
            let o = Command::new(exe(name)).arg(path).stdin(Stdio::null()).output().expect("runs");
            assert_eq!(o.status.code(), Some(code), "{name} of {what}: {}", text(&o));
            assert!(crest_cli::exits::of(name).any(|e| e.code == code), "{name} exits {code}: the table says so");
        }
    }
    let o = Command::new(exe("cr_restart")).args(["--fd", "97"]).output().expect("runs");
    assert_eq!(o.status.code(), Some(libc::EBADF), "cr_restart --fd of a closed descriptor: {}", text(&o));
    let o = Command::new(exe("cr_checkpoint")).args(["--fd", "97", &free_pid().to_string()]).output().expect("runs");
    assert_eq!(o.status.code(), Some(libc::EBADF), "cr_checkpoint --fd of a closed descriptor: {}", text(&o));
    let o = Command::new(exe("cr_checkpoint")).arg(free_pid().to_string()).current_dir(&d.0).output().expect("runs");
    assert_eq!(o.status.code(), Some(libc::ESRCH), "cr_checkpoint of no process: {}", text(&o));
    let _ = bin("cr_info");
}

/// Starts `sh -c 'read x' arg0 <0xff>` (stdin a pipe, so it waits) with a known variable in its
/// environment, and checkpoints it with `args` into `img`; returns the shell and its PID.
fn checkpointed_shell(d: &Dir, img: &Path, args: &[&str]) -> (std::process::Child, i32, Output) {
    use std::os::unix::ffi::OsStrExt;
    let odd = std::ffi::OsStr::from_bytes(b"caf\xff");
    let child = Command::new("sh").args(["-c", "read x", "arg0"]).arg(odd).env("CREST_INFO_TEST", "hello world").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("sh");
    let pid = child.id() as i32;
    let t = std::time::Instant::now();
    while !std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("read") || w.contains("wait")) {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "sh did not start waiting");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let o = Command::new(exe("cr_checkpoint")).args(args).arg("-f").arg(img).arg(pid.to_string()).current_dir(&d.0).output().expect("cr_checkpoint");
    (child, pid, o)
}

/// cr_info for people: a readable date, sizes in KiB/MiB, and `--verify` ending with a line
/// that says what it checked and that the image is good; for tools (`--json`): an ISO 8601
/// date, the command line and environment as strings (bytes only where not UTF-8, marked).
/// A damaged page makes `--verify` exit 22 without that line.
#[test]
fn cr_info_speaks_to_people_and_tools() {
    let d = Dir::new("info");
    let img = d.0.join("img");
    let (mut sh, _pid, o) = checkpointed_shell(&d, &img, &["--pid"]);
    let _ = sh.kill();
    let _ = sh.wait();
    assert!(o.status.success(), "cr_checkpoint: {}", text(&o));

    let o = Command::new(exe("cr_info")).arg("--verify").arg(&img).env("TZ", "UTC").output().expect("cr_info");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "cr_info --verify: {}", text(&o));
    let taken = out.lines().find(|l| l.starts_with("taken:")).expect("a taken: line");
    let date = taken.split_whitespace().nth(1).unwrap_or("");
    assert!(date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-' && taken.contains(" UTC "), "a readable date: {taken}");
    assert!(!out.contains("unix time") && !out.contains(" 0 MiB"), "{out}");
    let last = out.lines().last().unwrap_or("");
    assert!(last.starts_with("verified: ") && last.ends_with("the image is good") && last.contains("1 process"), "--verify ends with what it checked: {last}");
    // Every kind of per-process state the image holds is shown, under the kind's name.
    let image = crest_image::ImageFile::open(&img).expect("the image reads");
    let kinds = crest_kinds::process::summary(&image.image.processes[0]);
    for name in ["descriptors", "memory", "signal actions", "rlimits", "credentials", crest_kinds::process::THREADS] {
        assert!(kinds.iter().any(|k| k.0 == name), "a shell has state of the {name} kind: {kinds:?}");
    }
    for (kind, fields) in &kinds {
        assert!(out.contains(&format!("\n    {kind}: {fields}\n")), "cr_info shows the {kind} kind ({fields}):\n{out}");
    }

    let o = Command::new(exe("cr_info")).arg("--json").arg(&img).env("TZ", "Europe/Paris").output().expect("cr_info --json");
    assert!(o.status.success(), "cr_info --json: {}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let time = v["time"].as_str().expect("time is a string");
    assert!(time.len() == 25 && time.as_bytes()[10] == b'T' && (time.ends_with("+01:00") || time.ends_with("+02:00")), "ISO 8601 in local time: {time}");
    assert!(v["time_unix"].as_u64().is_some(), "the unix time is kept as time_unix");
    let p = &v["processes"][0];
    assert_eq!(p["cmdline"], serde_json::json!(["sh", "-c", "read x", "arg0", {"non_utf8_bytes": [99, 97, 102, 255]}]), "cmdline as strings");
    let env: Vec<&str> = p["environment"].as_array().expect("environment").iter().filter_map(|e| e.as_str()).collect();
    assert!(env.contains(&"CREST_INFO_TEST=hello world"), "environment as strings: {env:?}");
    assert!(p["exe"].is_string() && p["cwd"].is_string(), "paths are strings");

    // Damage one byte of page data: --verify must say so and exit 22.
    let run = p["vmas"].as_array().expect("vmas").iter().flat_map(|m| m["pages"].as_array().cloned().unwrap_or_default()).next().expect("a page run");
    let at = run["offset"].as_u64().expect("offset");
    let mut bytes = std::fs::read(&img).expect("image");
    bytes[at as usize + 100] ^= 0x5a;
    std::fs::write(&img, &bytes).expect("write back");
    let o = Command::new(exe("cr_info")).arg("--verify").arg(&img).output().expect("cr_info");
    assert_eq!(o.status.code(), Some(libc::EINVAL), "a damaged image: {}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("is good") && String::from_utf8_lossy(&o.stderr).contains("NOT a good image"), "{}", text(&o));
}

/// `cr_checkpoint -v` says in sentences what it will do and what it did, on stderr (stdout
/// may be the image, with `--fd 1`), with sizes in the unit that fits.
#[test]
fn verbose_checkpoint_speaks_in_sentences() {
    let d = Dir::new("verbose");
    let img = d.0.join("img");
    let (mut sh, pid, o) = checkpointed_shell(&d, &img, &["-v", "--pid", "--term"]);
    let st = wait_child(&mut sh, std::time::Duration::from_secs(10));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "cr_checkpoint -v: {err}");
    assert!(o.stdout.is_empty(), "nothing on stdout: {}", String::from_utf8_lossy(&o.stdout));
    assert!(err.contains(&format!("Checkpointing PID {pid} alone (all its threads) to {}", img.display())) && err.contains("Then it gets SIGTERM."), "{err}");
    assert!(err.contains(&format!("Checkpointed PID {pid} to {}: ", img.display())) && err.contains("KiB of memory pages"), "{err}");
    assert!(!err.contains("targetfile=") && !err.contains("scope=") && !err.contains(" 0 MiB"), "no debug dump: {err}");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGTERM), "--term was sent");
}
