//! Process control for crest: the only crate that talks to ptrace and the only place with
//! `unsafe` besides the C library binding.
//!
//! * [`Tracee`]: one seized, stopped thread: registers, xsave area, signal mask, pending
//!   signals, rseq configuration (`PTRACE_*` requests).
//! * [`Remote`]: a tracee plus the address of a `syscall` instruction inside the target (found
//!   in its vDSO), used to run system calls *inside* the target without injecting any code:
//!   registers are pointed at that instruction and the thread runs exactly one syscall under
//!   `PTRACE_SYSCALL`, after which its registers are put back.
//! * [`mem`]: reading and writing another process's memory.
//! * [`mapped`]: a read-only `mmap` of part of a file (checking an image's pages in place).
//! * [`husk`]: forking the empty process a restore fills (`clone3` with `set_tid` to choose its PID).
//! * [`wp`]: which pages another process writes (asynchronous userfaultfd write-protection,
//!   `PAGEMAP_SCAN`).
//! * [`libcr`]: the protocol between the commands and a process that uses libcr.
//! * [`sys`]: thin, safe wrappers of the few other syscalls crest needs.
//!
//! Every module with `unsafe` opens with a `# Safety` section; see `docs/unsafe.md`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod husk;
pub mod ipc;
pub mod libcr;
pub mod mapped;
pub mod mem;
pub mod net;
mod remote;
pub mod sys;
mod tracee;
pub mod wp;

pub use error::TraceError;
pub use remote::{find_syscall_bytes, find_syscall_insn, Read, Remote, BATCH_LEN};
pub use tracee::{suspend_seccomp, Regs, StopKind, Tracee};

/// Result of a syscall run inside the target: the tracer worked, the syscall may have failed.
pub type RemoteResult = Result<Result<u64, i32>, TraceError>;
