"""`python -m tools.bench_firmware`: the firmware's memory and wire cost, measured.

Starts a hub on free ports, runs the real App loop (tools/unixport/steady_state.py) for N
readings under the MicroPython unix port with a board-sized heap, and prints the heap
high-water mark and the bytes each reading costs on the wire and in flash. Not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hub.endpoints import Endpoints, ReadyLineError
from tools import mpunix


def start_hub(data_dir: Path) -> tuple[subprocess.Popen[str], str, int]:
    # Development mode without a rate limit: this measures the firmware, which here publishes
    # 10,000 readings as fast as the hub acknowledges them.
    cmd = [sys.executable, "-m", "hub", "serve", "--mqtt-port", "0", "--ws-port", "0"]
    cmd += ["--mqtts-port", "0", "--wss-port", "0", "--allow-anonymous", "--rate-limit", "0"]
    proc = subprocess.Popen([*cmd, "--data-dir", str(data_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    try:
        host, port = Endpoints.parse(line).mqtt
    except ReadyLineError:
        proc.kill()
        raise SystemExit(f"bench: error: the hub did not start ({line!r})") from None
    return proc, host, port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_firmware", description=__doc__)
    parser.add_argument("--readings", type=int, default=10_000)
    parser.add_argument("--heap", default=mpunix.HEAP_SIZE, help="unix port heap (default 64K)")
    args = parser.parse_args(argv)
    mpunix.check_built()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        hub, host, port = start_hub(Path(tmp) / "hub")
        try:
            settings = mpunix.DeviceSettings("bench-1", host, port)
            folder = mpunix.prepare_device_dir(Path(tmp) / "bench-1", settings)
            cmd = mpunix.firmware_command(args.heap, mpunix.STEADY_STATE, str(args.readings))
            start = time.monotonic()
            result = subprocess.run(
                cmd, cwd=folder, env=mpunix.firmware_env(), capture_output=True, text=True
            )
            seconds = time.monotonic() - start
        finally:
            hub.terminate()
            hub.wait()
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        return 1
    s = json.loads(result.stdout.splitlines()[-1])
    publish = s["publish_bytes_per_reading"]
    print(f"readings           {s['readings']} in {seconds:.1f} s (dropped {s['dropped']})")
    print(f"heap               {s['heap_total']} bytes (-X heapsize={args.heap})")
    print(f"heap after start   {s['heap_base']} bytes in use")
    print(f"heap high-water    {s['heap_high']} bytes in use (before each loop's gc.collect)")
    print(f"wire per reading   {publish:.1f} bytes PUBLISH + {s['puback_bytes']} bytes PUBACK")
    print(f"flash per reading  {s['flash_bytes_per_reading']} bytes (ring record)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
