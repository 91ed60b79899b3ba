-- A run's next event is numbered from its events numbered as the server numbers them (an
-- integer): one rewritten behind the server's back as text is the largest of all to max()
-- (SQLite sorts text above numbers), which numbered the next event 1 again, refused as a
-- duplicate, so that the run could not end, its slot held for good (a probe). Bounded by the
-- largest integer, which text is above: max() still reads one entry of the index.
DROP TRIGGER runs_state_event;

CREATE TRIGGER runs_state_event AFTER UPDATE OF state ON runs
WHEN NEW.state IS NOT OLD.state
BEGIN
    INSERT INTO run_events (run_id, seq, at, kind, data)
    SELECT
        NEW.id, coalesce(max(seq), 0) + 1, NEW.state_at, 'state',
        json_object(
            'from', OLD.state, 'to', NEW.state, 'attempt', NEW.attempt,
            'exit_code', CASE typeof(NEW.exit_code) WHEN 'integer' THEN NEW.exit_code END,
            'reason', NEW.reason
        )
    FROM run_events WHERE run_id = NEW.id AND seq <= 9223372036854775807;
END;
