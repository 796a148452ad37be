//! This daemon as one of several on a PostgreSQL store
//! (`blackboard::cluster`): it beats every [`BEAT`], takes or renews the
//! leader's lease for [`LEASE`], and the ticker asks [`Leadership`] before
//! the cluster's singleton duties (expiring leases and approvals, schedules,
//! lessons, zombie alerts, giving back the runs of daemons that are gone).
//! The leader does them through a fenced blackboard: if its lease ran out
//! meanwhile, their writes are refused.
//!
//! On SQLite files there is one daemon per home and no cluster: it does
//! every duty ([`Leadership::Alone`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::Daemon;
use crate::blackboard::cluster::{Beat, Cluster, SlotAnswer, SlotAsk};
use crate::blackboard::BbResult;
use crate::locks::Recover;
use crate::registry::StoreLocation;

/// How often a daemon says it is alive and renews (or tries to take) the lease.
pub const BEAT: Duration = Duration::from_secs(2);
/// How long a lease lasts unrenewed: a dead leader's successor takes over
/// within it (plus one beat).
pub const LEASE: Duration = Duration::from_secs(10);
/// A daemon not seen for this long is gone; its runs are given back.
pub const ALIVE: Duration = Duration::from_secs(10);

/// The kind of the place a run takes in the store before its claim.
const RUN_SLOT: &str = "run";
/// A place taken this recently is kept even if its run is not in this
/// daemon's list yet (its start is under way).
const SLOT_GRACE: Duration = Duration::from_secs(30);

/// Whether the cluster has room for one more run of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    /// A place is taken for the run: give it back with
    /// [`Membership::free_run_slot`] if the run does not start.
    Taken,
    /// The agent's runs across the cluster are at `max_per_agent`.
    AgentBusy { running: i64 },
    /// The cluster's runs are at `cluster.max_agents`.
    Full { running: i64, cap: u32 },
}

/// The kind of the place an LLM call to a limited provider takes while in
/// flight (`GatewayHooks::shared_flight`).
const FLIGHT_SLOT: &str = "flight";
/// A call's place older than this is dropped at a beat (its give-back
/// failed): no call through the gateway lasts this long.
const FLIGHT_GRACE: Duration = Duration::from_secs(30 * 60);

/// A call's place among the cluster's calls in flight to one provider;
/// given back when dropped.
pub struct FlightPlace {
    cluster: Cluster,
    key: String,
}

impl Drop for FlightPlace {
    fn drop(&mut self) {
        let (cluster, key) = (self.cluster.clone(), std::mem::take(&mut self.key));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = cluster.free_slot(FLIGHT_SLOT, &key).await {
                    tracing::warn!(error = %e, key, "cluster: cannot give back a call's place; a later beat does");
                }
            });
        }
    }
}

/// Takes a place for one call to `provider` if the alive daemons have
/// fewer than `limit` calls in flight to it; `None` when they have not.
pub async fn take_flight_place(
    cluster: &Cluster,
    provider: &str,
    limit: u32,
) -> BbResult<Option<FlightPlace>> {
    static NEXT: AtomicI64 = AtomicI64::new(1);
    let key = format!("{provider}/{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let ask = SlotAsk {
        kind: FLIGHT_SLOT,
        key: &key,
        group: provider,
        group_max: Some(i64::from(limit.max(1))),
        kind_max: None,
    };
    Ok(match cluster.take_slot(&ask, ALIVE).await? {
        SlotAnswer::Taken => Some(FlightPlace {
            cluster: cluster.clone(),
            key,
        }),
        _ => None,
    })
}

fn run_key(project: &str, task: &str, agent: &str) -> String {
    format!("{project}/{task}/{agent}")
}

/// Whether this daemon may judge other daemons gone: only after its own
/// beats have been written without a break for a whole liveness window
/// and a beat ([`ALIVE`] + [`BEAT`]). After the store was unreachable,
/// every daemon's last beat is old at once; the others get that window to
/// beat again before their runs are given back as lost (a run given back
/// while its process still works would be run a second time beside it).
#[derive(Debug, Default, Clone, Copy)]
pub struct Steadiness {
    since: Option<tokio::time::Instant>,
}

impl Steadiness {
    /// A beat was written (`ok`) or not, at `now`.
    pub fn record(&mut self, ok: bool, now: tokio::time::Instant) {
        match (ok, self.since) {
            (true, None) => self.since = Some(now),
            (true, Some(_)) => {}
            (false, _) => self.since = None,
        }
    }

    pub fn may_judge_others(&self, now: tokio::time::Instant) -> bool {
        self.since
            .is_some_and(|t| now.duration_since(t) >= ALIVE + BEAT)
    }
}

/// Who does the cluster's singleton duties, as this daemon sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Alone on its files: every duty is this daemon's.
    Alone,
    /// Holds the leader's lease at this epoch.
    Leader { id: String, epoch: i64 },
    /// Another daemon leads.
    Follower,
}

impl Leadership {
    pub fn leads(&self) -> bool {
        !matches!(self, Leadership::Follower)
    }
}

/// This daemon's membership.
#[derive(Debug)]
pub struct Membership {
    pub cluster: Cluster,
    pub host: String,
    /// The epoch of the lease it holds, 0 when it does not lead.
    epoch: AtomicI64,
    /// Why the last beat failed (the store unreachable), `None` after a
    /// beat that was written.
    failed: std::sync::Mutex<Option<String>>,
    /// Since when this daemon's beats have been written without a break.
    steady: std::sync::Mutex<Steadiness>,
    /// The cluster's daemons as of the last beat (status, dashboard).
    seen: std::sync::Mutex<Vec<crate::blackboard::cluster::DaemonSeen>>,
}

/// The host's name (`/proc/sys/kernel/hostname`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Joins the store's cluster when the blackboards are on PostgreSQL;
/// `Ok(None)` on files.
pub async fn join(d: &Daemon) -> Result<Option<Membership>, String> {
    let StoreLocation::Postgres(url) = d.store_location().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let host = host_name();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_millis());
    let id = format!("{host}:{}:{started}", std::process::id());
    let cluster = Cluster::join(&url, &id).await.map_err(|e| e.to_string())?;
    let m = Membership {
        cluster,
        host,
        epoch: AtomicI64::new(0),
        failed: std::sync::Mutex::new(None),
        steady: std::sync::Mutex::new(Steadiness::default()),
        seen: std::sync::Mutex::new(Vec::new()),
    };
    beat_once(d, &m).await;
    Ok(Some(m))
}

impl Membership {
    /// `store unreachable: …` while the last beat could not be written.
    pub fn store_problem(&self) -> Option<String> {
        self.failed
            .locked()
            .as_ref()
            .map(|e| format!("store unreachable: {e}; runs in flight go on, writes are retried"))
    }

    /// The runs of the other alive daemons per agent, as of their last
    /// beats (at most one beat old): `max_per_agent` holds across hosts.
    pub fn others_agent_runs(&self) -> Vec<(String, i64)> {
        let me = self.cluster.id();
        self.seen
            .locked()
            .iter()
            .filter(|d| d.alive && d.id != me)
            .flat_map(|d| d.agent_runs.clone())
            .collect()
    }

    /// Takes the cluster's place for a run of `agent` on `task`, if the
    /// alive daemons' runs leave room under `max_per_agent` (across every
    /// host) and `cluster.max_agents`. Asked just before the claim, so two
    /// daemons starting runs of one agent at once are counted one after
    /// the other.
    pub async fn take_run_slot(
        &self,
        project: &str,
        task: &str,
        agent: &str,
        max_per_agent: u32,
        max_agents: Option<u32>,
    ) -> BbResult<Room> {
        let key = run_key(project, task, agent);
        let ask = SlotAsk {
            kind: RUN_SLOT,
            key: &key,
            group: agent,
            group_max: Some(i64::from(max_per_agent)),
            kind_max: max_agents.map(i64::from),
        };
        let answer = self.cluster.take_slot(&ask, ALIVE).await?;
        tracing::debug!(key, ?answer, "cluster: run place asked");
        Ok(match answer {
            SlotAnswer::Taken => Room::Taken,
            SlotAnswer::GroupFull { held } => Room::AgentBusy { running: held },
            SlotAnswer::KindFull { held } => Room::Full {
                running: held,
                cap: max_agents.unwrap_or(0),
            },
        })
    }

    /// Gives back a run's place (the run ended, or did not start). Best
    /// effort: a place left behind goes at the next beat.
    pub async fn free_run_slot(&self, project: &str, task: &str, agent: &str) {
        let key = run_key(project, task, agent);
        if let Err(e) = self.cluster.free_slot(RUN_SLOT, &key).await {
            tracing::warn!(error = %e, key, "cluster: cannot give back a run's place; the next beat does");
        }
    }

    /// Whether this daemon's view of the others is to be trusted for
    /// giving back their runs ([`Steadiness`]).
    pub fn may_judge_others(&self) -> bool {
        self.steady
            .locked()
            .may_judge_others(tokio::time::Instant::now())
    }

    /// The cluster's daemons as of the last beat, alive ones first.
    pub fn daemons(&self) -> Vec<crate::blackboard::cluster::DaemonSeen> {
        self.seen.locked().clone()
    }

    pub fn leadership(&self) -> Leadership {
        match self.epoch.load(Ordering::Acquire) {
            0 => Leadership::Follower,
            epoch => Leadership::Leader {
                id: self.cluster.id().to_string(),
                epoch,
            },
        }
    }
}

/// One beat: alive, and the lease taken or renewed (or not).
async fn beat_once(d: &Daemon, m: &Membership) {
    let agents: Vec<String> = d.agents().agents.iter().map(|a| a.id.clone()).collect();
    let bind = d.config().server.bind.to_string();
    let running = d.runs();
    let mut agent_runs: Vec<(String, i64)> = Vec::new();
    for r in &running {
        match agent_runs.iter_mut().find(|(a, _)| *a == r.agent) {
            Some((_, n)) => *n += 1,
            None => agent_runs.push((r.agent.clone(), 1)),
        }
    }
    let beat = Beat {
        host: &m.host,
        pid: i64::from(std::process::id()),
        bind: &bind,
        agents: &agents,
        runs: running.len() as i64,
        agent_runs: &agent_runs,
    };
    let beat = m.cluster.beat(&beat).await;
    if let Err(e) = &beat {
        tracing::warn!(error = %e, "cluster: cannot record this daemon's beat");
    }
    // Places of runs that are over (a give-back that failed, a start that
    // never came) go; the places of runs in flight stay.
    let keys: Vec<String> = running
        .iter()
        .map(|r| run_key(&r.project, &r.task_id, &r.agent))
        .collect();
    if let Err(e) = m.cluster.keep_slots(RUN_SLOT, &keys, SLOT_GRACE).await {
        tracing::warn!(error = %e, "cluster: cannot tidy this daemon's run places");
    }
    if let Err(e) = m.cluster.keep_slots(FLIGHT_SLOT, &[], FLIGHT_GRACE).await {
        tracing::warn!(error = %e, "cluster: cannot tidy this daemon's call places");
    }
    // The run-time budgets another daemon changed.
    if let Some(budgets) = d.budgets() {
        if let Err(e) = budgets.adopt_shared_limits(&m.cluster).await {
            tracing::warn!(error = %e, "cluster: cannot read the cluster's run-time budgets");
        }
    }
    // Budget holds whose release was lost (no call lasts this long).
    if let Err(e) = m.cluster.tidy_budget_holds(FLIGHT_GRACE).await {
        tracing::warn!(error = %e, "cluster: cannot tidy this daemon's budget holds");
    }
    m.steady
        .locked()
        .record(beat.is_ok(), tokio::time::Instant::now());
    if beat.is_ok() {
        stop_runs_ended_elsewhere(d).await;
    }
    *m.failed.locked() = beat.err().map(|e| e.to_string());
    let was = m.epoch.load(Ordering::Acquire);
    let now = match m.cluster.lead(LEASE).await {
        Ok(epoch) => epoch.unwrap_or(0),
        Err(e) => {
            // Unknown: do not act as leader on a lease that may be gone.
            tracing::warn!(error = %e, "cluster: cannot renew or take the lease");
            0
        }
    };
    m.epoch.store(now, Ordering::Release);
    if let Ok(seen) = m.cluster.daemons(ALIVE).await {
        *m.seen.locked() = seen;
    }
    if now != was {
        if now != 0 {
            tracing::info!(
                epoch = now,
                daemon = m.cluster.id(),
                "cluster: this daemon leads"
            );
            d.wake();
        } else {
            tracing::info!(daemon = m.cluster.id(), "cluster: another daemon leads");
        }
    }
}

/// Stops this daemon's runs whose sessions another daemon ended (the
/// leader judged this daemon gone: its beats did not reach the store for a
/// liveness window) — their tasks went back and may be running elsewhere
/// already, and their `bb done` would be refused. Each run's process group
/// gets SIGTERM; the supervisor books the end as for any run.
async fn stop_runs_ended_elsewhere(d: &Daemon) {
    let now = crate::blackboard::Clock::now_ms(&crate::blackboard::SystemClock);
    for r in d.runs() {
        // A run's own end is booked by its supervisor a moment before it
        // leaves the list: only runs older than a beat are asked about.
        if r.started_at_ms > now - BEAT.as_millis() as i64 {
            continue;
        }
        let Some(bb) = d.projects().get(&r.project).and_then(|s| s.bb) else {
            continue;
        };
        let ended = match bb.session(&r.session_id).await {
            Ok(s) => s.ended_at.is_some(),
            Err(e) => {
                tracing::debug!(session = %r.session_id, error = %e, "cluster: cannot read a run's session");
                false
            }
        };
        if ended && crate::daemon::process::signal_group(r.pid, nix::sys::signal::Signal::SIGTERM) {
            tracing::warn!(
                project = %r.project,
                task = %r.task_id,
                session = %r.session_id,
                "cluster: another daemon ended this run's session (this daemon was judged gone); its process is stopped"
            );
        }
    }
}

/// The beat loop; on shutdown the daemon leaves (its lease ends at once).
pub async fn run(d: Daemon) {
    let Some(m) = d.membership() else { return };
    let mut stop = d.shutdown_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(BEAT) => beat_once(&d, m).await,
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
    }
    m.epoch.store(0, Ordering::Release);
    if let Err(e) = m.cluster.leave().await {
        tracing::warn!(error = %e, "cluster: cannot record this daemon's stop");
    }
}

/// Wake-ups from the other daemons: every committed write on the store
/// notifies channel `moziplus` (`Blackboard::commit`); this daemon's ticker
/// and event pump wake at once. The poll of both stays the fallback: a
/// notification lost while the connection was down costs at most one poll.
pub async fn listen(d: Daemon) {
    let Some(m) = d.membership() else { return };
    let mut stop = d.shutdown_signal();
    loop {
        let mut wakeups = match m.cluster.wakeups().await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: cannot listen for other daemons' writes; polling");
                tokio::select! {
                    _ = tokio::time::sleep(BEAT) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        loop {
            tokio::select! {
                n = wakeups.next() => match n {
                    Ok(_) => d.wake(),
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster: the listener's connection failed; listening again");
                        break;
                    }
                },
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daemon judges others gone only after a whole window of its own
    /// beats: not right after it joined, not right after the store came
    /// back, and not while its beats fail.
    #[tokio::test(start_paused = true)]
    async fn others_are_judged_only_after_a_window_of_steady_beats() {
        let mut s = Steadiness::default();
        let t0 = tokio::time::Instant::now();
        assert!(!s.may_judge_others(t0), "before any beat");
        s.record(true, t0);
        assert!(!s.may_judge_others(t0 + ALIVE), "one window after joining");
        s.record(true, t0 + BEAT);
        assert!(s.may_judge_others(t0 + ALIVE + BEAT));
        // The store goes away, and comes back 14 s later.
        let down = t0 + Duration::from_secs(30);
        s.record(false, down);
        assert!(!s.may_judge_others(down + BEAT), "while beats fail");
        let back = down + Duration::from_secs(14);
        s.record(true, back);
        assert!(
            !s.may_judge_others(back + BEAT),
            "right after the store came back every other daemon looks gone"
        );
        s.record(true, back + BEAT);
        assert!(!s.may_judge_others(back + ALIVE));
        assert!(s.may_judge_others(back + ALIVE + BEAT));
    }
}
