"""What every long-running subcommand shares: its progress bar and where its work runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(args, desc: str, total: int = 1,
                 unit: str = "it") -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr (off with ``--quiet``), closed however the run ends.

    Yields the ``progress(done, total)`` callback the engine's runs take.
    """
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, disable=args.quiet, desc=desc)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        bar.close()


def runs_on_dask(args) -> bool:
    """True when ``--workers`` or ``--scheduler`` asks for Dask (its logs then quieted)."""
    if not (args.workers or args.scheduler):
        return False
    quiet_dask_logs()
    return True


def quiet_dask_logs() -> None:
    """Errors only from ``distributed``: the nanny warns when it stops its workers at
    shutdown, which is not news for a user."""
    import logging

    logging.getLogger("distributed").setLevel(logging.ERROR)


def where_it_ran(args) -> str:
    """``"4 local workers"``, ``"scheduler tcp://..."`` or ``"1 process"``, for summaries."""
    if args.workers:
        return f"{args.workers} local workers"
    if args.scheduler:
        return f"scheduler {args.scheduler}"
    return "1 process"
