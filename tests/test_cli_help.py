"""`faseg-rt` help and usage errors: every command's -h works and describes every option,
internal commands stay unlisted, --help / --version import no torch, misspellings get a
suggestion.  No model is loaded here."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from faseg_rt.cli import bench as cli_bench
from faseg_rt.cli.main import COMMANDS, build_parser, main


def _parsers(parser, path=()):
    """(command path, parser) for the parser and every (nested) listed subcommand."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if not name.startswith("_"):
                    yield from _parsers(sub, path + (name,))


def test_every_option_of_every_command_has_help():
    missing = [(" ".join(path), a.option_strings or a.dest)
               for path, p in _parsers(build_parser())
               for a in p._actions
               if a.help is None and not isinstance(a, argparse._SubParsersAction)]
    assert missing == []


@pytest.mark.parametrize("argv", [[c, "-h"] for c in COMMANDS] + [["bench", "--help"], ["bench", "latency", "-h"],
                                                                 ["bench", "vocab", "--help"]])
def test_help_of_every_command_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith(f"usage: faseg-rt {' '.join(argv[:-1])}")


def test_internal_subcommand_is_not_listed(capsys):
    for argv in (["bench", "-h"], ["bench"], ["bench", "nope"]):
        with pytest.raises(SystemExit):
            main(argv)
        captured = capsys.readouterr()
        assert "_throughput_one" not in captured.out + captured.err
    assert "_throughput_one" in cli_bench.build_parser().parse_args(
        ["_throughput_one", "--batch", "1", "--images", "1"]).what    # still runs for throughput


def test_default_model_is_named_in_model_help(capsys):
    for command in ("segment", "label", "eval"):
        with pytest.raises(SystemExit):
            main([command, "-h"])
        assert "XCLIU/2_rectified_flow_from_sd_1_5" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("argv, hint", [
    (["segment", "a.png", "--clases", "cat"], "--clases: did you mean --classes?"),
    (["segment", "a.png", "--classes", "cat", "--treshold", "0.5"], "--treshold: did you mean --threshold?"),
    (["segmnt", "a.png"], "did you mean segment?"),
    (["bench", "latncy"], "did you mean latency?"),
])
def test_misspellings_get_a_suggestion(argv, hint, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and hint in err


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_do_not_import_torch(flag):
    code = ("import sys\nfrom faseg_rt.cli import main\ntry:\n    main([%r])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'numpy' in sys.modules)" % flag)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False False"


#: Modules a usage error must not wait for (seconds each on a small CPU).
HEAVY = ("torch", "transformers", "diffusers", "ray")


@pytest.mark.parametrize("argv, line", [
    (["segment", "/nonexistent.jpg", "--classes", "cat"], "image /nonexistent.jpg does not exist"),
    (["eval-candidates", "--dataset", "voc", "--captions", "/nonexistent.json", "--groundtruth",
      "/nonexistent-gt.json"], "captions file /nonexistent.json not found"),
    (["label", "/nonexistent.jpg", "--classes", "cat", "--out", "OUT"], "input /nonexistent.jpg does not exist"),
    (["label", "/nonexistent.jpg", "--classes", "cat", "--out", "OUT", "--caption", "auto",
      "--candidates", "auto"], "input /nonexistent.jpg does not exist"),
])
def test_usage_errors_come_before_heavy_imports(argv, line, tmp_path):
    """A usage error is one line and imports none of torch, transformers, diffusers or Ray (they
    take seconds to import): `python -X importtime` lists every module the command imported."""
    import os
    from pathlib import Path

    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "faseg_rt.cli", *argv], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=env)
    errors = [x for x in p.stderr.splitlines() if not x.startswith("import time:")]
    assert p.returncode == 2 and len(errors) == 1, p.stderr[-2000:]
    assert errors[0].startswith(f"faseg-rt: error: {line}"), errors
    imported = {x.rsplit("|", 1)[-1].strip() for x in p.stderr.splitlines() if x.startswith("import time:")}
    assert "faseg_rt.cli.main" in imported                      # the listing is read right
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))
    assert not (tmp_path / "out").exists()                      # nothing written


def test_benchmarks_write_to_a_git_ignored_folder_by_default(tmp_path):
    """A benchmark run from the checkout never edits the checked-in benchmarks/results/."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    args = cli_bench.build_parser().parse_args(["latency"])
    assert args.out == cli_bench.DEFAULT_OUT and "benchmarks" not in args.out
    if not (root / ".git").exists():
        pytest.skip("not a git checkout: .gitignore cannot be asked")
    probe = f"{args.out}/latency-tiny-cpu.json"
    p = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", probe])
    assert p.returncode == 0, f"{probe} is not git-ignored"
    for written in ("faseg-demo/demo_image_mask.png", "masks/photo.png", "runs/voc/metrics.json"):
        assert subprocess.run(["git", "-C", str(root), "check-ignore", "-q", written]).returncode == 0, written


def test_every_command_is_handled_by_cmd_of_its_name():
    """One naming rule for handlers, so a command's code is found by its name: `eval-masks` ->
    faseg_rt.cli.<module>.cmd_eval_masks."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, (module, _) in COMMANDS.items():
        func = sub.choices[name].get_default("func")
        assert (func.__module__, func.__name__) == (f"faseg_rt.cli.{module}",
                                                    "cmd_" + name.replace("-", "_")), name


def test_bench_dispatches_every_kind_through_its_table():
    """Each `faseg-rt bench KIND` but gpu (its own plan) has an entry in the explicit dispatch
    table, and the entry loads that benchmark's run and table functions."""
    sub = next(a for a in cli_bench.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    kinds = {k for k in sub.choices if not k.startswith("_")} - {"gpu"}
    assert kinds == set(cli_bench.TABLE_BENCHMARKS)
    for kind in sorted(kinds):
        run, table = cli_bench._benchmark(kind)
        assert (run.__name__, table.__name__) == (kind, f"{kind}_table")
        assert run.__module__ == table.__module__ == f"faseg_rt.bench.{kind}"
