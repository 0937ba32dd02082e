"""The cost of an update over the air, measured (``python -m tools.bench_firmware``'s update rows).

A real hub (development mode, free ports) and the real firmware on the unix port, with a
counting TCP proxy between them: from the device's first chunk request to its ``installing``
report (the whole download, in both directions: requests, chunks, PUBACKs), the bytes on the
wire and the seconds, given per 100 KB of download at the hub's chunk size. An app update is
the firmware's own bundle (``mpy-hub-tools bundle``); an image update is a made-up ESP-IDF app
image written into the fake esp32 partition (``tools/unixport/esp32.py``). Not a test.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tools import bundle, mpunix

PER = 100 * 1024  # figures are per 100 KB of download
IMAGE_HEAP = "68K"  # 64 KB plus the fake esp32 module's Python (a board has it in flash)


def fake_image(path: Path, size: int, seed: int = 1, chip_id: int = 0) -> Path:
    """An ESP-IDF app image as `bundle --image` checks it (0xE9, the chip id, an app
    description naming MicroPython v1.25.0), the rest random bytes."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    data[0] = 0xE9
    data[12:14] = chip_id.to_bytes(2, "little")
    desc = 32
    data[desc : desc + 4] = bundle.APP_DESC_MAGIC.to_bytes(4, "little")
    data[desc + 16 : desc + 48] = b"v1.25.0".ljust(32, b"\0")
    data[desc + 48 : desc + 80] = b"micropython".ljust(32, b"\0")
    path.write_bytes(bytes(data))
    return path


class CountingProxy:
    """Forwards TCP connections to the hub and counts the bytes both ways between the device's
    first "downloading" report and its "installing" one (the markers are found in what the
    device sends)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.bytes = 0
        self.started: float | None = None
        self.ended: float | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                device, _ = self.server.accept()
            except OSError:
                return
            hub = socket.create_connection(self.upstream)
            threading.Thread(target=self._pump, args=(device, hub, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(hub, device, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    if up and self.started is None and b'"downloading"' in data:
                        self.started = time.monotonic()
                    if self.started is not None and self.ended is None:
                        self.bytes += len(data)
                    if up and self.started is not None and b'"installing"' in data:
                        self.ended = self.ended or time.monotonic()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                s.close()

    def close(self) -> None:
        self.server.close()


@dataclass(frozen=True)
class UpdateRun:
    kind: str
    download: int  # bytes of the download (an app: manifest lines and files; an image: itself)
    chunks: int
    seconds: float
    wire: int  # bytes on the wire both ways, from the first request to "installing"

    def line(self) -> str:
        per = PER / self.download
        return (
            f"{self.kind + ' update':<18} {self.download} bytes in {self.chunks} chunks, "
            f"{self.seconds:.1f} s: {self.seconds * per:.2f} s and "
            f"{self.wire * per / 1024:.1f} KB on the wire per 100 KB "
            f"({100 * (self.wire - self.download) / self.download:.1f} % overhead)"
        )


def _hub_cli(data_dir: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "hub", *args, "--data-dir", str(data_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench: error: hub {' '.join(args)}: {result.stderr.strip()}")


def run_update(
    kind: str, tmp: Path, data_dir: Path, host: str, port: int, image_kb: int, timeout: float
) -> UpdateRun:
    """One update of a fresh device, timed and counted through the proxy."""
    from hub.ota.bundles import Bundles
    from hub.ota.transfer import CHUNK

    version = f"9.0.0-bench-{kind}"
    out = tmp / f"{kind}.tar"
    if kind == "image":
        image = fake_image(tmp / "fw.bin", image_kb * 1024)
        bundle.build_image("unix-sim-ota", version, image, out)
        board, heap = "unix-sim-ota", IMAGE_HEAP
    else:
        bundle.build("unix-sim", version, out)
        board, heap = "unix-sim", mpunix.HEAP_SIZE
    _hub_cli(data_dir, "app", "add", str(out))
    size = Bundles(data_dir).get(version).download_size
    proxy = CountingProxy((host, port))
    device = f"bench-{kind}"
    settings = mpunix.DeviceSettings(device, "127.0.0.1", proxy.port, period_s=3600)
    folder = mpunix.prepare_device_dir(tmp / device, settings, board)
    log = (tmp / f"{device}.log").open("wb")
    proc = mpunix.spawn(folder, heap, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(2)  # online, health sent: the offer follows the assignment
        _hub_cli(data_dir, "app", "assign", device, version)
        deadline = time.monotonic() + timeout
        while proxy.ended is None:
            if time.monotonic() > deadline or proc.poll() not in (None, mpunix.EXIT_REBOOT):
                raise SystemExit(f"bench: error: the {kind} update did not finish; see {log.name}")
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
        log.close()
        proxy.close()
    assert proxy.started is not None
    return UpdateRun(kind, size, -(-size // CHUNK), proxy.ended - proxy.started, proxy.bytes)


def update_rows(tmp: Path, data_dir: Path, host: str, port: int, image_kb: int) -> list[str]:
    return [
        run_update(kind, tmp, data_dir, host, port, image_kb, 600).line()
        for kind in ("app", "image")
    ]
