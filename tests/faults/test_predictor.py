"""The Python API's first entry points, called wrongly: each call is an InputError.

``HQSamPredictor`` (official ``SamPredictor`` contract), ``AutomaticMaskGenerator``
and ``build_hq_sam`` check their arguments at the boundary: every wrong call below
raises :class:`~napari_hq_sam.errors.InputError` (a ``ValueError``) whose one-line
message names the argument and what was given, and leaves the predictor's current
image as it was. Valid calls, including the forms the checks must keep accepting
(labels of -1 in batches, a (1, 4) box, a mask from a previous call), still give the
official ``segment_anything_hq`` package's logits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nuclei_utils import grey_to_rgb

from napari_hq_sam import HQSamPredictor, build_hq_sam
from napari_hq_sam.automatic import AutoMaskConfig, AutomaticMaskGenerator
from napari_hq_sam.errors import HQSamError, InputError

MAX_REL_DIFF = 1e-4
H, W = 96, 128
POINT = np.array([[70.0, 40.0]])
BOX = np.array([40.0, 15.0, 100.0, 70.0])


@pytest.fixture(scope="module")
def image(nuclei2d) -> np.ndarray:
    """(96, 128, 3) uint8 crop of the real nuclei image."""
    return grey_to_rgb(nuclei2d[100:100 + H, 60:60 + W])


@pytest.fixture(scope="module")
def predictor(tiny_model, image) -> HQSamPredictor:
    predictor = HQSamPredictor(tiny_model)
    predictor.set_image(image)
    return predictor


def _low_res(predictor: HQSamPredictor) -> np.ndarray:
    return predictor.predict(point_coords=POINT, point_labels=np.array([1]),
                             return_logits=True)[2]


def _call(predictor, call):
    """Run ``call(predictor)``; return the InputError's message (one line)."""
    with pytest.raises(InputError) as info:
        call(predictor)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, HQSamError)
    assert "\n" not in message, message
    return message


def _assert_names(message: str, fragments: tuple[str, ...]) -> None:
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)


def _image(kind: str, rgb: np.ndarray):
    """Wrong images made from the real crop ``rgb`` (never all-zero)."""
    return {
        "float32 0-255": lambda: rgb.astype(np.float32),
        "float 0-1": lambda: rgb.astype(np.float64) / 255.0,
        "all NaN": lambda: np.full(rgb.shape, np.nan),
        "uint16": lambda: rgb.astype(np.uint16) * 257,
        "bool": lambda: rgb > 100,
        "CHW": lambda: np.ascontiguousarray(rgb.transpose(2, 0, 1)),
        "2-D grey": lambda: rgb[..., 0],
        "RGBA": lambda: np.concatenate([rgb, rgb[..., :1]], axis=-1),
        "stack": lambda: np.stack([rgb, rgb]),
        "empty": lambda: rgb[:0],
        "list": lambda: rgb.tolist(),
        "tensor": lambda: torch.from_numpy(rgb),
        "too elongated": lambda: np.tile(rgb[:1, :2], (1, 1500, 1)),
    }[kind]()


# wrong image -> (the argument, what was given, the hint)
IMAGE_CASES = {
    "float32 0-255": ("image", "float32", "to_model_image"),
    "float 0-1": ("image", "float64", "not rescaled"),
    "all NaN": ("image", "float64", "to_model_image"),
    "uint16": ("image", "uint16", "to_model_image"),
    "bool": ("image", "bool", "uint8"),
    "CHW": ("image", "(3, 96, 128)", "transpose(1, 2, 0)"),
    "2-D grey": ("image", "(96, 128)", "grey"),
    "RGBA": ("image", "(96, 128, 4)", "alpha"),
    "stack": ("image", "(2, 96, 128, 3)", "segment_stack"),
    "empty": ("image", "(0, 128, 3)", "empty"),
    "list": ("image", "list", "numpy"),
    "tensor": ("image", "tensor of shape (96, 128, 3)", "set_torch_image"),
    "too elongated": ("image", "1 x 3000", "elongated"),
}


@pytest.mark.parametrize("kind", list(IMAGE_CASES))
def test_set_image_refuses(predictor, image, kind):
    before = predictor.features.clone()
    message = _call(predictor, lambda p: p.set_image(_image(kind, image)))
    _assert_names(message, IMAGE_CASES[kind])
    # refused before anything was computed: the current image stays set
    assert predictor.is_image_set and torch.equal(predictor.features, before)


def test_set_image_refuses_unknown_format(predictor, image):
    message = _call(predictor, lambda p: p.set_image(image, image_format="rgb"))
    _assert_names(message, ("image_format", "'rgb'", "'BGR'"))


def _labels(*values):
    return np.array(values)


# wrong predict call -> (keyword arguments, fragments the message must name)
PREDICT_CASES = {
    "label 5": (dict(point_coords=POINT, point_labels=_labels(5)), ("point_labels", "[5]")),
    "label -1": (dict(point_coords=POINT, point_labels=_labels(-1)), ("point_labels", "[-1]")),
    "label 0.5": (dict(point_coords=POINT, point_labels=_labels(0.5)), ("point_labels", "0.5")),
    "label string": (dict(point_coords=POINT, point_labels=["positive"]),
                     ("point_labels", "'positive'", "(1,)")),
    "NaN coordinate": (dict(point_coords=np.array([[70.0, np.nan]]), point_labels=_labels(1)),
                       ("point_coords", "nan", "finite")),
    "inf coordinate": (dict(point_coords=np.array([[np.inf, 4.0]]), point_labels=_labels(1)),
                       ("point_coords", "inf", "finite")),
    "coordinates (N, 3)": (dict(point_coords=np.array([[3.0, 70.0, 40.0]]),
                                point_labels=_labels(1)),
                           ("point_coords", "(1, 3)", "(N, 2)")),
    "coordinates 1-D": (dict(point_coords=np.array([70.0, 40.0]), point_labels=_labels(1)),
                        ("point_coords", "(2,)", "[[x, y]]")),
    "coordinates 3-D": (dict(point_coords=POINT[None], point_labels=_labels(1)),
                        ("point_coords", "(1, 1, 2)", "predict_torch")),
    "coordinates text": (dict(point_coords="70,40", point_labels=_labels(1)),
                         ("point_coords", "str")),
    "coordinates ragged": (dict(point_coords=[[70.0, 40.0], [3.0]], point_labels=_labels(1, 1)),
                           ("point_coords", "list")),
    "label count": (dict(point_coords=POINT, point_labels=_labels(1, 0)),
                    ("point_labels", "(2,)", "(1,)")),
    "labels missing": (dict(point_coords=POINT), ("point_labels", "(1,)")),
    "labels without points": (dict(point_labels=_labels(1), box=BOX),
                              ("point_labels", "without point_coords")),
    "box of 3": (dict(box=BOX[:3]), ("box", "(3,)", "XYXY")),
    "box 2x4": (dict(box=np.stack([BOX, BOX])), ("box", "(2, 4)", "predict_torch")),
    "box reversed": (dict(box=BOX[[2, 3, 0, 1]]), ("box", "x0 <= x1", "[100.0, 70.0, 40.0")),
    "box NaN": (dict(box=np.array([40.0, np.nan, 100.0, 70.0])), ("box", "nan", "finite")),
    "box bool": (dict(box=np.ones(4, bool)), ("box", "bool")),
    "mask 2-D": (dict(box=BOX, mask_input=np.zeros((256, 256), np.float32)),
                 ("mask_input", "(256, 256)", "low_res_logits")),
    "mask 64x64": (dict(box=BOX, mask_input=np.zeros((1, 64, 64), np.float32)),
                   ("mask_input", "(1, 64, 64)", "(1, 256, 256)")),
    "mask bool": (dict(box=BOX, mask_input=np.ones((1, 256, 256), bool)),
                  ("mask_input", "bool", "mask_to_logits")),
    "mask NaN": (dict(box=BOX, mask_input=np.full((1, 256, 256), np.nan, np.float32)),
                 ("mask_input", "nan", "finite")),
    "multimask text": (dict(box=BOX, multimask_output="no"), ("multimask_output", "'no'")),
    "hq_token_only None": (dict(box=BOX, hq_token_only=None), ("hq_token_only", "None")),
    "return_logits 2": (dict(box=BOX, return_logits=2), ("return_logits", "2")),
    "no prompt": ({}, ("prompt", "none was given")),
    "no points": (dict(point_coords=np.zeros((0, 2)), point_labels=np.zeros(0)),
                  ("prompt", "none was given")),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_predict_refuses(predictor, case):
    kwargs, fragments = PREDICT_CASES[case]
    _assert_names(_call(predictor, lambda p: p.predict(**kwargs)), fragments)


def _torch_prompts(predictor, kind):
    """Wrong ``predict_torch`` arguments, as keyword arguments."""
    coords = torch.as_tensor(predictor.transform.apply_coords(POINT, (H, W)),
                             dtype=torch.float)[None]
    labels = torch.ones(1, 1, dtype=torch.int)
    boxes = torch.as_tensor(predictor.transform.apply_boxes(BOX, (H, W)), dtype=torch.float)
    return {
        "label 2": dict(point_coords=coords, point_labels=labels + 1),
        "NaN coordinate": dict(point_coords=coords * torch.tensor([1.0, float("nan")]),
                               point_labels=labels),
        "labels shape": dict(point_coords=coords, point_labels=labels[0]),
        "coordinates (B, 2)": dict(point_coords=coords[0], point_labels=labels),
        "numpy boxes": dict(point_coords=None, point_labels=None, boxes=boxes.numpy()),
        "boxes reversed": dict(point_coords=None, point_labels=None, boxes=boxes[:, [2, 3, 0, 1]]),
        "batch sizes": dict(point_coords=coords, point_labels=labels,
                            boxes=torch.cat([boxes, boxes])),
        "empty batch": dict(point_coords=coords[:0], point_labels=labels[:0]),
        "mask batch": dict(point_coords=coords.expand(3, 1, 2), point_labels=labels.expand(3, 1),
                           mask_input=torch.zeros(2, 1, 256, 256)),
        "no prompt": dict(point_coords=None, point_labels=None),
    }[kind]


TORCH_CASES = {
    "label 2": ("point_labels", "-1 (padding", "got 2"),
    "NaN coordinate": ("point_coords", "nan", "finite"),
    "labels shape": ("point_labels", "(1, 1)", "shape (1,)"),
    "coordinates (B, 2)": ("point_coords", "(B, N, 2)", "shape (1, 2)"),
    "numpy boxes": ("boxes", "array of shape (1, 4)", "predict"),
    "boxes reversed": ("boxes", "x0 <= x1", "row 0"),
    "batch sizes": ("batch size", "point_coords 1", "boxes 2"),
    "empty batch": ("batch of 0",),
    "mask batch": ("mask_input", "batch size 3", "(2, 1, 256, 256)"),
    "no prompt": ("predict_torch needs a prompt",),
}


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_predict_torch_refuses(predictor, case):
    kwargs = _torch_prompts(predictor, case)
    _assert_names(_call(predictor, lambda p: p.predict_torch(**kwargs)), TORCH_CASES[case])


def _torch_image(predictor, image, kind):
    resized = torch.as_tensor(predictor.transform.apply_image(image)).permute(2, 0, 1)[None]
    return {
        "numpy": (predictor.transform.apply_image(image), (H, W)),
        "long side 512": (resized[..., ::2, ::2], (H, W)),
        "normalised": ((resized.float() - 128.0) / 58.0, (H, W)),
        "NaN": (resized.float() * torch.nan, (H, W)),
        "other size": (resized, (H, W + 40)),
        "int64": (resized.long(), (H, W)),
    }[kind]


TORCH_IMAGE_CASES = {
    "numpy": ("transformed_image", "uint8 array", "set_image"),
    "long side 512": ("transformed_image", "(1, 3, 384, 512)", "long side 1024"),
    "normalised": ("transformed_image", "0-255", "range [-"),
    "NaN": ("transformed_image", "0-255", "nan"),
    "other size": ("original_image_size", "(96, 168)", "(768, 1024)"),
    "int64": ("transformed_image", "int64"),
}


@pytest.mark.parametrize("case", list(TORCH_IMAGE_CASES))
def test_set_torch_image_refuses(predictor, image, case):
    args = _torch_image(predictor, image, case)
    before = predictor.features.clone()
    _assert_names(_call(predictor, lambda p: p.set_torch_image(*args)), TORCH_IMAGE_CASES[case])
    assert torch.equal(predictor.features, before)


def test_wrong_embedding_and_model_are_named(tiny_model, predictor):
    _assert_names(_call(predictor, lambda p: p.set_image_embedding(predictor.features)),
                  ("embedding", "ImageEmbedding", "tensor of shape (1, 256, 64, 64)"))
    _assert_names(_call(None, lambda _: HQSamPredictor("vit_tiny")),
                  ("model", "HQSam", "str 'vit_tiny'"))
    _assert_names(_call(None, lambda _: build_hq_sam("vit_tiny", device="gpu")),
                  ("device", "'gpu'"))


@pytest.mark.parametrize("kind", ["list", "empty", "float32 0-255", "2-D grey"])
def test_automatic_generator_refuses_images(tiny_model, image, kind):
    generator = AutomaticMaskGenerator(tiny_model, AutoMaskConfig(points_per_side=4))
    _assert_names(_call(generator, lambda g: g.generate(_image(kind, image))),
                  IMAGE_CASES[kind])


def test_automatic_generator_refuses_model_and_embedding(tiny_model, image):
    _assert_names(_call(None, lambda _: AutomaticMaskGenerator("vit_tiny")),
                  ("model", "str 'vit_tiny'"))
    generator = AutomaticMaskGenerator(tiny_model, AutoMaskConfig(points_per_side=4))
    _assert_names(_call(generator, lambda g: g.generate(image, embedding=image)),
                  ("embedding", "ImageEmbedding", "uint8 array"))


def test_refused_calls_leave_the_predictor_working(predictor, image):
    """A wrong call between two good ones changes nothing."""
    first = _low_res(predictor)
    for kind in ("float32 0-255", "CHW"):
        with pytest.raises(InputError):
            predictor.set_image(_image(kind, image))
    with pytest.raises(InputError):
        predictor.predict(point_coords=POINT, point_labels=_labels(5))
    np.testing.assert_array_equal(_low_res(predictor), first)


# -- valid calls: the official package's logits ------------------------------------------
@pytest.fixture(scope="module")
def official(tiny_checkpoint, image):
    """The official package's predictor on the same checkpoint and image."""
    segment_anything_hq = pytest.importorskip("segment_anything_hq")
    model = segment_anything_hq.sam_model_registry["vit_tiny"](checkpoint=str(tiny_checkpoint))
    predictor = segment_anything_hq.SamPredictor(model.eval())
    predictor.set_image(image)
    return predictor


def _rel_diff(ours, ref) -> float:
    ours, ref = (np.asarray(torch.as_tensor(a).float()) for a in (ours, ref))
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


def _assert_same(ours, ref) -> None:
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert o.shape == r.shape
        assert _rel_diff(o, r) <= MAX_REL_DIFF


@pytest.mark.parametrize("case", ["points", "box (1, 4)", "box, points and mask"])
def test_valid_calls_match_official(predictor, official, case):
    points = np.array([[70.0, 40.0], [20.0, 85.0]])
    kwargs = dict(multimask_output=True, return_logits=True, hq_token_only=False)
    if case == "points":
        kwargs.update(point_coords=points, point_labels=np.array([1, 0]))
    elif case == "box (1, 4)":
        kwargs.update(box=BOX[None], multimask_output=False, hq_token_only=True)
    else:
        previous = official.predict(box=BOX, multimask_output=False)[2]
        kwargs.update(point_coords=points, point_labels=np.array([1, 0]), box=BOX,
                      mask_input=previous)
    ours, ref = predictor.predict(**kwargs), official.predict(**kwargs)
    _assert_same(ours, ref)
    # and the masks are not trivial: the prompts select part of the crop
    assert 0 < (ours[0] > 0).mean() < 1
    if case == "points":  # lists are read as the arrays they hold
        as_lists = predictor.predict(**dict(kwargs, point_coords=points.tolist(),
                                            point_labels=[1, 0]))
        for a, b in zip(as_lists, ours):
            np.testing.assert_array_equal(a, b)


def test_padded_batch_matches_official(predictor, official):
    """predict_torch keeps -1 labels (padding) and (B, 4) boxes, as the official does."""
    coords = torch.as_tensor(predictor.transform.apply_coords(
        np.array([[[70.0, 40.0], [0.0, 0.0]], [[20.0, 85.0], [30.0, 80.0]]]), (H, W)),
        dtype=torch.float)
    labels = torch.tensor([[1, -1], [1, 0]], dtype=torch.int)
    boxes = torch.as_tensor(predictor.transform.apply_boxes(np.stack([BOX, BOX + 5.0]), (H, W)),
                            dtype=torch.float)
    kwargs = dict(multimask_output=False, return_logits=True, hq_token_only=True)
    ours = predictor.predict_torch(coords, labels, boxes, **kwargs)
    ref = official.predict_torch(coords, labels, boxes, **kwargs)
    _assert_same(ours, ref)
