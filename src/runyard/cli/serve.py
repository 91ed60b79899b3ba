"""`runyard serve`: configure logging and run the app under uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import sys
from types import FrameType

import structlog
import uvicorn

from runyard.config import Settings
from runyard.runtime import Runtime


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def configure_logging(fmt: str) -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")


class RunyardServer(uvicorn.Server):
    """uvicorn, told about shutdown first: submissions get 503 from the first signal on, and
    with `drain` the server keeps answering reads while running programs finish."""

    def __init__(self, config: uvicorn.Config, runtime: Runtime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self._drain_started = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.runtime.begin_shutdown()
        loop = self.runtime.loop
        if self.runtime.settings.drain and not self._drain_started and loop is not None:
            self._drain_started = True  # a second signal skips the wait
            loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_exit(sig)))
            return
        super().handle_exit(sig, frame)

    async def _drain_then_exit(self, sig: int) -> None:
        try:
            await self.runtime.drain()
        finally:
            super().handle_exit(sig, None)


def serve(settings: Settings) -> None:
    from runyard.api.app import create_app

    configure_logging(settings.log_format)
    log = structlog.get_logger("runyard")
    log.info(
        "starting",
        host=settings.host,
        port=settings.port,
        jobs_dir=str(settings.jobs_dir),
        data_dir=str(settings.data_dir),
        capacity=settings.capacity,
        auth="none: bound to loopback only" if is_loopback(settings.host) else "none (--insecure)",
    )
    runtime = Runtime(settings)
    config = uvicorn.Config(
        create_app(settings, runtime),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_s)),
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )
    RunyardServer(config, runtime).run()
