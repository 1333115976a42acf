//! The memory descriptor: code/data/brk/stack/arg/env boundaries, the auxiliary vector and the
//! executable link.
//!
//! Dump reads `/proc/PID/stat` (fields 26-28, 45-51), `/proc/PID/auxv` and asks the target for
//! its current break with a remote `brk(0)`. Restore writes `struct prctl_mm_map` into the husk
//! and calls `prctl(PR_SET_MM, PR_SET_MM_MAP)`, so `/proc/PID/cmdline`, `environ`, `auxv` and
//! `exe` read as before and `brk`/`sbrk` continue from the saved break. Changing the `exe` link
//! needs `CAP_CHECKPOINT_RESTORE` or `CAP_SYS_ADMIN`; without it the rest is still restored.
use crest_image::MmState;
use crest_proc::Stat;
use crest_ptrace::{Read, Remote};

use crate::{KindError, Scratch};

const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;

/// Collects the memory descriptor of `pid`, its break read with `brk` (queued, or run now).
pub fn dump(remote: &mut Remote<'_>, brk: Option<Read>, pid: i32, st: &Stat) -> Result<MmState, KindError> {
    let brk = match brk {
        Some(r) => r,
        None => remote.queue_read(libc::SYS_brk, &[0]),
    };
    let brk = remote.take("reading the program break", brk)?;
    let auxv_bytes = crest_proc::read_bytes(pid, "auxv")?;
    let auxv = auxv_bytes.chunks_exact(8).map(|c| crate::le_u64(c, 0)).collect();
    Ok(MmState {
        start_code: st.start_code,
        end_code: st.end_code,
        start_data: st.start_data,
        end_data: st.end_data,
        start_brk: st.start_brk,
        brk,
        start_stack: st.start_stack,
        arg_start: st.arg_start,
        arg_end: st.arg_end,
        env_start: st.env_start,
        env_end: st.env_end,
        auxv,
    })
}

/// Sets the husk's memory descriptor. `exe_fd` is a descriptor of the executable inside the
/// husk, or -1. Returns whether the `exe` link was set.
pub fn restore(remote: &mut Remote<'_>, scratch: &Scratch, mm: &MmState, exe_fd: i32) -> Result<bool, KindError> {
    let auxv: Vec<u8> = mm.auxv.iter().flat_map(|w| w.to_le_bytes()).collect();
    if auxv.len() > 2048 {
        return Err(KindError::Mismatch(format!("auxiliary vector of {} bytes is too long", auxv.len())));
    }
    let auxv_addr = scratch.write(2048, &auxv)?;
    let mut map = Vec::with_capacity(104);
    for w in [mm.start_code, mm.end_code, mm.start_data, mm.end_data, mm.start_brk, mm.brk, mm.start_stack, mm.arg_start, mm.arg_end, mm.env_start, mm.env_end, auxv_addr] {
        map.extend_from_slice(&w.to_le_bytes());
    }
    map.extend_from_slice(&(auxv.len() as u32).to_le_bytes());
    let at = scratch.addr;
    for fd in [exe_fd, -1] {
        let mut m = map.clone();
        m.extend_from_slice(&fd.to_le_bytes());
        scratch.write(0, &m)?;
        match remote.syscall(libc::SYS_prctl, &[PR_SET_MM, PR_SET_MM_MAP, at, m.len() as u64, 0])? {
            Ok(_) => return Ok(fd != -1),
            // EPERM: the exe link needs CAP_SYS_RESOURCE. EBUSY: the husk's own executable is
            // still mapped, because the restored process maps it too: the restarter restores a
            // program of its own binary (a program restarting itself through the library), so
            // the link the husk has is already the right one.
            Err(libc::EPERM | libc::EBUSY) if fd != -1 => continue,
            Err(e) => {
                return Err(KindError::io("setting the memory layout (prctl PR_SET_MM_MAP)", std::io::Error::from_raw_os_error(e)));
            }
        }
    }
    unreachable!("the loop returns on its second pass")
}

/// The mm state: brk, stack, arguments, environment, auxv and executable ([`restore`]).
pub struct Mm;

impl crate::process::ProcessKind for Mm {
    fn name(&self) -> &'static str {
        "mm"
    }
    fn fields(&self) -> &'static [&'static str] {
        &["mm", "exe"]
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Traced
    }
    fn dumps(&self) -> bool {
        true
    }
    fn dump_queue(&self, cx: &mut crate::process::CollectCx<'_, '_>) -> Result<(), KindError> {
        let brk = cx.remote.queue_read(libc::SYS_brk, &[0]);
        cx.queued(self.name(), 0, vec![brk]);
        Ok(())
    }
    fn dump(&self, cx: &mut crate::process::CollectCx<'_, '_>) -> Result<(), KindError> {
        let brk = cx.reads.remove(self.name()).and_then(|(_, r)| r.first().copied());
        cx.out.mm = dump(cx.remote, brk, cx.pid, cx.stat)?;
        Ok(())
    }
    fn after(&self) -> &'static [&'static str] {
        // PR_SET_MM_MAP checks its addresses against the mappings.
        &["memory"]
    }
    fn restore(&self, cx: &mut crate::process::FillCx<'_, '_>) -> Result<(), KindError> {
        cx.exe_set = restore(cx.remote, cx.scratch, &cx.p.mm, if cx.p.exe.is_empty() { -1 } else { cx.exe_fd })?;
        Ok(())
    }
}
