//! The page-run codec: how page runs are stored, checked and read back, the same for the
//! writer (`cr_checkpoint`), the reader (`cr_restart`) and the checker (`cr_info --verify`).
//!
//! A run is stored as it is ([`stored_run`]) or as one zstd frame ([`Packer`]), with the xxh3
//! checksum of the bytes as stored; [`RunReader`] reads a run back, checks its checksum and
//! decompresses it to exactly its length.
//!
//! ## Compression (`cr_checkpoint --compress`)
//!
//! Each run of pages is cut into blocks of [`BLOCK`] bytes, and each block is judged from
//! samples of [`SAMPLE`] bytes (at its start, then at its middle). A sample whose bytes are
//! spread unevenly enough for a Huffman code to gain is taken as compressible at once; another
//! is compressed on its own to see. A block none of whose samples gets smaller is stored raw,
//! without a compression pass: random or already compressed data costs a copy, not zstd's
//! search for matches. Neighbouring blocks judged alike form one span: a compressible span
//! becomes one zstd frame (kept only when smaller), an incompressible one a raw run.
//!
//! Raw runs start on a page boundary in the image, compressed ones anywhere, so a raw run just
//! after a compressed one costs up to a page of padding. Compressed runs are therefore held
//! back ([`Packer`]) and placed in the image together, many megabytes at a time, while raw runs
//! are written at once, one after another, without padding.
use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::{checksum, ImageError, PageRun};

/// Pages are judged compressible or not in blocks of this many bytes (zstd's own block size).
const BLOCK: usize = 128 << 10;
/// Bytes of a block looked at, at a time, to judge it.
const SAMPLE: usize = 2048;
/// Compressed bytes a worker holds back before placing them in the image: each placing can
/// cost up to a page of padding before the next raw run.
const HOLD: usize = 16 << 20;
/// Below this many bits per byte (order-0 entropy), a sample is compressible without a try.
const SPREAD: f64 = 7.0;
/// Longest run the writer makes (page data is read and written in pieces of this size).
pub const MAX_RUN: u64 = 4 << 20;
/// Longest run a reader decompresses: a guard against absurd lengths in a damaged image.
const MAX_PACKED_RUN: u64 = 1 << 30;

/// A run of `data`, the memory at `vaddr`, stored as it is at `offset`.
pub fn stored_run(vaddr: u64, offset: u64, data: &[u8]) -> PageRun {
    PageRun { vaddr, len: data.len() as u64, offset, zlen: 0, sum: checksum(data), image: 0 }
}

/// An error of the zstd library, for `what`.
fn zstd_error(what: String, source: std::io::Error) -> ImageError {
    ImageError::Codec { what, source }
}

/// Reads page runs back from an image: each one checked against its checksum and, when it is
/// compressed, decompressed to exactly its length. One per thread; it keeps its buffers.
pub struct RunReader {
    z: zstd::bulk::Decompressor<'static>,
    stored: Vec<u8>,
}

impl RunReader {
    /// A reader.
    pub fn new() -> Result<Self, ImageError> {
        let z = zstd::bulk::Decompressor::new().map_err(|e| zstd_error("starting zstd".into(), e))?;
        Ok(RunReader { z, stored: Vec::new() })
    }

    /// Reads run `r` of process `pid` from `file` and checks its checksum, then leaves in `out`
    /// the `r.len` bytes it restores (decompressed when it is compressed).
    pub fn read(&mut self, file: &File, pid: i32, r: &PageRun, out: &mut Vec<u8>) -> Result<(), ImageError> {
        let what = || format!("page data of pid {pid} at {:#x}..{:#x}", r.vaddr, r.vaddr.saturating_add(r.len));
        if r.zlen == 0 {
            out.resize(r.len as usize, 0);
            file.read_exact_at(out, r.offset)?;
            return check(out, r.sum, what);
        }
        self.stored.resize(r.zlen as usize, 0);
        file.read_exact_at(&mut self.stored, r.offset)?;
        check(&self.stored, r.sum, what)?;
        self.unpack(r, out, what)
    }

    /// Reads run `r` of process `pid` as it is stored and checks its checksum, without
    /// decompressing it.
    pub fn check_stored(&mut self, file: &File, pid: i32, r: &PageRun) -> Result<(), ImageError> {
        self.stored.resize(r.stored_len() as usize, 0);
        file.read_exact_at(&mut self.stored, r.offset)?;
        check(&self.stored, r.sum, || format!("page data of pid {pid} at {:#x}..{:#x}", r.vaddr, r.vaddr.saturating_add(r.len)))
    }

    fn unpack(&mut self, r: &PageRun, out: &mut Vec<u8>, what: impl Fn() -> String) -> Result<(), ImageError> {
        if r.len > MAX_PACKED_RUN {
            return Err(ImageError::Invalid(format!("{}: a compressed run of {} bytes is too long", what(), r.len)));
        }
        out.clear();
        out.reserve(r.len as usize);
        let n = self.z.decompress_to_buffer(&self.stored, out).map_err(|e| ImageError::BadRun { what: format!("{} does not decompress to its {} bytes ({e})", what(), r.len) })?;
        if n as u64 != r.len {
            return Err(ImageError::BadRun { what: format!("{} decompresses to {n} bytes, not {}", what(), r.len) });
        }
        Ok(())
    }
}

/// Whether `bytes` have checksum `sum`.
fn check(bytes: &[u8], sum: u64, what: impl Fn() -> String) -> Result<(), ImageError> {
    if checksum(bytes) != sum {
        return Err(ImageError::Checksum { what: what() });
    }
    Ok(())
}

/// Order-0 entropy of `data`, in bits per byte (0 for a single repeated byte, 8 at most).
fn entropy(data: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether compressing `len` bytes into `packed` saves enough to be worth it: at least 1/64,
/// the gain below which zstd itself stores a block raw.
fn worth(len: usize, packed: usize) -> bool {
    packed + len / 64 < len
}

/// Cuts `data` into spans of whole blocks of `block` bytes (the last one may be shorter) that
/// `judge` finds alike, as (offset, length, compressible).
fn split(data: &[u8], block: usize, mut judge: impl FnMut(&[u8]) -> Result<bool, ImageError>) -> Result<Vec<(usize, usize, bool)>, ImageError> {
    let mut out: Vec<(usize, usize, bool)> = Vec::new();
    for (i, b) in data.chunks(block).enumerate() {
        let z = judge(b)?;
        match out.last_mut() {
            Some(s) if s.2 == z => s.1 += b.len(),
            _ => out.push((i * block, b.len(), z)),
        }
    }
    Ok(out)
}

/// One worker's compressor: judges blocks, compresses spans, and holds the compressed runs
/// until they are placed in the image together.
pub struct Packer {
    z: zstd::bulk::Compressor<'static>,
    /// For the samples: small inputs at level 1, apart so that `z` keeps its tables.
    probe: zstd::bulk::Compressor<'static>,
    sample: Vec<u8>,
    /// Compressed runs not yet in the image, back to back.
    held: Vec<u8>,
    /// Their runs, `offset` counted from the start of `held`.
    runs: Vec<(usize, PageRun)>,
}

impl Packer {
    /// A packer at zstd `level`.
    pub fn new(level: i32) -> Result<Self, ImageError> {
        let start = |l: i32| zstd::bulk::Compressor::new(l).map_err(|e| zstd_error(format!("starting zstd at level {l}"), e));
        Ok(Packer {
            z: start(level)?,
            probe: start(1)?,
            sample: Vec::with_capacity(zstd::zstd_safe::compress_bound(SAMPLE)),
            held: Vec::with_capacity(HOLD + zstd::zstd_safe::compress_bound(MAX_RUN as usize)),
            runs: Vec::new(),
        })
    }

    /// Whether `block` looks worth compressing, from a sample of [`SAMPLE`] bytes at its start
    /// and, when that one does not, another at its middle. A block of one page is compressed
    /// without a look: judging it would cost about as much.
    fn compressible(&mut self, block: &[u8]) -> Result<bool, ImageError> {
        if block.len() <= 4096 {
            return Ok(true);
        }
        let mid = (block.len() / 2) & !4095;
        for at in [0, mid] {
            if self.sample_compresses(&block[at..at + SAMPLE])? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether `sample` gets smaller: at once when its bytes are spread unevenly enough for a
    /// Huffman code, else by compressing it.
    fn sample_compresses(&mut self, sample: &[u8]) -> Result<bool, ImageError> {
        if entropy(sample) < SPREAD {
            return Ok(true);
        }
        self.sample.clear();
        let n = self.probe.compress_to_buffer(sample, &mut self.sample).map_err(|e| zstd_error("compressing a sample".into(), e))?;
        Ok(worth(sample.len(), n))
    }

    /// The spans of `data` as (offset, length, worth compressing).
    pub fn spans(&mut self, data: &[u8]) -> Result<Vec<(usize, usize, bool)>, ImageError> {
        split(data, BLOCK, |b| self.compressible(b))
    }

    /// Compresses `data` (the memory at `vaddr` of mapping `vma`) and holds it; false, holding
    /// nothing, when that does not make it smaller.
    pub fn pack(&mut self, vma: usize, vaddr: u64, data: &[u8]) -> Result<bool, ImageError> {
        let at = self.held.len();
        self.held.reserve(zstd::zstd_safe::compress_bound(data.len()));
        let mut dst = std::io::Cursor::new(&mut self.held);
        dst.set_position(at as u64);
        let n = self.z.compress_to_buffer(data, &mut dst).map_err(|e| zstd_error(format!("compressing pages at {vaddr:#x}"), e))?;
        if n >= data.len() {
            self.held.truncate(at);
            return Ok(false);
        }
        let sum = checksum(&self.held[at..at + n]);
        self.runs.push((vma, PageRun { vaddr, len: data.len() as u64, offset: at as u64, zlen: n as u64, sum, image: 0 }));
        Ok(true)
    }

    /// Bytes of compressed runs held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether the runs held should now be placed in the image.
    pub fn full(&self) -> bool {
        self.held.len() >= HOLD
    }

    /// Places the held runs in the image: `place` writes the bytes and says at which offset;
    /// returns the runs, which are no longer held.
    pub fn flush<E>(&mut self, place: impl FnOnce(&[u8]) -> Result<u64, E>) -> Result<Vec<(usize, PageRun)>, E> {
        if self.runs.is_empty() {
            return Ok(Vec::new());
        }
        let at = place(&self.held)?;
        self.held.clear();
        let mut runs = std::mem::take(&mut self.runs);
        for (_, r) in &mut runs {
            r.offset += at;
        }
        Ok(runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes from xorshift64*: incompressible.
    fn random(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    /// Words separated by spaces: compressible.
    fn text(len: usize) -> Vec<u8> {
        let words = ["the", "pages", "of", "a", "process", "are", "saved", "and", "restored"];
        let mut out = Vec::new();
        let mut x = 7u64;
        while out.len() < len {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            out.extend_from_slice(words[(x >> 60) as usize % words.len()].as_bytes());
            out.push(b' ');
        }
        out.truncate(len);
        out
    }

    #[test]
    fn entropy_of_samples() {
        assert_eq!(entropy(&[7u8; 4096]), 0.0);
        let all: Vec<u8> = (0..4096).map(|i| i as u8).collect();
        assert!((entropy(&all) - 8.0).abs() < 1e-9);
        assert!(entropy(&random(SAMPLE, 1)) > SPREAD);
        assert!(entropy(&text(SAMPLE)) < SPREAD);
    }

    #[test]
    fn worth_needs_a_64th() {
        assert!(worth(4096, 100));
        assert!(worth(4096, 4096 - 65));
        assert!(!worth(4096, 4096 - 64));
        assert!(!worth(4096, 4096));
        assert!(!worth(4096, 4105));
    }

    #[test]
    fn split_merges_blocks_judged_alike() {
        // Blocks of 4 bytes judged by their first byte; the last block is short.
        let data = [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1];
        let spans = split(&data, 4, |b| Ok(b[0] == 1)).unwrap();
        assert_eq!(spans, vec![(0, 8, true), (8, 4, false), (12, 6, true)]);
        assert!(split(&[], 4, |_| Ok(true)).unwrap().is_empty());
        assert!(split(&data, 4, |_| Err(ImageError::Invalid("no".into()))).is_err());
    }

    #[test]
    fn random_blocks_are_stored_raw_and_text_compressed() {
        let mut p = Packer::new(1).unwrap();
        // text, random, random, text: three spans.
        let mut data = text(BLOCK);
        data.extend(random(2 * BLOCK, 3));
        data.extend(text(BLOCK + 8192));
        assert_eq!(p.spans(&data).unwrap(), vec![(0, BLOCK, true), (BLOCK, 2 * BLOCK, false), (3 * BLOCK, BLOCK + 8192, true)]);
        // A block of one page is compressed without a look: its frame is all the judging it needs.
        assert_eq!(p.spans(&random(4096, 5)).unwrap(), vec![(0, 4096, true)]);
        // Random at the start but text further on: compressed (zstd finds the text); random
        // at the middle only: compressed too, since its start is text.
        let mut half = random(BLOCK / 2, 11);
        half.extend(text(BLOCK / 2));
        assert_eq!(p.spans(&half).unwrap(), vec![(0, BLOCK, true)]);
        let mut mid = text(BLOCK / 2);
        mid.extend(random(BLOCK / 2, 13));
        assert_eq!(p.spans(&mid).unwrap(), vec![(0, BLOCK, true)]);
        // Two pages of random bytes: both samples are looked at, neither gets smaller.
        assert_eq!(p.spans(&random(8192, 17)).unwrap(), vec![(0, 8192, false)]);
        // Random bytes that were tried anyway are not kept.
        assert!(!p.pack(0, 0x1000, &random(BLOCK, 9)).unwrap());
        assert_eq!(p.held(), 0);
    }

    #[test]
    fn held_runs_are_placed_together() {
        let mut p = Packer::new(3).unwrap();
        let (a, b) = (text(BLOCK), vec![0u8; 8192]);
        assert!(p.pack(1, 0x10000, &a).unwrap());
        assert!(p.pack(2, 0x90000, &b).unwrap());
        let held = p.held();
        let mut image = vec![0u8; 100];
        let runs = p
            .flush(|bytes| -> Result<u64, ImageError> {
                assert_eq!(bytes.len(), held);
                image.extend_from_slice(bytes);
                Ok(100)
            })
            .unwrap();
        assert_eq!(p.held(), 0);
        assert_eq!(runs.len(), 2);
        let mut end = 100;
        for ((vma, r), (want_vma, want)) in runs.iter().zip([(1, &a), (2, &b)]) {
            assert_eq!((*vma, r.offset, r.len), (want_vma, end, want.len() as u64));
            let stored = &image[r.offset as usize..(r.offset + r.zlen) as usize];
            assert_eq!(r.sum, checksum(stored));
            assert_eq!(&zstd::bulk::decompress(stored, want.len()).unwrap(), want);
            end += r.zlen;
        }
        assert_eq!(end as usize, image.len());
        // Nothing held: nothing placed.
        assert!(p.flush(|_| -> Result<u64, ImageError> { panic!("placed nothing") }).unwrap().is_empty());
    }
}
