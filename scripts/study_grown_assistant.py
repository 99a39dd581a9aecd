"""The grown-assistant study (docs/studies/grown-assistant.md), end to end: `make study-grown`.

Does the Assistant Axis exist before instruction tuning? The bundled Gemma-3-270M base
model is instruction-tuned here into a chat assistant, and the axis is measured at every
rung of the ladder: a seeded random-init model of its architecture, the base model, and
the tuned model at several points of training. Each stage is a personaspace command (or
library call) whose finished output is reused on a rerun, so an interrupted study
continues where it stopped. Everything lands in --root (default runs/grown/):

  1. magpie.jsonl   requests and answers SmolLM2-135M-Instruct writes itself (data magpie)
  2. tune/          Gemma-3-270M LoRA-tuned on them in Gemma's turn format, a loadable
                    snapshot at step 0 and at every checkpoint (tune --save-snapshots)
  3. axis-<rung>/   an axis run at each rung (the same preset, roles, prompts, questions)
  4. axis-random/   the random-init rung: teacher forced over the final rung's replies
  5. evidence/      did it become an assistant? AI identity, capability, chat format
  6. ladder/        compare --ladder: the axis forming, with its nulls
  7. steer-*/       steer-base both ways, against norm-matched random directions
  8. monitor.json   the validation transcripts under the base and the tuned model,
                    projected on the base axis and on the tuned axis
  9. study.json, study.md   the headline tables

`--dry` runs the whole machinery on tiny random models in a temporary folder (a test).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study_common import cli

from personaspace.fileformat import atomic_write, write_json

CHAT_MODEL = "smollm2-135m-instruct"
BASE_MODEL = "gemma-3-270m"
FRACTIONS = (0.25, 0.5)  # besides step 0 and the end of training
LORA = ["--lora-rank", "16", "--lora-alpha", "32",
        "--lora-targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"]  # fmt: skip


@dataclass
class Plan:
    root: Path
    chat_model: str
    base_model: str
    requests: int
    tune: list[str]
    axis: list[str]
    template: str
    snapshots: int  # checkpoints over the run (snapshot grid)
    steer: list[str]
    capability: int
    monitor_directions: int
    cut_transcripts: int | None = None  # characters per message (tiny models' short context)
    identity_tokens: int = 256  # new tokens of a self-description reply (room to finish)


def lines(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def option(args: list[str], name: str, default: int) -> int:
    """The value of ``name`` in a command's arguments (``default`` when absent)."""
    return int(args[args.index(name) + 1]) if name in args else default


def total_steps(plan: Plan, examples: int) -> int:
    batch = option(plan.tune, "--batch-size", 8)
    steps = option(plan.tune, "--epochs", 1) * math.ceil(examples / batch)
    return min(steps, option(plan.tune, "--max-steps", steps))


def data_and_tune(plan: Plan) -> tuple[Path, int, int]:
    data = plan.root / "magpie.jsonl"
    if not data.is_file():
        cli("data", "magpie", "--model", plan.chat_model, "--out", str(data),
            "--requests", str(plan.requests))  # fmt: skip
    total = total_steps(plan, lines(data))
    every = max(1, round(total / plan.snapshots))
    tune = plan.root / "tune"
    cli("tune", str(data), "--model", plan.base_model, "--out", str(tune),
        "--chat-template", plan.template, "--end-of-turn", "--save-snapshots",
        "--checkpoint-every", str(every), "--keep-checkpoints", "1", *plan.tune)  # fmt: skip
    return tune, total, every


def rungs(plan: Plan, tune: Path, total: int, every: int) -> list[tuple[str, str, float | None]]:
    """(label, model spec, progress) of the base and tuned rungs, in training order."""
    steps = sorted({0, *(every * max(1, round(f * total / every)) for f in FRACTIONS)} - {total})
    out: list[tuple[str, str, float | None]] = [("base", plan.base_model, None)]
    for step in steps:
        if step < total:
            label = f"step-{step}"
            out.append((label, str(tune / "snapshots" / f"step-{step:06d}"), step / total))
    out.append(("final", str(tune / "final"), 1.0))
    return out


def axis_runs(plan: Plan, ladder: list[tuple[str, str, float | None]]) -> None:
    # the two ends and step 0 first: the comparison needs them; then the middle rungs,
    # latest first, each refining the picture of when the axis forms
    order = [ladder[0], ladder[-1], ladder[1], *reversed(ladder[2:-1])]
    threshold = option(plan.axis, "--score-threshold", 3)
    for label, spec, _ in order:
        out = plan.root / f"axis-{label}"
        summary = out / "summary.json"
        done = summary.is_file() and (
            json.loads(summary.read_text(encoding="utf-8"))["config"].get("score_threshold")
            == threshold
        )
        if not done:  # a new run, or a finished one re-aggregated at this threshold
            cli("axis", "--model", spec, "--out", str(out), *plan.axis)


def random_rung(plan: Plan) -> Path:
    from personaspace.experiments.grown import random_init_rung
    from personaspace.models import load_model

    out = plan.root / "axis-random"
    if not (out / "summary.json").is_file():
        print("\nrandom-init rung: teacher forcing the final rung's replies", flush=True)
        random_init_rung(plan.root / "axis-final", out, load_model(plan.base_model))
    return out


def evidence(plan: Plan, ladder: list[tuple[str, str, float | None]]) -> dict[str, Any]:
    from personaspace.catalogue import load_catalogue
    from personaspace.experiments.grown import assistant_evidence
    from personaspace.models import load_model

    folder = plan.root / "evidence"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for label, spec, _ in ladder:
        path = folder / f"{label}.json"
        if not path.is_file():
            print(f"\nevidence: {label}", flush=True)
            found = assistant_evidence(
                load_model(spec),
                load_catalogue(),
                capability=plan.capability,
                identity_tokens=plan.identity_tokens,
            )
            write_json(path, found)
        out[label] = json.loads(path.read_text(encoding="utf-8"))
    return out


def compare_ladder(plan: Plan, ladder: list[tuple[str, str, float | None]], random: Path) -> dict:
    out = plan.root / "ladder"
    if not (out / "ladder.json").is_file():
        runs = [str(random)] + [str(plan.root / f"axis-{label}") for label, _, _ in ladder]
        labels = ["random-init"] + [label for label, _, _ in ladder]
        progress = ["-", "-"] + [f"{p:.4f}" for _, _, p in ladder[1:]]
        cli("compare", "--ladder", *runs, "--labels", ",".join(labels),
            f"--progress={','.join(progress)}", "--base", runs[1], "--random-init", runs[0],
            "--out", str(out))  # fmt: skip
    return json.loads((out / "ladder.json").read_text(encoding="utf-8"))


def reliability(plan: Plan, ladder: list[tuple[str, str, float | None]]) -> dict[str, Any]:
    """Each rung's axis diagnostics at its analysis layer: how far two estimates of the
    same rung's axis agree, and so how close to 1 its cosine with another rung can come."""
    out: dict[str, Any] = {}
    for label, _, _ in ladder:
        summary = json.loads(
            (plan.root / f"axis-{label}" / "summary.json").read_text(encoding="utf-8")
        )
        found = summary["diagnostics"]
        layer = found["analysis_layer"]["layer"]
        by_questions, by_prompts = (
            None if found[key] is None else found[key][layer]
            for key in ("split_half_questions", "split_half_prompts")
        )  # None: too few questions or prompts to split
        out[label] = {
            "layer": layer,
            "roles_kept": summary["counts"]["roles_kept"],
            "cos_axis_pc1": found["bootstrap"]["cos_axis_pc1"],
            "split_half_questions": by_questions,
            "split_half_prompts": by_prompts,
            "reliability": None if by_questions is None else 2 * by_questions / (1 + by_questions),
        }
    return out


def steering(plan: Plan, final_model: str) -> dict[str, Any]:
    base, final = plan.root / "axis-base", plan.root / "axis-final"
    jobs = {
        "base_along_tuned_axis": [str(base), "--axis", str(final)],
        "tuned_along_base_axis": [str(final), "--axis", str(base), "--model", final_model],
    }
    out = {}
    for name, args in jobs.items():
        folder = plan.root / f"steer-{name.replace('_', '-')}"
        if not (folder / "steer_base.json").is_file():
            cli("steer-base", *args, "--out", str(folder), *plan.steer)
        out[name] = json.loads((folder / "steer_base.json").read_text(encoding="utf-8"))
    return out


def monitoring(plan: Plan, final_model: str) -> dict[str, Any]:
    from personaspace.experiments.grown import monitor_across
    from personaspace.models import load_model
    from personaspace.monitor.validate import read_validation_set

    path = plan.root / "monitor.json"
    if not path.is_file():
        axes = {"base_axis": plan.root / "axis-base", "tuned_axis": plan.root / "axis-final"}
        transcripts = read_validation_set()
        if plan.cut_transcripts is not None:
            transcripts = [shortened(t, plan.cut_transcripts) for t in transcripts]
        found = {}
        for label, spec in (("base_model", plan.base_model), ("tuned_model", final_model)):
            print(f"\nmonitoring: {label}", flush=True)
            found[label] = monitor_across(
                load_model(spec), axes, transcripts, directions=plan.monitor_directions
            )
        write_json(path, found)
    return json.loads(path.read_text(encoding="utf-8"))


def shortened(transcript: Any, chars: int) -> Any:
    from dataclasses import replace

    from personaspace.conversation.messages import Message

    cut = [Message(m.role, m.content[:chars]) for m in transcript.messages[:6]]
    return replace(transcript, messages=cut)


def _pct(found: dict[str, Any]) -> str:
    if found.get("share") is None:
        return "-"
    return f"{100 * found['share']:.0f} % [{100 * found['low']:.0f}, {100 * found['high']:.0f}]"


def _null_cell(entry: dict[str, Any], figure: str) -> str:
    null = entry.get("null", {}).get(figure)
    if null is None or entry.get(figure) is None:
        return "-"
    return (
        f"{entry[figure]:.3g} (random {null['random_mean']:.3g} "
        f"[{null['random_low']:.3g}, {null['random_high']:.3g}], p = {null['p']:.2g})"
    )


def report(result: dict[str, Any], root: Path) -> str:
    """study.md: the tables of docs/studies/grown-assistant.md, from study.json."""
    card = result["data_card"]
    limit = next(iter(result["evidence"].values()), {}).get("identity_max_new_tokens", "?")
    out = [
        "# Grown-assistant study: the tables (written by scripts/study_grown_assistant.py)",
        "",
        f"Data: {card['kept']} examples from {card['requests_sampled']} sampled requests "
        f"({card['model_id']}); requests dropped {card['requests_dropped']}; answers dropped "
        f"{card['answers_dropped']}, trimmed to a sentence {card['answers_trimmed_to_sentence']}"
        f"; answer words median {card['answer_words']['median']}.",
        "",
        "## Did it become an assistant? (under each rung's default prompt)",
        "",
        "| rung | progress | chat format | AI identity (self-description) | capability "
        f"(chance) | ended its turn (self-description, {limit} tokens) | identity reply tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    progress = {r["label"]: r["progress"] for r in result["rungs"]}
    for label, found in result["evidence"].items():
        p = progress.get(label)
        cap = found["capability"]
        out.append(
            f"| {label} | {'-' if p is None else f'{100 * p:.0f} %'} "
            f"| {'template' if found['chat_format'] else 'transcript'} "
            f"| {_pct(found['ai_identity'])} | {_pct(cap)} ({100 * cap['chance']:.0f} %) "
            f"| {_pct(found['identity_ended_turn'])} | {found['mean_identity_tokens']:.0f} |"
        )
    out += ["", "## The ladder (compare --ladder)", ""]
    table = (root / "ladder" / "ladder.md").read_text(encoding="utf-8").strip()
    out.append(table.removeprefix("# The ladder").strip())
    out += [
        "",
        "## Each rung's own reliability (its axis run's diagnostics, analysis layer)",
        "",
        "Split halves: the cosine of the axes of two disjoint halves of the questions (of the "
        "role prompts); full-data reliability by Spearman-Brown, 2r / (1 + r), read as if the "
        "cosine were a correlation; the ceiling of cos(axis, final) that two noisy estimates "
        "of one direction would reach, sqrt(rel x rel_final).",
        "",
        "| rung | roles kept | cos(axis, PC1) [95 % CI] | split-half questions / prompts "
        "| reliability | ceiling of cos with final | cos(axis, final) |",
        "|---|---|---|---|---|---|---|",
    ]
    cos_final = {r["label"]: r.get("axis_cos_final") for r in result["ladder"]["rungs"]}
    rel = result["reliability"]
    final_rel = rel[list(rel)[-1]]["reliability"]
    for label, found in rel.items():
        boot, mine = found["cos_axis_pc1"], found["reliability"]
        ceiling = (
            None
            if mine is None or final_rel is None or label == list(rel)[-1]
            else math.sqrt(max(mine, 0.0) * max(final_rel, 0.0))
        )
        cells = [cos_final.get(label), found["split_half_questions"],
                 found["split_half_prompts"], mine, ceiling]  # fmt: skip
        measured, halves_q, halves_p, mine_s, ceiling_s = (
            "-" if v is None else f"{v:.3f}" for v in cells
        )
        interval = "-" if boot is None else (
            f"{boot['estimate']:.3f} [{boot['low']:.3f}, {boot['high']:.3f}]"
        )  # fmt: skip
        out.append(
            f"| {label} | {found['roles_kept']} | {interval} | {halves_q} / {halves_p} "
            f"| {mine_s} | {ceiling_s} | {measured} |"
        )
    out += ["", "## Steering (steer-base), beside norm-matched random directions", ""]
    for name, found in result["steering"].items():
        out += [
            f"### {name.replace('_', ' ')}",
            "",
            "| coef | re-read on axis | helpful share (activation) | helpful - other "
            "(activation) | nearest roles (activation) |",
            "|---|---|---|---|---|",
        ]
        for entry in found["by_coefficient"]:
            out.append(
                f"| {entry['coef_frac']:+g} | {_null_cell(entry, 'reread_on_axis_mean')} "
                f"| {_null_cell(entry, 'helpful_share_activation')} "
                f"| {_null_cell(entry, 'helpful_minus_other_activation')} "
                f"| {', '.join(entry['nearest_by_activation'][:3])} |"
            )
        out.append("")
    out += [
        "## Monitoring: the validation transcripts on each axis",
        "",
        "| model | axis | as expected | drifting - stable (effect size) "
        "| random directions separating as well |",
        "|---|---|---|---|---|",
    ]
    for model, axes in result["monitoring"].items():
        for axis, found in axes.items():
            out.append(
                f"| {model.replace('_', ' ')} | {axis.replace('_', ' ')} "
                f"| {found['n_passed']} of {found['n']} | {found['separation_effect_size']:+.2f} "
                f"| {found['null_percentile']:.1f} % |"
            )
    return "\n".join(out) + "\n"


def study(plan: Plan) -> dict[str, Any]:
    started = time.perf_counter()
    plan.root.mkdir(parents=True, exist_ok=True)
    tune, total, every = data_and_tune(plan)
    ladder = rungs(plan, tune, total, every)
    axis_runs(plan, ladder)
    random = random_rung(plan)
    result: dict[str, Any] = {
        "data_card": json.loads((plan.root / "magpie.card.json").read_text(encoding="utf-8")),
        "tune": {
            "total_steps": total,
            "checkpoint_every": every,
            "losses": str(tune / "losses.jsonl"),
        },
        "rungs": [{"label": lb, "model": spec, "progress": p} for lb, spec, p in ladder],
        "ladder": compare_ladder(plan, ladder, random),
        "reliability": reliability(plan, ladder),
        "evidence": evidence(plan, ladder),
        "steering": steering(plan, ladder[-1][1]),
        "monitoring": monitoring(plan, ladder[-1][1]),
    }
    result["seconds_this_session"] = round(time.perf_counter() - started, 1)
    write_json(plan.root / "study.json", result)
    with atomic_write(plan.root / "study.md") as handle:
        handle.write(report(result, plan.root))
    return result


def dry_plan(root: Path) -> Plan:
    """Tiny random models (a chat one to write the data, a base one to tune) and eight
    roles of the tiny preset: the study's machinery in about a minute."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pipeline_fixtures import make_tiny_model

    chat = make_tiny_model(root / "tiny-chat")
    base = make_tiny_model(root / "tiny-base", chat=False)  # a base model: no chat template
    roles = "therapist,consultant,reviewer,evaluator,coach,ghost,leviathan,bard"
    return Plan(
        root=root / "grown",
        chat_model=str(chat),
        base_model=str(base),
        requests=24,
        tune=["--max-steps", "4", "--batch-size", "1", "--overlong", "drop", "--max-tokens", "400"],
        axis=["--preset", "tiny", "--roles", roles, "--traits", "", "--judge", "none",
              "--min-count", "1", "--max-new-tokens", "6", "--no-role-card", "--null", "none"],
        template="gemma",
        snapshots=4,
        steer=["--random-directions", "2", "--samples", "1", "--steer-tokens", "4",
               "--coefs=0,0.4", "--no-judge-evidence"],
        capability=4,
        monitor_directions=10,
        cut_transcripts=12,
        identity_tokens=32,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/grown")
    parser.add_argument("--requests", type=int, default=640, help="requests for data magpie")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dry", action="store_true", help="tiny random models, a temp folder")
    args = parser.parse_args()
    if args.dry:
        with tempfile.TemporaryDirectory() as tmp:
            result = study(dry_plan(Path(tmp)))
            tables = (Path(tmp) / "grown" / "study.md").read_text(encoding="utf-8")
            print(f"\ndry run done: {len(result['rungs'])} rungs, study.md:\n{tables}", flush=True)
        return
    plan = Plan(
        root=Path(args.root),
        chat_model=CHAT_MODEL,
        base_model=BASE_MODEL,
        requests=args.requests,
        tune=[*LORA, "--lr", "5e-4", "--warmup-steps", "5", "--epochs", str(args.epochs),
              "--batch-size", "8", "--dtype", "bfloat16", "--max-tokens", "512",
              "--overlong", "drop", "--train-tokens", "<start_of_turn>,<end_of_turn>"],
        axis=["--score-threshold", "2"],
        template="gemma",
        snapshots=20,
        steer=["--coefs=-0.4,0,0.4,0.8"],
        capability=40,
        monitor_directions=200,
    )  # fmt: skip
    study(plan)


if __name__ == "__main__":
    main()
