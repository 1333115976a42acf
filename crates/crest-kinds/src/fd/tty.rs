//! Terminals that lead outside the image. A terminal on standard input, output or error (the
//! user's shell, an ssh session) follows `cr_restart`'s own, as in BLCR ([`super::inherited`]);
//! one open at any other number is refused, named. Pseudo-terminals whose master is in the
//! image are saved whole ([`super::pty`]); a slave whose master is outside comes here.
use std::fs::Metadata;
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

/// The record of terminal `link` at descriptor `fd`, which leads outside the image: handed
/// over from `cr_restart` on standard input, output or error, refused elsewhere.
pub(super) fn outside(cx: &mut DumpCx<'_>, fd: i32, link: &str) -> Result<FdKind, KindError> {
    super::inherited::outside(cx, fd, StdioClass::Terminal, true, format!("the terminal {link}"), "a terminal is only kept on standard input, output or error")
}

impl FdHandler for Tty {
    fn name(&self) -> &'static str {
        "terminal"
    }
    fn claims(&self, _link: &str, md: &Metadata) -> bool {
        md.file_type().is_char_device() && is_terminal(md.rdev())
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, _md: &Metadata, _info: &FdInfo) -> Result<FdKind, KindError> {
        outside(cx, fd, link)
    }
}
