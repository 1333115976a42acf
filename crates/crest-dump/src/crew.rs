//! Tracer threads, so that the processes of a large scope are frozen and collected on every core.
//!
//! Linux takes ptrace requests for a tracee from the one thread that attached it only. A scope
//! is therefore split among a few long-lived threads ([`crew`]): each freezes its share of the
//! processes and makes every later request for them (remote syscalls, letting go, killing), so
//! that the waits for one process's stops overlap with the work on others. A process frozen
//! outside the crew (a single process, a pre-copy) is traced by the thread that froze it, as
//! before. Waiting for a tracee (`waitpid`) works from any thread of the tracer's process.
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use crate::DumpError;

type Job = Box<dyn FnOnce() + Send>;

/// One thread that makes every ptrace request for the processes it froze.
pub(crate) struct Tracer {
    jobs: Mutex<mpsc::Sender<Job>>,
    id: std::thread::ThreadId,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracer({:?})", self.id)
    }
}

/// The answer of a job handed to a tracer: there already when it ran on this thread.
pub(crate) enum Pending<R> {
    Ready(R),
    Waiting(mpsc::Receiver<R>),
}

impl<R> Pending<R> {
    /// Waits for the answer; [`DumpError::TracerLost`] when the job panicked (the thread goes
    /// on with the next) or the thread is gone.
    pub(crate) fn wait(self) -> Result<R, DumpError> {
        match self {
            Pending::Ready(r) => Ok(r),
            Pending::Waiting(rx) => rx.recv().map_err(|_| DumpError::TracerLost),
        }
    }
}

impl Tracer {
    fn spawn() -> Option<Arc<Tracer>> {
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name("crest-tracer".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // A job that panics drops its answer's sender: its caller is told.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            })
            .ok()?;
        Some(Arc::new(Tracer { jobs: Mutex::new(tx), id: handle.thread().id() }))
    }

    /// Whether the calling thread is this tracer.
    pub(crate) fn is_current(&self) -> bool {
        std::thread::current().id() == self.id
    }

    /// Hands `job` to the tracer thread (runs it here when this is that thread).
    pub(crate) fn start<R: Send + 'static>(&self, job: impl FnOnce() -> R + Send + 'static) -> Pending<R> {
        if self.is_current() {
            return Pending::Ready(job());
        }
        let (tx, rx) = mpsc::channel();
        let sent = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).send(Box::new(move || {
            let _ = tx.send(job());
        }));
        // A thread that is gone drops the job, and with it the sender: `wait` says so.
        drop(sent);
        Pending::Waiting(rx)
    }

    /// Runs `job` on the tracer thread and waits for it.
    pub(crate) fn run<R: Send + 'static>(&self, job: impl FnOnce() -> R + Send + 'static) -> Result<R, DumpError> {
        self.start(job).wait()
    }
}

/// Tracer threads per core. Most of a collection is waiting: for a tracee to be woken, run its
/// system calls and stop, on one core or the other. With one tracer per core the cores stood
/// idle about half of the time of the checkpoint of a ring of 256; with four, its collection
/// took a quarter to a third less time.
const TRACERS_PER_CORE: usize = 4;

/// The tracer threads of this process, four per core (at least four, at most 32), started the
/// first time they are asked for; empty when no thread could be started, and in a child forked
/// after they were (it has none of them: the caller then traces its processes itself).
pub(crate) fn crew() -> &'static [Arc<Tracer>] {
    static CREW: OnceLock<(u32, Vec<Arc<Tracer>>)> = OnceLock::new();
    let (pid, crew) = CREW.get_or_init(|| {
        let n = (std::thread::available_parallelism().map_or(2, |n| n.get()) * TRACERS_PER_CORE).clamp(4, 32);
        (std::process::id(), (0..n).map_while(|_| Tracer::spawn()).collect())
    });
    if *pid == std::process::id() {
        crew
    } else {
        &[]
    }
}
