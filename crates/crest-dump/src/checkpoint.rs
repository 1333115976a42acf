//! [`checkpoint`]: one whole checkpoint, as `cr_checkpoint` (and anything else that checkpoints
//! a process: libcr, a batch system) asks for it with a [`Request`].
//!
//! It refuses early what cannot be checkpointed at all (a kernel thread, init, a scope that
//! holds the caller itself), opens the [`Destination`] before anything is frozen, picks how the
//! pages are saved (a pre-copy while the processes run, a copy-on-write snapshot, or everything
//! while frozen), retries once when a concurrent tracer was just letting go, syncs and names the
//! image, then lets the processes go, kills them or signals them ([`After`]). A failure leaves
//! every process running as it was and removes what was written to a named file; the
//! [`Error`] says why in words read from `/proc` (who traces the process, why ptrace refuses
//! it) and has an [`ErrorKind`] for the exit code.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crest_kinds::exit::{signal_name, ErrorKind};
use crest_kinds::memory::SavePolicy;
use crest_kinds::progress::Progress;
use crest_ptrace::sys;

use crate::{explain, DumpError, DumpOptions, DumpStats, Scope};

/// What to checkpoint, where to, and what becomes of the processes afterwards.
pub struct Request<'a> {
    /// The process (or group, or session) named.
    pub pid: i32,
    /// Which processes: the tree under `pid` (BLCR's default), `pid` alone, its group or session.
    pub scope: Scope,
    /// Where the image goes.
    pub destination: Destination,
    /// What happens to the processes once the image is whole.
    pub after: After,
    /// Compress page data with zstd at this level.
    pub compress: Option<i32>,
    /// File mappings whose contents go into the image (BLCR's `--save-*`).
    pub save: SavePolicy,
    /// Leave out (and list in the image) descriptors that cannot be restored, rather than refuse.
    pub drop_unsupported: bool,
    /// With [`After::Kill`]: drop the packets of the TCP connections saved from before their
    /// state is read until `cr_restart` has them back (a netfilter table, through `nft`), so
    /// that a peer outside the image sees no reset; a connection that cannot be locked is
    /// refused. Off (`--network-lock=skip`): not locked, and listed in
    /// [`DumpStats::unlocked`](crate::DumpStats::unlocked).
    pub network_lock: bool,
    /// Largest file deleted while open or mapped whose contents are saved in the image; a
    /// larger one is refused (`--deleted-max`).
    pub deleted_max: u64,
    /// Save a unix datagram socket connected to a socket outside the checkpoint, to be
    /// connected again to that socket's address at restart (`--ext-unix-sk`).
    pub external_unix: bool,
    /// Sync the image (and its directory) to disk before it is given its name.
    pub sync: bool,
    /// Give up, leaving the processes as they were, when the checkpoint takes longer.
    pub time_limit: Option<Duration>,
    /// Stops the checkpoint from another thread (see [`Cancel`]).
    pub cancel: Option<Cancel>,
    /// Counts the page bytes saved, for a progress display.
    pub progress: Option<Arc<Progress>>,
    /// When the processes run on: save their pages while they run (a pre-copy), so they stand
    /// still only for what they write meanwhile. Off: `CREST_NO_PRECOPY` of the command.
    pub precopy: bool,
    /// When the processes run on and cannot be pre-copied: save their pages from a
    /// copy-on-write snapshot, so they stand still only for a `fork`. Off (the pages are saved
    /// while they are frozen): `CREST_NO_SNAPSHOT` of the command.
    pub snapshot: bool,
    /// Told what happens, as it happens (the destination is open, ...).
    pub on_event: Option<&'a (dyn Fn(Event<'_>) + Sync)>,
    /// The process that asked for the checkpoint, as libcr callbacks are told it
    /// (`cr_get_checkpoint_info()->requester`); by default the caller.
    pub requester: Option<i32>,
    /// The caller checkpoints on behalf of a process of the scope (libcr's
    /// `cr_request_checkpoint` runs `cr_checkpoint` as its child): the caller and its parent
    /// are left out of the scope instead of the checkpoint being refused for holding itself.
    pub on_behalf: bool,
    /// Leave the write tracking armed in the processes after the checkpoint (they must run
    /// on), so that a later incremental checkpoint saves only what they write meanwhile.
    pub track: bool,
    /// Make an incremental image: only the pages written since the checkpoint whose image is
    /// this, which must have left the tracking armed (implies `track`). When it cannot be
    /// taken up, the image is a full one ([`Outcome::full_because`] says why).
    pub incremental: Option<PathBuf>,
    /// What to do with a process of the scope that a debugger traces (BLCR's `--ptraced-*`).
    pub ptraced: crate::Ptraced,
    /// Leave out the processes that trace others, and under `--tree` their descendants
    /// (BLCR's `--ptracer-skip`); without it such a process is refused (`--ptracer-error`).
    pub ptracer_skip: bool,
}

impl Request<'_> {
    /// A checkpoint of the tree of `pid` into `context.PID`, replaced atomically, synced, the
    /// processes running on afterwards: `cr_checkpoint PID`.
    pub fn new(pid: i32) -> Self {
        Request {
            pid,
            scope: Scope::Tree,
            destination: Destination::Path { path: PathBuf::from(format!("context.{pid}")), policy: Policy::Atomic },
            after: After::Run,
            compress: None,
            save: SavePolicy::default(),
            drop_unsupported: false,
            network_lock: true,
            deleted_max: crest_kinds::fd::DELETED_MAX,
            external_unix: false,
            sync: true,
            time_limit: None,
            cancel: None,
            progress: None,
            precopy: true,
            snapshot: true,
            on_event: None,
            requester: None,
            on_behalf: false,
            track: false,
            incremental: None,
            ptraced: crate::Ptraced::Error,
            ptracer_skip: false,
        }
    }
}

/// Where an image goes.
pub enum Destination {
    /// A file by name. A symbolic link is followed; a FIFO, a socket or a character device is
    /// written into as a stream whatever the policy; a directory or a block device is refused.
    Path {
        /// The file.
        path: PathBuf,
        /// How an existing file is treated.
        policy: Policy,
    },
    /// A descriptor of this process, opened again through `/proc/self/fd` (so the caller's
    /// stays open and keeps its offset semantics).
    Fd(i32),
    /// An open file, written from its current offset.
    File(File),
    /// Any writer: the image is built in an anonymous memory file and copied into it once
    /// whole (restore needs page data at offsets, so the image is not streamed piecemeal).
    Writer(Mutex<Box<dyn Write + Send>>),
}

impl Destination {
    /// Any writer as a destination.
    pub fn writer(w: impl Write + Send + 'static) -> Self {
        Destination::Writer(Mutex::new(Box::new(w)))
    }
}

/// How a named destination is written (BLCR's `--atomic`, `--backup`, `--clobber`,
/// `--noclobber`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Written under a temporary name (or none: `O_TMPFILE`) and given its name when whole.
    Atomic,
    /// As [`Policy::Atomic`], an existing file first renamed: to this name, or `NAME.~N~`.
    Backup(Option<PathBuf>),
    /// Written in place, an existing file truncated.
    Clobber,
    /// Written in place; an existing file is refused (`EEXIST`).
    NoClobber,
}

/// What becomes of the processes once the image is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// They run on (BLCR's `--run`).
    Run,
    /// They are killed (`--kill`): they never run beyond the moment the image describes.
    Kill,
    /// Each gets this signal after being let go (`--stop`, `--cont`, `--term`, `--signal N`).
    Signal(i32),
}

impl After {
    /// BLCR's after-action as a signal number: 0 for running on.
    pub fn from_signal(sig: i32) -> After {
        match sig {
            0 => After::Run,
            libc::SIGKILL => After::Kill,
            s => After::Signal(s),
        }
    }

    /// The signal number, 0 for running on.
    pub fn signal(self) -> i32 {
        match self {
            After::Run => 0,
            After::Kill => libc::SIGKILL,
            After::Signal(s) => s,
        }
    }

    /// Whether the processes go on running after the checkpoint (so their pages may be saved
    /// while they run).
    pub fn runs_on(self) -> bool {
        matches!(self.signal(), 0 | libc::SIGSTOP | libc::SIGCONT)
    }
}

/// Stops a checkpoint from another thread: it ends at its next safe point (never while a thread
/// is borrowed) with [`Error::Interrupted`], the processes as they were. Cloned handles share
/// one state. While a checkpoint runs, cancelling any registered handle (or [`crate::cancel`])
/// stops every checkpoint running in this process.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    flag: AtomicBool,
    signal: AtomicI32,
}

impl Cancel {
    /// A handle not cancelled yet.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Cancels.
    pub fn cancel(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
    }

    /// Cancels because signal `sig` arrived (the error names it). The first reason stays.
    pub fn cancel_by_signal(&self, sig: i32) {
        self.cancel_for(sig);
    }

    /// Cancels for `why`: a signal number, or [`TIMED_OUT`]; the first reason stays.
    fn cancel_for(&self, why: i32) {
        let _ = self.0.signal.compare_exchange(0, why, Ordering::SeqCst, Ordering::SeqCst);
        self.cancel();
    }

    fn timed_out(&self) -> bool {
        self.0.signal.load(Ordering::SeqCst) == TIMED_OUT
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// The signal it was cancelled by, if one was named.
    pub fn signal(&self) -> Option<i32> {
        Some(self.0.signal.load(Ordering::SeqCst)).filter(|&s| s > 0)
    }

    fn same(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The reason of a cancel by the time limit.
const TIMED_OUT: i32 = -1;

/// The handles of the checkpoints running in this process (see `crate::check_cancel`).
static ACTIVE: Mutex<Vec<Cancel>> = Mutex::new(Vec::new());

pub(crate) fn any_cancelled() -> bool {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).iter().any(Cancel::is_cancelled)
}

/// Keeps a handle registered for the length of a checkpoint.
struct Registered(Cancel);

impl Registered {
    fn new(c: Cancel) -> Self {
        ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).push(c.clone());
        Registered(c)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| !c.same(&self.0));
    }
}

/// What happens during a checkpoint, for a caller that says so.
#[derive(Debug)]
pub enum Event<'a> {
    /// The destination is open (nothing is frozen yet).
    Opened {
        /// Where the image goes, resolved.
        target: &'a Target,
        /// Its name for messages (`<fdN>` for a descriptor).
        shown: &'a str,
    },
    /// Every process of the scope is frozen; nothing of their state has been read yet. A
    /// caller that checkpoints several parts of one job at one instant (`cr_checkpoint
    /// --coordinated`) waits here until every part is frozen: cancelling the request now lets
    /// the processes go as they were.
    Frozen {
        /// The processes frozen.
        pids: &'a [i32],
    },
    /// The image is complete but not named yet, and the processes are still frozen: the last
    /// moment at which cancelling the request leaves no image and the processes as they were.
    Whole {
        /// The image's name for messages.
        shown: &'a str,
    },
}

/// A destination once resolved: what is written, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A file written under a temporary name and given its name when whole.
    Atomic {
        /// The name.
        path: PathBuf,
        /// The temporary name, where the file system has no `O_TMPFILE`.
        tmp: PathBuf,
        /// An existing file is renamed first: `Some(None)` to `NAME.~N~`, `Some(Some(b))` to b.
        backup: Option<Option<PathBuf>>,
    },
    /// A file written in place.
    Direct {
        /// The name.
        path: PathBuf,
        /// An existing file is refused.
        exclusive: bool,
    },
    /// A descriptor of the caller.
    Fd(i32),
    /// A FIFO, a socket or a character device named by path, written into as a stream.
    Stream {
        /// The name.
        path: PathBuf,
        /// What it is.
        kind: StreamKind,
    },
    /// An open file.
    File,
    /// A writer, given the image once whole.
    Writer,
}

impl Target {
    /// Whether what was written cannot be taken back (a stream, a descriptor, a writer): after
    /// a failure it holds part of an image.
    pub fn is_stream(&self) -> bool {
        matches!(self, Target::Fd(_) | Target::Stream { .. } | Target::File | Target::Writer)
    }
}

/// What a [`Target::Stream`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A named pipe: it must have a reader already.
    Fifo,
    /// A unix socket, connected to.
    Socket,
    /// A character device.
    CharDevice,
}

/// A checkpoint that was made.
#[derive(Debug)]
pub struct Outcome {
    /// Every process saved, the named one first.
    pub pids: Vec<i32>,
    /// Where the image went, for messages.
    pub shown: String,
    /// Figures of the dump.
    pub stats: DumpStats,
    /// Page bytes saved by a pre-copy while the processes ran.
    pub precopy_bytes: u64,
    /// The time the whole checkpoint took.
    pub elapsed: Duration,
    /// An incremental checkpoint that made a full image: why.
    pub full_because: Option<String>,
}

/// What [`Error::Interrupted`] and others say was left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// The process named.
    pub pid: i32,
    /// For a stream destination, its name: what was written to it is not a usable image.
    pub stream: Option<String>,
}

impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.stream {
            Some(shown) => write!(f, "PID {} was left running as it was; what was written to {shown} is not a usable image", self.pid),
            None => write!(f, "PID {} was left running as it was and no image was written", self.pid),
        }
    }
}

/// Why a checkpoint failed. The messages are the ones `cr_checkpoint` prints after
/// "Checkpoint failed: "; [`Error::kind`] gives the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The destination names a directory.
    #[error("{} is a directory (use --dir)", path.display())]
    IsDirectory {
        /// The destination.
        path: PathBuf,
    },
    /// The destination names a block device.
    #[error("{} is a block device; an image goes to a regular file, a FIFO, a socket or a character device", path.display())]
    BlockDevice {
        /// The destination.
        path: PathBuf,
    },
    /// The destination file cannot be created, written or named.
    #[error("cannot write the image {}: {why}", path.display())]
    Destination {
        /// The destination.
        path: PathBuf,
        /// Why, with what to do.
        why: String,
        /// The error.
        source: std::io::Error,
    },
    /// The destination descriptor cannot be used.
    #[error("descriptor {fd}{}", descriptor_words(source))]
    Descriptor {
        /// The descriptor.
        fd: i32,
        /// The error reopening it.
        source: std::io::Error,
    },
    /// A kernel thread or init: nothing to save, or nothing that could come back.
    #[error("not permitted to checkpoint PID {pid}: {why}")]
    Prohibited {
        /// The process.
        pid: i32,
        /// Why.
        why: String,
    },
    /// The scope holds the checkpointing process itself (BLCR's `CR_CHKPT_PROHIBIT_SELF`).
    #[error(
        "{what} contains cr_checkpoint itself (PID {parent}, working in PID {me}), which cannot checkpoint itself; nothing was frozen. Start the program to checkpoint in the background, or from another shell, and name its PID"
    )]
    ContainsSelf {
        /// The scope, in words.
        what: String,
        /// The checkpointing command (the parent of the process working).
        parent: i32,
        /// The process doing the checkpoint.
        me: i32,
    },
    /// The ID names no process, group or session that could be checkpointed (0 or negative).
    #[error("{0}")]
    NotAnId(String),
    /// No such process.
    #[error("no process with PID {0}")]
    NoProcess(i32),
    /// A libcr callback cancelled the checkpoint (`CR_CHECKPOINT_TEMP_FAILURE` or
    /// `_PERM_FAILURE`): the process, the code (BLCR's `CR_ETEMPFAIL`, `CR_EPERMFAIL` or the
    /// callback's own), whether permanently (every process of the request was killed).
    #[error("{}", refused_words(*pid, *code, *perm))]
    Refused {
        /// The process whose callback refused.
        pid: i32,
        /// The code.
        code: u16,
        /// Permanent: the processes were killed.
        perm: bool,
    },
    /// Every process of the request asked to be left out (`CR_CHECKPOINT_OMIT`, or libcr_omit);
    /// the PID named. Some that do leave the rest to be checkpointed.
    #[error("no processes checkpointed: every process of the request (PID {0} named) asked to be left out of checkpoints (CR_CHECKPOINT_OMIT or libcr_omit)")]
    Omitted(i32),
    /// The process ended during the checkpoint.
    #[error("PID {0} ended during the checkpoint, so there is nothing to save; no image was written")]
    Ended(i32),
    /// Cancelled through [`Request::cancel`] (by a signal, when one was named).
    #[error("interrupted by {}; {left}", signal.map_or_else(|| "the caller".to_string(), signal_name))]
    Interrupted {
        /// The signal that cancelled it.
        signal: Option<i32>,
        /// What was left.
        left: Left,
    },
    /// The time limit ran out.
    #[error("the checkpoint did not finish within the --time limit of {} s; {left}", limit.as_secs())]
    TimedOut {
        /// The limit.
        limit: Duration,
        /// What was left.
        left: Left,
    },
    /// Another checkpoint is working on the process.
    #[error("PID {pid} is already being checkpointed{}; try again when that checkpoint is done", by.as_ref().map(|(b, n)| format!(" by PID {b}{n}")).unwrap_or_default())]
    Claimed {
        /// The process.
        pid: i32,
        /// The other checkpoint, and its name in `" (NAME)"` form.
        by: Option<(i32, String)>,
    },
    /// Another checkpoint is saving the process's pages from a snapshot.
    #[error("PID {pid} is already being traced by PID {by}{name}, another checkpoint that is saving its pages from a snapshot; try again when it is done")]
    Busy {
        /// The process.
        pid: i32,
        /// The other checkpoint.
        by: i32,
        /// Its name, `" (NAME)"`.
        name: String,
    },
    /// A tracer (a debugger) that is part of the scope traces a process of it.
    #[error("PID {traced}{traced_name} is being traced by PID {by}{name}, which is part of the checkpoint itself: a tracer cannot be checkpointed together with the process it traces; checkpoint them when it has let go")]
    TracerInScope {
        /// The traced process.
        traced: i32,
        /// Its name, `" (NAME)"`.
        traced_name: String,
        /// The tracer.
        by: i32,
        /// Its name, `" (NAME)"`.
        name: String,
    },
    /// `--ptraced-allow` was given, but the process has a tracer already and Linux allows only one.
    #[error("PID {pid} is traced by PID {by}{name}; --ptraced-allow asks to checkpoint it anyway, but Linux lets a process have one tracer only and crest must trace it to save it: detach the tracer first (quit strace, or `detach` in gdb) and checkpoint again, or leave it out with --ptraced-skip")]
    SecondTracer {
        /// The process.
        pid: i32,
        /// Its tracer.
        by: i32,
        /// The tracer's name, `" (NAME)"`.
        name: String,
    },
    /// A process of the scope traces one outside it (BLCR's `CR_EPTRACER`).
    #[error("PID {pid}{name} traces PID {tracee}{tracee_name}, which is not part of the checkpoint: a restart could not give it back what it traces; checkpoint them when it has let go, or leave the tracer out with --ptracer-skip")]
    Tracer {
        /// The tracer.
        pid: i32,
        /// Its name, `" (NAME)"`.
        name: String,
        /// A process it traces.
        tracee: i32,
        /// Its name, `" (NAME)"`.
        tracee_name: String,
    },
    /// `--ptraced-skip` or `--ptracer-skip` left nothing to checkpoint.
    #[error("no process left to checkpoint: {why}")]
    AllSkipped {
        /// What was left out and why.
        why: String,
    },
    /// The process is traced by a debugger or another checkpoint.
    #[error("PID {pid} is already being traced by PID {by}{name}, another checkpoint or a debugger; try again when it is done")]
    Traced {
        /// The process.
        pid: i32,
        /// Its tracer.
        by: i32,
        /// The tracer's name, `" (NAME)"`.
        name: String,
    },
    /// ptrace refused the process.
    #[error("not permitted to checkpoint PID {pid}: {why} ({left})")]
    NotPermitted {
        /// The process refused.
        pid: i32,
        /// Why, as far as it can be told from outside.
        why: String,
        /// What was left.
        left: Left,
    },
    /// Writing the image failed.
    #[error("writing the image {shown}: {}; {left}", io_words(source))]
    Write {
        /// The destination, for messages.
        shown: String,
        /// The error.
        source: std::io::Error,
        /// What was left.
        left: Left,
    },
    /// Any other failure of the dump.
    #[error("{source} ({left})")]
    Dump {
        /// The failure.
        source: DumpError,
        /// What was left.
        left: Left,
    },
    /// The image was written but letting the processes go failed.
    #[error("the image {shown} was written, but letting PID {pid} go failed: {source}")]
    Release {
        /// The destination, for messages.
        shown: String,
        /// The process named.
        pid: i32,
        /// The failure.
        source: DumpError,
    },
    /// The image was written but the after-action signal could not be sent.
    #[error("sending {} to PID {pid} after the checkpoint: {source}", signal_name(*signal))]
    Signal {
        /// The process.
        pid: i32,
        /// The signal.
        signal: i32,
        /// The error.
        source: crest_ptrace::TraceError,
    },
}

impl Error {
    /// The class of the failure, and so the exit code ([`ErrorKind::code`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::IsDirectory { .. } => ErrorKind::Os(libc::EISDIR),
            Error::BlockDevice { .. } | Error::NotAnId(_) => ErrorKind::Invalid,
            Error::Destination { source, .. } | Error::Write { source, .. } => ErrorKind::of_io(source),
            Error::Descriptor { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT) | None => ErrorKind::BadDescriptor,
                Some(e) => ErrorKind::of_errno(e),
            },
            Error::Prohibited { .. } | Error::NotPermitted { .. } => ErrorKind::NotPermitted,
            Error::ContainsSelf { .. } => ErrorKind::Deadlock,
            Error::NoProcess(_) | Error::Ended(_) | Error::Signal { .. } | Error::Omitted(_) => ErrorKind::NoProcess,
            Error::Refused { code, .. } => ErrorKind::Os(*code as i32 & 0xff),
            Error::Interrupted { .. } => ErrorKind::Interrupted,
            Error::TimedOut { .. } => ErrorKind::TimedOut,
            Error::Claimed { .. } | Error::Busy { .. } | Error::TracerInScope { .. } | Error::Traced { .. } | Error::SecondTracer { .. } | Error::AllSkipped { .. } => ErrorKind::Traced,
            Error::Tracer { .. } => ErrorKind::Tracer,
            Error::Dump { source, .. } => match source {
                DumpError::Permission { .. } => ErrorKind::NotPermitted,
                DumpError::Unsupported(_) | DumpError::Kind(crest_kinds::KindError::Unsupported(_)) => ErrorKind::Unsupported,
                _ => ErrorKind::Failed,
            },
            Error::Release { .. } => ErrorKind::Failed,
        }
    }
}

fn refused_words(pid: i32, code: u16, perm: bool) -> String {
    let why = match code as i32 {
        crest_ptrace::libcr::CR_ETEMPFAIL | crest_ptrace::libcr::CR_EPERMFAIL => String::new(),
        c => format!(" (code {c})"),
    };
    if perm {
        format!("cancelled by the application: a checkpoint callback of PID {pid} cannot let it be checkpointed{why}; every process of the request was killed (CR_CHECKPOINT_PERM_FAILURE)")
    } else {
        format!("cancelled by the application: a checkpoint callback of PID {pid} asked to try again later{why} (CR_CHECKPOINT_TEMP_FAILURE); the processes run on as they were")
    }
}

/// Checkpoints what `req` names. See the [module documentation](self).
pub fn checkpoint(req: &Request<'_>) -> Result<Outcome, Error> {
    let cancel = req.cancel.clone().unwrap_or_default();
    let _registered = Registered::new(cancel.clone());
    // The watchdog ends when `_done` is dropped, with the checkpoint.
    let (_done, wait) = std::sync::mpsc::channel::<()>();
    if let Some(limit) = req.time_limit {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            if wait.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                cancel.cancel_for(TIMED_OUT);
            }
        });
    }
    if req.on_behalf {
        crate::tree::leave_out(vec![std::process::id() as i32, std::os::unix::process::parent_id() as i32]);
    }
    crate::tree::set_ptrace_policy(req.ptraced, req.ptracer_skip);
    let mut coop = None;
    let r = run(req, &cancel, &mut coop);
    crate::tree::set_ptrace_policy(crate::Ptraced::Error, false);
    crate::tree::leave_out(Vec::new());
    crate::tree::bring_in(Vec::new());
    // Processes that use libcr wait in their callbacks for the outcome.
    if let Some(coop) = coop {
        match &r {
            Ok(_) if req.after == After::Kill => {}
            Ok(_) => coop.go_on(),
            Err(e) => coop.fail(e.kind().code()),
        }
    }
    // Every process is let go (or killed) by now: other checkpoints may take them.
    crate::claim::release_all();
    r
}

/// The image's name for libcr callbacks (`cr_checkpoint_info.dest`): the full path of a file,
/// device or FIFO; empty when it is not in a file system.
fn dest_name(target: &Target) -> String {
    let abs = |p: &Path| std::path::absolute(p).map(|p| p.display().to_string()).unwrap_or_default();
    match target {
        Target::Atomic { path, .. } | Target::Direct { path, .. } | Target::Stream { path, .. } => abs(path),
        Target::Fd(fd) => std::fs::read_link(format!("/proc/self/fd/{fd}")).ok().filter(|p| p.is_absolute()).map(|p| p.display().to_string()).unwrap_or_default(),
        Target::File | Target::Writer => String::new(),
    }
}

fn run(req: &Request<'_>, cancel: &Cancel, coop: &mut Option<crate::libcr::Cooperation>) -> Result<Outcome, Error> {
    let pid = req.pid;
    crest_kinds::memory::forget_images();
    // A process there at the start and missing later has ended during the checkpoint (killed
    // while a pre-copy or the freeze was under way, say), which is not "no such process".
    let existed = crest_proc::read(pid, "stat").is_ok();
    let target = resolve(&req.destination)?;
    // What cannot be checkpointed at all is refused before the destination is even opened.
    match explain::refuse_early(req.scope, pid) {
        Err(Error::ContainsSelf { .. }) if req.on_behalf => {}
        r => r?,
    }
    let signal = req.after.signal();

    // Open the destination before freezing: a bad destination must not stop the target at all.
    // An unnamed temporary file vanishes by itself if the checkpoint dies; a named one is
    // removed on failure (and replaced by the next checkpoint to the same name).
    let mut unnamed = false;
    let (file, shown): (File, String) = match (&target, &req.destination) {
        (Target::Fd(fd), _) => (File::from(reopen_fd(*fd).map_err(|source| Error::Descriptor { fd: *fd, source })?), format!("<fd{fd}>")),
        (Target::Stream { path, kind }, _) => (open_stream(path, *kind).map_err(|e| stream_error(e, path, *kind))?, path.display().to_string()),
        (Target::Atomic { tmp, path, .. }, _) => {
            let f = match open_unnamed(parent_dir(path)).map_err(|e| open_error(e, path))? {
                Some(f) => {
                    unnamed = true;
                    f
                }
                None => open_new(tmp, false, true).map_err(|e| open_error(e, path))?,
            };
            (f, path.display().to_string())
        }
        (Target::Direct { path, exclusive }, _) => (open_new(path, *exclusive, true).map_err(|e| open_error(e, path))?, path.display().to_string()),
        (Target::File, Destination::File(f)) => {
            (f.try_clone().map_err(|e| Error::Write { shown: "the file given".into(), source: e, left: Left { pid, stream: None } })?, "the file given".to_string())
        }
        (_, _) => {
            let memfd = sys::memfd("crest-image", 0).map_err(|e| Error::Write { shown: "memory".into(), source: e, left: Left { pid, stream: None } })?;
            (File::from(memfd), "the writer given".to_string())
        }
    };
    if let Some(tell) = req.on_event {
        tell(Event::Opened { target: &target, shown: &shown });
    }
    let cleanup = || match &target {
        Target::Atomic { tmp, .. } if !unnamed => {
            let _ = std::fs::remove_file(tmp);
        }
        Target::Direct { path, .. } => {
            let _ = std::fs::remove_file(path);
        }
        _ => {}
    };
    let started = Instant::now();
    // Processes that use libcr run their callbacks before anything is frozen.
    let me = std::process::id() as i32;
    match crate::libcr::callbacks(req.scope, pid, req.requester.unwrap_or(me), signal, &dest_name(&target)) {
        Ok(c) => {
            let mut out = c.omitted();
            if req.on_behalf {
                out.extend([me, std::os::unix::process::parent_id() as i32]);
            }
            crate::tree::leave_out(out);
            crate::tree::bring_in(c.forwarded());
            *coop = Some(c);
        }
        Err(e) => {
            cleanup();
            let left = Left { pid, stream: target.is_stream().then(|| shown.clone()) };
            return Err(match e {
                crate::libcr::CoopError::Cancelled => match req.time_limit {
                    Some(limit) if cancel.timed_out() => Error::TimedOut { limit, left },
                    _ => Error::Interrupted { signal: cancel.signal(), left },
                },
                crate::libcr::CoopError::Ended(p) => Error::Ended(p),
                crate::libcr::CoopError::Refused { pid, code, perm } => Error::Refused { pid, code, perm },
                crate::libcr::CoopError::Omitted(p) => Error::Omitted(p),
                crate::libcr::CoopError::Io(source) => Error::Write { shown: "the socket libcr processes answer on".into(), source, left },
            });
        }
    }
    // Processes killed after the checkpoint die with their TCP connections in repair mode:
    // those are locked until the restart.
    use crest_kinds::fd::netlock::{arm, Mode};
    arm(
        match (req.after, req.network_lock) {
            (After::Kill, true) => Mode::Nft,
            (After::Kill, false) => Mode::Skip,
            _ => Mode::Off,
        },
        pid,
    );
    // Set once the pages were pre-copied: a process missing after that has ended meanwhile.
    let mut precopied = false;
    let own_progress;
    let progress = match &req.progress {
        Some(p) => p.as_ref(),
        None => {
            own_progress = Progress::default();
            &own_progress
        }
    };
    let full_because = std::sync::Mutex::new(None);
    let result = (|| -> Result<_, DumpError> {
        // When the process is to run on after the checkpoint, it runs on while its pages are
        // saved too: they are pre-copied while it runs, and only those it writes meanwhile are
        // saved again while it is frozen (a process that cannot be tracked so is saved from a
        // copy-on-write snapshot). When it is to die, it must not run on beyond the moment the
        // image describes.
        let snapshot = req.after.runs_on() && req.snapshot;
        let can_track = snapshot && req.precopy;
        let track = (req.track || req.incremental.is_some()) && can_track;
        let opts =
            DumpOptions { snapshot, compress: req.compress, progress, save: req.save, drop_unsupported: req.drop_unsupported, deleted_max: req.deleted_max, external_unix: req.external_unix, track };
        // An incremental image takes up the write tracking the parent's checkpoint left.
        let resumed = match &req.incremental {
            Some(_) if !can_track => Err(crate::Lost("the processes do not run on after this checkpoint, or pre-copy is off (CREST_NO_PRECOPY)".into())),
            Some(path) => crest_image::ImageFile::open(path).map_err(|e| crate::Lost(format!("{}: {e}", path.display()))).and_then(|p| crate::resume(pid, &file, &opts, &p, path)),
            None => Err(crate::Lost(String::new())),
        };
        let pre = match resumed {
            Ok(p) => Some(p),
            Err(crate::Lost(why)) => {
                // Taking up the tracking stops at a cancel too: that is no reason for a full image.
                crate::check_cancel()?;
                if req.incremental.is_some() {
                    *full_because.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                }
                if snapshot && req.precopy {
                    tracer_race_retried(pid, || crate::precopy(req.scope, pid, &file, &opts))?
                } else {
                    None
                }
            }
        };
        precopied = pre.is_some();
        let precopy_bytes = pre.as_ref().map_or(0, |p| p.bytes);
        let precopy_steps = pre.as_ref().map(|p| p.steps.clone()).unwrap_or_default();
        let freezing = Instant::now();
        let mut frozen = tracer_race_retried(pid, || crate::freeze_scope(req.scope, pid))?;
        let froze = freezing.elapsed();
        if let Some(tell) = req.on_event {
            tell(Event::Frozen { pids: &frozen.pids() });
            crate::check_cancel()?;
        }
        let (image, mut stats) = frozen.dump(&file, &opts, pre)?;
        stats.steps.insert(0, ("freeze", froze));
        stats.steps.splice(0..0, precopy_steps);
        // Pipes and sockets cannot be synced; BLCR syncs what can be.
        if req.sync && file.metadata().is_ok_and(|m| m.file_type().is_file()) && !matches!(target, Target::Writer) {
            file.sync_all().map_err(crest_image::ImageError::Io)?;
        }
        if let Some(tell) = req.on_event {
            tell(Event::Whole { shown: &shown });
        }
        // Last chance to stop: once the image has its name the checkpoint is complete.
        crate::check_cancel()?;
        Ok((frozen, stats, precopy_bytes, image.tracking))
    })();
    let left = Left { pid, stream: target.is_stream().then(|| shown.clone()) };
    let (frozen, stats, precopy_bytes, tracking) = match result {
        Ok(x) => x,
        Err(DumpError::NoProcess(p)) if precopied || (existed && p == pid) => {
            cleanup();
            return Err(Error::Ended(pid));
        }
        Err(DumpError::Cancelled) => {
            cleanup();
            return Err(match req.time_limit {
                Some(limit) if cancel.timed_out() => Error::TimedOut { limit, left },
                _ => Error::Interrupted { signal: cancel.signal(), left },
            });
        }
        Err(e) => {
            cleanup();
            return Err(explain::dump_error(pid, e, &shown, left));
        }
    };
    // The image is whole: put it in place, then apply the after-action.
    let placed = match &target {
        Target::Atomic { path, tmp, backup } => (|| -> std::io::Result<()> {
            if let Some(name) = backup {
                if path.exists() {
                    let b = match name {
                        Some(n) => n.clone(),
                        None => (1..).map(|n| PathBuf::from(format!("{}.~{n}~", path.display()))).find(|p| !p.exists()).expect("some number is free"),
                    };
                    std::fs::rename(path, b)?;
                }
            }
            if unnamed {
                give_name(&file, path, tmp)?;
            } else {
                std::fs::rename(tmp, path)?;
            }
            if req.sync {
                let _ = File::open(parent_dir(path)).and_then(|d| d.sync_all());
            }
            Ok(())
        })()
        .map_err(|e| open_error(e, path)),
        Target::Writer => copy_to_writer(&file, &req.destination).map_err(|source| Error::Write { shown: shown.clone(), source, left: left.clone() }),
        _ => Ok(()),
    };
    if let Err(e) = placed {
        cleanup();
        drop(frozen);
        return Err(e);
    }
    // The image is in place: the tracking it lists may be taken up from now on.
    crate::note_armed(&tracking);
    let kill = signal == libc::SIGKILL;
    let pids = frozen.pids();
    frozen.release(kill).map_err(|source| Error::Release { shown: shown.clone(), pid, source })?;
    if signal != 0 && !kill {
        // As BLCR: every process of the scope gets the signal.
        for &p in &pids {
            sys::kill(p, signal).map_err(|source| Error::Signal { pid: p, signal, source })?;
        }
    }
    Ok(Outcome { pids, shown, stats, precopy_bytes, elapsed: started.elapsed(), full_because: full_because.into_inner().unwrap_or_else(|e| e.into_inner()) })
}

/// Copies the finished image in `file` (a memory file) into the writer of `dest`.
fn copy_to_writer(file: &File, dest: &Destination) -> std::io::Result<()> {
    let Destination::Writer(w) = dest else { return Ok(()) };
    let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
    let mut f = file;
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
    std::io::copy(&mut f, &mut *w)?;
    w.flush()
}

/// What a destination is, once links are followed and the file looked at.
fn resolve(dest: &Destination) -> Result<Target, Error> {
    let (path, policy) = match dest {
        Destination::Fd(fd) => return Ok(Target::Fd(*fd)),
        Destination::File(_) => return Ok(Target::File),
        Destination::Writer(_) => return Ok(Target::Writer),
        Destination::Path { path, policy } => (path, policy),
    };
    // As BLCR: a symbolic link is followed (its target is what gets replaced, in the target's
    // directory); a FIFO, a socket or a character device is written into; a directory or a
    // block device is refused.
    let path = follow_links(path);
    if let Ok(md) = std::fs::metadata(&path) {
        use std::os::unix::fs::FileTypeExt;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            return Err(Error::IsDirectory { path });
        } else if ft.is_block_device() {
            return Err(Error::BlockDevice { path });
        } else if ft.is_fifo() {
            Some(StreamKind::Fifo)
        } else if ft.is_socket() {
            Some(StreamKind::Socket)
        } else if ft.is_char_device() {
            Some(StreamKind::CharDevice)
        } else {
            None
        };
        if let Some(kind) = kind {
            return Ok(Target::Stream { path, kind });
        }
    }
    Ok(match policy {
        Policy::Clobber => Target::Direct { path, exclusive: false },
        Policy::NoClobber => Target::Direct { path, exclusive: true },
        Policy::Atomic | Policy::Backup(_) => {
            if path.is_dir() {
                return Err(Error::IsDirectory { path });
            }
            let base = path.file_name().map(|b| b.to_string_lossy().into_owned()).unwrap_or_default();
            let tmp = parent_dir(&path).join(format!(".{base}.tmp"));
            let backup = match policy {
                Policy::Backup(b) => Some(b.clone()),
                _ => None,
            };
            Target::Atomic { path, tmp, backup }
        }
    })
}

/// `freeze` (which seizes `pid`), once more if it was refused while another tracer (a
/// concurrent checkpoint) was just letting the process go, so that a real refusal is told
/// from a race.
fn tracer_race_retried<T>(pid: i32, freeze: impl Fn() -> Result<T, DumpError>) -> Result<T, DumpError> {
    match freeze() {
        Err(DumpError::Permission { .. } | DumpError::Traced { .. }) if explain::tracer_of(pid) == 0 => freeze(),
        r => r,
    }
}

/// The caller's descriptor `fd`, opened again through /proc so closing ours leaves theirs open.
fn reopen_fd(fd: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    OpenOptions::new().write(true).open(format!("/proc/self/fd/{fd}")).map(Into::into)
}

fn open_new(path: &Path, excl: bool, trunc: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).mode(0o400).custom_flags(libc::O_NOCTTY);
    if excl {
        o.create_new(true);
    } else {
        o.create(true).truncate(trunc);
    }
    match o.open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !excl && path.exists() => {
            // An existing read-only image (mode 0400) is replaced, as BLCR does.
            std::fs::remove_file(path)?;
            o.open(path)
        }
        r => r,
    }
}

/// `path` with every symbolic link of its last component followed (the directories above are
/// the kernel's to follow): the file an image named `path` must replace. A dangling link gives
/// the path it points to, which is then created.
fn follow_links(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&p) {
            Ok(to) => p = parent_dir(&p).join(to),
            Err(_) => return p,
        }
    }
    p
}

/// Opens a FIFO, a socket or a character device to write an image into. A FIFO must have a
/// reader already (as BLCR, it is opened without blocking), then is written with blocking
/// writes; a socket is connected to.
fn open_stream(path: &Path, kind: StreamKind) -> std::io::Result<File> {
    match kind {
        StreamKind::Socket => Ok(File::from(std::os::fd::OwnedFd::from(std::os::unix::net::UnixStream::connect(path)?))),
        StreamKind::Fifo => {
            let f = OpenOptions::new().write(true).custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK).open(path)?;
            let flags = sys::status_flags(f.as_raw_fd(), None)?;
            sys::status_flags(f.as_raw_fd(), Some(flags & !libc::O_NONBLOCK))?;
            Ok(f)
        }
        StreamKind::CharDevice => OpenOptions::new().write(true).custom_flags(libc::O_NOCTTY).open(path),
    }
}

fn stream_error(e: std::io::Error, path: &Path, kind: StreamKind) -> Error {
    let why = match (kind, e.raw_os_error()) {
        (StreamKind::Fifo, Some(libc::ENXIO)) => "it is a FIFO that no process has open for reading; start its reader first".to_string(),
        (StreamKind::Socket, Some(libc::ECONNREFUSED)) => "it is a socket that no process listens on".to_string(),
        _ => io_words(&e),
    };
    Error::Destination { path: path.to_path_buf(), why, source: e }
}

/// The directory a destination path is in.
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// An unnamed file in `dir` (`O_TMPFILE`), mode 0400; `None` where the file system has none.
fn open_unnamed(dir: &Path) -> std::io::Result<Option<File>> {
    match OpenOptions::new().write(true).mode(0o400).custom_flags(libc::O_TMPFILE | libc::O_NOCTTY).open(dir) {
        Ok(f) => Ok(Some(f)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Gives the unnamed image its name: linked straight to `path` when that is free, else
/// linked as `tmp` and renamed over `path` (a `tmp` left by an earlier, killed run is replaced).
fn give_name(file: &File, path: &Path, tmp: &Path) -> std::io::Result<()> {
    match sys::link_fd(file.as_raw_fd(), path) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let _ = std::fs::remove_file(tmp);
            sys::link_fd(file.as_raw_fd(), tmp)?;
            std::fs::rename(tmp, path).inspect_err(|_| {
                let _ = std::fs::remove_file(tmp);
            })
        }
        r => r,
    }
}

/// What is wrong with a descriptor given as the destination: `" is not open"` or `": ERROR"`.
fn descriptor_words(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) | None => " is not open".to_string(),
        Some(_) => format!(": {e}"),
    }
}

/// What an errno means for the image file, in words, with what to do about it.
fn io_words(e: &std::io::Error) -> String {
    let elsewhere = "write the image elsewhere (--file or --dir)";
    match e.raw_os_error() {
        Some(libc::ENOSPC) => format!("no space left on the device; free some space or {elsewhere}"),
        Some(libc::EDQUOT) => format!("disk quota exceeded; free some space or {elsewhere}"),
        Some(libc::EFBIG) => format!("the file grew beyond what this file system or RLIMIT_FSIZE allows; {elsewhere}"),
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied; choose a directory you may write to (--file or --dir)".to_string(),
        Some(libc::EROFS) => format!("read-only file system; {elsewhere}"),
        Some(libc::ENOENT) => "no such file or directory; create the directory first".to_string(),
        Some(libc::ENOTDIR) => "a component of the path is not a directory".to_string(),
        Some(libc::EEXIST) => "the file exists (--noclobber); remove it or choose another name".to_string(),
        _ => e.to_string(),
    }
}

fn open_error(e: std::io::Error, path: &Path) -> Error {
    let dir = parent_dir(path);
    // No such file, though its directory is there: a file system that makes no files (/proc,
    // /sys), not a directory to create.
    let why = if e.raw_os_error() == Some(libc::ENOENT) && dir.is_dir() {
        format!("the file system of {} does not accept new files (as /proc and /sys); write the image elsewhere (--file or --dir)", dir.display())
    } else {
        io_words(&e)
    };
    Error::Destination { path: path.to_path_buf(), why, source: e }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_was_left() {
        let left = Left { pid: 7, stream: None };
        assert_eq!(Error::Interrupted { signal: Some(libc::SIGTERM), left: left.clone() }.to_string(), "interrupted by SIGTERM; PID 7 was left running as it was and no image was written");
        let e = Error::TimedOut { limit: Duration::from_secs(3), left: Left { pid: 7, stream: Some("<fd4>".into()) } };
        assert_eq!(e.to_string(), "the checkpoint did not finish within the --time limit of 3 s; PID 7 was left running as it was; what was written to <fd4> is not a usable image");
        assert_eq!(e.kind().code(), libc::ETIMEDOUT);
    }

    #[test]
    fn descriptor_errors() {
        let e = Error::Descriptor { fd: 9, source: std::io::Error::from_raw_os_error(libc::ENOENT) };
        assert_eq!((e.to_string(), e.kind().code()), ("descriptor 9 is not open".to_string(), libc::EBADF));
        let e = Error::Descriptor { fd: 9, source: std::io::Error::from_raw_os_error(libc::EACCES) };
        assert_eq!(e.kind().code(), libc::EACCES);
        assert!(e.to_string().starts_with("descriptor 9: "), "{e}");
    }

    #[test]
    fn after_actions() {
        assert!(After::Run.runs_on() && After::Signal(libc::SIGSTOP).runs_on() && !After::Kill.runs_on() && !After::Signal(libc::SIGTERM).runs_on());
        assert_eq!(After::from_signal(libc::SIGKILL), After::Kill);
    }
}
