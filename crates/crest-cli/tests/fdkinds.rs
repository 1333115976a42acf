//! Descriptor kinds that name a process or a place rather than an open file: pidfds (of the
//! process itself, of a child, of dead processes), file leases (held and being broken) and
//! descriptors opened with `O_PATH` (symbolic links among them). Each self-checking program of
//! `tests/c/` builds its state, is checkpointed with --kill and restarted, then gets SIGUSR2,
//! checks everything and exits 0 with PASS. (A pidfd of a process outside the checkpoint is
//! refused: unsupported.rs.)
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Builds `tests/c/NAME.c`, runs it with `args` (`DIR`: its own directory), checkpoints and
/// restarts it, and has it check itself; returns `cr_info`'s description of the image.
fn run_c(name: &str, args: &[&str]) -> String {
    let d = Dir::new(&format!("fdkinds-{name}"));
    let prog = d.0.join(name);
    gcc(&format!("tests/c/{name}.c"), &prog, &[]);
    let work = d.0.join("files");
    std::fs::create_dir_all(&work).expect("a directory for the program's files");
    let work = work.to_str().expect("utf8").to_string();
    let args: Vec<&str> = args.iter().map(|a| if *a == "DIR" { work.as_str() } else { a }).collect();
    let (st, out) = round_trip_verify(&d, &prog, &args, "ready", Duration::from_secs(60));
    let info = Command::new(bin("cr_info")).arg(d.0.join("img")).output().expect("cr_info");
    assert!(st.success() && out.contains("PASS"), "{name} after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
    String::from_utf8_lossy(&info.stdout).into_owned()
}

/// A pidfd of the process itself keeps PIDFD_NONBLOCK; one of a live child reaches the
/// restored child; pidfds of dead processes read as dead, one inode per dead process, with
/// their exit statuses.
#[test]
fn pidfds_name_their_processes_again() {
    let info = run_c("pidfds", &[]);
    assert!(info.contains("pidfd of its own process") && info.contains("pidfd of a dead process"), "cr_info describes the pidfds:\n{info}");
}

#[test]
fn leases_are_held_again_and_broken_ones_still_break() {
    run_c("leases", &["DIR"]);
}

#[test]
fn o_path_descriptors_and_symbolic_links_are_reopened() {
    let info = run_c("opaths", &["DIR"]);
    assert!(info.contains("symbolic link") && info.contains("open with O_PATH"), "cr_info describes the O_PATH descriptors:\n{info}");
}
