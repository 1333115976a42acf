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
//! with `--restore-pgid` every process joins the group of its saved id. A session whose
//! controlling terminal is in the image (a pseudo-terminal) is always started again around its
//! leader, so that the leader can take the terminal back.
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
    /// The saved group `i32`, whose leader had ended: made again by a stand-in leader that the
    /// members' parent creates before them and ends once they have joined it.
    Standin(i32),
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
    /// For each process, the saved ids of the groups whose stand-in leaders it creates
    /// ([`Group::Standin`]).
    pub standins: Vec<Vec<i32>>,
}

fn exists_group(pgid: i32) -> bool {
    crest_ptrace::sys::kill(-pgid, 0).is_ok()
}

impl Plan {
    /// Plans the restart of `procs` (parents before children), from a `cr_restart` in group
    /// `my_pgid` and session `my_sid`.
    #[cfg(test)]
    pub fn new(procs: &[Process], restore_pgid: bool, restore_sid: bool, my_pgid: i32, my_sid: i32) -> Result<Plan, RestoreError> {
        Plan::keeping(procs, restore_pgid, restore_sid, my_pgid, my_sid, &[])
    }

    /// [`Plan::new`], where the leaders of `sessions` start their session again even when it is
    /// the topmost process's (their controlling terminal is in the image and comes back with
    /// the session).
    pub fn keeping(procs: &[Process], restore_pgid: bool, restore_sid: bool, my_pgid: i32, my_sid: i32, sessions: &[i32]) -> Result<Plan, RestoreError> {
        let n = procs.len();
        let index: HashMap<i32, usize> = procs.iter().enumerate().map(|(i, p)| (p.pid, i)).collect();
        let mut plan = Plan { children: vec![Vec::new(); n], top: Vec::new(), setsid: vec![false; n], group: vec![Group::Inherit; n], standins: vec![Vec::new(); n] };
        for (i, p) in procs.iter().enumerate() {
            match index.get(&p.ppid) {
                Some(&parent) if p.ppid != 0 && parent < i => plan.children[parent].push(i),
                _ => plan.top.push(i),
            }
        }
        let Some(&root) = plan.top.first() else { return Ok(plan) };
        let (root_sid, root_pgid) = (procs[root].sid, procs[root].pgid);
        for (i, p) in procs.iter().enumerate() {
            plan.setsid[i] = p.pid == p.sid && (restore_sid || p.sid != root_sid || sessions.contains(&p.sid));
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
                    plan.standin(procs, i, &index)?
                }
            } else if p.pgid == root_pgid && p.sid == root_sid && root_session_here {
                Group::Existing(my_pgid)
            } else if p.pgid == p.pid {
                Group::Own
            } else if let Some(&l) = index.get(&p.pgid) {
                Group::Leader(l)
            } else if p.pgid > 0 && p.sid != p.pid {
                plan.standin(procs, i, &index)?
            } else {
                Group::Inherit
            };
        }
        Ok(plan)
    }

    /// The group of process `i`, whose leader is not in the image: made by a stand-in leader
    /// created by `i`'s parent, which must be the parent of every member, in their session.
    fn standin(&mut self, procs: &[Process], i: usize, index: &HashMap<i32, usize>) -> Result<Group, RestoreError> {
        let p = &procs[i];
        let parent = index.get(&p.ppid).copied().filter(|&q| q < i && procs[q].sid == p.sid);
        let Some(parent) = parent.filter(|_| procs.iter().filter(|q| q.pgid == p.pgid).all(|q| q.ppid == p.ppid && q.sid == p.sid)) else {
            return Err(RestoreError::Refused(format!(
                "process {} was in process group {}, whose leader is not in the image, and the group's members are not all children of one process of the image in its session: the group cannot be made again",
                p.pid, p.pgid
            )));
        };
        if !self.standins[parent].contains(&p.pgid) {
            self.standins[parent].push(p.pgid);
        }
        Ok(Group::Standin(p.pgid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process record with only the ids that shape the plan.
    fn p(pid: i32, ppid: i32, pgid: i32, sid: i32) -> Process {
        Process { pid, ppid, pgid, sid, cwd: "/".into(), root: "/".into(), umask: 0o022, ..Default::default() }
    }

    /// cr_restart's own group and session in these tests (never a real one).
    const MINE: (i32, i32) = (900_001, 900_001);

    #[test]
    fn parents_fork_their_children_and_orphans_go_to_cr_restart() {
        // 10 -> 11 -> 12, and 20 whose parent (5) was not saved.
        let procs = [p(10, 1, 10, 10), p(11, 10, 10, 10), p(12, 11, 10, 10), p(20, 5, 10, 10)];
        let plan = Plan::new(&procs, false, false, MINE.0, MINE.1).expect("plan");
        assert_eq!(plan.top, vec![0, 3]);
        assert_eq!(plan.children, vec![vec![1], vec![2], vec![], vec![]]);
    }

    #[test]
    fn by_default_the_root_group_and_session_become_cr_restarts() {
        // A shell job: 10 leads group 10 in session 5 (the shell, not saved); 11 is in it too;
        // 12 leads a group of its own.
        let procs = [p(10, 5, 10, 5), p(11, 10, 10, 5), p(12, 10, 12, 5)];
        let plan = Plan::new(&procs, false, false, MINE.0, MINE.1).expect("plan");
        assert_eq!(plan.setsid, vec![false; 3]);
        assert_eq!(plan.group, vec![Group::Existing(MINE.0), Group::Existing(MINE.0), Group::Own]);
    }

    #[test]
    fn a_session_inside_the_image_is_started_again_around_its_leader() {
        // 10 (root) forks 11, which starts session 11 and forks 12 into it, in group 12.
        let procs = [p(10, 1, 10, 10), p(11, 10, 11, 11), p(12, 11, 12, 11), p(13, 12, 12, 11)];
        let plan = Plan::new(&procs, false, false, MINE.0, MINE.1).expect("plan");
        assert_eq!(plan.setsid, vec![false, true, false, false]);
        assert_eq!(plan.group, vec![Group::Existing(MINE.0), Group::Inherit, Group::Own, Group::Leader(2)]);
    }

    #[test]
    fn restore_sid_restarts_every_session_leader_and_restore_pgid_every_group() {
        let procs = [p(10, 1, 10, 10), p(11, 10, 10, 10), p(12, 10, 12, 10)];
        let plan = Plan::new(&procs, true, true, MINE.0, MINE.1).expect("plan");
        assert_eq!(plan.setsid, vec![true, false, false]);
        assert_eq!(plan.group, vec![Group::Inherit, Group::Leader(0), Group::Own]);
    }

    #[test]
    fn restore_sid_refuses_a_session_whose_leader_is_missing() {
        let procs = [p(10, 5, 10, 5), p(11, 10, 10, 5)];
        let err = Plan::new(&procs, false, true, MINE.0, MINE.1).err().expect("refused");
        assert!(err.to_string().contains("session 5, whose leader is not in the image"), "{err}");
    }

    #[test]
    fn restore_pgid_refuses_a_group_that_exists_nowhere() {
        // Group 899_999 has no leader in the image and no process on this machine, and its
        // members are a child and a grandchild: no one parent can make it for them.
        let procs = [p(10, 5, 10, 10), p(11, 10, 899_999, 10), p(12, 11, 899_999, 10)];
        let err = Plan::new(&procs, true, false, MINE.0, MINE.1).err().expect("refused");
        assert!(err.to_string().contains("process group 899999, whose leader is not in the image"), "{err}");
    }

    #[test]
    fn a_group_whose_leader_ended_is_made_by_a_stand_in_of_the_members_parent() {
        // 10 (root) has children 12 and 13 in group 11, whose leader 11 has ended.
        let procs = [p(10, 1, 10, 10), p(12, 10, 11, 10), p(13, 10, 11, 10)];
        for restore_pgid in [false, true] {
            let plan = Plan::new(&procs, restore_pgid, false, MINE.0, MINE.1).expect("plan");
            assert_eq!(plan.group[1..], [Group::Standin(11), Group::Standin(11)]);
            assert_eq!(plan.standins, vec![vec![11], vec![], vec![]]);
        }
    }

    #[test]
    fn a_root_session_with_its_terminal_in_the_image_is_started_again() {
        // 10 leads its session, whose controlling terminal is in the image; 11 is in its group.
        let procs = [p(10, 1, 10, 10), p(11, 10, 10, 10)];
        let plan = Plan::keeping(&procs, false, false, MINE.0, MINE.1, &[10]).expect("plan");
        assert_eq!(plan.setsid, vec![true, false]);
        assert_eq!(plan.group, vec![Group::Inherit, Group::Leader(0)]);
    }

    #[test]
    fn zombies_are_planned_like_the_others() {
        let mut z = p(11, 10, 10, 10);
        z.exit_status = Some(7 << 8);
        let procs = [p(10, 1, 10, 10), z];
        let plan = Plan::new(&procs, false, false, MINE.0, MINE.1).expect("plan");
        assert_eq!(plan.children, vec![vec![1], vec![]]);
        assert_eq!(plan.group[1], Group::Existing(MINE.0));
    }
}
