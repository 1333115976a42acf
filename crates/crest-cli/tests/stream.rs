//! Migration through a stream: `cr_checkpoint --kill --stream` writes the image metadata first
//! into a pipe or a loopback TCP connection, and `cr_restart --lazy` reading it lets the
//! process run before its pages have all arrived. The program (256 MiB of patterned memory, a
//! heap block and a stack array) checks every byte once restored; a stream damaged in flight
//! or cut short (the sender killed, or the connection lost: then the sender keeps the image)
//! kills it with a message that says so. Without `--lazy` the whole stream is read first. Every test kills what it started, by
//! PID, even when it fails; the spool files live in the test's own directory.
mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How the stream goes from `cr_checkpoint` to `cr_restart`.
enum Via {
    /// One pipe.
    Pipe,
    /// A TCP connection over loopback.
    Socket,
    /// Through this test, which changes the byte at `.0` (counted from the stream's start).
    Corrupt(u64),
    /// Through this test, which passes on the first `.0` bytes, then kills the sender (the
    /// process of cr_checkpoint that writes the stream) and closes the stream.
    Cut(u64),
    /// Through this test, which passes on the first `.0` bytes, then closes the stream both
    /// ways (the connection lost).
    Closed(u64),
    /// Through this test, which passes on the first `.0` bytes, then sends nothing more and
    /// keeps both ends open (a sender that stalled) until `cr_restart` has ended.
    Stalled(u64),
}

/// What a migration gave.
struct Outcome {
    status: std::process::ExitStatus,
    /// cr_restart's standard error.
    stderr: String,
    /// cr_checkpoint's standard error.
    ck_stderr: String,
    /// The program's output.
    out: String,
    /// The image cr_checkpoint said it kept, if it did: whether `cr_info --verify` found it
    /// good.
    kept_good: Option<bool>,
}

/// In a scratch directory of its own (`dir`), builds and starts `mem256`, migrates it through
/// `via` (`cr_checkpoint --kill --stream -f -` into the stream, `cr_restart --lazy --fd 3`
/// from it) and sends it SIGUSR2 as soon as it runs, to check every byte.
fn migrate(dir: &str, via: Via, ck_args: &[&str]) -> Outcome {
    migrate_with(dir, via, ck_args, &[])
}

/// [`migrate`] with more arguments for `cr_restart`.
fn migrate_with(dir: &str, via: Via, ck_args: &[&str], rs_extra: &[&str]) -> Outcome {
    let d = Dir::new(dir);
    let mut procs = Procs::default();
    let (pid, out) = start_ready(&d, "mem256", &["-pthread"], &mut procs, Duration::from_secs(30));
    let prog = d.0.join("mem256");
    // Reaped as soon as it is killed: the restart gives its PID again.
    let mut original = procs.take(pid);
    let reaped = std::thread::spawn(move || original.wait());

    let ck_err = d.0.join("ck-err.txt");
    let mut ck_cmd = Command::new(bin("cr_checkpoint"));
    ck_cmd
        .args(["--kill", "--stream", "-f", "-"])
        .args(ck_args)
        .arg(pid.to_string())
        .env("TMPDIR", &d.0)
        .env("CREST_TIMING", "1")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&ck_err).expect("stderr file"));
    let err = d.0.join("err.txt");
    // The stream is cr_restart's descriptor 3; its standard input is /dev/null, as the
    // program's was.
    let rs = cr_restart_cmd();
    let rs_args: Vec<String> = rs.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut rs_cmd = Command::new("sh");
    rs_cmd
        .arg("-c")
        .arg("exec \"$0\" \"$@\" 3<&0 </dev/null")
        .arg(bin("cr_restart"))
        .args(rs_args)
        .args(["--lazy", "--relaxed-stdio", "--fd", "3"])
        .args(rs_extra)
        .env("TMPDIR", &d.0)
        .env("CREST_TIMING", "1")
        .stderr(std::fs::File::create(&err).expect("stderr file"));
    let mut relay = None;
    // Set once cr_restart has ended: a stalled relay then lets its ends go.
    let restart_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = restart_done.clone();
    // The commands, which hold the stream's ends given to the children, are dropped once
    // these are started: a receiver that ends early leaves its sender no reader.
    let (mut ck, mut rs) = match (via, ck_cmd, rs_cmd) {
        (Via::Pipe, mut ck, mut rs) => {
            let mut ck = ck.stdout(Stdio::piped()).spawn().expect("cr_checkpoint runs");
            let stream = ck.stdout.take().expect("piped");
            let rs = rs.stdin(Stdio::from(stream)).spawn().expect("cr_restart runs");
            (ck, rs)
        }
        (Via::Socket, mut ck, mut rs) => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
            let sender = std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
            let (receiver, _) = listener.accept().expect("accept");
            let ck = ck.stdout(Stdio::from(std::os::fd::OwnedFd::from(sender))).spawn().expect("cr_checkpoint runs");
            let rs = rs.stdin(Stdio::from(std::os::fd::OwnedFd::from(receiver))).spawn().expect("cr_restart runs");
            (ck, rs)
        }
        (via, mut ck, mut rs) => {
            let mut ck = ck.stdout(Stdio::piped()).spawn().expect("cr_checkpoint runs");
            let mut rs = rs.stdin(Stdio::piped()).spawn().expect("cr_restart runs");
            let (mut from, mut to) = (ck.stdout.take().expect("piped"), rs.stdin.take().expect("piped"));
            let (damage, cut, kill, stall) = match via {
                Via::Corrupt(at) => (Some(at), None, false, false),
                Via::Cut(n) => (None, Some(n), true, false),
                Via::Closed(n) => (None, Some(n), false, false),
                Via::Stalled(n) => (None, Some(n), false, true),
                _ => (None, None, false, false),
            };
            let sender = ck.id() as i32;
            relay = Some(std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                let mut pos = 0u64;
                loop {
                    let want = cut.map_or(buf.len() as u64, |c| (c - pos).min(buf.len() as u64)) as usize;
                    if want == 0 && stall {
                        while !done.load(std::sync::atomic::Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        return;
                    }
                    if want == 0 {
                        // The sender dies mid-stream (its worker, cr_checkpoint's child, which
                        // writes it; the parent reaps it and says so).
                        if let Some(w) = kill.then(|| child_of(sender)).flatten() {
                            let _ = Command::new("kill").arg("-9").arg(w.to_string()).status();
                        }
                        return;
                    }
                    let n = match from.read(&mut buf[..want]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if let Some(at) = damage.filter(|&at| at >= pos && at < pos + n as u64) {
                        buf[(at - pos) as usize] ^= 0x5a;
                    }
                    pos += n as u64;
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }));
            (ck, rs)
        }
    };
    procs.pids.push(ck.id() as i32);
    procs.pids.push(rs.id() as i32);
    // The restored program: cr_restart's child that runs it (not the helper that forks it,
    // which a cr_restart with threads uses).
    let p = usr2_once_let_go(&mut rs, Duration::from_secs(60), |p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == prog));
    if let Some(p) = p {
        procs.pids.push(p);
    }
    let status = wait_child(&mut rs, Duration::from_secs(180));
    restart_done.store(true, std::sync::atomic::Ordering::Relaxed);
    // The sender has sent everything once its receiver is done, or failed to.
    let t = Instant::now();
    while ck.try_wait().ok().flatten().is_none() {
        if t.elapsed() > Duration::from_secs(60) {
            let _ = Command::new("kill").arg("-9").arg(ck.id().to_string()).status();
            let _ = ck.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(r) = relay {
        let _ = r.join();
    }
    let _ = reaped.join();
    procs.forget(pid);
    procs.forget(rs.id() as i32);
    procs.forget(ck.id() as i32);
    if let Some(p) = p {
        if p != pid {
            procs.forget(p);
        }
        wait_gone(p, "the restored program");
    }
    drop(procs);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    let ck_stderr = read(&ck_err);
    let kept = ck_stderr.split_once("kept whole in ").and_then(|(_, rest)| rest.split_once(" (")).map(|(path, _)| path.to_string());
    let kept_good = kept.map(|k| Command::new(bin("cr_info")).arg("--verify").arg(&k).output().is_ok_and(|o| o.status.success()));
    Outcome { status, stderr: read(&err), ck_stderr, out: read(&out), kept_good }
}

/// A figure of cr_restart's `crest-timing: restart` line.
fn restart_figure(stderr: &str, key: &str) -> Option<f64> {
    let line = stderr.lines().find(|l| l.starts_with("crest-timing: restart"))?;
    line.split_whitespace().find_map(|w| w.strip_prefix(key)).and_then(|v| v.parse().ok())
}

fn assert_migrated(o: &Outcome, what: &str) {
    assert!(
        o.status.success() && o.out.contains("PASS"),
        "{what}: {:?}\ncr_restart: {}\ncr_checkpoint: {}\noutput: {}",
        o.status,
        o.stderr,
        o.ck_stderr,
        o.out.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    );
    let running = restart_figure(&o.stderr, "first_byte_to_running_ms=").unwrap_or_else(|| panic!("{what}: no timing in {}", o.stderr));
    let arrived = restart_figure(&o.stderr, "streamed_page_bytes_then=").unwrap_or(f64::NAN);
    eprintln!("{what}: running {running:.1} ms after the stream's first byte, {:.1} MiB of page data arrived by then", arrived / 1048576.0);
    for l in o.stderr.lines().chain(o.ck_stderr.lines()).filter(|l| l.starts_with("crest-timing")) {
        eprintln!("{what}: {l}");
    }
    // 256 MiB were given by the lazy restore, not copied before the process ran.
    let line = o.stderr.lines().find(|l| l.starts_with("crest-timing: lazy")).unwrap_or_else(|| panic!("{what}: no lazy figures in {}", o.stderr));
    let get = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    assert!(get("on_demand_bytes=") + get("background_bytes=") >= 256 << 20, "{what}: {line}");
    let copied = restart_figure(&o.stderr, "page_bytes=").unwrap_or(f64::MAX);
    assert!(copied < (16 << 20) as f64, "{what}: {copied} bytes copied before it ran");
}

#[test]
fn migrated_through_a_pipe_with_every_byte_checked() {
    if !lazy_possible() {
        return;
    }
    let o = migrate("stream-pipe", Via::Pipe, &[]);
    assert_migrated(&o, "mem256 migrated through a pipe");
}

#[test]
fn compressed_runs_migrate_through_a_pipe() {
    if !lazy_possible() {
        return;
    }
    let o = migrate("stream-compressed", Via::Pipe, &["--compress"]);
    assert_migrated(&o, "mem256 migrated through a pipe, its runs compressed");
}

#[test]
fn migrated_through_a_loopback_socket_with_every_byte_checked() {
    if !lazy_possible() {
        return;
    }
    let o = migrate("stream-socket", Via::Socket, &[]);
    assert_migrated(&o, "mem256 migrated through a TCP connection over loopback");
}

#[test]
fn a_stream_damaged_in_flight_kills_the_process_with_its_address() {
    if !lazy_possible() {
        return;
    }
    // Well inside the 256 MiB buffer's pages, away from any run's head.
    let o = migrate("stream-corrupt", Via::Corrupt((150 << 20) + (2 << 20) + 100), &[]);
    assert!(!o.out.contains("PASS"), "the process must not run on wrong data: {}", o.out);
    assert!(!o.status.success(), "cr_restart fails: {:?}\n{}", o.status, o.stderr);
    let msg = o.stderr.lines().find(|l| l.contains("checksum mismatch")).unwrap_or_else(|| panic!("a message naming the bad page data: {}", o.stderr));
    assert!(msg.contains("killed") && msg.contains("pid") && msg.contains("0x"), "names the process and the address, and says it was killed: {msg}");
}

#[test]
fn a_stream_cut_short_kills_the_process_and_says_so() {
    if !lazy_possible() {
        return;
    }
    let o = migrate("stream-cut", Via::Cut(100 << 20), &[]);
    assert!(!o.out.contains("PASS"), "the process must not run on missing memory: {}", o.out);
    assert!(!o.status.success(), "cr_restart fails: {:?}\n{}", o.status, o.stderr);
    let msg = o.stderr.lines().find(|l| l.contains("never arrived")).unwrap_or_else(|| panic!("a message saying the page data never arrived: {}", o.stderr));
    assert!(msg.contains("cut short") && msg.contains("killed") && msg.contains("missing data"), "says the stream was cut short and the process killed: {msg}");
    assert!(o.ck_stderr.contains("killed by signal 9"), "cr_checkpoint says its worker was killed: {}", o.ck_stderr);
}

#[test]
fn a_connection_lost_kills_the_process_and_the_sender_keeps_the_image() {
    if !lazy_possible() {
        return;
    }
    let o = migrate("stream-closed", Via::Closed(100 << 20), &[]);
    assert!(!o.out.contains("PASS"), "the process must not run on missing memory: {}", o.out);
    assert!(!o.status.success(), "cr_restart fails: {:?}\n{}", o.status, o.stderr);
    let msg = o.stderr.lines().find(|l| l.contains("never arrived")).unwrap_or_else(|| panic!("a message saying the page data never arrived: {}", o.stderr));
    assert!(msg.contains("cut short") && msg.contains("killed"), "{msg}");
    // The sender found the stream closed and kept the image whole in its spool file, saying
    // where: the process it killed is not lost.
    assert_eq!(o.kept_good, Some(true), "cr_checkpoint names the image it kept, and it is good: {}", o.ck_stderr);
}

/// A sender that stalls without closing the stream: after `--stream-timeout` with no byte,
/// `cr_restart` takes the stream as lost, kills the process and fails, saying so; the sender,
/// whose stream then has no reader, keeps the image.
#[test]
fn a_stalled_stream_kills_the_process_after_the_timeout() {
    if !lazy_possible() {
        return;
    }
    let o = migrate_with("stream-stalled", Via::Stalled(100 << 20), &[], &["--stream-timeout", "2"]);
    assert!(!o.out.contains("PASS"), "the process must not run on missing memory: {}", o.out);
    assert!(!o.status.success(), "cr_restart fails: {:?}\n{}", o.status, o.stderr);
    let msg = o.stderr.lines().find(|l| l.contains("never arrived")).unwrap_or_else(|| panic!("a message saying the page data never arrived: {}", o.stderr));
    assert!(msg.contains("stalled") && msg.contains("2 s") && msg.contains("killed"), "says the sender stalled and the process was killed: {msg}");
    assert_eq!(o.kept_good, Some(true), "cr_checkpoint names the image it kept, and it is good: {}", o.ck_stderr);
}

/// Without `--lazy`, `cr_restart` takes the whole stream in first, then restarts as from a
/// file; a stream file (the stream form written to a file) is read the same way.
#[test]
fn without_lazy_the_whole_stream_is_read_first() {
    eager_restart("stream-eager", false);
}

/// As above, the stream sent to a unix socket by name (`-f SOCKET`, connected to), where this
/// test writes what it receives into a file.
#[test]
fn a_stream_goes_to_a_unix_socket_by_name() {
    eager_restart("stream-unix", true);
}

fn eager_restart(dir: &str, via_socket: bool) {
    let d = Dir::new(dir);
    let prog = build_steady(&d);
    let out = d.0.join("out.txt");
    let mut procs = Procs::default();
    let pid = procs.add(start_steady(&prog, &d, 32, &out));
    procs.pids.push(pid);
    let img = d.0.join("img.stream");
    let sock = d.0.join("sock");
    let receiver = via_socket.then(|| {
        let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind a unix socket");
        let into = img.clone();
        std::thread::spawn(move || -> std::io::Result<u64> {
            let (mut conn, _) = listener.accept()?;
            std::io::copy(&mut conn, &mut std::fs::File::create(into)?)
        })
    });
    let dest = if via_socket { &sock } else { &img };
    let ck = Command::new(bin("cr_checkpoint")).args(["--kill", "--stream", "-f"]).arg(dest).arg(pid.to_string()).env("TMPDIR", &d.0).output().expect("cr_checkpoint runs");
    assert!(ck.status.success(), "cr_checkpoint failed: {}", String::from_utf8_lossy(&ck.stderr));
    if let Some(r) = receiver {
        let n = r.join().expect("receiver thread").expect("received the stream");
        assert!(n > 32 << 20, "the whole stream came through the socket: {n} bytes");
    }
    let _ = procs.take(pid).wait();
    procs.forget(pid);
    let mut head = [0u8; 8];
    std::fs::File::open(&img).and_then(|mut f| f.read_exact(&mut head)).expect("read the stream file");
    assert_eq!(&head, b"CRESTSTR", "the stream form, not the file layout");
    let info = Command::new(bin("cr_info")).arg(&img).output().expect("cr_info runs");
    let said = String::from_utf8_lossy(&info.stderr);
    assert!(!info.status.success() && said.contains("stream form") && said.contains("cr_restart"), "cr_info says what the file is and what reads it: {said}");
    assert_eq!(names_in(&d.0).iter().filter(|n| n.starts_with("crest-stream-")).count(), 0, "the spool is removed once sent");
    let mut rs: Child = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart runs");
    procs.pids.push(rs.id() as i32);
    let t = Instant::now();
    let p = loop {
        if let Some(p) = child_of(rs.id() as i32).filter(|&p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == prog)) {
            break p;
        }
        assert!(rs.try_wait().ok().flatten().is_none() && t.elapsed() < Duration::from_secs(30), "no restored program");
        std::thread::sleep(Duration::from_millis(5));
    };
    procs.pids.push(p);
    verify_steady(p, &out, 1);
    let _ = Command::new("kill").arg("-9").arg(p.to_string()).status();
    let st = wait_child(&mut rs, Duration::from_secs(60));
    procs.forget(rs.id() as i32);
    procs.forget(p);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL), "cr_restart ends as its process did");
}
