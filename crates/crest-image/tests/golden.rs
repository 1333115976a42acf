//! Golden images (tests/data, one directory per format version): every build reads the images
//! of earlier versions, as far as everything short of restarting them (framing, records,
//! validation, and every page run read back as a restart reads it), or refuses them with a
//! message that names both the image's version and its own.
use std::path::{Path, PathBuf};

use crest_image::{ImageError, ImageFile, FORMAT_MAJOR, FORMAT_MINOR};

/// What each golden image holds: (file, processes, threads of its first process, compressed).
const EXPECTED: &[(&str, usize, usize, bool)] = &[("single.crest", 1, 1, false), ("tree.crest", 3, 1, false), ("threads.crest", 1, 4, false), ("compressed.crest", 3, 1, true)];

/// The version directories under tests/data, as ((major, minor), path).
fn versions() -> Vec<((u32, u32), PathBuf)> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut out: Vec<_> = std::fs::read_dir(&data)
        .expect("tests/data")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            let (major, minor) = name.split_once('.')?;
            Some(((major.parse().ok()?, minor.parse().ok()?), path))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn golden_images_are_read_or_refused_naming_both_versions() {
    let all = versions();
    assert!(all.iter().any(|(v, _)| *v == (4, 0)), "the golden images of format 4.0 are missing: {all:?}");
    let ours = format!("{FORMAT_MAJOR}.{FORMAT_MINOR}");
    for ((major, minor), dir) in all {
        for &(name, processes, threads, compressed) in EXPECTED {
            let path = dir.join(name);
            let what = format!("golden image {major}.{minor}/{name}");
            match ImageFile::open(&path) {
                Ok(img) => {
                    assert_eq!(major, FORMAT_MAJOR, "{what}: read, though of another major version");
                    assert_eq!((img.header.major, img.header.minor), (major, minor), "{what}: its header names another version");
                    let i = &img.image;
                    assert_eq!(i.processes.len(), processes, "{what}: processes");
                    assert_eq!(i.processes[0].threads.len(), threads, "{what}: threads");
                    assert!(i.processes.iter().all(|p| p.threads.iter().all(|t| t.xsave.len() > 512 && t.regs.rip != 0)), "{what}: thread state");
                    assert!(i.processes.iter().skip(1).all(|p| p.ppid == i.processes[0].pid), "{what}: the children's parent");
                    assert!(i.processes.iter().all(|p| p.vmas.iter().any(|v| !v.pages.is_empty())), "{what}: page data");
                    if (major, minor) >= (4, 7) && processes > 1 {
                        // Made as root: the children's pages still shared with their parent are saved once.
                        assert!(i.processes.iter().skip(1).all(|p| p.vmas.iter().any(|v| !v.inherited.is_empty())), "{what}: pages shared with the parent");
                    }
                    let packed = img.runs().iter().any(|(_, r)| r.zlen != 0);
                    assert_eq!(packed, compressed, "{what}: compressed runs");
                    img.verify_pages(2).unwrap_or_else(|e| panic!("{what}: {e}"));
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(matches!(e, ImageError::Version { .. } | ImageError::Newer { .. }), "{what}: refused for another reason than its version: {msg}");
                    assert!(msg.contains(&format!("{major}.{minor}")) && msg.contains(&ours), "{what}: the refusal does not name both versions: {msg}");
                }
            }
        }
    }
}

/// The golden images of a shared descriptor table (4.10 on): the descriptors are saved once,
/// with the process that owns the table; its child and grandchild are marked as sharing their
/// parent's, and the image carries the section that makes older readers refuse it.
#[test]
fn golden_shared_descriptor_tables() {
    for ((major, minor), dir) in versions() {
        let path = dir.join("sharedfiles.crest");
        if (major, minor) > (FORMAT_MAJOR, FORMAT_MINOR) || !path.exists() {
            continue;
        }
        let what = format!("golden image {major}.{minor}/sharedfiles.crest");
        let img = ImageFile::open(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        let p = &img.image.processes;
        assert_eq!(p.len(), 3, "{what}: processes");
        assert!(!p[0].files_shared && !p[0].fds.is_empty(), "{what}: the first process owns the table and its descriptors");
        assert!(p[1..].iter().all(|q| q.files_shared && q.fds.is_empty()), "{what}: the others share their parent's");
        assert_eq!((p[1].ppid, p[2].ppid), (p[0].pid, p[1].pid), "{what}: a child and a grandchild");
        assert!(img.sections.iter().any(|s| s.kind == crest_image::SectionKind::Other(crest_image::marker_kinds::SHARED_FILES)), "{what}: the SharedFiles section");
        img.verify_pages(2).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

/// The golden images of a guard region (4.11 on): a page of the mapping is a guard region,
/// in no run, and the image carries the section that makes older readers refuse it.
#[test]
fn golden_guard_regions() {
    for ((major, minor), dir) in versions() {
        let path = dir.join("guards.crest");
        if (major, minor) > (FORMAT_MAJOR, FORMAT_MINOR) || !path.exists() {
            continue;
        }
        let what = format!("golden image {major}.{minor}/guards.crest");
        let img = ImageFile::open(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        let v = img.image.processes[0].vmas.iter().find(|v| !v.guards.is_empty()).unwrap_or_else(|| panic!("{what}: no mapping with a guard region"));
        assert_eq!(v.guards, vec![(v.start + 4096, 4096)], "{what}: the guard region is the mapping's second page");
        assert!(!v.pages.iter().any(|r| r.vaddr < v.start + 8192 && v.start + 4096 < r.vaddr + r.len), "{what}: the guard page holds no data");
        assert!(img.sections.iter().any(|s| s.kind == crest_image::SectionKind::Other(crest_image::marker_kinds::GUARD_PAGES)), "{what}: the GuardPages section");
        img.verify_pages(2).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

/// The incremental golden images (4.3 on): the child names its parent (by an absolute path of
/// the machine that made them: found beside it here), some of its runs lie in the parent, and
/// the chain reads back as one standalone image.
#[test]
fn golden_incremental_images_follow_their_parent() {
    for ((major, minor), dir) in versions() {
        let path = dir.join("incremental.crest");
        if (major, minor) > (FORMAT_MAJOR, FORMAT_MINOR) || !path.exists() {
            continue;
        }
        let what = format!("golden image {major}.{minor}/incremental.crest");
        let img = ImageFile::open(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(img.image.parent.as_ref().is_some_and(|p| p.path.ends_with("/incremental-parent.crest")), "{what}: its parent");
        assert!(img.image.processes.iter().flat_map(|p| &p.vmas).flat_map(|v| &v.pages).any(|r| r.image == 1), "{what}: no run lies in the parent");
        img.verify_pages(2).unwrap_or_else(|e| panic!("{what}: {e}"));
        let chain = crest_image::chain::Chain::open(img, &path.display().to_string()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(chain.images.len(), 2, "{what}: the chain");
        let mut flat = Vec::new();
        let image = chain.flatten(&mut flat).unwrap_or_else(|e| panic!("{what}: flattening: {e}"));
        assert!(image.parent.is_none());
        let back = ImageFile::check_bytes(&flat).unwrap_or_else(|e| panic!("{what}: the flattened image: {e}"));
        assert_eq!(back.page_bytes(), image.page_bytes(), "{what}: the flattened image's pages");
        // Moved together elsewhere, the parent is found beside its child.
        let moved = std::env::temp_dir().join(format!("crest-golden-chain-{}-{major}.{minor}", std::process::id()));
        std::fs::create_dir_all(&moved).expect("temp dir");
        for name in ["incremental.crest", "incremental-parent.crest"] {
            std::fs::copy(dir.join(name), moved.join(name)).expect("copy");
        }
        let child = moved.join("incremental.crest");
        let opened = ImageFile::open(&child).and_then(|i| crest_image::chain::Chain::open(i, &child.display().to_string()));
        let _ = std::fs::remove_dir_all(&moved);
        let chain = opened.unwrap_or_else(|e| panic!("{what}, moved: {e}"));
        // Where the images were made, the recorded path is still there and comes first.
        let recorded = chain.images[0].image.parent.as_ref().map(|p| p.path.clone()).unwrap_or_default();
        assert!(chain.paths[1] == recorded || chain.paths[1].starts_with(&moved.display().to_string()), "{what}, moved: the parent found at {}", chain.paths[1]);
    }
}

/// Golden images of 4.13 on hold no network lock (no TCP connection): the field reads as none,
/// and no NetworkLock section is written.
#[test]
fn golden_images_hold_no_network_lock() {
    for ((major, minor), dir) in versions() {
        if (major, minor) > (FORMAT_MAJOR, FORMAT_MINOR) || major != FORMAT_MAJOR {
            continue;
        }
        let Ok(img) = ImageFile::open(&dir.join("single.crest")) else { continue };
        assert!(img.image.network_lock.is_none(), "golden image {major}.{minor}/single.crest: a network lock");
        assert!(!img.sections.iter().any(|s| s.kind == crest_image::SectionKind::Other(crest_image::marker_kinds::NETWORK_LOCK)), "golden image {major}.{minor}: the NetworkLock section");
    }
}
