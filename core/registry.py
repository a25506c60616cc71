"""One registry class for every kind of plugin (methods, metrics, ...): filled by a decorator,
discovered from its package on first use, and answering an unknown name with the known ones
and the nearest match."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from core.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Plugins of one `kind` ("method", "metric") by name, from the modules of `package`."""

    def __init__(self, kind: str, package: str, name_of: Callable[[T], str]) -> None:
        self.kind = kind
        self.package = package
        self._name_of = name_of
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, entry: T) -> T:
        """Decorator: make `entry` available by its name; a second entry of that name is a bug."""
        name = self._name_of(entry)
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} name {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def _discover(self) -> None:
        # Every public module of the package registers its plugins when imported.
        if self._discovered:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")
        self._discovered = True

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._discover()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        """The entry called `name`, or a UsageError listing the registered names."""
        self._discover()
        if name not in self._entries:
            raise UsageError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: str) -> str:
        """The message for an unknown name: the registered ones, and the nearest if any."""
        known = self.names()
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}. Registered {self.kind}s: {', '.join(known)}{hint}"
