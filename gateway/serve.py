"""Serving with hypercorn's trio worker, and graceful shutdown on SIGTERM/SIGINT.

What hypercorn's `worker_serve` does when its `shutdown_trigger` returns: it closes the listening
sockets (no new connections), closes idle keep-alive connections, lets the connections that are
serving a request finish, cancels what is left after `graceful_timeout` seconds, then runs the
ASGI lifespan shutdown (our `after_serving`, which drains the event queue). We build on that:

- each worker stops on the first signal it receives (SIGTERM, SIGINT) or, with several
  workers, on the parent's shutdown event, whichever comes first; SIGTERM sent to the whole
  process group (as systemd and `kill -- -PGID` do) and SIGTERM sent to the parent alone both
  drain every worker, and a worker's own copy of a signal its parent relayed first is the same
  request, not a second one;
- when it fires, `Draining.begin(grace)` (gateway/http/draining.py) gives every stream being relayed until `grace` seconds
  from now; a stream still running then is ended by its surface with the API's own error frame
  (`ShuttingDown`, 503) and its event is recorded with outcome `shutdown`;
- hypercorn's `graceful_timeout` is `grace + CUT_MARGIN`, so the streams cut at `grace` have time
  to send their last frame before hypercorn cancels anything;
- the process exits 0 once the lifespan shutdown has drained the event queue.

A second SIGINT/SIGTERM received by a process during the drain ends that process at once.

The parent of several workers is a small supervisor rather than `hypercorn.run.run`, because the
latter starts hypercorn's own `trio_worker`, whose trigger knows neither signals nor `Draining`.
It keeps hypercorn's model: shared sockets, spawned processes, one shared shutdown event.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import resource
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import wait
from multiprocessing.synchronize import Event as EventType
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import check_multiprocess_shutdown_event
from quart_trio import QuartTrio

from gateway.config import Config
from gateway.http.draining import Draining

log = logging.getLogger("gateway.serve")

#: Seconds hypercorn waits after the grace period before cancelling: time for the cut streams
#: to send their last frame.
CUT_MARGIN = 5.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: The configuration file each worker process loads (set by `python -m gateway serve`).
CONFIG_ENV = "GATEWAY_CONFIG"
#: Where Linux says how high a descriptor limit may go when the hard limit is "unlimited".
NR_OPEN_PATH = "/proc/sys/fs/nr_open"
#: A stream holds two descriptors (client and upstream); below this soft limit we warn.
WANTED_DESCRIPTORS = 8192


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, once, at start; return the soft limit.

    Distributions start processes with a soft limit of 1024 (4096 under some managers) while the
    hard limit is far higher, and each stream holds two descriptors: the defaults allow 4096
    streams per worker, which needs about 8,200. Spawned workers inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel refuses "unlimited": ask it for its ceiling
        try:
            with open(NR_OPEN_PATH, encoding="ascii") as ceiling:
                target = int(ceiling.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open file limit from %d to %d: %s", soft, target,
                        exc)
        else:
            log.info("open file limit raised from %d to %d", soft, target)
            soft = target
    if soft != resource.RLIM_INFINITY and soft < WANTED_DESCRIPTORS:
        log.warning("open file limit is %d: each stream holds two descriptors, so a worker "
                    "serves at most about %d streams; raise the hard limit (ulimit -Hn)",
                    soft, soft // 2)
    return soft


def app_from_env() -> QuartTrio:
    """The ASGI app of one worker (`gateway.serve:app_from_env()`): each worker process builds
    its own app from the configuration file named in `GATEWAY_CONFIG`, so nothing is shared
    between processes but the database."""
    from gateway.app import create_app
    from gateway.datadir import read_admin_token

    config = Config.load(os.environ.get(CONFIG_ENV) or None)
    if not config.admin_token and config.generate_admin_token:
        # The one `python -m gateway serve` generated before starting this worker.
        config = config.with_overrides(admin_token=read_admin_token(config))
    return create_app(config)



async def _serve_until_stopped(app: ASGIWrapper, config: HypercornConfig,
                               sockets: Sockets | None, draining: Draining | None, grace: float,
                               shutdown_event: EventType | None) -> None:
    """hypercorn's `worker_serve`, stopped by SIGTERM/SIGINT or the parent's shutdown event.

    The signal receiver stays open until serving is over. A SIGTERM sent to the process group
    reaches each worker and its supervisor, which relays it through the shared event: whichever
    the worker sees first starts the drain, and the other is the same request. (Closing the
    receiver when the event came first made trio re-raise the worker's own copy of the signal
    with the default action, which killed the worker mid-drain and cut its streams.)"""
    stop = trio.Event()

    async def trigger() -> None:
        await stop.wait()
        if draining is not None:
            draining.begin(grace)

    with trio.open_signal_receiver(*SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signals, signals, stop)
            if shutdown_event is not None:
                nursery.start_soon(_stop_on_parent, shutdown_event, stop)
            await worker_serve(app, config, sockets=sockets, shutdown_trigger=trigger)
            nursery.cancel_scope.cancel()


async def _stop_on_signals(signals: AsyncIterator[int], stop: trio.Event) -> None:
    """The first signal this process receives stops serving; a second one ends it at once."""
    received = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if received:
            from gateway.http.access_log import stop_log_thread

            log.warning("received %s again: exiting at once", name)
            stop_log_thread()  # the log lines waiting for their thread, this one included
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
        received = True
        log.info("received %s", name)
        stop.set()


async def _stop_on_parent(shutdown_event: EventType, stop: trio.Event) -> None:
    await check_multiprocess_shutdown_event(shutdown_event, trio.sleep)
    stop.set()


def trio_worker(config: HypercornConfig, sockets: Sockets | None = None,
                shutdown_event: EventType | None = None, *, grace: float = 20.0,
                log_level: str = "INFO", notices: Sequence[str] = ()) -> None:
    """One serving process: hypercorn's `worker_serve` with our shutdown trigger."""
    from gateway.http.access_log import configure_logging

    configure_logging(log_level)
    if sockets is None:  # the only worker: say where it listens
        raise_open_file_limit()
        log.info("listening on %s", ", ".join(f"http://{bind}" for bind in config.bind))
        for notice in notices:
            log.info("%s", notice)
    if sockets is not None:
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            sock.listen(config.backlog)
    app = app_from_env()
    # What is loaded by now (modules, the configuration, the app) lives as long as the worker:
    # moved out of the collector's reach, full collections (tens of ms with it, every few
    # thousand requests) walk only what requests allocate.
    gc.freeze()
    draining: Draining | None = app.extensions.get("draining")
    trio.run(_serve_until_stopped, ASGIWrapper(app), config, sockets, draining, grace,
             shutdown_event)
    log.info("worker stopped")


def hypercorn_config(config: Config, bind: str, workers: int) -> HypercornConfig:
    """Hypercorn's settings for serving the gateway from `config` on `bind` (host:port)."""
    hyper = HypercornConfig()
    hyper.application_path = "gateway.serve:app_from_env()"
    hyper.worker_class = "trio"
    hyper.bind = [bind]
    hyper.workers = workers
    # Our access log is `gateway.access` (JSON); hypercorn's messages join the same JSON lines.
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("hypercorn.error")
    hyper.keep_alive_timeout = config.keep_alive_timeout
    # Hypercorn's default backlog (100) overflows when hundreds of clients connect at once.
    hyper.backlog = config.backlog
    # A connection sending nothing for this long is closed (longer than any stream).
    hyper.read_timeout = config.server_read_timeout  # type: ignore[assignment]
    return hyper


def serve(config: HypercornConfig, workers: int, *, grace: float, log_level: str = "INFO",
          notices: Sequence[str] = ()) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status (0 after a graceful shutdown).
    `notices` are logged once at start-up (e.g. the admin token generated for this start)."""
    config.graceful_timeout = grace + CUT_MARGIN
    if workers <= 1:  # the worker raises the open file limit itself
        trio_worker(config, grace=grace, log_level=log_level, notices=notices)
        return 0
    from gateway.http.access_log import configure_logging
    from gateway.http.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    configure_logging(log_level)
    raise_open_file_limit()  # before the workers start: they inherit it
    log.info("listening on %s with %d workers",
             ", ".join(f"http://{bind}" for bind in config.bind), workers)
    for notice in notices:
        log.info("%s", notice)
    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir  # inherited by the spawned workers
    prepare_multiprocess_dir(os.environ[MULTIPROC_ENV])
    try:
        return _supervise(config, workers, grace=grace, log_level=log_level)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def _supervise(config: HypercornConfig, workers: int, *, grace: float, log_level: str) -> int:
    from gateway.http.metrics import worker_exited

    sockets = config.create_sockets()
    ctx = multiprocessing.get_context("spawn")  # as hypercorn: fresh interpreters
    shutdown_event = ctx.Event()
    processes = []
    for _ in range(workers):
        process = ctx.Process(target=trio_worker, kwargs={
            "config": config, "sockets": sockets, "shutdown_event": shutdown_event,
            "grace": grace, "log_level": log_level})
        process.start()
        processes.append(process)
    # Each worker has its own copy of the listening sockets now. Closing ours means that once
    # the workers close theirs at shutdown, new connections are refused, not queued unserved.
    for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
        sock.close()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping %d workers", signal.Signals(signum).name, workers)
        shutdown_event.set()
        for again in SIGNALS:  # a second signal ends the supervisor at once
            signal.signal(again, signal.SIG_DFL)

    for signum in SIGNALS:
        signal.signal(signum, on_signal)
    exit_code = 0
    running = list(processes)
    while running:
        wait([p.sentinel for p in running])
        for process in [p for p in running if p.exitcode is not None]:
            running.remove(process)
            process.join()
            assert process.pid is not None
            worker_exited(process.pid)
            if process.exitcode != 0 or not shutdown_event.is_set():
                # A worker that dies on its own leaves the service degraded: stop them all and
                # let the process manager restart the gateway.
                log.error("worker %s exited with status %s; stopping", process.pid,
                          process.exitcode)
                exit_code = exit_code or (process.exitcode or 1)
                shutdown_event.set()
    return exit_code
