//! The "threads" section: `tests/threads/threads.c` with N threads (each N of `--threads`) is
//! checkpointed once, then its image is restarted again and again (`cr_restart
//! --no-restore-pid`, timed from its spawn until it reports the process running; every
//! restored copy must then print a new tick). Interleaved with it, repetition by repetition,
//! the baseline: the same program started from scratch with as many threads, which makes
//! them, stops them and joins them at once (`threads 0 N`, timed from its spawn until it
//! exits): the cost of starting that program and making its threads without crest; and, with
//! `--criu`, CRIU's restore (`criu restore -d`) of the same program with as many threads, dumped
//! once by `criu dump` from a copy of its own, every restored copy printing a new tick too.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::run::{self, Remove, Scratch, Target, R};
use crate::table::Row;
use crate::{criu, Ctx, S};

/// The steps `cr_restart` reports with CREST_TIMING (`NAME_ms=`).
const STEPS: [&str; 4] = ["husks", "filled", "finished", "released"];
/// The goal of issue 18 for 64 threads.
const GOAL_MS: f64 = 10.0;

fn key(n: u32, what: &str) -> String {
    format!("threads {n}: {what}")
}

/// Restarts of `threads` with `n` threads, interleaved with its start from scratch.
pub fn threads(c: &mut Ctx, n: u32) -> S {
    let storage = c.o.storage[0].clone();
    let st = storage.display().to_string();
    let dir = Scratch::new(&storage, "threads")?;
    let img = dir.file("img");
    let _rm = Remove(&img);
    let prog = c.o.progs.join("threads");
    let t = Target::start(&prog, &["100000".into(), n.to_string()])?;
    drop(t.out.until(&["tick"], Duration::from_secs(30), "threads")?);
    run::checkpoint(&c.o.bin, t.pid(), &img, &[], &[])?;
    drop(t);
    let criu = match c.criu.path() {
        Some(p) => Some(criu_dump(p, &prog, n, &dir)?),
        None => None,
    };
    for rep in 0..c.o.reps {
        c.check()?;
        eprintln!("crest-bench: {n} threads, repetition {}", rep + 1);
        let r = run::run(Command::new(&prog).arg("0").arg(n.to_string()), Duration::from_secs(30))?;
        if !r.status.success() {
            return Err(format!("threads 0 {n}: {}", r.status).into());
        }
        c.s.add(&key(n, "spawn"), 0, &st, rep, r.wall);
        let r = run::restart(&c.o.bin, &img)?;
        c.s.add(&key(n, "restart"), 0, &st, rep, r.wall);
        c.s.add(&key(n, "restart inside"), 0, &st, rep, r.inside);
        for s in STEPS {
            if let Some(ms) = run::field(&r.timing, &format!("{s}_ms")) {
                c.s.add(&key(n, &format!("restart {s}")), 0, &st, rep, ms / 1e3);
            }
        }
        drop(r.expect("tick").map_err(|e| format!("the restored copy of threads with {n} threads: {e}"))?);
        drop(r);
        if let Some((path, imgs, out)) = &criu {
            c.check()?;
            let from = criu::lines(out);
            let (wall, root) = criu::restore(path, imgs, &[], &format!("threads with {n} threads"))?;
            c.s.add(&key(n, "criu restore"), 0, &st, rep, wall);
            criu::wait_file(out, from, &["tick"], 1, Duration::from_secs(30)).map_err(|e| format!("the copy of threads with {n} threads restored by CRIU (PID {}): {e}", root.0))?;
            drop(root);
        }
    }
    Ok(())
}

/// Starts `threads 100000 n` writing into a file, lets it tick and has CRIU dump it (and kill
/// it): the CRIU binary, the image directory and the output file.
fn criu_dump(path: &Path, prog: &Path, n: u32, dir: &Scratch) -> R<(PathBuf, PathBuf, PathBuf)> {
    let (imgs, out) = (dir.file("criu"), dir.file("criu.out"));
    let _ = std::fs::remove_file(&out);
    let mut child = criu::spawn_to_file(Command::new(prog).arg("100000").arg(n.to_string()), &out, &format!("threads with {n} threads for CRIU"))?;
    let pid = child.id() as i32;
    let dumped = criu::wait_file(&out, 0, &["tick"], 1, Duration::from_secs(30)).and_then(|_| criu::dump(path, pid, &imgs, &[], &format!("threads with {n} threads")));
    // CRIU killed it (or it failed): reap it, so that its PID is free for the restores.
    let _ = child.kill();
    let _ = child.wait();
    dumped?;
    Ok((path.to_path_buf(), imgs, out))
}

pub fn rows(c: &mut Ctx, n: u32) {
    let st = c.o.storage[0].display().to_string();
    let s = &c.s;
    let ms = |what: &str| s.stats(&key(n, what), 0, &st).map(|(med, min)| format!("{:.2} ms (min {:.2})", med * 1e3, min * 1e3));
    let steps: Vec<String> = STEPS.iter().filter_map(|w| s.median(&key(n, &format!("restart {w}")), 0, &st).map(|m| format!("{w} {:.2}", m * 1e3))).collect();
    let goal = if n == 64 { format!("; target < {GOAL_MS:.0} ms") } else { String::new() };
    let rows = [
        Row::of(s, &key(n, "spawn"), format!("start threads, make, stop, join {n}"), 0, &st),
        Row::of(s, &key(n, "restart"), format!("restart {n} threads, wall until it runs"), 0, &st)
            .vs(s, &key(n, "spawn"), "start from scratch")
            .vs(s, &key(n, "criu restore"), "criu restore")
            .note(ms("restart inside").map(|m| format!("{m} inside cr_restart{goal}")).unwrap_or_default())
            .note(if steps.is_empty() { String::new() } else { format!("steps (ms): {}", steps.join(", ")) }),
        Row::of(s, &key(n, "criu restore"), format!("criu restore -d, {n} threads"), 0, &st).note(ms("criu restore").map(|m| format!("{m}, until criu returns")).unwrap_or_default()),
    ];
    rows.into_iter().for_each(|r| c.push(r));
}
