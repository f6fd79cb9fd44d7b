"""The model bar at the top of every HQ-SAM dock: one model per viewer, chosen once.

Every bar of a viewer edits and shows the same :class:`~napari_hq_sam.session.ViewerSession`:
loading in one widget loads for all of them (one copy in memory), and each bar's
"active model" line follows. Loading runs in the owning widget's task runner, so its
progress and errors show in that widget.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..errors import InputError
from ..model_types import MODEL_TYPES
from ..session import ModelChoice, viewer_session
from ._dock import row
from ._runner import TaskRunner

LOCAL_FILE = "local checkpoint file…"
SAM_AND_HQ, HQ_ONLY = "SAM + HQ (many objects)", "HQ only (single objects)"
MODE_TOOLTIP = ("Which mask logits to use. The HQ-SAM authors advise HQ only for single "
                "objects and SAM + HQ (summed) for scenes with many objects.")


class _Relay(QObject):
    """Brings session changes (from any thread) to the GUI thread."""

    changed = Signal()


class ModelBar(QGroupBox):
    """Choose, load and show the viewer's HQ-SAM model.

    Parameters
    ----------
    viewer : napari.Viewer
    runner : TaskRunner
        The owning widget's runner: loading shows its progress and errors there.
    """

    def __init__(self, viewer, runner: TaskRunner, parent: QWidget | None = None):
        super().__init__("Model", parent)
        self.session = viewer_session(viewer)
        self.runner = runner
        self._build()
        self._relay = _Relay()
        self._relay.changed.connect(self.refresh)
        self._unsubscribe = self.session.subscribe(lambda _s: self._relay.changed.emit())
        self.refresh()

    # -- view --------------------------------------------------------------------------------
    def _build(self) -> None:
        from ..device import available_devices

        self.active = QLabel()
        self.active.setWordWrap(True)
        self.active.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.settings_button = QPushButton("Change…")
        self.settings_button.setCheckable(True)
        self.settings_button.setToolTip("Show the model settings.")
        self.model_combo = QComboBox()
        self.model_combo.addItems([*MODEL_TYPES, LOCAL_FILE])
        self.model_combo.setToolTip("Official HQ-SAM weights (downloaded once and cached) or "
                                    "a local .pth file; vit_tiny is fastest on a CPU.")
        self.checkpoint_edit = QLineEdit()
        self.checkpoint_edit.setPlaceholderText("path to sam_hq_vit_*.pth")
        self.browse_button = QPushButton("…")
        self.browse_button.setMaximumWidth(30)
        self.adapter_edit = QLineEdit()
        self.adapter_edit.setPlaceholderText("none (optional adapter .pt from training)")
        self.adapter_button = QPushButton("…")
        self.adapter_button.setMaximumWidth(30)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *available_devices()])  # only what exists here
        self.precision_combo = QComboBox()
        self.precision_combo.addItems(["fp32", "auto", "bf16", "fp16"])
        self.precision_combo.setToolTip(
            "Encoder precision: fp32 exact; bf16/fp16 faster on GPUs and on CPUs with "
            "AVX512-BF16/AMX; auto picks the fastest here.")
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([SAM_AND_HQ, HQ_ONLY])
        self.mode_combo.setToolTip(MODE_TOOLTIP)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("memory only (optional folder, e.g. from hqsam embed)")
        self.folder_edit.setToolTip("A zarr folder that keeps this model's embeddings between "
                                    "sessions; `hqsam embed IMAGE --cache DIR` fills one.")
        self.folder_button = QPushButton("…")
        self.folder_button.setMaximumWidth(30)
        self.load_button = QPushButton("Load model")
        self.settings = QWidget()
        form = QFormLayout(self.settings)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Model", self.model_combo)
        form.addRow("Checkpoint", row(self.checkpoint_edit, self.browse_button))
        form.addRow("Adapter", row(self.adapter_edit, self.adapter_button))
        form.addRow("Device", row(self.device_combo, QLabel("Precision"),
                                   self.precision_combo))
        form.addRow("Masks", self.mode_combo)
        form.addRow("Embeddings", row(self.folder_edit, self.folder_button))
        form.addRow(self.load_button)
        layout = QVBoxLayout(self)
        layout.addWidget(row(self.active, self.settings_button))
        layout.addWidget(self.settings)
        self.settings_button.toggled.connect(self.settings.setVisible)
        self.model_combo.currentTextChanged.connect(self._model_changed)
        self.browse_button.clicked.connect(self._browse_checkpoint)
        self.adapter_button.clicked.connect(self._browse_adapter)
        self.folder_button.clicked.connect(self._browse_folder)
        self.mode_combo.currentTextChanged.connect(
            lambda text: self.session.set_hq_token_only(text == HQ_ONLY))
        self.load_button.clicked.connect(lambda: self.load(force=True))
        self._model_changed(self.model_combo.currentText())

    def _model_changed(self, text: str) -> None:
        local = text == LOCAL_FILE
        self.checkpoint_edit.setEnabled(local)
        self.browse_button.setEnabled(local)

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "HQ-SAM checkpoint", "",
                                              "PyTorch checkpoints (*.pth *.pt);;All files (*)")
        if path:
            self.checkpoint_edit.setText(path)

    def _browse_adapter(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "HQ-SAM adapter", "",
                                              "Adapters (*.pt);;All files (*)")
        if path:
            self.adapter_edit.setText(path)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Embedding folder")
        if path:
            self.folder_edit.setText(path)

    # -- state --------------------------------------------------------------------------------
    def choice(self) -> ModelChoice:
        """The model the controls ask for."""
        text = self.model_combo.currentText()
        adapter = self.adapter_edit.text().strip() or None
        device, precision = self.device_combo.currentText(), self.precision_combo.currentText()
        if text == LOCAL_FILE:
            path = self.checkpoint_edit.text().strip()
            if not path:
                raise InputError("Choose a checkpoint file (the '…' button) or an official "
                                 "model in the model bar.")
            return ModelChoice(None, path, adapter, device, precision)
        return ModelChoice(text, None, adapter, device, precision)

    def folder(self) -> Path | None:
        """The embedding folder asked for, or None for memory only."""
        text = self.folder_edit.text().strip()
        return Path(text).expanduser() if text else None

    def refresh(self) -> None:
        """Show the session's model, and its settings in the controls (any bar may load)."""
        session = self.session
        self.active.setText(f"Active: {session.describe()}")
        choice = session.choice
        if choice is not None:
            for combo, value in ((self.model_combo, LOCAL_FILE if choice.checkpoint
                                  else choice.model_type),
                                 (self.device_combo, choice.device),
                                 (self.precision_combo, choice.precision)):
                if combo.findText(value) >= 0:
                    combo.setCurrentText(value)
            self.checkpoint_edit.setText(choice.checkpoint or "")
            self.adapter_edit.setText(choice.adapter or "")
        self.folder_edit.setText(str(session.embedding_folder or ""))
        self.mode_combo.blockSignals(True)
        self.mode_combo.setCurrentText(HQ_ONLY if session.hq_token_only else SAM_AND_HQ)
        self.mode_combo.blockSignals(False)
        loaded = session.model is not None
        self.settings_button.setChecked(not loaded)
        self.settings.setVisible(not loaded)

    def set_enabled(self, enabled: bool) -> None:
        """Enable or disable loading (while the owning widget runs a task)."""
        self.load_button.setEnabled(enabled)

    def load(self, then=None, force: bool = False) -> None:
        """Load the chosen model in the runner unless it is loaded; then call ``then()``.

        Without ``force`` an already loaded model (whatever its settings) is used as is:
        the bar changes the model only when the user presses Load.
        """
        if self.runner.busy:
            self.runner.panel.set_status("Still working on the last task: wait for it or "
                                         "press Cancel.")
            return
        session = self.session
        if session.model is not None and not force:
            if then is not None:
                then()
            return
        try:
            choice, folder = self.choice(), self.folder()
        except InputError as exc:
            self.runner.panel.show_error(exc)
            return

        def task(progress, should_stop):
            session.use_embedding_folder(folder)
            return session.load_choice(choice, progress)  # MB of a first download

        def done(_model):
            self.runner.panel.set_status(f"Model ready: {session.describe()}.")
            if then is not None:
                then()

        def cancelled(_model):  # the model is loaded; what was to follow is not started
            self.runner.panel.set_status(f"Cancelled. Model ready: {session.describe()}.")

        self.runner.start(task, desc=f"Loading HQ-SAM {choice.describe()}", on_done=done,
                          on_cancelled=cancelled, unit="MB downloaded")

    def close(self) -> None:
        """Stop following the session (the widget is going away)."""
        self._unsubscribe()
