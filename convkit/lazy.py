"""A package's API imported on first use (start-up time counts on small jobs): the one
way convkit's packages export names without importing every module behind them."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_api(package: str, api: dict[str, str], extra: tuple[str, ...] = (),
             ) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """(__all__, __getattr__, __dir__) of a package whose names (api: name -> the module
    defining it) are imported when first asked for; extra: names it defines itself."""
    names = sorted(api) + list(extra)

    def __getattr__(name: str) -> Any:
        if name in api:
            return getattr(import_module(api[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return names

    return names, __getattr__, __dir__
