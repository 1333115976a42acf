//! The kinds of state that belong to the image as a whole rather than to one process (the SysV
//! IPC objects the processes share), behind one interface ([`ImageKind`]) and one registry
//! ([`IMAGE_KINDS`]).
//!
//! Each kind is implemented in the module of its objects (dump and restore side by side there)
//! and registered here with one line. At checkpoint [`dump_all`] reads every kind once the
//! processes are collected, still frozen, into [`ImageObjects`] (the image's fields they fill);
//! at restart [`restore_all`] makes them before the first process is created, and
//! [`finish_all`] completes them once every process is filled and its threads are set, before
//! any is let go. Kinds run in the registry's order, and [`finish_all`] in the reverse one.
use crest_image::{Image, IpcObject, Process};

use crate::KindError;

/// One kind of image-wide state.
pub trait ImageKind: Sync {
    /// Short name, unique: what messages say.
    fn name(&self) -> &'static str;
    /// The field of the image's record it fills and the type of its records, as
    /// docs/image-format.md names them (a unit test checks they are documented there).
    fn record(&self) -> (&'static str, &'static str);
    /// What `cr_info` shows of it: one paragraph per object.
    fn describe(&self, image: &Image) -> Vec<String>;
    /// Reads the objects the processes `procs` (frozen, collected) use, into `out`.
    fn dump(&self, procs: &[Process], out: &mut ImageObjects) -> Result<(), KindError>;
    /// Makes the objects of `image` again, before its processes are created.
    fn restore(&self, image: &Image) -> Result<(), KindError>;
    /// Completes them once every process of `image` is filled (by default nothing).
    fn finish(&self, _image: &Image) -> Result<(), KindError> {
        Ok(())
    }
}

/// What the image-wide kinds read: the fields of the image they fill.
#[derive(Debug, Default)]
pub struct ImageObjects {
    /// SysV IPC objects ([`crate::ipc`]).
    pub ipc: Vec<IpcObject>,
}

/// The registry: every kind of image-wide state, in the order they are dumped and restored.
pub static IMAGE_KINDS: &[&dyn ImageKind] = &[&crate::ipc::SysvIpc];

/// Reads every image-wide kind of the processes `procs`.
pub fn dump_all(procs: &[Process]) -> Result<ImageObjects, KindError> {
    let mut out = ImageObjects::default();
    for k in IMAGE_KINDS {
        k.dump(procs, &mut out)?;
    }
    Ok(out)
}

/// Makes every image-wide kind of `image` again, before its processes.
pub fn restore_all(image: &Image) -> Result<(), KindError> {
    for k in IMAGE_KINDS {
        k.restore(image)?;
    }
    Ok(())
}

/// Completes every image-wide kind of `image`, once its processes are filled.
pub fn finish_all(image: &Image) -> Result<(), KindError> {
    for k in IMAGE_KINDS.iter().rev() {
        k.finish(image)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every image-wide kind's field and records are documented in docs/image-format.md.
    #[test]
    fn every_kind_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/image-format.md")).expect("docs/image-format.md");
        let image = doc.lines().find(|l| l.starts_with("- **Image** `{")).expect("docs/image-format.md describes the Image record");
        for k in IMAGE_KINDS {
            let (field, record) = k.record();
            assert!(image.contains(&format!(" {field}: ")), "docs/image-format.md's Image record has no field {field} (the {} kind)", k.name());
            assert!(doc.contains(&format!("- **{record}** `{{")), "docs/image-format.md has no section on {record} records (the {} kind)", k.name());
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = IMAGE_KINDS.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "two image-wide kinds share a name");
    }
}
