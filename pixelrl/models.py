"""Networks: a trunk (encoder) shared by small heads.

    uint8 (C, H, W) --/255--> ConvTrunk --features--> PolicyHead (logits)   ValueHead (V)
    float (D,)      -------->  MLPTrunk              ActorHead (tanh)      QHead (Q(s, a))

Trunks size themselves with a dummy forward pass; observations are scaled inside the network so
that rollouts and replay keep compact uint8 frames.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from pixelrl.errors import ConfigError

# (out_channels, kernel, stride) per conv layer; default width of the trunk's FC layer
CONV_TRUNKS = {
    "nature": ([(32, 8, 4), (64, 4, 2), (64, 3, 1)], 512),  # Mnih et al. 2015
    "a3c": ([(16, 8, 4), (32, 4, 2)], 256),  # Mnih et al. 2016 (A3C), smaller and ~3x cheaper
    "drq": ([(32, 3, 2), (32, 3, 1), (32, 3, 1), (32, 3, 1)], 50),  # DrQ-v2 encoder
}
MLP_DEFAULT_HIDDEN = 200

# model.activation of the conv trunks. A ReLU trunk can die: an update leaves every first-layer
# unit negative on every frame, no gradient reaches it again, and the policy and value stop
# depending on the screen for good (A3C Pong: 2 of the 11 runs checked, BENCHMARKS.md). A leaky
# ReLU always passes a gradient back; ELU's gradient vanishes far below 0 as ReLU's does (an ELU
# run's FC layer sat below 0 on every frame by 3M frames, seed 4, BENCHMARKS.md).
ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
}


def init_orthogonal(module: nn.Module, gain: float = math.sqrt(2)) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_karpathy(module: nn.Module) -> None:
    """pg-pong: W ~ N(0, 1) / sqrt(fan_in) ("Xavier"), no biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.in_features))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ConvEncoder(nn.Module):
    """Conv layers + flatten. uint8 input is scaled by 1/255 here; with `center`, each frame's mean
    pixel is then subtracted, so the first layer sees what differs from the frame's background."""

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        layers: list[tuple[int, int, int]],
        scale: float,
        activation: str = "relu",
        bias: bool = True,
        center: bool = False,
    ):
        super().__init__()
        convs: list[nn.Module] = []
        in_ch = obs_shape[0]
        for out_ch, kernel, stride in layers:
            # in place: the conv's output is not needed for its backward, and each fresh
            # activation of a large batch is memory the update must fault in and clear again
            convs += [
                nn.Conv2d(in_ch, out_ch, kernel, stride, bias=bias),
                ACTIVATIONS[activation](),
            ]
            in_ch = out_ch
        self.convs = nn.Sequential(*convs, nn.Flatten())
        self.scale, self.center = scale, center
        with torch.no_grad():
            self.out_dim = int(self.convs(torch.zeros(1, *obs_shape)).shape[1])

    @property
    def _layout(self) -> torch.memory_format:
        first = self.convs[0].weight
        cl = first.is_contiguous(memory_format=torch.channels_last) and not first.is_contiguous()
        return torch.channels_last if cl else torch.contiguous_format

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        kind = obs.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else torch.float32
        # the first conv's layout (channels-last where the owner chose it): converted once, here
        layout = self._layout if obs.dim() == 4 else torch.preserve_format
        # a per-frame mean is ~5x slower over channels-last data: centering takes it first
        x = obs.to(dtype, memory_format=torch.preserve_format if self.center else layout)
        x = x.mul_(self.scale) if x is not obs else x * self.scale  # never scale the caller's
        if self.center:
            x = x.sub_(x.mean(dim=(-2, -1), keepdim=True)).to(memory_format=layout)
        return self.convs(x)


class ConvTrunk(nn.Module):
    """ConvEncoder + one fully connected layer (Nature CNN: 3136 -> 512), same activation."""

    def __init__(
        self,
        obs_shape,
        layers,
        hidden: int,
        scale: float,
        bias: bool = True,
        activation="relu",
        center: bool = False,
    ):
        super().__init__()
        self.encoder = ConvEncoder(obs_shape, layers, scale, activation, bias, center)
        fc = nn.Linear(self.encoder.out_dim, hidden, bias=bias)
        self.fc = nn.Sequential(fc, ACTIVATIONS[activation]())
        self.out_dim = hidden

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(obs))


class MLPTrunk(nn.Module):
    """Flatten + `layers` fully connected ReLU layers (pg-pong: 6400 -> 200)."""

    def __init__(self, obs_shape, hidden: int, layers: int, scale: float, bias: bool = True):
        super().__init__()
        mods: list[nn.Module] = [nn.Flatten()]
        in_dim = int(np.prod(obs_shape))
        for _ in range(layers):
            mods += [nn.Linear(in_dim, hidden, bias=bias), nn.ReLU()]
            in_dim = hidden
        self.net = nn.Sequential(*mods)
        self.scale = scale
        self.out_dim = hidden

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float().flatten(1) * self.scale
        first = self.net[1]
        if x.shape[1] >= 1024:  # pg-pong's difference frames are ~99% zeros: skip the zero columns
            cols = x.any(0).nonzero().squeeze(1)
            if len(cols) * 8 < x.shape[1]:
                h = x.index_select(1, cols) @ first.weight.index_select(1, cols).t()
                if first.bias is not None:
                    h = h + first.bias
                return self.net[2:](h)  # net[2], the ReLU module: its hooks see it
        return self.net[1:](x)


class PolicyHead(nn.Module):
    """Categorical logits. `sigmoid=True` (two actions) outputs one number z and the logits
    [z, 0], so P(action 0) = sigmoid(z): pg-pong's P(UP), with identical gradients."""

    def __init__(self, in_dim: int, num_actions: int, sigmoid: bool = False, bias: bool = True):
        super().__init__()
        if sigmoid and num_actions != 2:
            raise ConfigError(
                f"model.policy_head=sigmoid needs exactly 2 actions, the env has {num_actions}"
            )
        self.sigmoid = sigmoid
        self.linear = nn.Linear(in_dim, 1 if sigmoid else num_actions, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.linear(features)
        if self.sigmoid:
            return torch.cat([logits, torch.zeros_like(logits)], dim=-1)
        return logits


class ValueHead(nn.Module):
    def __init__(self, in_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features).squeeze(-1)


def obs_scale(space: gym.spaces.Box) -> float:
    return 1.0 / 255.0 if space.dtype == np.uint8 else 1.0


def make_trunk(model_cfg, obs_space: gym.spaces.Box) -> nn.Module:
    shape = tuple(obs_space.shape)
    scale = obs_scale(obs_space)
    if model_cfg.trunk == "mlp":
        hidden = model_cfg.hidden or MLP_DEFAULT_HIDDEN
        return MLPTrunk(shape, hidden, model_cfg.mlp_layers, scale, model_cfg.bias)
    if len(shape) != 3:
        raise ConfigError(
            f"model.trunk={model_cfg.trunk} needs image observations (C, H, W), got shape {shape}; use model.trunk=mlp"
        )
    layers, default_hidden = CONV_TRUNKS[model_cfg.trunk]
    try:
        hidden = model_cfg.hidden or default_hidden
        return ConvTrunk(
            shape, layers, hidden, scale, model_cfg.bias, model_cfg.activation, model_cfg.center
        )
    except RuntimeError:
        raise ConfigError(
            f"model.trunk={model_cfg.trunk} is too deep for {shape[1]}x{shape[2]} observations; "
            "use a larger env.resolution or model.trunk=mlp"
        ) from None


class ActorCritic(nn.Module):
    """Trunk + softmax policy head + linear value head (A2C, A3C, REINFORCE with a baseline)."""

    def __init__(
        self, model_cfg, obs_space: gym.spaces.Box, num_actions: int, with_value: bool = True
    ):
        super().__init__()
        self.trunk = make_trunk(model_cfg, obs_space)
        sigmoid = model_cfg.policy_head == "sigmoid"
        self.policy = PolicyHead(self.trunk.out_dim, num_actions, sigmoid, bias=model_cfg.bias)
        self.value = ValueHead(self.trunk.out_dim) if with_value else None
        if model_cfg.init == "karpathy":
            init_karpathy(self)
        else:
            init_orthogonal(self.trunk)
            init_orthogonal(self.policy, gain=0.01)  # near-uniform initial policy
            if self.value is not None:
                init_orthogonal(self.value, gain=1.0)
        if isinstance(self.trunk, ConvTrunk):  # channels-last convolutions: faster on CPU (oneDNN)
            self.trunk.encoder.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.trunk(obs)
        value = self.value(features) if self.value is not None else None
        return self.policy(features), value

    @torch.no_grad()
    def act(self, obs: torch.Tensor, greedy: bool = True) -> torch.Tensor:
        logits, _ = self(obs)
        if greedy:
            return logits.argmax(-1)
        return sample_actions(logits)


def sample_actions(logits: torch.Tensor) -> torch.Tensor:
    """One categorical sample per row (4x cheaper than building a torch.distributions object,
    which matters at one call per env step)."""
    return torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------
# Continuous control (DDPG): heads on top of a ConvEncoder, DrQ-v2's layout
# --------------------------------------------------------------------------------------------


class FeatureLayer(nn.Sequential):
    """Encoder output -> a small normalized feature vector (DrQ-v2: Linear, LayerNorm, tanh).

    Its Linear is the DDPG update's largest matmul (39,200 x 50 at 84x84, five times per
    update): a bf16 input (the encoder's output under bf16 autocast) is multiplied in bf16,
    accumulated in fp32, and normalized in fp32; an fp32 input stays fp32 throughout."""

    def __init__(self, in_dim: int, feature_dim: int):
        super().__init__(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear, norm, tanh = self
        if x.dtype == torch.bfloat16:
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                x = linear(x)
            return tanh(norm(x.float()))
        return tanh(norm(linear(x)))


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, out_dim),
    )


class ActorHead(nn.Module):
    """Encoder features -> deterministic action in [-1, 1]^A (tanh-bounded)."""

    def __init__(self, in_dim: int, action_dim: int, feature_dim: int = 50, hidden: int = 1024):
        super().__init__()
        self.features = FeatureLayer(in_dim, feature_dim)
        self.mu = _mlp(feature_dim, hidden, action_dim)
        init_orthogonal(self, gain=1.0)

    def pre_tanh(self, features: torch.Tensor) -> torch.Tensor:
        return self.mu(self.features(features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.pre_tanh(features))


class QHead(nn.Module):
    """Encoder features and an action in [-1, 1]^A -> Q(s, a), one column per Q network."""

    def __init__(
        self, in_dim: int, action_dim: int, feature_dim: int = 50, hidden: int = 1024, num_q=1
    ):
        super().__init__()
        self.features = FeatureLayer(in_dim, feature_dim)
        self.qs = nn.ModuleList([_mlp(feature_dim + action_dim, hidden, 1) for _ in range(num_q)])
        init_orthogonal(self, gain=1.0)

    def forward(self, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.features(features), action], dim=-1)
        return torch.cat([q(x) for q in self.qs], dim=-1)


def to_action_space(action, low, high):
    """[-1, 1] -> [low, high], affinely (numpy arrays or tensors)."""
    return low + (action + 1.0) * 0.5 * (high - low)


class ContinuousActor(nn.Module):
    """The playing policy of DDPG: pixels -> ConvEncoder -> ActorHead -> action in env units.

    `forward` gives the tanh output in [-1, 1]; `act` maps it affinely onto [low, high]."""

    def __init__(self, encoder: ConvEncoder, head: ActorHead, low, high):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.register_buffer("low", torch.as_tensor(np.asarray(low, np.float32)))
        self.register_buffer("high", torch.as_tensor(np.asarray(high, np.float32)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs))

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [low, high]."""
        return to_action_space(action.clamp(-1.0, 1.0), self.low, self.high)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, greedy: bool = True) -> torch.Tensor:
        return self.to_env(self(obs))
