"""textenv: token-level Gymnasium environments for RL from human preferences on language.

Re-implements Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences". Importing this
package registers the environments and is cheap: it loads no model, touches no file and makes no network
call (gymnasium and numpy only).

    import gymnasium as gym, textenv
    env = gym.make("BookSentiment-v0")
    envs = gym.make_vec("BookSentiment-v0", num_envs=64, vectorization_mode="vector_entry_point")

    task = textenv.make_task("BookSentiment-v0")     # the Task API: prompts, contexts, scores, no env
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from textenv.tasks import TASKS, TaskConfig, get_task

ENV_IDS: tuple[str, ...] = tuple(TASKS)

for _id in ENV_IDS:
    if _id not in registry:
        # Only the task id goes into the registered kwargs: Gymnasium deep-copies them on every make,
        # so heavy objects (tokenizer, reward function) are passed to gym.make instead (DESIGN.md).
        register(
            id=_id,
            entry_point="textenv.env:TextEnv",
            vector_entry_point="textenv.vector:TextVectorEnv",
            kwargs={"task": _id},
        )


_LAZY = {
    "TextEnv": "textenv.env",
    "TextVectorEnv": "textenv.vector",
    "Task": "textenv.task",
    "make_task": "textenv.task",
}


def __getattr__(name: str):
    # Lazy access to the env classes, the Task API and the version keeps `import textenv` cheap.
    if name == "__version__":
        return _installed_version()
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'textenv' has no attribute {name!r}")


def _installed_version() -> str:
    """The version of the installed distribution; its one source is ``version`` in pyproject.toml."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("textenv")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


__all__ = [
    "ENV_IDS",
    "TASKS",
    "Task",
    "TaskConfig",
    "TextEnv",
    "TextVectorEnv",
    "__version__",
    "get_task",
    "make_task",
]
