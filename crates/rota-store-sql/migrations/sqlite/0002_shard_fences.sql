-- Fencing epochs in their own table (see the PostgreSQL migration for why).
CREATE TABLE IF NOT EXISTS shard_fences (
    shard INTEGER PRIMARY KEY,
    epoch INTEGER NOT NULL
);
INSERT OR IGNORE INTO shard_fences (shard, epoch) SELECT shard, epoch FROM shard_leases;
