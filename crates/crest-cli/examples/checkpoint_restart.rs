//! Checkpoint and restart a process through the library, as a program of one's own would:
//! start a child that counts, checkpoint it with [`crest_dump::checkpoint`] (killing it once
//! the image is whole), restart it from the image with [`crest_restore::restart`], and check
//! that it went on counting where it was, with no number missing or repeated.
//!
//! ```text
//! cargo run --release --example checkpoint_restart
//! ```
//!
//! It needs what `cr_checkpoint` needs: ptrace allowed on one's own children (see `cr_check`).
//! The restored child gets a new PID (`restore_pid: false`), which needs no privilege.
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crest_dump::{After, Destination, Policy};
use crest_ptrace::sys::{self, ChildEnd};

/// Set in the child's environment: count to this number.
const COUNT_TO: &str = "CREST_EXAMPLE_COUNT_TO";

fn main() {
    if let Some(limit) = std::env::var(COUNT_TO).ok().and_then(|v| v.parse().ok()) {
        count(limit);
        return;
    }
    // The child gets only standard input, output and error: a descriptor leading outside the
    // checkpoint anywhere else would be refused.
    for e in std::fs::read_dir("/proc/self/fd").into_iter().flatten().flatten() {
        if let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()).filter(|&fd| fd > 2) {
            let _ = sys::set_cloexec(fd, true);
        }
    }
    let dir = std::env::temp_dir().join(format!("crest-example-{}", std::process::id()));
    let result = std::fs::create_dir_all(&dir).map_err(Into::into).and_then(|()| {
        let mut child = Command::new(std::env::current_exe()?);
        child.env(COUNT_TO, "40");
        round_trip(child, &dir, 40)
    });
    let _ = std::fs::remove_dir_all(&dir);
    match result {
        Ok(saved_at) => println!("checkpointed at count {saved_at}, killed, restarted: the child counted on to 40"),
        Err(e) => {
            eprintln!("checkpoint_restart: {e}");
            std::process::exit(1)
        }
    }
}

/// The child: counts to `limit` on standard output, a line every 50 ms.
fn count(limit: u64) {
    for n in 1..=limit {
        println!("count {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The numbers counted so far in `out`: every line that holds `count N`.
fn counts(out: &Path) -> Vec<u64> {
    let Ok(f) = std::fs::File::open(out) else { return Vec::new() };
    std::io::BufReader::new(f).lines().map_while(Result::ok).filter_map(|l| l.split("count ").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())).collect()
}

/// Starts `child` (which prints `count 1` to `count LIMIT` on its standard output), waits until
/// it has counted to 5, checkpoints it into `dir` and kills it, restarts it, and checks that it
/// ends with 0 having printed every number once. Returns the count it was checkpointed at.
pub fn round_trip(mut child: Command, dir: &Path, limit: u64) -> Result<u64, Box<dyn std::error::Error>> {
    let out = dir.join("out");
    let image = dir.join("context");
    let mut child = child.stdin(Stdio::null()).stdout(std::fs::File::create(&out)?).stderr(Stdio::null()).spawn()?;
    let pid = child.id() as i32;
    let started = Instant::now();
    while counts(&out).len() < 5 {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the child did not start counting".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Checkpoint the child (and whatever it started) into `image`, then kill it.
    let mut req = crest_dump::Request::new(pid);
    req.destination = Destination::Path { path: image.clone(), policy: Policy::Atomic };
    req.after = After::Kill;
    let done = crest_dump::checkpoint(&req);
    if done.is_err() {
        let _ = child.kill();
    }
    // Reaped either way: killed just now, or killed by the checkpoint (whose tracer, this
    // process, may have reaped it already: then there is nothing left to wait for).
    let _ = child.wait();
    let done = done?;
    let saved_at = counts(&out).last().copied().unwrap_or(0);
    println!("checkpointed PID {pid} ({} processes) into {}", done.pids.len(), done.shown);

    // Restart it from the image: the restored process is a child of this one.
    let mut req = crest_restore::Request::new(crest_restore::Source::Path(image));
    req.restore_pid = false;
    let restored = crest_restore::restart(&req)?;
    println!("restarted as PID {}", restored.pid);
    match sys::wait_child(restored.pid)? {
        ChildEnd::Exited(0) => {}
        end => return Err(format!("the restored child ended with {end:?}").into()),
    }
    let seen = counts(&out);
    if seen != (1..=limit).collect::<Vec<_>>() {
        return Err(format!("the child did not go on where it was: it printed {seen:?}").into());
    }
    Ok(saved_at)
}
