-- Rota schema, version 1 (MySQL 8 / MariaDB 10.6+, InnoDB, utf8mb4). Instants are BIGINT milliseconds since the
-- Unix epoch; JSON is LONGTEXT. Text keys use the binary, no-pad collation so that comparisons are exact (no
-- case folding, no trailing-space padding), like SQLite and PostgreSQL (on MySQL 8 the migration runner replaces
-- MariaDB's utf8mb4_nopad_bin by the equivalent utf8mb4_0900_bin). `tasks_due` covers the due query (no
-- clustered-index lookups), in (next_fire_at, id) order within a shard.
-- MySQL DDL is not transactional: every statement is idempotent so a half-applied migration can be re-run.

CREATE TABLE IF NOT EXISTS tasks (
    id           BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    namespace    VARCHAR(255) NOT NULL,
    name         VARCHAR(255) NOT NULL,
    version      BIGINT       NOT NULL,
    labels       LONGTEXT     NOT NULL,
    spec         LONGTEXT     NOT NULL,
    shard        BIGINT       NOT NULL,
    next_fire_at BIGINT       NULL,
    paused       BOOLEAN      NOT NULL DEFAULT FALSE,
    created_at   BIGINT       NOT NULL,
    updated_at   BIGINT       NOT NULL,
    UNIQUE KEY tasks_namespace_name (namespace, name),
    KEY tasks_due (shard, paused, next_fire_at, id, namespace, name, version),
    KEY tasks_namespace (namespace, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS task_labels (
    task_id     BIGINT       NOT NULL,
    label_key   VARCHAR(320) NOT NULL,
    label_value VARCHAR(255) NOT NULL,
    PRIMARY KEY (task_id, label_key),
    KEY task_labels_kv (label_key, label_value, task_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS task_versions (
    task_id    BIGINT   NOT NULL,
    version    BIGINT   NOT NULL,
    spec       LONGTEXT NOT NULL,
    created_at BIGINT   NOT NULL,
    PRIMARY KEY (task_id, version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS runs (
    id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    task_id         BIGINT       NOT NULL,
    namespace       VARCHAR(255) NOT NULL,
    name            VARCHAR(255) NOT NULL,
    task_version    BIGINT       NOT NULL,
    shard           BIGINT       NOT NULL,
    scheduled_at    BIGINT       NOT NULL,
    trigger_kind    VARCHAR(32)  NOT NULL,
    state           VARCHAR(32)  NOT NULL,
    attempts        BIGINT       NOT NULL DEFAULT 0,
    next_attempt_at BIGINT       NULL,
    params          LONGTEXT     NOT NULL,
    output          LONGTEXT     NULL,
    error           LONGTEXT     NULL,
    reason          LONGTEXT     NULL,
    owner           VARCHAR(255) NULL,
    created_at      BIGINT       NOT NULL,
    started_at      BIGINT       NULL,
    finished_at     BIGINT       NULL,
    updated_at      BIGINT       NOT NULL,
    UNIQUE KEY runs_task_scheduled (task_id, scheduled_at),
    KEY runs_task (task_id, id),
    KEY runs_name (namespace, name, id),
    KEY runs_state (state, id),
    KEY runs_shard_state (shard, state, id),
    KEY runs_state_task (state, task_id, id),
    KEY runs_scheduled (scheduled_at),
    KEY runs_finished (finished_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS attempts (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    run_id      BIGINT       NOT NULL,
    attempt     BIGINT       NOT NULL,
    node        VARCHAR(255) NOT NULL,
    state       VARCHAR(32)  NOT NULL,
    started_at  BIGINT       NOT NULL,
    deadline    BIGINT       NULL,
    finished_at BIGINT       NULL,
    output      LONGTEXT     NULL,
    error       LONGTEXT     NULL,
    UNIQUE KEY attempts_run_attempt_node (run_id, attempt, node)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS run_logs (
    seq       BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    run_id    BIGINT      NOT NULL,
    logged_at BIGINT      NOT NULL,
    stream    VARCHAR(64) NOT NULL,
    line      LONGTEXT    NOT NULL,
    KEY run_logs_run (run_id, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS nodes (
    id                VARCHAR(255)  NOT NULL PRIMARY KEY,
    kind              VARCHAR(32)   NOT NULL,
    service           VARCHAR(255)  NOT NULL,
    address           VARCHAR(1024) NOT NULL,
    protocol          VARCHAR(64)   NOT NULL,
    labels            LONGTEXT      NOT NULL,
    weight            BIGINT        NOT NULL,
    capacity          BIGINT        NOT NULL,
    state             VARCHAR(32)   NOT NULL,
    registered_at     BIGINT        NOT NULL,
    last_heartbeat_at BIGINT        NOT NULL,
    expires_at        BIGINT        NOT NULL,
    KEY nodes_service (kind, service, id),
    KEY nodes_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS shard_leases (
    shard      BIGINT       NOT NULL PRIMARY KEY,
    owner      VARCHAR(255) NOT NULL,
    epoch      BIGINT       NOT NULL,
    expires_at BIGINT       NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS audit_log (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    occurred_at BIGINT       NOT NULL,
    actor       VARCHAR(255) NOT NULL,
    action      VARCHAR(255) NOT NULL,
    resource    VARCHAR(512) NOT NULL,
    source      VARCHAR(255) NULL,
    detail      LONGTEXT     NOT NULL,
    KEY audit_actor (actor, id),
    KEY audit_action (action, id),
    KEY audit_resource (resource, id),
    KEY audit_occurred (occurred_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
