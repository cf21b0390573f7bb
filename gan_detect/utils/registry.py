"""A name -> object registry filled by a decorator, as timm's ``register_model``.

One instance per kind (variants, DataModules, built-in detectors, score fusions). Torch-free, so
the config layer can hold the torch-free half of a kind (the variants' Config classes) too.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, MutableMapping
from typing import Generic, TypeVar

from gan_detect.utils.errors import InputError

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")
Obj = TypeVar("Obj")


class UnknownNameError(InputError, KeyError):
    """A name no registry entry has; an ``InputError`` (one line in the CLI) and a ``KeyError``
    (what a mapping lookup raises, so ``except KeyError`` callers keep working)."""

    def __str__(self) -> str:  # KeyError's own would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class Registry(MutableMapping[str, T], Generic[T]):
    """Named entries of one kind.

    ``@REG.register("name")`` adds the decorated class or function and returns it unchanged;
    ``REG.lookup("name")`` (or ``REG["name"]``) looks it up, with an error that names the kind,
    lists the known names and suggests the closest one. Registering a name twice is refused unless it is the same object
    (a module imported twice under two names, or a test re-registering, stays harmless).
    ``REG[name] = obj`` and ``del REG[name]`` go through the same checks, so
    ``monkeypatch.setitem`` adds and removes an entry for one test.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[Obj], Obj]:
        """Decorator: add the decorated object under ``name``."""

        def add(obj: Obj) -> Obj:
            self[name] = obj  # type: ignore[assignment]
            return obj

        return add

    def lookup(self, name: str) -> T:
        """The entry ``name`` (``REG[name]`` is the same).

        Raises:
            UnknownNameError: naming the kind and the name, listing the known names.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        """``unknown <kind> 'x'; valid: a, b (did you mean 'a'?)``."""
        known = sorted(self._entries)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}; valid: {', '.join(known) or '(none)'}{hint}"

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def _check_add(self, name: str, obj: T) -> None:
        """Hook for subclasses that keep a second table in step (run before the entry is set)."""

    def _on_remove(self, name: str, obj: T) -> None:
        """Hook for subclasses: ``name`` (holding ``obj``) was removed."""

    # MutableMapping: lookups raise UnknownNameError (a KeyError), writes are checked.
    def __getitem__(self, name: str) -> T:
        return self.lookup(name)

    def __setitem__(self, name: str, obj: T) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names are non-empty strings, got {name!r}")
        old = self._entries.get(name)
        if old is not None and old is not obj and old != obj:
            raise ValueError(
                f"{self.kind} {name!r} is already registered ({_describe(old)}); "
                f"refusing {_describe(obj)}"
            )
        self._check_add(name, obj)
        self._entries[name] = obj

    def __delitem__(self, name: str) -> None:
        obj = self.lookup(name)
        del self._entries[name]
        self._on_remove(name, obj)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _describe(obj: object) -> str:
    """``module.QualName`` of a class or function, else its repr."""
    qual = getattr(obj, "__qualname__", None)
    return f"{getattr(obj, '__module__', '?')}.{qual}" if qual else repr(obj)
