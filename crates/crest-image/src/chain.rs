//! Incremental images (format 4.3): an image whose page runs may lie in the images before it.
//!
//! An incremental image names its parent ([`crate::Parent`]: path, length and a checksum of its
//! trailer, which through the section table, the metadata and the run checksums stands for
//! every byte of it that is used); a run with [`crate::PageRun::image`] `k` lies in the `k`-th
//! image up the chain. [`Chain::open`] finds every link and checks it; [`Chain::flatten`]
//! writes the chain as one standalone image.
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::format::{SectionKind, PAGE_SIZE, TRAILER_LEN};
use crate::{checksum, Image, ImageError, ImageFile, ImageWriter, Parent};

/// Longest chain followed: a guard against loops.
pub const MAX_DEPTH: usize = 1000;

/// What identifies the image `file` of `len` bytes as a parent: the checksum of its trailer.
pub fn identity(file: &File, len: u64) -> Result<u64, ImageError> {
    let mut t = [0u8; TRAILER_LEN as usize];
    file.read_exact_at(&mut t, len.checked_sub(TRAILER_LEN).ok_or_else(|| ImageError::Invalid("a parent image shorter than its trailer".into()))?)?;
    Ok(checksum(&t))
}

/// The [`Parent`] record naming the image at `path` (made absolute), already opened as `img`.
pub fn parent_of(path: &Path, img: &ImageFile) -> Result<Parent, ImageError> {
    let abs = std::path::absolute(path)?;
    Ok(Parent { path: abs.display().to_string(), len: img.len, sum: identity(&img.file, img.len)? })
}

/// An image and every parent it depends on, checked.
#[derive(Debug)]
pub struct Chain {
    /// The images, the one opened first, then its parent, and so on: a run with
    /// [`crate::PageRun::image`] `k` of the first lies in `images[k]`.
    pub images: Vec<ImageFile>,
    /// Their paths (the first as shown by the caller).
    pub paths: Vec<String>,
}

impl Chain {
    /// Follows the parents of `top` (shown as `shown`): each must be at its path, of its length
    /// and checksum, and every run of `top` that lies in one must lie in its page data.
    pub fn open(top: ImageFile, shown: &str) -> Result<Chain, ImageError> {
        let mut images = vec![top];
        let mut paths = vec![shown.to_string()];
        while let Some(p) = images.last().and_then(|i| i.image.parent.clone()) {
            let child = paths.last().cloned().unwrap_or_default();
            if images.len() > MAX_DEPTH {
                return Err(ImageError::Parent { child, parent: p.path, why: format!("the chain is longer than {MAX_DEPTH} images") });
            }
            let bad = |why: String| ImageError::Parent { child: child.clone(), parent: p.path.clone(), why };
            // A chain moved as a whole: the parent under its name beside its child.
            let mut at = PathBuf::from(&p.path);
            if !at.exists() {
                if let (Some(dir), Some(name)) = (Path::new(&child).parent(), at.file_name()) {
                    if dir.join(name).exists() {
                        at = dir.join(name);
                    }
                }
            }
            let img = ImageFile::open(&at).map_err(|e| match e {
                ImageError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => bad("is missing".into()),
                ImageError::Io(e) => bad(format!("cannot be read: {e}")),
                e => bad(format!("has changed since the incremental image was written (it is no longer a good image: {e})")),
            })?;
            if img.len != p.len || identity(&img.file, img.len)? != p.sum {
                return Err(bad("has changed since the incremental image was written (its length or checksum differs): the chain cannot be restored".into()));
            }
            images.push(img);
            paths.push(at.display().to_string());
        }
        let chain = Chain { images, paths };
        chain.check_links()?;
        Ok(chain)
    }

    /// Every run of the first image lies in the page data of the image it names.
    fn check_links(&self) -> Result<(), ImageError> {
        let regions: Vec<(u64, u64)> = self.images.iter().map(|i| i.sections.iter().find(|s| s.kind == SectionKind::Pages).map_or((0, 0), |s| (s.offset, s.offset + s.len))).collect();
        for (pid, r) in all_runs(&self.images[0].image) {
            let Some(&(start, end)) = regions.get(r.image as usize) else {
                return Err(ImageError::Invalid(format!("pid {pid}: page run {:#x}+{:#x} lies in image {} of a chain of {}", r.vaddr, r.len, r.image, self.images.len())));
            };
            if r.offset < start || r.offset.checked_add(r.stored_len()).is_none_or(|e| e > end) {
                return Err(ImageError::Invalid(format!("pid {pid}: page run {:#x}+{:#x} at offset {} is outside the page data of {}", r.vaddr, r.len, r.offset, self.paths[r.image as usize])));
            }
        }
        Ok(())
    }

    /// Writes the chain as one standalone image into `out` (every run read from the image that
    /// holds it, its checksum checked, and copied as stored); returns its metadata.
    pub fn flatten<W: Write>(&self, out: W) -> Result<Image, ImageError> {
        let mut image = self.images[0].image.clone();
        let mut w = ImageWriter::new(out)?;
        let mut buf = Vec::new();
        for p in &mut image.processes {
            for v in &mut p.vmas {
                for r in &mut v.pages {
                    let src = &self.images[r.image as usize].file;
                    buf.resize(r.stored_len() as usize, 0);
                    src.read_exact_at(&mut buf, r.offset)?;
                    if checksum(&buf) != r.sum {
                        return Err(ImageError::Checksum { what: format!("page data of pid {} at {:#x}..{:#x} in {}", p.pid, r.vaddr, r.vaddr + r.len, self.paths[r.image as usize]) });
                    }
                    if r.zlen == 0 {
                        let pad = w.position().next_multiple_of(PAGE_SIZE) - w.position();
                        w.append_bytes(&vec![0u8; pad as usize])?;
                        r.offset = w.append_pages(&buf)?.0;
                    } else {
                        r.offset = w.position();
                        w.append_bytes(&buf)?;
                    }
                    r.image = 0;
                }
            }
        }
        image.parent = None;
        w.finish(&image)?;
        Ok(image)
    }
}

/// Checks the checksum of every page run of `chain[0]` as stored, each in the image of the chain
/// that holds it, without decompressing, on `workers` threads: for an incremental image what
/// [`ImageFile::verify_checksums`] is for a standalone one. A failure names the process, the
/// address and, for a run of a parent, that parent's position in the chain.
pub fn verify_checksums(chain: &[ImageFile], workers: usize) -> Result<(), ImageError> {
    let Some(top) = chain.first() else { return Ok(()) };
    let runs: Vec<(i32, &crate::PageRun)> = all_runs(&top.image).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                s.spawn(|| -> Result<(), ImageError> {
                    let mut reader = crate::codec::RunReader::new()?;
                    loop {
                        let Some(&(pid, r)) = runs.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) else { return Ok(()) };
                        let Some(img) = chain.get(r.image as usize) else {
                            return Err(ImageError::Invalid(format!("pid {pid}: page run {:#x}+{:#x} lies in image {} of a chain of {}", r.vaddr, r.len, r.image, chain.len())));
                        };
                        reader.check_stored(&img.file, pid, r).map_err(|e| match e {
                            ImageError::Checksum { what } if r.image > 0 => ImageError::Checksum { what: format!("{what} (in parent {} of the chain)", r.image) },
                            e => e,
                        })?;
                    }
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(ImageError::Invalid("page verifier panicked".into()))))
    })
}

/// Writes the chain as one standalone image at `out` ([`Chain::flatten`]), whole or not at all:
/// into a temporary file beside it (mode 0400, as checkpoints are written), synced, then
/// renamed over `out` and the directory synced. Once it returns, the images of the chain are no
/// longer needed by `out`. `out` may be the chain's first image (replaced by its standalone
/// form), not one of its parents: the images that name that parent would lose it.
pub fn merge_into(chain: &Chain, out: &Path) -> Result<Image, ImageError> {
    let same = |a: &Path, b: &Path| std::fs::canonicalize(a).ok().is_some_and(|a| std::fs::canonicalize(b).ok() == Some(a));
    if let Some(p) = chain.paths.iter().skip(1).find(|p| same(Path::new(p), out)) {
        return Err(ImageError::Invalid(format!("{} is a parent in the chain being merged: the images incremental to it would lose it; write the merged image under another name", p)));
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out.file_name().ok_or_else(|| ImageError::Invalid(format!("{} names no file", out.display())))?;
    let tmp = dir.join(format!(".{}.merge-{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = (|| -> Result<Image, ImageError> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(&tmp)?;
        let image = chain.flatten(std::io::BufWriter::with_capacity(1 << 20, &f))?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)?;
        File::open(&dir)?.sync_all()?;
        Ok(image)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn all_runs(img: &Image) -> impl Iterator<Item = (i32, &crate::PageRun)> {
    img.processes.iter().flat_map(|p| p.vmas.iter().flat_map(move |v| v.pages.iter().map(move |r| (p.pid, r))))
}
