"""Segment one 2D slice: its embedding (cached), then many object prompts decoded on it.

Cache misses go to the encoder through one function, ``encode(model, images)``
taking a list of uint8 ``(H, W, 3)`` images and returning a list of
:class:`~napari_hq_sam.predictor.ImageEmbedding` on the CPU: by default
:func:`~.encoder.encode_slices` (batched on GPUs); tests and tools may pass another.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..predictor import HQSamPredictor, ImageEmbedding
from .cache import EmbeddingCache, image_key
from .encoder import encode_slices
from .prompts import ObjectPrompt
from .tiled import as_source, decode_tiled
from .tiles import Tiling

EncodeFn = Callable[[object, Sequence[np.ndarray]], list[ImageEmbedding]]


@dataclass
class SliceResult:
    """Masks of the objects prompted on one slice.

    Attributes
    ----------
    slice_index : tuple of int
    object_ids : np.ndarray
        ``(K,)`` int.
    masks : np.ndarray or list of np.ndarray
        ``(K, H, W)`` bool; on a tiled slice, K bool crops placed at ``origins``.
    scores : np.ndarray
        ``(K,)`` SAM's predicted IoU.
    low_res_logits : np.ndarray
        ``(K, 1, 256, 256)``, usable as a later mask prompt (on a tiled slice, in the
        frame of the window each object was decoded in).
    origins : np.ndarray or None
        ``(K, 2)`` int ``(top, left)`` of each cropped mask in the slice; None when
        ``masks`` are full-size.
    shape : tuple of int
        ``(H, W)`` of the slice.
    """

    slice_index: tuple[int, ...]
    object_ids: np.ndarray
    masks: np.ndarray | list
    scores: np.ndarray
    low_res_logits: np.ndarray
    origins: np.ndarray | None = None
    shape: tuple[int, int] = ()

    def full_mask(self, k: int) -> np.ndarray:
        """Object ``k``'s mask as a full ``(H, W)`` bool array of the slice."""
        if self.origins is None:
            return np.asarray(self.masks[k], bool)
        full = np.zeros(self.shape, bool)
        (top, left), crop = self.origins[k], self.masks[k]
        full[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
        return full


class SliceSegmenter:
    """Embeds slices (through a cache) and decodes object prompts on them.

    Parameters
    ----------
    model : HQSam
    cache : EmbeddingCache, optional
        Where embeddings are looked up and stored; None keeps the last 8 in memory.
    encode : callable, optional
        ``encode(model, images) -> list[ImageEmbedding]``; default
        :func:`~.encoder.encode_slices`.
    hq_token_only : bool
        HQ logits alone (advised for single objects) or SAM + HQ logits (default,
        advised for scenes with many objects).
    multimask_output : bool or None
        None picks SAM's advice per prompt: multimask for a single point without
        box or mask, single-mask otherwise.

    Attributes
    ----------
    computed, reused : int
        Embeddings computed by the encoder / taken from the cache so far.
    """

    def __init__(self, model, *, cache: EmbeddingCache | None = None,
                 encode: EncodeFn | None = None, hq_token_only: bool = False,
                 multimask_output: bool | None = None):
        self.model = model
        self.cache = cache if cache is not None else EmbeddingCache(max_items=8)
        self.encode = encode or encode_slices
        self.hq_token_only = hq_token_only
        self.multimask_output = multimask_output
        self.predictor = HQSamPredictor(model)
        self.computed = self.reused = 0

    def embeddings(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        """Embeddings of uint8 ``(H, W, 3)`` images; cache misses are encoded in one call."""
        keys = [image_key(im) for im in images]
        found = [self.cache.get(k) for k in keys]
        missing = [i for i, e in enumerate(found) if e is None]
        if missing:
            new = self.encode(self.model, [images[i] for i in missing])
            for i, embedding in zip(missing, new):
                found[i] = embedding
                self.cache.put(keys[i], embedding)
        self.computed += len(missing)
        self.reused += len(images) - len(missing)
        return found

    def set_image(self, image: np.ndarray) -> ImageEmbedding:
        """Make ``image`` (uint8 ``(H, W, 3)``) current, from the cache when possible."""
        embedding = self.embeddings([image])[0]
        self.predictor.set_image_embedding(embedding)
        return embedding

    def set_embedding(self, embedding: ImageEmbedding) -> None:
        """Make an already computed embedding current."""
        self.predictor.set_image_embedding(embedding)

    def decode(self, prompt: ObjectPrompt) -> tuple[np.ndarray, float, np.ndarray]:
        """One object on the current slice: ``(mask (H, W) bool, score, logits (1, 256, 256))``."""
        multimask = self.multimask_output
        if multimask is None:
            multimask = prompt.box is None and prompt.mask is None and len(prompt.points) == 1
        masks, scores, low_res = self.predictor.predict(
            point_coords=prompt.points, point_labels=prompt.labels, box=prompt.box,
            mask_input=prompt.mask, multimask_output=multimask,
            hq_token_only=self.hq_token_only)
        return masks[0], float(scores[0]), low_res

    def segment(self, image, prompts: Sequence[ObjectPrompt],
                embedding: ImageEmbedding | None = None, *,
                tiling: Tiling | None = None) -> SliceResult:
        """Masks of all ``prompts`` (all on the same slice) on ``image``.

        Parameters
        ----------
        image : np.ndarray, SliceSource or None
            uint8 ``(H, W, 3)``, or a window reader of a slice (:mod:`.tiled`); may be
            None when ``embedding`` is given.
        prompts : list of ObjectPrompt
            The slice's objects, decoded in the given order.
        embedding : ImageEmbedding, optional
            The slice's embedding if already known (untiled slices).
        tiling : Tiling, optional
            Tile a slice longer than ``tiling.tile`` on a side (:mod:`.tiles`): masks
            come back cropped, with ``origins``. None resizes every slice to the
            model input.
        """
        if image is not None and tiling is not None and tiling.applies(_shape(image)):
            return self._segment_tiled(as_source(image), prompts, tiling)
        if embedding is None:
            embedding = self.set_image(image)
        else:
            self.set_embedding(embedding)
        height, width = embedding.original_size
        results = [self.decode(p) for p in prompts]
        return SliceResult(
            prompts[0].slice_index if prompts else (),
            np.array([p.object_id for p in prompts], dtype=np.int64),
            np.array([r[0] for r in results], dtype=bool).reshape(-1, height, width),
            np.array([r[1] for r in results], dtype=np.float32),
            np.array([r[2] for r in results], dtype=np.float32).reshape(-1, 1, 256, 256),
            shape=(height, width))

    def _segment_tiled(self, source, prompts, tiling: Tiling) -> SliceResult:
        placed = decode_tiled(self, source, prompts, tiling)
        return SliceResult(
            prompts[0].slice_index if prompts else (),
            np.array([p.object_id for p in prompts], dtype=np.int64),
            [m.mask for m in placed],
            np.array([m.score for m in placed], dtype=np.float32),
            np.array([m.low_res for m in placed], dtype=np.float32).reshape(-1, 1, 256, 256),
            origins=np.array([m.origin for m in placed], dtype=np.int64).reshape(-1, 2),
            shape=tuple(source.shape))


def _shape(image) -> tuple[int, int]:
    """``(H, W)`` of a model image or a slice source."""
    return tuple(image.shape[:2])
