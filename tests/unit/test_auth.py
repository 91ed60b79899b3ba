"""Tokens: hashed at rest, compared in constant time against every entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard import auth
from runyard.auth import Authenticator, Role, create_token, load_tokens


def test_tokens_are_stored_as_hashes_only(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    token = create_token(path, "ci", Role.SUBMIT)
    text = path.read_text()
    assert token not in text
    assert auth.digest(token).hex() in text
    assert oct(path.stat().st_mode)[-3:] == "600"
    (entry,) = load_tokens(path)
    assert entry.role is Role.SUBMIT
    with pytest.raises(ValueError, match="token names"):
        create_token(path, 'bad"name', Role.READ)


def test_identify_compares_every_entry_in_constant_time(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "t.toml"
    tokens = [create_token(path, f"t{i}", Role.READ) for i in range(5)]
    authn = Authenticator(load_tokens(path))
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert authn.identify(tokens[0]).name == "t0"
    assert len(calls) == 5  # no early exit on the first match
    calls.clear()
    assert authn.identify("nope") is None
    assert len(calls) == 5


def test_bad_tokens_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[[token]]\nname = "x"\nrole = "boss"\nsha256 = "00"\n')
    with pytest.raises(auth.AuthConfigError):
        load_tokens(path)
