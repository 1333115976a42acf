//! The processes of one checkpoint (BLCR's scopes), frozen together, dumped into one image, and
//! let go (or killed) together.
//!
//! [`freeze_scope`] seizes the processes one by one: under `--tree` a process's children are
//! listed once it is frozen (a frozen process forks no more), so the walk sees every
//! descendant; under `--pgid` and `--sid` `/proc` is scanned again until a scan finds no new
//! member. Zombies of the scope whose parent is in it are recorded with their wait status.
//!
//! [`FrozenTree::dump`] collects every process while all are frozen (descriptors compared
//! across processes with `kcmp`, pipe data read once), then writes the page data: shared
//! mappings while all are frozen, then, with snapshots, the processes are let go and their
//! private pages are read from their copies. The image is one consistent instant of the tree.
use std::collections::HashMap;

use crest_image::{Image, ImageWriter, Process};
use crest_kinds::{fd, memory};

use crate::freeze::{Collected, DumpOptions, Frozen};
use crate::{check_cancel, pages, DumpError, DumpStats};

/// Which processes a checkpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The process and all its descendants (`--tree`, the default).
    Tree,
    /// The process alone (`--pid`).
    Pid,
    /// Every process of the process group (`--pgid`).
    Pgid,
    /// Every process of the session (`--sid`).
    Sid,
}

impl Scope {
    /// BLCR's name of the scope, as recorded in the image.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Tree => "tree",
            Scope::Pid => "pid",
            Scope::Pgid => "pgid",
            Scope::Sid => "sid",
        }
    }
}

/// A process of the scope that has exited and was not reaped.
struct Zombie {
    pid: i32,
    stat: crest_proc::Stat,
}

/// Every process of a scope, frozen.
pub struct FrozenTree {
    /// The ID the scope was named by.
    pub id: i32,
    /// The scope.
    pub scope: Scope,
    /// Live processes, parents before children.
    procs: Vec<Frozen>,
    /// Each live process's and zombie's nearest ancestor in the scope (absent: none).
    parents: HashMap<i32, i32>,
    zombies: Vec<Zombie>,
    /// Processes seen below the named one before it was frozen, being frozen all at once
    /// ([`FrozenTree::freeze_early`]), until the walk of the tree takes them (or they turn out
    /// not to be in it, and are let go).
    early: HashMap<i32, crate::crew::Pending<Result<Frozen, DumpError>>>,
}

impl Drop for FrozenTree {
    /// A checkpoint that failed: connections put in repair mode leave it before the processes
    /// are let go.
    fn drop(&mut self) {
        fd::leave_repair();
        self.let_early_go();
    }
}

fn stat_of(pid: i32) -> Option<crest_proc::Stat> {
    crest_proc::parse_stat(&crest_proc::read(pid, "stat").ok()?).ok()
}

/// A child that is another checkpoint's snapshot (no exit signal, traced): not part of the tree.
fn is_snapshot(pid: i32, st: &crest_proc::Stat) -> bool {
    st.exit_signal == 0 && crest_proc::read(pid, "status").ok().and_then(|s| crest_proc::status_field(&s, "TracerPid").map(|t| t != "0")).unwrap_or(false)
}

/// Processes the checkpoint running in this process leaves out of its scope: the processes
/// doing a checkpoint on behalf of a process in it, and processes whose libcr callbacks asked
/// to be omitted (`CR_CHECKPOINT_OMIT`). Set by [`crate::checkpoint()`] for its length.
static LEFT_OUT: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Sets the processes left out of the scopes frozen from now on.
pub(crate) fn leave_out(pids: Vec<i32>) {
    *LEFT_OUT.lock().unwrap_or_else(|p| p.into_inner()) = pids;
}

fn left_out(pid: i32) -> bool {
    LEFT_OUT.lock().unwrap_or_else(|p| p.into_inner()).contains(&pid)
}

/// Scopes a libcr callback forwarded the checkpoint to (`cr_forward_checkpoint`): frozen
/// and saved with the scope named, as one request. Set by [`crate::checkpoint()`] for its
/// length.
static BROUGHT_IN: std::sync::Mutex<Vec<(Scope, i32)>> = std::sync::Mutex::new(Vec::new());

/// Sets the scopes frozen with every scope frozen from now on.
pub(crate) fn bring_in(scopes: Vec<(Scope, i32)>) {
    *BROUGHT_IN.lock().unwrap_or_else(|p| p.into_inner()) = scopes;
}

/// What a checkpoint does with a process of its scope that another process traces (a debugger,
/// strace): BLCR's `--ptraced-error` (the default), `--ptraced-skip`, `--ptraced-allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ptraced {
    /// Refuse the checkpoint, naming the process and its tracer.
    #[default]
    Error,
    /// Leave it out, and under `--tree` its descendants; refuse only if nothing is left.
    Skip,
    /// Checkpoint it as any other. Linux lets a process have one tracer only and crest must
    /// trace it: the checkpoint is refused with what to do (detach the debugger) while the
    /// tracer holds it.
    Allow,
}

/// The policies for traced processes and for tracers (BLCR's `--ptracer-skip`: leave out
/// processes that trace others, and under `--tree` their descendants). Set by
/// [`crate::checkpoint()`] for its length.
static PTRACE_POLICY: std::sync::Mutex<(Ptraced, bool)> = std::sync::Mutex::new((Ptraced::Error, false));

/// Sets the policies for traced processes and tracers of the scopes frozen from now on.
pub(crate) fn set_ptrace_policy(traced: Ptraced, tracer_skip: bool) {
    *PTRACE_POLICY.lock().unwrap_or_else(|p| p.into_inner()) = (traced, tracer_skip);
}

/// The policies in force ([`set_ptrace_policy`]).
pub(crate) fn ptrace_policy() -> (Ptraced, bool) {
    *PTRACE_POLICY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Who traces whom, among the processes other than this one: (tracee, tracer), both as
/// thread group ids, one pair for each process whose main thread is traced (debuggers and
/// strace trace every thread; only the main thread's tracer is read, one `/proc/PID/status`
/// per process, since this scan is part of every checkpoint).
fn tracing() -> Vec<(i32, i32)> {
    let me = std::process::id() as i32;
    let field = |pid: i32, name: &str| crest_proc::read(pid, "status").ok().and_then(|s| crest_proc::status_field(&s, name).and_then(|t| t.trim().parse::<i32>().ok()));
    let mut out = Vec::new();
    for pid in crest_proc::all_pids().unwrap_or_default() {
        // The tracer is named by its thread id: its process is that thread's group.
        if let Some(by) = field(pid, "TracerPid").filter(|t| *t != 0).and_then(|t| field(t, "Tgid")).filter(|t| *t != me) {
            out.push((pid, by));
        }
    }
    out
}

/// The processes a freeze leaves out by the ptrace policies, and the tracing seen at its start.
struct Exclusion {
    traced: Ptraced,
    tracer_skip: bool,
    tracing: Vec<(i32, i32)>,
    /// Left out so far, each with why.
    skipped: Vec<String>,
}

impl Exclusion {
    fn new() -> Exclusion {
        let (traced, tracer_skip) = ptrace_policy();
        Exclusion { traced, tracer_skip, tracing: tracing(), skipped: Vec::new() }
    }

    /// Whether [`Exclusion::excludes`] would leave `pid` out (nothing noted).
    fn would_exclude(&self, pid: i32) -> bool {
        (self.traced == Ptraced::Skip && self.tracing.iter().any(|(t, _)| *t == pid)) || (self.tracer_skip && self.tracing.iter().any(|(_, by)| *by == pid))
    }

    /// Whether `pid` is left out (noted with why).
    fn excludes(&mut self, pid: i32) -> bool {
        if self.traced == Ptraced::Skip {
            if let Some((_, by)) = self.tracing.iter().find(|(t, _)| *t == pid) {
                self.skipped.push(format!("PID {pid} is traced by PID {by} (--ptraced-skip)"));
                return true;
            }
        }
        if self.tracer_skip {
            if let Some((t, _)) = self.tracing.iter().find(|(_, by)| *by == pid) {
                self.skipped.push(format!("PID {pid} traces PID {t} (--ptracer-skip)"));
                return true;
            }
        }
        false
    }

    /// Refuses a scope in which a process traces one outside it (BLCR's `CR_EPTRACER`),
    /// unless `--ptracer-skip`; a tracee inside the scope was refused when it was frozen.
    fn check_tracers(&self, t: &FrozenTree) -> Result<(), DumpError> {
        if self.tracer_skip {
            return Ok(());
        }
        for f in &t.procs {
            if let Some((tracee, _)) = self.tracing.iter().find(|(tracee, by)| *by == f.pid && !t.has(*tracee)) {
                return Err(DumpError::Tracer { pid: f.pid, tracee: *tracee });
            }
        }
        Ok(())
    }

    /// The error for a scope of which nothing is left.
    fn nothing_left(&self, id: i32) -> DumpError {
        if self.skipped.is_empty() {
            DumpError::NoProcess(id)
        } else {
            DumpError::AllSkipped { why: self.skipped.join("; ") }
        }
    }
}

/// Claims `pid` for this checkpoint ([`crate::claim`]), then freezes it.
fn freeze(pid: i32) -> Result<Frozen, DumpError> {
    crate::claim::claim(pid)?;
    match next_tracer() {
        Some(t) => crate::freeze::freeze_on(t, pid, None),
        None => crate::freeze::freeze(pid),
    }
}

/// [`freeze`], with the process's `stat` as just read.
fn freeze_seen(pid: i32, st: &crest_proc::Stat) -> Result<Frozen, DumpError> {
    crate::claim::claim_seen(pid, Some(st))?;
    match next_tracer() {
        Some(t) => crate::freeze::freeze_on(t, pid, Some(st.clone())),
        None => crate::freeze::freeze_seen(pid, Some(st)),
    }
}

/// The tracer of the crew ([`crate::crew`]) the next process frozen goes to, in turn.
fn next_tracer() -> Option<&'static std::sync::Arc<crate::crew::Tracer>> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let crew = crate::crew::crew();
    (!crew.is_empty()).then(|| &crew[NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % crew.len()])
}

/// Seizes and stops every process of the scope `scope` named by `id`.
pub fn freeze_scope(scope: Scope, id: i32) -> Result<FrozenTree, DumpError> {
    let mut t = FrozenTree { id, scope, procs: Vec::new(), parents: HashMap::new(), zombies: Vec::new(), early: HashMap::new() };
    let mut ex = Exclusion::new();
    match scope {
        Scope::Pid | Scope::Tree => {
            // A process left out (BLCR's OMIT) is not frozen, but under --tree its descendants
            // are, as in BLCR: they are saved as if their parent had been outside the tree (a
            // restart makes them children of cr_restart).
            let root_out = left_out(id);
            if !root_out {
                // A process left out by the ptrace policies takes its subtree with it.
                if ex.excludes(id) {
                    return Err(ex.nothing_left(id));
                }
                t.procs.push(freeze(id)?);
            } else if scope == Scope::Pid {
                return Err(DumpError::NoProcess(id));
            }
            if scope == Scope::Tree {
                // The named process first: the time frozen counts from it.
                t.freeze_early(id, &ex);
                // Each process to look at with its parent if that is frozen (0: not frozen).
                let mut todo: std::collections::VecDeque<(i32, i32)> = std::collections::VecDeque::new();
                let me = std::process::id() as i32;
                let skipped = |p: i32, todo: &mut std::collections::VecDeque<(i32, i32)>| {
                    // The checkpoint's own processes are left out with whatever they started.
                    if p != me {
                        todo.extend(crest_proc::children(p).unwrap_or_default().into_iter().map(|c| (c, 0)));
                    }
                };
                if root_out {
                    skipped(id, &mut todo);
                } else {
                    // Its threads are known now that it is frozen.
                    let tids = t.procs.last().map(Frozen::tids).unwrap_or_default();
                    todo.extend(crest_proc::children_of(id, &tids).into_iter().map(|c| (c, id)));
                }
                while let Some((pid, parent)) = todo.pop_front() {
                    check_cancel()?;
                    if left_out(pid) {
                        skipped(pid, &mut todo);
                    } else if ex.excludes(pid) {
                        // With its subtree.
                    } else if t.add(pid, parent)? && t.procs.last().is_some_and(|f| f.pid == pid) {
                        let tids = t.procs.last().map(Frozen::tids).unwrap_or_default();
                        todo.extend(crest_proc::children_of(pid, &tids).into_iter().map(|c| (c, pid)));
                    }
                }
                t.let_early_go();
                if t.procs.is_empty() {
                    return Err(ex.nothing_left(id));
                }
            }
        }
        Scope::Pgid | Scope::Sid => {
            loop {
                check_cancel()?;
                let mut new = 0;
                for pid in crest_proc::all_pids()? {
                    if t.procs.iter().any(|f| f.pid == pid) || t.zombies.iter().any(|z| z.pid == pid) {
                        continue;
                    }
                    let Some(st) = stat_of(pid) else { continue };
                    let member = if scope == Scope::Pgid { st.pgrp == id } else { st.session == id };
                    if member && !ex.skipped.iter().any(|w| w.starts_with(&format!("PID {pid} "))) && !ex.excludes(pid) && t.add(pid, 0)? {
                        new += 1;
                    }
                }
                if new == 0 {
                    break;
                }
            }
            // A member may have moved to another group or session before it was frozen.
            t.procs.retain(|f| stat_of(f.pid).is_some_and(|st| if scope == Scope::Pgid { st.pgrp == id } else { st.session == id }));
            if t.procs.is_empty() {
                return Err(ex.nothing_left(id));
            }
            t.order();
        }
    }
    let forwarded = BROUGHT_IN.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if !forwarded.is_empty() {
        for (scope, id) in forwarded {
            t.add_scope(scope, id)?;
        }
        t.order();
    }
    ex.check_tracers(&t)?;
    Ok(t)
}

impl FrozenTree {
    /// Freezes `pid` (found as a child of `parent`, or 0) and adds it; a zombie is recorded.
    /// Returns whether it was added (it may have exited meanwhile).
    fn add(&mut self, pid: i32, parent: i32) -> Result<bool, DumpError> {
        if left_out(pid) {
            return Ok(false);
        }
        let Some(st) = stat_of(pid) else { return Ok(false) };
        if matches!(st.state, 'Z' | 'X') {
            self.zombies.push(Zombie { pid, stat: st });
            if parent != 0 {
                self.parents.insert(pid, parent);
            }
            return Ok(true);
        }
        // A process frozen early is traced by this checkpoint's own tracers: only when that
        // failed can it be another checkpoint's snapshot (traced by it, no exit signal). A
        // child made with no exit signal (`clone` without SIGCHLD) is one of the tree's.
        let frozen = match self.early.remove(&pid) {
            Some(p) => match p.wait().and_then(|r| r) {
                Err(_) if is_snapshot(pid, &st) => return Ok(false),
                r => r,
            },
            None if is_snapshot(pid, &st) => return Ok(false),
            None => freeze_seen(pid, &st),
        };
        match frozen {
            Ok(f) => {
                self.procs.push(f);
                if parent != 0 {
                    self.parents.insert(pid, parent);
                }
                Ok(true)
            }
            // It exited while being frozen: a zombie now, if its parent is frozen.
            Err(DumpError::NoProcess(_)) => match stat_of(pid) {
                Some(st) if st.state == 'Z' => {
                    self.zombies.push(Zombie { pid, stat: st });
                    if parent != 0 {
                        self.parents.insert(pid, parent);
                    }
                    Ok(true)
                }
                _ => Ok(false),
            },
            Err(e) => Err(e),
        }
    }

    /// Starts freezing, all at once on the tracers of the crew, the processes below `root` as
    /// `/proc` shows them now. The walk of the tree
    /// ([`freeze_scope`]) stays what decides: it lists each process's children once the process
    /// is frozen, as before, and takes a child's early freeze if it has one; a process frozen
    /// early that the walk does not reach (it left the tree, or its PID was reused) is let go.
    /// Those the walk leaves out are not frozen early.
    fn freeze_early(&mut self, root: i32, ex: &Exclusion) {
        let me = std::process::id() as i32;
        let mut todo = vec![root];
        while let Some(p) = todo.pop() {
            for c in crest_proc::children(p).unwrap_or_default() {
                if c == me || c == root || self.early.contains_key(&c) || ex.would_exclude(c) {
                    continue;
                }
                todo.push(c);
                if left_out(c) {
                    continue;
                }
                let Some(tracer) = next_tracer() else { return };
                let tr = tracer.clone();
                self.early.insert(
                    c,
                    tracer.start(move || {
                        // Read once for the claim and the freeze.
                        let st = stat_of(c).ok_or(DumpError::NoProcess(c))?;
                        crate::claim::claim_seen(c, Some(&st))?;
                        crate::freeze::freeze_seen(c, Some(&st)).map(|f| f.traced_by(tr))
                    }),
                );
            }
        }
    }

    /// Lets go the processes frozen early that the walk did not take.
    fn let_early_go(&mut self) {
        for (_, p) in self.early.drain() {
            drop(p.wait());
        }
    }

    /// Whether `pid` is frozen or recorded already.
    fn has(&self, pid: i32) -> bool {
        self.procs.iter().any(|f| f.pid == pid) || self.zombies.iter().any(|z| z.pid == pid)
    }

    /// Adds the processes of a scope a checkpoint was forwarded to, less those there already
    /// (scopes may overlap) and those left out; [`FrozenTree::order`] places them afterwards.
    fn add_scope(&mut self, scope: Scope, id: i32) -> Result<(), DumpError> {
        let me = std::process::id() as i32;
        match scope {
            Scope::Pid | Scope::Tree => {
                let mut todo = std::collections::VecDeque::from([id]);
                while let Some(pid) = todo.pop_front() {
                    check_cancel()?;
                    if pid == me {
                        continue;
                    }
                    if !self.has(pid) && !left_out(pid) {
                        self.add(pid, 0)?;
                    }
                    if scope == Scope::Tree {
                        todo.extend(crest_proc::children(pid).unwrap_or_default());
                    }
                }
            }
            Scope::Pgid | Scope::Sid => loop {
                check_cancel()?;
                let mut new = 0;
                for pid in crest_proc::all_pids()? {
                    let Some(st) = stat_of(pid) else { continue };
                    let member = if scope == Scope::Pgid { st.pgrp == id } else { st.session == id };
                    if member && pid != me && !self.has(pid) && !left_out(pid) && self.add(pid, 0)? {
                        new += 1;
                    }
                }
                if new == 0 {
                    break;
                }
            },
        }
        Ok(())
    }

    /// Puts the processes of a scanned scope in tree order: each after its nearest ancestor in
    /// the scope; the named process (or group or session leader) first among those with none.
    fn order(&mut self) {
        let members: std::collections::HashSet<i32> = self.procs.iter().map(|f| f.pid).chain(self.zombies.iter().map(|z| z.pid)).collect();
        for pid in members.iter().copied() {
            let mut at = pid;
            for _ in 0..4096 {
                let Some(st) = stat_of(at) else { break };
                if st.ppid <= 1 {
                    break;
                }
                if members.contains(&st.ppid) {
                    self.parents.insert(pid, st.ppid);
                    break;
                }
                at = st.ppid;
            }
        }
        // Zombies of a parent outside the scope are nobody's to wait for.
        let parents = &self.parents;
        self.zombies.retain(|z| parents.contains_key(&z.pid));
        let id = self.id;
        self.procs.sort_by_key(|f| (depth(parents, f.pid), f.pid != id, f.pid));
    }

    /// Refuses a process (or zombie) of the image in a process group or session that is
    /// neither the topmost process's (which the restart replaces with its own) nor led by a
    /// process of the image: nothing could recreate it.
    fn refuse_orphaned_groups(&self) -> Result<(), DumpError> {
        let ids: Vec<(i32, crest_proc::Stat)> = self.procs.iter().filter_map(|f| Some((f.pid, stat_of(f.pid)?))).chain(self.zombies.iter().map(|z| (z.pid, z.stat.clone()))).collect();
        let Some((_, top)) = ids.first() else { return Ok(()) };
        let (top_pgid, top_sid) = (top.pgrp, top.session);
        let here = |id: i32| ids.iter().any(|(p, _)| *p == id);
        for (pid, st) in &ids {
            if st.session != top_sid && !here(st.session) {
                return Err(DumpError::Unsupported(format!("PID {pid} is in session {}, whose leader is not in the checkpoint; crest cannot recreate that session", st.session)));
            }
            // A group whose leader has ended is made again by a stand-in leader that the
            // members' parent creates (see crest-restore's plan): all of them must be children
            // of one live process of the image, in its session.
            let one_parent = || {
                let parent = self.procs.iter().find(|f| f.pid == st.ppid).and_then(|f| stat_of(f.pid));
                parent.is_some_and(|ps| ps.session == st.session) && ids.iter().filter(|(_, o)| o.pgrp == st.pgrp).all(|(_, o)| o.ppid == st.ppid && o.session == st.session)
            };
            if st.pgrp != top_pgid && !here(st.pgrp) && !one_parent() {
                return Err(DumpError::Unsupported(format!(
                    "PID {pid} is in process group {}, whose leader is not in the checkpoint, and the group's members are not all children of one process of the checkpoint in its session; crest cannot recreate that group",
                    st.pgrp
                )));
            }
        }
        Ok(())
    }

    /// Refuses two processes of the image that share their file system context, memory or
    /// signal handlers (made with `clone(CLONE_FS)`, `CLONE_VM`, `CLONE_SIGHAND` without
    /// `CLONE_THREAD`): each is restored with its own. A descriptor table (`CLONE_FILES`) may
    /// be shared by a process and its children, grandchildren and so on, each sharing its
    /// parent's: those are created again from their parent with `CLONE_FILES`. Returns the
    /// processes that share their parent's table; other sharing is refused.
    fn shared_tables(&self) -> Result<std::collections::HashSet<i32>, DumpError> {
        let pids = self.pids();
        let shares = |a: i32, b: i32, kind: i32| crest_ptrace::sys::share(a, b, kind).unwrap_or(false);
        let mut with_parent = std::collections::HashSet::new();
        // Parents first: a process's parent is settled before it.
        let mut leader: HashMap<i32, i32> = HashMap::new();
        for &p in &pids {
            let parent = self.parents.get(&p).copied().filter(|q| pids.contains(q));
            match parent {
                Some(q) if shares(p, q, 2) => {
                    with_parent.insert(p);
                    let l = leader.get(&q).copied().unwrap_or(q);
                    leader.insert(p, l);
                }
                _ => {
                    leader.insert(p, p);
                }
            }
        }
        // Each kind of object, one process of each object in the kernel's order of objects
        // (`kcmp`): a binary search finds the process that shares it, in O(log K) comparisons
        // rather than one with every other process. Signal handlers (`KCMP_SIGHAND`) are not
        // compared: the kernel lets processes share them only with their memory
        // (`CLONE_SIGHAND` needs `CLONE_VM`; an `execve` leaves both), so two processes that
        // share handlers were refused above for sharing their memory.
        for (kind, what) in [(1, "memory (CLONE_VM)"), (3, "root, directory and umask (CLONE_FS)"), (2, "")] {
            let mut seen: Vec<i32> = Vec::with_capacity(pids.len());
            for &b in &pids {
                let mut unordered = false;
                let at = seen.binary_search_by(|&a| match crest_ptrace::sys::kcmp_order(a, b, kind, 0, 0) {
                    Ok(Some(o)) => o,
                    // Not comparable (gone): as if not shared, as below.
                    Ok(None) | Err(_) => {
                        unordered = true;
                        std::cmp::Ordering::Less
                    }
                });
                let with = match at {
                    Ok(i) => Some(seen[i]),
                    Err(_) if unordered => seen.iter().copied().find(|&a| shares(a, b, kind)),
                    Err(_) => None,
                };
                match with {
                    Some(a) if kind != 2 => return Err(DumpError::Unsupported(format!("PID {a} and PID {b} share one {what}; processes sharing it are not supported"))),
                    Some(a) if leader[&a] != leader[&b] => {
                        return Err(DumpError::Unsupported(format!(
                            "PID {a} and PID {b} share one descriptor table (CLONE_FILES), but not through a parent that shares it too; crest restores a table shared by a process and its descendants only"
                        )))
                    }
                    Some(_) => {}
                    None => match at {
                        Err(i) if !unordered => seen.insert(i, b),
                        _ => seen.push(b),
                    },
                }
            }
        }
        Ok(with_parent)
    }

    /// PIDs of the live processes, parents first.
    pub fn pids(&self) -> Vec<i32> {
        self.procs.iter().map(|f| f.pid).collect()
    }

    /// Number of threads of all processes.
    pub fn thread_count(&self) -> usize {
        self.procs.iter().map(Frozen::thread_count).sum()
    }

    /// The live processes, parents first.
    pub(crate) fn procs_mut(&mut self) -> &mut [Frozen] {
        &mut self.procs
    }

    /// Writes the image of every process into `out`; returns it and figures. With `pre`, the
    /// image was begun by a pre-copy ([`crate::precopy`]) of these processes: only what they
    /// changed since is saved now, and they are let go as soon as it is.
    pub fn dump(&mut self, out: &std::fs::File, opts: &DumpOptions<'_>, mut pre: Option<crate::Precopy<'_>>) -> Result<(Image, DumpStats), DumpError> {
        check_cancel()?;
        let started = std::time::Instant::now();
        // Every process is frozen: the global tables read for each of them are read once from
        // now on.
        let _ipc_tables = crest_kinds::ipc::OnceTables::start();
        crest_kinds::memory::forget_file_stats();
        crate::freeze::forget_own_maps();
        self.refuse_orphaned_groups()?;
        let files_shared = self.shared_tables()?;
        let pids = self.pids();
        let mut files = fd::FileTable::new(&pids, &files_shared, opts.drop_unsupported)?;
        files.deleted_max = opts.deleted_max;
        files.external_unix = opts.external_unix;
        // A write tracker left in a process is crest's, not the process's: kept for a later
        // incremental checkpoint when this one tracks the process, closed otherwise; copies of
        // one a child inherited by a fork are closed first.
        let left = crate::precopy::note::all();
        for f in &mut self.procs {
            for fd in crate::precopy::disarm_inherited(f, &left)? {
                files.hide(f.pid, fd);
            }
        }
        for f in &mut self.procs {
            match pre.as_ref().and_then(|p| p.tracked.get(&f.pid)).and_then(|t| t.left) {
                Some((fd, _)) => files.hide(f.pid, fd),
                // Only a process with a note can hold a tracker of an earlier checkpoint.
                None if !left.iter().any(|&(p, _)| p == f.pid) => {}
                None => {
                    if let Some(fd) = crate::precopy::disarm(f)? {
                        files.hide(f.pid, fd);
                    }
                }
            }
        }
        let mut collected: Vec<Collected> = Vec::with_capacity(self.procs.len());
        let discard_all = |c: Vec<Collected>| {
            for c in c {
                if let Some(s) = c.snap {
                    s.discard();
                }
            }
        };
        // The descriptors are dumped first, here, where they are compared across the image:
        // a collection forks its process's copy-on-write snapshot, a child that shares every
        // descriptor and is not traced yet for a moment, and the search for other holders of
        // a file (a pty's slave, a socket's peer) must not find it. Then each process is
        // collected by the thread that traces it, all at once. Every process comes back, in
        // its place, whatever fails.
        let mut first_err: Option<DumpError> = None;
        let mut fds = Vec::with_capacity(pids.len());
        for &pid in &pids {
            match check_cancel().and_then(|()| fd::dump_all(pid, &mut files).map_err(DumpError::from)) {
                Ok(x) => fds.push(x),
                Err(e) => {
                    first_err = Some(e);
                    break;
                }
            }
        }
        let mut pending = Vec::with_capacity(self.procs.len());
        for f in std::mem::take(&mut self.procs) {
            let ppid = self.parents.get(&f.pid).copied().unwrap_or(0);
            let tracked = pre.as_ref().and_then(|p| p.tracked.get(&f.pid));
            // After a failed descriptor dump nothing more is read; the processes are only
            // handed back.
            let snapshot = opts.snapshot && tracked.is_none() && first_err.is_none();
            let known = tracked.map(|t| t.maps.clone());
            pending.push(f.start_collect(opts.save, ppid, snapshot, known));
        }
        let mut fds = fds.into_iter();
        for p in pending {
            let own = fds.next();
            let (f, r) = match p.wait() {
                Ok(x) => x,
                Err(e) => {
                    // The process went with its tracer thread.
                    first_err.get_or_insert(e);
                    continue;
                }
            };
            self.procs.push(f);
            match r {
                Ok(mut c) => {
                    if let (Some(own), None) = (own, &first_err) {
                        if let Err(e) = crate::freeze::add_files(&mut c, &mut files, own) {
                            first_err = Some(e);
                        }
                    }
                    // Its descriptors are its parent's, saved with it.
                    c.process.files_shared = files_shared.contains(&c.process.pid);
                    collected.push(c);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            discard_all(collected);
            return Err(e);
        }
        let collecting = started.elapsed();
        let result = self.write(out, opts, &mut collected, &mut pre);
        discard_all(collected);
        result.map(|(image, mut stats)| {
            stats.steps.insert(0, ("collect", collecting));
            (image, stats)
        })
    }

    fn write(&mut self, out: &std::fs::File, opts: &DumpOptions<'_>, collected: &mut [Collected], pre: &mut Option<crate::Precopy<'_>>) -> Result<(Image, DumpStats), DumpError> {
        let DumpOptions { compress, progress, .. } = *opts;
        let procs: Vec<Process> = collected.iter().map(|c| c.process.clone()).collect();
        let wide = crest_kinds::image::dump_all(&procs)?;
        check_cancel()?;
        let mut w = match pre.as_mut().and_then(|p| p.writer.take()) {
            Some(w) => w,
            None => ImageWriter::new(out)?,
        };
        let regular = pages::regular(out);
        let mut write = |from: i32, seen: Option<pages::Seen<'_>>, vmas: Vec<crest_image::Vma>, select: &pages::Select<'_>, source: pages::Source| {
            pages::write_into_known(&mut w, (out, regular), from, seen, vmas, select, compress, progress, source).map(|r| (r.vmas, r.bytes))
        };
        let mut page_bytes = pre.as_ref().map_or(0, |p| p.bytes);
        let started = std::time::Instant::now();
        let tracked = |pid: i32| pre.as_ref().and_then(|p| p.tracked.get(&pid));
        // Each part of a shared anonymous object is saved once, by the first process that maps it.
        let shared = pages::SharedSaved::default();
        // While every process is frozen: the pages a child still shares copy-on-write with its
        // parent are saved once, with the parent (not for processes whose pages a pre-copy
        // saves: their pages are compared as they run).
        let untracked: Vec<bool> = collected.iter().map(|c| tracked(c.process.pid).is_none()).collect();
        // An incremental image: what is saved whole rather than as the pages written since.
        let mut saved_whole = Vec::new();
        if let Some(p) = pre.as_ref().filter(|p| p.parent.is_some()) {
            for c in collected.iter().filter(|c| tracked(c.process.pid).is_none()) {
                let pid = c.process.pid;
                saved_whole.push(match p.lost.get(&pid) {
                    Some(why) => format!("process {pid} is saved whole: {why}"),
                    None => format!("process {pid} is saved whole: it was not tracked since the parent image (it is new since, or was not tracked then)"),
                });
            }
        }
        mark_inherited(collected, &untracked)?;
        // While every process is frozen: what a pre-copy did not save or what changed since,
        // shared memory (the same pages in a copy), and all the pages of a process that has
        // neither a pre-copy nor a copy.
        for c in collected.iter_mut() {
            let pid = c.process.pid;
            let mut vmas = std::mem::take(&mut c.process.vmas);
            let seen = Some(pages::Seen { pagemap: &c.pagemap, to_save: &c.to_save });
            let (vmas, n) = if let Some(t) = tracked(pid) {
                let sorted = t.merge(pid, &mut vmas, pre.as_ref().is_some_and(|p| p.track))?;
                if pre.as_ref().is_some_and(|p| p.parent.is_some()) {
                    for (a, b) in &sorted.unregistered {
                        saved_whole.push(format!("process {pid}: mapping {a:#x}-{b:#x} is saved whole: it is new, moved or grown since the parent image (or another userfaultfd holds it)"));
                    }
                }
                // What the scan found to need saving; the zero pages read earlier and unwritten
                // since count as saved.
                for (&i, &need) in &sorted.wanted {
                    let v = &mut vmas[i];
                    v.need = need;
                    v.zero = sorted.zeros.iter().filter(|z| z.0 >= v.start && z.0 < v.end).map(|z| z.1).sum();
                }
                write(pid, seen, vmas, &pages::Select { vma: &|_| true, ranges: Some(&sorted.now), shared: Some(&shared) }, pages::Source::Frozen)?
            } else if c.snap.is_some() {
                write(pid, seen, vmas, &pages::Select::only(&crate::snapshot::read_while_frozen).once(&shared), pages::Source::Frozen)?
            } else {
                write(pid, seen, vmas, &pages::Select::only(&|_| true).once(&shared), pages::Source::Frozen)?
            };
            c.process.vmas = vmas;
            page_bytes += n;
        }
        let pages_took = started.elapsed();
        let mut frozen_secs = None;
        // Processes that run on after the checkpoint (the only ones pre-copied or given a
        // snapshot) are let go now: what is left to read of them is in their snapshots (a
        // small process's pages were all read above, while it was frozen: it has none).
        if opts.snapshot {
            // They run on now: their connections leave repair mode.
            fd::leave_repair();
            for f in self.procs.iter_mut() {
                f.let_go()?;
            }
            frozen_secs = self.procs.first().map(Frozen::frozen_for);
            for c in collected.iter_mut() {
                let Some(snap) = &c.snap else { continue };
                let vmas = std::mem::take(&mut c.process.vmas);
                let (vmas, n) = write(snap.child.tid, None, vmas, &pages::Select::only(&|v| !crate::snapshot::read_while_frozen(v)), pages::Source::Snapshot)?;
                c.process.vmas = vmas;
                page_bytes += n;
            }
        }
        let mut processes: Vec<Process> = collected.iter().map(|c| c.process.clone()).collect();
        for z in &self.zombies {
            let ppid = self.parents.get(&z.pid).copied().unwrap_or(0);
            processes.push(zombie_record(z, ppid));
        }
        sort_parents_first(&mut processes);
        // The page data must account for every page found to need saving: never write an image
        // that would restore zeros in place of memory.
        for p in &processes {
            for v in &p.vmas {
                crest_image::validate::check_coverage(p.pid, v).map_err(|e| DumpError::Incomplete(e.to_string()))?;
            }
        }
        // The clocks the processes read, for a restart after a reboot.
        let pids: Vec<i32> = processes.iter().filter(|p| p.exit_status.is_none()).map(|p| p.pid).collect();
        let clocks = match pids.first() {
            Some(&first) => Some(crest_kinds::clocks::dump(first, &pids)?),
            None => None,
        };
        let (release, host) = crest_ptrace::sys::uname();
        let remote_syscalls = collected.iter().map(|c| c.remote_syscalls).sum();
        let remote_stops = collected.iter().map(|c| c.remote_stops).sum();
        let image = Image {
            tool: concat!("crest ", env!("CARGO_PKG_VERSION")).to_string(),
            kernel: release,
            host,
            time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            root_pid: self.id,
            scope: self.scope.name().to_string(),
            vdso_layout: collected.iter().map(|c| &c.vdso_layout).find(|l| !l.is_empty()).cloned().unwrap_or_default(),
            processes,
            ipc: wide.ipc,
            parent: pre.as_ref().and_then(|p| p.parent.clone()),
            tracking: pre.as_ref().map(|p| p.tracked.iter().filter_map(|(&pid, t)| t.left.map(|(fd, start)| crest_image::Tracking { pid, start, fd, token: p.token })).collect()).unwrap_or_default(),
            clocks,
            network_lock: fd::netlock::installed(),
        };
        check_cancel()?;
        w.finish(&image)?;
        let frozen_secs = frozen_secs.unwrap_or_else(|| self.procs.first().map_or(0.0, Frozen::frozen_for));
        let vmas = image.processes.iter().map(|p| p.vmas.len()).sum();
        let steps = vec![("pages", pages_took), ("finish", started.elapsed().saturating_sub(pages_took))];
        let cautions = image
            .processes
            .iter()
            .flat_map(|p| p.vmas.iter().filter(|v| v.flags & crest_image::vma_flags::AIO != 0).map(move |v| (p.pid, v.start)))
            .map(|(pid, at)| format!("pid {pid}: AIO context {at:#x}: a poll or fsync request still in flight when it was frozen cannot be seen, and would not complete after a restart"))
            .collect();
        Ok((image, DumpStats { page_bytes, vmas, remote_syscalls, remote_stops, frozen_secs, steps, saved_whole, unlocked: fd::netlock::skipped(), cautions }))
    }

    /// Lets every process go as it was; with `kill`, kills them instead, all those below the
    /// topmost ones at once ([`FrozenTree::kill_at_once`]; where that cannot be, children first,
    /// each reaped by its frozen parent from inside): no zombie is left to an init that does not
    /// reap; the topmost ones are left to their own parents.
    pub fn release(mut self, kill: bool) -> Result<(), DumpError> {
        let mut first_err = None;
        // TCP connections stay in repair mode through a kill, so that they close silently.
        if kill {
            fd::keep_repair();
        } else {
            fd::leave_repair();
        }
        if kill {
            for z in std::mem::take(&mut self.zombies) {
                if let Some(parent) = self.parents.get(&z.pid).and_then(|p| self.procs.iter_mut().find(|f| f.pid == *p)) {
                    if let Err(e) = parent.reap(z.pid) {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if self.kill_at_once(&mut first_err) {
                return first_err.map_or(Ok(()), Err);
            }
            // Level by level, the deepest first: every process of a level is sent SIGKILL, then
            // each is waited for (their ends overlap), then each is reaped by its parent, still
            // frozen one level up. A parent is never killed before its children are reaped.
            let parents = &self.parents;
            let mut by_depth: Vec<(usize, Frozen)> = std::mem::take(&mut self.procs).into_iter().map(|f| (depth(parents, f.pid), f)).collect();
            by_depth.sort_by_key(|(d, _)| *d);
            let index: HashMap<i32, usize> = by_depth.iter().enumerate().map(|(i, (_, f))| (f.pid, i)).collect();
            while let Some(&(d, _)) = by_depth.last() {
                let from = by_depth.iter().position(|(e, _)| *e == d).unwrap_or(0);
                let mut level: Vec<(usize, Frozen)> = by_depth.split_off(from);
                let was_running: Vec<bool> = level.iter().map(|(_, f)| f.is_released()).collect();
                for (_, f) in level.iter_mut().rev() {
                    if let Err(e) = f.kill_now() {
                        first_err.get_or_insert(e);
                    }
                }
                for ((_, f), was_running) in level.into_iter().rev().zip(was_running.into_iter().rev()) {
                    let pid = f.pid;
                    if let Err(e) = f.release(true) {
                        first_err.get_or_insert(e);
                    }
                    if was_running {
                        continue;
                    }
                    if let Some(parent) = self.parents.get(&pid).and_then(|p| index.get(p)).and_then(|&i| by_depth.get_mut(i)) {
                        if let Err(e) = parent.1.reap(pid) {
                            first_err.get_or_insert(e);
                        }
                    }
                }
            }
        } else {
            for f in std::mem::take(&mut self.procs) {
                if let Err(e) = f.release(false) {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl FrozenTree {
    /// Kills every process with a parent in the scope at once, their ends overlapping, then the
    /// topmost ones, left to their own parents. The topmost ones are made first the reapers of
    /// everything below them, ignoring `SIGCHLD` ([`Frozen::adopt_descendants`]): each process
    /// killed is released by the kernel as soon as this tracer has seen it end, whether its
    /// parent is still there or it was passed up to the topmost one. `false` (nothing killed)
    /// when a topmost process could not be made so.
    fn kill_at_once(&mut self, first_err: &mut Option<DumpError>) -> bool {
        let parents = &self.parents;
        let has_below: std::collections::HashSet<i32> = parents.values().copied().collect();
        let needed: Vec<usize> = (0..self.procs.len()).filter(|&i| !parents.contains_key(&self.procs[i].pid) && has_below.contains(&self.procs[i].pid)).collect();
        if needed.iter().any(|&i| self.procs[i].is_released()) {
            return false;
        }
        for i in needed {
            match self.procs[i].adopt_descendants() {
                Ok(true) => {}
                Ok(false) => return false,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let (mut tops, mut below): (Vec<Frozen>, Vec<Frozen>) = std::mem::take(&mut self.procs).into_iter().partition(|f| !parents.contains_key(&f.pid));
        for f in below.iter_mut().rev() {
            if let Err(e) = f.kill_now() {
                first_err.get_or_insert(e);
            }
        }
        for f in below.into_iter().rev() {
            if let Err(e) = f.release(true) {
                first_err.get_or_insert(e);
            }
        }
        // A child that ends with another signal than SIGCHLD is not released by the kernel:
        // reaped from inside, until none is left.
        for f in &mut tops {
            for _ in 0..=self.parents.len() {
                let all = (-1i64) as u64;
                match f.call_inside("reaping the ended processes below it", libc::SYS_wait4, &[all, 0, (libc::WNOHANG | libc::__WALL) as u64, 0]) {
                    Ok(Some(n)) if n > 0 => {}
                    _ => break,
                }
            }
        }
        for f in tops.iter_mut().rev() {
            if let Err(e) = f.kill_now() {
                first_err.get_or_insert(e);
            }
        }
        for f in tops.into_iter().rev() {
            if let Err(e) = f.release(true) {
                first_err.get_or_insert(e);
            }
        }
        true
    }
}

/// How many ancestors `pid` has in `parents` (each child's PID to its parent's), counted up to
/// 4097 at the most, so that a loop in the map cannot hang it.
fn depth(parents: &HashMap<i32, i32>, pid: i32) -> usize {
    let mut d = 0;
    let mut at = pid;
    while let Some(&p) = parents.get(&at) {
        d += 1;
        at = p;
        if d > 4096 {
            break;
        }
    }
    d
}

/// The record of a zombie: who it is and how it ended.
fn zombie_record(z: &Zombie, ppid: i32) -> Process {
    Process { pid: z.pid, ppid, pgid: z.stat.pgrp, sid: z.stat.session, exit_status: Some(z.stat.exit_code), ..Default::default() }
}

/// Marks in each process of `collected` (where `eligible`) the pages it shares copy-on-write
/// with its parent's mapping of the same bounds (`Vma::inherited`, see
/// [`memory::shared_with_parent`]), when the parent is in the image and eligible too.
fn mark_inherited(collected: &mut [Collected], eligible: &[bool]) -> Result<(), DumpError> {
    let index: HashMap<i32, usize> = collected.iter().enumerate().map(|(i, c)| (c.process.pid, i)).collect();
    for i in 0..collected.len() {
        let Some(&parent) = index.get(&collected[i].process.ppid).filter(|_| collected[i].process.ppid != 0) else { continue };
        if !eligible[i] || !eligible[parent] || parent == i {
            continue;
        }
        let parent_vmas: Vec<crest_image::Vma> = collected[parent].process.vmas.iter().filter(|w| w.can_inherit()).cloned().collect();
        let (pid, ppid) = (collected[i].process.pid, collected[parent].process.pid);
        if parent_vmas.is_empty() {
            continue;
        }
        // The pagemaps the collections opened (the parent's is only read).
        let (child, parent) = if i < parent {
            let (a, b) = collected.split_at_mut(parent);
            (&mut a[i], &b[0])
        } else {
            let (a, b) = collected.split_at_mut(i);
            (&mut b[0], &a[parent])
        };
        debug_assert_eq!((child.pagemap.pid(), parent.pagemap.pid()), (pid, ppid));
        let (pm, parent_pm) = (&child.pagemap, &parent.pagemap);
        let mut scratch = Vec::new();
        for v in child.process.vmas.iter_mut() {
            let Some(w) = parent_vmas.iter().find(|w| v.shares_with(w)) else { continue };
            let to_save = memory::pages_to_save(v, pm, &mut scratch)?;
            v.inherited = memory::shared_with_parent(v, w, &to_save, pm, parent_pm)?;
            // The same pages are to save when they are written, the process still frozen.
            child.to_save.insert(v.start, to_save);
        }
    }
    Ok(())
}

/// Orders `procs` so that every process comes after its parent (stable otherwise).
fn sort_parents_first(procs: &mut Vec<Process>) {
    let mut out: Vec<Process> = Vec::with_capacity(procs.len());
    let mut rest = std::mem::take(procs);
    while !rest.is_empty() {
        let before = rest.len();
        let mut i = 0;
        while i < rest.len() {
            let p = &rest[i];
            if p.ppid == 0 || out.iter().any(|o| o.pid == p.ppid) {
                out.push(rest.remove(i));
            } else {
                i += 1;
            }
        }
        if rest.len() == before {
            // A parent missing from the image: the rest become top-level.
            for mut p in rest.drain(..) {
                p.ppid = 0;
                out.push(p);
            }
        }
    }
    *procs = out;
}
