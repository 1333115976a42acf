//! The identity of a kernel object that several descriptors (or mappings) may refer to: which
//! kind of object it is, and the numbers that tell it apart from the others of that kind.
//!
//! Objects are shared and saved once by identity: the data buffered in a pipe or FIFO, the
//! contents of a memfd and the queues of a pair of unix sockets are read once per checkpoint
//! (`DumpCx::seen`), and at restart the object is made once and parked for every descriptor
//! that follows (`PrepareCx::parked`). An inode number alone is no identity: pipes live on
//! `pipefs`, sockets on `sockfs`, FIFOs on any file system, and each numbers its inodes on its
//! own, so a pipe and a FIFO may well have the same inode number. The kind is therefore part
//! of the key, and so is the device wherever the file system is not implied by the kind.
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// Which kind of object an [`ObjId`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjKind {
    /// An unnamed pipe (`pipe:[INO]`, on `pipefs`).
    Pipe,
    /// A named pipe, on the file system of its path.
    Fifo,
    /// A shared memory object: a memfd, or the memory behind shared anonymous mappings.
    SharedMemory,
    /// A connected pair of unix sockets (on `sockfs`).
    UnixPair,
    /// A regular file deleted while open or mapped, by the image's id for it (device and
    /// inode).
    DeletedFile,
    /// A pseudo-terminal pair (on `devpts`), by its index.
    Pty,
}

/// The identity of one kernel object: its kind, and within the kind the device and inode (or,
/// for objects the image names by an id of its own, that id as `ino` with `dev` 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjId {
    /// What kind of object.
    pub kind: ObjKind,
    /// Device of the file system that holds it (0 when the kind implies it).
    pub dev: u64,
    /// Inode, or the image's id for it.
    pub ino: u64,
}

impl ObjId {
    /// The pipe whose link reads `pipe:[ino]` (all pipes are on one `pipefs`).
    pub fn pipe(ino: u64) -> Self {
        ObjId { kind: ObjKind::Pipe, dev: 0, ino }
    }

    /// The FIFO whose open file (or path) has metadata `md`.
    pub fn fifo(md: &Metadata) -> Self {
        ObjId { kind: ObjKind::Fifo, dev: md.dev(), ino: md.ino() }
    }

    /// The memfd whose open file has metadata `md`.
    pub fn memfd(md: &Metadata) -> Self {
        ObjId { kind: ObjKind::SharedMemory, dev: md.dev(), ino: md.ino() }
    }

    /// The shared memory object with id `id` in the image ([`crest_image::FdKind::Memfd`],
    /// [`crest_image::VmaBacking::SharedAnon`]).
    pub fn shared_memory(id: u64) -> Self {
        ObjId { kind: ObjKind::SharedMemory, dev: 0, ino: id }
    }

    /// The deleted file with id `id` in the image ([`crest_image::FdKind::Deleted`],
    /// [`crest_image::VmaBacking::Deleted`]).
    pub fn deleted_file(id: u64) -> Self {
        ObjId { kind: ObjKind::DeletedFile, dev: 0, ino: id }
    }

    /// The pair of unix sockets named by `id`: the lower inode of its two ends.
    pub fn unix_pair(id: u64) -> Self {
        ObjId { kind: ObjKind::UnixPair, dev: 0, ino: id }
    }

    /// The pseudo-terminal pair with index `index` (N of `/dev/pts/N`): its master parks at
    /// `true`, its slave at `false`.
    pub fn pty(index: u32) -> Self {
        ObjId { kind: ObjKind::Pty, dev: 0, ino: u64::from(index) }
    }
}

/// One end of an object parked at restore: a pipe's read (`false`) or write (`true`) end, one of
/// the two ends of a socket pair; objects with one end use `false`.
pub type Slot = (ObjId, bool);

#[cfg(test)]
mod tests {
    use super::*;

    /// The same inode number on two file systems names two objects.
    #[test]
    fn a_pipe_and_a_fifo_with_one_inode_number_are_two_objects() {
        let fifo = ObjId { kind: ObjKind::Fifo, dev: 0x803, ino: 4242 };
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(ObjId::pipe(4242)));
        assert!(seen.insert(fifo), "a FIFO must not be taken for the pipe with its inode number");
        assert!(seen.insert(ObjId::unix_pair(4242)));
        assert!(seen.insert(ObjId::shared_memory(4242)));
        assert!(!seen.insert(ObjId::pipe(4242)));
        assert_eq!(seen.len(), 4);
    }

    /// FIFOs with one inode number on two devices are two objects.
    #[test]
    fn fifos_on_two_devices_are_two_objects() {
        let a = ObjId { kind: ObjKind::Fifo, dev: 1, ino: 7 };
        let b = ObjId { kind: ObjKind::Fifo, dev: 2, ino: 7 };
        assert_ne!(a, b);
    }
}
