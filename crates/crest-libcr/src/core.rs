//! libcr's state in a process and what it does, without the C types: callbacks, critical
//! sections, the libcr thread that takes crest's messages, and checkpoints asked for by the
//! process itself. See docs/architecture.md, "libcr", for the protocol.
use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering::SeqCst};
use std::sync::{Mutex, Once};
use std::time::Duration;

use crest_ptrace::libcr::{self as proto, Answer, Info, Msg};

use crate::sys;

/// A callback as C gives it.
pub type Callback = extern "C" fn(*mut libc::c_void) -> libc::c_int;

/// One registration: the function (`None`: disabled by `cr_replace_callback(.., NULL, ..)`)
/// and its argument.
#[derive(Clone, Copy)]
pub struct Entry {
    pub func: Option<Callback>,
    pub arg: usize,
}

/// BLCR's numbers that the logic needs.
pub mod c {
    pub const READY: i32 = 0;
    pub const TEMP_FAILURE: i32 = 1;
    pub const PERM_FAILURE: i32 = 2;
    pub const OMIT: i32 = 4;
    pub const ABORT_MASK: i32 = 7;
    pub const THREAD_CONTEXT: i32 = 0x400_0000;
    pub const SIGNAL_CONTEXT: i32 = 0x200_0000;
    pub const MAX_CALLBACKS: i32 = 0x1FF_FFFF;
    pub const ETEMPFAIL: i32 = 2354;
    pub const EPERMFAIL: i32 = 2355;
    pub const EOMITTED: i32 = 2358;
    pub const ERESTARTED: i32 = 2363;
    pub const ENOTCB: i32 = 2364;
    pub const ENOINIT: i32 = 2365;
    pub const HOOKS: usize = 6;
}

/// Thread-context callbacks, in registration order.
static THREAD_CBS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
/// Signal-context callbacks of each thread (by TID), in registration order. A thread holds
/// the lock only with the libcr signal blocked, so its own handler never waits for itself.
static SIGNAL_CBS: Mutex<Vec<(i32, Vec<Entry>)>> = Mutex::new(Vec::new());
/// Hooks by event (`cr_register_hook`), as function addresses (0: none).
static HOOKS: [AtomicUsize; c::HOOKS] = [const { AtomicUsize::new(0) }; c::HOOKS];
use std::sync::atomic::AtomicUsize;

static STARTED: Once = Once::new();
static INITIALISED: AtomicBool = AtomicBool::new(false);
/// The libcr thread's TID.
static THREAD_TID: AtomicI32 = AtomicI32::new(0);

/// A checkpoint request is pending or running: outermost critical sections wait.
static PENDING: AtomicU32 = AtomicU32::new(0);
/// Critical sections held, over all threads.
static CS_COUNT: AtomicU32 = AtomicU32::new(0);
/// Threads whose signal-context callbacks reached `cr_checkpoint`.
static ARRIVED: AtomicU32 = AtomicU32::new(0);
/// The first non-READY flags the signal-context callbacks gave.
static SIGNAL_FLAGS: AtomicI32 = AtomicI32::new(0);
/// Bumped when the outcome of a checkpoint is known; [`OUTCOME`] holds it.
static OUTCOME_SEQ: AtomicU32 = AtomicU32::new(0);
static OUTCOME: AtomicI32 = AtomicI32::new(0);

/// What the callbacks of the current request are told, and the last restart.
static INFO: Mutex<Option<Info>> = Mutex::new(None);
static RESTART: Mutex<Option<(i32, String)>> = Mutex::new(None);
/// The checkpoint's connection, while the callbacks run.
static CONN: Mutex<Option<UnixStream>> = Mutex::new(None);
/// The thread-context callbacks reached their end for the current request.
static THREAD_FINISHED: AtomicBool = AtomicBool::new(false);

/// `cr_hold_ctrl`'s flags: hold after a checkpoint taken (continue), after a restart, both;
/// a thread's own setting may defer to that of initialised threads.
pub const HOLD_NONE: i32 = 0;
pub const HOLD_CONT: i32 = 1;
pub const HOLD_RSTRT: i32 = 2;
pub const HOLD_BOTH: i32 = 3;
pub const HOLD_DFLT: i32 = 4;
/// The hold of threads that called `cr_init` and keep the default, and of threads that did
/// not (BLCR's defaults: both held).
static HOLD_INIT: AtomicI32 = AtomicI32::new(HOLD_BOTH);
static HOLD_UNINIT: AtomicI32 = AtomicI32::new(HOLD_BOTH);
/// Some thread set a hold of its own (not NONE or the default).
static THREAD_HOLD_SET: AtomicBool = AtomicBool::new(false);
/// The threads taking part in the current request (the libcr thread and each thread whose
/// handler ran) that have not yet finished their callbacks for the outcome: the post-callback
/// barrier, which holding threads wait on until it is 0.
static BARRIER: AtomicU32 = AtomicU32::new(0);
/// The threads that arrived in their handler in the current request's signal phase.
static TAKING_PART: AtomicU32 = AtomicU32::new(0);

/// Checkpoints the process asked for: state per handle (index + 1).
pub const SLOTS: usize = 64;
/// Free, pending, done (result in [`REQ_RESULT`]), restarted.
const FREE: u32 = 0;
const PENDING_REQ: u32 = 1;
const DONE: u32 = 2;
const RESTARTED: u32 = 3;
static REQ_STATE: [AtomicU32; SLOTS] = [const { AtomicU32::new(FREE) }; SLOTS];
static REQ_RESULT: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];
static REQ_HELPER: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

/// The messages of each self-checkpoint (by handle): what its `cr_checkpoint` wrote on its
/// standard error, kept in a memory file for `cr_log_checkpoint` until the request is reaped.
static LOGS: Mutex<Vec<(u64, std::fs::File)>> = Mutex::new(Vec::new());

/// A memory file for the messages of request `key`, kept in [`LOGS`]; its descriptor.
fn new_log(key: u64) -> Option<i32> {
    let f = sys::memfd("crest-libcr-log").ok()?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let mut logs = lock(&LOGS);
    logs.retain(|(k, _)| *k != key);
    logs.push((key, f));
    Some(fd)
}

/// The messages of request `key` so far (empty when there are none).
fn log_of(key: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let logs = lock(&LOGS);
    let Some((_, f)) = logs.iter().find(|(k, _)| *k == key) else { return Vec::new() };
    let len = f.metadata().map_or(0, |m| m.len()).min(1 << 20) as usize;
    let mut buf = vec![0u8; len];
    let n = f.read_at(&mut buf, 0).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// `cr_log_checkpoint`: the messages of self-checkpoint `handle`.
pub fn log(handle: u64) -> Vec<u8> {
    log_of(handle)
}

fn drop_log(key: u64) {
    lock(&LOGS).retain(|(k, _)| *k != key);
}

/// One callback running on this thread.
#[derive(Clone, Copy)]
struct Frame {
    signal: bool,
    chain: *const Entry,
    len: usize,
    /// Position in call order (0: the most recently registered).
    idx: usize,
    result: Option<i32>,
}

const MAX_FRAMES: usize = 32;

thread_local! {
    static FRAMES: RefCell<[Option<Frame>; MAX_FRAMES]> = const { RefCell::new([None; MAX_FRAMES]) };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    static INIT_COUNT: Cell<i32> = const { Cell::new(0) };
    static CS_DEPTH: Cell<u32> = const { Cell::new(0) };
    static PERSIST: Cell<i32> = const { Cell::new(0) };
    static SIGNAL_DONE: Cell<Option<i32>> = const { Cell::new(None) };
    /// This thread's hold (`CR_HOLD_SCOPE_THREAD`).
    static HOLD_THREAD: Cell<i32> = const { Cell::new(HOLD_DFLT) };
}

/// A libcr error: the errno the C call sets.
pub type Errno = i32;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `cr_init`: the first call in the process installs the handler and starts the libcr thread.
pub fn init() -> i32 {
    STARTED.call_once(|| {
        sys::install_handler(proto::SIGNUM, crate::signal_handler);
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name(proto::THREAD_NAME.into()).spawn(move || {
            sys::block_all();
            sys::set_thread_name(proto::THREAD_NAME);
            THREAD_TID.store(sys::gettid(), SeqCst);
            let _ = tx.send(());
            thread_loop()
        });
        if spawned.is_ok() {
            let _ = rx.recv();
        }
        INITIALISED.store(true, SeqCst);
    });
    INIT_COUNT.with(|n| {
        let v = n.get();
        n.set(v + 1);
        v
    })
}

/// Whether `cr_init` was called in this process.
pub fn initialised() -> bool {
    INITIALISED.load(SeqCst)
}

/// Whether this thread runs a callback.
pub fn in_callback() -> bool {
    DEPTH.with(Cell::get) > 0
}

/// `cr_register_callback`.
pub fn register(func: Option<Callback>, arg: usize, flags: i32) -> Result<i32, Errno> {
    if !initialised() {
        return Err(c::ENOINIT);
    }
    if in_callback() {
        return Err(libc::EBUSY);
    }
    let e = Entry { func, arg };
    match flags & (c::THREAD_CONTEXT | c::SIGNAL_CONTEXT) {
        c::THREAD_CONTEXT => {
            let mut v = lock(&THREAD_CBS);
            if v.len() as i32 >= c::MAX_CALLBACKS {
                return Err(libc::ENOSPC);
            }
            v.push(e);
            Ok((v.len() as i32 - 1) | c::THREAD_CONTEXT)
        }
        c::SIGNAL_CONTEXT => with_own_signal_cbs(|v| {
            if v.len() as i32 >= c::MAX_CALLBACKS {
                return Err(libc::ENOSPC);
            }
            v.push(e);
            Ok((v.len() as i32 - 1) | c::SIGNAL_CONTEXT)
        }),
        _ => Err(libc::EINVAL),
    }
}

/// Runs `f` on this thread's signal-context registrations, the libcr signal blocked.
fn with_own_signal_cbs<T>(f: impl FnOnce(&mut Vec<Entry>) -> T) -> T {
    sys::mask_signal(proto::SIGNUM, true);
    let tid = sys::gettid();
    let r = {
        let mut all = lock(&SIGNAL_CBS);
        // Registrations of threads that ended go (their TIDs may be reused).
        all.retain(|(t, _)| *t == tid || sys::thread_alive(*t));
        let at = match all.iter().position(|(t, _)| *t == tid) {
            Some(i) => i,
            None => {
                all.push((tid, Vec::new()));
                all.len() - 1
            }
        };
        f(&mut all[at].1)
    };
    sys::mask_signal(proto::SIGNUM, false);
    r
}

/// `cr_replace_callback`.
pub fn replace(id: i32, func: Option<Callback>, arg: usize, flags: i32) -> Result<(), Errno> {
    if !initialised() {
        return Err(c::ENOINIT);
    }
    if in_callback() {
        return Err(libc::EBUSY);
    }
    let ctx = flags & (c::THREAD_CONTEXT | c::SIGNAL_CONTEXT);
    if id < 0 || id & (c::THREAD_CONTEXT | c::SIGNAL_CONTEXT) != ctx {
        return Err(libc::EINVAL);
    }
    let idx = (id & c::MAX_CALLBACKS) as usize;
    let e = Entry { func, arg };
    let set = |v: &mut Vec<Entry>| v.get_mut(idx).map(|s| *s = e).ok_or(libc::EINVAL);
    match ctx {
        c::THREAD_CONTEXT => set(&mut lock(&THREAD_CBS)),
        c::SIGNAL_CONTEXT => with_own_signal_cbs(set),
        _ => Err(libc::EINVAL),
    }
}

/// `cr_replace_self`: the running callback's registration.
pub fn replace_self(func: Option<Callback>, arg: usize, flags: i32) -> Result<(), Errno> {
    let f = top_frame().ok_or(c::ENOTCB)?;
    let ctx = if f.signal { c::SIGNAL_CONTEXT } else { c::THREAD_CONTEXT };
    if flags & (c::THREAD_CONTEXT | c::SIGNAL_CONTEXT) != ctx {
        return Err(libc::EINVAL);
    }
    let reg = f.len - 1 - f.idx;
    let e = Entry { func, arg };
    if f.signal {
        // In a handler the lock may be held by this very thread's interrupted code: only try.
        let tid = sys::gettid();
        let mut all = SIGNAL_CBS.try_lock().map_err(|_| libc::EBUSY)?;
        let v = all.iter_mut().find(|(t, _)| *t == tid).ok_or(libc::EINVAL)?;
        v.1.get_mut(reg).map(|s| *s = e).ok_or(libc::EINVAL)
    } else {
        lock(&THREAD_CBS).get_mut(reg).map(|s| *s = e).ok_or(libc::EINVAL)
    }
}

fn top_frame() -> Option<Frame> {
    let d = DEPTH.with(Cell::get);
    if d == 0 {
        return None;
    }
    FRAMES.with(|f| f.borrow()[d - 1])
}

/// Runs the callbacks of `chain` (registration order) from call position `idx` on, the most
/// recently registered first; the oldest's `cr_checkpoint` ends the group ([`finish`]).
fn call_from(signal: bool, chain: &[Entry], idx: usize) -> i32 {
    let len = chain.len();
    let mut i = idx;
    while i < len && chain[len - 1 - i].func.is_none() {
        i += 1;
    }
    let Some(func) = chain.get(len.wrapping_sub(1 + i)).filter(|_| i < len).and_then(|e| e.func) else {
        return finish(signal, c::READY);
    };
    let arg = chain[len - 1 - i].arg;
    let d = DEPTH.with(Cell::get);
    if d >= MAX_FRAMES {
        return finish(signal, c::READY);
    }
    FRAMES.with(|f| f.borrow_mut()[d] = Some(Frame { signal, chain: chain.as_ptr(), len, idx: i, result: None }));
    DEPTH.with(|x| x.set(d + 1));
    let ret = func(arg as *mut libc::c_void);
    let frame = FRAMES.with(|f| f.borrow_mut()[d].take());
    DEPTH.with(|x| x.set(d));
    let r = match frame.and_then(|f| f.result) {
        Some(r) => r,
        // It returned without calling cr_checkpoint: the library calls it for it.
        None => call_from(signal, chain, i + 1),
    };
    if ret != 0 {
        // As BLCR: a callback that fails is fatal.
        let msg = b"libcr: a checkpoint callback returned non-zero; aborting\n";
        let _ = std::io::stderr().write_all(msg);
        std::process::abort();
    }
    r
}

/// `cr_checkpoint(flags)`, inside a callback.
pub fn checkpoint(flags: i32) -> i32 {
    let d = DEPTH.with(Cell::get);
    let Some(f) = top_frame() else { return -c::ENOTCB };
    if let Some(r) = f.result {
        return r;
    }
    let r = if flags & c::ABORT_MASK != 0 {
        finish(f.signal, flags)
    } else {
        // The chain outlives every frame that points into it: it lives in the caller of
        // call_from, below on this stack.
        let chain = chain_of(&f);
        call_from(f.signal, chain, f.idx + 1)
    };
    FRAMES.with(|fr| {
        if let Some(Some(fr)) = fr.borrow_mut().get_mut(d - 1) {
            fr.result = Some(r);
        }
    });
    r
}

fn chain_of(f: &Frame) -> &'static [Entry] {
    crate::frame_chain(f.chain, f.len)
}

/// The end of a group's callbacks, with the flags they gave.
fn finish(signal: bool, flags: i32) -> i32 {
    if signal {
        if let Some(r) = SIGNAL_DONE.with(Cell::get) {
            return r;
        }
        let seq = OUTCOME_SEQ.load(SeqCst);
        if flags != c::READY {
            let _ = SIGNAL_FLAGS.compare_exchange(0, flags, SeqCst, SeqCst);
        }
        ARRIVED.fetch_add(1, SeqCst);
        sys::futex_wake(&ARRIVED);
        while OUTCOME_SEQ.load(SeqCst) == seq {
            sys::futex_wait(&OUTCOME_SEQ, seq, None);
        }
        let r = OUTCOME.load(SeqCst);
        SIGNAL_DONE.with(|s| s.set(Some(r)));
        return r;
    }
    if THREAD_FINISHED.swap(true, SeqCst) {
        return OUTCOME.load(SeqCst);
    }
    TAKING_PART.store(0, SeqCst);
    let flags = if flags == c::READY { signal_phase() } else { flags };
    // Set before anyone learns the outcome, which lets them reach the barrier.
    BARRIER.store(1 + TAKING_PART.load(SeqCst), SeqCst);
    let answer = match flags & c::ABORT_MASK {
        0 => Answer::Ready,
        f if f & c::PERM_FAILURE != 0 => Answer::Perm(code_of(flags, c::EPERMFAIL)),
        f if f & c::TEMP_FAILURE != 0 => Answer::Temp(code_of(flags, c::ETEMPFAIL)),
        _ => Answer::Omit,
    };
    let sent = match lock(&CONN).take() {
        Some(mut s) => s.write_all(answer.line().as_bytes()).is_ok(),
        None => false,
    };
    let r = match answer {
        Answer::Omit => -c::EOMITTED,
        _ => wait_outcome(!sent),
    };
    OUTCOME.store(r, SeqCst);
    OUTCOME_SEQ.fetch_add(1, SeqCst);
    sys::futex_wake(&OUTCOME_SEQ);
    r
}

fn code_of(flags: i32, default: i32) -> u16 {
    match (flags >> 16) & 0xffff {
        0 => default as u16,
        v => v as u16,
    }
}

/// Runs every thread's signal-context callbacks (each in its thread, by a signal) and waits
/// until each reached its `cr_checkpoint`; the first non-READY flags they gave.
fn signal_phase() -> i32 {
    let me = std::process::id() as i32;
    let mut tids: Vec<i32> = lock(&SIGNAL_CBS).iter().filter(|(t, v)| v.iter().any(|e| e.func.is_some()) && sys::thread_alive(*t)).map(|(t, _)| *t).collect();
    if everyone_takes_part() {
        // As in BLCR every thread takes part, that it may be held after the callbacks, but the
        // libcr thread (here) and those that block the signal (they would never arrive).
        let own = THREAD_TID.load(SeqCst);
        for t in other_threads() {
            if t != own && !tids.contains(&t) && !blocks_signum(t) {
                tids.push(t);
            }
        }
    }
    ARRIVED.store(0, SeqCst);
    SIGNAL_FLAGS.store(0, SeqCst);
    let mut sent = 0;
    for &t in &tids {
        if proto::send(me, t, Msg::SignalPhase, 0, 0).is_ok() {
            sent += 1;
        }
    }
    loop {
        let n = ARRIVED.load(SeqCst);
        if n >= sent {
            break;
        }
        sys::futex_wait(&ARRIVED, n, Some(Duration::from_millis(100)));
        // A thread that ended will not arrive.
        let alive = tids.iter().filter(|t| sys::thread_alive(**t)).count() as u32;
        if alive < sent && ARRIVED.load(SeqCst) >= alive {
            break;
        }
    }
    TAKING_PART.store(ARRIVED.load(SeqCst), SeqCst);
    SIGNAL_FLAGS.load(SeqCst)
}

/// The threads of this process.
fn other_threads() -> Vec<i32> {
    std::fs::read_dir("/proc/self/task").map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()).unwrap_or_default()
}

/// Whether thread `tid` of this process blocks the libcr signal.
fn blocks_signum(tid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else { return true };
    let blocked = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    blocked.is_none_or(|b| b & (1u64 << (proto::SIGNUM - 1)) != 0)
}

/// Waits for the checkpoint's outcome: 0 to go on, the requester's PID after a restart, or
/// minus an errno. `gone`: the checkpoint could not be answered; take what it sent, if
/// anything.
fn wait_outcome(gone: bool) -> i32 {
    loop {
        let timeout = if gone { Some(Duration::from_millis(200)) } else { None };
        let Some(t) = sys::wait_signal(proto::SIGNUM, timeout) else {
            if gone {
                return -libc::ESRCH;
            }
            continue;
        };
        if !trusted(&t) {
            continue;
        }
        match proto::decode(t.value) {
            Some((Msg::Continue, _, _)) => return 0,
            Some((Msg::Failed, _, code)) => return -(code as i32),
            Some((Msg::Restarted, _, _)) => return restarted(t.pid),
            Some((Msg::Done, handle, code)) => done(handle, code),
            _ => {}
        }
    }
}

/// Whether a message comes from a process allowed to checkpoint or restart this one: root or
/// the same user (the kernel lets only those queue a signal here, and so does this check).
fn trusted(t: &sys::Taken) -> bool {
    t.code == libc::SI_QUEUE && proto::trusted(t.uid, sys::own_uids())
}

/// Connects to the abstract socket `name` that process `pid` (a message's sender) listens on,
/// and checks that `pid` of a trusted user is the one listening (`SO_PEERCRED`): anyone may bind
/// an abstract name first.
fn connect_to(name: String, pid: i32) -> Option<UnixStream> {
    let addr = SocketAddr::from_abstract_name(name).ok()?;
    let s = UnixStream::connect_addr(&addr).ok()?;
    let (peer, uid) = sys::peer_cred(std::os::fd::AsRawFd::as_raw_fd(&s))?;
    (peer == pid && proto::trusted(uid, sys::own_uids())).then_some(s)
}

/// The libcr thread: takes crest's messages for ever.
fn thread_loop() -> ! {
    loop {
        let Some(t) = sys::wait_signal(proto::SIGNUM, None) else { continue };
        if !trusted(&t) {
            continue;
        }
        match proto::decode(t.value) {
            Some((Msg::Request, _, _)) => request(t.pid),
            Some((Msg::Done, handle, code)) => done(handle, code),
            Some((Msg::Restarted, _, _)) => {
                restarted(t.pid);
            }
            _ => {}
        }
    }
}

/// A checkpoint by worker `worker` asks for the callbacks.
fn request(worker: i32) {
    let Some(stream) = connect_to(proto::socket_name(worker), worker) else { return };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let Ok(mut reader) = stream.try_clone().map(BufReader::new) else { return };
    if reader.read_line(&mut line).is_err() {
        return;
    }
    drop(reader);
    let Some(info) = Info::parse(&line) else { return };
    // Under Yama's ptrace_scope 1 only a process's ancestors may trace it, and the checkpoint a
    // process asks for of itself and its descendants is run by its child: this process lets it
    // trace, for the length of the request. Only that one: any other checkpoint is left to
    // what Yama allows it.
    let let_trace = asked_by_own_tree(info.requester, worker);
    if let_trace {
        sys::allow_tracer(worker);
    }
    PENDING.store(1, SeqCst);
    loop {
        let n = CS_COUNT.load(SeqCst);
        if n == 0 {
            break;
        }
        sys::futex_wait(&CS_COUNT, n, Some(Duration::from_millis(100)));
    }
    *lock(&INFO) = Some(info);
    *lock(&CONN) = Some(stream);
    THREAD_FINISHED.store(false, SeqCst);
    let chain: Vec<Entry> = lock(&THREAD_CBS).clone();
    let r = call_from(false, &chain, 0);
    // Should a callback have finished the group without reaching its end (it cannot), the
    // connection is closed here anyway: nothing of the checkpoint's may be left open.
    lock(&CONN).take();
    run_hooks(r, Group::Thread);
    // The libcr thread is crest's: held only when it ran callbacks of the program's.
    let hold = if chain.iter().any(|e| e.func.is_some()) { own_hold(true) } else { HOLD_NONE };
    *lock(&INFO) = None;
    if let_trace {
        revert_tracer();
    }
    PENDING.store(0, SeqCst);
    sys::futex_wake(&PENDING);
    barrier(r, hold);
}

/// Which callbacks a thread ran: its signal-context ones, the thread-context ones (the libcr
/// thread), or none.
#[derive(Clone, Copy)]
pub enum Group {
    Signal = 0,
    Thread = 1,
    None = 2,
}

/// Runs the hook of the outcome `r` for a group: `CR_HOOK_CONT_*` after a checkpoint taken,
/// `CR_HOOK_RSTRT_*` after a restart, none after a failure.
pub fn run_hooks(r: i32, group: Group) {
    if r < 0 {
        return;
    }
    let ev = group as usize + if r > 0 { 3 } else { 0 };
    crate::call_hook(HOOKS[ev].load(SeqCst), ev as i32);
}

/// `cr_register_hook`: the previous hook's address.
pub fn register_hook(event: i32, hook: usize) -> Result<usize, Errno> {
    if !initialised() {
        return Err(c::ENOINIT);
    }
    let h = usize::try_from(event).ok().and_then(|e| HOOKS.get(e)).ok_or(libc::EINVAL)?;
    // CR_HOOK_FN_ERROR is no hook.
    if hook == usize::MAX {
        return Err(libc::EINVAL);
    }
    Ok(h.swap(hook, SeqCst))
}

/// The process was restarted, as `sender` (`cr_restart`) says: pending self-checkpoints learn
/// it, and who asked for the restart and from which image are asked for. Returns the
/// requester (the sender when it does not say).
fn restarted(sender: i32) -> i32 {
    for (i, s) in REQ_STATE.iter().enumerate() {
        if s.compare_exchange(PENDING_REQ, RESTARTED, SeqCst, SeqCst).is_ok() {
            REQ_RESULT[i].store(c::ERESTARTED, SeqCst);
            sys::futex_wake(s);
        }
    }
    let info = (|| {
        let s = connect_to(proto::restart_socket_name(sender), sender)?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        proto::RestartInfo::parse(&line)
    })()
    .unwrap_or(proto::RestartInfo { requester: sender, src: String::new() });
    let requester = info.requester;
    *lock(&RESTART) = Some((requester, info.src));
    requester
}

/// A self-checkpoint's helper ended with exit status `code`.
fn done(handle: u8, code: u16) {
    let Some(i) = (handle as usize).checked_sub(1).filter(|&i| i < SLOTS) else { return };
    let errno = match code as i32 {
        0 => 0,
        // cr_checkpoint's exit status is errno & 0xff: BLCR's codes come back whole.
        c @ 50..=61 => 2304 + c,
        c => c,
    };
    REQ_RESULT[i].store(errno, SeqCst);
    if REQ_STATE[i].compare_exchange(PENDING_REQ, DONE, SeqCst, SeqCst).is_ok() {
        sys::futex_wake(&REQ_STATE[i]);
    }
    let helper = REQ_HELPER[i].swap(0, SeqCst);
    if helper > 0 {
        let _ = sys::try_reap(helper, true);
    }
    revert_tracer();
}

/// The parent of process `pid`, from `/proc/PID/stat` (0 when it cannot be read).
fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

/// Whether `ancestor` is `pid` or one of its ancestors.
fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut at = pid;
    for _ in 0..4096 {
        if at == ancestor {
            return true;
        }
        if at <= 1 {
            return false;
        }
        at = parent_of(at);
    }
    false
}

/// Whether a checkpoint by `worker` is one that `requester`, a libcr process that is this
/// process or an ancestor of it, asked for of itself (its helper `cr_checkpoint` and that
/// one's workers descend from it).
fn asked_by_own_tree(requester: i32, worker: i32) -> bool {
    let me = std::process::id() as i32;
    requester > 1 && descends_from(me, requester) && descends_from(worker, requester) && (requester == me || proto::libcr_thread(requester).is_some())
}

/// Takes back the leave to trace this process given for a checkpoint: kept for the helper of
/// a checkpoint this process asked for that is still running, withdrawn otherwise.
fn revert_tracer() {
    let helper = REQ_STATE.iter().zip(REQ_HELPER.iter()).find(|(s, h)| s.load(SeqCst) == PENDING_REQ && h.load(SeqCst) > 0).map_or(0, |(_, h)| h.load(SeqCst));
    sys::allow_tracer(helper);
}

/// Whether this thread called `cr_init` (or is the libcr thread, where thread-context
/// callbacks run).
fn thread_initialised() -> bool {
    INIT_COUNT.with(Cell::get) > 0 || sys::gettid() == THREAD_TID.load(SeqCst)
}

/// `cr_hold_ctrl`: reads (`CR_HOLD_READ`) or sets the hold of this thread (scope 0), of the
/// threads that called `cr_init` (1) or of the others (2); the previous value.
pub fn hold_ctrl(scope: i32, flags: i32) -> Result<i32, Errno> {
    if !initialised() || !thread_initialised() {
        return Err(c::ENOINIT);
    }
    let valid = (HOLD_NONE..=HOLD_BOTH).contains(&flags) || (flags == HOLD_DFLT && scope == 0);
    if flags != -1 && !valid {
        return Err(libc::EINVAL);
    }
    let global = match scope {
        0 => None,
        1 => Some(&HOLD_INIT),
        2 => Some(&HOLD_UNINIT),
        _ => return Err(libc::EINVAL),
    };
    Ok(match (global, flags) {
        (Some(g), -1) => g.load(SeqCst),
        (Some(g), f) => g.swap(f, SeqCst),
        (None, -1) => HOLD_THREAD.with(Cell::get),
        (None, f) => {
            if f != HOLD_NONE && f != HOLD_DFLT {
                THREAD_HOLD_SET.store(true, SeqCst);
            }
            HOLD_THREAD.with(|h| h.replace(f))
        }
    })
}

/// The hold that applies to this thread: its own, or that of initialised threads when it
/// keeps the default; that of uninitialised threads when it neither called `cr_init` nor
/// registered callbacks.
fn own_hold(initialised: bool) -> i32 {
    if !initialised {
        return HOLD_UNINIT.load(SeqCst);
    }
    match HOLD_THREAD.with(Cell::get) {
        HOLD_DFLT => HOLD_INIT.load(SeqCst),
        h => h,
    }
}

/// Whether any thread without callbacks must take part in a request: to be held after it, or
/// to run a `*_NO_CALLBACKS` hook.
fn everyone_takes_part() -> bool {
    HOLD_INIT.load(SeqCst) != HOLD_NONE || HOLD_UNINIT.load(SeqCst) != HOLD_NONE || THREAD_HOLD_SET.load(SeqCst) || HOOKS[2].load(SeqCst) != 0 || HOOKS[5].load(SeqCst) != 0
}

/// The post-callback barrier: this thread's callbacks (if any) and hooks are done with outcome
/// `r`; when its `hold` says so for that outcome (`CR_HOLD_CONT` after a checkpoint taken,
/// `CR_HOLD_RSTRT` after a restart) it waits until every thread taking part is done too. A
/// failed or omitted checkpoint holds nobody.
fn barrier(r: i32, hold: i32) {
    if r < 0 {
        return;
    }
    if BARRIER.fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1)) == Ok(1) {
        sys::futex_wake(&BARRIER);
    }
    if hold & if r > 0 { HOLD_RSTRT } else { HOLD_CONT } == 0 {
        return;
    }
    loop {
        let v = BARRIER.load(SeqCst);
        if v == 0 {
            break;
        }
        sys::futex_wait(&BARRIER, v, None);
    }
}

/// The signal handler's work: a signal-context phase asked by the libcr thread.
pub fn on_signal(t: &sys::Taken) {
    if !trusted(t) || t.pid != std::process::id() as i32 {
        return;
    }
    if !matches!(proto::decode(t.value), Some((Msg::SignalPhase, _, _))) {
        return;
    }
    let tid = sys::gettid();
    // Copied onto the stack: no allocation in a handler.
    let mut chain = [Entry { func: None, arg: 0 }; 64];
    // A thread without registrations takes part too, with no callbacks (it is held, or runs
    // the *_NO_CALLBACKS hooks).
    let n = {
        let Ok(all) = SIGNAL_CBS.lock() else { return };
        match all.iter().find(|(t, _)| *t == tid) {
            Some((_, v)) => {
                let n = v.len().min(chain.len());
                chain[..n].copy_from_slice(&v[v.len() - n..]);
                n
            }
            None => 0,
        }
    };
    SIGNAL_DONE.with(|s| s.set(None));
    let r = call_from(true, &chain[..n], 0);
    let registered = chain[..n].iter().any(|e| e.func.is_some());
    run_hooks(r, if registered { Group::Signal } else { Group::None });
    barrier(r, own_hold(registered || INIT_COUNT.with(Cell::get) > 0));
}

/// `cr_forward_checkpoint`: inside a callback, before its `cr_checkpoint`, asks the checkpoint
/// to take the processes of `scope` named by `target` (0: this process, its group, its
/// session) as well; the checkpoint says whether it can (ESRCH, EPERM, EINVAL).
pub fn forward(scope: i32, target: i32) -> Result<(), Errno> {
    let f = top_frame().ok_or(c::ENOTCB)?;
    if f.result.is_some() || !(0..=3).contains(&scope) || target < 0 {
        return Err(libc::EINVAL);
    }
    let target = match (target, scope) {
        (0, 1) => sys::pgrp_and_session().0,
        (0, 2) => sys::pgrp_and_session().1,
        (0, _) => std::process::id() as i32,
        (t, _) => t,
    };
    // Written and read on the stack: a signal-context callback may call this.
    let mut line = [0u8; 48];
    let n = {
        let mut w = std::io::Cursor::new(&mut line[..]);
        // proto::forward_line, without allocating.
        writeln!(w, "FORWARD {scope} {target}").map_err(|_| libc::EINVAL)?;
        w.position() as usize
    };
    let conn = lock(&CONN);
    let Some(mut s) = conn.as_ref() else { return Err(libc::EINVAL) };
    s.write_all(&line[..n]).map_err(|_| libc::ESRCH)?;
    let mut reply = [0u8; 32];
    let mut got = 0;
    while got < reply.len() {
        match std::io::Read::read(&mut s, &mut reply[got..got + 1]) {
            Ok(1) if reply[got] == b'\n' => break,
            Ok(1) => got += 1,
            _ => return Err(libc::ESRCH),
        }
    }
    let text = std::str::from_utf8(&reply[..got]).map_err(|_| libc::EIO)?;
    proto::parse_forward_reply(text).unwrap_or(Err(libc::EIO))
}

/// `cr_get_checkpoint_info`: inside a callback, what the request says.
pub fn checkpoint_info() -> Option<Info> {
    if !in_callback() {
        return None;
    }
    lock(&INFO).clone()
}

/// `cr_get_restart_info`: after a restart, who asked and from which image.
pub fn restart_info() -> Option<(i32, String)> {
    let f = top_frame()?;
    if f.result.is_some_and(|r| r > 0) || OUTCOME.load(SeqCst) > 0 {
        return lock(&RESTART).clone();
    }
    None
}

/// `cr_enter_cs` (`block`) and `cr_tryenter_cs`: `Ok(true)` when entered.
pub fn enter_cs(block: bool) -> Result<bool, Errno> {
    if !initialised() {
        return Err(c::ENOINIT);
    }
    if in_callback() {
        return Ok(true);
    }
    if CS_DEPTH.with(Cell::get) == 0 {
        loop {
            let p = PENDING.load(SeqCst);
            if p == 0 {
                break;
            }
            if !block {
                return Ok(false);
            }
            sys::futex_wait(&PENDING, p, Some(Duration::from_millis(100)));
        }
    }
    CS_DEPTH.with(|d| d.set(d.get() + 1));
    CS_COUNT.fetch_add(1, SeqCst);
    Ok(true)
}

/// `cr_leave_cs`: leaving the last section lets a pending checkpoint run, and waits for it.
pub fn leave_cs() -> Result<(), Errno> {
    if !initialised() {
        return Err(c::ENOINIT);
    }
    if in_callback() {
        return Ok(());
    }
    let d = CS_DEPTH.with(Cell::get);
    if d == 0 {
        return Err(libc::EINVAL);
    }
    CS_DEPTH.with(|x| x.set(d - 1));
    if CS_COUNT.fetch_sub(1, SeqCst) == 1 {
        sys::futex_wake(&CS_COUNT);
    }
    if d == 1 {
        loop {
            let p = PENDING.load(SeqCst);
            if p == 0 {
                break;
            }
            sys::futex_wait(&PENDING, p, Some(Duration::from_millis(100)));
        }
    }
    Ok(())
}

/// `cr_status`: idle, pending or active.
pub fn status() -> Result<i32, Errno> {
    if !initialised() {
        return Err(c::ENOINIT);
    }
    Ok(if in_callback() {
        2
    } else if PENDING.load(SeqCst) != 0 || REQ_STATE.iter().any(|s| s.load(SeqCst) == PENDING_REQ) {
        1
    } else {
        0
    })
}

/// `cr_inc_persist` / `cr_dec_persist`: the previous count.
pub fn persist(delta: i32) -> Result<i32, Errno> {
    if !initialised() {
        return Err(c::ENOINIT);
    }
    PERSIST.with(|p| {
        let v = p.get();
        if v + delta < 0 {
            return Err(libc::ERANGE);
        }
        p.set(v + delta);
        Ok(v)
    })
}

/// A checkpoint the process asks for, as `cr_request_checkpoint` gives it.
pub struct SelfRequest {
    pub scope: i32,
    pub target: i32,
    pub fd: Option<i32>,
    pub signal: i32,
    pub timeout: u32,
    pub flags: u32,
}

/// The `cr_checkpoint` (or `cr_restart`) to run: `CREST_BINDIR`, else beside this library
/// (the build tree), else `../bin` from it (an install), else found on PATH.
fn helper(name: &str) -> CString {
    let mut dirs: Vec<std::path::PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("CREST_BINDIR") {
        dirs.push(d.into());
    }
    if let Some(lib) = sys::own_path() {
        if let Some(d) = lib.parent() {
            dirs.push(d.to_path_buf());
            dirs.push(d.join("../bin"));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let found = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| name.into());
    CString::new(found.into_os_string().into_encoded_bytes()).unwrap_or_default()
}

fn cstrings(v: &[String]) -> Vec<CString> {
    v.iter().map(|s| CString::new(s.as_str()).unwrap_or_default()).collect()
}

/// `cr_request_checkpoint`: starts `cr_checkpoint` on the process's behalf; the handle.
pub fn request_checkpoint(r: &SelfRequest) -> Result<u64, Errno> {
    if !(0..=3).contains(&r.scope) {
        return Err(libc::EINVAL);
    }
    if r.signal < 0 || r.signal >= 65 {
        return Err(libc::EINVAL);
    }
    init();
    let slot = REQ_STATE.iter().position(|s| s.compare_exchange(FREE, PENDING_REQ, SeqCst, SeqCst).is_ok()).ok_or(libc::EAGAIN)?;
    let me = std::process::id() as i32;
    let (pgrp, sid) = sys::pgrp_and_session();
    let target = match (r.target, r.scope) {
        (0, 1) => pgrp,
        (0, 2) => sid,
        (0, _) => me,
        (t, _) => t,
    };
    let mut args = vec!["cr_checkpoint".to_string(), ["--pid", "--pgid", "--sid", "--tree"][r.scope as usize].to_string()];
    // Its messages go to the request's log (cr_log_checkpoint); with CREST_LIBCR_VERBOSE to
    // this process's standard error, with its progress.
    let verbose = std::env::var_os("CREST_LIBCR_VERBOSE").is_some();
    if verbose {
        args.push("--verbose".into());
    }
    match r.fd {
        Some(fd) => args.extend(["--fd".to_string(), fd.to_string()]),
        None => args.push("--cwd".into()),
    }
    if r.signal > 0 {
        args.extend(["--signal".to_string(), r.signal.to_string()]);
    }
    if r.timeout > 0 {
        args.extend(["--time".to_string(), r.timeout.to_string()]);
    }
    for (bit, opt) in [(0x200, "--save-exe"), (0x400, "--save-private"), (0x800, "--save-shared")] {
        if r.flags & bit != 0 {
            args.push(opt.into());
        }
    }
    args.push(target.to_string());
    let mut argv = cstrings(&args);
    argv[0] = helper("cr_checkpoint");
    let tid = THREAD_TID.load(SeqCst);
    let mut env: Vec<String> = std::env::vars_os().filter(|(k, _)| k != proto::NOTIFY_ENV && k != proto::REQUESTER_ENV).filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v.to_str()?))).collect();
    env.push(format!("{}={me}:{tid}:{}", proto::NOTIFY_ENV, slot + 1));
    env.push(format!("{}={me}", proto::REQUESTER_ENV));
    let envp = cstrings(&env);
    // cr_checkpoint is a child of this process, left out of the checkpoint by its own choice;
    // ptrace_scope 1 lets a process trace only its descendants, not its parent: allowed here.
    let log = if verbose { None } else { new_log(slot as u64 + 1) };
    let pid = sys::spawn(&argv, &envp, r.fd.as_slice(), log, sys::allow_tracer).inspect_err(|_| REQ_STATE[slot].store(FREE, SeqCst)).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    REQ_HELPER[slot].store(pid, SeqCst);
    Ok(slot as u64 + 1)
}

/// Waits up to `timeout` (forever: `None`) for self-checkpoint `handle`; whether it ended.
pub fn wait_request(handle: u64, timeout: Option<Duration>) -> Result<bool, Errno> {
    let i = slot_of(handle)?;
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let s = REQ_STATE[i].load(SeqCst);
        if s != PENDING_REQ {
            return Ok(true);
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(std::time::Instant::now()) {
                Some(l) if !l.is_zero() => Some(l),
                _ => return Ok(false),
            },
            None => None,
        };
        sys::futex_wait(&REQ_STATE[i], s, left);
    }
}

fn slot_of(handle: u64) -> Result<usize, Errno> {
    let i = (handle as usize).wrapping_sub(1);
    if i >= SLOTS || REQ_STATE[i].load(SeqCst) == FREE {
        return Err(libc::EINVAL);
    }
    Ok(i)
}

/// Collects self-checkpoint `handle`: `Ok` when done, the errno otherwise
/// (`EAGAIN` not yet; `CR_ERESTARTED` in the restarted copy).
pub fn reap_request(handle: u64) -> Result<(), Errno> {
    let i = slot_of(handle)?;
    let s = REQ_STATE[i].load(SeqCst);
    if s == PENDING_REQ {
        return Err(libc::EAGAIN);
    }
    let e = REQ_RESULT[i].load(SeqCst);
    drop_log(handle);
    REQ_STATE[i].store(FREE, SeqCst);
    match (s, e) {
        (RESTARTED, _) => Err(c::ERESTARTED),
        (_, 0) => Ok(()),
        (_, e) => Err(e),
    }
}

/// A restart asked for (`cr_request_restart`).
struct Restart {
    /// Where the outcome comes: its number is the restart's handle, owned here until
    /// `cr_reap_restart` drops it.
    pipe: std::fs::File,
    /// The `cr_restart` child telling it.
    pid: i32,
    /// Its line, once read.
    line: Option<String>,
}

impl Restart {
    fn handle(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.pipe)
    }
}

/// Restarts asked for, by handle.
static RESTARTS: Mutex<Vec<Restart>> = Mutex::new(Vec::new());

/// The line restart `handle` told, once there (`Ok(None)`: not yet), read at most once.
fn restart_line(handle: i32) -> Result<Option<String>, Errno> {
    let mut all = lock(&RESTARTS);
    let r = all.iter_mut().find(|r| r.handle() == handle).ok_or(libc::EINVAL)?;
    if r.line.is_none() {
        if !sys::wait_readable(handle, Some(Duration::ZERO)).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))? {
            return Ok(None);
        }
        // One write of one line by cr_restart, or end of file if it died first.
        let mut buf = [0u8; 4096];
        let n = std::io::Read::read(&mut &r.pipe, &mut buf).unwrap_or(0);
        r.line = Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_string());
    }
    Ok(r.line.clone())
}

/// `cr_request_restart`: starts `cr_restart` as a child with the image at `fd`, on behalf of
/// this process; the handle, a descriptor on which `cr_restart` tells the outcome once the
/// restart is complete ([`proto::RESTART_NOTIFY_ENV`]).
pub fn request_restart(fd: i32, flags: u32, signal: i32, relocations: &[(String, String)]) -> Result<i32, Errno> {
    let mut args = vec!["cr_restart".to_string()];
    if flags & 0x2 == 0 {
        args.push("--no-restore-pid".into());
    }
    if flags & 0x4 != 0 {
        args.push("--restore-pgid".into());
    }
    if flags & 0x8 != 0 {
        args.push("--restore-sid".into());
    }
    if signal > 0 {
        args.extend(["--signal".to_string(), signal.to_string()]);
    }
    for (o, n) in relocations {
        args.push(format!("--relocate={}={}", o.replace('\\', "\\\\").replace('=', "\\="), n.replace('\\', "\\\\").replace('=', "\\=")));
    }
    args.extend(["--fd".to_string(), fd.to_string()]);
    let mut argv = cstrings(&args);
    argv[0] = helper("cr_restart");
    let (rd, wr) = sys::pipe().map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    let wr_fd = std::os::fd::AsRawFd::as_raw_fd(&wr);
    let mut env: Vec<String> =
        std::env::vars_os().filter(|(k, _)| k != proto::REQUESTER_ENV && k != proto::RESTART_NOTIFY_ENV).filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v.to_str()?))).collect();
    env.push(format!("{}={}", proto::REQUESTER_ENV, std::process::id()));
    env.push(format!("{}={wr_fd}", proto::RESTART_NOTIFY_ENV));
    // cr_restart keeps this process's standard error: it may hand it to the restored processes.
    let pid = sys::spawn(&argv, &cstrings(&env), &[fd, wr_fd], None, |_| {}).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    drop(wr);
    let r = Restart { pipe: rd.into(), pid, line: None };
    let handle = r.handle();
    lock(&RESTARTS).push(r);
    Ok(handle)
}

/// `cr_log_restart`: the message of a failed restart (`cr_restart` tells it with the failure).
pub fn restart_log(handle: i32) -> Vec<u8> {
    match restart_line(handle) {
        Ok(Some(l)) if l.starts_with("ERR ") => l.splitn(3, ' ').nth(2).map(|m| format!("{m}\n").into_bytes()).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Waits up to `timeout` (forever: `None`) for restart `handle` to be complete; whether it is.
pub fn wait_restart(handle: i32, timeout: Option<Duration>) -> Result<bool, Errno> {
    if !lock(&RESTARTS).iter().any(|r| r.handle() == handle && r.line.is_none()) {
        return if lock(&RESTARTS).iter().any(|r| r.handle() == handle) { Ok(true) } else { Err(libc::EINVAL) };
    }
    sys::wait_readable(handle, timeout).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// Collects restart `handle`: as BLCR, the PID of the eldest restored process (0 when it is
/// not a child of the caller, which it never is here: `cr_restart` is its parent), or the errno
/// of the failure (`EAGAIN`: not complete yet).
pub fn reap_restart(handle: i32) -> Result<i32, Errno> {
    let line = restart_line(handle)?.ok_or(libc::EAGAIN)?;
    let pid = {
        let mut all = lock(&RESTARTS);
        let pid = all.iter().find(|r| r.handle() == handle).map_or(0, |r| r.pid);
        // Its pipe is closed as it leaves the table.
        all.retain(|r| r.handle() != handle);
        pid
    };
    if let Ok(eldest) = line.parse::<i32>() {
        return Ok(eldest);
    }
    // A failure: cr_restart's exit status is the errno (& 0xff; BLCR's own codes come back
    // whole), as for a checkpoint.
    let code = match line.strip_prefix("ERR ").and_then(|c| c.split(' ').next()?.parse::<i32>().ok()) {
        Some(c) => c,
        None => sys::try_reap(pid, true).unwrap_or(libc::EIO),
    };
    let _ = sys::try_reap(pid, false);
    Err(match code {
        0 => libc::EIO,
        c @ 50..=61 => 2304 + c,
        c => c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_own_tree_is_let_trace() {
        let me = std::process::id() as i32;
        let parent = std::os::unix::process::parent_id() as i32;
        assert_eq!(parent_of(me), parent);
        assert!(descends_from(me, me) && descends_from(me, parent) && !descends_from(parent, me));
        let mut child = std::process::Command::new("sleep").arg("10").spawn().expect("sleep");
        let pid = child.id() as i32;
        // A checkpoint run by this process's child, asked for by this process: its own.
        let own = asked_by_own_tree(me, pid);
        // Asked for by its parent (no libcr there), or by the child of another: not.
        let parents = asked_by_own_tree(parent, pid);
        let others = asked_by_own_tree(pid, me);
        let _ = child.kill();
        let _ = child.wait();
        assert!(own && !parents && !others);
    }
}
