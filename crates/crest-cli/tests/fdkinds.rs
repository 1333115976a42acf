//! Descriptor kinds that name a process or a place rather than an open file: pidfds (of the
//! process itself, of a child, of dead processes), file leases (held and being broken) and
//! descriptors opened with `O_PATH` (symbolic links among them), and terminal devices other
//! than pseudo-terminals. Each self-checking program of
//! `tests/c/` builds its state, is checkpointed with --kill and restarted, then gets SIGUSR2,
//! checks everything and exits 0 with PASS. (A pidfd of a process outside the checkpoint is
//! refused: unsupported.rs.)
mod common;

use std::process::{Command, Stdio};
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

/// A system console and a virtual console open at numbers above 2 (nodes the program makes, so
/// root only) are opened again by path: the same devices, flags and shared open file, the
/// virtual console's settings, and its exclusive mode, which the kernel cleared when the
/// checkpoint's --kill closed it.
#[test]
fn terminal_devices_are_opened_again_with_their_settings() {
    if !is_root() {
        return skip("making device nodes needs root");
    }
    let info = run_c("termdevs", &["DIR"]);
    assert!(info.contains("terminal ") && info.contains("(4:5)") && info.contains("(5:1)"), "cr_info describes the terminals:\n{info}");
}

#[test]
fn o_path_descriptors_and_symbolic_links_are_reopened() {
    let info = run_c("opaths", &["DIR"]);
    assert!(info.contains("symbolic link") && info.contains("open with O_PATH"), "cr_info describes the O_PATH descriptors:\n{info}");
}

/// Restored under other PIDs (`--no-restore-pid`), a pidfd of another process of the image
/// cannot name it again: the restart is refused, naming the descriptor, and leaves nothing
/// behind; restarted with its PIDs, the same image passes.
#[test]
fn a_pidfd_of_another_process_needs_the_pids_kept() {
    let d = Dir::new("fdkinds-pidfds-newpids");
    let prog = d.0.join("pidfds");
    gcc("tests/c/pidfds.c", &prog, &[]);
    let out = d.0.join("out");
    let mut procs = Procs::default();
    let pid = procs.add(Command::new(&prog).current_dir(&d.0).stdout(std::fs::File::create(&out).expect("out")).stdin(Stdio::null()).spawn().expect("pidfds"));
    procs.pids.extend(children_of(pid));
    wait_for(&out, "ready", Duration::from_secs(30));
    procs.pids.extend(children_of(pid));
    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).args(["--kill", "-f"]).arg(&img).arg(pid.to_string()).output().expect("cr_checkpoint");
    assert!(ck.status.success(), "cr_checkpoint: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = procs.take(pid).wait();
    let rs = Command::new(bin("cr_restart")).arg("--no-restore-pid").arg(&img).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rpid = rs.id() as i32;
    procs.pids.push(rpid);
    let o = rs.wait_with_output().expect("cr_restart ends");
    procs.forget(rpid);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "restarted under new PIDs with a pidfd of its child: {err}");
    assert!(err.contains("a pidfd of process") && err.contains("--no-restore-pid"), "the refusal names the pidfd and why: {err}");
    let (st, text) = {
        let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
        procs.pids.push(rs.id() as i32);
        let p = restored_child(&mut rs, Duration::from_secs(30));
        procs.pids.push(p);
        procs.pids.extend(children_of(p));
        // The restored program runs once it ticks again: only then is it told to verify (a
        // signal sent while it is still being restored would reach the restore process).
        let lines = std::fs::read_to_string(&out).unwrap_or_default().lines().count();
        wait_new_tick_after(&out, lines, Duration::from_secs(60));
        let _ = Command::new("kill").arg("-USR2").arg(p.to_string()).status();
        let t = std::time::Instant::now();
        let st = loop {
            if let Some(st) = rs.try_wait().expect("try_wait") {
                break st;
            }
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the restored program did not end in 60 s after SIGUSR2; its last lines:\n{}\nits processes:\n{}",
                text.lines().rev().take(8).collect::<Vec<_>>().join("\n"),
                tree_state(rs.id() as i32)
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        (st, std::fs::read_to_string(&out).unwrap_or_default())
    };
    assert!(st.success() && text.contains("PASS"), "restarted with its PIDs: {st:?}\n{}", text.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

/// Waits until `out` has more than `lines` lines (the restored program ticks).
fn wait_new_tick_after(out: &std::path::Path, lines: usize, timeout: Duration) {
    let t = std::time::Instant::now();
    while std::fs::read_to_string(out).unwrap_or_default().lines().count() <= lines {
        assert!(t.elapsed() < timeout, "the restored program did not tick within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
