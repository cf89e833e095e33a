"""The reliability page (``docs/RELIABILITY.md``), its plots and the summary table, from results.

Everything here reads the results document :mod:`bench.reliability.__main__`
writes; nothing is measured. Plots (PNG, matplotlib from the ``dev`` extras)
are drawn for every scenario that recorded time series: one panel per measure,
one line per sampled agent, the attack window shaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RAN = "ran"
NOT_RUN = "not run"
ERROR = "error"

_LABELS = {
    "rss_mb": "RSS (MB)",
    "latency_s": "control answer (s)",
    "fds": "open fds",
    "threads": "threads",
    "all_visible": "all honest peers visible (1 = yes)",
}


def _value(value: Any, unit: str = "") -> str:
    if value is None:
        return "not measured"
    if isinstance(value, float):
        text = f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def _target(goal: dict[str, Any]) -> str:
    sign = "≤" if goal["comparison"] == "<=" else "≥"
    return f"{sign} {_value(goal['limit'], goal['unit'])}"


def _verdict(met: bool | None) -> str:
    return "**met**" if met else "**MISSED**"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _ran(scenario: dict[str, Any]) -> bool:
    return bool(scenario.get("status") == RAN)


def make_plots(results: dict[str, Any], directory: Path) -> dict[str, str] | None:
    """Write one PNG per scenario with time series; scenario key -> file name, ``None`` without matplotlib."""
    try:
        os.environ.setdefault("MPLBACKEND", "Agg")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for key, scenario in results["scenarios"].items():
        if _ran(scenario) and scenario.get("series"):
            written[key] = _plot(plt, scenario, directory)
    return written


def _plot(plt: Any, scenario: dict[str, Any], directory: Path) -> str:
    series: dict[str, dict[str, list[float]]] = scenario["series"]
    columns = sorted({c for cols in series.values() for c in cols if c != "t"}, key=list(_LABELS).index)
    fig, axes = plt.subplots(
        len(columns), 1, figsize=(8, 2.2 * len(columns) + 0.6), sharex=True, squeeze=False
    )
    window = scenario["details"].get("attack_window_s")
    phases = scenario["details"].get("phases_s")
    for ax, column in zip(axes[:, 0], columns, strict=True):
        for name, cols in series.items():
            if column in cols:
                ax.plot(cols["t"], cols[column], label=name, linewidth=1)
        if window:
            ax.axvspan(window[0], window[1], color="tab:red", alpha=0.12, label="attack")
        if phases:
            ax.axvspan(phases[0], phases[1], color="tab:red", alpha=0.12, label="idle clients")
            ax.axvspan(phases[2], phases[3], color="tab:blue", alpha=0.12, label="watch cycles")
        if column == "latency_s":
            ax.axhline(0.1, color="black", linestyle=":", linewidth=1, label="0.1 s goal")
        ax.set_ylabel(_LABELS.get(column, column), fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("seconds since sampling started", fontsize=8)
    axes[0, 0].set_title(scenario["title"], fontsize=9)
    fig.tight_layout()
    name = f"{scenario['key']}.png"
    fig.savefig(directory / name, dpi=100)
    plt.close(fig)
    return name


def _measured(scenario: dict[str, Any]) -> str:
    return "<br>".join(
        f"{g['name']}: {_value(g['measured'], g['unit'])} ({_target(g)})" for g in scenario["goals"]
    )


def goal_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key, scenario in results["scenarios"].items():
        if _ran(scenario):
            verdict = _verdict(scenario["met"])
            rows.append(
                [
                    f"[{scenario['title']}](#{key})",
                    scenario["goal"],
                    _measured(scenario),
                    verdict,
                    scenario["policy"],
                ]
            )
        else:
            rows.append([key, "", scenario.get("error", ""), scenario["status"], ""])
    return rows


def markdown(results: dict[str, Any], plots: dict[str, str] | None, plots_rel: str, results_rel: str) -> str:
    m = results["machine"]
    out = [
        "# Reliability",
        "",
        "<!-- Generated by scripts/reliability: edit bench/reliability/, not this file. -->",
        "",
        f"Generated by `scripts/reliability` ({results['mode']} mode) on {m.get('date')}, in "
        f"{results['duration_s']:.0f} s, at commit `{m.get('git_commit')}`. Each scenario of issue 13 "
        "attacks real `presence-agent run` processes over loopback, as a LAN neighbour, an admitted "
        "peer or a local user would; every figure below is measured, and a goal missed is shown as "
        f"missed. The raw numbers are in `{results_rel}`.",
        "",
        *_table(
            ["machine", ""],
            [
                ["CPU", str(m.get("cpu_model"))],
                ["cores", f"{m.get('cores')} ({m.get('usable_cores', m.get('cores'))} usable)"],
                ["Python", str(m.get("python"))],
                ["platform", str(m.get("platform"))],
            ],
        ),
        "",
        "Run `scripts/reliability` (full, about 20 minutes) or `scripts/reliability --quick` (small counts, "
        "to check the script works; its figures prove little). `--only NAMES` runs some scenarios. Each "
        "scenario runs alone; the machine may be shared, so times are the worst seen, memory is RSS read "
        "from `/proc` (robust to load), and a time goal missed on a loaded machine is still reported as "
        "missed.",
        "",
        "## Scenarios at a glance",
        "",
        *_table(
            ["scenario", "goal", "measured (target)", "result", "the policy that makes it hold"],
            goal_rows(results),
        ),
        "",
    ]
    missed = [s for s in results["scenarios"].values() if _ran(s) and not s["met"]]
    failed = [s for s in results["scenarios"].values() if s.get("status") == ERROR]
    if missed or failed:
        out.append(
            f"**{len(missed)} scenario(s) missed a goal** in this run"
            + (f"; {len(failed)} could not run" if failed else "")
            + ": "
            + "; ".join(s["title"] for s in missed + failed)
            + ". Each section says what was measured."
        )
    else:
        out.append("**Every goal met in this run.**")
    out.append("")
    if plots is None:
        out += ["matplotlib is not importable here (it is a `dev` extra), so no plots were drawn.", ""]
    for key, scenario in results["scenarios"].items():
        out += _section(key, scenario, plots, plots_rel)
    out += _method_notes()
    return "\n".join(out).rstrip() + "\n"


def _section(key: str, scenario: dict[str, Any], plots: dict[str, str] | None, plots_rel: str) -> list[str]:
    if not _ran(scenario):
        title = f"## {key}: {scenario['status']}"
        body = [f"```\n{scenario['error']}\n```"] if scenario.get("error") else []
        return [f'<a id="{key}"></a>', "", title, "", *body, ""]
    out = [
        f'<a id="{key}"></a>',
        "",
        f"## {scenario['title']}",
        "",
        f"**Goal.** {scenario['goal']}.",
        "",
        f"**How.** {scenario['method'][0].upper()}{scenario['method'][1:]}.",
        "",
        f"**Policy.** {scenario['policy'][0].upper()}{scenario['policy'][1:]}.",
        "",
        *_table(
            ["measure", "measured", "target", "result"],
            [
                [g["name"], _value(g["measured"], g["unit"]), _target(g), _verdict(g["met"])]
                for g in scenario["goals"]
            ],
        ),
        "",
        f"Details ({scenario['duration_s']:.0f} s"
        + (f", run {scenario['ran_at']}" if scenario.get("ran_at") else "")
        + "):",
        "",
    ]
    for name, value in scenario["details"].items():
        if name in ("attack_window_s", "phases_s"):
            continue
        out.append(f"- `{name}`: {_detail(value)}")
    out.append("")
    if plots and key in plots:
        out += [f"![{scenario['title']}]({plots_rel}/{plots[key]})", ""]
    return out


def _detail(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_detail(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_detail(v) for v in value)
    return _value(value)


def _method_notes() -> list[str]:
    return [
        "## How the figures are taken",
        "",
        "- Agents are `presence-agent run` processes with default settings, LAN on loopback, each run on a "
        "private multicast port; the script's own hostile peer (`bench/reliability/peer.py`) is built on "
        "the project's codec and completes the link handshake with a genuine key where the scenario says "
        "admitted.",
        "- RSS is `VmRSS` from `/proc/PID/status`; growth is the peak during and after the attack minus the "
        "highest level in the 1.5 s before it. Fds are the entries of `/proc/PID/fd`, threads the "
        "`Threads:` line.",
        "- Control latency is a `status` or `graph` request (alternately) on a fresh connection to the "
        "control socket, every 50 ms; an unanswered request counts as 5 s.",
        "- Join and rejoin times run from the agent's spawn (start-up included) to every agent concerned "
        "having every other in its graph, read over the control sockets every 20 ms.",
        "",
    ]


def write_doc(results: dict[str, Any], doc: Path, results_file: Path) -> None:
    """Write the page and its plots (in ``reliability/`` beside the page)."""
    plot_dir = doc.parent / "reliability"
    plots = make_plots(results, plot_dir)
    try:
        results_rel = os.path.relpath(results_file, doc.parent.parent)
    except ValueError:
        results_rel = str(results_file)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(markdown(results, plots, "reliability", results_rel), encoding="utf-8")


def summary_table(results: dict[str, Any]) -> str:
    """The plain-text table printed at the end of a run."""
    rows = [("scenario", "measure", "measured", "target", "result")]
    for key, scenario in results["scenarios"].items():
        if not _ran(scenario):
            rows.append((key, "", "", "", scenario["status"]))
            continue
        for g in scenario["goals"]:
            rows.append(
                (
                    key,
                    g["name"],
                    _value(g["measured"], g["unit"]),
                    _target(g),
                    "met" if g["met"] else "MISSED",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )
