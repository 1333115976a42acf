//! The protocol between crest's commands and a process that uses libcr (`crest-libcr`), with
//! no kernel module in between (see docs/architecture.md, "libcr"). Both sides use these
//! names and numbers, so they are defined once, here.
//!
//! * A process that called `cr_init` has a thread named [`THREAD_NAME`]: that is how a
//!   checkpoint finds it (`/proc/PID/task/TID/comm`). The thread blocks every signal and
//!   takes [`SIGNUM`] with `sigtimedwait`, so a message sent to it never interrupts the
//!   program.
//! * Messages are [`SIGNUM`] queued to that thread (`rt_tgsigqueueinfo`, `SI_QUEUE`), with a
//!   value made by [`encode`]: a [`Msg`] kind, a byte (a request handle), 16 bits of code.
//! * What does not fit in a signal goes over an abstract unix socket named by the sender's PID
//!   ([`socket_name`], [`restart_socket_name`]), connected to by the library and closed again
//!   before anything is frozen.
use std::time::Duration;

/// BLCR's `CR_SIGNUM`: 64 (SIGRTMAX) on x86-64.
pub const SIGNUM: i32 = 64;

/// The name of the thread libcr starts in a process at `cr_init` (its `comm`).
pub const THREAD_NAME: &str = "crest-libcr";

/// How libcr_omit's file name starts in `/proc/PID/maps`: its soname as installed, or the name
/// cargo builds it under (a link named by the soname shows as the file it points to): a
/// process with it mapped is left out of every checkpoint.
pub const OMIT_LIBS: [&str; 2] = ["libcr_omit.so", "libcrest_libcr_omit.so"];

/// The kind of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// A checkpoint asks the process to run its callbacks (the sender listens on
    /// [`socket_name`] of its PID).
    Request,
    /// The checkpoint is done; the process goes on (`cr_checkpoint` returns 0).
    Continue,
    /// The checkpoint failed or was cancelled; the code is the errno `cr_checkpoint` returns
    /// negated.
    Failed,
    /// The process was restarted from an image; the sender (the restart's requester)
    /// listens on [`restart_socket_name`] of its PID and tells the image's name.
    Restarted,
    /// A checkpoint the process asked for (`cr_request_checkpoint`) ended: the byte is the
    /// handle, the code the helper's exit status (0: done).
    Done,
    /// Inside the library: run this thread's signal-context callbacks.
    SignalPhase,
}

impl Msg {
    fn number(self) -> u32 {
        match self {
            Msg::Request => 1,
            Msg::Continue => 2,
            Msg::Failed => 3,
            Msg::Restarted => 4,
            Msg::Done => 5,
            Msg::SignalPhase => 6,
        }
    }
}

/// A message as a signal value: kind in bits 0-7, `byte` in 8-15, `code` in 16-31.
pub fn encode(kind: Msg, byte: u8, code: u16) -> i32 {
    (kind.number() | (byte as u32) << 8 | (code as u32) << 16) as i32
}

/// A signal value back into its kind, byte and code; `None` for a value no crest sent.
pub fn decode(value: i32) -> Option<(Msg, u8, u16)> {
    let v = value as u32;
    let kind = match v & 0xff {
        1 => Msg::Request,
        2 => Msg::Continue,
        3 => Msg::Failed,
        4 => Msg::Restarted,
        5 => Msg::Done,
        6 => Msg::SignalPhase,
        _ => return None,
    };
    Some((kind, (v >> 8) as u8, (v >> 16) as u16))
}

/// The abstract socket a checkpoint with worker PID `pid` listens on.
pub fn socket_name(pid: i32) -> String {
    format!("crest-libcr.{pid}")
}

/// The abstract socket a restart requester with PID `pid` tells the image's name on.
pub fn restart_socket_name(pid: i32) -> String {
    format!("crest-libcr-restart.{pid}")
}

/// The environment variable that makes `cr_checkpoint` tell the outcome to a libcr process
/// that asked for it: `PID:TID:HANDLE`.
pub const NOTIFY_ENV: &str = "CREST_LIBCR_NOTIFY";

/// The environment variable naming the process that asked for a checkpoint (or a restart) on
/// whose behalf `cr_checkpoint` (`cr_restart`) runs: what the callbacks are told.
pub const REQUESTER_ENV: &str = "CREST_LIBCR_REQUESTER";

/// The environment variable giving `cr_restart`, run by `cr_request_restart`, the descriptor
/// on which it tells the outcome once the restart is complete: one line, the PID of the eldest
/// restored process, or `ERR ERRNO`; then end of file.
pub const RESTART_NOTIFY_ENV: &str = "CREST_LIBCR_RESTART_NOTIFY";

/// Whether a process with real user id `uid` may send libcr's messages to, or serve its
/// sockets for, a process whose real and effective user ids are `own`: root or the same user,
/// those who may checkpoint or restart it.
pub fn trusted(uid: u32, own: (u32, u32)) -> bool {
    uid == 0 || uid == own.0 || uid == own.1
}

/// How long a restart requester keeps telling the image's name to restored processes.
pub const RESTART_SOCKET_TIME: Duration = Duration::from_secs(30);

/// What the checkpoint tells the callbacks (`struct cr_checkpoint_info`), one line on the
/// socket: `SCOPE TARGET REQUESTER SIGNAL DEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// BLCR's scope number (`CR_SCOPE_PROC` 0 ... `CR_SCOPE_TREE` 3).
    pub scope: i32,
    /// The PID (group, session) named.
    pub target: i32,
    /// The process that asked for the checkpoint.
    pub requester: i32,
    /// The signal sent afterwards (0: none).
    pub signal: i32,
    /// The image's path, empty when it is not a file.
    pub dest: String,
}

impl Info {
    /// The line sent.
    pub fn line(&self) -> String {
        format!("{} {} {} {} {}\n", self.scope, self.target, self.requester, self.signal, self.dest.replace('\n', " "))
    }

    /// A line received.
    pub fn parse(line: &str) -> Option<Info> {
        let mut it = line.trim_end_matches('\n').splitn(5, ' ');
        let mut num = || it.next()?.parse::<i32>().ok();
        let (scope, target, requester, signal) = (num()?, num()?, num()?, num()?);
        Some(Info { scope, target, requester, signal, dest: it.next().unwrap_or("").to_string() })
    }
}

/// What a restart tells the restored processes (`struct cr_restart_info`), one line on the
/// restart socket: `REQUESTER SRC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartInfo {
    /// The process that asked for the restart (`cr_restart`, or the caller of
    /// `cr_request_restart`).
    pub requester: i32,
    /// The image's path, empty when it is not a file.
    pub src: String,
}

impl RestartInfo {
    /// The line sent.
    pub fn line(&self) -> String {
        format!("{} {}\n", self.requester, self.src.replace('\n', " "))
    }

    /// A line received.
    pub fn parse(line: &str) -> Option<RestartInfo> {
        let (requester, src) = line.trim_end_matches('\n').split_once(' ')?;
        Some(RestartInfo { requester: requester.parse().ok()?, src: src.to_string() })
    }
}

/// The answer of a process's callbacks, one line on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `READY`: go on.
    Ready,
    /// `OMIT`: leave this process out.
    Omit,
    /// `TEMP CODE`: cancel, try later (`CR_CHECKPOINT_TEMP_FAILURE`, code `CR_ETEMPFAIL` or the
    /// callback's own).
    Temp(u16),
    /// `PERM CODE`: cancel and kill every process of the request.
    Perm(u16),
}

impl Answer {
    /// The line sent.
    pub fn line(self) -> String {
        match self {
            Answer::Ready => "READY\n".into(),
            Answer::Omit => "OMIT\n".into(),
            Answer::Temp(c) => format!("TEMP {c}\n"),
            Answer::Perm(c) => format!("PERM {c}\n"),
        }
    }

    /// A line received.
    pub fn parse(line: &str) -> Option<Answer> {
        let mut it = line.split_whitespace();
        let word = it.next()?;
        let code = it.next().and_then(|c| c.parse().ok());
        Some(match word {
            "READY" => Answer::Ready,
            "OMIT" => Answer::Omit,
            "TEMP" => Answer::Temp(code.unwrap_or(CR_ETEMPFAIL as u16)),
            "PERM" => Answer::Perm(code.unwrap_or(CR_EPERMFAIL as u16)),
            _ => return None,
        })
    }
}

/// A callback forwarding the checkpoint to more processes (`cr_forward_checkpoint`): one line
/// on the socket before the answer, `FORWARD SCOPE TARGET` (BLCR's scope number, a PID, group
/// or session, never 0: the library names its own), answered by [`forward_reply`].
pub fn forward_line(scope: i32, target: i32) -> String {
    format!("FORWARD {scope} {target}\n")
}

/// A line received, if it forwards: the scope number and target.
pub fn parse_forward(line: &str) -> Option<(i32, i32)> {
    let mut it = line.strip_prefix("FORWARD ")?.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The checkpoint's reply to a forward: `OK`, or `ERR ERRNO` (ESRCH: nothing there, EPERM:
/// another user's, EINVAL: no such scope, EBUSY: another checkpoint has them).
pub fn forward_reply(r: Result<(), i32>) -> String {
    match r {
        Ok(()) => "OK\n".into(),
        Err(e) => format!("ERR {e}\n"),
    }
}

/// A reply received: `Ok` or the errno; `None` for a line that is not one.
pub fn parse_forward_reply(line: &str) -> Option<Result<(), i32>> {
    let line = line.trim_end();
    if line == "OK" {
        return Some(Ok(()));
    }
    Some(Err(line.strip_prefix("ERR ")?.trim().parse().ok()?))
}

/// BLCR's `CR_ETEMPFAIL`.
pub const CR_ETEMPFAIL: i32 = 2354;
/// BLCR's `CR_EPERMFAIL`.
pub const CR_EPERMFAIL: i32 = 2355;
/// BLCR's `CR_EOMITTED`.
pub const CR_EOMITTED: i32 = 2358;
/// BLCR's `CR_ERESTARTED`.
pub const CR_ERESTARTED: i32 = 2363;

/// The threads of `pid` named [`THREAD_NAME`]: the libcr thread, if the process uses libcr.
pub fn libcr_thread(pid: i32) -> Option<i32> {
    let rd = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).find(|tid| std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).is_ok_and(|c| c.trim_end() == THREAD_NAME))
}

/// Whether `pid` has libcr_omit loaded (it asks to be left out of every checkpoint).
pub fn omits_itself(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.lines().any(|l| l.rsplit('/').next().is_some_and(|f| OMIT_LIBS.iter().any(|o| f.starts_with(o)))))
}

/// Sends message `kind` to thread `tid` of `pid`.
pub fn send(pid: i32, tid: i32, kind: Msg, byte: u8, code: u16) -> std::io::Result<()> {
    crate::sys::tg_sigqueue(pid, tid, SIGNUM, encode(kind, byte, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_lines_round_trip() {
        for k in [Msg::Request, Msg::Continue, Msg::Failed, Msg::Restarted, Msg::Done, Msg::SignalPhase] {
            assert_eq!(decode(encode(k, 7, 2363)), Some((k, 7, 2363)));
        }
        assert_eq!(decode(0), None);
        let i = Info { scope: 3, target: 10, requester: 9, signal: 0, dest: "/tmp/a b".into() };
        assert_eq!(Info::parse(&i.line()), Some(i));
        let r = RestartInfo { requester: 12, src: "/tmp/a b".into() };
        assert_eq!(RestartInfo::parse(&r.line()), Some(r));
        assert_eq!(RestartInfo::parse("12 \n"), Some(RestartInfo { requester: 12, src: String::new() }));
        assert!(trusted(0, (1000, 1000)) && trusted(1000, (1000, 1000)) && !trusted(1001, (1000, 1000)));
        assert_eq!(parse_forward(&forward_line(3, 42)), Some((3, 42)));
        assert_eq!(parse_forward("READY"), None);
        assert_eq!(parse_forward_reply(&forward_reply(Ok(()))), Some(Ok(())));
        assert_eq!(parse_forward_reply(&forward_reply(Err(3))), Some(Err(3)));
        for a in [Answer::Ready, Answer::Omit, Answer::Temp(5), Answer::Perm(2355)] {
            assert_eq!(Answer::parse(&a.line()), Some(a));
        }
    }
}
