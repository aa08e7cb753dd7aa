"""What every `climb` command shares: one name per flag (old spellings still accepted), --json with the
shapes docs/cli-json.md documents, exit codes, -v/-q, results on stdout and messages on stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from climb_core import cli
from climb_core.search.synthetic import objective

REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ------------------------------------------------------------------------------ a searched workspace
@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """The export tests' domain workspace with token files and a finished search; its climb.toml holds
    the token settings it was built with, so `climb search` finds the tokens stage current."""
    from tests.test_export import build_searched
    from tests.test_tokens import token_config

    ws, sid = build_searched(tmp_path_factory.mktemp("cli") / "ws")
    ws.save_config(token_config())
    return ws, sid


@pytest.fixture
def synthetic_proxies(monkeypatch):
    """Searches and studies started by the CLI score mixtures with the synthetic objective (no training)."""
    import climb_core.search as search_pkg
    import climb_core.search.study as study_mod

    real_search, real_study = search_pkg.run_search, study_mod.run_study
    monkeypatch.setattr(search_pkg, "run_search", lambda ws, sid, **kw: real_search(ws, sid, objective=objective, **kw))
    monkeypatch.setattr(study_mod, "run_study", lambda ws, sid, **kw: real_study(
        ws, sid, objective=objective, final_objective=objective, **kw))


def _check_shape(command: str, data) -> None:
    assert isinstance(data, dict), f"{command} --json prints one object"
    missing = set(cli.JSON_KEYS[command]) - set(data)
    assert not missing, f"{command} --json lacks documented keys {sorted(missing)}"


def test_json_shapes_of_every_reporting_command(searched, synthetic_proxies, tmp_path, capsys):
    ws, sid = searched
    root = str(ws.root)
    outputs = {}
    rc, out, err = run(["search", root, "--strategy", "random", "--budget", "3", "--target", "text:cluster:0",
                        "--search-id", "json-search", "--json", "-q"], capsys)
    assert rc == 0, err
    outputs["search"] = json.loads(out)
    assert outputs["search"]["search_id"] == "json-search" and outputs["search"]["status"] == "done"
    rc, out, err = run(["study", root, "--strategies", "random,uniform", "--seeds", "1", "--budget", "2",
                        "--final-kind", "ngram", "--final-seeds", "1", "--target", "text:cluster:0",
                        "--set", "search.n_pool_samples=500", "--json", "-q"], capsys)
    assert rc == 0, err
    outputs["study"] = json.loads(out)
    rc, out, err = run(["runs", root, "--json"], capsys)
    assert rc == 0, err
    outputs["runs"] = json.loads(out)
    assert sid in [s["search_id"] for s in outputs["runs"]["searches"]]
    for one in outputs["runs"]["searches"]:
        _check_shape("search", one)
    rc, out, err = run(["export", root, "--search", sid, "--dataset-tokens", "5000", "--out", str(tmp_path / "x"),
                        "--formats", "hf", "--json", "-q"], capsys)
    assert rc == 0, err
    outputs["export"] = json.loads(out)
    assert outputs["export"]["out_dir"] == str((tmp_path / "x").resolve())
    rc, out, err = run(["decontam", root, "--target", "arc_easy", "--json", "-q"], capsys)
    assert rc == 0, err
    outputs["decontam"] = json.loads(out)
    rc, out, err = run(["status", root, "--json"], capsys)
    assert rc == 0, err
    outputs["status"] = json.loads(out)
    assert set(outputs) == set(cli.JSON_KEYS)
    for command, data in outputs.items():
        _check_shape(command, data)


def test_json_shapes_are_documented():
    doc = (REPO / "docs" / "cli-json.md").read_text()
    for command, keys in cli.JSON_KEYS.items():
        assert f"## climb {command}" in doc, command
        section = doc.split(f"## climb {command}", 1)[1].split("\n## ", 1)[0]
        for key in keys:
            assert f"`{key}`" in section, f"docs/cli-json.md: climb {command} does not describe `{key}`"


def test_human_output_without_json_keeps_stdout_for_results(searched, synthetic_proxies, capsys):
    ws, _ = searched
    rc, out, err = run(["search", str(ws.root), "--strategy", "random", "--budget", "2", "--target", "text:cluster:0",
                        "--search-id", "human-search", "-q"], capsys)
    assert rc == 0, err
    assert "search human-search created" in out and "next: climb export" in out and "--search human-search" in out
    assert err == ""  # -q: nothing but errors on stderr
    # with --json the same notes go to stderr, and only with -v
    rc, out, err = run(["search", str(ws.root), "--resume", "human-search", "--json", "-v", "--quiet"], capsys)
    assert rc == 0 and json.loads(out)["search_id"] == "human-search"
    rc, out, err = run(["search", str(ws.root), "--resume", "human-search", "--json", "-v"], capsys)
    assert rc == 0 and json.loads(out)["search_id"] == "human-search"
    assert "resuming search human-search" in err


# ------------------------------------------------------------------------------ one name per flag
def test_search_selector_is_one_flag_with_old_spellings_kept(searched, tmp_path, capsys):
    ws, sid = searched
    root = str(ws.root)
    rc, out, err = run(["export", root, "--run", sid, "--tokens", "5000", "--out", str(tmp_path / "old"),
                        "--formats", "none"], capsys)
    assert rc == 0, err
    assert "warning: --run is deprecated; use --search" in err
    assert "warning: --tokens is deprecated; use --dataset-tokens" in err
    assert json.loads((tmp_path / "old" / "manifest.json").read_text())["requested_tokens"] == 5000
    rc, out, err = run(["runs", root, "--search", sid], capsys)
    assert rc == 0 and out.startswith(sid) and err == ""


def test_cancel_takes_search_flag_and_old_positional(tmp_path, capsys, monkeypatch):
    import climb_core.search as search_pkg

    asked = []
    monkeypatch.setattr(search_pkg, "cancel_search", lambda ws, sid: asked.append(sid))
    cli.main(["init", str(tmp_path / "ws")])
    assert run(["cancel", str(tmp_path / "ws"), "--search", "s-new"], capsys)[0] == 0
    rc, out, err = run(["cancel", str(tmp_path / "ws"), "s-old"], capsys)
    assert rc == 0 and "deprecated; use --search SEARCH_ID" in err
    assert asked == ["s-new", "s-old"]
    rc, _, err = run(["cancel", str(tmp_path / "ws")], capsys)
    assert rc == 2 and "--search SEARCH_ID" in err


def test_tokens_flags_say_which_tokens():
    p = cli.build_parser()
    search = p.parse_args(["search", "ws", "--proxy-tokens", "7"])
    assert search.proxy_tokens == 7 and not getattr(search, "deprecated_notes", [])
    old = p.parse_args(["study", "ws", "--tokens", "8"])
    assert old.proxy_tokens == 8 and old.deprecated_notes == ["--tokens is deprecated; use --proxy-tokens"]
    export = p.parse_args(["export", "ws", "--search", "s", "--dataset-tokens", "9", "--out", "o"])
    assert export.dataset_tokens == 9 and export.search == "s"
    helps = p._subparsers._group_actions[0].choices["export"].format_help()
    assert "--dataset-tokens" in helps and "--run" not in helps and "--tokens " not in helps


# ------------------------------------------------------------------------------ exit codes
def test_version(capsys):
    rc, out, _ = run(["--version"], capsys)
    assert rc == 0 and out.startswith("climb ") and out.split()[1][0].isdigit()


def test_exit_codes_usage_and_runtime(tmp_path, capsys):
    rc, _, err = run(["search", str(tmp_path), "--budget", "many"], capsys)
    assert rc == 2 and "invalid int value" in err
    rc, _, err = run(["no-such-command"], capsys)
    assert rc == 2
    rc, _, err = run(["export", str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "--search SEARCH_ID" in err
    rc, _, err = run(["status", str(tmp_path / "nowhere")], capsys)
    assert rc == 1 and err.startswith("error: ")


def test_ctrl_c_exits_130(tmp_path, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_status", interrupted)
    rc, _, err = run(["status", str(tmp_path)], capsys)
    assert rc == 130 and "interrupted" in err


def _waiting_climb(tmp_path: Path) -> subprocess.Popen:
    """A real `climb` process whose command waits (the config command made to sleep after saying so)."""
    code = ("import sys, time\n"
            "from climb_core import cli\n"
            "def waits(args):\n"
            "    print('waiting', file=sys.stderr, flush=True)\n"
            "    time.sleep(60)\n"
            "    return 0\n"
            "cli.cmd_config = waits\n"
            "sys.exit(cli.main(['config']))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stderr.readline().strip() == "waiting"  # the signal handlers are in place by now
    return proc


@pytest.mark.parametrize("sig, code, says", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_signals_exit_with_their_codes(tmp_path, sig, code, says):
    proc = _waiting_climb(tmp_path)
    proc.send_signal(sig)
    rc = proc.wait(30)
    assert rc == code
    assert says in proc.stderr.read()


# ------------------------------------------------------------------------------ logging
def test_verbosity_flags_set_the_log_level(capsys):
    import logging

    logger = logging.getLogger("climb_core")
    for argv, level in ((["config"], logging.WARNING), (["-v", "config"], logging.INFO),
                        (["config", "-vv"], logging.DEBUG), (["-q", "config"], logging.ERROR),
                        (["config", "--quiet"], logging.ERROR)):
        assert cli.main(argv) == 0
        assert logger.level == level, argv
    capsys.readouterr()
    cli.setup_logging()
