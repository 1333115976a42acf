//! Pages a child shared copy-on-write with its parent (`Vma::inherited`, format 4.7), shared
//! again at restart.
//!
//! Sharing a private page between two processes takes a `fork` with the page in place. The
//! husks are forks of `cr_restart` and are filled from outside once they all exist, too late
//! for that; so the mappings that share pages are built before the husks fork, inside the
//! husks themselves, away from where they belong:
//!
//! - `cr_restart` reserves one free range ([`Premap::reserve`], `PROT_NONE`), clear of its own
//!   memory and of every mapping of the image, and gives each mapping that shares pages (by
//!   its bounds) a place there, the same in every process;
//! - each husk, before it forks the husks of its children, builds its own such mappings there
//!   ([`Premap::build`]): a parent's from nothing (fresh memory or its file, and its runs); a
//!   child's from what it inherited from its parent, its own pages dropped (`MADV_DONTNEED`:
//!   zeros, or its file's contents) and its runs written over them. The children forked next
//!   inherit the result, page for page;
//! - when a husk is filled, these mappings are kept through the clearing of its memory and
//!   moved into place with `mremap` ([`Premap::placed`]), which moves page tables, not pages:
//!   what was shared stays shared. They are not filled again.
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
    /// The reserved range: (start, length); length 0 when nothing is built.
    range: (u64, u64),
}

impl Drop for Premap {
    /// Gives the reserved range back (in `cr_restart`: the husks have their own).
    fn drop(&mut self) {
        if self.range.0 != 0 {
            let _ = crest_ptrace::sys::unreserve(self.range.0, self.range.1);
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
        Premap { at, vmas, range: (0, len) }
    }

    /// Whether anything is built before the forks.
    pub fn is_empty(&self) -> bool {
        self.range.1 == 0
    }

    /// Reserves the range in this process (inherited by the husks), clear of `busy` (its own
    /// mappings) and of every mapping of `procs`.
    pub fn reserve(&mut self, procs: &[Process], busy: &[(u64, u64)]) -> Result<(), RestoreError> {
        if self.is_empty() {
            return Ok(());
        }
        let len = self.range.1;
        let mut taken: Vec<(u64, u64)> = busy.to_vec();
        taken.extend(procs.iter().flat_map(|p| &p.vmas).map(|v| (v.start, v.end)));
        let free = |a: u64| !taken.iter().any(|&(s, e)| a < e && s < a + len);
        let candidates = std::iter::once(0x1000_0000_0000u64).chain(taken.iter().map(|t| t.1.next_multiple_of(4096)));
        for a in candidates.filter(|&a| a >= 0x1000_0000 && a + len <= crest_image::validate::USER_ADDR_END && free(a)) {
            if crest_ptrace::sys::reserve(a, len).is_ok() {
                self.range.0 = a;
                for v in self.at.values_mut() {
                    *v += a;
                }
                return Ok(());
            }
        }
        Err(RestoreError::Refused(format!("no free address range of {len} bytes to rebuild the memory shared between parents and children in")))
    }

    /// The reserved range (start, end), when there is one.
    pub fn range(&self) -> Option<(u64, u64)> {
        (self.range.0 != 0).then_some((self.range.0, self.range.0 + self.range.1))
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
