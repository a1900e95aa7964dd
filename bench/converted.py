#!/usr/bin/env python3
"""Converted-stream scenario: an Anthropic client (`POST /v1/messages`, `stream: true`)
through a gateway to an OpenAI-format provider, ThinkWatch against LiteLLM, with the same
method as ../shared/bench/bench.py (gateway pinned to core 0; the mock upstream and wrk on
core 1; 20-chunk streams; wrk's post.lua). bench.py only speaks Chat Completions, hence this.

    python3 bench/converted.py --rounds 3      (needs `make bench`'s data directory: var/bench)
"""

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("THINKWATCH_BENCH_DIR", ROOT.parent / "shared" / "bench"))
BODY = {
    "model": "gpt-4o-mini",
    "max_tokens": 64,
    "stream": True,
    "system": "You are a concise assistant.",
    "messages": [
        {
            "role": "user",
            "content": "Explain in two sentences why HTTP keep-alive matters for an API gateway.",
        }
    ],
}


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def request(port: int, key: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/v1/messages",
        json.dumps(BODY),
        {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {key}",
            "anthropic-version": "2023-06-01",
        },
    )
    response = conn.getresponse()
    return response.status, response.read()


def wait_ready(port: int, key: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gateway on :{port} exited with {proc.returncode}")
        try:
            if request(port, key)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit(f"gateway on :{port} not ready")


def preflight(port: int, key: str) -> None:
    status, raw = request(port, key)
    events = [line[7:] for line in raw.decode().splitlines() if line.startswith("event: ")]
    deltas = events.count("content_block_delta")
    if (
        status != 200
        or events[:1] != ["message_start"]
        or events[-1:] != ["message_stop"]
        or deltas != 20
    ):
        seen = f"status {status}, events {events[:3]}…{events[-2:]}, {deltas} deltas"
        sys.exit(f"preflight failed on :{port}: {seen}")


def wrk(port: int, key: str, conns: int, seconds: int, body_file: Path) -> dict[str, float]:
    cmd = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(SHARED / "post.lua"),
        f"http://127.0.0.1:{port}/v1/messages",
        "--",
        str(body_file),
        key,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = json.loads(
        next(line for line in out.splitlines() if line.startswith("BENCH_JSON "))[11:]
    )
    errors = sum(v for k, v in result.items() if k.startswith("err_"))
    return {
        "rps": result["requests"] / (result["duration_us"] / 1e6),
        "p50": result["p50_us"] / 1000,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    out = ROOT / "var" / "bench-results" / "converted"
    out.mkdir(parents=True, exist_ok=True)
    body_file = out / "messages-stream.json"
    body_file.write_text(json.dumps(BODY))
    key = (ROOT / "var" / "bench" / "key").read_text().strip()
    python = str(ROOT / ".venv" / "bin" / "python")
    upstream = start(
        [
            "taskset",
            "-c",
            "1",
            "/opt/bench-venvs/bench/bin/python",
            str(SHARED / "upstream.py"),
            "--port",
            "18080",
            "--chunks",
            "20",
        ],
        out / "upstream.log",
    )
    time.sleep(1)
    env = dict(
        os.environ,
        THINKWATCH_DATA_DIR=str(ROOT / "var" / "bench"),
        THINKWATCH_GATEWAY_PORT="3000",
        DATABASE_URL="",
        REDIS_URL="",
    )
    lite_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_", "LITELLM_", "OPENAI_", "REDIS_"))
    }
    lite_env |= {
        "BENCH_UPSTREAM_BASE": "http://127.0.0.1:18080/v1",
        "LITELLM_OFFLINE_MODE": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_MODE": "PRODUCTION",
    }
    systems = {
        "thinkwatch": (
            ["taskset", "-c", "0", python, "-m", "thinkwatch.run", "--only", "gateway"],
            env,
            3000,
            key,
        ),
        "litellm": (
            [
                "taskset",
                "-c",
                "0",
                "/opt/bench-venvs/litellm/bin/litellm",
                "--config",
                str(HERE / "litellm_converted.yaml"),
                "--host",
                "127.0.0.1",
                "--port",
                "4000",
                "--num_workers",
                "1",
            ],
            lite_env,
            4000,
            "sk-bench-1234",
        ),
    }
    results: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for _ in range(args.rounds):
            for name, (cmd, system_env, port, system_key) in systems.items():
                proc = start(cmd, out / f"{name}.log", system_env)
                try:
                    wait_ready(port, system_key, proc)
                    preflight(port, system_key)
                    for conns in (1, 50):
                        wrk(port, system_key, conns, args.warmup, body_file)
                        time.sleep(1)
                        results.setdefault((name, conns), []).append(
                            wrk(port, system_key, conns, args.duration, body_file)
                        )
                        print(name, conns, results[(name, conns)][-1], file=sys.stderr, flush=True)
                finally:
                    stop(proc)
    finally:
        stop(upstream)
    print(f"| scenario | system | RPS (median of {args.rounds}) | RPS min-max | p50 ms | errors |")
    print("|---|---|--:|--:|--:|--:|")
    for (name, conns), rows in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        rps = [r["rps"] for r in rows]
        p50 = statistics.median(r["p50"] for r in rows)
        print(
            f"| messages stream → OpenAI provider, c={conns} | {name} | "
            f"{statistics.median(rps):.1f} | {min(rps):.1f}-{max(rps):.1f} | {p50:.2f} | "
            f"{int(sum(r['errors'] for r in rows))} |"
        )


if __name__ == "__main__":
    main()
