"""Runs one stream-processing worker process until SIGTERM."""

from __future__ import annotations

import logging

import faust

from core.settings import Settings
from streams.app import SuggestionPipeline
from streams.llm import HTTP_CLIENT_LOGGERS
from streams.membership import broker_session_floor_s, with_session_floor
from streams.observability.metrics import WorkerMetrics
from streams.observability.server import WorkerEndpoints

logger = logging.getLogger(__name__)


def run(settings: Settings) -> None:
    """Start the Faust worker; its own signal handlers stop it cleanly on SIGTERM or Ctrl-C."""
    # Read once, before the worker's event loop exists: nothing here can block it.
    settings = with_session_floor(settings, broker_session_floor_s(settings.bootstrap_servers))
    # One INFO line per LLM request ("HTTP Request: POST ..."): most of a busy worker's log and
    # ~2 % of its CPU, never news. Warnings and errors still show; at DEBUG, everything does.
    if logging.getLevelName(settings.log_level) > logging.DEBUG:
        for name in HTTP_CLIENT_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    metrics = WorkerMetrics()
    pipeline = SuggestionPipeline(settings, metrics=metrics)
    endpoints = WorkerEndpoints.for_worker(
        settings, app=pipeline.app, metrics=metrics, conversations=lambda: len(pipeline.contexts)
    )
    worker = faust.Worker(
        pipeline.app,
        endpoints,  # started before the app, stopped after it
        loglevel=settings.log_level,
        # Faust's banner and spinner are for people at a terminal, not for logs.
        quiet=True,
    )
    logger.info("worker %s consuming from %s", pipeline.app.conf.id, settings.bootstrap_servers)
    worker.execute_from_commandline()
