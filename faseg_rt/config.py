"""The method's constants, in one frozen dataclass, each with where it comes from.

Everything here is from the FA-Seg paper / published code as restated in docs/algorithm.md
("the spec"; "spec step N" is its step N).  The inversion coefficients are computed from the
beta schedule right here instead of from a scheduler object's side effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Mapping

import numpy as np

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError


def _frozen(d: dict) -> Mapping:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class FASegConfig:
    # Image side the published code resizes every input to (spec step 2); latents are side / 8.
    image_size: int = 512
    # The latent side of SD 1.x at 512 px: the grid HARD works on (spec step 6).
    latent_size: int = 64
    # Cross-attention fusion weights per latent resolution (spec step 5).
    cross_weights: Mapping[int, float] = field(
        default_factory=lambda: _frozen({8: 0.15, 16: 0.70, 32: 0.15, 64: 0.0}))
    # HARD output weights per resolution (spec step 6).
    self_weights: Mapping[int, float] = field(
        default_factory=lambda: _frozen({8: 0.1, 16: 0.1, 32: 0.5, 64: 0.3}))
    # Power of the affinity matrices in HARD (spec step 6: tau = 2).
    tau: int = 2
    # Background threshold on the flip-fused maps; published default (VOC) 0.55 (spec step 8).
    threshold: float = 0.55
    # DDIM schedule of SD 1.x (spec "Model and schedule"): 1000 steps, scaled_linear betas.
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    # One inference step with steps_offset 1: the only timestep is t = 1 (spec "Model and schedule").
    timestep: int = 1
    # Seed of the fixed latent noise randn((2, 4, 64, 64), CPU generator) (spec step 2).
    seed: int = 0

    def __post_init__(self):
        if self.latent_size * 8 != self.image_size:
            raise ValueError("latent_size must be image_size / 8 (the SD VAE downsamples by 8)")
        object.__setattr__(self, "threshold", rules.threshold(self.threshold))
        for name in ("cross_weights", "self_weights"):
            w = getattr(self, name)
            if not isinstance(w, MappingProxyType):
                object.__setattr__(self, name, _frozen(w))
            if set(getattr(self, name)) != set(self.resolutions):
                raise ValueError(f"{name} must have one weight per resolution {self.resolutions}")

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "the config") -> "FASegConfig":
        """A config from plain JSON values: {"image_size": 64, "latent_size": 8, "cross_weights":
        {"1": 0.15, "2": 0.7, "4": 0.15, "8": 0.0}, ...}; fields left out keep their defaults.

        Weight keys may be strings of integers (JSON object keys are strings).  Any problem (an
        unknown field, a value of the wrong type, an inconsistent set) is one InvalidInputError
        naming `source` and the field."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"{source} must be a JSON object of FASegConfig fields, "
                                    f"got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidInputError(f"{source}: unknown field(s) {unknown}; known: {sorted(known)}")
        kw = {name: _field_value(name, value, source) for name, value in data.items()}
        try:
            return cls(**kw)
        except ValueError as e:  # InvalidInputError included
            raise InvalidInputError(f"{source}: {e}") from None

    @classmethod
    def from_json(cls, path) -> "FASegConfig":
        """`from_dict` of a JSON file; an unreadable or malformed file is one InvalidInputError."""
        from faseg_rt.io import read_json_file

        return cls.from_dict(read_json_file(path, "config"), source=f"config file {path}")

    def to_dict(self) -> dict:
        """Plain JSON values (weight keys as strings): `from_dict(to_dict())` is this config."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("cross_weights", "self_weights"):
            out[name] = {str(k): float(v) for k, v in out[name].items()}
        return out

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Latent side lengths with attention in SD 1.x: 8 (mid block), 16, 32, 64."""
        s = self.latent_size
        return (s // 8, s // 4, s // 2, s)

    def alphas_cumprod(self) -> np.ndarray:
        """alpha-bar_t for t = 0..T-1 of the `scaled_linear` schedule, in float64."""
        betas = np.linspace(math.sqrt(self.beta_start), math.sqrt(self.beta_end),
                            self.num_train_timesteps, dtype=np.float64) ** 2
        return np.cumprod(1.0 - betas)

    def inversion_coefficients(self) -> tuple[float, float]:
        """(a_prev, a) of the single DDIM inversion step (spec step 3).

        With one inference step and set_alpha_to_one=False, the step goes from alpha-bar_0
        (the "final" alpha) to alpha-bar_t at t = 1.
        """
        ac = self.alphas_cumprod()
        return float(ac[0]), float(ac[self.timestep])


#: The scalar fields' JSON types (bool is refused where an int or a float is meant).
_INT_FIELDS = ("image_size", "latent_size", "tau", "num_train_timesteps", "timestep", "seed")
_FLOAT_FIELDS = ("threshold", "beta_start", "beta_end")


def _is_number(v, integer: bool) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) if integer else isinstance(v, (int, float))


def _field_value(name: str, value, source: str):
    """One FASegConfig field from its JSON value, or InvalidInputError naming the field."""
    if name in _INT_FIELDS or name in _FLOAT_FIELDS:
        integer = name in _INT_FIELDS
        if not _is_number(value, integer):
            kind = "an integer" if integer else "a number"
            raise InvalidInputError(f"{source}: {name} must be {kind}, got {value!r}")
        return value if integer else float(value)
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{source}: {name} must be an object resolution -> weight, "
                                f'e.g. {{"8": 0.15}}, got {value!r}')
    weights = {}
    for k, w in value.items():
        try:
            res = int(k)
        except (TypeError, ValueError):
            res = None
        if res is None or isinstance(k, bool) or not _is_number(w, integer=False):
            raise InvalidInputError(f"{source}: {name} maps resolutions (integers) to weights "
                                    f"(numbers), got {k!r}: {w!r}")
        weights[res] = float(w)
    return weights
