//! Terminals that are not pseudo-terminals of the image. A terminal on standard input, output
//! or error (the user's shell, an ssh session) follows `cr_restart`'s own, as in BLCR
//! ([`super::inherited`]). A terminal device open at any other number is saved when it is a
//! device that stays where it is (a virtual console, a serial line, `/dev/console`): its path
//! and device number, and the settings that belong to the device (termios, window size, modem
//! lines, exclusive mode, a console's keyboard mode), read through a copy of the descriptor
//! (`pidfd_getfd`: no new open, which on a serial line would raise its modem lines). At
//! restart it is opened again by path with `O_NOCTTY` and each setting that differs from the
//! device's is set again. Refused by name: the slave of a pseudo-terminal whose master is
//! outside the image (its index may be gone), the controlling terminal of a session whose
//! leader is in the image (crest gives a session back a pseudo-terminal only), and a virtual
//! console in graphics mode or switched by its process (`VT_PROCESS`), whose state lives in the
//! kernel's console and in the process together.
use std::fs::Metadata;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crest_image::{FdKind, FdRecord, StdioClass, TermSettings};
use crest_proc::FdInfo;
use crest_ptrace::sys::{self, TtyInt};

use super::{DumpCx, FdHandler};
use crate::KindError;

/// The handler.
pub struct Tty;

/// Character-device majors of terminals: virtual consoles and serial lines (4), `/dev/tty`,
/// `/dev/console` and `/dev/ptmx` (5), pseudo-terminal slaves (136-143).
fn is_terminal(rdev: u64) -> bool {
    matches!(libc::major(rdev), 4 | 5 | 136..=143)
}

/// A terminal device that stays where it is and may be opened again by path: a virtual
/// console or serial line (major 4), or `/dev/console` (5:1).
fn is_device_terminal(rdev: u64) -> bool {
    libc::major(rdev) == 4 || (libc::major(rdev) == 5 && libc::minor(rdev) == 1)
}

/// The record of terminal `link` at descriptor `fd`, which leads outside the image: handed
/// over from `cr_restart` on standard input, output or error, refused elsewhere.
pub(super) fn outside(cx: &mut DumpCx<'_>, fd: i32, link: &str) -> Result<FdKind, KindError> {
    super::inherited::outside(cx, fd, StdioClass::Terminal, true, format!("the terminal {link}"), "a terminal is only kept on standard input, output or error")
}

/// `KD_GRAPHICS` and `VT_PROCESS` (linux/kd.h, linux/vt.h).
const KD_GRAPHICS: i32 = 1;
const VT_PROCESS: u8 = 1;

/// Reads the settings of the terminal behind `tty` (a copy of the process's descriptor).
/// `Err`: why it cannot be saved.
fn settings_of(tty: i32) -> Result<TermSettings, String> {
    let t = sys::tty_termios(tty).map_err(|e| format!("its settings cannot be read ({e})"))?;
    // A device without a window size (a serial line may have none set) reads zeros.
    let winsize = sys::tty_winsize(tty).unwrap_or_default();
    // Virtual consoles: what lives in the console and the process together is refused.
    if sys::tty_int(tty, TtyInt::Display).is_ok_and(|m| m == KD_GRAPHICS) {
        return Err("a virtual console in graphics mode (KD_GRAPHICS), whose screen the process draws itself".into());
    }
    if sys::vt_switch_mode(tty).is_ok_and(|m| m == VT_PROCESS) {
        return Err("a virtual console switched by its process (VT_PROCESS), which the kernel asks with signals before every switch".into());
    }
    Ok(TermSettings {
        flags: [t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag],
        line: t.c_line,
        cc: t.c_cc.to_vec(),
        speed: (t.c_ispeed, t.c_ospeed),
        winsize,
        modem: sys::tty_int(tty, TtyInt::Modem).ok(),
        exclusive: sys::tty_int(tty, TtyInt::Exclusive).is_ok_and(|v| v != 0),
        keyboard: sys::tty_int(tty, TtyInt::Keyboard).ok(),
    })
}

/// Sets on `tty` (just opened) each of `s` that differs from what the device has now.
fn apply(tty: i32, s: &TermSettings) -> Result<(), String> {
    let now = sys::tty_termios(tty).map_err(|e| format!("reading its settings: {e}"))?;
    let t = super::pty::termios2(s.flags, s.line, &s.cc, s.speed);
    let same = [now.c_iflag, now.c_oflag, now.c_cflag, now.c_lflag] == s.flags && now.c_line == t.c_line && now.c_cc == t.c_cc && (now.c_ispeed, now.c_ospeed) == s.speed;
    if !same {
        sys::set_tty_termios(tty, &t).map_err(|e| format!("setting its settings: {e}"))?;
    }
    if sys::tty_winsize(tty).is_ok_and(|w| w != s.winsize) {
        sys::set_tty_winsize(tty, s.winsize).map_err(|e| format!("setting its window size: {e}"))?;
    }
    if let Some(m) = s.modem {
        if sys::tty_int(tty, TtyInt::Modem).is_ok_and(|now| now != m) {
            sys::set_tty_int(tty, TtyInt::Modem, m).map_err(|e| format!("setting its modem lines: {e}"))?;
        }
    }
    if let Some(k) = s.keyboard {
        if sys::tty_int(tty, TtyInt::Keyboard).is_ok_and(|now| now != k) {
            sys::set_tty_int(tty, TtyInt::Keyboard, k).map_err(|e| format!("setting its keyboard mode: {e}"))?;
        }
    }
    if s.exclusive {
        sys::set_tty_int(tty, TtyInt::Exclusive, 1).map_err(|e| format!("making it exclusive: {e}"))?;
    }
    Ok(())
}

impl FdHandler for Tty {
    fn name(&self) -> &'static str {
        "terminal"
    }
    fn claims(&self, _link: &str, md: &Metadata) -> bool {
        md.file_type().is_char_device() && is_terminal(md.rdev())
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, _info: &FdInfo) -> Result<FdKind, KindError> {
        if (0..=2).contains(&fd) || !is_device_terminal(md.rdev()) {
            return outside(cx, fd, link);
        }
        let what = format!("the terminal {link}");
        let Some(pidfd) = cx.pidfd.as_ref() else {
            return super::unsupported::refuse(cx, fd, what, "its settings cannot be read without a pidfd of the process");
        };
        let copy = sys::pidfd_getfd(pidfd.as_raw_fd(), fd).map_err(|e| KindError::io(format!("pid {} fd {fd}: copying {link} to read its settings", cx.pid), e))?;
        if let Ok(sid) = sys::tty_int(copy.as_raw_fd(), TtyInt::Session) {
            if cx.image.contains(&sid) {
                return super::unsupported::refuse(
                    cx,
                    fd,
                    what,
                    &format!("it is the controlling terminal of session {sid}, whose leader is in the checkpoint (a session gets a pseudo-terminal back only)"),
                );
            }
        }
        match settings_of(copy.as_raw_fd()) {
            Ok(settings) => Ok(FdKind::Terminal { path: link.to_string(), rdev: md.rdev(), settings }),
            Err(why) => super::unsupported::refuse(cx, fd, what, &why),
        }
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Terminal { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Terminal { path, rdev, .. } = kind else { return String::new() };
        format!("terminal {path} ({}:{})", libc::major(*rdev), libc::minor(*rdev))
    }
    fn open(&self, rec: &FdRecord, _cx: &mut super::PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Terminal { path, rdev, settings } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let f = super::reopen(path, rec, libc::O_NOCTTY)?;
        let md = f.metadata().map_err(|e| format!("fd {}: {path}: {e}", rec.fd))?;
        if !md.file_type().is_char_device() || md.rdev() != *rdev {
            return Err(format!(
                "fd {}: {path} is no longer the terminal it was at the checkpoint (device {}:{}, now {}:{})",
                rec.fd,
                libc::major(*rdev),
                libc::minor(*rdev),
                libc::major(md.rdev()),
                libc::minor(md.rdev())
            ));
        }
        apply(f.as_raw_fd(), settings).map_err(|e| format!("fd {}: {path}: {e}", rec.fd))?;
        Ok(super::Opened::Fd(f.into()))
    }
}
