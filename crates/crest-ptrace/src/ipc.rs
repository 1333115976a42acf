//! SysV IPC calls: shared memory segments, semaphore sets and message queues, looked at and
//! recreated by id.
//!
//! # Safety
//! Every call passes either integers or a pointer to a live, correctly sized local
//! (`shmid_ds`, `semid_ds`, `msqid_ds`, a `u16` array as long as the set, a `msgbuf` with room
//! for the length passed) that the kernel reads or fills.
#![allow(unsafe_code)]

/// What `IPC_STAT` tells about a segment or a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcStat {
    /// Key (0 for `IPC_PRIVATE`).
    pub key: i32,
    /// Mode bits (permissions, and `SHM_DEST` for a removed segment).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Segment size, or number of semaphores.
    pub size: u64,
    /// Attachments of a segment (0 for a set).
    pub nattch: u64,
}

fn check(r: libc::c_long, what: &str) -> std::io::Result<libc::c_long> {
    if r == -1 {
        let e = std::io::Error::last_os_error();
        Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(r)
    }
}

/// `shmctl(id, IPC_STAT)`.
pub fn shm_stat(id: i32) -> std::io::Result<IpcStat> {
    // SAFETY: shmid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: ds is a live shmid_ds the kernel fills.
    check(unsafe { libc::syscall(libc::SYS_shmctl, id, libc::IPC_STAT, &mut ds as *mut libc::shmid_ds) }, "shmctl IPC_STAT")?;
    Ok(IpcStat { key: ds.shm_perm.__key, mode: u32::from(ds.shm_perm.mode), uid: ds.shm_perm.uid, gid: ds.shm_perm.gid, size: ds.shm_segsz as u64, nattch: ds.shm_nattch })
}

/// `semctl(id, 0, IPC_STAT)`.
pub fn sem_stat(id: i32) -> std::io::Result<IpcStat> {
    // SAFETY: semid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: ds is a live semid_ds the kernel fills (semun holds its address).
    check(unsafe { libc::syscall(libc::SYS_semctl, id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) }, "semctl IPC_STAT")?;
    Ok(IpcStat { key: ds.sem_perm.__key, mode: u32::from(ds.sem_perm.mode), uid: ds.sem_perm.uid, gid: ds.sem_perm.gid, size: ds.sem_nsems as u64, nattch: 0 })
}

/// The values of the `n` semaphores of set `id` (`GETALL`).
pub fn sem_values(id: i32, n: usize) -> std::io::Result<Vec<u16>> {
    let mut v = vec![0u16; n];
    // SAFETY: v holds n u16s, as many as the set has.
    check(unsafe { libc::syscall(libc::SYS_semctl, id, 0, libc::GETALL, v.as_mut_ptr()) }, "semctl GETALL")?;
    Ok(v)
}

/// Sets the values of every semaphore of set `id` (`SETALL`); `values` has one per semaphore.
pub fn sem_set_values(id: i32, values: &[u16]) -> std::io::Result<()> {
    // SAFETY: values holds one u16 per semaphore of the set; the kernel only reads it.
    check(unsafe { libc::syscall(libc::SYS_semctl, id, 0, libc::SETALL, values.as_ptr()) }, "semctl SETALL")?;
    Ok(())
}

/// The PID of the last process that operated on semaphore `num` of set `id` (`GETPID`).
pub fn sem_last_pid(id: i32, num: i32) -> std::io::Result<i32> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_semctl, id, num, libc::GETPID, 0) }, "semctl GETPID").map(|r| r as i32)
}

/// `shmget(key, size, IPC_CREAT | IPC_EXCL | mode)`.
pub fn shm_create(key: i32, size: u64, mode: u32) -> std::io::Result<i32> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_shmget, key, size, libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32) }, "shmget").map(|r| r as i32)
}

/// `semget(key, n, IPC_CREAT | IPC_EXCL | mode)`.
pub fn sem_create(key: i32, n: usize, mode: u32) -> std::io::Result<i32> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_semget, key, n, libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32) }, "semget").map(|r| r as i32)
}

/// Removes segment `id` (`IPC_RMID`: at once, or when its last attachment goes).
pub fn shm_remove(id: i32) -> std::io::Result<()> {
    // SAFETY: integer arguments; IPC_RMID reads no buffer.
    check(unsafe { libc::syscall(libc::SYS_shmctl, id, libc::IPC_RMID, 0usize) }, "shmctl IPC_RMID")?;
    Ok(())
}

/// Removes semaphore set `id`.
pub fn sem_remove(id: i32) -> std::io::Result<()> {
    // SAFETY: integer arguments; IPC_RMID reads no buffer.
    check(unsafe { libc::syscall(libc::SYS_semctl, id, 0, libc::IPC_RMID, 0usize) }, "semctl IPC_RMID")?;
    Ok(())
}

/// Sets owner and mode of a segment (`IPC_SET`).
pub fn shm_set_owner(id: i32, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
    // SAFETY: shmid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    ds.shm_perm.uid = uid;
    ds.shm_perm.gid = gid;
    ds.shm_perm.mode = (mode & 0o777) as u16;
    // SAFETY: ds is a live shmid_ds the kernel reads.
    check(unsafe { libc::syscall(libc::SYS_shmctl, id, libc::IPC_SET, &mut ds as *mut libc::shmid_ds) }, "shmctl IPC_SET")?;
    Ok(())
}

/// Sets owner and mode of a semaphore set (`IPC_SET`).
pub fn sem_set_owner(id: i32, uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
    // SAFETY: semid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    ds.sem_perm.uid = uid;
    ds.sem_perm.gid = gid;
    ds.sem_perm.mode = (mode & 0o777) as u16;
    // SAFETY: ds is a live semid_ds the kernel reads (semun holds its address).
    check(unsafe { libc::syscall(libc::SYS_semctl, id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) }, "semctl IPC_SET")?;
    Ok(())
}

/// What `IPC_STAT` tells about a message queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgStat {
    /// Key, mode, owner (`size` is the byte limit `msg_qbytes`).
    pub perm: IpcStat,
    /// Messages queued.
    pub qnum: u64,
    /// Bytes queued.
    pub cbytes: u64,
    /// PIDs of the last sender and of the last receiver (0: none yet).
    pub lspid: i32,
    /// See `lspid`.
    pub lrpid: i32,
}

/// `msgctl(id, IPC_STAT)`.
pub fn msg_stat(id: i32) -> std::io::Result<MsgStat> {
    // SAFETY: msqid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: ds is a live msqid_ds the kernel fills.
    check(unsafe { libc::syscall(libc::SYS_msgctl, id, libc::IPC_STAT, &mut ds as *mut libc::msqid_ds) }, "msgctl IPC_STAT")?;
    let perm = IpcStat { key: ds.msg_perm.__key, mode: u32::from(ds.msg_perm.mode), uid: ds.msg_perm.uid, gid: ds.msg_perm.gid, size: ds.msg_qbytes, nattch: 0 };
    Ok(MsgStat { perm, qnum: ds.msg_qnum, cbytes: ds.__msg_cbytes, lspid: ds.msg_lspid, lrpid: ds.msg_lrpid })
}

/// `MSG_COPY` (`msgrcv` flag): copy the message at an index instead of taking it out.
const MSG_COPY: i32 = 0o40000;

/// A `struct msgbuf` of room for `max` bytes: the type, then the text.
fn msg_buffer(max: usize) -> Vec<u64> {
    vec![0u64; 1 + max.div_ceil(8)]
}

fn msg_parts(buf: &[u64], len: usize) -> (i64, Vec<u8>) {
    let bytes: Vec<u8> = buf[1..].iter().flat_map(|w| w.to_ne_bytes()).take(len).collect();
    (buf[0] as i64, bytes)
}

/// A copy of the message at `index` (0: the oldest) of queue `id`, which stays queued
/// (`MSG_COPY`; kernels built with `CONFIG_CHECKPOINT_RESTORE`, else `ENOSYS`), as its type and
/// bytes. `max` is the largest message the queue can hold (`/proc/sys/kernel/msgmax`).
pub fn msg_copy(id: i32, index: u64, max: usize) -> std::io::Result<(i64, Vec<u8>)> {
    let mut buf = msg_buffer(max);
    // SAFETY: buf holds a long and at least max bytes after it; the kernel writes at most max.
    let n = check(unsafe { libc::syscall(libc::SYS_msgrcv, id, buf.as_mut_ptr(), max, index, libc::IPC_NOWAIT | MSG_COPY) }, "msgrcv MSG_COPY")?;
    Ok(msg_parts(&buf, n as usize))
}

/// Takes the oldest message out of queue `id` without waiting, as its type and bytes.
pub fn msg_take(id: i32, max: usize) -> std::io::Result<(i64, Vec<u8>)> {
    let mut buf = msg_buffer(max);
    // SAFETY: buf holds a long and at least max bytes after it; the kernel writes at most max.
    let n = check(unsafe { libc::syscall(libc::SYS_msgrcv, id, buf.as_mut_ptr(), max, 0, libc::IPC_NOWAIT) }, "msgrcv")?;
    Ok(msg_parts(&buf, n as usize))
}

/// Queues a message of type `mtype` on queue `id` without waiting.
pub fn msg_send(id: i32, mtype: i64, data: &[u8]) -> std::io::Result<()> {
    let mut buf = msg_buffer(data.len());
    buf[0] = mtype as u64;
    for (i, chunk) in data.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        buf[1 + i] = u64::from_ne_bytes(w);
    }
    // SAFETY: buf holds a long and data.len() bytes after it; the kernel only reads them.
    check(unsafe { libc::syscall(libc::SYS_msgsnd, id, buf.as_ptr(), data.len(), libc::IPC_NOWAIT) }, "msgsnd")?;
    Ok(())
}

/// `msgget(key, IPC_CREAT | IPC_EXCL | mode)`.
pub fn msg_create(key: i32, mode: u32) -> std::io::Result<i32> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::syscall(libc::SYS_msgget, key, libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32) }, "msgget").map(|r| r as i32)
}

/// Removes queue `id` and the messages in it.
pub fn msg_remove(id: i32) -> std::io::Result<()> {
    // SAFETY: integer arguments; IPC_RMID reads no buffer.
    check(unsafe { libc::syscall(libc::SYS_msgctl, id, libc::IPC_RMID, 0usize) }, "msgctl IPC_RMID")?;
    Ok(())
}

/// Sets owner, mode and byte limit of a queue (`IPC_SET`; raising the limit above
/// `/proc/sys/kernel/msgmnb` needs `CAP_SYS_RESOURCE`).
pub fn msg_set(id: i32, uid: u32, gid: u32, mode: u32, qbytes: u64) -> std::io::Result<()> {
    // SAFETY: msqid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    ds.msg_perm.uid = uid;
    ds.msg_perm.gid = gid;
    ds.msg_perm.mode = (mode & 0o777) as u16;
    ds.msg_qbytes = qbytes as _;
    // SAFETY: ds is a live msqid_ds the kernel reads.
    check(unsafe { libc::syscall(libc::SYS_msgctl, id, libc::IPC_SET, &mut ds as *mut libc::msqid_ds) }, "msgctl IPC_SET")?;
    Ok(())
}
