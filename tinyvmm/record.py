"""Frozen records for typed configuration, light enough for the boot path.

To a type checker a record is a frozen dataclass (modules import `dataclass` from here under
`if TYPE_CHECKING`); at run time it is this module's `dataclass(frozen=True)`, which builds
the same kind of class (fields from the annotations, keyword or positional construction,
defaults, no assignment afterwards, equality, repr, hash, copy and pickle) without importing
the standard dataclasses module: that one imports inspect, about 13 ms of every start.
Defaults must be immutable (the records hold tuples, never lists). Copy a record with a change
through this module's replace() (dataclasses.replace needs a real dataclass).
"""

_MISSING = object()


def dataclass(*, frozen: bool):
    """A class decorator making a frozen record of a class body of annotated fields."""
    if not frozen:
        raise TypeError("records are frozen: dataclass(frozen=True)")

    def make(cls):
        names = [name for name in cls.__dict__.get("__annotations__", {})
                 if not name.startswith("_")]
        defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}
        body = {key: value for key, value in cls.__dict__.items()
                if key not in defaults and key not in ("__dict__", "__weakref__")}
        body.update(__slots__=tuple(names), __match_args__=tuple(names), _fields=tuple(names),
                    _defaults=defaults, __init__=_init, __setattr__=_refuse, __delattr__=_refuse,
                    __repr__=_repr, __eq__=_eq, __hash__=_hash, __reduce__=_reduce)
        return type(cls.__name__, cls.__bases__, body)
    return make


def _init(self, *args, **kwargs) -> None:
    cls = type(self)
    if len(args) > len(cls._fields):
        raise TypeError(f"{cls.__name__}() takes {len(cls._fields)} fields, {len(args)} given")
    values = dict(zip(cls._fields, args))
    for name, value in kwargs.items():
        if name not in cls._fields:
            raise TypeError(f"{cls.__name__}() has no field {name!r}")
        if name in values:
            raise TypeError(f"{cls.__name__}() got {name!r} twice")
        values[name] = value
    for name in cls._fields:
        value = values.get(name, cls._defaults.get(name, _MISSING))
        if value is _MISSING:
            raise TypeError(f"{cls.__name__}() needs {name!r}")
        object.__setattr__(self, name, value)
    post_init = getattr(self, "__post_init__", None)
    if post_init is not None:
        post_init()


def _refuse(self, name, *value) -> None:
    raise AttributeError(f"{type(self).__name__} is frozen: make a new one with replace()")


def _repr(self) -> str:
    fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in type(self)._fields)
    return f"{type(self).__name__}({fields})"


def _values(self) -> tuple:
    return tuple(getattr(self, name) for name in type(self)._fields)


def _eq(self, other):
    if type(other) is not type(self):
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self) -> int:
    return hash((type(self).__name__,) + _values(self))


def _reduce(self):
    """copy, deepcopy and pickle make the record anew from its fields (its checks run again)."""
    return type(self), _values(self)


def replace(record, **changes):
    """A copy of `record` with `changes` (field=value) applied (dataclasses.replace)."""
    values = {name: getattr(record, name) for name in type(record)._fields}
    values.update(changes)
    return type(record)(**values)
