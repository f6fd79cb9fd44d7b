"""How ``hqsam`` reports errors, and the option groups every subcommand shares.

A user error (an :class:`~napari_hq_sam.errors.HQSamError`, or an OS error about the
user's files or disk) is one line on stderr and exit status 2; anything else is a bug:
its traceback, then one line saying where to report it, and exit status 1.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from napari_hq_sam import __version__
from napari_hq_sam.cli import BUG_TRACKER, SUBCOMMAND_MODULES, main
from napari_hq_sam.commands import info
from napari_hq_sam.errors import InputError, MissingFileError, OutputError

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "src" / "napari_hq_sam" / "_sample_data"
IMAGE, LABELS = SAMPLE / "nuclei2d_image.tif", SAMPLE / "nuclei2d_labels.tif"


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _name(exc) -> str:
    code = getattr(exc, "errno", None)
    return type(exc).__name__ + (f"-{errno.errorcode[code]}" if code else "")


def _raising(exc):
    def run(args):
        raise exc
    return run


# --- user errors: one line, exit 2 ---------------------------------------------------------

def test_missing_image_is_one_line(tmp_path, capsys):
    missing = tmp_path / "none.tif"
    code, out, err = _run(capsys, "segment", missing, "--prompts", tmp_path / "p.csv",
                          "--model", "vit_tiny", "--out", tmp_path / "o.tif")
    assert code == 2 and out == ""
    assert err == f"hqsam segment: error: image {missing} does not exist.\n"
    assert list(tmp_path.iterdir()) == []


def test_unreadable_image_is_one_line(tmp_path, capsys):
    image = tmp_path / "scan.tif"
    image.write_bytes(b"not a tiff")
    code, _, err = _run(capsys, "auto", image, "--model", "vit_tiny", "--out", tmp_path / "o.tif")
    assert code == 2
    assert err == (f"hqsam auto: error: cannot read image {image}: not a TIFF file: "
                   "header=b'not '\n")


def test_malformed_json_prompt_is_one_line(tmp_path, capsys):
    prompts = tmp_path / "p.json"
    prompts.write_text('[{"slice": [3], "box": [1, 2, 3]}]')
    code, _, err = _run(capsys, "segment", IMAGE, "--prompts", prompts, "--model", "vit_tiny",
                        "--out", tmp_path / "o.tif")
    assert code == 2
    assert err.startswith(f"hqsam segment: error: prompt file {prompts}, entry 0: ")
    assert err.count("\n") == 1


def test_malformed_crop_is_one_line(capsys):
    code, out, err = _run(capsys, "evaluate", "--image", IMAGE, "--labels", LABELS,
                          "--crop", "0:10", "--model", "vit_tiny")
    assert code == 2 and out == ""
    assert err == "hqsam evaluate: error: --crop '0:10': give Y0:Y1,X0:X1, e.g. ':,:256'.\n"


def test_empty_crop_is_one_line(capsys):
    code, _, err = _run(capsys, "train", "--image", IMAGE, "--labels", LABELS, "--crop", "0:0,:",
                        "--model", "vit_tiny", "--out", "never.pt")
    assert code == 2
    assert err == f"hqsam train: error: the crop leaves nothing of {LABELS}.\n"


def test_unpaired_training_files_are_one_line(capsys):
    code, _, err = _run(capsys, "train", "--image", IMAGE, "--image", IMAGE, "--labels", LABELS,
                        "--model", "vit_tiny", "--out", "never.pt")
    assert code == 2
    assert err == ("hqsam train: error: give one --labels per --image (2 images, 1 label "
                   "files).\n")


@pytest.mark.parametrize("exc", [
    InputError("bad prompt"),
    MissingFileError("bad prompt"),
    OutputError("bad prompt"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "bad prompt"),
    FileExistsError(errno.EEXIST, "File exists", "bad prompt"),
    PermissionError(errno.EACCES, "Permission denied", "bad prompt"),
    IsADirectoryError(errno.EISDIR, "Is a directory", "bad prompt"),
    NotADirectoryError(errno.ENOTDIR, "Not a directory", "bad prompt"),
    OSError(errno.ENOSPC, "No space left on device", "bad prompt"),
    OSError(errno.EROFS, "Read-only file system", "bad prompt"),
], ids=_name)
def test_user_errors_print_one_line(monkeypatch, capsys, exc):
    monkeypatch.setattr(info, "run", _raising(exc))
    code, out, err = _run(capsys, "info")
    assert code == 2 and out == ""
    assert err == f"hqsam info: error: {exc}\n"
    assert "bad prompt" in err


def test_disk_full_names_the_file(monkeypatch, capsys):
    exc = OSError(errno.ENOSPC, "No space left on device", "/data/labels.zarr")
    monkeypatch.setattr(info, "run", _raising(exc))
    code, _, err = _run(capsys, "info")
    assert code == 2
    assert err == ("hqsam info: error: [Errno 28] No space left on device: "
                   "'/data/labels.zarr'\n")


# --- bugs: traceback and where to report, exit 1 -------------------------------------------

@pytest.mark.parametrize("exc", [
    RuntimeError("boom"),
    ZeroDivisionError("boom"),
    ValueError("boom"),  # a bare ValueError is not a user error: it comes from a bug
    KeyError("boom"),
    OSError(errno.EIO, "boom"),
], ids=_name)
def test_other_errors_keep_their_traceback(monkeypatch, capsys, exc):
    monkeypatch.setattr(info, "run", _raising(exc))
    code, out, err = _run(capsys, "info")
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert any(line.strip() == "raise exc" for line in lines)  # the failing frame is shown
    assert lines[-2] == f"{type(exc).__name__}: {exc}"
    assert lines[-1] == (f"hqsam: this is a bug in napari-hq-sam {__version__}; please report "
                         f"it at {BUG_TRACKER} with the command line (hqsam info) and the "
                         "traceback above.")


def test_bug_report_quotes_the_command_line(monkeypatch, capsys, tmp_path):
    from napari_hq_sam.commands import segment

    monkeypatch.setattr(segment, "run", _raising(ZeroDivisionError("division by zero")))
    code, _, err = _run(capsys, "segment", "my image.tif", "--prompts", "p.csv", "--model",
                        "vit_b", "--out", "o.tif")
    assert code == 1
    assert ("with the command line (hqsam segment 'my image.tif' --prompts p.csv --model vit_b "
            "--out o.tif)") in err.splitlines()[-1]


def test_bug_tracker_is_the_one_in_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^"Bug Tracker" = "(.+)"$', text, re.M)[1] == BUG_TRACKER


def test_interrupt_exits_130(monkeypatch, capsys):
    monkeypatch.setattr(info, "run", _raising(KeyboardInterrupt()))
    code, _, err = _run(capsys, "info")
    assert code == 130 and err == "hqsam: interrupted\n"


# --- shared option groups ------------------------------------------------------------------

# Each shared option as ``--help`` lists it: the flag with its metavar, then its help.
SHARED = {
    "--model": "--model {vit_tiny,vit_b,vit_l,vit_h} HQ-SAM model type",
    "--device": "--device DEVICE cuda, mps or cpu (default: best available)",
    "--precision": "--precision {fp32,bf16,fp16,auto} encoder precision (default fp32, exact)",
    "--cache": "--cache DIR zarr folder caching embeddings: reruns reuse them, killed runs resume",
    "--scheduler": "--scheduler ADDRESS join a Dask scheduler",
    "--quiet": "--quiet no progress bar",
    "--axes": "--axes AXES axis hint such as TCZYX (needed for 5-D images)",
    "--crop": "--crop Y0:Y1,X0:X1 use only this window of the Y and X axes, numpy style, e.g. "
              "':,:256' for the left 256 columns",
}
EXPECTED = {
    "download": {"--quiet"},
    "info": set(),
    "embed": {"--model", "--device", "--precision", "--cache", "--scheduler", "--quiet",
              "--axes"},
    "segment": {"--model", "--device", "--precision", "--cache", "--scheduler", "--quiet",
                "--axes"},
    "auto": {"--model", "--device", "--precision", "--cache", "--scheduler", "--quiet",
             "--axes"},
    "refine": {"--model", "--device", "--precision", "--cache", "--scheduler", "--quiet",
               "--axes"},
    "train": {"--model", "--device", "--quiet", "--crop"},
    "evaluate": {"--model", "--device", "--crop"},
}


def _help(capsys, monkeypatch, command: str) -> str:
    """``hqsam COMMAND --help`` with its line breaks and column padding as single spaces."""
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_every_subcommand_is_checked():
    assert set(EXPECTED) == set(SUBCOMMAND_MODULES)


@pytest.mark.parametrize("command", SUBCOMMAND_MODULES)
def test_subcommands_have_their_shared_groups(capsys, monkeypatch, command):
    text = _help(capsys, monkeypatch, command)
    for option, listed in SHARED.items():
        assert (listed in text) == (option in EXPECTED[command]), (command, option)
