r"""The judge's API key goes to the configured origin only: no redirect is followed, no plain HTTP off this machine.

These tests go through `llamafactory-fea eval` and local servers only, so they hold whatever HTTP client the judge
uses. An origin is scheme, host and port: another port on the same host is another server.
"""

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from llamafactory_fea.cli import main


FAKE_KEY = "sk-fea-test-NEVER-SEND-7f3a9c"


def _predictions(path: Path) -> Path:
    rows = [
        {
            "predict": "<think>Lip corners pulled up (AU12), cheeks raised (AU6).</think><answer>happiness</answer>",
            "emotion": "happiness",
            "reference": "The person smiles with raised cheeks.",
        }
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


class Recorder(BaseHTTPRequestHandler):
    r"""Records every request (method, path, Authorization) and answers with the server's `reply(handler)`."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        self.server.reply(self)

    do_GET = do_POST = _handle

    def log_message(self, *args) -> None:
        pass


def _score(handler: BaseHTTPRequestHandler) -> None:
    body = json.dumps({"choices": [{"message": {"content": '{"score": 10, "reason": "trust me"}'}}]}).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def servers() -> Iterator[list[HTTPServer]]:
    r"""Two recording servers on loopback; each answers with a score until a test gives it another `reply`."""
    started = []
    for _ in range(2):
        server = HTTPServer(("127.0.0.1", 0), Recorder)
        server.seen, server.reply = [], _score
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)

    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def _eval(tmp_path: Path, url: str, *extra: str) -> int:
    predictions = _predictions(tmp_path / "predictions.jsonl")
    judge = ["--judge-url", url, "--judge-model", "stub", "--judge-key-env", "FEA_TEST_JUDGE_KEY", *extra]
    return main(["eval", str(predictions), "--output-dir", str(tmp_path / "out"), *judge])


def _written(tmp_path: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in tmp_path.rglob("*") if path.is_file())


@pytest.fixture
def fake_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FEA_TEST_JUDGE_KEY", FAKE_KEY)
    monkeypatch.setattr("llamafactory_fea.eval.judge.time.sleep", lambda seconds: None)
    return FAKE_KEY


def test_the_key_reaches_the_configured_judge(servers, fake_key, tmp_path: Path, capsys) -> None:
    judge, _ = servers
    assert _eval(tmp_path, f"http://127.0.0.1:{judge.server_port}/v1") == 0
    assert judge.seen == [("POST", "/v1/chat/completions", f"Bearer {fake_key}")]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["judge"]["mean"] == 10
    assert fake_key not in capsys.readouterr().out + _written(tmp_path)


@pytest.mark.parametrize("code", [302, 307])
def test_a_redirect_to_another_origin_never_gets_the_key(servers, fake_key, tmp_path: Path, capsys, code) -> None:
    judge, other = servers
    other_url = f"http://127.0.0.1:{other.server_port}/v1/chat/completions"

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        handler.send_header("Location", other_url)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    judge.reply = redirect
    assert _eval(tmp_path, f"http://127.0.0.1:{judge.server_port}/v1") == 1
    out = capsys.readouterr().out
    assert all(auth is None for _, _, auth in other.seen), "the API key followed the redirect"
    assert not other.seen  # and nothing at all was asked of the other server (no scores from it)
    assert len(judge.seen) == 1  # a redirect is refused at once, not retried
    assert f"redirect to http://127.0.0.1:{other.server_port}" in out
    assert "--judge-url" in out
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert fake_key not in out + _written(tmp_path)


def test_plain_http_to_another_machine_is_refused_before_any_request(
    fake_key, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up = []

    def no_network(host, *args, **kwargs):
        looked_up.append(host)
        raise OSError("no network in tests")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    assert _eval(tmp_path, "http://judge.example.com/v1") == 1
    out = capsys.readouterr().out
    assert not looked_up
    assert "http://judge.example.com" in out
    assert "Use https://" in out
    assert "--judge-allow-http" in out
    assert not (tmp_path / "out").exists()
    assert fake_key not in out


def test_a_key_in_the_url_is_refused_and_not_printed(fake_key, tmp_path: Path, capsys) -> None:
    assert _eval(tmp_path, "https://user:sk-in-the-url-55@judge.example.com/v1") == 1
    out = capsys.readouterr().out
    assert "--judge-key-env" in out
    assert "sk-in-the-url-55" not in out


@pytest.mark.parametrize(
    "url, allow_http, accepted",
    [
        ("https://api.example.com/v1", False, True),
        ("http://localhost:8000/v1", False, True),
        ("http://127.0.0.5:8000/v1", False, True),
        ("http://[::1]:8000/v1", False, True),
        ("http://10.0.0.7:8000/v1", False, False),
        ("http://10.0.0.7:8000/v1", True, True),
        ("ftp://judge.example.com/v1", True, False),
        ("judge.example.com/v1", False, False),
    ],
)
def test_judge_urls(url: str, allow_http: bool, accepted: bool) -> None:
    from llamafactory_fea.eval.judge import JudgeConfig, JudgeError

    if accepted:
        assert JudgeConfig(url, "m", allow_http=allow_http).url == url
    else:
        with pytest.raises(JudgeError):
            JudgeConfig(url, "m", allow_http=allow_http)
