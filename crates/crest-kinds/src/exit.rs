//! What a failed checkpoint or restart means to its caller, and the exit status BLCR's commands
//! gave it: [`ErrorKind`] is the one mapping from a failure to an exit code
//! ([`ErrorKind::code`]). `crest_dump::Error` and `crest_restore::Error` each say their kind;
//! the commands exit with its code, and `crest_cli::exits` documents the same constants.
//!
//! The convention is BLCR's: 0 for success, 255 for a usage error, and otherwise the errno
//! value of the cause, so that one number means one thing in every command.

/// BLCR's `CR_EPTRACED` (2360) as an exit code: the process is traced by someone else.
pub const PTRACED: i32 = 2360 & 0xff;
/// BLCR's `CR_EPTRACER` (2361) as an exit code: the process traces others.
pub const PTRACER: i32 = 2361 & 0xff;
/// A usage error (BLCR's `exit(-1)`).
pub const USAGE: i32 = 255;

/// The class of a failure, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad request: unknown option, missing operand; an image that cannot be opened.
    Usage,
    /// Not permitted (`EPERM`).
    NotPermitted,
    /// A file the image refers to, or the destination's directory, is missing (`ENOENT`).
    NotFound,
    /// No such process, or it ended meanwhile (`ESRCH`).
    NoProcess,
    /// Cancelled by a signal or by the caller (`EINTR`).
    Interrupted,
    /// Any other failure (`EIO`).
    Failed,
    /// A descriptor that is not open (`EBADF`).
    BadDescriptor,
    /// The saved PID is in use (`EBUSY`).
    PidInUse,
    /// Invalid: not a valid image, conflicting or bad options (`EINVAL`).
    Invalid,
    /// The checkpoint would have to wait for itself (`EDEADLK`).
    Deadlock,
    /// The process is traced by a debugger or another checkpoint (BLCR's `CR_EPTRACED`).
    Traced,
    /// The process traces others, outside the checkpoint (BLCR's `CR_EPTRACER`).
    Tracer,
    /// The process holds something crest cannot save (`EOPNOTSUPP`).
    Unsupported,
    /// The time limit ran out (`ETIMEDOUT`).
    TimedOut,
    /// An error of the system whose errno tells the cause by itself (`ENOSPC`, `EISDIR`,
    /// `EEXIST`, `ESTALE`, ...): the exit code is that errno.
    Os(i32),
}

impl ErrorKind {
    /// The exit status of a command failing this way.
    pub const fn code(self) -> i32 {
        match self {
            ErrorKind::Usage => USAGE,
            ErrorKind::NotPermitted => libc::EPERM,
            ErrorKind::NotFound => libc::ENOENT,
            ErrorKind::NoProcess => libc::ESRCH,
            ErrorKind::Interrupted => libc::EINTR,
            ErrorKind::Failed => libc::EIO,
            ErrorKind::BadDescriptor => libc::EBADF,
            ErrorKind::PidInUse => libc::EBUSY,
            ErrorKind::Invalid => libc::EINVAL,
            ErrorKind::Deadlock => libc::EDEADLK,
            ErrorKind::Traced => PTRACED,
            ErrorKind::Tracer => PTRACER,
            ErrorKind::Unsupported => libc::EOPNOTSUPP,
            ErrorKind::TimedOut => libc::ETIMEDOUT,
            ErrorKind::Os(errno) => errno,
        }
    }

    /// The kind of an errno: a named kind when there is one, else [`ErrorKind::Os`].
    pub fn of_errno(errno: i32) -> ErrorKind {
        match errno {
            libc::EPERM => ErrorKind::NotPermitted,
            libc::ENOENT => ErrorKind::NotFound,
            libc::ESRCH => ErrorKind::NoProcess,
            libc::EINTR => ErrorKind::Interrupted,
            libc::EIO => ErrorKind::Failed,
            libc::EBADF => ErrorKind::BadDescriptor,
            libc::EBUSY => ErrorKind::PidInUse,
            libc::EINVAL => ErrorKind::Invalid,
            libc::EDEADLK => ErrorKind::Deadlock,
            libc::EOPNOTSUPP => ErrorKind::Unsupported,
            libc::ETIMEDOUT => ErrorKind::TimedOut,
            e => ErrorKind::Os(e),
        }
    }

    /// The kind of an I/O error: its errno's, or [`ErrorKind::Failed`] when it has none.
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        e.raw_os_error().map_or(ErrorKind::Failed, ErrorKind::of_errno)
    }
}

/// The name of a signal number, for messages (`SIGTERM`; `signal 40` for a real-time one).
pub fn signal_name(sig: i32) -> String {
    const NAMES: [&str; 32] = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(sig).ok().and_then(|i| NAMES.get(i)).filter(|n| !n.is_empty()).map_or_else(|| format!("signal {sig}"), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_kinds_keep_their_code() {
        for e in 1..200 {
            assert_eq!(ErrorKind::of_errno(e).code(), e);
        }
        assert_eq!(ErrorKind::Traced.code(), 56);
        assert_eq!(ErrorKind::Tracer.code(), 57);
        assert_eq!(ErrorKind::Usage.code(), 255);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(40), "signal 40");
        assert_eq!(signal_name(0), "signal 0");
    }
}
