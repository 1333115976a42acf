//! The stream form of an image (format 4.15): what `cr_checkpoint --stream` sends down a pipe
//! or a socket so that the receiver has the metadata before the pages, and a lazy restart can
//! let the processes run while the pages still arrive.
//!
//! ```text
//! stream head (64 bytes)     magic CRESTSTR, version, page size, length of the image file
//!                            carried, where its page data ends, number of page runs
//! file header (4096 bytes)   the image file's bytes 0..4096
//! tail                       the image file's bytes from the end of its page data to its end:
//!                            metadata, other sections, section table, trailer
//! page runs, one by one      run head (32 bytes: magic CRESTRUN, offset, length) then the
//!                            run's bytes as stored in the file (each has its checksum in the
//!                            metadata); the runs the processes need before they run first
//! end (32 bytes)             magic CRESTFIN, number of runs, page bytes sent
//! ```
//!
//! The receiver ([`receive`]) rebuilds the image file in a spool file: header and tail at
//! once (then [`crate::ImageFile::from_file`] checks and decodes it as any image, its page data
//! still holes), each run at its offset as it comes. [`Arrival`] tells who waits for a run
//! when it is there, or that the stream ended without it.
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::format::{Header, FORMAT_MAJOR, FORMAT_MINOR, HEADER_LEN, PAGE_SIZE};
use crate::{checksum, ImageError, ImageFile, PageRun, Vma};

/// First 8 bytes of an image stream.
pub const STREAM_MAGIC: [u8; 8] = *b"CRESTSTR";
/// First 8 bytes of each page run's head in a stream.
pub const RUN_MAGIC: [u8; 8] = *b"CRESTRUN";
/// First 8 bytes of the end of a stream.
pub const END_MAGIC: [u8; 8] = *b"CRESTFIN";
/// The minor version that introduced the stream form.
pub const STREAM_MINOR: u32 = 15;
/// Size of the stream head.
pub const HEAD_LEN: usize = 64;
/// Size of a run head and of the end.
pub const RUN_HEAD_LEN: usize = 32;
/// Largest tail (metadata, sections, table, trailer) a receiver accepts.
const MAX_TAIL: u64 = (1 << 30) + (1 << 20);

/// The stream head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHead {
    /// Format major version.
    pub major: u32,
    /// Format minor version.
    pub minor: u32,
    /// Length of the image file the stream carries.
    pub len: u64,
    /// Offset in that file where the page data ends and the metadata begins.
    pub tail: u64,
    /// Page runs the stream carries.
    pub runs: u64,
}

impl StreamHead {
    /// The [`HEAD_LEN`] bytes of this head.
    pub fn encode(&self) -> [u8; HEAD_LEN] {
        let mut b = [0u8; HEAD_LEN];
        b[0..8].copy_from_slice(&STREAM_MAGIC);
        b[8..12].copy_from_slice(&self.major.to_le_bytes());
        b[12..16].copy_from_slice(&self.minor.to_le_bytes());
        b[16..20].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        b[24..32].copy_from_slice(&self.len.to_le_bytes());
        b[32..40].copy_from_slice(&self.tail.to_le_bytes());
        b[40..48].copy_from_slice(&self.runs.to_le_bytes());
        let sum = checksum(&b[0..56]);
        b[56..64].copy_from_slice(&sum.to_le_bytes());
        b
    }

    /// Parses and checks a stream head.
    pub fn decode(b: &[u8]) -> Result<Self, ImageError> {
        if b.len() < HEAD_LEN || b[0..8] != STREAM_MAGIC {
            return Err(ImageError::BadMagic { found: b[..b.len().min(8)].to_vec() });
        }
        if u64_at(b, 56) != checksum(&b[0..56]) {
            return Err(ImageError::Checksum { what: "image stream head".into() });
        }
        let h = StreamHead { major: u32_at(b, 8), minor: u32_at(b, 12), len: u64_at(b, 24), tail: u64_at(b, 32), runs: u64_at(b, 40) };
        if h.major != FORMAT_MAJOR {
            return Err(ImageError::Version { found_major: h.major, found_minor: h.minor, supported_major: FORMAT_MAJOR, supported_minor: FORMAT_MINOR });
        }
        if u64::from(u32_at(b, 16)) != PAGE_SIZE || u32_at(b, 20) != 0 {
            return Err(ImageError::Invalid(format!("image stream of page size {} and flags {:#x}: not supported", u32_at(b, 16), u32_at(b, 20))));
        }
        if h.tail < HEADER_LEN || h.tail > h.len || h.len - h.tail > MAX_TAIL {
            return Err(ImageError::Invalid(format!("image stream head: page data up to {} of an image of {} bytes", h.tail, h.len)));
        }
        Ok(h)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A run head or the end: magic, two numbers, the checksum of the first 24 bytes.
fn encode_mark(magic: &[u8; 8], a: u64, b: u64) -> [u8; RUN_HEAD_LEN] {
    let mut m = [0u8; RUN_HEAD_LEN];
    m[0..8].copy_from_slice(magic);
    m[8..16].copy_from_slice(&a.to_le_bytes());
    m[16..24].copy_from_slice(&b.to_le_bytes());
    let sum = checksum(&m[0..24]);
    m[24..32].copy_from_slice(&sum.to_le_bytes());
    m
}

/// What [`send`] sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    /// Page runs.
    pub runs: u64,
    /// Page bytes, as stored.
    pub page_bytes: u64,
    /// Every byte of the stream.
    pub bytes: u64,
}

/// The page runs of `img` in the order a stream carries them: each once (by offset); first
/// those for which `first(pid, vma)` holds, process by process, mapping by mapping, in address
/// order; then the others, the runs of smaller mappings before those of larger ones (a
/// restored process, and its restore, touch its small areas first: thread-local data, the
/// heap's start, a program's data; the large buffers come last), in address order within a
/// mapping. Returns them and how many come first.
pub fn order(img: &ImageFile, first: &dyn Fn(i32, &Vma) -> bool) -> (Vec<(i32, PageRun)>, usize) {
    let mut seen = HashSet::new();
    let mut early = Vec::new();
    let mut late = Vec::new();
    for p in &img.image.processes {
        for v in &p.vmas {
            let early_one = first(p.pid, v);
            for r in v.pages.iter().filter(|r| r.image == 0) {
                if seen.insert(r.offset) {
                    if early_one {
                        early.push((p.pid, *r));
                    } else {
                        late.push((v.end - v.start, p.pid, *r));
                    }
                }
            }
        }
    }
    // Stable: in address order within each size.
    late.sort_by_key(|l| l.0);
    let n = early.len();
    early.extend(late.into_iter().map(|(_, pid, r)| (pid, r)));
    (early, n)
}

/// Writes `img` (a standalone image: the caller refuses an incremental one) into `out` in
/// the stream form; see the [module documentation](self).
pub fn send(img: &ImageFile, first: &dyn Fn(i32, &Vma) -> bool, out: &mut dyn Write) -> Result<Sent, ImageError> {
    if img.image.parent.is_some() {
        return Err(ImageError::Invalid("an incremental image cannot be sent as a stream: merge it first (cr_info --merge)".into()));
    }
    let pages = img.sections.iter().find(|s| s.kind == crate::SectionKind::Pages).ok_or(ImageError::MissingSection(crate::SectionKind::Pages))?;
    let tail = pages.offset + pages.len;
    let (runs, _) = order(img, first);
    let head = StreamHead { major: img.header.major, minor: img.header.minor.max(STREAM_MINOR), len: img.len, tail, runs: runs.len() as u64 };
    let mut sent = Sent::default();
    out.write_all(&head.encode())?;
    let mut buf = vec![0u8; HEADER_LEN as usize];
    img.file.read_exact_at(&mut buf, 0)?;
    out.write_all(&buf)?;
    buf.resize((img.len - tail) as usize, 0);
    img.file.read_exact_at(&mut buf, tail)?;
    out.write_all(&buf)?;
    sent.bytes = (HEAD_LEN as u64) + HEADER_LEN + (img.len - tail);
    for (_, r) in &runs {
        let len = r.stored_len();
        buf.resize(len as usize, 0);
        img.file.read_exact_at(&mut buf, r.offset)?;
        out.write_all(&encode_mark(&RUN_MAGIC, r.offset, len))?;
        out.write_all(&buf)?;
        sent.runs += 1;
        sent.page_bytes += len;
        sent.bytes += RUN_HEAD_LEN as u64 + len;
    }
    out.write_all(&encode_mark(&END_MAGIC, sent.runs, sent.page_bytes))?;
    out.flush()?;
    sent.bytes += RUN_HEAD_LEN as u64;
    Ok(sent)
}

/// Which page runs of a stream being received are in the spool file, and whether the stream
/// ended (whole, or cut short and why).
#[derive(Debug)]
pub struct Arrival {
    state: Mutex<ArrivalState>,
    changed: Condvar,
    /// When the stream head was read.
    pub first_byte: Instant,
    /// When bytes last came in, in nanoseconds since `first_byte`.
    last_byte: AtomicU64,
}

#[derive(Debug, Default)]
struct ArrivalState {
    /// Offsets of the runs in the spool file.
    got: HashSet<u64>,
    page_bytes: u64,
    /// None while the stream is read; Some(Ok) once its end was read, Some(Err(why)) when it
    /// ended before.
    end: Option<Result<(), String>>,
}

impl Arrival {
    fn lock(&self) -> std::sync::MutexGuard<'_, ArrivalState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the run stored at `offset` is in the spool file; an error says why it
    /// never will be.
    pub fn wait_run(&self, offset: u64) -> Result<(), String> {
        let mut st = self.lock();
        loop {
            if st.got.contains(&offset) {
                return Ok(());
            }
            match &st.end {
                Some(Err(why)) => return Err(why.clone()),
                Some(Ok(())) => return Err(format!("the image stream ended without the page data at offset {offset}")),
                None => st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    /// Waits until the stream ended; an error says why it ended before its end.
    pub fn wait_end(&self) -> Result<(), String> {
        let mut st = self.lock();
        loop {
            match &st.end {
                Some(r) => return r.clone(),
                None => st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner()),
            }
        }
    }

    /// How the stream ended, if it did.
    pub fn ended(&self) -> Option<Result<(), String>> {
        self.lock().end.clone()
    }

    /// Page bytes received so far.
    pub fn page_bytes(&self) -> u64 {
        self.lock().page_bytes
    }

    fn got(&self, offset: u64, len: u64) {
        let mut st = self.lock();
        st.got.insert(offset);
        st.page_bytes += len;
        drop(st);
        self.changed.notify_all();
    }

    fn end(&self, r: Result<(), String>) {
        self.lock().end.get_or_insert(r);
        self.changed.notify_all();
    }

    /// Notes that bytes came in now.
    fn heard(&self) {
        self.last_byte.store(self.first_byte.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// How long since bytes last came in.
    fn silence(&self) -> Duration {
        self.first_byte.elapsed().saturating_sub(Duration::from_nanos(self.last_byte.load(Ordering::Relaxed)))
    }

    /// Ends the stream with an error, which every waiter learns, once no byte has come in for
    /// `limit` before its end: a sender that stalls without closing its end would otherwise
    /// leave a process waiting for its page for ever. Watches from a thread of its own.
    pub fn watch(self: &Arc<Self>, limit: Duration) {
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("crest-stream-watch".into()).spawn(move || {
            let mut st = me.lock();
            while st.end.is_none() {
                let quiet = me.silence();
                if quiet >= limit {
                    drop(st);
                    me.end(Err(format!("no byte of the image stream came in for {} s (the sender stalled; --stream-timeout sets how long to wait)", limit.as_secs_f64())));
                    return;
                }
                st = me.changed.wait_timeout(st, limit - quiet).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
            }
        });
        if let Err(e) = spawned {
            self.end(Err(format!("starting the thread that watches the image stream: {e}")));
        }
    }
}

/// The stream's input, noting in its [`Arrival`] when bytes come in.
struct Heard<'a> {
    input: &'a mut dyn Read,
    arrival: &'a Arrival,
}

impl Read for Heard<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.arrival.heard();
        Ok(n)
    }
}

/// Whether the 8 bytes `first` start an image stream.
pub fn is_stream(first: &[u8]) -> bool {
    first.starts_with(&STREAM_MAGIC)
}

/// Reads exactly `buf.len()` bytes; a stream that ends before says what it was reading.
fn read_full(input: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), ImageError> {
    let mut at = 0;
    while at < buf.len() {
        match input.read(&mut buf[at..]) {
            Ok(0) => return Err(ImageError::Stream(format!("the image stream was cut short in {what} ({at} of {} bytes arrived)", buf.len()))),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::Io(e)),
        }
    }
    Ok(())
}

/// Starts receiving an image stream from `input`, whose first 8 bytes `first` were read
/// already, into `spool` (an empty file): the head, the file header and the tail are read
/// here and written at their places, the file given its whole length, so that
/// [`ImageFile::from_file`] opens it at once; a thread then reads the page runs as they come,
/// each into its place, and tells the returned [`Arrival`]. `runs` is filled by the caller
/// once the metadata is decoded (see [`Receiving::expect`]): until then no run is taken.
pub fn receive(first: [u8; 8], mut input: Box<dyn Read + Send>, spool: File) -> Result<Receiving, ImageError> {
    let mut head = [0u8; HEAD_LEN];
    head[..8].copy_from_slice(&first);
    read_full(&mut *input, &mut head[8..], "its head")?;
    let first_byte = Instant::now();
    let head = StreamHead::decode(&head)?;
    let mut buf = vec![0u8; HEADER_LEN as usize];
    read_full(&mut *input, &mut buf, "the image header")?;
    Header::decode(&buf)?;
    spool.write_all_at(&buf, 0)?;
    buf.resize((head.len - head.tail) as usize, 0);
    read_full(&mut *input, &mut buf, "the image metadata")?;
    spool.set_len(head.len)?;
    spool.write_all_at(&buf, head.tail)?;
    let arrival = Arc::new(Arrival { state: Mutex::new(ArrivalState::default()), changed: Condvar::new(), first_byte, last_byte: AtomicU64::new(0) });
    Ok(Receiving { head, input, spool, arrival })
}

/// A stream whose metadata was read: [`Receiving::expect`] starts taking its page runs.
pub struct Receiving {
    /// The stream head.
    pub head: StreamHead,
    input: Box<dyn Read + Send>,
    spool: File,
    /// Which runs are in.
    pub arrival: Arc<Arrival>,
}

impl std::fmt::Debug for Receiving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Receiving({:?})", self.head)
    }
}

impl Receiving {
    /// Takes the page runs of `img` (the image the spool file holds, checked) off the stream
    /// in a thread of its own, each into its place in the spool file: every run head must
    /// name a run of the image not received yet, the stream must hold as many as its head
    /// said, then its end. Anything else, or the stream ending before, ends it with the
    /// reason, which every waiter learns.
    pub fn expect(self, img: &ImageFile) -> Arc<Arrival> {
        let runs: HashMap<u64, u64> = img.runs().into_iter().map(|(_, r)| (r.offset, r.stored_len())).collect();
        let Receiving { head, mut input, spool, arrival } = self;
        let tell = arrival.clone();
        let spawned = std::thread::Builder::new().name("crest-stream".into()).spawn(move || {
            let r = take_runs(&head, &runs, &mut *input, &spool, &tell).map_err(|e| e.to_string());
            tell.end(r);
        });
        if let Err(e) = spawned {
            arrival.end(Err(format!("starting the thread that reads the image stream: {e}")));
        }
        arrival
    }
}

fn take_runs(head: &StreamHead, runs: &HashMap<u64, u64>, input: &mut dyn Read, spool: &File, arrival: &Arrival) -> Result<(), ImageError> {
    let input = &mut Heard { input, arrival };
    if head.runs != runs.len() as u64 {
        return Err(ImageError::Stream(format!("the image stream announces {} page runs, and its metadata lists {}", head.runs, runs.len())));
    }
    let mut buf = Vec::new();
    let mut mark = [0u8; RUN_HEAD_LEN];
    let mut taken = HashSet::new();
    let mut bytes = 0u64;
    for n in 0..head.runs {
        read_full(input, &mut mark, &format!("the head of page run {} of {}", n + 1, head.runs))?;
        if mark[0..8] != RUN_MAGIC || u64_at(&mark, 24) != checksum(&mark[0..24]) {
            return Err(ImageError::Stream(format!("the image stream is corrupt: no valid head for page run {} of {}", n + 1, head.runs)));
        }
        let (offset, len) = (u64_at(&mark, 8), u64_at(&mark, 16));
        if runs.get(&offset) != Some(&len) || !taken.insert(offset) {
            return Err(ImageError::Stream(format!("the image stream is corrupt: page run {} of {} ({len} bytes at {offset}) is not one the metadata lists, or came twice", n + 1, head.runs)));
        }
        buf.resize(len as usize, 0);
        read_full(input, &mut buf, &format!("page run {} of {}", n + 1, head.runs))?;
        spool.write_all_at(&buf, offset)?;
        bytes += len;
        arrival.got(offset, len);
    }
    read_full(input, &mut mark, "its end")?;
    if mark[0..8] != END_MAGIC || u64_at(&mark, 24) != checksum(&mark[0..24]) || u64_at(&mark, 8) != head.runs || u64_at(&mark, 16) != bytes {
        return Err(ImageError::Stream("the image stream is corrupt: no valid end after its last page run".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip_and_damage_is_refused() {
        let h = StreamHead { major: FORMAT_MAJOR, minor: STREAM_MINOR, len: 1 << 20, tail: 1 << 19, runs: 7 };
        let mut b = h.encode();
        assert_eq!(StreamHead::decode(&b).expect("valid"), h);
        b[30] ^= 1;
        assert!(matches!(StreamHead::decode(&b), Err(ImageError::Checksum { .. })));
        assert!(matches!(StreamHead::decode(b"CRESTIMG"), Err(ImageError::BadMagic { .. })));
        let bad = StreamHead { tail: 2 << 20, ..h }.encode();
        assert!(StreamHead::decode(&bad).is_err(), "page data past the end of the image");
    }
}
