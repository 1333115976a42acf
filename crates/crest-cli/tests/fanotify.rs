//! fanotify groups come back with their flags and marks (tests/c/fanotifies.c); a group of a
//! class that gets permission events is refused, the process left as it was.
mod common;

use std::time::Duration;

use common::*;

#[test]
fn fanotify_groups_keep_their_marks() {
    run_c_as_root("fanotify_init needs CAP_SYS_ADMIN", "fanotifies", &["notify", "DIR"]);
}

#[test]
fn fanotify_permission_class_is_refused() {
    if !is_root() {
        return skip("fanotify_init needs CAP_SYS_ADMIN");
    }
    let d = Dir::new("fanotify-content");
    let p = start_c(&d, "fanotifies", &["content", "DIR"]);
    wait_for(&p.out, "ready", Duration::from_secs(30));
    let pid = format!("PID {}", p.pid);
    assert_refused_then_passes(p, &["fanotify group", "permission events", &pid]);
}
