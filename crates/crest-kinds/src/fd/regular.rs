//! Regular files: reopened by path with the saved flags (`O_APPEND` included) and offset.
//! The size and inode are recorded so a changed or replaced file can be noticed. Files unlinked
//! before the checkpoint are the deleted files' kind (`deleted.rs`).
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{reopen, FdHandler};
use crate::KindError;

/// The handler.
pub struct Regular;

impl FdHandler for Regular {
    fn name(&self) -> &'static str {
        "regular file"
    }
    fn claims(&self, link: &str, md: &Metadata) -> bool {
        md.file_type().is_file() && link.starts_with('/')
    }
    fn dump(&self, cx: &mut super::DumpCx<'_>, fd: i32, link: &str, md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let pid = cx.pid;
        let image: Vec<i32> = cx.all.iter().map(|o| o.pid).collect();
        super::refuse_unreopenable(pid, fd, link, &image)?;
        Ok(FdKind::Regular { path: link.to_string(), pos: info.pos, size: md.size(), dev: md.dev(), ino: md.ino() })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Regular { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Regular { path, pos, .. } = kind else { return String::new() };
        format!("file {path} at offset {pos}")
    }
    fn open(&self, rec: &FdRecord, _cx: &mut super::PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Regular { path, pos, .. } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        let f = reopen(path, rec, 0)?;
        std::io::Seek::seek(&mut &f, std::io::SeekFrom::Start(*pos)).map_err(|e| format!("fd {}: seeking {path} to {pos}: {e}", rec.fd))?;
        Ok(super::Opened::Fd(f.into()))
    }
}
