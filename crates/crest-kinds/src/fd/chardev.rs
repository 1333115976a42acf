//! Character devices that are the same for every opener and can be reopened by path:
//! `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random`, `/dev/urandom`, `/dev/tty`. Terminals
//! and other devices are left to [`super::inherited`], as BLCR did.
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{reopen, FdHandler};
use crate::KindError;

const REOPENABLE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"];

/// The handler.
pub struct CharDevice;

impl FdHandler for CharDevice {
    fn name(&self) -> &'static str {
        "character device"
    }
    fn claims(&self, link: &str, md: &Metadata) -> bool {
        md.file_type().is_char_device() && REOPENABLE.contains(&link)
    }
    fn dump(&self, _cx: &mut super::DumpCx<'_>, _fd: i32, link: &str, md: &Metadata, _info: &FdInfo) -> Result<FdKind, KindError> {
        Ok(FdKind::CharDevice { path: link.to_string(), rdev: md.rdev() })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::CharDevice { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::CharDevice { path, .. } = kind else { return String::new() };
        format!("device {path}")
    }
    fn open(&self, rec: &FdRecord, _cx: &mut super::PrepareCx) -> Result<super::Opened, String> {
        let FdKind::CharDevice { path, .. } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        Ok(super::Opened::Fd(reopen(path, rec, 0)?.into()))
    }
}
