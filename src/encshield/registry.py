"""The one registry type: datasets, architectures, stems, normalisations, heads, checkpoint
formats, SSL methods, universal / white-box / encoder attacks, objectives and defenses.

One registration style everywhere: an entry registers itself where it is defined --

* classes and functions with the decorator ``@REGISTRY.register(name, aliases=(...))``; a class
  with a ``name`` class attribute gets the registered name written into it (the name is written
  once, in the decorator);
* plain values (stem specs, architecture specs, normalisation statistics, format readers) with
  ``REGISTRY.add(name, value, aliases=(...))`` right after their definition.

The CLI, the configs and the generic tests enumerate registries with :meth:`Registry.items`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from encshield.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lower-case names (and aliases) to registered objects.

    Example::

        ATTACKS: Registry[type[Attack]] = Registry("attack")

        @ATTACKS.register("uap")
        class UAP(Attack): ...

        ATTACKS.get("UAP")  # -> UAP
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator registering an object under ``name`` (and ``aliases``)."""

        def decorator(obj: T) -> T:
            if isinstance(obj, type) and "name" in dir(obj):
                obj.name = name  # type: ignore[attr-defined]
            self.add(name, obj, aliases=aliases)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, aliases: tuple[str, ...] = ()) -> None:
        key = name.lower()
        if key in self._items or key in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[key] = obj
        for alias in aliases:
            self._aliases[alias.lower()] = key

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; raises ConfigError if unknown."""
        key = name.lower()
        key = self._aliases.get(key, key)
        if key not in self._items:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; allowed values: {', '.join(self.names())}"
            )
        return key

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        for key in self.names():
            yield key, self._items[key]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return key in self._items or key in self._aliases

    def __len__(self) -> int:
        return len(self._items)
