-- Rota schema, version 1 (SQLite). Instants are INTEGER milliseconds since the Unix epoch; JSON is TEXT.
-- Every index on a table implicitly ends with the rowid (= id).

CREATE TABLE IF NOT EXISTS tasks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace    TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    labels       TEXT    NOT NULL,
    spec         TEXT    NOT NULL,
    shard        INTEGER NOT NULL,
    next_fire_at INTEGER,
    paused       BOOLEAN NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (namespace, name)
);
-- Covering: the due scan reads only this index, in (next_fire_at, id) order, and stops after `limit` entries.
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (shard, paused, next_fire_at, id, namespace, name, version);
CREATE INDEX IF NOT EXISTS tasks_namespace ON tasks (namespace);

CREATE TABLE IF NOT EXISTS task_labels (
    task_id     INTEGER NOT NULL,
    label_key   TEXT    NOT NULL,
    label_value TEXT    NOT NULL,
    PRIMARY KEY (task_id, label_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS task_labels_kv ON task_labels (label_key, label_value, task_id);

CREATE TABLE IF NOT EXISTS task_versions (
    task_id    INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    spec       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, version)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id         INTEGER NOT NULL,
    namespace       TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    task_version    INTEGER NOT NULL,
    shard           INTEGER NOT NULL,
    scheduled_at    INTEGER NOT NULL,
    trigger_kind    TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    params          TEXT    NOT NULL,
    output          TEXT,
    error           TEXT,
    reason          TEXT,
    owner           TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    updated_at      INTEGER NOT NULL,
    UNIQUE (task_id, scheduled_at)
);
CREATE INDEX IF NOT EXISTS runs_task ON runs (task_id);
CREATE INDEX IF NOT EXISTS runs_name ON runs (namespace, name);
CREATE INDEX IF NOT EXISTS runs_state ON runs (state);
CREATE INDEX IF NOT EXISTS runs_shard_state ON runs (shard, state);
CREATE INDEX IF NOT EXISTS runs_state_task ON runs (state, task_id);
CREATE INDEX IF NOT EXISTS runs_scheduled ON runs (scheduled_at);
CREATE INDEX IF NOT EXISTS runs_finished ON runs (finished_at);

CREATE TABLE IF NOT EXISTS attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    node        TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    deadline    INTEGER,
    finished_at INTEGER,
    output      TEXT,
    error       TEXT,
    UNIQUE (run_id, attempt, node)
);

CREATE TABLE IF NOT EXISTS run_logs (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id    INTEGER NOT NULL,
    logged_at INTEGER NOT NULL,
    stream    TEXT    NOT NULL,
    line      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS run_logs_run ON run_logs (run_id);

CREATE TABLE IF NOT EXISTS nodes (
    id                TEXT    PRIMARY KEY,
    kind              TEXT    NOT NULL,
    service           TEXT    NOT NULL,
    address           TEXT    NOT NULL,
    protocol          TEXT    NOT NULL,
    labels            TEXT    NOT NULL,
    weight            INTEGER NOT NULL,
    capacity          INTEGER NOT NULL,
    state             TEXT    NOT NULL,
    registered_at     INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_service ON nodes (kind, service);
CREATE INDEX IF NOT EXISTS nodes_expires ON nodes (expires_at);

CREATE TABLE IF NOT EXISTS shard_leases (
    shard      INTEGER PRIMARY KEY,
    owner      TEXT    NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    occurred_at INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    resource    TEXT    NOT NULL,
    source      TEXT,
    detail      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_actor ON audit_log (actor);
CREATE INDEX IF NOT EXISTS audit_action ON audit_log (action);
CREATE INDEX IF NOT EXISTS audit_resource ON audit_log (resource);
CREATE INDEX IF NOT EXISTS audit_occurred ON audit_log (occurred_at);
