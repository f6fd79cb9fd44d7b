"""The "HQ-SAM image series" dock: step through a folder of images, labels saved as you go.

Open a folder, then Next / Previous: the image becomes the series' image layer
(replacing the previous one), its labels file ``OUT/NAME.tif`` is loaded as the
labels layer when it exists (zeros otherwise), and the prompt layers are emptied
and tied to it, so the segmentation dock works on it at once. Leaving an image
writes its labels (only when they changed; a file the series did not write is
replaced only after asking). An embeddings folder chosen in the model bar keeps
each image's embeddings, so going back to an image needs no encoder run.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QWidget,
)

from ..errors import InputError
from . import _layers, _series
from ._dock import row, scrolling_layout
from ._series import ImageSeries, default_output
from ._task_panel import TaskPanel


class ImageSeriesWidget(QWidget):
    """Dock widget stepping through the images of a folder.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    series : ImageSeries or None
    position : int or None
        Index of the image shown.
    confirm_overwrite : callable
        ``confirm_overwrite(path) -> 'replace' | 'keep' | 'cancel'``, asked before
        replacing a labels file the series did not write (a question box; tests
        replace it).
    """

    def __init__(self, napari_viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.series: ImageSeries | None = None
        self.position: int | None = None
        self.image_layer = self.labels_layer = None
        self._left = ""  # what happened to the labels of the image just left, if notable
        self.confirm_overwrite = self._ask_overwrite
        layout = scrolling_layout(self)
        layout.addWidget(self._folder_box())
        layout.addWidget(self._step_box())
        self.task_panel = TaskPanel()
        self.status = self.task_panel.status
        self.task_panel.set_status("Choose a folder of images and press Open.")
        layout.addWidget(self.task_panel)
        layout.addStretch(1)
        self._update_buttons()

    # -- view -------------------------------------------------------------------------------
    def _folder_box(self) -> QGroupBox:
        box = QGroupBox("Image series")
        form = QFormLayout(box)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder of .tif / .npy / .zarr images")
        self.folder_edit.setToolTip("The images, in name order (plate_2 before plate_10); a "
                                    "quoted glob such as plates/*.tif works too.")
        folder_button = QPushButton("Browse…")
        folder_button.clicked.connect(lambda: self._browse(self.folder_edit))
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("default: <folder>_labels")
        self.out_edit.setToolTip("Labels of image NAME go to NAME.tif here; an existing one "
                                 "is loaded when the image is opened.")
        out_button = QPushButton("Browse…")
        out_button.clicked.connect(lambda: self._browse(self.out_edit))
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(self.open_folder)
        form.addRow("Images", row(self.folder_edit, folder_button))
        form.addRow("Labels to", row(self.out_edit, out_button))
        form.addRow(self.open_button)
        return box

    def _step_box(self) -> QGroupBox:
        box = QGroupBox("Current image")
        form = QFormLayout(box)
        self.previous_button = QPushButton("◀ Previous")
        self.previous_button.clicked.connect(self.previous)
        self.next_button = QPushButton("Next ▶")
        self.next_button.clicked.connect(self.next)
        self.position_label = QLabel("no series open")
        self.save_button = QPushButton("Save labels")
        self.save_button.setToolTip("Write the current image's labels now (Next and Previous "
                                    "do it when you leave an image).")
        self.save_button.clicked.connect(self.save)
        form.addRow(row(self.previous_button, self.position_label, self.next_button))
        form.addRow(self.save_button)
        return box

    def _browse(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
        if folder:
            edit.setText(folder)

    def _update_buttons(self) -> None:
        n = len(self.series) if self.series is not None else 0
        at = self.position
        self.previous_button.setEnabled(at is not None and at > 0)
        self.next_button.setEnabled(at is not None and at + 1 < n)
        self.save_button.setEnabled(at is not None)
        if at is not None:
            name = self.series.images[at].name
            self.position_label.setText(f"{at + 1} / {n}: {name}")

    # -- actions ----------------------------------------------------------------------------
    def open_folder(self) -> None:
        """Open the folder's series at its first image (the current one is saved first)."""
        folder = self.folder_edit.text().strip()
        out = self.out_edit.text().strip() or None
        try:
            if not folder:
                raise ValueError("Choose the folder of images first.")
            series = ImageSeries(folder, out)
        except (ValueError, OSError) as exc:
            self.task_panel.show_error(exc)
            return
        if not self._leave():
            return
        self.series, self.position = series, None
        self.out_edit.setText(str(series.out if out else default_output(folder)))
        self.go(0)

    def next(self) -> None:
        """Save this image's labels and show the next image."""
        if self.position is not None:
            self.go(self.position + 1)

    def previous(self) -> None:
        """Save this image's labels and show the previous image."""
        if self.position is not None:
            self.go(self.position - 1)

    def save(self) -> None:
        """Write the current image's labels (when they changed)."""
        if self._leave(stay=True):
            self._update_buttons()

    def go(self, position: int) -> None:
        """Show image ``position``: save the current labels, then swap the layers.

        Nothing changes when the labels cannot be saved or the image cannot be read
        (the status line says why).
        """
        if self.series is None or not 0 <= position < len(self.series):
            return
        self._left = ""
        if not self._leave():
            return
        try:
            opened = self.series.open(position)
        except (ValueError, OSError) as exc:
            self.task_panel.show_error(exc)
            return
        except Exception as exc:  # a reader's own failure on a damaged file
            path = self.series.images[position].path
            self.task_panel.show_error(InputError(
                f"cannot read image {path.name} ({type(exc).__name__}: {exc}): it may be "
                "damaged; the other images of the series still open."))
            return
        self._show(opened)
        self.position = position
        self._update_buttons()
        source = "loaded from " + self.series.labels_path(position).name if opened.loaded \
            else "new labels"
        message = f"{self._left} {opened.member.name} ({source}).".lstrip()
        if opened.note:
            message += f" Note: {opened.note}"
        self.task_panel.set_status(message)

    def _leave(self, stay: bool = False) -> bool:
        """Save the labels of the image shown; False to stay on it (failed, or cancelled)."""
        if self.position is None or self.labels_layer not in self.viewer.layers:
            return True
        path = self.series.labels_path(self.position)
        try:
            outcome = self.series.save(self.position, self.labels_layer.data,
                                       self.confirm_overwrite)
        except (ValueError, OSError) as exc:
            self.task_panel.show_error(exc)
            return False
        if outcome == _series.CANCEL:
            self.task_panel.set_status(f"Stayed on {self.series.images[self.position].name}: "
                                       f"its labels are not saved ({path.name} exists).")
            return False
        if outcome == _series.KEEP:
            self._left = f"Kept {path.name}; the labels in the viewer were not saved."
            self.task_panel.set_status(self._left)
        elif stay:
            self.task_panel.set_status(f"Saved {path.name}." if outcome == _series.WRITTEN
                                       else f"Nothing new to save in {path.name}.")
        return True

    # -- layers -----------------------------------------------------------------------------
    def _show(self, opened) -> None:
        """Replace the series' image and labels layers by ``opened``'s; empty the prompts."""
        viewer = self.viewer
        name = self._free_name(opened.member.name)
        old_image = self.image_layer if self.image_layer in viewer.layers else None
        with _layers.keep_selection(viewer):
            if old_image is not None:
                self._reset_prompts(old_image.name, name)
            if self.labels_layer in viewer.layers:
                viewer.layers.remove(self.labels_layer)
            labels_name = _layers.RESULT_NAME
            if labels_name in viewer.layers:  # someone else's: keep it
                labels_name = f"{labels_name} [{name}]"
            self.labels_layer = viewer.add_labels(opened.labels, name=labels_name)
            _layers.tie(self.labels_layer, _layers.LABELS, name)
            image = viewer.add_image(opened.image, name=name,
                                     metadata={_layers.ROLE_KEY: _layers.SERIES})
            if old_image is not None:
                viewer.layers.remove(old_image)
            # the image under its labels and prompts
            viewer.layers.move(viewer.layers.index(image), 0)
        self.image_layer = image
        viewer.reset_view()

    def _free_name(self, name: str) -> str:
        """``name``, or ``name (series)`` when another layer already has it."""
        taken = {layer.name for layer in self.viewer.layers if layer is not self.image_layer}
        return name if name not in taken else f"{name} (series)"

    def _reset_prompts(self, old: str, new: str) -> None:
        """Empty the prompt layers of image ``old`` and tie them to image ``new``."""
        for role, kind in ((_layers.POINTS, "Points"), (_layers.BOXES, "Shapes")):
            layer = _layers.tied_layer(self.viewer, role, old, kind)
            if layer is None:
                continue
            if len(layer.data):
                layer.selected_data = set(range(len(layer.data)))
                layer.remove_selected()
            _layers.tie(layer, role, new)

    def _ask_overwrite(self, path: Path) -> str:
        box = QMessageBox(QMessageBox.Question, "Replace labels file?",
                          f"{path} exists and was not written by this series (or changed "
                          "since). Replace it with the labels in the viewer?", parent=self)
        replace = box.addButton("Replace", QMessageBox.AcceptRole)
        keep = box.addButton("Keep the file", QMessageBox.DestructiveRole)
        box.addButton("Cancel (stay)", QMessageBox.RejectRole)
        box.setInformativeText("Keep the file: the labels in the viewer are not saved.")
        box.exec()
        clicked = box.clickedButton()
        return (_series.REPLACE if clicked is replace else _series.KEEP if clicked is keep
                else _series.CANCEL)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        """Save the labels of the image shown before the dock goes."""
        self._leave()
        super().closeEvent(event)

