//! Streaming page data from the frozen process into the image.
//!
//! This thread reads target memory with `process_vm_readv` (scatter reads of many page runs at
//! once) into one of two buffers while a writer thread checksums and writes the other: reading
//! and writing overlap on two cores, and each byte is copied once out of the target and once
//! into the image. Runs are cut into pieces of at most [`PIECE`] bytes, each with its own
//! checksum, so restore can verify and read them independently.
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
    pieces: Vec<(usize, u64, u64)>, // vma index, vaddr, len
}

/// Saves the pages of `vmas` that need saving; returns the mappings with their page runs and
/// the number of bytes written.
pub fn write_pages<W: Write + Send>(pid: i32, mut vmas: Vec<Vma>, w: &mut ImageWriter<W>) -> Result<(Vec<Vma>, u64), DumpError> {
    let pm = Pagemap::open(pid)?;
    let mut scratch = Vec::new();
    let mut pieces: Vec<(usize, u64, u64, bool)> = Vec::new(); // vma, vaddr, len, readable
    for (i, v) in vmas.iter().enumerate() {
        for (mut a, len) in memory::pages_to_save(v, &pm, &mut scratch)? {
            let end = a + len;
            while a < end {
                let l = (end - a).min(PIECE);
                pieces.push((i, a, l, v.prot & 1 != 0));
                a += l;
            }
        }
    }
    let total: u64 = pieces.iter().map(|p| p.2).sum();
    let (to_writer, writer_rx) = mpsc::sync_channel::<Batch>(1);
    let (to_reader, reader_rx) = mpsc::sync_channel::<Vec<u8>>(2);
    let _ = to_reader.send(Vec::new());
    let _ = to_reader.send(Vec::new());
    let runs: Vec<(usize, PageRun)> = std::thread::scope(|s| -> Result<_, DumpError> {
        let writer = s.spawn(move || -> Result<Vec<(usize, PageRun)>, DumpError> {
            let mut runs = Vec::new();
            for b in writer_rx {
                let mut off = 0usize;
                for &(vi, vaddr, len) in &b.pieces {
                    let data = &b.buf[off..off + len as usize];
                    let (at, sum) = w.append_pages(data)?;
                    runs.push((vi, PageRun { vaddr, len, offset: at, sum }));
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
                if to_writer.send(Batch { buf, pieces: batch.iter().map(|p| (p.0, p.1, p.2)).collect() }).is_err() {
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
    for (vi, r) in runs {
        vmas[vi].pages.push(r);
    }
    Ok((vmas, total))
}
