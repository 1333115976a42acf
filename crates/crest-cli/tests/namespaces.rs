//! Descriptors of namespace files (`/proc/self/ns/KIND`): those of the namespaces the process
//! is in come back as the restored process's own (`tests/c/nsfiles.c` checks them); one of a
//! namespace it is not in is refused, naming it, and the process is left running.
mod common;

use std::time::Duration;

use common::*;

#[test]
fn own_namespace_files_name_the_restored_process_namespaces() {
    run_c("nsfiles", &[]);
}

/// As root: a descriptor of the UTS namespace of a child that made its own and ended.
#[test]
fn a_namespace_the_process_is_not_in_is_refused() {
    if !is_root() {
        skip("namespace files: making a UTS namespace needs root");
        return;
    }
    let d = Dir::new("nsfiles-other");
    let p = start_c(&d, "nsfiles", &["other"]);
    wait_for(&p.out, "ready", Duration::from_secs(30));
    let fd = format!("PID {} fd 33", p.pid);
    assert_refused_then_passes(p, &[&fd, "uts namespace", "not in"]);
}
