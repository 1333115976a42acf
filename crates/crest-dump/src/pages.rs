//! Streaming page data from the frozen process into the image.
//!
//! This thread reads target memory with `process_vm_readv` (scatter reads of many page runs at
//! once) into one of two buffers while a writer thread checksums and writes the other: reading
//! and writing overlap on two cores, and each byte is copied once out of the target and once
//! into the image. Runs are cut into pieces of at most [`PIECE`] bytes, each with its own
//! checksum, so restore can verify and read them independently. Pages of anonymous memory that
//! hold only zeros are left out: a fresh mapping gives them back.

#[cfg(test)]
mod tests {
    #[test]
    fn zero_pages_are_cut_out() {
        let mut d = vec![0u8; 4096 * 5];
        d[4096 + 7] = 1;
        d[4096 * 2] = 2;
        d[4096 * 4 + 4095] = 3;
        assert_eq!(super::nonzero_runs(&d), vec![(4096, 8192), (16384, 4096)]);
        assert!(super::nonzero_runs(&[0u8; 8192]).is_empty());
    }
}
use std::io::Write;
use std::sync::mpsc;

use crest_image::{ImageWriter, PageRun, Vma};
use crest_kinds::memory;
use crest_proc::Pagemap;

use crate::DumpError;

/// Largest page run in the image.
pub const PIECE: u64 = 8 << 20;
/// Bytes read from the target per batch.
const BATCH: u64 = 32 << 20;

struct Batch {
    buf: Vec<u8>,
    pieces: Vec<(usize, u64, u64, bool)>, // vma index, vaddr, len, zero pages may be left out
}

/// Whether a page holds only zeros (stops at the first non-zero word).
fn is_zero(page: &[u8]) -> bool {
    let mut words = page.chunks_exact(16);
    words.all(|w| u128::from_ne_bytes(w.try_into().unwrap_or([1; 16])) == 0) && words.remainder().iter().all(|&b| b == 0)
}

/// The sub-runs of `data` (at `vaddr`) that are not all-zero pages, as (offset, length).
fn nonzero_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, page) in data.chunks(4096).enumerate() {
        if !is_zero(page) {
            let at = i * 4096;
            match out.last_mut() {
                Some(r) if r.0 + r.1 == at => r.1 += page.len(),
                _ => out.push((at, page.len())),
            }
        }
    }
    out
}

/// Saves the pages of `vmas` that need saving; returns the mappings with their page runs and
/// the number of bytes written.
pub fn write_pages<W: Write + Send>(pid: i32, mut vmas: Vec<Vma>, w: &mut ImageWriter<W>) -> Result<(Vec<Vma>, u64), DumpError> {
    let pm = Pagemap::open(pid)?;
    let mut scratch = Vec::new();
    let mut pieces: Vec<(usize, u64, u64, bool, bool)> = Vec::new(); // vma, vaddr, len, readable, zero-skippable
    for (i, v) in vmas.iter().enumerate() {
        // A zero page of anonymous memory comes back by itself; one of a file mapping must be
        // saved, since the file underneath holds other bytes.
        let skip_zero = matches!(v.backing, crest_image::VmaBacking::Anon | crest_image::VmaBacking::SharedAnon { .. });
        for (mut a, len) in memory::pages_to_save(v, &pm, &mut scratch)? {
            let end = a + len;
            while a < end {
                let l = (end - a).min(PIECE);
                pieces.push((i, a, l, v.prot & 1 != 0, skip_zero));
                a += l;
            }
        }
    }
    let (to_writer, writer_rx) = mpsc::sync_channel::<Batch>(1);
    let (to_reader, reader_rx) = mpsc::sync_channel::<Vec<u8>>(2);
    let _ = to_reader.send(Vec::new());
    let _ = to_reader.send(Vec::new());
    let runs: Vec<(usize, PageRun)> = std::thread::scope(|s| -> Result<_, DumpError> {
        let writer = s.spawn(move || -> Result<Vec<(usize, PageRun)>, DumpError> {
            let mut runs = Vec::new();
            for b in writer_rx {
                let mut off = 0usize;
                for &(vi, vaddr, len, skip_zero) in &b.pieces {
                    let data = &b.buf[off..off + len as usize];
                    if skip_zero {
                        for (o, l) in nonzero_runs(data) {
                            let (at, sum) = w.append_pages(&data[o..o + l])?;
                            runs.push((vi, PageRun { vaddr: vaddr + o as u64, len: l as u64, offset: at, sum }));
                        }
                    } else {
                        let (at, sum) = w.append_pages(data)?;
                        runs.push((vi, PageRun { vaddr, len, offset: at, sum }));
                    }
                    off += len as usize;
                }
                let _ = to_reader.send(b.buf);
            }
            Ok(runs)
        });
        let read_result = (|| -> Result<(), DumpError> {
            let mut i = 0;
            while i < pieces.len() {
                let mut j = i;
                let mut bytes = 0;
                while j < pieces.len() && (bytes == 0 || bytes + pieces[j].2 <= BATCH) {
                    bytes += pieces[j].2;
                    j += 1;
                }
                let Ok(mut buf) = reader_rx.recv() else { break };
                buf.resize(bytes as usize, 0);
                let batch = &pieces[i..j];
                if batch.iter().all(|p| p.3) {
                    let ranges: Vec<(u64, u64)> = batch.iter().map(|p| (p.1, p.2)).collect();
                    crest_ptrace::mem::read_scatter(pid, &mut buf, &ranges)?;
                } else {
                    let mut off = 0usize;
                    for p in batch {
                        let dst = &mut buf[off..off + p.2 as usize];
                        if p.3 {
                            crest_ptrace::mem::read_exact(pid, p.1, dst)?;
                        } else {
                            crest_ptrace::mem::read_forced(pid, p.1, dst)?;
                        }
                        off += p.2 as usize;
                    }
                }
                if to_writer.send(Batch { buf, pieces: batch.iter().map(|p| (p.0, p.1, p.2, p.4)).collect() }).is_err() {
                    break; // the writer failed; its error is returned below
                }
                i = j;
            }
            Ok(())
        })();
        drop(to_writer);
        let runs = writer.join().map_err(|_| DumpError::Unsupported("image writer thread panicked".into()))??;
        read_result?;
        Ok(runs)
    })?;
    let total = runs.iter().map(|r| r.1.len).sum();
    for (vi, r) in runs {
        vmas[vi].pages.push(r);
    }
    Ok((vmas, total))
}
