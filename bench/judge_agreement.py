"""Agreement of the offline judges with hand labels, beside two labellers' agreement.

Usage:
    python bench/judge_agreement.py [--labels tests/data/judge_labels.jsonl]
        [--traits tests/data/trait_labels.jsonl] [--folds 5] [--write FILE] [--json FILE]

Role adherence (0-3), on every labelled reply (both bundled models):

- ``rule``: the marker-and-similarity rule of ``--judge local`` (``judge.local``) with its
  shipped thresholds, and with thresholds refit in each cross-validation fold;
- ``fitted``: a multinomial logistic model on role-identification features
  (``bench/judge_fitted.py``), refit in each fold;
- ``second_labeller``: a second reading of a subset (``*_second.jsonl``), the ceiling a
  judge can be held to.

Cross-validation is grouped by role (no role is in both the fitting and the scoring
folds), so the figures say how a judge does on characters it was not fitted on. Each
block gives accuracy, Cohen's kappa, quadratic-weighted kappa and the majority-class
baseline. ``--write FILE`` refits the fitted model on all labels and writes its
coefficients there.

``--likelihood`` adds the contrastive likelihood features, read from the bundled models:
``llr``, the mean log-probability per token of the reply under its role prompt minus under
the default prompt ("You are an AI assistant."), from the model that wrote it; ``pmi``, how
much the reply raises Gemma-3-270M's log-probability of the role's name after "The person
speaking above is a" (against a one-word reply). It reports each feature's Spearman with
the labels and the cross-validated agreement of the fitted model with them added
(a few minutes on CPU).

Trait expression (0-100): Spearman of the local trait score with the labels, with its
95 % bootstrap interval, the second labeller's Spearman, and how much of the labels'
spread lies within traits (the part an instruction could move).

Needs scikit-learn (``make dev`` installs it).
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from judge_fitted import FEATURES, RoleModel, role_features
from scipy.stats import bootstrap, spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from personaspace.catalogue import load_catalogue
from personaspace.judge import TraitItem
from personaspace.judge.agreement import cohen_kappa, read_labels
from personaspace.judge.local import LocalJudge, Thresholds, score_role
from personaspace.judge.local import role_features as rule_features

GRID = [round(0.02 * i, 2) for i in range(31)]


def metrics(labels: list[int], preds: list[int]) -> dict[str, Any]:
    return {
        "n": len(labels),
        "accuracy": round(sum(x == y for x, y in zip(labels, preds)) / len(labels), 3),
        "kappa": round(cohen_kappa(labels, preds), 3),
        "kappa_quadratic": round(cohen_kappa(labels, preds, quadratic=True), 3),
        "predicted": dict(sorted(Counter(preds).items())),
    }


def fit_rule(features: list[Any], labels: list[int]) -> Thresholds:
    best, best_t = -2.0, Thresholds()
    for b, a in itertools.combinations(GRID, 2):
        t = Thresholds(in_role=a, some_role=b)
        k = cohen_kappa(labels, [score_role(f, t) for f in features], quadratic=True)
        if k > best:
            best, best_t = k, t
    return best_t


def fit_model(x: np.ndarray, y: np.ndarray, source: str) -> RoleModel:
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    fitted = LogisticRegression(C=1.0, max_iter=5000).fit((x - mean) / scale, y)
    return RoleModel(
        tuple(int(c) for c in fitted.classes_),
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
        tuple(tuple(float(v) for v in row) for row in fitted.coef_),
        tuple(float(v) for v in fitted.intercept_),
        source,
    )


def likelihood_features(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """``llr`` and ``pmi`` per row (see the module docstring)."""
    from personaspace import load_model
    from personaspace.capture.likelihood import mean_logprobs, reply_ids
    from personaspace.conversation.prompts import default_system_prompt, format_prompt

    llr = np.zeros(len(rows))
    pmi = np.zeros(len(rows))
    for alias in sorted({r["model"] for r in rows} | {"gemma-3-270m"}):
        lm = load_model(alias)
        mine = [i for i, r in enumerate(rows) if r["model"] == alias]
        default = default_system_prompt(
            "You are an AI assistant.", lm.display_name, chat_tuned=lm.chat_tuned
        )
        replies = [reply_ids(lm, rows[i]["response"]) for i in mine]
        role = mean_logprobs(
            lm, [format_prompt(lm, rows[i]["question"], rows[i]["system"]) for i in mine], replies
        )
        plain = mean_logprobs(
            lm, [format_prompt(lm, rows[i]["question"], default) for i in mine], replies
        )
        for i, a, b in zip(mine, role, plain):
            llr[i] = (a or 0.0) - (b or 0.0)
        if alias == "gemma-3-270m":

            def asked(text: str, tokenizer: Any = lm.tokenizer) -> Any:
                """Raw text, no template (``mean_logprobs`` reads only ``input_ids``)."""
                ids = tokenizer(f'"{text}"\n\nThe person speaking above is a')["input_ids"]
                return SimpleNamespace(input_ids=list(ids))

            names = [reply_ids(lm, " " + r["role"].replace("_", " ")) for r in rows]
            given = mean_logprobs(lm, [asked(r["response"].strip()) for r in rows], names)
            prior = mean_logprobs(lm, [asked("Hello.") for _ in rows], names)
            pmi = np.array([(a or 0.0) - (b or 0.0) for a, b in zip(given, prior)])
    return {"llr": llr, "pmi": pmi}


def _fit_any(x: np.ndarray, y: np.ndarray) -> Any:
    """The fitted model's rule (ordinal median of a multinomial logistic) on any features."""
    mean, scale = x.mean(0), x.std(0)
    scale[scale == 0] = 1.0
    fitted = LogisticRegression(C=1.0, max_iter=5000).fit((x - mean) / scale, y)

    def score(row: np.ndarray) -> int:
        p = fitted.predict_proba(((row - mean) / scale)[None])[0]
        tail = np.cumsum(p[::-1])[::-1]  # P(score >= class)
        return int(fitted.classes_[max(k for k in range(len(p)) if tail[k] >= 0.5)])

    return score


def second_reading(path: Path, first: dict[str, int]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    pairs = [(first[r["id"]], int(r["label"])) for r in rows if r["id"] in first]
    return metrics([a for a, _ in pairs], [b for _, b in pairs])


def roles_block(
    path: Path, folds: int, write: str | None, likelihood: bool = False
) -> dict[str, Any]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r["role"] != "default"]
    items, labels = read_labels(path)
    groups = [r["role"] for r in rows]
    y = np.array(labels)
    rule = rule_features(items)
    x = np.array(role_features(items))
    rule_cv, fitted_cv = [0] * len(y), [0] * len(y)
    for train, test in GroupKFold(folds).split(x, y, groups):
        t = fit_rule([rule[i] for i in train], [labels[i] for i in train])
        model = fit_model(x[train], y[train], "fold")
        for i in test:
            rule_cv[i] = score_role(rule[i], t)
            fitted_cv[i] = model.score(list(x[i]))
    extra: dict[str, Any] = {}
    if likelihood:
        features = likelihood_features(rows)
        extra["likelihood_spearman"] = {
            k: round(float(spearmanr(v, y).statistic), 3) for k, v in features.items()
        }
        xl = np.column_stack([x, *features.values()])
        with_likelihood = [0] * len(y)
        for train, test in GroupKFold(folds).split(xl, y, groups):
            model = _fit_any(xl[train], y[train])
            for i in test:
                with_likelihood[i] = model(xl[i])
        extra["fitted_with_likelihood_cross_validated"] = metrics(labels, with_likelihood)
    by_model: dict[str, Any] = {}
    for name in sorted({r["model"] for r in rows}):
        index = [i for i, r in enumerate(rows) if r["model"] == name]
        by_model[name] = metrics([labels[i] for i in index], [fitted_cv[i] for i in index])
    result: dict[str, Any] = {
        "labels": str(path),
        "label_distribution": dict(sorted(Counter(labels).items())),
        "by_model_labels": dict(Counter(r["model"] for r in rows)),
        "rule_shipped": metrics(labels, [score_role(f, Thresholds()) for f in rule]),
        "rule_cross_validated": metrics(labels, rule_cv),
        "fitted_cross_validated": metrics(labels, fitted_cv),
        "fitted_cross_validated_by_model": by_model,
        "majority_class": metrics(labels, [Counter(labels).most_common(1)[0][0]] * len(y)),
        "second_labeller": second_reading(
            path.with_name(path.stem + "_second.jsonl"),
            {r["id"]: int(r["label"]) for r in rows},
        ),
        **extra,
        "cross_validation": f"{folds} folds grouped by role",
        "features": list(FEATURES),
    }
    if write:
        model = fit_model(x, y, f"{path.name}: {len(y)} labels")
        Path(write).write_text(json.dumps(model.to_json(), indent=1) + "\n")
        result["written"] = write
    return result


def _spearman(a: list[float], b: list[float]) -> dict[str, Any]:
    rho = float(spearmanr(a, b).statistic)
    ci = bootstrap(
        (np.array(a), np.array(b)),
        lambda u, v: spearmanr(u, v).statistic,
        paired=True,
        vectorized=False,
        n_resamples=999,
        random_state=0,
    ).confidence_interval
    return {"spearman": round(rho, 3), "ci95": [round(ci.low, 3), round(ci.high, 3)], "n": len(a)}


def traits_block(path: Path) -> dict[str, Any]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    catalogue = load_catalogue()
    items = [TraitItem(catalogue.traits[r["trait"]], r["question"], r["response"]) for r in rows]
    scores = LocalJudge().score_traits(items)
    kept = [(s, float(r["label"])) for s, r in zip(scores, rows) if s is not None]
    labels = np.array([float(r["label"]) for r in rows])
    traits = [r["trait"] for r in rows]
    within = np.mean([labels[[t == u for u in traits]].std() for t in set(traits)])
    by_instruction = {
        k: round(float(labels[[r["instruction"] == k for r in rows]].mean()), 1)
        for k in ("pos", "neg")
    }
    second = path.with_name(path.stem + "_second.jsonl")
    first = {r["id"]: float(r["label"]) for r in rows}
    pairs = []
    if second.is_file():
        for line in second.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r["id"] in first:
                    pairs.append((first[r["id"]], float(r["label"])))
    return {
        "labels": str(path),
        "local": _spearman([s for s, _ in kept], [y for _, y in kept]),
        "second_labeller": _spearman([a for a, _ in pairs], [b for _, b in pairs])
        if len(pairs) > 2
        else None,
        "label_sd_overall": round(float(labels.std()), 2),
        "label_sd_within_trait": round(float(within), 2),
        "mean_label_by_instruction": by_instruction,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--labels", default="tests/data/judge_labels.jsonl")
    parser.add_argument("--traits", default="tests/data/trait_labels.jsonl")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--write", default=None, metavar="FILE", help="write the fitted model")
    parser.add_argument("--likelihood", action="store_true", help="add likelihood features")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = {
        "roles": roles_block(Path(args.labels), args.folds, args.write, args.likelihood),
        "traits": traits_block(Path(args.traits)),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
