-- A run's state events are written by SQLite itself, in the statement that changes its state:
-- one statement per change instead of two, each of which, on the store's thread, gives the
-- GIL up and takes it back. `state_at` is when the state last changed (the event's time;
-- the statements that change it set it, from the server's clock). The event's data is what
-- models.state_event builds, key for key: from, to, attempt, exit_code, reason (an exit code
-- an older version stored as something else than an integer reads as null, as rows._int has
-- it). The store also renames its table of versions at this one (sqlite_sql.CREATE_MIGRATIONS).
ALTER TABLE runs ADD COLUMN state_at REAL;

CREATE TRIGGER runs_first_event AFTER INSERT ON runs
BEGIN
    INSERT INTO run_events (run_id, seq, at, kind, data)
    VALUES (
        NEW.id, 1, coalesce(NEW.state_at, NEW.created_at), 'state',
        json_object(
            'from', NULL, 'to', NEW.state, 'attempt', NEW.attempt,
            'exit_code', CASE typeof(NEW.exit_code) WHEN 'integer' THEN NEW.exit_code END,
            'reason', NEW.reason
        )
    );
END;

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
    FROM run_events WHERE run_id = NEW.id;
END;
