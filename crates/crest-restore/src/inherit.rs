//! Pages a child shared copy-on-write with its parent (`Vma::inherited`, format 4.7), shared
//! again at restart.
//!
//! Sharing a private page between two processes takes a `fork` with the page in place. The
//! husks are forks of `cr_restart` and are filled from outside once they all exist, too late
//! for that; so the mappings that share pages are built before the husks fork, inside the
//! husks themselves, away from where they belong:
//!
//! - `cr_restart` reserves, for each mapping that shares pages (by its bounds), its own place
//!   when that is free in `cr_restart` (well clear of its memory) and overlaps no other such
//!   mapping ([`Premap::reserve`], `PROT_NONE`): it is built where it belongs and not moved
//!   later. The others get a place, the same in every process, in one more free range, clear of
//!   `cr_restart`'s memory and of every mapping of the image;
//! - each husk, before it forks the husks of its children, builds its own such mappings there
//!   ([`Premap::build`]): a parent's from nothing (fresh memory or its file, and its runs); a
//!   child's from what it inherited from its parent, its own pages dropped (`MADV_DONTNEED`:
//!   zeros, or its file's contents) and its runs written over them. The children forked next
//!   inherit the result, page for page;
//! - when a husk is filled, these mappings are kept through the clearing of its memory and
//!   those built elsewhere moved into place with `mremap` ([`Premap::placed`]), which moves
//!   page tables, not pages: what was shared stays shared. They are not filled again. A
//!   mapping built in place saves that move, which costs as much as a fork of it: the kernel
//!   copies its chain of anon_vmas, as long as the process is deep in the tree.
use std::collections::HashMap;

use crest_image::{Process, Vma, VmaBacking};

use crate::plan::Plan;
use crate::RestoreError;

/// Where the mappings that share pages are built.
#[derive(Debug, Default)]
pub(crate) struct Premap {
    /// Bounds of a mapping -> where it is built.
    at: HashMap<(u64, u64), u64>,
    /// For each process, the indices of its mappings built there.
    pub vmas: Vec<Vec<usize>>,
    /// The shared reserved range: (start, length); length 0 when nothing is built there.
    range: (u64, u64),
    /// Mappings built in their own place: (start, length) of each, reserved.
    own: Vec<(u64, u64)>,
}

/// How far a mapping built in its own place stays from `cr_restart`'s memory, so that its
/// stack and heap can still grow.
const OWN_MARGIN: u64 = 8 << 20;

impl Drop for Premap {
    /// Gives the reserved range back (in `cr_restart`: the husks have their own).
    fn drop(&mut self) {
        if self.range.0 != 0 {
            let _ = crest_ptrace::sys::unreserve(self.range.0, self.range.1);
        }
        for &(a, l) in &self.own {
            let _ = crest_ptrace::sys::unreserve(a, l);
        }
    }
}

impl Premap {
    /// Which mappings of `procs` are built before the forks: those with pages inherited from
    /// the parent, and those of a parent that a child's inherits from.
    pub fn plan(procs: &[Process], plan: &Plan) -> Premap {
        let mut vmas = vec![Vec::new(); procs.len()];
        for (i, p) in procs.iter().enumerate().filter(|(_, p)| p.exit_status.is_none()) {
            for (k, v) in p.vmas.iter().enumerate() {
                let child_side = !v.inherited.is_empty();
                let parent_side = plan.children[i].iter().any(|&c| procs[c].exit_status.is_none() && procs[c].vmas.iter().any(|w| !w.inherited.is_empty() && w.shares_with(v)));
                if child_side || parent_side {
                    vmas[i].push(k);
                }
            }
        }
        let mut keys: Vec<(u64, u64)> = vmas.iter().enumerate().flat_map(|(i, ks)| ks.iter().map(move |&k| (i, k))).map(|(i, k)| (procs[i].vmas[k].start, procs[i].vmas[k].end)).collect();
        keys.sort_unstable();
        keys.dedup();
        // One page apart, so that the kernel never merges two of them into one mapping.
        let mut at = HashMap::new();
        let mut len = 0;
        for (s, e) in keys {
            at.insert((s, e), len);
            len += e - s + 4096;
        }
        Premap { at, vmas, range: (0, len), own: Vec::new() }
    }

    /// Whether anything is built before the forks.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Reserves the range in this process (inherited by the husks), clear of `busy` (its own
    /// mappings) and of every mapping of `procs`.
    pub fn reserve(&mut self, procs: &[Process], busy: &[(u64, u64)]) -> Result<(), RestoreError> {
        if self.is_empty() {
            return Ok(());
        }
        // In their own place where that is free (with a margin) and no other mapping built
        // before the forks overlaps it; the others, one page apart, in one more range.
        let mut keys: Vec<(u64, u64)> = self.at.keys().copied().collect();
        keys.sort_unstable();
        let clear = |(s, e): (u64, u64)| !busy.iter().any(|&(bs, be)| s < be.saturating_add(OWN_MARGIN) && bs.saturating_sub(OWN_MARGIN) < e);
        let alone = |k: (u64, u64)| !keys.iter().any(|&o| o != k && o.0 < k.1 && k.0 < o.1);
        let mut rest = Vec::new();
        for &k in &keys {
            if clear(k) && alone(k) && crest_ptrace::sys::reserve(k.0, k.1 - k.0).is_ok() {
                self.own.push((k.0, k.1 - k.0));
                self.at.insert(k, k.0);
            } else {
                rest.push(k);
            }
        }
        let mut len = 0;
        for k in rest.iter() {
            self.at.insert(*k, len);
            len += k.1 - k.0 + 4096;
        }
        self.range.1 = len;
        if len == 0 {
            return Ok(());
        }
        let own: Vec<(u64, u64)> = self.own.iter().map(|&(a, l)| (a, a + l)).collect();
        let mut taken: Vec<(u64, u64)> = busy.to_vec();
        taken.extend(own);
        taken.extend(procs.iter().flat_map(|p| &p.vmas).map(|v| (v.start, v.end)));
        let free = |a: u64| !taken.iter().any(|&(s, e)| a < e && s < a + len);
        let candidates = std::iter::once(0x1000_0000_0000u64).chain(taken.iter().map(|t| t.1.next_multiple_of(4096)));
        for a in candidates.filter(|&a| a >= 0x1000_0000 && a + len <= crest_image::validate::USER_ADDR_END && free(a)) {
            if crest_ptrace::sys::reserve(a, len).is_ok() {
                self.range.0 = a;
                for k in &rest {
                    if let Some(v) = self.at.get_mut(k) {
                        *v += a;
                    }
                }
                return Ok(());
            }
        }
        Err(RestoreError::Refused(format!("no free address range of {len} bytes to rebuild the memory shared between parents and children in")))
    }

    /// The reserved ranges (start, end): the shared one, when there is one, and those of the
    /// mappings built in their own place.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let shared = (self.range.0 != 0).then_some((self.range.0, self.range.0 + self.range.1));
        shared.into_iter().chain(self.own.iter().map(|&(a, l)| (a, a + l))).collect()
    }

    fn addr(&self, v: &Vma) -> u64 {
        self.at[&(v.start, v.end)]
    }

    /// In the husk of process `i` (`p`), before it forks its children: builds its mappings
    /// that share pages, reading their runs from `image_fds` (the image, then the parents of an
    /// incremental one; see the module documentation).
    pub fn build(&self, i: usize, p: &Process, image_fds: &[i32]) -> Result<(), String> {
        if self.vmas[i].is_empty() {
            return Ok(());
        }
        let images = image_fds.iter().map(|&fd| crest_ptrace::sys::dup_above(fd, 3).map(std::fs::File::from).map_err(|e| format!("pid {}: the image: {e}", p.pid))).collect::<Result<Vec<_>, _>>()?;
        let mut reader = crest_image::codec::RunReader::new().map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        for &k in &self.vmas[i] {
            let v = &p.vmas[k];
            let (at, len) = (self.addr(v), v.end - v.start);
            let what = format!("pid {}: mapping {:#x}-{:#x} shared with its parent or children", p.pid, v.start, v.end);
            if v.inherited.is_empty() {
                match &v.backing {
                    VmaBacking::File { path, offset, .. } => {
                        let f = std::fs::File::open(path).map_err(|e| format!("{what}: opening {path}: {e}"))?;
                        crest_ptrace::sys::reserved_map(at, len, Some(std::os::fd::AsRawFd::as_raw_fd(&f)), *offset)
                    }
                    _ => crest_ptrace::sys::reserved_map(at, len, None, 0),
                }
                .map_err(|e| format!("{what}: mapping it: {e}"))?;
            } else {
                // The parent's mapping, inherited: the pages that are not the parent's any more
                // are dropped, then this process's own written over them.
                for (a, l) in crest_kinds::memory::subtract_ranges(&[(v.start, len)], &v.inherited) {
                    crest_ptrace::sys::reserved_drop(at + (a - v.start), l).map_err(|e| format!("{what}: dropping the pages that are its own: {e}"))?;
                }
            }
            for r in &v.pages {
                let image = images.get(r.image as usize).ok_or_else(|| format!("{what}: page run {:#x} lies in image {} of a chain of {}", r.vaddr, r.image, images.len()))?;
                reader.read(image, p.pid, r, &mut buf).map_err(|e| e.to_string())?;
                crest_ptrace::sys::reserved_write(at + (r.vaddr - v.start), &buf).map_err(|e| format!("{what}: writing its pages at {:#x}: {e}", r.vaddr))?;
            }
        }
        Ok(())
    }

    /// For the filling of process `i` (`p`) from outside: (where built, length, where it
    /// belongs) of each mapping built before the forks.
    pub fn placed(&self, i: usize, p: &Process) -> Vec<(u64, u64, u64)> {
        self.vmas[i].iter().map(|&k| &p.vmas[k]).map(|v| (self.addr(v), v.end - v.start, v.start)).collect()
    }
}
