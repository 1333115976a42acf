//! Directories (`opendir` and `O_DIRECTORY` descriptors): reopened by path (those opened with
//! `O_PATH` are [`super::opath`]'s).
use std::fs::Metadata;

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{reopen, FdHandler};
use crate::KindError;

/// The handler.
pub struct Directory;

impl FdHandler for Directory {
    fn name(&self) -> &'static str {
        "directory"
    }
    fn claims(&self, link: &str, md: &Metadata) -> bool {
        md.file_type().is_dir() && link.starts_with('/')
    }
    fn dump(&self, cx: &mut super::DumpCx<'_>, fd: i32, link: &str, _md: &Metadata, info: &FdInfo) -> Result<FdKind, KindError> {
        let pid = cx.pid;
        if link.ends_with(" (deleted)") {
            return Err(KindError::Unsupported(format!("pid {pid} fd {fd}: directory {link} was deleted")));
        }
        let image: Vec<i32> = cx.all.iter().map(|o| o.pid).collect();
        super::refuse_unreopenable(pid, fd, link, &image)?;
        Ok(FdKind::Directory { path: link.to_string(), pos: info.pos })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Directory { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Directory { path, .. } = kind else { return String::new() };
        format!("directory {path}")
    }
    fn open(&self, rec: &FdRecord, _cx: &mut super::PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Directory { path, .. } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        Ok(super::Opened::Fd(reopen(path, rec, libc::O_DIRECTORY)?.into()))
    }
}
