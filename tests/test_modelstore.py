from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ciro import InvalidModelError, ModelNotFoundError, ModelStore, ModelTooLargeError, model_hash
from ciro.demo import build_tiny_mlp


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models", max_bytes=1_000_000)


def _entries(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir() if p.name != ".tmp") + sorted(
        p.name for p in (store.root / ".tmp").glob("*"))


def test_add_records_metadata_and_is_content_addressed(store: ModelStore, tmp_path: Path) -> None:
    path = build_tiny_mlp(tmp_path / "mlp.onnx")
    info = store.add_path(path)
    assert info.hash == model_hash(path.read_bytes())
    assert info.name == "mlp"
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == [("x", "float32", ["batch", 16])]
    assert [(t.name, t.dtype, t.shape) for t in info.outputs] == [("y", "float32", ["batch", 4])]
    assert info.opset["ai.onnx"] == 17 and info.size == path.stat().st_size
    assert store.add_bytes(path.read_bytes(), name="again").hash == info.hash  # dedupe
    assert [m.hash for m in store.list()] == [info.hash]
    assert store.resolve(info.hash[:8]).hash == info.hash
    assert store.resolve("mlp").hash == info.hash
    assert store.read_bytes(info.hash) == path.read_bytes()
    # a fresh store over the same folder sees it (nothing is only in memory)
    assert ModelStore(store.root, max_bytes=1_000_000).resolve(info.hash).name == "mlp"


def test_non_onnx_bytes_are_rejected_and_nothing_is_written(store: ModelStore) -> None:
    for junk in (b"", b"\x00\x01garbage" * 10, b"GIF89a not a model"):
        with pytest.raises(InvalidModelError):
            store.add_bytes(junk)
    assert _entries(store) == []


def test_model_failing_the_checker_is_rejected(store: ModelStore) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("missing", TensorProto.FLOAT, [1])])
    bad = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(InvalidModelError, match="checker"):
        store.add_bytes(bad.SerializeToString())
    assert _entries(store) == []


def test_model_over_the_size_limit_is_rejected(tmp_path: Path) -> None:
    path = build_tiny_mlp(tmp_path / "big.onnx", in_dim=256, hidden=512)
    small = ModelStore(tmp_path / "m", max_bytes=10_000)
    with pytest.raises(ModelTooLargeError, match="over the limit") as info:
        small.add_path(path)
    assert info.value.detail["limit"] == 10_000
    with pytest.raises(ModelTooLargeError):
        small.add_bytes(path.read_bytes())
    assert _entries(small) == []


def _with_external_data(tmp_path: Path, location: str) -> Path:
    folder = tmp_path / "ext"
    folder.mkdir(exist_ok=True)
    model = onnx.load(str(build_tiny_mlp(folder / "src.onnx", in_dim=64, hidden=64)))
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    if location != "weights.bin":
        m = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        for t in m.graph.initializer:
            for e in t.external_data:
                if e.key == "location":
                    e.value = location
        onnx.save_model(m, str(folder / "model.onnx"))
    return folder / "model.onnx"


def test_external_data_inside_the_folder_is_inlined(store: ModelStore, tmp_path: Path) -> None:
    path = _with_external_data(tmp_path, "weights.bin")
    info = store.add_path(path)
    stored = onnx.load_from_string(store.read_bytes(info.hash))
    assert all(not t.external_data for t in stored.graph.initializer)
    src = onnx.load(str(tmp_path / "ext" / "src.onnx"))
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(stored.graph.initializer[0]),
                                  onnx.numpy_helper.to_array(src.graph.initializer[0]))


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd"])
def test_external_data_escaping_the_folder_is_rejected(store: ModelStore, tmp_path: Path, location: str) -> None:
    path = _with_external_data(tmp_path, location)
    (tmp_path / "outside.bin").write_bytes((tmp_path / "ext" / "weights.bin").read_bytes())
    with pytest.raises(InvalidModelError, match="leaves the model's folder"):
        store.add_path(path)
    with pytest.raises(InvalidModelError, match="external data"):  # an upload cannot carry it at all
        store.add_bytes(path.read_bytes())
    assert _entries(store) == []


def test_unknown_refs(store: ModelStore, tmp_path: Path) -> None:
    store.add_path(build_tiny_mlp(tmp_path / "mlp.onnx"))
    for ref in ("0" * 64, "deadbeef", "no-such-name", "../../etc/passwd"):
        with pytest.raises(ModelNotFoundError, match="Deploy it first"):
            store.resolve(ref)
