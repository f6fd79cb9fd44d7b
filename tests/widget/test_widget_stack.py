"""Stack runs and z-propagation from the widget, in a real viewer, against the engine."""

from __future__ import annotations

import numpy as np
from widget_utils import box, click, dock_widget

from napari_hq_sam.engine.prompts import ObjectPrompt
from napari_hq_sam.engine.propagate import propagate_objects
from napari_hq_sam.engine.runner import StackResult, plan_slices
from napari_hq_sam.engine.segmenter import SliceSegmenter
from napari_hq_sam.engine.stack import segment_stack

STACK = slice(8, 15)  # 7 z-slices of the real nuclei stack (same crop as test_widget.py)


def engine_segmenter(widget):
    """A segmenter on the widget's model and embedding cache (none of the widget's code)."""
    controller = widget.controller
    return SliceSegmenter(controller.model, cache=controller.session.cache)


def engine_run(widget, stack, prompts, contrast_limits, **kwargs):
    """The engine's own stack run with the widget's model and cache."""
    return segment_stack(stack, prompts, segmenter=engine_segmenter(widget),
                         contrast_limits=contrast_limits, **kwargs)


def written(labels) -> list[tuple[int]]:
    """Slices of a ZYX labels array that hold any object."""
    return [(z,) for z in range(labels.shape[0]) if labels[z].any()]


def done_status(n: int, layer: str = "HQ-SAM labels") -> str:
    """How the status line starts after a finished run that changed ``n`` slices."""
    return f"Done: {n} {'slice' if n == 1 else 'slices'} written to '{layer}'"


def test_stack_run_segments_every_prompted_slice(make_napari_viewer, qtbot, tiny_checkpoint,
                                                 nuclei3d):
    stack = nuclei3d[STACK]
    viewer = make_napari_viewer()
    image = viewer.add_image(stack, name="nuclei3d")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    points, boxes = widget.controller.prompt_layers()
    points.add([[1, 30.0, 28.0]])
    boxes.add(box(10, 12, 40, 45, lead=[4]), shape_type="rectangle")
    points.add([[4, 25.0, 30.0]])  # inside the box: refines that object
    click(qtbot, widget, widget.stack_button)

    labels = viewer.layers["HQ-SAM labels"].data
    assert written(labels) == [(1,), (4,)]
    ref = engine_run(widget, stack, [
        ObjectPrompt((1,), points=[[28, 30]], labels=[1], object_id=1),
        ObjectPrompt((4,), points=[[30, 25]], labels=[1], box=[12, 10, 45, 40], object_id=2)],
        image.contrast_limits)
    np.testing.assert_array_equal(labels, ref.labels)
    assert set(np.unique(labels[1])) == {0, 1} and set(np.unique(labels[4])) == {0, 2}
    assert widget.status.text().startswith(done_status(2))
    click(qtbot, widget, widget.undo_button)
    assert not labels.any()


def test_cancel_keeps_finished_slices(make_napari_viewer, qtbot, tiny_checkpoint, nuclei3d):
    stack = nuclei3d[STACK]
    viewer = make_napari_viewer()
    image = viewer.add_image(stack, name="nuclei3d")
    image.contrast_limits = (110, 300)  # slices no other test embedded: each one is slow
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    points, _ = widget.controller.prompt_layers()
    points.add([[0, 30.0, 28.0], [3, 30.0, 28.0], [6, 30.0, 28.0]])
    runner = widget.controller.runner
    reports = []

    def cancel_on_first(done, total):
        if total == 3:  # the stack run's reports (not the model loading's)
            reports.append((done, total))
            if len(reports) == 1:
                widget.cancel_button.click()

    runner.progressed.connect(cancel_on_first)
    click(qtbot, widget, widget.stack_button)
    runner.progressed.disconnect(cancel_on_first)

    labels = viewer.layers["HQ-SAM labels"].data
    assert reports[0] == (1, 3)
    ref = engine_run(widget, stack, [ObjectPrompt((z,), points=[[28, 30]], object_id=k)
                                     for k, z in enumerate((0, 3, 6), start=1)],
                     image.contrast_limits)
    assert written(ref.labels) == [(0,), (3,), (6,)]  # each prompt gives an object
    kept = written(labels)
    assert kept[0] == (0,) and (6,) not in kept  # slice 0 finished, the run stopped early
    for z in kept:
        np.testing.assert_array_equal(labels[z], ref.labels[z])
    slices = "1 slice" if len(kept) == 1 else f"{len(kept)} slices"
    assert widget.status.text().startswith(f"Cancelled, kept {slices} written")
    assert len(points.data) == 3  # a stack run keeps the prompts for a rerun


def test_propagation_follows_threshold(make_napari_viewer, qtbot, tiny_checkpoint, nuclei3d):
    stack = nuclei3d[STACK]
    viewer = make_napari_viewer()
    image = viewer.add_image(stack, name="nuclei3d")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.prompt_layers_button.click()
    _, boxes = widget.controller.prompt_layers()
    viewer.dims.set_current_step(0, 3)

    widget.threshold_spin.setValue(1.0)  # no predicted IoU reaches 1: the seed slice only
    boxes.add(box(10, 12, 40, 45, lead=[3]), shape_type="rectangle")
    click(qtbot, widget, widget.propagate_button)
    labels = viewer.layers["HQ-SAM labels"].data
    assert written(labels) == [(3,)], "the seeded test weights give a non-empty seed mask"
    assert widget.status.text().startswith(done_status(1))
    assert len(boxes.data) == 0  # the seed prompt was consumed
    click(qtbot, widget, widget.undo_button)
    assert not labels.any() and len(boxes.data) == 1

    widget.threshold_spin.setValue(-1.0)  # stop only where the mask vanishes
    click(qtbot, widget, widget.propagate_button)
    ref = engine_run(widget, stack, [ObjectPrompt((3,), box=[12, 10, 45, 40], object_id=1)],
                     image.contrast_limits, propagate=True, score_threshold=-1.0)
    np.testing.assert_array_equal(labels, ref.labels)
    assert len(written(labels)) > 1  # it went beyond the seed slice
    assert widget.status.text().startswith(done_status(len(written(labels))))
    assert set(np.unique(labels)) == {0, 1}  # one object, one id through z


def test_propagate_an_existing_labels_object(make_napari_viewer, qtbot, tiny_checkpoint,
                                             nuclei3d, nuclei3d_labels):
    stack, truth = nuclei3d[STACK], nuclei3d_labels[STACK]
    viewer = make_napari_viewer()
    image = viewer.add_image(stack, name="nuclei3d")
    seeded = np.zeros_like(truth)
    ids, counts = np.unique(truth[3][truth[3] > 0], return_counts=True)
    object_id = int(ids[counts.argmax()])
    seeded[3][truth[3] == object_id] = object_id
    other = seeded.copy()
    other[5, :5, :5] = 99  # another object that must stay
    target = viewer.add_labels(other.copy(), name="seeded")
    widget = dock_widget(viewer, tiny_checkpoint)
    widget.labels_combo.setCurrentText("seeded")
    widget.threshold_spin.setValue(-1.0)
    widget.refine_spin.setValue(object_id)
    viewer.dims.set_current_step(0, 3)
    click(qtbot, widget, widget.propagate_button)

    np.testing.assert_array_equal(target.data[3], other[3])  # the seed is kept as it was
    assert (target.data[5, :5, :5] == 99).all()  # another object is never overwritten
    expected = StackResult(other.copy())  # the engine alone, from the same seed
    plan = plan_slices(stack, contrast_limits=image.contrast_limits, slices=[(3,)])
    propagate_objects(engine_segmenter(widget), stack, plan,
                      {(3,): [ObjectPrompt((3,), box=[0, 0, 5, 5], object_id=object_id)]},
                      expected, score_threshold=-1.0)
    np.testing.assert_array_equal(target.data, expected.labels)
    changed = [z for z in range(len(other)) if not np.array_equal(target.data[z], other[z])]
    assert changed, "the object reached other slices"
    assert widget.status.text().startswith(done_status(len(changed), "seeded"))
