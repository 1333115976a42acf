//! Driving one husk from an empty fork to the restored process.
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use crest_image::{FdKind, ImageFile, Process, SpecialArea, Vma, VmaBacking};
use crest_kinds::memory::{self, MapFds};
use crest_kinds::{fd, mm, signals, task, thread, vdso, Scratch};
use crest_ptrace::{find_syscall_insn, Remote};

use crate::RestoreError;

const RSEQ_FLAG_UNREGISTER: u64 = 1;
const PR_SET_PDEATHSIG: u64 = 1;

/// How to restart.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Give the process its saved PID (fails when taken).
    pub restore_pid: bool,
    /// Verify page checksums while restoring (on by default in the CLI).
    pub verify: bool,
    /// Counts the page bytes restored, for a progress display.
    pub progress: Option<std::sync::Arc<crest_kinds::progress::Progress>>,
}

/// A restored process, a child of the caller, running.
#[derive(Debug, Clone)]
pub struct Restored {
    /// Its PID.
    pub pid: i32,
    /// Bytes of page data read from the image.
    pub page_bytes: u64,
    /// Remote syscalls made.
    pub remote_syscalls: u64,
    /// Whether `/proc/PID/exe` could be set (needs privilege).
    pub exe_set: bool,
}

/// For every file mapping whose contents the image holds (`cr_checkpoint --save-*`): when its
/// file is gone or has changed since the checkpoint, restore it from the image alone, as
/// anonymous memory (shared memory for a shared mapping), so the file is not needed. A shared
/// mapping whose file is unchanged is mapped from the file and not written over. Returns the
/// paths that were left out this way.
pub fn use_saved_contents(p: &mut Process) -> Vec<String> {
    let mut left_out = Vec::new();
    for v in &mut p.vmas {
        if v.flags & crest_image::vma_flags::SAVED == 0 {
            continue;
        }
        let VmaBacking::File { path, size, mtime_ns, .. } = &v.backing else { continue };
        let unchanged = std::fs::metadata(path).is_ok_and(|md| md.size() == *size && md.mtime() * 1_000_000_000 + md.mtime_nsec() == *mtime_ns);
        let shared = v.flags & crest_image::vma_flags::SHARED != 0;
        if unchanged {
            if shared {
                v.pages.clear();
            }
            continue;
        }
        if !left_out.contains(path) {
            left_out.push(path.clone());
        }
        v.backing = if shared { VmaBacking::SharedAnon { id: (1 << 63) | v.start, size: v.end - v.start } } else { VmaBacking::Anon };
    }
    if !p.exe.is_empty() && left_out.contains(&p.exe) {
        // The executable itself is gone or changed: /proc/PID/exe cannot point at it.
        p.exe.clear();
    }
    left_out
}

/// When `pid` is a process that has died but not been reaped yet (the original, killed by
/// `cr_checkpoint --kill` a moment ago, as in `cr_checkpoint --kill --fd 1 PID | cr_restart
/// --fd 0`), gives its parent up to two seconds to reap it, so that its PID is free.
fn wait_for_zombie(pid: i32) {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(2) {
        let dead = crest_proc::read(pid, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok()).is_some_and(|st| matches!(st.state, 'Z' | 'X'));
        if !dead {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Restores the image's process as a child of the caller, which must be single-threaded.
pub fn restore(img: &ImageFile, opts: &RestoreOptions) -> Result<Restored, RestoreError> {
    let image = &img.image;
    let [p] = image.processes.as_slice() else {
        return Err(RestoreError::Refused(format!("the image holds {} processes; process trees are not supported yet", image.processes.len())));
    };
    check_files(p)?;
    let own_maps = crest_proc::parse_smaps(&crest_proc::read(std::process::id() as i32, "maps")?)?;
    let here = vdso::layout(&own_maps);
    if here != image.vdso_layout {
        return Err(RestoreError::Refused(format!(
            "this kernel's vDSO layout {here:?} differs from the image's {:?} (checkpointed on {}): restart on a kernel like the one the checkpoint was taken on",
            image.vdso_layout, image.kernel
        )));
    }

    // Descriptors the husk needs while it is filled: the image, mapped files, memfds, the exe.
    let (files, shared) = memory::needed_files(&p.vmas);
    let max_fd = p.fds.iter().map(|f| f.fd).max().unwrap_or(2).max(2);
    let aux_base = max_fd + 1;
    let n_aux = 2 + files.len() + shared.len() + 1; // image, status pipe, files, memfds, exe
    let mut fds = MapFds { image: aux_base, ..Default::default() };
    let pipe_fd = aux_base + 1;
    let mut next = aux_base + 2;
    for (path, _) in &files {
        fds.files.insert(path.clone(), next);
        next += 1;
    }
    for (id, _) in &shared {
        fds.shared.insert(*id, next);
        next += 1;
    }
    let exe_fd = next;
    let aux: Vec<i32> = (aux_base..aux_base + n_aux as i32).collect();
    let image_raw = img.file.as_raw_fd();

    let prepare_husk = |status_fd: i32, placed: &std::cell::Cell<bool>| -> Result<i32, String> {
        // Everything the restore itself uses goes above the saved descriptors: first out of
        // the way (above the whole range), then to its planned number.
        let high = aux_base + n_aux as i32;
        let mut staged: Vec<(i32, i32)> = Vec::new(); // (temporary, final)
        let mut stage = |src: i32, dst: i32, what: &str| -> Result<(), String> {
            let t = crest_ptrace::sys::dup_above(src, high).map_err(|e| format!("{what}: {e}"))?;
            staged.push((t, dst));
            Ok(())
        };
        stage(status_fd, pipe_fd, "status pipe")?;
        stage(image_raw, fds.image, "image file")?;
        for (path, write) in &files {
            let f = std::fs::OpenOptions::new().read(true).write(*write).open(path).map_err(|e| format!("opening {path} to map it: {e}"))?;
            stage(f.as_raw_fd(), fds.files[path], path)?;
        }
        for (id, size) in &shared {
            let f = crest_ptrace::sys::memfd("crest-shared", *size).map_err(|e| format!("creating shared memory: {e}"))?;
            stage(f.as_raw_fd(), fds.shared[id], "shared memory")?;
        }
        // An empty path: the executable's contents come from the image (it is gone or changed).
        if !p.exe.is_empty() {
            match std::fs::File::open(&p.exe) {
                Ok(f) => stage(f.as_raw_fd(), exe_fd, &p.exe)?,
                Err(e) => return Err(format!("opening the executable {}: {e}", p.exe)),
            }
        }
        for (t, dst) in staged {
            crest_ptrace::sys::dup2(t, dst).map_err(|e| format!("placing descriptor {dst}: {e}"))?;
            crest_ptrace::sys::close(t);
            placed.set(true);
        }
        fd::prepare_all(&p.fds, &aux)?;
        task::prepare(p, &p.cwd)?;
        signals::prepare_actions(&p.sigactions)?;
        Ok(pipe_fd)
    };
    let prepare = |status_fd: i32| -> Result<i32, (i32, String)> {
        // The status pipe is placed first; until then failures are reported on its old number.
        let placed = std::cell::Cell::new(false);
        let r = prepare_husk(status_fd, &placed);
        r.map_err(|e| (if placed.get() { pipe_fd } else { status_fd }, e))
    };
    if opts.restore_pid {
        wait_for_zombie(p.pid);
    }
    let husk = crest_ptrace::husk::spawn(opts.restore_pid.then_some(p.pid), prepare)?;
    let pid = husk.tid;
    let result = std::thread::scope(|s| {
        let verifier = opts.verify.then(|| s.spawn(|| img.verify_pages(1)));
        let filled = fill(&husk, p, &img.file, &fds, exe_fd, &aux, opts);
        let verified = match verifier {
            Some(v) => v.join().unwrap_or_else(|_| Err(crest_image::ImageError::Invalid("page verifier panicked".into()))),
            None => Ok(()),
        };
        verified?;
        filled
    });
    match result {
        Ok((page_bytes, remote_syscalls, exe_set, threads)) => {
            let all: Vec<&crest_ptrace::Tracee> = std::iter::once(&husk).chain(threads.iter()).collect();
            if let Err(e) = finish(&all, p) {
                let _ = crest_ptrace::sys::kill(pid, libc::SIGKILL);
                return Err(e);
            }
            for t in threads {
                t.detach(0)?;
            }
            husk.detach(0)?;
            Ok(Restored { pid, page_bytes, remote_syscalls, exe_set })
        }
        Err(e) => {
            let _ = crest_ptrace::sys::kill(pid, libc::SIGKILL);
            let _ = husk.wait_stop();
            Err(e)
        }
    }
}

/// Refuses an image whose files are missing or changed since the checkpoint.
fn check_files(p: &Process) -> Result<(), RestoreError> {
    for v in &p.vmas {
        if let VmaBacking::File { path, size, mtime_ns, .. } = &v.backing {
            let md = std::fs::metadata(path).map_err(|e| RestoreError::Refused(format!("{path}, mapped at {:#x}, cannot be used: {e}", v.start)))?;
            let m = md.mtime() * 1_000_000_000 + md.mtime_nsec();
            if md.size() != *size || m != *mtime_ns {
                return Err(RestoreError::Refused(format!(
                    "{path}, mapped at {:#x}, has changed since the checkpoint (size {} then, {} now); the process cannot be restored from it",
                    v.start,
                    size,
                    md.size()
                )));
            }
        }
    }
    for f in &p.fds {
        if let FdKind::Regular { path, .. } | FdKind::Directory { path, .. } = &f.kind {
            if let Err(e) = std::fs::metadata(path) {
                return Err(RestoreError::Refused(format!("{path}, open as fd {}, cannot be used: {e}", f.fd)));
            }
        }
    }
    Ok(())
}

/// A free range of `len` bytes in the saved layout that also avoids `avoid`.
fn find_gap(vmas: &[Vma], avoid: &[(u64, u64)], len: u64) -> Option<u64> {
    let busy = |a: u64| vmas.iter().map(|v| (v.start, v.end)).chain(avoid.iter().copied()).any(|(s, e)| a < e && s < a + len);
    std::iter::once(0x10_0000u64)
        .chain(vmas.iter().map(|v| v.end))
        .chain(avoid.iter().map(|a| a.1))
        .filter(|&a| a + len <= crest_image::validate::USER_ADDR_END)
        .find(|&a| !busy(a))
}

/// Turns the husk's memory into the saved process's. Returns (bytes, syscalls, exe set).
#[allow(clippy::type_complexity)]
fn fill(husk: &crest_ptrace::Tracee, p: &Process, image: &std::fs::File, fds: &MapFds, exe_fd: i32, aux: &[i32], opts: &RestoreOptions) -> Result<(u64, u64, bool, Vec<crest_ptrace::Tracee>), RestoreError> {
    let pid = husk.tid;
    let maps = crest_proc::parse_smaps(&crest_proc::read(pid, "maps")?)?;
    let areas = vdso::areas(&maps);
    let (_, vs, ve) = *areas.iter().find(|a| a.0 == SpecialArea::Vdso).ok_or_else(|| RestoreError::Refused("this kernel gives processes no vDSO".into()))?;
    let regs = husk.regs()?;
    let mut remote = Remote::new(husk, find_syscall_insn(pid, vs, ve)?, regs);
    if let Some((addr, len, sig)) = husk.rseq()? {
        remote.call("unregistering the restore process's rseq", libc::SYS_rseq, &[addr, u64::from(len), RSEQ_FLAG_UNREGISTER, u64::from(sig)])?;
    }
    remote.call("clearing the parent-death signal", libc::SYS_prctl, &[PR_SET_PDEATHSIG, 0])?;
    // Unmap everything of the husk but the special areas, merging neighbours into one call.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for m in maps.iter().filter(|m| vdso::special(&m.name).is_none()) {
        match ranges.last_mut() {
            Some(r) if r.1 == m.start => r.1 = m.end,
            _ => ranges.push((m.start, m.end)),
        }
    }
    for (s, e) in ranges {
        remote.call(&format!("clearing the restore process's memory at {s:#x}"), libc::SYS_munmap, &[s, e - s])?;
    }
    let span: u64 = areas.iter().map(|a| a.2 - a.1).sum();
    let here: Vec<(u64, u64)> = areas.iter().map(|a| (a.1, a.2)).collect();
    let tmp = find_gap(&p.vmas, &here, span).ok_or_else(|| RestoreError::Refused("no free address range to move the vDSO through".into()))?;
    vdso::restore(&mut remote, &areas, &p.vmas, tmp)?;
    let gap = find_gap(&p.vmas, &[], crest_kinds::SCRATCH_LEN).ok_or_else(|| RestoreError::Refused("no free address range for a scratch page".into()))?;
    let scratch = Scratch::map(&mut remote, pid, gap)?;
    let no_progress = crest_kinds::progress::Progress::default();
    let progress = opts.progress.as_deref().unwrap_or(&no_progress);
    let bytes = memory::restore(&mut remote, pid, &p.vmas, fds, image, progress)?;
    let exe_set = mm::restore(&mut remote, &scratch, &p.mm, if p.exe.is_empty() { -1 } else { exe_fd })?;
    for &fd in aux {
        let _ = remote.syscall(libc::SYS_close, &[fd as u64])?;
    }
    thread::restore(&mut remote, &scratch, pid, &p.threads[0])?;
    let mut threads = Vec::with_capacity(p.threads.len() - 1);
    let mut count = 0;
    for th in &p.threads[1..] {
        let t = thread::create(&mut remote, &scratch, opts.restore_pid.then_some(th.tid))?;
        let base = t.regs()?;
        let mut r = Remote::new(&t, remote.syscall_ip(), base);
        thread::restore(&mut r, &scratch, pid, th)?;
        task::limit_capabilities(&mut r, &scratch, pid, t.tid, p.creds.cap_eff)?;
        count += r.count;
        threads.push(t);
    }
    // After the last clone3 (which may have needed CAP_CHECKPOINT_RESTORE for set_tid).
    task::limit_capabilities(&mut remote, &scratch, pid, pid, p.creds.cap_eff)?;
    signals::restore_pending(&mut remote, &scratch, pid, None, &p.shared_pending)?;
    scratch.unmap(&mut remote)?;
    Ok((bytes, remote.count + count, exe_set, threads))
}

/// Limits, then each thread's XSAVE area, registers and mask; each thread is interrupted once
/// more and let go from that event stop, so the kernel applies its syscall-restart rules.
fn finish(threads: &[&crest_ptrace::Tracee], p: &Process) -> Result<(), RestoreError> {
    task::restore_rlimits(threads[0].tid, &p.rlimits)?;
    for (t, th) in threads.iter().zip(&p.threads) {
        t.set_xstate(&th.xsave)?;
        t.set_regs(&thread::regs_from_image(&th.regs))?;
        t.set_sigmask(th.sigmask)?;
        t.park()?;
    }
    Ok(())
}
