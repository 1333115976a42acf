//! Property tests of the image parser: what the writer writes reads back equal; a truncated,
//! altered or random file is refused with an error, never a panic; records that break the
//! validation rules are refused with a message saying what is wrong.
use crest_image::*;
use proptest::prelude::*;

fn thread(tid: i32) -> Thread {
    Thread {
        tid,
        comm: "t".into(),
        regs: Regs::default(),
        xsave: vec![0; 64],
        sigmask: 0,
        pending: vec![],
        clear_child_tid: 0,
        robust_list: (0, 0),
        altstack: (0, 2, 0),
        rseq: None,
        attrs: ThreadAttrs::default(),
    }
}

/// An image of one process with `maps` anonymous mappings (page counts) whose pages are filled
/// with `seed`-derived bytes; returns the file bytes and the record.
fn build(maps: &[u8], seed: u8, fds: u8) -> (Vec<u8>, Image) {
    let mut w = ImageWriter::new(Vec::new()).expect("header");
    let mut vmas = Vec::new();
    let mut addr = 0x10_0000u64;
    for (i, &pages) in maps.iter().enumerate() {
        let pages = u64::from(pages % 8) + 1;
        let mut v = Vma { start: addr, end: addr + pages * 4096, prot: 3, flags: 0, madv: 0, backing: VmaBacking::Anon, pages: vec![], need: 0, zero: 0, inherited: Vec::new(), guards: Vec::new() };
        if i % 2 == 0 {
            let data: Vec<u8> = (0..pages * 4096).map(|b| (b as u8).wrapping_mul(seed).wrapping_add(i as u8)).collect();
            let (offset, sum) = w.append_pages(&data).expect("pages");
            v.pages.push(PageRun { vaddr: addr, len: pages * 4096, offset, zlen: 0, sum, image: 0 });
            v.need = pages * 4096;
        }
        vmas.push(v);
        addr += (pages + 1) * 4096;
    }
    let p = Process {
        pid: 42,
        ppid: 0,
        pgid: 42,
        sid: 42,
        exe: "/bin/x".into(),
        cmdline: b"x\0".to_vec(),
        creds: Creds::default(),
        cwd: "/".into(),
        root: "/".into(),
        umask: 0o22,
        personality: 0,
        rlimits: vec![],
        mm: MmState::default(),
        vmas,
        fds: (0..i32::from(fds))
            .map(|fd| FdRecord {
                fd,
                flags: 2,
                cloexec: false,
                file: fd as u64,
                kind: FdKind::Inherited { what: "pipe:[1]".into(), class: crest_image::StdioClass::Pipe },
                locks: Vec::new(),
                fown: Fown::default(),
            })
            .collect(),
        sigactions: vec![],
        shared_pending: vec![],
        threads: vec![thread(42), thread(43)],
        exit_status: None,
        dropped: Vec::new(),
        attrs: ProcAttrs::default(),
        cwd_deleted: None,
        files_shared: false,
    };
    let img = Image {
        tool: "t".into(),
        kernel: "k".into(),
        host: "h".into(),
        time: 1,
        root_pid: 42,
        scope: "tree".into(),
        vdso_layout: vec![],
        processes: vec![p],
        ipc: vec![],
        parent: None,
        tracking: vec![],
        clocks: None,
        network_lock: None,
    };
    let bytes = w.finish(&img).expect("finish");
    (bytes, img)
}

fn rebuild(img: &Image, pages: &[u8]) -> Vec<u8> {
    // Same page bytes, new metadata.
    let mut w = ImageWriter::new(Vec::new()).expect("header");
    w.sink().extend_from_slice(&pages[HEADER_LEN as usize..]);
    w.note_appended((pages.len() as u64) - HEADER_LEN);
    w.finish(img).expect("finish")
}

/// The same image with `extra` sections (kind, flags, bytes) after the metadata.
fn with_sections(img: &Image, pages: &[u8], extra: &[(u32, u32, &[u8])]) -> Vec<u8> {
    let mut w = ImageWriter::new(Vec::new()).expect("header");
    w.sink().extend_from_slice(&pages[HEADER_LEN as usize..]);
    w.note_appended((pages.len() as u64) - HEADER_LEN);
    for (kind, flags, bytes) in extra {
        w.add_section(SectionKind::from(*kind), *flags, bytes.to_vec());
    }
    w.finish(img).expect("finish")
}

/// `bytes` with the header of format `major.minor`.
fn as_version(mut bytes: Vec<u8>, major: u32, minor: u32) -> Vec<u8> {
    let h = Header { major, minor, ..Header::current() };
    bytes[..HEADER_LEN as usize].copy_from_slice(&h.encode());
    bytes
}

fn page_region(bytes: &[u8], img: &Image) -> Vec<u8> {
    let end = img.processes[0].vmas.iter().flat_map(|v| &v.pages).map(|r| r.offset + r.len).max().unwrap_or(HEADER_LEN);
    bytes[..end as usize].to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip(maps in prop::collection::vec(any::<u8>(), 1..12), seed in any::<u8>(), fds in 0u8..6) {
        let (bytes, img) = build(&maps, seed, fds);
        prop_assert_eq!(ImageFile::check_bytes(&bytes).expect("valid"), img);
    }

    #[test]
    fn random_bytes_are_refused(data in prop::collection::vec(any::<u8>(), 0..20000)) {
        prop_assert!(ImageFile::check_bytes(&data).is_err());
    }

    #[test]
    fn altered_framing_or_metadata_is_refused(maps in prop::collection::vec(any::<u8>(), 1..6), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (bytes, img) = build(&maps, 7, 2);
        let pages_end = page_region(&bytes, &img).len();
        // Any byte of the header's checked part, the metadata, the table or the trailer.
        let candidates: Vec<usize> = (0..32).chain(pages_end..bytes.len() - 24).collect();
        let i = candidates[at.index(candidates.len())];
        let mut b = bytes.clone();
        b[i] ^= 1 << bit;
        prop_assert!(ImageFile::check_bytes(&b).is_err(), "flip at {} of {} accepted", i, b.len());
    }
}

#[test]
fn truncation_at_every_offset_is_refused() {
    let (bytes, _) = build(&[1, 2, 3], 3, 3);
    for len in 0..bytes.len() {
        assert!(ImageFile::check_bytes(&bytes[..len]).is_err(), "truncated to {len} accepted");
    }
}

#[test]
fn flipped_page_data_is_caught_by_verify() {
    let (mut bytes, img) = build(&[3, 1, 3], 5, 1);
    let off = img.processes[0].vmas[0].pages[0].offset as usize + 100;
    bytes[off] ^= 0x10;
    let path = std::env::temp_dir().join(format!("crest-parser-test-{}", std::process::id()));
    std::fs::write(&path, &bytes).expect("write");
    let f = ImageFile::open(&path).expect("metadata is intact");
    let err = f.verify_pages(2).expect_err("page flip must be caught");
    let _ = std::fs::remove_file(&path);
    assert!(err.to_string().contains("page data of pid 42"), "{err}");
}

/// A change made to an image's records, for a test that it is refused.
type Change = Box<dyn Fn(&mut Image)>;

/// `img` (its pages `pages`) with each change made is refused by the reader, with a message
/// holding the words paired with the change.
fn assert_each_refused(img: &Image, pages: &[u8], cases: Vec<(&str, Change)>) {
    for (want, change) in cases {
        let mut bad = img.clone();
        change(&mut bad);
        let err = ImageFile::check_bytes(&rebuild(&bad, pages)).expect_err(want).to_string();
        assert!(err.contains(want), "expected {want:?} in: {err}");
    }
}

#[test]
fn invalid_records_are_refused_with_reasons() {
    let (bytes, img) = build(&[2, 2, 2], 9, 2);
    let pages = page_region(&bytes, &img);
    let cases: Vec<(&str, Change)> = vec![
        ("invalid pid", Box::new(|i: &mut Image| i.processes[0].pid = -1)),
        ("overlaps", Box::new(|i: &mut Image| i.processes[0].vmas[1].start = i.processes[0].vmas[0].start)),
        ("user-space", Box::new(|i: &mut Image| i.processes[0].vmas[2].end = 0xffff_8000_0000_0000)),
        ("does not fit", Box::new(|i: &mut Image| i.processes[0].vmas[0].pages[0].offset = 1 << 40)),
        ("does not fit", Box::new(|i: &mut Image| i.processes[0].vmas[0].pages[0].len += 4096 * 8)),
        ("duplicate", Box::new(|i: &mut Image| i.processes[0].fds[1].fd = 0)),
        ("signal number", Box::new(|i: &mut Image| i.processes[0].sigactions.push(SigAction { signo: 99, handler: 0, flags: 0, restorer: 0, mask: 0 }))),
        ("leader", Box::new(|i: &mut Image| i.processes[0].threads.swap(0, 1))),
        ("relative path", Box::new(|i: &mut Image| i.processes[0].vmas[0].backing = VmaBacking::File { path: "lib.so".into(), offset: 0, dev: 0, ino: 0, size: 0, mtime_ns: 0 })),
        // A compressed run must be smaller than what it restores and lie inside the page data.
        ("does not fit", Box::new(|i: &mut Image| i.processes[0].vmas[0].pages[0].zlen = i.processes[0].vmas[0].pages[0].len)),
        ("does not fit", Box::new(|i: &mut Image| i.processes[0].vmas[0].pages[0].zlen = i.processes[0].vmas[0].pages[0].len + 1)),
        (
            "does not fit",
            Box::new(|i: &mut Image| {
                let r = &mut i.processes[0].vmas[0].pages[0];
                r.offset += 4096 * 64;
                r.zlen = 100;
            }),
        ),
        // A stored run must be page aligned; a compressed one need not be.
        ("does not fit", Box::new(|i: &mut Image| i.processes[0].vmas[0].pages[0].offset += 1)),
        // The page data must account for every page the checkpoint found to save.
        ("pages are missing", Box::new(|i: &mut Image| i.processes[0].vmas[0].pages.clear())),
        ("pages are missing", Box::new(|i: &mut Image| i.processes[0].vmas[1].need = 1 << 30)),
        ("pages are missing", Box::new(|i: &mut Image| i.processes[0].vmas[2].zero += 4096)),
    ];
    assert_each_refused(&img, &pages, cases);
}

#[test]
fn compressed_runs_at_any_offset_are_accepted() {
    let (bytes, mut img) = build(&[2, 2, 2], 9, 2);
    let pages = page_region(&bytes, &img);
    let r = &mut img.processes[0].vmas[0].pages[0];
    r.offset += 1;
    r.zlen = 100;
    ImageFile::check_bytes(&rebuild(&img, &pages)).expect("an unaligned compressed run inside the page data is valid");
}

#[test]
fn unknown_sections_are_skipped() {
    let (bytes, img) = build(&[2, 2], 4, 1);
    let pages = page_region(&bytes, &img);
    let image = with_sections(&img, &pages, &[(77, 0, b"something newer"), (78, 0, b"")]);
    assert_eq!(ImageFile::check_bytes(&image).expect("unknown sections are skipped"), img);
    // Also in an image of a newer minor version.
    let newer = as_version(image, FORMAT_MAJOR, FORMAT_MINOR + 1);
    assert_eq!(ImageFile::check_bytes(&newer).expect("a newer minor reads"), img);
}

#[test]
fn unknown_sections_that_must_be_understood_are_refused() {
    let (bytes, img) = build(&[2, 2], 4, 1);
    let pages = page_region(&bytes, &img);
    let image = with_sections(&img, &pages, &[(77, 0, b"skipped"), (90, section_flags::MUST_UNDERSTAND, b"needed")]);
    let err = ImageFile::check_bytes(&image).expect_err("refused").to_string();
    assert!(err.contains("kind 90") && err.contains(&format!("{FORMAT_MAJOR}.{FORMAT_MINOR}")), "{err}");
    // From a newer minor: a newer crest is needed, and both versions are named.
    let newer = as_version(image, FORMAT_MAJOR, FORMAT_MINOR + 1);
    let err = ImageFile::check_bytes(&newer).expect_err("refused").to_string();
    let (theirs, ours) = (format!("version {FORMAT_MAJOR}.{}", FORMAT_MINOR + 1), format!("format {FORMAT_MAJOR}.{FORMAT_MINOR}"));
    assert!(err.contains(&theirs) && err.contains(&ours) && err.contains("kind 90") && err.contains("newer crest"), "{err}");
}

/// The section of `kind` in the image `bytes`, if it has one (read from a scratch file named
/// after `name`, removed at once).
fn section(bytes: &[u8], name: &str, kind: SectionKind) -> Option<SectionEntry> {
    let path = std::env::temp_dir().join(format!("crest-parser-{name}-{}", std::process::id()));
    std::fs::write(&path, bytes).expect("write");
    let f = ImageFile::open(&path);
    let _ = std::fs::remove_file(&path);
    f.expect("read").sections.into_iter().find(|s| s.kind == kind)
}

/// `img` written again (its pages `pages`) has the empty section that `marker` finds (`what`),
/// marked MUST_UNDERSTAND, and this build reads it back whole.
fn assert_announced(img: &Image, pages: &[u8], marker: impl Fn(&[u8]) -> Option<SectionEntry>, what: &str) {
    let image = rebuild(img, pages);
    let s = marker(&image).expect(what);
    assert!(s.must_understand() && s.len == 0, "{s:?}");
    assert_eq!(ImageFile::check_bytes(&image).expect("read by this build"), *img);
}

/// A socket record that uses a field of format 4.1 (here SO_LINGER, saved as bytes) makes the
/// writer add the empty SocketState section marked MUST_UNDERSTAND, which 4.0 readers refuse
/// (the field alone they would skip, restoring the socket without it); this build reads it.
#[test]
fn socket_state_of_4_1_is_announced_to_older_readers() {
    let (bytes, mut img) = build(&[2], 4, 1);
    let pages = page_region(&bytes, &img);
    let marker = |b: &[u8]| section(b, "socket-state", SectionKind::SocketState);
    assert!(marker(&bytes).is_none(), "an image without sockets carries no SocketState section");
    img.processes[0].fds[0].kind = FdKind::Socket {
        family: 2,
        ty: 1,
        protocol: 6,
        addr: Vec::new(),
        listen: None,
        options: vec![(1, 2, 1)],
        what: "TCP not bound".into(),
        byte_options: Vec::new(),
        ino: 0,
        peer: 0,
        unlinked: false,
        shutdown: 0,
        queue: Vec::new(),
        pending: false,
        file_attrs: None,
        dest: Vec::new(),
    };
    let plain = rebuild(&img, &pages);
    assert!(marker(&plain).is_none(), "int options alone are read by 4.0 readers too");
    if let FdKind::Socket { byte_options, .. } = &mut img.processes[0].fds[0].kind {
        byte_options.push((1, 13, vec![1, 0, 0, 0, 30, 0, 0, 0]));
    }
    assert_announced(&img, &pages, marker, "a SocketState section");
    // As a reader that does not know the kind sees it.
    let err = ImageFile::check_bytes(&with_sections(&img, &pages, &[(91, section_flags::MUST_UNDERSTAND, b"")])).expect_err("refused").to_string();
    assert!(err.contains("must be understood"), "{err}");
}

/// A socket record holding what format 4.6 added (a queued datagram carrying a descriptor in
/// flight, a connection waiting to be accepted) makes the writer add the empty SocketQueues
/// section marked MUST_UNDERSTAND, which readers of 4.3 and before refuse; this build reads
/// the record back whole.
#[test]
fn socket_queues_of_4_4_are_announced_to_older_readers() {
    let (bytes, mut img) = build(&[2], 4, 1);
    let pages = page_region(&bytes, &img);
    let marker = |b: &[u8]| section(b, "socket-queues", SectionKind::Other(crest_image::marker_kinds::SOCKET_QUEUES));
    assert!(marker(&bytes).is_none(), "an image without socket queues carries no SocketQueues section");
    let carried = FdRecord { fd: -1, flags: 0, cloexec: true, file: 0, kind: FdKind::Pipe { id: 7, write_end: false, size: 0, data: Vec::new() }, locks: Vec::new(), fown: Default::default() };
    let socket = |queue, pending, file_attrs| FdKind::Socket {
        family: 1,
        ty: 2,
        protocol: 0,
        addr: vec![1, 0, b'/', b'x', 0],
        listen: None,
        options: Vec::new(),
        what: "unix datagram socket /x".into(),
        byte_options: Vec::new(),
        ino: 0,
        peer: 0,
        unlinked: false,
        shutdown: 0,
        queue,
        pending,
        file_attrs,
        dest: Vec::new(),
    };
    img.processes[0].fds[0].kind = socket(Vec::new(), false, Some((0o640, 1, 2)));
    assert!(marker(&rebuild(&img, &pages)).is_none(), "a socket file's mode alone is read by older readers too");
    let queued = vec![QueuedMessage { data: b"hello".to_vec(), sender: vec![1, 0, 0, b'a'], fds: vec![carried] }];
    for kind in [socket(queued, false, None), socket(Vec::new(), true, None)] {
        img.processes[0].fds[0].kind = kind;
        assert_announced(&img, &pages, marker, "a SocketQueues section");
    }
}

/// A packet, netlink or raw IP socket, or one connected to an address (`dest`, format 4.9),
/// makes the writer add the empty SocketFamilies section marked MUST_UNDERSTAND, which readers
/// of 4.7 and before refuse; this build reads the record back whole.
#[test]
fn socket_families_of_4_8_are_announced_to_older_readers() {
    let (bytes, mut img) = build(&[2], 4, 1);
    let pages = page_region(&bytes, &img);
    let marker = |b: &[u8]| section(b, "socket-families", SectionKind::Other(crest_image::marker_kinds::SOCKET_FAMILIES));
    let socket = |family, ty, dest| FdKind::Socket {
        family,
        ty,
        protocol: 0,
        addr: Vec::new(),
        listen: None,
        options: Vec::new(),
        what: "a socket".into(),
        byte_options: Vec::new(),
        ino: 0,
        peer: 0,
        unlinked: false,
        shutdown: 0,
        queue: Vec::new(),
        pending: false,
        file_attrs: None,
        dest,
    };
    img.processes[0].fds[0].kind = socket(2, 2, Vec::new());
    assert!(marker(&rebuild(&img, &pages)).is_none(), "a UDP socket carries no SocketFamilies section");
    // AF_PACKET, AF_NETLINK connected to a port, a raw IPv4 socket.
    for kind in [socket(17, 3, Vec::new()), socket(16, 3, vec![16, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]), socket(2, 3, Vec::new())] {
        img.processes[0].fds[0].kind = kind;
        assert_announced(&img, &pages, marker, "a SocketFamilies section");
    }
}

#[test]
fn other_majors_are_refused_naming_both_versions() {
    let (bytes, _) = build(&[1], 4, 1);
    for major in [FORMAT_MAJOR - 1, FORMAT_MAJOR + 1] {
        let err = ImageFile::check_bytes(&as_version(bytes.clone(), major, 3)).expect_err("refused").to_string();
        assert!(err.contains(&format!("version {major}.3")) && err.contains(&format!("{FORMAT_MAJOR}.{FORMAT_MINOR}")), "{err}");
    }
}

/// An image with page data `pages` and `meta` as its metadata section, whatever it holds.
fn with_metadata(pages: &[u8], meta: &[u8]) -> Vec<u8> {
    let mut out = pages.to_vec();
    let pages_entry = SectionEntry { kind: SectionKind::Pages, flags: 0, offset: HEADER_LEN, len: pages.len() as u64 - HEADER_LEN, sum: 0 };
    let meta_entry = SectionEntry { kind: SectionKind::Meta, flags: 0, offset: out.len() as u64, len: meta.len() as u64, sum: checksum(meta) };
    out.extend_from_slice(meta);
    let table = postcard::to_stdvec(&vec![pages_entry, meta_entry]).expect("table");
    let trailer = Trailer { table_offset: out.len() as u64, table_len: table.len() as u64, table_sum: checksum(&table) };
    out.extend_from_slice(&table);
    out.extend_from_slice(&trailer.encode());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Metadata cut anywhere, behind a valid checksum, is refused by the record decoder with an
    /// error that says so, never a panic and never a record with missing parts.
    #[test]
    fn metadata_cut_anywhere_is_refused(maps in prop::collection::vec(any::<u8>(), 1..6), fds in 0u8..4, cut in any::<prop::sample::Index>()) {
        let (bytes, img) = build(&maps, 3, fds);
        let pages = page_region(&bytes, &img);
        let meta = postcard::to_stdvec(&img).expect("encode");
        let at = cut.index(meta.len());
        let err = ImageFile::check_bytes(&with_metadata(&pages, &meta[..at])).expect_err("a cut record").to_string();
        prop_assert!(err.contains("cannot decode image metadata"), "{}", err);
        prop_assert!(ImageFile::check_metadata(&meta[..at], HEADER_LEN..pages.len() as u64).is_err());
    }

    /// A whole image cut anywhere is refused (the trailer is missing or in the wrong place).
    #[test]
    fn image_cut_anywhere_is_refused(maps in prop::collection::vec(any::<u8>(), 1..6), cut in any::<prop::sample::Index>()) {
        let (bytes, _) = build(&maps, 5, 2);
        let at = cut.index(bytes.len());
        prop_assert!(ImageFile::check_bytes(&bytes[..at]).is_err());
    }
}

#[test]
fn metadata_a_newer_minor_cannot_decode_names_both_versions() {
    let (bytes, img) = build(&[1, 1], 4, 1);
    let pages = page_region(&bytes, &img);
    let meta = postcard::to_stdvec(&img).expect("encode");
    // The records as written read back, with anything after them ignored.
    let mut longer = meta.clone();
    longer.extend_from_slice(b"more");
    assert_eq!(ImageFile::check_bytes(&with_metadata(&pages, &longer)).expect("valid"), img);
    // Records this build cannot decode (cut short here; from a newer minor they may hold a
    // variant added since): refused, naming both versions when the image is newer.
    let bad = with_metadata(&pages, &meta[..meta.len() - 10]);
    let err = ImageFile::check_bytes(&bad).expect_err("refused").to_string();
    assert!(err.contains("cannot decode image metadata"), "{err}");
    let err = ImageFile::check_bytes(&as_version(bad, FORMAT_MAJOR, FORMAT_MINOR + 2)).expect_err("refused").to_string();
    assert!(err.contains(&format!("version {FORMAT_MAJOR}.{}", FORMAT_MINOR + 2)) && err.contains(&format!("format {FORMAT_MAJOR}.{FORMAT_MINOR}")) && err.contains("newer crest"), "{err}");
}

/// An image whose first mapping's pages are stored compressed, through the codec the
/// checkpoint uses; returns the file bytes and the record.
fn build_compressed() -> (Vec<u8>, Image) {
    let (bytes, mut img) = build(&[3, 1, 3], 5, 1);
    let pages = page_region(&bytes, &img);
    let mut w = ImageWriter::new(Vec::new()).expect("header");
    w.sink().extend_from_slice(&pages[HEADER_LEN as usize..]);
    w.note_appended((pages.len() as u64) - HEADER_LEN);
    let v = &mut img.processes[0].vmas[0];
    let plain: Vec<u8> = std::iter::repeat_n(b"compressible ".as_slice(), 4096 * 4 / 13 + 1).flatten().copied().take((v.end - v.start) as usize).collect();
    let mut packer = codec::Packer::new(3).expect("zstd");
    assert!(packer.pack(0, v.start, &plain).expect("pack"));
    let runs = packer
        .flush(|b| -> Result<u64, ImageError> {
            let at = w.position();
            w.append_bytes(b)?;
            Ok(at)
        })
        .expect("flush");
    v.pages = runs.into_iter().map(|(_, r)| r).collect();
    v.need = v.end - v.start;
    (w.finish(&img).expect("finish"), img)
}

fn verify(bytes: &[u8]) -> Result<(), ImageError> {
    let path = std::env::temp_dir().join(format!("crest-parser-verify-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::write(&path, bytes).expect("write");
    let r = ImageFile::open(&path).and_then(|f| f.verify_pages(2));
    let _ = std::fs::remove_file(&path);
    r
}

#[test]
fn compressed_runs_are_verified_by_reading_them_back() {
    let (bytes, img) = build_compressed();
    assert!(img.processes[0].vmas[0].pages[0].zlen > 0);
    verify(&bytes).expect("a good compressed image verifies");
    // A run that decompresses to another length than it says is caught, though its stored
    // bytes match their checksum.
    let pages = bytes[..img.processes[0].vmas.iter().flat_map(|v| &v.pages).map(|r| r.offset + r.stored_len()).max().unwrap() as usize].to_vec();
    let mut shorter = img.clone();
    let v = &mut shorter.processes[0].vmas[0];
    v.pages[0].len -= 4096;
    v.need -= 4096;
    let err = verify(&rebuild(&shorter, &pages)).expect_err("a wrong length is caught").to_string();
    assert!(err.contains("decompress") && err.contains("pid 42"), "{err}");
    // A flipped bit in the compressed bytes fails the checksum.
    let mut flipped = bytes.clone();
    flipped[img.processes[0].vmas[0].pages[0].offset as usize + 5] ^= 4;
    let err = verify(&flipped).expect_err("a flip is caught").to_string();
    assert!(err.contains("page data of pid 42"), "{err}");
}

/// The image of `build` with a child of its process (pid 50) whose second mapping (no runs)
/// lists `inherited` as pages still shared with its parent.
fn with_child(img: &Image, inherited: Vec<(u64, u64)>) -> Image {
    let mut img = img.clone();
    let mut child = img.processes[0].clone();
    child.pid = 50;
    child.ppid = 42;
    child.threads = vec![thread(50)];
    for v in &mut child.vmas {
        v.pages.clear();
        v.need = 0;
    }
    child.vmas[1].inherited = inherited;
    img.processes.push(child);
    img
}

#[test]
fn inherited_pages_are_read_back_and_need_a_parent_mapping_to_share() {
    let (bytes, img) = build(&[2, 2, 2], 9, 2);
    let pages = page_region(&bytes, &img);
    let start = img.processes[0].vmas[1].start;
    let good = with_child(&img, vec![(start, 4096)]);
    let read = ImageFile::check_bytes(&rebuild(&good, &pages)).expect("an image with inherited pages");
    assert_eq!(read.processes[1].vmas[1].inherited, vec![(start, 4096)]);
    // Announced to older readers, which would restore zeros in their place.
    assert!(marker_kinds::needed(&good).contains(&marker_kinds::INHERITED));
    assert!(!marker_kinds::needed(&img).contains(&marker_kinds::INHERITED));
    let cases: Vec<(&str, Change)> = vec![
        ("do not fit", Box::new(|i: &mut Image| i.processes[1].vmas[1].inherited[0].0 += 1)),
        ("do not fit", Box::new(|i: &mut Image| i.processes[1].vmas[1].inherited[0].1 = 1 << 30)),
        ("no such mapping", Box::new(|i: &mut Image| i.processes[1].ppid = 0)),
        ("no such mapping", Box::new(|i: &mut Image| i.processes[0].vmas[1].flags |= vma_flags::SHARED)),
        ("no such mapping", Box::new(|i: &mut Image| i.processes[0].vmas[1].end -= 4096)),
    ];
    assert_each_refused(&good, &pages, cases);
}

#[test]
fn seccomp_filters_are_read_back_and_checked() {
    let (bytes, mut img) = build(&[2], 9, 0);
    let pages = page_region(&bytes, &img);
    img.processes[0].threads[1].attrs.seccomp = vec![SeccompFilter { flags: 2, insns: vec![6, 0, 0, 0, 0, 0, 0xff, 0x7f] }];
    let read = ImageFile::check_bytes(&rebuild(&img, &pages)).expect("an image with a seccomp filter");
    assert_eq!(read.processes[0].threads[1].attrs.seccomp, img.processes[0].threads[1].attrs.seccomp);
    assert!(marker_kinds::needed(&img).contains(&marker_kinds::SECCOMP));
    img.processes[0].threads[1].attrs.seccomp[0].insns.push(0);
    let err = ImageFile::check_bytes(&rebuild(&img, &pages)).expect_err("a program of part of an instruction").to_string();
    assert!(err.contains("invalid thread record"), "{err}");
}

#[test]
fn message_queues_and_semaphore_adjustments_are_read_back_and_announced() {
    let (bytes, mut img) = build(&[1], 9, 0);
    let pages = page_region(&bytes, &img);
    assert!(!marker_kinds::needed(&img).contains(&marker_kinds::SYSV_MSG_UNDO));
    img.ipc.push(crest_image::IpcObject { key: 0x1234, id: 7, mode: 0o640, uid: 0, gid: 0, kind: crest_image::IpcKind::Msg { qbytes: 16384, messages: vec![(3, b"abc".to_vec()), (1, Vec::new())] } });
    img.processes[0].attrs.semadj = vec![(9, 2, -3)];
    let read = ImageFile::check_bytes(&rebuild(&img, &pages)).expect("an image with a queue and adjustments");
    assert_eq!(read.ipc, img.ipc);
    assert_eq!(read.processes[0].attrs.semadj, vec![(9, 2, -3)]);
    assert!(marker_kinds::needed(&img).contains(&marker_kinds::SYSV_MSG_UNDO));
    img.ipc[0].kind = crest_image::IpcKind::Msg { qbytes: 16384, messages: vec![(0, Vec::new())] };
    let err = ImageFile::check_bytes(&rebuild(&img, &pages)).expect_err("a message of type 0").to_string();
    assert!(err.contains("SysV IPC object 7: invalid"), "{err}");
}

/// The network lock a checkpoint with --kill leaves (format 4.13) is read back, and announced
/// by the NetworkLock section marked MUST_UNDERSTAND: an older reader, which would leave the
/// connections' packets dropped, refuses the image.
#[test]
fn network_lock_is_read_back_and_announced() {
    let (bytes, mut img) = build(&[1], 9, 0);
    let pages = page_region(&bytes, &img);
    assert!(!marker_kinds::needed(&img).contains(&marker_kinds::NETWORK_LOCK));
    img.network_lock = Some(NetworkLock { tool: "nft".into(), table: "crest_42_1700000000000".into(), connections: 2 });
    let read = ImageFile::check_bytes(&rebuild(&img, &pages)).expect("an image with a network lock");
    assert_eq!(read.network_lock, img.network_lock);
    assert!(marker_kinds::needed(&img).contains(&marker_kinds::NETWORK_LOCK));
}
