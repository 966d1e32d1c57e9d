"""One ``Registry`` class for every name -> object table in pointmap: models, data sets, tasks, hooks,
transforms.

    MODELS = Registry("model")

    @MODELS.register()            # under the function's __name__
    def hybridnet_s(...): ...

    @HOOKS.register("vis")        # under a given name
    class VisHook(Hook): ...

    MODELS.get("hybridnet_s")     # an unknown name is a ConfigError (a ValueError) listing the registered ones

Registering a name twice is an error unless ``override=True`` says the second one is meant to replace
the first. A registry reads like a mapping (``name in REG``, ``REG[name]``, ``sorted(REG)``).
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Dict, Iterator, List, Optional

from .errors import ConfigError

__all__ = ["Registry"]


class Registry:
    def __init__(self, kind: str):
        self.kind = kind  # what an entry is, for messages: "model", "data set", "task", ...
        self._entries: Dict[str, Any] = {}

    def register(self, name: Optional[str] = None, obj: Any = None, *, override: bool = False) -> Any:
        """``register(name, obj)`` adds ``obj``; ``@register(name)`` / ``@register()`` decorate (the
        name defaults to ``obj.__name__``). Returns ``obj``."""
        def add(o: Any) -> Any:
            key = name if name is not None else o.__name__
            if key in self._entries and not override:
                raise ValueError(f"{self.kind} {key!r} is registered twice (pass override=True to replace it)")
            self._entries[key] = o
            return o

        return add if obj is None else add(obj)

    def get(self, name: str) -> Any:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names()) or 'none'}")
        return self._entries[name]

    def names(self, pattern: Optional[str] = None) -> List[str]:
        """Sorted names, optionally filtered by a shell-style ``pattern`` (``"hybridnet_*"``)."""
        names = sorted(self._entries)
        return fnmatch.filter(names, pattern) if pattern else names

    def build(self, name: str, *args, **kwargs) -> Any:
        """``get(name)(*args, **kwargs)``."""
        fn: Callable[..., Any] = self.get(name)
        return fn(*args, **kwargs)

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
