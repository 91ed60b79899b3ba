"""A spawn's answer read in the very turn of the loop its wait times out in (a review's
race: the server's loop busy across the deadline while the supervisor answers). The timeout
cancelled the future the answer was for, the answer was dropped as nobody's, and the
program it named ran on untracked while its run was retried. It must be either taken as the
answer or, the spawn given up, the program it names stopped (`given_up`).

The supervisor here is a peer on its socket that answers when told to (a real one cannot be
made to answer at a chosen instant); the loop is held busy on purpose, as a burst would."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runyard.execution.late_spawns import LateSpawns
from runyard.execution.protocol import SOCKET_NAME
from runyard.execution.supervisor_client import (
    REPLY_MARGIN_S,
    SupervisorClient,
    SupervisorTimeoutError,
)

pytestmark = pytest.mark.anyio

WAIT_S = 0.3  # the reply's whole wait: its timeout plus the margin


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Peer:
    """A supervisor's socket: records each request, answers only when `answer` says."""

    def __init__(self, path: Path) -> None:
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(path))
        self.server.listen()
        self.requests: list[dict[str, Any]] = []
        self.heard = threading.Condition()
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """After the client closed its end: the reader sees it and stops."""
        self.thread.join(10)
        if self.conn is not None:
            self.conn.close()
        self.server.close()

    def _serve(self) -> None:
        self.conn, _ = self.server.accept()
        with self.conn.makefile("rb") as lines:
            self._read(lines)

    def _read(self, lines: Any) -> None:
        for line in lines:
            msg = json.loads(line)
            with self.heard:
                self.requests.append(msg)
                self.heard.notify_all()
            if msg["op"] == "signal":
                self.answer({"ok": True, "req": msg["req"]})

    def answer(self, message: dict[str, Any]) -> None:
        assert self.conn is not None
        self.conn.sendall(json.dumps(message).encode() + b"\n")

    def wait_for(self, op: str, timeout: float = 10) -> dict[str, Any]:
        with self.heard:
            found = self.heard.wait_for(
                lambda: next((m for m in self.requests if m["op"] == op), None), timeout
            )
        assert found, f"no {op!r} request; heard {self.requests}"
        return found


async def test_an_answer_read_as_its_wait_times_out_is_never_dropped(tmp_path: Path) -> None:
    peer = Peer(tmp_path / SOCKET_NAME)

    async def nothing(*_: object) -> None:
        return None

    client = SupervisorClient(tmp_path, nothing, nothing, timeout_s=WAIT_S - REPLY_MARGIN_S)
    killed: list[set[str]] = []
    late = LateSpawns(client, lambda keys: killed.append(set(keys)))
    await client.connect()
    try:
        sent = client.send({"op": "spawn", "key": "r.1"})
        spawn = await asyncio.to_thread(peer.wait_for, "spawn")
        loop = asyncio.get_running_loop()

        def busy_across_the_deadline() -> None:
            time.sleep(0.1)
            peer.answer({"ok": True, "pid": 4242, "req": spawn["req"]})
            time.sleep(0.15)  # the answer and the timeout are both due when the loop is back

        loop.call_at(loop.time() + WAIT_S - 0.1, busy_across_the_deadline)
        try:
            answer = await client.reply(sent)
        except SupervisorTimeoutError:
            late.given_up(sent, "r.1")
            stop = await asyncio.to_thread(peer.wait_for, "signal")
            assert (stop["key"], stop["reason"]) == ("r.1", "given_up")
        else:
            assert answer["pid"] == 4242  # taken in time after all
        assert killed == []  # the supervisor stayed: nothing was looked for by its key
    finally:
        await late.stop()
        await client.close()
        peer.close()
