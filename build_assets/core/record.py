"""The model classes' machinery (`core.model`): fields declared once, no code generated at
import (a dataclass costs about 1 ms to define; `plan` from its caches imports the model).

    class Lifecycle(Record):
        keep: int = 10
        paths: tuple[str, ...] = field((), load=tuple, dump=list, key="source_paths")

Each annotated class attribute is a field, in order; `load` reads (converts, type-checks) a
document's value, `dump` writes it back as JSON types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any


def _same(value: Any) -> Any:
    return value


_MISSING: Any = object()


class _Field:
    """One field of a model class: its default (or `factory`), its key in a document, how
    a document's value is read (`load`: converts and type-checks) and written (`dump`)."""

    __slots__ = ("name", "key", "default", "factory", "load", "dump")

    def __init__(self, default: Any, factory: Any, key: str | None, load: Any, dump: Any):
        self.name = ""
        self.key = key
        self.default, self.factory, self.load, self.dump = default, factory, load, dump


def field(
    default: Any = _MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    key: str | None = None,
    load: Callable[[Any], Any] = _same,
    dump: Callable[[Any], Any] = _same,
) -> Any:
    """Declare a field with a default, a document key other than its name, or converters."""
    return _Field(default, factory, key, load, dump)


class _RecordType(type):
    """Makes each annotated class attribute a field: `FIELDS` in order, `__slots__` (unless
    `slots=False`), and the document keys (`_BY_KEY`)."""

    def __new__(mcs, name: str, bases: tuple, ns: dict, slots: bool = True) -> _RecordType:
        fields = []
        for attr in ns.get("__annotations__", {}):
            value = ns.pop(attr, _MISSING)
            spec = value if isinstance(value, _Field) else _Field(value, None, None, _same, _same)
            spec.name, spec.key = attr, spec.key or attr
            fields.append(spec)
        if slots:
            ns["__slots__"] = tuple(f.name for f in fields)
        cls = super().__new__(mcs, name, bases, ns)
        cls.FIELDS = tuple(fields)  # type: ignore[attr-defined]
        cls._BY_KEY = {f.key: f for f in fields}  # type: ignore[attr-defined]
        return cls


def _make(cls: type, values: dict[str, Any]) -> Any:
    return cls(**values)


class Record(metaclass=_RecordType):
    """Base of the model's classes: keyword (or positional) construction with defaults,
    frozen, compared field by field, picklable."""

    __slots__ = ()
    if TYPE_CHECKING:  # set by _RecordType (annotations here would be fields)
        FIELDS: tuple[_Field, ...]
        _BY_KEY: dict[str, _Field]

    def __init__(self, *args: Any, **values: Any) -> None:
        if len(args) > len(self.FIELDS):
            raise TypeError(f"{type(self).__name__}: too many arguments")
        for spec, value in zip(self.FIELDS, args, strict=False):
            if spec.name in values:
                raise TypeError(f"{type(self).__name__}: {spec.name!r} given twice")
            values[spec.name] = value
        for spec in self.FIELDS:
            value = values.pop(spec.name, _MISSING)
            if value is _MISSING:
                if spec.factory is not None:
                    value = spec.factory()
                elif spec.default is _MISSING:
                    raise TypeError(f"{type(self).__name__}: {spec.name!r} is required")
                else:
                    value = spec.default
            object.__setattr__(self, spec.name, value)
        if values:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(values)}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def _values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable dicts inside

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self._values().items())
        return f"{type(self).__name__}({shown})"

    def __reduce__(self) -> tuple:
        return _make, (type(self), self._values())

    def replace(self, **changes: Any) -> Any:
        """A copy with `changes` (field name -> value)."""
        return type(self)(**{**self._values(), **changes})


def load(cls: Any, data: Any, **given: Any) -> Any:
    """An instance of the model class `cls` from a document's mapping `data`: each field
    from its key through its `load`; absent keys take the field's default, an unknown key
    is refused (KeyError)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"expected a mapping, got {type(data).__name__}")
    by_key = cls._BY_KEY
    kwargs = {}
    for key, value in data.items():
        spec = by_key[key]  # KeyError: not a key of this document
        kwargs[spec.name] = spec.load(value)
    kwargs.update(given)
    return cls(**kwargs)


def dump(obj: Any) -> dict[str, Any]:
    """The document of a model object (JSON types only): `load`'s inverse."""
    return {f.key: f.dump(getattr(obj, f.name)) for f in obj.FIELDS}
