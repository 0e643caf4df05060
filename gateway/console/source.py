"""What the console needs of the daemon: a small read-mostly view, so the page never reaches in."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from gateway.console.activity import RecentActivity
from gateway.console.tags import TagsInView
from gateway.domain.expected import ExpectedReturns
from gateway.profiles import Profile


class ConsoleSource(Protocol):
    """The daemon as the console sees it; the one change it may ask for is `apply_profile`."""

    @property
    def tags(self) -> TagsInView:
        """Tags read in the last seconds (fed by the daemon's read path)."""
        ...

    @property
    def activity(self) -> RecentActivity:
        """The last visits and movements the pipeline made or refused."""
        ...

    def health(self) -> Mapping[str, Any]:
        """The same health the status topic and `/healthz` carry."""
        ...

    def profiles_in_force(self) -> Mapping[str, Profile]:
        """Each LLRP reader's profile in force now."""
        ...

    def profile_dir(self) -> Path:
        """The folder of the profiles technicians may choose from."""
        ...

    async def profile_history(self) -> list[dict[str, Any]]:
        """Every recorded profile change, oldest first."""
        ...

    async def apply_profile(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply with capability checks, rollback and audit; InputError for a bad request."""
        ...

    async def expected_returns(self, query: str) -> ExpectedReturns | None:
        """The announced returns a lookup of `query` can concern (None before the daemon runs)."""
        ...
