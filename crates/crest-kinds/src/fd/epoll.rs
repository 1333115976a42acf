//! epoll instances: the watched descriptors with their event masks and data come from fdinfo
//! (`tfd: N events: HEX data: HEX`); restore creates a new instance and adds each target by its
//! number, after every other descriptor exists (this kind is restored late).
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
        for (t, _, _) in &targets {
            if !cx.own().any(|o| o.fd == *t) {
                return Err(KindError::Unsupported(format!("pid {} fd {fd}: epoll watches a file that is no longer open as fd {t}", cx.pid)));
            }
        }
        Ok(FdKind::Epoll { targets })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Epoll { .. })
    }
    fn late(&self) -> bool {
        true
    }
    fn open(&self, rec: &FdRecord, _cx: &mut PrepareCx) -> Result<Option<std::os::fd::OwnedFd>, String> {
        let FdKind::Epoll { targets } = &rec.kind else { return Ok(None) };
        let ep = crest_ptrace::sys::epoll_create(0).map_err(|e| format!("fd {}: {e}", rec.fd))?;
        for &(t, events, data) in targets {
            crest_ptrace::sys::epoll_add(std::os::fd::AsRawFd::as_raw_fd(&ep), t, events, data).map_err(|e| format!("fd {}: watching fd {t}: {e}", rec.fd))?;
        }
        Ok(Some(ep))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_fdinfo_targets() {
        let t = "pos:\t0\nflags:\t02000002\ntfd:       17 events:       19 data:               11  pos:0 ino:40e sdev:10\n";
        assert_eq!(super::parse_targets(t), Some(vec![(17, 0x19, 0x11)]));
    }
}
