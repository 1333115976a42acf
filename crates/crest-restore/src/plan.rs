//! The shape of a restart: which husk forks which, which process starts a session, which
//! process group each joins.
//!
//! Parents create their children's husks, so the saved parent and child links come back. A
//! process whose parent is not in the image is a child of `cr_restart`.
//!
//! Sessions and groups follow BLCR: by default the processes join `cr_restart`'s process group
//! and session in place of the saved root's; other groups and sessions whose leader is in the
//! image are recreated around the leader's new PID. With `--restore-sid`, every session leader
//! of the image starts its session again (with its saved PID, which is then the session id);
//! with `--restore-pgid` every process joins the group of its saved id.
use std::collections::HashMap;

use crest_image::Process;

use crate::RestoreError;

/// Which process group a process joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// The one it inherits from its parent.
    Inherit,
    /// A group of its own (it is the leader).
    Own,
    /// The group led by process `usize` of the image.
    Leader(usize),
    /// An existing group: `cr_restart`'s, or one outside the image.
    Existing(i32),
}

/// The plan.
pub(crate) struct Plan {
    /// Indices of each process's children in the image.
    pub children: Vec<Vec<usize>>,
    /// Processes that are children of `cr_restart`.
    pub top: Vec<usize>,
    /// Starts a new session.
    pub setsid: Vec<bool>,
    /// Group to join.
    pub group: Vec<Group>,
}

fn exists_group(pgid: i32) -> bool {
    crest_ptrace::sys::kill(-pgid, 0).is_ok()
}

impl Plan {
    /// Plans the restart of `procs` (parents before children), from a `cr_restart` in group
    /// `my_pgid` and session `my_sid`.
    pub fn new(procs: &[Process], restore_pgid: bool, restore_sid: bool, my_pgid: i32, my_sid: i32) -> Result<Plan, RestoreError> {
        let n = procs.len();
        let index: HashMap<i32, usize> = procs.iter().enumerate().map(|(i, p)| (p.pid, i)).collect();
        let mut plan = Plan { children: vec![Vec::new(); n], top: Vec::new(), setsid: vec![false; n], group: vec![Group::Inherit; n] };
        for (i, p) in procs.iter().enumerate() {
            match index.get(&p.ppid) {
                Some(&parent) if p.ppid != 0 && parent < i => plan.children[parent].push(i),
                _ => plan.top.push(i),
            }
        }
        let Some(&root) = plan.top.first() else { return Ok(plan) };
        let (root_sid, root_pgid) = (procs[root].sid, procs[root].pgid);
        for (i, p) in procs.iter().enumerate() {
            plan.setsid[i] = p.pid == p.sid && (restore_sid || p.sid != root_sid);
        }
        // The root's session is cr_restart's unless its leader starts it again.
        let root_session_here = !index.get(&root_sid).is_some_and(|&l| plan.setsid[l]);
        for (i, p) in procs.iter().enumerate() {
            let leads_session = p.pid == p.sid;
            if restore_sid && !leads_session && !index.contains_key(&p.sid) && p.sid != my_sid {
                return Err(RestoreError::Refused(format!("process {} was in session {}, whose leader is not in the image: it cannot be restored (restart without --restore-sid)", p.pid, p.sid)));
            }
            plan.group[i] = if plan.setsid[i] {
                Group::Inherit // setsid made it the leader of a group of its own
            } else if restore_pgid {
                if p.pgid == p.pid {
                    Group::Own
                } else if let Some(&l) = index.get(&p.pgid) {
                    Group::Leader(l)
                } else if p.pgid == my_pgid || exists_group(p.pgid) {
                    Group::Existing(p.pgid)
                } else {
                    return Err(RestoreError::Refused(format!(
                        "process {} was in process group {}, whose leader is not in the image: it cannot be restored (restart without --restore-pgid)",
                        p.pid, p.pgid
                    )));
                }
            } else if p.pgid == root_pgid && p.sid == root_sid && root_session_here {
                Group::Existing(my_pgid)
            } else if p.pgid == p.pid {
                Group::Own
            } else if let Some(&l) = index.get(&p.pgid) {
                Group::Leader(l)
            } else {
                Group::Inherit
            };
        }
        Ok(plan)
    }
}
