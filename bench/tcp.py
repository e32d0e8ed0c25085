"""A round over TCP loopback against the same round into memory channels.

```sh
python bench/tcp.py [--runs 3] [--channels 2] [--methods none,zstd,qpl]
                    [--image RAM | --size 64MiB]
```

Per method, one round of every page of the guest: the send time of
``send_migration`` to a ``multifd-engine recv`` subprocess on 127.0.0.1
(sockets, the receiver decoding concurrently), and of ``Engine.send`` into
in-process memory channels (the baseline: no network, no receiver).  Worker
start-up and connection setup are outside both figures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import guest
import numpy as np

from engine.batch import Engine
from engine.channels import MemoryChannel
from engine.config import Config
from engine.net.migration import send_migration

ROOT = Path(__file__).resolve().parent.parent


def _config(method: str, channels: int, image: str) -> Config:
    return Config.from_dict({"run": {"rounds": 1},
                             "workload": {"source": "image", "image": image},
                             "migration": {"method": method, "channels": channels}})


def memory_round(config: Config, block) -> float:
    sinks = [MemoryChannel(i) for i in range(config.migration.channel_count)]
    with Engine(config, blocks=[block], sinks=sinks) as engine:
        return engine.send(np.arange(block.pages, dtype=np.uint64)).seconds


def tcp_round(config: Config, config_path: str) -> float:
    recv = subprocess.Popen([sys.executable, "-m", "engine.cli", "recv", "--listen", "127.0.0.1:0",
                             config_path], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(recv.stdout.readline().rsplit(":", 1)[1])
        report = send_migration(config, f"127.0.0.1:{port}")
        assert report.verified, "digests differ"
        return report.rounds[0].send_seconds
    finally:
        recv.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    guest.add_arguments(parser, size="64MiB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--methods", default="none,zstd,qpl")
    args = parser.parse_args()
    block, what = guest.load(args)
    with block, tempfile.TemporaryDirectory() as tmp:
        image = str(Path(tmp) / "guest.ram")
        guest.write_raw(block, image)
        print(f"guest: {what}; {args.channels} channels, median of {args.runs} runs")
        for method in args.methods.split(","):
            config = _config(method, args.channels, image)
            path = str(Path(tmp) / f"{method}.toml")
            Path(path).write_text(f'[migration]\nmethod = "{method}"\nchannels = {args.channels}\n')
            mem = [memory_round(config, block) for _ in range(args.runs)]
            tcp = [tcp_round(config, path) for _ in range(args.runs)]
            m, t = statistics.median(mem), statistics.median(tcp)
            mb = block.size / 1e6
            print(f"{method:>5}: memory {m:7.3f} s ({mb / m:7.1f} MB/s)  tcp {t:7.3f} s "
                  f"({mb / t:7.1f} MB/s)  tcp / memory speed = {m / t:.2f}")


if __name__ == "__main__":
    main()
