"""The device agent's generation speed against llama.cpp's llama-bench, same model and threads.

llama-bench is built from the llama.cpp sources vendored in the llama-cpp-python sdist of the
installed version (so both run the same ggml), once, into the ramp-edge cache:
`pip download --no-deps --no-binary :all: llama-cpp-python==<version>`, then
`cmake --build ... --target llama-bench`. Pass --sdist to reuse an unpacked sdist, or
--llama-bench to use an existing binary.

Runs alternate (llama-bench, agent, llama-bench, agent, ...) so machine load hits both alike;
the table reports each run's mean t/s and the median over runs. Goal: agent tg within 3 %.

Writes bench/agent.json and bench/agent.md.

    .venv/bin/python scripts/bench_agent.py [--model smollm2-135m] [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "agents" / "ramp_agent.py"


def build_llama_bench(version: str, sdist: Path | None) -> Path:
    """Build llama-bench from the llama-cpp-python sdist (cached per version)."""
    from ramp_edge import paths

    build = paths.cache_dir("llama-bench", version)
    binary = build / "bin" / "llama-bench"
    if binary.is_file():
        return binary
    if sdist is None:
        download = Path(tempfile.mkdtemp(prefix="llama-sdist-"))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(download),
                f"llama-cpp-python=={version}",
            ],
            check=True,
        )
        archive = next(download.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(download, filter="data")
        sdist = next(p for p in download.iterdir() if p.is_dir())
    source = sdist / "vendor" / "llama.cpp"
    print(f"building llama-bench from {source} (minutes)...", file=sys.stderr, flush=True)
    subprocess.run(
        [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(build),
            "-G",
            "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DBUILD_SHARED_LIBS=OFF",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_OPENSSL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=OFF",
            "-DLLAMA_BUILD_APP=OFF",
            "-DLLAMA_BUILD_TOOLS=ON",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    jobs = str(os.cpu_count() or 2)
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "llama-bench", "-j", jobs],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if not binary.is_file():
        raise SystemExit(f"llama-bench was not produced under {build}")
    return binary


def run_llama_bench(
    binary: Path, model: Path, threads: int, n_prompt: int, n_gen: int, reps: int
) -> dict:
    proc = subprocess.run(
        [
            str(binary),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-p",
            str(n_prompt),
            "-n",
            str(n_gen),
            "-r",
            str(reps),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    tests = {}
    for test in json.loads(proc.stdout):
        name = f"pp{test['n_prompt']}" if test["n_gen"] == 0 else f"tg{test['n_gen']}"
        tests[name] = {
            "avg_ts": test["avg_ts"],
            "stddev_ts": test["stddev_ts"],
            "samples_ts": test.get("samples_ts", []),
        }
    return tests


def run_agent(model: Path, threads: int, n_prompt: int, n_gen: int, reps: int) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            str(AGENT),
            "--heartbeat",
            "0",
            "bench",
            "--model",
            str(model),
            "--threads",
            str(threads),
            "--n-prompt",
            str(n_prompt),
            "--n-gen",
            str(n_gen),
            "--reps",
            str(reps),
        ],
        capture_output=True,
        text=True,
    )
    final = json.loads(proc.stdout.splitlines()[-1])
    if not final.get("ok"):
        raise SystemExit(f"agent failed: {final}")
    return {
        k: {"avg_ts": v["avg_ts"], "stddev_ts": v["stddev_ts"], "samples_ts": v["samples_ts"]}
        for k, v in final["data"]["tests"].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="model reference or GGUF path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-prompt", type=int, default=512)
    parser.add_argument("--n-gen", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sdist", type=Path, help="unpacked llama-cpp-python sdist to build from")
    parser.add_argument("--llama-bench", type=Path, help="use this llama-bench binary")
    parser.add_argument(
        "--extra-model", action="append", default=[], help="more models to compare (same settings)"
    )
    parser.add_argument("--out", default=str(REPO / "bench"))
    args = parser.parse_args()

    import llama_cpp

    from ramp_edge.models import resolve

    binary = args.llama_bench or build_llama_bench(llama_cpp.__version__, args.sdist)
    models = [args.model, *args.extra_model]
    results = []
    for ref in models:
        path = Path(ref) if Path(ref).is_file() else resolve(ref).path
        rounds = []
        for i in range(args.rounds):
            ref_tests = run_llama_bench(
                binary, path, args.threads, args.n_prompt, args.n_gen, args.reps
            )
            agent_tests = run_agent(path, args.threads, args.n_prompt, args.n_gen, args.reps)
            rounds.append({"round": i + 1, "llama_bench": ref_tests, "agent": agent_tests})
            summary = ", ".join(
                f"{t}: llama-bench {ref['avg_ts']:.1f} / agent {agent_tests[t]['avg_ts']:.1f}"
                for t, ref in ref_tests.items()
            )
            print(f"{path.name} round {i + 1}: {summary}", flush=True)
        medians = {}
        for test in rounds[0]["llama_bench"]:
            ref_m = statistics.median(r["llama_bench"][test]["avg_ts"] for r in rounds)
            agent_m = statistics.median(r["agent"][test]["avg_ts"] for r in rounds)
            medians[test] = {"llama_bench": ref_m, "agent": agent_m, "ratio": agent_m / ref_m}
        results.append(
            {
                "model": path.name,
                "model_bytes": path.stat().st_size,
                "rounds": rounds,
                "medians": medians,
            }
        )
    report = {
        "schema": "ramp-edge/bench-agent",
        "schema_version": 1,
        "provenance": provenance(llama_cpp.__version__),
        "settings": {
            "threads": args.threads,
            "n_prompt": args.n_prompt,
            "n_gen": args.n_gen,
            "reps": args.reps,
            "rounds": args.rounds,
        },
        "llama_bench": str(binary),
        "results": results,
        "goal": "agent tg within 3 % of llama-bench",
        "load_average": os.getloadavg(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "agent.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "agent.md").write_text(markdown(report))
    print(markdown(report))


def provenance(version: str) -> dict:
    import datetime

    from ramp_edge import __version__

    return {
        "ramp_edge": __version__,
        "llama_cpp_python": version,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def markdown(r: dict) -> str:
    s = r["settings"]
    lines = [
        "# Agent vs llama-bench (same model, same threads)",
        "",
        "llama-bench built from the llama.cpp vendored in llama-cpp-python "
        f"{r['provenance']['llama_cpp_python']}; agent = `agents/ramp_agent.py bench` (llama.cpp "
        "C API through llama-cpp-python's ctypes bindings, the same test loops as llama-bench). "
        f"threads={s['threads']}, pp{s['n_prompt']}, tg{s['n_gen']}, {s['reps']} repetitions "
        f"per run, {s['rounds']} alternating runs each; cells are mean ± sd t/s of a run.",
        "",
    ]
    for res in r["results"]:
        tests = list(res["medians"])
        lines += [f"## {res['model']} ({res['model_bytes'] / 2**20:.1f} MiB)", ""]
        header = "| run | " + " | ".join(f"{t} llama-bench | {t} agent" for t in tests) + " |"
        lines += [header, "|---|" + "---|---|" * len(tests)]
        for rnd in res["rounds"]:
            ref, ours = rnd["llama_bench"], rnd["agent"]
            cells = " | ".join(
                f"{ref[t]['avg_ts']:.1f} ± {ref[t]['stddev_ts']:.1f} | "
                f"{ours[t]['avg_ts']:.1f} ± {ours[t]['stddev_ts']:.1f}"
                for t in tests
            )
            lines.append(f"| {rnd['round']} | {cells} |")
        med = " | ".join(
            f"**{res['medians'][t]['llama_bench']:.1f}** | **{res['medians'][t]['agent']:.1f}** "
            f"({100 * (res['medians'][t]['ratio'] - 1):+.1f} %)"
            for t in tests
        )
        lines += [f"| median | {med} |", ""]
    lines += [
        f"Machine: {r['provenance']['cpus']} CPUs shared with other jobs (load average at the end "
        f"{', '.join(f'{x:.1f}' for x in r['load_average'])}): compare within a table only. "
        f"{r['provenance']['utc']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
