"""The dock's "Large images" controls, bound to the viewer session's tiling.

The tiling lives in the :class:`~napari_hq_sam.session.ViewerSession` (Qt-free, shared
by the viewer's widgets and scripts); the controls edit it and follow its changes.
"""

from __future__ import annotations

from ..engine.tiles import DEFAULT_TILING
from ._model_bar import _Relay

MIN_CORE = 16  # the engine's smallest tile core (tile - 2 x halo)


class TilesControl:
    """Keeps the tile checkbox and spin boxes of a view and ``session.tiling`` in step.

    Parameters
    ----------
    view : SegmentView
        Holds ``tiles_check``, ``tile_spin``, ``halo_spin`` and ``tiles_fold``.
    session : ViewerSession
    """

    def __init__(self, view, session):
        self.view, self.session = view, session
        self._relay = _Relay()
        self._relay.changed.connect(self.refresh)
        self._unsubscribe = session.subscribe(lambda _s: self._relay.changed.emit())
        view.tiles_check.toggled.connect(self.apply)
        view.tile_spin.valueChanged.connect(self.apply)
        view.halo_spin.valueChanged.connect(self.apply)
        self.refresh()

    def apply(self, *_) -> None:
        """Write the controls into the session (the halo is bounded by the tile first)."""
        v = self.view
        tile = v.tile_spin.value()
        v.halo_spin.setMaximum((tile - MIN_CORE) // 2)  # clamps the value: no bad tiling
        self.session.set_tiling(tile, v.halo_spin.value(), enabled=v.tiles_check.isChecked())

    def refresh(self) -> None:
        """Show the session's tiling in the controls and the fold's title."""
        v = self.view
        tiling = self.session.tiling
        shown = tiling or _last(v) or DEFAULT_TILING
        for widget in (v.tiles_check, v.tile_spin, v.halo_spin):
            widget.blockSignals(True)
        v.tiles_check.setChecked(tiling is not None)
        v.tile_spin.setValue(shown.tile)
        v.halo_spin.setMaximum((shown.tile - MIN_CORE) // 2)
        v.halo_spin.setValue(shown.halo)
        for widget in (v.tiles_check, v.tile_spin, v.halo_spin):
            widget.blockSignals(False)
        v.tile_spin.setEnabled(tiling is not None)
        v.halo_spin.setEnabled(tiling is not None)
        v.tiles_fold.set_title(title(tiling))

    def close(self) -> None:
        """Stop following the session."""
        self._unsubscribe()


def _last(view):
    """The tiling the spin boxes show (kept while tiling is off), or None before any."""
    from ..engine.tiles import Tiling
    from ..errors import InputError

    try:
        return Tiling(view.tile_spin.value(), view.halo_spin.value())
    except InputError:
        return None


def title(tiling) -> str:
    """The fold's title: ``'Large images: 1024 px tiles, 128 px halo'``."""
    if tiling is None:
        return "Large images: resized to the model input"
    return f"Large images: {tiling.tile} px tiles, {tiling.halo} px halo"
