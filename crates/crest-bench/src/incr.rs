//! Incremental and periodic checkpoints (`--only incremental`), of `rewrite SIZE 64`
//! (bench/rewrite.c), a process of SIZE MiB that rewrites 64 MiB of it on demand:
//!
//! - a full checkpoint (`--track`) against the incremental one made after 64 MiB were
//!   rewritten (`--incremental`), with both image sizes and how long the process stood still;
//! - the restart of a chain of 10 images (a full one and 9 incremental ones, 64 MiB rewritten
//!   between each) against that of the same chain merged into one image (`cr_info --merge`),
//!   interleaved, every restored copy checking every word;
//! - `cr_checkpoint --interval 1` on `rewrite SIZE 64 work`, which rewrites its first 64 MiB over
//!   and over as its own work: how long each periodic checkpoint froze it, and the time its work
//!   takes per GiB rewritten while checkpointed every second against without.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{self, Scratch, Target, R};
use crate::table::{mib, Row};
use crate::{room, sys, Ctx, S};

/// MiB rewritten between two checkpoints.
const REWRITE: u64 = 64;
/// Images in the chain restarted.
const CHAIN: usize = 10;
/// Seconds of the program's work per window of the periodic measure.
const WINDOW: f64 = 5.0;

fn start(c: &Ctx, size: u64, work: bool) -> R<Target> {
    let mut args = vec![size.to_string(), REWRITE.to_string()];
    if work {
        args.push("work".into());
    }
    let t = Target::start(&c.o.progs.join("rewrite"), &args)?;
    t.out.until(&["ready"], run::LONG, "rewrite")?;
    Ok(t)
}

/// Has `t` rewrite the next 64 MiB, and waits until it has.
fn rewrite(t: &Target) -> R<()> {
    sys::kill(t.pid(), libc::SIGUSR1);
    t.out.until(&["rewrote"], run::LONG, "rewrite").map(|_| ())
}

pub fn incremental(c: &mut Ctx, size: u64, storage: &Path) -> S {
    let st = storage.display().to_string();
    let len = size << 20;
    // The process, its full image, the merged one, the incremental ones, a restored copy.
    room(storage, 4 * len + (CHAIN as u64 + 1) * (REWRITE << 20), 2 * len, 2 * len + (CHAIN as u64 + 1) * (REWRITE << 20))?;
    let dir = Scratch::new(storage, "incremental")?;
    let t = start(c, size, false)?;
    let (full, second) = (dir.file("full"), dir.file("second"));
    for rep in 0..c.o.reps {
        c.check()?;
        eprintln!("crest-bench: incremental {size} MiB on {st}, repetition {}", rep + 1);
        let ck = run::checkpoint(&c.o.bin, t.pid(), &full, &["--track"], &[])?;
        c.s.add("incr full", size, &st, rep, ck.wall);
        c.s.add("incr full frozen", size, &st, rep, ck.frozen);
        c.fact("incr full image", size, &st, ck.image_bytes);
        rewrite(&t)?;
        let parent = full.display().to_string();
        let ck = run::checkpoint(&c.o.bin, t.pid(), &second, &["--incremental", &parent], &[])?;
        if ck.image_bytes * 4 > len * 3 {
            return Err(format!("the second checkpoint wrote a full image ({})", mib(ck.image_bytes)).into());
        }
        c.s.add("incr second", size, &st, rep, ck.wall);
        c.s.add("incr second frozen", size, &st, rep, ck.frozen);
        c.fact("incr second image", size, &st, ck.image_bytes);
    }
    // A chain of 10, then merged.
    let links: Vec<_> = (0..CHAIN).map(|k| dir.file(&format!("link{k}"))).collect();
    run::checkpoint(&c.o.bin, t.pid(), &links[0], &["--track"], &[])?;
    let _ = std::fs::remove_file(&full);
    let _ = std::fs::remove_file(&second);
    for k in 1..CHAIN {
        c.check()?;
        rewrite(&t)?;
        let parent = links[k - 1].display().to_string();
        run::checkpoint(&c.o.bin, t.pid(), &links[k], &["--incremental", &parent], &[])?;
    }
    let merged = dir.file("merged");
    let m = Instant::now();
    let r = run::run(Command::new(c.o.bin.join("cr_info")).arg("--merge").arg(&merged).arg(&links[CHAIN - 1]), run::LONG)?;
    if !r.status.success() {
        return Err(format!("cr_info --merge: {}: {}", r.status, r.stderr.trim()).into());
    }
    c.s.add("incr merge", size, &st, 0, m.elapsed().as_secs_f64());
    c.fact("incr merged image", size, &st, std::fs::metadata(&merged).map_or(0, |m| m.len()));
    c.fact("incr chain bytes", size, &st, links.iter().map(|l| std::fs::metadata(l).map_or(0, |m| m.len())).sum());
    for rep in 0..c.o.reps {
        c.check()?;
        eprintln!("crest-bench: restart of a chain of {CHAIN} against merged, {size} MiB on {st}, repetition {}", rep + 1);
        let r = run::restart(&c.o.bin, &links[CHAIN - 1])?;
        c.s.add("incr restart chain", size, &st, rep, r.wall);
        r.verify()?;
        let r = run::restart(&c.o.bin, &merged)?;
        c.s.add("incr restart merged", size, &st, rep, r.wall);
        r.verify()?;
    }
    t.verify()?;
    drop(dir);
    periodic(c, size, storage)
}

/// Rate of the work of `t` over about [`WINDOW`] seconds from now, as seconds per GiB
/// rewritten, from its own stamps (lines queued from before now are passed over).
fn work_window(t: &Target) -> R<f64> {
    let from = sys::monotonic();
    let next = || -> R<(f64, f64)> {
        let l = t.out.until(&["work"], Duration::from_secs(60), "rewrite")?;
        let mut w = l.split_whitespace().skip(1).map(|n| n.parse::<f64>().ok());
        match (w.next().flatten(), w.next().flatten()) {
            (Some(m), Some(at)) => Ok((m, at)),
            _ => Err(format!("rewrite printed {l:?}")),
        }
    };
    let mut first = next()?;
    while first.1 < from {
        first = next()?;
    }
    let mut last = first;
    while last.1 - first.1 < WINDOW {
        last = next()?;
    }
    if last.0 <= first.0 {
        return Err("rewrite made no progress".into());
    }
    Ok((last.1 - first.1) / ((last.0 - first.0) / 1024.0))
}

/// `cr_checkpoint --interval 1` on a process at work, against the same work unwatched.
fn periodic(c: &mut Ctx, size: u64, storage: &Path) -> S {
    let st = storage.display().to_string();
    let dir = Scratch::new(storage, "periodic")?;
    let t = start(c, size, true)?;
    for rep in 0..c.o.reps {
        c.check()?;
        c.s.add("incr work alone", size, &st, rep, work_window(&t)?);
    }
    let log = dir.file("log");
    let link = dir.file("ctx");
    let mut ck = Command::new(c.o.bin.join("cr_checkpoint"))
        .env("CREST_TIMING", "1")
        .args(["--nosync", "--interval", "1", "--keep", "1", "-f"])
        .arg(&link)
        .arg(t.pid().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?)
        .spawn()
        .map_err(|e| format!("starting cr_checkpoint --interval: {e}"))?;
    let ck_pid = ck.id() as i32;
    let measured = (|| -> S {
        // The first image is a full one: measured from the second on.
        let t0 = Instant::now();
        while std::fs::read_to_string(&log).unwrap_or_default().matches("crest-timing: checkpoint").count() < 2 {
            if t0.elapsed() > run::LONG {
                return Err("cr_checkpoint --interval wrote no second image".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for rep in 0..c.o.reps {
            c.check()?;
            eprintln!("crest-bench: periodic checkpoints of {size} MiB at work on {st}, repetition {}", rep + 1);
            c.s.add("incr work periodic", size, &st, rep, work_window(&t)?);
        }
        Ok(())
    })();
    sys::kill(ck_pid, libc::SIGINT);
    let _ = ck.wait();
    measured?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let rounds: Vec<(f64, f64)> = text.lines().filter(|l| l.starts_with("crest-timing: checkpoint")).filter_map(|l| Some((run::field(l, "frozen_ms")? / 1e3, run::field(l, "page_bytes")?))).collect();
    for (k, &(frozen, bytes)) in rounds.iter().enumerate().skip(1) {
        c.s.add("incr periodic frozen", size, &st, k, frozen);
        c.fact(&format!("incr periodic page bytes {k}"), size, &st, bytes as u64);
    }
    c.fact("incr periodic rounds", size, &st, rounds.len().saturating_sub(1) as u64);
    let images = std::fs::read_dir(dir.file(".")).map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("ctx.")).count()).unwrap_or(0);
    c.fact("incr periodic images kept", size, &st, images as u64);
    t.verify()?;
    Ok(())
}

pub fn rows(c: &mut Ctx, size: u64, st: &str) {
    let s = &c.s;
    let img = |k: &str| c.get(k, size, st).map(mib).unwrap_or_default();
    let frozen = |k: &str| s.median(k, size, st).map(|m| format!("frozen {:.1} ms", m * 1e3)).unwrap_or_default();
    let rounds = c.get("incr periodic rounds", size, st).unwrap_or(0);
    let per_round: Vec<u64> = (1..=rounds).filter_map(|k| c.get(&format!("incr periodic page bytes {k}"), size, st)).collect();
    let saved = if per_round.is_empty() { String::new() } else { format!("{} checkpoints, {} of pages each (median)", per_round.len(), mib(median(&per_round))) };
    let rows = [
        Row::of(s, "incr full", "checkpoint --track (full)", size, st).rate().note(format!("image {}", img("incr full image"))).note(frozen("incr full frozen")),
        Row::of(s, "incr second", "  --incremental after 64 MiB rewritten", size, st)
            .vs(s, "incr full", "full")
            .note(format!("image {}", img("incr second image")))
            .note(frozen("incr second frozen"))
            .note("goal: < 5% of the full one's time, image about 64 MiB"),
        Row::of(s, "incr merge", "cr_info --merge of a chain of 10", size, st).rate().note(format!("chain {}, merged {}", img("incr chain bytes"), img("incr merged image"))),
        Row::of(s, "incr restart merged", "restart of the merged image", size, st).rate(),
        Row::of(s, "incr restart chain", "restart of the chain of 10", size, st).rate().vs(s, "incr restart merged", "merged"),
        Row::of(s, "incr work alone", "work: 1 GiB rewritten, alone", size, st),
        Row::of(s, "incr work periodic", "  while checkpointed every second", size, st).vs(s, "incr work alone", "alone").note(saved),
        Row::of(s, "incr periodic frozen", "  frozen per periodic checkpoint", size, st),
    ];
    rows.into_iter().for_each(|r| c.push(r));
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}
