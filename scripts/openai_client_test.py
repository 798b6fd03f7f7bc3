#!/usr/bin/env python3
"""Checks a deai gateway with the unmodified `openai` package from PyPI.

Usage: python3 scripts/openai_client_test.py [GATEWAY [API_KEY [MODEL]]]

GATEWAY is the gateway's base URL with or without the trailing /v1 (devnet.json's
"gateway" field, or the `gateway:` line `deai devnet` prints); API_KEY is its `api key:`.
Each may come from the environment instead (DEAI_GATEWAY, DEAI_API_KEY, DEAI_MODEL); the
model defaults to SmolLM2-135M-Instruct (devnet.json's "model").

Prints one line per check and exits nonzero if any check failed.
"""

import json
import os
import sys
import time
import traceback
import urllib.parse
import urllib.request

# Requests to the gateway go to loopback: bypass any HTTP proxy the host sets (CI machines
# reach the internet through one). Set before any client is created.
_LOOPBACK = ["127.0.0.1", "localhost", "::1"]
for _var in ("NO_PROXY", "no_proxy"):
    _have = [h for h in os.environ.get(_var, "").split(",") if h.strip()]
    os.environ[_var] = ",".join(_have + [h for h in _LOOPBACK if h not in _have])

import openai  # noqa: E402  (after the proxy settings on purpose)
from openai import OpenAI  # noqa: E402

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
FAILURES = []


def check(name, fn):
    """Runs one check; prints `ok` or `FAIL` with the reason. Returns fn's result or None."""
    t0 = time.monotonic()
    try:
        result, detail = fn()
    except Exception as e:  # noqa: BLE001 (a failed check of any kind is reported)
        FAILURES.append(name)
        msg = str(e) if isinstance(e, AssertionError) else f"{type(e).__name__}: {e}"
        if e.__cause__ is not None:
            msg += f" (caused by {type(e.__cause__).__name__}: {e.__cause__})"
        print(f"FAIL {name}: {msg}", flush=True)
        if not isinstance(e, (AssertionError, openai.APIError)):
            traceback.print_exc(file=sys.stdout)  # a bug in this script, or a client crash
        sys.stdout.flush()
        return None
    print(f"ok   {name} ({time.monotonic() - t0:.2f} s){': ' + detail if detail else ''}", flush=True)
    return result


def main():
    args = sys.argv[1:]
    gateway = args[0] if len(args) > 0 else os.environ.get("DEAI_GATEWAY")
    api_key = args[1] if len(args) > 1 else os.environ.get("DEAI_API_KEY")
    want = (args[2] if len(args) > 2 else os.environ.get("DEAI_MODEL")) or DEFAULT_MODEL
    if not gateway or not api_key:
        print(__doc__, file=sys.stderr)
        print("error: need the gateway URL and the API key (argv or DEAI_GATEWAY/DEAI_API_KEY)",
              file=sys.stderr)
        return 2
    root = gateway.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    base_url = root + "/v1"
    print(f"openai {openai.__version__}; gateway {base_url}", flush=True)

    # No retries: a retried request would hide a failure (and open a second paid job).
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=600)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- models.list ---------------------------------------------------------------------
    def models():
        ids = [m.id for m in client.models.list()]
        assert ids, "GET /v1/models listed no model"
        assert want in ids, f"model {want!r} not in /v1/models: {ids}"
        return want, f"{ids}"

    model = check("models.list() contains the model", models)
    if model is None:
        print("cannot go on without a model", flush=True)
        return 1

    messages = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    request = dict(model=model, messages=messages, seed=42, max_tokens=32, temperature=0)

    # --- non-streaming chat ---------------------------------------------------------------
    def chat():
        raw = client.chat.completions.with_raw_response.create(**request)
        receipt_id = raw.headers.get("x-deai-receipt")
        r = raw.parse()
        assert receipt_id, f"no x-deai-receipt header; headers: {dict(raw.headers)}"
        assert r.choices, f"no choices in {r}"
        c = r.choices[0]
        text = c.message.content
        assert text and text.strip(), f"empty answer: {r}"
        assert c.message.role == "assistant", f"role {c.message.role!r}"
        assert c.finish_reason in ("stop", "length"), f"finish_reason {c.finish_reason!r}"
        assert r.usage is not None, f"no usage in {r}"
        assert r.usage.prompt_tokens > 0, f"usage.prompt_tokens {r.usage.prompt_tokens}"
        assert r.usage.completion_tokens > 0, f"usage.completion_tokens {r.usage.completion_tokens}"
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, \
            f"usage.total_tokens {r.usage.total_tokens} != prompt + completion in {r.usage}"
        assert r.usage.completion_tokens <= 32, \
            f"{r.usage.completion_tokens} completion tokens with max_tokens=32"
        deai = (r.model_extra or {}).get("deai")
        assert isinstance(deai, dict), f"no `deai` field in the answer: {r}"
        assert deai.get("receipt_id") == receipt_id, \
            f"deai.receipt_id {deai.get('receipt_id')!r} != header {receipt_id!r}"
        return (text, receipt_id), (f"{c.finish_reason}, {r.usage.prompt_tokens}+"
                                    f"{r.usage.completion_tokens} tokens, receipt {receipt_id[:16]}…, "
                                    f"text {text!r}")

    chat_result = check("chat.completions.create (stream=false, seed=42, temperature=0)", chat)

    # --- streaming chat -------------------------------------------------------------------
    def chat_stream():
        pieces, finish, usage, deai, n = [], None, None, None, 0
        for chunk in client.chat.completions.create(**request, stream=True):
            n += 1
            assert chunk.object == "chat.completion.chunk", f"chunk object {chunk.object!r}"
            for c in chunk.choices:
                if c.delta and c.delta.content:
                    pieces.append(c.delta.content)
                if c.finish_reason is not None:
                    assert finish is None, f"two finish_reasons: {finish!r}, {c.finish_reason!r}"
                    finish = c.finish_reason
            if chunk.usage is not None:
                usage = chunk.usage
            if (chunk.model_extra or {}).get("deai"):
                deai = chunk.model_extra["deai"]
        text = "".join(pieces)
        assert text.strip(), f"empty streamed answer ({n} chunks)"
        assert finish in ("stop", "length"), f"stream ended without a finish_reason (last {finish!r})"
        assert usage is not None and usage.completion_tokens > 0, f"final chunk usage {usage}"
        assert isinstance(deai, dict) and deai.get("receipt_id"), f"no `deai` in the final chunk: {deai}"
        if chat_result is not None:
            assert text == chat_result[0], \
                f"streamed text differs from the non-streaming one:\n  stream: {text!r}\n  plain:  {chat_result[0]!r}"
        else:
            raise AssertionError("the non-streaming check failed, nothing to compare with")
        return (text, deai["receipt_id"]), f"{n} chunks, {finish}, same text, receipt {deai['receipt_id'][:16]}…"

    stream_result = check("chat.completions.create (stream=true) gives the same text", chat_stream)

    # --- legacy completions ---------------------------------------------------------------
    def completions():
        r = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8)
        assert r.choices, f"no choices in {r}"
        text = r.choices[0].text
        assert text and text.strip(), f"empty completion: {r}"
        assert r.choices[0].finish_reason in ("stop", "length"), f"finish_reason {r.choices[0].finish_reason!r}"
        assert r.usage is not None and 0 < r.usage.completion_tokens <= 8, f"usage {r.usage}"
        return text, repr(text)

    completion_text = check("completions.create (legacy endpoint)", completions)

    def completions_echo():
        prompt = "The capital of France is"
        r = client.completions.create(model=model, prompt=prompt, max_tokens=8, echo=True,
                                      temperature=0, seed=42)
        text = r.choices[0].text
        assert completion_text is not None, "the plain completion check failed, nothing to compare"
        assert text == prompt + completion_text, f"echo: {text!r}, expected the prompt + {completion_text!r}"
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model=model, prompt=prompt, max_tokens=8, echo=True, temperature=0, seed=42,
            stream=True) if c.choices)
        assert streamed == text, f"streamed echo {streamed!r} != {text!r}"
        return None, repr(text)

    check("completions.create (echo=True, streamed and not)", completions_echo)

    # --- logprobs -------------------------------------------------------------------------
    def chat_logprobs():
        r = client.chat.completions.create(**request, logprobs=True, top_logprobs=3)
        c = r.choices[0]
        assert c.logprobs is not None and c.logprobs.content, f"no logprobs.content in {r}"
        content = c.logprobs.content
        text = b"".join(bytes(t.bytes) for t in content).decode("utf-8")
        assert text == c.message.content, \
            f"the logprob tokens spell {text!r}, the answer is {c.message.content!r}"
        if chat_result is not None:
            assert c.message.content == chat_result[0], "asking for logprobs changed the answer"
        for i, t in enumerate(content):
            assert t.logprob <= 0.0, f"token {i}: logprob {t.logprob} > 0"
            assert len(t.top_logprobs) == 3, f"token {i}: {len(t.top_logprobs)} alternatives"
            lps = [a.logprob for a in t.top_logprobs]
            assert lps == sorted(lps, reverse=True), f"token {i}: alternatives not sorted: {lps}"
            # temperature=0 picks the most likely token.
            assert t.token == t.top_logprobs[0].token and t.logprob == lps[0], \
                f"token {i}: greedy pick {t.token!r} ({t.logprob}) is not the top {t.top_logprobs[0]}"
        return content, f"{len(content)} tokens, first {content[0].token!r} {content[0].logprob:.3f}"

    chat_lp = check("chat.completions.create (logprobs=True, top_logprobs=3)", chat_logprobs)

    def chat_logprobs_stream():
        got = []
        for chunk in client.chat.completions.create(**request, logprobs=True, top_logprobs=3,
                                                    stream=True):
            for c in chunk.choices:
                if c.logprobs is not None and c.logprobs.content:
                    got.extend(c.logprobs.content)
        assert chat_lp is not None, "the non-streaming logprobs check failed, nothing to compare"
        assert [(t.token, t.logprob) for t in got] == [(t.token, t.logprob) for t in chat_lp], \
            "streamed logprobs differ from the non-streaming ones"
        return None, f"{len(got)} tokens, same as non-streaming"

    check("chat.completions.create (logprobs, stream=true) gives the same logprobs",
          chat_logprobs_stream)

    def completion_logprobs():
        r = client.completions.create(model=model, prompt="The capital of France is",
                                      max_tokens=8, logprobs=2, temperature=0)
        c = r.choices[0]
        lp = c.logprobs
        assert lp is not None and lp.tokens, f"no logprobs in {r}"
        n = len(lp.tokens)
        assert len(lp.token_logprobs) == n and len(lp.top_logprobs) == n and len(lp.text_offset) == n, \
            f"uneven logprob lists: {lp}"
        assert "".join(lp.tokens) == c.text, f"tokens {lp.tokens} do not spell {c.text!r}"
        assert all(len(t) <= 2 for t in lp.top_logprobs), f"more than 2 alternatives: {lp.top_logprobs}"
        assert lp.text_offset == sorted(lp.text_offset), f"offsets {lp.text_offset}"
        assert lp.text_offset[0] == len("The capital of France is"), \
            f"offsets count from the prompt's start: {lp.text_offset}"
        return None, f"{n} tokens, {lp.tokens[:3]}"

    check("completions.create (logprobs=2)", completion_logprobs)

    # --- logit_bias and penalties: part of the replayed sampler, signed in the receipt ------
    def receipt_of(receipt_id):
        url = f"{root}/v1/receipts/{urllib.parse.quote(receipt_id)}"
        with direct.open(url, timeout=30) as resp:
            return json.loads(resp.read()).get("receipt") or {}

    def adjusted():
        assert chat_result is not None, "the plain chat check failed, nothing to compare with"
        first = receipt_of(chat_result[1])["output_tokens"][0]
        raw = client.chat.completions.with_raw_response.create(
            **request, logit_bias={str(first): -100}, presence_penalty=1.0,
            frequency_penalty=0.5)
        r = raw.parse()
        receipt_id = raw.headers.get("x-deai-receipt")
        text = r.choices[0].message.content
        rec = receipt_of(receipt_id)
        assert rec.get("version") == 2, f"receipt version {rec.get('version')!r}, expected 2"
        s = rec.get("sampling") or {}
        assert s.get("logit_bias") == [[first, -100.0]], f"receipt sampling {s}"
        assert s.get("presence_penalty") == 1.0 and s.get("frequency_penalty") == 0.5, f"{s}"
        assert rec["output_tokens"][0] != first, \
            f"token {first} was banned with -100 but came first: {rec['output_tokens']}"
        assert text != chat_result[0], "the banned first token left the answer unchanged"
        return receipt_id, f"first token {first} banned; text {text!r}"

    adjusted_id = check("chat.completions.create (logit_bias bans the greedy first token, "
                        "presence/frequency penalties)", adjusted)

    def json_mode():
        raw = client.chat.completions.with_raw_response.create(
            model=model, seed=42, max_tokens=80, temperature=0,
            messages=[{"role": "user", "content":
                       "Give the capital of France as a JSON object with the key \"capital\"."}],
            response_format={"type": "json_object"})
        r = raw.parse()
        c = r.choices[0]
        text = c.message.content
        assert text.lstrip().startswith("{"), f"JSON mode answer does not open an object: {text!r}"
        if c.finish_reason == "stop":
            value = json.loads(text)
            assert isinstance(value, dict), f"not an object: {text!r}"
        else:
            assert c.finish_reason == "length", f"finish_reason {c.finish_reason!r}"
        rec = receipt_of(raw.headers.get("x-deai-receipt"))
        assert rec.get("version") == 2 and (rec.get("sampling") or {}).get("json_object") is True, \
            f"receipt does not sign the grammar: version {rec.get('version')}, {rec.get('sampling')}"
        return raw.headers.get("x-deai-receipt"), f"{c.finish_reason}: {text!r}"

    json_id = check("chat.completions.create (response_format json_object)", json_mode)

    # --- structured outputs and tools (schema grammars, signed in the receipt) ------------
    from pydantic import BaseModel  # openai's own dependency

    class City(BaseModel):
        name: str
        country: str
        population: int

    def structured():
        raw = client.chat.completions.with_raw_response.parse(
            model=model, seed=42, max_tokens=60, temperature=0,
            messages=[{"role": "user", "content": "Describe Paris: its name, country and population."}],
            response_format=City)
        r = raw.parse()
        c = r.choices[0]
        assert c.finish_reason == "stop", f"finish_reason {c.finish_reason!r}: {c.message.content!r}"
        city = c.message.parsed
        assert isinstance(city, City), f"parsed {city!r} from {c.message.content!r}"
        keys = list(json.loads(c.message.content))
        assert keys == ["name", "country", "population"], f"keys {keys} (schema order expected)"
        rec = receipt_of(raw.headers.get("x-deai-receipt"))
        schema = (rec.get("sampling") or {}).get("json_schema")
        want = '{"object":[["name","string"],["country","string"],["population","integer"]]}'
        assert rec.get("version") == 2 and schema == want, \
            f"receipt does not sign the schema: version {rec.get('version')}, {schema!r}"
        return raw.headers.get("x-deai-receipt"), f"{c.message.content}"

    schema_id = check("chat.completions.parse (response_format: a pydantic model, strict "
                      "json_schema)", structured)

    class Trip(BaseModel):
        city: City
        days: int

    def nested():
        r = client.chat.completions.parse(
            model=model, seed=7, max_tokens=80, temperature=0,
            messages=[{"role": "user", "content": "Plan a short trip to Rome."}],
            response_format=Trip)
        c = r.choices[0]
        assert c.finish_reason == "stop", f"finish_reason {c.finish_reason!r}: {c.message.content!r}"
        trip = c.message.parsed
        assert isinstance(trip, Trip) and isinstance(trip.city, City), f"parsed {trip!r}"
        return None, c.message.content

    check("chat.completions.parse (a nested pydantic model: $defs and $ref)", nested)

    class GetWeather(BaseModel):
        city: str
        unit: str

    weather = openai.pydantic_function_tool(GetWeather, name="get_weather",
                                            description="Current weather in a city")
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = {"type": "function", "function": {"name": "get_weather"}}

    def tool_call():
        raw = client.chat.completions.with_raw_response.create(
            model=model, seed=42, max_tokens=60, temperature=0, messages=ask,
            tools=[weather], tool_choice=forced)
        r = raw.parse()
        c = r.choices[0]
        assert c.finish_reason == "tool_calls", f"finish_reason {c.finish_reason!r}: {c.message}"
        assert c.message.content is None, f"content beside a tool call: {c.message.content!r}"
        calls = c.message.tool_calls or []
        assert len(calls) == 1 and calls[0].function.name == "get_weather", f"{calls}"
        args = json.loads(calls[0].function.arguments)
        assert list(args) == ["city", "unit"] and all(isinstance(v, str) for v in args.values()), \
            f"arguments {args!r}"
        assert calls[0].id.startswith("call_"), calls[0].id
        rec = receipt_of(raw.headers.get("x-deai-receipt"))
        assert rec.get("version") == 2 and (rec.get("sampling") or {}).get("json_schema"), \
            f"receipt does not sign the tool grammar: {rec.get('sampling')}"
        return (calls[0], raw.headers.get("x-deai-receipt")), \
            f"{calls[0].function.name}({calls[0].function.arguments})"

    tool_result = check("chat.completions.create (tools, tool_choice names a function)", tool_call)

    def tool_call_stream():
        name, args, ids, finish = "", "", set(), None
        for chunk in client.chat.completions.create(
                model=model, seed=42, max_tokens=60, temperature=0, messages=ask,
                tools=[weather], tool_choice=forced, stream=True):
            for c in chunk.choices:
                assert not (c.delta and c.delta.content), f"content in a tool call: {c.delta}"
                for t in (c.delta.tool_calls or []) if c.delta else []:
                    if t.id:
                        ids.add(t.id)
                    if t.function and t.function.name:
                        name += t.function.name
                    if t.function and t.function.arguments:
                        args += t.function.arguments
                if c.finish_reason is not None:
                    finish = c.finish_reason
        assert finish == "tool_calls", f"finish_reason {finish!r}"
        assert tool_result is not None, "the non-streamed tool call failed, nothing to compare"
        call = tool_result[0]
        assert (name, args) == (call.function.name, call.function.arguments), \
            f"streamed {name}({args}) differs from {call.function.name}({call.function.arguments})"
        assert len(ids) == 1, f"tool call ids {ids}"
        return None, f"{name}({args})"

    check("chat.completions.create (tools, stream=true) gives the same call", tool_call_stream)

    def tool_round_trip():
        assert tool_result is not None, "the tool call failed, nothing to answer"
        call = tool_result[0]
        r = client.chat.completions.create(
            model=model, seed=42, max_tokens=40, temperature=0, tools=[weather],
            tool_choice="none", messages=ask + [
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"}])
        c = r.choices[0]
        assert c.message.content and not c.message.tool_calls, f"{c.message}"
        return None, repr(c.message.content)

    check("chat.completions.create (the tool's result sent back, tool_choice none)",
          tool_round_trip)

    def tool_auto():
        r = client.chat.completions.create(
            model=model, seed=42, max_tokens=40, temperature=0, messages=ask, tools=[weather])
        c = r.choices[0]
        if c.message.tool_calls:
            assert c.finish_reason == "tool_calls" and c.message.content is None, f"{c}"
            json.loads(c.message.tool_calls[0].function.arguments)
            return None, f"called {c.message.tool_calls[0].function.name}"
        assert c.message.content and not c.message.content.startswith("{"), f"{c.message}"
        return None, f"answered in text: {c.message.content!r}"

    check("chat.completions.create (tools, tool_choice auto: a call or text)", tool_auto)

    # --- n > 1: each choice its own job, choice i sampled with seed + i --------------------
    sampled = {**request, "temperature": 0.8}

    def several():
        raw = client.chat.completions.with_raw_response.create(**sampled, n=3)
        r = raw.parse()
        ids = raw.headers.get("x-deai-receipt", "").split(",")
        assert [c.index for c in r.choices] == [0, 1, 2], f"choice indices {[c.index for c in r.choices]}"
        assert all(c.message.content for c in r.choices), f"an empty choice in {r}"
        deai = (r.model_extra or {}).get("deai") or {}
        listed = [c.get("receipt_id") for c in deai.get("choices") or []]
        assert len(ids) == 3 and listed == ids, f"receipts: header {ids}, deai.choices {listed}"
        one = client.chat.completions.create(**sampled)
        assert one.choices[0].message.content == r.choices[0].message.content, \
            "choice 0 differs from the same request with n=1"
        texts = [c.message.content for c in r.choices]
        return (texts, ids), f"{len(set(texts))} distinct texts, {r.usage.completion_tokens} tokens"

    several_result = check("chat.completions.create (n=3, temperature=0.8)", several)

    def several_stream():
        texts, finishes, usage = {}, {}, None
        for chunk in client.chat.completions.create(**sampled, n=2, stream=True):
            for c in chunk.choices:
                if c.delta and c.delta.content:
                    texts[c.index] = texts.get(c.index, "") + c.delta.content
                if c.finish_reason is not None:
                    assert c.index not in finishes, f"choice {c.index} finished twice"
                    finishes[c.index] = c.finish_reason
            if chunk.usage is not None:
                usage = chunk.usage
        assert sorted(finishes) == [0, 1], f"finish reasons {finishes}"
        assert usage is not None, "no usage chunk"
        assert several_result is not None, "the n=3 check failed, nothing to compare with"
        assert [texts.get(0), texts.get(1)] == several_result[0][:2], \
            f"streamed choices {texts} differ from the first two of n=3"
        return None, "2 choices, same texts as n=3's first two"

    check("chat.completions.create (n=2, stream=true) gives the same choices", several_stream)

    # --- errors ---------------------------------------------------------------------------
    def expect(exc, **kw):
        def run():
            c = kw.pop("client", client)
            try:
                c.chat.completions.create(**{**request, **kw})
            except exc as e:
                body = e.body if isinstance(e.body, dict) else {}
                assert body.get("message"), f"{exc.__name__} without an error message: {e.body!r}"
                return None, f"HTTP {e.status_code}, code {body.get('code')!r}: {body.get('message')}"
            raise AssertionError(f"no {exc.__name__} was raised")
        return run

    bad_key = OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0, timeout=60)
    check("wrong API key raises AuthenticationError",
          expect(openai.AuthenticationError, client=bad_key))
    check("unknown model raises NotFoundError",
          expect(openai.NotFoundError, model="no-such-model"))
    check("temperature=5 raises BadRequestError",
          expect(openai.BadRequestError, temperature=5))
    check("top_logprobs=21 raises BadRequestError",
          expect(openai.BadRequestError, logprobs=True, top_logprobs=21))
    check("presence_penalty=2.5 raises BadRequestError",
          expect(openai.BadRequestError, presence_penalty=2.5))
    check("logit_bias naming no token of the model raises BadRequestError",
          expect(openai.BadRequestError, logit_bias={"99999999": 1}))
    check("response_format json_object without 'json' in the messages raises BadRequestError",
          expect(openai.BadRequestError, response_format={"type": "json_object"}))
    def echo_with_logprobs():
        try:
            client.completions.create(model=model, prompt="Hi", max_tokens=4, echo=True, logprobs=1)
        except openai.BadRequestError as e:
            return None, f"HTTP {e.status_code}: {e.body.get('message') if isinstance(e.body, dict) else e.body}"
        raise AssertionError("no BadRequestError was raised")

    check("completions echo with logprobs (not supported) raises BadRequestError", echo_with_logprobs)
    check("tool_choice naming a function not in tools raises BadRequestError",
          expect(openai.BadRequestError, tools=[weather],
                 tool_choice={"type": "function", "function": {"name": "f"}}))
    check("a json_schema with an unsupported keyword raises BadRequestError",
          expect(openai.BadRequestError, response_format={
              "type": "json_schema", "json_schema": {"name": "s", "schema": {
                  "type": "object", "properties": {"a": {"type": "string", "pattern": "x+"}}}}}))
    check("n=9 raises BadRequestError", expect(openai.BadRequestError, n=9))
    check("an unknown argument raises BadRequestError",
          expect(openai.BadRequestError, extra_body={"bogus_argument": 1}))

    # --- receipts -------------------------------------------------------------------------
    # Validators verify in the background, yielding to generation on a shared engine, so a
    # receipt can wait while later requests run: allow for a loaded CI machine.
    def verdict(receipt_id, timeout=300.0):
        def run():
            assert receipt_id, "no receipt id (the request failed above)"
            url = f"{root}/v1/receipts/{urllib.parse.quote(receipt_id)}"
            t0, last = time.monotonic(), None
            while True:
                with direct.open(url, timeout=30) as resp:
                    view = json.loads(resp.read())
                last = view.get("verification")
                if last != "pending":
                    break
                assert time.monotonic() - t0 < timeout, \
                    f"still pending after {timeout:.0f} s: {json.dumps(view)[:2000]}"
                time.sleep(0.5)
            assert last == "accepted", \
                f"verification {last!r}, expected 'accepted': {json.dumps(view.get('ledger'))[:2000]}"
            assert view.get("receipt"), "the receipt view has no receipt"
            ledger = view.get("ledger") or {}
            return None, (f"accepted after {time.monotonic() - t0:.1f} s, "
                          f"{len(ledger.get('verdicts') or [])} verdicts")
        return run

    check("GET /v1/receipts/{id} of the chat answer is accepted",
          verdict(chat_result[1] if chat_result else None))
    check("GET /v1/receipts/{id} of the streamed answer is accepted",
          verdict(stream_result[1] if stream_result else None))
    check("GET /v1/receipts/{id} of the logit_bias/penalties answer is accepted",
          verdict(adjusted_id))
    check("GET /v1/receipts/{id} of the JSON-mode answer is accepted", verdict(json_id))
    check("GET /v1/receipts/{id} of the structured (json_schema) answer is accepted",
          verdict(schema_id))
    check("GET /v1/receipts/{id} of the tool call is accepted",
          verdict(tool_result[1] if tool_result else None))
    check("GET /v1/receipts/{id} of choice 2 of the n=3 answer is accepted",
          verdict(several_result[1][2] if several_result else None))

    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed: {', '.join(FAILURES)}", flush=True)
        return 1
    print("all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
