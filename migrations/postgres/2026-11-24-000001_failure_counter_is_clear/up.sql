-- Whether a user has no failure and no lockout of one kind, read with a
-- snapshot of its own. The fast path of an authenticator code check
-- (mfa-store's store/authenticator_success.rs) calls it in its one
-- statement after it has locked the user's row: VOLATILE, so that it sees
-- every failure committed before the lock was granted, as the locked
-- path's read after its lock does (the statement's own snapshot is taken
-- before any wait for the lock). PL/pgSQL rather than SQL: it keeps the
-- plan of its query for the session, where an SQL function plans it anew
-- on every call (10-20% of a verify's throughput in pgbench).
CREATE FUNCTION failure_counter_is_clear(p_user BIGINT, p_kind TEXT)
RETURNS BOOLEAN
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    RETURN NOT EXISTS (
        SELECT 1 FROM failure_counters
         WHERE user_id = p_user AND kind = p_kind
           AND (failures <> 0 OR locked_until IS NOT NULL));
END
$$;
