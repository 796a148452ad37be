"""Drives `moziplus mcp` with the official MCP Python SDK (the `mcp` package),
for tests/mcp_server.rs. Runs as a daemon agent run: the server is started
the way an agent CLI starts it, with the run's MOZI_* variables handed on.
Writes one JSON report (argv[1]) of what the SDK saw; the test asserts on it.

Usage: python drive.py REPORT.json            (the test's scenario, as a run)
       python drive.py REPORT.json sandbox    (tests/sandbox.rs: a sandboxed run)
       python drive.py REPORT.json bench T-…  (bench/mcp_roundtrip.sh)
"""

import json
import os
import sys
import time

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

IDENTITY = ["MOZI_HOME", "MOZI_PROJECT", "MOZI_TASK", "MOZI_AGENT", "MOZI_SESSION", "MOZI_SESSION_TOKEN"]
# Outside a sandbox the store's URL too, when the daemon's is set by environment.
STORE = ["MOZI_STORE__URL"]
# What a sandboxed run's server needs to reach the daemon (runtime::mcp::SANDBOX_ENV).
SANDBOX = ["MOZI_API", "MOZI_RUN_KEY", "MOZI_GATEWAY"]


def server(**override):
    env = {k: os.environ[k] for k in IDENTITY + STORE + SANDBOX if k in os.environ}
    env.update(override)
    return StdioServerParameters(command=os.environ["MOZI_BIN"], args=["mcp"], env=env)


def outcome(result):
    """What a tool call returned: ok/error, and its structured content."""
    text = "".join(getattr(c, "text", "") for c in result.content)
    return {"is_error": result.is_error, "structured": result.structured_content, "text": text}


async def scenario(report):
    async with stdio_client(server()) as (read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            report["server"] = {"name": init.server_info.name, "version": init.server_info.version}
            report["protocol_version"] = init.protocol_version
            tools = await s.list_tools()
            report["tools"] = {
                t.name: {"description": t.description, "input_schema": t.input_schema} for t in tools.tools
            }
            call = lambda name, args: s.call_tool(name, args)  # noqa: E731
            report["read_board"] = outcome(await call("read", {}))
            report["read_task"] = outcome(await call("read", {"task": os.environ["MOZI_TASK"]}))
            report["read_unknown"] = outcome(await call("read", {"task": "T-9999"}))
            report["heartbeat"] = outcome(await call("heartbeat", {"lease_secs": 120}))
            report["output_as_other"] = outcome(
                await call("output", {"summary": "not mine", "text": "x", "agent": "intruder"})
            )
            report["done_as_other"] = outcome(await call("done", {"agent": "intruder"}))
            report["malformed_type"] = outcome(await call("done", {"task": 42}))
            report["malformed_missing"] = outcome(await call("output", {"text": "no summary"}))
            report["malformed_unknown_field"] = outcome(await call("done", {"tsk": "T-0001"}))
            report["malformed_task_id"] = outcome(await call("done", {"task": "T-bad"}))
            # `--file -` reads stdin in the CLI; here stdin is the protocol's stream.
            report["output_stdin"] = outcome(await call("output", {"summary": "stdin", "file": "-"}))
            # Issue 23, finding 10: a FIFO as the output's file (it froze the
            # server) and numbers past any duration (a panic, an i64::MAX lease).
            fifo = os.path.join(os.environ["MOZI_HOME"], "mcp-fifo")
            os.mkfifo(fifo)
            report["output_fifo"] = outcome(await call("output", {"summary": "fifo", "file": fifo}))
            report["decision_wait_overflow"] = outcome(
                await call("decision_wait", {"id": 1, "timeout_secs": 2**64 - 1})
            )
            report["heartbeat_overflow"] = outcome(await call("heartbeat", {"lease_secs": 2**64 - 1}))
            report["comment"] = outcome(await call("comment", {"body": "-starts with a dash", "type": "note"}))
            report["experience_add"] = outcome(
                await call("experience_add", {"tags": ["mcp"], "lesson": "typed tools beat shell lines"})
            )
            report["output"] = outcome(
                await call("output", {"summary": "made over MCP", "text": "hello from the MCP client"})
            )
            report["done"] = outcome(await call("done", {}))
            report["output_after_done"] = outcome(await call("output", {"summary": "late", "text": "late"}))
            report["read_after"] = outcome(await call("read", {"task": os.environ["MOZI_TASK"]}))
    # The same run's server, started with a forged token: every write is refused.
    async with stdio_client(server(MOZI_SESSION_TOKEN="forged")) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            report["forged_token"] = outcome(await s.call_tool("comment", {"body": "forged"}))
    # Without a session (an operator's server), a reserved name is refused as
    # HTTP refuses it (issue 23, finding 10).
    async with stdio_client(server(MOZI_SESSION="", MOZI_SESSION_TOKEN="")) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            report["no_session_as_daemon"] = outcome(
                await s.call_tool("comment", {"body": "as daemon", "agent": "daemon"})
            )


async def sandboxed(report):
    """Inside bubblewrap: the database is hidden, every tool goes through
    the daemon. Every tool that acts on the run's own task, a refusal of
    each kind the run can meet, and the task finished with `done`."""
    task = os.environ["MOZI_TASK"]
    tmp = os.environ["TMPDIR"]
    async with stdio_client(server()) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            report["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
            call = lambda name, args: s.call_tool(name, args)  # noqa: E731
            report["read_board"] = outcome(await call("read", {}))
            report["read_task"] = outcome(await call("read", {"task": task}))
            report["read_unknown"] = outcome(await call("read", {"task": "T-9999"}))
            report["heartbeat"] = outcome(await call("heartbeat", {"lease_secs": 120}))
            report["comment"] = outcome(
                await call("comment", {"body": "-from the sandbox over MCP", "type": "note"})
            )
            report["output_as_other"] = outcome(
                await call("output", {"summary": "not mine", "text": "x", "agent": "intruder"})
            )
            report["review_own_working_task"] = outcome(
                await call("review", {"verdict": "approve", "confidence": 0.9})
            )
            notes = os.path.join(tmp, "notes.md")
            with open(notes, "w") as f:
                f.write("written inside the sandbox")
            report["output_file"] = outcome(await call("output", {"summary": "a file from inside", "file": notes}))
            fifo = os.path.join(tmp, "mcp-fifo")
            os.mkfifo(fifo)
            report["output_fifo"] = outcome(await call("output", {"summary": "fifo", "file": fifo}))
            hidden = os.path.join(os.environ["MOZI_HOME"], "config", "default.yaml")
            report["output_hidden_file"] = outcome(await call("output", {"summary": "x", "file": hidden}))
            report["decide"] = outcome(
                await call("decide", {"question": "sandboxed MCP?", "decision": "yes", "rationale": "it works"})
            )
            decided = (report["decide"]["structured"] or {}).get("id", 0)
            report["decision_wait"] = outcome(await call("decision_wait", {"id": decided, "timeout_secs": 5}))
            report["experience_add"] = outcome(
                await call("experience_add", {"tags": ["sandbox"], "lesson": "the board is reached through the daemon"})
            )
            report["output"] = outcome(await call("output", {"summary": "made over MCP inside", "text": "hello"}))
            report["done"] = outcome(await call("done", {}))
            report["done_again"] = outcome(await call("done", {}))
            report["read_after"] = outcome(await call("read", {"task": task}))
    # A key that is no run's: refused by the daemon.
    async with stdio_client(server(MOZI_RUN_KEY="mozi-forged")) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            report["forged_key"] = outcome(await s.call_tool("comment", {"body": "forged"}))


async def bench(report, tasks):
    """One `done` per task (each claimed by this caller and working): the
    round trip of a successful call, from the client's send to its parsed
    result."""
    async with stdio_client(server()) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            await s.call_tool("read", {})  # warm-up
            times = []
            for task in tasks:
                t0 = time.perf_counter()
                r = await s.call_tool("done", {"task": task})
                times.append((time.perf_counter() - t0) * 1000)
                if r.is_error:
                    raise RuntimeError(f"done {task} refused: {outcome(r)}")
            report["round_trips_ms"] = times


def main():
    report = {}
    try:
        if len(sys.argv) > 2 and sys.argv[2] == "bench":
            anyio.run(bench, report, sys.argv[3:])
        elif len(sys.argv) > 2 and sys.argv[2] == "sandbox":
            anyio.run(sandboxed, report)
        else:
            anyio.run(scenario, report)
    except BaseException as e:  # the report says what broke
        report["exception"] = repr(e)
    with open(sys.argv[1], "w") as f:
        json.dump(report, f, indent=1)
    sys.exit(1 if "exception" in report else 0)


if __name__ == "__main__":
    main()
