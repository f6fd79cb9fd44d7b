"""Values derived from weights (folded, cast, gathered), recomputed when a weight changes.

The fast paths keep copies derived from parameters and buffers: reduced-precision
encoder copies, BatchNorm folded into convolutions, gathered bias tables, captured
CUDA graphs. Such a copy is outdated once one of its source tensors is

- edited in place (``mul_``, ``copy_``, ``load_state_dict``): the tensor's version
  counter moves;
- given new storage through ``tensor.data = ...`` (as ``Module.to`` does): the
  version is kept, the data pointer changes;
- moved to another device or dtype;
- replaced by another tensor object (``module.weight = nn.Parameter(...)``).

:func:`weights_key` captures all of these in one comparable tuple; it is the only
place that reads PyTorch's private ``Tensor._version``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def weights_key(tensors: nn.Module | Iterable[torch.Tensor], *extra: Any) -> tuple:
    """A key that changes when any of ``tensors`` changes, plus ``extra``.

    Parameters
    ----------
    tensors : nn.Module or iterable of torch.Tensor
        The source tensors; a module stands for all its parameters and buffers.
    *extra
        Whatever else the derived value depends on (a target dtype, a size).

    Returns
    -------
    tuple
        ``(extra, ((id, data_ptr, device, dtype, version) of each tensor))``.
        Reading it does not change it.
    """
    if isinstance(tensors, nn.Module):
        tensors = [*tensors.parameters(), *tensors.buffers()]
    return extra, tuple((id(t), t.data_ptr(), t.device, t.dtype, t._version) for t in tensors)


class DerivedCache:
    """One value computed from tensors, recomputed when its :func:`weights_key` changes.

    Copies and pickles start empty: the value belongs to the original tensors.
    """

    __slots__ = ("key", "value")

    def __init__(self):
        self.key: tuple | None = None
        self.value: Any = None

    def get(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """The cached value for ``key``, or ``compute()`` (then cached) when the key differs."""
        if self.key != key:
            # drop the outdated value first: it may be as large as its successor
            self.key = self.value = None
            self.value = compute()
            self.key = key
        return self.value

    def __deepcopy__(self, memo) -> DerivedCache:
        return DerivedCache()

    def __reduce__(self):
        return (DerivedCache, ())


def derived_cache(module: nn.Module, name: str) -> DerivedCache:
    """The :class:`DerivedCache` stored as ``name`` on ``module``, created when missing.

    It lives in the module's ``__dict__``, never as a parameter or buffer, so
    the state dict is unaffected.
    """
    cache = module.__dict__.get(name)
    if cache is None:
        cache = module.__dict__[name] = DerivedCache()
    return cache
