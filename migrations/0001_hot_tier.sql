-- 0001: the hot tier of flows, the manifest of exported Parquet files, the
-- capture counters over time, and the store's own small state.
--
-- Column names are the event's own (docs/architecture.md), spelled exactly as
-- in JSON, Arrow and Parquet. Timestamps are INTEGER nanoseconds since the
-- epoch, UTC. Migrations are append-only: never edit this file, add 0002_...

-- The table is clustered on time: its primary key (timestamp, id) is the
-- index on timestamp, so a time range is one sequential walk of one b-tree
-- (reads, the export, and the export's delete), and an insert touches one
-- b-tree, not a table and an index.
--
-- `id` breaks ties between flows of the same nanosecond and orders rows by
-- commit: each write transaction takes the next ids from flow_ids. An
-- export takes the rows of a time window up to one id, writes them to
-- Parquet, and deletes exactly those rows in the transaction that records the
-- file, whatever the capture commits meanwhile (with larger ids).
CREATE TABLE flows (
    timestamp INTEGER NOT NULL,
    id INTEGER NOT NULL,
    connectionDirection TEXT NOT NULL,
    srcIP TEXT NOT NULL,
    dstIP TEXT NOT NULL,
    srcPort INTEGER NOT NULL,
    dstPort INTEGER NOT NULL,
    -- JSON arrays of strings: '[]', '["a.example","b.example"]'.
    srcDomains TEXT NOT NULL DEFAULT '[]',
    dstDomains TEXT NOT NULL DEFAULT '[]',
    hostName TEXT NOT NULL,
    -- A u64 stored as the i64 with the same bits.
    cgroupId INTEGER NOT NULL,
    PRIMARY KEY (timestamp, id)
) WITHOUT ROWID;

-- The next flow id; ids are never reused.
CREATE TABLE flow_ids (next INTEGER NOT NULL);
INSERT INTO flow_ids (next) VALUES (1);

-- The manifest: a Parquet file is part of the cold tier if and only if it
-- is listed here with state 'complete'. Files under flows/ that are not
-- listed are leftovers of a crash and are deleted on start.
CREATE TABLE exports (
    id INTEGER PRIMARY KEY,
    tableName TEXT NOT NULL,
    -- Relative to the data directory, e.g.
    -- flows/date=2026-11-28/hour=07/part-1764313200000000000-0.parquet
    path TEXT NOT NULL UNIQUE,
    -- Start of the file's hourly partition, UTC ns.
    partitionStart INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    minTimestamp INTEGER NOT NULL,
    maxTimestamp INTEGER NOT NULL,
    exportedAt INTEGER NOT NULL,
    -- 'quarantined': found corrupt, moved to quarantine/; 'missing': gone.
    state TEXT NOT NULL DEFAULT 'complete' CHECK (state IN ('complete', 'quarantined', 'missing')),
    note TEXT
);
CREATE INDEX exports_by_time ON exports (tableName, state, minTimestamp);

-- Capture counters over time: each capture process (session, its start in
-- UTC ns) adds a row of its cumulative counters every few seconds and when
-- it stops. More counters: new columns in a later migration, or named
-- entries in the JSON object `counters`.
CREATE TABLE capture_stats (
    time INTEGER NOT NULL,
    session INTEGER NOT NULL,
    -- Records the kernel delivered, and lost (ring buffer full).
    events INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    -- Rows the store committed, rows it could not store (loss), and failed
    -- write attempts.
    rowsStored INTEGER NOT NULL DEFAULT 0,
    rowsNotStored INTEGER NOT NULL DEFAULT 0,
    storeFailures INTEGER NOT NULL DEFAULT 0,
    counters TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (session, time)
);

-- Small facts about the store itself (last export run, its error).
CREATE TABLE store_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
