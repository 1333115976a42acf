//! crest's checkpoint image format.
//!
//! An image is one file holding a tree of processes: a fixed [`Header`], page data, the metadata
//! record ([`Image`], postcard-encoded), a section table and a fixed [`Trailer`]. Every section
//! and every page run carries an xxh3 checksum, so a corrupt or truncated file is refused before
//! anything is restored. The normative description is `docs/image-format.md`.
//!
//! This crate is pure data: it parses, validates and writes bytes and never makes a syscall
//! beyond reading and writing the file it is given, so tools can read images without tracing.
//!
//! * [`codec`] stores page runs (raw or zstd-compressed), checks and reads them back.
//! * [`ImageWriter`] streams page data and then the metadata into any `Write`.
//! * [`ImageFile`] opens an image, checks header, trailer, table and metadata, and
//!   [`validate::validate`]s every record before returning the [`Image`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chain;
pub mod codec;
mod error;
mod format;
pub mod frame;
mod reader;
mod records;
pub mod validate;
mod writer;

pub use error::ImageError;
pub use format::{marker_kinds, section_flags, Header, SectionEntry, SectionKind, Trailer, FORMAT_MAJOR, FORMAT_MINOR, HEADER_LEN, MAGIC, PAGE_SIZE, TRAILER_LEN, TRAILER_MAGIC};
pub use reader::ImageFile;
pub use records::*;
pub use writer::ImageWriter;

/// The checksum used for every section and page run.
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}
