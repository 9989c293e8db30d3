-- API tokens of the management API (only the SHA-256 of a secret is stored) and role bindings of OIDC subjects
-- and groups (see the PostgreSQL migration).
CREATE TABLE IF NOT EXISTS api_tokens (
    id          VARCHAR(64)  NOT NULL PRIMARY KEY,
    name        VARCHAR(255) NOT NULL,
    secret_hash VARCHAR(128) NOT NULL,
    scope       LONGTEXT     NOT NULL,
    created_at  BIGINT       NOT NULL,
    created_by  VARCHAR(255) NOT NULL,
    expires_at  BIGINT       NULL,
    revoked_at  BIGINT       NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
CREATE TABLE IF NOT EXISTS role_bindings (
    subject_kind VARCHAR(16)  NOT NULL,
    subject      VARCHAR(255) NOT NULL,
    namespace    VARCHAR(255) NOT NULL,
    role         VARCHAR(16)  NOT NULL,
    created_at   BIGINT       NOT NULL,
    created_by   VARCHAR(255) NOT NULL,
    PRIMARY KEY (subject_kind, subject, namespace),
    KEY role_bindings_namespace (namespace)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
