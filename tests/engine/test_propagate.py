"""Through-z propagation logic, with a stand-in segmenter whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from napari_hq_sam.engine.image import describe_layout
from napari_hq_sam.engine.prompts import ObjectPrompt
from napari_hq_sam.engine.propagate import prompt_from_mask, propagate_objects
from napari_hq_sam.engine.runner import SlicePlan, StackResult

N, SIZE = 12, 20


class ShrinkingSegmenter:
    """Answers each prompt with its box shrunk by one pixel per side; score by slice."""

    def __init__(self, scores):
        self.scores, self.z, self.prompts = scores, None, []
        self.computed = self.reused = 0

    def set_image(self, image):
        self.z = int(round(float(image[0, 0, 0]) * (N - 1) / 255))  # slice z holds value z

    def decode(self, prompt):
        assert prompt.slice_index[-1] == self.z  # the image of the prompted slice was set
        self.prompts.append(prompt)
        x0, y0, x1, y1 = prompt.box.astype(int)
        mask = np.zeros((SIZE, SIZE), bool)
        mask[y0 + 1:y1, x0 + 1:x1] = True
        return mask, self.scores(self.z), np.zeros((1, 256, 256), np.float32)


def _plan(stack):
    """Slice z of ``stack`` maps to model intensity 255 * z / (N - 1)."""
    return SlicePlan(describe_layout(stack.shape), (0.0, N - 1.0), [])


def _square(lo, hi):
    m = np.zeros((SIZE, SIZE), bool)
    m[lo:hi, lo:hi] = True
    return m


@pytest.fixture
def stack():
    return np.broadcast_to(np.arange(N, dtype=np.float32)[:, None, None], (N, SIZE, SIZE))


def test_prompt_from_mask():
    p = prompt_from_mask(_square(5, 12), (3,), 4)
    assert np.array_equal(p.box, [5, 5, 11, 11]) and np.array_equal(p.points, [[8, 8]])
    assert p.labels.tolist() == [1] and p.object_id == 4
    assert prompt_from_mask(np.zeros((4, 4), bool), (3,), 4) is None


def test_propagates_both_ways_until_vanished_or_low_score(stack):
    labels = np.zeros((N, SIZE, SIZE), np.uint16)
    labels[6][_square(5, 12)] = 1  # the seed: 7x7 on slice 6
    labels[7, 6, 6] = 5  # another object, in the way
    seg = ShrinkingSegmenter(lambda z: 0.9 if z >= 4 else 0.1)
    result = StackResult(labels, slices=[(6,)])
    calls = []
    seed = ObjectPrompt((6,), box=[5, 5, 11, 11], object_id=1)
    propagate_objects(seg, stack, _plan(stack), {(6,): [seed]}, result,
                      score_threshold=0.5, progress=lambda d, t: calls.append((d, t)))
    # up: 5x5, 3x3, 1x1, then empty at 10; down: 5x5 on 5, 3x3 on 4, score 0.1 on 3
    assert result.slices == [(6,), (7,), (8,), (9,), (5,), (4,)]
    for z, (lo, hi) in {7: (6, 11), 8: (7, 10), 9: (8, 9), 5: (6, 11), 4: (7, 10)}.items():
        expected = np.where(_square(lo, hi), 1, 0)
        if z == 7:
            expected[6, 6] = 5  # not overwritten
        assert np.array_equal(labels[z], expected), z
    assert not labels[[0, 1, 2, 3, 10, 11]].any()
    assert [p.slice_index[0] for p in seg.prompts] == [7, 8, 9, 10, 5, 4, 3]
    assert calls[-1] == (6, 6) and result.scores[((8,), 1)] == 0.9


def test_stops_at_other_prompted_slices_of_the_object(stack):
    labels = np.zeros((N, SIZE, SIZE), np.uint16)
    labels[3][_square(2, 18)] = 2
    labels[6][_square(2, 18)] = 2
    seg = ShrinkingSegmenter(lambda z: 0.9)
    groups = {(3,): [ObjectPrompt((3,), box=[2, 2, 17, 17], object_id=2)],
              (6,): [ObjectPrompt((6,), box=[2, 2, 17, 17], object_id=2)]}
    result = StackResult(labels, slices=[(3,), (6,)])
    propagate_objects(seg, stack, _plan(stack), groups, result)
    visited = result.slices[2:]
    assert len(visited) == len(set(visited))  # no slice segmented twice
    assert {(4,), (5,)} <= set(visited) and (3,) not in visited and (6,) not in visited
    assert labels[4:6].any(axis=(1, 2)).all()
