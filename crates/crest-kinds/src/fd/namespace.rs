//! Namespace files: a descriptor of `/proc/PID/ns/KIND` (`setns` takes one; a program may keep
//! its own namespace open to come back to it). Its link reads `KIND:[INODE]`.
//!
//! Only the namespaces the process itself is in are saved: crest refuses processes in other
//! namespaces than `cr_checkpoint`'s, and the restored process is in `cr_restart`'s, so the
//! descriptor is opened again as `/proc/self/ns/KIND` of the restored process and names the
//! namespace it is in, as it did. A descriptor of any other namespace (another process's,
//! one kept after leaving it) is refused: nothing could make it again.
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use crest_image::{FdKind, FdRecord};
use crest_proc::FdInfo;

use super::{DumpCx, FdHandler, PrepareCx};
use crate::KindError;

/// The handler.
pub struct Namespace;

/// The kinds of namespace files, as the links of `/proc/PID/ns` and of their descriptors name
/// them.
const KINDS: &[&str] = &["net", "uts", "ipc", "mnt", "pid", "user", "cgroup", "time"];

/// The kind and inode of a namespace file's link (`net:[4026531833]`).
fn parse(link: &str) -> Option<(&str, u64)> {
    let (kind, rest) = link.split_once(":[")?;
    let ino = rest.strip_suffix(']')?.parse().ok()?;
    KINDS.contains(&kind).then_some((kind, ino))
}

impl FdHandler for Namespace {
    fn name(&self) -> &'static str {
        "namespace file"
    }
    fn claims(&self, link: &str, md: &Metadata) -> bool {
        parse(link).is_some_and(|(_, ino)| ino == md.ino())
    }
    fn dump(&self, cx: &mut DumpCx<'_>, fd: i32, link: &str, _md: &Metadata, _info: &FdInfo) -> Result<FdKind, KindError> {
        let Some((kind, ino)) = parse(link) else { return super::unsupported::refuse(cx, fd, link.to_string(), "this kind of file is not saved yet") };
        let pid = cx.pid;
        // A pid or time namespace file may also be that of the namespace the process's
        // children are made in.
        let own = [kind.to_string(), format!("{kind}_for_children")].iter().filter_map(|name| std::fs::metadata(format!("/proc/{pid}/ns/{name}")).ok()).any(|m| m.ino() == ino);
        if !own {
            return super::unsupported::refuse(
                cx,
                fd,
                format!("the {kind} namespace {link}"),
                "a namespace the process is not in: only descriptors of a process's own namespaces are restored (opened again in the restored process's)",
            );
        }
        Ok(FdKind::Namespace { kind: kind.to_string() })
    }
    fn restores(&self, kind: &FdKind) -> bool {
        matches!(kind, FdKind::Namespace { .. })
    }
    fn describe(&self, kind: &FdKind) -> String {
        let FdKind::Namespace { kind } = kind else { return String::new() };
        format!("the {kind} namespace the process is in")
    }
    fn open(&self, rec: &FdRecord, _cx: &mut PrepareCx) -> Result<super::Opened, String> {
        let FdKind::Namespace { kind } = &rec.kind else { return Err(super::wrong_kind(self, rec)) };
        if !KINDS.contains(&kind.as_str()) {
            return Err(format!("fd {}: {kind} is not a kind of namespace", rec.fd));
        }
        let path = format!("/proc/self/ns/{kind}");
        let f = std::fs::File::open(&path).map_err(|e| format!("fd {}: opening {path}: {e}", rec.fd))?;
        Ok(super::Opened::Fd(f.into()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn links_of_namespace_files() {
        assert_eq!(super::parse("net:[4026531833]"), Some(("net", 4026531833)));
        assert_eq!(super::parse("pipe:[12]"), None);
        assert_eq!(super::parse("socket:[12]"), None);
        assert_eq!(super::parse("net:[x]"), None);
    }
}
