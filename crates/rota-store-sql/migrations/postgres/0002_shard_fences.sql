-- Fencing epochs in their own table. Fenced writes hold a shared lock on their shard's row here until they commit,
-- and a change of lease holder updates it (so a takeover waits for fenced writes in flight); lease renewals only
-- touch shard_leases, so they never queue behind fenced writes, nor fenced writes behind them.
CREATE TABLE IF NOT EXISTS shard_fences (
    shard BIGINT PRIMARY KEY,
    epoch BIGINT NOT NULL
);
INSERT INTO shard_fences (shard, epoch) SELECT shard, epoch FROM shard_leases ON CONFLICT (shard) DO NOTHING;
