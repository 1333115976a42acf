//! The "servers" section: real servers, each installed one started on a free loopback port
//! (nginx with two workers and its own configuration in a scratch directory, `redis-server`
//! without persistence loaded with keys, `python3 -m http.server`), then checkpointed with
//! `cr_checkpoint --tree --kill` and restarted with `cr_restart` (PIDs restored), timed from
//! the spawn of `cr_restart` until it reports the tree running and until the server answers
//! a new client with its data. Interleaved with it, repetition by repetition, and when a CRIU
//! binary is given: another fresh copy dumped with `criu dump --tcp-established --shell-job`
//! (which kills it) and restored with `criu restore -d --tcp-established --shell-job`, timed
//! the same way. Image sizes of both. A server that is not installed is skipped with a line
//! saying so.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{self, Lines, Scratch, R};
use crate::table::{mib, Row};
use crate::{criu, sys, Ctx, Stop};

/// Keys loaded into redis, and the bytes of each value.
const KEYS: usize = 20_000;
const VALUE: usize = 100;
/// How long a server may take to answer after it is started or restored.
const ANSWER: Duration = Duration::from_secs(20);
/// What nginx and http.server serve.
const PAGE: &str = "served by a server under checkpoint and restart\n";

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Nginx,
    Redis,
    Python,
}

struct Server {
    kind: Kind,
    name: &'static str,
    bin: PathBuf,
}

fn first_of(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

/// The servers of the section: those installed, and a line for each that is not.
fn installed() -> (Vec<Server>, Vec<(&'static str, &'static str)>) {
    let mut have = Vec::new();
    let mut missing = Vec::new();
    let wanted: [(Kind, &str, &[&str], &str); 3] = [
        (Kind::Nginx, "nginx", &["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"], "apt-get install nginx-light"),
        (Kind::Redis, "redis-server", &["/usr/bin/redis-server", "/usr/local/bin/redis-server"], "apt-get install redis-server"),
        (Kind::Python, "python3 -m http.server", &["/usr/bin/python3", "/usr/local/bin/python3"], "apt-get install python3"),
    ];
    for (kind, name, paths, how) in wanted {
        match first_of(paths) {
            Some(bin) => have.push(Server { kind, name, bin }),
            None => missing.push((name, how)),
        }
    }
    (have, missing)
}

fn free_port() -> R<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("a free loopback port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// A started server: its first process (the benchmark's child) and its port. Dropping it kills
/// its processes by PID and reaps them.
struct Running {
    child: Child,
    port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        for &p in criu::tree(pid).iter().rev() {
            sys::kill(p, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its other processes (nginx's workers), orphaned to the benchmark.
        sys::reap_orphans();
    }
}

/// Starts `s` on a free port in `dir` (its own configuration, page and log there), waits until
/// it answers and loads it with its data.
fn start(s: &Server, dir: &Path) -> R<Running> {
    let port = free_port()?;
    let d = dir.display().to_string();
    let log = dir.join("server.log");
    let mut cmd = match s.kind {
        Kind::Nginx => {
            for sub in ["html", "body", "proxy", "fastcgi", "uwsgi", "scgi"] {
                std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("{d}/{sub}: {e}"))?;
            }
            std::fs::write(dir.join("html/index.html"), PAGE).map_err(|e| format!("{d}/html/index.html: {e}"))?;
            // Workers under root too: CRIU reads every process's limits with prlimit, which
            // for a process of another user needs CAP_SYS_RESOURCE, which root may lack (it
            // does on the machine docs/benchmarks.md was measured on). Both sides get the same.
            let conf = format!(
                "daemon off;\nmaster_process on;\nuser root;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
                 server {{ listen 127.0.0.1:{port}; root {d}/html; }}\n}}\n"
            );
            std::fs::write(dir.join("nginx.conf"), conf).map_err(|e| format!("{d}/nginx.conf: {e}"))?;
            let mut c = Command::new(&s.bin);
            c.arg("-c").arg(dir.join("nginx.conf")).arg("-p").arg(format!("{d}/"));
            c
        }
        Kind::Redis => {
            let mut c = Command::new(&s.bin);
            c.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir"]).arg(dir);
            c
        }
        Kind::Python => {
            std::fs::write(dir.join("page.txt"), PAGE).map_err(|e| format!("{d}/page.txt: {e}"))?;
            let mut c = Command::new(&s.bin);
            c.args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()]).current_dir(dir);
            c
        }
    };
    let child = criu::spawn_to_file(&mut cmd, &log, s.name)?;
    let mut r = Running { child, port };
    let deadline = Instant::now() + ANSWER;
    while let Err(e) = answers(s.kind, port, false) {
        if let Ok(Some(st)) = r.child.try_wait() {
            return Err(format!("{} ended as it started ({st}): {}", s.name, criu::log_tail(&log)));
        }
        if Instant::now() >= deadline {
            return Err(format!("{} does not answer on port {port} after {}s: {e}", s.name, ANSWER.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if s.kind == Kind::Redis {
        load_redis(port)?;
    }
    Ok(r)
}

fn connect(port: u16) -> R<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connecting to port {port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    Ok(s)
}

/// One HTTP/1.0 GET of `path`: the body.
fn http_get(port: u16, path: &str) -> R<String> {
    let mut s = connect(port)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").map_err(|e| format!("sending a request: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| format!("reading the answer: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answer {:?}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_string())
}

/// Reads one RESP reply line (a status, an integer or an error) or bulk string from `s`.
fn redis_reply(s: &mut TcpStream, buf: &mut Vec<u8>) -> R<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).into_owned();
            if let Some(n) = line.strip_prefix('$') {
                let n: i64 = n.parse().map_err(|_| format!("bad bulk length {line:?}"))?;
                if n < 0 {
                    buf.drain(..i + 2);
                    return Ok(String::new());
                }
                let need = i + 2 + n as usize + 2;
                if buf.len() >= need {
                    let v = String::from_utf8_lossy(&buf[i + 2..need - 2]).into_owned();
                    buf.drain(..need);
                    return Ok(v);
                }
            } else {
                buf.drain(..i + 2);
                return Ok(line);
            }
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).map_err(|e| format!("reading from redis: {e}"))?;
        if n == 0 {
            return Err("redis closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn redis_cmd(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    v
}

fn value(i: usize) -> String {
    let mut v = format!("value-{i}-");
    while v.len() < VALUE {
        v.push(char::from(b'a' + (i + v.len()) as u8 % 26));
    }
    v
}

/// Sets KEYS keys, pipelined.
fn load_redis(port: u16) -> R<()> {
    let mut s = connect(port)?;
    let mut out = Vec::new();
    for i in 0..KEYS {
        out.extend(redis_cmd(&["SET", &format!("key:{i}"), &value(i)]));
    }
    s.write_all(&out).map_err(|e| format!("loading redis: {e}"))?;
    let mut buf = Vec::new();
    for i in 0..KEYS {
        let r = redis_reply(&mut s, &mut buf)?;
        if r != "+OK" {
            return Err(format!("redis: SET key:{i}: {r}"));
        }
    }
    Ok(())
}

/// Whether the server answers a new client (with `data`: with the data it was given).
fn answers(kind: Kind, port: u16, data: bool) -> R<()> {
    match kind {
        Kind::Nginx => http_get(port, "/").and_then(|b| if b == PAGE { Ok(()) } else { Err(format!("nginx served {b:?}")) }),
        Kind::Python => http_get(port, "/page.txt").and_then(|b| if b == PAGE { Ok(()) } else { Err(format!("http.server served {b:?}")) }),
        Kind::Redis => {
            let mut s = connect(port)?;
            let mut buf = Vec::new();
            s.write_all(&redis_cmd(&["PING"])).map_err(|e| format!("redis: {e}"))?;
            let r = redis_reply(&mut s, &mut buf)?;
            if r != "+PONG" {
                return Err(format!("redis: PING: {r}"));
            }
            if !data {
                return Ok(());
            }
            s.write_all(&redis_cmd(&["DBSIZE"])).map_err(|e| format!("redis: {e}"))?;
            let r = redis_reply(&mut s, &mut buf)?;
            if r != format!(":{KEYS}") {
                return Err(format!("redis: DBSIZE {r}, {KEYS} keys loaded"));
            }
            for i in [0, KEYS / 2, KEYS - 1] {
                s.write_all(&redis_cmd(&["GET", &format!("key:{i}")])).map_err(|e| format!("redis: {e}"))?;
                let r = redis_reply(&mut s, &mut buf)?;
                if r != value(i) {
                    return Err(format!("redis: GET key:{i}: {r:?}"));
                }
            }
            Ok(())
        }
    }
}

/// Polls until the restored server answers a new client with its data: seconds since `t`.
fn until_answers(kind: Kind, port: u16, t: Instant, what: &str) -> R<f64> {
    loop {
        match answers(kind, port, true) {
            Ok(()) => return Ok(t.elapsed().as_secs_f64()),
            Err(e) if t.elapsed() > ANSWER => return Err(format!("{what} does not answer on port {port} after {}s: {e}", ANSWER.as_secs())),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn key(name: &str, what: &str) -> String {
    format!("servers {name}: {what}")
}

/// crest's checkpoint and restart of a fresh copy of `s`.
fn crest_once(c: &mut Ctx, s: &Server, rep: usize, dir: &Path, st: &str) -> R<()> {
    let img = dir.join("img");
    let mut srv = start(s, dir)?;
    let pid = srv.child.id() as i32;
    let port = srv.port;
    let ck = run::checkpoint(&c.o.bin, pid, &img, &["--tree", "--kill"], &[])?;
    c.s.add(&key(s.name, "checkpoint"), 0, st, rep, ck.wall);
    c.s.add(&key(s.name, "frozen"), 0, st, rep, ck.frozen);
    c.fact(&key(s.name, "image"), 0, st, ck.image_bytes);
    // cr_checkpoint killed the tree: reap it all, so that its PIDs are free again.
    let _ = srv.child.wait();
    drop(srv);
    let t = Instant::now();
    let mut cr = Command::new(c.o.bin.join("cr_restart"))
        .env("CREST_TIMING", "1")
        .arg(&img)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting cr_restart: {e}"))?;
    let err = Lines::new(cr.stderr.take().expect("piped"));
    let r = (|| {
        let line = err.until(&["crest-timing: restart"], run::LONG, "cr_restart")?;
        c.s.add(&key(s.name, "restart"), 0, st, rep, t.elapsed().as_secs_f64());
        let answered = until_answers(s.kind, port, t, &format!("{} restarted by crest", s.name))?;
        c.s.add(&key(s.name, "restart answers"), 0, st, rep, answered);
        Ok(run::field(&line, "pid").unwrap_or(0.0) as i32)
    })();
    // End the restored tree by its PIDs; cr_restart ends with it.
    let root = *r.as_ref().unwrap_or(&0);
    if root > 0 {
        for &p in criu::tree(root).iter().rev() {
            sys::kill(p, libc::SIGKILL);
        }
    }
    if sys::wait_child(cr.id() as i32, Duration::from_secs(10)).is_none() {
        let _ = cr.kill();
        let _ = cr.wait();
    }
    sys::reap_orphans();
    let _ = std::fs::remove_file(&img);
    r.map(drop)
}

/// CRIU's dump and restore of a fresh copy of `s`.
fn criu_once(c: &mut Ctx, s: &Server, rep: usize, path: &Path, dir: &Path, st: &str) -> R<()> {
    let imgs = dir.join("criu");
    let mut srv = start(s, dir)?;
    let pid = srv.child.id() as i32;
    let port = srv.port;
    let opts = ["--tcp-established"];
    let wall = criu::dump(path, pid, &imgs, &opts, s.name)?;
    c.s.add(&key(s.name, "criu dump"), 0, st, rep, wall);
    c.fact(&key(s.name, "criu image"), 0, st, criu::image_bytes(&imgs));
    let _ = srv.child.wait();
    drop(srv);
    let t = Instant::now();
    let (wall, root) = criu::restore(path, &imgs, &opts, s.name)?;
    c.s.add(&key(s.name, "criu restore"), 0, st, rep, wall);
    let answered = until_answers(s.kind, port, t, &format!("{} restored by CRIU (PID {})", s.name, root.0));
    drop(root);
    sys::reap_orphans();
    c.s.add(&key(s.name, "criu restore answers"), 0, st, rep, answered?);
    let _ = std::fs::remove_dir_all(&imgs);
    Ok(())
}

/// Every repetition: crest's checkpoint and restart of a fresh copy of each installed server,
/// then CRIU's of another. A failure of one side stops that side for that server, not the
/// other side.
pub fn servers(c: &mut Ctx) {
    let st = c.o.storage[0].display().to_string();
    let (have, missing) = installed();
    for (name, how) in missing {
        eprintln!("crest-bench: servers: {name} is not installed: skipped ({how})");
        c.rows.push(Row::new(format!("{name}: not installed, skipped"), 0, &st).note(how));
    }
    let criu = c.criu.path().map(Path::to_path_buf);
    for s in &have {
        let mut crest_failed: Option<String> = None;
        let mut criu_failed: Option<String> = None;
        let dir = match Scratch::new(&c.o.storage[0], &format!("server-{}", s.kind as u8)) {
            Ok(d) => d,
            Err(e) => {
                c.outcome(&format!("servers: {}", s.name), 0, &st, Err(Stop::Fail(e)));
                continue;
            }
        };
        let (crest_dir, criu_dir) = (dir.file("crest"), dir.file("criu"));
        for d in [&crest_dir, &criu_dir] {
            let _ = std::fs::create_dir_all(d);
        }
        for rep in 0..c.o.reps {
            if sys::stopped() {
                break;
            }
            eprintln!("crest-bench: {}, repetition {}", s.name, rep + 1);
            if crest_failed.is_none() {
                crest_failed = crest_once(c, s, rep, &crest_dir, &st).err();
            }
            if let (Some(p), None) = (&criu, &criu_failed) {
                criu_failed = criu_once(c, s, rep, p, &criu_dir, &st).err();
            }
        }
        rows(c, s.name, &st);
        if let Some(e) = crest_failed {
            c.outcome(&format!("{} with crest", s.name), 0, &st, Err(Stop::Fail(e)));
        }
        if let Some(e) = criu_failed {
            // CRIU's own failures are the comparison's, not crest's: noted, not failures.
            c.outcome(&format!("{} with CRIU", s.name), 0, &st, Err(Stop::Skip(format!("CRIU failed: {e}"))));
        }
    }
}

fn rows(c: &mut Ctx, name: &str, st: &str) {
    let s = &c.s;
    let size = |k: &str| c.get(&key(name, k), 0, st).map(mib).unwrap_or_default();
    let ms = |k: &str| s.stats(&key(name, k), 0, st).map(|(m, n)| format!("{:.1} ms (min {:.1})", m * 1e3, n * 1e3));
    let rows = [
        Row::of(s, &key(name, "checkpoint"), format!("{name}: checkpoint --tree --kill"), 0, st)
            .vs(s, &key(name, "criu dump"), "criu dump")
            .note(ms("frozen").map(|f| format!("frozen {f}")).unwrap_or_default())
            .note(format!("image {}", size("image"))),
        Row::of(s, &key(name, "restart"), format!("{name}: restart, until it runs"), 0, st).vs(s, &key(name, "criu restore"), "criu restore"),
        Row::of(s, &key(name, "restart answers"), format!("{name}: restart, until it answers"), 0, st).vs(s, &key(name, "criu restore answers"), "criu, until it answers"),
        Row::of(s, &key(name, "criu dump"), format!("{name}: criu dump --tcp-established"), 0, st).note(format!("images {}", size("criu image"))),
        Row::of(s, &key(name, "criu restore"), format!("{name}: criu restore -d, until criu returns"), 0, st),
        Row::of(s, &key(name, "criu restore answers"), format!("{name}: criu restore -d, until it answers"), 0, st),
    ];
    rows.into_iter().for_each(|r| c.push(r));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_replies() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().expect("accept");
            s.write_all(b"+OK\r\n:20000\r\n$5\r\nhello\r\n$-1\r\n").expect("write");
        });
        let mut s = connect(port).expect("connect");
        let mut buf = Vec::new();
        let got: Vec<String> = (0..4).map(|_| redis_reply(&mut s, &mut buf).expect("reply")).collect();
        t.join().expect("server");
        assert_eq!(got, ["+OK", ":20000", "hello", ""]);
        assert_eq!(redis_cmd(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        assert_eq!(value(7).len(), VALUE);
    }
}
