//! Pre-copy: the private pages of processes that are to run on after the checkpoint are saved
//! while they run, and only the pages they write meanwhile are saved again while they are
//! frozen, so that they stand still for a page-table scan, not for a copy of their memory.
//!
//! [`precopy`] freezes the scope for a moment, makes a userfaultfd inside each process (a remote
//! syscall), takes it ([`crest_ptrace::wp`]) and lets the processes go. Then, while they run,
//! it registers their private mappings for asynchronous write-protection, protects them, and
//! writes every page that needs saving into the image. Any page written after its protection
//! loses it; so does any page that appears later.
//!
//! Then, still while they run, up to [`MAX_PASSES`] more passes save again what was written
//! during the previous one (`PAGEMAP_SCAN` reports those pages and protects them again in the
//! same walk), as long as that shrinks quickly enough and is not small enough to be left to the
//! freeze (the processes' page faults tell without a walk of the page tables when it is).
//! The passes read `/proc/PID/maps`, not `smaps`: the flags of the mappings, which only `smaps`
//! shows at the cost of a walk of every page table, are read once, beside the first pass.
//!
//! At the checkpoint proper (a second freeze, [`crate::FrozenTree::dump`]), [`Tracked::merge`]
//! scans each private mapping with `PAGEMAP_SCAN`: a page run saved earlier is kept when every
//! page of it is still there and unwritten; everything else that needs saving is saved now.
//! A mapping that is not registered (new since, moved by `mremap`, or of a process that could
//! not be tracked) is saved whole, while frozen, as without pre-copy. Mappings are told apart by
//! their registration, so a process that ran `exec` meanwhile is simply saved again.
//!
//! An incremental checkpoint ([`resume`]) takes up the tracking a checkpoint left armed: the
//! pages unwritten since are in the parent image, and the passes start from those written
//! since, while the processes run, as above.
//!
//! Shared memory is not pre-copied (another process may write it through its own mapping); it
//! is read while every process is frozen.
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crest_image::{vma_flags, ImageWriter, PageRun, Vma, VmaBacking};
use crest_kinds::memory;
use crest_proc::MapEntry;
use crest_ptrace::wp::{self, category, WriteTracker};

use crate::freeze::DumpOptions;
use crate::tree::{freeze_scope, Scope};
use crate::{check_cancel, pages, DumpError};

/// Pages saved ahead of a checkpoint, with what is needed to tell which are still good.
pub struct Precopy<'a> {
    /// The image, its page data begun.
    pub(crate) writer: Option<ImageWriter<&'a File>>,
    /// The processes being tracked, by PID.
    pub(crate) tracked: HashMap<i32, Tracked>,
    /// Page bytes written so far.
    pub bytes: u64,
    /// The write tracking is left armed in the processes after the checkpoint (a later
    /// incremental checkpoint takes it up): the final scan protects again what was written.
    pub(crate) track: bool,
    /// The image this one is incremental to: its runs with `image` 1 or more are that image's.
    pub(crate) parent: Option<crest_image::Parent>,
    /// Names the tracking armed by this checkpoint, in the image and in the notes (written
    /// once the image is in place: [`note_armed`]).
    pub(crate) token: u64,
    /// For an incremental image: the processes of the parent whose tracking could not be taken
    /// up (they are saved whole), with why.
    pub(crate) lost: HashMap<i32, String>,
    /// How long each step took, in order: the first copy (`precopy`) or taking up the tracking
    /// (`resume`), the passes after, and reading the mappings' flags (`flags`, as far as it
    /// did not overlap the passes).
    pub steps: Vec<(&'static str, Duration)>,
}

/// A token no other arming has: random, never 0.
fn new_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// Once the image whose metadata lists `tracking` is in place: the trackers it lists are armed
/// for it, and a later `--incremental` into it may take them up.
pub fn note_armed(tracking: &[crest_image::Tracking]) {
    for t in tracking {
        note::write(t.pid, t.start, t.fd, t.token);
    }
}

/// One tracked process.
pub(crate) struct Tracked {
    /// Its userfaultfd; closing it unregisters everything.
    _uffd: WriteTracker,
    /// Its mappings with their flags, read while it ran.
    pub maps: Vec<MapEntry>,
    /// The runs saved, in address order.
    runs: Vec<PageRun>,
    /// Ranges that could not be read (in address order): saved at the checkpoint proper
    /// whatever the scan says.
    missed: Vec<(u64, u64)>,
    /// Ranges of anonymous memory read and found all zeros (in address order): no run holds
    /// them, and while they stay unwritten they need none.
    zeros: Vec<(u64, u64)>,
    /// The mappings registered with this process's userfaultfd, as (start, end). Only their
    /// write-protection is this checkpoint's: another userfaultfd (the process's own) may
    /// protect other mappings, and its protection says nothing about what was saved here.
    registered: Vec<(u64, u64)>,
    /// With the tracking left armed: the userfaultfd's descriptor in the process, and the
    /// process's start time.
    pub left: Option<Left>,
}

/// A userfaultfd left in a process: its descriptor there, and the process's start time.
pub(crate) type Left = (i32, u64);

/// Whether the pages of `v` are pre-copied: private memory that is saved page by page (not an
/// AIO ring, which the kernel writes without the process's page tables seeing it).
fn trackable(v: &Vma) -> bool {
    matches!(v.backing, VmaBacking::Anon | VmaBacking::File { .. }) && v.flags & (vma_flags::SHARED | vma_flags::SAVED | vma_flags::AIO) == 0 && !crate::snapshot::read_while_frozen(v)
}

/// Saves the private pages of every process of the scope into `out` while they run on; see the
/// module comment. A process that cannot be tracked is left to the checkpoint proper.
///
/// `None` when the scope holds less than [`WORTH_IT`] of private memory: a snapshot stops
/// such processes for less than the pre-copy's own freezes.
pub fn precopy<'a>(scope: Scope, id: i32, out: &'a File, opts: &DumpOptions<'_>) -> Result<Option<Precopy<'a>>, DumpError> {
    if !opts.track && matches!(scope, Scope::Pid | Scope::Tree) && private_memory(id, scope == Scope::Tree) < WORTH_IT {
        return Ok(None);
    }
    let started = Instant::now();
    let mut fds: Vec<(i32, OwnedFd, Option<Left>)> = Vec::new();
    {
        let mut tree = freeze_scope(scope, id)?;
        let left = note::all();
        for f in tree.procs_mut() {
            disarm_inherited(f, &left)?;
        }
        for f in tree.procs_mut() {
            // A new tracker replaces any left earlier (one userfaultfd per range).
            disarm(f)?;
            if let Ok(Some((fd, left))) = take_userfaultfd(f, opts.track) {
                fds.push((f.pid, fd, left));
            }
        }
        tree.release(false)?;
    }
    let mut w = ImageWriter::new(out)?;
    let mut tracked = HashMap::new();
    let mut bytes = 0;
    for (pid, fd, left) in fds {
        check_cancel()?;
        let Ok(uffd) = WriteTracker::new(fd) else { continue };
        // The process runs: it may have exited, or run exec; then it is saved as it is found.
        let Ok((maps, vmas)) = mappings(pid, opts) else { continue };
        let registered: Vec<(u64, u64)> = vmas.iter().filter(|v| trackable(v) && uffd.track(v.start, v.end - v.start).is_ok()).map(|v| (v.start, v.end)).collect();
        let on: HashSet<u64> = registered.iter().map(|r| r.0).collect();
        let select = |v: &Vma| on.contains(&v.start);
        let written = match pages::write_into(&mut w, out, pid, None, vmas, &pages::Select::only(&select), opts.compress, opts.progress, pages::Source::Running) {
            Ok(r) => r,
            // It exited (or unmapped memory) while being read.
            Err(DumpError::Kind(_)) | Err(DumpError::Trace(_)) | Err(DumpError::Proc(_)) if !alive(pid) => continue,
            Err(e) => return Err(e),
        };
        bytes += written.bytes;
        let mut runs: Vec<PageRun> = written.vmas.into_iter().flat_map(|v| v.pages).collect();
        runs.sort_by_key(|r| r.vaddr);
        tracked.insert(pid, Tracked { _uffd: uffd, maps, runs, missed: written.missed, zeros: written.zeros, registered, left });
    }
    // What was written during the first pass is saved again while the processes still run,
    // pass after pass, as long as that shrinks what will be left for the stop.
    let mut steps = vec![("precopy", started.elapsed())];
    let started = Instant::now();
    bytes += passes(&mut tracked, &mut w, out, opts, MAX_PASSES, &mut HashMap::new())?;
    steps.push(("passes", started.elapsed()));
    let started = Instant::now();
    fresh_flags(&mut tracked);
    steps.push(("flags", started.elapsed()));
    Ok(Some(Precopy { writer: Some(w), tracked, bytes, track: opts.track, parent: None, token: new_token(), lost: HashMap::new(), steps }))
}

/// Up to `most` passes over the pages the `tracked` processes wrote since their protection,
/// while they run: each saves them into `w` and protects them again. After the first, another
/// pass is made only while what was written keeps shrinking quickly and is not yet small
/// enough to copy in a few milliseconds. Returns the bytes written into the image.
///
/// A process whose pass fails (it exited, it unmapped memory being read) may have had pages
/// protected again without their being saved: it is dropped from `tracked`, to be saved as if
/// never tracked (if it exited meanwhile, the checkpoint proper will tell), with why in `lost`.
fn passes(tracked: &mut HashMap<i32, Tracked>, w: &mut ImageWriter<&File>, out: &File, opts: &DumpOptions<'_>, most: usize, lost: &mut HashMap<i32, String>) -> Result<u64, DumpError> {
    let mut bytes = 0;
    let mut last = u64::MAX;
    let mut faults = HashMap::new();
    for k in 0..most {
        // After the first, a pass is made only when what was written since the last one is
        // not small enough to be copied while frozen, and shrank quickly enough: a process
        // that rewrites the same pages over and over would have them saved again, only to be
        // saved once more while frozen. The page faults since the last pass tell first
        // (writing a protected page is one): when they are few, so are the pages written, with
        // no walk of the page tables; otherwise a scan that does not protect tells.
        if k > 0 {
            let bound = tracked.keys().map(|&pid| faults_since(pid, faults.get(&pid).copied())).fold(0u64, u64::saturating_add);
            if bound <= SMALL_ENOUGH {
                break;
            }
            let written = tracked.iter().map(|(&pid, t)| t.written(pid, opts).unwrap_or(0)).sum::<u64>();
            if written <= SMALL_ENOUGH || written * 2 > last {
                break;
            }
        }
        faults = tracked.keys().map(|&pid| (pid, faults_of(pid))).filter_map(|(pid, f)| Some((pid, f?))).collect();
        let mut dirty = 0;
        let mut failed = Vec::new();
        for (&pid, t) in tracked.iter_mut() {
            check_cancel()?;
            match t.pass(pid, w, out, opts) {
                Ok((n, d)) => {
                    bytes += n;
                    dirty += d;
                }
                Err(DumpError::Cancelled) => return Err(DumpError::Cancelled),
                Err(e) => failed.push((pid, e)),
            }
        }
        for (pid, e) in failed {
            tracked.remove(&pid);
            lost.insert(pid, format!("saving the pages it wrote while it ran failed ({e})"));
        }
        if dirty <= SMALL_ENOUGH {
            break;
        }
        last = dirty;
    }
    Ok(bytes)
}

/// Page faults taken so far by the threads of `pid`, if it can be told.
fn faults_of(pid: i32) -> Option<u64> {
    crest_proc::read(pid, "stat").ok().and_then(|t| crest_proc::parse_stat(&t).ok()).map(|s| s.faults)
}

/// Bytes that process `pid` can have written into its memory since it had taken `before`
/// page faults, or `u64::MAX` when that cannot be told: a huge page at most per fault (a write
/// to a protected huge page splits it, but a fresh one comes whole). A write by another
/// process is not counted: this only tells whether another pass is worth it, the checkpoint
/// proper's scan finds every page written.
fn faults_since(pid: i32, before: Option<u64>) -> u64 {
    match (before, faults_of(pid)) {
        (Some(b), Some(now)) if now >= b => (now - b).saturating_mul(2 << 20),
        _ => u64::MAX,
    }
}

/// Why an incremental checkpoint could not take up the write tracking a checkpoint left: the
/// image is then a full one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost(pub String);

/// Takes up the write tracking that the checkpoint whose image is `parent` (at `path`) left in
/// the processes it lists, for an incremental image: the runs of the parent's mappings count as
/// saved, in the parent, for every page not written since. Then, while the processes run, the
/// pages written since the parent are saved into `out` and protected again, pass after pass as
/// in [`precopy`], so that the checkpoint proper, frozen, saves only what they write meanwhile.
/// `Err` says why it cannot (the process is not the one tracked, its tracker is gone): then a
/// full image must be made (unless the checkpoint was cancelled meanwhile).
pub fn resume<'a>(id: i32, out: &'a File, opts: &DumpOptions<'_>, parent: &crest_image::ImageFile, path: &std::path::Path) -> Result<Precopy<'a>, Lost> {
    let started = Instant::now();
    let lost = |why: String| Lost(why);
    let link = crest_image::chain::parent_of(path, parent).map_err(|e| lost(format!("{}: {e}", path.display())))?;
    if !parent.image.tracking.iter().any(|t| t.pid == id) {
        return Err(lost(format!("{} was not left tracking the writes of process {id}", path.display())));
    }
    // The flags of their mappings, for the checkpoint proper, are read meanwhile: `smaps`
    // walks the page tables, and so does the first pass, on the other core.
    let pids: Vec<i32> = parent.image.tracking.iter().map(|t| t.pid).collect();
    let flags = std::thread::spawn(move || pids.into_iter().filter_map(|pid| Some((pid, smaps(pid).ok()?))).collect::<HashMap<i32, Vec<MapEntry>>>());
    let mut tracked = HashMap::new();
    let mut lost_ones = HashMap::new();
    for t in &parent.image.tracking {
        let Some(p) = parent.image.processes.iter().find(|p| p.pid == t.pid) else { continue };
        let fd = (|| -> Result<OwnedFd, String> {
            if crate::claim::start_time(t.pid) != Some(t.start) {
                return Err(format!("process {} is not the one checkpointed into {} (it ended, or was restarted)", t.pid, path.display()));
            }
            match note::read(t.pid) {
                Some((fd, token)) if fd == t.fd && token == t.token && token != 0 => {}
                Some((fd, _)) if fd == t.fd => {
                    return Err(format!(
                        "the write tracking of process {} was armed again by a later checkpoint than {} (or one that failed): make the image incremental to the latest",
                        t.pid,
                        path.display()
                    ))
                }
                _ => return Err(format!("process {} no longer holds the write tracker the checkpoint into {} left in it", t.pid, path.display())),
            }
            let pidfd = crest_ptrace::sys::pidfd_open(t.pid).map_err(|e| format!("process {}: {e}", t.pid))?;
            crest_ptrace::sys::pidfd_getfd(pidfd.as_raw_fd(), t.fd).map_err(|e| format!("process {}: taking its write tracker: {e}", t.pid))
        })();
        let fd = match fd {
            Ok(fd) => fd,
            Err(why) if t.pid == id => return Err(lost(why)),
            // Another process of the tree is saved whole.
            Err(why) => {
                lost_ones.insert(t.pid, why);
                continue;
            }
        };
        // The mappings registered then and saved in the parent, with the runs of each (in the
        // parent, or further up the chain).
        let registered: Vec<(u64, u64)> = p.vmas.iter().filter(|v| trackable(v)).map(|v| (v.start, v.end)).collect();
        let mut runs: Vec<PageRun> = p.vmas.iter().filter(|v| trackable(v)).flat_map(|v| v.pages.iter().map(|r| PageRun { image: r.image + 1, ..*r })).collect();
        runs.sort_by_key(|r| r.vaddr);
        // What no run of the parent holds in its anonymous memory (nor the parent process's
        // runs, for pages shared with it) restores as zeros: it was not there, or read and
        // found zeros. Unwritten since, it needs no run either (and no read of it, even to
        // find zeros again).
        let mut zeros: Vec<(u64, u64)> = p
            .vmas
            .iter()
            .filter(|v| trackable(v) && matches!(v.backing, VmaBacking::Anon))
            .flat_map(|v| subtract(&[(v.start, v.end)], &joined(v.pages.iter().map(|r| (r.vaddr, r.vaddr + r.len)).chain(v.inherited.iter().map(|&(a, l)| (a, a + l))).collect())))
            .map(|(a, b)| (a, b - a))
            .collect();
        zeros.sort_unstable();
        tracked.insert(t.pid, Tracked { _uffd: WriteTracker::adopt(fd), maps: Vec::new(), runs, missed: Vec::new(), zeros, registered, left: Some((t.fd, t.start)) });
    }
    let mut w = ImageWriter::new(out).map_err(|e| lost(format!("starting the image: {e}")))?;
    // From here the tracking is re-armed for the image being made, and for no other: until it
    // is whole, no image may be made incremental through it.
    for (&pid, t) in &tracked {
        if let Some((fd, start)) = t.left {
            note::write(pid, start, fd, 0);
        }
    }
    // The pages written since the parent are saved while the processes run, as in a pre-copy
    // (the first pass is that pre-copy: the rest of their memory is in the parent), so that
    // the freeze saves only what they write meanwhile.
    let mut steps = vec![("resume", started.elapsed())];
    let started = Instant::now();
    let bytes = passes(&mut tracked, &mut w, out, opts, 1 + MAX_PASSES, &mut lost_ones).map_err(|e| lost(format!("saving the pages written since {} while the processes ran: {e}", path.display())))?;
    steps.push(("passes", started.elapsed()));
    let started = Instant::now();
    let mut flags = flags.join().unwrap_or_default();
    for (pid, t) in tracked.iter_mut() {
        t.maps = flags.remove(pid).unwrap_or_default();
    }
    fresh_flags(&mut tracked);
    steps.push(("flags", started.elapsed()));
    Ok(Precopy { writer: Some(w), tracked, bytes, track: true, parent: Some(link), token: new_token(), lost: lost_ones, steps })
}

/// What `/proc/PID/fd/N` reads for a userfaultfd.
const TRACKER_LINK: &str = "anon_inode:[userfaultfd]";

/// Notes of the write trackers left in processes, so that every later checkpoint knows that
/// descriptor for crest's, whatever the image it was left by: an incremental one takes it up,
/// any other closes it in the process (and saves the process whole) rather than refuse a
/// userfaultfd. One file per process, named after its PID and start time, beside the claim
/// files; trusted only when owned by root or by the process's owner, and only for a descriptor
/// that is a userfaultfd.
pub(crate) mod note {
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    fn path(pid: i32, start: u64) -> Option<PathBuf> {
        Some(PathBuf::from(crate::claim::dir()?).join(format!("crest-tracking-{pid}-{start}")))
    }

    /// Notes that descriptor `fd` of `pid` (started at `start`) is a tracker left by crest,
    /// armed for the image that lists it with `token` (0: for none yet, while a checkpoint
    /// that arms it is under way, or after it failed); removes the notes of processes that
    /// have ended.
    pub(crate) fn write(pid: i32, start: u64, fd: i32, token: u64) {
        let Some(p) = path(pid, start) else { return };
        if let Some(entries) = p.parent().and_then(|d| std::fs::read_dir(d).ok()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some((pid, start)) = name.strip_prefix("crest-tracking-").and_then(|r| r.split_once('-')) else { continue };
                let (Ok(pid), Ok(start)) = (pid.parse::<i32>(), start.parse::<u64>()) else { continue };
                if crate::claim::start_time(pid) != Some(start) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::write(&p, format!("{fd} {token}\n"));
    }

    /// The descriptor of the tracker crest left in `pid`, if any and still there, and the
    /// token of the image it is armed for.
    pub(crate) fn read(pid: i32) -> Option<(i32, u64)> {
        let p = path(pid, crate::claim::start_time(pid)?)?;
        let owner = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
        let md = std::fs::symlink_metadata(&p).ok()?;
        if !md.is_file() || (md.uid() != 0 && md.uid() != owner) {
            return None;
        }
        let text = std::fs::read_to_string(&p).ok()?;
        let mut words = text.split_whitespace();
        let fd: i32 = words.next()?.parse().ok()?;
        let token: u64 = words.next().and_then(|t| t.parse().ok()).unwrap_or(0);
        (crest_proc::readlink(pid, &format!("fd/{fd}")).ok().as_deref() == Some(super::TRACKER_LINK)).then_some((fd, token))
    }

    /// Every tracker crest left in a process that still holds it: (PID, descriptor).
    pub(crate) fn all() -> Vec<(i32, i32)> {
        let Some(dir) = crate::claim::dir() else { return Vec::new() };
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid: i32 = name.strip_prefix("crest-tracking-")?.split_once('-')?.0.parse().ok()?;
                Some((pid, read(pid)?.0))
            })
            .collect()
    }

    /// Forgets the tracker of `pid`.
    pub(crate) fn remove(pid: i32) {
        if let Some(p) = crate::claim::start_time(pid).and_then(|s| path(pid, s)) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Closes, inside the frozen process `f`, a write tracker an earlier checkpoint left in it
/// (which ends that tracking): returns its descriptor, then closed.
pub(crate) fn disarm(f: &mut crate::Frozen) -> Result<Option<i32>, DumpError> {
    let Some((fd, _)) = note::read(f.pid) else { return Ok(None) };
    // When it cannot be closed now it stays (and so does its note); it is left out of the image.
    if f.call_inside("closing the write tracker an earlier checkpoint left", libc::SYS_close, &[fd as u64])?.is_some() {
        note::remove(f.pid);
    }
    Ok(Some(fd))
}

/// Closes, inside the frozen process `f`, its copies of the write trackers crest left in other
/// processes `trackers` ([`note::all`]): a child forked by a tracked process inherits the
/// tracker's descriptor, which is crest's, not the child's. Returns their descriptors, then
/// closed (left out of the image either way). Done before the trackers themselves are closed or
/// taken up: while a copy is open the tracked memory stays registered with it.
pub(crate) fn disarm_inherited(f: &mut crate::Frozen, trackers: &[(i32, i32)]) -> Result<Vec<i32>, DumpError> {
    let mut copies = Vec::new();
    if trackers.iter().all(|&(pid, _)| pid == f.pid) {
        return Ok(copies);
    }
    let own = note::read(f.pid).map(|n| n.0);
    let Ok(entries) = std::fs::read_dir(format!("/proc/{}/fd", f.pid)) else { return Ok(copies) };
    for e in entries.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if Some(fd) == own || crest_proc::readlink(f.pid, &format!("fd/{fd}")).ok().as_deref() != Some(TRACKER_LINK) {
            continue;
        }
        let inherited = trackers.iter().any(|&(pid, tfd)| pid != f.pid && crest_ptrace::sys::kcmp_order(f.pid, pid, 0, fd, tfd).ok().flatten() == Some(std::cmp::Ordering::Equal));
        if inherited {
            f.call_inside("closing a copy of a write tracker inherited from a tracked parent", libc::SYS_close, &[fd as u64])?;
            copies.push(fd);
        }
    }
    Ok(copies)
}

/// Private memory below which a pre-copy is not worth it.
pub const WORTH_IT: u64 = 64 << 20;

/// Resident private memory (`RssAnon`) of `pid`, with its descendants' when `tree`; a rough
/// figure read without stopping anything.
fn private_memory(pid: i32, tree: bool) -> u64 {
    let mut total = 0;
    let mut todo = vec![pid];
    let mut seen = 0;
    while let Some(p) = todo.pop() {
        seen += 1;
        if let Ok(status) = crest_proc::read(p, "status") {
            total += crest_proc::status_field(&status, "RssAnon").and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0) << 10;
        }
        if tree && seen < 100_000 {
            todo.extend(crest_proc::children(p).unwrap_or_default());
        }
    }
    total
}

/// Passes over the written pages after the first, at most.
const MAX_PASSES: usize = 3;
/// Bytes written since the last pass below which another pass is not worth it: what the stop
/// then copies takes a few milliseconds.
const SMALL_ENOUGH: u64 = 16 << 20;

/// The mappings of the running process `pid` with their flags (`smaps`), and as classified,
/// those whose contents are saved whole marked.
///
/// Reading `smaps` walks every page table of the process for its counts (24 ms for 4 GiB): it
/// is read once per checkpoint, for the flags the checkpoint proper records ([`Tracked::maps`],
/// read again before the freeze only when the mappings changed: [`fresh_flags`]). The passes
/// while the process runs need no flags: they read [`layout`].
fn mappings(pid: i32, opts: &DumpOptions<'_>) -> Result<(Vec<MapEntry>, Vec<Vma>), DumpError> {
    let maps = smaps(pid)?;
    let vmas = classified(pid, &maps, opts)?;
    Ok((maps, vmas))
}

/// `/proc/PID/smaps`: the mappings of `pid` with their flags.
fn smaps(pid: i32) -> Result<Vec<MapEntry>, crest_proc::ProcError> {
    crest_proc::parse_smaps(&crest_proc::read(pid, "smaps")?)
}

/// The mappings of the running process `pid` as `/proc/PID/maps` lists them (no page walk), and
/// as classified without their flags, those whose contents are saved whole marked.
///
/// What a pass needs of a mapping is there: where it is, its protection, what backs it. A
/// flag only `smaps` shows can make a mapping not [`trackable`] (`MADV_DONTFORK`), never the
/// reverse: a pass may then save pages that the checkpoint proper, which sorts the mappings
/// with their flags, does not use; it never leaves out a page it needs.
fn layout(pid: i32, opts: &DumpOptions<'_>) -> Result<Vec<Vma>, DumpError> {
    classified(pid, &crest_proc::parse_smaps(&crest_proc::read(pid, "maps")?)?, opts)
}

fn classified(pid: i32, maps: &[MapEntry], opts: &DumpOptions<'_>) -> Result<Vec<Vma>, DumpError> {
    let mut vmas = maps.iter().map(|m| memory::classify(pid, m)).collect::<Result<Vec<Vma>, _>>()?;
    opts.save.mark(&mut vmas, &crest_proc::readlink(pid, "exe").unwrap_or_default());
    Ok(vmas)
}

/// Just before the freeze: the flags of each tracked process's mappings ([`Tracked::maps`])
/// are read again from `smaps` when its mappings are no longer those they were read for (or
/// were never read), so that the checkpoint proper finds them up to date without reading
/// `smaps` while the process is frozen.
fn fresh_flags(tracked: &mut HashMap<i32, Tracked>) {
    for (&pid, t) in tracked.iter_mut() {
        let Ok(now) = crest_proc::read(pid, "maps").and_then(|m| crest_proc::parse_smaps(&m)) else { continue };
        if crate::freeze::same_maps(&now, &t.maps).is_none() {
            if let Ok(maps) = smaps(pid) {
                t.maps = maps;
            }
        }
    }
}

fn alive(pid: i32) -> bool {
    crest_proc::read(pid, "stat").is_ok()
}

/// Makes a userfaultfd inside the frozen process `f` and takes it; `None` when it cannot be done
/// without more work (see [`crate::Frozen::call_inside`]) or risk.
/// With `keep`, the userfaultfd stays open in the process (its descriptor and the process's
/// start time are returned with it), so that its write tracking outlives the checkpoint.
fn take_userfaultfd(f: &mut crate::Frozen, keep: bool) -> Result<Option<(OwnedFd, Option<Left>)>, DumpError> {
    // Under a seccomp filter userfaultfd is often refused, and a filter may kill the process
    // for trying: such a process is not tracked.
    let status = crest_proc::read(f.pid, "status")?;
    if crest_proc::status_field(&status, "Seccomp").is_some_and(|m| m != "0") {
        return Ok(None);
    }
    let Some(fd) = f.call_inside("creating a userfaultfd", libc::SYS_userfaultfd, &[wp::USERFAULTFD_FLAGS])? else { return Ok(None) };
    let ours = crest_ptrace::sys::pidfd_open(f.pid).and_then(|p| crest_ptrace::sys::pidfd_getfd(p.as_raw_fd(), fd as i32));
    let start = if keep { crate::claim::start_time(f.pid) } else { None };
    match (ours, start) {
        (Ok(ours), Some(start)) => {
            note::write(f.pid, start, fd as i32, 0);
            Ok(Some((ours, Some((fd as i32, start)))))
        }
        (ours, _) => {
            f.call_inside("closing the userfaultfd", libc::SYS_close, &[fd])?;
            Ok(ours.ok().map(|o| (o, None)))
        }
    }
}

impl Tracked {
    /// One pass while the process runs: saves again what it wrote since its pages were
    /// protected (and protects them again, in the same page-table walk). Returns the bytes
    /// written into the image and those saved again.
    fn pass(&mut self, pid: i32, w: &mut ImageWriter<&File>, out: &File, opts: &DumpOptions<'_>) -> Result<(u64, u64), DumpError> {
        let mut vmas = layout(pid, opts)?;
        let Sorted { now: ranges, zeros, .. } = self.sort(pid, &mut vmas, wp::SCAN_WP_MATCHING, true)?;
        let dirty = ranges.values().flatten().map(|r| r.1).sum();
        let starts: HashSet<u64> = ranges.keys().map(|&i| vmas[i].start).collect();
        let only = |v: &Vma| starts.contains(&v.start);
        let written = pages::write_into(w, out, pid, None, vmas, &pages::Select { vma: &only, ranges: Some(&ranges), shared: None }, opts.compress, opts.progress, pages::Source::Running)?;
        // Runs of mappings that are gone or no longer tracked are of no more use. A tracked
        // mapping whose scan failed may have had pages protected again without their being
        // saved: it is saved whole at the checkpoint proper.
        let mut missed = std::mem::take(&mut self.missed);
        missed.extend(written.missed);
        let mut runs = Vec::new();
        for (i, v) in written.vmas.into_iter().enumerate() {
            if ranges.contains_key(&i) {
                runs.extend(v.pages);
            } else if trackable(&v) {
                missed.push((v.start, v.end - v.start));
            }
        }
        runs.sort_by_key(|r| r.vaddr);
        self.runs = runs;
        missed.sort_unstable();
        self.missed = missed;
        let mut zeros = zeros;
        zeros.extend(written.zeros);
        zeros.sort_unstable();
        self.zeros = zeros;
        Ok((written.bytes, dirty))
    }

    /// Bytes of the pages the running process `pid` wrote since they were last protected (or
    /// that were never saved here), without protecting them again.
    fn written(&self, pid: i32, opts: &DumpOptions<'_>) -> Result<u64, DumpError> {
        let mut vmas = layout(pid, opts)?;
        Ok(self.sort(pid, &mut vmas, 0, false)?.now.values().flatten().map(|r| r.1).sum())
    }

    /// For each private mapping of the frozen process `pid` (its final `vmas`): puts into it the
    /// runs saved earlier that are still good, and returns, by mapping index, the ranges that
    /// must be saved now (mappings absent from it are saved whole), with what the scan found.
    /// With `rearm`, the pages written are protected again in the same walk (the process is
    /// frozen: what is saved now is what they hold then), for a later incremental checkpoint.
    pub fn merge(&self, pid: i32, vmas: &mut [Vma], rearm: bool) -> Result<Sorted, DumpError> {
        self.sort(pid, vmas, if rearm { wp::SCAN_WP_MATCHING } else { 0 }, false)
    }

    /// [`Self::merge`], with more `PAGEMAP_SCAN` flags. With `rough` (while the process runs,
    /// never at the checkpoint proper), the mappings are walked by [`rough_scan_all`].
    fn sort(&self, pid: i32, vmas: &mut [Vma], flags: u64, rough: bool) -> Result<Sorted, DumpError> {
        let path = format!("/proc/{pid}/pagemap");
        let pagemap = File::open(&path).map_err(|e| crest_kinds::KindError::io(format!("opening {path}"), e))?;
        let mut out = Sorted::default();
        let mut todo = Vec::new();
        for (i, v) in vmas.iter().enumerate() {
            // Only a mapping registered here (and not grown since) is tracked by this
            // checkpoint's write-protection.
            if !trackable(v) {
                continue;
            }
            if !self.registered.iter().any(|&(a, b)| a <= v.start && v.end <= b) {
                out.unregistered.push((v.start, v.end));
                continue;
            }
            let file = matches!(v.backing, VmaBacking::File { .. });
            // Whether a page is still the file's costs a look at its `struct page`: a cache
            // miss per page, five times the cost of the whole scan; asked of file mappings only.
            let ret = category::PRESENT | category::SWAPPED | category::WRITTEN | category::PFNZERO | if file { category::FILE } else { 0 };
            todo.push((i, Scan { start: v.start, end: v.end, ret }));
        }
        let scans: Vec<Scan> = todo.iter().map(|t| t.1).collect();
        let found = if rough { rough_scan_all(&pagemap, &scans, flags) } else { scan_all(&scans, &|a, b, ret| wp::scan(&pagemap, a, b, wp::SCAN_CHECK_WPASYNC | flags, ANYOF, ret)) };
        for ((i, _), regions) in todo.into_iter().zip(found) {
            let Some(regions) = regions else { continue };
            let v = &mut vmas[i];
            let file = matches!(v.backing, VmaBacking::File { .. });
            let from = self.runs.partition_point(|r| r.vaddr < v.start);
            let to = self.runs.partition_point(|r| r.vaddr < v.end);
            let within = |x: &[(u64, u64)]| -> Vec<(u64, u64)> { x.iter().copied().filter(|&(a, l)| a < v.end && a + l > v.start).collect() };
            let s = sort_out(v.end, file, &regions, &self.runs[from..to], &within(&self.zeros), &within(&self.missed));
            v.pages = s.keep;
            out.zeros.extend(s.zeros);
            out.wanted.insert(i, s.wanted);
            out.now.insert(i, s.now);
        }
        Ok(out)
    }
}

/// One range for [`scan_all`], with the categories to report.
#[derive(Clone, Copy)]
struct Scan {
    start: u64,
    end: u64,
    ret: u64,
}

/// Pieces that [`scan_all`] scans apart.
const SCAN_PIECE: u64 = 256 << 20;
/// Threads that [`scan_all`] scans on, at most.
const SCAN_THREADS: usize = 4;

/// The pages a scan reports: those there, in memory or in swap.
const ANYOF: u64 = category::PRESENT | category::SWAPPED;

/// Not a kernel category: pages that [`rough_scan_all`] did not look at, as it found them
/// protected. A pass takes them as unwritten and there; the checkpoint proper's scan, which
/// looks at every page, tells.
const UNSCANNED: u64 = 1 << 63;

/// Gap between two stretches found unprotected below which [`rough_scan_all`] scans them as one.
const HINT_GAP: u64 = 256 << 10;

/// `scan(start, end, ret)` (a `PAGEMAP_SCAN`) of each of `scans`: the regions found in each,
/// `None` for one whose scan failed. The page-table walk is the cost (6 ms for 4 GiB), and the
/// walks of distinct ranges do not wait for each other: large ranges are cut into pieces
/// scanned on one thread per core.
fn scan_all(scans: &[Scan], scan: &(dyn Fn(u64, u64, u64) -> std::io::Result<Vec<wp::Region>> + Sync)) -> Vec<Option<Vec<wp::Region>>> {
    let mut pieces = Vec::new();
    for (k, s) in scans.iter().enumerate() {
        let mut at = s.start;
        while at < s.end {
            let end = s.end.min(at.saturating_add(SCAN_PIECE));
            pieces.push((k, at, end, s.ret));
            at = end;
        }
    }
    let total: u64 = scans.iter().map(|s| s.end - s.start).sum();
    let threads = if total > 2 * SCAN_PIECE { std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, SCAN_THREADS) } else { 1 };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(&(_, a, b, ret)) = pieces.get(n) else { return done };
            done.push((n, scan(a, b, ret).ok()));
        }
    };
    let mut results: Vec<(usize, Option<Vec<wp::Region>>)> = if threads > 1 {
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads).map(|_| sc.spawn(work)).collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        })
    } else {
        work()
    };
    results.sort_unstable_by_key(|r| r.0);
    // Each piece's regions, in address order, into the scan it belongs to; a region cut at a
    // piece's end joined again.
    let mut out: Vec<Option<Vec<wp::Region>>> = vec![Some(Vec::new()); scans.len()];
    let mut results = results.into_iter().peekable();
    for (n, &(k, ..)) in pieces.iter().enumerate() {
        // A piece with no result (its thread panicked) counts as failed.
        let found = results.next_if(|r| r.0 == n).and_then(|r| r.1);
        match (&mut out[k], found) {
            (Some(all), Some(regions)) => {
                for r in regions {
                    match all.last_mut() {
                        Some(l) if l.end == r.start && l.categories == r.categories => l.end = r.end,
                        _ => all.push(r),
                    }
                }
            }
            (slot, _) => *slot = None,
        }
    }
    out
}

/// [`scan_all`] (with `flags`) for a pass while the processes run: each range is first walked
/// by [`wp::scan_unprotected`], which looks only at each entry's protection bit, ten times
/// faster; then only the stretches it found unprotected (those closer than [`HINT_GAP`]
/// joined) are scanned as [`scan_all`] does, and protected again with `flags`. The rest is
/// reported as [`UNSCANNED`].
///
/// The first walk can be wrong about pages not in memory (see [`wp::scan_unprotected`]): a page
/// it took as protected that was written is not saved by the pass, nor protected again, so
/// that the checkpoint proper's full scan finds it written and saves it then.
fn rough_scan_all(pagemap: &File, scans: &[Scan], flags: u64) -> Vec<Option<Vec<wp::Region>>> {
    let hints = scan_all(scans, &|a, b, _| wp::scan_unprotected(pagemap, a, b));
    let mut subs = Vec::new();
    let mut owner = Vec::new();
    for (k, h) in hints.iter().enumerate() {
        let Some(h) = h else { continue };
        let mut near: Vec<(u64, u64)> = Vec::new();
        for r in h {
            match near.last_mut() {
                Some(l) if r.start <= l.1.saturating_add(HINT_GAP) => l.1 = l.1.max(r.end),
                _ => near.push((r.start, r.end)),
            }
        }
        for (a, b) in near {
            subs.push(Scan { start: a, end: b, ret: scans[k].ret });
            owner.push(k);
        }
    }
    let found = scan_all(&subs, &|a, b, ret| wp::scan(pagemap, a, b, wp::SCAN_CHECK_WPASYNC | flags, ANYOF, ret));
    let mut out: Vec<Option<Vec<wp::Region>>> = hints.iter().map(|h| h.as_ref().map(|_| Vec::new())).collect();
    let mut looked: Vec<Vec<(u64, u64)>> = vec![Vec::new(); scans.len()];
    for ((&k, sub), found) in owner.iter().zip(&subs).zip(found) {
        match (&mut out[k], found) {
            (Some(all), Some(regions)) => {
                all.extend(regions);
                looked[k].push((sub.start, sub.end));
            }
            (slot, _) => *slot = None,
        }
    }
    for (k, slot) in out.iter_mut().enumerate() {
        let Some(all) = slot else { continue };
        let s = &scans[k];
        all.extend(subtract(&[(s.start, s.end)], &looked[k]).into_iter().map(|(start, end)| wp::Region { start, end, categories: UNSCANNED }));
        all.sort_unstable_by_key(|r| r.start);
    }
    out
}

/// What [`Tracked::merge`] found, by mapping index.
#[derive(Default)]
pub(crate) struct Sorted {
    /// The ranges to save now, as (address, length).
    pub now: HashMap<usize, Vec<(u64, u64)>>,
    /// Bytes of pages that need saving (present or swapped private pages).
    pub wanted: HashMap<usize, u64>,
    /// The ranges found all zeros earlier and unwritten since, in all those mappings.
    pub zeros: Vec<(u64, u64)>,
    /// Private mappings (start, end) not tracked by this checkpoint's write-protection (new,
    /// moved or grown since it was armed, or claimed by another userfaultfd): saved whole.
    pub unregistered: Vec<(u64, u64)>,
}

/// [`sort_out`]'s answer for one mapping.
struct OneSorted {
    keep: Vec<PageRun>,
    zeros: Vec<(u64, u64)>,
    now: Vec<(u64, u64)>,
    wanted: u64,
}

/// `a` minus `b`; both sorted, non-overlapping (start, end) lists.
fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(mut s, e) in a {
        let from = b.partition_point(|r| r.1 <= s);
        for &(bs, be) in b[from..].iter().take_while(|r| r.0 < e) {
            if bs > s {
                out.push((s, bs));
            }
            s = s.max(be);
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

/// `a` and `b`; both sorted, non-overlapping (start, end) lists.
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(s, e) in a {
        let from = b.partition_point(|r| r.1 <= s);
        for &(bs, be) in b[from..].iter().take_while(|r| r.0 < e) {
            out.push((s.max(bs), e.min(be)));
        }
    }
    out
}

/// Sorted (start, end) ranges, the touching ones joined.
fn joined(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (a, b) in r.into_iter().filter(|(a, b)| b > a) {
        match out.last_mut() {
            Some(l) if a <= l.1 => l.1 = l.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Given the scan of one mapping ending at `end` (`file`: a private file mapping, whose pages
/// still shared with the file need no saving), the runs saved earlier that start in it, the
/// ranges found all zeros and those that could not be read (as (address, length)): the runs
/// to keep, the zero ranges still good, and the ranges to save now (merged, in address order).
///
/// Every page that needs saving ends up in exactly one of the three: kept only if it is
/// unwritten since it was protected and was saved (or found zero) after that; saved now
/// otherwise. A page that is clean but was never saved here (protected by someone else, say)
/// is saved now, never taken as saved.
fn sort_out(end: u64, file: bool, regions: &[wp::Region], runs: &[PageRun], zeros: &[(u64, u64)], missed: &[(u64, u64)]) -> OneSorted {
    let pairs = |x: &[(u64, u64)]| joined(x.iter().map(|&(a, l)| (a, (a + l).min(end))).collect());
    // The shared zero page (memory read but never written) is not saved, as without pre-copy;
    // nor is a page of a file mapping that is still the file's.
    // Pages a rough scan did not look at are taken as unwritten and there, never as wanted.
    let wanted_cat = |c: u64| c & UNSCANNED == 0 && (c & category::SWAPPED != 0 || (c & category::PRESENT != 0 && c & category::PFNZERO == 0 && !(file && c & category::FILE != 0)));
    let wanted = joined(regions.iter().filter(|r| wanted_cat(r.categories)).map(|r| (r.start, r.end.min(end))).collect());
    // Stretches of pages there, private, and unwritten since they were protected, less what
    // could not be read. A page of a file mapping that is the file's again (MADV_DONTNEED
    // keeps the protection of the slot) is not: the private copy saved earlier is gone.
    let clean_cat = |c: u64| c & UNSCANNED != 0 || (c & category::WRITTEN == 0 && wanted_cat(c));
    let clean = subtract(&joined(regions.iter().filter(|r| clean_cat(r.categories)).map(|r| (r.start, r.end.min(end))).collect()), &pairs(missed));
    let mut keep = Vec::new();
    for run in runs {
        let (a, b) = (run.vaddr, run.vaddr + run.len);
        let i = clean.partition_point(|c| c.1 <= a);
        if b <= end && clean.get(i).is_some_and(|c| c.0 <= a && b <= c.1) {
            keep.push(*run);
        }
    }
    let zeros = intersect(&pairs(zeros), &clean);
    let covered = joined(keep.iter().map(|r| (r.vaddr, r.vaddr + r.len)).chain(zeros.iter().copied()).collect());
    let now = subtract(&wanted, &covered);
    let len = |x: Vec<(u64, u64)>| x.into_iter().map(|(a, b)| (a, b - a)).collect::<Vec<_>>();
    OneSorted { wanted: wanted.iter().map(|(a, b)| b - a).sum(), keep, zeros: len(zeros), now: len(now) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: u64, end: u64, categories: u64) -> wp::Region {
        wp::Region { start: start * 4096, end: end * 4096, categories }
    }

    fn run(page: u64, pages: u64) -> PageRun {
        PageRun { vaddr: page * 4096, len: pages * 4096, offset: 0, zlen: 0, sum: 0, image: 0 }
    }

    const P: u64 = category::PRESENT;
    const W: u64 = category::WRITTEN;

    #[test]
    fn a_range_scanned_in_pieces_is_found_as_in_one_scan() {
        // Untouched pages of a fresh allocation are not there; a stretch across the cut
        // between the first two pieces, and another further on, are.
        let len = 3 * SCAN_PIECE as usize;
        let mut mem = vec![0u8; len];
        let base = mem.as_ptr() as u64;
        let start = base.next_multiple_of(4096);
        let at = |a: u64| (a - base) as usize;
        for p in [start + SCAN_PIECE - 8192, start + SCAN_PIECE - 4096, start + SCAN_PIECE, start + SCAN_PIECE + 4096, start + 2 * SCAN_PIECE + 65536] {
            mem[at(p)] = 1;
        }
        let end = (base + len as u64) & !4095;
        let pagemap = File::open("/proc/self/pagemap").unwrap();
        let Ok(whole) = wp::scan(&pagemap, start, end, 0, P, P) else {
            assert!(std::env::var_os("CI").is_none(), "PAGEMAP_SCAN is needed (Linux 6.7)");
            eprintln!("skipped: no PAGEMAP_SCAN here");
            return;
        };
        let pieces = scan_all(&[Scan { start, end, ret: P }], &|a, b, ret| wp::scan(&pagemap, a, b, 0, P, ret));
        assert_eq!(pieces, vec![Some(whole.clone())]);
        assert_eq!(whole.iter().map(|r| r.end - r.start).sum::<u64>(), 5 * 4096);
        std::hint::black_box(&mem);
    }

    #[test]
    fn pages_a_rough_scan_passed_over_keep_their_runs_and_are_not_saved() {
        // Pages 0-3 not looked at; 4 written; 5 clean; 6-7 not looked at, never saved here
        // but found zeros earlier (6) or not (7).
        let regions = [region(0, 4, UNSCANNED), region(4, 5, P | W), region(5, 6, P), region(6, 8, UNSCANNED)];
        let OneSorted { keep, now, zeros, wanted } = sort_out(8 * 4096, false, &regions, &[run(0, 4), run(4, 1), run(5, 1)], &[(6 * 4096, 4096)], &[]);
        assert_eq!(keep, vec![run(0, 4), run(5, 1)]);
        assert_eq!(now, vec![(4 * 4096, 4096)]);
        assert_eq!(zeros, vec![(6 * 4096, 4096)]);
        assert_eq!(wanted, 2 * 4096);
    }

    #[test]
    fn clean_runs_are_kept_and_written_pages_saved_again() {
        // Pages 0-9 present; 3 written; 6-7 gone; run 0-2, run 3-5, run 6-9.
        let regions = [region(0, 3, P), region(3, 4, P | W), region(4, 6, P), region(8, 10, P)];
        let OneSorted { keep, now, .. } = sort_out(10 * 4096, false, &regions, &[run(0, 3), run(3, 3), run(6, 4)], &[], &[]);
        assert_eq!(keep, vec![run(0, 3)]);
        // Page 3 written; 4-5 left of a partly written run; 8-9 left of a run with pages gone.
        assert_eq!(now, vec![(3 * 4096, 3 * 4096), (8 * 4096, 2 * 4096)]);
    }

    #[test]
    fn pages_still_of_the_file_are_not_saved() {
        let regions = [region(0, 2, P | W | category::FILE), region(2, 3, P | W)];
        let OneSorted { keep, now, .. } = sort_out(3 * 4096, true, &regions, &[], &[], &[]);
        assert!(keep.is_empty());
        assert_eq!(now, vec![(2 * 4096, 4096)]);
    }

    #[test]
    fn a_private_copy_given_back_to_the_file_is_not_kept() {
        // Page 1 of a private file mapping is the file's page again, still protected.
        let regions = [region(0, 1, P), region(1, 2, P | category::FILE), region(2, 3, P)];
        let OneSorted { keep, now, .. } = sort_out(3 * 4096, true, &regions, &[run(0, 3)], &[], &[]);
        assert!(keep.is_empty());
        assert_eq!(now, vec![(0, 4096), (2 * 4096, 4096)]);
    }

    #[test]
    fn what_could_not_be_read_is_saved_now() {
        // Pages 2-3 and 6-7 were read as zeros; 4-5 could not be read.
        let regions = [region(0, 8, P)];
        let OneSorted { keep, now, zeros, wanted } = sort_out(8 * 4096, false, &regions, &[run(0, 2)], &[(2 * 4096, 2 * 4096), (6 * 4096, 2 * 4096)], &[(4 * 4096, 2 * 4096)]);
        assert_eq!(keep, vec![run(0, 2)]);
        assert_eq!(zeros, vec![(2 * 4096, 2 * 4096), (6 * 4096, 2 * 4096)]);
        assert_eq!(now, vec![(4 * 4096, 2 * 4096)]);
        assert_eq!(wanted, 8 * 4096);
    }

    #[test]
    fn a_run_past_a_new_end_is_saved_again() {
        let regions = [region(0, 4, P)];
        let OneSorted { keep, now, .. } = sort_out(2 * 4096, false, &regions[..], &[run(0, 4)], &[], &[]);
        assert!(keep.is_empty());
        assert_eq!(now, vec![(0, 2 * 4096)]);
    }

    #[test]
    fn clean_pages_never_saved_here_are_saved_now() {
        // Protected by another userfaultfd: clean, but no run or zero range of this checkpoint
        // holds them.
        let regions = [region(0, 4, P), region(4, 5, P | W), region(5, 6, P | category::PFNZERO)];
        let OneSorted { keep, now, wanted, .. } = sort_out(6 * 4096, false, &regions, &[], &[], &[]);
        assert!(keep.is_empty());
        assert_eq!(now, vec![(0, 5 * 4096)]);
        assert_eq!(wanted, 5 * 4096);
    }
}
