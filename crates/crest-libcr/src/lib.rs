//! libcr for crest: BLCR's application interface, with BLCR's C names, types, constants and
//! semantics (`include/libcr.h`), for programs and MPI libraries that register checkpoint
//! callbacks, hold checkpoints off in critical sections, or checkpoint themselves.
//!
//! There is no kernel module: a process that called `cr_init` has a thread named
//! `crest-libcr`, which `cr_checkpoint` finds and asks, by a queued real-time signal, to run
//! the callbacks before it freezes the process; the thread answers over an abstract unix socket
//! and closes it, then waits for the outcome (continue, failure, or restart, which
//! `cr_restart` tells it). A checkpoint of oneself runs `cr_checkpoint` as a helper. The
//! protocol is `crest_ptrace::libcr`; docs/architecture.md, "libcr", tells the whole of it.
//!
//! This file is the C boundary: every `unsafe` of the exported functions is here (pointers
//! from C read and written) or in [`sys`] (system calls); [`core`] holds the logic.
#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

pub mod core;
mod sys;

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr, CString};
use std::sync::Mutex;
use std::time::Duration;

use crate::core::c;

/// `cr_client_id_t`, `cr_callback_id_t`, `cr_version_t`, `cr_scope_t`, `cr_hook_event_t`.
pub type cr_client_id_t = c_int;
pub type cr_callback_id_t = c_int;
pub type cr_version_t = c_int;
pub type cr_scope_t = c_int;
pub type cr_hook_event_t = c_int;
pub type cr_callback_t = Option<extern "C" fn(*mut c_void) -> c_int>;
pub type cr_hook_fn_t = Option<extern "C" fn(cr_hook_event_t)>;
pub type cr_checkpoint_handle_t = c_ulong;
pub type cr_restart_handle_t = c_ulong;
pub type cr_spinlock_t = c_uint;

/// `cr_checkpoint_args_t` (28 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cr_checkpoint_args_t {
    pub cr_version: cr_version_t,
    pub cr_scope: cr_scope_t,
    pub cr_target: libc::pid_t,
    pub cr_fd: c_int,
    pub cr_signal: c_int,
    pub cr_timeout: c_uint,
    pub cr_flags: c_uint,
}

/// `struct cr_rstrt_relocate_pair`.
#[repr(C)]
pub struct cr_rstrt_relocate_pair {
    pub oldpath: *const c_char,
    pub newpath: *const c_char,
}

/// `struct cr_rstrt_relocate`: a count, then that many pairs.
#[repr(C)]
pub struct cr_rstrt_relocate {
    pub count: c_uint,
    pub path: [cr_rstrt_relocate_pair; 0],
}

/// `cr_restart_args_t` (24 bytes).
#[repr(C)]
pub struct cr_restart_args_t {
    pub cr_version: cr_version_t,
    pub cr_fd: c_int,
    pub cr_signal: c_int,
    pub cr_flags: c_uint,
    pub cr_relocate: *mut cr_rstrt_relocate,
}

/// `struct cr_checkpoint_info`.
#[repr(C)]
pub struct cr_checkpoint_info {
    pub signal: c_int,
    pub dest: *const c_char,
    pub requester: libc::pid_t,
    pub target: libc::pid_t,
    pub scope: cr_scope_t,
}

/// `struct cr_restart_info`.
#[repr(C)]
pub struct cr_restart_info {
    pub requester: libc::pid_t,
    pub src: *const c_char,
}

/// `CR_CHECKPOINT_ARGS_VERSION`, `CR_RESTART_ARGS_VERSION`.
pub const CR_CHECKPOINT_ARGS_VERSION: c_int = 1;
pub const CR_RESTART_ARGS_VERSION: c_int = 1;
/// `CR_DEST_CWD`.
pub const CR_DEST_CWD: c_int = -4096;
/// `CR_POLL_CHKPT_ERR_PRE` / `_POST`, and the restart ones (the same numbers).
pub const CR_POLL_ERR_PRE: c_int = -1;
pub const CR_POLL_ERR_POST: c_int = -2;

/// BLCR's error codes, from `CR_MIN_ERRCODE` (2353) on, with `cr_strerror`'s texts.
pub const ERRCODES: [(&str, c_int, &CStr); 12] = [
    ("CR_ETEMPFAIL", 2354, c"Temporary error: checkpoint cancelled"),
    ("CR_EPERMFAIL", 2355, c"Permanent failure: checkpoint cancelled and job killed"),
    ("CR_ENOSUPPORT", 2356, c"Checkpoint support not linked into one or more processes"),
    ("CR_EVERSION", 2357, c"Requested kernel interface version is not supported"),
    ("CR_EOMITTED", 2358, c"Process omitted from checkpoint at a callback's request"),
    ("CR_EBADARCH", 2359, c"Context file does not match the kernel architecture"),
    ("CR_EPTRACED", 2360, c"One or more target processes is being ptraced"),
    ("CR_EPTRACER", 2361, c"One or more target processes has ptrace children"),
    ("CR_ERSTRTABRT", 2362, c"Restart aborted: restart cancelled and job killed"),
    ("CR_ERESTARTED", 2363, c"Request is invalid across a restart"),
    ("CR_ENOTCB", 2364, c"Call is only valid from a checkpoint callback"),
    ("CR_ENOINIT", 2365, c"Calling thread has not called cr_init()"),
];

/// `cr_link_me` (for `-u cr_link_me` in static links) and `cri_signum` (BLCR's CR_SIGNUM).
#[no_mangle]
pub static cr_link_me: c_int = 0;
#[no_mangle]
pub static cri_signum: c_int = crest_ptrace::libcr::SIGNUM;

fn fail<T>(errno: i32, value: T) -> T {
    sys::set_errno(errno);
    value
}

fn result(r: Result<c_int, i32>) -> c_int {
    r.unwrap_or_else(|e| fail(e, -1))
}

/// The handler of CR_SIGNUM: runs this thread's signal-context callbacks when the libcr thread
/// asks; every other use of the signal is ignored. errno is kept for the interrupted code.
pub(crate) extern "C" fn signal_handler(_sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    let saved = sys::errno();
    // SAFETY: the kernel's siginfo for an SA_SIGINFO handler.
    let t = unsafe { sys::taken_from(info) };
    core::on_signal(&t);
    sys::set_errno(saved);
}

/// The registrations a running callback's frame points into.
pub(crate) fn frame_chain(ptr: *const core::Entry, len: usize) -> &'static [core::Entry] {
    // SAFETY: `ptr`/`len` describe the chain `core::call_from` runs, which lives in its caller
    // on this thread's stack for as long as any frame pointing into it is on the frame stack;
    // the slice is used only during that time (inside the callback's cr_checkpoint).
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// Calls the hook at address `addr` (0: none) with `event`.
pub(crate) fn call_hook(addr: usize, event: c_int) {
    if addr == 0 || addr == usize::MAX {
        return;
    }
    // SAFETY: a non-null address given to cr_register_hook as a `cr_hook_fn_t`.
    let f: extern "C" fn(cr_hook_event_t) = unsafe { std::mem::transmute::<usize, extern "C" fn(cr_hook_event_t)>(addr) };
    f(event);
}

#[no_mangle]
pub extern "C" fn cr_init() -> cr_client_id_t {
    core::init()
}

#[no_mangle]
pub unsafe extern "C" fn cri_init_checkpoint_args_t(version: cr_version_t, args: *mut cr_checkpoint_args_t) -> c_int {
    if version != CR_CHECKPOINT_ARGS_VERSION || args.is_null() {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: a non-null pointer to the caller's struct.
    unsafe { *args = cr_checkpoint_args_t { cr_version: version, cr_scope: -1, cr_target: 0, cr_fd: -1, cr_signal: 0, cr_timeout: 0, cr_flags: 0 } };
    0
}

#[no_mangle]
pub unsafe extern "C" fn cri_init_restart_args_t(version: cr_version_t, args: *mut cr_restart_args_t) -> c_int {
    if version != CR_RESTART_ARGS_VERSION || args.is_null() {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: a non-null pointer to the caller's struct.
    unsafe { *args = cr_restart_args_t { cr_version: version, cr_fd: -1, cr_signal: 0, cr_flags: 0x2, cr_relocate: std::ptr::null_mut() } };
    0
}

#[no_mangle]
pub extern "C" fn cr_register_callback(func: cr_callback_t, arg: *mut c_void, flags: c_int) -> cr_callback_id_t {
    result(core::register(func, arg as usize, flags))
}

#[no_mangle]
pub extern "C" fn cr_replace_callback(id: cr_callback_id_t, func: cr_callback_t, arg: *mut c_void, flags: c_int) -> c_int {
    result(core::replace(id, func, arg as usize, flags).map(|()| 0))
}

#[no_mangle]
pub extern "C" fn cr_replace_self(func: cr_callback_t, arg: *mut c_void, flags: c_int) -> c_int {
    result(core::replace_self(func, arg as usize, flags).map(|()| 0))
}

#[no_mangle]
pub extern "C" fn cr_checkpoint(flags: c_int) -> c_int {
    core::checkpoint(flags)
}

/// The info of the current request, kept where C may read it until the next request.
static CHECKPOINT_INFO: Mutex<Option<(Box<cr_checkpoint_info>, CString)>> = Mutex::new(None);
static RESTART_INFO: Mutex<Option<(Box<cr_restart_info>, CString)>> = Mutex::new(None);

// SAFETY: the structs hold pointers into the CStrings kept beside them; both are only read.
unsafe impl Send for cr_checkpoint_info {}
// SAFETY: as above.
unsafe impl Send for cr_restart_info {}

#[no_mangle]
pub extern "C" fn cr_get_checkpoint_info() -> *const cr_checkpoint_info {
    let Some(i) = core::checkpoint_info() else { return fail(c::ENOTCB, std::ptr::null()) };
    let mut keep = CHECKPOINT_INFO.lock().unwrap_or_else(|p| p.into_inner());
    let dest = CString::new(i.dest).unwrap_or_default();
    let b = Box::new(cr_checkpoint_info { signal: i.signal, dest: dest.as_ptr(), requester: i.requester, target: i.target, scope: i.scope });
    let p = &*b as *const cr_checkpoint_info;
    // The previous one is leaked rather than freed: a callback of this request may hold it.
    if let Some(old) = keep.replace((b, dest)) {
        std::mem::forget(old);
    }
    p
}

#[no_mangle]
pub extern "C" fn cr_get_restart_info() -> *const cr_restart_info {
    let Some((requester, src)) = core::restart_info() else { return std::ptr::null() };
    let mut keep = RESTART_INFO.lock().unwrap_or_else(|p| p.into_inner());
    let src = CString::new(src).unwrap_or_default();
    let b = Box::new(cr_restart_info { requester, src: src.as_ptr() });
    let p = &*b as *const cr_restart_info;
    if let Some(old) = keep.replace((b, src)) {
        std::mem::forget(old);
    }
    p
}

#[no_mangle]
pub extern "C" fn cr_forward_checkpoint(scope: cr_scope_t, target: libc::pid_t) -> c_int {
    result(core::forward(scope, target).map(|()| 0))
}

#[no_mangle]
pub extern "C" fn cr_enter_cs(_id: cr_client_id_t) -> c_int {
    result(core::enter_cs(true).map(|_| 0))
}

#[no_mangle]
pub extern "C" fn cr_tryenter_cs(_id: cr_client_id_t) -> c_int {
    result(core::enter_cs(false).map(|entered| if entered { 0 } else { 1 }))
}

#[no_mangle]
pub extern "C" fn cr_leave_cs(_id: cr_client_id_t) -> c_int {
    result(core::leave_cs().map(|()| 0))
}

#[no_mangle]
pub extern "C" fn cr_status() -> c_int {
    result(core::status())
}

#[no_mangle]
pub extern "C" fn cr_register_hook(event: cr_hook_event_t, hook: cr_hook_fn_t) -> cr_hook_fn_t {
    let addr = hook.map_or(0, |f| f as usize);
    match core::register_hook(event, addr) {
        // SAFETY: a previous value was given to this function as a `cr_hook_fn_t`.
        Ok(old) => (old != 0).then(|| unsafe { std::mem::transmute::<usize, extern "C" fn(cr_hook_event_t)>(old) }),
        // SAFETY: CR_HOOK_FN_ERROR is ~0UL in BLCR's header, a non-null value C compares with.
        Err(e) => fail(e, Some(unsafe { std::mem::transmute::<usize, extern "C" fn(cr_hook_event_t)>(usize::MAX) })),
    }
}

#[no_mangle]
pub extern "C" fn cr_hold_ctrl(scope: c_int, flags: c_int) -> c_int {
    result(core::hold_ctrl(scope, flags))
}

#[no_mangle]
pub extern "C" fn cr_inc_persist() -> c_int {
    result(core::persist(1))
}

#[no_mangle]
pub extern "C" fn cr_dec_persist() -> c_int {
    result(core::persist(-1))
}

#[no_mangle]
pub unsafe extern "C" fn cr_spinlock_init(l: *mut cr_spinlock_t) {
    // SAFETY: the caller's lock word, used as an atomic.
    unsafe { (*(l as *const std::sync::atomic::AtomicU32)).store(0, std::sync::atomic::Ordering::SeqCst) };
}

#[no_mangle]
pub unsafe extern "C" fn cr_spinlock_trylock(l: *mut cr_spinlock_t) -> c_int {
    // SAFETY: as above.
    let a = unsafe { &*(l as *const std::sync::atomic::AtomicU32) };
    a.compare_exchange(0, 1, std::sync::atomic::Ordering::Acquire, std::sync::atomic::Ordering::Relaxed).is_ok() as c_int
}

#[no_mangle]
pub unsafe extern "C" fn cr_spinlock_lock(l: *mut cr_spinlock_t) {
    // SAFETY: as above.
    while unsafe { cr_spinlock_trylock(l) } == 0 {
        std::hint::spin_loop();
    }
}

#[no_mangle]
pub unsafe extern "C" fn cr_spinlock_unlock(l: *mut cr_spinlock_t) {
    // SAFETY: as above.
    unsafe { (*(l as *const std::sync::atomic::AtomicU32)).store(0, std::sync::atomic::Ordering::Release) };
}

#[no_mangle]
pub extern "C" fn cr_strerror(errnum: c_int) -> *const c_char {
    if let Some((_, _, text)) = ERRCODES.iter().find(|(_, v, _)| *v == errnum) {
        return text.as_ptr();
    }
    if (2353..=2366).contains(&errnum) {
        return c"Unknown error".as_ptr();
    }
    // SAFETY: strerror returns a pointer to a static or thread-local string.
    unsafe { libc::strerror(errnum) }
}

#[no_mangle]
pub unsafe extern "C" fn cr_request_checkpoint(args: *const cr_checkpoint_args_t, handle: *mut cr_checkpoint_handle_t) -> c_int {
    if args.is_null() || handle.is_null() {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: non-null pointers to the caller's values.
    let a = unsafe { *args };
    if a.cr_version != CR_CHECKPOINT_ARGS_VERSION {
        return fail(libc::EINVAL, -1);
    }
    let fd = match a.cr_fd {
        CR_DEST_CWD => None,
        fd if fd >= 0 => Some(fd),
        _ => return fail(libc::EBADF, -1),
    };
    let r = core::SelfRequest { scope: a.cr_scope, target: a.cr_target, fd, signal: a.cr_signal, timeout: a.cr_timeout, flags: a.cr_flags };
    match core::request_checkpoint(&r) {
        Ok(h) => {
            // SAFETY: as above.
            unsafe { *handle = h };
            0
        }
        Err(e) => fail(e, -1),
    }
}

/// A `struct timeval *` as a wait: `None` forever.
unsafe fn timeout_of(tv: *mut libc::timeval) -> Option<Duration> {
    if tv.is_null() {
        return None;
    }
    // SAFETY: the caller's timeval.
    let t = unsafe { *tv };
    Some(Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64))
}

#[no_mangle]
pub unsafe extern "C" fn cr_wait_checkpoint(handle: *mut cr_checkpoint_handle_t, tv: *mut libc::timeval) -> c_int {
    if handle.is_null() {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: non-null pointers from the caller.
    let (h, t) = unsafe { (*handle, timeout_of(tv)) };
    match core::wait_request(h, t) {
        Ok(true) => 1,
        Ok(false) => {
            if !tv.is_null() {
                // SAFETY: as above; select() leaves no time left after a timeout.
                unsafe { *tv = libc::timeval { tv_sec: 0, tv_usec: 0 } };
            }
            0
        }
        Err(e) => fail(e, -1),
    }
}

/// Copies the messages `log` into the caller's buffer of `len` bytes (NUL-terminated,
/// truncated); as BLCR, the bytes needed with the NUL, 0 when there are none.
unsafe fn copy_log(log: &[u8], len: c_uint, msg: *mut c_char) -> c_int {
    if log.is_empty() {
        if len > 0 && !msg.is_null() {
            // SAFETY: room for at least one byte in the caller's buffer.
            unsafe { *msg = 0 };
        }
        return 0;
    }
    if len > 0 && !msg.is_null() {
        let n = log.len().min(len as usize - 1);
        // SAFETY: the caller's buffer holds `len` bytes; n + 1 <= len are written.
        unsafe {
            std::ptr::copy_nonoverlapping(log.as_ptr(), msg as *mut u8, n);
            *msg.add(n) = 0;
        }
    }
    (log.len() + 1).min(c_int::MAX as usize) as c_int
}

/// The messages `log` in a buffer from `malloc` (the caller frees it), or null when none.
fn malloc_log(log: &[u8]) -> *mut c_char {
    if log.is_empty() {
        return std::ptr::null_mut();
    }
    // SAFETY: malloc of the size needed; null is handled.
    let p = unsafe { libc::malloc(log.len() + 1) } as *mut c_char;
    if !p.is_null() {
        // SAFETY: a fresh buffer of len + 1 bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(log.as_ptr(), p as *mut u8, log.len());
            *p.add(log.len()) = 0;
        }
    }
    p
}

#[no_mangle]
pub unsafe extern "C" fn cr_log_checkpoint(handle: *mut cr_checkpoint_handle_t, len: c_uint, msg: *mut c_char) -> c_int {
    if handle.is_null() {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: the caller's handle and buffer.
    unsafe { copy_log(&core::log(*handle), len, msg) }
}

#[no_mangle]
pub unsafe extern "C" fn cr_reap_checkpoint(handle: *mut cr_checkpoint_handle_t) -> c_int {
    if handle.is_null() {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: the caller's handle.
    let h = unsafe { *handle };
    result(core::reap_request(h).map(|()| 0))
}

#[no_mangle]
pub unsafe extern "C" fn cr_poll_checkpoint_msg(handle: *mut cr_checkpoint_handle_t, tv: *mut libc::timeval, msg_p: *mut *mut c_char) -> c_int {
    if !msg_p.is_null() {
        // SAFETY: the caller's pointer; set below once there are messages.
        unsafe { *msg_p = std::ptr::null_mut() };
    }
    // SAFETY: the caller's pointers, passed on.
    match unsafe { cr_wait_checkpoint(handle, tv) } {
        0 => 0,
        r if r < 0 => CR_POLL_ERR_PRE,
        _ => {
            if !msg_p.is_null() {
                // SAFETY: the caller's pointers: its handle, and where the messages go.
                unsafe { *msg_p = malloc_log(&core::log(*handle)) };
            }
            // SAFETY: as above.
            match unsafe { cr_reap_checkpoint(handle) } {
                0 => 1,
                _ => CR_POLL_ERR_POST,
            }
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn cr_poll_checkpoint(handle: *mut cr_checkpoint_handle_t, tv: *mut libc::timeval) -> c_int {
    // SAFETY: the caller's pointers, passed on.
    unsafe { cr_poll_checkpoint_msg(handle, tv, std::ptr::null_mut()) }
}

#[no_mangle]
pub unsafe extern "C" fn cr_request_restart(args: *const cr_restart_args_t, handle: *mut cr_restart_handle_t) -> c_int {
    if args.is_null() || handle.is_null() {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: the caller's struct.
    let a = unsafe { &*args };
    if a.cr_version != CR_RESTART_ARGS_VERSION || a.cr_fd < 0 {
        return fail(if a.cr_fd < 0 { libc::EBADF } else { libc::EINVAL }, -1);
    }
    let mut relocations = Vec::new();
    if !a.cr_relocate.is_null() {
        // SAFETY: a relocation list of `count` pairs of C strings, as BLCR's header lays it out.
        unsafe {
            let r = &*a.cr_relocate;
            if r.count > 16 {
                return fail(libc::EINVAL, -1);
            }
            let pairs = std::slice::from_raw_parts(r.path.as_ptr(), r.count as usize);
            for p in pairs {
                if p.oldpath.is_null() || p.newpath.is_null() {
                    return fail(libc::EINVAL, -1);
                }
                relocations.push((CStr::from_ptr(p.oldpath).to_string_lossy().into_owned(), CStr::from_ptr(p.newpath).to_string_lossy().into_owned()));
            }
        }
    }
    match core::request_restart(a.cr_fd, a.cr_flags, a.cr_signal, &relocations) {
        Ok(h) => {
            // SAFETY: the caller's handle.
            unsafe { *handle = h as c_ulong };
            0
        }
        Err(e) => fail(e, -1),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cr_wait_restart(handle: *mut cr_restart_handle_t, tv: *mut libc::timeval) -> c_int {
    if handle.is_null() {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: the caller's pointers.
    let (h, t) = unsafe { (*handle as i32, timeout_of(tv)) };
    match core::wait_restart(h, t) {
        Ok(true) => 1,
        Ok(false) => {
            if !tv.is_null() {
                // SAFETY: as above; select() leaves no time left after a timeout.
                unsafe { *tv = libc::timeval { tv_sec: 0, tv_usec: 0 } };
            }
            0
        }
        Err(e) => fail(e, -1),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cr_log_restart(handle: *mut cr_restart_handle_t, len: c_uint, msg: *mut c_char) -> c_int {
    if handle.is_null() {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: the caller's handle and buffer.
    unsafe { copy_log(&core::restart_log(*handle as i32), len, msg) }
}

#[no_mangle]
pub unsafe extern "C" fn cr_reap_restart(handle: *mut cr_restart_handle_t) -> c_int {
    if handle.is_null() {
        return fail(libc::EINVAL, -1);
    }
    // SAFETY: the caller's handle.
    let h = unsafe { *handle } as i32;
    result(core::reap_restart(h))
}

#[no_mangle]
pub unsafe extern "C" fn cr_poll_restart_msg(handle: *mut cr_restart_handle_t, tv: *mut libc::timeval, msg_p: *mut *mut c_char) -> c_int {
    if !msg_p.is_null() {
        // SAFETY: the caller's pointer; set below once there are messages.
        unsafe { *msg_p = std::ptr::null_mut() };
    }
    // SAFETY: the caller's pointers, passed on.
    match unsafe { cr_wait_restart(handle, tv) } {
        0 => 0,
        r if r < 0 => CR_POLL_ERR_PRE,
        _ => {
            if !msg_p.is_null() {
                // SAFETY: the caller's pointers: its handle, and where the messages go.
                unsafe { *msg_p = malloc_log(&core::restart_log(*handle as i32)) };
            }
            // SAFETY: as above.
            match unsafe { cr_reap_restart(handle) } {
                r if r >= 0 => r,
                _ => CR_POLL_ERR_POST,
            }
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn cr_poll_restart(handle: *mut cr_restart_handle_t, tv: *mut libc::timeval) -> c_int {
    // SAFETY: the caller's pointers, passed on.
    unsafe { cr_poll_restart_msg(handle, tv, std::ptr::null_mut()) }
}

/// The deprecated self-checkpoints: this process alone, into `fd`; aborts on failure as BLCR.
fn request_self(fd: Option<i32>) {
    if !core::initialised() {
        std::process::abort();
    }
    let r = core::SelfRequest { scope: 0, target: 0, fd, signal: 0, timeout: 0, flags: 0 };
    if core::request_checkpoint(&r).is_err() {
        std::process::abort();
    }
}

#[no_mangle]
pub extern "C" fn cr_request() {
    request_self(None)
}

#[no_mangle]
pub unsafe extern "C" fn cr_request_file(filename: *const c_char) {
    // SAFETY: the caller's NUL-terminated name.
    let fd = unsafe { libc::open(filename, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC, 0o600 as c_uint) };
    if fd < 0 {
        std::process::abort();
    }
    request_self(Some(fd))
}

#[no_mangle]
pub extern "C" fn cr_request_fd(fd: c_int) {
    request_self(Some(fd))
}
