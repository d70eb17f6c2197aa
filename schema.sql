-- dlr-poller schema, version 3: the current schema. `dlr-poller migrate` applies exactly this text to a new
-- database (src/store.rs includes it); a database made by an older version is brought here by the upgrades in
-- src/migrations/ instead, and a test checks that both end in the same schema.
-- Times are RFC 3339 UTC text in one fixed-width form (2025-12-01T09:00:00Z) so that they compare as text.

-- Written by the dispatch system, read by the poller. Created here only when absent.
CREATE TABLE IF NOT EXISTS sms_submissions (
  tracking_id      TEXT PRIMARY KEY,
  customer_id      TEXT,
  phone_number     TEXT,
  carrier_batch_id TEXT,          -- NULL: this message must be queried by tracking id
  submitted_at     TEXT NOT NULL  -- RFC 3339 UTC, e.g. 2025-12-01T09:00:00Z
);
-- The poller reads the submissions of the last days in (submitted_at, tracking_id) order, a chunk at a time: the
-- one index it needs on the dispatcher's table (see the README).
CREATE INDEX IF NOT EXISTS idx_sms_submissions_submitted_at ON sms_submissions (submitted_at, tracking_id);

-- The audit trail: one row per poll result, append-only, never updated.
CREATE TABLE IF NOT EXISTS sms_delivery_confirmations (
  id                    INTEGER PRIMARY KEY,
  tracking_id           TEXT NOT NULL,
  customer_id           TEXT,
  phone_number          TEXT,
  carrier_batch_id      TEXT,
  -- CHECKs are written with OR, not IN (...): SQLite builds a temporary table for an IN list of three or more
  -- values on every row written, which costs about a fifth of the write time at a million rows.
  delivery_status       TEXT NOT NULL
                        CHECK (delivery_status = 'DELIVERED' OR delivery_status = 'FAILED' OR delivery_status = 'PENDING'),
  failure_code          TEXT,     -- the carrier's error_code
  failure_reason        TEXT,     -- the carrier's error_message
  polled_at             TEXT NOT NULL,  -- the cycle's clock (--now when given)
  delivery_confirmed_at TEXT,     -- the carrier's status_updated_at, when the status is final
  poll_attempt          INTEGER NOT NULL CHECK (poll_attempt >= 1),  -- 1, 2, 3... per message
  created_at            TEXT NOT NULL,  -- wall clock of the write
  -- Beyond the story's columns:
  cycle_id              INTEGER NOT NULL,  -- poll_cycles.id (no foreign key: pruning cycle records keeps results)
  carrier_status        TEXT,     -- the carrier's word as it said it; NULL when the carrier did not know the message
  carrier_found         INTEGER NOT NULL DEFAULT 1 CHECK (carrier_found IN (0, 1)),  -- 0: no status from the carrier
                                  -- (404, or it refused the question: failure_code says which)
  entry                 TEXT NOT NULL DEFAULT 'poll' CHECK (entry = 'poll' OR entry = 'close'),
                                  -- poll: the carrier's answer; close: tracking ended without one (failure_reason)
  failure_category      TEXT CHECK (failure_category IS NULL OR failure_category = 'INVALID_NUMBER'
                                    OR failure_category = 'NETWORK_ERROR' OR failure_category = 'CARRIER_ERROR'
                                    OR failure_category = 'UNDELIVERABLE' OR failure_category = 'UNKNOWN')
                                  -- FAILED rows: why, from the failure code and the provider's table
);
-- Unique: a message's poll numbers never repeat, so a result can never be counted twice.
CREATE UNIQUE INDEX IF NOT EXISTS idx_sdc_tracking_id ON sms_delivery_confirmations (tracking_id, poll_attempt);
CREATE INDEX IF NOT EXISTS idx_sdc_polled_at ON sms_delivery_confirmations (polled_at);
CREATE INDEX IF NOT EXISTS idx_sdc_delivery_status ON sms_delivery_confirmations (delivery_status);

-- Per-message tracking state: one row per submission the poller has taken in.
CREATE TABLE IF NOT EXISTS message_tracking (
  tracking_id       TEXT PRIMARY KEY,
  customer_id       TEXT,           -- copied from the submission when taken in, for the audit rows
  phone_number      TEXT,
  carrier_batch_id  TEXT,
  submitted_at      TEXT,           -- normalised to UTC; NULL when the submission's value was unusable
  state             TEXT NOT NULL CHECK (state = 'OPEN' OR state = 'DELIVERED' OR state = 'FAILED'
                                         OR state = 'UNCONFIRMED' OR state = 'INVALID' OR state = 'TOO_OLD'),
  polls             INTEGER NOT NULL DEFAULT 0,  -- audit rows of the message (its polls, and a closing entry)
  next_due_at       TEXT,           -- next slot; NULL once tracking has ended
  last_status       TEXT,           -- DELIVERED | FAILED | PENDING of the latest poll
  last_polled_at    TEXT,
  closed_at         TEXT,           -- the cycle clock when tracking ended
  note              TEXT            -- why a submission is INVALID or TOO_OLD, or why tracking ended without an answer
) WITHOUT ROWID;  -- one B-tree keyed by tracking_id instead of a table plus its key index: half the writes
-- The due query: open messages by batch, read in submission order (submitted_at, then tracking id) a chunk at a
-- time, so that a carrier listed by time finds a job's messages in a few of its minutes. Closed messages leave
-- the index.
CREATE INDEX IF NOT EXISTS idx_message_tracking_open
  ON message_tracking (carrier_batch_id, submitted_at, tracking_id, next_due_at) WHERE state = 'OPEN';
-- The delivery rate of the last 24 hours, over messages whose tracking ended.
CREATE INDEX IF NOT EXISTS idx_message_tracking_closed
  ON message_tracking (closed_at) WHERE closed_at IS NOT NULL;

-- One row per `dlr-poller poll` run.
CREATE TABLE IF NOT EXISTS poll_cycles (
  id                 INTEGER PRIMARY KEY,
  started_at         TEXT NOT NULL,  -- wall clock
  finished_at        TEXT,
  duration_seconds   REAL,
  cycle_now          TEXT NOT NULL,  -- the clock the schedule used (--now when given)
  host               TEXT,
  pid                INTEGER,
  outcome            TEXT NOT NULL,  -- running, ok, partial, carrier_unavailable, credentials_rejected,
                                     -- interrupted, database_error, abandoned (the run died mid-cycle)
  exit_code          INTEGER,
  messages_due       INTEGER NOT NULL DEFAULT 0,
  polled             INTEGER NOT NULL DEFAULT 0,
  delivered          INTEGER NOT NULL DEFAULT 0,
  failed             INTEGER NOT NULL DEFAULT 0,
  pending            INTEGER NOT NULL DEFAULT 0,
  closed_unconfirmed INTEGER NOT NULL DEFAULT 0,
  unknown_statuses   INTEGER NOT NULL DEFAULT 0,
  not_found          INTEGER NOT NULL DEFAULT 0,
  batches_ok         INTEGER NOT NULL DEFAULT 0,
  batches_failed     INTEGER NOT NULL DEFAULT 0,
  duplicate_reports  INTEGER NOT NULL DEFAULT 0,  -- messages a carrier listing reported more than once
  malformed_reports  INTEGER NOT NULL DEFAULT 0,  -- listing entries that could not be read
  lookups_failed     INTEGER NOT NULL DEFAULT 0,  -- one-by-one lookups that failed after retries
  http_requests      INTEGER NOT NULL DEFAULT 0,
  retries            INTEGER NOT NULL DEFAULT 0,
  new_submissions    INTEGER NOT NULL DEFAULT 0,
  invalid_submissions INTEGER NOT NULL DEFAULT 0,
  error              TEXT,
  too_old            INTEGER NOT NULL DEFAULT 0,  -- submissions first seen after the window: not tracked
  closed_unanswered  INTEGER NOT NULL DEFAULT 0,  -- closed after their +72h slot without an answer
  lookups_rejected   INTEGER NOT NULL DEFAULT 0,  -- messages the carrier refused to answer about (400, 410, 422...)
  overdue            INTEGER NOT NULL DEFAULT 0,  -- messages due and not polled when the cycle ended
  lag_seconds        INTEGER NOT NULL DEFAULT 0,  -- how long the oldest of them had been due then
  bulk_fallbacks     INTEGER NOT NULL DEFAULT 0,  -- jobs whose bulk question failed, asked the per-message way
  asked_alone        INTEGER NOT NULL DEFAULT 0,  -- messages asked per message: their bulk question failed or lacked them
  fallback_stopped   INTEGER NOT NULL DEFAULT 0   -- 1: falling back stopped, the carrier failing per-message questions too
);

-- The lease of the running cycle (one row while a cycle runs). Two cycles are kept apart by an OS lock on the file
-- `{database}-lock`, which the kernel releases when the holder dies; this row names the holder for reports and
-- fences every write of a cycle (a write checks that its run still holds it).
CREATE TABLE IF NOT EXISTS poller_lease (
  id          INTEGER PRIMARY KEY CHECK (id = 1),
  holder      TEXT NOT NULL,     -- host/pid/start, unique per run
  host        TEXT NOT NULL,
  pid         INTEGER NOT NULL,
  acquired_at TEXT NOT NULL,     -- wall clock
  expires_at  TEXT NOT NULL      -- wall clock: the holder's deadline plus a margin
);

-- Running totals behind the metrics counters (dlr_poller_*_total). Kept apart from poll_cycles so that pruning
-- old cycles never makes a counter go down.
CREATE TABLE IF NOT EXISTS poller_totals (
  name  TEXT PRIMARY KEY,   -- e.g. messages_polled:delivered, cycles:ok
  value INTEGER NOT NULL
);

-- Small facts the poller keeps between runs: how far back sms_submissions has been read, when a cycle last
-- succeeded.
CREATE TABLE IF NOT EXISTS poller_state (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
