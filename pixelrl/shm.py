"""Named shared-memory blocks viewed as numpy arrays, passed to worker processes by name.

The env workers of the `procs` backend write observations into them; REINFORCE's episode workers
read the policy's weights from them and add their gradients to them.
"""

from __future__ import annotations

from multiprocessing import shared_memory

import numpy as np


class SharedArray:
    """A named block of shared memory viewed as one numpy array."""

    def __init__(self, shape, dtype, name: str | None = None):
        dtype = np.dtype(dtype)
        size = max(1, int(np.prod(shape)) * dtype.itemsize)
        self.shm = shared_memory.SharedMemory(name=name, create=name is None, size=size)
        self.array = np.ndarray(shape, dtype, buffer=self.shm.buf)
        self.spec = (shape, dtype.str, self.shm.name)

    @classmethod
    def attach(cls, spec):
        """The block another process created, from its `spec`."""
        shape, dtype, name = spec
        return cls(shape, dtype, name)

    def release(self) -> None:
        """Unmap the block and remove its name (the creating process, once every user is done)."""
        self.shm.close()
        self.shm.unlink()
