"""Push throughput of ramp-edge (paramiko SFTP, sha256-verified) against OpenSSH scp, on loopback.

Starts one loopback sshd device with the test fixtures' recipe (tests/fleet/fleetlib.py, see
../shared/research/ssh-testing.md), makes a random artifact (default 128 MiB), then alternates
`scp` and `Connection.put` uploads of it for --rounds rounds, so machine load hits both alike.
Every put is a fresh upload (the remote copy is deleted first, so nothing is skipped) and
includes the remote sha256 verification and the atomic rename; scp does neither. The local
sha256 is computed once beforehand, as `fleet bench` does for a whole fleet.

Writes bench/push.json and bench/push.md. Goal: median put throughput >= 90 % of scp.

    .venv/bin/python scripts/bench_push.py [--size-mib 128] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fleet"))  # the loopback sshd helpers of the tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--host", default="127.0.0.9", help="loopback address of the device")
    parser.add_argument("--out", default=str(REPO / "bench"))
    args = parser.parse_args()

    import paramiko
    from fleetlib import _keygen, assert_loopback, connect, make_device

    from ramp_edge.fsutil import sha256_file

    assert_loopback(args.host)
    tmp = Path(tempfile.mkdtemp(prefix="bench-push-"))
    os.environ.setdefault("RAMP_EDGE_HOME", str(tmp / "ramp-home"))
    key = str(tmp / "client_ed25519")
    _keygen(key, "bench")
    (tmp / "dev").mkdir()
    device = make_device(tmp / "dev", "bench", args.host, key)
    artifact = tmp / "artifact.gguf"
    with open(artifact, "wb") as handle:
        for _ in range(args.size_mib):
            handle.write(os.urandom(1 << 20))
    size = artifact.stat().st_size
    sha = sha256_file(artifact)
    known = tmp / "known_hosts"
    known.write_text(device.known_hosts_line() + "\n")
    scp_cmd = [
        "scp",
        "-q",
        "-i",
        key,
        "-P",
        str(device.port),
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        str(artifact),
        f"{device.user}@{device.host}:scp.gguf",
    ]
    rounds = []
    try:
        for i in range(args.rounds):
            start = time.monotonic()
            subprocess.run(scp_cmd, check=True)
            scp_s = time.monotonic() - start
            assert sha256_file(device.home / "scp.gguf") == sha
            start = time.monotonic()  # the same cipher as paramiko negotiates, for fairness
            subprocess.run([*scp_cmd[:1], "-c", "aes128-gcm@openssh.com", *scp_cmd[1:]], check=True)
            scp_gcm_s = time.monotonic() - start
            with connect(device) as conn:
                conn.open()
                conn.remove("put.gguf")
                cipher = conn._client.get_transport().remote_cipher  # type: ignore[union-attr]
                start = time.monotonic()
                push = conn.put(artifact, "put.gguf", local_sha256=sha)
                put_s = time.monotonic() - start
                start = time.monotonic()
                conn.remote_sha256("put.gguf")
                hash_s = time.monotonic() - start
            assert not push.skipped and push.sha256 == sha
            row = {
                "round": i + 1,
                "scp_mb_s": size / scp_s / 1e6,
                "scp_gcm_mb_s": size / scp_gcm_s / 1e6,
                "put_mb_s": size / put_s / 1e6,
                "ratio": scp_s / put_s,
                "remote_sha256_s": hash_s,
            }
            rounds.append(row)
            print(
                f"round {i + 1}: scp {row['scp_mb_s']:.1f} MB/s, put {row['put_mb_s']:.1f} MB/s "
                f"({100 * row['ratio']:.0f} %)",
                flush=True,
            )
    finally:
        device.stop()
    scp_v = ssh_version()
    result = {
        "schema": "ramp-edge/bench-push",
        "schema_version": 1,
        "provenance": provenance(),
        "artifact_bytes": size,
        "rounds": rounds,
        "median_scp_mb_s": statistics.median(r["scp_mb_s"] for r in rounds),
        "median_put_mb_s": statistics.median(r["put_mb_s"] for r in rounds),
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "median_scp_gcm_mb_s": statistics.median(r["scp_gcm_mb_s"] for r in rounds),
        "goal_ratio": 0.9,
        "client": {"paramiko": paramiko.__version__, "cipher": cipher, "openssh": scp_v},
        "load_average": os.getloadavg(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "push.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "push.md").write_text(markdown(result))
    print(markdown(result))


def ssh_version() -> str:
    proc = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    return (proc.stderr or proc.stdout).strip()


def provenance() -> dict:
    import datetime

    from ramp_edge import __version__

    return {
        "ramp_edge": __version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def markdown(r: dict) -> str:
    lines = [
        "# Push throughput: ramp-edge put vs OpenSSH scp (loopback)",
        "",
        f"Artifact: {r['artifact_bytes'] / 2**20:.0f} MiB of random bytes, one loopback sshd "
        f"({r['client']['openssh']}); client paramiko {r['client']['paramiko']} "
        f"({r['client']['cipher']}). `put` = fresh SFTP upload to `.partial` + remote sha256 "
        "verification + atomic rename; `scp` = plain copy (SFTP protocol, no verification). "
        "Rounds alternate scp (default cipher, chacha20-poly1305), scp with the cipher paramiko "
        "negotiates (aes128-gcm), and put.",
        "",
        "| round | scp MB/s | scp -c aes128-gcm MB/s | put MB/s | put / scp | "
        "remote sha256 afterwards (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rounds"]:
        lines.append(
            f"| {row['round']} | {row['scp_mb_s']:.1f} | {row['scp_gcm_mb_s']:.1f} | "
            f"{row['put_mb_s']:.1f} | {100 * row['ratio']:.0f} % | {row['remote_sha256_s']:.2f} |"
        )
    verdict = "meets" if r["median_ratio"] >= r["goal_ratio"] else "misses"
    lines += [
        f"| **median** | **{r['median_scp_mb_s']:.1f}** | **{r['median_scp_gcm_mb_s']:.1f}** | "
        f"**{r['median_put_mb_s']:.1f}** | **{100 * r['median_ratio']:.0f} %** | |",
        "",
        f"Median put/scp = {100 * r['median_ratio']:.0f} %: {verdict} the >= 90 % goal. The remote "
        "hash runs concurrently with the upload (a follower process hashes the partial file as "
        "it grows); the last column shows what a separate hash pass would have added. On this "
        "x86 host AES-GCM is cheaper for the server than chacha20, which favours put against "
        "default scp; compare with the aes128-gcm scp column too. On a Raspberry Pi 4 (no AES "
        "instructions) the link, not the cipher, is the limit in practice.",
        "",
        f"Machine: {r['provenance']['cpus']} CPUs, load average at the end "
        f"{', '.join(f'{x:.1f}' for x in r['load_average'])} (shared with other jobs: numbers are "
        f"noisy, compare within this table only). {r['provenance']['utc']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
