//! The "processes" section: checkpoint (`cr_checkpoint --tree`, the ring running on after it,
//! then `cr_checkpoint --tree --kill`) and restart
//! (`cr_restart --no-restore-pid`) of a ring of K processes (`tests/c/ring.c`, a chain K deep),
//! a fresh ring for every repetition, each restored ring checking that its counter still goes
//! round without a value lost or repeated. Interleaved with them, repetition by repetition: the
//! fork and exit of K processes by the benchmark itself (the kernel's own cost of creating and
//! ending that many processes) and, when a CRIU binary is given, CRIU's dump
//! (`criu dump --shell-job`, which kills the ring as `--kill` does) and restore
//! (`criu restore -d`) of another fresh ring.
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use crate::run::{self, Remove, Scratch, Target, R};
use crate::table::Row;
use crate::{criu, sys, Ctx, S};

/// The steps `cr_checkpoint` and `cr_restart` report with CREST_TIMING (`NAME_ms=`).
const CK_STEPS: [&str; 4] = ["freeze", "collect", "pages", "finish"];
const RS_STEPS: [&str; 4] = ["husks", "filled", "finished", "released"];
/// A ring's counter must have gone round enough before it is checkpointed for its own check at
/// the end to pass: two ticks are at least 128 rounds of a ring of 8, 8 of a ring of 256.
const TICKS: usize = 2;
const START: Duration = Duration::from_secs(60);

fn key(k: usize, what: &str) -> String {
    format!("procs {k}: {what}")
}

/// Every repetition of K: fork+exit of K, crest's checkpoint and restart of a fresh ring, and
/// CRIU's of another fresh ring.
pub fn processes(c: &mut Ctx, k: usize) -> S {
    let criu = c.criu.path().map(Path::to_path_buf);
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
        if let Some(path) = &criu {
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
    // First a checkpoint the ring runs on after (as a periodic one is): the time it stood still.
    let on = run::checkpoint(&c.o.bin, ring.pid(), img, &["--tree"], &[])?;
    c.s.add(&key(k, "checkpoint runs on"), 0, st, rep, on.wall);
    c.s.add(&key(k, "frozen runs on"), 0, st, rep, on.frozen);
    let _ = std::fs::remove_file(img);
    // It goes round again before it is checkpointed and killed.
    drop(ring.out.until(&["tick"], START, &format!("ring of {k} after a checkpoint"))?);
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

/// A ring started for CRIU, its output and errors going to a file (CRIU restores a file by
/// its path; the pipes a [`Target`] writes to would have no reader after the restore).
/// Dropping it kills the first member and the members still listed, by PID, and reaps the
/// first.
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

fn criu_once(c: &mut Ctx, k: usize, rep: usize, criu: &Path, dir: &Scratch, st: &str) -> S {
    let imgs = dir.file("criu");
    let out_path = dir.file("criu-ring.out");
    let _ = std::fs::remove_file(&out_path);
    let child = criu::spawn_to_file(Command::new(c.o.progs.join("ring")).env("RING_N", k.to_string()), &out_path, &format!("the ring of {k} for CRIU"))?;
    let pid = child.id() as i32;
    let mut ring = FileRing { child, members: Vec::new() };
    criu::wait_file(&out_path, 0, &["tick"], TICKS, START)?;
    ring.members = criu::tree(pid);
    if ring.members.len() != k {
        return Err(format!("the ring of {k} for CRIU (PID {pid}) has {} processes", ring.members.len()).into());
    }
    let wall = criu::dump(criu, pid, &imgs, &[], &format!("the ring of {k}"))?;
    c.s.add(&key(k, "criu dump"), 0, st, rep, wall);
    c.fact(&format!("procs {k}: criu image"), 0, st, criu::image_bytes(&imgs));
    // CRIU killed the ring: reap every member so that their PIDs are free again for the
    // restore, which gives them back.
    drop(ring);
    sys::reap_orphans();
    let lines = criu::lines(&out_path);
    let (wall, root) = criu::restore(criu, &imgs, &[], &format!("the ring of {k}"))?;
    c.s.add(&key(k, "criu restore"), 0, st, rep, wall);
    // The restored ring checks itself and ends; its members are reaped with the orphans.
    sys::kill(root.0, libc::SIGUSR2);
    let (verdict, _) = criu::wait_file(&out_path, lines, &["PASS", "FAIL"], 1, run::LONG)?;
    if !verdict.starts_with("PASS") {
        return Err(format!("the ring of {k} restored by CRIU (PID {}) failed its check: {verdict}", root.0).into());
    }
    drop(root);
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

pub fn rows(c: &mut Ctx, k: usize, k0: usize) {
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
        Row::of(s, &key(k, "checkpoint runs on"), format!("checkpoint --tree, ring of {k} runs on"), 0, &st).note(per_process(c, k, k0, "checkpoint runs on", &st)),
        Row::of(s, &key(k, "frozen runs on"), "  frozen (reported)", 0, &st).note(per_process(c, k, k0, "frozen runs on", &st)),
        Row::of(s, &key(k, "restart"), format!("restart --no-restore-pid, ring of {k}, until it runs"), 0, &st)
            .vs(s, &key(k, "fork+exit"), "fork+exit")
            .vs(s, &key(k, "criu restore"), "criu restore")
            .note(per_process(c, k, k0, "restart", &st))
            .note(steps(c, k, "restart", &RS_STEPS, &st))
            .note(inside),
    ];
    if c.criu.path().is_some() {
        let criu_image = c.get(&format!("procs {k}: criu image"), 0, &st).map(|b| format!("images {}", crate::table::mib(b))).unwrap_or_default();
        rows.push(Row::of(s, &key(k, "criu dump"), format!("criu dump, ring of {k}"), 0, &st).note(per_process(c, k, k0, "criu dump", &st)).note(criu_image));
        rows.push(Row::of(s, &key(k, "criu restore"), format!("criu restore -d, ring of {k}"), 0, &st).note(per_process(c, k, k0, "criu restore", &st)));
    }
    rows.into_iter().for_each(|r| c.push(r));
}
