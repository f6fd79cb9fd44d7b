"""Headless engine: image slices, prompts, embeddings, runs over slices, labels.

Submodules (import them directly; nothing here imports napari or Qt):

- :mod:`.image`: N-D image layout, contrast limits, a slice as the model's uint8 RGB input.
- :mod:`.prompts`: :class:`~.prompts.ObjectPrompt` and its builders from napari layer data.
- :mod:`.prompt_files`: reading napari CSV exports and the JSON prompt form, writing JSON.
- :mod:`.encoder`: the one path to the image encoder, batch sizes decided there.
- :mod:`.cache`: :class:`~.cache.EmbeddingCache`, in-memory LRU and on-disk zarr.
- :mod:`.cache_folder`: :class:`~.cache_folder.CacheFolder`, verified entries of a cache folder.
- :mod:`.segmenter`: :class:`~.segmenter.SliceSegmenter`, embeddings + many prompts per slice.
- :mod:`.runner`: the one slice runner (:func:`~.runner.run_slices`), its
  :class:`~.runner.StackResult` and its progress/cancel conventions.
- :mod:`.stack`: :func:`~.stack.segment_stack`, every prompted slice of an N-D image.
- :mod:`.everything`: :func:`~.everything.segment_everything`, automatic masks per slice.
- :mod:`.propagate`: through-z propagation of an object's mask.
- :mod:`.distributed`: the same runs on a Dask cluster, one task per slice.
- :mod:`.labels`: labels arrays: pasting masks with undo records, masks to labels, stitching.
- :mod:`.io`: reading images (TIFF, zarr, npy), writing labels through a temporary name.
"""
