//! Checks that a decoded [`Image`] makes sense before anything acts on it: address ranges in
//! user space, sorted non-overlapping mappings, page runs inside their mapping and inside the
//! page section, sane counts. Every failure names the process and object.
use crate::format::PAGE_SIZE;
use crate::records::{Image, Vma, VmaBacking};
use crate::ImageError;

/// Highest user address on x86-64 with 4-level paging (`TASK_SIZE_MAX`).
pub const USER_ADDR_END: u64 = 0x7fff_ffff_f000;
/// Highest user address with 5-level paging.
pub const USER_ADDR_END_LA57: u64 = 0x00ff_ffff_ffff_f000;
/// The fixed `[vsyscall]` page.
pub const VSYSCALL_ADDR: u64 = 0xffff_ffff_ff60_0000;

/// Checks that the page data of `v` (a mapping of process `pid`) accounts for every page the
/// checkpoint found to need saving: its runs and its zero pages make up [`Vma::need`].
pub fn check_coverage(pid: i32, v: &Vma) -> Result<(), ImageError> {
    let stored: u64 = v.pages.iter().map(|r| r.len).sum();
    if stored.checked_add(v.zero) == Some(v.need) {
        return Ok(());
    }
    Err(ImageError::Invalid(format!(
        "pid {pid}: mapping {:#x}-{:#x} held {} bytes of memory to save, but its page data covers {} ({} stored, {} of zeros): pages are missing",
        v.start,
        v.end,
        v.need,
        stored.saturating_add(v.zero),
        stored,
        v.zero
    )))
}

/// Checks the ranges of `v` (a mapping of `p`) inherited from the parent (format 4.7): page
/// aligned, in order, inside the mapping, apart from its runs, and the parent has a mapping of
/// the same bounds that can share them ([`Vma::shares_with`]).
fn check_inherited(img: &Image, p: &crate::Process, v: &Vma) -> Result<(), ImageError> {
    if v.inherited.is_empty() {
        return Ok(());
    }
    let pid = p.pid;
    let what = format!("pid {pid}: mapping {:#x}-{:#x}", v.start, v.end);
    let mut end = v.start;
    for &(a, len) in &v.inherited {
        let ok = a >= end && len > 0 && a.is_multiple_of(PAGE_SIZE) && len.is_multiple_of(PAGE_SIZE) && a.checked_add(len).is_some_and(|e| e <= v.end);
        if !ok || v.pages.iter().any(|r| r.vaddr < a + len && a < r.vaddr + r.len) {
            return Err(ImageError::Invalid(format!("{what}: the pages {a:#x}+{len:#x} shared with its parent do not fit the mapping or overlap its page data")));
        }
        end = a + len;
    }
    let parent = img.processes.iter().find(|q| q.pid == p.ppid && p.ppid != 0 && q.exit_status.is_none());
    if !parent.is_some_and(|q| q.vmas.iter().any(|w| v.shares_with(w))) {
        return Err(ImageError::Invalid(format!("{what} shares pages with its parent {}, which has no such mapping to share them", p.ppid)));
    }
    Ok(())
}

/// Checks the guard regions of `v` (format 4.11): page aligned, in order, inside the mapping,
/// apart from its page data.
fn check_guards(pid: i32, v: &Vma) -> Result<(), ImageError> {
    let mut end = v.start;
    for &(a, len) in &v.guards {
        let ok = a >= end && len > 0 && a.is_multiple_of(PAGE_SIZE) && len.is_multiple_of(PAGE_SIZE) && a.checked_add(len).is_some_and(|e| e <= v.end);
        if !ok || v.pages.iter().any(|r| r.vaddr < a + len && a < r.vaddr + r.len) {
            return Err(ImageError::Invalid(format!("pid {pid}: mapping {:#x}-{:#x}: the guard region {a:#x}+{len:#x} does not fit the mapping or overlaps its page data", v.start, v.end)));
        }
        end = a + len;
    }
    Ok(())
}

/// Validates `img`, whose page data must lie in `pages_start..pages_end` of the file.
pub fn validate(img: &Image, pages_start: u64, pages_end: u64) -> Result<(), ImageError> {
    let bad = |m: String| Err(ImageError::Invalid(m));
    if img.processes.is_empty() || img.processes.len() > 1 << 22 {
        return bad(format!("{} processes", img.processes.len()));
    }
    let mut seen_pids = std::collections::HashSet::new();
    for p in &img.processes {
        let pid = p.pid;
        if pid <= 0 || p.threads.is_empty() != p.exit_status.is_some() {
            return bad(format!("process {pid} has an invalid pid, or no threads though it is alive, or threads though it is a zombie"));
        }
        if p.ppid != 0 && !seen_pids.contains(&p.ppid) {
            return bad(format!("process {pid}: its parent {} is not before it in the image", p.ppid));
        }
        if !seen_pids.insert(pid) {
            return bad(format!("process {pid} appears twice"));
        }
        if p.exit_status.is_some() {
            continue;
        }
        if p.files_shared && (p.ppid == 0 || !p.fds.is_empty()) {
            return bad(format!("process {pid} shares its parent's descriptor table but has no parent in the image, or descriptors of its own"));
        }
        let mut prev_end = 0u64;
        for v in &p.vmas {
            let is_vsyscall = matches!(v.backing, VmaBacking::Special(crate::SpecialArea::Vsyscall));
            let limit = if is_vsyscall { u64::MAX } else { USER_ADDR_END_LA57 };
            if v.start >= v.end || v.start % PAGE_SIZE != 0 || v.end % PAGE_SIZE != 0 || v.end > limit || (is_vsyscall && v.start != VSYSCALL_ADDR) {
                return bad(format!("pid {pid}: mapping {:#x}-{:#x} is not a valid user-space range", v.start, v.end));
            }
            if v.start < prev_end {
                return bad(format!("pid {pid}: mapping {:#x}-{:#x} overlaps the one before it", v.start, v.end));
            }
            prev_end = v.end;
            if v.flags & crate::vma_flags::AIO != 0 && (!matches!(v.backing, VmaBacking::Anon) || v.flags & crate::vma_flags::SHARED != 0) {
                return bad(format!("pid {pid}: mapping {:#x}-{:#x} is an AIO ring that is not saved as private anonymous memory", v.start, v.end));
            }
            if let VmaBacking::PacketRing { fd, .. } = &v.backing {
                // AF_PACKET; a process sharing its parent's descriptors has them in the parent's record.
                let socket = |f: &crate::FdRecord| f.fd == *fd && matches!(f.kind, crate::FdKind::Socket { family: 17, .. });
                if !v.pages.is_empty() || !(p.files_shared || p.fds.iter().any(socket)) {
                    return bad(format!("pid {pid}: mapping {:#x}-{:#x} maps the rings of a packet socket at fd {fd}, which the process has no packet socket at, or has pages saved", v.start, v.end));
                }
            }
            if let VmaBacking::File { path, .. } | VmaBacking::Deleted { path, .. } = &v.backing {
                if !path.starts_with('/') {
                    return bad(format!("pid {pid}: mapping {:#x}-{:#x} has a relative path", v.start, v.end));
                }
            }
            let mut run_end = v.start;
            for r in &v.pages {
                let ok = r.vaddr >= run_end
                    && r.len > 0
                    && r.vaddr % PAGE_SIZE == 0
                    && r.len % PAGE_SIZE == 0
                    && (r.zlen == 0 && r.offset % PAGE_SIZE == 0 || r.zlen > 0 && r.zlen < r.len)
                    && r.vaddr.checked_add(r.len).is_some_and(|e| e <= v.end)
                    // A run of a parent image is checked against that image's page data when
                    // the chain is opened (`crate::chain`).
                    && (r.image > 0 && img.parent.is_some() || r.image == 0 && r.offset >= pages_start && r.offset.checked_add(r.stored_len()).is_some_and(|e| e <= pages_end));
                if !ok {
                    return bad(format!("pid {pid}: page run {:#x}+{:#x} at offset {} does not fit its mapping or the page data", r.vaddr, r.len, r.offset));
                }
                run_end = r.vaddr + r.len;
            }
            check_coverage(pid, v)?;
            check_inherited(img, p, v)?;
            check_guards(pid, v)?;
        }
        let mut fds: Vec<i32> = p.fds.iter().map(|f| f.fd).collect();
        fds.sort_unstable();
        if fds.windows(2).any(|w| w[0] == w[1]) || fds.first().is_some_and(|&f| f < 0) {
            return bad(format!("pid {pid}: duplicate or negative file descriptor numbers"));
        }
        for f in &p.fds {
            if let Some(path) = f.kind.path() {
                if !path.starts_with('/') {
                    return bad(format!("pid {pid} fd {}: relative path", f.fd));
                }
            }
            if let crate::FdKind::Inotify { watches, .. } = &f.kind {
                if watches.iter().any(|w| !(w.path.starts_with('/') || w.path.is_empty() && w.open_as.is_some_and(|o| p.fds.iter().any(|g| g.fd == o)))) {
                    return bad(format!("pid {pid} fd {}: an inotify watch with a relative path", f.fd));
                }
            }
        }
        if p.sigactions.iter().any(|a| a.signo == 0 || a.signo > 64) {
            return bad(format!("pid {pid}: signal number out of range"));
        }
        if p.attrs.stop_signal > 64 || p.attrs.posix_timers.iter().any(|t| !(0..=64).contains(&t.signal)) {
            return bad(format!("pid {pid}: signal number out of range"));
        }
        if p.attrs.posix_timers.windows(2).any(|w| w[0].id >= w[1].id) || p.attrs.posix_timers.first().is_some_and(|t| t.id < 0) {
            return bad(format!("pid {pid}: POSIX timer ids out of order"));
        }
        let siginfo_ok = |s: &Vec<u8>| s.len() == 128;
        if !p.shared_pending.iter().all(siginfo_ok) {
            return bad(format!("pid {pid}: malformed pending signal"));
        }
        for t in &p.threads {
            let filters_ok = t.attrs.seccomp.iter().all(|f| !f.insns.is_empty() && f.insns.len().is_multiple_of(8) && f.insns.len() <= 4096 * 8);
            if t.tid <= 0 || t.xsave.len() > 1 << 16 || !t.pending.iter().all(siginfo_ok) || !filters_ok {
                return bad(format!("pid {pid} tid {}: invalid thread record", t.tid));
            }
        }
        if p.threads[0].tid != pid {
            return bad(format!("pid {pid}: first thread is not the leader"));
        }
    }
    for o in &img.ipc {
        let ok = o.id >= 0
            && match &o.kind {
                crate::records::IpcKind::Shm { size, .. } => *size > 0 && *size <= 1 << 46,
                crate::records::IpcKind::Sem { values } => !values.is_empty() && values.len() <= 32000,
                crate::records::IpcKind::Msg { messages, .. } => messages.iter().all(|(t, _)| *t > 0),
            };
        if !ok {
            return bad(format!("SysV IPC object {}: invalid", o.id));
        }
    }
    Ok(())
}
