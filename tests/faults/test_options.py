"""Fault matrix, command-line options: counts must be positive, numbers finite and in range.

argparse refuses such a value while parsing (exit 2, no traceback, the option and
what it must be), before any file is opened: the files named here do not exist.
"""

from __future__ import annotations

import pytest
from fault_utils import run_cli

from napari_hq_sam.cli import build_parser

# Required arguments of each subcommand (none of these files exist: never opened).
BASE = {
    "segment": ["segment", "img.tif", "--prompts", "p.csv", "--model", "vit_tiny",
                "--out", "o.tif"],
    "auto": ["auto", "img.tif", "--model", "vit_tiny", "--out", "o.tif"],
    "embed": ["embed", "img.tif", "--model", "vit_tiny", "--cache", "c.zarr"],
    "evaluate": ["evaluate", "--image", "img.tif", "--labels", "l.tif", "--model", "vit_tiny"],
    "train": ["train", "--image", "img.tif", "--labels", "l.tif", "--model", "vit_tiny",
              "--out", "a.pt"],
}

POSITIVE = "must be at least 1"
NON_NEGATIVE = "must be 0 or more"
UNIT = "must be from 0 to 1"
FINITE = "is not a finite number"

# (subcommand, option, values, what the message says)
CASES = [
    ("segment", "--batch-size", ["0"], POSITIVE),
    ("segment", "--batch-size", ["-3"], POSITIVE),
    ("segment", "--batch-size", ["2.5"], "'2.5' is not a whole number"),
    ("segment", "--workers", ["0"], POSITIVE),
    ("segment", "--score-threshold", ["nan"], FINITE),
    ("segment", "--score-threshold", ["1.5"], UNIT),
    ("segment", "--score-threshold", ["-0.1"], UNIT),
    ("segment", "--contrast-limits", ["5", "5"], "LOW must be below HIGH, got 5 5"),
    ("segment", "--contrast-limits", ["10", "1"], "LOW must be below HIGH, got 10 1"),
    ("segment", "--contrast-limits", ["nan", "1"], FINITE),
    ("segment", "--contrast-limits", ["0", "inf"], FINITE),
    ("auto", "--points-per-side", ["0"], POSITIVE),
    ("auto", "--points-per-batch", ["-1"], POSITIVE),
    ("auto", "--pred-iou-thresh", ["nan"], FINITE),
    ("auto", "--stability-thresh", ["2"], UNIT),
    ("auto", "--nms-thresh", ["-1"], UNIT),
    ("auto", "--crop-layers", ["-1"], NON_NEGATIVE),
    ("auto", "--min-area", ["-5"], NON_NEGATIVE),
    ("auto", "--stitch-iou", ["1.5"], UNIT),
    ("auto", "--stitch-iou", ["inf"], FINITE),
    ("auto", "--workers", ["-2"], POSITIVE),
    ("auto", "--contrast-limits", ["1", "inf"], FINITE),
    ("embed", "--batch-size", ["0"], POSITIVE),
    ("embed", "--workers", ["0"], POSITIVE),
    ("embed", "--contrast-limits", ["3", "1"], "LOW must be below HIGH"),
    ("evaluate", "--batch-size", ["0"], POSITIVE),
    ("train", "--steps", ["0"], POSITIVE),
    ("train", "--batch-size", ["-1"], POSITIVE),
    ("train", "--eval-every", ["0"], POSITIVE),
    ("train", "--lr", ["0"], "must be above 0"),
    ("train", "--lr", ["nan"], FINITE),
    ("train", "--val-fraction", ["1"], "must be at least 0 and below 1"),
    ("train", "--val-fraction", ["-0.1"], "must be at least 0 and below 1"),
    ("train", "--seed", ["-1"], NON_NEGATIVE),
]


def _id(case) -> str:
    return f"{case[0]} {case[1]} {' '.join(case[2])}"


@pytest.mark.parametrize("command, option, values, message", CASES, ids=map(_id, CASES))
def test_nonsense_option_is_refused(tmp_path, monkeypatch, command, option, values, message):
    monkeypatch.chdir(tmp_path)
    outcome = run_cli([*BASE[command], option, *values])
    assert outcome.code == 2 and outcome.stdout == ""
    assert "Traceback" not in outcome.stderr
    errors = [line for line in outcome.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, outcome.stderr
    assert errors[0].startswith(f"hqsam {command}: error: argument {option}: "), errors[0]
    assert message in errors[0], errors[0]
    # anything else argparse prints is its usage text
    others = [line for line in outcome.stderr.splitlines() if line not in errors]
    assert all(line.startswith(("usage:", " ")) for line in others), others
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize("argv, expected", [
    (BASE["segment"] + ["--score-threshold", "0", "--batch-size", "1", "--workers", "1"],
     {"score_threshold": 0.0, "batch_size": 1, "workers": 1}),
    (BASE["segment"] + ["--score-threshold", "1", "--contrast-limits", "-5", "1e3"],
     {"score_threshold": 1.0, "contrast_limits": [-5.0, 1000.0]}),
    (BASE["auto"] + ["--crop-layers", "0", "--min-area", "0", "--stitch-iou", "0",
                     "--pred-iou-thresh", "1", "--points-per-side", "1"],
     {"crop_n_layers": 0, "min_mask_region_area": 0, "stitch_iou": 0.0,
      "pred_iou_thresh": 1.0, "points_per_side": 1}),
    (BASE["train"] + ["--val-fraction", "0", "--seed", "0", "--lr", "1e-5", "--steps", "1"],
     {"val_fraction": 0.0, "seed": 0, "lr": 1e-5, "steps": 1}),
    (BASE["auto"], {"points_per_side": 32, "pred_iou_thresh": 0.88, "stitch_iou": 0.5,
                    "contrast_limits": None}),  # the defaults pass their own checks
    (BASE["train"], {"steps": 300, "batch_size": 4, "lr": 1e-3, "val_fraction": 0.2,
                     "eval_every": 25, "seed": 0}),
])
def test_values_at_the_limits_are_accepted(argv, expected):
    args = build_parser().parse_args(argv)
    assert {name: getattr(args, name) for name in expected} == expected
