//! Husks made by a caller with threads: the creator forks through a single-threaded
//! intermediate, and the husk is still the caller's child, prepared and waiting; the creators
//! that run only inside a husk refuse such a caller.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crest_ptrace::husk;

/// Kills and reaps the husks made, however the test ends.
struct Husks(Vec<i32>);

impl Drop for Husks {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: pid is a child of this process, not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat.rsplit_once(')').expect("comm").1.split_whitespace().nth(1).expect("ppid").parse().expect("a number")
}

#[test]
fn a_caller_with_threads_gets_husks_that_are_its_children() {
    // Another thread allocates all along, as a program's threads would while it restarts.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let v: Vec<String> = (0..64).map(|i| format!("{i}-{n}")).collect();
                n = n.wrapping_add(v.len());
            }
            n
        })
    };
    assert!(husk::threads_here() > 1, "the test runs with threads");
    let mut husks = Husks(Vec::new());
    for round in 0..20 {
        let (rd, wr) = husk::status_pipe().expect("pipe");
        let child = husk::create(None, std::os::fd::AsRawFd::as_raw_fd(&wr), |fd| {
            // The husk allocates and formats, as a restore's preparation does.
            let words: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
            if words.len() == 1000 {
                Ok(fd)
            } else {
                Err((fd, format!("round {round}")))
            }
        })
        .expect("a husk is made");
        drop(wr);
        husks.0.push(child);
        let ready = husk::await_ready(rd, child).expect("the husk reports ready");
        assert_eq!(ready, child, "the husk reports its own PID");
        assert_eq!(parent_of(child), std::process::id() as i32, "the husk is the caller's child, not the intermediate's");
    }
    stop.store(true, Ordering::Relaxed);
    busy.join().expect("the busy thread");
    // Every husk is waited for by the caller itself.
    for pid in std::mem::take(&mut husks.0) {
        // SAFETY: pid is a child of this process, not reaped yet.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: status is a live out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid, "the caller reaps husk {pid}");
    }
}

#[test]
fn creators_that_run_in_a_husk_refuse_a_caller_with_threads() {
    let e = husk::create_zombie(None, 0, || {}).expect_err("refused with threads");
    assert!(matches!(e, husk::SpawnError::Threaded(n) if n > 1), "{e}");
    assert!(e.to_string().contains("single-threaded"), "{e}");
    let e = husk::create_standin(None).expect_err("refused with threads");
    assert!(matches!(e, husk::SpawnError::Threaded(_)), "{e}");
}
