"""EVENT_DTYPE (workbench/events.py) against struct wb_event as the C++ compiler laid it out."""

from __future__ import annotations

import numpy as np
import pytest

from workbench._feed import ffi, lib
from workbench.events import EVENT_DTYPE, EVENT_SIZE, EventFlag, EventKind, Side

# C type of each wb_event field -> the numpy type it must map to
C_TO_NUMPY = {
    "int64_t": np.int64, "uint64_t": np.uint64, "uint32_t": np.uint32, "uint16_t": np.uint16,
    "uint8_t": np.uint8, "double": np.float64,
}


def test_record_size_and_alignment() -> None:
    assert ffi.sizeof("wb_event") == EVENT_DTYPE.itemsize == EVENT_SIZE == lib.WB_EVENT_SIZE == 64
    assert ffi.alignof("wb_event") == 64


def test_same_fields_in_the_same_order() -> None:
    c_fields = [name for name, _ in ffi.typeof("wb_event").fields]
    assert c_fields == list(EVENT_DTYPE.names)


@pytest.mark.parametrize("name", EVENT_DTYPE.names)
def test_field_offset_size_and_type(name: str) -> None:
    dtype, offset = EVENT_DTYPE.fields[name][:2]
    c_type = dict(ffi.typeof("wb_event").fields)[name].type
    assert offset == ffi.offsetof("wb_event", name)
    assert dtype.itemsize == ffi.sizeof(c_type)
    assert dtype == np.dtype(C_TO_NUMPY[c_type.cname]).newbyteorder("<")


def test_a_record_written_in_c_reads_back_in_numpy() -> None:
    ev = ffi.new("wb_event *")
    ev.ts_event_ns, ev.ts_recv_ns, ev.ts_publish_ns = -5, 2**62, 3
    ev.seq, ev.venue_seq, ev.symbol_id = 2**64 - 1, 12345678901, 7
    ev.kind, ev.side, ev.flags = lib.WB_KIND_ASK_LEVEL, lib.WB_SIDE_SELL, 0xBEEF
    ev.price, ev.qty = 64123.5, 0.001
    rec = np.frombuffer(ffi.buffer(ev), dtype=EVENT_DTYPE)[0]
    assert rec.tolist() == (-5, 2**62, 3, 2**64 - 1, 12345678901, 7, 3, 2, 0xBEEF, 64123.5, 0.001)


def test_enums_match_the_header_constants() -> None:
    assert {k.name: int(k) for k in EventKind} == {
        name: getattr(lib, f"WB_KIND_{name}") for name in EventKind.__members__
    }
    assert {s.name: int(s) for s in Side} == {
        name: getattr(lib, f"WB_SIDE_{name}") for name in Side.__members__
    }
    assert {f.name: int(f) for f in EventFlag} == {
        name: getattr(lib, f"WB_FLAG_{name}") for name in EventFlag.__members__
    }
