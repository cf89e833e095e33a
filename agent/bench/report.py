"""Turn the results into docs/PERFORMANCE.md, PNG plots and a summary table on stdout."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.bench.common import TIMES, progress

NOT_YET_MEASURED = ("fig5", "fig6")
#: "Flat in N" for figure 3: the largest over the smallest value across sizes stays within this.
FLAT_SPREAD = 1.25
CHANGE_NAMES = {
    "metadata": "Metadata change",
    "link_add": "Link added",
    "link_remove": "Link removed",
    "kill": "Peer killed",
}
LORA_CHANGES = (
    ("metadata", "metadata change (card)"),
    ("link_cut", "link cut (links record)"),
    ("link_restore", "link restored (links records)"),
)


# ---------------------------------------------------------------- formatting


def num(value: Any, digits: int = 0) -> str:
    """A number for a table: thousands separators, ``—`` when missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and digits == 0:
        return f"{value:,}"
    return f"{float(value):,.{digits}f}"


def seconds(value: float | None) -> str:
    """A duration at a readable precision."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    if value < 100:
        return f"{value:.2f} s"
    return f"{value:,.0f} s"


def times(value: float | None, digits: int = 2) -> str:
    """A ratio, as 1.23 followed by a multiplication sign."""
    return "—" if value is None else f"{value:,.{digits}f}{TIMES}"


def verdict(met: bool | None) -> str:
    if met is None:
        return "not measured"
    return "**met**" if met else "**MISSED**"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _digits(unit: str) -> int:
    return 0 if unit in ("B", "cards") else 2


def _goal_value(g: dict[str, Any]) -> str:
    unit = g["unit"]
    if unit == TIMES:
        return times(g["measured"])
    return f"{num(g['measured'], _digits(unit))} {unit}".strip()


def _goal_target(g: dict[str, Any]) -> str:
    unit = g["unit"]
    comparison = {"<=": "≤", ">=": "≥"}[g["comparison"]]
    if unit == TIMES:
        return f"{comparison} {times(g['limit'], 1)}"
    return f"{comparison} {num(g['limit'], _digits(unit))} {unit}".strip()


def _goal_lines(goals: Sequence[dict[str, Any]]) -> list[str]:
    rows = [[g["name"], _goal_value(g), _goal_target(g), verdict(g["met"])] for g in goals]
    return _table(["goal", "measured", "target", "result"], rows)


# ---------------------------------------------------------------- plots


def make_plots(results: dict[str, Any], directory: Path) -> dict[str, str] | None:
    """Write PNG plots; returns figure key -> file name, or ``None`` without matplotlib."""
    try:
        os.environ.setdefault("MPLBACKEND", "Agg")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    figures = results["figures"]
    return {
        "fig1": _plot_sizes(plt, figures["fig1"], directory),
        "fig2": _plot_ingest(plt, figures["fig2"], directory),
        "fig3": _plot_propagation(plt, figures["fig3"], directory),
        "fig4": _plot_lora(plt, figures["fig4"], directory),
    }


def _save(plt: Any, fig: Any, directory: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(directory / name, dpi=110)
    plt.close(fig)
    return name


def _plot_sizes(plt: Any, fig1: dict[str, Any], directory: Path) -> str:
    fig, ax = plt.subplots(figsize=(8.5, 4))
    rows = fig1["rows"]
    labels = [
        r["record"].replace(" with distances", "").replace("card at the metadata limit", "limit card")
        for r in rows
    ]
    ys = range(len(labels))
    cose = ax.barh([y + 0.2 for y in ys], [r["cose_bytes"] for r in rows], height=0.4)
    json_ = ax.barh([y - 0.2 for y in ys], [r["json_bytes"] for r in rows], height=0.4)
    cose.set_label("signed COSE (subject)")
    json_.set_label("JSON + base64 signature (baseline)")
    ax.bar_label(cose, fontsize=7, padding=2)
    ax.bar_label(json_, fontsize=7, padding=2)
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("bytes")
    ax.set_xlim(0, max(r["json_bytes"] for r in rows) * 1.12)
    ax.set_title("Figure 1: record sizes")
    ax.legend(fontsize=8, loc="lower right")
    return _save(plt, fig, directory, "fig1_record_sizes.png")


def _plot_ingest(plt: Any, fig2: dict[str, Any], directory: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    series = [
        (
            "engine receive path (subject)",
            fig2["subject_records_per_s"],
            fig2["median_subject_records_per_s"],
        ),
        (
            "bare Ed25519 verify (baseline)",
            fig2["baseline_verifies_per_s"],
            fig2["median_baseline_verifies_per_s"],
        ),
        ("duplicates dropped", fig2["duplicates_per_s"], fig2["median_duplicates_per_s"]),
    ]
    for i, (label, values, middle) in enumerate(series):
        ax.scatter(values, [i] * len(values), alpha=0.6)
        ax.scatter([middle], [i], marker="|", s=400, color="black")
        ax.annotate(label, (min(values), i + 0.25), fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.5, len(series) - 0.2)
    ax.set_xscale("log")
    ax.set_xlabel("records per second, one core (log scale); bar = median")
    ax.set_title("Figure 2: ingest")
    return _save(plt, fig, directory, "fig2_ingest.png")


def _plot_propagation(plt: Any, fig3: dict[str, Any], directory: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in sorted({m["topology"] for m in fig3["medians"]}):
        rows = [m for m in fig3["medians"] if m["topology"] == name]
        ns = [m["peers"] for m in rows]
        metadata = [m["metadata"] for m in rows]
        steady = [m["steady"] for m in rows]
        (line,) = axes[0].plot(
            ns, [x["subject"]["median_ratio_to_hop_optimal"] for x in metadata], marker="o", label=f"{name}"
        )
        colour = line.get_color()
        axes[0].plot(
            ns,
            [x["baseline"]["median_ratio_to_hop_optimal"] for x in metadata],
            marker="x",
            linestyle="--",
            color=colour,
            label=f"{name} (gossip)",
        )
        axes[1].plot(
            ns,
            [x["subject"]["median_bytes_per_peer_per_s"] for x in steady],
            marker="o",
            color=colour,
            label=name,
        )
        axes[1].plot(
            ns,
            [x["baseline"]["median_bytes_per_peer_per_s"] for x in steady],
            marker="x",
            linestyle="--",
            color=colour,
            label=f"{name} (gossip)",
        )
    axes[0].set_title("metadata change: time ÷ hop-optimal time")
    axes[1].set_title("steady state: bytes per peer per second")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("peers")
        ax.legend(fontsize=7)
    fig.suptitle("Figure 3: propagation, subject (solid) and push-pull gossip (dashed)")
    return _save(plt, fig, directory, "fig3_propagation.png")


def _plot_lora(plt: Any, fig4: dict[str, Any], directory: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    changes = [c for c, _ in LORA_CHANGES]
    width = 0.2
    for j, condition in enumerate(fig4["conditions"]):
        med = condition["medians"]
        xs = [i + (j - 0.5) * 2 * width for i in range(len(changes))]
        label = condition["label"]
        for ax, subject_key, baseline_key in (
            (axes[0], "subject_median_time_s", "baseline_median_time_s"),
            (axes[1], "subject_median_airtime_s", "baseline_median_airtime_s"),
        ):
            ax.bar(
                [x - width / 2 for x in xs],
                [med[c][subject_key] for c in changes],
                width,
                label=f"subject, {label}",
            )
            ax.bar(
                [x + width / 2 for x in xs],
                [med[c][baseline_key] for c in changes],
                width,
                label=f"gossip, {label}",
                hatch="//",
            )
    for ax, title in zip(axes, ("time to cross 3 hops (s, log)", "airtime used (s, log)"), strict=True):
        ax.set_xticks(range(len(changes)), changes)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.suptitle("Figure 4: LoRa-class line of 4 (medians over seeds)")
    return _save(plt, fig, directory, "fig4_lora.png")


# ---------------------------------------------------------------- markdown


def _image(plots: dict[str, str] | None, key: str, rel: str) -> list[str]:
    if plots is None or key not in plots:
        return []
    return [f"![{key}]({rel}/{plots[key]})", ""]


def goal_rows(results: dict[str, Any]) -> list[list[str]]:
    """Every goal with a number: figure, goal, measured, target, result."""
    rows = []
    for key in ("fig1", "fig2", "fig4"):
        for g in results["figures"][key]["goals"]:
            rows.append([f"Figure {key[3:]}", g["name"], _goal_value(g), _goal_target(g), verdict(g["met"])])
    return rows


def markdown(results: dict[str, Any], plots: dict[str, str] | None, plots_rel: str) -> str:
    """The whole of PERFORMANCE.md."""
    m = results["machine"]
    f = results["figures"]
    command = "scripts/bench --quick" if results["mode"] == "quick" else "scripts/bench"
    out: list[str] = [
        "# Performance",
        "",
        "<!-- Generated by scripts/bench: edit agent/bench/report.py, not this file. -->",
        "",
        f"Generated by `{command}` ({results['mode']} mode) on {m['date']}, in "
        f"{results['duration_s']:.0f} s. Every ratio below comes from one run, with subject and baseline "
        "measured side by side; medians are quoted. The raw numbers, every repetition included, are in "
        "`bench/results.json`.",
        "",
    ]
    if results["mode"] == "quick":
        out += [
            "> **Quick mode**: few repetitions and no 1,000-peer meshes. Run `scripts/bench` for the full "
            "figures.",
            "",
        ]
    commit = f"`{m['git_commit']}`" if m["git_commit"] else "unknown"
    out += _table(
        ["machine", ""],
        [
            ["CPU", m["cpu_model"]],
            ["cores", f"{m['cores']} ({m['cores_usable']} usable)"],
            ["Python", f"{m['python']} ({m['python_implementation']})"],
            ["platform", m["platform"]],
            ["commit", commit],
            ["agent version", m["agent_version"]],
        ],
    )
    out += [
        "Run `scripts/bench` (full, several minutes) or `scripts/bench --quick` (CI, seconds). Both "
        "rewrite this page, its plots and `bench/results.json`; `--out DIR` and `--doc FILE` send them "
        "elsewhere.",
        "",
        "## Goals at a glance",
        "",
    ]
    rows = goal_rows(results)
    out += _table(["figure", "goal", "measured", "target", "result"], rows)
    missed = [row for row in rows if "MISSED" in row[-1]]
    if missed:
        plural = "s" if len(missed) > 1 else ""
        listed = "; ".join(f"{r[0]}, {r[1]}: {r[2]} against {r[3]}" for r in missed)
        out += [
            f"**{len(missed)} goal{plural} missed in this run.** {listed}. The figure sections say why.",
            "",
        ]
    else:
        out += ["Every goal with a number was met in this run.", ""]
    out += [
        "Figure 3 has no numeric goal in this part: it reports times against the hop-optimal time and "
        "against the baseline, and whether steady-state traffic stays flat as the mesh grows.",
        "",
    ]
    out += _fig1(f["fig1"]) + _image(plots, "fig1", plots_rel)
    out += _fig2(f["fig2"]) + _image(plots, "fig2", plots_rel)
    out += _fig3(f["fig3"]) + _image(plots, "fig3", plots_rel)
    out += _fig4(f["fig4"]) + _image(plots, "fig4", plots_rel)
    out += [
        "## Figures 5 and 6: not yet measured",
        "",
        "These figures of the benchmark issue are outside this first part of the suite. There are no "
        "numbers for them yet, and nothing on this page stands in for them.",
        "",
        "## Plots",
        "",
    ]
    if plots is None:
        out += ["matplotlib is not importable here (it is a `dev` extra), so no plots were drawn.", ""]
    else:
        out += [f"PNG plots (matplotlib) are in `{plots_rel}/` beside this page.", ""]
    out += _method_notes()
    return "\n".join(out).rstrip() + "\n"


def _fig1(fig: dict[str, Any]) -> list[str]:
    out = [
        "## Figure 1: record sizes",
        "",
        f"**Baseline:** {fig['baseline']}: field names spelled out; public key, peer ids and signature in "
        f"base64; distances in metres. **Goal:** {fig['goal']}.",
        "",
        "Each record is signed at the widest counter and expiry (the uint32 maximum), so these are upper "
        "bounds. Sizes are deterministic: one measurement each.",
        "",
    ]
    rows = [
        [r["record"], num(r["cose_bytes"]), num(r["json_bytes"]), num(r["ratio_cose_to_json"], 2)]
        for r in fig["rows"]
    ]
    out += _table(["record", "signed COSE (B)", "JSON baseline (B)", "COSE ÷ JSON"], rows)
    sensors = fig["limit_metadata"]["sensor list, JSON limit binds"]
    text = fig["limit_metadata"]["one text value, card limit binds"]
    out += [
        f"The two limit cards: {sensors['sensors']} sensor entries padded to "
        f"{num(sensors['metadata_json_bytes'])} B of compact JSON (the metadata limit stops it first), and "
        f"one text value, {num(text['metadata_json_bytes'])} B as JSON (the 4096-byte signed-card limit "
        "stops it first).",
        "",
    ]
    return out + _goal_lines(fig["goals"])


def _fig2(fig: dict[str, Any]) -> list[str]:
    out = [
        "## Figure 2: ingest on one core",
        "",
        "**Subject:** signed records decoded, verified and merged per second through `Engine.receive`: an "
        "engine with two established links is fed RECORDS frames built with `encode_message` and "
        f"`FRAME_WHOLE` ({num(fig['frames_per_repetition'])} frames of at most {fig['link_mtu']} B carrying "
        f"{num(fig['records_per_repetition'])} records from {num(fig['distinct_keys'])} distinct keys, a "
        "card and a links record each, every one new, all signed before the timing). "
        f"**Baseline:** {fig['baseline']}, envelopes opened beforehand. **Duplicates:** the same frames fed "
        f"again (flood echoes). **Goal:** {fig['goal']}.",
        "",
        "As specified, the baseline loads the public key for every record; the engine's key cache loads "
        "each key once for its two records, which is part of the real receive path.",
        "",
        f"{fig['repetitions']} repetitions. Subject and baseline alternate, their order flipping every "
        "repetition, and each repetition uses a fresh engine.",
        "",
    ]
    rows = [
        [
            "engine receive path (subject)",
            num(fig["median_subject_records_per_s"]),
            num(fig["median_subject_us_per_record"], 1),
            ", ".join(num(v) for v in fig["subject_records_per_s"]),
        ],
        [
            "bare verify loop (baseline)",
            num(fig["median_baseline_verifies_per_s"]),
            num(fig["median_baseline_us_per_verify"], 1),
            ", ".join(num(v) for v in fig["baseline_verifies_per_s"]),
        ],
        [
            "duplicates dropped",
            num(fig["median_duplicates_per_s"]),
            num(1e6 / fig["median_duplicates_per_s"], 2),
            ", ".join(num(v) for v in fig["duplicates_per_s"]),
        ],
    ]
    out += _table(["path", "median records/s", "µs per record", "every repetition (records/s)"], rows)
    extra = fig["median_subject_us_per_record"] - fig["median_baseline_us_per_verify"]
    out += [
        f"Subject ÷ baseline: **{times(fig['ratio_subject_to_baseline'])}** (the median of the "
        f"per-repetition ratios is {times(fig['ratio_subject_to_baseline_pairwise_median'])}). Duplicates ÷ "
        f"baseline: **{times(fig['ratio_duplicates_to_baseline'], 1)}**. Beyond the signature check the "
        f"engine spends {num(extra, 1)} µs per record (median) on decoding the frame, the message, the "
        "envelope and the payload, the deterministic-encoding checks and the merge.",
        "",
    ]
    return out + _goal_lines(fig["goals"])


def _fig3(fig: dict[str, Any]) -> list[str]:
    latency_ms = fig["link_model"]["latency_s"] * 1000
    reps = "; ".join(
        f"N = {n}: {r['seeds']} seed{'s' if r['seeds'] > 1 else ''}, each with "
        f"{r['metadata_changes_per_seed']} metadata changes, 1 link added and removed, 1 peer killed"
        for n, r in fig["repetitions"].items()
    )
    out = [
        "## Figure 3: propagation in a simulated mesh",
        "",
        "**Subject:** `agent.sim` with the real engines on the LAN link model (`LinkModel()`: "
        f"{latency_ms:g} ms per hop, no loss). **Baseline:** {fig['baseline']}. **Goal:** {fig['goal']}.",
        "",
        f"Repetitions: {reps}. Medians over all samples of a topology and size. Subject times are polled "
        f"every {fig['poll_s'] * 1000:g} ms of simulated time; the baseline's are exact. Hop-optimal time = "
        "eccentricity of the origin (for a link change, the farther of its two ends, in the topology after "
        f"the change) {TIMES} {latency_ms:g} ms.",
        "",
        "Keeping the baseline fair: it starts converged, uses the real record sizes, the same "
        "keepalive/dead-link failure detector (3 s), the same 50 ms links debounce and 0.5 s departure "
        "grace, and no link handshake (which favours it). Each of its rounds costs the full state, whatever "
        "changed.",
        "",
    ]
    for change in ("metadata", "link_add", "link_remove"):
        out += [f"### {CHANGE_NAMES[change]}", ""]
        header = ["topology", "N", "subject time", "÷ hop-optimal"]
        if change != "metadata":
            header.append("÷ hop-optimal after signing")
        header += [
            "gossip time",
            "gossip ÷ hop-optimal",
            "subject ÷ gossip (time)",
            "subject frames / bytes per peer",
            "subject marginal bytes per peer",
            "gossip frames / bytes per peer",
        ]
        rows = []
        for m in fig["medians"]:
            s, b = m[change]["subject"], m[change]["baseline"]
            row = [
                m["topology"],
                num(m["peers"]),
                seconds(s["median_time_s"]),
                times(s["median_ratio_to_hop_optimal"]),
            ]
            if change != "metadata":
                row.append(times(s["median_after_signing_ratio_to_hop_optimal"]))
            row += [
                seconds(b["median_time_s"]),
                times(b["median_ratio_to_hop_optimal"], 1),
                times(m[change]["time_ratio_subject_to_baseline"], 3),
                f"{num(s['median_frames_per_peer'], 1)} / {num(s['median_bytes_per_peer'])}",
                num(s["median_marginal_bytes_per_peer"]),
                f"{num(b['median_frames_per_peer'], 1)} / {num(b['median_bytes_per_peer'])}",
            ]
            rows.append(row)
        out += _table(header, rows)
    out += [
        "For a link change the subject's time includes the link handshake (three message exchanges) and "
        'the 50 ms links debounce before the new links records are signed; "after signing" is the '
        "flooding alone. Frames and bytes per peer are everything sent from the change until "
        f'{fig["tail_s"]:g} s after it reached every peer; "marginal" subtracts what the steady state sends '
        "in that time (it can come out slightly negative: records sent put off keepalives).",
        "",
    ]
    out += _fig3_worst(fig)
    out += ["### Peer killed", ""]
    rows = []
    for m in fig["medians"]:
        s, b = m["kill"]["subject"], m["kill"]["baseline"]
        rows.append(
            [
                m["topology"],
                num(m["peers"]),
                seconds(s["median_time_s"]),
                seconds(b["median_time_s"]),
                times(m["kill"]["time_ratio_subject_to_baseline"]),
                f"{num(s['median_frames_per_peer'], 1)} / {num(s['median_bytes_per_peer'])}",
                f"{num(b['median_frames_per_peer'], 1)} / {num(b['median_bytes_per_peer'])}",
            ]
        )
    header = [
        "topology",
        "N",
        "subject: every peer dropped it",
        "gossip",
        "subject ÷ gossip",
        "subject frames / bytes per peer",
        "gossip frames / bytes per peer",
    ]
    out += _table(header, rows)
    out += [
        "Both include detection (the dead interval: 3 s after the last frame heard from the peer) and "
        "the 0.5 s departure grace.",
        "",
        "### Steady state (no changes)",
        "",
    ]
    rows = []
    for m in fig["medians"]:
        st = m["steady"]
        per_peer = st["subject"]["median_bytes_per_peer_per_s"]
        rows.append(
            [
                m["topology"],
                num(m["peers"]),
                num(m["mean_degree"], 1),
                num(per_peer, 1),
                num(per_peer / m["mean_degree"], 1),
                num(st["subject"]["median_frames_per_peer_per_s"], 2),
                num(st["baseline"]["median_bytes_per_peer_per_s"]),
                times(st["bytes_ratio_baseline_to_subject"], 0),
            ]
        )
    header = [
        "topology",
        "N",
        "mean degree",
        "subject B/s per peer",
        "… per neighbour",
        "subject frames/s per peer",
        "gossip B/s per peer",
        "gossip ÷ subject",
    ]
    out += _table(header, rows)
    flat_rows = []
    for name, info in fig["steady_flatness"].items():
        flat_rows.append(
            [
                name,
                ", ".join(f"{num(v, 1)} (N={n})" for n, v in info["bytes_per_peer_per_s_by_n"].items()),
                _flat(info["max_over_min"]),
                ", ".join(
                    f"{num(v, 1)} (N={n})" for n, v in info["bytes_per_peer_per_neighbour_per_s_by_n"].items()
                ),
                _flat(info["per_neighbour_max_over_min"]),
            ]
        )
    out += [
        "Flat in N? The subject's steady-state bytes per peer per second, and the same per neighbour, "
        f'largest over smallest across sizes; "flat" means within {times(FLAT_SPREAD)} (a threshold chosen '
        "here, not a goal of the issue). A small mesh of the same kind has fewer neighbours per peer (edge "
        "effects), so the per-peer figure can grow with N while the per-neighbour one stays put:",
        "",
    ]
    out += _table(["topology", "B/s per peer", "spread", "B/s per peer per neighbour", "spread"], flat_rows)
    return out


def _flat(spread: float | None) -> str:
    if spread is None:
        return "—"
    return f"{times(spread)}, " + ("flat" if spread <= FLAT_SPREAD else "**not flat**")


def _fig3_worst(fig: dict[str, Any]) -> list[str]:
    worst = max(
        (s["ratio_to_hop_optimal"], r["topology"], r["peers"], r["seed"], s["origin"])
        for r in fig["runs"]
        for s in r["subject"]["metadata"]
    )
    out = [
        f"Slowest single metadata change: {times(worst[0])} the hop-optimal time ({worst[1]}, N={worst[2]}, "
        f"seed {worst[3]}, origin {worst[4]}).",
    ]
    if worst[0] > 1.2:
        out += [
            "Where a change is much slower than hop-optimal on the LAN model, the cause found so far is the "
            "engine's batching: a record waits until `flood_delay` (10 ms) after the link's last frame, "
            "a 12-byte keepalive SUMMARY included. On a line the keepalives of successive links go out in "
            "a wave, and a change that follows such a wave waits 10 ms instead of 5 ms at each hop, up to "
            "twice the hop-optimal time.",
        ]
    return [*out, ""]


def _fig4(fig: dict[str, Any]) -> list[str]:
    lm = fig["link_model"]
    out = [
        "## Figure 4: LoRa-class line of 4",
        "",
        f"**Subject:** four peers in a line over `agent.sim.LORA` ({lm['mtu']}-byte frames, "
        f"{lm['frame_overhead_bytes']} B of overhead per frame, {lm['airtime_per_byte_s'] * 1000:.2f} ms of "
        f"airtime per byte, a 1 % duty-cycle budget of {lm['bytes_per_second']:.3f} B/s, "
        f"{lm['keepalive_s']:g} s keepalives), without loss and with 10 % frame loss. A fifth peer, a "
        f"Bluetooth sensor, hangs off `lora-0` ({fig['side_link_model']}); the link change is that link "
        "being cut and then restored, which changes `lora-0`'s links record. The metadata change is "
        f"`lora-0` publishing new metadata. **Baseline:** {fig['baseline']}. **Goal:** {fig['goal']}.",
        "",
        "Time: until `lora-3`, three radio hops away, holds the new record. Hop-optimal: 3 "
        f"{TIMES} (airtime of the one frame carrying the record + {lm['latency_s'] * 1000:g} ms latency). "
        "Airtime: every radio frame from the change until "
        f"{fig['tail_s']:g} s after it arrived, (bytes + overhead) {TIMES} airtime per byte; in brackets the "
        "part in RECORDS messages. When the link is restored, the time includes its Bluetooth handshake "
        "and the 50 ms links debounce, and the sensor's new links record crosses the radio too. "
        f"Times are polled to within {fig['poll_s'] * 1000:g} ms or 0.1 % of the time taken. "
        f"{fig['repetitions']} seeds per condition; medians. The simulator does not redial a "
        f"link an engine closed, so the benchmark redials after {fig['redial_after_s']:g} s, as a radio "
        "transport would.",
        "",
    ]
    for condition in fig["conditions"]:
        med = condition["medians"]
        out += [f"### {condition['label'].capitalize()}", ""]
        rows = []
        for change, label in LORA_CHANGES:
            r = med[change]
            rows.append(
                [
                    label,
                    num(r["record_bytes"]),
                    f"{seconds(r['subject_median_time_s'])} / {seconds(r['subject_worst_time_s'])}",
                    f"{r['subject_seeds_over_10x_hop_optimal']} of {condition['seeds']}",
                    seconds(r["hop_optimal_s"]),
                    times(r["subject_median_ratio_to_hop_optimal"]),
                    f"{seconds(r['subject_median_airtime_s'])} "
                    f"({seconds(r['subject_median_records_airtime_s'])})",
                    seconds(r["minimum_airtime_s"]),
                    f"{seconds(r['baseline_median_time_s'])} / {seconds(r['baseline_worst_time_s'])}",
                    seconds(r["baseline_median_airtime_s"]),
                ]
            )
        header = [
            "change",
            "record (B)",
            "subject time (median / worst)",
            f"seeds over 10{TIMES} hop-optimal",
            "hop-optimal",
            "÷ hop-optimal (median)",
            "subject airtime (RECORDS)",
            "minimum airtime",
            "gossip time (median / worst)",
            "gossip airtime",
        ]
        out += _table(header, rows)
        q = med["quiet_hour"]
        out += [
            f"Quiet hour: the subject's radios carried {num(q['subject_median_radio_bytes'])} B "
            f"({seconds(q['subject_median_airtime_s'])} of airtime; median over seeds), against a card of "
            f"{num(q['card_bytes'])} B. The worst seed sent {q['subject_max_cards_sent']} card(s) "
            f"({q['subject_max_cards_in_hello']} of them inside HELLOs) and {q['subject_max_records_sent']} "
            "record(s) in RECORDS messages. The gossip baseline's radios carried "
            f"{num(q['baseline_median_radio_bytes'])} B ({seconds(q['baseline_median_airtime_s'])} of "
            f"airtime) in the same hour. Links redialled after an engine closed them, all seeds: "
            f"{condition['redials_total']}.",
            "",
        ]
    if any(c["loss"] > 0 for c in fig["conditions"]):
        out += [
            "With 10 % loss, a lost RECORDS frame is repaired only by the SUMMARY/DIGEST sync, which runs "
            "on the 120 s keepalive, so a change that loses a frame takes minutes instead of about a "
            "second. A run of lost keepalives closes a link as dead, and the benchmark redials it: that "
            "churn is what the lossy quiet hour carries, as new links records announcing each "
            "re-established link. The re-handshakes carry no card: a HELLO names its sender's card by "
            "reference (its 13-byte digest entry) when the far end holds that card already, and the card "
            "goes out only if the far end asks for it.",
            "",
        ]
    return out + _goal_lines(fig["goals"])


def _method_notes() -> list[str]:
    return [
        "## How this is measured",
        "",
        "- `agent/bench/` holds the suite: `sizes.py` (figure 1), `ingest.py` (2), `propagation.py` (3), "
        "`lora.py` (4), `baseline.py` (the push-pull gossip baseline), `simtap.py` (the simulator with a "
        "frame tap and redialling), `report.py` (this page).",
        "- Simulated times are virtual and do not depend on the machine; ingest rates (figure 2) do.",
        "- The baseline's gossip interval is 0.2 s, memberlist's default gossip interval; memberlist's "
        "default push-pull interval (30 s) would make the baseline 150 times slower.",
        "- With frame loss, a simulation is not exactly reproducible from its seed within one process: "
        "the engine keeps links with pending output in a `set` of objects hashed by identity, so the order "
        "in which a peer's links send (and so which frames the seeded loss hits) can differ between runs. "
        "Medians over seeds are quoted for that reason too.",
        "- Tests never check timings: `tests/test_bench.py` runs the quick mode into a temporary directory "
        "and checks only that the results are well formed.",
        "",
    ]


# ---------------------------------------------------------------- stdout


def summary_table(results: dict[str, Any]) -> str:
    """A readable plain-text table of the headline figures, for stdout."""
    f = results["figures"]
    rows: list[tuple[str, ...]] = []
    for r in f["fig1"]["rows"]:
        rows.append(
            (
                "1 sizes",
                r["record"],
                f"{r['cose_bytes']} B",
                f"{r['json_bytes']} B",
                f"{r['ratio_cose_to_json']:.2f}",
            )
        )
    fig2 = f["fig2"]
    baseline_rate = num(fig2["median_baseline_verifies_per_s"])
    rows.append(
        (
            "2 ingest",
            "records/s (median)",
            num(fig2["median_subject_records_per_s"]),
            baseline_rate,
            times(fig2["ratio_subject_to_baseline"]),
        )
    )
    rows.append(
        (
            "2 ingest",
            "duplicates/s (median)",
            num(fig2["median_duplicates_per_s"]),
            baseline_rate,
            times(fig2["ratio_duplicates_to_baseline"], 1),
        )
    )
    for m in f["fig3"]["medians"]:
        where = f"{m['topology']} N={m['peers']}"
        for change in ("metadata", "link_add", "kill"):
            s, b = m[change]["subject"], m[change]["baseline"]
            if change == "kill":
                subject, baseline = seconds(s["median_time_s"]), seconds(b["median_time_s"])
            else:
                subject = f"{seconds(s['median_time_s'])} ({times(s['median_ratio_to_hop_optimal'])} opt)"
                baseline = f"{seconds(b['median_time_s'])} ({times(b['median_ratio_to_hop_optimal'], 1)} opt)"
            rows.append(
                (
                    "3 propagation",
                    f"{where} {change}",
                    subject,
                    baseline,
                    times(m[change]["time_ratio_subject_to_baseline"], 3),
                )
            )
        st = m["steady"]
        rows.append(
            (
                "3 propagation",
                f"{where} steady B/s/peer",
                num(st["subject"]["median_bytes_per_peer_per_s"], 1),
                num(st["baseline"]["median_bytes_per_peer_per_s"]),
                "1/" + times(st["bytes_ratio_baseline_to_subject"], 0),
            )
        )
    for condition in f["fig4"]["conditions"]:
        for change, _ in LORA_CHANGES:
            r = condition["medians"][change]
            rows.append(
                (
                    "4 LoRa",
                    f"{condition['label']}: {change}",
                    f"{seconds(r['subject_median_time_s'])}, air {seconds(r['subject_median_airtime_s'])}",
                    f"{seconds(r['baseline_median_time_s'])}, air {seconds(r['baseline_median_airtime_s'])}",
                    times(r["time_ratio_subject_to_baseline"], 4),
                )
            )
    header = ("figure", "measure", "subject", "baseline", "ratio")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.append("")
    for row in goal_rows(results):
        lines.append(f"goal ({row[0]}): {row[1]}: {row[2]}, target {row[3]}: {row[4].strip('*')}")
    return "\n".join(lines)


def write_doc(results: dict[str, Any], doc: Path) -> None:
    """Write the markdown page and its plots (under ``perf/`` beside it)."""
    plots_dir = doc.parent / "perf"
    progress(f"drawing plots into {plots_dir}")
    plots = make_plots(results, plots_dir)
    if plots is None:
        progress("matplotlib is not importable: no plots")
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(markdown(results, plots, "perf"), encoding="utf-8")


def finite(value: Any) -> bool:
    """True if every number in a JSON-like value is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(finite(v) for v in value)
    return True
