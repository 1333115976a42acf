//! The clocks that count from boot never go back for a restored process: a restart where the
//! machine's clocks are behind those the process read (after a reboot) runs it in a time
//! namespace whose offsets make them go on. The test stands for a rebooted machine by running
//! cr_restart in a time namespace set back to 5 s after boot (`unshare --time --fork --monotonic`).
//! Needs root (time namespaces).
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn clocks_go_on_after_a_restart_where_the_machine_s_are_behind() {
    if !is_root() {
        return skip("time namespaces need CAP_SYS_ADMIN");
    }
    if !Command::new("unshare").args(["--time", "--fork", "--monotonic", "-1", "true"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success()) {
        return skip("unshare --time (util-linux 2.36 or later, a kernel with time namespaces) is not available");
    }
    let d = Dir::new("clocks");
    let prog = d.0.join("clocks");
    gcc("tests/c/clocks.c", &prog, &[]);
    let out = d.0.join("out");
    let mut procs = Procs::default();
    let child = Command::new(&prog).stdin(Stdio::null()).stdout(std::fs::File::create(&out).unwrap()).spawn().expect("starts");
    let pid = procs.add(child);
    procs.pids.push(pid);
    wait_for(&out, "tick 2", Duration::from_secs(10));
    let img = d.0.join("img");
    let st = Command::new(bin("cr_checkpoint")).args(["--kill", "-f"]).arg(&img).arg(pid.to_string()).status().expect("cr_checkpoint runs");
    assert!(st.success(), "checkpoint");
    wait_child(&mut procs.take(pid), Duration::from_secs(10));
    procs.forget(pid);
    let lines = std::fs::read_to_string(&out).unwrap().lines().count();
    // A machine booted 5 s ago: its clocks far behind those at the checkpoint (a time
    // namespace's clocks may not go below zero).
    let up: f64 = std::fs::read_to_string("/proc/uptime").unwrap().split_whitespace().next().unwrap().parse().unwrap();
    if up < 30.0 {
        return skip("the machine booted less than 30 s ago: no time namespace can stand for one booted since");
    }
    let back = format!("-{}", up as i64 - 5);
    let rs = Command::new("unshare")
        .args(["--time", "--fork", "--monotonic", &back, "--boottime", &back, "--"])
        .arg(bin("cr_restart"))
        .arg(&img)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cr_restart runs");
    let unshare = procs.add(rs);
    let t = std::time::Instant::now();
    let restored = loop {
        if let Some(p) = child_of(unshare).and_then(child_of) {
            break p;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no restored process");
        std::thread::sleep(Duration::from_millis(20));
    };
    procs.pids.push(restored);
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&out).unwrap().lines().count() <= lines + 1 {
        assert!(t.elapsed() < Duration::from_secs(20), "the restored process does not tick");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("kill").arg("-USR2").arg(restored.to_string()).status();
    let mut rs = procs.take(unshare);
    let st = wait_child(&mut rs, Duration::from_secs(20));
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(rs.stderr.as_mut().unwrap(), &mut err);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(st.success() && text.ends_with("PASS\n"), "the restored process's clocks went back ({st}):\n{text}\ncr_restart: {err}");
    assert!(err.contains("time namespace"), "cr_restart says why the clocks run in a time namespace: {err}");
    procs.forget(restored);
}
