//! Terminals. A terminal on standard input, output or error leads outside the image (the
//! user's shell, an ssh session) and follows `cr_restart`'s own, as in BLCR
//! ([`super::inherited`]). crest does not save terminals yet: a pseudo-terminal master (a
//! terminal emulator, tmux, screen, expect, sshd) and a terminal open at any other number are
//! refused, named ("pty master /dev/ptmx (tty /dev/pts/3)").
use std::fs::Metadata;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crest_image::{FdKind, StdioClass};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler};
use crate::KindError;

/// The handler.
pub struct Tty;

/// Character-device majors of terminals: virtual consoles and serial lines (4), `/dev/tty`,
/// `/dev/console` and `/dev/ptmx` (5), pseudo-terminal slaves (136-143).
fn is_terminal(rdev: u64) -> bool {
    matches!(libc::major(rdev), 4 | 5 | 136..=143)
}

fn is_master(rdev: u64) -> bool {
    libc::major(rdev) == 5 && libc::minor(rdev) == 2
}

impl FdHandler for Tty {
    fn name(&self) -> &'static str {
        "terminal"
    }
    fn claims(&self, _link: &str, md: &Metadata) -> bool {
        md.file_type().is_char_device() && is_terminal(md.rdev())
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, md: &Metadata, _info: &FdInfo) -> Result<FdKind, KindError> {
        if is_master(md.rdev()) {
            let n = cx.pidfd.as_ref().and_then(|p| crest_ptrace::sys::pidfd_getfd(p.as_raw_fd(), fd).ok()).and_then(|c| crest_ptrace::sys::pty_number(c.as_raw_fd()).ok());
            let what = match n {
                Some(n) => format!("the pty master {link} (tty /dev/pts/{n})"),
                None => format!("the pty master {link}"),
            };
            return super::unsupported::refuse(cx, fd, what, "pseudo-terminals are not saved yet");
        }
        super::inherited::outside(cx, fd, StdioClass::Terminal, true, format!("the terminal {link}"), "a terminal is only kept on standard input, output or error")
    }
}
