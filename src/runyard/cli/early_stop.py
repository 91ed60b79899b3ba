"""A stop asked for while the server starts, before uvicorn listens for one.

From `runyard serve`'s first step until uvicorn installs its handlers (the imports, the app
built: a second or so), SIGINT and SIGTERM are kept here, then raised again once uvicorn's
handlers are in place, so the server starts and stops cleanly at once. A server started in
the background (SIGINT ignored, as a shell starts it) lost a SIGINT sent then, and ran on for
good; a SIGTERM then ended it mid-start. A second signal ends the process at once."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

STOPS = (signal.SIGINT, signal.SIGTERM)


class EarlyStop:
    def __init__(self) -> None:
        self.signals: list[int] = []
        self._before: dict[int, Any] = {sig: signal.signal(sig, self._kept) for sig in STOPS}

    def _kept(self, sig: int, frame: FrameType | None) -> None:
        if self.signals:  # asked again before the server could stop: now
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)
        self.signals.append(sig)

    def hand_over(self) -> list[int]:
        """The handlers as they were, and the stops kept meanwhile (to raise once the
        server's own handlers are in place)."""
        for sig, handler in self._before.items():
            signal.signal(sig, handler)
        return self.signals
