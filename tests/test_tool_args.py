"""The side tools' `key=value` arguments (pixelrl/tool_args.py) and how each tool refuses bad ones."""

import pytest

from pixelrl import tool_args
from pixelrl.errors import ConfigError


def test_options_and_paths_a_sweep_dir_with_equals_in_its_name_is_a_path(tmp_path):
    job = tmp_path / "algo.lr=0.001,seed=1"
    job.mkdir()
    opts, paths = tool_args.parse(
        ["out=a.png", str(job), "runs/x", "smooth=5"],
        {"out": "o", "smooth": "auto", "x": "frames"},
        paths=True,
    )
    assert opts == {"out": "a.png", "smooth": "5", "x": "frames"}
    assert paths == [str(job), "runs/x"]


@pytest.mark.parametrize("arg,paths", [("colour=red", True), ("pong", False), ("out", False)])
def test_an_unknown_option_names_itself_and_the_known_ones(arg, paths):
    with pytest.raises(ConfigError) as e:
        tool_args.parse([arg], {"out": "", "seeds": "1"}, paths=paths)
    assert str(e.value) == f"unknown option {arg!r}; use out=, seeds="


@pytest.mark.parametrize(
    "text,cast,least,above,expected",
    [("3", int, 1, False, 3), ("0", int, 0, False, 0), ("2.5", float, 0, True, 2.5)],
)
def test_number_accepts(text, cast, least, above, expected):
    assert tool_args.number({"k": text}, "k", cast, least, above=above) == expected


@pytest.mark.parametrize(
    "text,cast,least,above,message",
    [
        ("0", int, 1, False, "k='0' must be an integer >= 1"),
        ("1.5", int, 1, False, "k='1.5' must be an integer >= 1"),
        ("0", float, 0, True, "k='0' must be a number > 0"),
        ("nan", float, 0, True, "k='nan' must be a number > 0"),
        ("soon", float, 0, True, "k='soon' must be a number > 0"),
    ],
)
def test_number_refuses(text, cast, least, above, message):
    with pytest.raises(ConfigError) as e:
        tool_args.number({"k": text}, "k", cast, least, above=above)
    assert str(e.value) == message


def test_each_tool_refuses_a_bad_argument_in_one_line_with_status_2(capsys, tmp_path):
    from pixelrl import bench, plot, report, trunk_check

    cases = [
        (
            bench.main,
            ["which=pong_solve", "minutes=0"],
            "pixelrl.bench: error: minutes='0' must be a number > 0",
        ),
        (
            bench.main,
            ["which=pong_solve", "cost=lots"],
            "pixelrl.bench: error: cost='lots' must be a number > 0",
        ),
        (bench.main, ["seconds=-1"], "pixelrl.bench: error: seconds='-1' must be a number > 0"),
        (
            bench.main,
            ["colour=red"],
            "pixelrl.bench: error: unknown option 'colour=red'; use which=",
        ),
        (
            plot.main,
            [str(tmp_path), "smooth=0"],
            "pixelrl.plot: error: smooth='0' must be an integer >= 1",
        ),
        (
            report.main,
            [str(tmp_path), "title=x"],
            "pixelrl.report: error: unknown option 'title=x'; use out=",
        ),
        (
            trunk_check.main,
            ["a.pt", "b.pt"],
            "pixelrl.trunk_check: error: give one checkpoint or run dir, not 2",
        ),
    ]
    for main, argv, start in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1, err
