"""What other servers sharing the database hear of (a backend that has none drops them)."""

QUEUE_CHANNEL = "runyard_queue"  # runs to claim
RUN_CHANNEL = "runyard_run"  # "ID STATE HOST" of a run that moved
SCHEDULES_CHANNEL = "runyard_schedules"  # a schedule changed
CANCEL_CHANNEL = "runyard_cancel"  # "ID ATTEMPT HOST": a cancel for the server running it
