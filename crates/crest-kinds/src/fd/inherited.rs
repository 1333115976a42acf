//! Everything that leads outside the image: terminals, pipes and sockets to processes that
//! were not checkpointed, other devices. As in BLCR, the restored process gets the descriptor
//! of the same number that `cr_restart` itself has (so stdio on a terminal or a pipe follows
//! the `cr_restart` command); if `cr_restart` has none, the number stays closed.
use std::fs::Metadata;

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::FdHandler;
use crate::KindError;

/// The handler.
pub struct Inherited;

impl FdHandler for Inherited {
    fn name(&self) -> &'static str {
        "inherited"
    }
    fn claims(&self, link: &str, md: &Metadata) -> bool {
        use std::os::unix::fs::FileTypeExt;
        let t = md.file_type();
        // Anonymous-inode objects (eventfd, epoll, timerfd, ...) carry state and must not be
        // silently swapped for something else.
        !link.starts_with("anon_inode:") && (t.is_fifo() || t.is_socket() || t.is_char_device() || t.is_block_device())
    }
    fn dump(&self, _cx: &mut super::DumpCx<'_>, _fd: i32, link: &str, _md: &Metadata, _info: &FdInfo) -> Result<FdKind, KindError> {
        Ok(FdKind::Inherited { what: link.to_string() })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Inherited { .. })
    }
    fn open(&self, _rec: &FdRecord, _cx: &mut super::PrepareCx) -> Result<Option<std::os::fd::OwnedFd>, String> {
        Ok(None)
    }
}
