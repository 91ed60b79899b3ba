"""Live logs and events: one tailer per running attempt, fanned out to many watchers."""
