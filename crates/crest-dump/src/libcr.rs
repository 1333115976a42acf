//! Cooperation with processes that use libcr, before they are frozen: each one (found by its
//! `crest-libcr` thread) is asked to run its checkpoint callbacks, and the checkpoint waits,
//! within its time limit, until every one has answered READY, OMIT (it is left out, the rest
//! is checkpointed), or a failure
//! (`CR_CHECKPOINT_TEMP_FAILURE` cancels the checkpoint, `CR_CHECKPOINT_PERM_FAILURE` cancels
//! it and kills every process of the request). Afterwards each is told whether the checkpoint
//! was made (its callbacks go on) or failed. Processes without libcr are not asked anything.
//! The protocol is `crest_ptrace::libcr`; docs/architecture.md, "libcr", tells it whole.
use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

use crest_ptrace::libcr::{self as proto, Answer, Info, Msg};
use crest_ptrace::sys;

use crate::Scope;

/// Why the callbacks did not let the checkpoint go on.
#[derive(Debug)]
pub(crate) enum CoopError {
    /// Cancelled (a signal, the time limit) while callbacks ran.
    Cancelled,
    /// A process ended while its callbacks ran.
    Ended(i32),
    /// A callback cancelled the checkpoint: the process, the code, and whether permanently.
    Refused { pid: i32, code: u16, perm: bool },
    /// Every process of the scope asked to be left out (the named one first): nothing is left
    /// to checkpoint.
    Omitted(i32),
    /// The socket the processes answer on could not be made.
    Io(std::io::Error),
}

/// One process that uses libcr.
struct Member {
    pid: i32,
    /// Its libcr thread; 0 for a process with libcr_omit, which is never asked.
    tid: i32,
    /// Asked: it is told the outcome.
    asked: bool,
    answered: bool,
    omitted: bool,
}

/// The processes that cooperated, to be told the outcome.
#[derive(Default)]
pub(crate) struct Cooperation {
    members: Vec<Member>,
    /// Scopes the callbacks forwarded the checkpoint to (`cr_forward_checkpoint`).
    forwarded: Vec<(Scope, i32)>,
}

impl Cooperation {
    /// The scopes the callbacks forwarded the checkpoint to: frozen and saved with the rest.
    pub(crate) fn forwarded(&self) -> Vec<(Scope, i32)> {
        self.forwarded.clone()
    }

    /// Adds the processes of `pids` that use libcr (or omit themselves) and are not members yet;
    /// the new ones are asked to run their callbacks when `ask`.
    fn enlist(&mut self, pids: &[i32], ask: bool) {
        let known: std::collections::HashSet<i32> = self.members.iter().map(|m| m.pid).collect();
        let mut seen = std::collections::HashSet::new();
        let fresh: Vec<i32> = pids.iter().copied().filter(|p| !known.contains(p) && seen.insert(*p)).collect();
        // Each process's libcr thread, or else whether it omits itself: /proc only, read for
        // many processes in two halves at once.
        let probe = |pids: &[i32]| -> Vec<(i32, Option<i32>, bool)> {
            pids.iter()
                .map(|&pid| match proto::libcr_thread(pid) {
                    Some(tid) => (pid, Some(tid), false),
                    None => (pid, None, proto::omits_itself(pid)),
                })
                .collect()
        };
        let found = if fresh.len() >= 32 {
            let (a, b) = fresh.split_at(fresh.len() / 2);
            std::thread::scope(|s| {
                let other = s.spawn(|| probe(b));
                let mut all = probe(a);
                all.extend(other.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                all
            })
        } else {
            probe(&fresh)
        };
        for (pid, tid, omitted) in found {
            if let Some(tid) = tid {
                let asked = ask && proto::send(pid, tid, Msg::Request, 0, 0).is_ok();
                self.members.push(Member { pid, tid, asked, answered: ask && !asked, omitted: false });
            } else if omitted {
                self.members.push(Member { pid, tid: 0, asked: false, answered: true, omitted: true });
            }
        }
    }

    /// The processes that asked to be left out.
    pub(crate) fn omitted(&self) -> Vec<i32> {
        self.members.iter().filter(|m| m.omitted).map(|m| m.pid).collect()
    }

    /// Tells every process asked that the checkpoint was made: their `cr_checkpoint` returns 0.
    pub(crate) fn go_on(&self) {
        self.tell(Msg::Continue, 0);
    }

    /// Tells every process asked that the checkpoint failed with `errno`.
    pub(crate) fn fail(&self, errno: i32) {
        self.tell(Msg::Failed, errno.clamp(1, u16::MAX as i32) as u16);
    }

    fn tell(&self, kind: Msg, code: u16) {
        for m in self.members.iter().filter(|m| m.asked && !m.omitted) {
            let _ = proto::send(m.pid, m.tid, kind, 0, code);
        }
    }
}

/// Every process of the scope as it stands (nothing frozen), but this process and its parent.
fn scope_pids(scope: Scope, id: i32) -> Vec<i32> {
    let me = std::process::id() as i32;
    let parent = std::os::unix::process::parent_id() as i32;
    let mut v = Vec::new();
    match scope {
        Scope::Pid => v.push(id),
        Scope::Tree => {
            v.push(id);
            let mut seen = std::collections::HashSet::from([id]);
            let mut at = 0;
            while at < v.len() {
                for c in crest_proc::children(v[at]).unwrap_or_default() {
                    if c != me && c != parent && seen.insert(c) {
                        v.push(c);
                    }
                }
                at += 1;
            }
        }
        Scope::Pgid | Scope::Sid => {
            for p in crest_proc::all_pids().unwrap_or_default() {
                let Some(st) = crest_proc::read(p, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok()) else { continue };
                if (if scope == Scope::Pgid { st.pgrp } else { st.session }) == id && p != me && p != parent {
                    v.push(p);
                }
            }
        }
    }
    v
}

/// BLCR's number of a scope.
fn scope_number(scope: Scope) -> i32 {
    match scope {
        Scope::Pid => 0,
        Scope::Pgid => 1,
        Scope::Sid => 2,
        Scope::Tree => 3,
    }
}

/// A connection from a process answering.
struct Conn {
    stream: UnixStream,
    pid: i32,
    got: Vec<u8>,
    /// How much of `got` was taken as lines.
    at: usize,
    answer: Option<Answer>,
}

/// BLCR's scope of a number.
fn scope_of(n: i32) -> Option<Scope> {
    Some(match n {
        0 => Scope::Pid,
        1 => Scope::Pgid,
        2 => Scope::Sid,
        3 => Scope::Tree,
        _ => return None,
    })
}

/// A callback forwarded the checkpoint to scope number `scope` named by `target`
/// (`cr_forward_checkpoint`): as BLCR, its processes join the request (overlap is fine), those
/// that use libcr run their callbacks too, and all are saved in the same image. Refused with
/// EINVAL (no such scope), ESRCH (no such process, group or session), EPERM (a process of
/// another user, when not root), EDEADLK (this checkpoint's own process).
fn forward(coop: &mut Cooperation, pids: &mut Vec<i32>, scope: i32, target: i32) -> Result<(), i32> {
    let scope = scope_of(scope).ok_or(libc::EINVAL)?;
    if target <= 0 {
        return Err(libc::EINVAL);
    }
    if matches!(scope, Scope::Pid | Scope::Tree) && target == std::process::id() as i32 {
        return Err(libc::EDEADLK);
    }
    if matches!(scope, Scope::Pid | Scope::Tree) && crest_proc::read(target, "stat").is_err() {
        return Err(libc::ESRCH);
    }
    let new: Vec<i32> = scope_pids(scope, target);
    if new.is_empty() {
        return Err(libc::ESRCH);
    }
    // The owner of /proc/PID is the process's effective user.
    let me = sys::euid();
    if me != 0 {
        use std::os::unix::fs::MetadataExt;
        if new.iter().any(|p| std::fs::metadata(format!("/proc/{p}")).is_ok_and(|m| m.uid() != me)) {
            return Err(libc::EPERM);
        }
    }
    for p in &new {
        if !pids.contains(p) {
            pids.push(*p);
        }
    }
    coop.enlist(&new, true);
    if !coop.forwarded.contains(&(scope, target)) {
        coop.forwarded.push((scope, target));
    }
    Ok(())
}

/// Runs the callbacks of every process of the scope that uses libcr, and waits for their
/// answers. `requester` and `dest` are what the callbacks are told.
pub(crate) fn callbacks(scope: Scope, id: i32, requester: i32, signal: i32, dest: &str) -> Result<Cooperation, CoopError> {
    let mut pids = scope_pids(scope, id);
    let mut coop = Cooperation::default();
    coop.enlist(&pids, false);
    if coop.members.iter().all(|m| m.tid == 0) {
        return finish(coop, &pids, id);
    }
    let me = std::process::id() as i32;
    let addr = SocketAddr::from_abstract_name(proto::socket_name(me)).map_err(CoopError::Io)?;
    let listener = UnixListener::bind_addr(&addr).map_err(CoopError::Io)?;
    listener.set_nonblocking(true).map_err(CoopError::Io)?;
    let info = Info { scope: scope_number(scope), target: id, requester, signal, dest: dest.to_string() };
    for m in coop.members.iter_mut().filter(|m| m.tid != 0) {
        m.asked = proto::send(m.pid, m.tid, Msg::Request, 0, 0).is_ok();
        m.answered = !m.asked;
    }
    let mut conns: Vec<Conn> = Vec::new();
    let outcome = (|| loop {
        if crate::check_cancel().is_err() {
            return Err(CoopError::Cancelled);
        }
        while let Ok((stream, _)) = listener.accept() {
            let pid = sys::peer_pid(stream.as_raw_fd()).unwrap_or(0);
            let mut s = &stream;
            if s.write_all(info.line().as_bytes()).is_ok() && stream.set_nonblocking(true).is_ok() {
                conns.push(Conn { stream, pid, got: Vec::new(), at: 0, answer: None });
            }
        }
        let mut buf = [0u8; 256];
        let mut k = 0;
        while k < conns.len() {
            let c = &mut conns[k];
            let closed = loop {
                match (&c.stream).read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => c.got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == IoKind::WouldBlock => break false,
                    Err(_) => break true,
                }
            };
            // Forwards first, each answered at once, then the answer.
            while c.answer.is_none() {
                let Some(end) = c.got[c.at..].iter().position(|&b| b == b'\n') else { break };
                let line = String::from_utf8_lossy(&c.got[c.at..c.at + end]).into_owned();
                c.at += end + 1;
                match proto::parse_forward(&line) {
                    Some((s, t)) => {
                        let r = forward(&mut coop, &mut pids, s, t);
                        let _ = (&c.stream).write_all(proto::forward_reply(r).as_bytes());
                    }
                    None => c.answer = Answer::parse(&line),
                }
            }
            if closed {
                // The process closed its end: with an answer, it holds nothing of ours any more
                // (it closes only after answering); without one, it ended (or gave up).
                let (pid, answer) = (c.pid, c.answer);
                conns.remove(k);
                let Some(m) = coop.members.iter_mut().find(|m| m.pid == pid) else { continue };
                let Some(a) = answer else { return Err(CoopError::Ended(pid)) };
                m.answered = true;
                match a {
                    Answer::Ready => {}
                    Answer::Omit => m.omitted = true,
                    Answer::Temp(code) => return Err(CoopError::Refused { pid, code, perm: false }),
                    Answer::Perm(code) => return Err(CoopError::Refused { pid, code, perm: true }),
                }
                continue;
            }
            k += 1;
        }
        if coop.members.iter().all(|m| m.answered) {
            return Ok(());
        }
        for m in coop.members.iter().filter(|m| !m.answered) {
            if crest_proc::read(m.pid, "stat").is_err() {
                return Err(CoopError::Ended(m.pid));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    })();
    drop(conns);
    drop(listener);
    match outcome {
        Ok(()) => finish(coop, &pids, id),
        Err(e) => {
            let errno = match &e {
                CoopError::Refused { code, .. } => *code as i32,
                CoopError::Cancelled => libc::ECANCELED,
                _ => libc::ESRCH,
            };
            if let CoopError::Refused { perm: true, .. } = e {
                // As BLCR: a permanent failure kills every process of the request.
                for &p in &pids {
                    let _ = sys::kill(p, libc::SIGKILL);
                }
            } else {
                coop.fail(errno);
            }
            Err(e)
        }
    }
}

/// As BLCR: the processes that asked to be left out are, and the checkpoint of the rest of the
/// scope goes on; only when none is left is nothing checkpointed (BLCR's ESRCH, "no processes
/// checkpointed"). `pids` is the scope as listed before the callbacks ran.
fn finish(coop: Cooperation, pids: &[i32], id: i32) -> Result<Cooperation, CoopError> {
    let omitted = coop.omitted();
    if !pids.is_empty() && pids.iter().all(|p| omitted.contains(p)) {
        coop.fail(libc::ESRCH);
        return Err(CoopError::Omitted(id));
    }
    Ok(coop)
}
