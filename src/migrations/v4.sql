-- Upgrade from schema version 3 to 4. Applied in one transaction by `dlr-poller migrate`; never edit.
--  - due messages are read in submission order (submitted_at, then tracking id), so that a carrier listed by
--    time (Twilio) finds a job's messages in the few minutes they were sent in: the open index follows.
--  - poll_cycles says how far behind its grid a cycle left the poller: messages due and not polled at its end,
--    and the age of the oldest such poll; and how often bulk questions fell back to per-message ones.

DROP INDEX IF EXISTS idx_message_tracking_open;
CREATE INDEX idx_message_tracking_open
  ON message_tracking (carrier_batch_id, submitted_at, tracking_id, next_due_at) WHERE state = 'OPEN';
ALTER TABLE poll_cycles ADD COLUMN overdue INTEGER NOT NULL DEFAULT 0;
ALTER TABLE poll_cycles ADD COLUMN lag_seconds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE poll_cycles ADD COLUMN bulk_fallbacks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE poll_cycles ADD COLUMN asked_alone INTEGER NOT NULL DEFAULT 0;
ALTER TABLE poll_cycles ADD COLUMN fallback_stopped INTEGER NOT NULL DEFAULT 0;
