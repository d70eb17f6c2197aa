-- Upgrade from schema version 2 to 3. Applied in one transaction by `dlr-poller migrate`; never edit.
--  - audit rows of FAILED results say why they failed (failure_category), from the carrier's failure code.

ALTER TABLE sms_delivery_confirmations ADD COLUMN
  failure_category TEXT CHECK (failure_category IS NULL OR failure_category = 'INVALID_NUMBER'
                               OR failure_category = 'NETWORK_ERROR' OR failure_category = 'CARRIER_ERROR'
                               OR failure_category = 'UNDELIVERABLE' OR failure_category = 'UNKNOWN');
