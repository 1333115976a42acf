//! The stream form (format 4.15): a golden image sent as a stream and received into a spool
//! file gives back every byte the image's records refer to, opens as the image did and its
//! page runs check; a stream cut short, with a damaged run head, or a run that is not the
//! metadata's, ends with a message that says so, and the runs that did arrive stay usable.
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crest_image::stream::{self, Arrival};
use crest_image::ImageFile;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/4.15").join(name)
}

/// A spool file in a scratch directory of this test, removed with it.
struct Spool(PathBuf);
impl Spool {
    fn new(name: &str) -> (Spool, std::fs::File) {
        let p = std::env::temp_dir().join(format!("crest-image-stream-{name}-{}", std::process::id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).expect("spool file");
        (Spool(p), f)
    }
}
impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Everything first (the test's choice: any predicate gives a valid stream).
fn all(_: i32, _: &crest_image::Vma) -> bool {
    false
}

/// Receives `bytes` into a new spool: the opened image and what arrived.
fn receive(name: &str, bytes: Vec<u8>) -> Result<(Spool, ImageFile, std::sync::Arc<Arrival>), crest_image::ImageError> {
    let (spool, f) = Spool::new(name);
    let mut input = std::io::Cursor::new(bytes);
    let mut first = [0u8; 8];
    input.read_exact(&mut first).expect("8 bytes");
    let r = stream::receive(first, Box::new(input), f.try_clone().expect("clone"))?;
    let img = ImageFile::from_file(f)?;
    let arrival = r.expect(&img);
    Ok((spool, img, arrival))
}

fn sent(name: &str) -> (ImageFile, Vec<u8>) {
    let img = ImageFile::open(&golden(name)).expect("golden image");
    let mut out = Vec::new();
    let s = stream::send(&img, &all, &mut out).expect("sent");
    assert_eq!(s.bytes, out.len() as u64);
    assert_eq!(s.runs as usize, img.runs().len(), "each run once");
    (img, out)
}

#[test]
fn a_golden_image_comes_back_whole_from_its_stream() {
    for name in ["tree.crest", "compressed.crest", "threads.crest"] {
        let (orig, bytes) = sent(name);
        assert_eq!(&bytes[..8], b"CRESTSTR");
        let (_s, img, arrival) = receive(name, bytes).expect("received");
        arrival.wait_end().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(img.len, orig.len, "{name}: the image file's length");
        assert_eq!(img.image.processes.len(), orig.image.processes.len());
        img.verify_pages(1).unwrap_or_else(|e| panic!("{name}: {e}"));
        // Every byte a run refers to is the original's.
        for (_, r) in orig.runs() {
            let (mut a, mut b) = (vec![0u8; r.stored_len() as usize], vec![0u8; r.stored_len() as usize]);
            orig.file.read_exact_at(&mut a, r.offset).expect("read");
            img.file.read_exact_at(&mut b, r.offset).expect("read");
            assert!(a == b, "{name}: run at {:#x}", r.vaddr);
        }
    }
}

#[test]
fn a_stream_cut_short_says_so_and_keeps_what_arrived() {
    let (orig, bytes) = sent("tree.crest");
    let (runs, _) = stream::order(&orig, &all);
    // Cut in the middle of the last run: every other run arrived.
    let cut = bytes.len() - 32 - (runs.last().expect("runs").1.stored_len() as usize) / 2;
    let (_s, _img, arrival) = receive("cut", bytes[..cut].to_vec()).expect("the metadata arrived");
    let why = arrival.wait_end().expect_err("cut short");
    assert!(why.contains("cut short") && why.contains(&format!("page run {} of {}", runs.len(), runs.len())), "{why}");
    for (_, r) in &runs[..runs.len() - 1] {
        arrival.wait_run(r.offset).expect("arrived before the cut");
    }
    let last = runs.last().expect("runs").1;
    assert!(arrival.wait_run(last.offset).expect_err("never arrives").contains("cut short"));
    // Cut in the metadata: refused before anything is opened.
    let (_, bytes) = sent("tree.crest");
    let err = receive("cut-meta", bytes[..5000].to_vec()).err().expect("refused").to_string();
    assert!(err.contains("cut short in the image metadata"), "{err}");
}

#[test]
fn damaged_framing_is_refused() {
    let (orig, bytes) = sent("single.crest");
    let tail = orig.sections.iter().find(|s| s.kind == crest_image::SectionKind::Pages).map(|s| s.offset + s.len).expect("pages");
    let first_run = 64 + 4096 + (orig.len - tail) as usize;
    // A run head's offset changed (its checksum no longer matches).
    let mut bad = bytes.clone();
    bad[first_run + 9] ^= 1;
    let (_s, _img, arrival) = receive("head", bad).expect("the metadata arrived");
    let why = arrival.wait_end().expect_err("refused");
    assert!(why.contains("corrupt") && why.contains("page run 1 of"), "{why}");
    // The stream head damaged.
    let mut bad = bytes.clone();
    bad[30] ^= 1;
    assert!(receive("stream-head", bad).err().expect("refused").to_string().contains("checksum mismatch in image stream head"));
    // A file image is not a stream.
    let mut file = Vec::new();
    std::fs::File::open(golden("single.crest")).and_then(|mut f| f.read_to_end(&mut file)).expect("read");
    assert!(!stream::is_stream(&file[..8]));
}
