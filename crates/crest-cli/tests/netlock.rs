//! A TCP peer outside the checkpointed tree sees no reset while the server is frozen, after
//! `--kill` and until `cr_restart`: the checkpoint drops the packets of the connections it
//! saves (a netfilter table of its own, through `nft`) until the restart has the sockets back.
//! The peer is this test: it talks to `tcppeer server` (a line "N" is answered "echo N"), and
//! checks that every line it sent is answered once, in order, with no error on its side.
mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The netfilter tables of this network namespace whose name holds `pid` (the locks of the
/// checkpoints of process `pid`), or `None` when `nft` cannot list them.
fn lock_tables(pid: i32) -> Option<Vec<String>> {
    let out = Command::new("nft").args(["list", "tables"]).stderr(Stdio::null()).output().ok().filter(|o| o.status.success())?;
    let mark = format!("crest_{pid}_");
    Some(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().nth(2)).filter(|n| n.starts_with(&mark)).map(str::to_string).collect())
}

/// Removes, on drop, the lock tables of process `.0` left by a test that failed.
struct Unlock(i32);

impl Drop for Unlock {
    fn drop(&mut self) {
        for t in lock_tables(self.0).unwrap_or_default() {
            let _ = Command::new("nft").args(["delete", "table", "inet", &t]).status();
        }
    }
}

/// Whether this machine can lock connections: root, and `nft` working.
fn can_lock() -> Result<(), String> {
    if !is_root() {
        return Err("saving TCP connections needs CAP_NET_ADMIN (TCP_REPAIR)".into());
    }
    match Command::new("nft").args(["list", "tables"]).stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("nft list tables: {s}")),
        Err(e) => Err(format!("nft (Debian package nftables) cannot run: {e}")),
    }
}

/// The test's end of the connection.
struct Peer {
    out: TcpStream,
    input: BufReader<TcpStream>,
    sent: u32,
    answered: u32,
}

impl Peer {
    fn connect(port: &str, six: bool) -> Peer {
        let addr = if six { format!("[::1]:{port}") } else { format!("127.0.0.1:{port}") };
        let out = TcpStream::connect(&addr).expect("connecting to the server");
        out.set_read_timeout(Some(Duration::from_secs(60))).expect("read timeout");
        let mut input = BufReader::new(out.try_clone().expect("a second handle"));
        let mut l = String::new();
        input.read_line(&mut l).expect("the welcome");
        assert_eq!(l, "welcome\n");
        Peer { out, input, sent: 0, answered: 0 }
    }

    fn send(&mut self, when: &str) {
        let n = self.sent;
        if let Err(e) = self.out.write_all(format!("{n}\n").as_bytes()) {
            panic!("the peer could not send line {n} {when}: {e}");
        }
        self.sent += 1;
    }

    fn answer(&mut self, when: &str) {
        let mut l = String::new();
        match self.input.read_line(&mut l) {
            Ok(0) => panic!("the peer read end of file {when}, waiting for the answer to line {}", self.answered),
            Ok(_) => assert_eq!(l, format!("echo {}\n", self.answered), "the answers are those of the lines sent, once each, in order ({when})"),
            Err(e) => panic!("the peer got {e} {when}, waiting for the answer to line {}", self.answered),
        }
        self.answered += 1;
    }

    fn exchange(&mut self, when: &str) {
        self.send(when);
        self.answer(when);
    }

    /// Nothing comes from the server for `wait`: no data, no end of file, no reset.
    fn quiet(&mut self, wait: Duration, when: &str) {
        self.out.set_read_timeout(Some(wait)).expect("read timeout");
        let mut l = String::new();
        match self.input.read_line(&mut l) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Ok(0) => panic!("the peer read end of file {when}"),
            Ok(_) => panic!("the peer read {l:?} {when}"),
            Err(e) => panic!("the peer got {e} {when}"),
        }
        self.out.set_read_timeout(Some(Duration::from_secs(60))).expect("read timeout");
    }

    fn quit(&mut self) {
        self.out.write_all(b"quit\n").expect("sending quit");
        let mut l = String::new();
        self.input.read_line(&mut l).expect("reading the bye");
        assert_eq!(l, "bye\n");
    }
}

/// Starts `tcppeer server` with its output to `log` and returns it with its port.
fn start_server(d: &Dir, prog: &Path, six: bool, log: &Path) -> (Child, String) {
    let port_file = d.0.join("port");
    let f = std::fs::File::create(log).expect("server log");
    let mut args = vec!["server".to_string(), port_file.to_str().expect("utf8").to_string()];
    if six {
        args.push("6".into());
    }
    let server = Command::new(prog).args(&args).current_dir(&d.0).stdin(Stdio::null()).stdout(f).spawn().expect("server");
    let port = wait_for(&port_file, "\n", Duration::from_secs(10)).trim().to_string();
    (server, port)
}

/// What each test sets up: `tcppeer server` built and started in a scratch directory of its
/// own, its output in `log`, and the test's peer connected to it. On drop (in this order) the
/// peer's end is closed, the lock tables of the server's PID are removed, the PIDs in `reaper`
/// are killed and the directory is removed.
struct Setup {
    peer: Peer,
    _unlock: Unlock,
    reaper: Reaper,
    server: Child,
    pid: i32,
    log: PathBuf,
    prog: PathBuf,
    d: Dir,
}

impl Setup {
    /// Sets up in the scratch directory `name`, the server on IPv6 if `six`; `None` (said
    /// with [`skip`]) when this machine cannot lock connections.
    fn new(name: &str, six: bool) -> Option<Setup> {
        if let Err(why) = can_lock() {
            skip(&why);
            return None;
        }
        let d = Dir::new(name);
        let prog = d.0.join("tcppeer");
        gcc("tests/c/tcppeer.c", &prog, &[]);
        let log = d.0.join("server.txt");
        let (server, port) = start_server(&d, &prog, six, &log);
        let pid = server.id() as i32;
        let reaper = Reaper(vec![pid]);
        let _unlock = Unlock(pid);
        let peer = Peer::connect(&port, six);
        Some(Setup { peer, _unlock, reaper, server, pid, log, prog, d })
    }

    /// `cr_checkpoint ARGS -f IMG PID` of the server, which must succeed.
    fn checkpoint(&self, args: &[&str], img: &Path) {
        let ck = Command::new(bin("cr_checkpoint")).args(args).arg("-f").arg(img).arg(self.pid.to_string()).output().expect("cr_checkpoint runs");
        assert!(ck.status.success(), "cr_checkpoint: {}", String::from_utf8_lossy(&ck.stderr));
    }

    /// Starts `cr_restart IMG` (its standard error piped) and waits for the restored server;
    /// both are killed on drop until the test clears `reaper`.
    fn restart(&mut self, img: &Path) -> Child {
        let mut rs = cr_restart_cmd().arg(img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart runs");
        self.reaper.0.push(rs.id() as i32);
        let restored = restored_child(&mut rs, Duration::from_secs(20));
        self.reaper.0.push(restored);
        rs
    }

    /// The number of lock tables of the server's PID.
    fn locks(&self) -> Option<usize> {
        lock_tables(self.pid).map(|t| t.len())
    }
}

/// The server is checkpointed with `--kill`; the peer sends while no process holds the port,
/// then the server is restarted: the peer sees no error, and every line is answered once, in
/// order. The lock is there between the checkpoint and the restart, and gone after it.
fn across_kill(six: bool) {
    let Some(mut s) = Setup::new(if six { "netlock-kill6" } else { "netlock-kill" }, six) else { return };
    for _ in 0..5 {
        s.peer.exchange("before the checkpoint");
    }
    let img = s.d.0.join("img");
    s.checkpoint(&["--kill"], &img);
    let _ = s.server.wait();
    assert_eq!(s.locks(), Some(1), "one lock table between the checkpoint and the restart");
    // The server is gone: what the peer sends now is dropped, and sent again by its kernel.
    for _ in 0..5 {
        s.peer.send("while the server is checkpointed and killed");
        std::thread::sleep(Duration::from_millis(200));
    }
    s.peer.quiet(Duration::from_millis(1500), "while the server is checkpointed and killed");
    let mut rs = s.restart(&img);
    let t = Instant::now();
    for _ in 0..5 {
        s.peer.answer("after the restart");
    }
    let late = t.elapsed();
    for _ in 0..10 {
        s.peer.exchange("after the restart");
    }
    s.peer.quit();
    let st = wait_child(&mut rs, Duration::from_secs(30));
    let mut e = String::new();
    let _ = std::io::Read::read_to_string(rs.stderr.as_mut().expect("piped"), &mut e);
    let text = std::fs::read_to_string(&s.log).unwrap_or_default();
    assert!(st.success() && text.contains("server: 20 lines, then quit"), "the restored server: {st:?}: {text}\ncr_restart: {e}");
    assert_eq!(s.locks(), Some(0), "the restart removed the lock");
    s.reaper.0.clear();
    eprintln!("netlock: the lines sent while the server was away were answered {:.2} s after it was restored", late.as_secs_f64());
}

#[test]
fn peer_outside_sees_no_reset_across_kill_and_restart() {
    across_kill(false);
}

#[test]
fn peer_outside_sees_no_reset_across_kill_and_restart_ipv6() {
    across_kill(true);
}

/// Checkpoints with `--run` (the default) while the peer sends a line every millisecond: the
/// lines sent during the freeze are answered after it, once each and in order, and no lock is
/// left behind.
#[test]
fn peer_outside_sees_no_reset_during_a_run_checkpoint() {
    let Some(mut s) = Setup::new("netlock-run", false) else { return };
    let mut sender = s.peer.out.try_clone().expect("a handle to send with");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut n = 0u32;
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = sender.write_all(format!("{n}\n").as_bytes()) {
                return Err(format!("the peer could not send line {n} during the checkpoints: {e}"));
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(n)
    });
    for round in 0..3 {
        s.checkpoint(&[], &s.d.0.join(format!("img{round}")));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = writer.join().expect("the writer").unwrap_or_else(|e| panic!("{e}"));
    s.peer.sent = sent;
    while s.peer.answered < sent {
        s.peer.answer("after the checkpoints with --run");
    }
    s.peer.quit();
    let st = wait_child(&mut s.server, Duration::from_secs(20));
    let text = std::fs::read_to_string(&s.log).unwrap_or_default();
    assert!(st.success() && text.contains(&format!("server: {sent} lines, then quit")), "the server: {st:?}: {text}");
    assert_eq!(s.locks(), Some(0), "no lock left after checkpoints with --run");
}

/// Where `nft` cannot run, a checkpoint with `--kill` of a TCP connection is refused with a
/// message that says why and names the option that goes on without the lock; with that
/// option it is taken, and says that the peer may see a reset.
#[test]
fn without_nft_the_lock_is_refused_or_skipped_by_option() {
    let Some(mut s) = Setup::new("netlock-nonft", false) else { return };
    s.peer.exchange("before the checkpoint");
    // A PATH without nft.
    let empty = s.d.0.join("bin");
    std::fs::create_dir_all(&empty).expect("an empty directory");
    let img = s.d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).env("PATH", &empty).arg("--kill").arg("-f").arg(&img).arg(s.pid.to_string()).output().expect("cr_checkpoint runs");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert!(!ck.status.success(), "refused without nft: {err}");
    assert!(err.contains("nft") && err.contains("--network-lock=skip"), "the message says why and what to do: {err}");
    assert!(s.server.try_wait().expect("try_wait").is_none(), "the server runs on after a refused checkpoint");
    s.peer.exchange("after a refused checkpoint");
    let ck = Command::new(bin("cr_checkpoint")).env("PATH", &empty).arg("--kill").arg("--network-lock=skip").arg("-f").arg(&img).arg(s.pid.to_string()).output().expect("cr_checkpoint runs");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert!(ck.status.success(), "taken with --network-lock=skip: {err}");
    assert!(err.contains("reset"), "it says the peer may see a reset: {err}");
    let _ = s.server.wait();
    assert_eq!(s.locks(), Some(0), "no lock with --network-lock=skip");
}

/// A restart that fails (here: the server's program is missing) leaves the lock, so that the
/// peer still sees no reset; once the program is back, another restart takes the connection
/// up, and removes the lock.
#[test]
fn a_failed_restart_keeps_the_lock_for_the_next_one() {
    let Some(mut s) = Setup::new("netlock-retry", false) else { return };
    s.peer.exchange("before the checkpoint");
    let img = s.d.0.join("img");
    s.checkpoint(&["--kill"], &img);
    let _ = s.server.wait();
    let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info runs");
    let info = String::from_utf8_lossy(&info.stdout);
    let tables = lock_tables(s.pid).unwrap_or_default();
    assert!(tables.len() == 1 && info.contains(&format!("table inet {}", tables[0])), "cr_info names the lock: {info}");
    let away = s.d.0.join("tcppeer.away");
    std::fs::rename(&s.prog, &away).expect("moving the program away");
    let rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).output().expect("cr_restart runs");
    assert!(!rs.status.success(), "the restart without its program fails: {}", String::from_utf8_lossy(&rs.stderr));
    assert_eq!(s.locks(), Some(1), "a failed restart leaves the lock");
    s.peer.send("after a failed restart");
    s.peer.quiet(Duration::from_millis(1500), "after a failed restart");
    std::fs::rename(&away, &s.prog).expect("moving the program back");
    let mut rs = s.restart(&img);
    s.peer.answer("after the second restart");
    s.peer.exchange("after the second restart");
    s.peer.quit();
    let st = wait_child(&mut rs, Duration::from_secs(30));
    let text = std::fs::read_to_string(&s.log).unwrap_or_default();
    assert!(st.success() && text.contains("server: 3 lines, then quit"), "the restored server: {st:?}: {text}");
    assert_eq!(s.locks(), Some(0), "the second restart removed the lock");
    s.reaper.0.clear();
}
