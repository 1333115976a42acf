//! Driving one husk from an empty fork to the restored process.
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use crest_image::{ImageFile, Process, SpecialArea, Vma, VmaBacking};
use crest_kinds::memory::{self, MapFds};
use crest_kinds::process::{self, FillCx};
use crest_kinds::{attrs, fd, thread, vdso, Scratch};
use crest_ptrace::{find_syscall_insn, Remote};

use crate::inherit::Premap;
use crate::plan::{Group, Plan};
use crate::RestoreError;

const RSEQ_FLAG_UNREGISTER: u64 = 1;
const PR_SET_PDEATHSIG: u64 = 1;

/// How to restart.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Give the processes their saved PIDs (fails when taken).
    pub restore_pid: bool,
    /// Give the processes their saved process groups (`--restore-pgid`).
    pub restore_pgid: bool,
    /// Give the processes their saved sessions (`--restore-sid`).
    pub restore_sid: bool,
    /// Verify page checksums while restoring (on by default in the CLI).
    pub verify: bool,
    /// Map stored pages of private anonymous memory from the image where it may be mapped
    /// ([`crate::mapping::mappable`]) rather than copy them.
    pub map_image: bool,
    /// Counts the page bytes restored, for a progress display.
    pub progress: Option<std::sync::Arc<crest_kinds::progress::Progress>>,
    /// Called once every process is restored but none runs yet, and their TCP connections
    /// are still in repair mode (silent): a restart of several parts of one job waits here
    /// until every part is ready. An `Err` calls the restart off.
    pub barrier: Option<Barrier>,
    /// Give the pages of private anonymous memory on demand once the processes run
    /// (`cr_restart --lazy`, see [`crest_kinds::lazy`]); the caller waits for
    /// [`crest_kinds::lazy::Pagers::finish`] before it exits.
    pub lazy: Option<std::sync::Arc<crest_kinds::lazy::Pagers>>,
}

/// A wait shared with other restarts ([`RestoreOptions::barrier`]).
#[derive(Clone)]
pub struct Barrier(pub std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Barrier")
    }
}

/// A restored process, a child of the caller, running.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The PID of the image's first process (a child of the caller).
    pub pid: i32,
    /// PIDs of every process that is a child of the caller, the first one first.
    pub top: Vec<i32>,
    /// (saved PID, new PID) of every restored process.
    pub pids: Vec<(i32, i32)>,
    /// Bytes of page data read from the image.
    pub page_bytes: u64,
    /// Of those, the bytes mapped from the image rather than copied.
    pub mapped_bytes: u64,
    /// Why the image's pages were copied rather than mapped, when mapping was asked for.
    pub not_mapped: Option<String>,
    /// Remote syscalls made.
    pub remote_syscalls: u64,
    /// Stops of the processes' first threads waited for to run their remote syscalls (fewer
    /// than the calls: most run in batches).
    pub remote_stops: u64,
    /// Whether `/proc/PID/exe` could be set (needs privilege).
    pub exe_set: bool,
    /// What was restored otherwise than it was saved, in words (a pseudo-terminal with a new
    /// index).
    pub notes: Vec<String>,
    /// How long each step took, in order (`CREST_TIMING` prints them): the husks created and
    /// ready, filled, finished, let go.
    pub steps: Vec<(&'static str, std::time::Duration)>,
    /// Pages still being given on demand (a lazy restart, [`RestoreOptions::lazy`]): wait for
    /// its `finish` before leaving the processes on their own.
    pub lazy: Option<std::sync::Arc<crest_kinds::lazy::Pagers>>,
    /// The image arrived as a stream ([`crest_image::stream`]): how its reading goes on (a lazy
    /// restart lets the processes run before its end).
    pub stream: Option<std::sync::Arc<crest_image::stream::Arrival>>,
}

/// For every file mapping whose contents the image holds (`cr_checkpoint --save-*`): when its
/// file is gone or has changed since the checkpoint, restore it from the image alone, as
/// anonymous memory (shared memory for a shared mapping, one object per file for every process
/// of the image), so the file is not needed. A shared
/// mapping whose file is unchanged is mapped from the file and not written over. Returns the
/// paths that were left out this way.
pub fn use_saved_contents(p: &mut Process) -> Vec<String> {
    let mut left_out = Vec::new();
    for v in &mut p.vmas {
        if v.flags & crest_image::vma_flags::SAVED == 0 {
            continue;
        }
        let VmaBacking::File { path, size, mtime_ns, offset, dev, ino } = &v.backing else { continue };
        let shared = v.flags & crest_image::vma_flags::SHARED != 0;
        // Writes through a shared mapping of a tmpfs file (/dev/shm) do not change its
        // modification time: such a file cannot be known unchanged, and the saved contents,
        // taken at the checkpoint's instant, are used.
        let tmpfs = shared && std::fs::File::open(path).is_ok_and(|f| crest_ptrace::sys::fs_type(&f).is_ok_and(|t| t == libc::TMPFS_MAGIC));
        let unchanged = !tmpfs && std::fs::metadata(path).is_ok_and(|md| md.size() == *size && md.mtime() * 1_000_000_000 + md.mtime_nsec() == *mtime_ns);
        if unchanged {
            if shared {
                v.pages.clear();
            }
            continue;
        }
        if !left_out.contains(path) {
            left_out.push(path.clone());
        }
        // One shared object per file, whatever process maps it and wherever: the processes of
        // a job that talk through a file in /dev/shm (MPI's shared memory segments) still
        // share it. It starts where the mapping's offset says.
        v.backing = if shared { VmaBacking::SharedAnon { id: (1 << 63) | ((*dev << 32) ^ *ino), size: *offset + (v.end - v.start) } } else { VmaBacking::Anon };
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

/// Where a husk's own descriptors go while it is filled: the image, its status pipe, mapped
/// files, memfds of shared memory, the executable, the parents of an incremental image; all
/// above every saved descriptor number.
struct Layout {
    fds: MapFds,
    files: Vec<(String, bool)>,
    shared: Vec<(u64, u64)>,
    deleted: Vec<u64>,
    pipe_fd: i32,
    exe_fd: i32,
    aux: Vec<i32>,
}

impl Layout {
    fn new(p: &Process, aux_base: i32, parents: usize) -> Layout {
        let (files, shared) = memory::needed_files(&p.vmas);
        let deleted = memory::needed_deleted(&p.vmas);
        let n_aux = 2 + files.len() + shared.len() + deleted.len() + 1 + parents; // image, status pipe, files, memfds, deleted files, exe, parents
        let mut fds = MapFds { image: aux_base, ..Default::default() };
        let mut next = aux_base + 2;
        for (path, _) in &files {
            fds.files.insert(path.clone(), next);
            next += 1;
        }
        for (id, _) in &shared {
            fds.shared.insert(*id, next);
            next += 1;
        }
        for id in &deleted {
            fds.deleted.insert(*id, next);
            next += 1;
        }
        fds.parents = (next + 1..next + 1 + parents as i32).collect();
        Layout { fds, files, shared, deleted, pipe_fd: aux_base + 1, exe_fd: next, aux: (aux_base..aux_base + n_aux as i32).collect() }
    }
}

/// For each process, the process whose descriptor table it has: itself, or, for a process
/// that shares its parent's ([`Process::files_shared`]), its parent's owner.
fn table_owners(procs: &[Process]) -> Vec<usize> {
    let mut owner: Vec<usize> = (0..procs.len()).collect();
    for (i, p) in procs.iter().enumerate() {
        if p.files_shared {
            if let Some(parent) = procs[..i].iter().position(|q| q.pid == p.ppid) {
                owner[i] = owner[parent];
            }
        }
    }
    owner
}

/// What every husk of one restart needs to know, inherited through the forks.
struct Ctx<'a> {
    procs: &'a [Process],
    plan: &'a Plan,
    layouts: &'a [Layout],
    /// For each process, the one whose descriptor table it has (see [`table_owners`]).
    table: &'a [usize],
    /// File id -> parked descriptor of an object opened once for the image.
    shared_files: &'a std::collections::HashMap<u64, i32>,
    /// Shared memory object id -> parked memfd.
    memfds: &'a std::collections::HashMap<u64, i32>,
    /// Deleted file id -> parked recreated file.
    deleted: &'a std::collections::HashMap<u64, i32>,
    /// (path, opened for writing) -> parked descriptor of a mapped file or an executable,
    /// opened once for every process that needs it.
    opened: &'a std::collections::HashMap<(String, bool), i32>,
    /// Write end of each husk's status pipe (parked), -1 for zombies.
    status: &'a [i32],
    /// The image, then the parents of an incremental one (parked).
    image_fds: &'a [i32],
    parked: i32,
    restore_pid: bool,
    /// For each process, the parked slave of the pseudo-terminal it takes as its controlling
    /// terminal (a session leader), and the one whose foreground group it sets (the
    /// foreground group's processes).
    ctty: &'a [Option<i32>],
    foreground: &'a [Option<i32>],
    /// The mappings built before the forks, to share pages between parents and children.
    premap: &'a Premap,
}

impl Ctx<'_> {
    fn pid_for(&self, i: usize) -> Option<i32> {
        self.restore_pid.then_some(self.procs[i].pid)
    }

    /// Joins the planned group now if it exists already (`known`: new PIDs of the processes
    /// created so far, 0 for the others). Returns false when it must be done later.
    fn join_group(&self, i: usize, known: &[i32], standins: &[(i32, i32)]) -> Result<bool, String> {
        let target = match self.plan.group[i] {
            Group::Inherit => return Ok(true),
            Group::Own => 0,
            Group::Existing(g) => g,
            Group::Standin(g) => standins.iter().find(|s| s.0 == g).map(|s| s.1).ok_or_else(|| format!("pid {}: the stand-in leader of its process group {g} was not made", self.procs[i].pid))?,
            Group::Leader(l) if known[l] != 0 => known[l],
            Group::Leader(_) => return Ok(false),
        };
        crest_ptrace::husk::setpgid(0, target).map_err(|e| format!("pid {}: joining process group {target}: {e}", self.procs[i].pid))?;
        Ok(true)
    }

    /// In the husk of process `i`: the session and group, the husks of its children, then its
    /// own descriptors, directory and signal dispositions.
    /// `standins`: the groups made by stand-in leaders of its parent, `(saved id, new id)`.
    fn prepare(&self, i: usize, mut known: Vec<i32>, status_fd: i32, placed: &std::cell::Cell<bool>, standins: &[(i32, i32)]) -> Result<i32, String> {
        let p = &self.procs[i];
        let me = std::process::id() as i32;
        known[i] = me;
        if self.plan.setsid[i] {
            crest_ptrace::husk::setsid().map_err(|e| format!("pid {}: starting its session: {e}", p.pid))?;
            // Before its children's husks, which inherit it.
            if let Some(tty) = self.ctty[i] {
                fd::take_controlling(tty).map_err(|e| format!("pid {}: {e}", p.pid))?;
            }
        }
        // Groups led by a process not created yet are joined from outside, later.
        if self.join_group(i, &known, standins)? {
            if let Some(tty) = self.foreground[i] {
                fd::set_foreground(tty).map_err(|e| format!("pid {}: {e}", p.pid))?;
            }
        }
        // Before the children's husks, which inherit them.
        self.premap.build(i, p, self.image_fds)?;
        // Groups of children whose leader had ended: made by stand-in leaders (with the saved
        // group id as their PID when PIDs are restored), ended once the children have joined.
        let mut standins: Vec<(i32, i32)> = Vec::new();
        for &g in &self.plan.standins[i] {
            let pid = self.restore_pid.then_some(g);
            let made = crest_ptrace::husk::create_standin(pid).map_err(|e| format!("pid {}: making the process group {g} of its children, whose leader had ended: {e}", p.pid));
            match made {
                Ok(s) => standins.push((g, s)),
                Err(e) => {
                    standins.iter().for_each(|s| crest_ptrace::husk::end_standin(s.1));
                    return Err(e);
                }
            }
        }
        let made = self.make_children(i, &mut known, &standins);
        standins.iter().for_each(|s| crest_ptrace::husk::end_standin(s.1));
        made?;
        self.prepare_own(i, status_fd, placed, &known)
    }

    /// In the husk of process `i`: the husks of its children (and its zombies).
    fn make_children(&self, i: usize, known: &mut [i32], standins: &[(i32, i32)]) -> Result<(), String> {
        let p = &self.procs[i];
        let mut zombies = Vec::new();
        for &c in &self.plan.children[i] {
            let child = &self.procs[c];
            if let Some(status) = child.exit_status {
                let k = known.to_vec();
                let z = crest_ptrace::husk::create_zombie(self.pid_for(c), status, || {
                    let _ = self.join_group(c, &k, standins);
                })
                .map_err(|e| format!("pid {}: creating its zombie child {}: {e}", p.pid, child.pid))?;
                known[c] = z;
                zombies.push(z);
            } else {
                let k = known.to_vec();
                let status = self.status[c];
                let prepare = move |fd| {
                    let placed = std::cell::Cell::new(false);
                    let pipe_fd = self.layouts[c].pipe_fd;
                    self.prepare(c, k, fd, &placed, standins).map_err(|e| (if placed.get() { pipe_fd } else { fd }, e))
                };
                // A child that shares this process's descriptor table is made sharing it, and
                // prepared before this process fills the table.
                let made = if child.files_shared {
                    crest_ptrace::husk::create_sharing_files(self.pid_for(c), status, self.parked, prepare)
                } else {
                    crest_ptrace::husk::create(self.pid_for(c), status, prepare)
                }
                .map_err(|e| format!("pid {}: creating the process of its child {}: {e}", p.pid, child.pid))?;
                known[c] = made;
            }
        }
        for z in zombies {
            crest_ptrace::husk::await_zombie(z).map_err(|e| format!("pid {}: waiting for its zombie child {z}: {e}", p.pid))?;
        }
        Ok(())
    }

    fn prepare_own(&self, i: usize, status_fd: i32, placed: &std::cell::Cell<bool>, known: &[i32]) -> Result<i32, String> {
        let p = &self.procs[i];
        let l = &self.layouts[i];
        // Everything the restore itself uses goes to its planned number above the saved
        // descriptors. Each comes from a parked descriptor, above every planned number, so
        // that none is written over before it is copied: one `dup2` each.
        let opened = |path: &str, write: bool| self.opened.get(&(path.to_string(), write)).copied().ok_or_else(|| format!("pid {}: {path} was not opened for it", p.pid));
        let mut moves: Vec<(i32, i32)> = vec![(status_fd, l.pipe_fd), (self.image_fds[0], l.fds.image)]; // (parked, final)
        moves.extend(self.image_fds[1..].iter().copied().zip(l.fds.parents.iter().copied()));
        for (path, write) in &l.files {
            moves.push((opened(path, *write)?, l.fds.files[path]));
        }
        moves.extend(l.shared.iter().map(|(id, _)| (self.memfds[id], l.fds.shared[id])));
        moves.extend(l.deleted.iter().map(|id| (self.deleted[id], l.fds.deleted[id])));
        // An empty path: the executable's contents come from the image (it is gone or changed).
        if !p.exe.is_empty() {
            moves.push((opened(&p.exe, false)?, l.exe_fd));
        }
        if let Some(&(src, _)) = moves.iter().find(|m| m.0 < self.parked) {
            return Err(format!("pid {}: descriptor {src} is not parked above {}", p.pid, self.parked));
        }
        let table = crest_ptrace::husk::fd_table().ok_or("the restore's descriptors are placed only inside a restore process")?;
        for (src, dst) in moves {
            table.dup2(src, dst).map_err(|e| format!("placing descriptor {dst}: {e}"))?;
            placed.set(true);
        }
        // A deleted working directory: the one made again for the image, entered through its
        // parked descriptor (closed with the others once the descriptors are in place).
        let cwd = match &p.cwd_deleted {
            Some((id, _)) => {
                let dir = self.deleted.get(id).ok_or_else(|| format!("pid {}: its deleted working directory {} was not made again", p.pid, p.cwd))?;
                fd::enter_deleted_cwd(&p.cwd, *dir).map_err(|e| format!("pid {}: {e}", p.pid))?;
                None
            }
            None => Some(p.cwd.as_str()),
        };
        let pids = self.procs.iter().zip(known).filter(|(_, &n)| n != 0).map(|(q, &n)| (q.pid, n)).collect();
        // The descriptors of a table shared with the parent are its owner's to restore; the
        // owner keeps the restore's own descriptors of every process sharing it.
        let keep: Vec<i32> = (0..self.procs.len()).filter(|&j| self.table[j] == i).flat_map(|j| self.layouts[j].aux.iter().copied()).collect();
        // The descriptors and what is set inside the husk, in their declared order.
        process::prepare_all(&mut process::HuskCx { p, cwd, keep: &keep, owns_files: self.table[i] == i, shared_files: self.shared_files, parked: self.parked, pids })?;
        // The batch area its fill runs from, where the fill looks for it (else the fill maps
        // one itself).
        if !trap_used(p) {
            if let Some(at) = own_batch_place(p, &self.premap.placed(i, p)) {
                crest_ptrace::husk::map_batch_area(at);
            }
        }
        Ok(l.pipe_fd)
    }
}

/// Restores the image's processes; the topmost are children of the caller (which may have
/// threads: [`crest_ptrace::husk::create`]). The files the image needs are not checked here: run
/// [`crate::preflight`] first, as [`crate::restart`] does.
pub fn restore(img: &ImageFile, opts: &RestoreOptions) -> Result<Restored, RestoreError> {
    restore_chain(std::slice::from_ref(img), opts)
}

/// [`restore`] for an incremental image: `chain` is the image, then its parents, opened and
/// checked ([`crest_image::chain::Chain::open`]); each page run is read from the image that
/// holds it, where it lies.
pub fn restore_chain(chain: &[ImageFile], opts: &RestoreOptions) -> Result<Restored, RestoreError> {
    let img = chain.first().ok_or_else(|| RestoreError::Refused("no image to restore".into()))?;
    let started = std::time::Instant::now();
    let mut steps = Vec::new();
    let step = |name: &'static str, steps: &mut Vec<(&'static str, std::time::Duration)>| {
        let since: std::time::Duration = steps.iter().map(|(_, d)| *d).sum();
        steps.push((name, started.elapsed().saturating_sub(since)));
    };
    let image = &img.image;
    let procs = image.processes.as_slice();
    let own_maps = crest_proc::parse_smaps(&crest_proc::read(std::process::id() as i32, "maps")?)?;
    let here = vdso::layout(&own_maps);
    // An image whose processes all had unmapped their vDSO areas records none.
    if here != image.vdso_layout && !image.vdso_layout.is_empty() {
        return Err(RestoreError::Refused(format!(
            "this kernel's vDSO layout {here:?} differs from the image's {:?} (checkpointed on {}): restart on a kernel like the one the checkpoint was taken on",
            image.vdso_layout, image.kernel
        )));
    }
    let (my_pgid, my_sid) = crest_ptrace::husk::group_and_session();
    // A session whose controlling terminal is in the image starts again around its leader.
    let tty_sessions: Vec<i32> = fd::controlling(procs).iter().map(|c| c.1).collect();
    let plan = Plan::keeping(procs, opts.restore_pgid, opts.restore_sid, my_pgid, my_sid, &tty_sessions)?;
    if plan.top.iter().any(|&t| procs[t].exit_status.is_some()) {
        return Err(RestoreError::Refused("the image's topmost process is a zombie".into()));
    }
    let live: Vec<usize> = (0..procs.len()).filter(|&i| procs[i].exit_status.is_none()).collect();
    let max_fd = procs.iter().flat_map(|p| &p.fds).map(|f| f.fd).max().unwrap_or(2).max(2);
    // Pages mapped from the image: only an image that cannot change under the mappings.
    let not_mapped = if opts.map_image && opts.lazy.is_none() { chain.iter().find_map(|i| crate::mapping::mappable(&i.file).err()) } else { None };
    let map_image = opts.map_image && opts.lazy.is_none() && not_mapped.is_none();
    // Processes sharing one descriptor table (a process and the children that share its
    // table, theirs, ...) each have the restore's own descriptors at numbers of their own in it.
    let table = table_owners(procs);
    let mut next_aux = vec![max_fd + 1; procs.len()];
    let mut layouts: Vec<Layout> = Vec::with_capacity(procs.len());
    for (i, p) in procs.iter().enumerate() {
        let l = Layout::new(p, next_aux[table[i]], chain.len() - 1);
        next_aux[table[i]] += l.aux.len() as i32;
        layouts.push(l);
    }
    for l in &mut layouts {
        l.fds.map_image = map_image;
        l.fds.lazy = opts.lazy.is_some();
    }
    let parked = next_aux.iter().copied().max().unwrap_or(max_fd + 1) + 1;
    // Mappings that share pages between a parent and its children are built before the forks.
    let mut premap = Premap::plan(procs, &plan);
    for (i, l) in layouts.iter_mut().enumerate() {
        l.fds.in_place = premap.vmas[i].iter().map(|&k| procs[i].vmas[k].start).collect();
    }

    // Objects shared across the processes are opened here, once, and inherited by every husk.
    let records: Vec<&[crest_image::FdRecord]> = live.iter().map(|&i| procs[i].fds.as_slice()).collect();
    let mut memfds_owned = Vec::new();
    let mut memfds = std::collections::HashMap::new();
    for l in &layouts {
        for &(id, size) in &l.shared {
            if memfds.contains_key(&id) {
                continue;
            }
            let size = layouts.iter().flat_map(|l| &l.shared).filter(|s| s.0 == id).map(|s| s.1).max().unwrap_or(size);
            let f = crest_ptrace::sys::memfd("crest-shared", size).map_err(|e| RestoreError::Refused(format!("creating shared memory: {e}")))?;
            let n = crest_ptrace::sys::dup_above(f.as_raw_fd(), parked).map_err(|e| RestoreError::Refused(format!("moving a descriptor: {e}")))?;
            memfds.insert(id, n.as_raw_fd());
            memfds_owned.push(n);
        }
    }
    let memfd_list: Vec<(u64, i32)> = memfds.iter().map(|(&id, &fd)| (id, fd)).collect();
    // Files deleted while open or mapped, recreated once for the image.
    let mut deleted_owned = Vec::new();
    let mut deleted = std::collections::HashMap::new();
    // Nodes other than regular files deleted while in use (directories, FIFOs, ...) too.
    let mut made = fd::recreate_deleted(procs).map_err(RestoreError::Refused)?;
    made.extend(fd::recreate_ghosts(procs).map_err(RestoreError::Refused)?);
    for (id, f) in made {
        let n = crest_ptrace::sys::dup_above(f.as_raw_fd(), parked).map_err(|e| RestoreError::Refused(format!("moving a descriptor: {e}")))?;
        deleted.insert(id, n.as_raw_fd());
        deleted_owned.push(n);
    }
    let deleted_list: Vec<(u64, i32)> = deleted.iter().map(|(&id, &fd)| (id, fd)).collect();
    // The files the processes map, and their executables, opened once here for all of them.
    let mut opened_owned = Vec::new();
    let mut opened = std::collections::HashMap::new();
    for &i in &live {
        let exe = (!procs[i].exe.is_empty()).then(|| (procs[i].exe.clone(), false));
        for (path, write) in layouts[i].files.iter().cloned().chain(exe) {
            if opened.contains_key(&(path.clone(), write)) {
                continue;
            }
            let f = std::fs::OpenOptions::new().read(true).write(write).open(&path).map_err(|e| {
                RestoreError::Refused(if Some(&path) == Some(&procs[i].exe) && !write { format!("opening the executable {path}: {e}") } else { format!("opening {path} to map it: {e}") })
            })?;
            let n = crest_ptrace::sys::dup_above(f.as_raw_fd(), parked).map_err(|e| RestoreError::Refused(format!("moving a descriptor: {e}")))?;
            opened.insert((path, write), n.as_raw_fd());
            opened_owned.push(n);
        }
    }
    // Pidfds of the image's processes are made again on them in the husks (see fd::pids_kept).
    fd::pids_kept(opts.restore_pid);
    let shared = fd::prepare_shared(&records, parked, &memfd_list, &deleted_list).map_err(RestoreError::Refused)?;
    crest_kinds::image::restore_all(image)?;
    let image_fds_owned =
        chain.iter().map(|i| crest_ptrace::sys::dup_above(i.file.as_raw_fd(), parked).map_err(|e| RestoreError::Refused(format!("moving a descriptor: {e}")))).collect::<Result<Vec<_>, _>>()?;
    let image_fds: Vec<i32> = image_fds_owned.iter().map(|f| f.as_raw_fd()).collect();
    // The restorer's own copies, for the compressed runs and the helper's share.
    let files = chain.iter().map(|i| i.file.try_clone()).collect::<Result<Vec<_>, _>>().map_err(|e| RestoreError::Refused(format!("duplicating a descriptor of the image: {e}")))?;
    let mut status = vec![-1; procs.len()];
    let mut readers: Vec<Option<std::os::fd::OwnedFd>> = (0..procs.len()).map(|_| None).collect();
    let mut writers = Vec::new();
    for &i in &live {
        let (r, w) = crest_ptrace::husk::status_pipe()?;
        let n = crest_ptrace::sys::dup_above(w.as_raw_fd(), parked).map_err(|e| RestoreError::Refused(format!("moving a descriptor: {e}")))?;
        drop(w);
        status[i] = n.as_raw_fd();
        writers.push(n);
        readers[i] = Some(r);
    }
    if opts.restore_pid {
        for p in procs {
            wait_for_zombie(p.pid);
        }
    }
    // Controlling terminals in the image: the session leader takes it, the foreground group's
    // processes set their group in the foreground once they are in it.
    let mut ctty = vec![None; procs.len()];
    let mut foreground = vec![None; procs.len()];
    for (index, session, fg) in fd::controlling(procs) {
        let Some(tty) = shared.parked((crest_kinds::ObjId::pty(index), false)) else { continue };
        let Some(leader) = live.iter().copied().find(|&i| procs[i].pid == session && plan.setsid[i]) else { continue };
        ctty[leader] = Some(tty);
        for &i in &live {
            if fg != 0 && procs[i].sid == session && procs[i].pgid == fg {
                foreground[i] = Some(tty);
            }
        }
    }
    let notes = shared.notes().to_vec();
    premap.reserve(procs, &own_maps.iter().map(|m| (m.start, m.end)).collect::<Vec<_>>())?;
    let ctx = Ctx {
        procs,
        plan: &plan,
        layouts: &layouts,
        table: &table,
        shared_files: &shared.by_file,
        memfds: &memfds,
        deleted: &deleted,
        opened: &opened,
        status: &status,
        image_fds: &image_fds,
        parked,
        restore_pid: opts.restore_pid,
        ctty: &ctty,
        foreground: &foreground,
        premap: &premap,
    };

    // A deep tree is forked from memory with a short history (see `fresh_memory`); without it
    // (a caller with threads, or a failure) the husks are made all the same, only more slowly.
    // What every husk inherits of this process and would otherwise read for itself.
    crest_kinds::note_inherited();
    let fresh = if depth(&plan) > crest_ptrace::husk::FRESH_EVERY { crest_ptrace::husk::fresh_memory(parked, &premap.ranges()).ok().flatten() } else { None };
    // The topmost husks; each creates the husks of its children.
    let mut top_pids: Vec<i32> = Vec::new();
    let mut spawn_err = None;
    for &t in &plan.top {
        let known = vec![0; procs.len()];
        let ctx = &ctx;
        match crest_ptrace::husk::create(ctx.pid_for(t), status[t], move |fd| {
            let placed = std::cell::Cell::new(false);
            ctx.prepare(t, known, fd, &placed, &[]).map_err(|e| (if placed.get() { ctx.layouts[t].pipe_fd } else { fd }, e))
        }) {
            Ok(pid) => top_pids.push(pid),
            Err(e) => {
                spawn_err = Some(e);
                break;
            }
        }
    }
    drop(writers);
    let mut new_pids = vec![0; procs.len()];
    let mut first_err: Option<RestoreError> = spawn_err.map(Into::into);
    for &i in &live {
        let Some(r) = readers[i].take() else { continue };
        let direct = plan.top.iter().position(|&t| t == i).and_then(|k| top_pids.get(k).copied()).unwrap_or(0);
        match crest_ptrace::husk::await_ready(r, direct) {
            Ok(pid) => new_pids[i] = pid,
            Err(e) => {
                first_err.get_or_insert(e.into());
            }
        }
    }
    if let Some(e) = first_err {
        let started: Vec<i32> = new_pids.iter().copied().filter(|&p| p != 0).chain(top_pids.iter().copied()).collect();
        kill_all(&started, &top_pids);
        return Err(e);
    }
    let all_pids: Vec<i32> = live.iter().map(|&i| new_pids[i]).collect();
    step("husks", &mut steps);
    // Every husk has its own copies by now.
    drop(shared);
    drop(memfds_owned);
    drop(deleted_owned);
    drop(opened_owned);
    drop(image_fds_owned);
    drop(fresh);

    // Each husk is seized, filled, finished and let go by one worker thread (ptrace requests
    // must come from the thread that seized, and the threads created in a husk are traced by
    // that thread too), so the processes of a tree are filled at once; the letting go is
    // ordered across the workers, children first.
    let workers = workers_for(live.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let new_pids_ref = &new_pids;
    let work = Work { procs, plan: &plan, layouts: &layouts, live: &live, new_pids: new_pids_ref, images: &files, opts, next: &next, failed: &failed, premap: &premap };
    let outcome = std::thread::scope(|s| -> Result<Totals, RestoreError> {
        // Pages mapped from the image leave the husks little to do: the check of the checksums
        // is what the restart waits for, on every core, reading the page cache in place.
        // Copied pages keep one core busy; the check takes the other.
        // Pages given on demand are checked as they are given.
        let in_place: Vec<(i32, u64)> = procs.iter().zip(&layouts).flat_map(|(p, l)| l.fds.in_place.iter().map(move |&a| (p.pid, a))).collect();
        let verifier = opts.verify.then(|| {
            s.spawn(move || match (map_image, opts.lazy.is_some()) {
                (_, true) => crest_kinds::lazy::verify_eager(img, &in_place).map(|()| crate::mapping::Windows::default()),
                (true, _) => crate::mapping::verify_in_place(chain, std::thread::available_parallelism().map_or(2, |n| n.get())),
                _ if chain.len() > 1 => crest_image::chain::verify_checksums(chain, 1).map(|()| crate::mapping::Windows::default()),
                _ => img.verify_checksums(1).map(|()| crate::mapping::Windows::default()),
            })
        });
        let (reply_tx, replies) = std::sync::mpsc::channel::<Reply>();
        let mut orders = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = std::sync::mpsc::channel::<Order>();
            let reply = reply_tx.clone();
            let work = &work;
            s.spawn(move || {
                // A worker that panics says so rather than leave the others waiting for it.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work.run(w, &rx, &reply))).is_err() {
                    let _ = reply.send(Reply::Done(Err(RestoreError::Refused("a restore thread panicked".into()))));
                }
            });
            orders.push(tx);
        }
        drop(reply_tx);
        // Which worker holds each husk (by index in `live`).
        let mut owner = vec![usize::MAX; live.len()];
        let mut totals = Totals { exe_set: true, ..Default::default() };
        let mut first_err: Option<RestoreError> = None;
        for _ in 0..live.len() {
            match replies.recv() {
                Ok(Reply::Filled { k, worker, result }) => match result {
                    Ok((filled, calls, stops, exe_set)) => {
                        owner[k] = worker;
                        totals.page_bytes += filled.bytes;
                        totals.mapped += filled.mapped;
                        totals.calls += calls;
                        totals.stops += stops;
                        totals.exe_set &= exe_set;
                    }
                    Err(e) => {
                        owner[k] = worker;
                        first_err.get_or_insert(e);
                    }
                },
                Ok(Reply::Skipped) => {}
                Ok(Reply::Done(_)) | Err(_) => {
                    first_err.get_or_insert(RestoreError::Refused("a restore thread ended early".into()));
                    break;
                }
            }
        }
        let verified = match verifier {
            Some(v) => v.join().unwrap_or_else(|_| Err(crest_image::ImageError::Invalid("page verifier panicked".into()))),
            None => Ok(crate::mapping::Windows::default()),
        };
        if let Some(e) = first_err {
            return Err(e);
        }
        let windows = verified?;
        step("filled", &mut steps);
        // Registers and masks of every thread, each by the worker that holds it.
        for tx in &orders {
            let _ = tx.send(Order::Finish);
        }
        for _ in 0..workers {
            match replies.recv() {
                Ok(Reply::Done(r)) => r?,
                _ => return Err(RestoreError::Refused("a restore thread ended early".into())),
            }
        }
        crest_kinds::image::finish_all(image)?;
        // Datagrams from addresses the restored sockets hold again.
        let restored: Vec<(i32, &[crest_image::FdRecord])> = live.iter().map(|&i| (new_pids[i], procs[i].fds.as_slice())).collect();
        fd::refill_deferred(&restored).map_err(RestoreError::Refused)?;
        if let Some(Barrier(wait)) = &opts.barrier {
            wait().map_err(RestoreError::Refused)?;
        }
        // Every connection's two ends exist now, when both are in the image. The lock a
        // checkpoint with --kill left on the connections goes first, so that the window probe
        // each sends on leaving repair mode passes; a restart that fails before this point
        // leaves it, for another restart to take the connections up.
        if let Some(lock) = &image.network_lock {
            fd::netlock::remove(lock).map_err(RestoreError::Refused)?;
        }
        let connections: Vec<(&[u8], &[u8])> = live
            .iter()
            .flat_map(|&i| &procs[i].fds)
            .filter_map(|r| match &r.kind {
                crest_image::FdKind::Inet { local, peer, tcp: Some(_), .. } => Some((local.as_slice(), peer.as_slice())),
                _ => None,
            })
            .collect();
        fd::netlock::remove_stale(&connections).map_err(RestoreError::Refused)?;
        for &i in &live {
            fd::fins_restored(new_pids[i], &procs[i].fds).map_err(RestoreError::Refused)?;
        }
        for &i in &live {
            fd::leave_repair_restored(new_pids[i], &procs[i].fds).map_err(RestoreError::Refused)?;
            fd::settle_restored(new_pids[i], &procs[i].fds).map_err(RestoreError::Refused)?;
            fd::settle_inotify(new_pids[i], &procs[i].fds).map_err(RestoreError::Refused)?;
            fd::settle_fanotify(new_pids[i], &procs[i].fds).map_err(RestoreError::Refused)?;
        }
        step("finished", &mut steps);
        // Children first, so that no parent runs on while a child of it is still held.
        for k in (0..live.len()).rev() {
            let _ = orders[owner[k]].send(Order::Detach(k));
            match replies.recv() {
                Ok(Reply::Done(r)) => r?,
                _ => return Err(RestoreError::Refused("a restore thread ended early".into())),
            }
        }
        step("released", &mut steps);
        windows.unmap_later();
        if let Some(lazy) = &opts.lazy {
            lazy.released(&all_pids);
        }
        Ok(totals)
        // The workers end when their orders are dropped; a husk still held then is killed
        // (PTRACE_O_EXITKILL) and, below, reaped.
    });
    let Totals { page_bytes, mapped: mapped_bytes, calls: remote_syscalls, stops: remote_stops, exe_set } = match outcome {
        Ok(t) => t,
        Err(e) => {
            kill_all(&all_pids, &top_pids);
            return Err(e);
        }
    };
    let pid = top_pids.first().copied().unwrap_or(0);
    let pids = procs.iter().zip(&new_pids).filter(|(_, &n)| n != 0).map(|(p, &n)| (p.pid, n)).collect();
    Ok(Restored { pid, top: top_pids, pids, page_bytes, mapped_bytes, remote_syscalls, remote_stops, exe_set, not_mapped, notes, steps, lazy: None, stream: None })
}

/// Threads that fill husks at once, at most: four per core, up to this many.
const MAX_WORKERS: usize = 32;

/// How many workers fill the husks of a restart: four per core (a fill is mostly waiting for
/// a husk to run its system calls and stop: with one worker per core the cores stood idle
/// half of the time), at most [`MAX_WORKERS`]. The
/// husks are independent while they are filled: each worker makes syscalls inside the husks it
/// holds only, in their own memory and descriptor tables; what several share (the image, read
/// with `pread`, and the pages a parent and child share, which each moves with its own page
/// tables) is not changed by a fill.
fn workers_for(husks: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    husks.clamp(1, (cores * 4).clamp(1, MAX_WORKERS))
}

/// Sums over the processes.
#[derive(Default)]
struct Totals {
    page_bytes: u64,
    mapped: u64,
    calls: u64,
    stops: u64,
    exe_set: bool,
}

/// What the restoring thread asks of a worker once the husks are filled.
enum Order {
    /// Registers, masks and scheduling of every thread of every husk it holds.
    Finish,
    /// Let husk `k` (index in `live`) and its threads go.
    Detach(usize),
}

/// What a worker reports.
enum Reply {
    /// Husk `k` (index in `live`) is seized and filled by `worker`, or failed.
    Filled { k: usize, worker: usize, result: Result<(memory::Filled, u64, u64, bool), RestoreError> },
    /// An index taken after another husk failed: not filled.
    Skipped,
    /// An order was carried out.
    Done(Result<(), RestoreError>),
}

/// What the workers share.
struct Work<'a> {
    procs: &'a [Process],
    plan: &'a Plan,
    layouts: &'a [Layout],
    live: &'a [usize],
    new_pids: &'a [i32],
    /// The image, then the parents of an incremental one.
    images: &'a [std::fs::File],
    opts: &'a RestoreOptions,
    next: &'a std::sync::atomic::AtomicUsize,
    failed: &'a std::sync::atomic::AtomicBool,
    premap: &'a Premap,
}

impl Work<'_> {
    /// One worker: seizes and fills husks until none is left, then carries out the orders.
    fn run(&self, worker: usize, orders: &std::sync::mpsc::Receiver<Order>, reply: &std::sync::mpsc::Sender<Reply>) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut held: Vec<(usize, crest_ptrace::Tracee, Vec<crest_ptrace::Tracee>)> = Vec::new();
        loop {
            let k = self.next.fetch_add(1, Relaxed);
            if k >= self.live.len() {
                break;
            }
            if self.failed.load(Relaxed) {
                let _ = reply.send(Reply::Skipped);
                continue;
            }
            let i = self.live[k];
            let join = match self.plan.group[i] {
                Group::Leader(l) => Some(self.new_pids[l]),
                _ => None,
            };
            let result = crest_ptrace::husk::seize(self.new_pids[i]).map_err(RestoreError::from).and_then(|husk| {
                let l = &self.layouts[i];
                let placed = self.premap.placed(i, &self.procs[i]);
                let r = fill(&husk, &self.procs[i], self.images, &l.fds, l.exe_fd, &l.aux, self.opts, join, &placed);
                // Held even when the fill failed: the husk dies with this thread's hold on it.
                match r {
                    Ok((filled, calls, stops, exe_set, threads)) => {
                        held.push((k, husk, threads));
                        Ok((filled, calls, stops, exe_set))
                    }
                    Err(e) => {
                        held.push((k, husk, Vec::new()));
                        Err(e)
                    }
                }
            });
            if result.is_err() {
                self.failed.store(true, Relaxed);
            }
            if reply.send(Reply::Filled { k, worker, result }).is_err() {
                return;
            }
        }
        while let Ok(order) = orders.recv() {
            let done = match order {
                Order::Finish => held.iter().try_for_each(|(k, husk, threads)| {
                    let all: Vec<&crest_ptrace::Tracee> = std::iter::once(husk).chain(threads.iter()).collect();
                    thread::finish(&all, &self.procs[self.live[*k]]).map_err(RestoreError::from)
                }),
                Order::Detach(k) => match held.iter().position(|h| h.0 == k) {
                    Some(at) => {
                        let (_, husk, threads) = held.swap_remove(at);
                        let p = &self.procs[self.live[k]];
                        (|| -> Result<(), RestoreError> {
                            // A process that was stopped by job control stops again as it is
                            // let go, before it runs an instruction: the signal waits, pending,
                            // until it is detached. Its parent is told, as when it stopped.
                            if p.attrs.stop_signal != 0 {
                                crest_ptrace::sys::kill(husk.tid, stop_signal(p, husk.tid))?;
                            }
                            for t in threads {
                                t.detach(0)?;
                            }
                            husk.detach(0)?;
                            Ok(())
                        })()
                    }
                    None => Err(RestoreError::Refused(format!("no restore thread holds process {k}"))),
                },
            };
            if reply.send(Reply::Done(done)).is_err() {
                return;
            }
        }
    }
}

/// The signal that stops the restored process `pid` (saved as `p`) again: the one that had
/// stopped it, so that its parent's `waitpid` tells the same, when that one stops it for sure
/// (its action is the default, some thread does not block it and, for `SIGTSTP`, `SIGTTIN` and
/// `SIGTTOU`, which the kernel discards there, its process group is not orphaned); else
/// `SIGSTOP`.
fn stop_signal(p: &Process, pid: i32) -> i32 {
    let sig = p.attrs.stop_signal as i32;
    if !matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) {
        return libc::SIGSTOP;
    }
    let default = !p.sigactions.iter().any(|a| a.signo as i32 == sig && a.handler != 0);
    let unblocked = p.threads.iter().any(|t| t.sigmask & (1u64 << (sig - 1)) == 0);
    if !default || !unblocked || orphaned_group(pid) {
        libc::SIGSTOP
    } else {
        sig
    }
}

/// Whether the process group of `pid` is orphaned: no member has a parent in another group of
/// the same session (the parent being init aside).
fn orphaned_group(pid: i32) -> bool {
    let stat = |p: i32| crest_proc::read(p, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok());
    let Some(me) = stat(pid) else { return true };
    let Ok(all) = crest_proc::all_pids() else { return true };
    !all.into_iter()
        .filter_map(|q| stat(q).filter(|s| s.pgrp == me.pgrp && !matches!(s.state, 'Z' | 'X')))
        .any(|q| q.ppid > 1 && stat(q.ppid).is_some_and(|parent| parent.pgrp != me.pgrp && parent.session == me.session))
}

/// How many levels the tree of husks has.
fn depth(plan: &Plan) -> usize {
    // Parents come before their children.
    let mut level = vec![1; plan.children.len()];
    for i in 0..plan.children.len() {
        for &c in &plan.children[i] {
            level[c] = level[i] + 1;
        }
    }
    level.into_iter().max().unwrap_or(0)
}

/// Kills every husk of `pids` (children first) and reaps the caller's own (`top`).
fn kill_all(pids: &[i32], top: &[i32]) {
    for &p in pids.iter().rev() {
        let _ = crest_ptrace::sys::kill(p, libc::SIGKILL);
    }
    for &p in top {
        let _ = crest_ptrace::sys::wait_child(p);
    }
}

/// A free range of `len` bytes in the saved layout that also avoids `avoid`.
fn find_gap(vmas: &[Vma], avoid: &[(u64, u64)], len: u64) -> Option<u64> {
    let busy = |a: u64| vmas.iter().map(|v| (v.start, v.end)).chain(avoid.iter().copied()).any(|(s, e)| a < e && s < a + len);
    std::iter::once(0x10_0000u64).chain(vmas.iter().map(|v| v.end)).chain(avoid.iter().map(|a| a.1)).filter(|&a| a + len <= crest_image::validate::USER_ADDR_END).find(|&a| !busy(a))
}

/// Whether the process handles `SIGTRAP` or has one pending: a batch ends on `int3`, whose
/// SIGTRAP the kernel forces through, which would reset a handler or an ignored disposition of
/// SIGTRAP (set in the husk already) and take the place of a pending one. Such a process has
/// its syscalls made one by one.
fn trap_used(p: &Process) -> bool {
    let is_trap = |si: &Vec<u8>| si.get(..4).is_some_and(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) == libc::SIGTRAP);
    p.sigactions.iter().any(|a| a.signo == libc::SIGTRAP as u32 && a.handler != 0) || p.shared_pending.iter().chain(p.threads.iter().flat_map(|t| &t.pending)).any(is_trap)
}

/// Where a husk maps its batch area itself ([`crest_ptrace::husk::map_batch_area`]): a range
/// the saved process does not use and the mappings built before the forks do not take (`placed`,
/// as [`Premap::placed`] gives them). The husk and its fill compute it alike.
fn own_batch_place(p: &Process, placed: &[(u64, u64, u64)]) -> Option<u64> {
    let taken: Vec<(u64, u64)> = placed.iter().map(|&(at, len, _)| (at, at + len)).collect();
    find_gap(&p.vmas, &taken, crest_ptrace::BATCH_LEN)
}

/// Turns the husk's memory into the saved process's. Returns (pages, syscalls, stops waited
/// for, exe set, threads).
#[allow(clippy::type_complexity)]
#[allow(clippy::too_many_arguments)]
fn fill(
    husk: &crest_ptrace::Tracee,
    p: &Process,
    images: &[std::fs::File],
    fds: &MapFds,
    exe_fd: i32,
    aux: &[i32],
    opts: &RestoreOptions,
    join: Option<i32>,
    placed: &[(u64, u64, u64)],
) -> Result<(memory::Filled, u64, u64, bool, Vec<crest_ptrace::Tracee>), RestoreError> {
    let pid = husk.tid;
    let maps = crest_proc::parse_smaps(&crest_proc::read(pid, "maps")?)?;
    let areas = vdso::areas(&maps);
    let (_, vs, ve) = *areas.iter().find(|a| a.0 == SpecialArea::Vdso).ok_or_else(|| RestoreError::Refused("this kernel gives processes no vDSO".into()))?;
    let regs = husk.regs()?;
    let mut remote = Remote::new(husk, find_syscall_insn(pid, vs, ve)?, regs);
    let trap_used = trap_used(p);
    // The mappings are made and filled by syscalls run in one go from an area of their own,
    // mapped first, where neither the husk's memory nor the saved process's lies: the clearing
    // of the husk's memory and the moves below run in that one go too (one stop of the husk
    // instead of two per call).
    let mut here: Vec<(u64, u64)> = areas.iter().map(|a| (a.1, a.2)).collect();
    here.extend(placed.iter().map(|&(at, len, _)| (at, at + len)));
    let busy_now: Vec<(u64, u64)> = maps.iter().map(|m| (m.start, m.end)).chain(here.iter().copied()).collect();
    // The one the husk mapped for itself, when it is there (two stops fewer), else one mapped
    // now.
    let own = own_batch_place(p, placed)
        .filter(|&at| !trap_used && maps.iter().any(|m| m.start == at && m.end == at + 4096) && maps.iter().any(|m| m.start == at + 4096 && m.end == at + crest_ptrace::BATCH_LEN));
    let area = match own {
        Some(at) if remote.adopt_batch(at)? => at,
        _ => {
            let area = find_gap(&p.vmas, &busy_now, crest_ptrace::BATCH_LEN).ok_or_else(|| RestoreError::Refused("no free address range for the batch area".into()))?;
            if !trap_used {
                remote.map_batch_protect_queued(area)?;
            }
            area
        }
    };
    if let Some((addr, len, sig)) = husk.rseq()? {
        remote.queue("unregistering the restore process's rseq", libc::SYS_rseq, &[addr, u64::from(len), RSEQ_FLAG_UNREGISTER, u64::from(sig)]);
    }
    remote.queue("clearing the parent-death signal", libc::SYS_prctl, &[PR_SET_PDEATHSIG, 0]);
    if let Some(g) = join {
        // The group's leader was created after this process: it joins now.
        let st = crest_proc::parse_stat(&crest_proc::read(pid, "stat")?)?;
        if st.pgrp != g {
            remote.queue(format!("pid {}: joining process group {g}", p.pid), libc::SYS_setpgid, &[0, g as u64]);
        }
    }
    // Unmap everything of the husk but the special areas, the batch area and the mappings
    // built before the forks (`placed`): one call for all the areas between two special ones
    // (the holes between them unmapped too, which is harmless), cut around the mappings kept.
    let mut keep: Vec<(u64, u64)> = placed.iter().map(|&(at, len, _)| (at, len)).collect();
    keep.push((area, crest_ptrace::BATCH_LEN));
    // In address order, as the cutting takes them.
    keep.sort_unstable();
    let mut spans: Vec<(u64, u64)> = Vec::new();
    let mut joined = false;
    for m in &maps {
        if vdso::special(&m.name).is_some() {
            joined = false;
            continue;
        }
        match spans.last_mut() {
            Some(r) if joined => r.1 = m.end,
            _ => spans.push((m.start, m.end)),
        }
        joined = true;
    }
    let ranges: Vec<(u64, u64)> = spans.iter().flat_map(|&(s, e)| memory::subtract_ranges(&[(s, e - s)], &keep)).map(|(s, l)| (s, s + l)).collect();
    for (s, e) in ranges {
        remote.queue(format!("clearing the restore process's memory at {s:#x}"), libc::SYS_munmap, &[s, e - s]);
    }
    let span: u64 = areas.iter().map(|a| a.2 - a.1).sum();
    here.push((area, area + crest_ptrace::BATCH_LEN));
    let tmp = find_gap(&p.vmas, &here, span).ok_or_else(|| RestoreError::Refused("no free address range to move the vDSO through".into()))?;
    // A process that had unmapped its vDSO areas gets the husk's out of the way, unmapped last.
    let aside = if vdso::none_saved(&p.vmas) {
        Some(vdso::set_aside(&mut remote, &areas, tmp)?)
    } else {
        vdso::restore(&mut remote, &areas, &p.vmas, tmp)?;
        None
    };
    // The mappings built before the forks move into place with their pages (page tables move,
    // pages stay: what was shared with a parent or children stays shared).
    for &(at, len, to) in placed.iter().filter(|&&(at, _, to)| at != to) {
        remote.queue_expecting(
            format!("pid {}: moving mapping {to:#x}-{:#x} into place", p.pid, to + len),
            libc::SYS_mremap,
            &[at, len, len, (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64, to],
            to,
        );
    }
    // Nor where the husk's vDSO areas were set aside.
    let mut taken: Vec<(u64, u64)> = aside.iter().flatten().map(|a| (a.1, a.2)).collect();
    taken.push((area, area + crest_ptrace::BATCH_LEN));
    let gap = find_gap(&p.vmas, &taken, crest_kinds::SCRATCH_LEN).ok_or_else(|| RestoreError::Refused("no free address range for a scratch page".into()))?;
    let scratch = Scratch::map(&mut remote, pid, gap)?;
    let no_progress = crest_kinds::progress::Progress::default();
    let progress = opts.progress.as_deref().unwrap_or(&no_progress);
    // The per-process kinds in their declared order (crest_kinds::process): memory, mm, the
    // leader's state, what the threads inherit, the other threads, then the rest.
    // Seccomp filters every thread has in common: in the leader before it creates the others.
    let shared_filters = attrs::common_seccomp(&p.threads);
    let leader_creds = thread::creds_of(p, &p.threads[0]);
    let mut busy = taken.clone();
    busy.push((gap, gap + crest_kinds::SCRATCH_LEN));
    let free_range = |len: u64| find_gap(&p.vmas, &busy, len);
    let mut cx = FillCx {
        remote: &mut remote,
        scratch: &scratch,
        pid,
        p,
        map_fds: fds,
        exe_fd,
        aux,
        images,
        progress,
        shared_filters,
        leader_creds,
        restore_pid: opts.restore_pid,
        free_range: &free_range,
        lazy: opts.lazy.as_deref(),
        filled: Default::default(),
        exe_set: false,
        threads: Vec::new(),
        syscalls: 0,
    };
    process::restore(process::sequence(process::Stage::Traced)?, &mut cx)?;
    let FillCx { filled, exe_set, threads, syscalls: count, .. } = cx;
    // The scratch page first, while the batch area is there to unmap it, in one go with what
    // is still queued.
    remote.queue("unmapping the scratch page", libc::SYS_munmap, &[scratch.addr, crest_kinds::SCRATCH_LEN]);
    remote.unmap_batch()?;
    if let Some(aside) = aside {
        vdso::unmap(&mut remote, &aside)?;
    }
    Ok((filled, remote.count + count, remote.waits, exe_set, threads))
}
