//! Real Python servers, written with the standard library only: `python3 -m http.server` with a
//! client keeping a keep-alive connection across a checkpoint that lets it run, then --kill and
//! restart; an asyncio program with a periodic task and a subprocess behind pipes (--tree); a
//! sqlite3 writer committing numbered rows in a loop. Each prints its checkpoint time, restart
//! time and image size. Without python3 each is skipped with a message (failing when CI is set).
mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The interpreter itself (not a wrapper script such as pyenv's shim, which would stay its parent).
fn python() -> Option<PathBuf> {
    let o = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().ok()?;
    let p = String::from_utf8(o.stdout).ok()?.trim().to_string();
    (o.status.success() && !p.is_empty()).then(|| PathBuf::from(p))
}

/// One request on `s`, kept open (HTTP/1.1 keep-alive): the body.
fn get_on(s: &mut TcpStream) -> std::io::Result<String> {
    http_get_on(s, "/page.txt")
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

fn get(port: u16) -> std::io::Result<String> {
    get_on(&mut connect(port)?)
}

fn wait_page(port: u16, page: &str, what: &str) {
    let t = Instant::now();
    loop {
        match get(port) {
            Ok(b) if b == page => return,
            r => assert!(t.elapsed() < Duration::from_secs(20), "{what}: no page after 20 s: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn python_http_server() {
    let Some(py) = python() else {
        skip("python3 is not installed");
        return;
    };
    let d = Dir::new("pyhttp");
    let page = "served by python3 -m http.server under crest\n".repeat(20);
    std::fs::write(d.0.join("page.txt"), &page).expect("page");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let log = std::fs::File::create(d.0.join("server.log")).expect("log");
    let mut procs = Procs::default();
    let server = procs.add(
        Command::new(&py)
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--protocol", "HTTP/1.1", &port.to_string()])
            .current_dir(&d.0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("python3 -m http.server starts"),
    );
    procs.pids.push(server);
    wait_page(port, &page, "http.server as started");

    // A checkpoint that lets the server run on while a client holds a keep-alive connection.
    let mut kept = connect(port).expect("connect");
    assert_eq!(get_on(&mut kept).expect("a page on the kept connection"), page);
    let run_img = d.0.join("run.img");
    let run_time = timed_checkpoint(&[], &run_img, server);
    assert_eq!(get_on(&mut kept).expect("the kept connection after the checkpoint"), page, "the kept connection serves on");
    drop(kept);

    // --kill, restart: a new connection gets the page.
    let img = d.0.join("img");
    let ck_time = timed_checkpoint(&["--kill"], &img, server);
    let _ = procs.take(server).wait();
    assert!(get(port).is_err(), "nothing listens once the server is killed");
    let t = Instant::now();
    let rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = procs.add(rs);
    wait_page(port, &page, "http.server restarted");
    let rs_time = t.elapsed();
    assert_eq!(children_of(rs_pid), vec![server], "the server is restored with its PID");
    for _ in 0..3 {
        let mut s = connect(port).expect("connect after the restart");
        assert_eq!(get_on(&mut s).expect("a page"), page);
        assert_eq!(get_on(&mut s).expect("a second page on the same connection"), page);
    }
    eprintln!("python http.server: checkpoint --run {run_time:?} (image {} KiB), checkpoint --kill {ck_time:?}, restart to first page {rs_time:?}, image {} KiB", image_kib(&run_img), image_kib(&img));
}

/// A `cr_restart` of a program whose output is a file, and how it went until the restored
/// program wrote a line more.
struct Restart {
    rs: Child,
    pid: i32,
    /// From the start of cr_restart to the new line (or to its end).
    time: Duration,
    /// Whether cr_restart ended before a new line came.
    ended: bool,
}

impl Restart {
    /// Starts `cr_restart IMG` (its standard error piped, its PID in `procs`) and waits until
    /// `out` has a line more than now, or cr_restart has ended; fails saying `no_line` after
    /// 20 s.
    fn to_next_line(procs: &mut Procs, img: &Path, out: &Path, no_line: &str) -> Restart {
        let lines_before = std::fs::read_to_string(out).unwrap_or_default().lines().count();
        let t = Instant::now();
        let mut rs = cr_restart_cmd().arg(img).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
        let pid = rs.id() as i32;
        procs.pids.push(pid);
        let mut ended = false;
        while std::fs::read_to_string(out).unwrap_or_default().lines().count() <= lines_before {
            if rs.try_wait().ok().flatten().is_some() {
                ended = true;
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "{no_line}");
            std::thread::sleep(Duration::from_millis(5));
        }
        Restart { rs, pid, time: t.elapsed(), ended }
    }

    /// Waits for cr_restart to end (failing after `limit`): its status, its standard error and
    /// the program's output, `out`.
    fn finish(mut self, procs: &mut Procs, limit: Duration, out: &Path) -> (ExitStatus, String, String) {
        let st = wait_child(&mut self.rs, limit);
        procs.forget(self.pid);
        let mut err = String::new();
        let _ = self.rs.stderr.take().map(|mut e| e.read_to_string(&mut err));
        (st, err, std::fs::read_to_string(out).unwrap_or_default())
    }
}

const ASYNC: &str = r#"
import asyncio, sys
state = {'n': 0}
async def ticker():
    while True:
        state['n'] += 1
        print('tick', state['n'], flush=True)
        await asyncio.sleep(0.05)
async def main():
    p = await asyncio.create_subprocess_exec('cat', stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    t = asyncio.create_task(ticker())
    k = 0
    while state['n'] < 120:
        k += 1
        p.stdin.write(b'ping %d\n' % k)
        await p.stdin.drain()
        line = await asyncio.wait_for(p.stdout.readline(), 5)
        if line != b'ping %d\n' % k:
            print('FAIL echo', k, line, flush=True)
            sys.exit(1)
        print('echo', k, 'child', p.pid, flush=True)
        await asyncio.sleep(0.1)
    t.cancel()
    p.stdin.close()
    rc = await p.wait()
    print('PASS' if rc == 0 else 'FAIL cat exited %d' % rc, flush=True)
asyncio.run(main())
"#;

#[test]
fn python_asyncio_with_subprocess() {
    let Some(py) = python() else {
        skip("python3 is not installed");
        return;
    };
    let d = Dir::new("pyasync");
    let script = d.0.join("loop.py");
    std::fs::write(&script, ASYNC).expect("script");
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let prog =
        procs.add(Command::new(&py).arg(&script).current_dir(&d.0).stdin(Stdio::null()).stdout(std::fs::File::create(&out).expect("out")).stderr(Stdio::null()).spawn().expect("python3 starts"));
    procs.pids.push(prog);
    wait_for(&out, "tick 20\n", Duration::from_secs(20));
    let kids = children_of(prog);
    procs.pids.extend(kids.iter().copied());
    assert!(!kids.is_empty(), "the asyncio program has its cat subprocess");
    let img = d.0.join("img");
    let ck_time = timed_checkpoint(&["--tree", "--kill"], &img, prog);
    let _ = procs.take(prog).wait();
    for k in &kids {
        wait_gone(*k, "the cat subprocess");
    }
    let rs = Restart::to_next_line(&mut procs, &img, &out, "no new line after the restart");
    let rs_time = rs.time;
    let (st, err, text) = rs.finish(&mut procs, Duration::from_secs(60), &out);
    assert!(st.success() && text.contains("PASS"), "after the restart: {st:?} {err}\n{text}");
    // The counter goes on with no gap and no repeat, across the restart.
    let ticks: Vec<u64> = text.lines().filter_map(|l| l.strip_prefix("tick ")).map(|n| n.trim().parse().expect("a tick number")).collect();
    assert_eq!(ticks, (1..=ticks.len() as u64).collect::<Vec<_>>(), "ticks contiguous:\n{text}");
    assert!(ticks.len() >= 120, "the counter reached 120: {}", ticks.len());
    // The same cat answered before and after.
    let childs: std::collections::BTreeSet<&str> = text.lines().filter_map(|l| l.split_once(" child ").map(|(_, c)| c)).collect();
    assert_eq!(childs.len(), 1, "one subprocess all along: {childs:?}");
    eprintln!("python asyncio + subprocess: checkpoint --tree --kill {ck_time:?}, restart to next line {rs_time:?}, image {} KiB", image_kib(&img));
}

const WRITER: &str = r#"
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute('create table if not exists t(n integer primary key, v text not null)')
n = db.execute('select coalesce(max(n), 0) from t').fetchone()[0]
while not os.path.exists('stop'):
    db.execute('begin')
    for i in range(20):
        n += 1
        db.execute('insert into t values (?, ?)', (n, 'row %d ' % n + 'x' * 200))
        if i == 9:
            # Most of the time is spent inside a transaction (journal open, database locked):
            # the checkpoint lands there.
            time.sleep(0.005)
    db.execute('commit')
    print('rows', n, flush=True)
db.close()
print('DONE', n, flush=True)
"#;

const CHECK: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
c, lo, hi, d = db.execute('select count(*), min(n), max(n), count(distinct n) from t').fetchone()
bad = db.execute("select count(*) from t where v not like 'row ' || n || ' %'").fetchone()[0]
print(c, lo, hi, d, bad, db.execute('pragma integrity_check').fetchone()[0])
"#;

#[test]
fn python_sqlite_writer() {
    let Some(py) = python() else {
        skip("python3 is not installed");
        return;
    };
    let d = Dir::new("pysqlite");
    std::fs::write(d.0.join("writer.py"), WRITER).expect("script");
    std::fs::write(d.0.join("check.py"), CHECK).expect("script");
    let db = d.0.join("rows.db");
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let prog = procs.add(
        Command::new(&py).arg("writer.py").arg(&db).current_dir(&d.0).stdin(Stdio::null()).stdout(std::fs::File::create(&out).expect("out")).stderr(Stdio::null()).spawn().expect("python3 starts"),
    );
    procs.pids.push(prog);
    wait_for(&out, "rows 2000\n", Duration::from_secs(30));
    let img = d.0.join("img");
    let ck_time = timed_checkpoint(&["--kill"], &img, prog);
    let _ = procs.take(prog).wait();
    // A rollback journal left behind: the writer was killed inside a transaction.
    let in_transaction = d.0.join("rows.db-journal").exists();
    let rs = Restart::to_next_line(&mut procs, &img, &out, "no new rows after the restart");
    assert!(!rs.ended, "cr_restart ended before the writer wrote again");
    let rs_time = rs.time;
    // Let it commit some more, then ask it to stop.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(d.0.join("stop"), "").expect("stop file");
    let (st, err, text) = rs.finish(&mut procs, Duration::from_secs(30), &out);
    assert!(st.success() && text.contains("DONE"), "the writer after the restart: {st:?} {err}\n{text}");
    let done: u64 = text.lines().find_map(|l| l.strip_prefix("DONE ")).expect("DONE line").trim().parse().expect("a number");
    let ck = Command::new(&py).arg("check.py").arg(&db).current_dir(&d.0).output().expect("check.py");
    let res = String::from_utf8_lossy(&ck.stdout).trim().to_string();
    assert!(ck.status.success(), "checking the database: {}", String::from_utf8_lossy(&ck.stderr));
    // count, min, max, distinct, rows with a wrong text, integrity: every number from 1 to the last, once.
    assert_eq!(res, format!("{done} 1 {done} {done} 0 ok"), "the rows in the database after the restart");
    eprintln!(
        "python sqlite3 writer: checkpoint --kill {ck_time:?}, restart to next commit {rs_time:?}, image {} KiB, {done} rows, checkpointed inside a transaction: {in_transaction}",
        image_kib(&img)
    );
}
