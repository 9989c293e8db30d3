-- Fencing epochs in their own table (see the PostgreSQL migration for why).
CREATE TABLE IF NOT EXISTS shard_fences (
    shard BIGINT NOT NULL PRIMARY KEY,
    epoch BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;
INSERT IGNORE INTO shard_fences (shard, epoch) SELECT shard, epoch FROM shard_leases;
