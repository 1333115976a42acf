//! epoll instances: the watched descriptors with their event masks and data come from fdinfo
//! (`tfd: N events: HEX data: HEX`); restore creates a new instance and adds each target by its
//! number, once every descriptor it watches is in place (it answers [`super::Opened::NotYet`]
//! until then).
//!
//! A target is the file and the number it was added with: the number may since have been
//! closed, or hold another file, while the file stays open under another number. `kcmp`
//! (`KCMP_EPOLL_TFD`) finds which descriptor holds each target's file; restore puts that file
//! at the number for the time of `EPOLL_CTL_ADD`. A target whose file is open under no number
//! is refused.
use std::fs::Metadata;

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler, PrepareCx};
use crate::KindError;

/// The handler.
pub struct Epoll;

fn parse_targets(text: &str) -> Option<Vec<(i32, u32, u64)>> {
    let mut out = Vec::new();
    for l in text.lines().filter(|l| l.starts_with("tfd:")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        let at = |k: &str| w.iter().position(|x| *x == k).and_then(|i| w.get(i + 1)).copied();
        out.push((at("tfd:")?.parse().ok()?, u32::from_str_radix(at("events:")?, 16).ok()?, u64::from_str_radix(at("data:")?, 16).ok()?));
    }
    Some(out)
}

impl FdHandler for Epoll {
    fn name(&self) -> &'static str {
        "epoll"
    }
    fn claims(&self, link: &str, _md: &Metadata) -> bool {
        link == "anon_inode:[eventpoll]"
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, _link: &str, _md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let targets = parse_targets(&info.text).ok_or_else(|| KindError::Unsupported(format!("pid {} fd {fd}: cannot read the epoll set", cx.pid)))?;
        let own: Vec<i32> = cx.own().map(|o| o.fd).collect();
        let mut sources = Vec::with_capacity(targets.len());
        for (i, (t, _, _)) in targets.iter().enumerate() {
            // Its rank among the targets added with the same number.
            let toff = targets[..i].iter().filter(|x| x.0 == *t).count() as u32;
            let is = |f: i32| crest_ptrace::sys::epoll_target_is(cx.pid, f, fd, *t, toff).unwrap_or(false);
            let source = if own.contains(t) && is(*t) { Some(*t) } else { own.iter().copied().find(|&f| f != fd && is(f)) };
            // In flight, carried by a pair of unix sockets: a target that is one of its ends
            // is named by the end (-1: `end` false, -2: true), which the pair makes again.
            let carried = cx.pair_ends.filter(|_| cx.pid == std::process::id() as i32).and_then(|ends| ends.into_iter().find(|&(c, _)| is(c)));
            let source = match (source, carried) {
                (_, Some((_, end))) => Some(if end { -2 } else { -1 }),
                (s, None) => s,
            };
            let Some(source) = source else {
                if cx.pid == std::process::id() as i32 && cx.pair_ends.is_some() {
                    return Err(KindError::Unsupported(format!(
                        "an epoll set in flight (sent with SCM_RIGHTS and not received yet) watches a file added as fd {t} other than the sockets of the pair that carries it; only those are tied to a set in flight; not supported"
                    )));
                }
                if cx.pid == std::process::id() as i32 {
                    // A copy of a descriptor in flight, taken by the checkpoint: the set's targets
                    // are numbers in the table of whoever added them, not in this one.
                    return Err(KindError::Unsupported(format!(
                        "an epoll set in flight (sent with SCM_RIGHTS and not received yet) watches a file added as fd {t} by the process that made it, and crest cannot tie an epoll set in flight to the descriptors of a process; not supported"
                    )));
                }
                return Err(KindError::Unsupported(format!("pid {} fd {fd}: epoll watches a file added as fd {t} that is no longer open as any descriptor", cx.pid)));
            };
            sources.push(source);
        }
        Ok(FdKind::Epoll { targets, sources })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Epoll { .. })
    }
    fn sharing(&self, _kind: &FdKind) -> super::Sharing {
        super::Sharing::Process
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Epoll { targets, .. } = kind else { return String::new() };
        format!("epoll watching fds {:?}", targets.iter().map(|t| t.0).collect::<Vec<_>>())
    }
    fn open(&self, rec: &FdRecord, cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Epoll { targets, sources } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        // Every descriptor it watches, or that holds a watched file, is restored first.
        let mut waits: Vec<i32> = sources.iter().copied().chain(targets.iter().map(|t| t.0)).filter(|&n| n != rec.fd && cx.saved.contains(&n) && !cx.placed.contains(&n)).collect();
        if !waits.is_empty() {
            waits.sort_unstable();
            waits.dedup();
            return Ok(super::Opened::NotYet(waits));
        }
        let made = crest_ptrace::sys::epoll_create(0).map_err(|e| format!("fd {}: {e}", rec.fd))?;
        // Above every saved number, so that no target number is the instance itself.
        let ep = crest_ptrace::sys::dup_above(std::os::fd::AsRawFd::as_raw_fd(&made), cx.high).map_err(|e| format!("fd {}: {e}", rec.fd))?;
        drop(made);
        let epfd = std::os::fd::AsRawFd::as_raw_fd(&ep);
        for (i, &(t, events, data)) in targets.iter().enumerate() {
            let err = |e: std::io::Error| format!("fd {}: watching fd {t}: {e}", rec.fd);
            let source = sources.get(i).copied().unwrap_or(t);
            if source == t {
                crest_ptrace::sys::epoll_add(epfd, t, events, data).map_err(err)?;
                continue;
            }
            // The file is at `source`: put it at `t` while it is added, then put back what
            // was at `t`.
            let held = match crest_ptrace::sys::cloexec(t) {
                Ok(cloexec) => Some((crest_ptrace::sys::dup_above(t, cx.high).map_err(err)?, cloexec)),
                Err(_) => None,
            };
            let added = match &held {
                Some((f, cloexec)) => {
                    let table = super::in_husk()?;
                    table.dup3(source, t, true).map_err(err)?;
                    let added = crest_ptrace::sys::epoll_add(epfd, t, events, data).map_err(err);
                    table.dup3(std::os::fd::AsRawFd::as_raw_fd(f), t, *cloexec).map_err(err)?;
                    added
                }
                None => {
                    // `t` is free: the lowest free number from `t` up is `t` itself, and the
                    // copy is closed again when dropped.
                    let copy = crest_ptrace::sys::dup_above(source, t).map_err(err)?;
                    if std::os::fd::AsRawFd::as_raw_fd(&copy) != t {
                        return Err(format!("fd {}: watching fd {t}: the number was taken meanwhile", rec.fd));
                    }
                    crest_ptrace::sys::epoll_add(epfd, t, events, data).map_err(err)
                }
            };
            added?;
        }
        Ok(super::Opened::Fd(ep))
    }
}

/// In `cr_restart`, making again the pair of unix sockets of object `pair` (its ends parked in
/// `cx`): the epoll set in flight of `rec` that it carries, which watches only the pair's
/// ends (`sources` -1 and -2, see [`Epoll`]'s dump). Each is added with the number it was
/// added with ([`crest_ptrace::sys::epoll_add_as`]), its events and data.
pub(crate) fn open_carried(rec: &FdRecord, cx: &mut PrepareCx, pair: crate::ObjId) -> Result<std::os::fd::OwnedFd, String> {
    let FdKind::Epoll { targets, sources } = &rec.kind else { return Err("not an epoll set".into()) };
    let ep = crest_ptrace::sys::epoll_create(0).map_err(|e| format!("an epoll set in flight: {e}"))?;
    for (i, &(t, events, data)) in targets.iter().enumerate() {
        let end = match sources.get(i) {
            Some(-1) => false,
            Some(-2) => true,
            _ => return Err(format!("an epoll set in flight watches fd {t}, which is not an end of the pair that carries it")),
        };
        let file = cx.take((pair, end)).ok_or_else(|| format!("an epoll set in flight watches fd {t}: the pair that carries it is not made"))??;
        crest_ptrace::sys::epoll_add_as(std::os::fd::AsRawFd::as_raw_fd(&ep), std::os::fd::AsRawFd::as_raw_fd(&file), t, events, data)
            .map_err(|e| format!("an epoll set in flight: watching fd {t}: {e}"))?;
    }
    Ok(ep)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_fdinfo_targets() {
        let t = "pos:\t0\nflags:\t02000002\ntfd:       17 events:       19 data:               11  pos:0 ino:40e sdev:10\n";
        assert_eq!(super::parse_targets(t), Some(vec![(17, 0x19, 0x11)]));
    }
}
