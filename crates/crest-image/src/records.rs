//! The records of an image: what crest saves of a process tree.
//!
//! Records are plain data, encoded with postcard, each one framed ([`crate::frame`]): a record
//! is a length and its fields, so fields can be added at the end of a record in a minor version
//! of the format. A field added that way is `#[serde(default)]` (an image written before it
//! reads as the default) and comes after every field that was there before; fields are never
//! removed, reordered or changed in type without a new major version (`docs/image-format.md`).
use serde::{Deserialize, Serialize};

use crate::frame::framed;

framed!(
    Image,
    Clocks,
    NetworkLock,
    Parent,
    Tracking,
    IpcObject,
    IpcKind,
    Process,
    ProcAttrs,
    PosixTimer,
    ThreadAttrs,
    SeccompFilter,
    Creds,
    Rlimit,
    MmState,
    VmaBacking,
    Vma,
    PageRun,
    FdRecord,
    Fown,
    FileLock,
    FdKind,
    TcpState,
    UnixPairState,
    QueuedMessage,
    InotifyWatch,
    FanotifyMark,
    DeletedFile,
    Ghost,
    PtyState,
    TermSettings,
    SigAction,
    Rseq,
    Thread
);

/// The whole checkpoint: a tree of processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Image {
    /// crest version that wrote it.
    pub tool: String,
    /// Kernel release at checkpoint (`uname -r`).
    pub kernel: String,
    /// Host name at checkpoint.
    pub host: String,
    /// Seconds since the epoch when the checkpoint was taken.
    pub time: u64,
    /// The PID the user named.
    pub root_pid: i32,
    /// Scope the checkpoint was taken with (`tree`, `pid`, `pgid`, `sid`).
    pub scope: String,
    /// Size and layout of the vDSO areas of the checkpointing kernel.
    pub vdso_layout: Vec<(SpecialArea, u64)>,
    /// The processes, parents before children.
    pub processes: Vec<Process>,
    /// SysV IPC objects the processes use (shared memory segments, semaphore sets).
    pub ipc: Vec<IpcObject>,
    /// An incremental image (format 4.3): the image its page runs with [`PageRun::image`] 1
    /// refer to; that one names its own parent, and so on. None: a standalone image.
    #[serde(default)]
    pub parent: Option<Parent>,
    /// Processes whose write tracking was left armed after this checkpoint (format 4.3), so
    /// that a later `cr_checkpoint --incremental` of them saves only the pages written since.
    /// Says nothing about restoring: a reader that skips it loses nothing.
    #[serde(default)]
    pub tracking: Vec<Tracking>,
    /// The processes' `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` when they were frozen (format
    /// 4.12), so that a restart after a reboot, where those clocks start again from zero, does
    /// not set them back. A reader that skips it restores them on the clocks of the machine.
    #[serde(default)]
    pub clocks: Option<Clocks>,
    /// The netfilter table `cr_checkpoint --kill` left to drop the packets of the image's TCP
    /// connections until they are restored (format 4.13; the `NetworkLock` section announces
    /// it): `cr_restart` removes it once the connections are back. None: nothing is locked.
    #[serde(default)]
    pub network_lock: Option<NetworkLock>,
}

/// A network lock: the packets of the image's TCP connections (from either end, matched by
/// both addresses and ports) are dropped, so that a peer outside the image that sends while
/// no process holds the connection gets no reset; its kernel sends them again until they pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct NetworkLock {
    /// The program that made it and removes it: `nft` (nftables).
    pub tool: String,
    /// The table of the `inet` family that holds its rules (`crest_PID_MILLISECONDS`), in the
    /// network namespace of the processes, removed as a whole.
    pub table: String,
    /// How many connections it locks.
    pub connections: u32,
}

/// The clocks of the checkpointed processes, as they saw them when frozen (their time
/// namespace's offsets included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Clocks {
    /// `CLOCK_MONOTONIC`, in nanoseconds.
    pub monotonic: i64,
    /// `CLOCK_BOOTTIME`, in nanoseconds.
    pub boottime: i64,
}

/// The parent of an incremental image: where it was, and what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Parent {
    /// Its absolute path at checkpoint time.
    pub path: String,
    /// Its length in bytes.
    pub len: u64,
    /// xxh3-64 of its 64-byte trailer, which holds the checksum of its section table, which
    /// holds that of its metadata, which holds that of every page run: it changes with any
    /// byte of the image that is used.
    pub sum: u64,
}

/// A process whose write tracking (an asynchronous write-protecting userfaultfd) was left in
/// it after the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Tracking {
    /// Its PID.
    pub pid: i32,
    /// Its start time (field 22 of `/proc/PID/stat`), which tells it from a later process
    /// with the same PID.
    pub start: u64,
    /// The descriptor of the userfaultfd in it.
    pub fd: i32,
    /// A random number naming this arming of the tracking, also noted beside the claim files
    /// once the image is whole: a later arming (a checkpoint after this one) changes it, so
    /// that an image made incremental to this one is refused that tracking.
    pub token: u64,
}

/// A SysV IPC object, restored with the same id (and key) when this system allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct IpcObject {
    /// `IPC_PRIVATE` (0) or the key it was created with.
    pub key: i32,
    /// Its id (`shmid`, `semid`).
    pub id: i32,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid and gid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// What it is.
    pub kind: IpcKind,
}

/// The kinds of SysV IPC objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub enum IpcKind {
    /// A shared memory segment; its pages are saved with the mappings that attach it.
    Shm {
        /// Size in bytes.
        size: u64,
        /// Marked for removal (`IPC_RMID`): removed again once restored and attached.
        removed: bool,
    },
    /// A semaphore set with its values.
    Sem {
        /// The value of each semaphore.
        values: Vec<u16>,
    },
    /// A message queue with its messages (format 4.8).
    Msg {
        /// Its byte limit (`msg_qbytes`).
        qbytes: u64,
        /// The messages queued, oldest first: type and bytes.
        messages: Vec<(i64, Vec<u8>)>,
    },
}

/// One process. Its default is an empty record (no PID, nothing saved), for records that hold
/// only a few fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(remote = "Self")]
pub struct Process {
    /// PID.
    pub pid: i32,
    /// Parent PID (0 when the parent is outside the image).
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// Session.
    pub sid: i32,
    /// Executable path (`/proc/PID/exe`).
    pub exe: String,
    /// Command line, NUL-separated as in `/proc/PID/cmdline`.
    pub cmdline: Vec<u8>,
    /// Credentials at checkpoint.
    pub creds: Creds,
    /// Current directory.
    pub cwd: String,
    /// Root directory.
    pub root: String,
    /// File creation mask.
    pub umask: u32,
    /// `personality(2)` value.
    pub personality: u32,
    /// Resource limits, indexed by resource number.
    pub rlimits: Vec<Rlimit>,
    /// Memory descriptor values restored with `PR_SET_MM_MAP`.
    pub mm: MmState,
    /// Mappings, sorted by address.
    pub vmas: Vec<Vma>,
    /// Open file descriptors.
    pub fds: Vec<FdRecord>,
    /// Signal dispositions for signals 1..=64 that are not SIG_DFL.
    pub sigactions: Vec<SigAction>,
    /// Signals pending for the whole process (raw 128-byte siginfo each).
    pub shared_pending: Vec<Vec<u8>>,
    /// Threads; the first is the thread-group leader. Empty for a zombie.
    pub threads: Vec<Thread>,
    /// A zombie (it has exited; its parent has not reaped it yet): its wait status.
    pub exit_status: Option<i32>,
    /// Objects the process had that were left out of the image on request
    /// (`cr_checkpoint --drop-unsupported`), described for `cr_info`: descriptors (restored as
    /// closed sockets, [`FdKind::Dropped`]) and file locks (not held after a restart).
    pub dropped: Vec<String>,
    /// Process-wide kernel settings: interval timers, prctl flags, oom score.
    pub attrs: ProcAttrs,
    /// The working directory was deleted (format 4.5): its identity (device and inode at
    /// checkpoint, as [`FdKind::Ghost`]'s `id`) and the directory; `cwd` is the path it had,
    /// without ` (deleted)`. Restart makes an empty directory there, enters it and removes it.
    #[serde(default)]
    pub cwd_deleted: Option<(u64, Ghost)>,
    /// The process shares its parent's descriptor table (made with `clone(CLONE_FILES)`,
    /// format 4.10): its descriptors are those of its parent's record, and `fds` is empty.
    /// Restart creates it with `CLONE_FILES` from its parent (the `SharedFiles` section
    /// announces it).
    #[serde(default)]
    pub files_shared: bool,
}

/// Process-wide settings restored after the memory (see `crest_kinds::attrs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(remote = "Self")]
pub struct ProcAttrs {
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`: (interval, value) in microseconds.
    pub itimers: [(u64, u64); 3],
    /// `/proc/PID/oom_score_adj`.
    pub oom_score_adj: i32,
    /// `PR_GET_CHILD_SUBREAPER`.
    pub child_subreaper: bool,
    /// `PR_GET_DUMPABLE`.
    pub dumpable: u32,
    /// `PR_GET_THP_DISABLE`.
    pub thp_disable: bool,
    /// `/proc/PID/loginuid` (`u32::MAX`: unset).
    pub loginuid: u32,
    /// `membarrier` registrations (`MEMBARRIER_CMD_GET_REGISTRATIONS`).
    pub membarrier: u32,
    /// Control groups, as `/proc/PID/cgroup` lists them: (controllers, or `name=X`, or empty
    /// for the unified hierarchy; path).
    pub cgroups: Vec<(String, String)>,
    /// POSIX timers (`timer_create`), in increasing id order.
    #[serde(default)]
    pub posix_timers: Vec<PosixTimer>,
    /// The signal that stopped the process by job control (`SIGSTOP`, `SIGTSTP`, `SIGTTIN`,
    /// `SIGTTOU`); 0: it was not stopped.
    #[serde(default)]
    pub stop_signal: u32,
    /// The SysV semaphore adjustments the kernel applies when the process exits (`SEM_UNDO`),
    /// each as (set id, semaphore number, adjustment), the non-zero ones only (format 4.8).
    #[serde(default)]
    pub semadj: Vec<(i32, u16, i16)>,
}

/// One POSIX timer of a process (see `crest_kinds::timers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(remote = "Self")]
pub struct PosixTimer {
    /// The timer id `timer_create` gave (`timer_t`).
    pub id: i32,
    /// Its clock (`CLOCK_*`, or a negative CPU clock id).
    pub clock: i32,
    /// `sigev_notify`: `SIGEV_SIGNAL` 0, `SIGEV_NONE` 1, `SIGEV_THREAD` 2, with `SIGEV_THREAD_ID`
    /// (4) when the signal goes to one thread.
    pub notify: i32,
    /// `sigev_signo`.
    pub signal: i32,
    /// `sigev_value` (`sival_ptr`).
    pub value: u64,
    /// The thread the signal goes to (`SIGEV_THREAD_ID`); 0 otherwise.
    pub tid: i32,
    /// Time left until it fires, in nanoseconds; 0: disarmed.
    pub value_ns: u64,
    /// Its period in nanoseconds; 0: one-shot.
    pub interval_ns: u64,
    /// `timer_getoverrun` (not restored: the kernel has no way to set it).
    pub overrun: i32,
}

/// Per-thread settings (see `crest_kinds::attrs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(remote = "Self")]
pub struct ThreadAttrs {
    /// Scheduling policy (`SCHED_*`, with `SCHED_RESET_ON_FORK`).
    pub policy: u32,
    /// Nice value.
    pub nice: i32,
    /// Real-time priority.
    pub rt_priority: u32,
    /// `PR_GET_PDEATHSIG`.
    pub pdeath_sig: u32,
    /// `PR_GET_NO_NEW_PRIVS`.
    pub no_new_privs: bool,
    /// `PR_GET_TIMERSLACK`, in nanoseconds.
    pub timer_slack: u64,
    /// The thread's credentials: threads of one process may have their own (raw `setresuid`
    /// and `capset` affect only the calling thread).
    pub creds: Creds,
    /// The seccomp filters the thread runs under, the first installed first (format 4.7;
    /// empty: none).
    #[serde(default)]
    pub seccomp: Vec<SeccompFilter>,
    /// The thread runs in seccomp strict mode (`SECCOMP_MODE_STRICT`, format 4.14: only
    /// `read`, `write`, `_exit` and `rt_sigreturn` allowed), entered again as the last step
    /// before it runs.
    #[serde(default)]
    pub seccomp_strict: bool,
}

/// One seccomp filter (format 4.7), as `PTRACE_SECCOMP_GET_FILTER` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(remote = "Self")]
pub struct SeccompFilter {
    /// `SECCOMP_FILTER_FLAG_*` it was installed with, as `PTRACE_SECCOMP_GET_METADATA` tells
    /// them (`SECCOMP_FILTER_FLAG_LOG`).
    pub flags: u64,
    /// Its classic BPF program: `struct sock_filter` instructions, 8 bytes each.
    pub insns: Vec<u8>,
}

/// User and group ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(remote = "Self")]
pub struct Creds {
    /// Real, effective, saved, filesystem uid.
    pub uid: [u32; 4],
    /// Real, effective, saved, filesystem gid.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Effective capability set (bitmask).
    pub cap_eff: u64,
    /// Permitted capability set.
    pub cap_prm: u64,
    /// Inheritable capability set.
    pub cap_inh: u64,
    /// Bounding set.
    pub cap_bnd: u64,
    /// Ambient set.
    pub cap_amb: u64,
    /// `PR_GET_SECUREBITS`.
    pub securebits: u32,
}

/// One resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Rlimit {
    /// Resource number (`RLIMIT_*`).
    pub resource: u32,
    /// Soft limit.
    pub cur: u64,
    /// Hard limit.
    pub max: u64,
}

/// The memory descriptor fields of `struct prctl_mm_map`, and the auxiliary vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(remote = "Self")]
pub struct MmState {
    /// Start of code.
    pub start_code: u64,
    /// End of code.
    pub end_code: u64,
    /// Start of data.
    pub start_data: u64,
    /// End of data.
    pub end_data: u64,
    /// Start of the heap.
    pub start_brk: u64,
    /// Current program break.
    pub brk: u64,
    /// Start of the main stack.
    pub start_stack: u64,
    /// Start of argv strings.
    pub arg_start: u64,
    /// End of argv strings.
    pub arg_end: u64,
    /// Start of environment strings.
    pub env_start: u64,
    /// End of environment strings.
    pub env_end: u64,
    /// The auxiliary vector, as u64 words.
    pub auxv: Vec<u64>,
}

/// Special mappings the kernel provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecialArea {
    /// `[vvar]`.
    Vvar,
    /// `[vvar_vclock]`.
    VvarVclock,
    /// `[vdso]`.
    Vdso,
    /// `[vsyscall]` (fixed, never moved).
    Vsyscall,
}

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub enum VmaBacking {
    /// Private anonymous memory (heap, stack, `mmap(MAP_ANONYMOUS|MAP_PRIVATE)`).
    Anon,
    /// Shared anonymous memory, restored through a memfd; `id` is the same for all mappings of one object.
    SharedAnon {
        /// Identity of the shared object (device:inode at checkpoint).
        id: u64,
        /// Size of the object.
        size: u64,
    },
    /// A file mapping.
    File {
        /// Path at checkpoint.
        path: String,
        /// Offset into the file.
        offset: u64,
        /// Device number at checkpoint.
        dev: u64,
        /// Inode at checkpoint.
        ino: u64,
        /// File size at checkpoint.
        size: u64,
        /// Modification time (ns) at checkpoint, to notice a changed file.
        mtime_ns: i64,
    },
    /// A kernel special mapping.
    Special(SpecialArea),
    /// An attached SysV shared memory segment (see [`IpcObject`]).
    SysvShm {
        /// The segment's id.
        id: i32,
        /// Offset of the mapping into the segment.
        offset: u64,
    },
    /// A mapping of a file that was deleted (unlinked) while mapped: the file is recreated at
    /// restart, unlinked, in the directory it was in, once for every mapping and descriptor
    /// of it in the image ([`FdKind::Deleted`] with the same `id`).
    Deleted {
        /// Identity of the file (device and inode at checkpoint), shared with the descriptors
        /// and mappings of the same file.
        id: u64,
        /// The path it had (without ` (deleted)`).
        path: String,
        /// Offset of the mapping into the file.
        offset: u64,
        /// The file itself, on the first record of it in the image (descriptor or mapping).
        file: Option<DeletedFile>,
    },
    /// A private mapping of a shared memory object (format 4.5): a memfd, or the object behind
    /// a shared anonymous mapping, mapped `MAP_PRIVATE` (the object's pages show through until
    /// written; the pages copied on write are in its page runs). `id` and `size` as in
    /// [`VmaBacking::SharedAnon`] (the mapping's offset in the object is `size` less its
    /// length); the object is restored by a descriptor of it in the image ([`FdKind::Memfd`]).
    SharedPrivate {
        /// Identity of the shared object (device:inode at checkpoint).
        id: u64,
        /// The end of the mapping in the object.
        size: u64,
    },
    /// The rings of a packet socket (`PACKET_RX_RING`, then `PACKET_TX_RING`, mapped whole
    /// with `mmap` of the socket), format 4.18: mapped again from the restored socket, which
    /// sets its version and rings again from its record (`PACKET_VERSION`, `PACKET_RX_RING`,
    /// `PACKET_TX_RING` in its options). No page of it is saved: a checkpoint refuses rings
    /// holding frames the program or the kernel has not taken yet, or whose kernel position
    /// cannot be made again (see `crest_kinds::fd::packet`).
    PacketRing {
        /// The descriptor of the process that holds the socket (an [`FdKind::Socket`] of
        /// family `AF_PACKET`).
        fd: i32,
        /// The frame of the receive ring (`TPACKET_V1`, `V2`) the kernel fills next: restart
        /// brings the new ring there (frames received and handed back to the kernel).
        rx_head: u32,
    },
}

/// The contents and attributes of a file deleted while open or mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct DeletedFile {
    /// Its size.
    pub size: u64,
    /// Its permission bits.
    pub mode: u32,
    /// Its owner.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
    /// Last access, in nanoseconds since the epoch.
    pub atime_ns: i64,
    /// Last modification, in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Where its data lies: (offset, length) of each run of data, in order; the rest of the
    /// file up to `size` is holes.
    pub extents: Vec<(u64, u64)>,
    /// The bytes of the extents, one after the other.
    pub data: Vec<u8>,
}

/// Bits of [`Vma::flags`].
pub mod vma_flags {
    /// MAP_SHARED.
    pub const SHARED: u32 = 1;
    /// Grows down (the main stack).
    pub const GROWSDOWN: u32 = 2;
    /// `[heap]`.
    pub const HEAP: u32 = 4;
    /// `[stack]`.
    pub const STACK: u32 = 8;
    /// Locked (mlock).
    pub const LOCKED: u32 = 16;
    /// A file mapping whose whole contents are in the image (`cr_checkpoint --save-*`): it is
    /// restored from the image when its file is gone or has changed. On anonymous memory:
    /// memory that a restart had mapped from an earlier image, saved whole.
    pub const SAVED: u32 = 32;
    /// `MAP_DROPPABLE` (`dp`): its contents may be dropped at any time; not saved, restored
    /// empty.
    pub const DROPPABLE: u32 = 64;
    /// `MAP_NORESERVE` (`nr`): no swap space reserved.
    pub const NORESERVE: u32 = 128;
    /// An AIO ring (`io_setup`, `/[aio]`), format 4.14: its pages (header and events) are saved
    /// whole as anonymous memory, and restart makes a context of the same size in the process
    /// and moves it there (see `crest_kinds::aio`).
    pub const AIO: u32 = 256;
}

/// madvise() states restored on a mapping, bits of [`Vma::madv`].
pub mod madv_flags {
    /// MADV_DONTFORK (`dc`).
    pub const DONTFORK: u32 = 1;
    /// MADV_WIPEONFORK (`wf`).
    pub const WIPEONFORK: u32 = 2;
    /// MADV_DONTDUMP (`dd`).
    pub const DONTDUMP: u32 = 4;
    /// MADV_HUGEPAGE (`hg`).
    pub const HUGEPAGE: u32 = 8;
    /// MADV_NOHUGEPAGE (`nh`).
    pub const NOHUGEPAGE: u32 = 16;
    /// MADV_MERGEABLE (`mg`).
    pub const MERGEABLE: u32 = 32;
    /// MADV_RANDOM (`rr`).
    pub const RANDOM: u32 = 64;
    /// MADV_SEQUENTIAL (`sr`).
    pub const SEQUENTIAL: u32 = 128;
}

/// One memory mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Vma {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// PROT_* bits.
    pub prot: u32,
    /// [`vma_flags`] bits.
    pub flags: u32,
    /// [`madv_flags`] bits.
    pub madv: u32,
    /// What backs it.
    pub backing: VmaBacking,
    /// Saved page contents, sorted by address, inside `start..end`.
    pub pages: Vec<PageRun>,
    /// Bytes of the mapping's pages that needed saving when it was checkpointed (present or
    /// swapped pages of private memory, and so on: see the format description).
    pub need: u64,
    /// Of those, bytes that held only zeros and are therefore in no run. The runs and these
    /// account for every byte of `need`: an image whose page data does not is refused.
    pub zero: u64,
    /// Address ranges `(address, length)` whose pages this process still shared copy-on-write
    /// with its parent (the process of `ppid`) at the checkpoint (format 4.7): the same page
    /// frames as the parent's mapping of the same bounds. Their contents are the parent's, in
    /// the parent's runs; they are in neither `pages` nor `need`, and are restored by forking
    /// this process from its parent with them in place, so that they are shared again.
    #[serde(default)]
    pub inherited: Vec<(u64, u64)>,
    /// Guard regions `(address, length)` installed with `madvise(MADV_GUARD_INSTALL)` (Linux
    /// 6.13; format 4.11): pages that fault when touched. Sorted, page aligned, inside the
    /// mapping; they hold no data (in neither `pages` nor `need`) and are installed again at
    /// restart.
    #[serde(default)]
    pub guards: Vec<(u64, u64)>,
}

impl Vma {
    /// Whether pages of this mapping can be restored shared copy-on-write with a parent's
    /// (format 4.7): private anonymous memory or a private file mapping, that a `fork` passes
    /// on as it is (not `MADV_DONTFORK` or `MADV_WIPEONFORK`), not growing down (a stack),
    /// locked, droppable, without reserve, or saved whole from its file.
    pub fn can_inherit(&self) -> bool {
        let not = vma_flags::SHARED | vma_flags::GROWSDOWN | vma_flags::STACK | vma_flags::LOCKED | vma_flags::DROPPABLE | vma_flags::NORESERVE | vma_flags::SAVED | vma_flags::AIO;
        self.flags & not == 0 && self.madv & (madv_flags::DONTFORK | madv_flags::WIPEONFORK) == 0 && matches!(self.backing, VmaBacking::Anon | VmaBacking::File { .. })
    }

    /// Whether this mapping (of a child) can share pages with `parent` (a mapping of its
    /// parent): both [`Vma::can_inherit`], with the same bounds and the same backing (the same
    /// file from the same offset).
    pub fn shares_with(&self, parent: &Vma) -> bool {
        let same = match (&self.backing, &parent.backing) {
            (VmaBacking::Anon, VmaBacking::Anon) => true,
            (VmaBacking::File { path: a, offset: oa, dev: da, ino: ia, .. }, VmaBacking::File { path: b, offset: ob, dev: db, ino: ib, .. }) => a == b && oa == ob && da == db && ia == ib,
            _ => false,
        };
        same && self.start == parent.start && self.end == parent.end && self.can_inherit() && parent.can_inherit()
    }
}

/// A run of saved pages: `len` bytes for `vaddr..vaddr+len`, at `offset` in the image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct PageRun {
    /// Address in the process.
    pub vaddr: u64,
    /// Length in bytes, a multiple of the page size.
    pub len: u64,
    /// Offset of the data in the image file; page aligned when stored as is.
    pub offset: u64,
    /// 0: the `len` bytes are stored as they are. Otherwise the run is stored as one zstd frame
    /// of `zlen` bytes (less than `len`) that decompresses to the `len` bytes.
    pub zlen: u64,
    /// Checksum of the bytes as stored.
    pub sum: u64,
    /// Which image of the chain holds the bytes (format 4.3): 0 this one, 1 its parent, 2 the
    /// parent's parent, and so on.
    #[serde(default)]
    pub image: u32,
}

impl PageRun {
    /// Bytes the run takes in the image.
    pub fn stored_len(&self) -> u64 {
        if self.zlen == 0 {
            self.len
        } else {
            self.zlen
        }
    }
}

/// One open file descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct FdRecord {
    /// Descriptor number.
    pub fd: i32,
    /// File status flags (`O_*`, from fdinfo), access mode included.
    pub flags: u32,
    /// Close-on-exec.
    pub cloexec: bool,
    /// The open file description: descriptors with the same number here share one (they were
    /// `dup`ed, and share offset and status flags). Unique within the image.
    pub file: u64,
    /// What it refers to.
    pub kind: FdKind,
    /// File locks held through it.
    pub locks: Vec<FileLock>,
    /// Owner for `SIGIO` (`F_SETOWN_EX`) and the signal sent (`F_SETSIG`).
    pub fown: Fown,
}

/// The owner of an open file for I/O signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(remote = "Self")]
pub struct Fown {
    /// `F_OWNER_TID` (0), `F_OWNER_PID` (1) or `F_OWNER_PGRP` (2).
    pub kind: i32,
    /// The owner (0: none).
    pub pid: i32,
    /// `F_GETSIG` (0: SIGIO).
    pub signal: i32,
}

/// A file lock held through a descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct FileLock {
    /// Which kind.
    pub kind: LockKind,
    /// A write (exclusive) lock, else a read (shared) one.
    pub write: bool,
    /// First byte (byte-range locks).
    pub start: u64,
    /// Bytes locked (0: to the end of the file, whatever its size).
    pub len: u64,
    /// A lease being broken (4.4): 0 not, 1 down to a read lease, 2 down to none (the type
    /// `F_GETLEASE` gives while it is broken). `write` is then the lease's type before.
    #[serde(default)]
    pub breaking: u8,
}

/// The kinds of file lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// `flock`, owned by the open file.
    Flock,
    /// A POSIX record lock (`fcntl(F_SETLK)`), owned by the process.
    Posix,
    /// An open-file-description lock (`fcntl(F_OFD_SETLK)`), owned by the open file.
    Ofd,
    /// A lease (`fcntl(F_SETLEASE)`, 4.4), owned by the open file.
    Lease,
}

/// The kinds of files a descriptor can refer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub enum FdKind {
    /// A regular file, reopened by path.
    Regular {
        /// Path at checkpoint.
        path: String,
        /// File offset.
        pos: u64,
        /// Size at checkpoint.
        size: u64,
        /// Device number.
        dev: u64,
        /// Inode.
        ino: u64,
    },
    /// A directory, reopened by path.
    Directory {
        /// Path.
        path: String,
        /// Offset.
        pos: u64,
    },
    /// A character device that can be reopened by path (`/dev/null`, `/dev/zero`, ...).
    CharDevice {
        /// Path.
        path: String,
        /// Device number.
        rdev: u64,
    },
    /// An eventfd with its counter.
    EventFd {
        /// The counter.
        count: u64,
        /// `EFD_SEMAPHORE`.
        semaphore: bool,
    },
    /// One end of a pipe whose both ends are in the image; the read end carries the data that
    /// was buffered in it (read without consuming it).
    Pipe {
        /// Identity of the pipe (its inode at checkpoint).
        id: u64,
        /// The write end (else the read end).
        write_end: bool,
        /// Pipe capacity (`F_GETPIPE_SZ`).
        size: u32,
        /// Buffered data (on the first read end only).
        data: Vec<u8>,
    },
    /// An epoll instance and what it watches.
    Epoll {
        /// (descriptor, events, data) for each watched descriptor: the number it was added
        /// with.
        targets: Vec<(i32, u32, u64)>,
        /// For each target, the descriptor that held its file at the checkpoint: its own
        /// number, or another when that number was closed (or now holds another file) and the
        /// file stayed open under this one. A set in flight carried by a pair of unix sockets
        /// (format 4.16) watches only the pair's ends: -1 for the end whose `end` is false, -2
        /// for the other.
        sources: Vec<i32>,
    },
    /// A named pipe (FIFO) opened by path; the read end carries the data that was buffered in it.
    Fifo {
        /// Path.
        path: String,
        /// Buffered data (on the first descriptor that reads only).
        data: Vec<u8>,
    },
    /// A memfd (`memfd_create`); the same object as the shared mappings whose
    /// [`VmaBacking::SharedAnon`] id is `id`.
    Memfd {
        /// Identity of the object (as in [`VmaBacking::SharedAnon`]).
        id: u64,
        /// Its name (without `memfd:`).
        name: String,
        /// Its size.
        size: u64,
        /// File offset of this descriptor.
        pos: u64,
        /// Its contents (on the first descriptor of the object only; empty otherwise).
        data: Vec<u8>,
        /// Its seals (`F_GET_SEALS`).
        seals: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// Standard input, output or error (descriptors 0 to 2 only) leading outside the image: a
    /// terminal, or a pipe or socket to a process that was not checkpointed. Restored as the
    /// descriptor of the same number that `cr_restart` itself has, as BLCR did, and only when
    /// that one is of the same class.
    Inherited {
        /// What it was, for messages (`/dev/pts/3`, `pipe:[1234]`).
        what: String,
        /// What kind of object it was.
        class: StdioClass,
    },
    /// A timerfd.
    TimerFd {
        /// Its clock (`CLOCK_*`).
        clock: i32,
        /// `timerfd_settime` flags (`TFD_TIMER_ABSTIME`, `TFD_TIMER_CANCEL_ON_SET`).
        settime_flags: u32,
        /// When it fires next: the time left, or with `TFD_TIMER_ABSTIME` the time on its
        /// clock; 0: disarmed.
        value_ns: u64,
        /// Its period (0: fires once).
        interval_ns: u64,
        /// Expirations not yet read.
        ticks: u64,
    },
    /// A socket that is not connected: listening, bound, or not bound yet; bound again and
    /// listening again at restart.
    Socket {
        /// `AF_*`.
        family: i32,
        /// `SOCK_*`.
        ty: i32,
        /// Protocol.
        protocol: i32,
        /// The raw `sockaddr` it is bound to (empty: not bound).
        addr: Vec<u8>,
        /// Listening, with this backlog.
        listen: Option<i32>,
        /// `(level, name, value)` of each `int` option saved.
        options: Vec<(i32, i32, i32)>,
        /// In words, for messages (`TCP 127.0.0.1:80 listening`).
        what: String,
        /// Options that are not an `int` (format 4.1): see [`ByteOption`].
        #[serde(default)]
        byte_options: Vec<ByteOption>,
        /// A unix socket another socket of the image is connected to (or that is connected to
        /// itself): its inode at the checkpoint, the identity those sockets name in `peer` (0:
        /// none; format 4.1).
        #[serde(default)]
        ino: u64,
        /// A unix datagram socket connected to a socket that is not connected back to it
        /// (a client of a datagram server): the server's `ino` (0: not connected; format 4.1).
        #[serde(default)]
        peer: u64,
        /// A unix socket whose address names no file any more (the file was removed or
        /// replaced): bound to its address again, and the file removed (format 4.1).
        #[serde(default)]
        unlinked: bool,
        /// How it was shut down: 1 receiving, 2 sending (format 4.1).
        #[serde(default)]
        shutdown: u8,
        /// A unix datagram socket: the datagrams queued for it to read, oldest first, each
        /// with its sender's address and the descriptors it carries (format 4.6).
        #[serde(default)]
        queue: Vec<QueuedMessage>,
        /// A unix stream or seqpacket socket whose connection to the listener `peer` waits
        /// to be accepted: connected to it again (format 4.6).
        #[serde(default)]
        pending: bool,
        /// A unix socket bound to a path: the mode (permission bits), owner and group of its
        /// file, given back to the file its bind makes (format 4.6; none: as the bind makes it).
        #[serde(default)]
        file_attrs: Option<(u32, u32, u32)>,
        /// A netlink or raw IP socket connected to an address (the kernel's port and groups,
        /// a host): that raw `sockaddr`, connected to again (format 4.9; empty: not connected).
        #[serde(default)]
        dest: Vec<u8>,
    },
    /// One end of a connected pair of unix sockets whose two ends are in the image (a
    /// `socketpair`, or a connection between two processes of the image).
    UnixPair {
        /// Identity of the pair (shared by its two ends).
        id: u64,
        /// Which end (the two ends have `false` and `true`).
        end: bool,
        /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
        ty: i32,
        /// `(level, name, value)` of each `int` option of this end.
        options: Vec<(i32, i32, i32)>,
        /// The pair's state, on the first end saved only.
        state: Option<UnixPairState>,
        /// In words, for messages.
        what: String,
        /// Options of this end that are not an `int` (format 4.1): see [`ByteOption`].
        #[serde(default)]
        byte_options: Vec<ByteOption>,
        /// A stream or seqpacket socket whose other end was closed: the pair is made, the data
        /// queued for this end sent through the other end, which is closed then (format 4.1).
        #[serde(default)]
        alone: bool,
    },
    /// A signalfd.
    SignalFd {
        /// The signals it reads (bit N-1 for signal N).
        mask: u64,
    },
    /// An object crest cannot restore, left out on request (`--drop-unsupported`): restored as
    /// a socket whose peer is closed (reads see end of file, writes fail with `EPIPE`).
    Dropped {
        /// What it was, for messages (`TCP 127.0.0.1:80 listening`).
        what: String,
    },
    /// A connected internet socket: a TCP connection (with its state, restored through
    /// `TCP_REPAIR`) or a connected UDP socket; bound to its address and connected to its peer
    /// again at restart.
    Inet {
        /// `AF_INET` or `AF_INET6`.
        family: i32,
        /// `SOCK_STREAM` or `SOCK_DGRAM`.
        ty: i32,
        /// `IPPROTO_TCP`, `IPPROTO_UDP` or `IPPROTO_UDPLITE`.
        protocol: i32,
        /// The raw `sockaddr` it is bound to.
        local: Vec<u8>,
        /// The raw `sockaddr` of its peer.
        peer: Vec<u8>,
        /// `(level, name, value)` of each `int` option saved.
        options: Vec<(i32, i32, i32)>,
        /// The connection's state (TCP only).
        tcp: Option<TcpState>,
        /// In words, for messages (`TCP 127.0.0.1:41234 connected to 127.0.0.1:80`).
        what: String,
        /// Options that are not an `int` (format 4.1): see [`ByteOption`].
        #[serde(default)]
        byte_options: Vec<ByteOption>,
        /// How a UDP socket was shut down: 1 receiving, 2 sending (format 4.1; a TCP
        /// connection's is in its state).
        #[serde(default)]
        shutdown: u8,
    },
    /// An inotify instance with its watches, each added again at restart with the same watch
    /// descriptor. Events queued and not read at the checkpoint are not restored.
    Inotify {
        /// The watches, by increasing watch descriptor.
        watches: Vec<InotifyWatch>,
        /// Bytes of events that were queued and not read at the checkpoint (lost).
        lost: u32,
    },
    /// A regular file that was deleted (unlinked) while open: recreated at restart, unlinked,
    /// in the directory it was in; one file for every descriptor and mapping of it in the
    /// image ([`VmaBacking::Deleted`] with the same `id`).
    Deleted {
        /// Identity of the file (device and inode at checkpoint).
        id: u64,
        /// The path it had (without ` (deleted)`); its directory is where it is recreated.
        path: String,
        /// File offset of this descriptor.
        pos: u64,
        /// The file itself, on the first record of it in the image (descriptor or mapping).
        file: Option<DeletedFile>,
    },
    /// One end of a pseudo-terminal whose master is in the image: the master (`/dev/ptmx`) or
    /// a slave (`/dev/pts/N`). The pair is made again once for the image, with the same index
    /// when it is free.
    Pty {
        /// The index of the pair at checkpoint (N of `/dev/pts/N`).
        index: u32,
        /// The master end (else a slave).
        master: bool,
        /// The terminal's state, on the first record of the pair only.
        state: Option<PtyState>,
    },
    /// A pidfd (4.4): made again on the process it names (its `PIDFD_NONBLOCK` and
    /// `PIDFD_THREAD` are in the record's flags), or on a process that is dead as the one it
    /// named was.
    Pidfd {
        /// The process it names, as the image knows it; -1: a process that was dead (reaped).
        pid: i32,
        /// It names the process that holds it.
        own: bool,
        /// Its inode at the checkpoint (pidfs: one per process): the pidfds of one dead
        /// process share it, and are made again on one dead process.
        ino: u64,
        /// The wait status of the dead process (`PIDFD_INFO_EXIT`), when the kernel gave it.
        exit: Option<i32>,
    },
    /// A descriptor opened with `O_PATH` (4.4), reopened by path with `O_PATH`; a symbolic
    /// link (opened with `O_PATH | O_NOFOLLOW`) is reopened as the link itself.
    Path {
        /// Path at checkpoint.
        path: String,
        /// Device number of the file it refers to.
        dev: u64,
        /// Its inode.
        ino: u64,
        /// The file is a symbolic link.
        symlink: bool,
    },
    /// A file of the `/proc/PID` directory of a process of the image (format 4.5), or that
    /// directory itself: opened again under the PID the process has after the restart.
    ProcFile {
        /// The process's PID at checkpoint.
        pid: i32,
        /// The path under `/proc/PID` (empty: the directory itself).
        path: String,
        /// File offset.
        pos: u64,
    },
    /// A directory, FIFO, character device or symbolic link deleted while open (format 4.5):
    /// made again once for the image under its old name (or another free name in its
    /// directory; missing directories above it are made for the time being), opened, and
    /// removed again.
    Ghost {
        /// Identity of the node (device and inode at checkpoint, `dev << 32 ^ ino`).
        id: u64,
        /// The path it had (without ` (deleted)`).
        path: String,
        /// File offset.
        pos: u64,
        /// What it was.
        node: Ghost,
        /// A FIFO: the bytes it buffered, on the first descriptor of it that reads.
        data: Vec<u8>,
    },
    /// A namespace file (`/proc/PID/ns/net` and the like, format 4.10) of a namespace the
    /// process was in: opened again as `/proc/self/ns/KIND` of the restored process, which is
    /// in the namespaces `cr_restart` is in.
    Namespace {
        /// The kind, as in `/proc/self/ns` (`net`, `uts`, `ipc`, `mnt`, `pid`, `user`,
        /// `cgroup`, `time`).
        kind: String,
    },
    /// A fanotify group (format 4.14): made again with `fanotify_init(flags, event_flags)`
    /// and every mark added again; events queued and not read at the checkpoint are not
    /// restored (`lost` bytes of them).
    Fanotify {
        /// `fanotify_init` flags, as fdinfo shows them (`FAN_CLASS_*`, `FAN_UNLIMITED_*`,
        /// `FAN_REPORT_*`, and `FAN_NONBLOCK`, `FAN_CLOEXEC` as given then: the descriptor's
        /// flags now are those of its record).
        flags: u32,
        /// The open flags of the event files (`event_f_flags`).
        event_flags: u32,
        /// Its marks.
        marks: Vec<FanotifyMark>,
        /// Bytes of events queued and not read at the checkpoint, which are not restored.
        lost: u32,
    },
    /// The slave of a pseudo-terminal whose master was closed (format 4.14): hung up, its
    /// node gone. Made again as the slave of a new pseudo-terminal whose master is closed.
    HungUpPty {
        /// The name it had (`/dev/pts/N`), for messages.
        path: String,
    },
    /// A terminal device other than a pseudo-terminal (a virtual console, a serial line,
    /// `/dev/console`) open at a number above 2 (format 4.17): opened again by path with
    /// `O_NOCTTY`, refused at restart when the path no longer names the same device, and its
    /// settings set again where they differ from the device's.
    Terminal {
        /// Its path at checkpoint.
        path: String,
        /// Its device number (`st_rdev`).
        rdev: u64,
        /// Its settings.
        settings: TermSettings,
    },
}

/// The settings of a terminal device that belong to the device rather than to one opener
/// (format 4.17, [`FdKind::Terminal`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct TermSettings {
    /// `struct termios2` (`TCGETS2`): `c_iflag`, `c_oflag`, `c_cflag`, `c_lflag`.
    pub flags: [u32; 4],
    /// `c_line`, the line discipline.
    pub line: u8,
    /// `c_cc`, the special characters.
    pub cc: Vec<u8>,
    /// Input and output speeds (`c_ispeed`, `c_ospeed`).
    pub speed: (u32, u32),
    /// Window size (`TIOCGWINSZ`): rows, columns, x pixels, y pixels.
    pub winsize: [u16; 4],
    /// Modem control lines (`TIOCMGET`), on a device that has them.
    pub modem: Option<i32>,
    /// Opened exclusively (`TIOCEXCL`): no other open succeeds but root's.
    pub exclusive: bool,
    /// A virtual console's keyboard mode (`KDGKBMODE`).
    pub keyboard: Option<i32>,
}

/// One mark of a fanotify group, as `/proc/PID/fdinfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct FanotifyMark {
    /// What it marks: 0 an inode, 1 a mount (`FAN_MARK_MOUNT`), 2 a file system
    /// (`FAN_MARK_FILESYSTEM`).
    pub kind: u8,
    /// The mark's flags as fdinfo shows them (`FAN_MARK_IGNORED_SURV_MODIFY`,
    /// `FAN_MARK_EVICTABLE`, `FAN_MARK_IGNORE`).
    pub mflags: u32,
    /// The events it reports.
    pub mask: u64,
    /// The events it ignores.
    pub ignored_mask: u64,
    /// An inode mark: a path of the inode at checkpoint; a mount mark: the mount's mount
    /// point; a file system mark: a mount point of the file system.
    pub path: String,
    /// The device (as `st_dev`) of the inode, mount or file system at checkpoint.
    pub dev: u64,
    /// An inode mark: the inode; else 0.
    pub ino: u64,
}

/// A node other than a regular file that was deleted while in use ([`FdKind::Ghost`], a
/// deleted working directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Ghost {
    /// `st_mode`: the file type bits (`S_IFDIR`, `S_IFIFO`, `S_IFCHR`, `S_IFLNK`) and the
    /// permission bits.
    pub mode: u32,
    /// The device number of a character device (`st_rdev`), else 0.
    pub rdev: u64,
    /// Owner and group.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// A symbolic link's target, else empty.
    pub target: String,
}

/// What a pseudo-terminal holds besides its two ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct PtyState {
    /// The slave's `struct termios2` (`TCGETS2`): `c_iflag`, `c_oflag`, `c_cflag`, `c_lflag`.
    pub flags: [u32; 4],
    /// `c_line`, the line discipline.
    pub line: u8,
    /// `c_cc`, the special characters.
    pub cc: Vec<u8>,
    /// Input and output speeds (`c_ispeed`, `c_ospeed`).
    pub speed: (u32, u32),
    /// Window size (`TIOCGWINSZ`): rows, columns, x pixels, y pixels.
    pub winsize: [u16; 4],
    /// Packet mode on the master (`TIOCGPKT`).
    pub packet: bool,
    /// The slave is locked (`TIOCGPTLCK`: not `unlockpt`ed).
    pub locked: bool,
    /// The session whose controlling terminal it is (0: none).
    pub session: i32,
    /// Its foreground process group (0: none).
    pub foreground: i32,
    /// Bytes written to the master and not yet read from the slave, as the slave's line
    /// discipline holds them.
    pub input: Vec<u8>,
    /// Bytes written to the slave and not yet read from the master.
    pub output: Vec<u8>,
    /// The slave's owner, group and permission bits (`/dev/pts/N`, set by `grantpt` or
    /// `fchown`).
    pub owner: (u32, u32, u32),
}

/// One watch of an inotify instance, as `/proc/PID/fdinfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct InotifyWatch {
    /// The watch descriptor.
    pub wd: i32,
    /// The events watched (`IN_*`, with `IN_ONESHOT`, `IN_EXCL_UNLINK`, ...).
    pub mask: u32,
    /// A path of the watched file or directory at checkpoint.
    pub path: String,
    /// Its device number (as `st_dev`) at checkpoint.
    pub dev: u64,
    /// Its inode at checkpoint.
    pub ino: u64,
    /// The watched file had no path any more (deleted while open, format 4.10): `path` is empty
    /// and the file is open as this descriptor of the process, through which the watch is
    /// added again.
    #[serde(default)]
    pub open_as: Option<i32>,
}

/// A socket option whose value is not an `int`: `(level, name, value)`, the value as
/// `getsockopt` gives it and `setsockopt` takes it (`SO_LINGER`'s `struct linger`,
/// `SO_BINDTODEVICE`'s interface name, `SO_RCVTIMEO`'s `struct timeval`, `TCP_CONGESTION`'s
/// name), except `(SOL_SOCKET, SO_ATTACH_FILTER)`: the socket's classic BPF filter, its
/// `struct sock_filter` instructions (8 bytes each) as `SO_GET_FILTER` reads them.
pub type ByteOption = (i32, i32, Vec<u8>);

/// What a TCP connection holds, read in repair mode (`TCP_REPAIR`) while its process was
/// frozen. A FIN sent or received is not counted in the sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct TcpState {
    /// The kernel's TCP state: `TCP_ESTABLISHED` (1), `TCP_FIN_WAIT1` (4), `TCP_FIN_WAIT2` (5),
    /// `TCP_CLOSE_WAIT` (8), `TCP_LAST_ACK` (9), `TCP_CLOSING` (11).
    pub state: u8,
    /// Sequence number after the last byte queued for sending (`write_seq`).
    pub send_seq: u32,
    /// Sequence number of the next byte expected from the peer (`rcv_nxt`).
    pub recv_seq: u32,
    /// Bytes sent and not acknowledged, then bytes not sent yet, oldest first.
    pub send_queue: Vec<u8>,
    /// How many of the last bytes of `send_queue` were not sent yet.
    pub unsent: u32,
    /// Bytes received and not read yet.
    pub recv_queue: Vec<u8>,
    /// Largest segment size (`mss_clamp`).
    pub mss: u32,
    /// Options agreed with the peer (`tcpi_options`: timestamps 1, SACK 2, window scaling 4).
    pub options: u8,
    /// Window scale of what is sent and of what is received.
    pub wscale: (u8, u8),
    /// The connection's timestamp clock (`TCP_TIMESTAMP`), when timestamps are on.
    pub timestamp: u32,
    /// `TCP_REPAIR_WINDOW`: `snd_wl1`, `snd_wnd`, `max_window`, `rcv_wnd`, `rcv_wup`.
    pub window: [u32; 5],
}

impl FdKind {
    /// The path in the file system the record names, reopened by it at restart: checked by
    /// validation (absolute) and before a restart (present), moved by `cr_restart --relocate`.
    /// A new kind that names a path says so here, once.
    pub fn path(&self) -> Option<&str> {
        match self {
            FdKind::Regular { path, .. } | FdKind::Directory { path, .. } | FdKind::CharDevice { path, .. } | FdKind::Fifo { path, .. } | FdKind::Deleted { path, .. } | FdKind::Path { path, .. } | FdKind::Terminal { path, .. } => {
                Some(path)
            }
            // Its watches name paths of their own (checked and relocated one by one); so do a
            // fanotify group's marks.
            FdKind::Inotify { .. }
            | FdKind::Fanotify { .. }
            // Its node is gone: a new pseudo-terminal is made.
            | FdKind::HungUpPty { .. }
            | FdKind::EventFd { .. }
            | FdKind::Pipe { .. }
            | FdKind::Epoll { .. }
            | FdKind::Memfd { .. }
            | FdKind::Inherited { .. }
            | FdKind::TimerFd { .. }
            | FdKind::Socket { .. }
            | FdKind::UnixPair { .. }
            | FdKind::SignalFd { .. }
            | FdKind::Inet { .. }
            | FdKind::Pty { .. }
            | FdKind::Pidfd { .. }
            // Made again where it was (with any directory missing above it), or its /proc.
            | FdKind::Ghost { .. }
            | FdKind::Namespace { .. }
            | FdKind::ProcFile { .. }
            | FdKind::Dropped { .. } => None,
        }
    }

    /// Whether the record uses a socket field of format 4.1 that a 4.0 reader would ignore,
    /// restoring the socket without it: such an image carries a [`crate::SectionKind::SocketState`]
    /// section, which 4.0 readers refuse.
    pub fn uses_socket_state(&self) -> bool {
        match self {
            FdKind::Socket { byte_options, ino, peer, unlinked, shutdown, .. } => !byte_options.is_empty() || *ino != 0 || *peer != 0 || *unlinked || *shutdown != 0,
            FdKind::UnixPair { byte_options, alone, .. } => !byte_options.is_empty() || *alone,
            FdKind::Inet { byte_options, shutdown, .. } => !byte_options.is_empty() || *shutdown != 0,
            _ => false,
        }
    }

    /// Whether the record is a socket of a family or type saved since format 4.9 (packet,
    /// netlink, raw IP) or connected to an address (`dest`), which a reader of 4.7 or before
    /// would restore otherwise (not connected again, options set before the bind they need):
    /// such an image carries the [`crate::marker_kinds::SOCKET_FAMILIES`] section.
    pub fn uses_socket_families(&self) -> bool {
        // AF_NETLINK (16), AF_PACKET (17), SOCK_RAW (3).
        matches!(self, FdKind::Socket { family, ty, dest, .. } if matches!(*family, 16 | 17) || *ty == 3 || !dest.is_empty())
    }

    /// Whether the record holds what format 4.6 added to sockets (queued datagrams,
    /// descriptors in flight, connections waiting to be accepted), which a reader of 4.3 or
    /// before would restore the socket without: such an image carries the
    /// [`crate::marker_kinds::SOCKET_QUEUES`] section.
    pub fn uses_socket_queues(&self) -> bool {
        match self {
            FdKind::Socket { queue, pending, .. } => !queue.is_empty() || *pending,
            FdKind::UnixPair { state: Some(s), .. } => !s.passed.is_empty(),
            _ => false,
        }
    }

    /// The records of the descriptors in flight (`SCM_RIGHTS`) a socket record holds, in order.
    pub fn in_flight(&self) -> Vec<&FdRecord> {
        match self {
            FdKind::Socket { queue, .. } => queue.iter().flat_map(|m| m.fds.iter()).collect(),
            FdKind::UnixPair { state: Some(s), .. } => s.passed.iter().flat_map(|p| p.2.iter()).collect(),
            _ => Vec::new(),
        }
    }

    /// [`FdKind::in_flight`], to change them.
    pub fn in_flight_mut(&mut self) -> Vec<&mut FdRecord> {
        match self {
            FdKind::Socket { queue, .. } => queue.iter_mut().flat_map(|m| m.fds.iter_mut()).collect(),
            FdKind::UnixPair { state: Some(s), .. } => s.passed.iter_mut().flat_map(|p| p.2.iter_mut()).collect(),
            _ => Vec::new(),
        }
    }

    /// [`FdKind::path`], to change it.
    pub fn path_mut(&mut self) -> Option<&mut String> {
        match self {
            FdKind::Regular { path, .. }
            | FdKind::Directory { path, .. }
            | FdKind::CharDevice { path, .. }
            | FdKind::Fifo { path, .. }
            | FdKind::Deleted { path, .. }
            | FdKind::Path { path, .. }
            | FdKind::Terminal { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// What a connected pair of unix sockets holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct UnixPairState {
    /// For each end (`false`, `true`), the messages (datagrams, or runs of bytes of a stream)
    /// queued for it to read, oldest first.
    pub queues: [Vec<Vec<u8>>; 2],
    /// For each end, how it was shut down (1: receiving, 2: sending).
    pub shutdown: [u8; 2],
    /// Descriptors in flight (`SCM_RIGHTS`): `(end, index, files)`, the files carried by
    /// message `index` of the queue of `end` (0 or 1), each as the record of an open file
    /// (its `fd` is -1), in the order they were sent (format 4.6).
    #[serde(default)]
    pub passed: Vec<(u8, u32, Vec<FdRecord>)>,
}

/// One datagram queued on a unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct QueuedMessage {
    /// Its bytes.
    pub data: Vec<u8>,
    /// The raw `sockaddr` its receiver sees as its sender (empty: unnamed).
    pub sender: Vec<u8>,
    /// The descriptors in flight it carries (`SCM_RIGHTS`), each as the record of an open
    /// file (its `fd` is -1), in order.
    pub fds: Vec<FdRecord>,
}

/// The kind of an outside object that standard input, output or error led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StdioClass {
    /// A terminal.
    Terminal,
    /// A pipe or FIFO.
    Pipe,
    /// A socket.
    Socket,
}

impl StdioClass {
    /// Its name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            StdioClass::Terminal => "a terminal",
            StdioClass::Pipe => "a pipe",
            StdioClass::Socket => "a socket",
        }
    }
}

/// One signal's disposition, as the kernel's `struct sigaction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct SigAction {
    /// Signal number.
    pub signo: u32,
    /// Handler address, or SIG_IGN (1).
    pub handler: u64,
    /// SA_* flags.
    pub flags: u64,
    /// Restorer address.
    pub restorer: u64,
    /// Mask during the handler.
    pub mask: u64,
}

/// x86-64 general registers (`struct user_regs_struct`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[allow(missing_docs)]
pub struct Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

/// rseq registration of a thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Rseq {
    /// Address of `struct rseq`.
    pub addr: u64,
    /// Its registered length.
    pub len: u32,
    /// Abort signature.
    pub sig: u32,
}

/// One thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct Thread {
    /// Thread id.
    pub tid: i32,
    /// Name (`comm`).
    pub comm: String,
    /// General registers.
    pub regs: Regs,
    /// The XSAVE area (x87, SSE, AVX, ...) as `PTRACE_GETREGSET(NT_X86_XSTATE)` returns it.
    pub xsave: Vec<u8>,
    /// Blocked signals.
    pub sigmask: u64,
    /// Signals pending for this thread (raw 128-byte siginfo each).
    pub pending: Vec<Vec<u8>>,
    /// `clear_child_tid` (`set_tid_address`).
    pub clear_child_tid: u64,
    /// Robust futex list head and length.
    pub robust_list: (u64, u64),
    /// Alternate signal stack: sp, flags, size.
    pub altstack: (u64, i32, u64),
    /// rseq registration, if any.
    pub rseq: Option<Rseq>,
    /// Scheduling, parent-death signal, no_new_privs, timer slack.
    pub attrs: ThreadAttrs,
}

impl Image {
    /// Total bytes of memory the image's page data restores.
    pub fn page_bytes(&self) -> u64 {
        self.processes.iter().flat_map(|p| &p.vmas).flat_map(|v| &v.pages).map(|r| r.len).sum()
    }

    /// Total bytes the page data takes in the image (less than [`Image::page_bytes`] when
    /// compressed).
    pub fn stored_page_bytes(&self) -> u64 {
        self.processes.iter().flat_map(|p| &p.vmas).flat_map(|v| &v.pages).map(|r| r.stored_len()).sum()
    }
}
