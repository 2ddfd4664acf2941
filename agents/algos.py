"""The algorithm registry: config validation, overrides, the CLI's ``--algo`` choices and the plots all read
it. A new algorithm is one module (its config, agent and :class:`agents.loop.Algorithm` entry ``ALGO``)
plus one line here.
"""

from __future__ import annotations

from agents import grpo, ppo, rloo
from agents.sections import Algorithm

ALGOS: dict[str, Algorithm] = {
    "ppo": ppo.ALGO,
    "rloo": rloo.ALGO,
    "grpo": grpo.ALGO,
}


def get_algo(name: str) -> Algorithm:
    """The registry entry ``name``; an unknown name gets an error that lists the choices."""
    try:
        return ALGOS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {sorted(ALGOS)}.") from None
