//! Memory a parent and its forked children share copy-on-write (`tests/c/cowshare.c`): after a
//! restart every page nobody wrote since the fork is still one page frame in all of them (as
//! `/proc/PID/pagemap` shows it to root), every written page is a copy of its own, and every
//! page holds what it held. The image saves the shared pages once, with the parent.
mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn pages_shared_since_fork_are_shared_again() {
    let d = Dir::new("cowshare");
    let prog = d.0.join("cowshare");
    gcc("tests/c/cowshare.c", &prog, &[]);
    let (st, out) = round_trip_verify(&d, &prog, &[], "ready", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "cowshare after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
    if !is_root() {
        // Page frames (and so sharing) are shown to root only: the contents were checked.
        skip("page sharing is only visible to root");
        return;
    }
    assert!(out.contains("shared pages checked: "), "sharing was checked: {out}");
    let info = Command::new(bin("cr_info")).arg(d.0.join("img")).output().expect("cr_info");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("the parent's, shared"), "the image saves the children's shared pages with the parent:\n{info}");
}

/// The processes of a tree are filled at once, one worker per core, in whatever order the
/// workers take them: a parent's pages shared with its children are moved into place while a
/// child is filled beside it. Restarted several times, every page of every process is checked
/// each time (and, for root, that the shared ones are still shared).
#[test]
fn shared_pages_survive_repeated_parallel_restarts() {
    for round in 0..16 {
        let d = Dir::new(&format!("cowshare-again-{round}"));
        let prog = d.0.join("cowshare");
        gcc("tests/c/cowshare.c", &prog, &[]);
        let (st, out) = round_trip_verify(&d, &prog, &[], "ready", Duration::from_secs(60));
        assert!(st.success() && out.contains("PASS"), "cowshare after restart {round}: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
    }
}
