//! The restart pipeline.
//!
//! Most callers want [`restart()`]: one call that opens the image a [`Request`] names,
//! relocates its paths, checks everything before anything starts ([`preflight`]) and restores
//! the processes as children of the caller; an [`Error`] says why not, with a `kind()` that
//! maps to BLCR's exit codes:
//!
//! ```no_run
//! let mut req = crest_restore::Request::new(crest_restore::Source::Path("/tmp/ctx".into()));
//! req.restore_pid = false;
//! let restored = crest_restore::restart(&req).expect("restarted");
//! println!("running again as PID {}", restored.pid);
//! ```
//!
//! The steps of [`restore`], which [`restart`] calls once the checks passed:
//!
//! 1. Check: the image is whole (framing and metadata checksums, validation), this kernel's
//!    vDSO has the saved layout (the files were checked by [`preflight`]).
//! 2. Husk: fork (or `clone3` with `set_tid` for the saved PID) a child that reopens the
//!    descriptors, sets directory, umask, personality, name and signal dispositions for itself,
//!    then waits to be seized ([`crest_ptrace::husk`]).
//! 3. From outside, with remote syscalls through the husk's vDSO: drop rseq, unmap all of the
//!    husk's memory, move the vDSO areas to the saved addresses, map every saved area and
//!    map its pages privately from the image ([`mapping`]: an uncompressed image on a local
//!    file system that nobody can write) or else `pread` them straight from it, set
//!    protections and madvise flags,
//!    `PR_SET_MM_MAP`, close the restore's own descriptors, restore per-thread state and
//!    pending signals. The processes of a tree are filled at once, each by a thread of its
//!    own. Meanwhile other threads check every page run's checksum; on a
//!    mismatch the husk is killed before it runs a single instruction of the restored program.
//! 4. Resource limits with `prlimit`, then XSAVE area, registers and blocked mask; the thread is
//!    interrupted once more and detached from that stop, so the kernel's own syscall-restart
//!    rules apply to a process that was checkpointed inside a blocking syscall.
//!
//! No code of crest runs in the restored process once its memory is in place.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod husk;
mod inherit;
pub mod libcr;
pub mod mapping;
mod plan;
pub mod preflight;
pub mod restart;

pub use husk::{restore, restore_chain, use_saved_contents, Barrier, RestoreOptions, Restored};
pub use restart::{restart, Error, Request, Source, DEFAULT_STREAM_TIMEOUT};

/// What went wrong during a restart.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The image cannot be used here.
    #[error("{0}")]
    Refused(String),
    /// The husk could not be created.
    #[error(transparent)]
    Spawn(#[from] crest_ptrace::husk::SpawnError),
    /// An object could not be restored.
    #[error(transparent)]
    Kind(#[from] crest_kinds::KindError),
    /// The tracer failed.
    #[error(transparent)]
    Trace(#[from] crest_ptrace::TraceError),
    /// /proc could not be read.
    #[error(transparent)]
    Proc(#[from] crest_proc::ProcError),
    /// The image is corrupt.
    #[error(transparent)]
    Image(#[from] crest_image::ImageError),
}

impl RestoreError {
    /// BLCR's failure class for `--run-on-fail-*`: `temp`, `env`, `perm` or `args`.
    pub fn class(&self) -> &'static str {
        match self {
            RestoreError::Spawn(crest_ptrace::husk::SpawnError::PidInUse(_)) => "temp",
            RestoreError::Spawn(crest_ptrace::husk::SpawnError::PidNeedsPrivilege(_)) => "env",
            RestoreError::Refused(_) => "env",
            _ => "perm",
        }
    }
}
