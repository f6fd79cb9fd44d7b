"""One model per napari viewer, shared by every widget of the plugin and by its console.

:func:`viewer_session` returns the :class:`ViewerSession` of a viewer: the loaded
HQ-SAM model, the choice it was loaded from, its slice segmenter and its embedding
cache (in memory, or a signed zarr folder on disk shared with ``hqsam embed`` and
the CLI). No napari or Qt import here: the widgets subscribe to changes, scripts
call :meth:`ViewerSession.load` directly::

    from napari_hq_sam import viewer_session
    session = viewer_session(viewer)
    session.load("vit_tiny", checkpoint="sam_hq_vit_tiny.pth", device="cpu")
    session.model   # the HQSam every widget now uses
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .engine.tiles import DEFAULT_TILING, Tiling
from .errors import HQSamError

MEMORY_ITEMS = 32  # embeddings kept in memory (about 12 MB each)


@dataclass(frozen=True)
class ModelChoice:
    """What the user chose: enough to load the model again, here or on a worker.

    Attributes
    ----------
    model_type : str or None
        ``vit_tiny`` … ``vit_h``; None for a local file whose backbone is read from it.
    checkpoint : str or None
        Local checkpoint path; None downloads the official file (cached).
    adapter : str or None
        Adapter file (trained HQ tensors) loaded on top of the checkpoint.
    device : str
        ``auto``, ``cpu``, ``cuda:0``, ``mps``.
    precision : str
        Encoder precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
    """

    model_type: str | None
    checkpoint: str | None = None
    adapter: str | None = None
    device: str = "auto"
    precision: str = "fp32"

    def describe(self) -> str:
        """Short text for status lines, e.g. ``vit_tiny (official weights, auto, fp32)``."""
        source = Path(self.checkpoint).name if self.checkpoint else "official weights"
        if self.adapter:
            source += f" + {Path(self.adapter).name}"
        return f"{self.model_type or 'local file'} ({source}, {self.device}, {self.precision})"


class ViewerSession:
    """The model shared by all of the plugin's widgets in one viewer.

    Attributes
    ----------
    model : HQSam or None
        The loaded model (one copy in memory for every widget).
    choice : ModelChoice or None
        What it was loaded from.
    hq_token_only : bool
        HQ logits alone (single objects) or SAM + HQ logits (default).
    cache : EmbeddingCache or None
        Embeddings of the loaded model, shared by the widgets.
    segmenter : SliceSegmenter or None
        Decodes prompts on cached embeddings; used by one worker task at a time.
    embedding_folder : Path or None
        On-disk cache folder in use (None: memory only).
    tiling : Tiling or None
        How slices longer than a tile are segmented: overlapping tiles at native
        resolution (:class:`~napari_hq_sam.engine.tiles.Tiling`), or None to resize
        every slice to the model input.
    lock : threading.RLock
        Held by each task while it uses the model, so that widgets take turns and
        the model is never swapped under a running task.
    """

    def __init__(self):
        self.model = None
        self.choice: ModelChoice | None = None
        self.hq_token_only = False
        self.cache = None
        self.segmenter = None
        self.embedding_folder: Path | None = None
        self.tiling: Tiling | None = DEFAULT_TILING
        self._listeners: list[Callable[[ViewerSession], None]] = []
        self.lock = threading.RLock()

    # -- loading ------------------------------------------------------------------------------
    def load(self, model_type: str | None, checkpoint: str | Path | None = None,
             device: str | None = None, precision: str | None = None, *,
             adapter: str | Path | None = None):
        """Load a model for every widget of the viewer (blocking; scripts and tests).

        Parameters
        ----------
        model_type : str or None
            ``vit_tiny``, ``vit_b``, ``vit_l``, ``vit_h``; None reads it from ``checkpoint``.
        checkpoint : str or Path, optional
            Local checkpoint file; default the official file (downloaded once).
        device : str, optional
            ``cuda``, ``mps``, ``cpu``; None or ``auto`` picks the best available.
        precision : str, optional
            Encoder precision (default ``fp32``, exact).
        adapter : str or Path, optional
            Adapter file trained with ``hqsam train`` for this checkpoint.

        Returns
        -------
        HQSam
            The loaded model (also :attr:`model`).
        """
        choice = ModelChoice(model_type, None if checkpoint is None else str(checkpoint),
                             None if adapter is None else str(adapter), device or "auto",
                             precision or "fp32")
        return self.load_choice(choice)

    def load_choice(self, choice: ModelChoice,
                    progress: Callable[[int, int], None] | None = None):
        """Load ``choice`` (blocking) unless it is already the loaded model; return the model.

        ``progress(MB done, MB total)`` follows a download of official weights.
        """
        with self.lock:
            if self.model is not None and choice == self.choice:
                return self.model
        model, choice = _load(choice, progress)
        self.set_model(model, choice)
        return model

    def set_model(self, model, choice: ModelChoice | None = None) -> None:
        """Use an already loaded HQSam (``choice`` tells where its weights came from)."""
        from .engine.segmenter import SliceSegmenter

        choice = choice or ModelChoice(model.model_type, precision=model.precision)
        with self.lock:
            self.model, self.choice = model, choice
            self.cache = self._new_cache()
            self.segmenter = SliceSegmenter(model, cache=self.cache,
                                            hq_token_only=self.hq_token_only)
        self._notify()

    def unload(self) -> None:
        """Forget the model (its memory is freed once no task holds it)."""
        with self.lock:
            self.model = self.choice = self.cache = self.segmenter = None
        self._notify()

    # -- embeddings ---------------------------------------------------------------------------
    def use_embedding_folder(self, folder: str | Path | None) -> None:
        """Keep embeddings in ``folder`` (a signed zarr cache, e.g. from ``hqsam embed``).

        None goes back to memory only. The folder is checked against the loaded model
        at once when one is loaded (another model's folder is refused).
        """
        with self.lock:
            previous = self.embedding_folder
            self.embedding_folder = None if folder is None else Path(folder).expanduser()
            if self.model is None:
                return
            try:
                self.cache = self._new_cache()
            except Exception:
                self.embedding_folder = previous
                raise
            self.segmenter.cache = self.cache
        self._notify()

    def _new_cache(self):
        from .engine.cache import EmbeddingCache, model_signature

        choice = self.choice
        checkpoint = choice.checkpoint if choice else None
        if checkpoint is None and choice is not None and choice.model_type is not None:
            from .weights import cached_checkpoint

            checkpoint = cached_checkpoint(choice.model_type)
        signature = model_signature(self.model, checkpoint, choice.adapter if choice else None)
        if self.embedding_folder is not None:
            return EmbeddingCache(signature, max_items=MEMORY_ITEMS,
                                  directory=self.embedding_folder)
        return _memory_cache(signature)

    # -- state for widgets ----------------------------------------------------------------------
    def set_hq_token_only(self, value: bool) -> None:
        """Choose HQ logits alone (True) or SAM + HQ logits (False) for every widget."""
        with self.lock:
            self.hq_token_only = bool(value)
            if self.segmenter is not None:
                self.segmenter.hq_token_only = self.hq_token_only
        self._notify()

    def set_tiling(self, tile: int | None = None, halo: int | None = None, *,
                   enabled: bool = True) -> None:
        """Choose how large slices are segmented, for every widget of the viewer.

        Parameters
        ----------
        tile, halo : int, optional
            Tile side and overlap in pixels (:class:`~napari_hq_sam.engine.tiles.Tiling`);
            None keeps the current value (or the default).
        enabled : bool
            False resizes every slice to the model input instead of tiling it.

        Raises
        ------
        InputError
            A tile or halo the tiling refuses (the message says which values work).
        """
        current = self.tiling or DEFAULT_TILING
        tiling = Tiling(current.tile if tile is None else int(tile),
                        current.halo if halo is None else int(halo))
        with self.lock:
            self.tiling = tiling if enabled else None
        self._notify()

    def require_model(self):
        """The loaded model, or an error telling the user how to load one."""
        if self.model is None:
            raise HQSamError("No model is loaded: choose one in the model bar and press Load.")
        return self.model

    def describe(self) -> str:
        """What is loaded, in words (for every widget's model line)."""
        if self.model is None:
            return "No model loaded"
        device = next(self.model.parameters()).device
        mode = "HQ only" if self.hq_token_only else "SAM + HQ"
        adapter = f" + {Path(self.choice.adapter).name}" if self.choice.adapter else ""
        folder = f", embeddings in {self.embedding_folder.name}" if self.embedding_folder else ""
        return (f"{self.model.model_type}{adapter} on {device}, {self.model.precision}, "
                f"{mode}{folder}")

    def subscribe(self, callback: Callable[[ViewerSession], None]) -> Callable[[], None]:
        """Call ``callback(session)`` after every change; returns the unsubscribe function.

        The callback runs in the thread that made the change (widgets relay to Qt).
        """
        self._listeners.append(callback)

        def unsubscribe():
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    def _notify(self) -> None:
        for callback in list(self._listeners):
            callback(self)


def _load(choice: ModelChoice, progress: Callable[[int, int], None] | None = None):
    """Load the model of ``choice``; returns ``(model, choice with its model type)``."""
    from .loading import load_model
    from .weights import checkpoint_model_type

    model_type = choice.model_type
    if choice.checkpoint is not None:
        model_type = model_type or checkpoint_model_type(choice.checkpoint)
    elif model_type is None:
        raise HQSamError("Choose a model type, or a local checkpoint file to read it from.")
    device = None if choice.device == "auto" else choice.device
    in_mb = False if progress is None else (lambda done, total: progress(done >> 20,
                                                                          total >> 20))
    model = load_model(model_type, choice.checkpoint, device=device, progress=in_mb,
                       precision=choice.precision)
    if choice.adapter is not None:
        from .adapters import load_adapter

        load_adapter(model, choice.adapter, base_checkpoint=choice.checkpoint)
    return model, replace(choice, model_type=model_type)


_SESSIONS_LOCK = threading.Lock()
_MEMORY_CACHES: OrderedDict = OrderedDict()
_MEMORY_SIGNATURES = 2  # models whose in-memory embeddings outlive a reload


def _memory_cache(signature: dict):
    """The in-memory cache of a model signature, shared by viewers and reloads.

    Reloading the same weights (or a second viewer with the same model) keeps the
    slices already embedded; the caches of the last two models are kept.
    """
    from .engine.cache import EmbeddingCache

    key = json.dumps(signature, sort_keys=True)
    with _SESSIONS_LOCK:
        cache = _MEMORY_CACHES.pop(key, None) or EmbeddingCache(signature,
                                                                 max_items=MEMORY_ITEMS)
        _MEMORY_CACHES[key] = cache
        while len(_MEMORY_CACHES) > _MEMORY_SIGNATURES:
            _MEMORY_CACHES.popitem(last=False)
        return cache


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def viewer_session(viewer) -> ViewerSession:
    """The :class:`ViewerSession` of ``viewer`` (created on first use, gone with the viewer)."""
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(viewer)
        if session is None:
            session = _SESSIONS[viewer] = ViewerSession()
        return session
