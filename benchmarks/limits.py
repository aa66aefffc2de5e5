"""The machine's own limits, measured in the same run as the retrieves: loopback TCP and disk writes.

* ``tcp_bulk``: one process sends N MB in 1 MiB writes to another over loopback (receiver: recv_into).
* ``tcp_round_trips``: a 10 KB message answered by 16 bytes, over and over (TCP_NODELAY both ways):
  the floor of a per-instance exchange (C-STORE request, then its response) on this machine.
* ``disk_stream``: one file written in 1 MiB pieces, then fsync (MB/s incl. reaching the disk).
* ``disk_small_files``: 10 KB files written to a temp name then renamed, without and with fsync.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

_MIB = 1 << 20


def _bulk_receiver(port: int, total: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        buffer = bytearray(_MIB)
        got = 0
        while got < total:
            n = sock.recv_into(buffer)
            if not n:
                break
            got += n
        sock.sendall(b"k")


def tcp_bulk(megabytes: int = 1024) -> dict[str, float]:
    total = megabytes * _MIB
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        child = mp.get_context("spawn").Process(target=_bulk_receiver, args=(server.getsockname()[1], total))
        child.start()
        conn, _ = server.accept()
        with conn:
            chunk = b"\x5a" * _MIB
            start = time.perf_counter()
            for _ in range(megabytes):
                conn.sendall(chunk)
            conn.recv(1)
            seconds = time.perf_counter() - start
        child.join()
    return {"megabytes": megabytes, "seconds": round(seconds, 3), "MB_per_s": round(total / 1e6 / seconds, 1)}


def _echo_server(port_queue: "mp.Queue[int]", size: int) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port_queue.put(server.getsockname()[1])
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            buffer = bytearray(size)
            view = memoryview(buffer)
            while True:
                got = 0
                while got < size:
                    n = conn.recv_into(view[got:])
                    if not n:
                        return
                    got += n
                conn.sendall(b"0123456789abcdef")


def tcp_round_trips(seconds: float = 2.0, size: int = 10_000) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    ports: mp.Queue[int] = ctx.Queue()
    child = ctx.Process(target=_echo_server, args=(ports, size))
    child.start()
    port = ports.get(timeout=30)
    message = b"\x00" * size
    count = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reply = bytearray(16)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            sock.sendall(message)
            got = 0
            while got < 16:
                got += sock.recv_into(memoryview(reply)[got:])
            count += 1
        elapsed = time.perf_counter() - start
    child.join()
    return {"message_bytes": size, "round_trips_per_s": round(count / elapsed)}


def disk_stream(folder: Path, megabytes: int = 1024) -> dict[str, float]:
    path = folder / "bench-stream.bin"
    chunk = os.urandom(_MIB)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(megabytes):
            os.write(fd, chunk)
        buffered = time.perf_counter() - start
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - start
    path.unlink()
    return {"megabytes": megabytes, "MB_per_s_to_page_cache": round(megabytes * _MIB / 1e6 / buffered, 1),
            "MB_per_s_with_fsync": round(megabytes * _MIB / 1e6 / seconds, 1)}


def _small_files(folder: Path, count: int, fsync: bool) -> float:
    data = os.urandom(10_000)
    start = time.perf_counter()
    for n in range(count):
        temp = folder / f".f{n}.partial"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, folder / f"f{n}.dcm")
    return count / (time.perf_counter() - start)


def disk_small_files(folder: Path, count: int = 3000, fsync_count: int = 300) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="bench-files-", dir=folder))
    try:
        plain = _small_files(work, count, fsync=False)
        shutil.rmtree(work)
        os.sync()
        work.mkdir()
        synced = _small_files(work, fsync_count, fsync=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"file_bytes": 10_000, "files_per_s_rename_only": round(plain),
            "files_per_s_fsync_each": round(synced)}


def measure_all(folder: Path, scale: float = 1.0) -> dict[str, dict[str, float]]:
    """Every limit; ``scale`` shrinks the volumes (smoke test)."""
    mb = max(16, int(1024 * scale))
    return {
        "tcp_bulk": tcp_bulk(mb),
        "tcp_round_trips": tcp_round_trips(2.0 if scale >= 1 else 0.3),
        "disk_stream": disk_stream(folder, mb),
        "disk_small_files": disk_small_files(folder, max(50, int(3000 * scale)), max(20, int(300 * scale))),
    }
