-- dlr-poller schema for PostgreSQL (15 and later), version 3: the same tables, indexes and invariants as schema.sql
-- (the readable SQLite reference), in PostgreSQL's native types. `dlr-poller migrate` applies exactly this text to
-- a new database (src/store/postgres.rs includes it) inside one transaction, under an advisory lock, so that
-- several pods may run it at once.
--
-- The dispatcher's table (sms_submissions, or the table --submissions-table names) is not created or changed here:
-- the poller only reads it (see the README for the grants and the one index it needs).

-- The audit trail: one row per poll result, append-only, never updated.
CREATE TABLE sms_delivery_confirmations (
  id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tracking_id           text NOT NULL,
  customer_id           text,
  phone_number          text,
  carrier_batch_id      text,
  delivery_status       text NOT NULL CHECK (delivery_status IN ('DELIVERED', 'FAILED', 'PENDING')),
  failure_code          text,         -- the carrier's error_code
  failure_reason        text,         -- the carrier's error_message
  polled_at             timestamptz NOT NULL,  -- the cycle's clock (--now when given)
  delivery_confirmed_at timestamptz,  -- the carrier's status time, when the status is final
  poll_attempt          integer NOT NULL CHECK (poll_attempt >= 1),  -- 1, 2, 3... per message
  created_at            timestamptz NOT NULL,  -- wall clock of the write
  cycle_id              bigint NOT NULL,  -- poll_cycles.id (no foreign key: pruning cycle records keeps results)
  carrier_status        text,         -- the carrier's word; NULL when the carrier did not know the message
  carrier_found         boolean NOT NULL DEFAULT true,  -- false: no status from the carrier (failure_code says why)
  entry                 text NOT NULL DEFAULT 'poll' CHECK (entry IN ('poll', 'close')),
  failure_category      text CHECK (failure_category IN ('INVALID_NUMBER', 'NETWORK_ERROR', 'CARRIER_ERROR',
                                                         'UNDELIVERABLE', 'UNKNOWN'))  -- FAILED rows: why
);
-- Unique: a message's poll numbers never repeat, so a result can never be counted twice.
CREATE UNIQUE INDEX idx_sdc_tracking_id ON sms_delivery_confirmations (tracking_id, poll_attempt);
CREATE INDEX idx_sdc_polled_at ON sms_delivery_confirmations (polled_at);
CREATE INDEX idx_sdc_delivery_status ON sms_delivery_confirmations (delivery_status);

-- Per-message tracking state: one row per submission the poller has taken in.
CREATE TABLE message_tracking (
  tracking_id      text PRIMARY KEY,
  customer_id      text,
  phone_number     text,
  carrier_batch_id text,
  submitted_at     timestamptz,  -- NULL when the submission's value was unusable
  state            text NOT NULL CHECK (state IN ('OPEN', 'DELIVERED', 'FAILED', 'UNCONFIRMED', 'INVALID', 'TOO_OLD')),
  polls            integer NOT NULL DEFAULT 0,  -- audit rows of the message (its polls, and a closing entry)
  next_due_at      timestamptz,  -- next slot; NULL once tracking has ended
  last_status      text,         -- DELIVERED | FAILED | PENDING of the latest poll
  last_polled_at   timestamptz,
  closed_at        timestamptz,  -- the cycle clock when tracking ended
  note             text          -- why a submission is INVALID or TOO_OLD, or why tracking ended without an answer
);
CREATE INDEX idx_message_tracking_open
  ON message_tracking (carrier_batch_id, submitted_at, tracking_id, next_due_at) WHERE state = 'OPEN';
CREATE INDEX idx_message_tracking_closed
  ON message_tracking (closed_at) WHERE closed_at IS NOT NULL;

-- One row per `dlr-poller poll` run.
CREATE TABLE poll_cycles (
  id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  started_at          timestamptz NOT NULL,
  finished_at         timestamptz,
  duration_seconds    double precision,
  cycle_now           timestamptz NOT NULL,
  host                text,
  pid                 integer,
  outcome             text NOT NULL,
  exit_code           smallint,
  messages_due        bigint NOT NULL DEFAULT 0,
  polled              bigint NOT NULL DEFAULT 0,
  delivered           bigint NOT NULL DEFAULT 0,
  failed              bigint NOT NULL DEFAULT 0,
  pending             bigint NOT NULL DEFAULT 0,
  closed_unconfirmed  bigint NOT NULL DEFAULT 0,
  unknown_statuses    bigint NOT NULL DEFAULT 0,
  not_found           bigint NOT NULL DEFAULT 0,
  batches_ok          bigint NOT NULL DEFAULT 0,
  batches_failed      bigint NOT NULL DEFAULT 0,
  duplicate_reports   bigint NOT NULL DEFAULT 0,
  malformed_reports   bigint NOT NULL DEFAULT 0,
  lookups_failed      bigint NOT NULL DEFAULT 0,
  http_requests       bigint NOT NULL DEFAULT 0,
  retries             bigint NOT NULL DEFAULT 0,
  new_submissions     bigint NOT NULL DEFAULT 0,
  invalid_submissions bigint NOT NULL DEFAULT 0,
  error               text,
  too_old             bigint NOT NULL DEFAULT 0,
  closed_unanswered   bigint NOT NULL DEFAULT 0,
  lookups_rejected    bigint NOT NULL DEFAULT 0,
  overdue             bigint NOT NULL DEFAULT 0,  -- messages due and not polled when the cycle ended
  lag_seconds         bigint NOT NULL DEFAULT 0,  -- how long the oldest of them had been due then
  bulk_fallbacks      bigint NOT NULL DEFAULT 0,  -- jobs whose bulk question failed, asked the per-message way
  asked_alone         bigint NOT NULL DEFAULT 0,  -- messages asked per message: their bulk question failed or lacked them
  fallback_stopped    bigint NOT NULL DEFAULT 0,  -- 1: falling back stopped, the carrier failing per-message questions too
  round_id            bigint,   -- poll_rounds.id: the cycle this run shared with other replicas
  run_token           text      -- the run's token: its sessions are named dlr-poller:{token} while it lives
);

-- One cycle shared by the runs started for it (replicas): one clock, one intake, the work split into units that
-- one run at a time claims.
CREATE TABLE poll_rounds (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  cycle_now   timestamptz NOT NULL,  -- the clock of every run of the round
  phase       text NOT NULL CHECK (phase IN ('intake', 'polling', 'done')),
  coordinator text NOT NULL,         -- the run taking the submissions in and publishing the units
  started_at  timestamptz NOT NULL,  -- wall clock
  expires_at  timestamptz NOT NULL,  -- wall clock: no run joins the round after this
  finished_at timestamptz
);

-- The work of a round: a carrier batch, or a run of messages without a batch in submission order, from
-- (first_at, first_id) to (last_at, last_id). A run claims
-- units for a short lease, renewed while it lives; a unit whose lease ran out is taken over by another run.
CREATE TABLE poll_units (
  round_id      bigint NOT NULL,
  unit_id       integer NOT NULL,
  batch_id      text,
  first_id      text,
  last_id       text,
  first_at      timestamptz,
  last_at       timestamptz,
  messages      integer NOT NULL,
  claimed_by    text,
  claimed_until timestamptz,
  done          boolean NOT NULL DEFAULT false,
  PRIMARY KEY (round_id, unit_id)
);
CREATE INDEX idx_poll_units_open ON poll_units (round_id, unit_id) WHERE NOT done;

-- The lease row of the SQLite backend's single-cycle model; on PostgreSQL runs share rounds instead, and this
-- table stays empty.
CREATE TABLE poller_lease (
  id          smallint PRIMARY KEY CHECK (id = 1),
  holder      text NOT NULL,
  host        text NOT NULL,
  pid         integer NOT NULL,
  acquired_at timestamptz NOT NULL,
  expires_at  timestamptz NOT NULL
);

-- Running totals behind the metrics counters.
CREATE TABLE poller_totals (
  name  text PRIMARY KEY,
  value bigint NOT NULL
);

-- Small facts kept between runs: how far back the submissions have been read, when a cycle last succeeded.
CREATE TABLE poller_state (
  key   text PRIMARY KEY,
  value text NOT NULL
);

-- The schema version (one row).
CREATE TABLE poller_schema (
  version integer NOT NULL
);
