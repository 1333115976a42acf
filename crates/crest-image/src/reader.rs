//! Opening an image: framing, checksums and validation before anything is used.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::codec::RunReader;
use crate::format::{Header, SectionEntry, SectionKind, Trailer, FORMAT_MAJOR, FORMAT_MINOR, HEADER_LEN, MAX_TABLE, TRAILER_LEN};
use crate::{checksum, validate, Image, ImageError, PageRun};

/// Largest metadata section accepted (a guard against absurd sizes in a corrupt table).
const MAX_META: u64 = 1 << 30;

/// An opened, checked image: the file, its framing and its decoded metadata.
#[derive(Debug)]
pub struct ImageFile {
    /// The open file; page data is read from it at the offsets in the records.
    pub file: File,
    /// The file's length.
    pub len: u64,
    /// The header.
    pub header: Header,
    /// The section table.
    pub sections: Vec<SectionEntry>,
    /// The metadata.
    pub image: Image,
}

/// Positioned reads from a file or a byte slice.
trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl ReadAt for &[u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = start.checked_add(buf.len()).and_then(|end| self.get(start..end)).ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ImageFile {
    /// Opens and checks the image at `path` (see [`ImageFile::from_file`]).
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        Self::from_file(File::open(path)?)
    }

    /// Checks header, trailer, section table and metadata of `file`, and validates every record.
    /// Page data is not read here: see [`ImageFile::verify_pages`].
    pub fn from_file(file: File) -> Result<Self, ImageError> {
        let len = file.metadata()?.len();
        let (header, sections, image) = parse(&file, len)?;
        Ok(ImageFile { file, len, header, sections, image })
    }

    /// Parses and validates an image held in memory (used by the fuzzer and tests).
    pub fn check_bytes(bytes: &[u8]) -> Result<Image, ImageError> {
        parse(&bytes, bytes.len() as u64).map(|(_, _, image)| image)
    }

    /// Decodes and validates a metadata section without its checksum (for fuzzing the decoder
    /// and the validation behind the checksums); page data is taken to lie in `pages`.
    pub fn check_metadata(bytes: &[u8], pages: std::ops::Range<u64>) -> Result<Image, ImageError> {
        let image: Image = postcard::from_bytes(bytes).map_err(|source| ImageError::Decode { what: "image metadata", source })?;
        validate::validate(&image, pages.start, pages.end)?;
        Ok(image)
    }

    /// Every page run held in this file (not those of an incremental image's parents) with the
    /// pid it belongs to.
    pub fn runs(&self) -> Vec<(i32, PageRun)> {
        self.image.processes.iter().flat_map(|p| p.vmas.iter().flat_map(move |v| v.pages.iter().filter(|r| r.image == 0).map(move |r| (p.pid, *r)))).collect()
    }

    /// Reads every page run as a restart does ([`RunReader::read`]) and checks it: its
    /// checksum, and for a compressed run that it decompresses to exactly its length; on
    /// `workers` threads. Returns the first failure, naming the process and address.
    pub fn verify_pages(&self, workers: usize) -> Result<(), ImageError> {
        self.verify_runs(workers, |reader, buf, pid, r| reader.read(&self.file, pid, r, buf))
    }

    /// Checks the checksum of every page run as stored, without decompressing
    /// ([`RunReader::check_stored`]), on `workers` threads: what a restart does beside the
    /// restoring, which decompresses the compressed runs itself with [`RunReader::read`].
    pub fn verify_checksums(&self, workers: usize) -> Result<(), ImageError> {
        self.verify_runs(workers, |reader, _, pid, r| reader.check_stored(&self.file, pid, r))
    }

    fn verify_runs(&self, workers: usize, check: impl Fn(&mut RunReader, &mut Vec<u8>, i32, &PageRun) -> Result<(), ImageError> + Sync) -> Result<(), ImageError> {
        let runs = self.runs();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers.max(1))
                .map(|_| {
                    s.spawn(|| -> Result<(), ImageError> {
                        let mut reader = RunReader::new()?;
                        let mut buf = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some((pid, r)) = runs.get(i) else { return Ok(()) };
                            check(&mut reader, &mut buf, *pid, r)?;
                        }
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(ImageError::Invalid("page verifier panicked".into()))))
        })
    }
}

/// `err`, or when the image is of a newer minor version than this build knows (so that what
/// could not be read may be something added since), an error naming both versions.
fn newer(header: &Header, what: &str, err: ImageError) -> ImageError {
    // Not `<=`, which with FORMAT_MINOR 0 is a comparison that cannot fail.
    if header.minor.saturating_sub(FORMAT_MINOR) == 0 {
        return err;
    }
    ImageError::Newer { found_major: header.major, found_minor: header.minor, supported_major: FORMAT_MAJOR, supported_minor: FORMAT_MINOR, what: what.to_string() }
}

fn parse(src: &impl ReadAt, len: u64) -> Result<(Header, Vec<SectionEntry>, Image), ImageError> {
    let mut head = vec![0u8; HEADER_LEN.min(len) as usize];
    src.read_exact_at(&mut head, 0)?;
    let header = Header::decode(&head)?;
    if len < HEADER_LEN + TRAILER_LEN {
        return Err(ImageError::Truncated { what: "header and trailer", needed: HEADER_LEN + TRAILER_LEN, len });
    }
    let mut tb = vec![0u8; TRAILER_LEN as usize];
    src.read_exact_at(&mut tb, len - TRAILER_LEN)?;
    let trailer = Trailer::decode(&tb)?;
    let table_ok = trailer.table_offset.checked_add(trailer.table_len).is_some_and(|e| e <= len - TRAILER_LEN);
    if !table_ok || trailer.table_offset < HEADER_LEN || trailer.table_len > MAX_TABLE {
        return Err(ImageError::Invalid(format!("section table at {}+{} lies outside the file", trailer.table_offset, trailer.table_len)));
    }
    let mut table = vec![0u8; trailer.table_len as usize];
    src.read_exact_at(&mut table, trailer.table_offset)?;
    if checksum(&table) != trailer.table_sum {
        return Err(ImageError::Checksum { what: "section table".into() });
    }
    let sections: Vec<SectionEntry> = postcard::from_bytes(&table).map_err(|source| newer(&header, "a section table", ImageError::Decode { what: "section table", source }))?;
    for s in &sections {
        if s.offset < HEADER_LEN || s.offset.checked_add(s.len).is_none_or(|e| e > trailer.table_offset) {
            return Err(ImageError::Invalid(format!("{} section at {}+{} lies outside the file", s.kind, s.offset, s.len)));
        }
        if let SectionKind::Other(k) = s.kind {
            // Sections of kinds this build does not know are skipped, unless the writer said
            // that a reader must understand them.
            if s.must_understand() && !crate::format::marker_kinds::UNDERSTOOD.contains(&k) {
                let what = format!("a section of kind {k} that must be understood");
                return Err(newer(&header, &what, ImageError::Invalid(format!("{what}, unknown in format {}.{}", header.major, header.minor))));
            }
        } else if sections.iter().filter(|o| o.kind == s.kind).count() > 1 {
            return Err(ImageError::Invalid(format!("the section table lists two {} sections", s.kind)));
        }
    }
    let find = |k| sections.iter().find(|s| s.kind == k).copied().ok_or(ImageError::MissingSection(k));
    let meta = find(SectionKind::Meta)?;
    let pages = find(SectionKind::Pages)?;
    if meta.len > MAX_META {
        return Err(ImageError::Invalid(format!("metadata of {} bytes is too large", meta.len)));
    }
    let mut mb = vec![0u8; meta.len as usize];
    src.read_exact_at(&mut mb, meta.offset)?;
    if checksum(&mb) != meta.sum {
        return Err(ImageError::Checksum { what: "metadata section".into() });
    }
    let image: Image = postcard::from_bytes(&mb).map_err(|source| newer(&header, "metadata records", ImageError::Decode { what: "image metadata", source }))?;
    validate::validate(&image, pages.offset, pages.offset + pages.len)?;
    Ok((header, sections, image))
}
