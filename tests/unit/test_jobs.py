"""Job files: validation, load errors per file, params and their JSON Schema, the mtime cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema_rs
import pytest

from runyard.jobs import JobRegistry
from runyard.jobs.params import ParamError
from runyard.jobs.spec import LoadError, load_job

GOOD = """
description = "d"
command = ["prog", "--n", "{n}", "--mode={mode}", "{flag}", "{data}"]
timeout_s = 5
retry_on = [1, "lost", "timeout"]
[params.n]
type = "int"
min = 1
max = 10
default = 3
[params.mode]
type = "enum"
choices = ["fast", "slow"]
default = "fast"
[params.flag]
type = "bool"
default = false
[params.data]
type = "json"
default = {a = 1}
[params.name]
type = "str"
max_length = 5
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_good_job_loads_with_schema(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, "good", GOOD))
    assert job.name == "good"
    props = job.schema["properties"]
    assert props["n"] == {"default": 3, "maximum": 10, "minimum": 1, "type": "integer"}
    assert props["mode"]["enum"] == ["fast", "slow"]
    assert props["name"]["maxLength"] == 5
    assert job.schema["required"] == ["name"]
    assert job.schema["additionalProperties"] is False


def test_an_optional_json_param_without_a_default_is_null(tmp_path: Path) -> None:
    """A review: refusing `required = false` without a default broke json params, whose
    absent value was always null (TOML cannot write `default = null`)."""
    text = 'command = ["x", "{j}"]\n[params.j]\ntype = "json"\nrequired = false\n'
    job = load_job(write(tmp_path, "j", text))
    assert job.validate_params({}) == {"j": None}


def test_a_json_params_size_is_its_compact_utf8_text(tmp_path: Path) -> None:
    """As published (`x-max-bytes`): accented text counts its UTF-8 bytes, an integer past
    64 bits (which orjson refuses) included (a review: json's fallback escaped it, 6 a char)."""
    text = 'command = ["x", "{j}"]\n[params.j]\ntype = "json"\nmax_length = 60\n'
    job = load_job(write(tmp_path, "j", text))
    fits = {"n": 2**70, "s": "é" * 8}  # 51 bytes as compact UTF-8; 83 with é escaped
    assert job.validate_params({"j": fits}) == {"j": fits}
    with pytest.raises(ParamError, match="over the limit of 60"):
        job.validate_params({"j": {"n": 2**70, "s": "é" * 14}})


def test_an_int_param_takes_what_its_published_schema_takes(tmp_path: Path) -> None:
    """JSON Schema's "integer" is any number without a fraction: `7.0` and `7e0` were refused
    (422) where `params_schema` said they fit."""
    job = load_job(write(tmp_path, "good", GOOD))
    for given in (7, 7.0, 7e0):
        got = job.validate_params({"name": "a", "n": given})["n"]
        assert (got, type(got)) == (7, int), given
    for refused in (7.5, "7", True, 11.0, float("inf"), float("nan")):
        with pytest.raises(ParamError):
            job.validate_params({"name": "a", "n": refused})


def test_argv_substitutes_whole_elements_and_never_splits(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, "good", GOOD))
    values = job.validate_params({"name": "--rm", "flag": True, "n": 10})
    argv = job.argv(values)
    assert argv == ["prog", "--n", "10", "--mode=fast", "true", '{"a":1}']
    # a value that looks like options stays one element in its place
    job2 = load_job(
        write(tmp_path, "echo", 'command = ["echo", "{s}"]\n[params.s]\ntype = "str"\n')
    )
    assert job2.argv(job2.validate_params({"s": "--foo; rm -rf / $(x)"})) == [
        "echo",
        "--foo; rm -rf / $(x)",
    ]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"name": "x", "n": 11}, "n"),
        ({"name": "x", "n": True}, "n"),
        ({"name": "x", "mode": "medium"}, "mode"),
        ({"name": "toolong"}, "name"),
        ({"name": "x", "flag": "yes"}, "flag"),
        ({}, "name"),
        ({"name": "x", "other": 1}, "other"),
    ],
)
def test_invalid_params_name_the_field(tmp_path: Path, params: dict, field: str) -> None:
    job = load_job(write(tmp_path, "good", GOOD))
    with pytest.raises(ParamError) as info:
        job.validate_params(params)
    assert field in [loc for loc, _ in info.value.errors]


NUMERIC_CHOICES = 'command = ["x", "{e}"]\n[params.e]\ntype = "enum"\nchoices = ["a", 1, 2.5, 0]\n'


@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_is_none_of_an_enums_numeric_choices(tmp_path: Path, flag: bool) -> None:
    """`true` equals 1 in Python, not in JSON: it was taken for choice 1 (false for 0) and
    stored as the number, which the published schema's enum refuses."""
    job = load_job(write(tmp_path, "e", NUMERIC_CHOICES))
    assert job.schema["properties"]["e"]["enum"] == ["a", 1, 2.5, 0]
    with pytest.raises(ParamError) as info:
        job.validate_params({"e": flag})
    assert [loc for loc, _ in info.value.errors] == ["e"]
    assert job.validate_params({"e": 1}) == {"e": 1}  # the numbers themselves still are
    assert job.validate_params({"e": 0}) == {"e": 0}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('command = ["x"]\nbogus = 1\n', "bogus"),
        ('command = "x"\n', "command"),
        ("command = []\n", "command"),
        ('command = ["x", "{nope}"]\n', "{nope}"),
        ('command = ["x", "{"]\n', "unbalanced"),
        ('command = ["x"]\n[params.p]\ntype = "int"\nmin = 5\nmax = 1\n', "greater than"),
        # no value could ever be given (a probe: it loaded, and refused 0 and 1 alike)
        ('command = ["x"]\n[params.p]\ntype = "int"\nmin = 0.5\nmax = 0.7\n', "no integer"),
        ('command = ["x"]\n[params.p]\ntype = "enum"\n', "choices"),
        ('command = ["x"]\n[params.p]\ntype = "int"\ndefault = "a"\n', "default"),
        ('command = ["x"]\n[params.p]\ntype = "int"\nmax = 3\ndefault = 9\n', "default"),
        (
            'command = ["x"]\n[params.p]\ntype = "int"\nrequired = false\n',
            "`required = false` needs a `default`",
        ),
        (
            'command = ["x"]\n[params.p]\ntype = "file"\nrequired = false\n',
            "a file param is always required",
        ),
        ('command = ["x"]\n[params.workspace]\ntype = "int"\n', "reserved"),
        ('command = ["x"]\nworkspace = "ftp:x"\n', "workspace"),
        ('command = ["x"]\nartifacts = ["../x"]\n', "inside the workspace"),
        ('command = ["x"]\n[env]\nRUNYARD_RUN_ID = "x"\n', "reserved"),
        ('command = ["x"]\ntimeout_s = -1\n', "timeout_s"),
        ("this is not toml", "TOML"),
        ('name = "x"\ncommand = ["x"]\n', "file name"),
        # control characters anywhere in the spec: it reaches argv, env and the store
        ('command = ["x", "a\\u0000b"]\n', "U+0000"),
        ('command = ["x"]\n[env]\nK = "\\u001b"\n', "U+001B"),
        ('command = ["x"]\n[params.p]\ntype = "enum"\nchoices = ["a\\u0000"]\n', "U+0000"),
        ('command = ["x"]\n[params.p]\ntype = "str"\ndefault = "\\u0000"\n', "default"),
        # json bounds: only for json params, within the server's ceiling, defaults inside
        ('command = ["x"]\n[params.p]\ntype = "int"\nmax_depth = 3\n', "only for json"),
        ('command = ["x"]\n[params.p]\ntype = "json"\nmax_depth = 33\n', "json_depth_ceiling"),
        ('command = ["x"]\n[params.p]\ntype = "json"\nmax_keys = 10001\n', "json_keys_ceiling"),
        (
            'command = ["x"]\n[params.p]\ntype = "json"\nmax_depth = 1\ndefault = {a = {b = 1}}\n',
            "max_depth (1)",
        ),
        # Slurm: only allowlisted sbatch options, values without shell or option syntax
        ('command = ["x"]\nexecutor = "slurm"\n[slurm.options]\noutput = "/x"\n', "not allowed"),
        ('command = ["x"]\nexecutor = "slurm"\n[slurm.options]\ncomment = "a b"\n', "characters"),
        ('command = ["x"]\nexecutor = "slurm"\n[slurm.options]\ncomment = "$(x)"\n', "characters"),
        ('command = ["x"]\nexecutor = "slurm"\n[slurm]\npartition = "-x y"\n', "partition"),
        ('command = ["x"]\n[slurm]\npartition = "p"\n', "executor"),
        ('command = ["x"]\nexecutor = "slurm"\nrun_as = "nobody"\n', "local"),
        ('command = ["x"]\nexecutor = "k8s"\n', "executor"),
        # limits an rlimit cannot hold: every run failed inside the child's setrlimit
        (
            'command = ["x"]\n[limits]\nmemory_mb = 100000000000000\n',
            "limits.memory_mb: Input should be less than or equal to 8796093022207",
        ),
        (
            'command = ["x"]\n[limits]\ncpu_s = 10000000000000000000\n',
            "limits.cpu_s: Input should be less than or equal to 9223372036854775802",
        ),
        (
            'command = ["x"]\n[limits]\nmax_log_mb = 1e300\n',
            "limits.max_log_mb: Input should be less than or equal to 8796093022207",
        ),
        # a queue of none refused every run, a free slot or not (a probe)
        (
            'command = ["x"]\nmax_queue = 0\n',
            "max_queue: Input should be greater than or equal to 1",
        ),
        # file params: an upload per run, limits only where they mean something
        ('command = ["x"]\n[params.f]\ntype = "file"\ndefault = "upload:x"\n', "no default"),
        ('command = ["x"]\n[params.f]\ntype = "str"\nmax_mb = 1\n', "only for file"),
        ('command = ["x"]\n[params.f]\ntype = "file"\naccept = ["csv"]\n', "accept"),
        # no run could ever start (a probe: each was accepted and failed, 126, or refused
        # naming a param that did not exist)
        (f'command = ["x"]\n[env]\nBIG = "{"x" * 140_000}"\n', "env.BIG: 140004 bytes, over"),
        (f'command = ["x", "{"y" * 200_000}"]\n', "command[1]: 200000 bytes before any param"),
        (f'command = ["x", "{{{{{"y" * 140_000}"]\n', "command[1]: 140001 bytes before"),
    ],
)
def test_bad_job_files_are_load_errors(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(LoadError) as info:
        load_job(write(tmp_path, "bad", text))
    assert words in info.value.message


def test_literal_braces(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, "b", 'command = ["echo", "{{x}}"]\n'))
    assert job.argv({}) == ["echo", "{x}"]


def test_registry_reports_broken_files_without_hiding_others(tmp_path: Path) -> None:
    write(tmp_path, "ok", 'command = ["true"]\n')
    write(tmp_path, "broken", "command = [\n")
    (tmp_path / "notes.txt").write_text("ignored")
    snap = JobRegistry(tmp_path).scan()
    assert list(snap.jobs) == ["ok"]
    assert list(snap.errors) == ["broken.toml"]


def test_registry_reparses_only_changed_files(tmp_path: Path) -> None:
    path = write(tmp_path, "a", 'command = ["true"]\n')
    reg = JobRegistry(tmp_path)
    first = reg.scan().jobs["a"]
    assert reg.scan().jobs["a"] is first  # unchanged: the cached object
    path.write_text('command = ["false"]\n')
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    changed = reg.scan().jobs["a"]
    assert changed.spec.command == ["false"]
    path.unlink()
    assert reg.scan().jobs == {}


def test_json_params_are_bounded_in_depth_and_keys(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, "good", GOOD))
    deep: dict = {"a": 1}
    for _ in range(5):
        deep = {"a": deep}  # 6 levels
    for value, words in (
        (deep, "max_depth (5)"),
        ([[[[[[1]]]]]], "max_depth (5)"),
        ({f"k{i}": i for i in range(201)}, "max_keys (200)"),
        ({"k\x00": 1}, "U+0000"),
        (["x\x00"], "U+0000"),
        ({"x": float("nan")}, "finite"),
        (float("inf"), "finite"),
    ):
        with pytest.raises(ParamError) as info:
            job.validate_params({"name": "a", "data": value})
        assert info.value.errors[0][0] == "data"
        assert words in info.value.errors[0][1], info.value.errors
    ok = {"a": [{"b": {"c": {"d": 1}}}]}  # exactly 5 levels
    assert job.validate_params({"name": "a", "data": ok})["data"] == ok
    schema = job.schema["properties"]["data"]
    assert (schema["x-max-depth"], schema["x-max-keys"]) == (5, 200)
    # its size too, as compact JSON text (a probe: refused past 64 KiB, published nowhere)
    assert schema["x-max-bytes"] == 65_536


def test_str_params_refuse_control_characters_but_keep_tabs_and_newlines(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, "s", 'command = ["x", "{s}"]\n[params.s]\ntype = "str"\n'))
    for bad in ("a\x00", "\x1b[31m", "\x7f", "\x85"):
        with pytest.raises(ParamError):
            job.validate_params({"s": bad})
    assert job.argv(job.validate_params({"s": "a\tb\r\nc"})) == ["x", "a\tb\r\nc"]
    assert "pattern" in job.schema["properties"]["s"]  # published as it is enforced


def test_the_ceiling_comes_from_the_server(tmp_path: Path) -> None:
    from runyard.jobs.params import JsonCeiling

    text = 'command = ["x"]\n[params.p]\ntype = "json"\nmax_depth = 8\n'
    with pytest.raises(LoadError):
        load_job(write(tmp_path, "p", text), JsonCeiling(depth=6))
    assert (
        load_job(write(tmp_path, "p", text), JsonCeiling(depth=8)).spec.params["p"].max_depth == 8
    )


def test_a_json_param_at_the_depth_ceiling_publishes_a_small_schema_as_strict(
    tmp_path: Path,
) -> None:
    """Each level was spelled inline twice (array items, object values): the schema doubled
    with the depth, and a job file at the ceiling (32) ran the server out of memory."""
    job = load_job(write(tmp_path, "deep", 'command = ["x"]\n[params.cfg]\ntype = "json"\n'
                                           "max_depth = 32\nmax_keys = 10000\n"))  # fmt: skip
    schema = job.schema
    assert len(json.dumps(schema)) < 50_000
    assert schema["properties"]["cfg"]["x-max-depth"] == 32
    check = jsonschema_rs.validator_for(schema)

    def nest(levels: int) -> object:
        value: object = 1
        for i in range(levels):
            value = [value] if i % 2 else {"k": value}
        return value

    for value, valid in ((nest(32), True), (nest(33), False), ({"a": "\x1b"}, False)):
        assert check.is_valid({"cfg": value}) is valid
        try:
            job.validate_params({"cfg": value})
        except ParamError:
            assert not valid  # the server refuses exactly what the schema refuses
        else:
            assert valid


BOUNDS = """
command = ["prog"]
[params.n]
type = "int"
max = 100000000000000000000000
[params.x]
type = "float"
"""


def test_bounds_are_kept_as_written_and_a_float_is_a_doubles_at_most(tmp_path: Path) -> None:
    """A probe: an int bound past 2^53 went through a float (1e23 published and enforced as
    99999999999999991611392, refusing what the job file allows); a float param's schema took
    1e400, which the server refuses."""
    job = load_job(write(tmp_path, "bounds", BOUNDS))
    schema = job.schema["properties"]
    assert schema["n"]["maximum"] == 10**23
    assert job.validate_params({"n": 10**23 - 1, "x": 1.5}) == {"n": 10**23 - 1, "x": 1.5}
    assert schema["x"]["maximum"] == 1.7976931348623157e308
    assert not jsonschema_rs.validator_for(schema["x"]).is_valid(10**400)
    bad = write(tmp_path, "nan", 'command = ["prog"]\n[params.y]\ntype = "float"\nmax = nan\n')
    with pytest.raises(LoadError):
        load_job(bad)


def test_an_int_param_takes_a_whole_number_a_double_holds_exactly(tmp_path: Path) -> None:
    """`2.0` and `1e2` are integers (JSON Schema's reading); past 2^53 a number written with
    a fraction part or an exponent was rounded by the reader (`12345678901234567891.0` ran
    as 12345678901234567168): refused, as the client's number cannot be known."""
    job = load_job(write(tmp_path, "count", 'command = ["x"]\n[params.n]\ntype = "int"\n'))
    assert job.validate_params({"n": 2.0}) == {"n": 2}
    assert job.validate_params({"n": json.loads("1e2")}) == {"n": 100}
    assert job.validate_params({"n": float(2**53 - 1)}) == {"n": 2**53 - 1}
    assert job.validate_params({"n": 12345678901234567891}) == {"n": 12345678901234567891}
    # 2^53 itself is also what ...993.0 reads as
    for written in ("12345678901234567891.0", "1e20", "-9007199254740994.0", "9007199254740993.0"):
        with pytest.raises(ParamError, match=r"params\.n"):
            job.validate_params({"n": json.loads(written)})


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("nl\n", 'command = ["true"]\n'),  # the job's name, from its file's
        (
            "chat",
            'command = ["echo", "{p}"]\n[params.p]\ntype = "str"\n'
            '[openai]\nmodel = "evil\\n"\ninput = "p"\n',
        ),
        ("envy", 'command = ["true"]\n[env]\n"FOO\\n" = "x"\n'),
        ("par", 'command = ["true"]\n[params."p\\n"]\ntype = "int"\n'),
    ],
)
def test_a_name_ending_in_a_newline_is_refused(tmp_path: Path, name: str, text: str) -> None:
    """A probe: Python's `$` also matches before a last newline, so a job named `nl\\n` (and
    a model `evil\\n`) was listed and could never be asked for."""
    with pytest.raises(LoadError):
        load_job(write(tmp_path, name, text))


def _params(n: int, decl: str) -> str:
    return 'command = ["true"]\n[params]\n' + "".join(
        f"p{i} = {decl.format(i=i, j=i + 1)}\n" for i in range(n)
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # a probe: a 189 KB file of 10,000 params took 1.2 s to load at every change
        (_params(257, '{{type = "int"}}'), "257 of them, over 256"),
        # and 5,000 json params of distinct bounds made each listing of the jobs 63 MB
        (_params(40, '{{type = "json", max_keys = {j}, max_depth = 32}}'), "schema would take"),
        # `true` was read as 1: published as an integer choice, refused as a boolean
        ('command = ["x"]\n[params.e]\ntype = "enum"\nchoices = [true, false]\n', "choices"),
        ('command = ["x"]\n[params.e]\ntype = "enum"\nchoices = ["a", 1, 1.0]\n', "twice"),
        ('command = ["x"]\n[params.e]\ntype = "enum"\nchoices = ["a", "a"]\n', "twice"),
        # past a double's range, the bound crashed the load (OverflowError, a traceback)
        ('command = ["x"]\n[params.f]\ntype = "float"\nmin = ' + "9" * 400 + "\n", "double"),
    ],
)
def test_what_would_make_a_job_costly_or_ambiguous_is_a_load_error(
    tmp_path: Path, text: str, words: str
) -> None:
    with pytest.raises(LoadError, match=words):
        load_job(write(tmp_path, "costly", text))


@pytest.mark.parametrize(
    ("text", "words", "of_host"),
    [
        # a probe: each loaded, and every run failed
        ('command = [""]\n', "the program, is empty", False),
        ('command = ["x"]\nworkspace = "git:../repo@"\n', "invalid git ref", False),
        ('command = ["x"]\nworkspace = "git:../repo@--upload-pack=x"\n', "invalid git ref", False),
        ('command = ["x"]\nworkspace = "git:https://example.com/x.git"\n', "local paths", False),
        ('command = ["x"]\nworkspace = "copy:missing"\n', "no directory here", True),
        ('command = ["x"]\nrun_as = "no_such_user_here"\n', "no user", True),
        # run as another user, the program cannot raise the supervisor's hard limit (a probe:
        # every run failed to start, "over this host's hard RLIMIT_NOFILE")
        (
            'command = ["x"]\nrun_as = "nobody"\n[limits]\nopen_files = 1048576\n',
            "limits.open_files .1048576. is over this host's hard RLIMIT_NOFILE",
            True,
        ),
    ],
)
def test_what_every_run_would_fail_on_is_a_load_error(
    tmp_path: Path, text: str, words: str, of_host: bool
) -> None:
    with pytest.raises(LoadError, match=words) as refused:
        load_job(write(tmp_path, "doomed", text))
    assert refused.value.of_host is of_host  # the host's: looked at again at each scan
    (tmp_path / "missing").mkdir()
    if "copy:missing" in text:
        assert load_job(write(tmp_path, "doomed", text)).spec.workspace == "copy:missing"


def test_limits_within_the_hosts_hard_ones_load(tmp_path: Path) -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    text = f'command = ["x"]\nrun_as = "nobody"\n[limits]\nopen_files = {min(hard, 4096)}\n'
    assert load_job(write(tmp_path, "fits", text)).spec.limits.open_files == min(hard, 4096)


def test_a_spec_an_older_version_stored_with_a_run_reads_back(tmp_path: Path) -> None:
    """What a load refuses now, a run stored by an older version keeps: its spec reads back
    (a review: a field check refused it, and its run was re-queued for ever)."""
    from runyard.jobs.spec import JobSpec

    older = {
        "name": "old", "command": ["true"], "workspace": "git:../repo@-x",
        "params": {
            **{f"p{i}": {"type": "int"} for i in range(300)},
            "e": {"type": "enum", "choices": [1, 1.0]},
        },
    }  # fmt: skip
    spec = JobSpec.from_stored(older)
    assert (len(spec.params), spec.workspace) == (301, "git:../repo@-x")


def test_a_job_within_the_bounds_loads(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, "wide", _params(256, '{{type = "int", default = {i}}}')))
    assert len(job.spec.params) == 256
    shared = _params(30, '{{type = "json", max_keys = 100, max_depth = 32}}')
    assert load_job(write(tmp_path, "shared", shared)).schema  # one set of bounds, shared


def test_a_negative_zero_float_is_stored_and_rendered_as_zero(tmp_path: Path) -> None:
    """A probe: -0.0 passed `min = 0` and reached argv as `-0.0`, an option to `sleep`."""
    text = 'command = ["sleep", "{seconds}"]\n[params.seconds]\ntype = "float"\nmin = 0\n'
    job = load_job(write(tmp_path, "nap", text))
    stored = job.validate_params({"seconds": -0.0})["seconds"]
    assert (stored, str(stored)) == (0.0, "0.0")
    assert job.validate_params({"seconds": 1e-320}) == {"seconds": 1e-320}  # as given


def test_a_head_of_a_log_is_published_with_the_logs_own_types(tmp_path: Path) -> None:
    from runyard.api.app import create_app
    from runyard.config import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", jobs_dir=tmp_path))
    logs = app.openapi()["paths"]["/v1/runs/{run_id}/logs"]
    for method in ("get", "head"):
        assert set(logs[method]["responses"]["200"]["content"]) == {
            "text/plain; charset=utf-8",
            "application/octet-stream",
        }, method
