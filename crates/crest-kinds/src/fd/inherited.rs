//! Standard input, output and error that lead outside the image: a terminal, or a pipe or
//! socket to a process that was not checkpointed. As in BLCR, the restored process gets the
//! descriptor of the same number that `cr_restart` itself has, so a program restarted from a
//! shell prints on that shell's terminal or into its pipe. Only descriptors 0, 1 and 2 are
//! handed over so, and only when `cr_restart`'s own is of the same class (checked before
//! anything starts, `crest-cli`'s preflight): nothing else `cr_restart` has open can ever reach
//! the restored process. Anything else leading outside is refused ([`super::unsupported`]).
use std::fs::Metadata;

use crest_image::{FdKind, FdRecord, StdioClass};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler};
use crate::KindError;

/// The handler.
pub struct Inherited;

/// The record for descriptor `fd`, an object of class `class` described by `what`: handed
/// over from `cr_restart` when it is standard input, output or error and `leads_outside` the
/// image; otherwise refused (or dropped on request) because `why`.
pub(super) fn outside(cx: &mut DumpCx<'_>, fd: i32, class: StdioClass, leads_outside: bool, what: String, why: &str) -> Result<FdKind, KindError> {
    if (0..=2).contains(&fd) && leads_outside {
        return Ok(FdKind::Inherited { what, class });
    }
    super::unsupported::refuse(cx, fd, what, why)
}

/// The class of the object behind descriptor `fd` of this process, if it is one that
/// standard input, output or error may be handed over as.
pub fn class_of(fd: i32) -> Option<StdioClass> {
    use std::os::unix::fs::FileTypeExt;
    let md = std::fs::metadata(format!("/proc/self/fd/{fd}")).ok()?;
    let t = md.file_type();
    if crest_ptrace::sys::is_terminal(fd) {
        Some(StdioClass::Terminal)
    } else if t.is_fifo() {
        Some(StdioClass::Pipe)
    } else if t.is_socket() {
        Some(StdioClass::Socket)
    } else {
        None
    }
}

impl FdHandler for Inherited {
    fn name(&self) -> &'static str {
        "inherited"
    }
    fn claims(&self, _link: &str, _md: &Metadata) -> bool {
        false
    }
    fn dump(&self, _cx: &mut DumpCx<'_>, _fd: i32, link: &str, _md: &Metadata, _info: &FdInfo) -> Result<FdKind, KindError> {
        Err(KindError::Unsupported(format!("{link}: not handed over")))
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Inherited { .. })
    }
    fn sharing(&self, _kind: &FdKind) -> super::Sharing {
        super::Sharing::Descriptor
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Inherited { what, .. } = kind else { return String::new() };
        format!("{what} (taken from cr_restart's own descriptor)")
    }
    fn open(&self, _rec: &FdRecord, _cx: &mut super::PrepareCx) -> Result<super::Opened, String> {
        Ok(super::Opened::AsIs)
    }
}
