//! Streaming image writer: header, page data, then metadata, table and trailer.
use std::io::Write;

use crate::format::{Header, SectionEntry, SectionKind, Trailer, HEADER_LEN, MAX_TABLE, PAGE_SIZE};
use crate::{checksum, Image, ImageError};

/// Writes an image into any byte sink, in one pass, without seeking.
///
/// Page data is appended first ([`ImageWriter::append_pages`]); [`ImageWriter::finish`] then
/// writes the metadata, the section table and the trailer.
pub struct ImageWriter<W: Write> {
    out: W,
    pos: u64,
    /// Sections written by [`ImageWriter::finish`] after the metadata.
    extra: Vec<(SectionKind, u32, Vec<u8>)>,
}

impl<W: Write> ImageWriter<W> {
    /// Writes the header and returns a writer positioned at the start of page data.
    pub fn new(mut out: W) -> Result<Self, ImageError> {
        out.write_all(&Header::current().encode())?;
        Ok(ImageWriter { out, pos: HEADER_LEN, extra: Vec::new() })
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

    /// Adds a section of `kind` holding `bytes`, written after the metadata; `flags` are
    /// [`crate::section_flags`] bits.
    pub fn add_section(&mut self, kind: SectionKind, flags: u32, bytes: Vec<u8>) {
        self.extra.push((kind, flags, bytes));
    }

    /// Writes the metadata, the added sections, the section table and the trailer, and returns
    /// the sink.
    pub fn finish(mut self, image: &Image) -> Result<W, ImageError> {
        let pages = SectionEntry { kind: SectionKind::Pages, flags: 0, offset: HEADER_LEN, len: self.pos - HEADER_LEN, sum: 0 };
        let meta_bytes = postcard::to_stdvec(image).map_err(|source| ImageError::Encode { what: "image metadata", source })?;
        let meta = SectionEntry { kind: SectionKind::Meta, flags: 0, offset: self.pos, len: meta_bytes.len() as u64, sum: checksum(&meta_bytes) };
        self.out.write_all(&meta_bytes)?;
        self.pos += meta.len;
        let mut table = vec![pages, meta];
        if image.processes.iter().any(|p| p.fds.iter().any(|f| f.kind.uses_socket_state())) {
            self.extra.push((SectionKind::SocketState, crate::section_flags::MUST_UNDERSTAND, Vec::new()));
        }
        for k in crate::format::marker_kinds::needed(image) {
            self.extra.push((SectionKind::Other(k), crate::section_flags::MUST_UNDERSTAND, Vec::new()));
        }
        for (kind, flags, bytes) in std::mem::take(&mut self.extra) {
            table.push(SectionEntry { kind, flags, offset: self.pos, len: bytes.len() as u64, sum: checksum(&bytes) });
            self.out.write_all(&bytes)?;
            self.pos += bytes.len() as u64;
        }
        let table = postcard::to_stdvec(&table).map_err(|source| ImageError::Encode { what: "section table", source })?;
        if table.len() as u64 > MAX_TABLE {
            return Err(ImageError::Invalid(format!("a section table of {} bytes is larger than readers accept ({MAX_TABLE})", table.len())));
        }
        let trailer = Trailer { table_offset: self.pos, table_len: table.len() as u64, table_sum: checksum(&table) };
        self.out.write_all(&table)?;
        self.out.write_all(&trailer.encode())?;
        self.out.flush()?;
        Ok(self.out)
    }
}
