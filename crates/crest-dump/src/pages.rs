//! Streaming page data from the process (or its snapshot) into the image.
//!
//! The pages to save are cut into pieces of at most [`PIECE`] bytes (each becomes a run with its
//! own checksum, so restore can verify and read them independently), and the pieces into
//! batches of at most 4 MiB (small enough to stay in cache). Each worker thread takes the next
//! batch, reads it with one `process_vm_readv` of many ranges, cuts out the pages of anonymous
//! memory that hold only zeros (a fresh mapping gives them back), compresses each run with
//! zstd if asked (keeping it only when smaller), takes the next free place in the image for it
//! (raw runs on page boundaries) and writes it. Into a regular file two workers run at once,
//! so that reading the target, compressing, and the kernel's work of allocating and filling
//! the file's pages (the bulk of the cost on tmpfs) all use both cores; into a pipe or socket,
//! one worker, in order.
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crest_image::codec::{stored_run, Packer};
use crest_image::{PageRun, Vma, VmaBacking};
use crest_kinds::memory;
use crest_proc::Pagemap;

use crate::{check_cancel, DumpError};

/// Largest page run in the image.
pub const PIECE: u64 = crest_image::codec::MAX_RUN;
/// Bytes read from the target per batch.
const BATCH: u64 = 4 << 20;
/// Threads reading, compressing and writing pages into a regular file.
const WORKERS: usize = 2;

/// A piece of memory to save.
#[derive(Clone, Copy)]
struct Piece {
    vma: usize,
    vaddr: u64,
    len: u64,
    readable: bool,
    skip_zero: bool,
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

/// Where the pages are read from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A frozen process.
    Frozen,
    /// A process that runs meanwhile (a pre-copy): the worker threads run at a lower priority
    /// (nice 10), so that the process keeps its core when the machine is busy.
    Running,
    /// A copy-on-write snapshot, while the process runs: read through `/proc/PID/mem` (see
    /// `read_batch`), at a lower priority too.
    Snapshot,
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
    /// Writes `data` at `at`. A stream is written in order by one writer; a gap before `at`
    /// (alignment padding) is filled with zeros.
    fn put(&self, data: &[u8], at: u64) -> Result<(), DumpError> {
        match self {
            Out::File(f) => f.write_all_at(data, at).map_err(|e| crest_image::ImageError::Io(e).into()),
            Out::Stream(w) => {
                let mut w = w.lock().map_err(|_| DumpError::Unsupported("image writer poisoned".into()))?;
                let gap = at.checked_sub(w.position()).ok_or_else(|| DumpError::Unsupported("page data written out of order".into()))?;
                if gap > 0 {
                    w.append_bytes(&vec![0; gap as usize])?;
                }
                w.append_bytes(data).map_err(Into::into)
            }
        }
    }
}

/// Where the next run goes: raw runs start on a page boundary, compressed ones anywhere.
fn allocate(next: &Mutex<u64>, len: u64, aligned: bool) -> Result<u64, DumpError> {
    let mut n = next.lock().map_err(|_| DumpError::Unsupported("image offset lock poisoned".into()))?;
    if aligned {
        *n = n.next_multiple_of(4096);
    }
    let at = *n;
    *n += len;
    Ok(at)
}

/// What to save of the mappings of one process.
pub struct Select<'a> {
    /// The mappings whose pages are read; the others are left as they are.
    pub vma: &'a dyn Fn(&Vma) -> bool,
    /// For some mappings (by index), the address ranges to read instead of every page that
    /// needs saving (the runs they have already are kept).
    pub ranges: Option<&'a HashMap<usize, Vec<(u64, u64)>>>,
    /// The parts of shared anonymous objects already saved for another process of the image
    /// (by object id, as offset ranges): saved once, restored through that process's mapping.
    pub shared: Option<&'a SharedSaved>,
}

/// Offset ranges of each shared anonymous object (by id) whose pages are in the image.
pub type SharedSaved = Mutex<HashMap<u64, Vec<(u64, u64)>>>;

impl<'a> Select<'a> {
    /// The mappings `f` picks, every page of them that needs saving.
    pub fn only(f: &'a dyn Fn(&Vma) -> bool) -> Self {
        Select { vma: f, ranges: None, shared: None }
    }

    /// The same, saving each part of a shared anonymous object once across the calls that
    /// share `saved`.
    pub fn once(mut self, saved: &'a SharedSaved) -> Self {
        self.shared = Some(saved);
        self
    }
}

/// `ranges` (addresses in `v`, a mapping of shared object `id` from `offset`) less what
/// `saved` has of that object; what is left is added to `saved`.
fn not_saved_yet(saved: &SharedSaved, id: u64, offset: u64, v: &Vma, ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let Ok(mut saved) = saved.lock() else { return ranges };
    let have = saved.entry(id).or_default();
    let mut out = Vec::new();
    for (a, len) in ranges {
        // Walk the range, cutting out every saved part.
        let (mut s, e) = (a - v.start + offset, a - v.start + offset + len);
        let mut cuts: Vec<(u64, u64)> = have.iter().copied().filter(|&(hs, hl)| hs < e && hs + hl > s).collect();
        cuts.sort_unstable();
        for (hs, hl) in cuts {
            if hs > s {
                out.push((s, hs - s));
            }
            s = s.max(hs + hl);
        }
        if s < e {
            out.push((s, e - s));
        }
    }
    have.extend(out.iter().copied());
    out.into_iter().map(|(o, l)| (o - offset + v.start, l)).collect()
}

/// What [`write_pages`] did.
pub struct Written {
    /// The mappings, with their page runs in address order.
    pub vmas: Vec<Vma>,
    /// Bytes written: the image grows by exactly that many.
    pub bytes: u64,
    /// From a running process: the ranges that could not be read (unmapped or moved meanwhile),
    /// in address order.
    pub missed: Vec<(u64, u64)>,
    /// The ranges of anonymous memory read and found to hold only zeros (so stored as no run:
    /// a fresh mapping gives them back), in address order, as (address, length).
    pub zeros: Vec<(u64, u64)>,
}

/// Saves the pages of `vmas` that need saving (see [`Written`]).
/// Only what `select` picks is read (from process `pid`, whose pagemap `pm` is, when the caller
/// holds it open already, with the pages to save of the mappings it looked at: `seen`). With
/// `compress` (a zstd level), each run is stored compressed when that makes it smaller.
#[allow(clippy::too_many_arguments)]
pub fn write_pages<W: Write + Send>(
    pid: i32,
    seen: Option<Seen<'_>>,
    mut vmas: Vec<Vma>,
    select: &Select<'_>,
    compress: Option<i32>,
    progress: &crest_kinds::progress::Progress,
    source: Source,
    sink: Sink<'_, W>,
) -> Result<Written, DumpError> {
    let seen = seen.filter(|s| s.pagemap.pid() == pid);
    let opened;
    let pm = match seen {
        Some(s) => s.pagemap,
        None => {
            opened = Pagemap::open(pid)?;
            &opened
        }
    };
    let mut scratch = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut need: Vec<u64> = vmas.iter().map(|v| v.need).collect();
    for (i, v) in vmas.iter().enumerate().filter(|(_, v)| (select.vma)(v)) {
        // A zero page of anonymous memory comes back by itself; one of a file mapping must be
        // saved, since the file underneath holds other bytes.
        let skip_zero = matches!(v.backing, VmaBacking::Anon | VmaBacking::SharedAnon { .. });
        // What needs saving ([`Vma::need`]): all of it here, or, for ranges given, told by the
        // caller (the runs the mapping has already count too).
        let ranges = match select.ranges.and_then(|r| r.get(&i)) {
            Some(r) => r.clone(),
            None => {
                let mut r = match seen.and_then(|s| s.to_save.get(&v.start)) {
                    Some(r) => r.clone(),
                    None => memory::pages_to_save(v, pm, &mut scratch)?,
                };
                // Pages still shared with the parent are in the parent's runs.
                if !v.inherited.is_empty() {
                    r = memory::subtract_ranges(&r, &v.inherited);
                }
                if let (Some(saved), VmaBacking::SharedAnon { id, size }) = (select.shared, &v.backing) {
                    r = not_saved_yet(saved, *id, size - (v.end - v.start), v, r);
                }
                need[i] = r.iter().map(|x| x.1).sum();
                r
            }
        };
        for (mut a, len) in ranges {
            let end = a + len;
            while a < end {
                let l = (end - a).min(PIECE);
                pieces.push(Piece { vma: i, vaddr: a, len: l, readable: v.prot & 1 != 0, skip_zero });
                a += l;
            }
        }
    }
    for (v, n) in vmas.iter_mut().zip(need) {
        v.need = n;
    }
    progress.add_total(pieces.iter().map(|p| p.len).sum());
    // Batches of pieces of at most BATCH bytes, in address order.
    let mut batches: Vec<std::ops::Range<usize>> = Vec::new();
    let mut i = 0;
    while i < pieces.len() {
        let (mut j, mut bytes) = (i, 0);
        while j < pieces.len() && (bytes == 0 || bytes + pieces[j].len <= BATCH) {
            bytes += pieces[j].len;
            j += 1;
        }
        batches.push(i..j);
        i = j;
    }
    let (start, workers, out) = match sink {
        Sink::File(f, start) => (start, WORKERS, Out::File(f)),
        Sink::Stream(w) => (w.position(), 1, Out::Stream(Mutex::new(w))),
    };
    let next_batch = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let next = Mutex::new(start);
    let missed = Mutex::new(Vec::new());
    let zeros = Mutex::new(Vec::new());
    // One batch (a small process) is read here: a thread would cost more than it saves. (Not
    // while the process runs: the readers then run at a lower priority.)
    let workers = workers.min(batches.len()).max(1);
    let inline = workers == 1 && source == Source::Frozen;
    let mut all = if inline {
        work(pid, false, &pieces, &batches, &next_batch, &failed, compress, progress, &out, &next, None, &zeros)?
    } else {
        std::thread::scope(|s| -> Result<Vec<(usize, PageRun)>, DumpError> {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let (pieces, batches, out, next, next_batch, failed, zeros) = (&pieces, &batches, &out, &next, &next_batch, &failed, &zeros);
                    let missed = (source == Source::Running).then_some(&missed);
                    s.spawn(move || {
                        if source != Source::Frozen {
                            crest_ptrace::sys::lower_thread_priority(10);
                        }
                        let r = work(pid, source == Source::Snapshot, pieces, batches, next_batch, failed, compress, progress, out, next, missed, zeros);
                        if r.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                })
                .collect();
            let mut all = Vec::new();
            let mut first_err = None;
            for h in handles {
                match h.join() {
                    Ok(Ok(r)) => all.extend(r),
                    Ok(Err(e)) => first_err = first_err.or(Some(e)),
                    Err(_) => first_err = first_err.or(Some(DumpError::Unsupported("a page writer thread panicked".into()))),
                }
            }
            first_err.map_or(Ok(all), Err)
        })?
    };
    all.sort_by_key(|r| r.1.vaddr);
    for (vi, r) in all {
        vmas[vi].pages.push(r);
    }
    if select.ranges.is_some() {
        for v in &mut vmas {
            v.pages.sort_by_key(|r| r.vaddr);
        }
    }
    let end = next.into_inner().map_err(|_| DumpError::Unsupported("image offset lock poisoned".into()))?;
    let mut missed = missed.into_inner().map_err(|_| DumpError::Unsupported("missed-pages lock poisoned".into()))?;
    missed.sort_unstable();
    let zeros = zeros.into_inner().map_err(|_| DumpError::Unsupported("zero-pages lock poisoned".into()))?;
    for &(vi, _, len) in &zeros {
        vmas[vi].zero += len;
    }
    let mut zeros: Vec<(u64, u64)> = zeros.into_iter().map(|(_, a, l)| (a, l)).collect();
    zeros.sort_unstable();
    Ok(Written { vmas, bytes: end - start, missed, zeros })
}

/// What was read of a frozen process before its pages are written: its open pagemap, and the
/// pages to save ([`memory::pages_to_save`]) of the mappings looked at already, by their
/// start. Used by [`write_pages`] for that process only, while it is still frozen.
#[derive(Clone, Copy)]
pub struct Seen<'a> {
    /// Its `/proc/PID/pagemap`.
    pub pagemap: &'a Pagemap,
    /// Pages to save, by the start of their mapping.
    pub to_save: &'a std::collections::HashMap<u64, Vec<(u64, u64)>>,
}

/// [`write_pages`] into the image being written by `w` on `out`: with two threads at once
/// when `out` is a regular file, in order otherwise.
#[allow(clippy::too_many_arguments)]
pub fn write_into(
    w: &mut crest_image::ImageWriter<&File>,
    out: &File,
    pid: i32,
    seen: Option<Seen<'_>>,
    vmas: Vec<Vma>,
    select: &Select<'_>,
    compress: Option<i32>,
    progress: &crest_kinds::progress::Progress,
    source: Source,
) -> Result<Written, DumpError> {
    write_into_known(w, (out, regular(out)), pid, seen, vmas, select, compress, progress, source)
}

/// Whether `out` is a regular file, which [`write_into`] writes with two threads at once.
pub fn regular(out: &File) -> bool {
    out.metadata().map(|m| m.file_type().is_file()).unwrap_or(false)
}

/// [`write_into`] on `out` whose kind the caller knows already (`out.1`, [`regular`]): asked
/// once for the pages of every process of a tree rather than before each.
#[allow(clippy::too_many_arguments)]
pub fn write_into_known(
    w: &mut crest_image::ImageWriter<&File>,
    (out, regular): (&File, bool),
    pid: i32,
    seen: Option<Seen<'_>>,
    vmas: Vec<Vma>,
    select: &Select<'_>,
    compress: Option<i32>,
    progress: &crest_kinds::progress::Progress,
    source: Source,
) -> Result<Written, DumpError> {
    if regular {
        let start = w.position();
        let r = write_pages::<&File>(pid, seen, vmas, select, compress, progress, source, Sink::File(out, start))?;
        // pwrite leaves the file position alone: move it past the pages for what follows.
        let mut f = out;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(start + r.bytes)).map_err(crest_image::ImageError::Io)?;
        w.note_appended(r.bytes);
        Ok(r)
    } else {
        write_pages(pid, seen, vmas, select, compress, progress, source, Sink::Stream(w))
    }
}

/// One worker: takes the next batch, reads it from the target, cuts out zero pages, compresses
/// and writes each run; until no batch is left or another worker failed.
#[allow(clippy::too_many_arguments)]
fn work<W: Write>(
    pid: i32,
    snapshot: bool,
    pieces: &[Piece],
    batches: &[std::ops::Range<usize>],
    next_batch: &AtomicUsize,
    failed: &AtomicBool,
    compress: Option<i32>,
    progress: &crest_kinds::progress::Progress,
    out: &Out<'_, W>,
    next: &Mutex<u64>,
    missed: Option<&Mutex<Vec<(u64, u64)>>>,
    zeros: &Mutex<Vec<(usize, u64, u64)>>,
) -> Result<Vec<(usize, PageRun)>, DumpError> {
    let mut runs = Vec::new();
    let mut packer = compress.map(Packer::new).transpose()?;
    let mut buf = Vec::new();
    // The process's /proc/PID/mem, opened once when first needed (see read_batch).
    let mut mem = None;
    loop {
        if failed.load(Ordering::Relaxed) {
            return Ok(runs);
        }
        check_cancel()?;
        let Some(range) = batches.get(next_batch.fetch_add(1, Ordering::Relaxed)) else {
            if let Some(pk) = &mut packer {
                runs.extend(place_packed(pk, next, out)?);
            }
            return Ok(runs);
        };
        let batch = &pieces[range.clone()];
        match (read_batch(pid, snapshot, &mut mem, batch, &mut buf), missed) {
            (Ok(()), _) => {}
            // A running process may unmap or move memory while it is read: these pieces are
            // left to the checkpoint proper.
            (Err(_), Some(m)) => {
                m.lock().map_err(|_| DumpError::Unsupported("missed-pages lock poisoned".into()))?.extend(batch.iter().map(|p| (p.vaddr, p.len)));
                continue;
            }
            (Err(e), None) => return Err(e),
        }
        let mut off = 0usize;
        for p in batch {
            let piece = &buf[off..off + p.len as usize];
            let keep = if p.skip_zero { nonzero_runs(piece) } else { vec![(0, piece.len())] };
            if p.skip_zero {
                let mut z = zeros.lock().map_err(|_| DumpError::Unsupported("zero-pages lock poisoned".into()))?;
                let mut at = 0usize;
                for &(o, len) in keep.iter().chain(std::iter::once(&(piece.len(), 0))) {
                    if o > at {
                        z.push((p.vma, p.vaddr + at as u64, (o - at) as u64));
                    }
                    at = o + len;
                }
            }
            for (o, len) in keep {
                let data = &piece[o..o + len];
                let vaddr = p.vaddr + o as u64;
                let Some(pk) = &mut packer else {
                    runs.push((p.vma, put_raw(data, vaddr, next, out)?));
                    continue;
                };
                for (so, slen, worth) in pk.spans(data)? {
                    let span = &data[so..so + slen];
                    let at = vaddr + so as u64;
                    if !(worth && pk.pack(p.vma, at, span)?) {
                        runs.push((p.vma, put_raw(span, at, next, out)?));
                    }
                }
            }
            off += p.len as usize;
        }
        if let Some(pk) = &mut packer {
            if pk.full() {
                runs.extend(place_packed(pk, next, out)?);
            }
        }
        progress.add_done(buf.len() as u64);
    }
}

/// Writes `data`, the memory at `vaddr`, as a raw run at the next page boundary.
fn put_raw<W: Write>(data: &[u8], vaddr: u64, next: &Mutex<u64>, out: &Out<'_, W>) -> Result<PageRun, DumpError> {
    let at = allocate(next, data.len() as u64, true)?;
    out.put(data, at)?;
    Ok(stored_run(vaddr, at, data))
}

/// Writes the compressed runs `pk` holds, back to back, at the next free place.
fn place_packed<W: Write>(pk: &mut Packer, next: &Mutex<u64>, out: &Out<'_, W>) -> Result<Vec<(usize, PageRun)>, DumpError> {
    pk.flush(|bytes| {
        let at = allocate(next, bytes.len() as u64, false)?;
        out.put(bytes, at)?;
        Ok(at)
    })
}

/// Reads the pieces of one batch, back to back, into `buf`. From a snapshot, everything is
/// read through `/proc/PID/mem`: it shares its pages copy-on-write with the running process,
/// and process_vm_readv pins pages, which makes the kernel copy each shared page first, where
/// /proc/PID/mem reads them as they are. Otherwise with process_vm_readv, but for pieces that
/// are not readable (present pages of a `PROT_NONE` mapping, such as the zero page under a
/// thread stack's guard page), read through `/proc/PID/mem`, which may ignore protections.
/// `mem` keeps that file open from one batch to the next.
fn read_batch(pid: i32, snapshot: bool, mem: &mut Option<File>, batch: &[Piece], buf: &mut Vec<u8>) -> Result<(), DumpError> {
    buf.resize(batch.iter().map(|p| p.len as usize).sum(), 0);
    let open = |mem: &mut Option<File>| -> Result<(), DumpError> {
        if mem.is_none() {
            *mem = Some(File::open(format!("/proc/{pid}/mem")).map_err(|e| crest_kinds::KindError::io(format!("opening /proc/{pid}/mem"), e))?);
        }
        Ok(())
    };
    if !snapshot && batch.iter().all(|p| p.readable) {
        let ranges: Vec<(u64, u64)> = batch.iter().map(|p| (p.vaddr, p.len)).collect();
        crest_ptrace::mem::read_scatter(pid, buf, &ranges)?;
        return Ok(());
    }
    let mut off = 0usize;
    for p in batch {
        let dst = &mut buf[off..off + p.len as usize];
        if p.readable && !snapshot {
            crest_ptrace::mem::read_exact(pid, p.vaddr, dst)?;
        } else {
            open(mem)?;
            let f = mem.as_ref().expect("opened above");
            f.read_exact_at(dst, p.vaddr).map_err(|e| crest_kinds::KindError::io(format!("reading memory of pid {pid} at {:#x}", p.vaddr), e))?;
        }
        off += p.len as usize;
    }
    Ok(())
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
