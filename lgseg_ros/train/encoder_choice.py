r"""Which text encoder reads users' words best: a benchmark that prints JSON.

    python -m lgseg_ros.train.encoder_choice --checkpoint models/lgseg_lite_minilm.safetensors \
        --encoder minilm --encoder minilm:/path/to/all-mpnet-base-v2 --out runs/encoder_choice.json

For each encoder (each in a process of its own, so memory is its own):
- ``right_class_share``: of unseen words for trained concepts (``UNSEEN_WORDS``: none of
  them a trained name), the share whose nearest trained name (the checkpoint's recorded
  vocabulary, plus its distractors) is a name of the right concept; per list and per word;
- ``label_change_ms``: encoding 5 new words (what a label change costs in text work),
  p50 and p95 over repeated changes, on the CPU, torch threads as set;
- ``load_s`` and ``rss_mb``: start-up cost and resident memory after loading the encoder
  and encoding the vocabulary, minus the process's RSS before loading it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# Unseen words -> the trained concept they mean. None shares a word with a name in the
# shipped vocabulary (test/test_grounding.py checks it): street ones are the project's dev
# and held-out lists; the indoor list was written for this comparison.
INDOOR_UNSEEN = {
    "settee": "sofa", "lavatory": "toilet", "washbowl": "sink", "drapes": "curtain",
    "entrance": "door", "parquet": "floor", "worktop": "countertop", "mattress": "bed",
    "fern": "plant", "partition": "wall", "lampshade": "lamp", "duvet": "blanket",
    "artwork": "painting", "tabletop": "table", "casement": "window", "telly": "television",
}


def unseen_lists() -> dict[str, dict[str, str]]:
    from .openvocab import DEV_RENAMES, HELDOUT_RENAMES
    return {"street_dev": {v: k for k, v in DEV_RENAMES.items()},
            "street_heldout": {v: k for k, v in HELDOUT_RENAMES.items()},
            "indoor": dict(INDOOR_UNSEEN)}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(checkpoint: str, encoder_spec: str, reps: int) -> dict:
    import numpy as np
    import torch

    from lgseg_ros.model.checkpoint import read_checkpoint_metadata
    from lgseg_ros.runtime.grounding import GroundingReporter, vocabulary_from_metadata
    from lgseg_ros.text import build_text_encoder

    meta = read_checkpoint_metadata(checkpoint)[1]
    vocab, distractors = vocabulary_from_metadata(meta)
    rss0, t0 = _rss_mb(), time.perf_counter()
    enc = build_text_encoder(encoder_spec)
    reporter = GroundingReporter(vocab, enc, distractors)
    reporter._vocab_embeddings()
    load_s, rss = time.perf_counter() - t0, _rss_mb() - rss0
    trained = {n for names in vocab.values() for n in names}
    out = {"encoder": encoder_spec, "dim": int(getattr(enc, "dim", 0)), "load_s": round(load_s, 2),
           "rss_mb": round(rss, 1), "vocabulary_names": len(trained), "lists": {}}
    right = total = 0
    for name, words in unseen_lists().items():
        words = {w: c for w, c in words.items() if w not in trained}
        emb = enc.encode(list(words)).float().numpy()
        report = reporter.report(list(words), emb)
        per = {g.label: {"right": words[g.label], "nearest": g.nearest_name,
                         "read_as": g.nearest_class or "(absent)", "score": round(g.score, 3),
                         "ok": g.nearest_class == words[g.label]} for g in report}
        ok = sum(v["ok"] for v in per.values())
        out["lists"][name] = {"right_class_share": ok / max(len(per), 1), "n": len(per),
                              "words": per}
        right, total = right + ok, total + len(per)
    out["right_class_share"] = right / max(total, 1)
    times = []
    for r in range(reps):
        words = [f"thing {r} {i}" for i in range(5)]   # new strings: no cache can answer
        t = time.perf_counter()
        enc.encode(words)
        times.append(1000 * (time.perf_counter() - t))
    out["label_change_ms"] = {"p50": round(float(np.percentile(times, 50)), 2),
                              "p95": round(float(np.percentile(times, 95)), 2),
                              "words_per_change": 5, "reps": reps,
                              "torch_threads": torch.get_num_threads()}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="encoder_choice", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="models/lgseg_lite_minilm.safetensors")
    p.add_argument("--encoder", action="append", help="text encoder spec (repeatable)")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure in this process
    a = p.parse_args(argv)
    if a.one:
        import torch
        torch.set_num_threads(a.threads)
        print(json.dumps(run_one(a.checkpoint, a.one, a.reps)))
        return 0
    results = []
    for spec in a.encoder or ["minilm"]:
        res = subprocess.run([sys.executable, "-m", "lgseg_ros.train.encoder_choice",
                              "--checkpoint", a.checkpoint, "--reps", str(a.reps),
                              "--threads", str(a.threads), "--one", spec],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(res.stdout.strip().splitlines()[-1]))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    report = {"checkpoint": a.checkpoint, "load_average_before": load, "encoders": results}
    text = json.dumps(report, indent=2)
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
