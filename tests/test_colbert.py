"""ColBERT (late interaction): scores equal PyLate's own on the same model directory.

PyLate needs an older transformers / sentence-transformers than rerankd's environment, so it
lives in a venv of its own (`.venv-pylate`, made by `make test`, or here on first use) and
`tests/pylate/probe.py` runs its scoring there as a subprocess.
"""

from __future__ import annotations

import json
import os
import string
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rerankd.engine.plan import LongDocPolicy
from rerankd.reranker import Reranker

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("RERANKD_PYLATE_VENV", ROOT / ".venv-pylate"))
# The newest PyLate that installs beside torch 2.13.0 (later ones pin fast-plaid builds tied to
# older torch releases); its own pins bring transformers 4.48 and sentence-transformers 4.0.
REQUIREMENT = "pylate==1.2.0"
pytestmark = pytest.mark.timeout(1200)  # making PyLate's venv on first use takes minutes

QUERY = "Where does the quick brown fox jump, and why?"
DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Apples and pears are fruit that grow in orchards in the autumn!!!",
    "Kubernetes schedules pods across the nodes of a cluster; (really).",
    "fox",
    "苹果手机的新功能包括更好的相机和更长的电池续航。",
    " ".join(["Machine learning models rank passages by their relevance to a query."] * 30),
]
LONG_QUERY = " ".join(["what is the capital of France and the Eiffel Tower"] * 8)


def pylate_python() -> Path:
    """PyLate's venv (torch 2.13.0 CPU first, then PyLate held to constraints.txt)."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "torch==2.13.0"], check=True, timeout=900)
        subprocess.run(
            [*pip, "-c", str(ROOT / "constraints.txt"), REQUIREMENT], check=True, timeout=900
        )
        stamp.write_text(REQUIREMENT + "\n")
    return python


def pylate_scores(model: Path, cases: list[tuple[str, list[str]]]) -> list[list[float]]:
    request = {"model": str(model), "cases": [{"query": q, "documents": d} for q, d in cases]}
    result = subprocess.run(
        [str(pylate_python()), str(ROOT / "tests" / "pylate" / "probe.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    answer: list[list[float]] = json.loads(result.stdout)
    return answer


@pytest.fixture(scope="module")
def colbert_expanded(model_root: Path) -> Path:
    """A second shape: queries attend to their expansion tokens, a short document length,
    and a skiplist of a few words (one not in the vocabulary: it stands for [UNK])."""
    from rerankd.devtools.synthetic_colbert import build_colbert

    path = build_colbert(
        model_root / "tiny-colbert-expanded",
        query_length=16,
        document_length=24,
        attend_to_expansion_tokens=True,
        embedding_size=16,
        seed=3,
    )
    config_file = path / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text())
    config["skiplist_words"] = [",", ";", "(", "zzzqqq"]
    config_file.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def colbert_modernbert(model_root: Path) -> Path:
    """GTE-ModernColBERT's shape: ModernBERT (rotary, local/global attention, no type ids)."""
    from rerankd.devtools.synthetic_colbert import build_colbert

    return build_colbert(model_root / "tiny-modern-colbert", encoder="modernbert", seed=5)


CASES = [
    (QUERY, DOCUMENTS),
    (LONG_QUERY, DOCUMENTS[:3]),
    ("fox", [string.punctuation, "a, b; c."]),
]


@pytest.mark.parametrize("which", ["default", "expanded", "modernbert"])
def test_scores_equal_pylate(which: str, request: pytest.FixtureRequest) -> None:
    fixture = {"default": "colbert_model", "expanded": "colbert_expanded"}
    model: Path = request.getfixturevalue(fixture.get(which, "colbert_modernbert"))
    expected = pylate_scores(model, CASES)
    reranker = Reranker(model, max_batch_tokens=256)  # several batches of mixed lengths
    assert reranker.engine.family.name == "colbert"
    for (query, documents), want in zip(CASES, expected, strict=True):
        got = reranker.score([(query, d) for d in documents], raw=True)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_relevance_is_mean_best_cosine(colbert_model: Path) -> None:
    reranker = Reranker(colbert_model)
    raw = reranker.score([(QUERY, d) for d in DOCUMENTS], raw=True)
    relevance = reranker.score([(QUERY, d) for d in DOCUMENTS])
    np.testing.assert_allclose(relevance, (raw / 32 + 1) / 2)
    assert ((relevance >= 0) & (relevance <= 1)).all()


def test_long_documents_truncate_or_chunk(colbert_model: Path) -> None:
    reranker = Reranker(colbert_model)
    long = DOCUMENTS[5]
    cut = reranker.score([(QUERY, long)], raw=True, policy=LongDocPolicy(max_tokens_per_doc=20))
    chunked = reranker.score(
        [(QUERY, long)], raw=True, policy=LongDocPolicy("chunk", max_tokens_per_doc=20)
    )
    # The first window of the chunks is the truncated document: the best chunk is no worse.
    assert chunked[0] >= cut[0] - 1e-9
    refused = LongDocPolicy(allow_truncation=False)
    with pytest.raises(Exception, match="allow truncation"):
        reranker.score([(QUERY, long)], policy=refused)


def test_token_vector_codec_is_compact_float16() -> None:
    from rerankd.scoring.late_interaction import TokenVectors, dump_vectors, load_vectors

    rng = np.random.default_rng(0)
    value = TokenVectors(
        (
            rng.standard_normal((7, 16), dtype=np.float32),
            np.zeros((0, 16), np.float32),
            rng.standard_normal((3, 16), dtype=np.float32),
        )
    )
    data = dump_vectors(value)
    assert len(data) == 2 + 8 + 4 * 3 + 2 * 16 * 10  # tag, header, lengths, float16 vectors
    back = load_vectors(data)
    assert [c.shape for c in back.chunks] == [(7, 16), (0, 16), (3, 16)]
    for got, want in zip(back.chunks, value.chunks, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=2**-11, atol=1e-7)


@pytest.mark.parametrize(
    "forged",
    [
        b"garbage",
        b"\x01\x00\x00\x00\x10\x00\x00\x00\x01\x00\x00\x00" + b"\x00" * 32,  # untagged
        b"t1" + struct.pack("<III", 1, 16, 10**6),  # a huge length, no vectors
        b"t1" + struct.pack("<III", 1, 2, 1) + np.array([1, np.inf], "<f2").tobytes(),
        b"t1" + struct.pack("<III", 1, 2, 1) + b"\x00",  # short
    ],
)
def test_token_vectors_from_elsewhere_are_refused(forged: bytes) -> None:
    from rerankd.cache import InvalidCached
    from rerankd.scoring.late_interaction import load_vectors

    with pytest.raises(InvalidCached):
        load_vectors(forged)
