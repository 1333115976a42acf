//! crest's benchmark. Measures, each against baselines taken in the same run and interleaved
//! with it, repetition by repetition:
//!
//! - dump and restore of a process holding N MiB of random data on each storage, against
//!   `memcpy` into freshly mapped memory on one core and `cp` of the image on the same storage;
//! - the dump of a sparse process (a quarter of its mapping written) against that of the same
//!   mapping all written, with both image sizes;
//! - compressed dumps (`--compress=LEVEL`) of half-zero, quarter-text, quarter-random memory,
//!   against zstd level 1 of the same bytes on one core, with the image sizes, and their restores;
//! - downtime: the longest gap a spinning target sees while `cr_checkpoint` runs on it, with the
//!   copy-on-write snapshot and without, and what `cr_checkpoint` reports;
//! - fixed costs: checkpoint and restart of `sleep` and of 1 to 64 threads, against spawning
//!   `/bin/true`;
//! - restart: a process of the largest size restarted from one image again and again (pages
//!   mapped from the image, with and without checksums, copied, and given on demand with
//!   `--lazy`), against memcpy; a ring of
//!   8 processes, against the restart of one `sleep`;
//! - threads: the restart of 1 to 64 threads, against starting the same program with as many
//!   threads from scratch;
//! - processes: checkpoint (`--tree --kill`) and restart of a ring of K processes (8, 64, 256),
//!   a fresh ring each repetition, against fork+exit of K processes and, with `--criu PATH`,
//!   CRIU's dump and restore of the same ring (CRIU's restore also beside the restarts of the
//!   largest size in "restart" and of the threads in "threads");
//! - incremental: a full checkpoint against an incremental one after 64 MiB rewritten, the
//!   restart of a chain of 10 against the same chain merged, and the cost of checkpointing a
//!   working process every second (`incr`);
//! - servers: nginx with two workers, redis-server loaded with keys and `python3 -m
//!   http.server`, those installed, checkpointed (`--tree --kill`) and restarted until they
//!   answer, with their image sizes, and with `--criu PATH` dumped and restored by CRIU.
//!
//! Prints one table (median and minimum of the repetitions) and writes every sample to
//! `raw.csv` beside the benchmark programs. Every restored copy must pass its own check of
//! every byte, and every original its check after being checkpointed; any failure makes the
//! benchmark exit non-zero.
mod criu;
mod incr;
mod procs;
mod run;
mod servers;
mod sys;
mod table;
mod threads;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use run::{Remove, Scratch, Target, R};
use table::{mib, Row, Samples};

const SECTIONS: [&str; 10] = ["dump", "sparse", "compress", "downtime", "fixed", "restart", "threads", "processes", "incremental", "servers"];
/// Memory kept free besides what a row needs (the benchmark's own buffers, other users).
const MARGIN: u64 = 1536 << 20;
/// Source of the memcpy baseline, copied over and over into the fresh mapping.
const MEMCPY_SRC: usize = 256 << 20;

const USAGE: &str = "usage: crest-bench [--bin DIR] [--progs DIR] [--sizes MiB,..] [--storage DIR,..] [--reps N]
                   [--threads N,..] [--levels L,..] [--procs K,..] [--criu PATH] [--only SECTION,..] [--quick]
  --sizes    process sizes in MiB (default 1024,4096)
  --storage  where images go (default /dev/shm,/var/tmp); compress, downtime and fixed use the first
  --reps     repetitions of every measurement (default 3)
  --threads  thread counts for the fixed costs and the threads section (default 1,16,64)
  --levels   zstd levels for the compressed dumps (default 1,3)
  --procs    ring sizes (processes, 2..1000) for the processes section (default 8,64,256)
  --criu     a CRIU binary: the restart, threads, processes and servers sections also run
             `criu dump --shell-job` and `criu restore -d` of the same programs, interleaved, and
             print the ratios (run as root)
  --only     some of: dump, sparse, compress, downtime, fixed, restart, threads, processes,
             incremental, servers (default all)
  --quick    --sizes 256: every section, in about a minute";

struct Opts {
    bin: PathBuf,
    progs: PathBuf,
    sizes: Vec<u64>,
    storage: Vec<PathBuf>,
    reps: usize,
    threads: Vec<u32>,
    levels: Vec<i32>,
    procs: Vec<usize>,
    criu: Option<PathBuf>,
    only: Vec<String>,
}

fn list<T: std::str::FromStr>(v: &str, what: &str) -> Vec<T> {
    v.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap_or_else(|_| usage(&format!("bad {what}: {s}")))).collect()
}

fn usage(msg: &str) -> ! {
    eprintln!("crest-bench: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Opts {
    let mut o = Opts {
        bin: PathBuf::from("target/release"),
        progs: PathBuf::from("target/bench"),
        sizes: vec![1024, 4096],
        storage: vec![PathBuf::from("/dev/shm"), PathBuf::from("/var/tmp")],
        reps: 3,
        threads: vec![1, 16, 64],
        levels: vec![1, 3],
        procs: vec![8, 64, 256],
        criu: None,
        only: SECTIONS.iter().map(|s| s.to_string()).collect(),
    };
    let mut a = std::env::args().skip(1);
    while let Some(k) = a.next() {
        match k.as_str() {
            "--quick" => o.sizes = vec![256],
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            _ => {
                let v = a.next().unwrap_or_else(|| usage(&format!("{k} needs a value")));
                match k.as_str() {
                    "--bin" => o.bin = v.into(),
                    "--progs" => o.progs = v.into(),
                    "--sizes" => o.sizes = list(&v, "--sizes"),
                    "--storage" => o.storage = v.split(',').filter(|s| !s.is_empty()).map(PathBuf::from).collect(),
                    "--reps" => o.reps = v.parse().unwrap_or_else(|_| usage("bad --reps")),
                    "--threads" => o.threads = list(&v, "--threads"),
                    "--levels" => o.levels = list(&v, "--levels"),
                    "--procs" => o.procs = list(&v, "--procs"),
                    "--criu" => o.criu = Some(v.into()),
                    "--only" => o.only = list(&v, "--only"),
                    _ => usage(&format!("unknown option {k}")),
                }
            }
        }
    }
    if let Some(bad) = o.only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        usage(&format!("unknown section {bad}"));
    }
    if o.procs.is_empty() || o.procs.iter().any(|k| !(2..=1000).contains(k)) {
        usage("--procs: ring sizes between 2 and 1000");
    }
    if o.sizes.is_empty() || o.storage.is_empty() || o.reps == 0 || o.sizes.contains(&0) {
        usage("--sizes, --storage and --reps must not be empty or zero");
    }
    o
}

/// Why a row stopped early.
enum Stop {
    /// Not enough memory or space for it: noted, not a failure.
    Skip(String),
    Fail(String),
}

impl From<String> for Stop {
    fn from(s: String) -> Stop {
        Stop::Fail(s)
    }
}

impl From<&str> for Stop {
    fn from(s: &str) -> Stop {
        Stop::Fail(s.into())
    }
}

type S = Result<(), Stop>;

struct Ctx {
    o: Opts,
    s: Samples,
    /// Sizes and other facts measured along (image bytes, resident MiB), by key.
    facts: HashMap<String, u64>,
    rows: Vec<Row>,
    failures: Vec<String>,
    src: Vec<u8>,
    /// The CRIU binary the restart, threads, processes and servers sections compare with.
    criu: criu::Criu,
}

impl Ctx {
    fn check(&self) -> S {
        if sys::stopped() {
            return Err("interrupted".into());
        }
        Ok(())
    }

    fn fact(&mut self, what: &str, size: u64, st: &str, v: u64) {
        self.facts.insert(format!("{what}|{size}|{st}"), v);
    }

    fn get(&self, what: &str, size: u64, st: &str) -> Option<u64> {
        self.facts.get(&format!("{what}|{size}|{st}")).copied()
    }

    /// Adds a row if it was measured at all.
    fn push(&mut self, r: Row) {
        if r.stats.is_some() {
            self.rows.push(r);
        }
    }

    fn outcome(&mut self, what: &str, size: u64, st: &str, r: S) {
        match r {
            Ok(()) => {}
            Err(Stop::Skip(m)) => {
                eprintln!("crest-bench: skipped {what}, {size} MiB on {st}: {m}");
                self.rows.push(Row::new(format!("{what}: skipped"), size, st).note(m));
            }
            Err(Stop::Fail(m)) => {
                eprintln!("crest-bench: FAILED {what}, {size} MiB on {st}: {m}");
                self.failures.push(format!("{what}, {size} MiB on {st}: {m}"));
                self.rows.push(Row::new(format!("{what}: FAILED"), size, st).note(m));
            }
        }
    }
}

/// Whether a row fits: `tmpfs_mem` bytes of memory if `dir` is on tmpfs (its images then take
/// memory), else `mem` bytes of memory and `disk` bytes free in `dir`. The figures the rows
/// give count the snapshot of a `--run` checkpoint as a whole copy of the target: reading it
/// with process_vm_readv unshares (copies) every page it reads, until the dump ends.
fn room(dir: &Path, tmpfs_mem: u64, mem: u64, disk: u64) -> S {
    let (tmpfs, free) = sys::fs_info(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let need = if tmpfs { tmpfs_mem } else { mem } + MARGIN;
    let avail = sys::mem_available();
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    if avail < need {
        return Err(Stop::Skip(format!("needs {:.1} GiB of memory, MemAvailable is {:.1} GiB", gib(need), gib(avail))));
    }
    if free < disk + (256 << 20) {
        return Err(Stop::Skip(format!("needs {:.1} GiB free in {}, {:.1} GiB there", gib(disk), dir.display(), gib(free))));
    }
    Ok(())
}

/// Starts `hold size [kind]` and waits until its memory is filled; returns it and the address
/// of its data.
fn start_hold(o: &Opts, size: u64, kind: Option<&str>) -> R<(Target, u64)> {
    let mut args = vec![size.to_string()];
    args.extend(kind.map(String::from));
    let t = Target::start(&o.progs.join("hold"), &args)?;
    let line = t.out.until(&["ready"], run::LONG, "hold")?;
    let addr = line.split_whitespace().nth(1).and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok()).ok_or_else(|| format!("hold printed {line:?}"))?;
    Ok((t, addr))
}

/// Dump and restore of `hold size` (random data) on `storage`, interleaved with memcpy and cp.
fn dump_restore(c: &mut Ctx, size: u64, storage: &Path) -> S {
    let st = storage.display().to_string();
    let len = size << 20;
    // hold + snapshot + image, or hold + image + cp's copy, or hold + image + restored copy.
    room(storage, 3 * len, 2 * len, 2 * len)?;
    let dir = Scratch::new(storage, "dump")?;
    let img = dir.file("img");
    let _rm = Remove(&img);
    let (hold, _) = start_hold(&c.o, size, None)?;
    for rep in 0..c.o.reps {
        c.check()?;
        eprintln!("crest-bench: dump/restore {size} MiB on {st}, repetition {}", rep + 1);
        c.s.add("memcpy", size, &st, rep, sys::memcpy_fresh(&c.src, len as usize)?);
        let ck = run::checkpoint(&c.o.bin, hold.pid(), &img, &[], &[])?;
        c.s.add("dump", size, &st, rep, ck.wall);
        c.s.add("dump frozen", size, &st, rep, ck.frozen);
        c.fact("image", size, &st, ck.image_bytes);
        c.s.add("cp", size, &st, rep, dir.cp(&img, "copy")?);
        let r = run::restart(&c.o.bin, &img)?;
        c.s.add("restore", size, &st, rep, r.wall);
        c.s.add("restore inside", size, &st, rep, r.inside);
        let _ = std::fs::remove_file(&img);
        r.verify()?;
    }
    hold.verify()?;
    Ok(())
}

fn rows_dump_restore(c: &mut Ctx, size: u64, st: &str) {
    let s = &c.s;
    let image = c.get("image", size, st).map(|b| format!("image {}", mib(b))).unwrap_or_default();
    let inside = s.median("restore inside", size, st).map(|m| format!("{m:.3} s inside cr_restart")).unwrap_or_default();
    let rows = [
        Row::of(s, "memcpy", "memcpy into fresh pages, 1 core", size, st).rate(),
        Row::of(s, "cp", "cp of the image", size, st).rate(),
        Row::of(s, "dump", "dump", size, st).rate().vs(s, "memcpy", "memcpy").vs(s, "cp", "cp").note(image),
        Row::of(s, "dump frozen", "  target frozen (reported)", size, st),
        Row::of(s, "restore", "restore, until it runs", size, st).rate().vs(s, "memcpy", "memcpy").vs(s, "cp", "cp").note(inside),
    ];
    rows.into_iter().for_each(|r| c.push(r));
}

/// Dump of `hold size sparse` (a quarter written with data, a quarter with zeros, half never
/// touched) against `hold size` (all written), interleaved; and the sparse image's restore.
fn sparse(c: &mut Ctx, size: u64, storage: &Path) -> S {
    let st = storage.display().to_string();
    let len = size << 20;
    // Both holds (the sparse one has half its mapping resident) + the snapshot + the full image.
    room(storage, len * 7 / 2, len * 5 / 2, len)?;
    let dir = Scratch::new(storage, "sparse")?;
    let img = dir.file("img");
    let _rm = Remove(&img);
    let (full, _) = start_hold(&c.o, size, None)?;
    let (sparse, _) = start_hold(&c.o, size, Some("sparse"))?;
    for rep in 0..c.o.reps {
        c.check()?;
        eprintln!("crest-bench: sparse {size} MiB on {st}, repetition {}", rep + 1);
        let ck = run::checkpoint(&c.o.bin, full.pid(), &img, &[], &[])?;
        c.s.add("sparse: full dump", size, &st, rep, ck.wall);
        c.fact("sparse: full image", size, &st, ck.image_bytes);
        let _ = std::fs::remove_file(&img);
        let ck = run::checkpoint(&c.o.bin, sparse.pid(), &img, &[], &[])?;
        c.s.add("sparse: dump", size, &st, rep, ck.wall);
        c.fact("sparse: image", size, &st, ck.image_bytes);
        let r = run::restart(&c.o.bin, &img)?;
        c.s.add("sparse: restore", size, &st, rep, r.wall);
        let _ = std::fs::remove_file(&img);
        let pass = r.verify()?;
        if let Some(rss) = run::field(&pass, "rss_mib") {
            c.fact("sparse: restored rss", size, &st, rss as u64);
        }
    }
    full.verify()?;
    sparse.verify()?;
    Ok(())
}

fn rows_sparse(c: &mut Ctx, size: u64, st: &str) {
    let s = &c.s;
    let full = c.get("sparse: full image", size, st).map(mib).unwrap_or("?".into());
    let sparse = c.get("sparse: image", size, st).map(mib).unwrap_or("?".into());
    let rss = c.get("sparse: restored rss", size, st).map(|r| format!("restored copy resident: {r} MiB")).unwrap_or_default();
    let rows = [
        Row::of(s, "sparse: full dump", format!("dump, all {size} MiB written"), size, st).rate().note(format!("image {full}")),
        Row::of(s, "sparse: dump", "dump, 1/4 data + 1/4 zeros + 1/2 untouched", size, st).rate().vs(s, "sparse: full dump", "all written").note(format!("image {sparse} (all written: {full})")),
        Row::of(s, "sparse: restore", "restore of that, until it runs", size, st).rate().vs(s, "restore", "restore, all written").note(rss),
    ];
    rows.into_iter().for_each(|r| c.push(r));
}

/// Seconds zstd level 1 takes on one core over `len` bytes of process `pid` at `addr` (read
/// through /proc/PID/mem, not timed) as one stream, as `zstd -1` would, and its output size.
fn zstd1(pid: i32, addr: u64, len: u64) -> R<(f64, u64)> {
    struct Count(u64);
    impl Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut enc = zstd::stream::write::Encoder::new(Count(0), 1).map_err(|e| format!("zstd: {e}"))?;
    let mut secs = 0.0;
    run::read_memory(pid, addr, len, |piece| {
        let t = Instant::now();
        enc.write_all(piece).map_err(|e| format!("zstd: {e}"))?;
        secs += t.elapsed().as_secs_f64();
        Ok(())
    })?;
    let t = Instant::now();
    let out = enc.finish().map_err(|e| format!("zstd: {e}"))?;
    secs += t.elapsed().as_secs_f64();
    Ok((secs, out.0))
}

fn variant_key(level: Option<i32>) -> String {
    level.map_or("mixed".into(), |l| format!("mixed --compress={l}"))
}

/// Dumps of `hold size mixed`, uncompressed and at each level, with their restores,
/// interleaved with memcpy and zstd level 1 of the same bytes.
fn compress(c: &mut Ctx, size: u64, storage: &Path) -> S {
    let st = storage.display().to_string();
    let len = size << 20;
    // hold + snapshot + the uncompressed image (half of it: no zero pages), or hold + memcpy.
    room(storage, len * 5 / 2, 2 * len, len / 2)?;
    let dir = Scratch::new(storage, "compress")?;
    let img = dir.file("img");
    let _rm = Remove(&img);
    let (hold, addr) = start_hold(&c.o, size, Some("mixed"))?;
    let variants: Vec<Option<i32>> = std::iter::once(None).chain(c.o.levels.iter().map(|&l| Some(l))).collect();
    for rep in 0..c.o.reps {
        c.check()?;
        eprintln!("crest-bench: compressed dumps of {size} MiB on {st}, repetition {}", rep + 1);
        c.s.add("z: memcpy", size, &st, rep, sys::memcpy_fresh(&c.src, len as usize)?);
        let (secs, bytes) = zstd1(hold.pid(), addr, len)?;
        c.s.add("z: zstd -1", size, &st, rep, secs);
        c.fact("z: zstd -1 bytes", size, &st, bytes);
        for &level in &variants {
            c.check()?;
            let key = variant_key(level);
            let arg = level.map(|l| format!("--compress={l}"));
            let args: Vec<&str> = arg.iter().map(String::as_str).collect();
            let ck = run::checkpoint(&c.o.bin, hold.pid(), &img, &args, &[])?;
            c.s.add(&format!("z: dump {key}"), size, &st, rep, ck.wall);
            c.fact(&format!("z: image {key}"), size, &st, ck.image_bytes);
            let r = run::restart(&c.o.bin, &img)?;
            c.s.add(&format!("z: restore {key}"), size, &st, rep, r.wall);
            let _ = std::fs::remove_file(&img);
            r.verify()?;
        }
    }
    hold.verify()?;
    Ok(())
}

fn rows_compress(c: &mut Ctx, size: u64, st: &str) {
    let zbytes = c.get("z: zstd -1 bytes", size, st);
    let pct = |b: u64, of: u64| format!("{:.1}%", 100.0 * b as f64 / of as f64);
    let mut rows = vec![
        Row::of(&c.s, "z: memcpy", "memcpy into fresh pages, 1 core", size, st).rate(),
        Row::of(&c.s, "z: zstd -1", "zstd -1 of the memory, 1 core", size, st).rate().note(zbytes.map(|b| format!("{} = {} of the memory", mib(b), pct(b, size << 20))).unwrap_or_default()),
    ];
    let variants: Vec<Option<i32>> = std::iter::once(None).chain(c.o.levels.iter().map(|&l| Some(l))).collect();
    for level in variants {
        let key = variant_key(level);
        let image = c.get(&format!("z: image {key}"), size, st);
        let mut note = image.map(|b| format!("image {}", mib(b))).unwrap_or_default();
        let mut dump = Row::of(&c.s, &format!("z: dump {key}"), format!("dump {key}"), size, st).rate();
        if level.is_some() {
            dump = dump.vs(&c.s, "z: zstd -1", "zstd -1");
            if let (Some(i), Some(z)) = (image, zbytes) {
                let diff = i as f64 - z as f64;
                let word = if diff < 0.0 { "smaller" } else { "larger" };
                note = format!("{note}, {:.1} KiB {word} than zstd -1 ({:+.2}%)", diff.abs() / 1024.0, 100.0 * diff / z as f64);
            }
        } else {
            dump = dump.vs(&c.s, "z: memcpy", "memcpy");
        }
        rows.push(dump.note(note));
        rows.push(Row::of(&c.s, &format!("z: restore {key}"), format!("restore {key}"), size, st).rate().vs(&c.s, "z: memcpy", "memcpy"));
    }
    rows.into_iter().for_each(|r| c.push(r));
}

/// The longest gap `loop size` saw since its last report (SIGUSR1), in seconds.
fn gap(t: &Target) -> R<f64> {
    sys::kill(t.pid(), libc::SIGUSR1);
    let line = t.out.until(&["gap_us"], Duration::from_secs(60), "loop")?;
    line.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()).map(|us| us / 1e6).ok_or_else(|| format!("loop printed {line:?}"))
}

/// The downtime `loop size` sees: an idle window (the noise floor), a checkpoint with the
/// default --run (copy-on-write snapshot), and one with CREST_NO_SNAPSHOT=1.
fn downtime(c: &mut Ctx, size: u64, storage: &Path) -> S {
    let st = storage.display().to_string();
    let len = size << 20;
    // loop + snapshot + image.
    room(storage, 3 * len, 2 * len, len)?;
    let dir = Scratch::new(storage, "downtime")?;
    let img = dir.file("img");
    let _rm = Remove(&img);
    let lp = Target::start(&c.o.progs.join("loop"), &[size.to_string()])?;
    lp.out.until(&["ready"], run::LONG, "loop")?;
    std::thread::sleep(Duration::from_millis(100));
    gap(&lp)?;
    let mut window = Duration::from_secs(1);
    for rep in 0..c.o.reps {
        c.check()?;
        eprintln!("crest-bench: downtime of {size} MiB on {st}, repetition {}", rep + 1);
        std::thread::sleep(window);
        c.s.add("down: idle", size, &st, rep, gap(&lp)?);
        let modes = [("run", &[][..]), ("snap", &[("CREST_NO_PRECOPY", "1")][..]), ("nosnap", &[("CREST_NO_SNAPSHOT", "1")][..])];
        for (key, env) in modes {
            let ck = run::checkpoint(&c.o.bin, lp.pid(), &img, &[], env)?;
            c.s.add(&format!("down: gap {key}"), size, &st, rep, gap(&lp)?);
            c.s.add(&format!("down: frozen {key}"), size, &st, rep, ck.frozen);
            c.s.add(&format!("down: wall {key}"), size, &st, rep, ck.wall);
            let _ = std::fs::remove_file(&img);
            if key == "run" {
                window = Duration::from_secs_f64(ck.wall.max(0.2));
            }
        }
    }
    lp.verify()?;
    Ok(())
}

fn rows_downtime(c: &mut Ctx, size: u64, st: &str) {
    let s = &c.s;
    let wall = |k: &str| s.median(&format!("down: wall {k}"), size, st).map(|w| format!("cr_checkpoint took {w:.3} s")).unwrap_or_default();
    let rows = [
        Row::of(s, "down: idle", "longest gap, no checkpoint (noise)", size, st),
        Row::of(s, "down: gap run", "longest gap, cr_checkpoint (--run)", size, st).vs(s, "down: gap nosnap", "CREST_NO_SNAPSHOT=1").note("target < 0.050 s").note(wall("run")),
        Row::of(s, "down: frozen run", "  frozen, as cr_checkpoint reports", size, st),
        Row::of(s, "down: gap snap", "longest gap, CREST_NO_PRECOPY=1", size, st).note("copy-on-write snapshot").note(wall("snap")),
        Row::of(s, "down: frozen snap", "  frozen, as cr_checkpoint reports", size, st),
        Row::of(s, "down: gap nosnap", "longest gap, CREST_NO_SNAPSHOT=1", size, st).note(wall("nosnap")),
        Row::of(s, "down: frozen nosnap", "  frozen, as cr_checkpoint reports", size, st),
    ];
    rows.into_iter().for_each(|r| c.push(r));
}

/// Checkpoint and restart of a small program: `tick` is a line prefix a restored copy prints
/// when it runs (without one, its state in /proc tells).
fn fixed(c: &mut Ctx, label: &str, prog: &Path, args: &[String], tick: Option<&str>) -> S {
    let storage = c.o.storage[0].clone();
    let st = storage.display().to_string();
    let dir = Scratch::new(&storage, "fixed")?;
    let img = dir.file("img");
    let _rm = Remove(&img);
    let t = Target::start(prog, args)?;
    match tick {
        Some(p) => drop(t.out.until(&[p], Duration::from_secs(30), label)?),
        None => std::thread::sleep(Duration::from_millis(100)),
    }
    for rep in 0..c.o.reps {
        c.check()?;
        let r = run::run(&mut Command::new("/bin/true"), Duration::from_secs(30))?;
        c.s.add("fixed: true", 0, &st, rep, r.wall);
        let ck = run::checkpoint(&c.o.bin, t.pid(), &img, &[], &[])?;
        c.s.add(&format!("fixed: checkpoint {label}"), 0, &st, rep, ck.wall);
        c.s.add(&format!("fixed: frozen {label}"), 0, &st, rep, ck.frozen);
        let r = run::restart(&c.o.bin, &img)?;
        c.s.add(&format!("fixed: restart {label}"), 0, &st, rep, r.wall);
        c.s.add(&format!("fixed: restart inside {label}"), 0, &st, rep, r.inside);
        match tick {
            Some(p) => drop(r.expect(p)?),
            None if !r.running() => return Err(format!("the restored copy of {label} (PID {}) is not running", r.pid).into()),
            None => {}
        }
        drop(r);
        let _ = std::fs::remove_file(&img);
    }
    Ok(())
}

fn rows_fixed(c: &mut Ctx, labels: &[String]) {
    let st = c.o.storage[0].display().to_string();
    let s = &c.s;
    let ms = |key: &str| s.median(key, 0, &st).map(|m| format!("{:.2} ms", m * 1e3)).unwrap_or("?".into());
    let mut rows = vec![Row::of(s, "fixed: true", "spawn /bin/true, wall", 0, &st)];
    for l in labels {
        let (ck_target, rs_target) = if l.starts_with("sleep") { ("; target < 15 ms", "; target < 10 ms") } else { ("", "") };
        rows.push(
            Row::of(s, &format!("fixed: checkpoint {l}"), format!("checkpoint {l}, wall"), 0, &st)
                .vs(s, "fixed: true", "/bin/true")
                .note(format!("frozen {} (reported){ck_target}", ms(&format!("fixed: frozen {l}")))),
        );
        rows.push(
            Row::of(s, &format!("fixed: restart {l}"), format!("restart {l}, wall until it runs"), 0, &st)
                .vs(s, "fixed: true", "/bin/true")
                .note(format!("{} inside cr_restart{rs_target}", ms(&format!("fixed: restart inside {l}")))),
        );
    }
    rows.into_iter().for_each(|r| c.push(r));
}

/// The ways `restart` restarts one image: (key, row label, cr_restart options).
const RESTART_WAYS: [(&str, &str, &[&str]); 4] = [
    ("restart", "restart (pages copied), until it runs", &[]),
    ("restart mapped", "restart --map-pages, until it runs", &["--map-pages"]),
    ("restart mapped no-verify", "restart --map-pages --no-verify, until it runs", &["--map-pages", "--no-verify"]),
    // Its pages come in after it runs, on demand and in the background; the check of every
    // byte that follows waits for them.
    ("restart lazy", "restart --lazy, until it runs", &["--lazy"]),
];

/// Whether this `cr_restart` knows `option`.
fn knows(c: &Ctx, option: &str) -> bool {
    Command::new(c.o.bin.join("cr_restart")).arg("--help").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(option))
}

/// One image of `hold size` restarted again and again, each way of [`RESTART_WAYS`] that this
/// `cr_restart` knows in turn, interleaved with memcpy; every restored copy checks its bytes.
fn restart(c: &mut Ctx, size: u64, storage: &Path) -> S {
    let st = storage.display().to_string();
    let len = size << 20;
    // hold + image + a restored copy (whose pages, mapped from the image, may be copies); with
    // CRIU, the hold has been checked and has ended before CRIU's copy is started and dumped:
    // crest's image + CRIU's copy (then a restored copy) + CRIU's image.
    let criu = c.criu.path().map(Path::to_path_buf);
    room(storage, 3 * len, 2 * len, if criu.is_some() { 2 * len } else { len })?;
    let dir = Scratch::new(storage, "restart")?;
    let img = dir.file("img");
    let _rm = Remove(&img);
    let (hold, _) = start_hold(&c.o, size, None)?;
    run::checkpoint(&c.o.bin, hold.pid(), &img, &[], &[])?;
    hold.verify()?;
    let criu = match criu {
        Some(p) => Some(criu_hold(c, &p, size, &dir, &st)?),
        None => None,
    };
    let ways: Vec<_> = RESTART_WAYS.iter().filter(|w| w.2.iter().all(|o| knows(c, o))).collect();
    for rep in 0..c.o.reps {
        for (key, _, args) in &ways {
            c.check()?;
            eprintln!("crest-bench: {key} of {size} MiB on {st}, repetition {}", rep + 1);
            c.s.add(&format!("{key} memcpy"), size, &st, rep, sys::memcpy_fresh(&c.src, len as usize)?);
            let r = run::restart_with(&c.o.bin, &img, args)?;
            c.s.add(key, size, &st, rep, r.wall);
            c.s.add(&format!("{key} inside"), size, &st, rep, r.inside);
            r.verify()?;
        }
        if let Some((path, imgs, out)) = &criu {
            c.check()?;
            eprintln!("crest-bench: criu restore of {size} MiB on {st}, repetition {}", rep + 1);
            let from = criu::lines(out);
            let (wall, root) = criu::restore(path, imgs, &[], &format!("hold {size}"))?;
            c.s.add("restart criu", size, &st, rep, wall);
            let pid = root.0;
            sys::kill(pid, libc::SIGUSR2);
            let (verdict, _) = criu::wait_file(out, from, &["PASS", "FAIL"], 1, run::LONG)?;
            let exited_0 = root.wait_exit(run::LONG)?;
            if !verdict.starts_with("PASS") || !exited_0 {
                return Err(format!("the copy of hold {size} restored by CRIU (PID {pid}) failed its check: {verdict}").into());
            }
        }
    }
    Ok(())
}

/// Starts `hold size` writing into a file, waits until its memory is filled and has CRIU dump
/// it (and kill it): the CRIU binary, the image directory and the output file.
fn criu_hold(c: &mut Ctx, path: &Path, size: u64, dir: &Scratch, st: &str) -> R<(PathBuf, PathBuf, PathBuf)> {
    let (imgs, out) = (dir.file("criu"), dir.file("criu.out"));
    let _ = std::fs::remove_file(&out);
    let mut child = criu::spawn_to_file(Command::new(c.o.progs.join("hold")).arg(size.to_string()), &out, &format!("hold {size} for CRIU"))?;
    let pid = child.id() as i32;
    let dumped = criu::wait_file(&out, 0, &["ready"], 1, run::LONG).and_then(|_| criu::dump(path, pid, &imgs, &[], &format!("hold {size}")));
    // CRIU killed it (or it failed): reap it, so that its PID is free for the restores.
    let _ = child.kill();
    let _ = child.wait();
    let wall = dumped?;
    c.s.add("restart criu dump", size, st, 0, wall);
    c.fact("restart criu image", size, st, criu::image_bytes(&imgs));
    Ok((path.to_path_buf(), imgs, out))
}

fn rows_restart(c: &mut Ctx, size: u64, st: &str) {
    let s = &c.s;
    let mut rows = Vec::new();
    for (key, label, _) in RESTART_WAYS {
        let inside = s.median(&format!("{key} inside"), size, st).map(|m| format!("{m:.3} s inside cr_restart")).unwrap_or_default();
        let goal = match key {
            "restart" => "; target < 0.3 s",
            "restart lazy" => "; target < 20 ms",
            _ => "",
        };
        rows.push(Row::of(s, &format!("{key} memcpy"), "memcpy into fresh pages, 1 core", size, st).rate());
        rows.push(Row::of(s, key, label, size, st).rate().vs(s, &format!("{key} memcpy"), "memcpy").vs(s, "restart criu", "criu restore").note(format!("{inside}{goal}")));
    }
    let image = c.get("restart criu image", size, st).map(|b| format!("images {}", mib(b))).unwrap_or_default();
    let dump = s.median("restart criu dump", size, st).map(|d| format!("criu dump (once) {d:.3} s")).unwrap_or_default();
    rows.push(Row::of(s, "restart criu", "criu restore -d, until criu returns", size, st).rate().note(image).note(dump));
    rows.into_iter().for_each(|r| c.push(r));
}

/// A ring of 8 processes (`tests/c/ring.c`) restarted from one image again and again,
/// interleaved with the restart of `sleep 1000`; every restored ring checks itself.
fn ring(c: &mut Ctx) -> S {
    let storage = c.o.storage[0].clone();
    let st = storage.display().to_string();
    let dir = Scratch::new(&storage, "ring")?;
    let (img, one) = (dir.file("ring"), dir.file("sleep"));
    let (_rm, _rm1) = (Remove(&img), Remove(&one));
    let ring = Target::start(&c.o.progs.join("ring"), &[])?;
    // Two ticks: the ring has gone round 128 times, as many as its check at the end wants.
    for _ in 0..2 {
        drop(ring.out.until(&["tick"], Duration::from_secs(30), "ring")?);
    }
    let sleep = Target::start(Path::new("/bin/sleep"), &["1000".into()])?;
    std::thread::sleep(Duration::from_millis(100));
    run::checkpoint(&c.o.bin, ring.pid(), &img, &[], &[])?;
    run::checkpoint(&c.o.bin, sleep.pid(), &one, &[], &[])?;
    for rep in 0..c.o.reps {
        c.check()?;
        eprintln!("crest-bench: ring of 8, repetition {}", rep + 1);
        let r = run::restart(&c.o.bin, &one)?;
        c.s.add("ring: sleep", 0, &st, rep, r.wall);
        if !r.running() {
            return Err(format!("the restored copy of sleep (PID {}) is not running", r.pid).into());
        }
        drop(r);
        let r = run::restart(&c.o.bin, &img)?;
        c.s.add("ring: restart", 0, &st, rep, r.wall);
        c.s.add("ring: restart inside", 0, &st, rep, r.inside);
        r.verify()?;
    }
    Ok(())
}

fn rows_ring(c: &mut Ctx) {
    let st = c.o.storage[0].display().to_string();
    let s = &c.s;
    let inside = s.median("ring: restart inside", 0, &st).map(|m| format!("{:.2} ms inside cr_restart", m * 1e3)).unwrap_or_default();
    let rows = [
        Row::of(s, "ring: sleep", "restart sleep 1000, wall until it runs", 0, &st),
        Row::of(s, "ring: restart", "restart ring of 8, wall until it runs", 0, &st).vs(s, "ring: sleep", "1 sleep").note(inside),
    ];
    rows.into_iter().for_each(|r| c.push(r));
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn header(o: &Opts, load_before: &str) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = mem.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "crest-bench: Linux {}, {cpus} CPUs, {:.1} GiB; load average {load_before} before, {} after; {} repetitions\n\
         ratio = baseline median / crest median (above 1: crest is faster)",
        kernel.trim(),
        total as f64 / 1048576.0,
        loadavg(),
        o.reps
    );
}

fn main() {
    let o = parse_args();
    let load_before = loadavg();
    sys::catch_stop();
    sys::become_subreaper();
    let want = |s: &str| o.only.iter().any(|x| x == s);
    let src = if want("dump") || want("compress") || want("restart") { sys::random_bytes(MEMCPY_SRC) } else { Vec::new() };
    let (dump_on, sparse_on, compress_on, down_on, fixed_on, want_restart) = (want("dump"), want("sparse"), want("compress"), want("downtime"), want("fixed"), want("restart"));
    let procs_on = want("processes");
    let want_threads = want("threads");
    let incr_on = want("incremental");
    let servers_on = want("servers");
    let criu = criu::Criu::probe(o.criu.as_deref());
    if let criu::Criu::NotRunnable(why) = &criu {
        eprintln!("crest-bench: CRIU not runnable, no side-by-side: {why}");
    }
    let criu_on = want_restart || want_threads || procs_on || servers_on;
    let mut c = Ctx { o, s: Samples::default(), facts: HashMap::new(), rows: Vec::new(), failures: Vec::new(), src, criu };
    let sizes = c.o.sizes.clone();
    let storages = c.o.storage.clone();
    let first = storages[0].clone();
    let first_st = first.display().to_string();
    if criu_on {
        let row = c.criu.row(&first_st);
        c.rows.push(row);
    }
    if dump_on {
        for &size in &sizes {
            for storage in &storages {
                let st = storage.display().to_string();
                let r = if sys::stopped() { Ok(()) } else { dump_restore(&mut c, size, storage) };
                rows_dump_restore(&mut c, size, &st);
                c.outcome("dump/restore", size, &st, r);
            }
        }
    }
    if sparse_on && !sys::stopped() {
        let size = *sizes.iter().max().expect("sizes");
        let r = sparse(&mut c, size, &first);
        rows_sparse(&mut c, size, &first_st);
        c.outcome("sparse", size, &first_st, r);
    }
    if compress_on {
        for &size in &sizes {
            if !sys::stopped() {
                let r = compress(&mut c, size, &first);
                rows_compress(&mut c, size, &first_st);
                c.outcome("compress", size, &first_st, r);
            }
        }
    }
    if down_on {
        for &size in &sizes {
            if !sys::stopped() {
                let r = downtime(&mut c, size, &first);
                rows_downtime(&mut c, size, &first_st);
                c.outcome("downtime", size, &first_st, r);
            }
        }
    }
    if fixed_on && !sys::stopped() {
        eprintln!("crest-bench: fixed costs");
        let mut labels = vec!["sleep 1000".to_string()];
        let r = fixed(&mut c, "sleep 1000", Path::new("/bin/sleep"), &["1000".into()], None);
        c.outcome("fixed costs: sleep", 0, &first_st, r);
        for n in c.o.threads.clone() {
            if sys::stopped() {
                break;
            }
            let label = format!("{n} threads");
            let prog = c.o.progs.join("threads");
            let r = fixed(&mut c, &label, &prog, &["100000".into(), n.to_string()], Some("tick"));
            c.outcome(&format!("fixed costs: {label}"), 0, &first_st, r);
            labels.push(label);
        }
        rows_fixed(&mut c, &labels);
    }
    if want_restart && !sys::stopped() {
        let size = *sizes.iter().max().expect("sizes");
        let r = restart(&mut c, size, &first);
        rows_restart(&mut c, size, &first_st);
        c.outcome("restart", size, &first_st, r);
        let r = ring(&mut c);
        rows_ring(&mut c);
        c.outcome("ring of 8", 0, &first_st, r);
    }
    if want_threads && !sys::stopped() {
        for n in c.o.threads.clone() {
            if sys::stopped() {
                break;
            }
            let r = threads::threads(&mut c, n);
            threads::rows(&mut c, n);
            c.outcome(&format!("threads, {n}"), 0, &first_st, r);
        }
    }
    if procs_on && !sys::stopped() {
        // The fork+exit baseline forks this process: without the memcpy source (no longer
        // needed) its page tables are as small as a ring member's.
        c.src = Vec::new();
        let ks = c.o.procs.clone();
        for &k in &ks {
            if sys::stopped() {
                break;
            }
            let r = procs::processes(&mut c, k);
            procs::rows(&mut c, k, ks[0]);
            c.outcome(&format!("processes, ring of {k}"), 0, &first_st, r);
        }
    }
    if incr_on && !sys::stopped() {
        let size = *sizes.iter().max().expect("sizes");
        let r = incr::incremental(&mut c, size, &first);
        incr::rows(&mut c, size, &first_st);
        c.outcome("incremental", size, &first_st, r);
    }
    if servers_on && !sys::stopped() {
        servers::servers(&mut c);
    }
    let orphans = sys::reap_orphans();
    if orphans > 0 {
        eprintln!("crest-bench: reaped {orphans} orphaned processes");
    }
    let csv = c.o.progs.join("raw.csv");
    if let Err(e) = c.s.write_csv(&csv) {
        eprintln!("crest-bench: {}: {e}", csv.display());
    }
    let sizes_csv = c.o.progs.join("sizes.csv");
    let mut facts: Vec<(&String, &u64)> = c.facts.iter().collect();
    facts.sort();
    let text: String = std::iter::once("what|size_mib|storage,value\n".to_string()).chain(facts.iter().map(|(k, v)| format!("\"{k}\",{v}\n"))).collect();
    if let Err(e) = std::fs::write(&sizes_csv, text) {
        eprintln!("crest-bench: {}: {e}", sizes_csv.display());
    }
    println!();
    header(&c.o, &load_before);
    table::print(&c.rows);
    println!("raw samples: {}; image sizes (bytes): {}", csv.display(), sizes_csv.display());
    if sys::stopped() {
        eprintln!("crest-bench: interrupted");
        std::process::exit(130);
    }
    if !c.failures.is_empty() {
        eprintln!("crest-bench: {} failures:", c.failures.len());
        for f in &c.failures {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
}
