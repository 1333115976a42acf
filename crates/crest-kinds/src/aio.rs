//! AIO contexts (`io_setup`): the ring each one maps into the process (`/[aio]`).
//!
//! An AIO context is known to user space by the address of its ring, a shared mapping of the
//! kernel's pages that starts with a 32-byte header (`struct aio_ring`: `id`, `nr` events,
//! `head`, `tail`, a magic number, feature bits, the header's length) followed by `nr` events of
//! 32 bytes. The kernel writes completed events at `tail`; the program (or `io_getevents`)
//! consumes them from `head`. The context's size is fixed by `io_setup`: the kernel doubles
//! the number asked for (after raising it to four per possible CPU), adds the header, rounds
//! up to whole pages and fills them with events.
//!
//! Dump ([`classify`]): the ring's header is checked (magic, header length, `nr` matching the
//! mapping's length, `head` and `tail` inside it) and the mapping is saved whole as private
//! anonymous memory flagged [`vma_flags::AIO`]. Requests in flight are not seen: a request
//! that blocks inside `io_submit` (a read of an empty pipe) is ended by the freeze itself, as
//! by any signal, and completes with `-EINTR` in its event, which is saved; one the kernel runs
//! on its own after `io_submit` returned leaves no trace the kernel shows: a process with a
//! descriptor open with `O_DIRECT` (whose I/O is such) is refused; a poll (`IOCB_CMD_POLL`)
//! or `fsync` (`IOCB_CMD_FSYNC`) request in flight is not seen (docs/architecture.md, limits).
//!
//! Restore ([`AioRings`], after the memory kind has put the saved ring back as plain memory at
//! its address): a context of the same size is made in the process with `io_setup`; its
//! kernel-side tail is brought to the saved one by submitting one-byte writes to `/dev/null`
//! (which complete at once), advancing `head` as they go so that the kernel frees their slots;
//! then the saved events and `head` are copied in and the ring is moved over the saved address
//! with `mremap` (which the kernel follows: the context's id becomes that address).
use crest_image::{vma_flags, Vma, VmaBacking};
use crest_proc::MapEntry;
use crest_ptrace::mem;

use crate::KindError;

/// Length of the ring's header (`struct aio_ring`), and of one event (`struct io_event`).
const HEADER: u64 = 32;
const EVENT: u64 = 32;
/// `AIO_RING_MAGIC`.
const MAGIC: u32 = 0xa10a_10a1;
/// `IOCB_CMD_PWRITE`.
const IOCB_CMD_PWRITE: u16 = 1;

/// The fields of a ring's header that matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Number of event slots.
    pub nr: u32,
    /// Next event for the program to consume.
    pub head: u32,
    /// Next slot the kernel fills.
    pub tail: u32,
    /// `AIO_RING_MAGIC` in a real ring.
    pub magic: u32,
    /// `sizeof(struct aio_ring)`.
    pub header_length: u32,
}

impl Header {
    /// Decodes the first 32 bytes of a ring.
    pub fn parse(b: &[u8]) -> Header {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header { nr: u(4), head: u(8), tail: u(12), magic: u(16), header_length: u(28) }
    }

    /// Why this header does not describe a ring of `len` bytes, if it does not.
    pub fn insane(&self, len: u64) -> Option<String> {
        if self.magic != MAGIC || u64::from(self.header_length) != HEADER {
            return Some(format!("its header is not an AIO ring's (magic {:#x}, header length {})", self.magic, self.header_length));
        }
        if u64::from(self.nr) != (len - HEADER) / EVENT {
            return Some(format!("it has {} events where a ring of {len} bytes has {}", self.nr, (len - HEADER) / EVENT));
        }
        if self.head >= self.nr || self.tail >= self.nr {
            return Some(format!("its head {} or tail {} lies outside its {} events", self.head, self.tail, self.nr));
        }
        None
    }

    /// The number to give `io_setup` for a ring of this size: the kernel doubles what it is
    /// given and adds two before rounding up to whole pages, so half of `nr` less two comes back
    /// to the same pages (unless the machine has so many CPUs that four per CPU is more).
    pub fn setup_events(&self) -> u64 {
        u64::from(self.nr.saturating_sub(2) / 2).max(1)
    }

    /// Events completed and not yet consumed.
    pub fn pending(&self) -> u32 {
        if self.tail >= self.head {
            self.tail - self.head
        } else {
            self.nr - self.head + self.tail
        }
    }
}

/// Turns the `/[aio]` mapping `m` of the frozen process `pid` into a [`Vma`] saved whole, or
/// refuses it.
pub fn classify(pid: i32, m: &MapEntry, flags: u32, madv: u32) -> Result<Vma, KindError> {
    let range = format!("{:#x}-{:#x}", m.start, m.end);
    let len = m.end - m.start;
    let mut b = [0u8; HEADER as usize];
    mem::read_forced(pid, m.start, &mut b)?;
    let h = Header::parse(&b);
    if len < HEADER + EVENT {
        return Err(KindError::Unsupported(format!("pid {pid}: AIO ring {range} is too short to be one")));
    }
    if let Some(why) = h.insane(len) {
        return Err(KindError::Unsupported(format!("pid {pid}: mapping {range} is an AIO ring (io_setup) that crest cannot read: {why}")));
    }
    if let Some(fd) = direct_fd(pid) {
        return Err(KindError::Unsupported(format!(
            "pid {pid}: AIO context {:#x} with fd {fd} open with O_DIRECT: requests submitted on it run in the kernel after io_submit returns, and whether one is in flight cannot be seen from outside (its completion would be lost); not supported",
            m.start
        )));
    }
    let flags = (flags & !vma_flags::SHARED) | vma_flags::AIO;
    Ok(Vma { start: m.start, end: m.end, prot: m.prot, flags, madv, backing: VmaBacking::Anon, pages: Vec::new(), need: 0, zero: 0, inherited: Vec::new(), guards: Vec::new() })
}

/// A descriptor of `pid` open with `O_DIRECT`, if there is one.
fn direct_fd(pid: i32) -> Option<i32> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?;
    let mut fds: Vec<i32> = fds.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    fds.sort_unstable();
    fds.into_iter().find(|fd| {
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok()).unwrap_or(0);
        flags & libc::O_DIRECT as u32 != 0
    })
}

/// The AIO rings of a process, made again once its memory is in place.
pub struct AioRings;

impl crate::process::ProcessKind for AioRings {
    fn name(&self) -> &'static str {
        "aio rings"
    }
    fn fields(&self) -> &'static [&'static str] {
        // The mappings flagged AIO.
        &["vmas"]
    }
    fn stage(&self) -> crate::process::Stage {
        crate::process::Stage::Traced
    }
    fn after(&self) -> &'static [&'static str] {
        // The saved ring is read back from the memory restored at its address.
        &["memory"]
    }
    fn restore(&self, cx: &mut crate::process::FillCx<'_, '_>) -> Result<(), KindError> {
        for v in cx.p.vmas.iter().filter(|v| v.flags & vma_flags::AIO != 0) {
            restore_ring(cx, v)?;
        }
        Ok(())
    }
}

/// Offsets in the scratch page.
const AT_CTX: u64 = 0;
const AT_BYTE: u64 = 8;
const AT_PATH: u64 = 16;
const AT_IOCB: u64 = 64;
const AT_PTRS: u64 = 128;
const MAX_PTRS: u64 = (crate::SCRATCH_LEN - AT_PTRS) / 8;

fn restore_ring(cx: &mut crate::process::FillCx<'_, '_>, v: &Vma) -> Result<(), KindError> {
    let pid = cx.p.pid;
    let len = v.end - v.start;
    let what = format!("pid {pid}: AIO ring {:#x}-{:#x}", v.start, v.end);
    let mut saved = vec![0u8; len as usize];
    mem::read_forced(cx.pid, v.start, &mut saved)?;
    let h = Header::parse(&saved);
    if let Some(why) = h.insane(len) {
        return Err(KindError::Mismatch(format!("{what}: the image's copy of it is damaged: {why}")));
    }
    let s = cx.scratch;
    s.write(AT_CTX, &0u64.to_le_bytes())?;
    cx.remote.call(&format!("{what}: io_setup"), libc::SYS_io_setup, &[h.setup_events(), s.addr + AT_CTX])?;
    let ctx = crate::le_u64(&s.read(AT_CTX, 8)?, 0);
    let mut b = [0u8; HEADER as usize];
    mem::read_forced(cx.pid, ctx, &mut b)?;
    let made = Header::parse(&b);
    if made.nr != h.nr {
        let _ = cx.remote.syscall(libc::SYS_io_destroy, &[ctx])?;
        return Err(KindError::Mismatch(format!(
            "{what}: io_setup({}) made a ring of {} events here, not {} (this machine has another number of possible CPUs than the one checkpointed): the context cannot be made again at its size",
            h.setup_events(),
            made.nr,
            h.nr
        )));
    }
    if h.head != 0 || h.tail != 0 {
        advance(cx, &what, ctx, &h)?;
    }
    // The saved events, then the program's head: the kernel's tail is the saved one now.
    mem::write(cx.pid, ctx + HEADER, &saved[HEADER as usize..])?;
    mem::write(cx.pid, ctx + 8, &h.head.to_le_bytes())?;
    mem::read_forced(cx.pid, ctx, &mut b)?;
    let now = Header::parse(&b);
    if now.tail != h.tail || now.head != h.head {
        return Err(KindError::Mismatch(format!("{what}: the new ring's head and tail are {} and {}, not {} and {}", now.head, now.tail, h.head, h.tail)));
    }
    let moved = cx.remote.call(&format!("{what}: moving the new ring into place"), libc::SYS_mremap, &[ctx, len, len, (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64, v.start])?;
    if moved != v.start {
        return Err(KindError::Mismatch(format!("{what}: the new ring went to {moved:#x} instead")));
    }
    Ok(())
}

/// Brings the kernel's tail of the new context `ctx` to the saved `h.tail`, by completing
/// that many one-byte writes to `/dev/null` (a whole turn more when the tail has wrapped
/// behind the head), consuming them as they complete up to the saved head.
fn advance(cx: &mut crate::process::FillCx<'_, '_>, what: &str, ctx: u64, h: &Header) -> Result<(), KindError> {
    let s = cx.scratch;
    s.write(AT_PATH, b"/dev/null\0")?;
    let fd = cx.remote.call(&format!("{what}: opening /dev/null"), libc::SYS_openat, &[libc::AT_FDCWD as u64, s.addr + AT_PATH, libc::O_WRONLY as u64, 0])?;
    let mut iocb = [0u8; 64];
    iocb[16..18].copy_from_slice(&IOCB_CMD_PWRITE.to_le_bytes());
    iocb[20..24].copy_from_slice(&(fd as u32).to_le_bytes());
    iocb[24..32].copy_from_slice(&(s.addr + AT_BYTE).to_le_bytes());
    iocb[32..40].copy_from_slice(&1u64.to_le_bytes());
    s.write(AT_IOCB, &iocb)?;
    let ptrs: Vec<u8> = std::iter::repeat_n((s.addr + AT_IOCB).to_le_bytes(), MAX_PTRS as usize).flatten().collect();
    s.write(AT_PTRS, &ptrs)?;
    let count = u64::from(if h.tail < h.head { h.nr + h.tail } else { h.tail });
    // At most nr - 1 requests are outstanding (completed and not consumed) at once.
    let most = u64::from(h.nr - 1).min(MAX_PTRS);
    let mut done = 0u64;
    let result = (|| {
        while done < count {
            let n = cx.remote.call(&format!("{what}: io_submit"), libc::SYS_io_submit, &[ctx, (count - done).min(most), s.addr + AT_PTRS])?;
            if n == 0 {
                return Err(KindError::Mismatch(format!("{what}: io_submit took no request after {done} of {count}")));
            }
            done += n;
            // Consumed up to the saved head: the kernel frees their slots on the next submit.
            let head = done.min(u64::from(h.head)) % u64::from(h.nr);
            mem::write(cx.pid, ctx + 8, &(head as u32).to_le_bytes())?;
        }
        Ok(())
    })();
    cx.remote.call(&format!("{what}: closing /dev/null"), libc::SYS_close, &[fd])?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(nr: u32, head: u32, tail: u32) -> Vec<u8> {
        let mut b = vec![0u8; 32];
        for (i, v) in [(4, nr), (8, head), (12, tail), (16, MAGIC), (20, 1), (28, 32)] {
            b[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn a_ring_header_is_read_and_checked() {
        let h = Header::parse(&header(127, 3, 5));
        assert_eq!((h.nr, h.head, h.tail, h.pending()), (127, 3, 5, 2));
        assert_eq!(h.insane(4096), None);
        assert!(h.insane(8192).is_some());
        assert!(Header::parse(&header(127, 127, 0)).insane(4096).is_some());
        let mut bad = header(127, 0, 0);
        bad[16] = 0;
        assert!(Header::parse(&bad).insane(4096).is_some());
        assert_eq!(Header::parse(&header(127, 100, 4)).pending(), 31);
    }

    /// What io_setup makes of the number asked for, on a machine with `cpus` possible CPUs.
    fn kernel_ring(asked: u64, cpus: u64) -> u64 {
        let n = asked.max(cpus * 4) * 2 + 2;
        let pages = (HEADER + n * EVENT).div_ceil(4096);
        (pages * 4096 - HEADER) / EVENT
    }

    #[test]
    fn io_setup_gets_back_the_same_ring() {
        for cpus in [1, 2, 4, 8] {
            for asked in [1u64, 2, 64, 100, 127, 128, 1000, 4096, 65536] {
                let nr = kernel_ring(asked, cpus) as u32;
                let h = Header::parse(&header(nr, 0, 0));
                assert_eq!(kernel_ring(h.setup_events(), cpus), u64::from(nr), "io_setup({asked}) on {cpus} CPUs");
            }
        }
    }
}
