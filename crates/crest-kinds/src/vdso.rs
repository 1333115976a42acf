//! The vDSO areas: `[vvar]`, `[vvar_vclock]` and `[vdso]`.
//!
//! glibc caches the vDSO's address, so a restored process must find the vDSO where it was. The
//! husk's own areas (same kernel) are moved with remote `mremap` to the saved addresses; the
//! kernel's special-mapping `mremap` hook keeps the vDSO working there. An image whose vDSO
//! layout (sizes) differs from this kernel's is refused.
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

/// Sizes of the movable special areas, as recorded in the image.
pub fn layout(maps: &[MapEntry]) -> Vec<(SpecialArea, u64)> {
    areas(maps).into_iter().map(|(a, s, e)| (a, e - s)).collect()
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
                remote.call(&format!("moving {area:?} from {s:#x} to {dest:#x}"), libc::SYS_mremap, &[s, e - s, e - s, (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64, dest])?;
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
