-- Eight empty round trips, as many as verify.sql sends: what the protocol
-- and the scheduling alone cost on this machine.
BEGIN;
SELECT 1;
SELECT 1;
SELECT 1;
SELECT 1;
SELECT 1;
SELECT 1;
COMMIT;
