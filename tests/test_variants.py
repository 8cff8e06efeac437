"""Variant specs ``NAME[:k=v,...]``: parsing, value typing, errors, formatting round trips."""
from __future__ import annotations

import math

import pytest

from hf_posenc.variants import format_variant, parse_value, parse_variant


def test_parse_name_only_and_options():
    assert parse_variant("alibi") == ("alibi", {})
    assert parse_variant("rope:theta=1e4,partial_rotary_factor=0.5") == (
        "rope", {"theta": 10000.0, "partial_rotary_factor": 0.5})
    assert parse_variant(" yarn : factor = 4 , original_max_length=8192 ") == (
        "yarn", {"factor": 4, "original_max_length": 8192})


@pytest.mark.parametrize("text,value", [
    ("8192", 8192), ("-3", -3), ("+7", 7), ("1e4", 10000.0), ("0.5", 0.5), ("-2.5e-3", -0.0025),
    ("true", True), ("False", False), ("TRUE", True), ("none", None), ("None", None), ("null", None),
    ("linear", "linear"), ("yes", "yes"), ('"1e4"', "1e4"), ("'true'", "true"),
])
def test_values_are_typed(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_inf_and_nan_are_floats():
    assert parse_value("inf") == math.inf and math.isnan(parse_value("nan"))


@pytest.mark.parametrize("spec,message", [
    ("", "empty variant spec"),
    ("   ", "empty variant spec"),
    (":theta=1", "bad variant name"),
    ("1rope", "bad variant name"),
    ("rope:", "has ':' but no options"),
    ("rope:theta", "expected key=value"),
    ("rope:theta=", "expected key=value"),
    ("rope:=3", "expected key=value"),
    ("rope:theta=1,,base=2", "expected key=value"),
    ("rope:the ta=1", "expected key=value"),
    ("rope:theta=1,theta=2", "given twice"),
])
def test_malformed_specs_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_variant(spec)


def test_non_string_spec_raises():
    with pytest.raises(ValueError):
        parse_variant(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name,options", [
    ("alibi", {}),
    ("rope", {"theta": 10000.0, "partial_rotary_factor": 0.5}),
    ("t5", {"num_buckets": 32, "shared": True, "max_distance": None}),
    ("yarn", {"factor": 4, "mode": "linear", "tag": "1e4"}),
])
def test_format_round_trips(name, options):
    text = format_variant(name, options)
    assert parse_variant(text) == (name, options)


def test_format_examples():
    assert format_variant("alibi") == "alibi" and format_variant("alibi", {}) == "alibi"
    assert format_variant("rope", {"theta": 1e4, "flag": False, "x": None}) == "rope:theta=10000.0,flag=false,x=none"
    assert format_variant("yarn", {"tag": "1e4"}) == 'yarn:tag="1e4"'
