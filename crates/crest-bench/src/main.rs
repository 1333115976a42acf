//! crest's benchmark. Dumps and restores a process holding N MiB of random data on each
//! storage, interleaved with two baselines measured in the same run on the same bytes:
//! `memcpy` into freshly mapped anonymous memory on one core (the memory-bus limit, first touch
//! included) and `cp` of a file of the same size on the same filesystem. Also the downtime the
//! target sees, checkpoint and restart time by thread count, and the fixed cost on `sleep`.
//! Prints one table (median and minimum of the repetitions) and writes every sample to
//! `target/bench/raw.csv`. Each restored copy must pass its own check of every byte.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Opts {
    bin: PathBuf,
    progs: PathBuf,
    sizes: Vec<u64>,
    storage: Vec<PathBuf>,
    reps: usize,
    threads: Vec<u32>,
}

#[derive(Clone)]
struct Sample {
    op: String,
    size_mib: u64,
    storage: String,
    secs: f64,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        bin: PathBuf::from("target/release"),
        progs: PathBuf::from("target/bench"),
        sizes: vec![1024],
        storage: vec![PathBuf::from("/dev/shm"), PathBuf::from("/var/tmp")],
        reps: 3,
        threads: vec![1, 16, 64],
    };
    let mut a = std::env::args().skip(1);
    while let Some(k) = a.next() {
        let v = a.next().unwrap_or_else(|| die(&format!("{k} needs a value")));
        match k.as_str() {
            "--bin" => o.bin = v.into(),
            "--progs" => o.progs = v.into(),
            "--sizes" => o.sizes = v.split(',').map(|s| s.parse().unwrap_or_else(|_| die("bad --sizes"))).collect(),
            "--storage" => o.storage = v.split(',').map(PathBuf::from).collect(),
            "--reps" => o.reps = v.parse().unwrap_or_else(|_| die("bad --reps")),
            "--threads" => o.threads = v.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap_or_else(|_| die("bad --threads"))).collect(),
            _ => die(&format!("unknown option {k}")),
        }
    }
    o
}

fn die(msg: &str) -> ! {
    eprintln!("crest-bench: {msg}");
    std::process::exit(2)
}

/// A child killed (by PID) when dropped.
struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a PID this benchmark started.
    unsafe { libc::kill(pid, sig) };
}

fn wait_line(path: &Path, what: &str) {
    let t = Instant::now();
    while !std::fs::read_to_string(path).unwrap_or_default().contains(what) {
        if t.elapsed() > Duration::from_secs(120) {
            die(&format!("timed out waiting for {what:?} in {}", path.display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Seconds to memcpy `src` into freshly mapped anonymous memory (first touch included).
fn memcpy_fresh(src: &[u8]) -> f64 {
    let len = src.len();
    // SAFETY: anonymous private mapping of len bytes; checked for failure below.
    let dst = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if dst == libc::MAP_FAILED {
        die("mmap failed");
    }
    let t = Instant::now();
    // SAFETY: dst is a fresh mapping of len bytes, disjoint from src, which has len bytes.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.cast::<u8>(), len) };
    let secs = t.elapsed().as_secs_f64();
    // SAFETY: unmapping exactly the mapping created above.
    unsafe { libc::munmap(dst, len) };
    secs
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The `key=value` fields of a `crest-timing:` line.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Runs cr_checkpoint; returns (wall seconds, frozen ms).
fn checkpoint(o: &Opts, pid: i32, img: &Path) -> (f64, f64) {
    let _ = std::fs::remove_file(img);
    let t = Instant::now();
    let out = Command::new(o.bin.join("cr_checkpoint")).env("CREST_TIMING", "1").args(["--nosync", "-f"]).arg(img).arg(pid.to_string()).output().expect("cr_checkpoint");
    let wall = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        die(&format!("cr_checkpoint {pid} failed: {err}"));
    }
    let frozen = err.lines().find(|l| l.starts_with("crest-timing: checkpoint")).and_then(|l| field(l, "frozen_ms")).unwrap_or(f64::NAN);
    (wall, frozen)
}

/// Starts cr_restart --no-restore-pid; returns (its child, restored pid, restore seconds
/// reported, wall seconds until it reported).
fn restart(o: &Opts, img: &Path) -> (Guard, i32, f64, f64) {
    let t = Instant::now();
    let mut c = Command::new(o.bin.join("cr_restart"))
        .env("CREST_TIMING", "1")
        .arg("--no-restore-pid")
        .arg(img)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cr_restart");
    let err = c.stderr.take().expect("piped");
    let g = Guard(c);
    let mut lines = BufReader::new(err).lines();
    loop {
        let Some(Ok(l)) = lines.next() else { die("cr_restart ended without restoring") };
        if l.starts_with("crest-timing: restart") {
            let wall = t.elapsed().as_secs_f64();
            let pid = field(&l, "pid").unwrap_or(0.0) as i32;
            return (g, pid, field(&l, "running_after_ms").unwrap_or(f64::NAN) / 1e3, wall);
        }
        eprintln!("cr_restart: {l}");
    }
}

fn main() {
    let o = parse_args();
    let mut samples: Vec<Sample> = Vec::new();
    let mut failures = 0;
    let mut push = |op: &str, size: u64, st: &str, secs: f64| samples.push(Sample { op: op.into(), size_mib: size, storage: st.into(), secs });
    for &size in &o.sizes {
        let len = (size as usize) << 20;
        let src = random_bytes(len);
        for storage in &o.storage {
            let st = storage.display().to_string();
            let dir = storage.join(format!("crest-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| die(&format!("{}: {e}", dir.display())));
            std::fs::write(dir.join("src"), &src).unwrap_or_else(|e| die(&format!("writing the cp source: {e}")));
            let out = dir.join("hold.out");
            let hold = Guard(Command::new(o.progs.join("hold")).arg(size.to_string()).stdout(std::fs::File::create(&out).expect("hold.out")).spawn().expect("hold"));
            wait_line(&out, "ready");
            let pid = hold.0.id() as i32;
            let img = dir.join("img");
            eprintln!("crest-bench: {size} MiB on {st}, {} repetitions", o.reps);
            for _ in 0..o.reps {
                push("memcpy", size, &st, memcpy_fresh(&src));
                let _ = std::fs::remove_file(dir.join("dst"));
                let t = Instant::now();
                let ok = Command::new("cp").arg(dir.join("src")).arg(dir.join("dst")).status().is_ok_and(|s| s.success());
                push("cp", size, &st, t.elapsed().as_secs_f64());
                if !ok {
                    die("cp failed");
                }
                let _ = std::fs::remove_file(dir.join("dst"));
                let (wall, frozen) = checkpoint(&o, pid, &img);
                push("dump", size, &st, wall);
                push("dump: target frozen", size, &st, frozen / 1e3);
                let (mut g, rpid, secs, wall) = restart(&o, &img);
                push("restore", size, &st, secs);
                push("restore (command wall time)", size, &st, wall);
                kill(rpid, libc::SIGUSR2);
                let status = g.0.wait().expect("wait cr_restart");
                if !status.success() {
                    failures += 1;
                    eprintln!("crest-bench: FAILED: the restored copy of {size} MiB on {st} did not pass its check ({status:?})");
                }
            }
            drop(hold);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let shm = o.storage.first().cloned().unwrap_or_else(|| PathBuf::from("/dev/shm"));
    let dir = shm.join(format!("crest-bench-t-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut small = |op: &str, prog: &Path, args: &[String], ready: Option<&str>| {
        let out = dir.join("small.out");
        let g = Guard(Command::new(prog).args(args).stdin(Stdio::null()).stdout(std::fs::File::create(&out).expect("out")).spawn().expect("program"));
        if let Some(r) = ready {
            wait_line(&out, r);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        let img = dir.join("img");
        for _ in 0..o.reps {
            let (wall, frozen) = checkpoint(&o, g.0.id() as i32, &img);
            push(&format!("checkpoint {op}"), 0, &shm.display().to_string(), wall);
            push(&format!("checkpoint {op}: target frozen"), 0, &shm.display().to_string(), frozen / 1e3);
            let (rg, rpid, secs, _) = restart(&o, &img);
            push(&format!("restart {op}"), 0, &shm.display().to_string(), secs);
            kill(rpid, libc::SIGKILL);
            drop(rg);
        }
    };
    small("sleep 1000", Path::new("/bin/sleep"), &["1000".into()], None);
    for &n in &o.threads {
        small(&format!("{n} threads"), &o.progs.join("threads"), &["100000".into(), n.to_string()], Some("tick 2 "));
    }
    let _ = std::fs::remove_dir_all(&dir);
    report(&samples, &o);
    if failures > 0 {
        die(&format!("{failures} restored copies failed their check"));
    }
}

fn stats(v: &[f64]) -> (f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[s.len() / 2], s[0])
}

fn report(samples: &[Sample], o: &Opts) {
    let csv = Path::new("target/bench/raw.csv");
    if let Ok(mut f) = std::fs::File::create(csv) {
        let _ = writeln!(f, "op,size_mib,storage,seconds");
        for s in samples {
            let _ = writeln!(f, "{},{},{},{:.6}", s.op, s.size_mib, s.storage, s.secs);
        }
    }
    let get = |op: &str, size: u64, st: &str| -> Vec<f64> { samples.iter().filter(|s| s.op == op && s.size_mib == size && s.storage == st).map(|s| s.secs).collect() };
    println!("\n{:<30} {:>6} {:<10} {:>9} {:>9} {:>7}  {:<8} {:>9} {:>6}", "operation", "MiB", "storage", "median s", "min s", "GB/s", "baseline", "base med", "ratio");
    for &size in &o.sizes {
        for st in o.storage.iter().map(|p| p.display().to_string()) {
            for op in ["dump", "restore"] {
                let (med, min) = stats(&get(op, size, &st));
                for base in ["memcpy", "cp"] {
                    let (bmed, _) = stats(&get(base, size, &st));
                    let gbs = (size as f64 * 1048576.0) / med / 1e9;
                    println!("{op:<30} {size:>6} {st:<10} {med:>9.3} {min:>9.3} {gbs:>7.2}  {base:<8} {bmed:>9.3} {:>6.2}", bmed / med);
                }
            }
            for op in ["dump: target frozen", "restore (command wall time)"] {
                let (med, min) = stats(&get(op, size, &st));
                println!("{op:<30} {size:>6} {st:<10} {med:>9.3} {min:>9.3}");
            }
        }
    }
    println!("\n{:<42} {:>10} {:>10}", "fixed costs (ms)", "median", "min");
    let mut ops: Vec<&str> = Vec::new();
    for s in samples.iter().filter(|s| s.size_mib == 0) {
        if !ops.contains(&s.op.as_str()) {
            ops.push(&s.op);
        }
    }
    for op in ops {
        let v: Vec<f64> = samples.iter().filter(|s| s.size_mib == 0 && s.op == op).map(|s| s.secs * 1e3).collect();
        let (med, min) = stats(&v);
        println!("{op:<42} {med:>10.2} {min:>10.2}");
    }
    println!("\nratio = baseline time / crest time (above 1: crest is faster). Raw samples: {}", csv.display());
}
