//! nginx with a master and two workers (listening socket shared by the workers, epoll,
//! eventfd, the workers under another user): a client keeps a connection across a checkpoint
//! that lets nginx run on; then the tree is checkpointed with --kill, restarted, serves the
//! page again with the same PIDs, reloads its configuration (new workers) and quits cleanly.
mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PAGE: &str = "served by nginx under crest\n";

fn nginx() -> Option<String> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"].iter().find(|p| Path::new(p).exists()).map(|p| p.to_string())
}

/// One request on `s`, kept open (HTTP/1.1 keep-alive): the body.
fn get_on(s: &mut TcpStream) -> std::io::Result<String> {
    http_get_on(s, "/")
}

/// A new connection and one request: the body.
fn get(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    get_on(&mut s)
}

/// Waits until nginx serves the page.
fn wait_page(port: u16, what: &str) {
    let t = Instant::now();
    loop {
        match get(port) {
            Ok(b) if b == PAGE => return,
            r => assert!(t.elapsed() < Duration::from_secs(20), "{what}: no page after 20 s: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

#[test]
fn nginx_master_and_workers() {
    let Some(nginx) = nginx() else {
        skip("nginx is not installed (apt-get install nginx-light)");
        return;
    };
    if !is_root() {
        skip("nginx's workers switch to another user: checkpointing them needs root");
        return;
    }
    let d = Dir::new("nginx");
    let dir = d.0.display().to_string();
    std::fs::create_dir_all(d.0.join("html")).expect("html");
    std::fs::write(d.0.join("html/index.html"), PAGE).expect("page");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n keepalive_timeout 120s;\n client_body_temp_path {dir}/body;\n proxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fastcgi;\n uwsgi_temp_path {dir}/uwsgi;\n scgi_temp_path {dir}/scgi;\n\
         server {{ listen 127.0.0.1:{port}; root {dir}/html; }}\n}}\n"
    );
    std::fs::write(d.0.join("nginx.conf"), conf).expect("config");
    let mut procs = Procs::default();
    let log = std::fs::File::create(d.0.join("nginx.out")).expect("log");
    let master = procs.add(
        Command::new(&nginx).args(["-c", &format!("{dir}/nginx.conf"), "-p", &format!("{dir}/")]).stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log).spawn().expect("nginx starts"),
    );
    wait_page(port, "nginx as started");
    assert_eq!(read_pid(&d.0.join("nginx.pid")), Some(master));
    let workers = children_of(master);
    procs.pids.extend(workers.iter().copied());
    assert_eq!(workers.len(), 2, "two workers: {workers:?}");

    // A checkpoint that lets nginx run on, while a client holds a connection: the same
    // connection serves the page before and after.
    let mut kept = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    kept.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    assert_eq!(get_on(&mut kept).expect("a page on the kept connection"), PAGE);
    let run_img = d.0.join("run.img");
    let ck = Command::new(bin("cr_checkpoint")).arg("-f").arg(&run_img).arg(master.to_string()).output().expect("cr_checkpoint");
    assert!(ck.status.success(), "checkpoint with --run: {}", String::from_utf8_lossy(&ck.stderr));
    assert_eq!(get_on(&mut kept).expect("the kept connection after the checkpoint"), PAGE, "the kept connection serves on");
    drop(kept);

    // --kill, restart: the same PIDs serve the page again.
    let img = d.0.join("img");
    let t = Instant::now();
    let ck = Command::new(bin("cr_checkpoint")).args(["--tree", "--kill", "-f"]).arg(&img).arg(master.to_string()).output().expect("cr_checkpoint");
    let ck_time = t.elapsed();
    assert!(ck.status.success(), "checkpoint with --kill: {}", String::from_utf8_lossy(&ck.stderr));
    let _ = procs.take(master).wait();
    let t = Instant::now();
    while workers.iter().any(|w| proc_state(*w).is_some()) {
        assert!(t.elapsed() < Duration::from_secs(10), "the workers did not end with --kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(get(port).is_err(), "nothing listens once nginx is killed");
    let t = Instant::now();
    let rs = cr_restart_cmd().arg(&img).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("cr_restart");
    let rs_pid = procs.add(rs);
    wait_page(port, "nginx restarted");
    let rs_time = t.elapsed();
    assert_eq!(children_of(rs_pid), vec![master], "the master is restored with its PID");
    let mut now = children_of(master);
    now.sort_unstable();
    let mut before = workers.clone();
    before.sort_unstable();
    assert_eq!(now, before, "the workers are restored with their PIDs");
    for _ in 0..4 {
        assert_eq!(get(port).expect("a page after the restart"), PAGE);
    }
    let size = std::fs::metadata(&img).map(|m| m.len()).unwrap_or(0);
    eprintln!("nginx: checkpoint --kill {ck_time:?}, restart to first page {rs_time:?}, image {} KiB", size / 1024);

    // Reload: the master starts new workers, which serve; then a graceful quit ends it all.
    let _ = Command::new("kill").args(["-HUP", &master.to_string()]).status();
    let t = Instant::now();
    loop {
        let kids = children_of(master);
        if kids.len() == 2 && kids.iter().all(|k| !workers.contains(k)) {
            procs.pids.extend(kids);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no new workers after SIGHUP: {kids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_page(port, "nginx reloaded");
    let _ = Command::new("kill").args(["-QUIT", &master.to_string()]).status();
    let mut rs = procs.take(rs_pid);
    let st = wait_child(&mut rs, Duration::from_secs(20));
    let mut err = String::new();
    let _ = rs.stderr.take().map(|mut e| e.read_to_string(&mut err));
    assert!(st.success(), "cr_restart after nginx quit: {st:?} {err}");
    let log = std::fs::read_to_string(d.0.join("error.log")).unwrap_or_default();
    assert!(!log.contains("[emerg]") && !log.contains("[alert]") && !log.contains("[crit]"), "nginx logged trouble:\n{log}");
}
