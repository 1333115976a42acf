//! timerfd: the clock, the time left and the interval, the creation flags, and the
//! expirations not yet read, all from fdinfo. Restore creates a timer on the same clock, arms it
//! with the time that was left (a timer set for an absolute time is armed for that same time
//! again, so a wall-clock deadline stays where it was), and gives back its unread expirations
//! (`TFD_IOC_SET_TICKS`). A periodic timer whose expiration was not yet read has no time left in
//! fdinfo (the kernel re-arms it on read); it is armed one interval ahead.
use std::fs::Metadata;
use std::os::fd::AsRawFd;

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler, PrepareCx};
use crate::KindError;

/// The handler.
pub struct TimerFd;

/// `TFD_TIMER_ABSTIME`.
const ABSTIME: u32 = 1;

fn field<'a>(info: &'a FdInfo, key: &str) -> Option<&'a str> {
    info.text.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// "(sec, nsec)" as nanoseconds.
fn pair_ns(s: &str) -> Option<u64> {
    let (a, b) = s.trim_start_matches('(').trim_end_matches(')').split_once(',')?;
    Some(a.trim().parse::<u64>().ok()? * 1_000_000_000 + b.trim().parse::<u64>().ok()?)
}

impl FdHandler for TimerFd {
    fn name(&self) -> &'static str {
        "timerfd"
    }
    fn claims(&self, link: &str, _md: &Metadata) -> bool {
        link == "anon_inode:[timerfd]"
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, _link: &str, _md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let bad = || KindError::Unsupported(format!("PID {} fd {fd}: a timerfd whose state this kernel does not show in fdinfo", cx.pid));
        let clock: i32 = field(info, "clockid:").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let ticks: u64 = field(info, "ticks:").and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let settime_flags = field(info, "settime flags:").and_then(|v| u32::from_str_radix(v, 8).ok()).ok_or_else(bad)?;
        let left = field(info, "it_value:").and_then(pair_ns).ok_or_else(bad)?;
        let interval_ns = field(info, "it_interval:").and_then(pair_ns).ok_or_else(bad)?;
        let mut value_ns = if left == 0 && interval_ns != 0 && ticks > 0 { interval_ns } else { left };
        if settime_flags & ABSTIME != 0 && value_ns != 0 {
            let now = crest_ptrace::sys::clock_now_ns(clock).map_err(|e| KindError::io(format!("PID {} fd {fd}: reading the timerfd's clock {clock}", cx.pid), e))?;
            value_ns += now;
        }
        Ok(FdKind::TimerFd { clock, settime_flags, value_ns, interval_ns, ticks })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::TimerFd { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::TimerFd { clock, value_ns, interval_ns, ticks, .. } = kind else { return String::new() };
        format!("timerfd on clock {clock}, next in {:.3} s, every {:.3} s, {ticks} unread expirations", *value_ns as f64 / 1e9, *interval_ns as f64 / 1e9)
    }
    fn open(&self, rec: &FdRecord, _cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::TimerFd { clock, settime_flags, value_ns, interval_ns, ticks } = rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let err = |what: &str, e: std::io::Error| format!("fd {}: timerfd on clock {clock}: {what}: {e}", rec.fd);
        let flags = (rec.flags as i32) & libc::O_NONBLOCK;
        let t = crest_ptrace::sys::timerfd_create(clock, flags).map_err(|e| err("creating it", e))?;
        if value_ns != 0 {
            crest_ptrace::sys::timerfd_settime(t.as_raw_fd(), settime_flags as i32, value_ns, interval_ns).map_err(|e| err("arming it", e))?;
        }
        if ticks > 0 {
            crest_ptrace::sys::timerfd_set_ticks(t.as_raw_fd(), ticks).map_err(|e| err("giving back its unread expirations", e))?;
        }
        Ok(super::Opened::Fd(t))
    }
}
