"""Parsing the command line: values argparse would misread."""

from __future__ import annotations

import pytest

from authproxy.cli import parse_args


@pytest.mark.parametrize("code", ["-x1Yz", "--x1", "plain", "-"])
def test_an_authorization_code_may_begin_with_a_dash(code: str) -> None:
    args = parse_args(["authorize", "st", "222651", "--code", code, "--redirect", "https://a.example/cb"])
    assert (args.app, args.shop, args.code, args.redirect) == (
        "st",
        "222651",
        code,
        "https://a.example/cb",
    )


def test_the_code_may_also_be_given_with_an_equals_sign() -> None:
    assert parse_args(["authorize", "st", "1", "--code=-abc"]).code == "-abc"


def test_a_missing_code_is_still_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["authorize", "st", "1", "--code"])
    assert exited.value.code == 2
    assert "--code" in capsys.readouterr().err
