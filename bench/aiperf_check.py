"""NVIDIA's aiperf against ``chatmodel serve``'s OpenAI front, counting tokens as the server
reports them (``--use-server-token-count``), checked against the engine's own count.

A tiny SUS-Chat checkpoint is served as ``chatmodel serve`` does (Triton and the front on
127.0.0.1 only). aiperf streams chat completions with ``stream_options.include_usage``; every
request asks for ``min_tokens`` = ``max_tokens``, so the engine never samples its end id and
the tokens it generated (``chatmodel_engine_generated_tokens_total``) must equal the sum of the
output tokens aiperf recorded, request by request equal to ``max_tokens``.

    make aiperf        # makes .venv-aiperf (aiperf from PyPI), then runs this
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tritonserver.helpers import local_server, metric

from chatmodel_operator.runtime.tiny_checkpoint import write_tiny_checkpoint

FAMILY = "sus-chat"
TOKENS = "chatmodel_engine_generated_tokens_total"


def records(artifacts: Path) -> list[dict[str, object]]:
    """aiperf's per-request records (``profile_export.jsonl``)."""
    found = sorted(artifacts.rglob("profile_export.jsonl"))
    if not found:
        raise SystemExit(f"aiperf wrote no profile_export.jsonl under {artifacts}")
    return [json.loads(line) for line in found[0].read_text().splitlines() if line.strip()]


def per_request(record: dict[str, object], name: str) -> float:
    metrics = record.get("metrics")
    assert isinstance(metrics, dict), record
    value = metrics[name]
    return float(value["value"] if isinstance(value, dict) else value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aiperf", default=".venv-aiperf/bin/aiperf")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = write_tiny_checkpoint(work / "tiny", FAMILY)
        with local_server(checkpoint, FAMILY, work / "serve", openai=True) as server:
            assert server.openai_url is not None
            before = metric(server.triton.metrics_url, TOKENS)
            artifacts = work / "aiperf"
            command = [
                args.aiperf, "profile",
                "--model", server.local.name,
                "--url", server.openai_url.removesuffix("/v1"),
                "--endpoint-type", "chat",
                "--streaming",
                "--use-server-token-count",
                "--tokenizer", str(checkpoint),
                "--request-count", str(args.requests),
                "--concurrency", str(args.concurrency),
                "--synthetic-input-tokens-mean", "32",
                "--extra-inputs", f"max_tokens:{args.max_tokens}",
                "--extra-inputs", f"min_tokens:{args.max_tokens}",
                "--random-seed", "7",
                "--artifact-dir", str(artifacts),
                "--ui-type", "none",
            ]  # fmt: skip
            done = subprocess.run(command, check=False, timeout=600)
            if done.returncode != 0:
                print(f"aiperf failed: exit {done.returncode}", file=sys.stderr)
                return 1
            engine = metric(server.triton.metrics_url, TOKENS) - before
        got = records(artifacts)
        outputs = [per_request(r, "output_sequence_length") for r in got]
        inputs = [per_request(r, "input_sequence_length") for r in got]
    print(f"aiperf requests            {len(got)}")
    print(f"aiperf output tokens       {sum(outputs):.0f} ({sorted(set(outputs))} per request)")
    print(f"aiperf input tokens        {sum(inputs):.0f}")
    print(f"engine generated tokens    {engine:.0f}")
    ok = (
        len(got) == args.requests
        and engine == sum(outputs)
        and set(outputs) == {float(args.max_tokens)}
    )
    print("token counts match" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
