//! Streaming image writer: header, page data, then metadata, table and trailer.
use std::io::Write;

use crate::format::{Header, SectionEntry, SectionKind, Trailer, HEADER_LEN, PAGE_SIZE};
use crate::{checksum, Image, ImageError};

/// Writes an image into any byte sink, in one pass, without seeking.
///
/// Page data is appended first ([`ImageWriter::append_pages`]); [`ImageWriter::finish`] then
/// writes the metadata, the section table and the trailer.
pub struct ImageWriter<W: Write> {
    out: W,
    pos: u64,
}

impl<W: Write> ImageWriter<W> {
    /// Writes the header and returns a writer positioned at the start of page data.
    pub fn new(mut out: W) -> Result<Self, ImageError> {
        out.write_all(&Header::current().encode())?;
        Ok(ImageWriter { out, pos: HEADER_LEN })
    }

    /// Offset the next appended byte will have.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The sink, for callers that append page data themselves (then call [`Self::note_appended`]).
    pub fn sink(&mut self) -> &mut W {
        &mut self.out
    }

    /// Records that `len` bytes were appended to the sink by other means.
    pub fn note_appended(&mut self, len: u64) {
        self.pos += len;
    }

    /// Appends whole pages; returns their offset and checksum.
    pub fn append_pages(&mut self, data: &[u8]) -> Result<(u64, u64), ImageError> {
        debug_assert_eq!(data.len() as u64 % PAGE_SIZE, 0);
        let at = self.pos;
        self.out.write_all(data)?;
        self.pos += data.len() as u64;
        Ok((at, checksum(data)))
    }

    /// Appends `data` as it is (compressed page runs, padding).
    pub fn append_bytes(&mut self, data: &[u8]) -> Result<(), ImageError> {
        self.out.write_all(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Writes the metadata, section table and trailer, and returns the sink.
    pub fn finish(mut self, image: &Image) -> Result<W, ImageError> {
        let pages = SectionEntry { kind: SectionKind::Pages, offset: HEADER_LEN, len: self.pos - HEADER_LEN, sum: 0 };
        let meta_bytes = postcard::to_stdvec(image).map_err(|source| ImageError::Encode { what: "image metadata", source })?;
        let meta = SectionEntry { kind: SectionKind::Meta, offset: self.pos, len: meta_bytes.len() as u64, sum: checksum(&meta_bytes) };
        self.out.write_all(&meta_bytes)?;
        self.pos += meta.len;
        let table = postcard::to_stdvec(&vec![pages, meta]).map_err(|source| ImageError::Encode { what: "section table", source })?;
        let trailer = Trailer { table_offset: self.pos, table_len: table.len() as u64, table_sum: checksum(&table) };
        self.out.write_all(&table)?;
        self.out.write_all(&trailer.encode())?;
        self.out.flush()?;
        Ok(self.out)
    }
}
