//! Real language runtimes with threads, checkpointed with --kill and restarted: python3 with
//! threads, a Rust thread pool, node's timer loop and a java loop. Each program checks its own
//! state and prints PASS at the end. A runtime that is not installed is skipped with a message.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn have(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).output().is_ok_and(|o| o.status.success())
}

fn check(d: &Dir, prog: &Path, args: &[&str], ready: &str) {
    let (st, out) = round_trip(d, prog, args, ready, Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "after restart: {st:?}\n{out}");
}

#[test]
fn python_threads() {
    let d = Dir::new("py");
    let script = d.0.join("t.py");
    std::fs::write(
        &script,
        "import threading, time\ncounts=[0]*8\nstop=False\ndef work(i):\n    l=threading.local(); l.v=i*7\n    while not stop:\n        assert l.v==i*7\n        counts[i]+=1\n        time.sleep(0.001)\nts=[threading.Thread(target=work,args=(i,)) for i in range(8)]\n[t.start() for t in ts]\nfor k in range(25):\n    time.sleep(0.1); print('tick',k,sum(counts),flush=True)\nstop=True\n[t.join() for t in ts]\nprint('PASS',flush=True)\n",
    )
    .expect("write");
    // The interpreter itself, not a wrapper script that would stay its parent.
    let py = String::from_utf8(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().expect("python3").stdout).expect("utf8");
    check(&d, Path::new(py.trim()), &[script.to_str().expect("utf8")], "tick 3 ");
}

#[test]
fn rust_thread_pool() {
    let d = Dir::new("rust");
    let prog = d.0.join("pool");
    let st = Command::new("rustc").args(["-O", "-o"]).arg(&prog).arg(root().join("tests/threads/pool.rs")).status().expect("rustc");
    assert!(st.success(), "compiling pool.rs");
    check(&d, &prog, &[], "tick 3 ");
}

#[test]
fn node_timer_loop() {
    if !have("node") {
        skip("node is not installed");
        return;
    }
    let d = Dir::new("node");
    let js = d.0.join("loop.js");
    std::fs::write(&js, "let n=0;const t=setInterval(()=>{n++;console.log('tick',n);if(n>=25){clearInterval(t);console.log('PASS');}},100);\n").expect("write");
    let node = String::from_utf8(Command::new("sh").args(["-c", "command -v node"]).output().expect("sh").stdout).expect("utf8");
    check(&d, Path::new(node.trim()), &[js.to_str().expect("utf8")], "tick 3\n");
}

#[test]
fn java_loop() {
    if !have("java") || !have("javac") {
        skip("java or javac is not installed");
        return;
    }
    let d = Dir::new("java");
    std::fs::write(
        d.0.join("Loop.java"),
        "public class Loop { public static void main(String[] a) throws Exception { long s=0; for (int i=1;i<=30;i++){ s+=i; System.out.println(\"tick \"+i+\" sum \"+s); Thread.sleep(100);} System.out.println(s==465?\"PASS\":\"FAIL\"); } }\n",
    )
    .expect("write");
    assert!(Command::new("javac").arg("Loop.java").current_dir(&d.0).status().expect("javac").success());
    let java = String::from_utf8(Command::new("sh").args(["-c", "readlink -f $(command -v java)"]).output().expect("sh").stdout).expect("utf8");
    check(&d, Path::new(java.trim()), &["-XX:-UsePerfData", "-cp", d.0.to_str().expect("utf8"), "Loop"], "tick 5 ");
}
