//! The library entry points, used as a program of one's own uses them: the example
//! `examples/checkpoint_restart.rs` is compiled into this test and run on a counting program,
//! which must be checkpointed, killed, restarted and go on where it was.
mod common;

#[path = "../examples/checkpoint_restart.rs"]
#[allow(dead_code)]
mod example;

use std::process::Command;

use common::*;

#[test]
fn checkpoint_and_restart_through_the_library() {
    let d = Dir::new("api");
    let prog = d.0.join("counter");
    gcc("demo/counter.c", &prog, &[]);
    let mut child = Command::new(&prog);
    child.arg("30");
    let saved_at = example::round_trip(child, &d.0, 30).expect("checkpoint, kill and restart through the API");
    assert!((5..30).contains(&saved_at), "checkpointed while it counted: {saved_at}");
}
