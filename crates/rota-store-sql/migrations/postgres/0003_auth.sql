-- API tokens of the management API (only the SHA-256 of a secret is stored) and role bindings of OIDC subjects
-- and groups. `scope` is JSON: {"kind": "user", "grants": [...]} or {"kind": "executor", "service": "..."}.
-- Keys compare byte-wise (COLLATE "C"), like every other backend.
CREATE TABLE IF NOT EXISTS api_tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT   NOT NULL,
    secret_hash TEXT   NOT NULL,
    scope       TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT   NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE TABLE IF NOT EXISTS role_bindings (
    subject_kind TEXT COLLATE "C" NOT NULL,
    subject      TEXT COLLATE "C" NOT NULL,
    namespace    TEXT COLLATE "C" NOT NULL,
    role         TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT   NOT NULL,
    PRIMARY KEY (subject_kind, subject, namespace)
);
CREATE INDEX IF NOT EXISTS role_bindings_namespace ON role_bindings (namespace);
