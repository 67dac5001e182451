"""Skip an unreadable sample and count it: one policy for every dataset of the toolkit (ImageFolder,
iNat, Places, COCO, ADE20K).

A training set replaces a sample it cannot read by the next readable one, logs ``skipping <what>`` and
counts it (the training loop logs the count as ``skipped_images``); an evaluation set, where a substitute
would change the score, raises instead. A run of ``MAX_SKIPS_IN_A_ROW`` bad samples is an error: a
directory of broken files fails rather than training on nothing.
"""
from __future__ import annotations

import logging
import multiprocessing
from typing import Callable, TypeVar

from .image import UNREADABLE

logger = logging.getLogger("crossmae")

MAX_SKIPS_IN_A_ROW = 10
T = TypeVar("T")


class SkipCount:
    """How many unreadable samples a training set has skipped, shared by the DataLoader's worker
    processes (the loop logs it as ``skipped_images``)."""

    def __init__(self):
        self._value = multiprocessing.get_context("spawn").Value("i", 0)

    def add(self) -> None:
        with self._value.get_lock():
            self._value.value += 1

    def __int__(self) -> int:
        return int(self._value.value)


def first_readable(load: Callable[[int], T], index: int, size: int, on_unreadable: Callable[[int, Exception], None],
                   where: object, errors: tuple[type[BaseException], ...] = UNREADABLE) -> T:
    """``load(index)``; if it raises one of ``errors``, ``on_unreadable(i, error)`` (which logs and counts
    the skip, or re-raises where no substitute is allowed) and the next sample, and so on: a corrupt file
    cannot stop a multi-day run, and a directory of them fails after ``MAX_SKIPS_IN_A_ROW``."""
    for attempt in range(MAX_SKIPS_IN_A_ROW):
        i = (index + attempt) % size
        try:
            return load(i)
        except errors as e:
            on_unreadable(i, e)
    raise OSError(f"{MAX_SKIPS_IN_A_ROW} unreadable images in a row from index {index} in {where}")


class CountsSkips:
    """Mixin of a dataset that may skip bad samples: it calls ``_init_skips()`` when built and ``skip()``
    for each bad sample (typically from the ``on_unreadable`` of :func:`first_readable`); ``num_skipped()``
    is what the training loop logs."""

    def _init_skips(self) -> None:
        self._skips = SkipCount()

    def num_skipped(self) -> int:
        """Samples skipped so far, over all DataLoader workers."""
        return int(self._skips)

    def skip(self, error: Exception, allowed: bool, what: str = "", count: bool = True,
             cause: BaseException | None = None) -> None:
        """Raise ``error`` (from ``cause``) unless a substitute is ``allowed``; else log ``skipping <what>``
        (default: the error's message) and count it (unless ``count`` is False: a read outside training)."""
        if not allowed:
            if cause is not None:
                raise error from cause
            raise error
        if count:
            self._skips.add()
        logger.warning("skipping %s", what or error)
