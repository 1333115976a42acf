//! Streaming page data from the frozen process into the image.
//!
//! The calling thread reads target memory with `process_vm_readv` (scatter reads of many page
//! runs at once) into 4 MiB buffers (small enough to stay in cache), cuts out the pages of anonymous memory that hold only
//! zeros (a fresh mapping gives them back), and assigns each remaining run its place in the
//! image. Writer threads checksum the runs and write them: into a regular file with `pwrite`,
//! two at once, so that the kernel's work of allocating and filling the file's pages (the
//! bulk of the cost on tmpfs) runs on both cores; into a pipe or socket, one writer in order.
//! Runs are cut into pieces of at most [`PIECE`] bytes, each with its own checksum, so restore
//! can verify and read them independently.
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Mutex};

use crest_image::{checksum, PageRun, Vma, VmaBacking};
use crest_kinds::memory;
use crest_proc::Pagemap;

use crate::{check_cancel, DumpError};

/// Largest page run in the image.
pub const PIECE: u64 = 4 << 20;
/// Bytes read from the target per batch.
const BATCH: u64 = 4 << 20;
/// Buffers in flight between the reader and the writers.
const BUFFERS: usize = 4;

/// A piece of memory to save.
#[derive(Clone, Copy)]
struct Piece {
    vma: usize,
    vaddr: u64,
    len: u64,
    readable: bool,
    skip_zero: bool,
}

/// A buffer read from the target, with where each of its runs goes.
struct Batch {
    buf: Vec<u8>,
    /// (vma index, vaddr, offset in buf, length, offset in the image)
    runs: Vec<(usize, u64, usize, usize, u64)>,
}

/// Whether a page holds only zeros (stops at the first non-zero word).
fn is_zero(page: &[u8]) -> bool {
    let mut words = page.chunks_exact(16);
    words.all(|w| u128::from_ne_bytes(w.try_into().unwrap_or([1; 16])) == 0) && words.remainder().iter().all(|&b| b == 0)
}

/// The sub-runs of `data` that are not all-zero pages, as (offset, length).
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

/// Where page data goes.
pub enum Sink<'a, W: Write> {
    /// A regular file: written with `pwrite` from the given offset on, by two threads.
    File(&'a File, u64),
    /// Anything else (a pipe, a socket): appended in order by one thread.
    Stream(&'a mut crest_image::ImageWriter<W>),
}

enum Out<'a, W: Write> {
    File(&'a File),
    Stream(Mutex<&'a mut crest_image::ImageWriter<W>>),
}

impl<W: Write> Out<'_, W> {
    fn put(&self, data: &[u8], at: u64) -> Result<(), DumpError> {
        match self {
            Out::File(f) => f.write_all_at(data, at).map_err(|e| crest_image::ImageError::Io(e).into()),
            Out::Stream(w) => {
                let mut w = w.lock().map_err(|_| DumpError::Unsupported("image writer poisoned".into()))?;
                debug_assert_eq!(w.position(), at);
                w.append_pages(data).map(drop).map_err(Into::into)
            }
        }
    }
}

/// Saves the pages of `vmas` that need saving; returns the mappings with their page runs and
/// the number of bytes written (the image grows by exactly that many).
pub fn write_pages<W: Write + Send>(pid: i32, mut vmas: Vec<Vma>, sink: Sink<'_, W>) -> Result<(Vec<Vma>, u64), DumpError> {
    let pm = Pagemap::open(pid)?;
    let mut scratch = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    for (i, v) in vmas.iter().enumerate() {
        // A zero page of anonymous memory comes back by itself; one of a file mapping must be
        // saved, since the file underneath holds other bytes.
        let skip_zero = matches!(v.backing, VmaBacking::Anon | VmaBacking::SharedAnon { .. });
        for (mut a, len) in memory::pages_to_save(v, &pm, &mut scratch)? {
            let end = a + len;
            while a < end {
                let l = (end - a).min(PIECE);
                pieces.push(Piece { vma: i, vaddr: a, len: l, readable: v.prot & 1 != 0, skip_zero });
                a += l;
            }
        }
    }
    let (start, writers, out) = match sink {
        Sink::File(f, start) => (start, 2, Out::File(f)),
        Sink::Stream(w) => (w.position(), 1, Out::Stream(Mutex::new(w))),
    };
    let (to_writers, rx) = mpsc::sync_channel::<Batch>(BUFFERS - writers);
    let rx = Mutex::new(rx);
    let (to_reader, free) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        let _ = to_reader.send(Vec::new());
    }
    let end = std::thread::scope(|s| -> Result<u64, DumpError> {
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                let (rx, out, to_reader) = (&rx, &out, to_reader.clone());
                s.spawn(move || -> Result<Vec<(usize, PageRun)>, DumpError> {
                    let mut runs = Vec::new();
                    loop {
                        let next = rx.lock().map_err(|_| DumpError::Unsupported("page queue poisoned".into()))?.recv();
                        let Ok(b) = next else { return Ok(runs) };
                        check_cancel()?;
                        for &(vi, vaddr, off, len, at) in &b.runs {
                            let data = &b.buf[off..off + len];
                            out.put(data, at)?;
                            runs.push((vi, PageRun { vaddr, len: len as u64, offset: at, sum: checksum(data) }));
                        }
                        let _ = to_reader.send(b.buf);
                    }
                })
            })
            .collect();
        drop(to_reader);
        let read = read_all(pid, &pieces, start, &free, &to_writers);
        drop(to_writers);
        let mut all = Vec::new();
        let mut failed = None;
        for h in handles {
            match h.join() {
                Ok(Ok(r)) => all.extend(r),
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(_) => failed = failed.or(Some(DumpError::Unsupported("image writer thread panicked".into()))),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let end = read?;
        all.sort_by_key(|r| r.1.vaddr);
        for (vi, r) in all {
            vmas[vi].pages.push(r);
        }
        Ok(end)
    })?;
    Ok((vmas, end - start))
}

/// Reads every piece into batches, cuts out zero pages, assigns image offsets from `start` on
/// and hands the batches to the writers. Returns the image offset after the last run.
fn read_all(pid: i32, pieces: &[Piece], start: u64, free: &mpsc::Receiver<Vec<u8>>, to_writers: &mpsc::SyncSender<Batch>) -> Result<u64, DumpError> {
    let mut at = start;
    let mut i = 0;
    while i < pieces.len() {
        check_cancel()?;
        let mut j = i;
        let mut bytes = 0;
        while j < pieces.len() && (bytes == 0 || bytes + pieces[j].len <= BATCH) {
            bytes += pieces[j].len;
            j += 1;
        }
        // A writer that failed stops taking buffers; its error is reported by the caller.
        let Ok(mut buf) = free.recv() else { return Ok(at) };
        buf.resize(bytes as usize, 0);
        let batch = &pieces[i..j];
        if batch.iter().all(|p| p.readable) {
            let ranges: Vec<(u64, u64)> = batch.iter().map(|p| (p.vaddr, p.len)).collect();
            crest_ptrace::mem::read_scatter(pid, &mut buf, &ranges)?;
        } else {
            let mut off = 0usize;
            for p in batch {
                let dst = &mut buf[off..off + p.len as usize];
                if p.readable {
                    crest_ptrace::mem::read_exact(pid, p.vaddr, dst)?;
                } else {
                    crest_ptrace::mem::read_forced(pid, p.vaddr, dst)?;
                }
                off += p.len as usize;
            }
        }
        let mut runs = Vec::new();
        let mut off = 0usize;
        for p in batch {
            let data = &buf[off..off + p.len as usize];
            let keep = if p.skip_zero { nonzero_runs(data) } else { vec![(0, data.len())] };
            for (o, l) in keep {
                runs.push((p.vma, p.vaddr + o as u64, off + o, l, at));
                at += l as u64;
            }
            off += p.len as usize;
        }
        if to_writers.send(Batch { buf, runs }).is_err() {
            return Ok(at);
        }
        i = j;
    }
    Ok(at)
}

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
