//! The vDSO areas: `[vvar]`, `[vvar_vclock]` and `[vdso]`.
//!
//! glibc caches the vDSO's address, so a restored process must find the vDSO where it was. The
//! husk's own areas (same kernel) are moved with remote `mremap` to the saved addresses; the
//! kernel's special-mapping `mremap` hook keeps the vDSO working there. An image whose vDSO
//! layout (sizes) differs from this kernel's is refused. A process that had unmapped them all
//! comes back without them: the husk's are set aside while it is rebuilt and unmapped last. One
//! that unmapped or moved only some is refused at checkpoint ([`refuse_partial`]).
use crest_image::{SpecialArea, Vma, VmaBacking};
use crest_proc::MapEntry;
use crest_ptrace::Remote;

use crate::KindError;

/// The special area a mapping name stands for.
pub fn special(name: &str) -> Option<SpecialArea> {
    Some(match name {
        "[vvar]" => SpecialArea::Vvar,
        "[vvar_vclock]" => SpecialArea::VvarVclock,
        "[vdso]" => SpecialArea::Vdso,
        "[vsyscall]" => SpecialArea::Vsyscall,
        _ => return None,
    })
}

/// The movable special areas of a mapping list, with their ranges.
pub fn areas(maps: &[MapEntry]) -> Vec<(SpecialArea, u64, u64)> {
    maps.iter().filter_map(|m| special(&m.name).filter(|a| *a != SpecialArea::Vsyscall).map(|a| (a, m.start, m.end))).collect()
}

/// At checkpoint: refuses process `pid` (mappings `maps`) whose special areas are neither all
/// there (as the kernel lays them out in `cr_checkpoint` itself, `own`) nor all gone.
pub fn refuse_partial(pid: i32, maps: &[MapEntry], own: &[MapEntry]) -> Result<(), KindError> {
    let (has, kernel) = (layout(maps), layout(own));
    if has.is_empty() || has == kernel {
        return Ok(());
    }
    Err(KindError::Unsupported(format!("PID {pid} has vDSO areas {has:?} where the kernel gives {kernel:?} (it unmapped or moved part of them); only all or none of them are restored")))
}

/// Sizes of the movable special areas, as recorded in the image.
pub fn layout(maps: &[MapEntry]) -> Vec<(SpecialArea, u64)> {
    areas(maps).into_iter().map(|(a, s, e)| (a, e - s)).collect()
}

/// Whether the saved mappings `saved` hold none of the movable special areas: the process had
/// unmapped them all (a program that runs without a vDSO). Its husk's are set aside
/// ([`set_aside`]) and unmapped last ([`unmap`]).
pub fn none_saved(saved: &[Vma]) -> bool {
    !saved.iter().any(|v| matches!(v.backing, VmaBacking::Special(a) if a != SpecialArea::Vsyscall))
}

/// For a process saved without special areas: moves the husk's (`current`) to `free`, where
/// none of the saved mappings lies, for the time of the restore (the remote syscalls run
/// through the vDSO's `syscall` instruction). Returns where they are now.
pub fn set_aside(remote: &mut Remote<'_>, current: &[(SpecialArea, u64, u64)], free: u64) -> Result<Vec<(SpecialArea, u64, u64)>, KindError> {
    let mut at = free;
    let mut now = Vec::with_capacity(current.len());
    for &(area, s, e) in current {
        if s != at {
            remote.call(&format!("moving {area:?} from {s:#x} out of the way to {at:#x}"), libc::SYS_mremap, &[s, e - s, e - s, (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64, at])?;
            if area == SpecialArea::Vdso {
                let ip = remote.syscall_ip();
                remote.set_syscall_ip(ip - s + at);
            }
        }
        now.push((area, at, at + (e - s)));
        at += e - s;
    }
    Ok(now)
}

/// Unmaps the special areas set aside by [`set_aside`], once nothing more is run inside the
/// process: the vDSO last, as the remote syscalls run through it (the thread stops as the
/// last call returns, before it would run the next instruction there).
pub fn unmap(remote: &mut Remote<'_>, aside: &[(SpecialArea, u64, u64)]) -> Result<(), KindError> {
    let others = aside.iter().filter(|a| a.0 != SpecialArea::Vdso);
    for &(area, s, e) in others.chain(aside.iter().filter(|a| a.0 == SpecialArea::Vdso)) {
        remote.call(&format!("unmapping {area:?} at {s:#x}, which the process had unmapped"), libc::SYS_munmap, &[s, e - s])?;
    }
    Ok(())
}

/// Moves the husk's special areas (`current`, from its maps) to where `saved` had them.
/// Returns the new address of `[vdso]` (to relocate the syscall instruction).
pub fn restore(remote: &mut Remote<'_>, current: &[(SpecialArea, u64, u64)], saved: &[Vma], free_hint: u64) -> Result<Option<u64>, KindError> {
    let targets: Vec<(SpecialArea, u64, u64)> = saved
        .iter()
        .filter_map(|v| match v.backing {
            VmaBacking::Special(a) if a != SpecialArea::Vsyscall => Some((a, v.start, v.end)),
            _ => None,
        })
        .collect();
    let sizes = |l: &[(SpecialArea, u64, u64)]| l.iter().map(|&(a, s, e)| (a, e - s)).collect::<Vec<_>>();
    if sizes(&targets) != sizes(current) {
        return Err(KindError::Mismatch(format!("the image's vDSO layout {:?} differs from this kernel's {:?}: restart on the kernel the checkpoint was taken on", sizes(&targets), sizes(current))));
    }
    let overlaps = current.iter().any(|&(_, s, e)| targets.iter().any(|&(_, ts, te)| s < te && ts < e));
    let mut now: Vec<(SpecialArea, u64, u64)> = current.to_vec();
    // Two passes when old and new places overlap: first to a free place, then home.
    let passes: Vec<Vec<u64>> = if overlaps {
        let mut tmp = Vec::new();
        let mut at = free_hint;
        for &(_, s, e) in current {
            tmp.push(at);
            at += e - s;
        }
        vec![tmp, targets.iter().map(|t| t.1).collect()]
    } else {
        vec![targets.iter().map(|t| t.1).collect()]
    };
    for dests in passes {
        for (i, dest) in dests.into_iter().enumerate() {
            let (area, s, e) = now[i];
            if s != dest {
                let what = format!("moving {area:?} from {s:#x} to {dest:#x}");
                let args = [s, e - s, e - s, (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64, dest];
                // From the batch area the moves run in one go with what is queued; one by one
                // they run from the vDSO, which each may move.
                if remote.batch_area().is_some() {
                    remote.queue_expecting(what, libc::SYS_mremap, &args, dest);
                } else {
                    remote.call(&what, libc::SYS_mremap, &args)?;
                }
            }
            now[i] = (area, dest, dest + (e - s));
            if area == SpecialArea::Vdso {
                // The syscall instruction the remote uses lives in the vDSO: it moved too.
                let ip = remote.syscall_ip();
                remote.set_syscall_ip(ip - s + dest);
            }
        }
    }
    Ok(now.iter().find(|a| a.0 == SpecialArea::Vdso).map(|a| a.1))
}
