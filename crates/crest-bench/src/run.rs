//! Starting, timing, checking and cleaning up the processes the benchmark starts. Every child
//! is owned by a guard that kills it (by its PID, never by name) and waits for it when dropped,
//! so nothing is left running or unreaped when a row fails or the benchmark is interrupted.
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::sys;

pub type R<T> = Result<T, String>;

/// How long a big target may take to fill or check its memory, or a big dump or restore.
pub const LONG: Duration = Duration::from_secs(900);

/// Lines of a child's output, read on a thread of their own so that waiting can time out.
pub struct Lines(mpsc::Receiver<String>);

impl Lines {
    pub fn new<T: Read + Send + 'static>(r: T) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(r).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The next line that starts with one of `prefixes`; other lines are shown as they come.
    pub fn until(&self, prefixes: &[&str], timeout: Duration, what: &str) -> R<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.0.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) if prefixes.iter().any(|p| l.starts_with(p)) => return Ok(l),
                Ok(l) => eprintln!("  {what}: {l}"),
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(format!("{what}: no {prefixes:?} line within {}s", timeout.as_secs())),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(format!("{what} ended before printing {prefixes:?}")),
            }
        }
    }
}

/// Waits for `child` to end, killing it after `timeout`.
fn wait_for(child: &mut Child, timeout: Duration) -> R<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Ok(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("PID {} still running after {}s: killed", child.id(), timeout.as_secs()));
            }
            Err(e) => return Err(format!("waiting for PID {}: {e}", child.id())),
        }
    }
}

/// A benchmark target (hold, loop, sleep, threads) with its standard output.
pub struct Target {
    child: Child,
    pub out: Lines,
    name: String,
}

impl Target {
    pub fn start(prog: &Path, args: &[String]) -> R<Target> {
        Target::start_env(prog, args, &[])
    }

    /// [`Target::start`] with `env` set.
    pub fn start_env(prog: &Path, args: &[String], env: &[(&str, &str)]) -> R<Target> {
        let name = prog.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut cmd = Command::new(prog);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| format!("starting {}: {e}", prog.display()))?;
        let out = Lines::new(child.stdout.take().expect("piped"));
        Ok(Target { child, out, name: format!("{name} {}", args.join(" ")) })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Asks the target to check every byte of its memory (SIGUSR2) and waits for its verdict.
    pub fn verify(mut self) -> R<String> {
        sys::kill(self.pid(), libc::SIGUSR2);
        let line = self.out.until(&["PASS", "FAIL"], LONG, &self.name)?;
        let status = wait_for(&mut self.child, LONG)?;
        if line.starts_with("PASS") && status.success() {
            Ok(line)
        } else {
            Err(format!("{} (PID {}) failed its check: {line} ({status})", self.name, self.pid()))
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A command run to its end: its wall time (from spawn until it exits) and its output.
pub struct Ran {
    pub wall: f64,
    pub status: ExitStatus,
    pub stderr: String,
}

/// Runs `cmd` to its end (killed after `timeout`). The wall time is taken when the command has
/// exited but before it is reaped, so that a watchdog can never kill a reused PID.
pub fn run(cmd: &mut Command, timeout: Duration) -> R<Ran> {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("starting {:?}: {e}", cmd.get_program()))?;
    let pid = child.id() as i32;
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel::<()>();
    let dog = std::thread::spawn(move || {
        if rx.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
            sys::kill(pid, libc::SIGKILL);
            return true;
        }
        false
    });
    sys::wait_exited(pid);
    let wall = t.elapsed().as_secs_f64();
    drop(tx);
    let killed = dog.join().unwrap_or(false);
    let status = child.wait().map_err(|e| format!("waiting for {pid}: {e}"))?;
    let stderr = reader.join().unwrap_or_default();
    if killed {
        return Err(format!("{:?} still running after {}s: killed", cmd.get_program(), timeout.as_secs()));
    }
    Ok(Ran { wall, status, stderr })
}

/// The `key=value` field of a `crest-timing:` line.
pub fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// What one checkpoint took.
pub struct Checkpoint {
    /// Wall time of the cr_checkpoint command.
    pub wall: f64,
    /// How long the target was frozen, as cr_checkpoint reports it.
    pub frozen: f64,
    /// Size of the image file.
    pub image_bytes: u64,
    /// The whole `crest-timing: checkpoint` line (its per-step `NAME_ms=` fields).
    pub timing: String,
}

/// Runs `cr_checkpoint --nosync [args] -f img pid` with `env` set.
pub fn checkpoint(bin: &Path, pid: i32, img: &Path, args: &[&str], env: &[(&str, &str)]) -> R<Checkpoint> {
    let _ = std::fs::remove_file(img);
    let mut cmd = Command::new(bin.join("cr_checkpoint"));
    cmd.env("CREST_TIMING", "1").arg("--nosync").args(args).arg("-f").arg(img).arg(pid.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let r = run(&mut cmd, LONG)?;
    if !r.status.success() {
        return Err(format!("cr_checkpoint {} {pid}: {}: {}", args.join(" "), r.status, r.stderr.trim()));
    }
    let timing = r.stderr.lines().find(|l| l.starts_with("crest-timing: checkpoint")).ok_or("cr_checkpoint printed no timing line")?;
    let frozen = field(timing, "frozen_ms").ok_or("no frozen_ms in the timing line")? / 1e3;
    let image_bytes = std::fs::metadata(img).map_err(|e| format!("{}: {e}", img.display()))?.len();
    Ok(Checkpoint { wall: r.wall, frozen, image_bytes, timing: timing.to_string() })
}

/// A process brought back by `cr_restart --no-restore-pid`, which stays its parent.
pub struct Restored {
    cr: Child,
    out: Lines,
    _err: Lines,
    /// The restored process.
    pub pid: i32,
    /// From the spawn of cr_restart until it reported the process running.
    pub wall: f64,
    /// The same, as cr_restart measures it from its own start.
    pub inside: f64,
    /// The whole `crest-timing: restart` line (its per-step `NAME_ms=` fields).
    pub timing: String,
}

pub fn restart(bin: &Path, img: &Path) -> R<Restored> {
    restart_with(bin, img, &[])
}

/// [`restart`] with more options for `cr_restart`.
pub fn restart_with(bin: &Path, img: &Path, args: &[&str]) -> R<Restored> {
    let t = Instant::now();
    let mut cr = Command::new(bin.join("cr_restart"))
        .env("CREST_TIMING", "1")
        .arg("--no-restore-pid")
        .args(args)
        .arg(img)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting cr_restart: {e}"))?;
    let out = Lines::new(cr.stdout.take().expect("piped"));
    let err = Lines::new(cr.stderr.take().expect("piped"));
    let mut r = Restored { cr, out, _err: Lines(mpsc::channel().1), pid: 0, wall: 0.0, inside: 0.0, timing: String::new() };
    let line = err.until(&["crest-timing: restart"], LONG, "cr_restart")?;
    r.wall = t.elapsed().as_secs_f64();
    r._err = err;
    r.pid = field(&line, "pid").ok_or("no pid in cr_restart's timing line")? as i32;
    r.inside = field(&line, "running_after_ms").unwrap_or(f64::NAN) / 1e3;
    r.timing = line;
    Ok(r)
}

impl Restored {
    /// Asks the restored copy to check every byte (SIGUSR2); it must say PASS and exit 0.
    pub fn verify(mut self) -> R<String> {
        sys::kill(self.pid, libc::SIGUSR2);
        let line = self.out.until(&["PASS", "FAIL"], LONG, "restored copy")?;
        let status = wait_for(&mut self.cr, LONG)?;
        if line.starts_with("PASS") && status.success() {
            Ok(line)
        } else {
            Err(format!("the restored copy (PID {}) failed its check: {line} (cr_restart: {status})", self.pid))
        }
    }

    /// Waits for the restored copy to print a line starting with `prefix` (it runs).
    pub fn expect(&self, prefix: &str) -> R<String> {
        self.out.until(&[prefix], Duration::from_secs(30), "restored copy")
    }

    /// Whether the restored process is alive and not stopped.
    pub fn running(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).unwrap_or("?");
        matches!(state, "R" | "S" | "D")
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.cr.try_wait() {
            return;
        }
        // cr_restart waits for the restored process and ends with it.
        if self.pid > 0 {
            sys::kill(self.pid, libc::SIGKILL);
        }
        if wait_for(&mut self.cr, Duration::from_secs(30)).is_err() {
            let _ = self.cr.kill();
            let _ = self.cr.wait();
        }
    }
}

/// A directory for the images of one row, removed with everything in it when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(storage: &Path, tag: &str) -> R<Scratch> {
        let dir = storage.join(format!("crest-bench-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Time to `cp` `from` to `to` in this directory; the copy is removed at once.
    pub fn cp(&self, from: &Path, to: &str) -> R<f64> {
        let to = self.file(to);
        let _ = std::fs::remove_file(&to);
        let r = run(Command::new("cp").arg(from).arg(&to), LONG);
        let _ = std::fs::remove_file(&to);
        let r = r?;
        if !r.status.success() {
            return Err(format!("cp: {}: {}", r.status, r.stderr.trim()));
        }
        Ok(r.wall)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes a file when dropped (an image, once its row is done with it).
pub struct Remove<'a>(pub &'a Path);

impl Drop for Remove<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// Reads `len` bytes at `addr` of process `pid` in pieces, through /proc/PID/mem.
pub fn read_memory(pid: i32, addr: u64, len: u64, mut each: impl FnMut(&[u8]) -> R<()>) -> R<()> {
    use std::os::unix::fs::FileExt;
    let mem = File::open(format!("/proc/{pid}/mem")).map_err(|e| format!("/proc/{pid}/mem: {e}"))?;
    let mut buf = vec![0u8; 16 << 20];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        mem.read_exact_at(&mut buf[..n], addr + at).map_err(|e| format!("reading PID {pid} at {:#x}: {e}", addr + at))?;
        each(&buf[..n])?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_fields() {
        let l = "crest-timing: checkpoint pid=42 page_bytes=4096 remote_syscalls=9 frozen_ms=1.250 total_ms=3.5";
        assert_eq!(field(l, "pid"), Some(42.0));
        assert_eq!(field(l, "frozen_ms"), Some(1.25));
        assert_eq!(field(l, "ms"), None);
        assert_eq!(field("PASS rss_mib=1025", "rss_mib"), Some(1025.0));
    }

    #[test]
    fn a_failing_command_is_reaped_and_reported() {
        let r = run(&mut Command::new("/bin/false"), Duration::from_secs(30)).expect("runs");
        assert!(!r.status.success());
        let r = run(Command::new("/bin/sleep").arg("30"), Duration::from_millis(200));
        assert!(r.is_err());
    }
}
