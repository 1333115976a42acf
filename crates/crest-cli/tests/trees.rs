//! Process trees: a ring of 8 processes passing a counter through pipes, a shell pipeline whose
//! output must stay gapless, a parent and workers sharing memory and semaphores, and jobs
//! taken by process group and by session. Every tree runs under `killafter -1` (a subreaper
//! that waits for all its descendants), so nothing is left to an init that does not reap.
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Every descendant of `pid`, parents first.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut queue = vec![pid];
    while at < queue.len() {
        let p = queue[at];
        at += 1;
        let mut kids: Vec<i32> = Vec::new();
        for t in std::fs::read_dir(format!("/proc/{p}/task")).map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).collect::<Vec<_>>()).unwrap_or_default() {
            kids.extend(std::fs::read_to_string(format!("/proc/{p}/task/{t}/children")).unwrap_or_default().split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
        }
        for k in kids {
            out.push(k);
            queue.push(k);
        }
    }
    out
}

/// `/proc/PID/stat` fields (ppid, pgid, sid).
fn ids(pid: i32) -> Option<(i32, i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
    Some((f[1].parse().ok()?, f[2].parse().ok()?, f[3].parse().ok()?))
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap_or_default().lines().count()
}

fn wait_lines(path: &Path, n: usize, timeout: Duration) {
    let t = Instant::now();
    while lines(path) < n {
        assert!(t.elapsed() < timeout, "{} has {} lines, not {n}, after {timeout:?}", path.display(), lines(path));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` under `killafter -1` (never killed; reaps every orphan) in `dir`.
fn under_reaper(killafter: &Path, dir: &Path, cmd: &[&str], stdout: Stdio) -> Child {
    Command::new(killafter).arg("-1").args(cmd).current_dir(dir).stdin(Stdio::null()).stdout(stdout).stderr(Stdio::null()).spawn().expect("killafter")
}

/// Kills `root` and everything below it, deepest first, and waits for the reaper.
fn end_tree(reaper: &mut Child, root: i32) {
    let mut all = descendants(root);
    all.insert(0, root);
    for p in all.iter().rev() {
        let _ = Command::new("kill").arg("-9").arg(p.to_string()).stderr(Stdio::null()).status();
    }
    let st = wait_child(reaper, Duration::from_secs(20));
    let _ = st;
}

fn checkpoint(args: &[&str], img: &Path, id: i32) {
    let ck = Command::new(bin("cr_checkpoint")).args(args).arg("-f").arg(img).arg(id.to_string()).output().expect("cr_checkpoint");
    assert!(ck.status.success(), "cr_checkpoint {args:?} {id}: {}", String::from_utf8_lossy(&ck.stderr));
}

fn restart(killafter: &Path, dir: &Path, img: &Path, args: &[&str]) -> Child {
    let mut cmd = vec![bin("cr_restart").to_string_lossy().into_owned()];
    if !is_root() {
        cmd.push("--no-restore-pid".into());
    }
    cmd.extend(args.iter().map(|a| a.to_string()));
    cmd.push(img.to_string_lossy().into_owned());
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    under_reaper(killafter, dir, &cmd, Stdio::null())
}

/// The PID of the process below `top` (inclusive) running `exe`, the topmost one. During a
/// restart, call it only once the processes run: their command lines come back as each is
/// filled, in any order when several are filled at once, and a deeper one found first would
/// be taken for the topmost (a ring member without the first one's `SIGUSR2` handler, killed
/// by the signal meant for the first).
fn find_exe(top: i32, name: &str, timeout: Duration) -> i32 {
    let t = Instant::now();
    loop {
        let mut all = vec![top];
        all.extend(descendants(top));
        for p in all {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            if cmd.split(|&b| b == 0).next().is_some_and(|a| a.ends_with(name.as_bytes())) {
                return p;
            }
        }
        assert!(t.elapsed() < timeout, "no {name} below {top} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ring_of_eight_passes_its_counter_on() {
    let d = Dir::new("ring");
    let prog = d.0.join("ring");
    gcc("tests/c/ring.c", &prog, &[]);
    let (st, out) = round_trip_verify(&d, &prog, &[if is_root() { "same-pid" } else { "any-pid" }], "ready", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "ring after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

/// A chain of 40 processes: the husks deeper than a few levels fork from memory mapped again
/// without its history (every `FRESH_EVERY` levels), and the ring still holds together.
#[test]
fn ring_of_forty_passes_its_counter_on() {
    let d = Dir::new("ring40");
    let prog = d.0.join("ring");
    gcc("tests/c/ring.c", &prog, &[]);
    let (st, out) = round_trip_verify(&d, &prog, &[if is_root() { "same-pid" } else { "any-pid" }, "40"], "ready", Duration::from_secs(90));
    assert!(st.success() && out.contains("PASS"), "ring of 40 after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

#[test]
fn workers_share_memory_and_semaphores() {
    let d = Dir::new("workers");
    let prog = d.0.join("workers");
    gcc("tests/c/workers.c", &prog, &["-pthread"]);
    let (st, out) = round_trip_verify(&d, &prog, &[], "ready", Duration::from_secs(60));
    if !out.contains("PASS") {
        // Leave no semaphore set behind when the program could not remove it.
        if let Some(id) = out.lines().find_map(|l| l.strip_prefix("ipc sem ")) {
            let _ = Command::new("ipcrm").arg("-s").arg(id).status();
        }
    }
    assert!(st.success() && out.contains("PASS"), "workers after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

/// The pipeline of the issue: after the restart the output goes on where it stopped.
#[test]
fn shell_pipeline_output_stays_gapless() {
    let d = Dir::new("pipeline");
    let killafter = build_killafter(&d);
    let out = d.0.join("out");
    let mut orig = under_reaper(&killafter, &d.0, &["bash", "-c", "seq 1 1000000 | while read n; do echo $n; sleep 0.01; done > out"], Stdio::null());
    wait_lines(&out, 30, Duration::from_secs(20));
    let bash = child_of(orig.id() as i32).expect("bash");
    let img = d.0.join("img");
    checkpoint(&["--kill"], &img, bash);
    let st = wait_child(&mut orig, Duration::from_secs(20));
    assert!(st.code().is_some(), "the original pipeline was killed and reaped");
    let at_checkpoint = lines(&out);
    let mut rs = restart(&killafter, &d.0, &img, &[]);
    wait_lines(&out, at_checkpoint + 60, Duration::from_secs(30));
    let cr = child_of(rs.id() as i32).expect("cr_restart");
    end_tree(&mut rs, cr);
    let text = std::fs::read_to_string(&out).expect("output");
    let got: Vec<&str> = text.lines().collect();
    for (i, l) in got.iter().enumerate() {
        let last = i + 1 == got.len();
        let want = (i + 1).to_string();
        assert!(*l == want || (last && want.starts_with(l)), "line {} is {l:?}, not {want} (checkpoint at line {at_checkpoint})", i + 1);
    }
    assert!(got.len() >= at_checkpoint + 60);
}

/// A job started in the background by a shell with job control has its own process group:
/// `--pgid` takes it alone (not the shell), `--restore-pgid` gives it back its group.
#[test]
fn job_by_process_group() {
    let d = Dir::new("pgid");
    let killafter = build_killafter(&d);
    let prog = d.0.join("ring");
    gcc("tests/c/ring.c", &prog, &[]);
    let out = d.0.join("out");
    let mut orig = under_reaper(&killafter, &d.0, &["bash", "-c", "set -m; ./ring > out & wait"], Stdio::null());
    wait_for(&out, "ready", Duration::from_secs(20));
    let bash = child_of(orig.id() as i32).expect("bash");
    let ring = find_exe(bash, "ring", Duration::from_secs(5));
    let (_, pgid, _) = ids(ring).expect("ring");
    assert_eq!(pgid, ring, "the job leads its own group");
    let img = d.0.join("img");
    checkpoint(&["--pgid", "--kill"], &img, pgid);
    // The shell (outside the scope) reaps the killed job and ends.
    let _ = wait_child(&mut orig, Duration::from_secs(20));
    let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info");
    let text = String::from_utf8_lossy(&info.stdout);
    assert_eq!(text.matches("\nprocess ").count(), 8, "the 8 processes of the group and not the shell:\n{text}");
    let mut args = vec!["--restore-pgid"];
    if !is_root() {
        args.clear();
    }
    let mut rs = restart(&killafter, &d.0, &img, &args);
    let cr = child_of(rs.id() as i32).or_else(|| {
        std::thread::sleep(Duration::from_millis(200));
        child_of(rs.id() as i32)
    });
    let cr = cr.expect("cr_restart");
    let before = lines(&out);
    wait_lines(&out, before + 1, Duration::from_secs(20));
    // Only now: see find_exe.
    let root = find_exe(cr, "ring", Duration::from_secs(20));
    assert_eq!(ids(root).map(|i| i.0), Some(cr), "the process signalled is the ring's first member, cr_restart's child");
    if is_root() {
        assert_eq!(root, ring, "PID restored");
        assert_eq!(ids(root).map(|i| i.1), Some(pgid), "process group restored");
        for p in descendants(root) {
            assert_eq!(ids(p).map(|i| i.1), Some(pgid), "member {p} in the group");
        }
    }
    let _ = Command::new("kill").arg("-USR2").arg(root.to_string()).status();
    let st = wait_child(&mut rs, Duration::from_secs(30));
    assert!(st.success(), "cr_restart (the job) ended with {st:?}");
    assert!(std::fs::read_to_string(&out).unwrap_or_default().contains("PASS"));
}

/// A session started by `setsid`: `--sid` takes every process of it, `--restore-sid` gives
/// the shell back its session (it leads it again, under its saved PID).
#[test]
fn job_by_session() {
    let d = Dir::new("sid");
    let killafter = build_killafter(&d);
    let prog = d.0.join("ring");
    gcc("tests/c/ring.c", &prog, &[]);
    let out = d.0.join("out");
    let mut orig = under_reaper(&killafter, &d.0, &["setsid", "bash", "-c", "./ring > out; echo done $? >> out"], Stdio::null());
    wait_for(&out, "ready", Duration::from_secs(20));
    let bash = child_of(orig.id() as i32).expect("bash");
    let (_, _, sid) = ids(bash).expect("bash");
    assert_eq!(sid, bash, "bash leads the session");
    let img = d.0.join("img");
    checkpoint(&["--sid", "--kill"], &img, sid);
    let _ = wait_child(&mut orig, Duration::from_secs(20));
    let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info");
    let text = String::from_utf8_lossy(&info.stdout);
    assert_eq!(text.matches("\nprocess ").count(), 9, "bash and the 8 ring processes:\n{text}");
    let args: Vec<&str> = if is_root() { vec!["--restore-sid", "--restore-pgid"] } else { vec![] };
    let mut rs = restart(&killafter, &d.0, &img, &args);
    let t = Instant::now();
    let cr = loop {
        if let Some(c) = child_of(rs.id() as i32) {
            break c;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no cr_restart");
        std::thread::sleep(Duration::from_millis(10));
    };
    let before = lines(&out);
    wait_lines(&out, before + 1, Duration::from_secs(20));
    // Only now: see find_exe.
    let root = find_exe(cr, "ring", Duration::from_secs(20));
    let new_bash = child_of(cr).expect("restored bash");
    assert_eq!(ids(root).map(|i| i.0), Some(new_bash), "the process signalled is the ring's first member, the shell's child");
    if is_root() {
        assert_eq!(new_bash, bash, "PID restored");
        assert_eq!(ids(new_bash).map(|i| i.2), Some(sid), "bash leads its session again");
        assert_eq!(ids(root).map(|i| i.2), Some(sid), "the ring is in the session");
    }
    let _ = Command::new("kill").arg("-USR2").arg(root.to_string()).status();
    let st = wait_child(&mut rs, Duration::from_secs(30));
    assert!(st.success(), "cr_restart (the session) ended with {st:?}");
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(text.contains("PASS") && text.contains("done 0"), "ring passed and bash went on:\n{text}");
}

/// Children that ended and were not reaped come back as zombies with their wait status.
#[test]
fn zombies_keep_their_exit_status() {
    let d = Dir::new("zombies");
    let prog = d.0.join("zombies");
    gcc("tests/c/zombies.c", &prog, &[]);
    let (st, out) = round_trip_verify(&d, &prog, &[if is_root() { "same-pid" } else { "any-pid" }], "ready", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "zombies after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

/// A process group whose leader has ended, with a living member and a zombie, both children
/// of the process checkpointed: made again by a stand-in leader with the group's id, which
/// ends once they have joined it.
#[test]
fn group_whose_leader_ended_comes_back() {
    if !is_root() {
        skip("the group's id and the members' PIDs come back only when PIDs are restored, which needs root");
        return;
    }
    let d = Dir::new("leaderless");
    let prog = d.0.join("leaderless");
    gcc("tests/c/leaderless.c", &prog, &[]);
    let (st, out) = round_trip_verify(&d, &prog, &[], "ready", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "leaderless after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

/// A FIFO between a parent and its child, with data buffered in it at the checkpoint.
#[test]
fn fifo_between_parent_and_child() {
    let d = Dir::new("fifo");
    let prog = d.0.join("fifo");
    gcc("tests/c/fifo.c", &prog, &[]);
    let dir = d.0.to_str().expect("utf8").to_string();
    let (st, out) = round_trip_verify(&d, &prog, &[dir.as_str()], "ready", Duration::from_secs(60));
    assert!(st.success() && out.contains("PASS"), "fifo after restart: {st:?}\n{}", out.lines().rev().take(5).collect::<Vec<_>>().join("\n"));
}

/// Checkpoints (with --kill) a session of bash running `sleep 1000 | cat`, restarts it with
/// `--restore-pgid --restore-sid` (as root: outside cr_restart's group) and `args`; returns
/// the reaper running cr_restart, cr_restart's PID and the restored PIDs (none when cr_restart
/// ended first), and the saved PIDs. All are in `procs`.
fn restored_session(d: &Dir, procs: &mut Procs, args: &[&str]) -> (i32, i32, Vec<i32>, Vec<i32>) {
    let killafter = build_killafter(d);
    let orig = under_reaper(&killafter, &d.0, &["setsid", "bash", "-c", "sleep 1000 | cat; echo done"], Stdio::null());
    let orig_pid = procs.add(orig);
    let t = Instant::now();
    let bash = loop {
        if let Some(b) = child_of(orig_pid).filter(|&b| descendants(b).len() >= 2) {
            break b;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "bash did not start sleep and cat");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut saved = vec![bash];
    saved.extend(descendants(bash));
    procs.pids.extend(&saved);
    let (_, _, sid) = ids(bash).expect("bash");
    let img = d.0.join("img");
    checkpoint(&["--sid", "--kill"], &img, sid);
    let mut orig = procs.take(orig_pid);
    let _ = wait_child(&mut orig, Duration::from_secs(20));
    procs.pids.clear();

    let mut all: Vec<&str> = if is_root() { vec!["--restore-pgid", "--restore-sid"] } else { vec![] };
    all.extend(args);
    let rs = restart(&killafter, &d.0, &img, &all);
    let rs_pid = procs.add(rs);
    let t = Instant::now();
    loop {
        if let Some(cr) = child_of(rs_pid) {
            let below = descendants(cr);
            if below.len() >= 3 {
                procs.pids.extend(&below);
                return (rs_pid, cr, below, saved);
            }
        }
        if procs.children.iter_mut().find(|c| c.id() as i32 == rs_pid).is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
            return (rs_pid, 0, Vec::new(), saved);
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the tree was not restored");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the reaper `rs_pid` ends, which it does once cr_restart and every restored
/// process have ended; panics naming those left running.
fn all_end(procs: &mut Procs, rs_pid: i32, restored: &[i32], what: &str) {
    let mut rs = procs.take(rs_pid);
    let t = Instant::now();
    while rs.try_wait().expect("try_wait").is_none() {
        if t.elapsed() > Duration::from_secs(10) {
            let left: Vec<String> = restored
                .iter()
                .filter(|&&p| proc_state(p).is_some_and(|s| s.0 != 'Z'))
                .map(|p| format!("{p} {:?}", std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default().trim()))
                .collect();
            procs.reapers.push(rs);
            panic!("{what}: restored processes are left running: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    procs.pids.clear();
    let left: Vec<i32> = restored.iter().copied().filter(|&p| proc_state(p).is_some()).collect();
    assert!(left.is_empty(), "{what}: restored processes left: {left:?}");
}

/// SIGTERM sent to cr_restart ends the whole restored tree, not only its eldest process (bash):
/// `sleep` and `cat`, restored outside cr_restart's process group, get it too.
#[test]
fn sigterm_to_cr_restart_ends_every_restored_process() {
    let d = Dir::new("sigterm-tree");
    let mut procs = Procs::default();
    let (rs_pid, cr, restored, _) = restored_session(&d, &mut procs, &[]);
    assert!(cr != 0, "the tree was restored");
    if is_root() {
        let (_, pgid, _) = ids(cr).expect("cr_restart");
        assert!(restored.iter().all(|&p| ids(p).is_some_and(|i| i.1 != pgid)), "the restored processes are outside cr_restart's group");
    }
    let _ = Command::new("kill").arg("-TERM").arg(cr.to_string()).status();
    all_end(&mut procs, rs_pid, &restored, "after SIGTERM to cr_restart");
}

/// `cr_restart --term` sends SIGTERM to every restored process, as BLCR's did.
#[test]
fn after_restart_signal_reaches_every_restored_process() {
    let d = Dir::new("term-tree");
    let mut procs = Procs::default();
    let (rs_pid, _, restored, saved) = restored_session(&d, &mut procs, &["--term"]);
    // As root the restored processes have their saved PIDs, whether or not they were seen.
    let restored = if is_root() { saved } else { restored };
    procs.pids.extend(&restored);
    all_end(&mut procs, rs_pid, &restored, "after cr_restart --term");
}
