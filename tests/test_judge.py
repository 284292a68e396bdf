r"""The judge's API key goes to the configured origin only: no redirect is followed, no plain HTTP off this machine.

These tests go through `llamafactory-fea eval` and local servers only, so they hold whatever HTTP client the judge
uses (the `openai` client, whose own default would follow redirects). An origin is scheme, host and port: another port
on the same host is another server. An unreachable judge, or one refusing the key, stops eval with its URL.
"""

import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
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
        self.body = json.loads(self.rfile.read(length) or b"{}")
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        self.server.reply(self)

    do_GET = do_POST = _handle

    def log_message(self, *args) -> None:
        pass


def _reply(handler: BaseHTTPRequestHandler, content: str, status: int = 200) -> None:
    body = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


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


def test_an_unreachable_judge_stops_eval_with_its_url_after_the_retries(fake_key, tmp_path: Path, capsys) -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    assert _eval(tmp_path, f"http://127.0.0.1:{port}/v1") == 1
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{port}/v1/chat/completions could not be reached after 3 tries" in out
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert fake_key not in out + _written(tmp_path)


def test_a_refused_key_stops_eval_and_an_echoed_key_is_masked(servers, fake_key, tmp_path: Path, capsys) -> None:
    judge, _ = servers
    judge.reply = lambda handler: _reply(handler, json.dumps({"score": 3, "reason": f"you sent {fake_key}"}))
    assert _eval(tmp_path, f"http://127.0.0.1:{judge.server_port}/v1") == 0
    samples = (tmp_path / "out" / "samples.jsonl").read_text()
    assert "you sent ***" in samples
    judge.reply = lambda handler: _reply(handler, "", status=401)
    assert _eval(tmp_path, f"http://127.0.0.1:{judge.server_port}/v1") == 1
    out = capsys.readouterr().out
    assert "refused the request (HTTP 401)" in out
    assert "$FEA_TEST_JUDGE_KEY" in out
    assert fake_key not in out + _written(tmp_path)


def test_without_a_key_no_authorization_is_sent(servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEA_TEST_JUDGE_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-another-variable")  # only --judge-key-env is read
    judge, _ = servers
    assert _eval(tmp_path, f"http://127.0.0.1:{judge.server_port}/v1") == 0
    assert judge.seen == [("POST", "/v1/chat/completions", None)]


class Terminal(io.StringIO):
    r"""A stderr that says it is a terminal, so progress bars draw on it."""

    def isatty(self) -> bool:
        return True


def test_requests_in_flight_are_bounded_and_progress_is_shown(fake_key, tmp_path: Path, monkeypatch) -> None:
    lock, state = threading.Lock(), {"active": 0, "most": 0, "prompts": []}

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                state["active"] += 1
                state["most"] = max(state["most"], state["active"])
                state["prompts"].append(body["messages"][0]["content"])

            threading.Event().wait(
                0.05
            )  # lets other requests arrive if sent (time.sleep is stubbed); nothing is timed
            with lock:
                state["active"] -= 1

            _reply(self, '{"score": 5, "reason": "ok"}')

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rows = [
        {
            "predict": f"Row {i}: cheeks up (AU6). <answer>happiness</answer>",
            "emotion": "happiness",
            "reference": "A smile.",
        }
        for i in range(6)
    ]
    predictions = tmp_path / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    judge = ["--judge-url", f"http://127.0.0.1:{server.server_port}/v1", "--judge-model", "stub"]
    try:
        args = ["eval", str(predictions), "--output-dir", str(tmp_path / "out"), *judge, "--judge-workers", "2"]
        assert main([*args, "--judge-key-env", "FEA_TEST_JUDGE_KEY"]) == 0
    finally:
        server.shutdown()
        server.server_close()

    assert 1 <= state["most"] <= 2
    assert len(state["prompts"]) == 6
    assert "judging" in terminal.getvalue()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["judge"]["mean"] == 5.0


def test_the_reference_protocol_judges_think_against_the_whole_answer(servers, fake_key, tmp_path: Path) -> None:
    judge, _ = servers
    prompts = []

    def record(handler: BaseHTTPRequestHandler) -> None:
        prompts.append(handler.body["messages"][0]["content"])
        _reply(handler, '{"score": 7, "reason": "close"}')

    judge.reply = record
    rows = [
        {
            "predict": "<think>Cheeks up (AU6).</think><answer>happiness</answer>",
            "label": "<think>A smile (AU12).</think><answer>happiness</answer>",
        },
        {"predict": "Just happiness.", "label": "<think>A smile (AU12).</think><answer>happiness</answer>"},
    ]
    predictions = tmp_path / "generated_predictions.jsonl"
    predictions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    url = f"http://127.0.0.1:{judge.server_port}/v1"
    judged = ["--judge-url", url, "--judge-model", "stub", "--judge-key-env", "FEA_TEST_JUDGE_KEY"]
    for protocol in ("reference", "strict"):
        out = tmp_path / protocol
        assert main(["eval", str(predictions), "--output-dir", str(out), "--protocol", protocol, *judged]) == 0
        assert json.loads((out / "metrics.json").read_text())["judge"]["inputs"] == protocol

    reference, strict = prompts[:2], prompts[2:]
    whole = "Reference description: <think>A smile (AU12).</think><answer>happiness</answer>"
    assert all(prompt.endswith(whole) for prompt in reference)
    assert sum("Model reasoning: \nReference" in prompt for prompt in reference) == 1  # no <think>: an empty text
    assert all(prompt.endswith("Reference description: A smile (AU12).") for prompt in strict)
    assert sum("Model reasoning: Just happiness.\n" in prompt for prompt in strict) == 1  # ours: the untagged output
