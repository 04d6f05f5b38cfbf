"""SDK quickstart: deploy an ONNX model, run one job and a batch, look at the evidence.

Run it with `python examples/sdk_quickstart.py`; it starts the embedded default (local Ray +
gateway under CIRO_HOME) if it is not running, or attaches to it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ciro import CiroClient
from ciro.demo import build_digits_model, digits_inputs


def main() -> None:
    client = CiroClient.local(progress=True)
    model_path = build_digits_model(Path(tempfile.gettempdir()) / "ciro-example" / "digits.onnx")
    model = client.deploy(model_path, name="digits")
    print(f"model {model.name}: {model.hash}")

    x = digits_inputs()
    result = client.infer(model.hash, x[:1])
    print(f"job {result.job_id}: label={result.outputs['label'][0]} confidence={result.confidence[0]:.3f}")
    print(f"  input commitment  {result.input_commitment}")
    print(f"  output commitment {result.output_commitment}")
    print(f"  worker {result.worker}, {result.latency_s * 1000:.1f} ms")

    batch = client.infer_batch(model.hash, x[:64])  # 64 jobs, one request
    labels = np.concatenate([r.outputs["label"] for r in batch])
    print(f"batch: {len(batch)} jobs, labels {labels[:10].tolist()} ...")
    client.close()


if __name__ == "__main__":
    main()
