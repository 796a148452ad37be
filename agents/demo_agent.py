#!/usr/bin/env python3
"""The bundled demo agent.

It does real, visible work on demo tasks through the blackboard CLI, the same
way an LLM agent would, without any model or API key: it reads its task, posts
heartbeats and an output file, records a lesson, and finishes (or reviews,
on a review run). On a `distill` task it turns the lessons listed in the
task into a skill (SKILL.md + meta.yaml) for the daemon to install.

The daemon starts it with MOZI_* set (project, task, agent, session and its
token) and passes the brief file as the only argument.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("MOZI_BIN", "moziplus")
TASK = os.environ["MOZI_TASK"]
AGENT = os.environ["MOZI_AGENT"]
KIND = os.environ.get("MOZI_RUN_KIND", "work")
PACE = float(os.environ.get("MOZI_DEMO_PACE", "1.5"))  # seconds per step


def bb(*args, check=True):
    out = subprocess.run([BIN, "bb", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        sys.stderr.write(f"bb {' '.join(args)} failed ({out.returncode}): {out.stderr}")
        sys.exit(out.returncode)
    return out.stdout


def step(msg):
    print(f"[{AGENT}] {msg}", flush=True)
    time.sleep(PACE)


def work(task):
    step(f"reading {TASK}: {task['title']}")
    bb("comment", TASK, "--body", f"{AGENT} started round {task['round']}", "--type", "note")
    bb("heartbeat", TASK)
    step("working")
    feedback = [r for r in task.get("reviews", []) if r["verdict"] != "approve"]
    lines = [f"# {task['title']}", "", f"Round {task['round']} by {AGENT}.", ""]
    if task["kind"] == "plan":
        lines += ["Cities: Beijing, Shanghai, Chengdu.", "Figures: daily min/max, weekly mean."]
    elif task["kind"] == "data":
        lines += ["city,day,min,max"] + [f"{c},{d},{10 + d},{20 + d}" for c in ("beijing", "shanghai", "chengdu") for d in range(1, 4)]
    elif task["kind"] == "code":
        lines += ["```python", "import csv, statistics", "def summary(rows):", "    return statistics.mean(float(r['max']) for r in rows)", "```"]
    else:
        lines += ["Weekly mean max temperature: 21.0 °C across three cities."]
    if feedback:
        lines += ["", "Addressed review feedback:"] + [f"- {r['body']}" for r in feedback]
    with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        path = f.name
    step("posting output")
    bb("output", TASK, "--summary", f"{task['kind']} result, round {task['round']}", "--file", path, "--name", f"result-r{task['round']}.md")
    os.unlink(path)
    # One lesson per run, all tagged alike: after five the daemon asks for a
    # distilled skill (experience.distill_threshold).
    bb("experience", "add", "--task", TASK, "--tags", "weather-report", "--lesson", LESSONS[task["kind"]])
    bb("done", TASK)
    print(f"[{AGENT}] done", flush=True)


LESSONS = {
    "plan": "Fix the list of cities before anyone collects data; changing it later invalidates every CSV.",
    "data": "Write temperatures in Celsius with one row per city and day; the generator expects that shape.",
    "code": "An empty CSV must raise a clear error, not produce an empty report.",
    "analysis": "Quote the weekly mean with its unit and the number of cities it covers.",
}


def distill(task):
    """Writes the skill the daemon checks and installs under skills/custom/."""
    step(f"distilling {TASK}: {task['title']}")
    lessons = [l for l in task["description"].splitlines() if l.startswith("- experience ")]
    ids = [int(l.split()[2]) for l in lessons]
    texts = list(dict.fromkeys(l.split("): ", 1)[1] for l in lessons))  # same lesson twice: once
    steps = "\n".join(f"{n}. {t}" for n, t in enumerate(texts, 1))
    skill = (
        "---\nname: weather-report\n"
        "description: Producing the weekly weather report — cities, data shape, generator and summary — as the demo team learned it.\n"
        "---\n\n# Weekly weather report\n\n"
        "## When to use\nAny task tagged weather-report: planning, collecting, generating or publishing the report.\n\n"
        f"## Steps\n{steps}\n\n"
        "## Pitfalls\n- Changing the cities after data collection started.\n- Empty input files.\n"
    )
    meta = f"version: 1\ntags: [weather-report, demo]\nsource_experiences: {ids}\n"
    step("posting the skill")
    d = tempfile.mkdtemp()
    for name, text in (("SKILL.md", skill), ("meta.yaml", meta)):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
        bb("output", TASK, "--summary", f"distilled {name}", "--file", os.path.join(d, name), "--name", name)
    bb("done", TASK)
    print(f"[{AGENT}] skill submitted", flush=True)


def review(task):
    step(f"reviewing {TASK} round {task['round']}")
    # The demo shows one rework round on tasks tagged demo-rework.
    if "demo-rework" in task.get("tags", []) and task["round"] == 1:
        bb("review", TASK, "--verdict", "revise", "--confidence", "0.85", "--body", "Handle an empty CSV and document the output format.")
        print(f"[{AGENT}] asked for a revision", flush=True)
    else:
        bb("review", TASK, "--verdict", "approve", "--confidence", "0.9", "--body", "Looks right; ship it.")
        print(f"[{AGENT}] approved", flush=True)


def main():
    task = json.loads(bb("read", TASK, "--json"))
    if KIND == "review":
        review(task)
    elif task["kind"] == "distill":
        distill(task)
    else:
        work(task)


if __name__ == "__main__":
    main()
