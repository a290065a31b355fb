"""Compact, strict msgpack codec for messages (never pickle: payloads come from untrusted peers).

A payload is a msgpack array of the message's fields in declaration order. Tensors are
`[dtype_name, shape, raw little-endian C-order bytes]`, tuples are arrays, nested dataclasses
are arrays of their fields, floats are float64. Decoding follows the field annotations and checks
every type exactly, so a payload decodes to a well-typed message or raises DecodeError.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from numbers import Real
from types import MappingProxyType
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

import msgpack
import numpy as np

from .errors import DecodeError
from .messages import KINDS, FixedLen, Message, OmitWhenEmpty, kinds_of

R = TypeVar("R")

# Wire dtype names and their little-endian numpy dtypes; names match `np.dtype(...).name`.
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code).newbyteorder("<")
    for name, code in (
        ("float32", "f4"),
        ("float16", "f2"),
        ("float64", "f8"),
        ("int64", "i8"),
        ("int32", "i4"),
        ("int8", "i1"),
        ("uint8", "u1"),  # packed bits: sign payloads, sparse payloads' gaps
        ("uint16", "u2"),  # bf16 payloads (the upper halves of float32s)
        ("bool", "?"),
    )
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource bounds a decoder enforces on untrusted input."""

    max_frame: int = 64 * 1024 * 1024  # bytes per frame (and per payload)
    max_elements: int = 50_000_000  # per tensor
    max_dims: int = 8
    max_items: int = 1_000_000  # per tuple
    dtypes: frozenset[str] = field(default_factory=lambda: frozenset(DTYPES))

    def __post_init__(self) -> None:
        for name in ("max_frame", "max_elements", "max_dims", "max_items"):
            if getattr(self, name) < 0:
                raise ValueError(f"Limits.{name} must be >= 0")
        unknown = set(self.dtypes) - DTYPES.keys()
        if unknown:
            raise ValueError(f"Limits.dtypes: unknown {sorted(unknown)}; allowed {list(DTYPES)}")


DEFAULT_LIMITS = Limits()


class _Invalid(Exception):
    """Internal: a value does not match its schema. The path is built while unwinding."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg
        self.parts: list[str] = []

    def at(self, part: str) -> _Invalid:
        self.parts.append(part)
        return self

    def where(self) -> str:
        return "".join(reversed(self.parts))


Encoder = Callable[[Any], Any]
Decoder = Callable[[Any, Limits], Any]


def _tname(obj: object) -> str:
    return type(obj).__name__


# --- scalar codecs -------------------------------------------------------------------------


def _enc_bool(v: Any) -> bool:
    if not isinstance(v, bool | np.bool_):
        raise _Invalid(f"expected bool, got {_tname(v)}")
    return bool(v)


def _dec_bool(obj: Any, limits: Limits) -> bool:
    if type(obj) is not bool:
        raise _Invalid(f"expected bool, got {_tname(obj)}")
    return obj


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _enc_int(v: Any) -> int:
    if isinstance(v, bool | np.bool_):
        raise _Invalid("expected int, got bool")
    try:
        i = operator.index(v)
    except TypeError:
        raise _Invalid(f"expected int, got {_tname(v)}") from None
    if not _INT_MIN <= i <= _INT_MAX:
        raise _Invalid(f"{i} is outside msgpack's integer range [{_INT_MIN}, {_INT_MAX}]")
    return i


def _dec_int(obj: Any, limits: Limits) -> int:
    if type(obj) is not int:  # exact: bool is an int subclass and must not pass
        raise _Invalid(f"expected int, got {_tname(obj)}")
    return obj


def _enc_float(v: Any) -> float:
    if isinstance(v, bool | np.bool_) or not isinstance(v, Real):
        raise _Invalid(f"expected float, got {_tname(v)}")
    return float(v)


def _dec_float(obj: Any, limits: Limits) -> float:
    # Ints are accepted (some encoders shorten 2.0 to 2); NaN/inf pass, the node judges them.
    if type(obj) is float:
        return obj
    if type(obj) is int:
        return float(obj)
    raise _Invalid(f"expected float, got {_tname(obj)}")


def _enc_str(v: Any) -> str:
    if not isinstance(v, str):
        raise _Invalid(f"expected str, got {_tname(v)}")
    return v


def _dec_str(obj: Any, limits: Limits) -> str:
    if type(obj) is not str:
        raise _Invalid(f"expected str, got {_tname(obj)}")
    return obj


def _bytes_codec(size: int | None) -> tuple[Encoder, Decoder]:
    want = "bytes" if size is None else f"{size} bytes"

    def check(v: Any, ok: bool) -> bytes:
        if not ok or (size is not None and len(v) != size):
            got = f"{len(v)} bytes" if ok else _tname(v)
            raise _Invalid(f"expected {want}, got {got}")
        return bytes(v)

    def enc(v: Any) -> bytes:
        return check(v, isinstance(v, bytes | bytearray | memoryview))

    def dec(obj: Any, limits: Limits) -> bytes:
        return check(obj, type(obj) is bytes)

    return enc, dec


# --- tensors -------------------------------------------------------------------------------


def _enc_tensor(v: Any) -> list[Any]:
    if not isinstance(v, np.ndarray):
        raise _Invalid(f"expected numpy array, got {_tname(v)}")
    name = v.dtype.name
    if name not in DTYPES or v.dtype.kind != DTYPES[name].kind:
        raise _Invalid(f"dtype {v.dtype} not allowed; allowed: {list(DTYPES)}")
    # astype handles big-endian input (a byte swap, NaN payloads intact); tobytes is C order.
    return [name, list(v.shape), v.astype(DTYPES[name], copy=False).tobytes()]


def _dec_tensor(obj: Any, limits: Limits) -> np.ndarray:
    if type(obj) is not list or len(obj) != 3:
        raise _Invalid("expected tensor [dtype, shape, data]")
    name, shape, data = obj
    if type(name) is not str or name not in limits.dtypes:
        raise _Invalid(f"dtype {name!r} not allowed; allowed: {sorted(limits.dtypes)}")
    if type(shape) is not list or len(shape) > limits.max_dims:
        raise _Invalid(f"shape must be a list of at most {limits.max_dims} dims")
    for d in shape:
        if type(d) is not int or not 0 <= d <= limits.max_elements:
            raise _Invalid(f"bad dim {d!r} in shape {shape}")
    n = math.prod(shape)  # Python ints: no overflow
    if n > limits.max_elements:
        raise _Invalid(f"{n} elements exceed max_elements={limits.max_elements}")
    dtype = DTYPES[name]
    if type(data) is not bytes or len(data) != n * dtype.itemsize:
        got = len(data) if type(data) is bytes else _tname(data)
        raise _Invalid(f"data must be {n * dtype.itemsize} bytes for {name}{shape}, got {got}")
    # frombuffer over immutable bytes: no copy, and the array is read-only, so one decoded
    # message can be handed to many simulated nodes safely.
    arr = np.frombuffer(data, dtype=dtype)
    if name == "bool" and n and int(arr.view(np.uint8).max()) > 1:
        raise _Invalid("bool tensor holds bytes other than 0 and 1")
    arr = arr.reshape(shape)
    arr.flags.writeable = False
    return arr


# --- containers ----------------------------------------------------------------------------


def _tuple_codec(item: tuple[Encoder, Decoder]) -> tuple[Encoder, Decoder]:
    enc_item, dec_item = item

    def enc(v: Any) -> list[Any]:
        if not isinstance(v, tuple | list):
            raise _Invalid(f"expected tuple, got {_tname(v)}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(enc_item(x))
            except _Invalid as e:
                raise e.at(f"[{i}]") from None
        return out

    def dec(obj: Any, limits: Limits) -> tuple[Any, ...]:
        if type(obj) is not list:
            raise _Invalid(f"expected array, got {_tname(obj)}")
        if len(obj) > limits.max_items:
            raise _Invalid(f"{len(obj)} items exceed max_items={limits.max_items}")
        out = []
        for i, x in enumerate(obj):
            try:
                out.append(dec_item(x, limits))
            except _Invalid as e:
                raise e.at(f"[{i}]") from None
        return tuple(out)

    return enc, dec


_RECORDS: dict[type, tuple[Encoder, Decoder]] = {}


def _omitted_tail(cls: type, hints: dict[str, Any]) -> int:
    """How many of `cls`'s last fields are `OmitWhenEmpty` (they must all be at the end)."""
    marked = [any(isinstance(m, OmitWhenEmpty) for m in get_args(hints[f.name])[1:])
              if get_origin(hints[f.name]) is Annotated else False for f in fields(cls)]
    tail = len(marked) - marked.index(True) if True in marked else 0
    if not all(marked[len(marked) - tail:]):
        raise TypeError(f"{cls.__name__}: OmitWhenEmpty fields must all come last")
    for f in fields(cls)[len(marked) - tail:]:
        inner = get_args(hints[f.name])[0]
        if inner not in (bytes, str) and get_origin(inner) is not tuple:
            raise TypeError(f"{cls.__name__}.{f.name}: OmitWhenEmpty needs bytes, str or a "
                            f"tuple (something that can be empty)")
    return tail


def _record_codec(cls: type) -> tuple[Encoder, Decoder]:
    if cls in _RECORDS:
        return _RECORDS[cls]
    hints = get_type_hints(cls, include_extras=True)
    parts = [(f.name, *_codec(hints[f.name])) for f in fields(cls)]
    n = len(parts)
    least = n - _omitted_tail(cls, hints)  # fields every payload carries

    def enc(v: Any) -> list[Any]:
        if type(v) is not cls:
            raise _Invalid(f"expected {cls.__name__}, got {_tname(v)}")
        out = []
        for name, enc_field, _ in parts:
            try:
                out.append(enc_field(getattr(v, name)))
            except _Invalid as e:
                raise e.at(f".{name}") from None
        while len(out) > least and not len(out[-1]):
            out.pop()  # an empty OmitWhenEmpty field at the end is left out
        return out

    def dec(obj: Any, limits: Limits) -> Any:
        if type(obj) is not list or not least <= len(obj) <= n:
            got = f"{len(obj)} items" if type(obj) is list else _tname(obj)
            want = f"{n}" if least == n else f"{least} to {n}"
            raise _Invalid(f"expected an array of {want} fields, got {got}")
        if len(obj) > least and not len(obj[-1]):
            raise _Invalid(f"field .{parts[len(obj) - 1][0]} is present but empty (it must "
                           f"be left out)")
        values = []
        for (name, _, dec_field), x in zip(parts, obj, strict=False):
            try:
                values.append(dec_field(x, limits))
            except _Invalid as e:
                raise e.at(f".{name}") from None
        return cls(*values)

    _RECORDS[cls] = (enc, dec)
    return enc, dec


_SCALARS: dict[Any, tuple[Encoder, Decoder]] = {
    bool: (_enc_bool, _dec_bool),
    int: (_enc_int, _dec_int),
    float: (_enc_float, _dec_float),
    str: (_enc_str, _dec_str),
    bytes: _bytes_codec(None),
    np.ndarray: (_enc_tensor, _dec_tensor),
}


def _codec(hint: Any) -> tuple[Encoder, Decoder]:
    """Compile a field annotation into an (encoder, decoder) pair; unsupported ones fail at
    import time, not on the first message."""
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        fixed = [m for m in args[1:] if isinstance(m, FixedLen)]
        if args[0] is bytes and len(fixed) == 1:
            return _bytes_codec(fixed[0].n)
        if all(isinstance(m, OmitWhenEmpty) for m in args[1:]):  # the record handles it
            return _codec(args[0])
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _tuple_codec(_codec(args[0]))
    elif isinstance(hint, type) and is_dataclass(hint):
        return _record_codec(hint)
    raise TypeError(f"unsupported field annotation {hint!r}")


class MessageSet:
    """The message kinds a decoder accepts, each with its compiled codec: the core messages
    (`CORE`), or those plus the kinds a node's services own (`extended`). A kind outside the
    set is refused as "unknown_kind", exactly as before any service existed."""

    def __init__(self, classes: Iterable[type]) -> None:
        kinds = kinds_of(classes)  # TypeError on a bad or clashing KIND
        for cls in kinds.values():
            _record_codec(cls)  # TypeError now on an annotation the codec cannot carry
        self.kinds: Mapping[int, type] = MappingProxyType(kinds)

    def extended(self, classes: Iterable[type]) -> MessageSet:
        """This set plus `classes` (a class already in it is fine; a clashing KIND is not)."""
        return MessageSet([*self.kinds.values(), *classes])

    def __contains__(self, kind: object) -> bool:
        return kind in self.kinds

    def __repr__(self) -> str:
        return f"MessageSet({sorted(self.kinds)})"


CORE = MessageSet(KINDS.values())


def encode_record(record: Any) -> bytes:
    """Encode any dataclass the codec can carry (a message, or a record such as a node's saved
    state) as msgpack; ValueError (naming the field) for a value that would not decode."""
    codec = _record_codec(type(record))
    try:
        packed: bytes = msgpack.packb(codec[0](record), use_bin_type=True,
                                      use_single_float=False)
        return packed
    except _Invalid as e:
        raise ValueError(f"{_tname(record)}{e.where()}: {e.msg}") from None
    except (OverflowError, ValueError) as e:  # e.g. an int beyond msgpack's 64 bits
        raise ValueError(f"{_tname(record)}: {e}") from None


def decode_record(cls: type[R], data: bytes, limits: Limits = DEFAULT_LIMITS) -> R:
    """The `cls` record `data` encodes, fully type-checked. Raises only DecodeError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("malformed", f"payload must be bytes, got {_tname(data)}")
    if len(data) > limits.max_frame:
        raise DecodeError("too_large", f"payload {len(data)} > {limits.max_frame} bytes")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_bin_len=limits.max_frame,
            max_str_len=limits.max_frame,
            max_array_len=max(limits.max_items, limits.max_dims, 16),
            max_map_len=0,  # no message uses maps
            max_ext_len=0,
        )
        record: R = _record_codec(cls)[1](obj, limits)
        return record
    except _Invalid as e:
        raise DecodeError("bad_payload", f"{cls.__name__}{e.where()}: {e.msg}") from None
    except Exception as e:  # msgpack errors, MemoryError, RecursionError, ...
        raise DecodeError("bad_payload", f"{cls.__name__}: {_detail(e)}") from None


# --- public API ----------------------------------------------------------------------------


def encode_payload(msg: Message) -> bytes:
    """Encode a message's fields; raises TypeError for a non-message, ValueError (naming the
    field) for a value that would not decode."""
    if type(getattr(type(msg), "KIND", None)) is not int:
        raise TypeError(f"not a top-level message: {_tname(msg)}")
    return encode_record(msg)


def _detail(e: BaseException) -> str:
    text = f"{_tname(e)}: {e}"
    return text if len(text) <= 200 else text[:197] + "..."


def decode_payload(kind: int, payload: bytes, limits: Limits = DEFAULT_LIMITS,
                   messages: MessageSet = CORE) -> Message:
    """Decode and fully type-check a payload of the given kind. Raises only DecodeError."""
    cls = messages.kinds.get(kind) if type(kind) is int else None
    if cls is None:
        raise DecodeError("unknown_kind", f"kind {kind!r} not in {sorted(messages.kinds)}")
    return decode_record(cls, payload, limits)  # type: ignore[no-any-return]
