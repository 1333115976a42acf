//! Errors of image parsing and writing: each says what is wrong and where.
use std::io;

/// What can be wrong with an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading or writing the file failed.
    #[error("i/o error on image: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with crest's magic.
    #[error("not a crest image (bad magic {found:02x?})")]
    BadMagic {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// A version this build cannot read.
    #[error("image format version {found_major}.{found_minor} is not supported: this crest reads format {supported_major}.0 to {supported_major}.{supported_minor}")]
    Version {
        /// Major found.
        found_major: u32,
        /// Minor found.
        found_minor: u32,
        /// Major this crate reads.
        supported_major: u32,
        /// Newest minor this crate knows.
        supported_minor: u32,
    },
    /// An image of a newer minor version that holds something this build does not know and
    /// may not skip.
    #[error("image format version {found_major}.{found_minor} holds {what}, which this crest (format {supported_major}.{supported_minor}) does not know: a newer crest is needed to read it")]
    Newer {
        /// Major found.
        found_major: u32,
        /// Minor found.
        found_minor: u32,
        /// Major this crate reads.
        supported_major: u32,
        /// Newest minor this crate knows.
        supported_minor: u32,
        /// What it holds.
        what: String,
    },
    /// The file is shorter than its own structure says.
    #[error("image is truncated: {what} needs bytes up to {needed}, file has {len}")]
    Truncated {
        /// What did not fit.
        what: &'static str,
        /// The end offset required.
        needed: u64,
        /// The file length.
        len: u64,
    },
    /// A checksum did not match.
    #[error("checksum mismatch in {what}: the image is corrupt")]
    Checksum {
        /// Which part.
        what: String,
    },
    /// A compressed page run does not decompress to what its record says.
    #[error("{what}: the image is corrupt")]
    BadRun {
        /// Which run, and what is wrong.
        what: String,
    },
    /// The metadata record could not be decoded.
    #[error("cannot decode {what}: {source}")]
    Decode {
        /// Which record.
        what: &'static str,
        /// Decoder error.
        source: postcard::Error,
    },
    /// Encoding failed (a bug, or out of memory).
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// Which record.
        what: &'static str,
        /// Encoder error.
        source: postcard::Error,
    },
    /// The compression library failed (starting, or compressing).
    #[error("{what}: {source}")]
    Codec {
        /// What was being done.
        what: String,
        /// The library's error.
        source: io::Error,
    },
    /// An image stream (the stream form) was cut short or its framing is damaged: the text says
    /// where.
    #[error("{0}")]
    Stream(String),
    /// A required section is missing from the table.
    #[error("image has no {0} section")]
    MissingSection(crate::SectionKind),
    /// A parent of an incremental image is missing, changed or unreadable.
    #[error("{child}: its parent image {parent} {why}")]
    Parent {
        /// The image that names it.
        child: String,
        /// The parent's path.
        parent: String,
        /// What is wrong with it.
        why: String,
    },
    /// A record holds values that cannot be right.
    #[error("invalid image: {0}")]
    Invalid(String),
}
