//! The "processes" section: checkpoint (`cr_checkpoint --tree --kill`) and restart
//! (`cr_restart --no-restore-pid`) of a ring of K processes (`tests/c/ring.c`, a chain K deep),
//! a fresh ring for every repetition, each restored ring checking that its counter still goes
//! round without a value lost or repeated. Interleaved with them, repetition by repetition: the
//! fork and exit of K processes by the benchmark itself (the kernel's own cost of creating and
//! ending that many processes) and, when a CRIU binary is given, CRIU's dump
//! (`criu dump --shell-job --leave-stopped`) and restore (`criu restore -d`) of the same ring.
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{self, Remove, Scratch, Target, R};
use crate::table::Row;
use crate::{sys, Ctx, S};

/// The steps `cr_checkpoint` and `cr_restart` report with CREST_TIMING (`NAME_ms=`).
const CK_STEPS: [&str; 4] = ["freeze", "collect", "pages", "finish"];
const RS_STEPS: [&str; 4] = ["husks", "filled", "finished", "released"];
/// A ring's counter must have gone round enough before it is checkpointed for its own check at
/// the end to pass: two ticks are at least 128 rounds of a ring of 8, 8 of a ring of 256.
const TICKS: usize = 2;
const START: Duration = Duration::from_secs(60);

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

    fn path(&self) -> Option<&Path> {
        match self {
            Criu::Runs(p, _) => Some(p),
            _ => None,
        }
    }
}

fn key(k: usize, what: &str) -> String {
    format!("procs {k}: {what}")
}

/// Every repetition of K: fork+exit of K, crest's checkpoint and restart of a fresh ring, and
/// CRIU's of another fresh ring.
pub fn processes(c: &mut Ctx, k: usize, criu: &Criu) -> S {
    let storage = c.o.storage[0].clone();
    let st = storage.display().to_string();
    let dir = Scratch::new(&storage, &format!("procs-{k}"))?;
    let img = dir.file("img");
    let _rm = Remove(&img);
    for rep in 0..c.o.reps {
        c.check()?;
        eprintln!("crest-bench: ring of {k} processes, repetition {}", rep + 1);
        c.s.add(&key(k, "fork+exit"), 0, &st, rep, sys::fork_exit(k)?);
        let r = crest_once(c, k, rep, &img, &st);
        // The members of the killed ring, orphaned to the benchmark: every guard has been
        // dropped, so its only children now are those.
        sys::reap_orphans();
        r?;
        if let Some(path) = criu.path() {
            c.check()?;
            let r = criu_once(c, k, rep, path, &dir, &st);
            sys::reap_orphans();
            r?;
        }
    }
    Ok(())
}

fn start_ring(c: &Ctx, k: usize) -> R<Target> {
    let ring = Target::start_env(&c.o.progs.join("ring"), &[], &[("RING_N", &k.to_string())])?;
    for _ in 0..TICKS {
        drop(ring.out.until(&["tick"], START, &format!("ring of {k}"))?);
    }
    Ok(ring)
}

fn crest_once(c: &mut Ctx, k: usize, rep: usize, img: &Path, st: &str) -> S {
    let ring = start_ring(c, k)?;
    let ck = run::checkpoint(&c.o.bin, ring.pid(), img, &["--tree", "--kill"], &[])?;
    // cr_checkpoint killed it: this reaps the first member.
    drop(ring);
    c.s.add(&key(k, "checkpoint"), 0, st, rep, ck.wall);
    c.s.add(&key(k, "frozen"), 0, st, rep, ck.frozen);
    c.fact(&format!("procs {k}: image"), 0, st, ck.image_bytes);
    for s in CK_STEPS {
        if let Some(ms) = run::field(&ck.timing, &format!("{s}_ms")) {
            c.s.add(&key(k, &format!("checkpoint {s}")), 0, st, rep, ms / 1e3);
        }
    }
    let r = run::restart(&c.o.bin, img)?;
    c.s.add(&key(k, "restart"), 0, st, rep, r.wall);
    c.s.add(&key(k, "restart inside"), 0, st, rep, r.inside);
    for s in RS_STEPS {
        if let Some(ms) = run::field(&r.timing, &format!("{s}_ms")) {
            c.s.add(&key(k, &format!("restart {s}")), 0, st, rep, ms / 1e3);
        }
    }
    // The ring checks itself and ends (SIGUSR2: PASS or FAIL), and cr_restart with it.
    r.verify().map_err(|e| format!("restored ring of {k}: {e}"))?;
    let _ = std::fs::remove_file(img);
    Ok(())
}

/// A ring started for CRIU, its output and errors going to a file (CRIU restores a file by its
/// path; the pipes a [`Target`] writes to would have no reader after the restore). Dropping it kills the first
/// member and the members still listed, by PID, and reaps the first.
struct FileRing {
    child: Child,
    members: Vec<i32>,
}

impl Drop for FileRing {
    fn drop(&mut self) {
        for &p in &self.members {
            sys::kill(p, libc::SIGKILL);
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The PIDs of `pid` and all its descendants (single-threaded processes, as the ring's are).
fn tree(pid: i32) -> Vec<i32> {
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
fn wait_file(path: &Path, from: usize, prefixes: &[&str], nth: usize, timeout: Duration) -> R<(String, usize)> {
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

/// The last lines of a CRIU log, for a failure message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

fn criu_once(c: &mut Ctx, k: usize, rep: usize, criu: &Path, dir: &Scratch, st: &str) -> S {
    let imgs = dir.file("criu");
    let _ = std::fs::remove_dir_all(&imgs);
    std::fs::create_dir_all(&imgs).map_err(|e| format!("{}: {e}", imgs.display()))?;
    let out_path = dir.file("criu-ring.out");
    let _ = std::fs::remove_file(&out_path);
    let out = OpenOptions::new().create(true).append(true).open(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    let child = Command::new(c.o.progs.join("ring"))
        .env("RING_N", k.to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| format!("{}: {e}", out_path.display()))?)
        .stderr(out)
        .spawn()
        .map_err(|e| format!("starting the ring of {k} for CRIU: {e}"))?;
    let pid = child.id() as i32;
    let mut ring = FileRing { child, members: Vec::new() };
    wait_file(&out_path, 0, &["tick"], TICKS, START)?;
    ring.members = tree(pid);
    if ring.members.len() != k {
        return Err(format!("the ring of {k} for CRIU (PID {pid}) has {} processes", ring.members.len()).into());
    }
    let (dump_log, restore_log) = (imgs.join("dump.log"), imgs.join("restore.log"));
    let mut dump = Command::new(criu);
    dump.arg("dump").arg("-t").arg(pid.to_string()).arg("-D").arg(&imgs).args(["--shell-job", "--leave-stopped", "-o"]).arg(&dump_log);
    let r = run::run(&mut dump, run::LONG)?;
    if !r.status.success() {
        return Err(format!("criu dump of the ring of {k} (PID {pid}): {}: {} {}", r.status, r.stderr.trim(), log_tail(&dump_log)).into());
    }
    c.s.add(&key(k, "criu dump"), 0, st, rep, r.wall);
    // CRIU left the ring stopped: end it, every member by PID, and reap them all so that their
    // PIDs are free again for the restore, which gives them back.
    drop(ring);
    sys::reap_orphans();
    let lines = std::fs::read_to_string(&out_path).unwrap_or_default().lines().count();
    let pidfile = imgs.join("restore.pid");
    let mut restore = Command::new(criu);
    restore.arg("restore").arg("-D").arg(&imgs).args(["--shell-job", "-d", "--pidfile"]).arg(&pidfile).arg("-o").arg(&restore_log);
    let r = run::run(&mut restore, run::LONG)?;
    if !r.status.success() {
        return Err(format!("criu restore of the ring of {k}: {}: {} {}", r.status, r.stderr.trim(), log_tail(&restore_log)).into());
    }
    c.s.add(&key(k, "criu restore"), 0, st, rep, r.wall);
    // criu restore -d has ended: the restored ring's first member is now the benchmark's child
    // (it is their subreaper), reaped with the orphans once it has checked itself.
    let root: i32 = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| format!("criu restore wrote no PID into {}", pidfile.display()))?;
    sys::kill(root, libc::SIGUSR2);
    let (verdict, _) = wait_file(&out_path, lines, &["PASS", "FAIL"], 1, run::LONG)?;
    if !verdict.starts_with("PASS") {
        return Err(format!("the ring of {k} restored by CRIU (PID {root}) failed its check: {verdict}").into());
    }
    Ok(())
}

/// "1.23 ms/process (min 1.10)", and how the per-process median compares with that of the
/// smallest K measured.
fn per_process(c: &Ctx, k: usize, k0: usize, what: &str, st: &str) -> String {
    let Some((med, min)) = c.s.stats(&key(k, what), 0, st) else { return String::new() };
    let n = k as f64;
    let mut s = format!("{:.3} ms/process (min {:.3})", med * 1e3 / n, min * 1e3 / n);
    if k != k0 {
        if let Some(m0) = c.s.median(&key(k0, what), 0, st) {
            s.push_str(&format!(", x{:.2} per process vs K={k0}", (med / n) / (m0 / k0 as f64)));
        }
    }
    s
}

fn steps(c: &Ctx, k: usize, what: &str, names: &[&str], st: &str) -> String {
    let parts: Vec<String> = names.iter().filter_map(|s| c.s.median(&key(k, &format!("{what} {s}")), 0, st).map(|m| format!("{s} {:.1}", m * 1e3))).collect();
    if parts.is_empty() {
        return String::new();
    }
    format!("steps (ms): {}", parts.join(", "))
}

pub fn rows(c: &mut Ctx, k: usize, k0: usize, criu: &Criu) {
    let st = c.o.storage[0].display().to_string();
    let s = &c.s;
    let image = c.get(&format!("procs {k}: image"), 0, &st).map(|b| format!("image {}", crate::table::mib(b))).unwrap_or_default();
    let inside = s.median(&key(k, "restart inside"), 0, &st).map(|m| format!("{:.1} ms inside cr_restart", m * 1e3)).unwrap_or_default();
    let mut rows = vec![
        Row::of(s, &key(k, "fork+exit"), format!("fork+exit of {k} processes"), 0, &st).note(per_process(c, k, k0, "fork+exit", &st)),
        Row::of(s, &key(k, "checkpoint"), format!("checkpoint --tree --kill, ring of {k}"), 0, &st)
            .vs(s, &key(k, "fork+exit"), "fork+exit")
            .vs(s, &key(k, "criu dump"), "criu dump")
            .note(per_process(c, k, k0, "checkpoint", &st))
            .note(steps(c, k, "checkpoint", &CK_STEPS, &st))
            .note(image),
        Row::of(s, &key(k, "frozen"), "  frozen (reported)", 0, &st).note(per_process(c, k, k0, "frozen", &st)),
        Row::of(s, &key(k, "restart"), format!("restart --no-restore-pid, ring of {k}, until it runs"), 0, &st)
            .vs(s, &key(k, "fork+exit"), "fork+exit")
            .vs(s, &key(k, "criu restore"), "criu restore")
            .note(per_process(c, k, k0, "restart", &st))
            .note(steps(c, k, "restart", &RS_STEPS, &st))
            .note(inside),
    ];
    if let Criu::Runs(..) = criu {
        rows.push(Row::of(s, &key(k, "criu dump"), format!("criu dump --leave-stopped, ring of {k}"), 0, &st).note(per_process(c, k, k0, "criu dump", &st)));
        rows.push(Row::of(s, &key(k, "criu restore"), format!("criu restore -d, ring of {k}"), 0, &st).note(per_process(c, k, k0, "criu restore", &st)));
    }
    rows.into_iter().for_each(|r| c.push(r));
}

/// The row that says which CRIU, if any, the section was compared with.
pub fn criu_row(c: &mut Ctx, criu: &Criu) {
    let st = c.o.storage[0].display().to_string();
    let row = match criu {
        Criu::NotGiven => Row::new("CRIU not given: no side-by-side", 0, &st).note("--criu PATH to compare"),
        Criu::NotRunnable(why) => Row::new("CRIU not runnable: no side-by-side", 0, &st).note(why.clone()),
        Criu::Runs(p, v) => Row::new(format!("compared with {}", p.display()), 0, &st).note(v.clone()),
    };
    c.rows.push(row);
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
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(r.expect("two ticks"), ("tick 2".to_string(), 3));
        assert!(wait_file(&dir.join("absent"), 0, &["PASS"], 1, Duration::from_millis(20)).is_err());
    }

    #[test]
    fn a_tree_of_one() {
        let me = std::process::id() as i32;
        assert_eq!(tree(me)[0], me);
    }
}
