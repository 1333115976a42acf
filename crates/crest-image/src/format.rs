//! The fixed-size framing of an image: header, trailer and section table entries.
//!
//! ```text
//! 0              Header (HEADER_LEN bytes, little-endian, checksummed)
//! HEADER_LEN     page data: runs of whole pages, each run page-aligned
//! ...            sections (metadata, ...), then the section table (postcard Vec<SectionEntry>)
//! len-64         Trailer (TRAILER_LEN bytes): where the table is and its checksum
//! ```
//! Page data comes first so that a checkpoint can be streamed into a pipe; the trailer at the
//! end makes truncation detectable before any record is decoded.
use serde::{Deserialize, Serialize};

use crate::{checksum, ImageError};

/// First 8 bytes of every image.
pub const MAGIC: [u8; 8] = *b"CRESTIMG";
/// First 8 bytes of the trailer.
pub const TRAILER_MAGIC: [u8; 8] = *b"CRESTEND";
/// Incompatible changes bump this; readers refuse other majors.
pub const FORMAT_MAJOR: u32 = 4;
/// Compatible additions bump this (see `docs/image-format.md` for what a minor change may do).
pub const FORMAT_MINOR: u32 = 18;
/// Size of the header; page data starts here, page aligned.
pub const HEADER_LEN: u64 = 4096;
/// Size of the trailer.
pub const TRAILER_LEN: u64 = 64;
/// Largest section table readers accept.
pub const MAX_TABLE: u64 = 4096;
/// Page size images are written with.
pub const PAGE_SIZE: u64 = 4096;

/// The fixed header at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format major version.
    pub major: u32,
    /// Format minor version.
    pub minor: u32,
    /// Page size of the page data.
    pub page_size: u32,
    /// Reserved flags, 0.
    pub flags: u32,
}

impl Header {
    /// Header of an image written by this build.
    pub fn current() -> Self {
        Header { major: FORMAT_MAJOR, minor: FORMAT_MINOR, page_size: PAGE_SIZE as u32, flags: 0 }
    }

    /// The HEADER_LEN bytes of this header.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN as usize];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&self.major.to_le_bytes());
        b[12..16].copy_from_slice(&self.minor.to_le_bytes());
        b[16..20].copy_from_slice(&self.page_size.to_le_bytes());
        b[20..24].copy_from_slice(&self.flags.to_le_bytes());
        let sum = checksum(&b[0..24]);
        b[24..32].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Parses and checks the first bytes of a file.
    pub fn decode(b: &[u8]) -> Result<Self, ImageError> {
        if b.len() < 32 || b[0..8] != MAGIC {
            return Err(ImageError::BadMagic { found: b[..b.len().min(8)].to_vec() });
        }
        let major = u32_at(b, 8);
        let minor = u32_at(b, 12);
        // The checksum first: a damaged header says so rather than naming a nonsense version.
        if u64_at(b, 24) != checksum(&b[0..24]) {
            return Err(ImageError::Checksum { what: "header".into() });
        }
        if major != FORMAT_MAJOR {
            return Err(ImageError::Version { found_major: major, found_minor: minor, supported_major: FORMAT_MAJOR, supported_minor: FORMAT_MINOR });
        }
        let h = Header { major, minor, page_size: u32_at(b, 16), flags: u32_at(b, 20) };
        if u64::from(h.page_size) != PAGE_SIZE {
            return Err(ImageError::Invalid(format!("page size {} is not supported", h.page_size)));
        }
        Ok(h)
    }
}

/// The fixed trailer in the last TRAILER_LEN bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    /// Offset of the section table.
    pub table_offset: u64,
    /// Length of the section table.
    pub table_len: u64,
    /// Checksum of the section table bytes.
    pub table_sum: u64,
}

impl Trailer {
    /// The TRAILER_LEN bytes of this trailer.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; TRAILER_LEN as usize];
        b[0..8].copy_from_slice(&TRAILER_MAGIC);
        b[8..16].copy_from_slice(&self.table_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.table_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.table_sum.to_le_bytes());
        let sum = checksum(&b[0..32]);
        b[32..40].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Parses and checks the trailer bytes.
    pub fn decode(b: &[u8]) -> Result<Self, ImageError> {
        if b.len() != TRAILER_LEN as usize || b[0..8] != TRAILER_MAGIC {
            return Err(ImageError::Invalid("no trailer at the end of the file (the image is truncated or was not finished)".into()));
        }
        if u64_at(b, 32) != checksum(&b[0..32]) {
            return Err(ImageError::Checksum { what: "trailer".into() });
        }
        Ok(Trailer { table_offset: u64_at(b, 8), table_len: u64_at(b, 16), table_sum: u64_at(b, 24) })
    }
}

/// What a section holds. Open: a kind this build does not know is kept as [`SectionKind::Other`]
/// (and skipped, or refused when its entry says it must be understood).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "u32", into = "u32")]
pub enum SectionKind {
    /// The [`crate::Image`] record, postcard-encoded (0).
    Meta,
    /// Page data; each run is checksummed on its own in the metadata (1).
    Pages,
    /// Empty, marked MUST_UNDERSTAND (2): the image's socket records use fields added in
    /// format 4.1 that a 4.0 reader would ignore and restore the socket without (options that
    /// are not ints, datagram connections, removed names, shutdown), so 4.0 readers refuse it.
    /// Written only in the images that use them ([`crate::FdKind::uses_socket_state`]).
    SocketState,
    /// A kind this build does not know.
    Other(u32),
}

impl From<u32> for SectionKind {
    fn from(v: u32) -> Self {
        match v {
            0 => SectionKind::Meta,
            1 => SectionKind::Pages,
            2 => SectionKind::SocketState,
            v => SectionKind::Other(v),
        }
    }
}

impl From<SectionKind> for u32 {
    fn from(k: SectionKind) -> u32 {
        match k {
            SectionKind::Meta => 0,
            SectionKind::Pages => 1,
            SectionKind::SocketState => 2,
            SectionKind::Other(v) => v,
        }
    }
}

impl std::fmt::Display for SectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SectionKind::Meta => f.write_str("metadata"),
            SectionKind::Pages => f.write_str("page data"),
            SectionKind::SocketState => f.write_str("socket state of format 4.1"),
            SectionKind::Other(v) => write!(f, "kind {v}"),
        }
    }
}

/// Bits of [`SectionEntry::flags`].
pub mod section_flags {
    /// A reader that does not know the section's kind must refuse the image (without it, such
    /// a section is skipped).
    pub const MUST_UNDERSTAND: u32 = 1;
}

/// Kinds of the empty sections marked MUST_UNDERSTAND that announce state a reader without
/// it would restore wrongly; written only in the images that hold such state.
pub mod marker_kinds {
    /// A process has POSIX timers (`ProcAttrs.posix_timers`), format 4.2.
    pub const POSIX_TIMERS: u32 = 3;
    /// A process was stopped by job control (`ProcAttrs.stop_signal`), format 4.2.
    pub const STOPPED: u32 = 4;
    /// An incremental image: page runs in the images it names as parents (`Image.parent`,
    /// `PageRun.image`), format 4.3.
    pub const INCREMENTAL: u32 = 5;
    /// A process's working directory was deleted (`Process.cwd_deleted`), format 4.5.
    pub const DELETED_CWD: u32 = 6;
    /// A socket holds queued datagrams, descriptors in flight or connections waiting to be
    /// accepted (`FdKind::Socket.queue`, `pending`, `UnixPairState.passed`), format 4.6.
    pub const SOCKET_QUEUES: u32 = 7;
    /// A process's pages are partly its parent's, shared copy-on-write (`Vma.inherited`),
    /// format 4.7: a reader that ignored it would restore zeros in their place.
    pub const INHERITED: u32 = 8;
    /// A thread runs under seccomp filters (`ThreadAttrs.seccomp`), format 4.7: a reader
    /// that ignored them would restore it unconfined.
    pub const SECCOMP: u32 = 9;
    /// A SysV message queue (`IpcKind::Msg`) or a process's semaphore adjustments
    /// (`ProcAttrs.semadj`), format 4.8: a reader that ignored them would restore the processes
    /// without their messages or adjustments.
    pub const SYSV_MSG_UNDO: u32 = 14;
    /// A socket of a family or type saved since format 4.9 (packet, netlink, raw IP) or
    /// connected to an address (`FdKind::Socket.dest`): a reader that ignored it would not
    /// connect it again, or set options before the bind they need.
    pub const SOCKET_FAMILIES: u32 = 12;
    /// A process shares its parent's descriptor table (`Process.files_shared`), format 4.10: a
    /// reader that ignored it would restore that process with no descriptors.
    pub const SHARED_FILES: u32 = 10;
    /// A mapping has guard regions (`Vma.guards`, `MADV_GUARD_INSTALL`), format 4.11: a reader
    /// that ignored them would restore readable zero pages where the process expects a fault.
    pub const GUARD_PAGES: u32 = 15;
    /// The image's TCP connections are locked by a netfilter table (`Image.network_lock`),
    /// format 4.13: a reader that ignored it would leave their packets dropped for good.
    pub const NETWORK_LOCK: u32 = 16;
    /// A mapping is an AIO ring (`vma_flags::AIO`), format 4.14: a reader that ignored it would
    /// restore the ring as plain memory, with no context behind it.
    pub const AIO_RINGS: u32 = 17;
    /// A thread runs in seccomp strict mode (`ThreadAttrs.seccomp_strict`), format 4.14: a
    /// reader that ignored it would restore it unconfined.
    pub const SECCOMP_STRICT: u32 = 18;
    /// An epoll set in flight watches the sockets of the pair that carries it (`FdKind::Epoll`
    /// in `UnixPairState.passed`, its `sources` -1 and -2), format 4.16: a reader that did not
    /// know those sources would fail to make it, or add the wrong files to it.
    pub const EPOLL_IN_FLIGHT: u32 = 19;
    /// A mapping is the rings of a packet socket (`VmaBacking::PacketRing`), format 4.18: a
    /// reader that did not know it would restore the socket without the mapping of its rings.
    pub const PACKET_RINGS: u32 = 20;
    /// The markers this build understands.
    pub const UNDERSTOOD: &[u32] = &[
        POSIX_TIMERS,
        STOPPED,
        INCREMENTAL,
        DELETED_CWD,
        SOCKET_QUEUES,
        INHERITED,
        SECCOMP,
        SYSV_MSG_UNDO,
        SOCKET_FAMILIES,
        SHARED_FILES,
        GUARD_PAGES,
        NETWORK_LOCK,
        AIO_RINGS,
        SECCOMP_STRICT,
        EPOLL_IN_FLIGHT,
        PACKET_RINGS,
    ];

    /// The markers `image` needs.
    pub fn needed(image: &crate::Image) -> Vec<u32> {
        let mut v = Vec::new();
        if image.processes.iter().any(|p| !p.attrs.posix_timers.is_empty()) {
            v.push(POSIX_TIMERS);
        }
        if image.processes.iter().any(|p| p.attrs.stop_signal != 0) {
            v.push(STOPPED);
        }
        if image.parent.is_some() {
            v.push(INCREMENTAL);
        }
        if image.processes.iter().any(|p| p.cwd_deleted.is_some()) {
            v.push(DELETED_CWD);
        }
        if image.processes.iter().any(|p| p.fds.iter().any(|f| f.kind.uses_socket_queues())) {
            v.push(SOCKET_QUEUES);
        }
        if image.processes.iter().flat_map(|p| &p.vmas).any(|m| !m.inherited.is_empty()) {
            v.push(INHERITED);
        }
        if image.processes.iter().flat_map(|p| &p.threads).any(|t| !t.attrs.seccomp.is_empty()) {
            v.push(SECCOMP);
        }
        if image.ipc.iter().any(|o| matches!(o.kind, crate::IpcKind::Msg { .. })) || image.processes.iter().any(|p| !p.attrs.semadj.is_empty()) {
            v.push(SYSV_MSG_UNDO);
        }
        if image.processes.iter().any(|p| p.fds.iter().any(|f| f.kind.uses_socket_families())) {
            v.push(SOCKET_FAMILIES);
        }
        if image.processes.iter().any(|p| p.files_shared) {
            v.push(SHARED_FILES);
        }
        if image.processes.iter().flat_map(|p| &p.vmas).any(|m| !m.guards.is_empty()) {
            v.push(GUARD_PAGES);
        }
        if image.network_lock.is_some() {
            v.push(NETWORK_LOCK);
        }
        if image.processes.iter().flat_map(|p| &p.vmas).any(|m| m.flags & crate::vma_flags::AIO != 0) {
            v.push(AIO_RINGS);
        }
        if image.processes.iter().flat_map(|p| &p.threads).any(|t| t.attrs.seccomp_strict) {
            v.push(SECCOMP_STRICT);
        }
        if image.processes.iter().flat_map(|p| &p.fds).any(|f| f.kind.in_flight().iter().any(|r| matches!(r.kind, crate::FdKind::Epoll { .. }))) {
            v.push(EPOLL_IN_FLIGHT);
        }
        if image.processes.iter().flat_map(|p| &p.vmas).any(|m| matches!(m.backing, crate::VmaBacking::PacketRing { .. })) {
            v.push(PACKET_RINGS);
        }
        v
    }
}

/// One row of the section table (a framed record: fields can be added at its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct SectionEntry {
    /// What it holds.
    pub kind: SectionKind,
    /// [`section_flags`] bits.
    pub flags: u32,
    /// Where it starts.
    pub offset: u64,
    /// How long it is.
    pub len: u64,
    /// Checksum of its bytes (0 for `Pages`, whose runs carry their own).
    pub sum: u64,
}

crate::frame::framed!(SectionEntry);

impl SectionEntry {
    /// Whether a reader that does not know this section's kind must refuse the image.
    pub fn must_understand(&self) -> bool {
        self.flags & section_flags::MUST_UNDERSTAND != 0
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
