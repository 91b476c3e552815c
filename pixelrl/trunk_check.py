"""Is a trained network still looking at the screen?

    python -m pixelrl.trunk_check <checkpoint or run dir> [steps=300] [every=10] [seed=0]

Plays the checkpoint's own env (its config, training mode) with uniformly random actions, keeps
every `every`-th batch of observations, and feeds them to the saved policy network. For each
activation layer it prints the fraction of outputs above 0 (on all frames) and the fraction of
units above 0 on at least one frame; then how much the network's outputs vary from frame to
frame (the value's std, the action probabilities' mean std). A ReLU trunk that died in training
(every first-layer unit negative on every frame: see model.activation) shows 0.000 there, and its
outputs barely vary: no gradient reaches it again, the run cannot recover. The last line
is JSON: {"layers": {...}, "value_std": ..., "policy_std": ..., "dead": true|false, ...}, where
dead means fewer than 0.1% of the first layer's outputs are above 0.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from torch import nn

from pixelrl import tool_args
from pixelrl.dormant import DEAD_FRACTION
from pixelrl.models import ACTIVATIONS

ACTIVATION_TYPES = tuple({type(make()) for make in ACTIVATIONS.values()})  # model.activation's
USAGE = (
    "usage: python -m pixelrl.trunk_check <checkpoint or run dir> [steps=300] [every=10] [seed=0]"
)


def observations(cfg, steps: int, every: int, seed: int) -> np.ndarray:
    """Frames of the checkpoint's env under uniformly random actions: (steps // every * N, ...)."""
    from pixelrl.envs import TRAIN, make_vector_env

    envs = make_vector_env(cfg.env, 8, mode=TRAIN)
    try:
        obs, _ = envs.reset(seed=seed)
        envs.action_space.seed(seed)
        kept = []
        for t in range(steps):
            obs, *_ = envs.step(envs.action_space.sample())
            if t % every == 0:
                kept.append(np.array(obs, copy=True))
    finally:
        envs.close()
    return np.concatenate(kept)


def check(policy: nn.Module, obs: np.ndarray) -> dict:
    """Per-layer activity of `policy` on `obs` and how its outputs vary over them."""
    outputs: dict[str, torch.Tensor] = {}
    kinds: dict[str, type] = {}
    hooks = []
    for name, module in policy.named_modules():
        if isinstance(module, ACTIVATION_TYPES):
            kinds[name] = type(module)
            hooks.append(
                module.register_forward_hook(
                    lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach().clone())
                )
            )
    try:
        with torch.no_grad():
            result = policy(torch.as_tensor(obs))
    finally:
        for hook in hooks:
            hook.remove()
    layers = {
        name: {
            "active": round(float((out > 0).float().mean()), 4),
            "ever_active": round(float((out > 0).flatten(1).any(0).float().mean()), 4),
        }
        for name, out in outputs.items()
    }
    report: dict = {"frames": len(obs), "layers": layers}
    if isinstance(result, tuple) and len(result) == 2 and result[1] is not None:
        logits, value = result
        report["value_std"] = float(value.float().std())
        report["policy_std"] = float(torch.softmax(logits.float(), -1).std(0).mean())
    else:  # a deterministic actor (DDPG): its actions
        out = result[0] if isinstance(result, tuple) else result
        report["action_std"] = float(out.float().std(0).mean())
    first = next(iter(layers), None)
    report["dead"] = first is not None and layers[first]["active"] < DEAD_FRACTION
    # a leaky ReLU's silent units still get a gradient: such a network may come back
    report["recoverable"] = first is not None and kinds[first] is nn.LeakyReLU
    return report


def main(argv: list[str] | None = None) -> int:
    from pixelrl.app import load_agent
    from pixelrl.errors import ConfigError, PixelrlError

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    try:
        opts, paths = tool_args.parse(
            argv, {"steps": "300", "every": "10", "seed": "0"}, paths=True
        )
        if len(paths) != 1:
            raise ConfigError(f"give one checkpoint or run dir, not {len(paths)}; {USAGE}")
        least = {"steps": 1, "every": 1, "seed": 0}
        steps, every, seed = (tool_args.number(opts, key, int, least[key]) for key in least)
        agent = load_agent(paths[0])
        obs = observations(agent.config, steps, every, seed)
    except PixelrlError as e:
        print(f"pixelrl.trunk_check: error: {e}", file=sys.stderr)
        return 2
    report = check(agent.policy, obs)
    for name, layer in report["layers"].items():
        print(
            f"{name:32s} outputs > 0: {layer['active']:.3f}   units ever > 0: {layer['ever_active']:.3f}"
        )
    stds = {k: v for k, v in report.items() if k.endswith("_std")}
    print(" ".join(f"{k} {v:.4g}" for k, v in stds.items()), f"over {report['frames']} frames")
    if report["dead"]:
        first = next(iter(report["layers"].values()))["active"]
        tail = (
            "a leaky ReLU still passes gradients, so it may recover"
            if report["recoverable"]
            else "no gradient reaches it again: this run cannot recover (in a new run, "
            "model.center=true or model.activation=leaky_relu guards the first layer)"
        )
        print(
            f"dead: {first:.2%} of the first layer's outputs are above 0, so the outputs no "
            f"longer follow the screen; {tail}"
        )
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
