"""modrl: modular reinforcement learning and programme induction in PyTorch.

Importing ``modrl`` registers the ``modrl/*`` environments with Gymnasium.
"""

__version__ = "0.1.0"

from modrl import envs as envs  # noqa: E402  (registers the gymnasium ids)
