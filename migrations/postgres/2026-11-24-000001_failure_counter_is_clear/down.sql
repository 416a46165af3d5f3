DROP FUNCTION failure_counter_is_clear(BIGINT, TEXT);
