//! A freeze that fails at any step leaves every thread of the target running and untraced.
//! Failures are injected with `CREST_FAIL_AT` (see `crest_dump::freeze`); the test is the
//! tracer, and stays alive, so nothing but crest's own clean-up can let the threads go.
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A program with four threads besides its main one, all sleeping.
const PROGRAM: &str = r#"
#include <pthread.h>
#include <unistd.h>
static void *sleeper(void *arg) { (void)arg; for (;;) usleep(1000); return 0; }
int main(void) {
    pthread_t t;
    for (int i = 0; i < 4; i++) pthread_create(&t, 0, sleeper, 0);
    write(1, "ready\n", 6);
    for (;;) usleep(1000);
}
"#;

fn start(dir: &std::path::Path) -> Child {
    let src = dir.join("threads.c");
    let exe = dir.join("threads");
    std::fs::write(&src, PROGRAM).expect("the program is written");
    let st = Command::new("gcc").args(["-O1", "-pthread", "-o"]).arg(&exe).arg(&src).status().expect("gcc runs");
    assert!(st.success(), "gcc failed");
    let mut child = Command::new(&exe).stdout(std::process::Stdio::piped()).spawn().expect("the program starts");
    let mut line = [0u8; 6];
    std::io::Read::read_exact(child.stdout.as_mut().expect("its output"), &mut line).expect("the program reports ready");
    child
}

/// The threads of `pid` that are traced or stopped, described; empty when all run untraced.
fn held_threads(pid: u32) -> Vec<String> {
    let mut held = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).expect("its threads").flatten() {
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default();
        let (tracer, state) = (field("TracerPid:"), field("State:"));
        if tracer != "0" || state.starts_with('t') || state.starts_with('T') {
            held.push(format!("tid {}: TracerPid {tracer}, State {state}", e.file_name().to_string_lossy()));
        }
    }
    held
}

#[test]
fn a_freeze_failing_at_any_step_lets_every_thread_go() {
    let dir = std::env::temp_dir().join(format!("crest-freeze-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a test directory");
    let mut child = start(&dir);
    let pid = child.id();
    assert_eq!(std::fs::read_dir(format!("/proc/{pid}/task")).expect("its threads").count(), 5);
    let mut failures = Vec::new();
    for step in ["seized", "interrupted", "stopped", "frozen", ""] {
        std::env::set_var("CREST_FAIL_AT", step);
        let r = crest_dump::freeze(pid as i32);
        match (&r, step) {
            (Err(crest_dump::DumpError::Injected(s)), _) if *s == step => {}
            (Ok(_), "") => {}
            _ => failures.push(format!("{step}: the freeze ended with {:?}", r.as_ref().map(|f| f.pid))),
        }
        drop(r);
        // Detaching is synchronous; allow the threads a moment to be scheduled out of the stop.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut held = held_threads(pid);
        while !held.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            held = held_threads(pid);
        }
        if !held.is_empty() {
            failures.push(format!("after a failure at {step:?}: {}", held.join("; ")));
        }
    }
    std::env::remove_var("CREST_FAIL_AT");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
