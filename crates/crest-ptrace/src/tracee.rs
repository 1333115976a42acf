//! One traced thread.
//!
//! # Safety
//! Every `unsafe` block here is a `ptrace(2)` or `waitpid(2)` call. Pointers passed to the
//! kernel point at live, correctly sized buffers owned by the caller for the duration of the
//! call (`user_regs_struct`, an `iovec` over a `Vec<u8>`, a `u64` mask, `siginfo` buffers).
#![allow(unsafe_code)]

use crate::TraceError;

/// x86-64 general registers as `PTRACE_GETREGS` returns them.
pub type Regs = libc::user_regs_struct;

const NT_X86_XSTATE: libc::c_int = 0x202;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;

/// Why a thread is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// `PTRACE_EVENT_STOP`: after `PTRACE_INTERRUPT` or a group stop.
    Event,
    /// Signal-delivery-stop for this signal.
    Signal(i32),
    /// Syscall-enter or syscall-exit stop (`PTRACE_O_TRACESYSGOOD`).
    Syscall,
    /// Another ptrace event (its number).
    OtherEvent(i32),
}

/// A thread under ptrace.
///
/// A thread taken with [`Tracee::seize`] (a thread of a process that must go on running) is
/// detached when the `Tracee` is dropped, whatever happened before: an error on the way cannot
/// leave it traced and stopped. (Dropping it stops it first if need be, since only a stopped
/// tracee can be detached, and passes on a signal it stopped for.) Detaching cannot give back
/// registers borrowed for remote syscalls: whoever borrows them puts them back first. Husks
/// ([`Tracee::seize_with`]) and threads that were never the target's own ([`Tracee::adopt`]) are
/// not detached on drop: they are killed rather than let run half made.
#[derive(Debug)]
pub struct Tracee {
    /// Thread id.
    pub tid: i32,
    detach_on_drop: bool,
}

fn check(ret: libc::c_long, req: &'static str, tid: i32) -> Result<libc::c_long, TraceError> {
    if ret == -1 {
        Err(TraceError::last(req, tid))
    } else {
        Ok(ret)
    }
}

/// `PTRACE_O_SUSPEND_SECCOMP`: the thread's seccomp filters do not apply while it is traced so
/// (the system calls crest runs in it included); needs `CAP_SYS_ADMIN`.
pub const PTRACE_O_SUSPEND_SECCOMP: libc::c_int = 1 << 21;

/// The options every seizing adds: [`PTRACE_O_SUSPEND_SECCOMP`] for root (the only tracer the
/// kernel allows it), so that a thread's seccomp filters never stop crest's system calls in it.
/// The kernel allows it to a tracer with `CAP_SYS_ADMIN` in the initial user namespace (root
/// in a container is not) that is not itself under seccomp.
pub fn suspend_seccomp() -> libc::c_int {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let allowed = *ALLOWED.get_or_init(|| {
        const CAP_SYS_ADMIN: u32 = 21;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
        let unconfined = field("Seccomp:") == Some("0");
        let admin = field("CapEff:").and_then(|c| u64::from_str_radix(c, 16).ok()).is_some_and(|c| c & (1 << CAP_SYS_ADMIN) != 0);
        let initial_ns = std::fs::read_to_string("/proc/self/uid_map").is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]);
        unconfined && admin && initial_ns
    });
    if allowed {
        PTRACE_O_SUSPEND_SECCOMP
    } else {
        0
    }
}

impl Tracee {
    /// `PTRACE_SEIZE` with `PTRACE_O_TRACESYSGOOD` (and [`suspend_seccomp`]), `PTRACE_O_EXITKILL` unset: seizing does not stop
    /// the thread; follow with [`Tracee::interrupt`] and [`Tracee::wait_stop`].
    pub fn seize(tid: i32) -> Result<Self, TraceError> {
        // SAFETY: PTRACE_SEIZE takes no pointers; data is the option mask.
        let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0, (libc::PTRACE_O_TRACESYSGOOD | suspend_seccomp()) as libc::c_long) };
        check(r, "PTRACE_SEIZE", tid)?;
        Ok(Tracee { tid, detach_on_drop: true })
    }

    /// `PTRACE_SEIZE` with the given options; not detached on drop (see [`Tracee`]).
    pub fn seize_with(tid: i32, opts: libc::c_int) -> Result<Self, TraceError> {
        // SAFETY: PTRACE_SEIZE takes no pointers; data is the option mask.
        let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0, (opts | suspend_seccomp()) as libc::c_long) };
        check(r, "PTRACE_SEIZE", tid)?;
        Ok(Tracee { tid, detach_on_drop: false })
    }

    /// A thread already traced by us (a thread or process created by a traced one); not
    /// detached on drop (see [`Tracee`]).
    pub fn adopt(tid: i32) -> Self {
        Tracee { tid, detach_on_drop: false }
    }

    /// `PTRACE_SETOPTIONS` (with [`suspend_seccomp`]).
    pub fn set_options(&self, opts: libc::c_int) -> Result<(), TraceError> {
        // SAFETY: no pointers; data is the option mask.
        let r = unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, self.tid, 0, (opts | suspend_seccomp()) as libc::c_long) };
        check(r, "PTRACE_SETOPTIONS", self.tid).map(drop)
    }

    /// The seccomp filters of the (stopped) thread, the first installed first: (flags, BPF
    /// instructions). `PTRACE_SECCOMP_GET_FILTER` and `PTRACE_SECCOMP_GET_METADATA`, which need
    /// `CAP_SYS_ADMIN`.
    pub fn seccomp_filters(&self) -> Result<Vec<(u64, Vec<u8>)>, TraceError> {
        const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
        const PTRACE_SECCOMP_GET_METADATA: libc::c_uint = 0x420d;
        let mut out = Vec::new();
        for index in 0u64.. {
            // SAFETY: a null buffer: the kernel only returns the filter's length.
            let n = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, self.tid, index as libc::c_ulong, std::ptr::null_mut::<libc::c_void>()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOENT) {
                    break;
                }
                return Err(TraceError::Sys { what: format!("reading seccomp filter {index} of thread {}", self.tid), err: e });
            }
            let mut insns = vec![0u8; n as usize * 8];
            // SAFETY: the buffer holds the `n` instructions of 8 bytes the kernel writes.
            let r = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, self.tid, index as libc::c_ulong, insns.as_mut_ptr() as *mut libc::c_void) };
            check(r, "PTRACE_SECCOMP_GET_FILTER", self.tid)?;
            let mut meta = [index, 0u64];
            // SAFETY: `meta` is the 16-byte `struct seccomp_metadata` (filter_off, flags) whose
            // size is passed as addr; the kernel reads filter_off and writes flags.
            let r = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_METADATA, self.tid, 16 as libc::c_ulong, meta.as_mut_ptr() as *mut libc::c_void) };
            let flags = if r < 0 { 0 } else { meta[1] };
            out.push((flags, insns));
        }
        // The kernel counts from the last installed.
        out.reverse();
        Ok(out)
    }

    /// `PTRACE_INTERRUPT`: asks a seized thread to stop.
    pub fn interrupt(&self) -> Result<(), TraceError> {
        // SAFETY: no pointers.
        let r = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, self.tid, 0, 0) };
        check(r, "PTRACE_INTERRUPT", self.tid).map(drop)
    }

    /// Waits for an event stop (`PTRACE_EVENT_STOP`), letting the thread go on from any other.
    pub fn wait_event(&self) -> Result<(), TraceError> {
        loop {
            match self.wait_stop()? {
                StopKind::Event => return Ok(()),
                _ => self.cont(0)?,
            }
        }
    }

    /// Parks a stopped thread in an event stop (interrupt, resume, wait). From there it may be
    /// detached at any time, and the kernel applies its syscall-restart rules to its registers
    /// when it resumes.
    pub fn park(&self) -> Result<(), TraceError> {
        self.interrupt()?;
        self.cont(0)?;
        self.wait_event()
    }

    /// Waits until the thread is in a ptrace stop and says which kind.
    pub fn wait_stop(&self) -> Result<StopKind, TraceError> {
        loop {
            let mut status = 0;
            // SAFETY: status is a valid out pointer.
            let r = unsafe { libc::waitpid(self.tid, &mut status, libc::__WALL) };
            if r == -1 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(TraceError::last("waitpid", self.tid));
            }
            if libc::WIFEXITED(status) {
                return Err(TraceError::Died { tid: self.tid, how: format!("exited with status {}", libc::WEXITSTATUS(status)) });
            }
            if libc::WIFSIGNALED(status) {
                return Err(TraceError::Died { tid: self.tid, how: format!("killed by signal {}", libc::WTERMSIG(status)) });
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            let sig = libc::WSTOPSIG(status);
            let event = status >> 16;
            return Ok(if sig == libc::SIGTRAP | 0x80 {
                StopKind::Syscall
            } else if event == libc::PTRACE_EVENT_STOP {
                StopKind::Event
            } else if event != 0 {
                StopKind::OtherEvent(event)
            } else {
                StopKind::Signal(sig)
            });
        }
    }

    fn resume(&self, req: libc::c_uint, name: &'static str, sig: i32) -> Result<(), TraceError> {
        // SAFETY: no pointers; data is a signal number.
        let r = unsafe { libc::ptrace(req, self.tid, 0, sig as libc::c_long) };
        check(r, name, self.tid).map(drop)
    }

    /// `PTRACE_CONT` delivering `sig` (0 for none).
    pub fn cont(&self, sig: i32) -> Result<(), TraceError> {
        self.resume(libc::PTRACE_CONT, "PTRACE_CONT", sig)
    }

    /// `PTRACE_SYSCALL`: run to the next syscall entry or exit.
    pub fn syscall_step(&self) -> Result<(), TraceError> {
        self.resume(libc::PTRACE_SYSCALL, "PTRACE_SYSCALL", 0)
    }

    /// `PTRACE_SINGLESTEP`: run one instruction; a `syscall` instruction stops once, with a
    /// `SIGTRAP`, after the system call has returned.
    pub fn single_step(&self) -> Result<(), TraceError> {
        self.resume(libc::PTRACE_SINGLESTEP, "PTRACE_SINGLESTEP", 0)
    }

    /// `PTRACE_DETACH`, delivering `sig` (0 for none). Should it fail, a thread taken with
    /// [`Tracee::seize`] is still stopped and detached as `self` is dropped.
    pub fn detach(mut self, sig: i32) -> Result<(), TraceError> {
        self.resume(libc::PTRACE_DETACH, "PTRACE_DETACH", sig)?;
        self.detach_on_drop = false;
        Ok(())
    }

    /// `PTRACE_GETEVENTMSG`.
    pub fn event_msg(&self) -> Result<u64, TraceError> {
        let mut msg: libc::c_ulong = 0;
        // SAFETY: data points at a live unsigned long.
        let r = unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, self.tid, 0, &mut msg as *mut libc::c_ulong) };
        check(r, "PTRACE_GETEVENTMSG", self.tid)?;
        Ok(msg)
    }

    /// `PTRACE_GETREGS`.
    pub fn regs(&self) -> Result<Regs, TraceError> {
        // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
        let mut regs: Regs = unsafe { std::mem::zeroed() };
        // SAFETY: regs is a live user_regs_struct the kernel fills.
        let r = unsafe { libc::ptrace(libc::PTRACE_GETREGS, self.tid, 0, &mut regs as *mut Regs) };
        check(r, "PTRACE_GETREGS", self.tid)?;
        Ok(regs)
    }

    /// `PTRACE_SETREGS`.
    pub fn set_regs(&self, regs: &Regs) -> Result<(), TraceError> {
        // SAFETY: regs points to a live user_regs_struct the kernel reads.
        let r = unsafe { libc::ptrace(libc::PTRACE_SETREGS, self.tid, 0, regs as *const Regs) };
        check(r, "PTRACE_SETREGS", self.tid).map(drop)
    }

    /// `PTRACE_GETREGSET(NT_X86_XSTATE)`: the whole XSAVE area.
    pub fn xstate(&self) -> Result<Vec<u8>, TraceError> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: iov describes buf, which lives across the call; the kernel shortens iov_len.
        let r = unsafe { libc::ptrace(libc::PTRACE_GETREGSET, self.tid, NT_X86_XSTATE, &mut iov as *mut libc::iovec) };
        check(r, "PTRACE_GETREGSET(NT_X86_XSTATE)", self.tid)?;
        buf.truncate(iov.iov_len);
        Ok(buf)
    }

    /// `PTRACE_SETREGSET(NT_X86_XSTATE)`.
    pub fn set_xstate(&self, xsave: &[u8]) -> Result<(), TraceError> {
        let mut buf = xsave.to_vec();
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: iov describes buf, which lives across the call; the kernel only reads it.
        let r = unsafe { libc::ptrace(libc::PTRACE_SETREGSET, self.tid, NT_X86_XSTATE, &mut iov as *mut libc::iovec) };
        check(r, "PTRACE_SETREGSET(NT_X86_XSTATE)", self.tid).map(drop)
    }

    /// `PTRACE_GETSIGMASK`.
    pub fn sigmask(&self) -> Result<u64, TraceError> {
        let mut mask = 0u64;
        // SAFETY: data points at an 8-byte mask; addr is its size.
        let r = unsafe { libc::ptrace(libc::PTRACE_GETSIGMASK, self.tid, 8, &mut mask as *mut u64) };
        check(r, "PTRACE_GETSIGMASK", self.tid)?;
        Ok(mask)
    }

    /// `PTRACE_SETSIGMASK`.
    pub fn set_sigmask(&self, mask: u64) -> Result<(), TraceError> {
        // SAFETY: data points at an 8-byte mask; addr is its size.
        let r = unsafe { libc::ptrace(libc::PTRACE_SETSIGMASK, self.tid, 8, &mask as *const u64) };
        check(r, "PTRACE_SETSIGMASK", self.tid).map(drop)
    }

    /// `PTRACE_GETSIGINFO` of the current signal-delivery-stop (128 raw bytes).
    pub fn siginfo(&self) -> Result<Vec<u8>, TraceError> {
        let mut buf = vec![0u8; 128];
        // SAFETY: buf holds 128 bytes, the size of siginfo_t.
        let r = unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, self.tid, 0, buf.as_mut_ptr()) };
        check(r, "PTRACE_GETSIGINFO", self.tid)?;
        Ok(buf)
    }

    /// `PTRACE_PEEKSIGINFO`: the pending signals, per-thread or shared (raw 128-byte siginfo each),
    /// without dequeuing them.
    pub fn pending_signals(&self, shared: bool) -> Result<Vec<Vec<u8>>, TraceError> {
        #[repr(C)]
        struct PeekArgs {
            off: u64,
            flags: u32,
            nr: i32,
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 128 * 32];
        loop {
            let args = PeekArgs { off: out.len() as u64, flags: u32::from(shared), nr: 32 };
            // SAFETY: args is a live peeksiginfo_args; buf has room for nr siginfos.
            let r = unsafe { libc::ptrace(libc::PTRACE_PEEKSIGINFO, self.tid, &args as *const PeekArgs, buf.as_mut_ptr()) };
            let n = check(r, "PTRACE_PEEKSIGINFO", self.tid)? as usize;
            out.extend(buf.chunks(128).take(n).map(<[u8]>::to_vec));
            if n < 32 {
                return Ok(out);
            }
        }
    }

    /// `PTRACE_GET_RSEQ_CONFIGURATION`: (address, length, signature) or None when unregistered.
    pub fn rseq(&self) -> Result<Option<(u64, u32, u32)>, TraceError> {
        #[repr(C)]
        #[derive(Default)]
        struct RseqConf {
            abi: u64,
            len: u32,
            sig: u32,
            flags: u32,
            pad: u32,
        }
        let mut c = RseqConf::default();
        // SAFETY: addr is the size of the buffer, data points at it.
        let r = unsafe { libc::ptrace(PTRACE_GET_RSEQ_CONFIGURATION, self.tid, std::mem::size_of::<RseqConf>(), &mut c as *mut RseqConf) };
        check(r, "PTRACE_GET_RSEQ_CONFIGURATION", self.tid)?;
        Ok((c.abi != 0).then_some((c.abi, c.len, c.sig)))
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        if !self.detach_on_drop {
            return;
        }
        if self.resume(libc::PTRACE_DETACH, "PTRACE_DETACH", 0).is_ok() {
            return;
        }
        // Not in a ptrace stop (seized, or interrupted and not waited for yet): stop it, then
        // detach it from that stop, passing on a signal it stopped for. A thread that is gone
        // fails both, and there is nothing left to do.
        if self.interrupt().is_err() {
            return;
        }
        let sig = match self.wait_stop() {
            Ok(StopKind::Signal(sig)) => sig,
            Ok(_) => 0,
            Err(_) => return,
        };
        let _ = self.resume(libc::PTRACE_DETACH, "PTRACE_DETACH", sig);
    }
}
