//! Lazy restore (`cr_restart --lazy`): the restored process runs before its pages are in.
//!
//! The private anonymous mappings whose pages are in the image ([`eligible`]) are made empty
//! by [`crate::memory::restore`] and registered here with a userfaultfd in missing mode,
//! created inside the husk by a remote `userfaultfd(2)` (so that it belongs to the husk's
//! memory) and taken into the restorer with `pidfd_getfd`; the husk's own descriptor is closed
//! before it runs. From then on a thread of the restorer serves every fault: the page run that
//! holds the page is read from the image, checked against its checksum (and decompressed, one
//! zstd frame per run), and given with `UFFDIO_COPY`; a page the image does not hold (never
//! written before the checkpoint) is given as zeros. Once the process is let go
//! ([`Pagers::released`]), threads at a lower priority (nice 10) fill in the rest in the
//! background, run after run; a page
//! already there (`EEXIST`) is left as it is. When every page is in, the ranges are
//! unregistered and the userfaultfd closed: the process runs on as if restored eagerly.
//!
//! A run that fails its checksum is never given: the process (and any child it forked since)
//! is killed, and [`Pagers::finish`] tells which page data was wrong.
//!
//! The process may change its memory meanwhile; the kernel tells (and waits until told):
//! `madvise(MADV_DONTNEED)` and `munmap` drop the pages not given yet, `mremap` moves them, and
//! a `fork` hands over a userfaultfd of the child, whose memory is served the same way from the
//! pages still pending at the fork. All of this is done under one lock, taken before the
//! kernel's messages are read: a page given after the process dropped it would bring back old
//! data. A copy attempted while a message waits fails with `EAGAIN` and is tried again once it
//! was read.
//!
//! The restorer must stay until every page is in ([`Pagers::finish`]): the process depends on
//! it until then.
//!
//! An image arriving as a stream ([`crest_image::stream`], `cr_restart --lazy -f -`) is served
//! the same way ([`Pagers::streamed`]): the runs are read from the file the stream is received
//! into, each once it has arrived; a fault on a page whose run has not arrived yet waits for
//! it. A stream that ends before a run that is still needed kills the processes as a run that
//! fails its checksum does.
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};

use crest_image::codec::RunReader;
use crest_image::stream::Arrival;
use crest_image::{vma_flags, PageRun, Vma, VmaBacking};
use crest_ptrace::wp::{self, Event, MissingPager};
use crest_ptrace::Remote;

use crate::KindError;

const PAGE: u64 = 4096;
/// Nice value of the background fill threads.
const FILL_NICE: i32 = 10;

/// Whether the pages of `v` are given on demand by a lazy restore: private anonymous memory
/// with pages in the image, not locked (`mlock` would fault every page in before it runs
/// anyway) nor droppable.
pub fn eligible(v: &Vma) -> bool {
    let not = vma_flags::SHARED | vma_flags::LOCKED | vma_flags::DROPPABLE | vma_flags::AIO;
    matches!(v.backing, VmaBacking::Anon) && v.flags & not == 0 && !v.pages.is_empty()
}

/// Which mappings of `image` a lazy restart reads before its processes run (the others are
/// given on demand): the ones not [`eligible`], and those built before the forks because a
/// child shares their pages (a superset of them: every mapping of a process whose child
/// inherited pages, and every mapping with inherited pages); and the stacks, which the
/// restore itself writes to (they are given on demand all the same). A stream sends their runs
/// first.
pub fn before_running(image: &crest_image::Image) -> impl Fn(i32, &Vma) -> bool {
    let parents: Vec<i32> = image.processes.iter().filter(|p| p.vmas.iter().any(|v| !v.inherited.is_empty())).map(|p| p.ppid).collect();
    move |pid, v| !eligible(v) || !v.inherited.is_empty() || parents.contains(&pid) || v.flags & (vma_flags::STACK | vma_flags::GROWSDOWN) != 0
}

/// Why a lazy restore cannot be done by this process on this system, if it cannot.
pub fn unavailable() -> Option<String> {
    let e = MissingPager::probe().err()?;
    let sysctl = std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").map(|v| format!(" (vm.unprivileged_userfaultfd = {})", v.trim())).unwrap_or_default();
    Some(match e.raw_os_error() {
        Some(libc::ENOSYS) => "this kernel has no userfaultfd (CONFIG_USERFAULTFD): restart without --lazy".to_string(),
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!("userfaultfd with the fork event is not permitted to this user{sysctl}: run cr_restart with CAP_SYS_PTRACE (as root), or restart without --lazy")
        }
        _ => format!("userfaultfd cannot be used ({e}){sysctl}: restart without --lazy"),
    })
}

/// Checks the checksum of every page run of `img` that is not given on demand (those are
/// checked as they are given): what a lazy restart checks before the processes run.
/// `in_place`: (saved PID, start) of the mappings built before the forks, with their pages,
/// which are not given on demand either.
pub fn verify_eager(img: &crest_image::ImageFile, in_place: &[(i32, u64)]) -> Result<(), crest_image::ImageError> {
    let mut reader = RunReader::new()?;
    for p in img.image.processes.iter().filter(|p| p.exit_status.is_none()) {
        for v in p.vmas.iter().filter(|v| !eligible(v) || in_place.contains(&(p.pid, v.start))) {
            for r in &v.pages {
                reader.check_stored(&img.file, p.pid, r)?;
            }
        }
    }
    Ok(())
}

/// Every page of one restart given on demand: one [`Pager`] per restored process.
#[derive(Default)]
pub struct Pagers {
    list: Mutex<Vec<Pager>>,
    /// The image is arriving as a stream: which runs are in.
    arrival: Option<Arc<Arrival>>,
}

impl std::fmt::Debug for Pagers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pagers({})", self.list.lock().map(|l| l.len()).unwrap_or(0))
    }
}

/// What a lazy restore did, once every page is in.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Bytes given on demand (faults), with the rest of their runs.
    pub on_demand: u64,
    /// Bytes given by the background fill.
    pub background: u64,
    /// Faults served.
    pub faults: u64,
    /// From the release until the last page was in.
    pub fill: std::time::Duration,
}

impl Pagers {
    /// A lazy restore of nothing yet.
    pub fn new() -> Arc<Pagers> {
        Arc::new(Pagers::default())
    }

    /// A lazy restore of an image arriving as a stream into the file the pages are read from:
    /// each run is read once `arrival` has it.
    pub fn streamed(arrival: Arc<Arrival>) -> Arc<Pagers> {
        Arc::new(Pagers { arrival: Some(arrival), ..Default::default() })
    }

    /// In the husk `pid` (saved as `saved`), its memory made by [`crate::memory::restore`]:
    /// registers the [`eligible`] mappings of `vmas` with a userfaultfd and serves their faults
    /// from `image` at once (the restore itself may touch them). Nothing to do without such
    /// mappings.
    /// The mappings at `in_place` were built before (with their pages) and are left alone.
    pub fn start(&self, remote: &mut Remote<'_>, pid: i32, saved: i32, vmas: &[Vma], in_place: &[u64], image: &std::fs::File) -> Result<(), KindError> {
        let lazy: Vec<&Vma> = vmas.iter().filter(|v| eligible(v) && !in_place.contains(&v.start)).collect();
        if lazy.is_empty() {
            return Ok(());
        }
        let what = format!("pid {saved}: lazy restore");
        let fd = remote.call(&format!("{what}: creating a userfaultfd in the process"), libc::SYS_userfaultfd, &[wp::MISSING_FLAGS])?;
        let taken = crest_ptrace::sys::pidfd_open(pid).and_then(|p| crest_ptrace::sys::pidfd_getfd(p.as_raw_fd(), fd as i32));
        remote.call(&format!("{what}: closing the process's own userfaultfd"), libc::SYS_close, &[fd])?;
        let pager =
            MissingPager::from_fd(taken.map_err(|e| KindError::io(format!("{what}: taking its userfaultfd"), e))?).map_err(|e| KindError::io(format!("{what}: setting up its userfaultfd"), e))?;
        let mut runs = Vec::new();
        let mut spans = BTreeMap::new();
        let mut ranges = Vec::new();
        for v in &lazy {
            pager.register(v.start, v.end - v.start).map_err(|e| KindError::io(format!("{what}: registering {:#x}-{:#x}", v.start, v.end), e))?;
            ranges.push((v.start, v.end - v.start));
            for r in &v.pages {
                spans.insert(r.vaddr, Span { pages: r.len / PAGE, run: runs.len() as u32, page: 0 });
                runs.push(*r);
            }
        }
        let total: u64 = runs.iter().map(|r| r.len).sum();
        let image = image.try_clone().map_err(|e| KindError::io(format!("{what}: the image"), e))?;
        let space = Space { pager, pid, tids: Vec::new(), pending: Pending { per_run: vec![1; runs.len()], spans, moved: false }, ranges };
        let inner = Arc::new(Inner { pid, saved, image, arrival: self.arrival.clone(), runs, total, state: Mutex::new(State { spaces: vec![space], ..Default::default() }), changed: Condvar::new() });
        let server = {
            let inner = inner.clone();
            std::thread::Builder::new().name("crest-lazy".into()).spawn(move || inner.serve()).map_err(|e| KindError::io(format!("{what}: starting its fault server"), e))?
        };
        self.list.lock().unwrap_or_else(|p| p.into_inner()).push(Pager { inner, threads: vec![server] });
        Ok(())
    }

    /// Whether any page is given on demand.
    pub fn is_empty(&self) -> bool {
        self.list.lock().map(|l| l.is_empty()).unwrap_or(true)
    }

    /// Bytes registered to be given on demand, over every process.
    pub fn total(&self) -> u64 {
        self.list.lock().map(|l| l.iter().map(|p| p.inner.total).sum()).unwrap_or(0)
    }

    /// The processes run (`restored`: every restored PID, which a failure does not kill unless
    /// it is the one whose page failed): the rest of the pages are filled in in the background.
    pub fn released(&self, restored: &[i32]) {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        let workers = (std::thread::available_parallelism().map_or(2, |n| n.get()) / list.len().max(1)).max(1);
        for p in list.iter_mut() {
            {
                let mut st = p.inner.lock();
                st.released = Some(std::time::Instant::now());
                st.restored = restored.to_vec();
            }
            p.inner.changed.notify_all();
            for _ in 0..workers {
                let inner = p.inner.clone();
                if let Ok(t) = std::thread::Builder::new().name("crest-lazy-fill".into()).spawn(move || inner.fill()) {
                    p.threads.push(t);
                }
            }
        }
    }

    /// Waits until every page is in (or its process is gone), then says what was done, or
    /// which page data failed its checksum and which process was killed for it.
    pub fn finish(&self) -> Result<Summary, String> {
        let list = std::mem::take(&mut *self.list.lock().unwrap_or_else(|p| p.into_inner()));
        let mut sum = Summary::default();
        let mut failed = None;
        for p in list {
            {
                // Not released (the restore failed): nothing is filled in; the husk was killed.
                let mut st = p.inner.lock();
                if st.released.is_none() {
                    st.ended = true;
                }
            }
            p.inner.changed.notify_all();
            for t in p.threads {
                let _ = t.join();
            }
            let st = p.inner.lock();
            sum.on_demand += st.on_demand;
            sum.background += st.background;
            sum.faults += st.faults;
            sum.fill = sum.fill.max(st.fill);
            if let Some(f) = &st.failed {
                failed.get_or_insert_with(|| f.clone());
            }
        }
        failed.map_or(Ok(sum), Err)
    }
}

/// The lazy restore of one process.
struct Pager {
    inner: Arc<Inner>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Pages of one run still to be given, from page `page` of run `run`, at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    pages: u64,
    run: u32,
    page: u32,
}

/// Pages still to be given, by address; no two spans overlap.
#[derive(Debug, Clone, Default)]
struct Pending {
    spans: BTreeMap<u64, Span>,
    /// Spans of each run.
    per_run: Vec<u32>,
    /// Whether a span was moved (`mremap`): the spans of a run are no longer at its address.
    moved: bool,
}

impl Pending {
    fn insert(&mut self, at: u64, s: Span) {
        if s.pages > 0 {
            self.per_run[s.run as usize] += 1;
            self.spans.insert(at, s);
        }
    }

    fn remove(&mut self, at: u64) -> Option<Span> {
        let s = self.spans.remove(&at)?;
        self.per_run[s.run as usize] -= 1;
        Some(s)
    }

    fn clear(&mut self) {
        self.spans.clear();
        self.per_run.iter_mut().for_each(|n| *n = 0);
    }

    /// The span holding `addr`.
    fn find(&self, addr: u64) -> Option<(u64, Span)> {
        let (&a, &s) = self.spans.range(..=addr).next_back()?;
        (addr < a + s.pages * PAGE).then_some((a, s))
    }

    /// Takes the pages of `start..end` out of the spans; returns them.
    fn cut(&mut self, start: u64, end: u64) -> Vec<(u64, Span)> {
        let hit: Vec<u64> = self.spans.range(..end).rev().take_while(|(&a, s)| a + s.pages * PAGE > start).map(|(&a, _)| a).collect();
        let mut out = Vec::new();
        for a in hit.into_iter().rev() {
            let Some(s) = self.remove(a) else { continue };
            let e = a + s.pages * PAGE;
            if a < start {
                self.insert(a, Span { pages: (start - a) / PAGE, ..s });
            }
            if e > end {
                self.insert(end, Span { pages: (e - end) / PAGE, page: s.page + ((end - a) / PAGE) as u32, ..s });
            }
            let (from, to) = (a.max(start), e.min(end));
            out.push((from, Span { pages: (to - from) / PAGE, page: s.page + ((from - a) / PAGE) as u32, ..s }));
        }
        out
    }

    /// Moves the pages of `from..from+len` to `to` (`mremap`).
    fn remap(&mut self, from: u64, to: u64, len: u64) {
        for (a, s) in self.cut(from, from + len) {
            self.insert(a - from + to, s);
        }
        self.moved = true;
    }

    /// The spans of run `r` (at `run`'s address unless some were moved).
    fn of_run(&self, r: u32, run: &PageRun) -> Vec<(u64, Span)> {
        if self.per_run[r as usize] == 0 {
            return Vec::new();
        }
        let pick = |(&a, &s): (&u64, &Span)| (s.run == r).then_some((a, s));
        if self.moved {
            self.spans.iter().filter_map(pick).collect()
        } else {
            self.spans.range(run.vaddr..run.vaddr + run.len).filter_map(pick).collect()
        }
    }
}

/// One memory served: the restored process's, or a child's forked since.
struct Space {
    pager: MissingPager,
    /// The process, 0 for a child forked since (known by its threads that fault).
    pid: i32,
    tids: Vec<i32>,
    pending: Pending,
    /// The ranges registered.
    ranges: Vec<(u64, u64)>,
}

impl Space {
    /// Done: every range unregistered, and the userfaultfd closed (by dropping it).
    fn close(self) {
        for &(s, l) in &self.ranges {
            let _ = self.pager.unregister(s, l);
        }
    }
}

#[derive(Default)]
struct State {
    spaces: Vec<Space>,
    released: Option<std::time::Instant>,
    restored: Vec<i32>,
    /// The restore failed before the release: stop.
    ended: bool,
    failed: Option<String>,
    /// Runs being read by a fill thread.
    loading: Vec<u32>,
    on_demand: u64,
    background: u64,
    faults: u64,
    fill: std::time::Duration,
}

struct Inner {
    pid: i32,
    saved: i32,
    image: std::fs::File,
    arrival: Option<Arc<Arrival>>,
    runs: Vec<PageRun>,
    total: u64,
    state: Mutex<State>,
    changed: Condvar,
}

/// Why page data cannot be given.
#[derive(Debug, Clone)]
enum Unusable {
    /// It is wrong (checksum, decompression) or could not be read.
    Wrong(String),
    /// It never arrived (a stream ended before it).
    Missing(String),
}

impl Unusable {
    fn map(self, f: impl FnOnce(String) -> String) -> Unusable {
        match self {
            Unusable::Wrong(w) => Unusable::Wrong(f(w)),
            Unusable::Missing(w) => Unusable::Missing(f(w)),
        }
    }
}

/// What became of a copy.
enum Copied {
    Done,
    /// An event waits to be read: try again after it.
    Again,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads run `r` from the image (waiting until it has arrived, for a stream), checks it
    /// and decompresses it into `out`.
    fn load(&self, reader: &mut RunReader, r: u32, out: &mut Vec<u8>) -> Result<(), Unusable> {
        let run = &self.runs[r as usize];
        if let Some(a) = &self.arrival {
            a.wait_run(run.offset).map_err(|why| Unusable::Missing(format!("page data at {:#x}..{:#x} never arrived: {why}", run.vaddr, run.vaddr + run.len)))?;
        }
        reader.read(&self.image, self.saved, run, out).map_err(|e| Unusable::Wrong(e.to_string()))
    }

    /// Gives the pages of span `s` at `a` of space `i` from `data` (its run); the span is
    /// removed for what was given.
    fn give(&self, st: &mut State, i: usize, a: u64, s: Span, data: &[u8], on_demand: bool) -> Copied {
        let from = s.page as usize * PAGE as usize;
        let bytes = &data[from..from + (s.pages * PAGE) as usize];
        let space = &mut st.spaces[i];
        let (done, err) = space.pager.copy(a, bytes);
        // What was given (or found there) is no longer pending.
        space.pending.cut(a, a + done);
        if on_demand {
            st.on_demand += done;
        } else {
            st.background += done;
        }
        match err {
            None => Copied::Done,
            Some(e) if e.raw_os_error() == Some(libc::EAGAIN) => Copied::Again,
            // Not registered any more (unmapped; its event follows): nothing to give there.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                st.spaces[i].pending.cut(a + done, a + s.pages * PAGE);
                Copied::Done
            }
            // The process has no memory any more (it exited): nothing more to give it.
            Some(_) => {
                st.spaces[i].pending.clear();
                Copied::Done
            }
        }
    }

    /// Kills the processes served (and, for the restored process, the children it forked
    /// since), and records why.
    fn fail(&self, st: &mut State, why: Unusable) {
        let (why, data) = match why {
            Unusable::Wrong(w) => (w, "wrong"),
            Unusable::Missing(w) => (w, "missing"),
        };
        let mut killed = Vec::new();
        for sp in &st.spaces {
            if sp.pid > 0 {
                for d in descendants(sp.pid) {
                    if !st.restored.contains(&d) {
                        let _ = crest_ptrace::sys::kill(d, libc::SIGKILL);
                        killed.push(d);
                    }
                }
                let _ = crest_ptrace::sys::kill(sp.pid, libc::SIGKILL);
                killed.push(sp.pid);
            }
            for &t in &sp.tids {
                let _ = crest_ptrace::sys::kill(t, libc::SIGKILL);
            }
        }
        killed.sort_unstable();
        killed.dedup();
        let who = killed.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
        st.failed.get_or_insert(format!("{why}; killed the restored process (pid {who}) rather than let it run on {data} data"));
        // Closing the userfaultfds would let the killed processes' threads see zeros before
        // they die: they are held until then.
        for sp in std::mem::take(&mut st.spaces) {
            await_death(sp.pid);
            sp.close();
        }
        self.changed.notify_all();
    }

    /// Drops the spaces with nothing more to give, unregistering them.
    fn settle(&self, st: &mut State) {
        let (done, left): (Vec<Space>, Vec<Space>) = std::mem::take(&mut st.spaces).into_iter().partition(|s| s.pending.spans.is_empty());
        st.spaces = left;
        if !done.is_empty() {
            done.into_iter().for_each(Space::close);
            if st.spaces.is_empty() {
                if let Some(t) = st.released {
                    st.fill = t.elapsed();
                }
            }
            self.changed.notify_all();
        }
    }

    /// Handles the messages of space `i` (read here, under the lock) until none is left.
    fn handle(&self, st: &mut State, i: usize, reader: &mut RunReader, cache: &mut Option<(u32, Vec<u8>)>) {
        let mut queue = std::collections::VecDeque::new();
        let mut events = Vec::new();
        if st.spaces[i].pager.read_events(&mut events).is_err() {
            return;
        }
        queue.extend(events.drain(..));
        let mut tries = 0;
        while let Some(ev) = queue.pop_front() {
            if st.failed.is_some() || i >= st.spaces.len() {
                return;
            }
            match ev {
                Event::Fault { addr, tid } => {
                    st.faults += 1;
                    let page = addr & !(PAGE - 1);
                    let sp = &mut st.spaces[i];
                    if sp.pid == 0 && !sp.tids.contains(&(tid as i32)) {
                        sp.tids.push(tid as i32);
                    }
                    let again = match sp.pending.find(page) {
                        None => sp.pager.zero(page, PAGE).is_err_and(|e| e.raw_os_error() == Some(libc::EAGAIN)),
                        Some((a, s)) => {
                            if cache.as_ref().is_none_or(|c| c.0 != s.run) {
                                let mut buf = cache.take().map(|c| c.1).unwrap_or_default();
                                if let Err(e) = self.load(reader, s.run, &mut buf) {
                                    let who = if st.spaces[i].pid > 0 { format!("pid {}", st.spaces[i].pid) } else { format!("thread {tid}, forked since the restart,") };
                                    self.fail(st, e.map(|e| format!("lazy restore: {who} touched the page at {page:#x}, whose {e}")));
                                    return;
                                }
                                *cache = Some((s.run, buf));
                            }
                            let data = cache.as_ref().map(|c| c.1.as_slice()).unwrap_or_default();
                            matches!(self.give(st, i, a, s, data, true), Copied::Again)
                        }
                    };
                    if again {
                        // An event waits: read it first, then this fault again.
                        tries += 1;
                        if tries > 10_000 {
                            std::thread::yield_now();
                        }
                        let _ = st.spaces[i].pager.read_events(&mut events);
                        queue.extend(events.drain(..));
                        queue.push_back(Event::Fault { addr, tid });
                    }
                }
                Event::Fork(pager) => {
                    let parent = &st.spaces[i];
                    let child = Space { pager, pid: 0, tids: Vec::new(), pending: parent.pending.clone(), ranges: parent.ranges.clone() };
                    st.spaces.push(child);
                    self.changed.notify_all();
                }
                Event::Remap { from, to, len } => {
                    st.spaces[i].pending.remap(from, to, len);
                    st.spaces[i].ranges.push((to, len));
                }
                Event::Dropped { start, end } => {
                    st.spaces[i].pending.cut(start, end);
                }
            }
        }
    }

    /// The fault server: waits for messages of every space and handles them.
    fn serve(self: Arc<Self>) {
        let mut reader = match RunReader::new() {
            Ok(r) => r,
            Err(e) => {
                let mut st = self.lock();
                self.fail(&mut st, Unusable::Wrong(format!("lazy restore of pid {}: {e}", self.pid)));
                return;
            }
        };
        let mut cache = None;
        loop {
            let fds: Vec<i32> = {
                let mut st = self.lock();
                self.settle(&mut st);
                if st.spaces.is_empty() || st.failed.is_some() || st.ended {
                    return;
                }
                st.spaces.iter().map(|s| s.pager.raw_fd()).collect()
            };
            let Ok(ready) = wp::wait_readable(&fds, 100) else { continue };
            let mut st = self.lock();
            for (fd, _) in fds.iter().zip(ready).filter(|(_, r)| *r) {
                if let Some(i) = st.spaces.iter().position(|s| s.pager.raw_fd() == *fd) {
                    self.handle(&mut st, i, &mut reader, &mut cache);
                }
            }
        }
    }

    /// A background fill thread: once released, gives run after run until none is pending.
    fn fill(self: Arc<Self>) {
        // Below the restored process and the fault server, which serves what it waits for:
        // the fill uses what they leave of the cores.
        crest_ptrace::sys::lower_thread_priority(FILL_NICE);
        let Ok(mut reader) = RunReader::new() else { return };
        let mut buf = Vec::new();
        loop {
            // The first pending run no other fill thread is reading.
            let r = {
                let mut st = self.lock();
                loop {
                    if st.failed.is_some() || st.ended || st.spaces.is_empty() {
                        return;
                    }
                    if st.released.is_none() {
                        st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                    let next = st.spaces.iter().flat_map(|s| s.pending.spans.values()).map(|s| s.run).find(|r| !st.loading.contains(r));
                    match next {
                        Some(r) => {
                            st.loading.push(r);
                            break r;
                        }
                        // The other thread has the last ones.
                        None => st = self.changed.wait_timeout(st, std::time::Duration::from_millis(10)).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0),
                    }
                }
            };
            let loaded = self.load(&mut reader, r, &mut buf);
            loop {
                let mut st = self.lock();
                if let Err(e) = &loaded {
                    let e = e.clone();
                    self.fail(&mut st, e.map(|e| format!("lazy restore of pid {}: {e} (found while filling in its memory)", self.pid)));
                    return;
                }
                let run = self.runs[r as usize];
                let mut again = false;
                for i in 0..st.spaces.len() {
                    for (a, s) in st.spaces[i].pending.of_run(r, &run) {
                        if let Copied::Again = self.give(&mut st, i, a, s, &buf, false) {
                            again = true;
                        }
                    }
                }
                if !again {
                    st.loading.retain(|&x| x != r);
                    self.settle(&mut st);
                    break;
                }
                // An event waits for the fault server: let it read it.
                drop(st);
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }
}

/// Every descendant of `pid`, from `/proc/PID/task/*/children`.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                if !out.contains(&c) {
                    out.push(c);
                    todo.push(c);
                }
            }
        }
    }
    out
}

/// Waits (up to a second) until the killed process `pid` has no memory any more.
fn await_death(pid: i32) {
    if pid <= 0 {
        return;
    }
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(1) {
        let st = crest_proc::read(pid, "stat").ok().and_then(|s| crest_proc::parse_stat(&s).ok());
        if st.is_none_or(|s| matches!(s.state, 'Z' | 'X')) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(spans: &[(u64, u64)]) -> Pending {
        let mut p = Pending { per_run: vec![0; spans.len()], ..Default::default() };
        for (i, &(a, n)) in spans.iter().enumerate() {
            p.insert(a, Span { pages: n, run: i as u32, page: 0 });
        }
        p
    }

    #[test]
    fn spans_are_cut_where_pages_are_dropped() {
        let mut p = pending(&[(0x10000, 4), (0x20000, 8)]);
        let out = p.cut(0x12000, 0x22000);
        assert_eq!(out, vec![(0x12000, Span { pages: 2, run: 0, page: 2 }), (0x20000, Span { pages: 2, run: 1, page: 0 })]);
        assert_eq!(p.spans.get(&0x10000), Some(&Span { pages: 2, run: 0, page: 0 }));
        assert_eq!(p.spans.get(&0x22000), Some(&Span { pages: 6, run: 1, page: 2 }));
        assert_eq!(p.per_run, vec![1, 1]);
        assert!(p.cut(0x30000, 0x40000).is_empty());
        assert_eq!(p.find(0x23000), Some((0x22000, Span { pages: 6, run: 1, page: 2 })));
        assert_eq!(p.find(0x12000), None);
    }

    #[test]
    fn moved_spans_keep_their_place_in_the_run() {
        let mut p = pending(&[(0x10000, 4)]);
        p.remap(0x11000, 0x50000, 0x2000);
        assert_eq!(p.find(0x50000), Some((0x50000, Span { pages: 2, run: 0, page: 1 })));
        let run = PageRun { vaddr: 0x10000, len: 0x4000, offset: 0, zlen: 0, sum: 0, image: 0 };
        assert_eq!(p.of_run(0, &run).len(), 3);
        assert_eq!(p.per_run, vec![3]);
    }
}
