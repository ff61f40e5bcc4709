-- 0003: the hot tier keeps each committed batch of events as ONE row, an
-- Arrow IPC stream with compressed buffers, instead of one row per flow.
--
-- Why: a row per flow cost ~150 bytes and ~1 µs of SQLite work per flow to
-- write, read back and delete (decoding 11 columns of each record, removing
-- one B-tree cell at a time), and ~700 bytes for a flow with 32 names as
-- JSON. A batch row holds thousands of flows with every shared value (host,
-- addresses, name lists) stored once: an export reads a handful of rows and
-- deletes a handful.
--
-- The table a batch belongs to is data (`tableName`), so every event table
-- (flows, and those added later) shares this one table, its export and its
-- crash recovery. After this file runs, the store moves the rows of the old
-- `flows` table into batches in the same transaction and drops `flows` and
-- `flow_ids` (store/src/upgrade.rs): a data directory upgrades in place, all
-- or nothing.
CREATE TABLE batches (
    -- Commit order; AUTOINCREMENT: never reused, even after the newest
    -- batch is exported.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The event table, e.g. 'flows'.
    tableName TEXT NOT NULL,
    -- Oldest and newest event time in the batch, UTC ns: queries and
    -- exports select batches by these without reading them.
    minTime INTEGER NOT NULL,
    maxTime INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    -- Length of `data`.
    bytes INTEGER NOT NULL,
    -- When the batch was committed (or last rewritten by an export that
    -- took part of it), UTC ns.
    committedAt INTEGER NOT NULL,
    -- The rows: an Arrow IPC stream (schema, dictionaries, one record
    -- batch), rows in time order, buffers LZ4- or ZSTD-compressed.
    data BLOB NOT NULL
);
CREATE INDEX batches_by_time ON batches (tableName, minTime);

-- The batches without their data, with readable times, for a look with
-- the sqlite3 shell: SELECT * FROM hot_batches;
CREATE VIEW hot_batches AS
SELECT
    seq,
    tableName,
    strftime('%Y-%m-%dT%H:%M:%fZ', minTime / 1000000000.0, 'unixepoch') AS firstEvent,
    strftime('%Y-%m-%dT%H:%M:%fZ', maxTime / 1000000000.0, 'unixepoch') AS lastEvent,
    rows,
    bytes,
    strftime('%Y-%m-%dT%H:%M:%fZ', committedAt / 1000000000.0, 'unixepoch') AS committed
FROM batches;
