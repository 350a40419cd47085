-- stacksift embedded schema. Applied idempotently by `stacksift setup` and at start-up.
PRAGMA journal_mode = WAL;

CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}'
);

-- kind: 'ingest' (DSN public key, also accepted as Bearer/X-API-Key on the native endpoint)
--       or 'read' (read API token). Only a SHA-256 of the secret is stored.
-- revoked_at: when the key stops being accepted; in the future while a rotated key
--       is in its grace period, NULL while it is live.
CREATE TABLE IF NOT EXISTS keys (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    kind TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    key_hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS keys_project ON keys(project_id);

CREATE TABLE IF NOT EXISTS issues (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    title TEXT NOT NULL,
    culprit TEXT NOT NULL,
    level TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'unresolved',
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    user_count INTEGER NOT NULL DEFAULT 0,
    regressed_at REAL,
    resolved_at REAL,
    UNIQUE (project_id, fingerprint)
);
CREATE INDEX IF NOT EXISTS issues_last_seen ON issues(project_id, last_seen, id);
CREATE INDEX IF NOT EXISTS issues_first_seen ON issues(project_id, first_seen, id);
CREATE INDEX IF NOT EXISTS issues_count ON issues(project_id, count, id);

CREATE TABLE IF NOT EXISTS issue_users (
    issue_id INTEGER NOT NULL,
    user_key TEXT NOT NULL,
    PRIMARY KEY (issue_id, user_key)
) WITHOUT ROWID;

-- One row per stored event. Columns are the scalar fields of app/fields.py;
-- `data` is the full processed event (orjson).
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    issue_id INTEGER NOT NULL,
    timestamp REAL NOT NULL,
    received REAL NOT NULL,
    level TEXT NOT NULL,
    level_num INTEGER NOT NULL,
    platform TEXT,
    environment TEXT,
    release TEXT,
    logger TEXT,
    server_name TEXT,
    "transaction" TEXT,
    message TEXT,
    user_id TEXT,
    user_email TEXT,
    tags TEXT NOT NULL DEFAULT '{}',      -- JSON object {key: value}
    multi TEXT NOT NULL DEFAULT '{}',     -- JSON object {"exception.type": [...], "frame.function": [...], ...}
    data BLOB NOT NULL,
    UNIQUE (project_id, event_id)
);
CREATE INDEX IF NOT EXISTS events_ts ON events(project_id, timestamp, id);
CREATE INDEX IF NOT EXISTS events_issue ON events(issue_id, timestamp, id);
-- Covering indexes for stats/top on the fields dashboards break down by most; without
-- them a top-10 reads every (6-9 KB) events row. See docs/benchmarks.md.
CREATE INDEX IF NOT EXISTS events_release ON events(project_id, release, timestamp);
CREATE INDEX IF NOT EXISTS events_environment ON events(project_id, environment, timestamp);

-- Values of tags.<key> and exception.type per event, one row per distinct
-- (event, field, value), written by insert_event from Python (a trigger version cost
-- 60 % of storage throughput). Ordered so that a stats/top over a time range is an
-- index-only GROUP BY value (SqliteStore.top_values, when there is no q). `first` is
-- 1 on exactly one row per (event, field), so sum(first) counts events having the
-- field. Other multi-valued fields stay on the json_each path (frame.* rows
-- would triple the table and its ingest cost; exception.value is mostly unique).
CREATE TABLE IF NOT EXISTS field_values (
    project_id INTEGER NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    timestamp REAL NOT NULL,
    event INTEGER NOT NULL,               -- events.id
    first INTEGER NOT NULL,
    PRIMARY KEY (project_id, field, value, timestamp, event)
) WITHOUT ROWID;

-- Databases from before field_values: index the events already stored, once.
INSERT OR IGNORE INTO field_values
    SELECT e.project_id, 'tags.' || t.key, t.value, e.timestamp, e.id, 1
    FROM events AS e, json_each(e.tags) AS t
    WHERE t.type = 'text' AND NOT EXISTS (SELECT 1 FROM meta WHERE key = 'field_values');
INSERT OR IGNORE INTO field_values
    SELECT e.project_id, 'exception.type', m.value, e.timestamp, e.id, m.key = 0
    FROM events AS e, json_each(e.multi, '$."exception.type"') AS m
    WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = 'field_values');
INSERT OR IGNORE INTO meta (key, value) VALUES ('field_values', '1');


-- Full-text index over app.fields.text(event), tokenized by app/text.py into
-- two streams; rowid = events.id. The streams are already lower-cased tokens,
-- so the 'ascii' tokenizer only splits on spaces (unicode61 would fold accents
-- and disagree with the in-process matcher), which makes an FTS5 phrase match
-- exactly the app/text.py rule: app/query/sqlite.py needs no re-check. The text
-- is stored (not contentless) so rows can be deleted with a plain DELETE.
CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(
    words, parts, tokenize = 'ascii', detail = 'full'
);

-- alerts ---------------------------------------------------------------------
-- Saved-query alert rules (app/alerts) and every notification attempt.
-- window/throttle keep the duration text the user sent ("5m"); channels is JSON.
CREATE TABLE IF NOT EXISTS alert_rules (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    query TEXT NOT NULL,
    "trigger" TEXT NOT NULL,
    threshold INTEGER,
    "window" TEXT,
    throttle TEXT NOT NULL,
    channels TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_rules_project ON alert_rules(project_id, id);

-- outcome: sent | partial (some recipients refused) | retrying | failed
CREATE TABLE IF NOT EXISTS alert_notifications (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    rule_id INTEGER NOT NULL,
    rule_name TEXT NOT NULL,
    issue_id INTEGER NOT NULL,
    kind TEXT NOT NULL,                   -- alert | digest
    channel TEXT NOT NULL,                -- email | postmark | webhook
    target TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    events INTEGER NOT NULL DEFAULT 1,    -- matching events this message covers
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_notifications_project ON alert_notifications(project_id, id);
