//! `cr_coord [--restart]`: one checkpoint or restart of a job whose processes run on several hosts, taken
//! at one instant. It runs `cr_checkpoint --coordinated` or `cr_restart --coordinated` for
//! each part on its host through a transport (`--via`: ssh, srun, nsenter), and steps the parts
//! together with the words of [`crest_cli::coordinate`]: every part frozen before any is
//! saved, every image whole before any is named, every part restored before any runs. A part
//! that fails or goes away calls every other part off. What each part prints on stderr is
//! passed on, prefixed with its host.
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use crest_cli::coordinate::{remote_command, Part, ABORT, GO};
use crest_cli::{chosen_signal, exits, Say};

/// A part's command, running.
struct Running {
    part: Part,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Passes the part's standard error on; joined before cr_coord exits.
    errors: Option<std::thread::JoinHandle<()>>,
}

/// What the reading threads hand over: a part's next line, or `None` at the end of its output.
type Heard = (usize, Option<String>);

fn main() {
    let m = crest_cli::parse_args(crest_cli::commands::coord());
    let sub = &m;
    let say = Say { quiet: sub.get_flag("quiet") };
    let checkpoint = !sub.get_flag("restart");
    let parts: Vec<Part> = match sub.get_many::<String>("part").expect("required").map(|p| Part::parse(p, checkpoint)).collect() {
        Ok(p) => p,
        Err(e) => {
            say.err(format!("cr_coord: {e}"));
            std::process::exit(exits::USAGE)
        }
    };
    let via = sub.get_one::<String>("via").map_or("ssh {host}", |s| s.as_str()).to_string();
    let program = |name: &str| sub.get_one::<String>("bin-dir").map_or(name.to_string(), |d| format!("{}/{name}", d.trim_end_matches('/')));
    let extra: Vec<String> = sub.get_many::<String>("option").map(|v| v.cloned().collect()).unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Heard>();
    let mut running = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let (prog, mut args) = if checkpoint {
            (program("cr_checkpoint"), vec!["--coordinated".to_string(), "--tree".into(), "-f".into(), part.image.clone()])
        } else {
            (program("cr_restart"), vec!["--coordinated".to_string()])
        };
        // The after-action: sent to every checkpointed (or restored) process, as each command does.
        let signal = chosen_signal(sub);
        if signal != 0 {
            args.extend(["--signal".into(), signal.to_string()]);
        }
        args.extend(extra.iter().cloned());
        if checkpoint {
            args.push(part.pid.expect("parsed with a PID").to_string());
        } else {
            args.extend(["-f".into(), part.image.clone()]);
        }
        let words = remote_command(&via, &part.host, &prog, &args);
        let started = Command::new(&words[0]).args(&words[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
        let mut child = match started {
            Ok(c) => c,
            Err(e) => {
                say.err(format!("cr_coord: cannot run {} for {}: {e}", words.join(" "), part.host));
                call_off(&mut running);
                std::process::exit(e.raw_os_error().unwrap_or(1) & 0xff)
            }
        };
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send((i, Some(l))).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send((i, None));
        });
        let host = part.host.clone();
        let errors = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[{host}] {line}");
            }
        });
        running.push(Running { part: part.clone(), stdin: child.stdin.take(), child, errors: Some(errors) });
    }
    drop(tx);
    let code = if checkpoint { run_checkpoint(&mut running, &rx, &say) } else { run_restart(&mut running, &rx, &say) };
    for r in &mut running {
        if let Some(t) = r.errors.take() {
            let _ = t.join();
        }
    }
    std::process::exit(code)
}

/// Waits until every part has said `word` (a line starting with it); returns the rest of each
/// part's line. A part that says anything else or ends first is named in the `Err`.
fn every_part(running: &[Running], rx: &mpsc::Receiver<Heard>, word: &str) -> Result<Vec<String>, usize> {
    let mut said: Vec<Option<String>> = vec![None; running.len()];
    while said.iter().any(Option::is_none) {
        match rx.recv() {
            Ok((i, Some(line))) => match line.strip_prefix(word) {
                Some(rest) if said[i].is_none() => said[i] = Some(rest.trim().to_string()),
                _ => {
                    eprintln!("[{}] said {line:?} where {word:?} was awaited", running[i].part.host);
                    return Err(i);
                }
            },
            // A part that said its last word may end before the others have said theirs.
            Ok((i, None)) if said[i].is_some() => {}
            Ok((i, None)) => return Err(i),
            Err(_) => return Err(0),
        }
    }
    Ok(said.into_iter().map(|s| s.unwrap_or_default()).collect())
}

/// Says `word` to every part still listening.
fn tell_all(running: &mut [Running], word: &str) {
    for r in running.iter_mut() {
        if let Some(w) = r.stdin.as_mut() {
            if writeln!(w, "{word}").and_then(|_| w.flush()).is_err() {
                r.stdin = None;
            }
        }
    }
}

/// Calls every part off and waits for each to end.
fn call_off(running: &mut [Running]) {
    tell_all(running, ABORT);
    for r in running.iter_mut() {
        r.stdin = None;
        let _ = r.child.wait();
    }
}

/// The exit status of the part that failed (waited for), for cr_coord's own.
fn failed(running: &mut [Running], i: usize, step: &str, say: &Say) -> i32 {
    let host = running[i].part.host.clone();
    call_off(running);
    let (code, how) = match running[i].child.wait() {
        Ok(st) => match (st.code(), std::os::unix::process::ExitStatusExt::signal(&st)) {
            (Some(0), _) => (1, "it ended without a word".to_string()),
            (Some(c), _) => (c, format!("exit status {c}")),
            (None, Some(sig)) => (128 + sig, format!("killed by {}", crest_cli::signal_name(sig))),
            (None, None) => (1, "it ended".to_string()),
        },
        Err(e) => (1, format!("waiting for it: {e}")),
    };
    say.err(format!("cr_coord: the part on {host} failed while {step} ({how}); every other part was called off"));
    code
}

fn run_checkpoint(running: &mut [Running], rx: &mpsc::Receiver<Heard>, say: &Say) -> i32 {
    if let Err(i) = every_part(running, rx, "armed") {
        return failed(running, i, "starting", say);
    }
    // Every part is started and its destination open: they freeze together from here.
    let started = Instant::now();
    tell_all(running, GO);
    if let Err(i) = every_part(running, rx, "frozen") {
        return failed(running, i, "freezing", say);
    }
    let all_frozen = Instant::now();
    tell_all(running, GO);
    if let Err(i) = every_part(running, rx, "whole") {
        return failed(running, i, "saving", say);
    }
    let all_whole = Instant::now();
    tell_all(running, GO);
    let done = match every_part(running, rx, "done") {
        Ok(d) => d,
        Err(i) => return failed(running, i, "naming its image and letting its processes go", say),
    };
    let released = Instant::now();
    let mut code = 0;
    for r in running.iter_mut() {
        r.stdin = None;
        if let Ok(st) = r.child.wait() {
            if code == 0 && st.code() != Some(0) {
                code = st.code().unwrap_or(1);
            }
        }
    }
    if !say.quiet {
        let field = |d: &str, key: &str| d.split_whitespace().find_map(|w| w.strip_prefix(key)).map(str::to_string);
        let each: Vec<String> = running.iter().zip(&done).map(|(r, d)| format!("{} {} ms", r.part.host, field(d, "frozen_ms=").unwrap_or_default())).collect();
        // The job stood still from the first part's freeze to the last part's release, by the
        // hosts' clocks.
        let nums = |key: &str| done.iter().filter_map(|d| field(d, key)?.parse::<u128>().ok()).collect::<Vec<_>>();
        let (from, to) = (nums("from_ns="), nums("to_ns="));
        let job = match (from.iter().min(), to.iter().max()) {
            (Some(a), Some(b)) if from.len() == done.len() && b > a => format!("; the job stood still for {:.1} ms, from the first freeze to the last release", (b - a) as f64 / 1e6),
            _ => String::new(),
        };
        eprintln!(
            "cr_coord: {} parts checkpointed at one instant in {:.1} ms: all frozen after {:.1} ms, all saved {:.1} ms later, all let go {:.1} ms later; each part frozen: {}{job}",
            running.len(),
            released.duration_since(started).as_secs_f64() * 1e3,
            all_frozen.duration_since(started).as_secs_f64() * 1e3,
            all_whole.duration_since(all_frozen).as_secs_f64() * 1e3,
            released.duration_since(all_whole).as_secs_f64() * 1e3,
            each.join(", ")
        );
    }
    code
}

fn run_restart(running: &mut [Running], rx: &mpsc::Receiver<Heard>, say: &Say) -> i32 {
    let started = Instant::now();
    if let Err(i) = every_part(running, rx, "ready") {
        return failed(running, i, "restoring", say);
    }
    let ready = Instant::now();
    tell_all(running, GO);
    let pids = match every_part(running, rx, "running") {
        Ok(p) => p,
        Err(i) => return failed(running, i, "letting its processes run", say),
    };
    if !say.quiet {
        let each: Vec<String> = running.iter().zip(&pids).map(|(r, p)| format!("{} PID {p}", r.part.host)).collect();
        eprintln!(
            "cr_coord: {} parts restarted together: all restored after {:.1} ms, all running {:.1} ms later ({})",
            running.len(),
            ready.duration_since(started).as_secs_f64() * 1e3,
            ready.elapsed().as_secs_f64() * 1e3,
            each.join(", ")
        );
    }
    // As mpiexec: wait for every part; the first that failed gives the status.
    let mut code = 0;
    for r in running.iter_mut() {
        r.stdin = None;
        if let Ok(st) = r.child.wait() {
            if code == 0 && st.code() != Some(0) {
                code = st.code().unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&st).unwrap_or(0));
            }
        }
    }
    code
}
