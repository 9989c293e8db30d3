//! A minimal in-memory reference store, used only to check that the conformance suite itself is consistent with
//! the contract (every case must pass against it). It is deliberately simple: one mutex around plain collections.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use rota_store::*;
use serde_json::Value;

#[derive(Default)]
struct State {
    next_id: i64,
    tasks: BTreeMap<i64, TaskRecord>,
    versions: Vec<TaskVersion>,
    runs: BTreeMap<i64, RunRecord>,
    attempts: BTreeMap<i64, AttemptRecord>,
    logs: Vec<LogLine>,
    nodes: BTreeMap<String, NodeRecord>,
    /// shard → (lease, held)
    leases: BTreeMap<u32, (Lease, bool)>,
    audit: BTreeMap<i64, AuditEntry>,
    tokens: BTreeMap<String, ApiTokenRecord>,
    bindings: BTreeMap<(SubjectKind, String, String), RoleBinding>,
}

impl State {
    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    fn check_fence(&self, fence: Option<Fence>) -> StoreResult<()> {
        if let Some(f) = fence {
            match self.leases.get(&f.shard) {
                Some((l, _)) if l.epoch == f.epoch => {}
                _ => return Err(StoreError::Fenced { shard: f.shard, epoch: f.epoch }),
            }
        }
        Ok(())
    }

    fn task_by_key(&self, ns: &str, name: &str) -> Option<&TaskRecord> {
        self.tasks.values().find(|t| t.namespace == ns && t.name == name)
    }

    fn insert_run(&mut self, run: NewRun, now: DateTime<Utc>) -> InsertRun {
        let t = tm(run.scheduled_at);
        if let Some(r) = self.runs.values().find(|r| r.task_id == run.task_id && r.scheduled_at == t) {
            return InsertRun::Duplicate(r.clone());
        }
        let id = self.id();
        let rec = RunRecord {
            id,
            task_id: run.task_id,
            namespace: run.namespace,
            name: run.name,
            task_version: run.task_version,
            shard: run.shard,
            scheduled_at: t,
            trigger: run.trigger,
            state: run.state,
            attempts: 0,
            next_attempt_at: run.next_attempt_at.map(tm),
            params: run.params,
            output: None,
            error: None,
            reason: run.reason,
            owner: None,
            created_at: tm(now),
            started_at: None,
            finished_at: None,
            updated_at: tm(now),
        };
        self.runs.insert(id, rec.clone());
        InsertRun::Inserted(rec)
    }
    /// The checks of `transition_run`, in the documented order: NotFound, Fenced, Conflict, InvalidTransition.
    fn check_transition(&self, t: &Transition) -> StoreResult<()> {
        let Some(r) = self.runs.get(&t.run_id) else { return Err(StoreError::not_found("run", t.run_id)) };
        self.check_fence(t.fence)?;
        if !t.from.contains(&r.state) {
            return Err(StoreError::conflict("run", t.run_id, "state changed"));
        }
        if !r.state.can_transition_to(t.to) {
            return Err(StoreError::InvalidTransition { run_id: t.run_id, from: r.state, to: t.to });
        }
        Ok(())
    }

    /// Applies a checked transition.
    fn apply_transition(&mut self, t: Transition) -> RunRecord {
        let r = self.runs.get_mut(&t.run_id).expect("checked");
        let p = t.patch;
        r.state = t.to;
        if let Some(v) = p.next_attempt_at {
            r.next_attempt_at = v.map(tm);
        }
        if let Some(v) = p.attempts {
            r.attempts = v;
        }
        if let Some(v) = p.output {
            r.output = Some(v);
        }
        if let Some(v) = p.error {
            r.error = Some(v);
        }
        if let Some(v) = p.reason {
            r.reason = Some(v);
        }
        if let Some(v) = p.owner {
            r.owner = v;
        }
        if let Some(v) = p.started_at {
            r.started_at = Some(tm(v));
        }
        if let Some(v) = p.finished_at {
            r.finished_at = Some(tm(v));
        }
        r.updated_at = tm(t.now);
        r.clone()
    }

    fn attempt_exists(&self, a: &NewAttempt) -> bool {
        self.attempts.values().any(|x| x.run_id == a.run_id && x.attempt == a.attempt && x.node == a.node)
    }

    fn insert_attempt(&mut self, a: NewAttempt) -> AttemptRecord {
        let id = self.id();
        let rec = AttemptRecord {
            id,
            run_id: a.run_id,
            attempt: a.attempt,
            node: a.node,
            state: AttemptState::Running,
            started_at: tm(a.started_at),
            deadline: a.deadline.map(tm),
            finished_at: None,
            output: None,
            error: None,
        };
        self.attempts.insert(id, rec.clone());
        rec
    }

    /// The checks of `finish_attempt`: NotFound, Conflict when already finished.
    fn check_finish(&self, attempt_id: i64) -> StoreResult<()> {
        match self.attempts.get(&attempt_id) {
            None => Err(StoreError::not_found("attempt", attempt_id)),
            Some(a) if a.state != AttemptState::Running => Err(StoreError::conflict("attempt", attempt_id, "finished")),
            Some(_) => Ok(()),
        }
    }

    fn apply_finish(&mut self, c: CompleteAttempt) -> AttemptRecord {
        let a = self.attempts.get_mut(&c.attempt_id).expect("checked");
        a.state = c.state;
        a.output = c.output;
        a.error = c.error;
        a.finished_at = Some(tm(c.now));
        a.clone()
    }
}

fn tm(t: DateTime<Utc>) -> DateTime<Utc> {
    truncate_millis(t)
}

fn ttl_from(now: DateTime<Utc>, ttl: std::time::Duration) -> DateTime<Utc> {
    tm(now + TimeDelta::from_std(ttl).unwrap())
}

fn page<T: Clone>(items: impl Iterator<Item = T>, id: impl Fn(&T) -> i64, req: &PageRequest) -> Page<T> {
    let limit = req.effective_limit() as usize;
    let mut v: Vec<T> = items.take(limit + 1).collect();
    let next = if v.len() > limit {
        v.truncate(limit);
        v.last().map(|x| cursor::encode_id(id(x)))
    } else {
        None
    };
    Page { items: v, next_cursor: next }
}

fn after(req: &PageRequest) -> StoreResult<Option<i64>> {
    req.cursor.as_deref().map(cursor::decode_id).transpose()
}

#[derive(Default)]
struct MemStore(Mutex<State>);

impl MemStore {
    fn s(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }
}

#[async_trait]
impl TaskStore for MemStore {
    async fn put_task(&self, w: TaskWrite, pre: Precondition, now: DateTime<Utc>) -> StoreResult<TaskRecord> {
        let mut s = self.s();
        let existing = s.task_by_key(&w.namespace, &w.name).cloned();
        let key = format!("{}/{}", w.namespace, w.name);
        match (&existing, pre) {
            (Some(_), Precondition::MustNotExist) => return Err(StoreError::conflict("task", key, "exists")),
            (None, Precondition::Version(_)) => return Err(StoreError::not_found("task", key)),
            (Some(e), Precondition::Version(v)) if e.version != v => {
                return Err(StoreError::conflict("task", key, "version"));
            }
            _ => {}
        }
        let rec = match existing {
            Some(e) => TaskRecord {
                version: e.version + 1,
                labels: w.labels,
                spec: w.spec,
                shard: w.shard,
                next_fire_at: w.next_fire_at.map(tm),
                updated_at: tm(now),
                ..e
            },
            None => {
                let id = s.id();
                TaskRecord {
                    id,
                    namespace: w.namespace,
                    name: w.name,
                    version: 1,
                    labels: w.labels,
                    spec: w.spec,
                    shard: w.shard,
                    next_fire_at: w.next_fire_at.map(tm),
                    paused: false,
                    created_at: tm(now),
                    updated_at: tm(now),
                }
            }
        };
        s.versions.push(TaskVersion {
            task_id: rec.id,
            version: rec.version,
            spec: rec.spec.clone(),
            created_at: tm(now),
        });
        s.tasks.insert(rec.id, rec.clone());
        Ok(rec)
    }

    async fn get_task(&self, namespace: &str, name: &str) -> StoreResult<Option<TaskRecord>> {
        Ok(self.s().task_by_key(namespace, name).cloned())
    }

    async fn get_task_by_id(&self, id: i64) -> StoreResult<Option<TaskRecord>> {
        Ok(self.s().tasks.get(&id).cloned())
    }

    async fn delete_task(&self, namespace: &str, name: &str) -> StoreResult<bool> {
        let mut s = self.s();
        let Some(id) = s.task_by_key(namespace, name).map(|t| t.id) else { return Ok(false) };
        s.tasks.remove(&id);
        s.versions.retain(|v| v.task_id != id);
        Ok(true)
    }

    async fn list_tasks(&self, f: &TaskFilter, req: &PageRequest) -> StoreResult<Page<TaskRecord>> {
        let after = after(req)?.unwrap_or(i64::MIN);
        let s = self.s();
        let it = s.tasks.range(after + 1..).map(|(_, t)| t).filter(|t| {
            f.namespace.as_ref().is_none_or(|n| &t.namespace == n)
                && f.paused.is_none_or(|p| t.paused == p)
                && f.labels.iter().all(|(k, v)| t.labels.get(k) == Some(v))
        });
        Ok(page(it.cloned(), |t| t.id, req))
    }

    async fn task_versions(&self, namespace: &str, name: &str) -> StoreResult<Vec<TaskVersion>> {
        let s = self.s();
        let Some(id) = s.task_by_key(namespace, name).map(|t| t.id) else { return Ok(vec![]) };
        Ok(s.versions.iter().filter(|v| v.task_id == id).cloned().collect())
    }

    async fn set_paused(
        &self,
        namespace: &str,
        name: &str,
        paused: bool,
        next_fire_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> StoreResult<TaskRecord> {
        let mut s = self.s();
        let Some(id) = s.task_by_key(namespace, name).map(|t| t.id) else {
            return Err(StoreError::not_found("task", format!("{namespace}/{name}")));
        };
        let t = s.tasks.get_mut(&id).unwrap();
        t.paused = paused;
        if !paused {
            t.next_fire_at = next_fire_at.map(tm);
        }
        t.updated_at = tm(now);
        Ok(t.clone())
    }

    async fn due_tasks(&self, shard: u32, until: DateTime<Utc>, limit: u32) -> StoreResult<Vec<DueTask>> {
        let s = self.s();
        let mut v: Vec<DueTask> = s
            .tasks
            .values()
            .filter(|t| t.shard == shard && !t.paused && t.next_fire_at.is_some_and(|n| n <= until))
            .map(|t| DueTask {
                task_id: t.id,
                namespace: t.namespace.clone(),
                name: t.name.clone(),
                version: t.version,
                next_fire_at: t.next_fire_at.unwrap(),
            })
            .collect();
        v.sort_by_key(|d| (d.next_fire_at, d.task_id));
        v.truncate(limit as usize);
        Ok(v)
    }

    async fn fire(&self, req: FireRequest) -> StoreResult<FireOutcome> {
        let mut s = self.s();
        s.check_fence(req.fence)?;
        let Some(t) = s.tasks.get(&req.task_id) else { return Err(StoreError::not_found("task", req.task_id)) };
        if t.paused {
            return Err(StoreError::conflict("task", req.task_id, "paused"));
        }
        if t.next_fire_at != req.expected_next_fire_at.map(tm) {
            return Err(StoreError::conflict("task", req.task_id, "next_fire_at moved"));
        }
        let mut out = FireOutcome { inserted: vec![], duplicates: vec![] };
        for r in req.runs {
            match s.insert_run(r, req.now) {
                InsertRun::Inserted(r) => out.inserted.push(r),
                InsertRun::Duplicate(r) => out.duplicates.push(r.scheduled_at),
            }
        }
        s.tasks.get_mut(&req.task_id).unwrap().next_fire_at = req.new_next_fire_at.map(tm);
        Ok(out)
    }
}

#[async_trait]
impl RunStore for MemStore {
    async fn insert_run(&self, run: NewRun, fence: Option<Fence>, now: DateTime<Utc>) -> StoreResult<InsertRun> {
        let mut s = self.s();
        s.check_fence(fence)?;
        Ok(s.insert_run(run, now))
    }

    async fn get_run(&self, id: i64) -> StoreResult<Option<RunRecord>> {
        Ok(self.s().runs.get(&id).cloned())
    }

    async fn transition_run(&self, t: Transition) -> StoreResult<RunRecord> {
        let mut s = self.s();
        s.check_transition(&t)?;
        Ok(s.apply_transition(t))
    }

    async fn list_runs(&self, f: &RunFilter, req: &PageRequest) -> StoreResult<Page<RunRecord>> {
        let before = after(req)?.unwrap_or(i64::MAX);
        let s = self.s();
        let it = s.runs.range(..before).rev().map(|(_, r)| r).filter(|r| {
            f.task_id.is_none_or(|id| r.task_id == id)
                && f.namespace.as_ref().is_none_or(|n| &r.namespace == n)
                && f.name.as_ref().is_none_or(|n| &r.name == n)
                && (f.states.is_empty() || f.states.contains(&r.state))
                && f.from.is_none_or(|from| r.scheduled_at >= from)
                && f.to.is_none_or(|to| r.scheduled_at < to)
        });
        Ok(page(it.cloned(), |r| r.id, req))
    }

    async fn pending_runs(&self, shard: u32, until: DateTime<Utc>, limit: u32) -> StoreResult<Vec<RunRecord>> {
        let s = self.s();
        Ok(s.runs
            .values()
            .filter(|r| {
                r.shard == shard && r.state == RunState::Scheduled && r.next_attempt_at.is_none_or(|n| n <= until)
            })
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn active_runs(&self, shard: u32, states: &[RunState], limit: u32) -> StoreResult<Vec<RunRecord>> {
        let s = self.s();
        Ok(s.runs
            .values()
            .filter(|r| r.shard == shard && states.contains(&r.state))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn active_runs_of_task(&self, task_id: i64) -> StoreResult<Vec<RunRecord>> {
        let s = self.s();
        Ok(s.runs.values().filter(|r| r.task_id == task_id && !r.state.is_terminal()).cloned().collect())
    }

    async fn insert_attempt(&self, a: NewAttempt) -> StoreResult<AttemptRecord> {
        let mut s = self.s();
        if s.attempt_exists(&a) {
            return Err(StoreError::conflict("attempt", a.run_id, "duplicate"));
        }
        Ok(s.insert_attempt(a))
    }

    async fn finish_attempt(
        &self,
        attempt_id: i64,
        state: AttemptState,
        output: Option<Value>,
        error: Option<String>,
        now: DateTime<Utc>,
    ) -> StoreResult<AttemptRecord> {
        let mut s = self.s();
        s.check_finish(attempt_id)?;
        Ok(s.apply_finish(CompleteAttempt { attempt_id, state, output, error, now }))
    }

    // The fused calls must be atomic (the trait's default implementations are two separate calls); the batch
    // versions keep their defaults (one fused call per item).
    async fn start_attempt(&self, t: Transition, a: NewAttempt) -> StoreResult<(RunRecord, AttemptRecord)> {
        let mut s = self.s();
        s.check_transition(&t)?;
        if s.attempt_exists(&a) {
            return Err(StoreError::conflict("attempt", a.run_id, "duplicate"));
        }
        Ok((s.apply_transition(t), s.insert_attempt(a)))
    }

    async fn complete_attempt(
        &self,
        c: CompleteAttempt,
        t: Option<Transition>,
    ) -> StoreResult<(Option<RunRecord>, AttemptRecord)> {
        let mut s = self.s();
        s.check_finish(c.attempt_id)?;
        if let Some(t) = &t {
            s.check_transition(t)?;
        }
        let attempt = s.apply_finish(c);
        Ok((t.map(|t| s.apply_transition(t)), attempt))
    }

    async fn list_attempts(&self, run_id: i64) -> StoreResult<Vec<AttemptRecord>> {
        let s = self.s();
        let mut v: Vec<AttemptRecord> = s.attempts.values().filter(|a| a.run_id == run_id).cloned().collect();
        v.sort_by_key(|a| (a.attempt, a.id));
        Ok(v)
    }

    async fn append_logs(&self, run_id: i64, stream: &str, lines: &[String], now: DateTime<Utc>) -> StoreResult<i64> {
        let mut s = self.s();
        let mut last = 0;
        for l in lines {
            last = s.id();
            s.logs.push(LogLine { seq: last, run_id, at: tm(now), stream: stream.into(), line: l.clone() });
        }
        Ok(last)
    }

    async fn read_logs(&self, run_id: i64, after_seq: i64, limit: u32) -> StoreResult<Vec<LogLine>> {
        let s = self.s();
        Ok(s.logs.iter().filter(|l| l.run_id == run_id && l.seq > after_seq).take(limit as usize).cloned().collect())
    }

    async fn prune_runs(&self, before: DateTime<Utc>, limit: u32) -> StoreResult<u64> {
        let mut s = self.s();
        let ids: Vec<i64> = s
            .runs
            .values()
            .filter(|r| r.state.is_terminal() && r.finished_at.is_some_and(|f| f < before))
            .take(limit as usize)
            .map(|r| r.id)
            .collect();
        for id in &ids {
            s.runs.remove(id);
            s.attempts.retain(|_, a| a.run_id != *id);
            s.logs.retain(|l| l.run_id != *id);
        }
        Ok(ids.len() as u64)
    }
}

#[async_trait]
impl NodeStore for MemStore {
    async fn register_node(
        &self,
        reg: NodeRegistration,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<NodeRecord> {
        let mut s = self.s();
        let registered_at = s.nodes.get(&reg.id).map_or(tm(now), |n| n.registered_at);
        let rec = NodeRecord {
            id: reg.id,
            kind: reg.kind,
            service: reg.service,
            address: reg.address,
            protocol: reg.protocol,
            labels: reg.labels,
            weight: reg.weight,
            capacity: reg.capacity,
            state: NodeState::Active,
            registered_at,
            last_heartbeat_at: tm(now),
            expires_at: ttl_from(now, ttl),
        };
        s.nodes.insert(rec.id.clone(), rec.clone());
        Ok(rec)
    }

    async fn heartbeat_node(&self, id: &str, ttl: std::time::Duration, now: DateTime<Utc>) -> StoreResult<NodeRecord> {
        let mut s = self.s();
        let Some(n) = s.nodes.get_mut(id) else { return Err(StoreError::not_found("node", id)) };
        n.last_heartbeat_at = tm(now);
        n.expires_at = ttl_from(now, ttl);
        Ok(n.clone())
    }

    async fn set_node_state(&self, id: &str, state: NodeState) -> StoreResult<NodeRecord> {
        let mut s = self.s();
        let Some(n) = s.nodes.get_mut(id) else { return Err(StoreError::not_found("node", id)) };
        n.state = state;
        Ok(n.clone())
    }

    async fn get_node(&self, id: &str) -> StoreResult<Option<NodeRecord>> {
        Ok(self.s().nodes.get(id).cloned())
    }

    async fn deregister_node(&self, id: &str) -> StoreResult<bool> {
        Ok(self.s().nodes.remove(id).is_some())
    }

    async fn list_nodes(&self, f: &NodeFilter) -> StoreResult<Vec<NodeRecord>> {
        let s = self.s();
        Ok(s.nodes
            .values()
            .filter(|n| {
                f.kind.is_none_or(|k| n.kind == k)
                    && f.service.as_ref().is_none_or(|sv| &n.service == sv)
                    && f.alive_at.is_none_or(|a| n.expires_at > a)
            })
            .cloned()
            .collect())
    }

    async fn prune_nodes(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut s = self.s();
        let n = s.nodes.len();
        s.nodes.retain(|_, n| n.expires_at >= before);
        Ok((n - s.nodes.len()) as u64)
    }
}

#[async_trait]
impl LeaseStore for MemStore {
    async fn acquire_lease(
        &self,
        shard: u32,
        owner: &str,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Lease>> {
        let mut s = self.s();
        let expires_at = ttl_from(now, ttl);
        let lease = match s.leases.get(&shard) {
            None => Lease { shard, owner: owner.into(), epoch: 1, expires_at },
            Some((l, held)) => {
                let live = *held && l.expires_at > now;
                if *held && l.owner == owner {
                    Lease { expires_at, ..l.clone() }
                } else if live {
                    return Ok(None);
                } else {
                    Lease { shard, owner: owner.into(), epoch: l.epoch + 1, expires_at }
                }
            }
        };
        s.leases.insert(shard, (lease.clone(), true));
        Ok(Some(lease))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: std::time::Duration, now: DateTime<Utc>) -> StoreResult<Lease> {
        let mut s = self.s();
        match s.leases.get_mut(&lease.shard) {
            Some((l, true)) if l.epoch == lease.epoch && l.owner == lease.owner => {
                l.expires_at = ttl_from(now, ttl);
                Ok(l.clone())
            }
            _ => Err(StoreError::Fenced { shard: lease.shard, epoch: lease.epoch }),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> StoreResult<()> {
        let mut s = self.s();
        match s.leases.get_mut(&lease.shard) {
            Some((l, held @ true)) if l.epoch == lease.epoch && l.owner == lease.owner => {
                *held = false;
                Ok(())
            }
            _ => Err(StoreError::Fenced { shard: lease.shard, epoch: lease.epoch }),
        }
    }

    async fn list_leases(&self) -> StoreResult<Vec<Lease>> {
        Ok(self.s().leases.values().map(|(l, _)| l.clone()).collect())
    }
}

#[async_trait]
impl AuditStore for MemStore {
    async fn append_audit(&self, e: NewAuditEntry) -> StoreResult<AuditEntry> {
        let mut s = self.s();
        let id = s.id();
        let rec = AuditEntry {
            id,
            at: tm(e.at),
            actor: e.actor,
            action: e.action,
            resource: e.resource,
            source: e.source,
            detail: e.detail,
        };
        s.audit.insert(id, rec.clone());
        Ok(rec)
    }

    async fn list_audit(&self, f: &AuditFilter, req: &PageRequest) -> StoreResult<Page<AuditEntry>> {
        let before = after(req)?.unwrap_or(i64::MAX);
        let s = self.s();
        let it = s.audit.range(..before).rev().map(|(_, e)| e).filter(|e| {
            f.actor.as_ref().is_none_or(|a| &e.actor == a)
                && f.action.as_ref().is_none_or(|a| &e.action == a)
                && f.resource_prefix.as_ref().is_none_or(|p| e.resource.starts_with(p.as_str()))
                && f.from.is_none_or(|from| e.at >= from)
                && f.to.is_none_or(|to| e.at < to)
        });
        Ok(page(it.cloned(), |e| e.id, req))
    }
}

#[async_trait]
impl AuthStore for MemStore {
    async fn create_token(&self, t: NewApiToken) -> StoreResult<ApiTokenRecord> {
        let mut s = self.s();
        if s.tokens.contains_key(&t.id) {
            return Err(StoreError::conflict("token", &t.id, "already exists"));
        }
        let rec = ApiTokenRecord {
            id: t.id,
            name: t.name,
            secret_hash: t.secret_hash,
            scope: t.scope,
            created_at: tm(t.created_at),
            created_by: t.created_by,
            expires_at: t.expires_at.map(tm),
            revoked_at: None,
        };
        s.tokens.insert(rec.id.clone(), rec.clone());
        Ok(rec)
    }

    async fn get_token(&self, id: &str) -> StoreResult<Option<ApiTokenRecord>> {
        Ok(self.s().tokens.get(id).cloned())
    }

    async fn list_tokens(&self, req: &PageRequest) -> StoreResult<Page<ApiTokenRecord>> {
        let after = match &req.cursor {
            None => None,
            Some(c) => {
                Some(c.strip_prefix('k').filter(|k| !k.is_empty()).map(str::to_string).ok_or_else(|| {
                    StoreError::InvalidArgument { field: "cursor", reason: "malformed cursor".into() }
                })?)
            }
        };
        let s = self.s();
        let limit = req.effective_limit() as usize;
        let mut items: Vec<ApiTokenRecord> = s
            .tokens
            .values()
            .filter(|t| after.as_ref().is_none_or(|a| t.id.as_str() > a.as_str()))
            .take(limit + 1)
            .cloned()
            .collect();
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|t| format!("k{}", t.id))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn revoke_token(&self, id: &str, now: DateTime<Utc>) -> StoreResult<ApiTokenRecord> {
        let mut s = self.s();
        let t = s.tokens.get_mut(id).ok_or_else(|| StoreError::not_found("token", id))?;
        if t.revoked_at.is_none() {
            t.revoked_at = Some(tm(now));
        }
        Ok(t.clone())
    }

    async fn put_role_binding(&self, b: RoleBinding) -> StoreResult<RoleBinding> {
        let b = RoleBinding { created_at: tm(b.created_at), ..b };
        self.s().bindings.insert((b.kind, b.subject.clone(), b.namespace.clone()), b.clone());
        Ok(b)
    }

    async fn list_role_bindings(&self, f: &RoleBindingFilter) -> StoreResult<Vec<RoleBinding>> {
        Ok(self
            .s()
            .bindings
            .values()
            .filter(|b| {
                f.kind.is_none_or(|k| b.kind == k)
                    && f.subject.as_ref().is_none_or(|s| &b.subject == s)
                    && f.namespace.as_ref().is_none_or(|n| &b.namespace == n)
            })
            .cloned()
            .collect())
    }

    async fn delete_role_binding(&self, kind: SubjectKind, subject: &str, namespace: &str) -> StoreResult<bool> {
        Ok(self.s().bindings.remove(&(kind, subject.to_string(), namespace.to_string())).is_some())
    }
}

#[async_trait]
impl Store for MemStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    fn backend_name(&self) -> &'static str {
        "memory"
    }

    fn supports_cluster(&self) -> bool {
        false
    }
}

rota_store::conformance_tests!(MemStore::default());

#[test]
fn cases_are_listed() {
    assert!(rota_store::conformance::CASES.len() > 50);
    assert!(rota_store::conformance::CASES.contains(&"race_fire"));
}
