"""The whole embedded loop (`alignkit demo`, seconds per stage) and the annotation round-trip (local Argilla)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from alignkit.feedback import client, pull, push, server, simulate

ROOT = Path(__file__).resolve().parent.parent
ANNOTATOR = ("bench-annotator", "bench-annotator-pw")


def demo_stages(work: Path) -> dict[str, float]:
    """Run `alignkit demo` once and return its own per-stage timings (report.json) and the total."""
    out = work / "demo"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print("  alignkit demo ...", flush=True)
    with open(work / "demo.log", "w") as log:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "alignkit.cli",
                "demo",
                "--out",
                str(out),
                *os.environ.get("BENCH_LOOP_ARGS", "").split(),
            ],
            check=True,
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    report = json.loads((out / "report.json").read_text())
    return {**report["seconds_per_stage"], "total": report["seconds_total"]}


def candidates_file(path: Path, records: int) -> Path:
    """`records` prompts with two candidates each, in `alignkit generate`'s format."""
    with open(path, "w") as f:
        for i in range(records):
            prompt = [{"role": "user", "content": f"Question number {i}: how do plants grow?"}]
            # a short and a much longer answer: the `concise` annotator always sees a difference (no ties)
            texts = [
                f"Light and water ({i}).",
                f"Plants grow when they get enough sunlight, water, air and nutrients from the soil ({i}).",
            ]
            row = {"prompt_id": f"p{i}", "prompt": prompt, "candidates": [{"text": t} for t in texts]}
            f.write(json.dumps(row) + "\n")
    return path


def roundtrip(records: int, reps: int) -> dict[str, float]:
    """Median seconds: push `records` records, until the annotator sees them all, rate them all, pull them to pairs."""
    keys = ("push_s", "visible_s", "rate_s", "pull_s", "pairs", "ties")
    figures: dict[str, list[float]] = {key: [] for key in keys}
    with tempfile.TemporaryDirectory(prefix="alignkit-bench-argilla-") as tmp:
        started = time.perf_counter()
        with server.start(data_dir=Path(tmp) / "argilla") as local:
            server_start_s = time.perf_counter() - started
            owner = client.connect(local.url, local.api_key)
            client.add_user(owner, *ANNOTATOR, "annotator", ["bench"])
            session = client.annotator_session(*ANNOTATOR, url=str(local.url))
            source = candidates_file(Path(tmp) / "candidates.jsonl", records)
            for rep in range(reps):
                name = f"bench-round-{rep}"
                print(f"  rep {rep + 1}: round-trip of {records} records ...", flush=True)
                t0 = time.perf_counter()
                push.push(str(source), name, "bench", min_submitted=1, client=owner)
                figures["push_s"].append(time.perf_counter() - t0)
                dataset_id = next(d["id"] for d in session.datasets() if d["name"] == name)
                while session.search(dataset_id, "pending", 1)["total"] < records:
                    time.sleep(0.2)
                figures["visible_s"].append(time.perf_counter() - t0)
                t1 = time.perf_counter()
                simulate.rate_all(session, name, "concise", 0.0)
                figures["rate_s"].append(time.perf_counter() - t1)
                t2 = time.perf_counter()
                pulled = pull.pull(name, "bench", client=owner)
                figures["pull_s"].append(time.perf_counter() - t2)
                figures["pairs"].append(len(pulled.pairs))
                figures["ties"].append(pulled.summary["ties"])
    summary = {key: statistics.median(values) for key, values in figures.items()}
    return {"records": records, "server_start_s": server_start_s, **summary}
