"""Seeds for segment everything: one point per candidate object instead of a grid.

Cells and nuclei are blobs of a roughly known size, so one prompt per object
does the work of a 32 x 32 grid. Seeds come from

- the image (:func:`find_seeds`): local maxima of the scale-normalised Laplacian
  of Gaussian (LoG) at the scale of the expected object diameter, kept only where
  that scale answers about as strongly as half and twice it, so blobs of a very
  different size, and the rims of large bright regions, are not seeded;
- the expected diameter, when the user does not give it
  (:func:`estimate_diameter`): the median equivalent diameter of the regions above
  Otsu's threshold of the smoothed slice;
- a points file or a napari Points layer (:func:`seeds_from_table`), one seed per
  positive point;
- the objects of a labels image (:func:`seeds_from_labels`): each object's most
  interior pixel; :meth:`GivenSeeds.from_labels` seeds each slice of a stack from
  the previous slice's objects.

Seeds are ``(N, 2)`` float arrays of ``(X, Y)`` pixels of a 2D slice (SAM's
convention). Nothing here needs torch; the decoding is
:class:`napari_hq_sam.automatic_seeded.SeededMaskGenerator`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

# sigma of the LoG whose scale-normalised response peaks at the centre of a disk
# of diameter d: d / (2 sqrt 2)
SIGMA_PER_DIAMETER = 1 / (2 * math.sqrt(2))
# a seed is kept unless the LoG at half or twice its scale answers more than this
# many times more strongly (a Gaussian blob 1.41 times off the expected size
# answers equally at both; one 3 times off, 2.4 times more strongly)
SCALE_TOLERANCE = 1.3
# default minimum scale-normalised LoG response, in units of the slice's intensity
# range (1st to 99.8th percentile): a disk of contrast c answers about 0.74 c
DEFAULT_THRESHOLD = 0.05


@dataclass(frozen=True)
class ImageSeeds:
    """Find seeds in each slice (:func:`find_seeds`).

    Attributes
    ----------
    diameter : float or None
        Expected object diameter in pixels; None: estimated per slice
        (:func:`estimate_diameter`).
    dark : bool
        Objects darker than their background (e.g. brightfield nuclei).
    threshold : float
        Minimum scale-normalised LoG response, as a fraction of the slice's
        intensity range.
    """

    diameter: float | None = None
    dark: bool = False
    threshold: float = DEFAULT_THRESHOLD

    def __post_init__(self):
        if self.diameter is not None and not (math.isfinite(self.diameter)
                                              and self.diameter >= 2):
            raise InputError(f"the expected object diameter must be a number of pixels of at "
                             f"least 2, got {self.diameter!r}.")
        if not (math.isfinite(self.threshold) and self.threshold >= 0):
            raise InputError(f"the seed threshold must be a number >= 0, got "
                             f"{self.threshold!r}.")

    def seeds(self, gray: np.ndarray) -> tuple[np.ndarray, float]:
        """``(seeds (N, 2) XY, diameter used)`` of one (H, W) slice."""
        diameter = self.diameter or estimate_diameter(gray, dark=self.dark)
        return find_seeds(gray, diameter, dark=self.dark, threshold=self.threshold), diameter


@dataclass(frozen=True)
class GivenSeeds:
    """Seeds given per slice (from a points file, a Points layer or labels).

    Attributes
    ----------
    points : mapping
        Slice index (``()`` for a 2D image, ``(z,)``, ...) to (N, 2) XY seeds;
        slices not in it have no seeds.
    diameter : float or None
        Expected object diameter in pixels (masks are then computed in a window
        around each seed); None: whole-slice masks.
    """

    points: Mapping = field(default_factory=dict)
    diameter: float | None = None

    @classmethod
    def from_labels(cls, labels: np.ndarray, shift: int = 1,
                    diameter: float | None = None) -> GivenSeeds:
        """Seeds of each slice from the objects of another slice of ``labels``.

        Parameters
        ----------
        labels : np.ndarray
            (..., Z, H, W) labels, e.g. a finished slice's result in a stack.
        shift : int
            Slice ``z`` takes the most interior pixel of each object of slice
            ``z - shift`` along the last leading axis (1: the previous slice's objects;
            0: the same slice's, to segment them again).
        diameter : float, optional
            As :attr:`diameter`.
        """
        labels = np.asarray(labels)
        if labels.ndim < 3:
            raise InputError(f"seeds from the objects of other slices need labels with a "
                             f"slice axis, got shape {labels.shape}.")
        points = {}
        for index in np.ndindex(*labels.shape[:-2]):
            source = (*index[:-1], index[-1] - shift)
            if 0 <= source[-1] < labels.shape[-3] and labels[source].any():
                points[index] = seeds_from_labels(labels[source])[0]
        return cls(points, diameter)

    def seeds(self, gray: np.ndarray, index: tuple = ()) -> tuple[np.ndarray, float | None]:
        """``(seeds (N, 2) XY, diameter)`` of slice ``index``."""
        pts = np.asarray(self.points.get(tuple(index), np.zeros((0, 2))), dtype=float)
        return pts.reshape(-1, 2), self.diameter


def _normalised(gray: np.ndarray, dark: bool) -> np.ndarray:
    """(H, W) float32 in [0, 1] from the 1st and 99.8th percentiles (inverted if dark)."""
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim == 3:
        gray = gray.mean(axis=-1)
    if gray.ndim != 2:
        raise InputError(f"seeds are found in a 2D slice, got an array of shape {gray.shape}.")
    lo, hi = np.percentile(gray, [1, 99.8])
    out = np.clip((gray - lo) / max(hi - lo, 1e-6), 0, 1)
    return 1 - out if dark else out


def _log_stack(gray: np.ndarray, sigmas) -> np.ndarray:
    """(S, H, W) scale-normalised LoG responses, positive at bright blob centres."""
    from scipy.ndimage import gaussian_laplace

    return np.stack([-(s ** 2) * gaussian_laplace(gray, s) for s in sigmas])


def find_seeds(gray: np.ndarray, diameter: float, dark: bool = False,
               threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """One seed per blob of about ``diameter`` pixels.

    Seeds are the local maxima (at least 0.4 diameters apart) of the
    scale-normalised LoG at the scale of ``diameter`` whose response is above
    ``threshold``, kept only where the responses at half and at twice that scale
    are not more than :data:`SCALE_TOLERANCE` times stronger: a blob's response
    is strongest at its own scale, so blobs about 3 times smaller or larger than
    the expected diameter, and the rims of large bright regions, are not seeded.

    Parameters
    ----------
    gray : np.ndarray
        (H, W) slice, or (H, W, C) (channels averaged).
    diameter : float
        Expected object diameter in pixels.
    dark : bool
        Objects darker than the background.
    threshold : float
        Minimum scale-normalised LoG response (fraction of the intensity range).

    Returns
    -------
    np.ndarray
        (N, 2) float seeds, (X, Y) pixels, strongest first.
    """
    from skimage.feature import peak_local_max

    if not diameter >= 2:
        raise InputError(f"the expected object diameter must be at least 2 pixels, got "
                         f"{diameter!r}.")
    image = _normalised(gray, dark)
    sigma = diameter * SIGMA_PER_DIAMETER
    smaller, response, larger = _log_stack(image, [sigma / 2, sigma, 2 * sigma])
    peaks = peak_local_max(response, min_distance=max(1, int(0.4 * diameter)),
                           threshold_abs=threshold, exclude_border=False)
    y, x = peaks[:, 0], peaks[:, 1]
    at_scale = np.maximum(smaller[y, x], larger[y, x]) <= SCALE_TOLERANCE * response[y, x]
    return peaks[at_scale][:, ::-1].astype(float).reshape(-1, 2)


def estimate_diameter(gray: np.ndarray, dark: bool = False) -> float:
    """Typical object diameter in pixels.

    The median equivalent diameter ``2 sqrt(area / pi)`` of the connected regions
    above Otsu's threshold of the slice smoothed by a Gaussian of sigma 1 pixel
    (regions under 9 pixels ignored). Touching objects merge into one region, so
    on crowded slices the estimate leans large.

    Raises
    ------
    InputError
        When the slice has no such region (give the diameter).
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    smooth = ndimage.gaussian_filter(_normalised(gray, dark), 1)
    regions, _ = ndimage.label(smooth > threshold_otsu(smooth)) if np.ptp(smooth) > 0 else \
        (np.zeros(smooth.shape, int), 0)
    areas = np.bincount(regions.ravel())[1:]
    areas = areas[areas >= 9]
    if not len(areas):
        raise InputError("no objects stand out in this slice to estimate their diameter "
                         "from: give it (--diameter PX).")
    return max(2.0, float(np.median(2 * np.sqrt(areas / np.pi))))


def seeds_from_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The most interior pixel of each object of a (H, W) labels image.

    Returns
    -------
    seeds : np.ndarray
        (N, 2) float (X, Y) pixels, one per object, in order of id.
    ids : np.ndarray
        (N,) the object ids.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"seeds from labels need a 2D labels slice, got shape {labels.shape}.")
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if not len(ids):
        return np.zeros((0, 2)), ids
    # distance to the nearest pixel of another object or the background
    inside = np.pad(labels, 1)
    edges = ndimage.grey_dilation(inside, size=3) != ndimage.grey_erosion(inside, size=3)
    distance = ndimage.distance_transform_edt((inside > 0) & ~edges)
    centres = ndimage.maximum_position(distance, inside, ids)
    return np.asarray([(x - 1, y - 1) for y, x in centres], dtype=float).reshape(-1, 2), ids


def seeds_from_table(points: np.ndarray, labels: np.ndarray | None, n_leading: int) -> dict:
    """Seeds per slice from point rows in napari's axis order.

    Parameters
    ----------
    points : np.ndarray
        (M, n_leading + 2) rows ``(..., y, x)`` (a Points layer's data or a napari
        Points CSV read by :func:`~.prompt_files.read_prompt_table`).
    labels : np.ndarray or None
        (M,) 1 positive, 0 negative; negative points are not seeds.
    n_leading : int
        Number of slice axes of the image (0 for a 2D image).

    Returns
    -------
    dict
        Slice index (tuple of ints, the rounded leading coordinates) to (N, 2) XY.
    """
    points = np.asarray(points, dtype=float).reshape(len(points), -1) if len(points) else \
        np.zeros((0, n_leading + 2))
    if points.shape[1] != n_leading + 2:
        raise InputError(f"seed points have {points.shape[1]} coordinates, but the image has "
                         f"{n_leading + 2} spatial axes (slice axes, then Y, X).")
    if labels is not None:
        points = points[np.asarray(labels).reshape(-1) != 0]
    out: dict[tuple, list] = {}
    for row in points:
        index = tuple(int(round(v)) for v in row[:n_leading])
        out.setdefault(index, []).append((row[-1], row[-2]))
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}
