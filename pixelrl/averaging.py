"""The policy evaluated as the mean of its recent weights (eval.average_frames).

An actor-critic's weights wander from update to update, and a greedy policy taken at one moment
can sit in a bad spot: A3C on Pong at sticky actions 0.25 (Nature trunk, seed 4) played 1.8 over 30
games with its weights at 6M frames and 15.2 with the mean of its weights at 4.0, 4.5, ..., 6.0M
(BENCHMARKS.md). Averaging weights along one run's path is stochastic weight averaging (Izmailov et
al. 2018; Nikishin et al. 2018 for A2C): the runs share one start, so their weights stay in one
basin and their mean is a policy too.

`WeightAverage(window)` keeps copies of the policy's weights, one every window/4 frames (`spacing`;
the caller's schedule, pixelrl/run.py). The
averaged policy at frames F is the mean of the weights at F and of the copies taken within the
last `window` frames before F: with window 2M and F a multiple of 500k, the weights at F - 2M,
F - 1.5M, ..., F (those that exist). The copies travel in last.pt (`payload()`, as
`average_copies`), so a resumed run averages over the same weights as one that was never stopped
(`restore()`); a checkpoint written before they did starts collecting again from its weights.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

SNAPSHOTS = 5  # weights averaged at most: the current ones and four copies window/4 apart


class WeightAverage:
    def __init__(self, window: int):
        self.window = int(window)
        self.spacing = max(1, self.window // (SNAPSHOTS - 1))
        self.copies: deque[tuple[int, dict[str, torch.Tensor]]] = deque(maxlen=SNAPSHOTS)

    def add(self, frames: int, weights: dict[str, torch.Tensor]) -> None:
        """Keep a copy of `weights` (a state_dict), the learner's at `frames`."""
        self.copies.append((frames, {k: v.detach().clone() for k, v in weights.items()}))

    def mean(self, frames: int, weights: dict[str, torch.Tensor]) -> tuple[dict, int]:
        """The mean of `weights` (at `frames`) and of the copies from the last `window` frames:
        (state_dict, how many weight sets it averages). Integer entries are the current ones."""
        since = frames - self.window - self.spacing // 8  # a copy a few frames early still counts
        older = [w for f, w in self.copies if since <= f < frames][-(SNAPSHOTS - 1) :]
        sets = [*older, weights]
        mean = {}
        for k, v in weights.items():
            if torch.is_floating_point(v):
                total = torch.zeros_like(v, dtype=torch.float32)
                for w in sets:
                    total += w[k].float()
                mean[k] = (total / len(sets)).to(v.dtype)
            else:
                mean[k] = v.detach().clone()
        return mean, len(sets)

    def payload(self) -> list[dict]:
        """The copies, for last.pt: [{"frames", "policy"}, ...], oldest first."""
        return [{"frames": int(f), "policy": w} for f, w in self.copies]

    def restore(self, saved: Any, weights: dict[str, torch.Tensor], before: int) -> int:
        """Take back the copies of a checkpoint's `payload()`: those taken at or before `before`
        (the checkpoint's frames) whose entries match `weights` (the resumed policy's) in names,
        shapes and dtypes; anything else is left out. Returns how many copies it then holds."""
        like = {k: (v.shape, v.dtype) for k, v in weights.items()}
        for item in saved if isinstance(saved, list) else []:
            if not isinstance(item, dict) or not isinstance(item.get("frames"), int):
                continue
            policy = item.get("policy")
            if not isinstance(policy, dict) or item["frames"] > before:
                continue
            if {k: (v.shape, v.dtype) for k, v in policy.items() if torch.is_tensor(v)} != like:
                continue
            self.copies.append((item["frames"], {k: v.clone() for k, v in policy.items()}))
        return len(self.copies)
