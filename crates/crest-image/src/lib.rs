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
//! * [`stream`] sends an image metadata first (the stream form) and receives it.
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
pub mod stream;
pub mod validate;
mod writer;

pub use error::ImageError;
pub use format::{marker_kinds, section_flags, Header, SectionEntry, SectionKind, Trailer, FORMAT_MAJOR, FORMAT_MINOR, HEADER_LEN, MAGIC, PAGE_SIZE, TRAILER_LEN, TRAILER_MAGIC};
pub use reader::ImageFile;
pub use records::*;
pub use writer::ImageWriter;

/// The checksum used for every section and page run: XXH3-64 with seed 0.
///
/// Inputs longer than [`WIDE_FROM`] (page runs, large sections) go through an implementation
/// that picks AVX2 at run time where the processor has it; the build targets plain x86-64, so
/// the other one uses SSE2 only. Both compute the same function (see the test below): an
/// image written by either is checked by either. Checking the page runs of a large image
/// before its processes run is bound by this loop and by memory bandwidth; AVX2 makes the
/// loop about a quarter faster from memory, half again as fast from cache.
pub fn checksum(bytes: &[u8]) -> u64 {
    if bytes.len() > WIDE_FROM {
        xxh3::hash64_with_seed(bytes, 0)
    } else {
        xxhash_rust::xxh3::xxh3_64(bytes)
    }
}

/// Length above which [`checksum`] uses the run-time dispatched implementation: below it,
/// XXH3 does not use its vector loop at all.
const WIDE_FROM: usize = 240;

#[cfg(test)]
mod tests {
    /// Both implementations behind [`super::checksum`] give the same XXH3-64 at every length
    /// around the boundaries of XXH3's stripes (64 bytes) and blocks (1024 bytes with the
    /// default secret), on data that is not uniform, and at a few page-run sizes.
    #[test]
    fn both_implementations_agree() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..(4 << 20) + 4099 + 3)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let lens = (0..=4200).chain([8191, 8192, 8193, 65536, 65537, 1 << 20, (4 << 20) - 1, 4 << 20, (4 << 20) + 4099]);
        for len in lens {
            for skip in [0, 3] {
                let b = &data[skip..skip + len];
                assert_eq!(xxh3::hash64_with_seed(b, 0), xxhash_rust::xxh3::xxh3_64(b), "length {len} from offset {skip}");
                assert_eq!(super::checksum(b), xxhash_rust::xxh3::xxh3_64(b), "length {len} from offset {skip}");
            }
        }
    }
}
