"""Integration tests for multiclust.refwords: the real `openai` client against a real local HTTP server
speaking the chat-completions API on 127.0.0.1, the shipped cache, atomic refresh, and the key never leaking."""
import json, logging, os, secrets, shutil, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from multiclust import refwords as rw
from multiclust.refwords import LLMError, build_prompt, load_cache, make_client, query_llm, reference_words

ENV = ["OPENAI_API_KEY", "OPENAI_BASE_URL", "MULTICLUST_LLM_MODEL", "MULTICLUST_REFWORDS", "MULTICLUST_WORDNET_DIR",
       "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"]
WORDS32 = [f"Shade{i} " for i in range(32)]      # normalised to 'shade0' ...
MAX_SLEEP = 2.0                                   # the server never sleeps longer than this


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in ENV: monkeypatch.delenv(k, raising=False)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *a): pass              # keep test output quiet

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if code == 429: self.send_header("Retry-After", "0")
        self.end_headers()
        try: self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError): pass   # the client gave up (timeout test)

    def do_POST(self):
        srv = self.server
        n = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(n) or b"{}")
        with srv.lock:
            srv.requests.append({"path": self.path, "json": req, "auth": self.headers.get("Authorization")})
            action = srv.script.pop(0) if srv.script else ("status", 500, "script exhausted")
        kind = action[0]
        if kind == "sleep":
            time.sleep(min(action[1], MAX_SLEEP)); kind, action = "reply", ("reply", action[2])
        if kind == "reply":
            self._send(200, {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                             "model": srv.model_name, "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": action[1]}}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        else:
            code, msg = action[1], action[2] if len(action) > 2 else "error"
            self._send(code, {"error": {"message": msg, "type": "test_error", "code": code}})


@pytest.fixture
def server():
    "A chat-completions server on 127.0.0.1 (ephemeral port) answering from `server.script`, stopped after the test."
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads, srv.block_on_close = True, False
    srv.script, srv.requests, srv.lock, srv.model_name = [], [], threading.Lock(), "test-model-0613"
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown(); srv.server_close(); t.join(timeout=5)


def client_for(srv, key="sk-test-key", timeout=5.0):
    return make_client(timeout=timeout, api_key=key, base_url=srv.url)


@pytest.fixture
def cache_copy(tmp_path):
    "A scratch copy of the shipped cache."
    p = tmp_path / "reference_words.json"
    shutil.copy(rw.default_cache_path(), p)
    return p


# ---------------------------------------------------------------- the LLM step against a real server
def test_good_answer(server):
    server.script = [("reply", json.dumps(WORDS32 + ["shade0", "SHADE1"]))]
    r = query_llm("fruit", "color", 32, client=client_for(server), model="my-model")
    assert r.words == [f"shade{i}" for i in range(32)]             # normalised, deduplicated
    assert (r.source, r.model, r.prompt) == ("llm", "test-model-0613", build_prompt("fruit", "color", 32))
    assert r.note == f"queried {server.url.rsplit('/', 1)[0]}"
    [req] = server.requests
    assert req["path"] == "/v1/chat/completions" and req["json"]["model"] == "my-model"
    assert req["json"]["messages"][1] == {"role": "user", "content": build_prompt("fruit", "color", 32)}
    assert req["auth"] == "Bearer sk-test-key"


def test_env_configures_client_model_and_refresh(server, cache_copy, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("MULTICLUST_LLM_MODEL", "env-model")
    before = load_cache(cache_copy)["entries"]
    server.script = [("reply", json.dumps(WORDS32))]
    r = reference_words("cars", "type", refresh=True, cache=cache_copy, backoff=0)
    assert server.requests[0]["json"]["model"] == "env-model" and server.requests[0]["auth"] == "Bearer sk-env-key"
    assert r.source == "llm" and r.words == [f"shade{i}" for i in range(12)] and len(r.candidates) == 32
    after = load_cache(cache_copy)["entries"]
    assert after["cars/type"]["source"] == "llm" and after["cars/type"]["model"] == "test-model-0613"
    assert after["cars/type"]["prompt"] == build_prompt("car", "type", 32)
    assert {k: v for k, v in after.items() if k != "cars/type"} == {k: v for k, v in before.items() if k != "cars/type"}
    assert sorted(os.listdir(cache_copy.parent)) == [cache_copy.name]     # atomic: no temporary file left
    # the refreshed entry is now what a plain call returns, without any request
    assert reference_words("cars", "type", cache=cache_copy).words == r.words and len(server.requests) == 1


def test_local_server_without_key(server):
    "OPENAI_BASE_URL alone (a local server) is enough: a placeholder key is sent."
    server.script = [("reply", json.dumps(WORDS32))]
    r = query_llm("fruit", "color", 32, client=make_client(base_url=server.url), backoff=0)
    assert len(r.words) == 32 and server.requests[0]["auth"] == "Bearer no-key-local-server"


def test_malformed_then_good(server):
    server.script = [("reply", "Sure, here are some colours: red, green."), ("reply", "```json\n" + json.dumps(WORDS32) + "\n```")]
    r = query_llm("fruit", "color", 32, client=client_for(server), backoff=0)
    assert len(r.words) == 32 and len(server.requests) == 2


def test_malformed_always_is_a_clear_error(server):
    server.script = [("reply", "no list here"), ("reply", '{"colors": ["red"], "n": 1}'), ("reply", '["only", "three", "words"]')]
    with pytest.raises(LLMError) as e:
        query_llm("fruit", "color", 32, client=client_for(server), retries=2, backoff=0)
    msg = str(e.value)
    assert "after 3 attempts" in msg and "'fruit'" in msg and "'color'" in msg
    assert "no JSON list" in msg and "list of strings" in msg and "only 3 valid words" in msg
    assert len(server.requests) == 3


@pytest.mark.parametrize("codes", [[429, 429], [500, 503], [429, 502]])
def test_rate_limit_and_server_errors_are_retried_with_backoff(server, codes):
    server.script = [("status", c, f"transient {c}") for c in codes] + [("reply", json.dumps(WORDS32))]
    t0 = time.monotonic()
    r = query_llm("fruit", "color", 32, client=client_for(server), retries=3, backoff=0.05)
    took = time.monotonic() - t0
    assert len(r.words) == 32 and len(server.requests) == 3
    assert took >= 0.05 + 0.10 - 0.01                                    # backoff * (1 + 2) was waited


def test_retries_exhausted(server):
    server.script = [("status", 429, "slow down")] * 2 + [("status", 500, "boom")]
    with pytest.raises(LLMError) as e:
        query_llm("fruit", "color", 32, client=client_for(server), retries=2, backoff=0.001)
    assert "after 3 attempts" in str(e.value) and "RateLimitError" in str(e.value) and "InternalServerError" in str(e.value)
    assert len(server.requests) == 3


def test_auth_error_is_not_retried(server):
    server.script = [("status", 401, "Incorrect API key provided")]
    with pytest.raises(LLMError) as e:
        query_llm("fruit", "color", 32, client=client_for(server), retries=3, backoff=0)
    assert "HTTP 401" in str(e.value) and len(server.requests) == 1


def test_timeout(server):
    server.script = [("sleep", 1.5, json.dumps(WORDS32))] * 2
    t0 = time.monotonic()
    with pytest.raises(LLMError) as e:
        query_llm("fruit", "color", 32, client=client_for(server, timeout=0.3), retries=1, backoff=0)
    assert "APITimeoutError" in str(e.value) and "after 2 attempts" in str(e.value)
    assert time.monotonic() - t0 < 1.5 * 2                                  # the client did not wait for the server


def test_tokenize_check_is_applied(server):
    server.script = [("reply", json.dumps(["red", "zzq", "green", "blue"]))]
    r = query_llm("fruit", "color", 4, client=client_for(server), tokenize_check=lambda w: w != "zzq", backoff=0)
    assert r.words == ["red", "green", "blue"]


# ---------------------------------------------------------------- no key / no cache
def test_no_key_and_no_cache_says_how_to_get_words(tmp_path):
    with pytest.raises(LLMError) as e:
        reference_words("fruit", "color", cache=tmp_path / "missing.json")
    msg = str(e.value)
    for s in ["fruit/color", "OPENAI_API_KEY", "OPENAI_BASE_URL", "shipped cache", "words="]: assert s in msg, s
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        query_llm("fruit", "color")
    assert not (tmp_path / "missing.json").exists()


def test_no_key_refresh_is_a_clear_error(cache_copy):
    with pytest.raises(LLMError, match="refresh=True needs an LLM"):
        reference_words("fruit", "color", refresh=True, cache=cache_copy)


def test_no_key_uses_shipped_cache_and_words_arg():
    r = reference_words("fruit", "color")
    assert r.source == "authored" and len(r.words) == 12 and r.words[:3] == ["red", "yellow", "green"]
    u = reference_words("fruit", "color", words=["Crimson", "crimson", "Olive"])
    assert (u.words, u.source) == (["crimson", "olive"], "user")


def test_cache_env_override(cache_copy, monkeypatch):
    monkeypatch.setenv("MULTICLUST_REFWORDS", str(cache_copy))
    assert rw.default_cache_path() == cache_copy
    rw.save_entry("fruit/color", {**load_cache(cache_copy)["entries"]["fruit/color"], "words": ["teal", "mauve"]})
    assert reference_words("fruit", "color").words == ["teal", "mauve"]


# ---------------------------------------------------------------- the key never leaks
def test_key_never_in_cache_logs_or_errors(server, cache_copy, monkeypatch, caplog, capsys):
    key = "sk-SECRET-" + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_LOG", "debug")
    caplog.set_level(logging.DEBUG)                       # every logger, openai's and httpx's included
    server.script = [("status", 500, "flaky"), ("reply", json.dumps(WORDS32)),
                     ("status", 401, f"Incorrect API key provided: {key}")]   # a server that echoes the key
    r = reference_words("flowers", "color", refresh=True, cache=cache_copy, backoff=0)
    assert r.source == "llm" and server.requests[0]["auth"] == f"Bearer {key}"   # the key was really used
    with pytest.raises(LLMError) as e:
        reference_words("flowers", "species", refresh=True, cache=cache_copy, backoff=0)
    out = capsys.readouterr()
    assert caplog.records, "expected log records to check"
    assert "refwords: asking" in caplog.text
    for where, text in [("cache", cache_copy.read_text()), ("log", caplog.text), ("stdout", out.out),
                        ("stderr", out.err), ("error", str(e.value)), ("result", repr(r))]:
        assert key not in text, f"API key leaked into {where}"
    assert "***" in str(e.value)


# ---------------------------------------------------------------- the shipped cache
def _registry():
    from multiclust.data import REGISTRY
    return REGISTRY


def test_shipped_cache_covers_every_dataset_and_concept():
    entries = load_cache(rw.default_cache_path())["entries"]
    for ds, spec in _registry().items():
        for c, cs in spec.concepts.items():
            key = f"{ds}/{c}"
            assert key in entries, f"no reference words for {key} in the shipped cache"
            e = entries[key]
            assert e["source"] in ("authored", "llm", "wordnet-random"), key
            assert e["object"] == spec.object_word and e["concept"] == c, key
            assert rw.validate_words(e["words"], strict=True) == e["words"], f"{key}: words not normalised/unique"
            assert len(e["words"]) >= min(4 * cs.n_clusters, rw.N_CANDIDATES), key
            assert 10 <= e["n_base"] <= 15, key
            if e["source"] == "authored":
                assert e["model"] is None and "no API key" in e["note"] and "Not an LLM output" in e["note"], key
                assert e["prompt"] == build_prompt(spec.object_word, c, len(e["words"])), key
                assert e["n_base"] >= cs.n_clusters, key
            if e["source"] == "llm": assert e["model"], key


def test_identity_uses_seeded_wordnet_nouns(cache_copy):
    e = load_cache(cache_copy)["entries"]["cmuface/identity"]
    assert e["source"] == "wordnet-random" and e["seed"] == 0 and e["n_base"] == 10
    assert e["words"] == rw.random_nouns(32, seed=0)
    r = reference_words("cmuface", "identity", refresh=True, cache=cache_copy)   # no LLM needed
    assert r.words == rw.random_nouns(10, 0) and load_cache(cache_copy)["entries"]["cmuface/identity"]["words"] == e["words"]


def test_random_nouns_control():
    a = rw.random_nouns(10, seed=3)
    assert len(set(a)) == 10 and a == rw.random_nouns(10, seed=3) and a != rw.random_nouns(10, seed=4)
    assert rw.random_nouns(40, seed=3)[:10] == a
    assert len(rw.wordnet_nouns()) > 5000


def test_wordnet_dir_override_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MULTICLUST_WORDNET_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="index.noun"):
        rw.random_nouns(10)


# ---------------------------------------------------------------- bad input
def test_corrupt_cache_is_named(tmp_path):
    p = tmp_path / "rw.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="rw.json"):
        reference_words("fruit", "color", cache=p)
    p.write_text(json.dumps({"format": "other/9", "entries": {}}))
    with pytest.raises(ValueError, match="format"):
        load_cache(p)


def test_too_many_words_requested():
    with pytest.raises(ValueError, match=r"fruit/color: 100 words requested but only 32"):
        reference_words("fruit", "color", n=100)
    assert reference_words("fruit", "color", n=32).words == reference_words("fruit", "color").candidates


def test_bad_user_words_are_named():
    with pytest.raises(ValueError, match="'#'"):
        reference_words("fruit", "color", words=["red", "#"])
    with pytest.raises(ValueError, match="key must be"):
        rw.save_entry("fruit-color", {}, "/nonexistent/x.json")


def test_wordnet_hyponyms_without_a_key(monkeypatch):
    from multiclust.refwords import wordnet_hyponyms, user_reference_words
    monkeypatch.delenv('OPENAI_API_KEY', raising=False); monkeypatch.delenv('OPENAI_BASE_URL', raising=False)
    r = user_reference_words('emotion')
    assert r.source == 'wordnet-hyponyms' and 'synset 07480068-n' in r.note
    assert {'fear', 'anger', 'joy', 'love'} <= set(r.words) and 2 <= len(r.words) <= 12 and 'emotion' not in r.words
    assert wordnet_hyponyms('color', n=4).words == wordnet_hyponyms('color').words[:4]
    with pytest.raises(LLMError, match='--words'):
        user_reference_words('qwzx')
