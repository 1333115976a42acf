//! A job on two hosts checkpointed and restarted at one instant by `cr_coord`: two network
//! namespaces joined by a veth pair stand for the hosts, `nsenter` for the transport. Two
//! processes exchange checked numbers over TCP across them without pause; after a coordinated
//! checkpoint with `--kill` and a coordinated restart, they go on to the end with no number
//! lost or repeated. Needs root (network namespaces, TCP repair mode).
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Two network namespaces joined by a veth pair, 10.231.N.1 and 10.231.N.2; removed on drop
/// (after the test's processes in them are killed by their own guard).
struct Hosts {
    a: String,
    b: String,
}

impl Hosts {
    fn new(n: u8) -> Option<Hosts> {
        let id = format!("{}{n}", std::process::id());
        let h = Hosts { a: format!("crestA{id}"), b: format!("crestB{id}") };
        let (va, vb) = (format!("cva{id}"), format!("cvb{id}"));
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), h.a.clone()],
            vec!["netns".into(), "add".into(), h.b.clone()],
            vec!["link".into(), "add".into(), va.clone(), "type".into(), "veth".into(), "peer".into(), "name".into(), vb.clone()],
            vec!["link".into(), "set".into(), va.clone(), "netns".into(), h.a.clone()],
            vec!["link".into(), "set".into(), vb.clone(), "netns".into(), h.b.clone()],
            vec!["-n".into(), h.a.clone(), "addr".into(), "add".into(), format!("10.231.{n}.1/24"), "dev".into(), va.clone()],
            vec!["-n".into(), h.b.clone(), "addr".into(), "add".into(), format!("10.231.{n}.2/24"), "dev".into(), vb.clone()],
            vec!["-n".into(), h.a.clone(), "link".into(), "set".into(), va, "up".into()],
            vec!["-n".into(), h.b.clone(), "link".into(), "set".into(), vb, "up".into()],
            vec!["-n".into(), h.a.clone(), "link".into(), "set".into(), "lo".into(), "up".into()],
            vec!["-n".into(), h.b.clone(), "link".into(), "set".into(), "lo".into(), "up".into()],
        ];
        for s in steps {
            let ok = Command::new("ip").args(&s).stderr(Stdio::null()).status().is_ok_and(|st| st.success());
            if !ok {
                skip(&format!("cannot set up two network namespaces (ip {}): needs root and iproute2", s.join(" ")));
                return None;
            }
        }
        Some(h)
    }

    /// A command run in `host`'s network namespace only (the rest shared with the test).
    fn run_in(&self, host: &str, prog: &Path) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{host}")).arg(prog);
        c
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

const VIA: &str = "nsenter --net=/run/netns/{host}";

fn bin_dir() -> String {
    bin("cr_checkpoint").parent().expect("a directory").display().to_string()
}

/// Starts the server in A and the client in B; returns their PIDs once they talk.
fn start_chat(h: &Hosts, d: &Dir, procs: &mut Procs, n: u8, steps: u32) -> (i32, i32) {
    let prog = d.0.join("tcpchat");
    gcc("tests/c/tcpchat.c", &prog, &[]);
    let (so, co) = (d.0.join("server.out"), d.0.join("client.out"));
    let addr = format!("10.231.{n}.1");
    let server = h.run_in(&h.a, &prog).args(["server", &addr, "7031", &steps.to_string()]).stdin(Stdio::null()).stdout(std::fs::File::create(&so).unwrap()).spawn().expect("server starts");
    let sp = procs.add(server);
    procs.pids.push(sp);
    wait_for(&so, "listening", Duration::from_secs(10));
    let client = h.run_in(&h.b, &prog).args(["client", &addr, "7031", &steps.to_string()]).stdin(Stdio::null()).stdout(std::fs::File::create(&co).unwrap()).spawn().expect("client starts");
    let cp = procs.add(client);
    procs.pids.push(cp);
    wait_for(&so, "step 200", Duration::from_secs(20));
    wait_for(&co, "step 200", Duration::from_secs(20));
    (sp, cp)
}

#[test]
fn a_job_on_two_hosts_is_checkpointed_and_restarted_at_one_instant() {
    if !is_root() {
        return skip("network namespaces and TCP repair mode need root");
    }
    let Some(h) = Hosts::new(1) else { return };
    let d = Dir::new("hosts");
    let mut procs = Procs::default();
    let (sp, cp) = start_chat(&h, &d, &mut procs, 1, 3000);
    let (ia, ib) = (d.0.join("a.img"), d.0.join("b.img"));
    let out = Command::new(bin("cr_coord"))
        .args(["--via", VIA, "--bin-dir", &bin_dir(), "--kill"])
        .arg(format!("{}:{sp}:{}", h.a, ia.display()))
        .arg(format!("{}:{cp}:{}", h.b, ib.display()))
        .output()
        .expect("cr_coord runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the coordinated checkpoint failed: {said}");
    assert!(said.contains("2 parts checkpointed at one instant"), "{said}");
    eprint!("{said}");
    // Both were killed at the end of the checkpoint.
    for pid in [sp, cp] {
        let st = wait_child(&mut procs.take(pid), Duration::from_secs(10));
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL), "PID {pid} was killed by the checkpoint");
        procs.forget(pid);
    }
    let before = std::fs::read_to_string(d.0.join("client.out")).unwrap();
    assert!(!before.contains("PASS") && !before.contains("FAIL"), "the client was checkpointed in the middle of its work:\n{before}");
    let restart = Command::new(bin("cr_coord"))
        .args(["--restart", "--via", VIA, "--bin-dir", &bin_dir()])
        .arg(format!("{}:{}", h.a, ia.display()))
        .arg(format!("{}:{}", h.b, ib.display()))
        .stderr(Stdio::piped())
        .spawn()
        .expect("cr_coord runs");
    let rp = procs.add(restart);
    // The restored processes have their saved PIDs.
    procs.pids.extend([sp, cp]);
    let st = wait_child(&mut procs.take(rp), Duration::from_secs(60));
    let server = std::fs::read_to_string(d.0.join("server.out")).unwrap();
    let client = std::fs::read_to_string(d.0.join("client.out")).unwrap();
    assert!(st.success(), "the restarted job failed ({st}):\nserver:\n{server}\nclient:\n{client}");
    assert!(server.ends_with("PASS\n") && client.ends_with("PASS\n"), "both ends went on to the end with every number checked:\nserver:\n{server}\nclient:\n{client}");
}

#[test]
fn a_part_that_fails_calls_the_others_off() {
    if !is_root() {
        return skip("network namespaces and TCP repair mode need root");
    }
    let Some(h) = Hosts::new(2) else { return };
    let d = Dir::new("hosts-fail");
    let mut procs = Procs::default();
    let (sp, cp) = start_chat(&h, &d, &mut procs, 2, 100_000);
    let (ia, ib) = (d.0.join("a.img"), d.0.join("b.img"));
    // The second part names a process that does not exist there.
    let out = Command::new(bin("cr_coord"))
        .args(["--via", VIA, "--bin-dir", &bin_dir(), "--kill"])
        .arg(format!("{}:{sp}:{}", h.a, ia.display()))
        .arg(format!("{}:{}:{}", h.b, i32::MAX - 1, ib.display()))
        .output()
        .expect("cr_coord runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(&format!("the part on {} failed", h.b)), "the failed part is named: {said}");
    assert!(!ia.exists() && !ib.exists(), "no image is named when a part fails");
    // The first part's processes run on as they were, and the connection with them.
    assert_untouched(sp, "after a coordinated checkpoint was called off");
    let so = d.0.join("server.out");
    let steps = |s: &str| s.lines().filter(|l| l.starts_with("step")).count();
    let n = steps(&std::fs::read_to_string(&so).unwrap());
    let t = std::time::Instant::now();
    while steps(&std::fs::read_to_string(&so).unwrap()) < n + 3 {
        assert!(t.elapsed() < Duration::from_secs(20), "the server goes on talking after the checkpoint was called off");
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = std::fs::read_to_string(&so).unwrap() + &std::fs::read_to_string(d.0.join("client.out")).unwrap();
    assert!(!all.contains("FAIL"), "{all}");
    let _ = cp;
}
