-- inbox.db: what ingest writes, in a file of its own so that ingest commits never
-- wait for processing's transactions or checkpoints on stacksift.db (SqliteStore).
-- (auto_vacuum = INCREMENTAL is set by SqliteStore.setup: see _incremental_inbox.)

-- Durable queue between ingest and processing.  Processing stores an event in
-- stacksift.db, then deletes its row here; a crash between the two commits makes
-- the row be processed again, and the event id already stored makes that a no-op.
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    received REAL NOT NULL,
    payload BLOB NOT NULL,                -- the event JSON exactly as the SDK sent it
    meta BLOB NOT NULL,                   -- ingest metadata (orjson): event_id, client_ip, ...
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0
);

-- How many rows inbox holds, kept by triggers: count(*) reads every row (1-2 s at a
-- million), and ingest asks at least once a second (STACKSIFT_MAX_BACKLOG).
CREATE TABLE IF NOT EXISTS inbox_size (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
INSERT OR IGNORE INTO inbox_size (id, n) SELECT 1, count(*) FROM inbox;
CREATE TRIGGER IF NOT EXISTS inbox_added AFTER INSERT ON inbox
BEGIN
    UPDATE inbox_size SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS inbox_removed AFTER DELETE ON inbox
BEGIN
    UPDATE inbox_size SET n = n - 1;
END;

CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    received REAL NOT NULL,
    payload BLOB NOT NULL,
    meta BLOB NOT NULL,
    error TEXT NOT NULL,
    failed_at REAL NOT NULL
);

-- Outcome counts per project, reason and day (UTC date): ingest's (accepted, refused
-- at the door) committed with the inbox rows they describe, processing's (processed,
-- filtered:<reason>) with the deletion of the rows they describe, so each is counted
-- exactly once whatever crashes.
CREATE TABLE IF NOT EXISTS counters (
    project_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    day TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, reason, day)
) WITHOUT ROWID;
