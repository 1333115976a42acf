//! crest's object kinds. Each module covers one kind of kernel object completely: what is read
//! from the stopped process at checkpoint and how it is recreated at restart, side by side.
//!
//! | module | object | dump reads | restore does |
//! |---|---|---|---|
//! | [`memory`] | mappings and page data | `smaps`, `pagemap`, `process_vm_readv` | remote `mmap`, `pread` from the image, `mprotect`, `madvise` |
//! | [`aio`] | AIO contexts (`io_setup`) and their rings | the ring's header, its pages whole | remote `io_setup`, `io_submit` to bring the tail, `mremap` to the saved address |
//! | [`vdso`] | `[vvar]`, `[vvar_vclock]`, `[vdso]` | `smaps` | remote `mremap` to the saved addresses |
//! | [`mm`] | brk, stack, arg/env, auxv, exe | `stat`, remote `brk(0)`, `auxv` | remote `prctl(PR_SET_MM_MAP)` |
//! | [`fd`] | file descriptors, one module per file kind behind [`fd::FdHandler`] | `fd/`, `fdinfo/` | reopened in the husk |
//! | [`ident`] | the identity of an object shared by several descriptors or mappings ([`ObjId`]) | | |
//! | [`signals`] | dispositions and pending signals | remote `rt_sigaction`, `PTRACE_PEEKSIGINFO` | `rt_sigaction` in the husk, remote `rt_tgsigqueueinfo` |
//! | [`thread`] | registers, xsave, mask, tid address, robust list, altstack, rseq | ptrace, remote `prctl`/`sigaltstack` | ptrace, remote syscalls |
//! | [`ipc`] | SysV shared memory and semaphore sets | `/proc/sysvipc`, `IPC_STAT`, `GETALL` | recreated with their ids before the processes |
//! | [`image`] | the registry of image-wide kinds ([`image::ImageKind`]: [`ipc`] so far) | | |
//! | [`task`] | cwd, root, umask, personality, comm, rlimits | `/proc` | in the husk, `prlimit` |
//! | [`timers`] | POSIX timers: id, clock, notification, time left, period | `/proc/PID/timers`, remote `timer_gettime`/`timer_getoverrun` | remote `timer_create` (same id), `timer_settime` |
//! | [`attrs`] | interval timers, scheduling, oom score, prctl flags, credentials; what is refused | `/proc`, `sched_getattr`, remote `getitimer`/`prctl` | remote `setitimer`/`prctl`/`set*id`/`capset`, `sched_setattr` |
//!
//! The per-process kinds (every module above but `fd`'s files, `ident` and `ipc`, which is one
//! set of objects for the whole image) are each restored through one [`process::ProcessKind`]
//! registered in [`process::KINDS`]; the order a process restores them in is derived from what
//! each declares it must come after ([`process::sequence`]). The image-wide ones (`ipc`) are
//! each an [`image::ImageKind`] registered in [`image::IMAGE_KINDS`].
//!
//! Dump functions take a [`Scratch`]: a page mapped inside the target for syscall arguments.
//! Restore functions run either inside the husk before it stops (`prepare_*`, plain syscalls on
//! itself) or from outside through a [`crest_ptrace::Remote`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aio;
pub mod attrs;
pub mod clocks;
pub mod exit;
pub mod fd;
pub mod ident;
pub mod image;
pub mod ipc;
pub mod lazy;
pub mod memory;
pub mod mm;
pub mod process;
pub mod progress;
pub mod signals;
pub mod task;
pub mod thread;
pub mod timers;
pub mod vdso;

pub use ident::{ObjId, ObjKind};

/// In the restarting program, just before it forks the husks: notes what of its own state
/// every husk inherits and a husk would otherwise read for itself (signal actions, login uid).
pub fn note_inherited() {
    signals::note_inherited_actions();
    attrs::note_loginuid();
}

use crest_ptrace::{mem, Remote, TraceError};

/// A failure while dumping or restoring one object.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    /// The tracer failed or a remote syscall failed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A /proc file could not be read or parsed.
    #[error(transparent)]
    Proc(#[from] crest_proc::ProcError),
    /// The object is of a kind crest cannot checkpoint yet.
    #[error("{0}")]
    Unsupported(String),
    /// Restoring the object failed.
    #[error("{what}: {err}")]
    Io {
        /// What was being done, with the object named.
        what: String,
        /// Error.
        err: std::io::Error,
    },
    /// The image and this system disagree.
    #[error("{0}")]
    Mismatch(String),
}

impl KindError {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, err: std::io::Error) -> Self {
        KindError::Io { what: what.into(), err }
    }
}

/// A scratch page inside the target or husk, for syscall arguments and results.
#[derive(Debug, Clone, Copy)]
pub struct Scratch {
    /// Process id.
    pub pid: i32,
    /// Address of the page.
    pub addr: u64,
}

/// Size of the scratch area.
pub const SCRATCH_LEN: u64 = 4096;

impl Scratch {
    /// Maps a fresh scratch page in the process `remote` runs in (at `hint`, if not 0, exactly).
    pub fn map(remote: &mut Remote<'_>, pid: i32, hint: u64) -> Result<Self, KindError> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if hint != 0 { libc::MAP_FIXED_NOREPLACE } else { 0 };
        let args = [hint, SCRATCH_LEN, (libc::PROT_READ | libc::PROT_WRITE) as u64, flags as u64, u64::MAX, 0];
        let addr = if hint != 0 {
            // At a known place: in one go with what is queued (the page is written from
            // outside, so it is mapped by the time this returns).
            remote.queue_expecting("mapping a scratch page", libc::SYS_mmap, &args, hint);
            remote.flush()?;
            hint
        } else {
            remote.call("mapping a scratch page", libc::SYS_mmap, &args)?
        };
        Ok(Scratch { pid, addr })
    }

    /// Unmaps it.
    pub fn unmap(self, remote: &mut Remote<'_>) -> Result<(), KindError> {
        remote.call("unmapping the scratch page", libc::SYS_munmap, &[self.addr, SCRATCH_LEN])?;
        Ok(())
    }

    /// Writes `data` at offset `off` of the page.
    pub fn write(&self, off: u64, data: &[u8]) -> Result<u64, KindError> {
        mem::write(self.pid, self.addr + off, data)?;
        Ok(self.addr + off)
    }

    /// Reads `len` bytes at offset `off` of the page.
    pub fn read(&self, off: u64, len: usize) -> Result<Vec<u8>, KindError> {
        let mut b = vec![0u8; len];
        mem::read_exact(self.pid, self.addr + off, &mut b)?;
        Ok(b)
    }
}

/// Little-endian u64 at `at` of `b`.
pub fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
