"""The reference trainer (examples/hf_proxy/train.py) end to end from the CLI: a tiny transformers
decoder per proxy run, scored by lm-eval on the bundled climb_* tasks, budget 8 on CPU."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from climb_core import cli  # noqa: E402
from climb_core.catalogue.workspace import Workspace  # noqa: E402
from climb_core.search import search_runs  # noqa: E402
from tests.helpers import build_domain_workspace  # noqa: E402

TRAIN = Path(__file__).resolve().parents[1] / "examples" / "hf_proxy" / "train.py"


@pytest.mark.slow
def test_hf_reference_trainer_from_the_cli(tmp_path, capsys):
    ws = build_domain_workspace(tmp_path / "ws")
    template = (f"{shlex.quote(sys.executable)} {shlex.quote(str(TRAIN))} {{job}} --layers 1 --d-model 32 --heads 2 "
                "--block 64 --batch 8 --vocab 512 --eval-limit 20")
    code = cli.main(["search", str(ws.root), "--proxy", "command", "--proxy-command", template, "--budget", "8",
                     "--proxy-tokens", "8000", "--executor", "process", "--workers", "2", "--command-timeout", "600",
                     "--target", "lm-eval:climb_arc_easy,metric=acc_norm", "--target", "lm-eval:climb_piqa,metric=acc",
                     "--quiet", "--search-id", "hf"])
    assert code == 0
    runs = search_runs(Workspace.open(ws.root), "hf")
    assert len(runs) == 8 and (runs["status"] == "done").all(), runs[["status", "error"]].to_string()
    scores = json.loads(runs["scores_json"].iloc[0])
    assert {"climb_arc_easy/acc_norm", "climb_piqa/acc"} <= set(scores)
    first = json.loads((ws.root / "proxy_jobs" / "hf" / runs["run_id"].iloc[0] / "result.json").read_text())
    assert first["loss_curve"] and first["loss_curve"][-1] < first["loss_curve"][0]  # it trained
    capsys.readouterr()
    assert cli.main(["runs", str(ws.root), "--search", "hf"]) == 0
    assert "hf" in capsys.readouterr().out
