"""What TLS and the pre-shared key cost a TCP migration, against plain TCP.

```sh
python bench/tls.py [--runs 5] [--channels 2] [--method none] [--rounds 2]
                    [--image RAM | --size 64MiB]
```

Per authentication mode (plain loopback, pre-shared key, mutual TLS), a
migration with ``send_migration`` to a ``multifd-engine recv`` subprocess on
127.0.0.1, the modes interleaved run by run.  Prints medians of: the
rounds' send time (connection setup and worker start-up excluded), the
sender's main-process CPU (it writes every channel's socket: TLS
encryption lands there; compression is in the workers, the same for every
mode) and the receiver process's CPU (decryption and decoding), and the
ratios to plain TCP.  Certificates are made with the ``openssl`` command.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import guest

from engine.config import load_config
from engine.net.migration import send_migration

ROOT = Path(__file__).resolve().parent.parent
MODES = ("plain", "psk", "tls")


def _openssl(d: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)


def make_certificates(d: Path) -> None:
    """ca.pem, and receiver/sender .pem/.key signed by it, for 127.0.0.1."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(d, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=bench-ca", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for end in ("receiver", "sender"):
        (d / f"{end}.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                                      "extendedKeyUsage=serverAuth,clientAuth\n"
                                      "subjectAltName=IP:127.0.0.1\n")
        _openssl(d, "req", *ec, "-keyout", f"{end}.key", "-out", f"{end}.csr",
                 "-subj", f"/CN={end}")
        _openssl(d, "x509", "-req", "-in", f"{end}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{end}.pem", "-days", "2", "-extfile", f"{end}.ext")


def write_configs(d: Path, image: str, args) -> dict[str, tuple[Path, Path]]:
    """(sender config, receiver config) per mode."""
    base = (f'[run]\nrounds = {args.rounds}\n[workload]\nsource = "image"\nimage = "{image}"\n'
            f'[migration]\nmethod = "{args.method}"\nchannels = {args.channels}\n[transport]\n')
    (d / "key").write_text(os.urandom(32).hex())
    extra = {"plain": lambda end: "",
             "psk": lambda end: f'psk_file = "{d / "key"}"\n',
             "tls": lambda end: (f'tls_cert = "{d / end}.pem"\ntls_key = "{d / end}.key"\n'
                                 f'tls_ca = "{d / "ca.pem"}"\n')}
    configs = {}
    for mode in MODES:
        paths = []
        for end in ("sender", "receiver"):
            path = d / f"{mode}-{end}.toml"
            path.write_text(base + extra[mode](end))
            paths.append(path)
        configs[mode] = (paths[0], paths[1])
    return configs


def one_migration(sender: Path, receiver: Path) -> tuple[float, float, float]:
    """(send seconds of the rounds, sender main-process CPU s, receiver CPU s)."""
    recv = subprocess.Popen([sys.executable, "-m", "engine.cli", "recv", "--listen", "127.0.0.1:0",
                             "-q", str(receiver)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(recv.stdout.readline().rsplit(":", 1)[1])
        before = resource.getrusage(resource.RUSAGE_SELF)
        report = send_migration(load_config(sender), f"127.0.0.1:{port}")
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        _, status, usage = os.wait4(recv.pid, 0)
        recv.returncode = os.waitstatus_to_exitcode(status)
    assert report.verified, "digests differ"
    send_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return (sum(r.send_seconds for r in report.rounds), send_cpu, usage.ru_utime + usage.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    guest.add_arguments(parser, size="64MiB")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--method", default="none")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    block, what = guest.load(args)
    with block, tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        image = str(d / "guest.ram")
        guest.write_raw(block, image)
        make_certificates(d)
        configs = write_configs(d, image, args)
        results: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in MODES}
        for mode in MODES:
            one_migration(*configs[mode])                     # warm-up
        for _ in range(args.runs):
            for mode in MODES:
                results[mode].append(one_migration(*configs[mode]))
        print(f"guest: {what}; method {args.method}, {args.channels} channels, {args.rounds} "
              f"rounds; median of {args.runs} runs, modes interleaved")
        medians = {mode: [statistics.median(r[i] for r in results[mode]) for i in range(3)]
                   for mode in MODES}
        plain = medians["plain"]
        for mode in MODES:
            send, send_cpu, recv_cpu = medians[mode]
            print(f"{mode:>5}: rounds {send:7.3f} s  "
                  f"sender CPU {send_cpu:6.3f} s  receiver CPU {recv_cpu:6.3f} s  "
                  f"x plain: time {send / plain[0]:.2f}, sender CPU {send_cpu / plain[1]:.2f}, "
                  f"receiver CPU {recv_cpu / plain[2]:.2f}")


if __name__ == "__main__":
    main()
