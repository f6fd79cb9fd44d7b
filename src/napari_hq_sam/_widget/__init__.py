"""Qt dock widgets (the only package that imports Qt or napari).

Importing this package (napari does so when it builds any of the plugin's widgets)
first imports torch and torchvision safely: see :func:`._tasks.preload`.
"""

from ._tasks import preload

preload()

from ._segment_widget import HQSamWidget  # noqa: E402

__all__ = ["HQSamWidget"]
