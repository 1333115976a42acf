//! Tracer failures, kept apart from the results of remote syscalls.

/// A failure of the tracer itself (not of a syscall run inside the tracee).
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A ptrace request failed.
    #[error("{req} on thread {tid} failed: {err}")]
    Ptrace {
        /// Request name.
        req: &'static str,
        /// Thread.
        tid: i32,
        /// The error.
        err: std::io::Error,
    },
    /// The thread exited or was killed while traced.
    #[error("thread {tid} died while traced ({how})")]
    Died {
        /// Thread.
        tid: i32,
        /// Exit status or signal, in words.
        how: String,
    },
    /// The thread stopped in a way the tracer did not expect.
    #[error("thread {tid} stopped unexpectedly: {what}")]
    Unexpected {
        /// Thread.
        tid: i32,
        /// What happened.
        what: String,
    },
    /// Another syscall of the tracer failed.
    #[error("{what}: {err}")]
    Sys {
        /// What was being done.
        what: String,
        /// The error.
        err: std::io::Error,
    },
}

impl TraceError {
    pub(crate) fn last(req: &'static str, tid: i32) -> Self {
        TraceError::Ptrace { req, tid, err: std::io::Error::last_os_error() }
    }
    pub(crate) fn sys(what: impl Into<String>) -> Self {
        TraceError::Sys { what: what.into(), err: std::io::Error::last_os_error() }
    }
}
