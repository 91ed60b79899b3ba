"""A job's [openai] table: hostile or incoherent values are load errors of that job (shown in
/v1/jobs), two jobs answering to one model are refused, and the conversation renders as
documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard.jobs import JobRegistry
from runyard.jobs.spec import LoadError, load_job
from runyard.services.chat import Message, render_json, render_text, request_digest

BASE = """
command = ["prog", "{conversation}"]
[params.conversation]
type = "str"
[params.level]
type = "int"
default = 1
"""


def job_file(tmp_path: Path, name: str, table: str, base: str = BASE) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(base + "\n[openai]\n" + table)
    return path


def test_a_good_table_loads_with_its_defaults(tmp_path: Path) -> None:
    job = load_job(job_file(tmp_path, "bot", 'input = "conversation"\n'))
    chat = job.spec.openai
    assert chat is not None
    assert (chat.model_id("bot"), chat.format, chat.answer, chat.cancel_on_disconnect) == (
        "bot", "text", "stdout", False,
    )  # fmt: skip
    assert chat.answer_file is None
    named = load_job(job_file(tmp_path, "b2", 'input = "conversation"\nmodel = "org/m-1:x"\n'
                                             'answer = "file:outputs/answer.md"\n'))  # fmt: skip
    assert named.spec.openai is not None
    assert named.spec.openai.model_id("b2") == "org/m-1:x"
    assert named.spec.openai.answer_file == "outputs/answer.md"


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('input = "nope"\n', "names no declared param"),
        ('input = "level"\n', "must be a str param"),
        ('input = "conversation"\nformat = "messages"\n', "must be a json param"),
        ('input = "conversation"\nformat = "xml"\n', "openai.format"),
        ('input = "conversation"\nanswer = "file:../../etc/passwd"\n', "inside the workspace"),
        ('input = "conversation"\nanswer = "file:/etc/passwd"\n', "inside the workspace"),
        ('input = "conversation"\nanswer = "file:a//b"\n', "inside the workspace"),
        ('input = "conversation"\nanswer = "file:a\\u0000b"\n', "inside the workspace"),
        ('input = "conversation"\nanswer = "file:' + "x" * 300 + '"\n', "at most 255 bytes"),
        ('input = "conversation"\nanswer = "stderr"\n', "answer is `stdout` or `file:PATH`"),
        ('input = "conversation"\nmodel = "bad model"\n', "model ids are"),
        ('input = "conversation"\nmodel = "' + "m" * 65 + '"\n', "model ids are"),
        ('input = "conversation"\nmodel = "x\\ny"\n', "model ids are"),
        ('input = "conversation"\nsurprise = 1\n', "openai.surprise"),
        ('input = "conversation"\ncancel_on_disconnect = "yes"\n', "cancel_on_disconnect"),
    ],
)
def test_a_bad_table_is_a_load_error_naming_it(tmp_path: Path, table: str, says: str) -> None:
    with pytest.raises(LoadError) as caught:
        load_job(job_file(tmp_path, "bot", table))
    assert says in caught.value.message


def test_other_params_must_do_without_a_value(tmp_path: Path) -> None:
    base = BASE + '[params.target]\ntype = "str"\n'
    with pytest.raises(LoadError) as caught:
        load_job(job_file(tmp_path, "bot", 'input = "conversation"\n', base))
    assert "param 'target' is required" in caught.value.message


def test_two_jobs_answering_to_one_model_leave_the_second_broken(tmp_path: Path) -> None:
    job_file(tmp_path, "a", 'input = "conversation"\nmodel = "shared"\n')
    job_file(tmp_path, "b", 'input = "conversation"\nmodel = "shared"\n')
    job_file(tmp_path, "shared", 'input = "conversation"\n')  # its default model is its name
    snap = JobRegistry(tmp_path).scan()
    assert sorted(snap.jobs) == ["a"]
    assert snap.errors == {
        "b.toml": "openai.model 'shared' is already job 'a''s",
        "shared.toml": "openai.model 'shared' is already job 'a''s",
    }


def test_the_conversation_as_text_and_as_json() -> None:
    messages = [Message("system", "be brief"), Message("user", "hi\n\nthere", "ann")]
    assert render_text(messages) == "system: be brief\n\nuser: hi\n\nthere"
    assert render_json(messages) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi\n\nthere", "name": "ann"},
    ]
    one = request_digest("ci", "m", messages)
    assert one == request_digest("ci", "m", list(messages))
    assert one != request_digest("other", "m", messages)  # never another caller's run
    assert one != request_digest("ci", "m", messages[:1])
