//! The checkpoint pipeline.
//!
//! Most callers want [`checkpoint()`]: one call that does a whole checkpoint as a
//! [`Request`] describes it (scope, [`Destination`], [`After`]-action, compression, time limit,
//! [`Cancel`] handle, progress) and returns an [`Outcome`] or an [`Error`] whose
//! [`Error::kind`] maps to BLCR's exit codes:
//!
//! ```no_run
//! let mut req = crest_dump::Request::new(4242);
//! req.destination = crest_dump::Destination::Path { path: "/tmp/ctx".into(), policy: crest_dump::Policy::Atomic };
//! req.after = crest_dump::After::Kill;
//! match crest_dump::checkpoint(&req) {
//!     Ok(done) => println!("saved {} processes into {}", done.pids.len(), done.shown),
//!     Err(e) => eprintln!("Checkpoint failed: {e} (exit {})", e.kind().code()),
//! }
//! ```
//!
//! The steps it takes, each public for callers that need them apart:
//!
//! 1. [`freeze_scope`]: every process of the scope (BLCR's `--tree`, `--pid`, `--pgid`,
//!    `--sid`), each with [`freeze`]: `PTRACE_SEIZE` + `PTRACE_INTERRUPT` every thread,
//!    rescanning `/proc/PID/task` until no new thread appears; signals dequeued on the way are
//!    kept. Zombies of the scope are recorded with their wait status.
//! 2. [`FrozenTree::dump`]: for each process, borrow the leader for remote syscalls (all its
//!    signals blocked, a scratch page mapped) and collect every object kind (`crest-kinds`;
//!    descriptors are compared across the processes with `kcmp`), then write the page data
//!    (worker threads read target memory, cut zero pages, compress, write), then the metadata.
//!    When the processes are to run on (`--run`), their private pages were saved before the
//!    freeze, while they ran ([`precopy`]: write-protection tracked by an asynchronous
//!    userfaultfd), and only what they wrote since is saved while they are frozen; then they
//!    are let go at once. A process that cannot be tracked is saved from a copy-on-write copy
//!    forked while it is frozen ([`snapshot`]). Either way they stand still for a page-table
//!    walk, not for the copy of their memory.
//! 3. [`FrozenTree::release`]: queue the kept signals again, put back registers and masks, and
//!    let the threads go (or kill the processes, children first), exactly as they were.
//!
//! A [`Frozen`] dropped without `release` lets the target go too: a failed checkpoint never
//! leaves the target stopped or traced.
//!
//! Before a process is frozen for the first time, the checkpoint [`claim`]s it for its whole
//! length (the process runs untraced during a pre-copy and after a snapshot): a second
//! checkpoint of it fails with [`DumpError::Claimed`] in every phase of the first. The caller
//! gives the claims up with [`claim::release_all`] once the processes are let go.
//!
//! [`cancel`] or a request's [`Cancel`] handle (from another thread: a time limit, a signal)
//! makes the checkpoint in progress stop at its next safe point with [`DumpError::Cancelled`];
//! the caller drops the `Frozen` and the target goes on as it was.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod claim;
mod crew;
mod explain;
mod freeze;
mod libcr;
mod pages;
mod precopy;
pub mod snapshot;
mod tree;

use std::sync::atomic::{AtomicBool, Ordering};

pub use checkpoint::{checkpoint, After, Cancel, Destination, Error, Outcome, Policy, Request};
pub use freeze::{freeze, DumpOptions, Frozen};
pub use precopy::{note_armed, precopy, resume, Lost, Precopy};
pub use tree::{freeze_scope, FrozenTree, Ptraced, Scope};

static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Asks the checkpoint running in this process to stop at its next safe point (between
/// threads while freezing, between stages, between page batches). It then fails with
/// [`DumpError::Cancelled`]. There is no way back: a process cancels once.
pub fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// Whether [`cancel`] was called.
pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// `Err(Cancelled)` once [`cancel`] was called, or the [`Cancel`] of a checkpoint running.
pub(crate) fn check_cancel() -> Result<(), DumpError> {
    if cancelled() || checkpoint::any_cancelled() {
        Err(DumpError::Cancelled)
    } else {
        Ok(())
    }
}

/// What went wrong during a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// No such process.
    #[error("no process with PID {0}")]
    NoProcess(i32),
    /// Not allowed to trace it.
    #[error("not permitted to checkpoint PID {pid}: {why}")]
    Permission {
        /// The process.
        pid: i32,
        /// Why, and what to do.
        why: String,
    },
    /// The process is traced already: by a debugger, or by another checkpoint.
    #[error("PID {pid} is already being traced by PID {by} (a debugger or another checkpoint)")]
    Traced {
        /// The process.
        pid: i32,
        /// Its tracer.
        by: i32,
    },
    /// The process traces others, outside the scope (BLCR's `CR_EPTRACER`).
    #[error("PID {pid} traces PID {tracee} (it is a debugger or tracer of processes outside the checkpoint)")]
    Tracer {
        /// The process.
        pid: i32,
        /// A process it traces.
        tracee: i32,
    },
    /// Every process of the scope was left out by `--ptraced-skip` or `--ptracer-skip`.
    #[error("no process left to checkpoint: {why}")]
    AllSkipped {
        /// The processes left out and why.
        why: String,
    },
    /// Another checkpoint is still saving the pages of this process (from a snapshot).
    #[error("PID {pid} is already being traced by PID {by}, which is saving its pages from a snapshot")]
    Busy {
        /// The process.
        pid: i32,
        /// The tracer of the snapshot (the other checkpoint).
        by: i32,
    },
    /// Another checkpoint is working on this process (see [`claim`]): in any of its phases, pre-copy,
    /// freeze, snapshot or writing, even while the process runs untraced.
    #[error("PID {pid} is already being checkpointed{}", by.map(|b| format!(" by PID {b}")).unwrap_or_default())]
    Claimed {
        /// The process.
        pid: i32,
        /// The other checkpoint's process, when it can be seen.
        by: Option<i32>,
    },
    /// A failure injected for a test (`CREST_FAIL_AT=STEP`, see [`freeze()`]).
    #[error("failure injected at {0}")]
    Injected(&'static str),
    /// The page data does not account for all the memory to save: a fault of the checkpoint
    /// itself, caught before the image is given its name.
    #[error("the image would be incomplete, so it was not written: {0}")]
    Incomplete(String),
    /// Something in the process is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// An object could not be dumped.
    #[error(transparent)]
    Kind(#[from] crest_kinds::KindError),
    /// The tracer failed.
    #[error(transparent)]
    Trace(#[from] crest_ptrace::TraceError),
    /// /proc could not be read.
    #[error(transparent)]
    Proc(#[from] crest_proc::ProcError),
    /// Writing the image failed.
    #[error("writing the image: {0}")]
    Image(#[from] crest_image::ImageError),
    /// [`cancel`] was called.
    #[error("the checkpoint was cancelled")]
    Cancelled,
    /// A thread tracing some of the processes failed (a fault of crest); the processes it
    /// held are let go as it unwinds.
    #[error("a tracer thread of the checkpoint failed")]
    TracerLost,
}

/// Figures about one checkpoint.
#[derive(Debug, Clone, Default)]
pub struct DumpStats {
    /// Bytes of page data written.
    pub page_bytes: u64,
    /// Number of mappings.
    pub vmas: usize,
    /// Remote syscalls made.
    pub remote_syscalls: u64,
    /// Stops of the processes' threads waited for to run them.
    pub remote_stops: u64,
    /// Time the process was frozen until the image was complete, in seconds.
    pub frozen_secs: f64,
    /// How long each step took, in order (`CREST_TIMING` prints them): with a pre-copy, its
    /// steps while the processes run ([`Precopy::steps`]); then freezing, collecting each
    /// process's state, writing the pages, finishing the image.
    pub steps: Vec<(&'static str, std::time::Duration)>,
    /// In an incremental image, what was saved whole rather than as the pages written since
    /// its parent, and why (a process not tracked since, a mapping new since): `-v` says it.
    pub saved_whole: Vec<String>,
    /// TCP connections saved without a network lock (`--network-lock=skip` with `--kill`):
    /// their peers may see a reset if they send before the restart.
    pub unlocked: Vec<String>,
    /// What the image holds that the checkpoint could not see all of (an AIO context: a
    /// request in flight leaves no trace the kernel shows): `cr_checkpoint` warns of each.
    pub cautions: Vec<String>,
}
