"""Drift: play the catalogue's scripted conversations and project every reply on the axis.

The scenarios advance together, one turn per step: each step formats every unfinished
conversation so far (ending with its next user message) and generates one batch of
replies. The projection of a reply is read in the same pass that produces it (the mean of
its content tokens' residual stream, dotted with the unit axis): no second forward pass.

Each (condition, scenario) conversation is a transcript file, rewritten atomically after
every turn, so an interrupted run resumes at the turn it reached. Replies are sampled with
a seed per (scenario, turn), the same under every condition, so conditions are paired.

The work item is a condition (``DriftWork``, played by ``play_condition``): its
conversations share each turn's batches, so splitting them would change the batches, and
with them the last bits of the projections. On Ray workers (``run_drift`` given a
``ModelPool``) each condition is played whole on one worker, and this process writes its
transcripts when it returns: the same bytes as one process writes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personaspace.capture import SamplingConfig, generate
from personaspace.catalogue import Scenario
from personaspace.conversation.prompts import default_system, format_prompt
from personaspace.errors import PersonaspaceError
from personaspace.experiments.conditions import Condition, check_file_stems, file_stem
from personaspace.fileformat import read_json, write_json
from personaspace.interventions import intervene
from personaspace.models.device import check_batch_size
from personaspace.models.loading import LoadedModel
from personaspace.pipeline.replicas import Event, ModelFacts, ModelOrPool, ModelPool, facts_of
from personaspace.pipeline.work import item_seed
from personaspace.vectors.axis import Axis

PROJECTION_UNIT = (
    "h . u with u the unit Assistant Axis, h the mean residual stream over the reply's "
    "content tokens, read while generating"
)


DRIFT_SAMPLING = SamplingConfig(max_new_tokens=48, temperature=0.7, top_p=0.9, seed=0)


@dataclass(frozen=True)
class DriftSettings:
    """Decoding settings of a drift run (recorded in every transcript) and the batch size.

    Example:
        >>> DriftSettings().to_json()
        {'max_new_tokens': 48, 'temperature': 0.7, 'top_p': 0.9, 'seed': 0}
    """

    sampling: SamplingConfig = DRIFT_SAMPLING
    batch_size: int | None = None  # None: one that suits the device (replies do not depend on it)

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)

    def to_json(self) -> dict[str, Any]:
        """The settings as transcripts record them (and compare, to resume)."""
        s = self.sampling
        return {
            "max_new_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
        }


def turns_fingerprint(turns: Sequence[str]) -> str:
    """The first 16 hex digits of the sha256 of a scenario's user turns (as a JSON list).

    Example:
        >>> turns_fingerprint(["Hi", "Bye"]) == turns_fingerprint(("Hi", "Bye"))
        True
        >>> turns_fingerprint(["Hi", "Bye"]) == turns_fingerprint(["Hi", "bye"])
        False
    """
    data = json.dumps(list(turns), ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def new_transcript(
    model: ModelFacts,
    scenario: Scenario,
    condition: Condition,
    layers: Sequence[int],
    axis: Axis,
    settings: DriftSettings,
) -> dict[str, Any]:
    """An empty transcript (our format, with the reference release's fields) for a scenario."""
    system = default_system(model.chat_tuned)
    record: dict[str, Any] = {
        "messages": [{"role": "system", "content": system}] if system else [],
        "model": model.model_id,
        "domain": scenario.domain,
        "scenario": scenario.id,
        "topic": scenario.title,
        "turns": 0,
        "user_turns_sha256": turns_fingerprint(scenario.user_turns),
        "condition": condition.name,
        "projections": {
            "layers": list(layers),
            "axis": axis.source,
            "axis_sha256": axis.fingerprint(),
            "unit": PROJECTION_UNIT,
            "per_turn": [],
        },
        "finish_reasons": [],
        "settings": settings.to_json(),
        "engine": model.engine,
        "complete": False,
    }
    if condition.steering_config:
        record["steering_config"] = condition.steering_config
    return record


def _fits(record: dict[str, Any], fresh: dict[str, Any]) -> bool:
    keys = (
        "model",
        "scenario",
        "user_turns_sha256",
        "condition",
        "settings",
        "steering_config",
        "engine",
    )
    if not all(record.get(k) == fresh.get(k) for k in keys):
        return False
    done, want = record.get("projections") or {}, fresh["projections"]
    return all(done.get(k) == want[k] for k in ("layers", "axis_sha256"))


def _load_or_new(path: Path, fresh: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        return fresh
    record = read_json(path)
    if not isinstance(record, dict) or not _fits(record, fresh):
        raise PersonaspaceError(
            f"{path} was made with other settings (model, axis, layers, decoding, condition, "
            "the scenario's user turns, or the device, dtype or sampler)",
            fix="start over (discarding the transcripts), or choose another output folder",
        )
    return record


def _next_user_turn(record: dict[str, Any], scenario: Scenario) -> str | None:
    done = int(record["turns"])
    return scenario.user_turns[done] if done < len(scenario.user_turns) else None


@dataclass(frozen=True)
class DriftWork:
    """A drift run's work item: one condition's conversations, played together from the
    turn each transcript reached (``transcripts``: fresh or resumed, one per scenario)."""

    condition: Condition
    scenarios: tuple[Scenario, ...]
    transcripts: tuple[dict[str, Any], ...]
    layers: tuple[int, ...]
    axis: Axis
    settings: DriftSettings

    @property
    def replies_left(self) -> int:
        """Replies still to generate.

        Example:
            >>> s = Scenario("s", "coding", "t", ("a", "b", "c"))
            >>> work = DriftWork(Condition("none", "none"), (s,), ({"turns": 1},), (1,),
            ...                  None, DriftSettings())
            >>> work.replies_left
            2
        """
        return sum(
            len(s.user_turns) - int(t["turns"]) for s, t in zip(self.scenarios, self.transcripts)
        )


def drift_work(
    model: ModelFacts,
    axis: Axis,
    scenarios: Sequence[Scenario],
    condition: Condition,
    layers: Sequence[int],
    settings: DriftSettings,
    folder: Path,
) -> DriftWork:
    """The work of one condition, resuming the transcripts in ``folder`` (refused when one
    was made with other settings).

    Example:
        >>> work = drift_work(ModelFacts.of(lm), axis, scenarios, baseline(), [15],
        ...                   DriftSettings(), Path("out/transcripts/none"))  # doctest: +SKIP
        >>> work.replies_left  # 28 scenarios of 9 or 10 turns, none played yet  # doctest: +SKIP
        260
    """
    check_file_stems([s.id for s in scenarios], "scenarios")
    transcripts = tuple(
        _load_or_new(
            folder / f"{file_stem(s.id)}.json",
            new_transcript(model, s, condition, layers, axis, settings),
        )
        for s in scenarios
    )
    return DriftWork(condition, tuple(scenarios), transcripts, tuple(layers), axis, settings)


def play_condition(
    lm: LoadedModel, work: DriftWork, on_turn: Callable[[list[int]], object] | None = None
) -> list[dict[str, Any]]:
    """Play ``work``'s conversations to their last user turn, one batch of replies per turn;
    ``on_turn`` hears, after each turn, which conversations it advanced. Returns the
    transcripts (``work.transcripts``, advanced in place).

    Example:
        >>> work = drift_work(ModelFacts.of(lm), axis, scenarios, baseline(), [15],
        ...                   DriftSettings(), Path("out/transcripts/none"))  # doctest: +SKIP
        >>> play_condition(lm, work)[0]["projections"]["per_turn"][:2]  # doctest: +SKIP
        [[4.21], [3.87]]
    """
    records, chosen = list(work.transcripts), list(work.layers)
    axis, seed = work.axis, work.settings.sampling.seed
    config = work.settings.sampling.for_model(lm.chat_tuned)
    while True:
        active = [
            (i, turn)
            for i, (record, scenario) in enumerate(zip(records, work.scenarios))
            if (turn := _next_user_turn(record, scenario)) is not None
        ]
        if not active:
            break
        prompts = [format_prompt(lm, turn, history=records[i]["messages"]) for i, turn in active]
        seeds = [
            item_seed(seed, f"drift/{work.scenarios[i].id}/{records[i]['turns']}")
            for i, _ in active
        ]
        with intervene(lm, work.condition.interventions):
            replies = generate(
                lm,
                prompts,
                config,
                layers=chosen,
                reductions=("response_mean",),
                batch_size=work.settings.batch_size,
                seeds=seeds,
            )
        for (i, turn), reply in zip(active, replies):
            record = records[i]
            assert reply.response_mean is not None
            values = axis.project(reply.response_mean, chosen).tolist() if reply.token_ids else None
            append_turn(record, turn, reply.text, reply.finish_reason, values)
            record["complete"] = record["turns"] == len(work.scenarios[i].user_turns)
        if on_turn is not None:
            on_turn([i for i, _ in active])
    return records


def append_turn(
    record: dict[str, Any],
    user_turn: str,
    reply: str,
    finish_reason: str,
    projection: list[float] | None,
) -> None:
    """Add one exchange to a conversation's transcript record (its messages, turn count,
    per-turn projection and finish reason).

    Example:
        >>> record = {"messages": [], "turns": 0, "projections": {"per_turn": []},
        ...           "finish_reasons": []}
        >>> append_turn(record, "Hi", "Hello", "stop", [1.5])
        >>> record["turns"], record["projections"]["per_turn"], record["finish_reasons"]
        (1, [[1.5]], ['stop'])
    """
    record["messages"] += [
        {"role": "user", "content": user_turn},
        {"role": "assistant", "content": reply},
    ]
    record["turns"] = int(record["turns"]) + 1
    record["projections"]["per_turn"].append(projection)
    record["finish_reasons"].append(finish_reason)


def _save(
    folder: Path, work: DriftWork, records: Sequence[dict[str, Any]], which: Iterable[int]
) -> None:
    for i in which:
        write_json(folder / f"{file_stem(work.scenarios[i].id)}.json", records[i])


def _play_here(
    lm: LoadedModel,
    works: Sequence[DriftWork],
    folders: Sequence[Path],
    on_replies: Callable[[int], object] | None,
) -> list[list[dict[str, Any]]]:
    """Each condition in turn, its transcripts written after every turn."""
    played = []
    for work, folder in zip(works, folders):

        def saved(which: list[int], work: DriftWork = work, folder: Path = folder) -> None:
            _save(folder, work, work.transcripts, which)
            if on_replies is not None:
                on_replies(len(which))

        played.append(play_condition(lm, work, on_turn=saved))
    return played


def _play_on_workers(
    pool: ModelPool,
    works: Sequence[DriftWork],
    folders: Sequence[Path],
    on_replies: Callable[[int], object] | None,
    on_event: Event | None,
) -> list[list[dict[str, Any]]]:
    """The conditions with replies left, each played whole by one of the pool's workers and
    its transcripts written when it returns."""
    played = [list(w.transcripts) for w in works]
    left = [w.replies_left for w in works]
    pending = [i for i, n in enumerate(left) if n]
    results = pool.map(
        play_condition,
        [works[i] for i in pending],
        label=lambda w: f"condition {w.condition.name}",
        on_event=on_event,
    )
    for index, records in results:  # in the order the workers finish them
        i = pending[index]
        _save(folders[i], works[i], records, range(len(records)))
        played[i] = records
        if on_replies is not None:
            on_replies(left[i])
    return played


def run_drift(
    model: ModelOrPool,
    axis: Axis,
    scenarios: Sequence[Scenario],
    conditions: Sequence[Condition],
    layers: Sequence[int],
    settings: DriftSettings,
    out: str | Path,
    *,
    force: bool = False,
    on_replies: Callable[[int], object] | None = None,
    on_event: Event | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Every scenario under every condition; transcripts in ``out/transcripts/<condition>/``
    (the condition's ``file_stem``: ``layers_11:19-p25`` plays into ``layers_11-19-p25/``).

    ``model`` is the model here (transcripts written after every turn) or a ``ModelPool``
    of Ray workers, each playing whole conditions (a condition's transcripts written when it
    returns; ``on_event`` hears of workers that died). Returns ``{condition name:
    [transcript, ...]}`` in the order of ``scenarios``.

    Example:
        >>> runs = run_drift(lm, axis, scenarios, [baseline()], [15], DriftSettings(),
        ...                  "runs/drift-smollm2")  # doctest: +SKIP
        >>> sorted(runs)  # doctest: +SKIP
        ['none']
    """
    if not scenarios:
        raise PersonaspaceError("no scenarios to play", fix="choose domains that have scenarios")
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise PersonaspaceError(f"conditions repeat: {names}", fix="name each condition once")
    check_file_stems(names, "conditions")
    root = Path(out) / "transcripts"
    if force and root.is_dir():
        shutil.rmtree(root)
    facts = facts_of(model)
    axis.check_model(facts)
    folders = [root / file_stem(c.name) for c in conditions]
    works = [
        drift_work(facts, axis, scenarios, c, layers, settings, folder)
        for c, folder in zip(conditions, folders)
    ]
    if isinstance(model, ModelPool):
        played = _play_on_workers(model, works, folders, on_replies, on_event)
    else:
        played = _play_here(model, works, folders, on_replies)
    return {c.name: transcripts for c, transcripts in zip(conditions, played)}


def total_replies(scenarios: Sequence[Scenario], n_conditions: int) -> int:
    """Replies a run generates (for progress bars).

    Example:
        >>> total_replies([Scenario("s", "coding", "t", ("a", "b", "c"))], 2)
        6
    """
    return n_conditions * sum(len(s.user_turns) for s in scenarios)


def pick_scenarios(
    scenarios: dict[str, Scenario], domains: Sequence[str], per_domain: int | None
) -> list[Scenario]:
    """The first ``per_domain`` scenarios (by id) of each domain, domains in the order given.

    Example:
        >>> s = {i: Scenario(i, d, i, ("q",)) for i, d in [("c1", "coding"), ("c2", "coding"),
        ...                                                 ("t1", "therapy")]}
        >>> [x.id for x in pick_scenarios(s, ["therapy", "coding"], 1)]
        ['t1', 'c1']
    """
    if per_domain is not None and per_domain < 1:
        raise PersonaspaceError(
            f"per_domain is {per_domain}",
            fix="ask for at least one scenario per domain",
            param="per_domain",
        )
    known = sorted({s.domain for s in scenarios.values()})
    chosen = []
    for domain in domains:
        if domain not in known:
            raise PersonaspaceError(
                f"no scenarios in domain '{domain}'", fix=f"choose among {', '.join(known)}"
            )
        ids = sorted(i for i, s in scenarios.items() if s.domain == domain)
        chosen += [scenarios[i] for i in ids[:per_domain]]
    return chosen
