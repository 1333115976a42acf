//! SysV IPC objects used by the processes of an image: shared memory segments and semaphore
//! sets.
//!
//! Dump ([`dump`]): the segments the processes have attached (their mappings name the shmid),
//! and the semaphore sets that one of the processes operated on last (`GETPID` of any of its
//! semaphores), with their values, from `/proc/sysvipc` and `IPC_STAT`. Segment contents are
//! saved with the mappings ([`crate::memory`]).
//!
//! Restore ([`restore`], in `cr_restart` before any process exists): each object gets back its
//! id (through `/proc/sys/kernel/{shm,sem}_next_id`, which needs `CAP_SYS_ADMIN`) and key, so
//! ids kept in the processes' memory stay valid. An object still there with the same id and
//! key (the original processes were killed, the object outlived them) is used again: a
//! semaphore set gets its saved values, a segment its saved pages, if no process has it
//! attached. [`finish`] removes again the segments that had been removed (`IPC_RMID`) at the
//! checkpoint, once every process has attached them.
use std::collections::HashSet;

use crest_image::{IpcKind, IpcObject, Process, VmaBacking};
use crest_ptrace::ipc;

use crate::KindError;

/// `SHM_DEST`: a removed segment that lives on while attached.
const SHM_DEST: u32 = 0o1000;

/// The SysV objects the processes `procs` use.
pub fn dump(procs: &[Process]) -> Result<Vec<IpcObject>, KindError> {
    let pids: HashSet<i32> = procs.iter().map(|p| p.pid).collect();
    let mut out = Vec::new();
    let mut shm_ids: Vec<i32> = procs.iter().flat_map(|p| &p.vmas).filter_map(|v| if let VmaBacking::SysvShm { id, .. } = v.backing { Some(id) } else { None }).collect();
    shm_ids.sort_unstable();
    shm_ids.dedup();
    for id in shm_ids {
        let st = ipc::shm_stat(id).map_err(|e| KindError::io(format!("SysV shared memory {id}"), e))?;
        out.push(IpcObject { key: st.key, id, mode: st.mode & 0o777, uid: st.uid, gid: st.gid, kind: IpcKind::Shm { size: st.size, removed: st.mode & SHM_DEST != 0 } });
    }
    let table = std::fs::read_to_string("/proc/sysvipc/sem").map_err(|e| KindError::io("reading /proc/sysvipc/sem", e))?;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(Ok(id)), Some(Ok(n))) = (f.get(1).map(|s| s.parse::<i32>()), f.get(3).map(|s| s.parse::<usize>())) else { continue };
        // A set that is gone by now, or that this user may not read, is not theirs.
        let Ok(last) = (0..n as i32).map(|i| ipc::sem_last_pid(id, i)).collect::<Result<Vec<i32>, _>>() else { continue };
        if !last.iter().any(|p| pids.contains(p)) {
            continue;
        }
        let st = ipc::sem_stat(id).map_err(|e| KindError::io(format!("SysV semaphore set {id}"), e))?;
        let values = ipc::sem_values(id, n).map_err(|e| KindError::io(format!("SysV semaphore set {id}"), e))?;
        out.push(IpcObject { key: st.key, id, mode: st.mode & 0o777, uid: st.uid, gid: st.gid, kind: IpcKind::Sem { values } });
    }
    Ok(out)
}

/// Writes `id` into `/proc/sys/kernel/NAME` so that the next object created gets that id.
fn next_id(name: &str, id: i32) -> Result<(), KindError> {
    let path = format!("/proc/sys/kernel/{name}");
    std::fs::write(&path, id.to_string()).map_err(|e| KindError::io(format!("choosing SysV id {id} ({path}; needs CAP_SYS_ADMIN)"), e))
}

/// Recreates (or takes back) every object of `objs`, with its id.
pub fn restore(objs: &[IpcObject]) -> Result<(), KindError> {
    for o in objs {
        let id = o.id;
        match &o.kind {
            IpcKind::Shm { size, .. } => {
                let what = format!("SysV shared memory {id} (key {:#x})", o.key);
                match ipc::shm_stat(id) {
                    Ok(st) => {
                        if st.key != o.key || st.size != *size {
                            return Err(KindError::Mismatch(format!("{what}: id {id} is taken by another segment (key {:#x}, {} bytes)", st.key, st.size)));
                        }
                        if st.nattch > 0 {
                            return Err(KindError::Mismatch(format!("{what}: still attached by {} processes (is the checkpointed job still running?)", st.nattch)));
                        }
                    }
                    Err(_) => {
                        next_id("shm_next_id", id)?;
                        let got = ipc::shm_create(o.key, *size, o.mode).map_err(|e| KindError::io(format!("{what}: creating it"), e))?;
                        if got != id {
                            let _ = ipc::shm_remove(got);
                            return Err(KindError::Mismatch(format!("{what}: created with id {got}, not {id}")));
                        }
                        ipc::shm_set_owner(id, o.uid, o.gid, o.mode).map_err(|e| KindError::io(format!("{what}: setting its owner"), e))?;
                    }
                }
            }
            IpcKind::Sem { values } => {
                let what = format!("SysV semaphore set {id} (key {:#x})", o.key);
                match ipc::sem_stat(id) {
                    Ok(st) if st.key != o.key || st.size != values.len() as u64 => {
                        return Err(KindError::Mismatch(format!("{what}: id {id} is taken by another set (key {:#x}, {} semaphores)", st.key, st.size)));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        next_id("sem_next_id", id)?;
                        let got = ipc::sem_create(o.key, values.len(), o.mode).map_err(|e| KindError::io(format!("{what}: creating it"), e))?;
                        if got != id {
                            let _ = ipc::sem_remove(got);
                            return Err(KindError::Mismatch(format!("{what}: created with id {got}, not {id}")));
                        }
                        ipc::sem_set_owner(id, o.uid, o.gid, o.mode).map_err(|e| KindError::io(format!("{what}: setting its owner"), e))?;
                    }
                }
                ipc::sem_set_values(id, values).map_err(|e| KindError::io(format!("{what}: setting its values"), e))?;
            }
        }
    }
    Ok(())
}

/// Once every process has attached its segments: removes those removed at the checkpoint.
pub fn finish(objs: &[IpcObject]) -> Result<(), KindError> {
    for o in objs {
        if let IpcKind::Shm { removed: true, .. } = o.kind {
            ipc::shm_remove(o.id).map_err(|e| KindError::io(format!("SysV shared memory {}: removing it again", o.id), e))?;
        }
    }
    Ok(())
}
