"""Drives the official `openai` and `anthropic` Python SDKs against a moziplus
gateway, for tests/gateway_protocols.rs. Prints one JSON object: what the
SDK parsed (or which typed exception it raised).

Usage: python drive.py SCENARIO[,SCENARIO…]   with MOZI_GW_URL (gateway root, no /v1),
MOZI_GW_KEY (the run key), MOZI_GW_MODEL and, for some scenarios,
MOZI_GW_CASES (JSON). As an agent run (`agent`), the key and URL come from
OPENAI_API_KEY / OPENAI_BASE_URL, as moziplus hands them to every run.
"""

import json
import os
import subprocess
import sys

import anthropic
import openai


def publish(path, text):
    """Write a file the test polls for all at once: to a temporary name, then
    renamed, so a reader that sees the name never reads it half-written."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


URL = os.environ.get("MOZI_GW_URL", "")
KEY = os.environ.get("MOZI_GW_KEY", "no-key")
MODEL = os.environ.get("MOZI_GW_MODEL", "fake/echo")
# The fake upstream answers `tool-<name>` with a call to <name>, `echo` with text.
TOOL_MODEL = "fake/tool-exec_command"
ECHO_MODEL = "fake/echo"


def oa(key=None):
    return openai.OpenAI(base_url=URL + "/v1", api_key=key or KEY, max_retries=0, timeout=30)


def an(key=None, auth_token=None):
    if auth_token:
        return anthropic.Anthropic(base_url=URL, auth_token=auth_token, max_retries=0, timeout=30)
    return anthropic.Anthropic(base_url=URL, api_key=key or KEY, max_retries=0, timeout=30)


EXEC_TOOL = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a command",
    "parameters": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "replicas": {"type": "integer"}},
        "required": ["name", "replicas"],
    },
}


def openai_basic():
    r = oa().responses.create(model=MODEL, instructions="Be brief.", input="hello-resp")
    return {"text": r.output_text, "status": r.status, "usage": r.usage.model_dump(), "id": r.id}


def openai_stream():
    types, deltas, final = [], [], None
    seqs = []
    for ev in oa().responses.create(model=MODEL, input="hello-stream", stream=True):
        types.append(ev.type)
        seqs.append(ev.sequence_number)
        if ev.type == "response.output_text.delta":
            deltas.append(ev.delta)
        if ev.type == "response.completed":
            final = ev.response
    return {
        "types": types,
        "seqs": seqs,
        "text": "".join(deltas),
        "final_text": final.output_text if final else None,
        "usage": final.usage.model_dump() if final and final.usage else None,
    }


def openai_tools():
    c = oa()
    user = {"role": "user", "content": "scale it"}
    tools = [EXEC_TOOL, {"type": "web_search"}]
    r1 = c.responses.create(model=TOOL_MODEL, input=[user], tools=tools)
    call = next(o for o in r1.output if o.type == "function_call")
    r2 = c.responses.create(
        model=ECHO_MODEL,
        input=[
            user,
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "scaled to 3"},
        ],
        tools=tools,
    )
    streamed = []
    for ev in c.responses.create(model=TOOL_MODEL, input=[user], tools=tools, stream=True):
        if ev.type == "response.output_item.done":
            streamed.append(ev.item.model_dump())
    return {
        "call": {"name": call.name, "arguments": call.arguments, "call_id": call.call_id},
        "text2": r2.output_text,
        "streamed_items": streamed,
    }


def anthropic_basic():
    m = an().messages.create(
        model=MODEL, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "hello-msg"}]
    )
    return {"text": m.content[0].text, "stop_reason": m.stop_reason, "usage": m.usage.model_dump(), "model": m.model}


def anthropic_bearer():
    m = an(auth_token=KEY).messages.create(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hello-bearer"}]
    )
    return {"text": m.content[0].text, "usage": m.usage.model_dump()}


def anthropic_stream():
    with an().messages.stream(
        model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hello-astream"}]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    return {"text": text, "stop_reason": final.stop_reason, "usage": final.usage.model_dump()}


def anthropic_tools():
    c = an()
    tools = [
        {
            "name": "exec_command",
            "description": "Run a command",
            "input_schema": EXEC_TOOL["parameters"],
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
    ]
    user = {"role": "user", "content": "scale it"}
    m1 = c.messages.create(model=TOOL_MODEL, max_tokens=100, messages=[user], tools=tools)
    use = next(b for b in m1.content if b.type == "tool_use")
    m2 = c.messages.create(
        model=ECHO_MODEL,
        max_tokens=100,
        messages=[
            user,
            {"role": "assistant", "content": [b.model_dump() for b in m1.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "scaled to 3"}]},
        ],
        tools=tools,
    )
    with c.messages.stream(
        model=TOOL_MODEL, max_tokens=100, messages=[user], tools=tools
    ) as s:
        final = s.get_final_message()
    streamed = [b.model_dump() for b in final.content]
    return {
        "stop_reason": m1.stop_reason,
        "tool_use": {"id": use.id, "name": use.name, "input": use.input},
        "text2": m2.content[0].text,
        "stop_reason2": m2.stop_reason,
        "streamed": streamed,
        "streamed_stop": final.stop_reason,
    }


def anthropic_count():
    r = an().messages.count_tokens(
        model=MODEL,
        system="Be brief.",
        messages=[{"role": "user", "content": "How many tokens does this sentence take?"}],
    )
    return {"input_tokens": r.input_tokens}


def models():
    return {
        "openai": [m.id for m in oa().models.list()],
        "anthropic": [m.id for m in an().models.list()],
    }


def exc(e):
    out = {"class": type(e).__name__}
    if isinstance(e, (openai.APIStatusError, anthropic.APIStatusError)):
        out["status"] = e.status_code
        out["body"] = e.body
        out["retry_after"] = e.response.headers.get("retry-after")
    elif isinstance(e, (openai.APIError, anthropic.APIError)):
        out["body"] = e.body
        out["message"] = str(e)
    return out


def errors():
    """Each case: {"sdk": "openai"|"anthropic", "model", "stream"?, "key"?,
    "path"?}; records the typed exception each SDK raised (or what it got)."""
    results = []
    for case in json.loads(os.environ["MOZI_GW_CASES"]):
        key = case.get("key")
        try:
            if case.get("path"):
                if case["sdk"] == "openai":
                    oa(key).post(case["path"], cast_to=object, body={"model": case["model"]})
                else:
                    an(key).post(case["path"], cast_to=object, body={"model": case["model"]})
                results.append({"class": None})
                continue
            if case["sdk"] == "openai":
                kwargs = {"model": case["model"], "input": case.get("input", "hi")}
                if case.get("bad"):
                    kwargs["extra_body"] = {"input": 42}
                if case.get("stream"):
                    events = []
                    for ev in oa(key).responses.create(stream=True, **kwargs):
                        events.append(ev.model_dump())
                    results.append({"class": None, "events": events})
                else:
                    oa(key).responses.create(**kwargs)
                    results.append({"class": None})
            else:
                kwargs = {"model": case["model"], "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
                if case.get("bad"):
                    kwargs["extra_body"] = {"messages": "not a list"}
                if case.get("stream"):
                    with an(key).messages.stream(**kwargs) as s:
                        text = "".join(s.text_stream)
                    results.append({"class": None, "text": text})
                else:
                    an(key).messages.create(**kwargs)
                    results.append({"class": None})
        except Exception as e:  # noqa: BLE001 - the class is the result
            results.append(exc(e))
    return {"results": results}


def budget():
    """One call per protocol (OpenAI chat, OpenAI Responses, Anthropic
    Messages) on a run whose budget is spent: the typed exception each SDK
    raised, with the status and the parsed error body."""
    results = {}
    calls = {
        "chat": lambda: oa().chat.completions.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]),
        "responses": lambda: oa().responses.create(model=MODEL, max_output_tokens=10, input="hi"),
        "messages": lambda: an().messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]),
    }
    for name, call in calls.items():
        try:
            call()
            results[name] = {"class": None}
        except Exception as e:  # noqa: BLE001 - the class is the result
            r = exc(e)
            r["sdk_status_error"] = isinstance(e, (openai.APIStatusError, anthropic.APIStatusError))
            r["module"] = type(e).__module__.split(".")[0]
            results[name] = r
    return results


def truncation():
    """A provider that stops half-way (MOZI_GW_MODEL = the fake's `truncated`),
    on each surface, streamed and not: which exception each SDK raised and
    what it had received before."""
    results = {}
    user = [{"role": "user", "content": "hi"}]
    calls = {
        "chat": lambda: oa().chat.completions.create(model=MODEL, messages=user),
        "chat_stream": lambda: [c.model_dump() for c in oa().chat.completions.create(model=MODEL, messages=user, stream=True)],
        "responses": lambda: oa().responses.create(model=MODEL, input="hi"),
        "responses_stream": lambda: [e.model_dump() for e in oa().responses.create(model=MODEL, input="hi", stream=True)],
        "messages": lambda: an().messages.create(model=MODEL, max_tokens=50, messages=user),
        "messages_stream": lambda: [e.model_dump() for e in an().messages.create(model=MODEL, max_tokens=50, messages=user, stream=True)],
    }
    for name, call in calls.items():
        try:
            got = call()
            results[name] = {"class": None, "got": got if isinstance(got, list) else got.model_dump()}
        except Exception as e:  # noqa: BLE001 - the class is the result
            results[name] = exc(e)
    return results


def high_risk():
    """A streamed high-risk tool call on both surfaces: what reached the SDK."""
    tool = dict(EXEC_TOOL, name="scale_deployment")
    out = {}
    events = []
    for ev in oa().responses.create(model=MODEL, input="scale", tools=[tool], stream=True):
        events.append(ev.model_dump())
    out["responses"] = events
    atool = {"name": "scale_deployment", "input_schema": tool["parameters"]}
    with an().messages.stream(
        model=MODEL, max_tokens=50,
        messages=[{"role": "user", "content": "scale"}], tools=[atool]
    ) as s:
        final = s.get_final_message()
    out["messages"] = final.model_dump()
    return out


def agent():
    """Run as a moziplus agent: key and URL from the run's environment. The
    OpenAI SDK sends the key as Bearer, the Anthropic SDK as x-api-key."""
    global URL, KEY, MODEL
    URL = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
    KEY = os.environ["OPENAI_API_KEY"]
    MODEL = "gpt-5-codex"
    result = {"openai": openai_basic()}
    MODEL = "claude-sonnet-4-5"
    result["anthropic"] = anthropic_basic()
    result["session"] = os.environ["MOZI_SESSION"]
    publish(os.path.join(os.environ["MOZI_HOME"], "sdk-results.json"), json.dumps(result))
    bin_ = os.environ["MOZI_BIN"]
    task = os.environ["MOZI_TASK"]
    path = os.path.join(os.environ["MOZI_HOME"], "sdk-output.md")
    with open(path, "w") as f:
        f.write("sdk calls done\n")
    subprocess.run([bin_, "bb", "output", task, "--summary", "sdk", "--file", path, "--name", "sdk.md"], check=True)
    subprocess.run([bin_, "bb", "done", task], check=True)
    return result


def agent_approval():
    """Run as a moziplus agent: a high-risk chat call is held and proposed as a
    decision; the run waits for it (`bb decision wait`), then makes the same
    call twice: the first goes through, the second is held again."""
    global URL, KEY
    URL = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
    KEY = os.environ["OPENAI_API_KEY"]
    home, bin_, task = os.environ["MOZI_HOME"], os.environ["MOZI_BIN"], os.environ["MOZI_TASK"]
    tool = {"type": "function", "function": {"name": "scale_deployment", "parameters": {"type": "object"}}}

    def ask():
        r = oa().chat.completions.create(
            model="fake/tool-scale_deployment", messages=[{"role": "user", "content": "scale"}], tools=[tool])
        m = r.choices[0].message
        return {"calls": [c.function.name for c in (m.tool_calls or [])], "content": m.content,
                "finish": r.choices[0].finish_reason, "approvals": (r.model_extra or {}).get("requires_approval")}

    first = ask()
    decision = first["approvals"][0]["decision_id"]
    publish(os.path.join(home, "decision-id"), decision)
    waited = subprocess.run([bin_, "bb", "decision", "wait", decision, "--timeout", "60"]).returncode
    result = {"first": first, "waited": waited, "second": ask(), "third": ask(), "session": os.environ["MOZI_SESSION"]}
    publish(os.path.join(home, "approval-results.json"), json.dumps(result))
    path = os.path.join(home, "approval-output.md")
    with open(path, "w") as f:
        f.write("approval round trip done\n")
    subprocess.run([bin_, "bb", "output", task, "--summary", "approval", "--file", path, "--name", "approval.md"], check=True)
    subprocess.run([bin_, "bb", "done", task], check=True)
    return result


def agent_truncated():
    """Run as a moziplus agent against a provider that stops half-way: what
    the SDK raised, streamed and not."""
    global URL, KEY
    URL = os.environ["OPENAI_BASE_URL"].removesuffix("/v1")
    KEY = os.environ["OPENAI_API_KEY"]
    home, bin_, task = os.environ["MOZI_HOME"], os.environ["MOZI_BIN"], os.environ["MOZI_TASK"]
    user = [{"role": "user", "content": "hi"}]
    result = {"session": os.environ["MOZI_SESSION"]}
    for name, stream in [("json", False), ("stream", True)]:
        try:
            r = oa().chat.completions.create(model="fake/truncated", messages=user, stream=stream)
            result[name] = {"class": None, "got": [c.model_dump() for c in r] if stream else r.model_dump()}
        except Exception as e:  # noqa: BLE001 - the class is the result
            result[name] = exc(e)
    publish(os.path.join(home, "truncated-results.json"), json.dumps(result))
    path = os.path.join(home, "truncated-output.md")
    with open(path, "w") as f:
        f.write("truncated calls done\n")
    subprocess.run([bin_, "bb", "output", task, "--summary", "truncated", "--file", path, "--name", "t.md"], check=True)
    subprocess.run([bin_, "bb", "done", task], check=True)
    return result


SCENARIOS = {f.__name__: f for f in [
    openai_basic, openai_stream, openai_tools, anthropic_basic, anthropic_bearer, anthropic_stream,
    anthropic_tools, anthropic_count, models, errors, budget, truncation, high_risk, agent, agent_approval, agent_truncated,
]}

if __name__ == "__main__":
    print(json.dumps({name: SCENARIOS[name]() for name in sys.argv[1].split(",")}, default=str))
