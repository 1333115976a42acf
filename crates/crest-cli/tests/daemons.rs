//! Real daemons from Debian's packages: `redis-server` (epoll over its listening socket and its
//! clients, background threads), a tmux server (a session whose shell runs on a
//! pseudo-terminal pair held by the server, a Unix listening socket its clients connect to) and a
//! postgres cluster (a postmaster and its background processes sharing memory, SysV and POSIX
//! shared memory, signalfd and epoll latches, a client connection). Each is loaded with data by a
//! client, checkpointed, restarted and checked by a client that finds its data and can connect
//! again; redis and postgres are also checkpointed with the default `--run` while a client keeps
//! its connection, which works on after it. Each prints its checkpoint time, restart time and
//! image size. A daemon that is not installed is skipped with a message (failing when CI is set).
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port()
}

fn find(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

/// `pid` and all its descendants.
fn tree_of(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let kids = children_of(all[i]);
        all.extend(kids);
        i += 1;
    }
    all
}

/// Kills, on drop, every descendant of the roots it holds (then the roots): the processes a
/// daemon forked, which the test did not start itself.
#[derive(Default)]
struct Trees(Vec<i32>);
impl Drop for Trees {
    fn drop(&mut self) {
        for &r in &self.0 {
            for p in tree_of(r).into_iter().rev() {
                let _ = Command::new("kill").arg("-9").arg(p.to_string()).stderr(Stdio::null()).status();
            }
        }
    }
}

/// Waits for cr_restart (`rs`, stderr piped) to end after its restored processes ended by
/// themselves, and asserts that it reports success.
fn restart_ends_well(procs: &mut Procs, rs_pid: i32, what: &str) {
    let mut rs = procs.take(rs_pid);
    let st = wait_child(&mut rs, Duration::from_secs(30));
    let mut err = String::new();
    let _ = rs.stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert!(st.success(), "cr_restart once {what} ended: {st:?} {err}");
}

// ---------------------------------------------------------------------------------------------
// redis

/// A RESP reply.
#[derive(Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

/// A redis client on one connection, speaking RESP.
struct Redis {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Redis {
    fn connect(port: u16) -> std::io::Result<Redis> {
        let w = TcpStream::connect(("127.0.0.1", port))?;
        w.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Redis { r: BufReader::new(w.try_clone()?), w })
    }

    fn send(&mut self, args: &[&str]) -> std::io::Result<()> {
        let mut m = format!("*{}\r\n", args.len());
        for a in args {
            m.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w.write_all(m.as_bytes())
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut l = String::new();
        if self.r.read_line(&mut l)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(l.trim_end_matches("\r\n").to_string())
    }

    fn reply(&mut self) -> std::io::Result<Reply> {
        let l = self.line()?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad reply {l:?}"));
        let (kind, rest) = l.split_at(1.min(l.len()));
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut b = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut b)?;
                    b.truncate(n as usize);
                    Reply::Bulk(Some(String::from_utf8_lossy(&b).into_owned()))
                }
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                let mut v = Vec::new();
                for _ in 0..n.max(0) {
                    v.push(self.reply()?);
                }
                Reply::Array(v)
            }
            _ => return Err(bad()),
        })
    }

    fn cmd(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        self.send(args)?;
        self.reply()
    }

    /// The value of `key`, checked to be a string.
    fn get(&mut self, key: &str) -> Option<String> {
        match self.cmd(&["GET", key]).expect("GET") {
            Reply::Bulk(v) => v,
            r => panic!("GET {key}: {r:?}"),
        }
    }

    fn int(&mut self, args: &[&str]) -> i64 {
        match self.cmd(args).unwrap_or_else(|e| panic!("{args:?}: {e}")) {
            Reply::Int(n) => n,
            r => panic!("{args:?}: {r:?}"),
        }
    }

    fn ok(&mut self, args: &[&str]) {
        let r = self.cmd(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(r, Reply::Simple("OK".into()), "{args:?}");
    }
}

const REDIS_KEYS: usize = 2000;

/// Waits until redis answers PING on a new connection.
fn wait_redis(port: u16, what: &str) {
    let t = Instant::now();
    loop {
        match Redis::connect(port).and_then(|mut c| c.cmd(&["PING"])) {
            Ok(Reply::Simple(p)) if p == "PONG" => return,
            r => assert!(t.elapsed() < Duration::from_secs(20), "{what}: no PONG after 20 s: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every key loaded is there with its value, and the list, hash and counter hold what they held.
fn check_redis_data(c: &mut Redis, counter: i64) {
    // Pipelined: every GET sent, then every reply read.
    for i in 0..REDIS_KEYS {
        c.send(&["GET", &format!("key:{i}")]).expect("GET sent");
    }
    for i in 0..REDIS_KEYS {
        assert_eq!(c.reply().expect("GET reply"), Reply::Bulk(Some(format!("value-{i}-{}", "x".repeat(i % 50)))), "key:{i}");
    }
    assert_eq!(c.int(&["LLEN", "list"]), 500);
    assert_eq!(c.cmd(&["LINDEX", "list", "123"]).expect("LINDEX"), Reply::Bulk(Some("item-123".into())));
    assert_eq!(c.cmd(&["HGET", "hash", "f77"]).expect("HGET"), Reply::Bulk(Some("h77".into())));
    assert_eq!(c.get("counter"), Some(counter.to_string()));
    let ttl = c.int(&["TTL", "expiring"]);
    assert!((3000..=3600).contains(&ttl), "the key with an expiry keeps it: TTL {ttl}");
}

#[test]
fn redis_server() {
    let Some(redis) = find(&["/usr/bin/redis-server", "/usr/local/bin/redis-server"]) else {
        skip("redis-server is not installed (apt-get install redis-server)");
        return;
    };
    if !is_root() {
        skip("the client's connection kept across the checkpoint is saved in repair mode (TCP_REPAIR), which needs CAP_NET_ADMIN");
        return;
    }
    let d = Dir::new("redis");
    let port = free_port();
    let log = std::fs::File::create(d.0.join("redis.log")).expect("log");
    let mut procs = Procs::default();
    let server = procs.add(
        Command::new(&redis)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir"])
            .arg(&d.0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("redis-server starts"),
    );
    procs.pids.push(server);
    wait_redis(port, "redis as started");

    // Loaded by a client: strings, a list, a hash, a counter, a key with an expiry.
    let mut c = Redis::connect(port).expect("connect");
    for i in 0..REDIS_KEYS {
        c.send(&["SET", &format!("key:{i}"), &format!("value-{i}-{}", "x".repeat(i % 50))]).expect("SET sent");
    }
    for i in 0..REDIS_KEYS {
        assert_eq!(c.reply().expect("SET reply"), Reply::Simple("OK".into()), "SET key:{i}");
    }
    for i in 0..500 {
        c.send(&["RPUSH", "list", &format!("item-{i}")]).expect("RPUSH sent");
    }
    for _ in 0..500 {
        c.reply().expect("RPUSH reply");
    }
    for i in 0..100 {
        c.int(&["HSET", "hash", &format!("f{i}"), &format!("h{i}")]);
    }
    c.ok(&["SET", "expiring", "soon", "EX", "3600"]);
    assert_eq!(c.int(&["INCR", "counter"]), 1);
    check_redis_data(&mut c, 1);

    // A checkpoint that lets redis run on, while this client keeps its connection: the same
    // connection's next commands work.
    let run_img = d.0.join("run.img");
    let run_time = timed_checkpoint(&[], &run_img, server);
    assert_untouched(server, "after the checkpoint with --run");
    assert_eq!(c.int(&["INCR", "counter"]), 2, "the kept connection works on after the checkpoint");
    check_redis_data(&mut c, 2);
    drop(c);

    // --kill, restart: a new connection finds every key and can write.
    let img = d.0.join("img");
    let ck_time = timed_checkpoint(&["--kill"], &img, server);
    let _ = procs.take(server).wait();
    procs.forget(server);
    assert!(Redis::connect(port).is_err(), "nothing listens once redis is killed");
    let t = Instant::now();
    let rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = procs.add(rs);
    procs.pids.push(server);
    wait_redis(port, "redis restarted");
    let rs_time = t.elapsed();
    if is_root() {
        assert_eq!(children_of(rs_pid), vec![server], "redis is restored with its PID");
    }
    let mut c = Redis::connect(port).expect("connect after the restart");
    check_redis_data(&mut c, 2);
    assert_eq!(c.int(&["DBSIZE"]), REDIS_KEYS as i64 + 4, "no key more, no key less");
    c.ok(&["SET", "after", "restart"]);
    assert_eq!(c.int(&["INCR", "counter"]), 3);
    let mut c2 = Redis::connect(port).expect("a second connection after the restart");
    assert_eq!(c2.get("after"), Some("restart".into()));
    eprintln!("redis-server: checkpoint --run {run_time:?} (image {} KiB), checkpoint --kill {ck_time:?}, restart to first PONG {rs_time:?}, image {} KiB", image_kib(&run_img), image_kib(&img));

    // It shuts down cleanly when told to, and cr_restart reports its success.
    let _ = c2.send(&["SHUTDOWN", "NOSAVE"]);
    restart_ends_well(&mut procs, rs_pid, "redis shut down");
    procs.forget(server);
    let log = std::fs::read_to_string(d.0.join("redis.log")).unwrap_or_default();
    assert!(log.contains("ready to exit"), "redis logged its shutdown:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// tmux

/// The loop the session's shell runs: a counter every 0.2 s, and what it reads from its
/// terminal echoed back.
const TMUX_LOOP: &str = "i=0\nwhile :; do\n  i=$((i+1))\n  echo \"count $i\"\n  if read -r -t 0.2 line; then echo \"got $line\"; fi\ndone\n";

/// `tmux -S SOCK ARGS`: its standard output, or None if it failed (no server).
fn tmux_out(tmux: &Path, sock: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new(tmux).arg("-S").arg(sock).args(args).env("TERM", "xterm").stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The highest counter the pane shows, if the server answers.
fn tmux_count(tmux: &Path, sock: &Path) -> Option<u64> {
    let screen = tmux_out(tmux, sock, &["capture-pane", "-p", "-t", "crest:0"])?;
    Some(screen.lines().filter_map(|l| l.strip_prefix("count ")?.trim().parse().ok()).max().unwrap_or(0))
}

/// Waits until the pane shows a counter above `above`; returns it.
fn tmux_wait_count(tmux: &Path, sock: &Path, above: u64, what: &str) -> u64 {
    let t = Instant::now();
    loop {
        match tmux_count(tmux, sock) {
            Some(n) if n > above => return n,
            r => assert!(t.elapsed() < Duration::from_secs(20), "{what}: no counter above {above} after 20 s: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Types `text` and Enter into the pane, and waits until the shell says it got it.
fn tmux_type(tmux: &Path, sock: &Path, text: &str, what: &str) {
    assert!(tmux_out(tmux, sock, &["send-keys", "-t", "crest:0", text, "Enter"]).is_some(), "{what}: send-keys");
    let t = Instant::now();
    loop {
        let screen = tmux_out(tmux, sock, &["capture-pane", "-p", "-t", "crest:0"]).unwrap_or_default();
        if screen.lines().any(|l| l == format!("got {text}")) {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{what}: the shell did not read {text:?}; the pane shows:\n{screen}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a tmux server with the session "crest" running [`TMUX_LOOP`] in `d`, its socket at
/// `sock`. The server makes itself a daemon: killafter, a subreaper, is its parent then, and
/// reaps it once it is killed.
fn start_tmux(d: &Dir, tmux: &Path, bash: &Path, sock: &Path, procs: &mut Procs) {
    let script = d.0.join("loop.sh");
    std::fs::write(&script, TMUX_LOOP).expect("script");
    let ka = build_killafter(d);
    let reaper = Command::new(&ka)
        .args(["-1"])
        .arg(tmux)
        .arg("-S")
        .arg(sock)
        .args(["-f", "/dev/null", "new-session", "-d", "-s", "crest", "-x", "80", "-y", "24"])
        .arg(format!("exec {} --norc --noprofile {}", bash.display(), script.display()))
        .env("TERM", "xterm")
        .env("SHELL", "/bin/sh")
        .current_dir(&d.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tmux starts");
    procs.reapers.push(reaper);
}

fn tmux_and_bash() -> Option<(PathBuf, PathBuf)> {
    let Some(tmux) = find(&["/usr/bin/tmux", "/usr/local/bin/tmux"]) else {
        skip("tmux is not installed (apt-get install tmux)");
        return None;
    };
    let Some(bash) = find(&["/bin/bash", "/usr/bin/bash"]) else {
        skip("bash is not installed");
        return None;
    };
    Some((tmux, bash))
}

#[test]
fn tmux_server_with_a_session() {
    let Some((tmux, bash)) = tmux_and_bash() else { return };
    let d = Dir::new("tmux");
    let sock = d.0.join("sock");
    let mut procs = Procs::default();
    let mut trees = Trees::default();
    start_tmux(&d, &tmux, &bash, &sock, &mut procs);
    let before = tmux_wait_count(&tmux, &sock, 2, "tmux as started");
    let server: i32 = tmux_out(&tmux, &sock, &["display-message", "-p", "#{pid}"]).expect("the server's PID").trim().parse().expect("a PID");
    let shell: i32 = tmux_out(&tmux, &sock, &["display-message", "-p", "-t", "crest:0", "#{pane_pid}"]).expect("the pane's PID").trim().parse().expect("a PID");
    trees.0.push(server);
    procs.pids.extend([server, shell]);
    tmux_type(&tmux, &sock, "before", "tmux as started");

    // --tree --kill of the server: its session's shell goes with it.
    let img = d.0.join("img");
    let count_before = tmux_count(&tmux, &sock).unwrap_or(before);
    let ck_time = timed_checkpoint(&["--tree", "--kill"], &img, server);
    wait_gone(server, "the tmux server");
    wait_gone(shell, "the session's shell");
    assert!(tmux_count(&tmux, &sock).is_none(), "no tmux server answers once it is killed");
    let t = Instant::now();
    let rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = procs.add(rs);
    trees.0.push(rs_pid);
    tmux_wait_count(&tmux, &sock, 0, "tmux restarted");
    let rs_time = t.elapsed();
    let after = tmux_wait_count(&tmux, &sock, count_before, "tmux restarted");
    let rs_count = t.elapsed();
    if is_root() {
        assert_eq!(children_of(rs_pid), vec![server], "the server is restored with its PID");
        assert_eq!(children_of(server).first(), Some(&shell), "the session's shell is restored with its PID");
    }
    // The counter goes on from where it was: the same shell, not a new one counting from 1.
    let screen = tmux_out(&tmux, &sock, &["capture-pane", "-p", "-t", "crest:0"]).unwrap_or_default();
    let counts: Vec<u64> = screen.lines().filter_map(|l| l.strip_prefix("count ")?.trim().parse().ok()).collect();
    assert!(counts.windows(2).all(|w| w[1] == w[0] + 1), "the counter goes on with no gap and no repeat:\n{screen}");
    assert!(after > count_before, "the counter went on past {count_before}: {after}");
    tmux_type(&tmux, &sock, "after-restart", "tmux restarted");
    // The server opens a new pseudo-terminal for a new window, and runs its program.
    assert!(tmux_out(&tmux, &sock, &["new-window", "-d", "-t", "crest:1", "echo fresh window; exec sleep 600"]).is_some(), "new-window after the restart");
    let t = Instant::now();
    while !tmux_out(&tmux, &sock, &["capture-pane", "-p", "-t", "crest:1"]).unwrap_or_default().contains("fresh window") {
        assert!(t.elapsed() < Duration::from_secs(20), "the new window's program did not print");
        std::thread::sleep(Duration::from_millis(20));
    }
    let size = image_kib(&img);
    eprintln!("tmux server: checkpoint --tree --kill {ck_time:?}, restart to the server's first answer {rs_time:?} (to the next count {rs_count:?}), image {size} KiB");

    // kill-server ends it all; cr_restart ends with the server.
    assert!(tmux_out(&tmux, &sock, &["kill-server"]).is_some(), "kill-server");
    let mut rs = procs.take(rs_pid);
    let st = wait_child(&mut rs, Duration::from_secs(20));
    assert!(st.success(), "cr_restart ends with the tmux server: {st:?}");
}

// ---------------------------------------------------------------------------------------------
// postgres

/// The directory of Debian's postgres binaries, the highest version installed.
fn pg_bin() -> Option<PathBuf> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let n = e.file_name().to_str()?.parse().ok()?;
            let b = e.path().join("bin");
            b.join("postgres").exists().then_some((n, b))
        })
        .collect();
    v.sort();
    v.pop().map(|(_, b)| b)
}

/// The uid and gid of user `name`.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, name]).stderr(Stdio::null()).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// `prog` run as the user postgres when the test runs as root (postgres refuses root).
fn as_pg(prog: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"]).arg(prog);
        c
    } else {
        Command::new(prog)
    }
}

/// What a failed run leaves behind besides processes: the cluster's SysV shared memory
/// segment (its id is in postmaster.pid) and its POSIX segments in /dev/shm, removed on drop.
struct PgLeftovers {
    data: PathBuf,
    shm_before: Vec<String>,
}
impl Drop for PgLeftovers {
    fn drop(&mut self) {
        let pidfile = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap_or_default();
        if let Some(shmid) = pidfile.lines().nth(6).and_then(|l| l.split_whitespace().nth(1)) {
            let _ = Command::new("ipcrm").args(["-m", shmid]).stderr(Stdio::null()).status();
        }
        for n in names_in(Path::new("/dev/shm")) {
            if n.starts_with("PostgreSQL.") && !self.shm_before.contains(&n) {
                let _ = std::fs::remove_file(Path::new("/dev/shm").join(n));
            }
        }
    }
}

/// The postmaster's background processes that live as long as it does (the checkpointer, the
/// writers, the launchers), not its backends or the workers that come and go.
fn pg_background(pm: i32) -> Vec<i32> {
    const LONG_LIVED: [&str; 5] = ["checkpointer", "background writer", "walwriter", "autovacuum launcher", "logical replication launcher"];
    let t = Instant::now();
    loop {
        let b: Vec<i32> = children_of(pm)
            .into_iter()
            .filter(|p| {
                let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
                LONG_LIVED.iter().any(|n| cmd.starts_with(&format!("postgres: {n}")))
            })
            .collect();
        if b.len() >= LONG_LIVED.len() || t.elapsed() > Duration::from_secs(10) {
            return b;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One psql command on a new connection: its output (unaligned, tuples only), or the error.
fn psql(bin: &Path, port: u16, sql: &str) -> Result<String, String> {
    let o = Command::new(bin.join("psql"))
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// Waits until a new connection answers a query.
fn wait_pg(bin: &Path, port: u16, what: &str) {
    let t = Instant::now();
    loop {
        match psql(bin, port, "select 1") {
            Ok(s) if s == "1" => return,
            r => assert!(t.elapsed() < Duration::from_secs(30), "{what}: no answer after 30 s: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A psql session kept open: queries written to its input, its answers read back line by line.
struct Session {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    n: u32,
}
impl Session {
    fn start(bin: &Path, port: u16) -> Session {
        let mut child = Command::new(bin.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql starts");
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Session { child, lines, n: 0 }
    }

    /// Runs `sql` and returns the lines it printed.
    fn query(&mut self, sql: &str) -> Vec<String> {
        self.n += 1;
        let mark = format!("-- done {}", self.n);
        let input = self.child.stdin.as_mut().expect("stdin");
        input.write_all(format!("{sql}\n\\echo '{mark}'\n").as_bytes()).expect("psql takes the query");
        input.flush().expect("flush");
        let mut got = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(l) if l == mark => return got,
                Ok(l) => got.push(l),
                Err(e) => {
                    let _ = self.child.kill();
                    let mut err = String::new();
                    let _ = self.child.stderr.take().map(|mut s| s.read_to_string(&mut err));
                    panic!("the kept psql session: no answer to {sql:?} ({e}); so far {got:?}; stderr: {err}");
                }
            }
        }
    }

    /// Quits and waits for psql to end.
    fn quit(mut self) {
        drop(self.child.stdin.take());
        let st = wait_child(&mut self.child, Duration::from_secs(10));
        assert!(st.success(), "psql ends well: {st:?}");
    }
}

#[test]
fn postgres_cluster() {
    let Some(pg) = pg_bin() else {
        skip("postgres is not installed (apt-get install postgresql)");
        return;
    };
    if !is_root() {
        skip("postgres runs as the user postgres, and psql's connection kept across the checkpoint is saved in repair mode (TCP_REPAIR): both need root");
        return;
    }
    let ids = user_ids("postgres");
    if ids.is_none() {
        skip("postgres refuses to run as root, and there is no user postgres to run it as");
        return;
    }
    let d = Dir::new("postgres");
    let dir = d.0.display().to_string();
    let data = d.0.join("data");
    if let (true, Some((uid, gid))) = (is_root(), ids) {
        std::os::unix::fs::chown(&d.0, Some(uid), Some(gid)).expect("the scratch directory given to postgres");
    }
    let init = as_pg(&pg.join("initdb")).arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "--no-sync", "--no-instructions"]).stdin(Stdio::null()).output().expect("initdb");
    assert!(init.status.success(), "initdb: {}{}", String::from_utf8_lossy(&init.stdout), String::from_utf8_lossy(&init.stderr));
    let port = free_port();
    let shm_before: Vec<String> = names_in(Path::new("/dev/shm")).into_iter().filter(|n| n.starts_with("PostgreSQL.")).collect();
    let mut procs = Procs::default();
    let _leftovers = PgLeftovers { data: data.clone(), shm_before };
    let mut trees = Trees::default();
    let log = std::fs::File::create(d.0.join("postgres.log")).expect("log");
    if let (true, Some((uid, gid))) = (is_root(), ids) {
        std::os::unix::fs::chown(d.0.join("postgres.log"), Some(uid), Some(gid)).expect("the log given to postgres");
    }
    // killafter, a subreaper, is the postmaster's parent: it reaps the background processes too
    // once the postmaster is killed.
    let ka = build_killafter(&d);
    let reaper = Command::new(&ka)
        .arg("-1")
        .args(as_pg(&pg.join("postgres")).get_program().to_str().map(|p| vec![p.to_string()]).unwrap_or_default())
        .args(as_pg(&pg.join("postgres")).get_args())
        .arg("-D")
        .arg(&data)
        .args(["-k", &dir, "-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("postgres starts");
    let ka_pid = reaper.id() as i32;
    procs.reapers.push(reaper);
    wait_pg(&pg, port, "postgres as started");
    let pm: i32 = std::fs::read_to_string(data.join("postmaster.pid")).expect("postmaster.pid").lines().next().and_then(|l| l.trim().parse().ok()).expect("the postmaster's PID");
    assert_eq!(children_of(ka_pid), vec![pm], "the postmaster runs under killafter");
    trees.0.push(pm);
    let background = pg_background(pm);
    assert!(background.len() >= 3, "the postmaster has its background processes: {background:?}");

    // Loaded by a client.
    psql(&pg, port, "create table t (i int primary key, v text); insert into t select g, 'row ' || g from generate_series(1, 10000) g").expect("create and fill");
    let count = |what: &str| psql(&pg, port, "select count(*) || ' ' || sum(i) from t").unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(count("as loaded"), format!("10000 {}", 10000 * 10001 / 2));

    // A checkpoint of the whole cluster that lets it run on, while a psql session stays
    // connected: that session's next queries work.
    let mut s = Session::start(&pg, port);
    assert_eq!(s.query("select count(*) from t;"), vec!["10000"]);
    let run_img = d.0.join("run.img");
    let run_time = timed_checkpoint(&["--tree"], &run_img, pm);
    for p in std::iter::once(pm).chain(background.iter().copied()) {
        assert_untouched(p, "after the checkpoint with --run");
    }
    assert_eq!(s.query("insert into t values (10001, 'kept session'); select count(*) from t;"), vec!["10001"], "the kept session works on after the checkpoint");
    s.quit();
    // Its backend ends before the next checkpoint.
    let t = Instant::now();
    while children_of(pm).iter().any(|p| !background.contains(p)) {
        assert!(t.elapsed() < Duration::from_secs(10), "the kept session's backend did not end");
        std::thread::sleep(Duration::from_millis(20));
    }

    // --tree --kill, restart: a new client finds the rows and can insert.
    let img = d.0.join("img");
    let ck_time = timed_checkpoint(&["--tree", "--kill"], &img, pm);
    wait_gone(pm, "the postmaster");
    for p in &background {
        wait_gone(*p, "a background process");
    }
    assert!(psql(&pg, port, "select 1").is_err(), "nothing answers once postgres is killed");
    let t = Instant::now();
    let mut rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = rs.id() as i32;
    trees.0.push(rs_pid);
    let mut last = Ok(String::new());
    let limit = Duration::from_secs(30);
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_while_restarting(&mut rs, limit, || {
            last = psql(&pg, port, "select 1");
            last.as_deref() == Ok("1")
        })
    }));
    procs.children.push(rs);
    if let Err(e) = waited {
        let why = e.downcast_ref::<String>().cloned().unwrap_or_default();
        let states: Vec<String> = tree_of(rs_pid).iter().map(|p| format!("{p} {:?} {}", proc_state(*p), std::fs::read_to_string(format!("/proc/{p}/wchan")).unwrap_or_default())).collect();
        let log = std::fs::read_to_string(d.0.join("postgres.log")).unwrap_or_default();
        let ss = Command::new("ss")
            .args(["-tanpe"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.contains(&format!(":{port} "))).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        panic!("postgres restarted: no answer: {why}; last: {last:?}\nprocesses: {states:?}\nsockets on its port:\n{ss}\nlog:\n{log}");
    }
    let rs_time = t.elapsed();
    if is_root() {
        assert_eq!(children_of(rs_pid), vec![pm], "the postmaster is restored with its PID");
        let mut now = children_of(pm);
        now.retain(|p| background.contains(p));
        assert_eq!(now.len(), background.len(), "the background processes are restored with their PIDs");
    }
    assert_eq!(count("after the restart"), format!("10001 {}", 10001 * 10002 / 2));
    psql(&pg, port, "insert into t select g, 'after restart' from generate_series(10002, 11000) g").expect("insert after the restart");
    // A checkpoint of the database: the checkpointer, woken through its latch, writes it.
    psql(&pg, port, "checkpoint").expect("CHECKPOINT after the restart");
    let mut s = Session::start(&pg, port);
    assert_eq!(s.query("select count(*), sum(i) from t;"), vec![format!("11000|{}", 11000 * 11001 / 2)]);
    s.quit();
    eprintln!(
        "postgres: checkpoint --tree --run {run_time:?} (image {} KiB), checkpoint --tree --kill {ck_time:?}, restart to first answer {rs_time:?}, image {} KiB",
        image_kib(&run_img),
        image_kib(&img)
    );

    // A fast shutdown: every process ends, the shared memory is let go, cr_restart succeeds.
    let _ = Command::new("kill").args(["-INT", &pm.to_string()]).status();
    restart_ends_well(&mut procs, rs_pid, "postgres shut down");
    let log = std::fs::read_to_string(d.0.join("postgres.log")).unwrap_or_default();
    assert!(log.contains("database system is shut down"), "postgres shut down cleanly:\n{log}");
    assert!(!log.contains("PANIC") && !log.contains("terminated by signal"), "postgres logged trouble:\n{log}");
}

/// A client attached from a terminal of its own (`script`, outside the checkpoint): its
/// connection to the server cannot be made again, so the checkpoint is refused, naming it, and
/// the server runs on untouched; with --drop-unsupported the client sees the server go, the
/// restored server finds that connection closed (a client that left), keeps its session, and a
/// new client attaches.
#[test]
fn tmux_server_with_an_attached_client() {
    let Some((tmux, bash)) = tmux_and_bash() else { return };
    let Some(script) = find(&["/usr/bin/script", "/bin/script"]) else {
        skip("script (util-linux) is not installed");
        return;
    };
    let d = Dir::new("tmux-attached");
    let sock = d.0.join("sock");
    let mut procs = Procs::default();
    let mut trees = Trees::default();
    start_tmux(&d, &tmux, &bash, &sock, &mut procs);
    tmux_wait_count(&tmux, &sock, 2, "tmux as started");
    let server: i32 = tmux_out(&tmux, &sock, &["display-message", "-p", "#{pid}"]).expect("the server's PID").trim().parse().expect("a PID");
    trees.0.push(server);
    procs.pids.push(server);
    let attach = |out: &str, procs: &mut Procs| -> i32 {
        let pid = procs.add(
            Command::new(&script)
                .args(["-qfc", &format!("{} -S {} attach -t crest", tmux.display(), sock.display()), "/dev/null"])
                .env("TERM", "xterm")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(d.0.join(out)).expect("client output"))
                .stderr(Stdio::null())
                .spawn()
                .expect("script starts"),
        );
        let t = Instant::now();
        while tmux_out(&tmux, &sock, &["list-clients"]).unwrap_or_default().lines().count() != 1 {
            assert!(t.elapsed() < Duration::from_secs(20), "the client did not attach");
            std::thread::sleep(Duration::from_millis(20));
        }
        pid
    };
    let client = attach("client1.out", &mut procs);

    let img = d.0.join("img");
    let ck = Command::new(bin("cr_checkpoint")).args(["--tree", "--kill", "-f"]).arg(&img).arg(server.to_string()).output().expect("cr_checkpoint");
    let err = String::from_utf8_lossy(&ck.stderr);
    assert_eq!(ck.status.code(), Some(libc::EOPNOTSUPP), "the attached client's connection is refused: {err}");
    // The server holds two things of the client's: its connection, and its terminal (passed over
    // that connection); the refusal names the first it meets.
    let names_it = (err.contains("unix stream socket") && err.contains("tmux: client")) || err.contains("the terminal /dev/pts/");
    assert!(names_it && err.contains("--drop-unsupported"), "the refusal names the client's connection or terminal, and the option: {err}");
    assert_untouched(server, "after the refused checkpoint");
    assert_eq!(tmux_out(&tmux, &sock, &["list-clients"]).unwrap_or_default().lines().count(), 1, "the client is still attached");

    let count_before = tmux_count(&tmux, &sock).expect("the server answers");
    timed_checkpoint(&["--tree", "--kill", "--drop-unsupported"], &img, server);
    let mut c = procs.take(client);
    wait_child(&mut c, Duration::from_secs(20));
    let rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = procs.add(rs);
    trees.0.push(rs_pid);
    tmux_wait_count(&tmux, &sock, count_before, "tmux restarted without its client");
    assert_eq!(tmux_out(&tmux, &sock, &["list-clients"]).map(|l| l.lines().count()), Some(0), "the dropped client is gone");
    assert_eq!(tmux_out(&tmux, &sock, &["list-sessions", "-F", "#{session_name}"]).map(|l| l.trim().to_string()), Some("crest".into()), "the session is kept");
    attach("client2.out", &mut procs);
    tmux_type(&tmux, &sock, "attached-again", "tmux restarted, a client attached again");
    let t = Instant::now();
    while !std::fs::read_to_string(d.0.join("client2.out")).unwrap_or_default().contains("got attached-again") {
        assert!(t.elapsed() < Duration::from_secs(20), "the new client does not show the pane");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(tmux_out(&tmux, &sock, &["kill-server"]).is_some(), "kill-server");
    let mut rs = procs.take(rs_pid);
    let st = wait_child(&mut rs, Duration::from_secs(20));
    assert!(st.success(), "cr_restart ends with the tmux server: {st:?}");
}
