-- PostgreSQL: upgrade from schema version 2 to 3. Applied in one transaction by `dlr-poller migrate`, under
-- its advisory lock; never edit.
--  - audit rows of FAILED results say why they failed (failure_category), from the carrier's failure code.
-- Adding a nullable column without a default changes only the catalog: no table rewrite.

ALTER TABLE sms_delivery_confirmations ADD COLUMN
  failure_category text CHECK (failure_category IN ('INVALID_NUMBER', 'NETWORK_ERROR', 'CARRIER_ERROR',
                                                    'UNDELIVERABLE', 'UNKNOWN'));
