"""The GPU check's records: each stage writes ``WORK/<stage>.json``; this module turns them into one report.

    python benchmarks/gpu_report.py WORK OUT      # OUT/report.md and OUT/results.json from WORK's stage files

A stage file (written by :class:`StageRecord`, again after every row, so a stage killed by its timeout
still leaves what it finished) holds::

    {"stage": "steps", "title": "...", "command": "...", "date": "...", "device": "...",
     "tables": [{"key": ..., "title": ..., "columns": [...], "rows": [{column: value}], "notes": [...]}],
     "notes": [...], "data": {...}}

``benchmarks/gpu_check.sh`` writes beside them ``WORK/status/<stage>`` (one line: ``ok``, ``failed rc=N``,
``timed out after S s`` or ``skipped: why``, then the seconds it took) and ``WORK/logs/<stage>.log``; the
report gives each stage's status, its tables, and, for a stage that did not finish, its log's last error
line. No torch import: the report is assembled even where torch is broken.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import common  # no torch import there either

# The stages of benchmarks/gpu_check.sh, in the order the report shows them, and what each measures.
STAGES = (
    ("env", "Environment"),
    ("tests", "(a) GPU tests: pytest -m gpu"),
    ("steps", "(b) Training step: fcoslab vs torchvision FCOS"),
    ("maxbatch", "(c) Largest batch that fits"),
    ("levers", "(d) Levers on the training step"),
    ("profile", "(e) torch.profiler: one training step"),
    ("evalshare", "(f) COCO evaluation's share of an epoch"),
    ("decode", "(g) JPEG decoding: nvjpeg vs CPU"),
    ("ddp", "(h) torchrun --nproc_per_node=1, NCCL, one epoch end to end"),
)


STAMP = "%Y-%m-%d %H:%M:%S UTC"  # the records' and the report's dates (common.utc_now)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class StageRecord:
    """The JSON record of one stage, saved after every change (``WORK/<stage>.json``)."""

    def __init__(self, work: str | Path, stage: str, title: str, command: str, device: str = ""):
        self.path = Path(work) / f"{stage}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.doc: dict[str, Any] = {"stage": stage, "title": title, "command": command,
                                    "date": common.utc_now(STAMP), "device": device, "tables": [], "notes": [],
                                    "data": {}}
        self.save()

    def table(self, key: str, title: str, columns: Sequence[str], notes: Iterable[str] = ()) -> dict:
        table = {"key": key, "title": title, "columns": list(columns), "rows": [], "notes": list(notes)}
        self.doc["tables"].append(table)
        self.save()
        return table

    def add_row(self, table: dict, row: dict) -> None:
        unknown = set(row) - set(table["columns"])
        if unknown:
            raise KeyError(f"table {table['key']!r} has no column(s) {sorted(unknown)}; columns: {table['columns']}")
        table["rows"].append(row)
        self.save()

    def note(self, text: str, table: Optional[dict] = None) -> None:
        (table["notes"] if table is not None else self.doc["notes"]).append(text)
        self.save()

    def set(self, key: str, value: Any) -> None:
        self.doc["data"][key] = value
        self.save()

    def save(self) -> None:
        _atomic_write(self.path, json.dumps(self.doc, indent=1, default=str) + "\n")


def fmt(value: Any) -> str:
    """A table cell: floats to 3-4 significant figures, None as 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        a = abs(value)
        return f"{value:.1f}" if a >= 100 else f"{value:.2f}" if a >= 1 else f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Sequence[dict]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(row[c]) if c in row else "" for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def stage_markdown(doc: dict) -> str:
    parts = []
    if doc.get("command"):
        parts.append(f"Command: `{doc['command']}`; started {doc.get('date', '?')}"
                     + (f"; {doc['device']}" if doc.get("device") else ""))
    for table in doc.get("tables", []):
        parts.append(f"#### {table['title']}\n\n" + (markdown_table(table["columns"], table["rows"])
                                                     if table["rows"] else "(no rows finished)"))
        if table.get("notes"):
            parts.append("\n".join(f"- {n}" for n in table["notes"]))
    if doc.get("notes"):
        parts.append("\n".join(f"- {n}" for n in doc["notes"]))
    return "\n\n".join(parts)


def last_error_line(log: Path) -> str:
    """The log's last line that looks like an error (else its last non-empty line), for a failed stage."""
    if not log.is_file():
        return ""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if any(w in line for w in ("Error", "error", "FAILED", "Traceback", "Killed", "failed")):
            return line[:300]
    return lines[-1][:300] if lines else ""


def read_status(work: Path, stage: str) -> tuple[str, str]:
    """(status line, seconds) of a stage as gpu_check.sh recorded it; ('not run', '') when it did not."""
    path = work / "status" / stage
    if not path.is_file():
        return "not run", ""
    lines = path.read_text().splitlines() + ["", ""]
    return lines[0].strip() or "unknown", lines[1].strip()


def env_header(work: Path) -> str:
    path = work / "env.json"
    if not path.is_file():
        return "Environment: not recorded (the env stage did not finish)."
    data = json.loads(path.read_text()).get("data", {})
    keys = ("date", "command", "gpu", "driver", "gpu_memory", "python", "torch", "torchvision", "cupy",
            "cuda", "cudnn", "triton", "numpy", "faster_coco_eval", "pycocotools", "fcoslab", "cpu", "cpu_count",
            "threads", "cpu_bf16", "cpu_isa_env",
            "git", "fcoslab_ops", "tf32", "bf16_matmul_tflops")
    return "\n".join(f"- {k}: {data[k]}" for k in keys if k in data)


def assemble(work: str | Path, out: str | Path, title: str = "GPU check (benchmarks/gpu_check.sh)") -> Path:
    """Write ``OUT/report.md`` (every stage: status, tables, notes) and ``OUT/results.json`` (every stage's
    record and status) from ``WORK``. Returns the report's path."""
    work, out = Path(work), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", "", f"Report assembled {common.utc_now(STAMP)}. Figures are what this run measured; a stage "
          "that failed or ran out of time says so and shows only the rows it finished.", "", "## Environment", "",
          env_header(work), "", "## Stages", "", "| stage | status | seconds |", "|---|---|---:|"]
    results: dict[str, Any] = {}
    known = [s for s, _ in STAGES]
    extra = sorted(p.stem for p in work.glob("*.json") if p.stem not in known)
    stages = list(STAGES) + [(s, s) for s in extra]
    for stage, _ in stages:
        status, seconds = read_status(work, stage)
        md.append(f"| {stage} | {fmt(status)} | {seconds} |")
    for stage, heading in stages:
        status, seconds = read_status(work, stage)
        path = work / f"{stage}.json"
        doc = json.loads(path.read_text()) if path.is_file() else None
        results[stage] = {"status": status, "seconds": seconds, "record": doc}
        if stage == "env":  # its record is the header above
            continue
        md += ["", f"## {heading}", "", f"Status: {status}" + (f" ({seconds} s)" if seconds else "")]
        if status != "ok" and not status.startswith("skipped") and status != "not run":
            err = last_error_line(work / "logs" / f"{stage}.log")
            if err:
                md.append(f"\nLast error line of its log: `{err.replace('`', chr(39))}`")
                results[stage]["error"] = err
        if doc is not None:
            md += ["", stage_markdown(doc)]
        elif stage != "tests":
            md.append("\n(no record written)")
        if stage == "tests":
            summary = work / "tests_summary.txt"
            if summary.is_file():
                md += ["", "```", summary.read_text().strip(), "```"]
    report = out / "report.md"
    _atomic_write(report, "\n".join(md) + "\n")
    _atomic_write(out / "results.json", json.dumps(results, indent=1, default=str) + "\n")
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    print(assemble(argv[0], argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
