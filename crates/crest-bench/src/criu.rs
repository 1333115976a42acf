//! CRIU run beside crest, for the sections that compare with it when `--criu PATH` names a
//! runnable binary: `criu dump -t PID -D DIR --shell-job` (which kills the dumped tree, as
//! `cr_checkpoint --kill` does) and `criu restore -D DIR --shell-job -d --pidfile F` (timed until
//! `criu` returns, when the restored tree runs). CRIU gives processes back their PIDs: before a
//! restore, the dumped processes have all been reaped. A process CRIU restores with `-d` is
//! adopted by the benchmark (its subreaper) once `criu` has returned; [`Adopted`] ends it by its
//! PID. CRIU restores open files by their path, so its targets write into files, not pipes.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{self, R};
use crate::sys;
use crate::table::Row;

/// The CRIU binary to compare with, as given by `--criu`.
pub enum Criu {
    NotGiven,
    /// Given but `criu --version` fails: why.
    NotRunnable(String),
    /// Its path and version line.
    Runs(PathBuf, String),
}

impl Criu {
    pub fn probe(path: Option<&Path>) -> Criu {
        let Some(path) = path else { return Criu::NotGiven };
        match Command::new(path).arg("--version").stdin(Stdio::null()).stderr(Stdio::null()).output() {
            Ok(o) if o.status.success() => {
                let version = String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string();
                Criu::Runs(path.to_path_buf(), version)
            }
            Ok(o) => Criu::NotRunnable(format!("{} --version: {}", path.display(), o.status)),
            Err(e) => Criu::NotRunnable(format!("{}: {e}", path.display())),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Criu::Runs(p, _) => Some(p),
            _ => None,
        }
    }

    /// The row that says which CRIU, if any, the sections were compared with.
    pub fn row(&self, st: &str) -> Row {
        match self {
            Criu::NotGiven => Row::new("CRIU not given: no side-by-side", 0, st).note("--criu PATH to compare"),
            Criu::NotRunnable(why) => Row::new("CRIU not runnable: no side-by-side", 0, st).note(why.clone()),
            Criu::Runs(p, v) => Row::new(format!("compared with {}", p.display()), 0, st).note(v.clone()),
        }
    }
}

/// The PIDs of `pid` and all its descendants (single-threaded processes: the children of
/// each process are read from its main thread).
pub fn tree(pid: i32) -> Vec<i32> {
    let mut all = vec![pid];
    let mut at = 0;
    while at < all.len() {
        let p = all[at];
        let kids = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        all.extend(kids.split_whitespace().filter_map(|s| s.parse::<i32>().ok()));
        at += 1;
    }
    all
}

/// Waits until `path` has a line starting with one of `prefixes` after its first `from` lines,
/// the `nth` such (1: the first); returns it and the number of lines up to it.
pub fn wait_file(path: &Path, from: usize, prefixes: &[&str], nth: usize, timeout: Duration) -> R<(String, usize)> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut seen = 0;
        for (i, l) in text.lines().enumerate().skip(from) {
            if prefixes.iter().any(|p| l.starts_with(p)) {
                seen += 1;
                if seen == nth {
                    return Ok((l.to_string(), i + 1));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("{}: no {prefixes:?} line within {}s", path.display(), timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The number of lines in `path` now.
pub fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap_or_default().lines().count()
}

/// The last lines of a CRIU log, for a failure message.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Bytes of the image files in `dir` (CRIU's logs and pidfile left out).
pub fn image_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".img")).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

/// Starts `cmd` for CRIU with its standard output and error appended to `out` and no standard
/// input; `what` names it in errors.
pub fn spawn_to_file(cmd: &mut Command, out: &Path, what: &str) -> R<Child> {
    let f = File::options().create(true).append(true).open(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let f2 = f.try_clone().map_err(|e| format!("{}: {e}", out.display()))?;
    cmd.stdin(Stdio::null()).stdout(f).stderr(f2).spawn().map_err(|e| format!("starting {what}: {e}"))
}

/// `criu dump -t pid -D dir --shell-job [extra]`, logging into `dir/dump.log`: its wall time.
/// The dumped tree is killed by CRIU; its processes are left for the caller to reap.
pub fn dump(criu: &Path, pid: i32, dir: &Path, extra: &[&str], what: &str) -> R<f64> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = dir.join("dump.log");
    let mut cmd = Command::new(criu);
    cmd.arg("dump").arg("-t").arg(pid.to_string()).arg("-D").arg(dir).arg("--shell-job").args(extra).arg("-o").arg(&log);
    let r = run::run(&mut cmd, run::LONG)?;
    if !r.status.success() {
        return Err(format!("criu dump of {what} (PID {pid}): {}: {} {} (log: {})", r.status, r.stderr.trim(), log_tail(&log), log.display()));
    }
    Ok(r.wall)
}

/// `criu restore -D dir --shell-job -d --pidfile dir/restore.pid [extra]`, logging into
/// `dir/restore.log`: its wall time and the restored root, adopted by the benchmark.
pub fn restore(criu: &Path, dir: &Path, extra: &[&str], what: &str) -> R<(f64, Adopted)> {
    let (log, pidfile) = (dir.join("restore.log"), dir.join("restore.pid"));
    let _ = std::fs::remove_file(&pidfile);
    let mut cmd = Command::new(criu);
    cmd.arg("restore").arg("-D").arg(dir).args(["--shell-job", "-d", "--pidfile"]).arg(&pidfile).args(extra).arg("-o").arg(&log);
    let r = run::run(&mut cmd, run::LONG)?;
    // A restore that failed half-way may still have left its root: end it too.
    let root = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()).map(Adopted);
    if !r.status.success() {
        drop(root);
        return Err(format!("criu restore of {what}: {}: {} {} (log: {})", r.status, r.stderr.trim(), log_tail(&log), log.display()));
    }
    let root = root.ok_or_else(|| format!("criu restore of {what} wrote no PID into {}", pidfile.display()))?;
    Ok((r.wall, root))
}

/// The root of a tree CRIU restored with `-d`, now the benchmark's child. Dropping it kills
/// its descendants and itself, by PID, and reaps it.
pub struct Adopted(pub i32);

impl Adopted {
    /// Waits up to `timeout` for it to exit by itself (after it was asked to check itself);
    /// whether it exited with status 0.
    pub fn wait_exit(self, timeout: Duration) -> R<bool> {
        let pid = self.0;
        let r = sys::wait_child(pid, timeout);
        std::mem::forget(self);
        r.ok_or_else(|| {
            sys::kill(pid, libc::SIGKILL);
            sys::wait_child(pid, Duration::from_secs(10));
            format!("the copy restored by CRIU (PID {pid}) did not exit within {}s: killed", timeout.as_secs())
        })
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        let all = tree(self.0);
        for &p in all.iter().rev() {
            sys::kill(p, libc::SIGKILL);
        }
        sys::wait_child(self.0, Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_given_or_not() {
        assert!(matches!(Criu::probe(None), Criu::NotGiven));
        assert!(matches!(Criu::probe(Some(Path::new("/nonexistent/criu"))), Criu::NotRunnable(_)));
        // A binary that fails `--version` is not runnable either.
        assert!(matches!(Criu::probe(Some(Path::new("/bin/false"))), Criu::NotRunnable(_)));
    }

    #[test]
    fn lines_after_a_point() {
        let dir = std::env::temp_dir().join(format!("crest-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let f = dir.join("out");
        std::fs::write(&f, "ready\ntick 1\ntick 2\nPASS\ntick 3\n").expect("write");
        let r = wait_file(&f, 0, &["tick"], 2, Duration::from_secs(1));
        let n = lines(&f);
        std::fs::write(dir.join("a.img"), [0u8; 10]).expect("write");
        std::fs::write(dir.join("dump.log"), [0u8; 100]).expect("write");
        let bytes = image_bytes(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(r.expect("two ticks"), ("tick 2".to_string(), 3));
        assert_eq!(n, 5);
        assert_eq!(bytes, 10);
        assert!(wait_file(&dir.join("absent"), 0, &["PASS"], 1, Duration::from_millis(20)).is_err());
    }

    #[test]
    fn a_tree_of_one() {
        let me = std::process::id() as i32;
        assert_eq!(tree(me)[0], me);
    }
}
