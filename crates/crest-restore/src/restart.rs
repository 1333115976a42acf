//! [`restart`]: one whole restart, as `cr_restart` (or any other caller) asks for it with a
//! [`Request`]: the image is opened (a path, a descriptor or an open file; one arriving through
//! a pipe is first copied into memory), its paths relocated, every process checked
//! ([`crate::preflight`]: credentials, files, inherited descriptors), then restored as children
//! of the caller ([`crate::restore`]). Nothing starts unless every check passed. The
//! [`Error`] says why in the words `cr_restart` prints, with an [`ErrorKind`] for the exit code
//! and BLCR's failure [`Class`].
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use crest_image::{ImageError, ImageFile};
use crest_kinds::exit::ErrorKind;
use crest_kinds::progress::Progress;

use crate::preflight::{self, Caller, Refusal, Relocation};
use crate::{RestoreError, RestoreOptions, Restored};

/// Where the image comes from.
#[derive(Debug)]
pub enum Source {
    /// A file by name.
    Path(PathBuf),
    /// A descriptor of this process (a file, or a pipe or socket, read to its end first).
    Fd(i32),
    /// An open file (or pipe), read from its start (or to its end).
    File(File),
}

/// What to restart, and how.
pub struct Request<'a> {
    /// The image.
    pub image: Source,
    /// Paths to take from elsewhere (BLCR's `--relocate`).
    pub relocations: Vec<Relocation>,
    /// Give the processes their saved PIDs (fails when one is taken).
    pub restore_pid: bool,
    /// Give the processes their saved process groups.
    pub restore_pgid: bool,
    /// Give the processes their saved sessions.
    pub restore_sid: bool,
    /// Check every page run's checksum while restoring.
    pub verify: bool,
    /// Map the stored pages of private anonymous memory from the image when the image allows
    /// it ([`crate::mapping::mappable`]), rather than copying them (`cr_restart --copy-pages`
    /// turns it off).
    pub map_image: bool,
    /// Let the processes run before the pages of their private anonymous memory are in: they
    /// are given on demand, and the rest filled in in the background
    /// ([`crest_kinds::lazy`]). The caller must wait for [`Restored::lazy`]'s
    /// [`finish`](crest_kinds::lazy::Pagers::finish) before it exits.
    pub lazy: bool,
    /// Hand over any open descriptor for an inherited standard descriptor, whatever its class.
    pub relaxed_stdio: bool,
    /// Counts the page bytes restored, for a progress display.
    pub progress: Option<Arc<Progress>>,
    /// Told what happens, as it happens, on the calling thread.
    pub on_event: Option<&'a dyn Fn(Event<'_>)>,
    /// The process that asked for the restart, as libcr callbacks are told it
    /// (`cr_get_restart_info()->requester`; libcr's `cr_request_restart` runs `cr_restart` as
    /// its child on behalf of the caller); by default the caller.
    pub requester: Option<i32>,
    /// Wait here, everything restored and nothing running yet ([`crate::RestoreOptions::barrier`]).
    pub barrier: Option<crate::Barrier>,
    /// From an image stream: how long no byte may come in, once its metadata is in, before
    /// the stream is taken as lost (`cr_restart --stream-timeout`); `None`: wait for ever.
    pub stream_timeout: Option<std::time::Duration>,
}

impl Request<'_> {
    /// A restart of `image` with its saved PIDs, checksums verified: `cr_restart FILE`.
    pub fn new(image: Source) -> Self {
        Request {
            image,
            relocations: Vec::new(),
            restore_pid: true,
            restore_pgid: false,
            restore_sid: false,
            verify: true,
            map_image: true,
            lazy: false,
            relaxed_stdio: false,
            progress: None,
            on_event: None,
            requester: None,
            barrier: None,
            stream_timeout: Some(DEFAULT_STREAM_TIMEOUT),
        }
    }
}

/// How long a restart from an image stream waits for its next byte by default
/// ([`Request::stream_timeout`]).
pub const DEFAULT_STREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What happens during a restart, for a caller that says so.
#[derive(Debug)]
pub enum Event<'a> {
    /// A file the image holds the contents of is gone or changed: they come from the image.
    SavedContents {
        /// The file.
        path: &'a str,
    },
    /// Every check passed; the processes are about to be created (the caller's last moment to
    /// block the signals it wants to pass on to them, or start a progress display).
    Restoring,
}

/// BLCR's failure classes, for `cr_restart --run-on-fail-*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A bad request (`args`).
    Args,
    /// Might work later (`temp`): a PID in use.
    Temp,
    /// The environment does not fit (`env`): files, privileges, kernel.
    Env,
    /// Anything else (`perm`).
    Perm,
}

impl Class {
    /// BLCR's name of the class.
    pub fn name(self) -> &'static str {
        match self {
            Class::Args => "args",
            Class::Temp => "temp",
            Class::Env => "env",
            Class::Perm => "perm",
        }
    }
}

/// Why a restart failed. The messages are the ones `cr_restart` prints after "Restart failed: ".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image file cannot be opened.
    #[error("{path}: cannot open the image: {source}")]
    Open {
        /// The path given.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The image path names a directory.
    #[error("{path} is a directory, not a checkpoint image")]
    IsDirectory {
        /// The path given.
        path: String,
    },
    /// The image descriptor is not open.
    #[error("descriptor {fd} is not open")]
    BadDescriptor {
        /// The descriptor.
        fd: i32,
    },
    /// A memory file for an image arriving through a pipe could not be made.
    #[error("{shown}: {source}")]
    Memory {
        /// The image, for messages.
        shown: String,
        /// The error.
        source: std::io::Error,
    },
    /// An image arriving through a pipe could not be read.
    #[error("{shown}: reading the image: {source}")]
    Read {
        /// The image, for messages.
        shown: String,
        /// The error.
        source: std::io::Error,
    },
    /// Not a usable image.
    #[error("{shown}: {source}")]
    Image {
        /// The image, for messages.
        shown: String,
        /// The error.
        source: ImageError,
    },
    /// This process's credentials could not be read.
    #[error("reading this process's credentials: {0}")]
    Credentials(std::io::Error),
    /// A check before anything starts failed.
    #[error("{shown}: {source}")]
    Refused {
        /// The image, for messages.
        shown: String,
        /// What is wrong.
        source: Refusal,
    },
    /// An image stream ended before what the restart needs had arrived, or page data given on
    /// demand was wrong or missing while the processes were restored.
    #[error("{shown}: {why}")]
    Stream {
        /// The image, for messages.
        shown: String,
        /// Why, in words.
        why: String,
    },
    /// Restoring failed.
    #[error("{shown}: {source}")]
    Restore {
        /// The image, for messages.
        shown: String,
        /// The failure.
        source: RestoreError,
    },
}

impl Error {
    /// The class of the failure, and so the exit code ([`ErrorKind::code`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            // As BLCR's cr_restart, for an image that cannot be opened.
            Error::Open { .. } | Error::IsDirectory { .. } => ErrorKind::Usage,
            Error::BadDescriptor { .. } => ErrorKind::BadDescriptor,
            Error::Memory { .. } => ErrorKind::Os(libc::ENOMEM),
            Error::Read { .. } | Error::Credentials(_) | Error::Stream { .. } => ErrorKind::Failed,
            Error::Image { source, .. } => image_error_kind(source),
            Error::Refused { source, .. } => source.kind,
            Error::Restore { source, .. } => match source {
                RestoreError::Spawn(crest_ptrace::husk::SpawnError::PidInUse(_)) => ErrorKind::PidInUse,
                RestoreError::Spawn(crest_ptrace::husk::SpawnError::PidNeedsPrivilege(_)) => ErrorKind::NotPermitted,
                RestoreError::Refused(_) => ErrorKind::NotFound,
                RestoreError::Image(_) => ErrorKind::Invalid,
                _ => ErrorKind::Failed,
            },
        }
    }

    /// BLCR's failure class, for `--run-on-fail-*`.
    pub fn class(&self) -> Class {
        match self {
            Error::Open { .. } | Error::IsDirectory { .. } | Error::BadDescriptor { .. } => Class::Args,
            Error::Memory { .. } => Class::Temp,
            Error::Read { .. } | Error::Image { .. } | Error::Credentials(_) | Error::Stream { .. } => Class::Perm,
            Error::Refused { .. } => Class::Env,
            Error::Restore { source, .. } => match source.class() {
                "temp" => Class::Temp,
                "env" => Class::Env,
                _ => Class::Perm,
            },
        }
    }
}

/// The kind of an image that was opened but cannot be used: the errno of a read that failed,
/// else [`ErrorKind::Invalid`] (not a valid image; a read past the end of a truncated file,
/// which has no errno, included).
pub fn image_error_kind(e: &ImageError) -> ErrorKind {
    match e {
        ImageError::Io(io) => io.raw_os_error().map_or(ErrorKind::Invalid, ErrorKind::of_errno),
        _ => ErrorKind::Invalid,
    }
}

/// Reads up to `buf.len()` bytes, fewer only at the end of the input.
fn read_some(mut input: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match std::io::Read::read(&mut input, &mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// A file to receive an image stream into: an unnamed file in the temporary directory
/// (`O_TMPFILE`), whose pages the kernel may write out under memory pressure, else a memory
/// file.
fn spool_file() -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    match std::fs::OpenOptions::new().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(&dir) {
        Ok(f) => Ok(f),
        Err(_) => crest_ptrace::sys::memfd("crest-image-stream", 0).map(File::from),
    }
}

/// Opens the image `path` for reading. A file that cannot be opened, or a directory, is
/// refused ([`ErrorKind::Usage`], as BLCR's `cr_restart` for a missing or unreadable file).
pub fn open_image(path: &str) -> Result<File, Error> {
    let f = File::open(path).map_err(|source| Error::Open { path: path.to_string(), source })?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::IsDirectory { path: path.to_string() });
    }
    Ok(f)
}

/// Restarts what `req` names. See the [module documentation](self). The caller may have
/// threads: the processes are then forked through a single-threaded intermediate
/// ([`crest_ptrace::husk::create`]) and are the caller's children all the same.
pub fn restart(req: &Request<'_>) -> Result<Restored, Error> {
    let tell = |e: Event<'_>| {
        if let Some(f) = req.on_event {
            f(e)
        }
    };
    let (file, shown) = match &req.image {
        // Opened again (its own offset), or, a socket, which cannot be, duplicated.
        Source::Fd(fd) => {
            let f = File::open(format!("/proc/self/fd/{fd}")).or_else(|_| crest_ptrace::sys::dup_above(*fd, 3).map(File::from)).map_err(|_| Error::BadDescriptor { fd: *fd })?;
            (f, format!("<fd{fd}>"))
        }
        Source::Path(p) => {
            let p = p.display().to_string();
            (open_image(&p)?, p)
        }
        Source::File(f) => (f.try_clone().map_err(|source| Error::Read { shown: "the file given".into(), source })?, "the file given".to_string()),
    };
    // Restore reads page data at offsets: an image arriving through a pipe or socket is first
    // copied into memory. An image stream (cr_checkpoint --stream, from a pipe, a socket or a
    // file) is received into a spool file, its metadata first: a lazy restart goes on while
    // its pages arrive.
    let regular = file.metadata().is_ok_and(|m| m.file_type().is_file());
    let mut first = [0u8; 8];
    let got =
        if regular { std::os::unix::fs::FileExt::read_at(&file, &mut first, 0).unwrap_or(0) } else { read_some(&file, &mut first).map_err(|source| Error::Read { shown: shown.clone(), source })? };
    let mut receiving = None;
    let file = if crest_image::stream::is_stream(&first[..got]) {
        let mut input = file;
        if regular {
            std::io::Seek::seek(&mut input, std::io::SeekFrom::Start(8)).map_err(|source| Error::Read { shown: shown.clone(), source })?;
        }
        let spool = spool_file().map_err(|source| Error::Memory { shown: shown.clone(), source })?;
        let copy = spool.try_clone().map_err(|source| Error::Memory { shown: shown.clone(), source })?;
        receiving = Some(crest_image::stream::receive(first, Box::new(input), spool).map_err(|source| Error::Image { shown: shown.clone(), source })?);
        copy
    } else if regular {
        file
    } else {
        let copy = File::from(crest_ptrace::sys::memfd("crest-image", 0).map_err(|source| Error::Memory { shown: shown.clone(), source })?);
        std::io::Write::write_all(&mut &copy, &first[..got]).map_err(|source| Error::Memory { shown: shown.clone(), source })?;
        std::io::copy(&mut &file, &mut &copy).map_err(|source| Error::Read { shown: shown.clone(), source })?;
        copy
    };
    let img = ImageFile::from_file(file).map_err(|source| Error::Image { shown: shown.clone(), source })?;
    let arrival = receiving.map(|r| r.expect(&img));
    if let (Some(a), Some(limit)) = (&arrival, req.stream_timeout) {
        a.watch(limit);
    }
    // An incremental image: every parent must be there and unchanged (and every run it names
    // within that parent's page data); each run is then read from the image that holds it.
    let mut chain = if img.image.parent.is_some() { crest_image::chain::Chain::open(img, &shown).map_err(|source| Error::Image { shown: shown.clone(), source })?.images } else { vec![img] };
    let img = &mut chain[0];
    // Nothing starts unless every file is there and unchanged and this user could have
    // started the saved process.
    let caller = Caller::current().map_err(Error::Credentials)?;
    let image_fd = match req.image {
        Source::Fd(fd) => Some(fd),
        _ => None,
    };
    let mut looked = preflight::Looked::default();
    for p in img.image.processes.iter_mut().filter(|p| p.exit_status.is_none()) {
        let moved = preflight::relocate(p, &req.relocations);
        for path in crate::use_saved_contents(p) {
            tell(Event::SavedContents { path: &path });
        }
        let refused = |source: Refusal| Error::Refused { shown: shown.clone(), source };
        preflight::credentials(p, &caller, looked.get(&p.exe, false).ok().as_ref()).map_err(refused)?;
        preflight::files_looked(p, &|path| moved.contains(path), &mut looked).map_err(refused)?;
        preflight::stdio(p, image_fd, req.relaxed_stdio).map_err(refused)?;
        preflight::cpu_features(p, crest_ptrace::sys::enabled_xfeatures()).map_err(refused)?;
    }
    // A lazy restore needs a userfaultfd with the fork event: refused before anything starts.
    if let Some(msg) = req.lazy.then(crest_kinds::lazy::unavailable).flatten() {
        return Err(Error::Refused { shown, source: Refusal { kind: ErrorKind::NotPermitted, msg: format!("--lazy: {msg}") } });
    }
    if req.lazy && chain.len() > 1 {
        let msg = format!("--lazy restarts a standalone image, and this one is incremental (a chain of {}): merge the chain first (cr_info --merge OUT FILE), or restart without --lazy", chain.len());
        return Err(Error::Refused { shown, source: Refusal { kind: ErrorKind::Invalid, msg } });
    }
    // From a stream: a lazy restart waits for the runs it reads before the processes run (a
    // stream sends them first); any other, for the whole stream.
    if let Some(a) = &arrival {
        let needed = if req.lazy {
            let first = crest_kinds::lazy::before_running(&chain[0].image);
            let (runs, n) = crest_image::stream::order(&chain[0], &first);
            runs[..n].iter().try_for_each(|(_, r)| a.wait_run(r.offset))
        } else {
            a.wait_end()
        };
        needed.map_err(|why| Error::Stream { shown: shown.clone(), why: format!("{why}; nothing was started") })?;
    }
    let lazy = req.lazy.then(|| match &arrival {
        Some(a) => crest_kinds::lazy::Pagers::streamed(a.clone()),
        None => crest_kinds::lazy::Pagers::new(),
    });
    let opts = RestoreOptions {
        restore_pid: req.restore_pid,
        restore_pgid: req.restore_pgid,
        restore_sid: req.restore_sid,
        verify: req.verify,
        map_image: req.map_image,
        progress: req.progress.clone(),
        barrier: req.barrier.clone(),
        lazy: lazy.clone(),
    };
    tell(Event::Restoring);
    // The clocks the processes read go on from where they were, when this machine's are behind.
    let clock_note = match chain[0].image.clocks.as_ref().map(crest_kinds::clocks::restore).transpose() {
        Ok(n) => n.flatten(),
        Err(e) => return Err(Error::Refused { shown, source: Refusal { kind: ErrorKind::Failed, msg: e.to_string() } }),
    };
    let restored = crate::restore_chain(&chain, &opts).map_err(|source| {
        // Nothing runs: the fault servers stop. One that killed a process being restored (its
        // page data failed its checksum, or never arrived) says why, which the restore could
        // not tell.
        match lazy.as_ref().map(|l| l.finish()) {
            Some(Err(why)) => Error::Stream { shown, why },
            _ => Error::Restore { shown, source },
        }
    })?;
    let mut restored = Restored { lazy: lazy.filter(|l| !l.is_empty()), stream: arrival, ..restored };
    restored.notes.extend(clock_note);
    // Processes that use libcr learn that they were restarted, and from which image.
    let src = match &req.image {
        Source::Path(p) => std::path::absolute(p).map(|p| p.display().to_string()).unwrap_or_default(),
        Source::Fd(fd) => std::fs::read_link(format!("/proc/self/fd/{fd}")).ok().filter(|p| p.is_absolute()).map(|p| p.display().to_string()).unwrap_or_default(),
        Source::File(_) => String::new(),
    };
    crate::libcr::tell_restarted(&restored.pids.iter().map(|&(_, new)| new).collect::<Vec<_>>(), req.requester.unwrap_or(std::process::id() as i32), &src);
    Ok(restored)
}
