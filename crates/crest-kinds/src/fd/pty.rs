//! Pseudo-terminals whose master is in the image (a terminal emulator, tmux, screen, `script`,
//! expect): the master (`/dev/ptmx`) and its slaves (`/dev/pts/N`) become [`FdKind::Pty`]
//! records, and the pair is made again once for the image (like a pipe), with the same index
//! when it is free.
//!
//! Dump reads, through a copy of the master (`pidfd_getfd`; the termios ioctls on a master act
//! on its slave), the slave's settings (`TCGETS2`), window size, packet mode, lock, the session
//! whose controlling terminal it is and its foreground group. What is queued in the pair is
//! saved without being lost: the bytes waiting for the master are read from the master copy
//! and put back at once (`TIOCSTI` on the master, whose line discipline is raw); the bytes
//! waiting for the slave (a line being typed included, which the kernel's counters do not
//! show in canonical mode) are read from a slave copy with canonical mode and echo turned off
//! for the moment, and put back the same way as at restart, character by character, with echo
//! and signals off and the characters the line editor would take escaped with `VLNEXT`. Both
//! need `CAP_SYS_ADMIN`; without it a checkpoint that finds bytes queued is refused ("try
//! again").
//!
//! A slave whose master is outside the image (the terminal of the shell `cr_checkpoint` was
//! run from) is left to [`super::tty`]: on standard input, output or error it follows
//! `cr_restart`'s own. A master whose slave is also open in a process outside the image is
//! refused.
//!
//! Restore: `cr_restart` opens `/dev/ptmx` until the saved index comes (devpts hands out the
//! lowest free one; the extra masters are closed again), or takes a new index when the saved
//! one is in use (noted for `cr_restart --verbose`: a program that remembers its terminal's
//! name sees the new one); it unlocks it, opens the slave with `TIOCGPTPEER` and `O_NOCTTY`
//! (no process acquires it by accident), and sets the settings, window size, queued bytes,
//! packet mode and lock. The session leader whose controlling terminal it was takes it with
//! `TIOCSCTTY` in its husk before creating its children's husks, and the first process of the
//! foreground group sets it in the foreground once it is in its group ([`controlling`]).
use std::collections::HashSet;
use std::fs::Metadata;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crest_image::{FdKind, FdRecord, Process, PtyState};
use crest_proc::FdInfo;
use crest_ptrace::sys::{self, TtyInt};

use super::{set_status_flags, DumpCx, FdHandler, Opened, PrepareCx};
use crate::{KindError, ObjId};

/// The handler.
pub struct Pty;

const CAP_SYS_ADMIN: u32 = 21;

/// `/dev/ptmx` (and `/dev/pts/ptmx`): character device 5:2.
fn is_master(rdev: u64) -> bool {
    libc::major(rdev) == 5 && libc::minor(rdev) == 2
}

/// N of `/dev/pts/N` for a slave's device number (majors 136 to 143).
fn slave_index(rdev: u64) -> Option<u32> {
    let major = libc::major(rdev);
    (136..=143).contains(&major).then(|| (major - 136) * 256 + libc::minor(rdev))
}

/// The index of the pair of a master descriptor, from its fdinfo (`tty-index:`).
fn master_index(info: &FdInfo) -> Option<u32> {
    info.text.lines().find_map(|l| l.strip_prefix("tty-index:")).and_then(|v| v.trim().parse().ok())
}

fn is_master_link(link: &str) -> bool {
    link == "/dev/ptmx" || link.ends_with("/pts/ptmx")
}

fn slave_path(index: u32) -> String {
    format!("/dev/pts/{index}")
}

/// Whether this process has `CAP_SYS_ADMIN` in its effective set (for `TIOCSTI`).
fn may_insert() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = crest_proc::status_field(&status, "CapEff").and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).unwrap_or(0);
    eff & (1 << CAP_SYS_ADMIN) != 0
}

/// A process outside the image (`image`: its PIDs) that has the slave `index` open: (pid, fd).
fn slave_outside(index: u32, image: &HashSet<i32>) -> Option<(i32, i32)> {
    let path = slave_path(index);
    let me = std::process::id() as i32;
    for pid in crest_proc::all_pids().ok()? {
        if pid == me || image.contains(&pid) {
            continue;
        }
        for fd in crest_proc::fds(pid).unwrap_or_default() {
            if crest_proc::readlink(pid, &format!("fd/{fd}")).is_ok_and(|l| l == path) && !traced_by_me(pid) {
                return Some((pid, fd));
            }
        }
    }
    None
}

/// Whether `pid` is traced by this process: a copy of a process of the image, forked for a
/// snapshot of its memory (it has the process's descriptors for the moment).
fn traced_by_me(pid: i32) -> bool {
    let status = crest_proc::read(pid, "status").unwrap_or_default();
    crest_proc::status_field(&status, "TracerPid").and_then(|v| v.trim().parse::<u32>().ok()) == Some(std::process::id())
}

/// A copy of descriptor `fd` of process `pid`.
fn copy_of(pid: i32, fd: i32) -> std::io::Result<OwnedFd> {
    let pidfd = sys::pidfd_open(pid)?;
    sys::pidfd_getfd(pidfd.as_raw_fd(), fd)
}

/// Reads exactly `n` bytes that are waiting on `fd`.
fn read_waiting(fd: &OwnedFd, n: usize) -> std::io::Result<Vec<u8>> {
    let mut data = vec![0u8; n];
    let mut got = 0;
    let mut f = std::fs::File::from(fd.try_clone()?);
    while got < n {
        match f.read(&mut data[got..])? {
            0 => break,
            k => got += k,
        }
    }
    data.truncate(got);
    Ok(data)
}

fn termios_of(st: &PtyState) -> sys::Termios2 {
    termios2(st.flags, st.line, &st.cc, st.speed)
}

/// A `struct termios2` of saved settings: the four flag words, the line discipline, the
/// special characters (as many as were saved) and the two speeds.
pub(super) fn termios2(flags: [u32; 4], line: u8, cc: &[u8], speed: (u32, u32)) -> sys::Termios2 {
    let mut t = sys::Termios2 { c_iflag: flags[0], c_oflag: flags[1], c_cflag: flags[2], c_lflag: flags[3], c_line: line, c_cc: Default::default(), c_ispeed: speed.0, c_ospeed: speed.1 };
    for (d, s) in t.c_cc.iter_mut().zip(cc) {
        *d = *s;
    }
    t
}

/// Puts `data` back in the input queue of the slave `tty`, whose settings are `saved`: with echo, signals and input
/// translation off, in canonical mode each character the line editor would take escaped with
/// `VLNEXT` and an end of file (kept as a NUL) typed again as `VEOF`; then `saved` again.
fn insert(tty: i32, saved: &sys::Termios2, data: &[u8]) -> Result<(), String> {
    if data.is_empty() {
        return Ok(());
    }
    let lflag = saved.c_lflag;
    let canon = lflag & libc::ICANON != 0;
    let iexten = lflag & libc::IEXTEN != 0;
    let mut quiet = *saved;
    quiet.c_iflag = 0;
    quiet.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL | libc::ECHOCTL | libc::ECHOPRT | libc::ECHOKE | libc::ISIG);
    sys::set_tty_termios(tty, &quiet).map_err(|e| format!("setting the terminal's settings to put its queued bytes back: {e}"))?;
    let cc = |i: usize| saved.c_cc[i];
    let mut editing: Vec<u8> = [libc::VERASE, libc::VKILL, libc::VEOF].iter().map(|&i| cc(i)).collect();
    if iexten {
        editing.extend([libc::VWERASE, libc::VREPRINT, libc::VLNEXT].iter().map(|&i| cc(i)));
    }
    editing.retain(|&c| c != 0);
    let put = |b: u8| sys::tty_insert(tty, b).map_err(|e| format!("putting the bytes queued on the terminal back (TIOCSTI, which needs CAP_SYS_ADMIN): {e}"));
    let mut result = Ok(());
    for &b in data {
        let r = if canon && b == 0 && cc(libc::VEOF) != 0 {
            put(cc(libc::VEOF))
        } else if canon && editing.contains(&b) {
            if iexten && cc(libc::VLNEXT) != 0 {
                put(cc(libc::VLNEXT)).and_then(|()| put(b))
            } else {
                Err(format!("byte {b:#x} queued on the terminal cannot be put back as it was"))
            }
        } else {
            put(b)
        };
        if let Err(e) = r {
            result = Err(e);
            break;
        }
    }
    sys::set_tty_termios(tty, saved).map_err(|e| format!("setting the terminal's settings: {e}"))?;
    result
}

/// Puts `data` back in the input queue of a pty master: its own line discipline is raw (the
/// settings ioctls on a master act on its slave, never on it), so every byte goes as it is.
fn insert_raw(master: i32, data: &[u8]) -> Result<(), String> {
    for &b in data {
        sys::tty_insert(master, b).map_err(|e| format!("putting the bytes queued for the master back (TIOCSTI, which needs CAP_SYS_ADMIN): {e}"))?;
    }
    Ok(())
}

/// The state of pair `index`, read while its processes are frozen; the bytes queued in it are
/// read and put back at once. `master`: a copy of its master; `slave`: a copy of a slave
/// descriptor of the image, if any.
fn state(index: u32, master: &OwnedFd, slave: Option<&OwnedFd>) -> Result<PtyState, String> {
    let m = master.as_raw_fd();
    let what = |e: std::io::Error, of: &str| format!("reading the {of} of /dev/pts/{index}: {e}");
    let t = sys::tty_termios(m).map_err(|e| what(e, "settings"))?;
    let winsize = sys::tty_winsize(m).map_err(|e| what(e, "window size"))?;
    let packet = sys::tty_int(m, TtyInt::Packet).map_err(|e| what(e, "packet mode"))? != 0;
    let locked = sys::tty_int(m, TtyInt::Lock).map_err(|e| what(e, "lock"))? != 0;
    let session = sys::tty_int(m, TtyInt::Session).unwrap_or(0);
    let foreground = if session == 0 { 0 } else { sys::tty_int(m, TtyInt::Foreground).unwrap_or(0) };
    let mut st = PtyState {
        flags: [t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag],
        line: t.c_line,
        cc: t.c_cc.to_vec(),
        speed: (t.c_ispeed, t.c_ospeed),
        winsize,
        packet,
        locked,
        session,
        foreground,
        input: Vec::new(),
        output: Vec::new(),
        owner: (0, 0, 0o620),
    };
    if let Some(s) = slave {
        let md = std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd())).map_err(|e| what(e, "owner"))?;
        st.owner = (md.uid(), md.gid(), md.mode() & 0o7777);
    }
    let try_again = |n: usize, dir: &str, why: &str| format!("{n} bytes {dir} /dev/pts/{index} are not read yet and {why}: try again");
    // Written by the slave, waiting for the master (whose line discipline is raw).
    let out = sys::bytes_readable(m).map_err(|e| what(e, "output queue"))? as usize;
    if out > 0 {
        if packet {
            return Err(try_again(out, "written to", "a master in packet mode cannot be read without taking its status"));
        }
        if !may_insert() {
            return Err(try_again(out, "written to", "putting them back needs CAP_SYS_ADMIN"));
        }
        st.output = read_waiting(master, out).map_err(|e| what(e, "output queue"))?;
        insert_raw(m, &st.output)?;
    }
    // Written to the master, waiting for the slave: in canonical mode the count shows only
    // complete lines, so with the right to put them back everything is read, else only the
    // count decides.
    if let Some(s) = slave {
        let s_fd = s.as_raw_fd();
        if may_insert() {
            let mut raw = t;
            raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL | libc::ISIG);
            raw.c_cc[libc::VMIN] = 0;
            raw.c_cc[libc::VTIME] = 0;
            sys::set_tty_termios(s_fd, &raw).map_err(|e| what(e, "input queue"))?;
            let n = sys::bytes_readable(s_fd).unwrap_or(0) as usize;
            let data = if n > 0 { read_waiting(s, n) } else { Ok(Vec::new()) };
            let put_back = match &data {
                Ok(d) if !d.is_empty() => insert(s_fd, &t, d),
                _ => sys::set_tty_termios(s_fd, &t).map_err(|e| format!("setting the settings of /dev/pts/{index} back: {e}")),
            };
            st.input = data.map_err(|e| what(e, "input queue"))?;
            put_back?;
        } else {
            let n = sys::bytes_readable(s_fd).map_err(|e| what(e, "input queue"))? as usize;
            if n > 0 {
                return Err(try_again(n, "written for", "putting them back needs CAP_SYS_ADMIN"));
            }
        }
    }
    Ok(st)
}

impl FdHandler for Pty {
    fn name(&self) -> &'static str {
        "pseudo-terminal"
    }
    fn claims(&self, _link: &str, md: &Metadata) -> bool {
        md.file_type().is_char_device() && (is_master(md.rdev()) || slave_index(md.rdev()).is_some())
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let master = is_master(md.rdev());
        let index = if master {
            let copy = || copy_of(cx.pid, fd).and_then(|c| sys::pty_number(c.as_raw_fd()));
            match master_index(info).map(Ok).unwrap_or_else(copy) {
                Ok(n) => n,
                Err(e) => return Err(KindError::io(format!("pid {} fd {fd}: reading the index of the pty master {link}", cx.pid), e)),
            }
        } else {
            slave_index(md.rdev()).unwrap_or(0)
        };
        let holder = cx.all.iter().find(|o| is_master_link(&o.link) && master_index(&o.info) == Some(index)).map(|o| (o.pid, o.fd));
        let Some((mpid, mfd)) = holder.or(master.then_some((cx.pid, fd))) else {
            // The master is outside the image: the user's terminal, as before.
            return super::tty::outside(cx, fd, link);
        };
        let what = format!("the pty master {link} (tty {})", slave_path(index));
        let image: HashSet<i32> = cx.all.iter().map(|o| o.pid).collect();
        if master {
            if let Some((pid, sfd)) = slave_outside(index, &image) {
                return super::unsupported::refuse(cx, fd, what, &format!("its slave is open in PID {pid} (fd {sfd}), which is not in the checkpoint"));
            }
        }
        let mut state = None;
        if cx.seen.insert(ObjId::pty(index)) {
            let path = slave_path(index);
            let err = |e: std::io::Error| KindError::io(format!("pid {mpid} fd {mfd}: a copy of {what}"), e);
            let m = copy_of(mpid, mfd).map_err(err)?;
            let slave = match cx.all.iter().find(|o| o.link == path) {
                Some(o) => Some(copy_of(o.pid, o.fd).map_err(|e| KindError::io(format!("pid {} fd {}: a copy of {path}", o.pid, o.fd), e))?),
                None => None,
            };
            let st = state_or_refuse(index, &m, slave.as_ref(), cx.pid, fd)?;
            if st.session != 0 && !image.contains(&st.session) {
                return Err(KindError::Unsupported(format!(
                    "PID {} fd {fd}: {path} is the controlling terminal of session {}, whose leader is not in the checkpoint: it cannot be given back",
                    cx.pid, st.session
                )));
            }
            state = Some(st);
        }
        Ok(FdKind::Pty { index, master, state })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Pty { .. })
    }
    fn sharing(&self, _kind: &FdKind) -> super::Sharing {
        super::Sharing::Image
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Pty { index, master, state } = kind else { return String::new() };
        let mut s = format!("{} of the pseudo-terminal /dev/pts/{index}", if *master { "master" } else { "slave" });
        if let Some(st) = state {
            s.push_str(&format!(", {}x{}", st.winsize[1], st.winsize[0]));
            s.push_str(if st.flags[3] & libc::ICANON != 0 { ", canonical" } else { ", raw" });
            if st.session != 0 {
                s.push_str(&format!(", controlling terminal of session {} (foreground group {})", st.session, st.foreground));
            }
            if !st.input.is_empty() || !st.output.is_empty() {
                s.push_str(&format!(", {} bytes queued for the slave and {} for the master", st.input.len(), st.output.len()));
            }
        }
        s
    }
    fn open(&self, rec: &FdRecord, cx: &mut PrepareCx) -> Result<Opened, String> {
        let FdKind::Pty { index, master, state } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let id = ObjId::pty(*index);
        let err = |e: std::io::Error| format!("fd {}: pseudo-terminal {index}: {e}", rec.fd);
        if !cx.parked.contains_key(&(id, true)) {
            let (m, got) = make_pair(*index).map_err(err)?;
            if got != *index {
                cx.notes.push(format!("the pseudo-terminal /dev/pts/{index} is in use here: restored as /dev/pts/{got}"));
            }
            sys::set_tty_int(m.as_raw_fd(), TtyInt::Lock, 0).map_err(err)?;
            let s = sys::pty_peer(m.as_raw_fd(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC).map_err(err)?;
            cx.park((id, true), m)?;
            cx.park((id, false), s)?;
        }
        let m = cx.parked[&(id, true)].as_raw_fd();
        if let Some(st) = state {
            apply(m, cx.parked[&(id, false)].as_raw_fd(), st).map_err(|e| format!("fd {}: pseudo-terminal {index}: {e}", rec.fd))?;
        }
        let f = if *master {
            cx.take((id, true)).expect("parked above")?
        } else if cx.handed.insert((id, false)) {
            cx.take((id, false)).expect("parked above")?
        } else {
            // Another open of the slave: unlocked for the moment if it is locked.
            let locked = sys::tty_int(m, TtyInt::Lock).map_err(err)? != 0;
            if locked {
                sys::set_tty_int(m, TtyInt::Lock, 0).map_err(err)?;
            }
            let s = sys::pty_peer(m, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC).map_err(err);
            if locked {
                sys::set_tty_int(m, TtyInt::Lock, 1).map_err(err)?;
            }
            s?
        };
        set_status_flags(&f, rec.flags)?;
        Ok(Opened::Fd(f))
    }
}

/// [`state`], a failure of which refuses the checkpoint naming the descriptor.
fn state_or_refuse(index: u32, master: &OwnedFd, slave: Option<&OwnedFd>, pid: i32, fd: i32) -> Result<PtyState, KindError> {
    state(index, master, slave).map_err(|e| KindError::Unsupported(format!("PID {pid} fd {fd}: {e}")))
}

/// A new pty pair, with index `wanted` when it is free: `/dev/ptmx` is opened until it comes
/// (the extra masters are closed), or the first index above it is taken.
fn make_pair(wanted: u32) -> std::io::Result<(OwnedFd, u32)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut extra = Vec::new();
    loop {
        let m: OwnedFd = std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC).open("/dev/ptmx")?.into();
        let n = sys::pty_number(m.as_raw_fd())?;
        if n >= wanted || extra.len() > 4096 {
            return Ok((m, n));
        }
        extra.push(m);
    }
}

/// Sets the saved state on a new pair: settings, window size, queued bytes, packet mode, lock.
fn apply(master: i32, slave: i32, st: &PtyState) -> Result<(), String> {
    let t = termios_of(st);
    sys::set_tty_winsize(master, st.winsize).map_err(|e| format!("setting its window size: {e}"))?;
    sys::set_tty_termios(slave, &t).map_err(|e| format!("setting its settings: {e}"))?;
    insert(slave, &t, &st.input)?;
    insert_raw(master, &st.output)?;
    let (uid, gid, mode) = st.owner;
    let node = format!("/proc/self/fd/{slave}");
    std::os::unix::fs::chown(&node, Some(uid), Some(gid)).map_err(|e| format!("giving its slave to {uid}:{gid}: {e}"))?;
    std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(|e| format!("setting its slave's mode {mode:o}: {e}"))?;
    if st.packet {
        sys::set_tty_int(master, TtyInt::Packet, 1).map_err(|e| format!("setting packet mode: {e}"))?;
    }
    if st.locked {
        sys::set_tty_int(master, TtyInt::Lock, 1).map_err(|e| format!("locking it: {e}"))?;
    }
    Ok(())
}

/// Which pseudo-terminals of the image were controlling terminals: (index, session,
/// foreground group), as saved.
pub fn controlling(procs: &[Process]) -> Vec<(u32, i32, i32)> {
    let states = procs.iter().flat_map(|p| &p.fds).filter_map(|r| match &r.kind {
        FdKind::Pty { index, state: Some(st), .. } if st.session != 0 => Some((*index, st.session, st.foreground)),
        _ => None,
    });
    states.collect()
}

/// In a session leader's husk: makes the slave parked at `fd` its controlling terminal.
pub fn take_controlling(fd: i32) -> Result<(), String> {
    sys::set_controlling_tty(fd).map_err(|e| format!("taking its controlling terminal: {e}"))
}

/// In a husk of the foreground group: puts its own group in the foreground of the terminal
/// parked at `fd` (its controlling terminal, inherited from the session leader).
pub fn set_foreground(fd: i32) -> Result<(), String> {
    let (pgrp, _) = crest_ptrace::husk::group_and_session();
    sys::set_tty_int(fd, TtyInt::Foreground, pgrp).map_err(|e| format!("setting foreground process group {pgrp} on its terminal: {e}"))
}
