"""Folders and globs of images: which images, which prompt files, which outputs.

A run over an image set (``hqsam segment|auto|embed FOLDER`` or ``'plates/*.tif'``)
does each image as a single-image run would; this module only decides the names.
It imports neither torch nor Qt nor any image reader.

Rules
-----
- **Images.** A folder gives its own entries (not its subfolders' contents), a glob
  its matches (``**`` reaches into subfolders); kept are those ending in
  :data:`~.io.IMAGE_SUFFIXES` (a ``.zarr`` folder is one image), hidden names
  (``.name``) never. They are sorted by name with numbers in numeric order
  (``plate_2`` before ``plate_10``). Nothing left is an :class:`InputError`.
- **Names.** An image's name is its file name without the suffix (``a.ome.tif`` ->
  ``a.ome``); two images of one name (``a.tif`` and ``a.npy``, or the same name in
  two folders of a glob) would write one output and are refused.
- **Prompt files** (``hqsam segment --prompts DIR``): ``NAME.csv``, ``NAME.json`` and
  ``NAME_<anything>.csv|json`` (e.g. ``NAME_points.csv`` with ``NAME_boxes.csv``) in
  DIR belong to image NAME and are read together as one prompt set. A file whose
  name fits several images goes to the longest name (``a_2.csv`` is image ``a_2``'s,
  not ``a``'s).
- **Outputs.** ``OUT/NAME.tif`` or ``OUT/NAME.zarr``. An output that exists was
  written whole (outputs are renamed into place when complete,
  :func:`~.io.commit_output`), so a rerun takes it as done.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, OutputError
from .io import IMAGE_SUFFIXES, ZARR_METADATA

PROMPT_SUFFIXES = (".csv", ".json")
OUTPUT_FORMATS = ("tif", "zarr")
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class SetImage:
    """One image of a set.

    Attributes
    ----------
    path : Path
        The image (a file, or a ``.zarr`` folder).
    name : str
        Its file name without the suffix: the name of its output and prompt files.
    """

    path: Path
    name: str


def is_image_set(text: str | Path) -> bool:
    """True when an IMAGE argument names a folder of images or a glob, not one image.

    A folder is one image when it is (or lies in) a ``.zarr`` folder, carries zarr
    metadata, or is named like an image file (``scan.tif/``: refused as one image,
    with what to do). A glob is a name with ``*``, ``?`` or ``[`` that does not exist
    as it is.
    """
    path = Path(text)
    if path.is_dir():
        if any(part.lower().endswith(".zarr") for part in path.parts):
            return False
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return False
        return not any((path / name).is_file() for name in ZARR_METADATA)
    return not path.exists() and bool(_GLOB_CHARACTERS & set(str(text)))


def list_images(source: str | Path) -> list[SetImage]:
    """The images of a folder or glob, in natural name order.

    Parameters
    ----------
    source : str or Path
        A folder, or a glob such as ``'plates/*.tif'`` or ``'runs/**/*.zarr'``.

    Raises
    ------
    InputError
        Nothing to run (saying what was there instead), or two images of one name.
    """
    text = str(source)
    if Path(text).is_dir():
        found = list(Path(text).iterdir())
        where = f"folder {text} holds"
    else:
        found = [Path(p) for p in glob.glob(text, recursive=True)]
        where = f"{text!r} matches"
    found = [p for p in found if not p.name.startswith(".")]
    images = [p for p in found if _image_suffix(p) is not None]
    if not images:
        other = sorted(p.name for p in found)
        held = (f", only {len(other)} other file{'s' * (len(other) != 1)}, e.g. "
                f"{other[0]}" if other else "")
        raise InputError(f"{where} no images ({', '.join(IMAGE_SUFFIXES)}){held}: give a "
                         "folder of images or a quoted glob such as 'plates/*.tif'.")
    members = sorted((SetImage(p, p.name[:-len(_image_suffix(p))]) for p in images),
                     key=lambda m: (natural_key(m.name), natural_key(str(m.path))))
    _refuse_same_names(members)
    return members


def natural_key(text: str) -> tuple:
    """Sort key with runs of digits compared as numbers (``a2`` before ``a10``)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", text) if part)


def _image_suffix(path: Path) -> str | None:
    for suffix in IMAGE_SUFFIXES:
        if path.name.lower().endswith(suffix) and len(path.name) > len(suffix):
            return path.name[-len(suffix):]
    return None


def _refuse_same_names(members: list[SetImage]) -> None:
    seen: dict[str, Path] = {}
    for member in members:
        key = member.name.lower()  # one file on case-insensitive disks
        if key in seen:
            raise InputError(f"images {seen[key]} and {member.path} have the same name "
                             f"{member.name!r}, so their outputs would too: rename one, or "
                             "run them separately.")
        seen[key] = member.path


def match_prompt_files(images: list[SetImage], folder: str | Path
                       ) -> tuple[dict[str, list[Path]], list[Path]]:
    """Prompt files of each image in ``folder`` (see the module's rules).

    Returns
    -------
    matched : dict
        ``image name -> [prompt files]`` (sorted; images without any are absent).
    unmatched : list of Path
        ``.csv``/``.json`` files of ``folder`` named after no image (likely typos).

    Raises
    ------
    InputError
        ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is a file"
        raise InputError(f"--prompts {folder} {what}: with a folder of images, --prompts is "
                         "the folder of their prompt files (NAME.csv or NAME.json for image "
                         "NAME, or NAME_points.csv and NAME_boxes.csv).")
    by_length = sorted((m.name for m in images), key=len, reverse=True)
    matched: dict[str, list[Path]] = {}
    unmatched: list[Path] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in PROMPT_SUFFIXES:
            continue
        stem = path.name[:-len(path.suffix)]
        owner = next((name for name in by_length
                      if stem == name or stem.startswith(name + "_")), None)
        if owner is None:
            unmatched.append(path)
        else:
            matched.setdefault(owner, []).append(path)
    return matched, unmatched


def missing_prompts_reason(name: str, folder: str | Path) -> str:
    """What an image's line says when ``folder`` has no prompt file for it."""
    return (f"no prompt file for it in {folder} (looked for {name}.csv, {name}.json, "
            f"{name}_*.csv, {name}_*.json)")


def output_done(path: str | Path) -> bool:
    """True when an output of a set exists whole: a non-empty ``.tif`` file, or a
    ``.zarr`` folder with zarr metadata (outputs appear under their name only when
    complete, :func:`~.io.commit_output`)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return path.is_dir() and any((path / name).is_file() for name in ZARR_METADATA)
    return path.is_file() and path.stat().st_size > 0


def output_path(folder: str | Path, name: str, fmt: str) -> Path:
    """``folder/name.tif`` or ``folder/name.zarr`` (``fmt`` one of :data:`OUTPUT_FORMATS`)."""
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"output format {fmt!r}: use one of {', '.join(OUTPUT_FORMATS)}.")
    return Path(folder) / f"{name}.{fmt}"


def check_output_folder(folder: str | Path, images: list[SetImage]) -> Path:
    """Check the folder the labels of a set go to (made by :func:`make_output_folder`).

    Raises
    ------
    InputError
        ``folder`` is named like one output (``.tif``, ``.zarr``), is a folder the
        images come from or holds one of them (the outputs would join the set on the
        next run, or replace an image).
    OutputError
        ``folder`` (or a parent) is a file.
    """
    folder = Path(folder)
    if folder.suffix.lower() in IMAGE_SUFFIXES:
        raise InputError(f"--out {folder}: with a folder of images, --out is the folder their "
                         f"labels go to (one NAME.tif or NAME.zarr per image), not a "
                         f"{folder.suffix} output.")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--out {folder} is a file: with a folder of images, --out is the "
                          "folder their labels go to; choose another --out.")
    sources = {m.path.parent.resolve() for m in images}
    if folder.resolve() in sources:
        raise InputError(f"--out {folder} is the folder of the images: choose another folder "
                         "for their labels, so that the outputs never join or replace the "
                         "images.")
    inside = next((m.path for m in images if m.path.resolve().is_relative_to(folder.resolve())),
                  None)
    if inside is not None:
        raise InputError(f"--out {folder} holds the image {inside}: choose another folder for "
                         "the labels, so that they are never taken for images.")
    blocking = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputError(f"--out {folder} cannot be created: {blocking} is a file; choose "
                          "another --out.")
    return folder


def make_output_folder(folder: str | Path) -> Path:
    """Create the output folder of a set (and its parents) unless it exists.

    Raises
    ------
    OutputError
        It cannot be created (permissions, a read-only disk).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {folder} "
                          f"({exc.strerror or exc}): choose another --out.") from None
    return folder
