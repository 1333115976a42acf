//! The kinds of per-process state other than the descriptors' files, behind one interface
//! ([`ProcessKind`]) and one registry ([`KINDS`]), and the order in which a process restores
//! them, derived from what each kind declares it must come after.
//!
//! Each kind is implemented in the module of the object it restores (its dump and restore side
//! by side there) and registered here with one line. It says:
//! - where it runs ([`Stage`]): inside the husk before it stops, on itself with plain system
//!   calls ([`Stage::Husk`]), or from the restorer once the husk is seized, through remote
//!   system calls or on its PID ([`Stage::Traced`]);
//! - what it must come after ([`ProcessKind::after`]): names of other kinds of the same stage,
//!   each with its reason in a comment. [`THREADS`] names the kind that creates the process's
//!   other threads: a kind that needs them lists it, and a kind they must
//!   inherit is listed by it.
//!
//! [`sequence`] sorts each stage so that every kind comes after those it names (among kinds
//! that do not depend on each other, the registry's order holds) and refuses a name that is
//! not registered, a dependency on a later stage and a cycle. A unit test checks the registry.
//!
//! At checkpoint, the kinds that read their state through remote system calls in the frozen
//! leader ([`ProcessKind::dump`], into [`Dumped`]) run in the order [`dump_sequence`] derives
//! the same way from [`ProcessKind::dump_after`]. Their reads that need no result of another
//! call are queued first by every kind ([`ProcessKind::dump_queue`], [`queue_all`]), so that
//! they run in one stop of the leader with those of its own thread; each kind's
//! [`ProcessKind::dump`] then takes their results.
use std::collections::HashMap;
use std::sync::OnceLock;

use crest_image::{Creds, MmState, ProcAttrs, Process, SigAction};
use crest_ptrace::{Read, Remote};

use crate::memory::{Filled, MapFds};
use crate::progress::Progress;
use crate::{KindError, Scratch};

/// Where a kind's restore runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Inside the husk, before it stops: plain system calls on itself ([`HuskCx`]).
    Husk,
    /// From the restorer, the husk seized, its memory and threads being made: remote system
    /// calls and calls on its PID ([`FillCx`]).
    Traced,
}

/// The kind of [`Stage::Traced`] that creates the process's other threads and sets their own
/// state ([`crate::thread::Threads`]): what needs them lists it.
pub const THREADS: &str = "threads";

/// One kind of per-process state.
pub trait ProcessKind: Sync {
    /// Short name, unique: what other kinds list in [`ProcessKind::after`], and what messages say.
    fn name(&self) -> &'static str;
    /// Where its restore runs.
    fn stage(&self) -> Stage;
    /// The fields of the process's record ([`Process`]) it restores, as docs/image-format.md
    /// names them: `field`, or `field.sub` for a field of a record held there (`attrs.itimers`;
    /// `threads.attrs.seccomp`: of each thread). `cr_info` shows them under the kind's name
    /// ([`summary`]); unit tests check that they are fields of the record, that they are
    /// documented, and that every field of the record is some kind's (or [`MADE_WITH_THE_PROCESS`]).
    fn fields(&self) -> &'static [&'static str];
    /// The kinds, of the same stage, whose restore must be done before this one's.
    fn after(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether it reads its state in [`ProcessKind::dump`] (else another kind reads it, or
    /// the checkpoint reads it from `/proc` with the rest of the process).
    fn dumps(&self) -> bool {
        false
    }
    /// The kinds whose dump must be done before this one's.
    fn dump_after(&self) -> &'static [&'static str] {
        &[]
    }
    /// Queues the remote reads of [`ProcessKind::dump`] that need no result of another call
    /// ([`CollectCx::queue`]), to run in one go with those of the other kinds. It changes
    /// nothing in the process.
    fn dump_queue(&self, _cx: &mut CollectCx<'_, '_>) -> Result<(), KindError> {
        Ok(())
    }
    /// Reads it from the frozen process, through its leader, with the results of what
    /// [`ProcessKind::dump_queue`] queued.
    fn dump(&self, _cx: &mut CollectCx<'_, '_>) -> Result<(), KindError> {
        Err(KindError::Mismatch(format!("the {} kind is not read through the frozen process", self.name())))
    }
    /// Restores it inside the husk ([`Stage::Husk`]).
    fn prepare(&self, _cx: &mut HuskCx<'_>) -> Result<(), String> {
        Err(format!("the {} kind is not restored inside the restore process", self.name()))
    }
    /// Restores it from the restorer ([`Stage::Traced`]).
    fn restore(&self, _cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
        Err(KindError::Mismatch(format!("the {} kind is not restored from outside the restore process", self.name())))
    }
}

/// What the kinds read through the frozen process: the parts of its record they fill.
#[derive(Debug, Default)]
pub struct Dumped {
    /// Signal dispositions.
    pub sigactions: Vec<SigAction>,
    /// Process attributes, the POSIX timers among them.
    pub attrs: ProcAttrs,
    /// The mm state.
    pub mm: MmState,
    /// Signals pending for the whole process.
    pub shared_pending: Vec<Vec<u8>>,
    /// Credentials as `/proc` shows them, completed by the process attributes.
    pub creds: Creds,
}

/// What a kind dumped through the frozen process works with.
pub struct CollectCx<'r, 'a> {
    /// Remote system calls in the frozen leader (all its signals blocked).
    pub remote: &'r mut Remote<'a>,
    /// The scratch page mapped in it.
    pub scratch: &'r Scratch,
    /// Its PID.
    pub pid: i32,
    /// Its `/proc/PID/status`.
    pub status: &'r str,
    /// Its `/proc/PID/stat`.
    pub stat: &'r crest_proc::Stat,
    /// The TIDs of its threads, the leader first.
    pub tids: &'r [i32],
    /// What is read.
    pub out: &'r mut Dumped,
    /// Bytes of the scratch page handed out to queued reads ([`CollectCx::room`]).
    pub used: u64,
    /// What each kind queued in [`ProcessKind::dump_queue`], by its name: where in the scratch
    /// page its reads write, and the calls.
    pub reads: HashMap<&'static str, (u64, Vec<Read>)>,
    /// The first [`CollectCx::used`] bytes of the scratch page as the queued reads left them
    /// ([`run_queued`]): what a kind's dump writes there after cannot spoil them.
    pub copy: Vec<u8>,
}

impl CollectCx<'_, '_> {
    /// `len` bytes of the scratch page of their own for reads queued until every kind has
    /// dumped (8-byte aligned); `None` when the page is full: the kind then reads in its
    /// dump, one call after another, where nothing handed out lies.
    pub fn room(&mut self, len: u64) -> Option<u64> {
        let at = self.used.next_multiple_of(8);
        (at + len <= crate::SCRATCH_LEN).then(|| {
            self.used = at + len;
            self.scratch.addr + at
        })
    }

    /// Notes the reads kind `name` queued, which write at `at`.
    pub fn queued(&mut self, name: &'static str, at: u64, reads: Vec<Read>) {
        self.reads.insert(name, (at, reads));
    }

    /// The `len` bytes the queued reads wrote at `at` (an address [`CollectCx::room`] gave).
    pub fn bytes(&self, at: u64, len: usize) -> Result<&[u8], KindError> {
        let off = at.checked_sub(self.scratch.addr).map(|o| o as usize);
        off.and_then(|o| self.copy.get(o..o + len)).ok_or_else(|| KindError::Mismatch(format!("{len} bytes at {at:#x} are not among those the queued reads wrote")))
    }
}

/// Runs what [`queue_all`] and the caller queued on `cx.remote`, in one go where the process
/// has a batch area, and keeps what the reads wrote in the scratch page ([`CollectCx::copy`]).
pub fn run_queued(cx: &mut CollectCx<'_, '_>) -> Result<(), KindError> {
    cx.remote.flush()?;
    cx.copy = if cx.used == 0 { Vec::new() } else { cx.scratch.read(0, cx.used as usize)? };
    Ok(())
}

/// What a kind restored inside the husk works with.
pub struct HuskCx<'a> {
    /// The saved process.
    pub p: &'a Process,
    /// The working directory to enter, `None` when entered already (a deleted one).
    pub cwd: Option<&'a str>,
    /// The restore's own descriptors, kept open.
    pub keep: &'a [i32],
    /// Whether the process restores its descriptor table: not when it shares its parent's
    /// (`Process.files_shared`), which the parent restores.
    pub owns_files: bool,
    /// File id -> parked descriptor of an object opened once for the image.
    pub shared_files: &'a HashMap<u64, i32>,
    /// Where the parked descriptors start.
    pub parked: i32,
    /// New PIDs of the image's processes created so far, by their saved PID (taken by the
    /// descriptors' kind).
    pub pids: HashMap<i32, i32>,
}

/// What a kind restored from the restorer works with, and what it reports.
pub struct FillCx<'r, 'a> {
    /// Remote system calls in the husk's leader.
    pub remote: &'r mut Remote<'a>,
    /// The scratch page mapped in the husk.
    pub scratch: &'r Scratch,
    /// The husk's PID.
    pub pid: i32,
    /// The saved process.
    pub p: &'r Process,
    /// The restore's descriptors in the husk the mappings are made from.
    pub map_fds: &'r MapFds,
    /// The descriptor of the executable in the husk, -1 when it is to come from the image.
    pub exe_fd: i32,
    /// Every descriptor of the restore's own in the husk, closed once the mappings are made.
    pub aux: &'r [i32],
    /// The image files the pages come from: the image, then the parents of an incremental one.
    pub images: &'r [std::fs::File],
    /// Counts the page bytes restored.
    pub progress: &'r Progress,
    /// How many seccomp filters, the first first, every thread has in common.
    pub shared_filters: usize,
    /// The credentials of the leader.
    pub leader_creds: &'r Creds,
    /// Whether the threads are created with their saved TIDs (`--restore-pid`).
    pub restore_pid: bool,
    /// A free address range of the given length in the saved address space, clear of the
    /// scratch page and the batch area, if there is one.
    pub free_range: &'r dyn Fn(u64) -> Option<u64>,
    /// Gives the pages of private anonymous memory on demand (`cr_restart --lazy`): the memory
    /// kind registers the memory it leaves empty.
    pub lazy: Option<&'r crate::lazy::Pagers>,
    /// Reported by the memory kind: page data restored.
    pub filled: Filled,
    /// Reported by the mm kind: whether `/proc/PID/exe` could be set.
    pub exe_set: bool,
    /// Made by the threads kind: the other threads, traced, in the order of
    /// `p.threads[1..]` (their new TIDs: [`crate::thread::new_tid`]).
    pub threads: Vec<crest_ptrace::Tracee>,
    /// Counted by the threads kind: the system calls the other threads made.
    pub syscalls: u64,
}

/// A run of kinds, in restore order.
pub type Kinds = &'static [&'static dyn ProcessKind];

/// The registry: every kind of per-process state, in the order kept among kinds that do not
/// depend on each other.
pub static KINDS: Kinds = &[
    // Inside the husk.
    &crate::fd::Descriptors,
    &crate::attrs::SocketOwners,
    &crate::fd::Locks,
    &crate::task::Task,
    &crate::attrs::LoginUid,
    &crate::signals::Actions,
    // From the restorer.
    &crate::memory::Memory,
    &crate::aio::AioRings,
    &crate::fd::packet::PacketRings,
    &crate::mm::Mm,
    &crate::memory::RestoreDescriptors,
    &crate::thread::Leader,
    &crate::attrs::SharedSeccomp,
    &crate::thread::Threads,
    &crate::attrs::ProcessAttrs,
    &crate::ipc::SemUndo,
    &crate::timers::Timers,
    &crate::task::Rlimits,
    &crate::attrs::Oom,
    &crate::attrs::Cgroups,
    &crate::attrs::Seccomp,
    &crate::attrs::LeaderCreds,
    &crate::attrs::LeaderAttrs,
    &crate::attrs::Dumpable,
    &crate::signals::Pending,
    &crate::attrs::SeccompStrict,
];

/// The fields of the process's record that no kind restores: the restore itself uses them as
/// it makes the process (its ids, its place in the tree, whether it is a zombie, the stop it
/// was in) or they only inform (its command line, what was dropped by an option).
pub const MADE_WITH_THE_PROCESS: &[&str] = &["pid", "ppid", "pgid", "sid", "cmdline", "exit_status", "dropped", "attrs.stop_signal", "threads.tid"];

/// What the image holds of each kind for process `p`, for `cr_info`: the kind's name and, for
/// each of its fields that is not empty, zero or unset, the field and its value (a count of
/// entries for a list; a record's fields for each thread, summed).
pub fn summary(p: &Process) -> Vec<(&'static str, String)> {
    let Ok(v) = serde_json::to_value(p) else { return Vec::new() };
    let mut out = Vec::new();
    for k in KINDS {
        let parts: Vec<String> = k.fields().iter().filter_map(|f| Some(format!("{f} {}", shown(&lookup(&v, f))?))).collect();
        if !parts.is_empty() {
            out.push((k.name(), parts.join(", ")));
        }
    }
    out
}

/// The values at the dotted path `path` of `v`: one, or one per element of each list passed.
fn lookup(v: &serde_json::Value, path: &str) -> Vec<serde_json::Value> {
    let mut at = vec![v.clone()];
    for seg in path.split('.') {
        at = at
            .into_iter()
            .flat_map(|x| match x {
                serde_json::Value::Array(items) => items.into_iter().filter_map(|i| i.get(seg).cloned()).collect::<Vec<_>>(),
                other => other.get(seg).cloned().into_iter().collect(),
            })
            .collect();
    }
    at
}

/// How `cr_info` shows the values of one field: none when all are empty, zero or unset; the
/// number of entries set for lists of records, the bytes of a long list of numbers, the value
/// of a single scalar, else in how many threads it is set.
fn shown(values: &[serde_json::Value]) -> Option<String> {
    use serde_json::Value;
    fn set(x: &Value) -> bool {
        match x {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => a.iter().any(set),
            Value::Object(o) => o.values().any(set),
        }
    }
    let values: Vec<&Value> = values.iter().filter(|x| set(x)).collect();
    let numbers = |a: &Vec<Value>| a.iter().all(Value::is_number);
    let shown = match values.as_slice() {
        [] => return None,
        all if all.iter().all(|x| x.as_array().is_some_and(|a| !numbers(a))) => all.iter().filter_map(|x| x.as_array()).map(|a| a.iter().filter(|e| set(e)).count()).sum::<usize>().to_string(),
        all if all.iter().all(|x| x.as_array().is_some_and(|a| a.len() > 16)) => format!("{} bytes", all.iter().filter_map(|x| x.as_array()).map(Vec::len).sum::<usize>()),
        [Value::String(s)] => s.clone(),
        [Value::Number(n)] => n.to_string(),
        [Value::Bool(_)] => "on".to_string(),
        [_] => "set".to_string(),
        all => format!("set in {} threads", all.len()),
    };
    Some(shown)
}

/// Why the kinds cannot be put in order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// A kind names one that is not registered.
    #[error("the {kind} kind must come after {missing}, which is not registered")]
    Unknown {
        /// The kind.
        kind: &'static str,
        /// The name it gives.
        missing: &'static str,
    },
    /// Two kinds have one name.
    #[error("two kinds are named {0}")]
    Duplicate(&'static str),
    /// A kind restored inside the husk names one restored later, from outside.
    #[error("the {kind} kind, restored inside the restore process, cannot come after {later}, restored from outside later")]
    LaterStage {
        /// The kind.
        kind: &'static str,
        /// The one of the later stage.
        later: &'static str,
    },
    /// The kinds depend on each other in a circle.
    #[error("the kinds {0:?} wait for each other")]
    Cycle(Vec<&'static str>),
}

/// Sorts the kinds of `stage` of `kinds` so that each comes after those it names; among
/// kinds that do not depend on each other, the order of `kinds` holds.
pub fn sort(kinds: &[&'static dyn ProcessKind], stage: Stage) -> Result<Vec<&'static dyn ProcessKind>, OrderError> {
    let index = names(kinds)?;
    let of_stage: Vec<usize> = (0..kinds.len()).filter(|&i| kinds[i].stage() == stage).collect();
    // For each kind of the stage, the kinds of the stage it waits for.
    let mut waits: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in &of_stage {
        let k = kinds[i];
        let mut w = Vec::new();
        for &name in k.after() {
            let &j = index.get(name).ok_or(OrderError::Unknown { kind: k.name(), missing: name })?;
            match (k.stage(), kinds[j].stage()) {
                (a, b) if a == b => w.push(j),
                // A traced kind always comes after every kind of the husk.
                (Stage::Traced, Stage::Husk) => {}
                _ => return Err(OrderError::LaterStage { kind: k.name(), later: name }),
            }
        }
        waits.insert(i, w);
    }
    topological(kinds, &of_stage, &waits)
}

/// Sorts the kinds of `kinds` that dump so that each dumps after those it names in
/// [`ProcessKind::dump_after`] (which must dump too); otherwise in the order of `kinds`.
pub fn sort_dump(kinds: &[&'static dyn ProcessKind]) -> Result<Vec<&'static dyn ProcessKind>, OrderError> {
    let index = names(kinds)?;
    let dumping: Vec<usize> = (0..kinds.len()).filter(|&i| kinds[i].dumps()).collect();
    let mut waits: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in &dumping {
        let k = kinds[i];
        let w = k.dump_after().iter().map(|&name| index.get(name).copied().filter(|&j| kinds[j].dumps()).ok_or(OrderError::Unknown { kind: k.name(), missing: name })).collect::<Result<_, _>>()?;
        waits.insert(i, w);
    }
    topological(kinds, &dumping, &waits)
}

/// Name -> index in `kinds`, every name once.
fn names(kinds: &[&'static dyn ProcessKind]) -> Result<HashMap<&'static str, usize>, OrderError> {
    let mut index = HashMap::new();
    for (i, k) in kinds.iter().enumerate() {
        if index.insert(k.name(), i).is_some() {
            return Err(OrderError::Duplicate(k.name()));
        }
    }
    Ok(index)
}

/// The kinds `members` of `kinds`, each after those it `waits` for, else in their order.
fn topological(kinds: &[&'static dyn ProcessKind], members: &[usize], waits: &HashMap<usize, Vec<usize>>) -> Result<Vec<&'static dyn ProcessKind>, OrderError> {
    let mut done = vec![false; kinds.len()];
    let mut out = Vec::with_capacity(members.len());
    while out.len() < members.len() {
        let next = members.iter().copied().find(|&i| !done[i] && waits[&i].iter().all(|&j| done[j]));
        match next {
            Some(i) => {
                done[i] = true;
                out.push(kinds[i]);
            }
            None => return Err(OrderError::Cycle(members.iter().filter(|&&i| !done[i]).map(|&i| kinds[i].name()).collect())),
        }
    }
    Ok(out)
}

/// The kinds of [`KINDS`] of `stage`, in the order they are restored.
pub fn sequence(stage: Stage) -> Result<Kinds, KindError> {
    type Sorted = Result<[Vec<&'static dyn ProcessKind>; 2], OrderError>;
    static SORTED: OnceLock<Sorted> = OnceLock::new();
    let sorted = SORTED.get_or_init(|| Ok([sort(KINDS, Stage::Husk)?, sort(KINDS, Stage::Traced)?]));
    match sorted {
        Ok(s) => Ok(&s[usize::from(stage == Stage::Traced)]),
        Err(e) => Err(KindError::Mismatch(format!("this build cannot order its restore: {e}"))),
    }
}

/// The kinds of [`KINDS`] that dump, in the order they do.
pub fn dump_sequence() -> Result<Kinds, KindError> {
    static SORTED: OnceLock<Result<Vec<&'static dyn ProcessKind>, OrderError>> = OnceLock::new();
    match SORTED.get_or_init(|| sort_dump(KINDS)) {
        Ok(s) => Ok(s),
        Err(e) => Err(KindError::Mismatch(format!("this build cannot order its checkpoint: {e}"))),
    }
}

/// Queues the reads of every kind that dumps through the frozen process, in order: they run
/// at the next flush of `cx.remote` (or once a kind needs a result).
pub fn queue_all(cx: &mut CollectCx<'_, '_>) -> Result<(), KindError> {
    for k in dump_sequence()? {
        k.dump_queue(cx)?;
    }
    Ok(())
}

/// Reads every kind that dumps through the frozen process, in order, once [`queue_all`] has
/// queued their reads.
pub fn dump_all(cx: &mut CollectCx<'_, '_>) -> Result<(), KindError> {
    for k in dump_sequence()? {
        k.dump(cx)?;
    }
    Ok(())
}

/// Inside the husk: restores every kind of [`Stage::Husk`], in order.
pub fn prepare_all(cx: &mut HuskCx<'_>) -> Result<(), String> {
    for k in sequence(Stage::Husk).map_err(|e| e.to_string())? {
        k.prepare(cx)?;
    }
    Ok(())
}

/// The kinds of [`Stage::Traced`] restored before the other threads are created, and those
/// restored after.
pub fn around_threads() -> Result<(Kinds, Kinds), KindError> {
    let all = sequence(Stage::Traced)?;
    let at = all.iter().position(|k| k.name() == THREADS).ok_or_else(|| KindError::Mismatch(format!("this build has no {THREADS} kind")))?;
    Ok((&all[..at], &all[at + 1..]))
}

/// Restores `kinds` in turn.
pub fn restore(kinds: &[&dyn ProcessKind], cx: &mut FillCx<'_, '_>) -> Result<(), KindError> {
    for k in kinds {
        k.restore(cx)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct K(&'static str, Stage, &'static [&'static str]);
    impl ProcessKind for K {
        fn name(&self) -> &'static str {
            self.0
        }
        fn fields(&self) -> &'static [&'static str] {
            &[]
        }
        fn stage(&self) -> Stage {
            self.1
        }
        fn after(&self) -> &'static [&'static str] {
            self.2
        }
    }

    fn names(v: &[&dyn ProcessKind]) -> Vec<&'static str> {
        v.iter().map(|k| k.name()).collect()
    }

    /// Every kind comes after the kinds it names, in the registry as it is.
    #[test]
    fn the_registry_is_in_order() {
        for stage in [Stage::Husk, Stage::Traced] {
            let seq = sort(KINDS, stage).expect("the registry can be ordered");
            assert_eq!(seq.len(), KINDS.iter().filter(|k| k.stage() == stage).count());
            for (at, k) in seq.iter().enumerate() {
                for name in k.after() {
                    if let Some(before) = seq.iter().position(|o| o.name() == *name) {
                        assert!(before < at, "{} must come after {name}", k.name());
                    }
                }
            }
        }
        // As restore did it before the order was declared; a change here is a change of
        // behaviour, to be made on purpose.
        assert_eq!(names(sequence(Stage::Husk).unwrap()), ["descriptors", "socket owners", "file locks", "task", "login uid", "signal actions"]);
        assert_eq!(
            names(sequence(Stage::Traced).unwrap()),
            [
                "memory",
                "aio rings",
                "packet rings",
                "mm",
                "restore descriptors",
                "leader thread",
                "shared seccomp",
                "threads",
                "process attributes",
                "semaphore adjustments",
                "posix timers",
                "rlimits",
                "oom score",
                "cgroups",
                "seccomp",
                "credentials",
                "leader attributes",
                "dumpable",
                "pending signals",
                "seccomp strict",
            ]
        );
        assert_eq!(names(dump_sequence().unwrap()), ["signal actions", "mm", "process attributes", "semaphore adjustments", "posix timers", "pending signals"]);
        let (before, after) = around_threads().unwrap();
        assert!(names(before).contains(&"shared seccomp") && names(after).contains(&"seccomp"));
    }

    #[test]
    fn dependencies_reorder_the_registry() {
        static A: K = K("a", Stage::Traced, &["c"]);
        static B: K = K("b", Stage::Traced, &[]);
        static C: K = K("c", Stage::Traced, &["b"]);
        static H: K = K("h", Stage::Husk, &[]);
        let seq = sort(&[&A, &H, &B, &C], Stage::Traced).unwrap();
        assert_eq!(names(&seq), ["b", "c", "a"]);
        assert_eq!(names(&sort(&[&A, &H, &B, &C], Stage::Husk).unwrap()), ["h"]);
    }

    #[test]
    fn a_cycle_is_refused() {
        static A: K = K("a", Stage::Traced, &["c"]);
        static B: K = K("b", Stage::Traced, &["a"]);
        static C: K = K("c", Stage::Traced, &["b"]);
        static D: K = K("d", Stage::Traced, &[]);
        match sort(&[&D, &A, &B, &C], Stage::Traced) {
            Err(OrderError::Cycle(mut left)) => {
                left.sort_unstable();
                assert_eq!(left, ["a", "b", "c"]);
            }
            other => panic!("a cycle was not refused: {:?}", other.map(|s| names(&s))),
        }
        static E: K = K("e", Stage::Traced, &["e"]);
        assert!(matches!(sort(&[&E], Stage::Traced), Err(OrderError::Cycle(_))));
    }

    struct D(&'static str, &'static [&'static str]);
    impl ProcessKind for D {
        fn name(&self) -> &'static str {
            self.0
        }
        fn fields(&self) -> &'static [&'static str] {
            &[]
        }
        fn stage(&self) -> Stage {
            Stage::Traced
        }
        fn dumps(&self) -> bool {
            true
        }
        fn dump_after(&self) -> &'static [&'static str] {
            self.1
        }
    }

    #[test]
    fn dump_order_is_declared_too() {
        static A: D = D("a", &["b"]);
        static B: D = D("b", &[]);
        static N: K = K("n", Stage::Traced, &[]);
        assert_eq!(names(&sort_dump(&[&A, &N, &B]).unwrap()), ["b", "a"]);
        static C: D = D("c", &["d"]);
        static E: D = D("d", &["c"]);
        assert!(matches!(sort_dump(&[&C, &E]), Err(OrderError::Cycle(_))));
        // What a kind dumps after must dump.
        static F: D = D("f", &["n"]);
        assert_eq!(sort_dump(&[&F, &N]).err(), Some(OrderError::Unknown { kind: "f", missing: "n" }));
    }

    #[test]
    fn unknown_duplicate_and_later_stage_names_are_refused() {
        static A: K = K("a", Stage::Traced, &["nowhere"]);
        assert_eq!(sort(&[&A], Stage::Traced).err(), Some(OrderError::Unknown { kind: "a", missing: "nowhere" }));
        static B: K = K("b", Stage::Traced, &[]);
        static B2: K = K("b", Stage::Husk, &[]);
        assert_eq!(sort(&[&B, &B2], Stage::Husk).err(), Some(OrderError::Duplicate("b")));
        static H: K = K("h", Stage::Husk, &["b"]);
        assert_eq!(sort(&[&B, &H], Stage::Husk).err(), Some(OrderError::LaterStage { kind: "h", later: "b" }));
        // The other way is always so.
        static T: K = K("t", Stage::Traced, &["h0"]);
        static H0: K = K("h0", Stage::Husk, &[]);
        assert_eq!(names(&sort(&[&T, &H0], Stage::Traced).unwrap()), ["t"]);
    }

    /// The first process of the golden single-process image (one thread).
    fn golden() -> Process {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crest-image/tests/data/4.12/single.crest");
        let img = crest_image::ImageFile::open(std::path::Path::new(path)).expect("the golden image reads");
        img.image.processes[0].clone()
    }

    fn template() -> serde_json::Value {
        serde_json::to_value(golden()).expect("as JSON")
    }

    /// Each kind's fields are fields of the process record (or of a record it holds), the names
    /// docs/image-format.md gives them, and every field of the record and of its attributes is
    /// some kind's or one the restore itself makes the process with.
    #[test]
    fn every_kind_names_real_documented_fields_and_every_field_has_its_kind() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/image-format.md")).expect("docs/image-format.md");
        let record = |name: &str| -> Vec<String> {
            let line = doc.lines().find(|l| l.contains(&format!("**{name}** `{{"))).unwrap_or_else(|| panic!("docs/image-format.md describes the {name} record"));
            // The names before each `:` or `,` at the top level of the braces.
            let open = line.find(&format!("**{name}** `{{")).expect("found") + name.len() + 7;
            let (mut depth, mut fields, mut word, mut in_name) = (0, Vec::new(), String::new(), true);
            for c in line[open..].chars() {
                match c {
                    '(' | '[' | '{' | '<' => depth += 1,
                    ')' | ']' | '>' => depth -= 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        fields.push(std::mem::take(&mut word).trim().to_string());
                        in_name = true;
                    }
                    ':' if depth == 0 => in_name = false,
                    c if in_name && depth == 0 => word.push(c),
                    _ => {}
                }
            }
            fields.push(word.trim().to_string());
            fields.into_iter().filter(|f| !f.is_empty()).collect()
        };
        let documented = |path: &str| -> bool {
            let segs: Vec<&str> = path.split('.').collect();
            let owner = match segs.len() {
                1 => "Process",
                _ => match (segs[0], segs.get(1).copied()) {
                    ("attrs", _) => "ProcAttrs",
                    ("mm", _) => "MmState",
                    ("creds", _) => "Creds",
                    ("threads", Some("attrs")) if segs.len() == 3 => "ThreadAttrs",
                    ("threads", _) => "Thread",
                    _ => return false,
                },
            };
            record(owner).iter().any(|f| f == segs[segs.len() - 1])
        };
        let v = template();
        let mut claimed: Vec<&str> = MADE_WITH_THE_PROCESS.to_vec();
        for k in KINDS {
            for f in k.fields() {
                assert!(!lookup(&v, f).is_empty(), "the {} kind names {f}, which is not a field of the process record", k.name());
                assert!(documented(f), "the {} kind's field {f} is not in docs/image-format.md", k.name());
                claimed.push(f);
            }
        }
        for f in MADE_WITH_THE_PROCESS {
            assert!(documented(f), "{f} is not in docs/image-format.md");
        }
        let covers = |path: &str| claimed.iter().any(|c| *c == path || path.starts_with(&format!("{c}.")) || c.starts_with(&format!("{path}.")));
        for f in record("Process") {
            assert!(covers(&f), "no kind restores the process record's field {f}: name it in a kind's fields() or in MADE_WITH_THE_PROCESS");
        }
        for f in record("ProcAttrs") {
            assert!(covers(&format!("attrs.{f}")), "no kind restores the process attribute {f}");
        }
        for f in record("ThreadAttrs") {
            assert!(covers(&format!("threads.attrs.{f}")), "no kind restores the thread attribute {f}");
        }
    }

    /// What `cr_info` shows of each kind: the fields that hold something, under the kind's name.
    #[test]
    fn the_summary_shows_each_kind_that_holds_something() {
        let mut p = golden();
        p.rlimits.clear();
        p.attrs.oom_score_adj = 0;
        let before: Vec<&str> = summary(&p).iter().map(|s| s.0).collect();
        assert!(!before.contains(&"rlimits") && !before.contains(&"oom score"), "{before:?}");
        p.rlimits.push(crest_image::Rlimit { resource: 7, cur: 64, max: 128 });
        p.attrs.oom_score_adj = 300;
        let after = summary(&p);
        assert!(after.contains(&("rlimits", "rlimits 1".to_string())), "{after:?}");
        assert!(after.contains(&("oom score", "attrs.oom_score_adj 300".to_string())), "{after:?}");
        let threads = after.iter().find(|s| s.0 == crate::process::THREADS).expect("the threads kind shows the thread");
        assert_eq!(threads.1, "threads 1");
    }
}
