//! A thread pool (std only): workers take jobs from a shared queue, each computes a checksum
//! of its own data and sends it back; the main thread checks every result and prints a tick.
//! Prints PASS after 25 ticks if every result was right, FAIL otherwise.
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

fn main() {
    let (job_tx, job_rx) = mpsc::channel::<u64>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (res_tx, res_rx) = mpsc::channel::<(u64, u64)>();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let rx = Arc::clone(&job_rx);
            let tx = res_tx.clone();
            thread::spawn(move || {
                let data: Vec<u64> = (0..1 << 16).map(|i| i * (w + 1)).collect();
                loop {
                    let job = match rx.lock().expect("lock").recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    };
                    let sum = data.iter().map(|x| x / (w + 1) ^ job).fold(0u64, |a, b| a.wrapping_add(b));
                    tx.send((job, sum)).expect("send");
                    thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    let expect = |job: u64| (0..1u64 << 16).map(|i| i ^ job).fold(0u64, |a, b| a.wrapping_add(b));
    let mut ok = true;
    for tick in 0..25 {
        for j in 0..8 {
            job_tx.send(tick * 8 + j).expect("send job");
        }
        for _ in 0..8 {
            let (job, sum) = res_rx.recv().expect("result");
            ok &= sum == expect(job);
        }
        println!("tick {tick} ok {ok}");
        thread::sleep(Duration::from_millis(100));
    }
    drop(job_tx);
    for w in workers {
        w.join().expect("join");
    }
    println!("{}", if ok { "PASS" } else { "FAIL" });
    std::process::exit(if ok { 0 } else { 1 });
}
