-- Upgrade from schema version 1 to 2. Applied in one transaction by `dlr-poller migrate`; never edit.
--  - message_tracking keeps the submission's customer and phone (a submission row may be replaced or deleted
--    meanwhile), knows the TOO_OLD state, and no longer points at a rowid of sms_submissions;
--  - audit rows say whether they are a poll or a closing entry; cycles count three more outcomes;
--  - sms_submissions is read by submitted_at (an index, no rewrite of the table).

CREATE TABLE message_tracking_v2 (
  tracking_id       TEXT PRIMARY KEY,
  customer_id       TEXT,
  phone_number      TEXT,
  carrier_batch_id  TEXT,
  submitted_at      TEXT,
  state             TEXT NOT NULL CHECK (state = 'OPEN' OR state = 'DELIVERED' OR state = 'FAILED'
                                         OR state = 'UNCONFIRMED' OR state = 'INVALID' OR state = 'TOO_OLD'),
  polls             INTEGER NOT NULL DEFAULT 0,
  next_due_at       TEXT,
  last_status       TEXT,
  last_polled_at    TEXT,
  closed_at         TEXT,
  note              TEXT
) WITHOUT ROWID;
INSERT INTO message_tracking_v2 (tracking_id, customer_id, phone_number, carrier_batch_id, submitted_at, state,
                                 polls, next_due_at, last_status, last_polled_at, closed_at, note)
  SELECT t.tracking_id, s.customer_id, s.phone_number, t.carrier_batch_id, t.submitted_at, t.state, t.polls,
         t.next_due_at, t.last_status, t.last_polled_at, t.closed_at, t.note
  FROM message_tracking t
  LEFT JOIN sms_submissions s ON s.rowid = t.submission_rowid AND s.tracking_id = t.tracking_id;
DROP TABLE message_tracking;
ALTER TABLE message_tracking_v2 RENAME TO message_tracking;
CREATE INDEX idx_message_tracking_open
  ON message_tracking (carrier_batch_id, tracking_id, next_due_at) WHERE state = 'OPEN';
CREATE INDEX idx_message_tracking_closed
  ON message_tracking (closed_at) WHERE closed_at IS NOT NULL;

ALTER TABLE sms_delivery_confirmations
  ADD COLUMN entry TEXT NOT NULL DEFAULT 'poll' CHECK (entry = 'poll' OR entry = 'close');

ALTER TABLE poll_cycles ADD COLUMN too_old INTEGER NOT NULL DEFAULT 0;
ALTER TABLE poll_cycles ADD COLUMN closed_unanswered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE poll_cycles ADD COLUMN lookups_rejected INTEGER NOT NULL DEFAULT 0;

CREATE INDEX IF NOT EXISTS idx_sms_submissions_submitted_at ON sms_submissions (submitted_at, tracking_id);

-- The rowid read position of version 1 gives way to the read horizon; without one, the next cycle reads the
-- whole table once (tracked submissions are passed over, untracked old ones recorded as too old).
DELETE FROM poller_state WHERE key IN ('submissions_rowid', 'submissions_reported');
