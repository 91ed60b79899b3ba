"""Tokens: hashed at rest, compared in constant time against every entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from runyard import auth
from runyard.auth import (
    RELAY_VALIDITY_S,
    Authenticator,
    RelayClaim,
    RelaySigner,
    Role,
    create_token,
    load_tokens,
)


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


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def signers(secret: str | None = "k" * 32) -> tuple[RelaySigner, RelaySigner, Clock]:
    clock = Clock()
    return (
        RelaySigner(secret, "c2", clock=clock),
        RelaySigner(secret, "c1", clock=clock),
        clock,
    )


def test_a_relay_claim_is_good_once_for_exactly_its_request() -> None:
    c2, c1, _ = signers()
    header = c2.sign("GET", b"/v1/runs/X/logs?offset=3", "c1", "ci bot", Role.READ)
    assert c1.verify(header, "POST", b"/v1/runs/X/logs?offset=3") is None  # other method
    assert c1.verify(header, "GET", b"/v1/runs/X/logs?offset=4") is None  # other query
    assert c1.verify(header, "GET", b"/v1/status") is None  # other path
    assert c2.verify(header, "GET", b"/v1/runs/X/logs?offset=3") is None  # other server
    claim = c1.verify(header, "GET", b"/v1/runs/X/logs?offset=3")
    assert claim == RelayClaim("c2", "c1", "ci bot", Role.READ, signed=True)
    assert c1.verify(header, "GET", b"/v1/runs/X/logs?offset=3") is None  # replayed


def test_a_relay_claim_cannot_be_altered_kept_or_made_without_the_secret() -> None:
    c2, c1, clock = signers()
    header = c2.sign("GET", b"/p", "c1", "ci", Role.READ)
    assert c1.verify(header.replace(" read ", " admin "), "GET", b"/p") is None
    assert c1.verify(header.replace(" ci ", " root "), "GET", b"/p") is None
    other, _, _ = signers("x" * 32)
    assert c1.verify(other.sign("GET", b"/p", "c1", "ci", Role.READ), "GET", b"/p") is None
    clock.now += RELAY_VALIDITY_S + 1
    assert c1.verify(header, "GET", b"/p") is None  # too old
    for junk in ("", "v1", "v1 a b c d e f g", header.replace("v1", "v0"), header + " x"):
        assert c1.verify(junk, "GET", b"/p") is None


def test_a_relay_claim_issued_before_its_server_started_is_refused() -> None:
    # the nonces a server saw are in its memory alone: after a restart, a claim it accepted
    # before would be new to it, within its 30 s, had it not been issued before the start
    c2, c1, clock = signers()
    header = c2.sign("GET", b"/p", "c1", "ci", Role.READ)
    assert c1.verify(header, "GET", b"/p") is not None
    clock.now += 4
    restarted = RelaySigner("k" * 32, "c1", clock=clock)
    assert restarted.verify(header, "GET", b"/p") is None
    clock.now += 0.001
    assert restarted.verify(c2.sign("GET", b"/p", "c1", "ci", Role.READ), "GET", b"/p")


def test_unsigned_claims_authorise_nothing_but_are_recognised_without_a_secret() -> None:
    c2, c1, _ = signers(None)
    claim = c1.verify(c2.sign("GET", b"/p", "c1", "ci", Role.ADMIN), "GET", b"/p")
    assert claim is not None and not claim.signed


def test_relay_signatures_are_compared_in_constant_time(monkeypatch) -> None:
    c2, c1, _ = signers()
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert c1.verify(c2.sign("GET", b"/p", "c1", "ci", Role.READ), "GET", b"/p") is not None
    assert calls == [1]


def test_revoking_every_token_locks_everyone_out_never_in(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    create_token(path, "ci", Role.READ)
    authn = Authenticator(load_tokens(path))
    path.write_text("")
    authn.replace(load_tokens(path))
    assert authn.enabled and authn.entries == []
