"""The finetuning-shift study (docs/studies/finetuning-shift.md), end to end: `make study-finetune`.

Each stage is a personaspace command whose output, once complete, is reused on a rerun
(data files and screens are skipped when present, tune runs resume or return at once),
so an interrupted study continues where it stopped. Everything lands in runs/study-ft/:

  1. traits/       persona vectors of the three traits (axis --preset traits)
  2. data/         9 datasets: 3 traits x normal/mild/strong (personaspace data trait)
  3. screen/       their projection difference before training (personaspace screen)
  4. tune/         9 LoRA finetunes of SmolLM2-135M-Instruct (personaspace tune)
  5. shift/        the finetuning shift and trait expression before/after (personaspace shift)
  6. tune/, shift/ preventative steering on the dataset that raised its trait most
  7. study.json    correlations with their random-direction nulls, cross-trait specificity,
                   projection difference vs shift, and prevent / post-hoc / plain steering
                   judged for trait expression and capability
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from study_common import cli

MODEL = "smollm2-135m-instruct"
TRAITS = ("evil", "sycophantic", "hallucinating")
LEVELS = ("normal", "mild", "strong")
PREVENT = (0.1, 0.2, 0.4)
TUNE = ["--epochs", "3", "--lr", "5e-4", "--checkpoint-every", "25"]


def stages(root: Path, samples: int) -> None:
    traits = root / "traits"
    cli("axis", "--preset", "traits", "--traits", ",".join(TRAITS), "--out", str(traits),
        "--null", "none", "--judge", "none")  # fmt: skip
    vectors = f"{traits}:{','.join(TRAITS)}"
    for trait in TRAITS:
        for level in LEVELS:
            name = f"{trait}-{level}"
            data = root / "data" / f"{name}.jsonl"
            if not data.is_file():
                cli("data", "trait", trait, "--level", level, "--out", str(data),
                    "--samples-per-question", str(samples), "--max-new-tokens", "96")  # fmt: skip
            if not (root / "screen" / name / "screen.json").is_file():
                cli("screen", str(data), "--vector", f"{traits}:{trait}", "--out",
                    str(root / "screen" / name), "--max-new-tokens", "96")  # fmt: skip
            cli("tune", str(data), "--out", str(root / "tune" / name), *TUNE)
            shift(root, name, vectors)


def shift(root: Path, name: str, vectors: str) -> None:
    if not (root / "shift" / name / "mean_difference.safetensors").is_file():
        cli("shift", MODEL, str(root / "tune" / name / "final"), "--vectors", vectors,
            "--judge", "local", "--out", str(root / "shift" / name),
            "--max-new-tokens", "64")  # fmt: skip


def strongest(root: Path) -> str:
    """The strong dataset whose finetune raised its own trait's expression most."""
    best, value = "", float("-inf")
    for trait in TRAITS:
        path = root / "shift" / f"{trait}-strong" / "shift.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        change = next(e["change"]["mean"] for e in result["expression"] if e["trait"] == trait)
        if change > value:
            best, value = f"{trait}-strong", change
    return best


def prevent(root: Path, name: str) -> None:
    traits, trait = root / "traits", name.rpartition("-")[0]
    vectors = f"{traits}:{','.join(TRAITS)}"
    for coef in PREVENT:
        run = f"{name}-prevent-{coef:g}"
        cli("tune", str(root / "data" / f"{name}.jsonl"), "--out", str(root / "tune" / run),
            *TUNE, "--prevent", f"{traits}:{trait}:{coef:g}")  # fmt: skip
        shift(root, run, vectors)


def analyse(root: Path, name: str, capability: int) -> dict[str, object]:
    from personaspace.catalogue import load_catalogue
    from personaspace.experiments.finetune_shift import (
        capability_items,
        cross_trait,
        evaluate_condition,
        projection_predicts_shift,
        read_finetune,
        shift_tracks_expression,
    )
    from personaspace.judge.base import make_judge
    from personaspace.models import load_model
    from personaspace.runfolder.paths import read_named_vector
    from personaspace.vectors.intervention import steer

    traits = root / "traits"
    vectors = {t: read_named_vector(f"{traits}:{t}") for t in TRAITS}
    layer = vectors[TRAITS[0]].layer
    assert layer is not None
    names = [f"{t}-{lv}" for t in TRAITS for lv in LEVELS]
    names = [n for n in names if (root / "shift" / n / "mean_difference.safetensors").is_file()]
    finetunes = [read_finetune(n, root / "shift" / n, root / "screen" / n, layer) for n in names]
    out: dict[str, object] = {"layer": layer, "finetunes": [
        {"name": f.name, "shift": f.shift, "expression_change": f.expression,
         "projection_difference": f.projection_difference} for f in finetunes
    ]}  # fmt: skip
    out["shift_vs_expression"] = [
        shift_tracks_expression(finetunes, t, vectors[t].at(layer), n_random=200) for t in TRAITS
    ]
    out["cross_trait"] = cross_trait(finetunes, TRAITS)
    out["projection_vs_shift"] = projection_predicts_shift(finetunes)
    catalogue = load_catalogue()
    judge = make_judge("local", catalogue)
    items = capability_items(catalogue, capability)
    trait = name.rpartition("-")[0]
    vector = vectors[trait]
    assert vector.calibration is not None
    norm = vector.calibration.norm(layer)
    conditions: dict[str, object] = {}
    specs = [("base", MODEL, ()), ("finetuned", str(root / "tune" / name / "final"), ())]
    specs += [(f"prevent {c:g}", str(root / "tune" / f"{name}-prevent-{c:g}" / "final"), ())
              for c in PREVENT
              if (root / "tune" / f"{name}-prevent-{c:g}" / "final").is_dir()]  # fmt: skip
    specs += [(f"post-hoc {-c:g}", str(root / "tune" / name / "final"),
               (steer(layer, vector.at(layer), -c, norm),)) for c in PREVENT]  # fmt: skip
    loaded: dict[str, object] = {}
    for label, spec, interventions in specs:
        lm = loaded.get(spec) or load_model(spec, dtype="auto")
        loaded = {spec: lm}
        started = time.perf_counter()
        conditions[label] = evaluate_condition(
            lm,
            catalogue.traits[trait],
            judge,
            items,
            interventions=interventions,  # type: ignore[arg-type]
        )
        print(f"  evaluated {label} ({time.perf_counter() - started:.0f} s)", flush=True)
    out["steering"] = {"dataset": name, "trait": trait, "conditions": conditions}
    return out


def _r(cell: dict[str, object] | None) -> str:
    if not cell or cell.get("r") is None:
        return "n/a"
    return f"{cell['r']:+.2f} [{cell['low']:+.2f}, {cell['high']:+.2f}] (n={cell['n']})"


def markdown(study: dict[str, object]) -> str:
    """The study's tables as Markdown (what docs/studies/finetuning-shift.md reports)."""
    lines = ["| finetune | shift along own vector | own trait change | projection difference |",
             "|---|---|---|---|"]  # fmt: skip
    for f in study["finetunes"]:  # type: ignore[attr-defined]
        trait = f["name"].rpartition("-")[0]
        pd = f["projection_difference"]
        lines.append(
            f"| {f['name']} | {f['shift'][trait]:+.3f} | {f['expression_change'][trait]:+.1f} | "
            + (f"{pd:+.3f} |" if pd is not None else "n/a |")
        )
    lines += ["", "| trait | r(shift, expression change) | random abs(r) median / p95 | "
              "percentile of the vector |", "|---|---|---|---|"]  # fmt: skip
    for row in study["shift_vs_expression"]:  # type: ignore[attr-defined]
        rnd = row["random_abs_r"]
        lines.append(
            f"| {row['trait']} | {_r(row['vector'])} | {rnd['median']:.2f} / {rnd['p95']:.2f} | "
            f"{row['percentile']:.0f} |"
        )
    cross = study["cross_trait"]
    traits = list(cross)  # type: ignore[arg-type]
    lines += ["", "| vector \\ trait change | " + " | ".join(traits) + " |",
              "|---|" + "---|" * len(traits)]  # fmt: skip
    for v in traits:
        cells = [cross[v][t] for t in traits]  # type: ignore[index]
        lines.append(
            f"| {v} | " + " | ".join("n/a" if c is None else f"{c:+.2f}" for c in cells) + " |"
        )
    pooled = study["projection_vs_shift"]["pooled"]  # type: ignore[index]
    lines += ["", f"projection difference vs shift (pooled): {_r(pooled)}", ""]
    steering = study["steering"]  # type: ignore[index]
    lines += [f"steering on {steering['dataset']} ({steering['trait']}):", "",
              "| condition | trait expression (0-100) | capability accuracy |",
              "|---|---|---|"]  # fmt: skip
    for label, c in steering["conditions"].items():
        e, k = c["expression"], c["capability"]
        lines.append(
            f"| {label} | {e['mean']:.1f} [{e['low']:.1f}, {e['high']:.1f}] | "
            f"{k['accuracy']:.3f} [{k['low']:.3f}, {k['high']:.3f}] (n={k['n']}, "
            f"chance {k['chance']:.3f}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/study-ft")
    parser.add_argument("--samples-per-question", type=int, default=4)
    parser.add_argument("--capability-items", type=int, default=60)
    parser.add_argument(
        "--analyse-only", action="store_true", help="analyse the finetunes already finished"
    )
    args = parser.parse_args()
    root = Path(args.root)
    if not args.analyse_only:
        stages(root, args.samples_per_question)
    name = strongest(root)
    print(f"\npreventative steering on {name}", flush=True)
    if not args.analyse_only:
        prevent(root, name)
    study = analyse(root, name, args.capability_items)
    from personaspace.fileformat import write_json

    write_json(root / "study.json", study)
    (root / "study.md").write_text(markdown(study))
    print(markdown(study))
    print(f"wrote {root / 'study.json'} and {root / 'study.md'}")


if __name__ == "__main__":
    main()
