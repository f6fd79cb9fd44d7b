"""``hqsam segment|auto|embed FOLDER`` (or a quoted glob): every image, one line each.

Each image runs through the subcommand's own single-image function
(``segment.segment_image``, ``auto.segment_image``, ``embed.embed_image``) with its
own prompt files and output (names: :mod:`napari_hq_sam.engine.image_sets`), so
an image gives the same labels as when it is run alone. The model is loaded once
per process (:func:`~napari_hq_sam.engine.distributed.worker_segmenter` keeps it);
with ``--workers``/``--scheduler`` each image is one Dask task and each worker
process loads the model once.

An image that cannot be done (no prompt file, a damaged file, a user error of
any kind) is said on its line and the others go on; the run then ends with
status 2. An existing output is taken as done ("done earlier"): outputs appear
under their name only when complete, so a killed run's rerun does the rest.
``--overwrite`` does every image again.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HQSamWarning, InputError
from ._progress import quiet_dask_logs, where_it_ran

#: what each subcommand's line counts
_UNITS = {"segment": "segmented", "auto": "segmented", "embed": "embedded"}


def add_image_set_options(p: argparse.ArgumentParser) -> None:
    """``--format tif|zarr``: the outputs of a folder of images."""
    from ..engine.image_sets import OUTPUT_FORMATS

    p.add_argument("--format", choices=OUTPUT_FORMATS, default=None,
                   help="for a folder of images: write OUT/NAME.tif (default) or OUT/NAME.zarr")


@dataclass
class ImageOutcome:
    """What one image of a set gave, for its line and the total.

    ``status``: ``"done"``, ``"earlier"`` (its output existed) or ``"failed"``.
    """

    name: str
    status: str
    objects: int = 0
    slices: int = 0
    computed: int = 0
    reused: int = 0
    seconds: float = 0.0
    reason: str = ""
    warnings: list = field(default_factory=list)


@dataclass(frozen=True)
class _Item:
    """One image to run: its arguments (a copy of the command's) and where it writes."""

    name: str
    args: argparse.Namespace
    shown_out: str  # the output as the user's --out names it


def run_image_set(args, command: str) -> int | None:
    """Run ``command`` over the folder or glob ``args.image``; None when it is one image.

    Returns the exit status: 0 when every image is done (now or earlier), 2 when
    one failed.
    """
    from ..engine.image_sets import is_image_set

    if not is_image_set(args.image):
        if getattr(args, "format", None) is not None:
            raise InputError("--format applies to a folder of images; for one image the "
                             "suffix of --out chooses (.tif or .zarr).")
        return None
    items, settled = _plan(args, command)
    from ._common import check_model_inputs

    check_model_inputs(args)
    if command != "embed":
        from ..engine.image_sets import make_output_folder

        make_output_folder(args.out)
        args.stopped_note = (f"; the labels of finished images stay in {args.out}: the same "
                             "command does the rest")
    start = time.perf_counter()
    todo = [item for item in items if item.name not in settled]
    if todo and (args.workers or args.scheduler):
        pending = _run_on_dask(args, command, todo)
    else:
        pending = (_run_here(command, item) for item in todo)
    outcomes = []
    try:
        for item in items:  # lines in image order, each as soon as its image is done
            outcome = settled.get(item.name) or next(pending)
            for message in outcome.warnings:
                warnings.warn(message, HQSamWarning, stacklevel=1)
            print(_line(command, outcome, item), flush=True)
            outcomes.append(outcome)
    finally:
        pending.close()  # a Dask cluster of the run is closed here, also on Ctrl-C
    return _total(args, command, outcomes, time.perf_counter() - start)


def _plan(args, command: str) -> tuple[list[_Item], dict[str, ImageOutcome]]:
    """Every image's arguments, and the images already settled (done earlier, no prompts).

    Raises the user errors of the whole run (no images, --out or --prompts not a
    folder) before any image is read.
    """
    from ..engine import image_sets

    images = image_sets.list_images(args.image)
    prompts = {}
    if command == "segment":
        if len(args.prompts) != 1:
            raise InputError("with a folder of images, give --prompts once: the folder of "
                             "their prompt files (NAME.csv or NAME.json for image NAME).")
        prompts, unmatched = image_sets.match_prompt_files(images, args.prompts[0])
        if unmatched:
            names = ", ".join(p.name for p in unmatched[:5])
            more = f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
            warnings.warn(f"prompt files in {args.prompts[0]} named after no image, not used: "
                          f"{names}{more} (a file NAME.csv or NAME_*.csv belongs to image "
                          "NAME)", HQSamWarning, stacklevel=1)
    if getattr(args, "cache", None):
        _check_cache_outside(args.cache, images)
    out_folder = (None if command == "embed" else
                  image_sets.check_output_folder(args.out, images))
    distributed = bool(args.workers or args.scheduler)
    items, settled = [], {}
    for image in images:
        changes = dict(image=_path_text(image.path, distributed), workers=None, scheduler=None)
        shown = str(args.cache) if command == "embed" else ""
        if out_folder is not None:
            out = image_sets.output_path(out_folder, image.name, args.format or "tif")
            changes["out"], shown = _path_text(out, distributed), str(out)
            if image_sets.output_done(out) and not args.overwrite:
                settled[image.name] = ImageOutcome(image.name, "earlier")
        if command == "segment":
            if image.name not in prompts and image.name not in settled:
                settled[image.name] = ImageOutcome(
                    image.name, "failed",
                    reason=image_sets.missing_prompts_reason(image.name, args.prompts[0]))
            changes["prompts"] = [_path_text(p, distributed)
                                  for p in prompts.get(image.name, [])]
        if distributed:
            changes["quiet"] = True  # progress bars of worker processes would interleave
            for key in ("checkpoint", "adapter", "cache"):
                if getattr(args, key, None) is not None:
                    changes[key] = _path_text(Path(getattr(args, key)), True)
        items.append(_Item(image.name, argparse.Namespace(**{**vars(args), **changes}),
                           shown))
    return items, settled


def _path_text(path: Path, absolute: bool) -> str:
    """A path as the run's per-image arguments hold it (absolute for Dask workers, which
    may run in another folder)."""
    return str(Path(path).resolve() if absolute else path)


def _check_cache_outside(cache: str, images) -> None:
    """A ``--cache`` folder named like an image in the images' folder would join the set."""
    from ..engine.io import IMAGE_SUFFIXES

    path = Path(cache)
    sources = {m.path.parent.resolve() for m in images}
    if path.suffix.lower() in IMAGE_SUFFIXES and path.resolve().parent in sources:
        raise InputError(f"--cache {cache} lies in the folder of the images, where it would "
                         "be taken for an image on the next run: choose a folder outside it.")


def _run_here(command: str, item: _Item) -> ImageOutcome:
    """One image in this process; a user error becomes its failed outcome."""
    from ..cli import is_user_error

    start = time.perf_counter()
    try:
        outcome = _image(command, item.args)
    except Exception as exc:
        if not is_user_error(exc):
            raise
        return ImageOutcome(item.name, "failed", reason=str(exc) or type(exc).__name__)
    outcome.name, outcome.seconds = item.name, time.perf_counter() - start
    return outcome


def _image(command: str, args) -> ImageOutcome:
    """The subcommand's single-image function on ``args``; the counts of its run."""
    if command == "embed":
        from .embed import embed_image

        result, _ = embed_image(args, model_checked=True)
        objects = 0
    else:
        from importlib import import_module

        result = import_module(f"napari_hq_sam.commands.{command}").segment_image(
            args, model_checked=True)[0]
        objects = result.objects
    return ImageOutcome("", "done", objects=objects, slices=len(result.slices),
                        computed=result.computed, reused=result.reused)


def image_task(command: str, item: _Item) -> ImageOutcome:
    """Dask task: one image on a worker, its warnings sent back to be said here."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HQSamWarning)
        outcome = _run_here(command, item)
    outcome.warnings = [str(w.message) for w in caught if issubclass(w.category, HQSamWarning)]
    return outcome


def _run_on_dask(args, command: str, items: list[_Item]):
    """Outcomes of ``items`` in their order, one Dask task per image."""
    from ..engine.distributed import dask_client

    quiet_dask_logs()
    with dask_client(scheduler=args.scheduler, n_workers=args.workers) as client:
        futures = [client.submit(image_task, command, item, pure=False) for item in items]
        for future in futures:
            yield future.result()


def _line(command: str, outcome: ImageOutcome, item: _Item) -> str:
    """``a.tif: 12 objects, 3 slices, 4.1 s -> out/a.tif`` (or why it was not done)."""
    name = Path(item.args.image).name
    if outcome.status == "failed":
        return f"{name}: skipped: {outcome.reason}"
    if outcome.status == "earlier":
        return f"{name}: done earlier -> {item.shown_out}"
    slices = _count(outcome.slices, "slice")
    if command == "embed":
        return (f"{name}: {slices} ({outcome.computed} computed, {outcome.reused} reused), "
                f"{outcome.seconds:.1f} s -> {item.shown_out}")
    return (f"{name}: {_count(outcome.objects, 'object')}, {slices}, "
            f"{outcome.seconds:.1f} s -> {item.shown_out}")


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _total(args, command: str, outcomes: list[ImageOutcome], seconds: float) -> int:
    """Print the total line (and, when an image failed, one error line); the exit status."""
    from ._common import cache_report

    counts = {status: sum(o.status == status for o in outcomes)
              for status in ("done", "earlier", "failed")}
    images = _count(len(outcomes), "image")
    parts = [f"{counts['done']} {_UNITS[command]}"]
    if counts["earlier"]:
        parts.append(f"{counts['earlier']} done earlier")
    if counts["failed"]:
        parts.append(f"{counts['failed']} failed (exit status 2)")
    done = [o for o in outcomes if o.status == "done"]
    what = "" if command == "embed" else f"{_count(sum(o.objects for o in done), 'object')}, "
    where = where_it_ran(args)
    target = args.cache if command == "embed" else args.out
    # the cache's report needs this process's model: none was loaded if nothing ran here
    report = cache_report(args) if counts["done"] else ""
    print(f"total: {images}, {', '.join(parts)}; {what}"
          f"{_count(sum(o.slices for o in done), 'slice')} in {seconds:.1f} s ({where}); "
          "embeddings: "
          f"{sum(o.computed for o in done)} computed, {sum(o.reused for o in done)} reused "
          f"-> {target}{report}", flush=True)
    if not counts["failed"]:
        return 0
    names = [o.name for o in outcomes if o.status == "failed"]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    print(f"hqsam {command}: error: {counts['failed']} of {images} not done ({shown}): see "
          "their lines above; the same command then does only what is missing",
          file=sys.stderr)
    return 2
