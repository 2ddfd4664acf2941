"""textenv: token-level Gymnasium environments for RL from human preferences on language.

Re-implements Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences". Importing this
package is cheap: it loads no model, touches no file and makes no network call.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
