r"""The judge score: an OpenAI-compatible chat endpoint rates 1-10 how well `<think>` agrees with the reference.

Requests go through the official `openai` client (its retries with backoff, its timeouts), a bounded number at a
time, with a progress bar on a terminal. The API key goes to the configured origin (scheme, host and port) only: the
client's HTTP client follows no redirect (a redirect stops the evaluation), plain HTTP is refused for anything but
this machine unless asked for (`allow_http`), and the key is masked in every text that comes back from the judge.
An endpoint that cannot be reached after the retries, or that refuses the key, stops the evaluation with its URL.
"""

import ipaddress
import json
import os
import re
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
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
    r"""A judge that cannot serve: unsafe for the key (plain HTTP, a redirect), unreachable, or refusing the key."""


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
    retries: int = 3  # tries per pair: transport errors are retried by the client, unusable replies here
    backoff: float = 1.0
    allow_http: bool = False
    workers: int = 8  # requests in flight at once

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
    def base_url(self) -> str:
        r"""The client's base URL: the URL without a trailing `/chat/completions` (the client appends it)."""
        return self.url.rstrip("/").removesuffix("/chat/completions")

    @property
    def endpoint(self) -> str:
        r"""The chat completions URL (`/chat/completions` is appended to a base URL such as .../v1)."""
        return f"{self.base_url}/chat/completions"


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


def redact(text: str, key: str | None) -> str:
    r"""The text with the API key masked (a server may echo what it was sent).

    >>> redact("got Bearer sk-1234", "sk-1234")
    'got Bearer ***'
    """
    return text.replace(key, "***") if key else text


class Judge:
    r"""An `openai.OpenAI` client for one judge, built so that the key goes to the configured origin only."""

    def __init__(self, config: JudgeConfig) -> None:
        import httpx
        import openai

        self.config, self.key = config, os.environ.get(config.key_env) or None
        # follow_redirects=False: the client's own default follows them, which would send the prompts (and trust the
        # scores) of another address; httpx drops the key on a cross-origin redirect, but not the request.
        http_client = httpx.Client(follow_redirects=False, timeout=config.timeout)
        self.client = openai.OpenAI(
            api_key=self.key or "no-key",  # without a key no Authorization header is sent (`_extra_headers`)
            base_url=config.base_url,
            timeout=config.timeout,
            max_retries=max(config.retries - 1, 0),
            http_client=http_client,
        )
        self._extra_headers = None if self.key else {"Authorization": openai.Omit()}

    def fatal(self, error: Exception) -> JudgeError | None:
        r"""The `JudgeError` that stops the evaluation for an error every request would meet, else None."""
        import httpx
        import openai

        where = origin(self.config.url)
        if isinstance(error, openai.APIStatusError) and 300 <= error.status_code < 400:
            location = error.response.headers.get("location", "")
            target = origin(urllib.parse.urljoin(self.config.endpoint, location)) if location else "(none)"
            return JudgeError(
                f"The judge at {where} answered HTTP {error.status_code} with a redirect to {target}: the API key is "
                "sent to the configured address only. If you trust the new address, give it as --judge-url."
            )

        if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError)):
            return JudgeError(
                f"The judge at {where} refused the request (HTTP {error.status_code}): check the key in "
                f"${self.config.key_env} (--judge-key-env)."
            )

        if isinstance(error, openai.NotFoundError):
            return JudgeError(
                f"The judge at {self.config.endpoint} answered HTTP 404: check --judge-url (an OpenAI-compatible "
                f"base URL such as https://host/v1) and --judge-model {self.config.model!r}."
            )

        unreachable = isinstance(error, openai.APIConnectionError) and (
            not isinstance(error, openai.APITimeoutError) or isinstance(error.__cause__, httpx.ConnectTimeout)
        )
        if unreachable:
            cause = type(error.__cause__ or error).__name__
            return JudgeError(
                f"The judge at {self.config.endpoint} could not be reached after {max(self.config.retries, 1)} tries "
                f"({cause}): check --judge-url and that the server is up."
            )

        return None

    def ask(self, prompt: str) -> str:
        r"""One chat completion (the client retries transport errors, 408/409/429 and 5xx); returns the reply text."""
        reply = self.client.chat.completions.create(
            model=self.config.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0.0,
            max_tokens=128,
            extra_headers=self._extra_headers,
        )
        return reply.choices[0].message.content or ""

    def score(self, reasoning: str, reference: str) -> dict[str, Any]:
        r"""Score one pair; a pair that never gets a valid score is returned with score None and why."""
        import openai

        prompt = JUDGE_PROMPT.format(reasoning=reasoning, reference=reference)
        problem = ""
        for attempt in range(max(self.config.retries, 1)):
            try:
                parsed = parse_score(self.ask(prompt))
            except openai.OpenAIError as error:
                fatal = self.fatal(error)
                if fatal is not None:
                    raise fatal from None

                status = getattr(error, "status_code", None)  # the client has already retried this one
                return {"score": None, "reason": f"HTTP {status}" if status else type(error).__name__}
            except (AttributeError, IndexError, TypeError, ValueError) as error:  # a reply of another shape
                problem = type(error).__name__
            else:
                if parsed:
                    return {"score": parsed[0], "reason": redact(parsed[1], self.key)}

                problem = "reply without a valid score"

            if attempt + 1 < self.config.retries:
                time.sleep(self.config.backoff * (attempt + 1))

        return {"score": None, "reason": problem}


def summarise(config: JudgeConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    r"""The judge's figures under both protocols: ours excludes failed pairs (and counts them), the reference's
    counts them 0."""
    scores = [result["score"] for result in results if result["score"] is not None]
    return {
        "model": config.model,
        "pairs": len(results),
        "scored": len(scores),
        "failed": len(results) - len(scores),
        "mean": sum(scores) / len(scores) if scores else None,
        "mean_failures_as_zero": sum(scores) / len(results) if results else None,
        "results": results,
    }


def judge(
    config: JudgeConfig, reasonings: Sequence[str], references: Sequence[str], description: str = "judging"
) -> dict[str, Any]:
    r"""Judge every pair, `config.workers` at a time, with a progress bar; a `JudgeError` stops all of them."""
    from tqdm import tqdm

    client = Judge(config)
    results: list[dict[str, Any] | None] = [None] * len(reasonings)
    pool = ThreadPoolExecutor(max_workers=max(config.workers, 1))
    futures = {
        pool.submit(client.score, reasoning, reference): index
        for index, (reasoning, reference) in enumerate(zip(reasonings, references))
    }
    try:
        with tqdm(total=len(futures), desc=description, unit="pair", disable=None, leave=False) as bar:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    results[futures[future]] = future.result()  # raises the JudgeError of a fatal reply
                    bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        client.client.close()

    return summarise(config, [result for result in results if result is not None])
