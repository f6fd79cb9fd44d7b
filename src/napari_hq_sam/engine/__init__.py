"""Headless engine: image slices, prompts, embedding cache, slice and stack segmentation.

Submodules (import them directly; nothing here imports Qt):

- :mod:`.image`: N-D image layout, slice conversion to the model's uint8 RGB input.
- :mod:`.prompts`: :class:`~.prompts.ObjectPrompt`, builders from napari layer data,
  readers of napari CSV exports and of the JSON prompt form.
- :mod:`.segmenter`: :class:`~.segmenter.SliceSegmenter`, embeddings + many prompts per slice.
- :mod:`.labels`: pasting object masks into a labels array, with undo records.
- :mod:`.cache`: :class:`~.cache.EmbeddingCache`, in-memory LRU and on-disk zarr.
- :mod:`.stack`: :func:`~.stack.segment_stack` over all prompted slices of an N-D image.
- :mod:`.propagate`: through-z propagation of an object's mask.
- :mod:`.distributed`: the same stack run on a Dask cluster.
- :mod:`.io`: reading images (TIFF, zarr, npy), writing labels through a temporary name.
"""
