//! The tables of the store's core: files, the ledger, crossings, closes, the outbox and the
//! keys it covers, the quarantine. Each submodule with tables of its own (parts, problems,
//! runs) declares them beside its queries.

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- One row per input file; failed rows are keyed by name and replaced on retry.
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    file TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    lines INTEGER NOT NULL DEFAULT 0,
    accepted INTEGER NOT NULL DEFAULT 0,
    uniq INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    malformed INTEGER NOT NULL DEFAULT 0,
    missing_field INTEGER NOT NULL DEFAULT 0,
    bad_timestamp INTEGER NOT NULL DEFAULT 0,
    bad_method INTEGER NOT NULL DEFAULT 0,
    bad_status INTEGER NOT NULL DEFAULT 0,
    unknown_org INTEGER NOT NULL DEFAULT 0,
    before_signup INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,
    archive_path TEXT,
    error TEXT,
    archive_purged INTEGER NOT NULL DEFAULT 0,
    quarantine_purged INTEGER NOT NULL DEFAULT 0,
    processed_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS files_ingested ON files (sha256) WHERE status = 'ingested';

-- Inbox entries with an access-log name that are not regular files (directories, symlinks,
-- FIFOs, sockets, devices): never opened, warned about once, removed when the entry is gone.
CREATE TABLE IF NOT EXISTS skipped (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
) WITHOUT ROWID;

-- Parts whose request ids are not in their day's claim runs yet (see claims.rs). The request-id
-- table of earlier versions is gone: the claims are rebuilt from the parts.
CREATE TABLE IF NOT EXISTS claims_pending (path TEXT PRIMARY KEY) WITHOUT ROWID;
DROP TABLE IF EXISTS request_ids;

-- The request-id claims of one local date (DESIGN §2.1: the dedupe scope is the org-day): its
-- sorted fingerprint files, largest first, covering every listed part of the date but those in
-- claims_pending. A date without a row is rebuilt from its parts when first touched.
CREATE TABLE IF NOT EXISTS claim_days (
    local_date TEXT PRIMARY KEY,
    runs TEXT NOT NULL,
    ids INTEGER NOT NULL
) WITHOUT ROWID;

-- Every quarantined line. A line that decoded as a call keeps its org, its `ts` and, when the
-- org is known, its local date (what `creditd quarantine` selects by, and what tells a backfill
-- which files may hold lines of its range).
CREATE TABLE IF NOT EXISTS quarantine (
    file_sha TEXT NOT NULL,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL,
    org_id TEXT,
    local_date TEXT,
    ts INTEGER,
    PRIMARY KEY (file_sha, line)
);

-- Parquet files of priced events; only parts listed here are read.
CREATE TABLE IF NOT EXISTS parts (
    path TEXT PRIMARY KEY,
    file_sha TEXT NOT NULL,
    local_date TEXT NOT NULL,
    rows INTEGER NOT NULL,
    -- The order parts were listed in: a counter that only rises (0: listed before it was).
    added INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS parts_by_date ON parts (local_date);

-- Org-days whose ledger row must be recomputed from their events.
CREATE TABLE IF NOT EXISTS dirty (
    org_id TEXT NOT NULL,
    local_date TEXT NOT NULL,
    PRIMARY KEY (org_id, local_date)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS ledger (
    org_id TEXT NOT NULL,
    local_date TEXT NOT NULL,
    model TEXT NOT NULL,
    reason TEXT NOT NULL,
    edition TEXT NOT NULL,
    agents INTEGER NOT NULL,
    light_agents INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    billable_calls INTEGER NOT NULL,
    credits INTEGER NOT NULL,
    base INTEGER NOT NULL,
    variable INTEGER NOT NULL,
    additional INTEGER NOT NULL,
    additional_excess INTEGER NOT NULL,
    legacy_limit INTEGER NOT NULL,
    allotted INTEGER NOT NULL,
    used INTEGER NOT NULL,
    exceeded_at INTEGER,
    concurrency INTEGER NOT NULL,
    unpriced_calls INTEGER NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,
    -- The highest `parts.added` of the parts of its date the row counts, 0 when not known.
    parts_seen INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, local_date)
) WITHOUT ROWID;

-- Org-days that have closed: when they were due and when the close sweep saw them.
CREATE TABLE IF NOT EXISTS closes (
    org_id TEXT NOT NULL,
    local_date TEXT NOT NULL,
    due_at INTEGER NOT NULL,
    closed_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, local_date)
) WITHOUT ROWID;

-- Every message, written before it is sent; the key is sent once, ever.
CREATE TABLE IF NOT EXISTS outbox (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    org_id TEXT,
    local_date TEXT,
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    message BLOB NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    sent_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at);

-- Keys reported inside another message (DESIGN §5 `X-Creditd-Covers`): never mailed on their
-- own, their status is the covering message's. Kept forever, like the outbox keys.
CREATE TABLE IF NOT EXISTS covers (
    key TEXT PRIMARY KEY,
    covered_by TEXT NOT NULL
) WITHOUT ROWID;

-- The first call at which an org-day reached each threshold (percent; 100 = above).
CREATE TABLE IF NOT EXISTS crossings (
    org_id TEXT NOT NULL,
    local_date TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    PRIMARY KEY (org_id, local_date, threshold)
) WITHOUT ROWID;
"#;
