"""The workloads of `workloads.py` (W1–W4): what each one sends, its limits, and its input file.

Every line is a `/v1/chat/completions` request for `gpt-4o-mini` whose body carries the line's
custom_id in `user`, so the mock upstream's ledger counts accepts per line. Token accounting
follows the mock upstream (`aistats_gateway.testing.mock_upstream`): a request costs its prompt's
whitespace-separated words plus `max_tokens`; the generator returns that total so that the ideal
time of a rate-limited workload is computed from what the mock will actually charge.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from batch_throughput import CITIES, DAYS, PLACES, QUALITIES, TEMPLATES, THINGS, TOPICS

MODEL = "gpt-4o-mini"
WORDS = ("the of and to in is was for on that with as by at from this be are or an have it not but had his they "
         "which one you were her all she there would their we him been has when who will more no if out so said "
         "what up its about into than them can only other new some could time these two may then do first any my "
         "now such like our over man me even most made after also did many before must through back years where "
         "much your way well down should because each just those people how too little state good very make world "
         "still own see men work long get here between both life being under never day same another know while "
         "last might us great old year off come since against go came right used take three").split()


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    lines: int
    kind: str  # "small" | "tpm" | "big"
    max_tokens: int = 16
    latency_ms: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    target_bytes: int = 0  # W4: size of the input file
    baselines: bool = True

    def scaled(self, scale: float) -> Workload:
        lines = max(50, math.ceil(self.lines * scale))
        return Workload(self.name, self.title, lines, self.kind, self.max_tokens, self.latency_ms, self.rpm, self.tpm,
                        int(self.target_bytes * scale), self.baselines)


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", "100k small chat lines, instant upstream", 100_000, "small"),
    "W2": Workload("W2", "100k small chat lines, 50 ms upstream latency", 100_000, "small", latency_ms=50.0),
    "W3a": Workload("W3a", "10k small lines, RPM-bound (RPM 10,000)", 10_000, "small", rpm=10_000, tpm=2_000_000),
    "W3b": Workload("W3b", "10k lines of 300 prompt words + max_tokens 100, TPM-bound (TPM 2M)", 10_000, "tpm",
                    max_tokens=100, rpm=10_000, tpm=2_000_000),
    "W4": Workload("W4", "a 200 MB input file (~2 KB prompts): upload, validation, memory", 100_000, "big",
                   target_bytes=200_000_000, baselines=False),
}


@dataclass
class InputFile:
    path: Path
    lines: int
    bytes: int
    ids: list[str]
    cost_tokens: int  # sum over lines of the mock's charge: prompt words + max_tokens


def _small_text(rng: random.Random) -> str:
    return rng.choice(TEMPLATES).format(topic=rng.choice(TOPICS), thing=rng.choice(THINGS), place=rng.choice(PLACES),
                                        city=rng.choice(CITIES), day=rng.choice(DAYS), quality=rng.choice(QUALITIES))


def _line(custom_id: str, text: str, max_tokens: int) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "user": custom_id}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body},
                      separators=(",", ":"))


def write_input(w: Workload, path: Path, seed: int = 1234) -> InputFile:
    """Write the workload's JSONL to `path`. W4 writes lines until `target_bytes` (never above it)."""
    rng = random.Random(seed)
    ids: list[str] = []
    cost = size = 0
    if w.kind == "tpm":
        variants = [" ".join(rng.choices(WORDS, k=300)) for _ in range(64)]
    elif w.kind == "big":  # ~2 KB of prompt per line; distinct texts, cheap to generate
        variants = [" ".join(rng.choices(WORDS, k=420)) for _ in range(64)]
    with path.open("wb") as fh:
        i = 0
        while True:
            if w.kind != "big" and i >= w.lines:
                break
            custom_id = f"req-{i:07d}"
            text = _small_text(rng) if w.kind == "small" else variants[i % 64] + f" #{i}" * (w.kind == "big")
            line = (_line(custom_id, text, w.max_tokens) + "\n").encode()
            if w.kind == "big" and size + len(line) > w.target_bytes:
                break
            fh.write(line)
            ids.append(custom_id)
            size += len(line)
            cost += len(text.split()) + w.max_tokens
            i += 1
    return InputFile(path, len(ids), size, ids, cost)


def ideal_seconds(w: Workload, data: InputFile) -> float | None:
    """Time the limits alone impose: lines / (rpm/60) or tokens / (tpm/60), whichever is longer; None unlimited.

    The mock's buckets start full (1 s of rate), so an ideal client can finish up to ~1 s earlier;
    efficiency can therefore read slightly above 100 % on short runs.
    """
    if w.rpm is None and w.tpm is None:
        return None
    by_requests = data.lines / (w.rpm / 60.0) if w.rpm else 0.0
    by_tokens = data.cost_tokens / (w.tpm / 60.0) if w.tpm else 0.0
    return max(by_requests, by_tokens)
