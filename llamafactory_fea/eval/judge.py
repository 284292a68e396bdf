r"""The judge score: an OpenAI-compatible chat endpoint rates 1-10 how well `<think>` agrees with the reference.

The API key goes to the configured origin (scheme, host and port) only: a redirect is refused, not followed, and
plain HTTP is refused for anything but this machine unless asked for (`allow_http`).
"""

import ipaddress
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


JUDGE_PROMPT = (
    "You compare two descriptions of the same face. Rate from 1 to 10 how well the model's reasoning agrees with "
    "the reference description: the facial movements (action units) it names and the emotion it concludes. "
    "10 means the same observations and conclusion, 1 means unrelated or contradictory.\n"
    'Reply with JSON only: {{"score": <integer 1-10>, "reason": "<one short sentence>"}}\n'
    "Model reasoning: {reasoning}\n"
    "Reference description: {reference}"
)
JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


class JudgeError(Exception):
    r"""A judge endpoint the key must not be sent to (plain HTTP off this machine, a redirect): stops the evaluation."""


def origin(url: str) -> str:
    r"""The scheme, host and port of a URL, without credentials, path or query (what messages may show).

    >>> origin("https://user:secret@api.example.com/v1?x=1")
    'https://api.example.com'
    """
    parts = urllib.parse.urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""

    return f"{parts.scheme}://{host}{port}"


def _is_loopback(host: str) -> bool:
    r"""Whether a host name is this machine (`localhost`, 127.0.0.0/8, ::1), without asking DNS."""
    if host == "localhost" or host.endswith(".localhost"):
        return True

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class JudgeConfig:
    r"""Where the judge is and how to call it; the key is read from `key_env` at call time and never stored."""

    url: str
    model: str
    key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    allow_http: bool = False

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise JudgeError("--judge-url must start with https:// (http:// for this machine), e.g. https://host/v1.")

        if parts.username is not None or parts.password is not None:
            raise JudgeError(
                f"--judge-url {origin(self.url)} holds credentials: put the key in the environment variable named "
                "by --judge-key-env instead, never in the URL."
            )

        if parts.scheme == "http" and not self.allow_http and not _is_loopback(parts.hostname):
            raise JudgeError(
                f"--judge-url {origin(self.url)} is plain HTTP to another machine: the API key would cross the "
                "network unencrypted. Use https://, or pass --judge-allow-http if that network is yours."
            )

    @property
    def endpoint(self) -> str:
        r"""The chat completions URL (`/chat/completions` is appended to a base URL such as .../v1)."""
        url = self.url.rstrip("/")
        return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


def parse_score(content: str) -> tuple[int, str] | None:
    r"""The (score, reason) of a judge reply holding `{"score": n, "reason": ...}` with 1 <= n <= 10, else None.

    >>> parse_score('Sure: {"score": 7, "reason": "close"}')
    (7, 'close')
    """
    match = JSON_OBJECT.search(content or "")
    try:
        data = json.loads(match.group(0)) if match else None
        score = int(data["score"])
    except (ValueError, TypeError, KeyError):
        return None

    return (score, str(data.get("reason", ""))) if 1 <= score <= 10 else None


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    r"""Refuse every redirect: following one would send the key (and trust the scores) of another address."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        fp.close()
        raise JudgeError(
            f"The judge at {origin(req.full_url)} answered HTTP {code} with a redirect to "
            f"{origin(urllib.parse.urljoin(req.full_url, newurl))}: the API key is sent to the configured address "
            "only. If you trust the new address, give it as --judge-url."
        )


def _ask(config: JudgeConfig, prompt: str) -> str:
    r"""One chat completion request; returns the reply text. The key goes in a header only, never in errors."""
    body = {
        "model": config.model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0.0,
        "max_tokens": 128,
    }
    headers = {"Content-Type": "application/json"}
    key = os.environ.get(config.key_env)
    if key:
        headers["Authorization"] = f"Bearer {key}"

    request = urllib.request.Request(config.endpoint, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.build_opener(_RefuseRedirects).open(request, timeout=config.timeout) as response:
        reply = json.loads(response.read().decode("utf-8"))

    return reply["choices"][0]["message"]["content"]


def judge_one(config: JudgeConfig, reasoning: str, reference: str) -> dict[str, Any]:
    r"""Score one pair with retries; a pair that never gets a valid score is returned with score None and why."""
    prompt = JUDGE_PROMPT.format(reasoning=reasoning, reference=reference)
    problem = ""
    for attempt in range(config.retries):
        try:
            parsed = parse_score(_ask(config, prompt))
        except urllib.error.HTTPError as error:
            problem = f"HTTP {error.code}"
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError, TypeError) as error:
            problem = type(error).__name__
        else:
            if parsed:
                return {"score": parsed[0], "reason": parsed[1]}

            problem = "reply without a valid score"

        if attempt + 1 < config.retries:
            time.sleep(config.backoff * (attempt + 1))

    return {"score": None, "reason": problem}


def judge(config: JudgeConfig, reasonings: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    r"""Judge every pair; the mean is over pairs that got a score, failures are counted (not scored 0)."""
    results = [judge_one(config, reasoning, reference) for reasoning, reference in zip(reasonings, references)]
    scores = [result["score"] for result in results if result["score"] is not None]
    return {
        "model": config.model,
        "pairs": len(results),
        "scored": len(scores),
        "failed": len(results) - len(scores),
        "mean": sum(scores) / len(scores) if scores else None,
        "results": results,
    }
