"""TensorBoard event files for a training run, written without TensorFlow or the tensorboard package.

An event file is a sequence of TFRecords (length, masked CRC-32C of the length, the bytes, masked CRC-32C of the
bytes), each an `Event` protocol buffer: the first carries the file version, each later one a step's scalars. Only
the few protobuf fields that scalar summaries need are encoded, by hand (`tensorboard --logdir DIR` reads the
result). Imports no Django: the training service opens one writer per run.
"""
from __future__ import annotations

import math
import socket
import struct
import time
from pathlib import Path

FILE_VERSION = "brain.Event:2"


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord around `data`."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", _masked(crc32c(length))) + data
            + struct.pack("<I", _masked(crc32c(data))))


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 fields encode negatives as ten-byte two's complement
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int, *, file_version: str | None = None,
          scalars: dict[str, float] | None = None) -> bytes:
    """An `Event`: wall_time (1, double), step (2, int64), and file_version (3, string) or summary (5)."""
    out = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        values = b"".join(
            # Summary.Value: tag (1, string), simple_value (2, float)
            _bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", value))
            for tag, value in scalars.items()
        )
        out += _bytes_field(5, values)
    return out


class EventWriter:
    """Appends scalars to a new event file in `logdir` (created), named as TensorFlow names its own."""

    def __init__(self, logdir: Path | str):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = self.logdir / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.prefloop"
        self._file = open(self.path, "ab")  # noqa: SIM115  (closed by close())
        self._file.write(record(event(now, 0, file_version=FILE_VERSION)))
        self._file.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One step's numbers (others and non-finite values are left out: TensorBoard plots floats)."""
        kept = {tag: float(v) for tag, v in values.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
        if kept:
            self._file.write(record(event(time.time(), step, scalars=kept)))
            self._file.flush()

    def close(self) -> None:
        self._file.close()
