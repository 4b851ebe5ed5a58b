"""faseg_rt.rules: each input rule accepts what it should, refuses the rest in one line, and the
command line's choices are the library's (fast tier, no model)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError


def _refused(rule, value, match, *args):
    with pytest.raises(InvalidInputError, match=match) as e:
        rule(value, *args)
    assert "\n" not in str(e.value) and "--" not in str(e.value)  # one line, no CLI flag named
    return str(e.value)


@pytest.mark.parametrize("value", [0, 1, 0.55, np.float32(0.5), np.int64(1), np.float64(0.0)])
def test_threshold_accepts_numbers_in_the_unit_interval(value):
    got = rules.threshold(value)
    assert type(got) is float and got == float(value)


@pytest.mark.parametrize("value, match", [
    (True, "number"), (False, "number"), (np.bool_(True), "number"), ("0.5", "number"), (None, "number"),
    ([0.5], "number"), (float("nan"), "lie in"), (np.float32("nan"), "lie in"), (-0.1, "lie in"),
    (1.0000001, "lie in"), (float("inf"), "lie in"), (-float("inf"), "lie in"), (2, "lie in"),
])
def test_threshold_refuses(value, match):
    assert _refused(rules.threshold, value, match).startswith("threshold must")


def test_threshold_names_the_parameter():
    assert _refused(rules.threshold, 1.5, "lie in", "candidate_threshold").startswith("candidate_threshold")


@pytest.mark.parametrize("rule, name", [(rules.batch_size, "batch_size"),
                                        (rules.max_candidates, "max_candidates"),
                                        (rules.threads, "threads"),
                                        (lambda v: rules.positive_int(v, "limit"), "limit")])
def test_counts(rule, name):
    assert rule(1) == 1 and rule(np.int32(7)) == 7 and type(rule(np.int64(3))) is int
    for bad in (0, -1, True, False, 2.0, 2.5, "2", None, float("nan")):
        assert _refused(rule, bad, "integer >= 1").startswith(name)


def test_dtype_names_and_torch_dtypes():
    for name, want in [("fp32", torch.float32), ("float32", torch.float32), ("torch.float32", torch.float32),
                       ("fp16", torch.float16), ("float16", torch.float16), ("half", torch.float16),
                       ("fp64", torch.float64), ("double", torch.float64), ("bf16", torch.bfloat16),
                       ("bfloat16", torch.bfloat16)]:
        assert rules.dtype(name) is want
    assert rules.dtype(torch.float16) is torch.float16
    assert rules.dtype("auto") == rules.AUTO
    assert set(rules.DTYPE_NAMES.values()) == {torch.float32, torch.float16, torch.float64, torch.bfloat16}
    for bad in ("int8", "FP16", "", torch.int64, torch.bool, None, 16, True):
        assert "unknown dtype" in _refused(rules.dtype, bad, "dtype")


def test_dtype_choices_are_names_of_the_table():
    assert set(rules.DTYPE_CHOICES) == {"fp32", "float32", "fp16", "float16", "bf16", "bfloat16", "auto"}
    assert all(rules.DTYPE_NAMES[n] in rules.CLI_DTYPES for n in rules.DTYPE_CHOICES if n != rules.AUTO)


def test_devices():
    assert rules.device("cpu") == torch.device("cpu") and rules.device(torch.device("cpu")).type == "cpu"
    assert rules.available_devices()[0] == "cpu"
    for bad in ("gpu0", "", None, 3.5):
        assert "available: cpu" in _refused(rules.device, bad, "device")
    assert "not supported" in _refused(rules.device, "meta", "device")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n:
        assert rules.device("cuda").type == "cuda" and rules.device(f"cuda:{n - 1}").index == n - 1
        assert "does not exist" in _refused(rules.device, f"cuda:{n}", "device")
    else:
        for name in ("cuda", "cuda:1"):
            assert "needs a CUDA GPU" in _refused(rules.device, name, "device")


def _dtype_choices(parser: argparse.ArgumentParser):
    """choices of every --dtype option in the parser and its subparsers."""
    found = []
    for action in parser._actions:
        if "--dtype" in action.option_strings:
            found.append(tuple(action.choices))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _dtype_choices(sub)
    return found


def test_cli_dtype_choices_come_from_the_rules():
    from faseg_rt.cli.bench import build_parser as bench_parser
    from faseg_rt.cli.main import build_parser

    found = _dtype_choices(build_parser()) + _dtype_choices(bench_parser())
    assert len(found) >= 4  # segment, label, eval, bench subcommands
    assert set(found) == {rules.DTYPE_CHOICES}


def test_cli_types_apply_the_rules_and_the_flag_is_argparse_s():
    from faseg_rt.cli.args import positive_int_arg, threshold_arg

    assert threshold_arg("0.25") == 0.25 and positive_int_arg("3") == 3
    for typ, bad in [(threshold_arg, "nan"), (threshold_arg, "1.5"), (threshold_arg, "x"),
                     (positive_int_arg, "0"), (positive_int_arg, "2.5")]:
        with pytest.raises(argparse.ArgumentTypeError, match="the value must"):
            typ(bad)


@pytest.mark.parametrize("kw, match", [
    (dict(max_class_chunks=True), "^max_class_chunks must be an integer >= 1"),
    (dict(batch_sizes="0,2"), "^batch_sizes must be integers >= 1"),
    (dict(opset=16), "^opset must"),
])
def test_export_settings_are_refused_before_any_work_by_parameter_name(tmp_path, kw, match):
    from faseg_rt.engines.build import build

    with pytest.raises(InvalidInputError, match=match):
        build(tmp_path / "no-model", tmp_path / "out", onnx_only=True, **kw)
    assert not (tmp_path / "out").exists()


def test_segmenter_max_class_chunks_is_a_count(small_segmenter):
    from faseg_rt import Segmenter

    with pytest.raises(InvalidInputError, match="^max_class_chunks must be an integer >= 1"):
        Segmenter(small_segmenter.backend, small_segmenter.tokenizer, small_segmenter.config,
                  max_class_chunks=0)


@pytest.mark.parametrize("kw, match", [
    (dict(threshold=True), "^threshold must be a number"), (dict(batch_size=True), "^batch_size must"),
    (dict(num_workers=0), "^num_workers must"), (dict(dtype="int8"), "^unknown dtype"),
])
def test_label_checks_its_settings_by_the_same_rules(tmp_path, kw, match):
    pytest.importorskip("ray", reason="label needs Ray (the [scale] extra)")
    from faseg_rt.scale.label import label

    with pytest.raises(InvalidInputError, match=match):
        label(tmp_path, ["cat"], tmp_path / "out", model="unused", **kw)
    assert not (tmp_path / "out").exists()


def test_a_missing_device_is_refused_before_the_model_loads(tmp_path):
    from faseg_rt import Segmenter

    with pytest.raises(InvalidInputError, match="device 'cuda:99'.*available: cpu"):
        Segmenter.from_pretrained(tmp_path / "not-a-model", device="cuda:99")


def test_candidate_modes_one_source_for_library_service_and_cli():
    """"recogniser" (README prose) is the mode "recognizer" everywhere; a typo is refused with
    the modes listed and the nearest one suggested, by the library and the service alike."""
    from faseg_rt.frontend.candidates import MODES, check_candidates
    from faseg_rt.frontend.plan import one_per_image
    from faseg_rt.serve.request import parse_candidates

    assert MODES is rules.CANDIDATE_MODES
    for parse in (rules.candidate_mode, check_candidates, parse_candidates):
        assert parse("recogniser") == "recognizer" and parse("auto") == "auto"
    assert one_per_image("recogniser", 2, "candidates", MODES) == ["recognizer", "recognizer"]
    assert rules.candidate_mode("atuo") is None and rules.candidate_mode(["cat"]) is None
    for parse in (check_candidates, parse_candidates):
        message = _refused(parse, "atuo", "did you mean 'auto'")
        assert rules.modes_text() in message and "'auto', 'caption' or 'recognizer'" in message
    assert rules.did_you_mean("zzz", MODES) == ""
