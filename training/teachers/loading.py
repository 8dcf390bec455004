"""Finding teacher weights on disk: never a silent download, never a retry loop.

Teachers load with `local_files_only` by default, so a training run on a robot's workstation or
a cluster node without internet fails at once, with the fix in the message, instead of stalling
on hub retries. HF_HUB_OFFLINE=1 forces local-only loading even when a config allows downloads.
"""

from __future__ import annotations

import os


class ModelMissingError(RuntimeError):
    """A teacher model is not on this machine; the message says where we looked and how to fetch it."""

    def __init__(self, what: str, name: str, looked_in: str, fetch: str) -> None:
        super().__init__(
            f"{what} '{name}' is not available locally (looked in {looked_in}).\n"
            f"Fetch it on a machine with internet access, then copy the cache over or point the config "
            f"at a local path:\n    {fetch}"
        )


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def local_only(configured: bool) -> bool:
    """The config's local_files_only, forced on by HF_HUB_OFFLINE."""
    return configured or hub_offline()


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)
