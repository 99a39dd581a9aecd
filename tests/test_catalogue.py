"""The built-in catalogue: scale, uniqueness, filled templates, near-duplicates; user folders."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from personaspace import PersonaspaceError
from personaspace.catalogue import (
    ROLE_CATEGORIES,
    SCENARIO_DOMAINS,
    TRAIT_GROUPS,
    load_catalogue,
    select,
)
from personaspace.catalogue.similarity import jaccard, most_similar_pairs, trigrams
from personaspace.catalogue.validate import placeholders

# Two prompts count as near-duplicates at a word-trigram Jaccard of 0.35 or more, measured
# with each prompt's own character (role or trait) name masked. A templated copy that only
# swaps the name then scores 1.0, and one that also rewords a clause stays well above 0.35
# (see test_threshold_catches_templated_copies); independently written prompts on the same
# character stay far below it.
NEAR_DUPLICATE = 0.35


@pytest.fixture(scope="module")
def cat():  # type: ignore[no-untyped-def]
    return load_catalogue()


def test_roles_scale_and_categories(cat) -> None:  # type: ignore[no-untyped-def]
    assert len(cat.roles) >= 275
    by_category = Counter(r.category for r in cat.roles.values())
    assert set(by_category) == set(ROLE_CATEGORIES)
    assert min(by_category.values()) >= 25
    assert all(len(r.prompts) >= 5 and r.in_role and r.description for r in cat.roles.values())
    for name in ("therapist", "consultant", "coach", "reviewer", "ghost", "leviathan", "bard"):
        assert name in cat.roles, name


def test_default_prompts(cat) -> None:  # type: ignore[no-untyped-def]
    assert len(cat.default_prompts) >= 5
    assert "" in cat.default_prompts
    assert any(placeholders(p) == {"model_name"} for p in cat.default_prompts)


def test_questions(cat) -> None:  # type: ignore[no-untyped-def]
    assert len(cat.questions) >= 240
    by_category = Counter(q.category for q in cat.questions.values())
    assert len(by_category) >= 7 and min(by_category.values()) >= 10
    texts = [q.text.lower() for q in cat.questions.values()]
    assert len(set(texts)) == len(texts)


def test_traits(cat) -> None:  # type: ignore[no-untyped-def]
    assert len(cat.traits) >= 240
    assert set(t.group for t in cat.traits.values()) == set(TRAIT_GROUPS)
    required = {
        "evil",
        "sycophantic",
        "hallucinating",
        "optimistic",
        "impolite",
        "apathetic",
        "humorous",
        "open_to_experience",
        "closed_to_experience",
        "conscientious",
        "unconscientious",
        "extraverted",
        "introverted",
        "agreeable",
        "disagreeable",
        "neurotic",
        "emotionally_stable",
    }
    assert required <= set(cat.traits)
    for t in cat.traits.values():
        assert len(t.pairs) >= 5
        assert len(t.extraction_questions) >= 20 and len(t.evaluation_questions) >= 20
        assert not set(t.extraction_questions) & set(t.evaluation_questions)


def test_scenarios(cat) -> None:  # type: ignore[no-untyped-def]
    by_domain = Counter(s.domain for s in cat.scenarios.values())
    assert set(by_domain) == set(SCENARIO_DOMAINS)
    assert min(by_domain.values()) >= 6
    assert all(len(s.user_turns) >= 8 for s in cat.scenarios.values())


def test_modulation_and_capability(cat) -> None:  # type: ignore[no-untyped-def]
    assert len(cat.modulation) >= 100
    assert len(cat.capability) >= 100
    letters = Counter(c.answer for c in cat.capability.values() if c.kind == "mc")
    assert set(letters) <= set("ABCD") and len(letters) == 4  # correct letter varies
    for item in cat.capability.values():
        if item.kind == "mc":
            assert len(item.choices) == 4
            assert len(set(item.choices)) == 4


def test_every_template_placeholder_is_filled(cat) -> None:  # type: ignore[no-untyped-def]
    role_judge, trait_judge = cat.rubrics["role_adherence"], cat.rubrics["trait_expression"]
    for role in cat.roles.values():
        text = role_judge.render(
            role=role.name,
            role_description=role.description,
            in_role=role.in_role,
            question="Q?",
            answer="A.",
        )
        assert not placeholders(text.replace("{", "{{").replace("}", "}}")) and "{role" not in text
        assert all(not placeholders(p) for p in role.prompts)
    for trait in cat.traits.values():
        text = trait_judge.render(
            trait=trait.name,
            trait_description=trait.description,
            rubric=trait.rubric,
            question="Q?",
            answer="A.",
        )
        assert "{trait" not in text and "{rubric}" not in text
    filled = [p.format(model_name="SmolLM") for p in cat.default_prompts]
    assert "You are SmolLM." in filled


def test_threshold_catches_templated_copies() -> None:
    a = "You are a pirate. Answer every question as a pirate would, with a pirate's voice."
    b = "You are a ghost. Answer every question as a ghost would, with a ghost's voice."
    c = "You are a ghost. Answer each question as a ghost would, in a ghost's voice."
    assert jaccard(trigrams(a, {"pirate"}), trigrams(b, {"ghost"})) == 1.0
    assert jaccard(trigrams(a, {"pirate"}), trigrams(c, {"ghost"})) >= NEAR_DUPLICATE
    # unmasked, the name swap alone would hide the template (0.24)
    assert jaccard(trigrams(a), trigrams(b)) < NEAR_DUPLICATE
    d = "Ahoy. Salt in your beard, a cutlass at your hip: tell them of the sea."
    assert jaccard(trigrams(a, {"pirate"}), trigrams(d, {"pirate"})) < 0.1


def test_no_near_duplicate_system_prompts(cat) -> None:  # type: ignore[no-untyped-def]
    texts = [
        (f"{r.name}[{i}]", p, r.name.split("_"))
        for r in cat.roles.values()
        for i, p in enumerate(r.prompts)
    ]
    worst = most_similar_pairs(texts, top=1)
    assert not worst or worst[0][0] < NEAR_DUPLICATE, worst


def test_no_near_duplicate_trait_instructions(cat) -> None:  # type: ignore[no-untyped-def]
    texts = [
        (f"{t.name}[{i}]", p.pos, t.name.split("_"))
        for t in cat.traits.values()
        for i, p in enumerate(t.pairs)
    ]
    worst = most_similar_pairs(texts, top=1)
    assert not worst or worst[0][0] < NEAR_DUPLICATE, worst


def test_presets_are_deterministic_and_sized(cat) -> None:  # type: ignore[no-untyped-def]
    tiny, quick, full = (select(cat, p) for p in ("tiny", "quick", "full"))
    assert (len(tiny.roles), {len(r.prompts) for r in tiny.roles}, len(tiny.questions)) == (
        4,
        {1},
        2,
    )
    assert 45 <= len(quick.roles) <= 55
    assert {r.category for r in quick.roles} == set(ROLE_CATEGORIES)
    assert {len(r.prompts) for r in quick.roles} == {2} and len(quick.questions) == 12
    assert sum(q.category.startswith("task_") for q in quick.questions) == 6
    assert {"therapist", "consultant", "ghost", "leviathan"} <= {r.name for r in quick.roles}
    assert len(full.roles) == len(cat.roles) and len(full.questions) == len(cat.questions)
    assert all(len(r.prompts) >= 5 for r in full.roles)
    assert [r.name for r in select(load_catalogue(), "quick").roles] == [
        r.name for r in quick.roles
    ]
    with pytest.raises(PersonaspaceError, match="unknown preset 'huge'"):
        select(cat, "huge")


# -- user folders ---------------------------------------------------------------------------

ROLE = {
    "name": "night_baker",
    "category": "profession",
    "description": "Bakes bread before dawn.",
    "prompts": [f"Prompt number {i} for the baker, quite different." for i in range(5)],
    "in_role": "Talks about dough, ovens and the quiet of 4 a.m.",
}


def write(folder: Path, rel: str, data: object) -> None:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_user_folder_merges_and_replaces(tmp_path, cat) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path, "roles/mine.json", [ROLE])
    merged = load_catalogue(tmp_path)
    assert len(merged.roles) == len(cat.roles) + 1 and "night_baker" in merged.roles
    assert merged.questions == cat.questions  # untouched sections stay built-in
    replaced = load_catalogue(tmp_path, replace=True)
    assert list(replaced.roles) == ["night_baker"]
    assert replaced.questions == cat.questions
    override = {**ROLE, "name": "therapist", "description": "My own therapist."}
    write(tmp_path, "roles/mine.json", [override])
    assert load_catalogue(tmp_path).roles["therapist"].description == "My own therapist."


@pytest.mark.parametrize(
    ("rel", "data", "message"),
    [
        (
            "roles/bad.json",
            [{**ROLE, "prompts": ["one", "two"]}],
            "roles/bad.json: entry 0 ('night_baker'): field 'prompts': "
            "needs at least 5 items, has 2",
        ),
        (
            "roles/bad.json",
            [ROLE, {**ROLE, "name": "Bad Name"}],
            "roles/bad.json: entry 1 ('Bad Name'): field 'name'",
        ),
        (
            "roles/bad.json",
            [{k: v for k, v in ROLE.items() if k != "in_role"}],
            "field 'in_role': is missing",
        ),
        ("roles/bad.json", [{**ROLE, "colour": "red"}], "field 'colour': is not a known field"),
        ("roles/bad.json", {"name": "x"}, "roles/bad.json: must hold a JSON list"),
        (
            "questions.json",
            [{"id": "q1", "category": "opinion", "text": ""}],
            "questions.json: entry 0 ('q1'): field 'text': is empty",
        ),
        (
            "capability.json",
            [
                {
                    "id": "c1",
                    "topic": "arithmetic",
                    "kind": "mc",
                    "question": "1+1?",
                    "choices": ["1", "2"],
                    "answer": "C",
                }
            ],
            "field 'answer': must be one of the choice letters A, B",
        ),
        ("default.json", {"prompts": ["You are {nickname}."]}, "unknown placeholder 'nickname'"),
        ("extra.json", [], "extra.json: not a catalogue file"),
    ],
)
def test_malformed_user_files_name_file_entry_field(tmp_path, rel, data, message) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path, rel, data)
    with pytest.raises(PersonaspaceError) as err:
        load_catalogue(tmp_path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_invalid_json_and_duplicate_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "a.json").write_text('[{"name": "x",}]')
    with pytest.raises(PersonaspaceError, match=r"roles/a.json: not valid JSON \(line 1"):
        load_catalogue(tmp_path)
    write(tmp_path, "roles/a.json", [ROLE])
    write(tmp_path, "roles/b.json", [ROLE])
    with pytest.raises(PersonaspaceError, match="'night_baker' is already used in roles/a.json"):
        load_catalogue(tmp_path)


def test_cli_validates_user_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path, "roles/mine.json", [ROLE])
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "personaspace.cli.main",
            "catalogue",
            "--json",
            "--catalogue",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["roles_by_category"]["profession"] >= 1
    write(tmp_path, "roles/mine.json", [{**ROLE, "prompts": []}])
    bad = subprocess.run(
        [sys.executable, "-m", "personaspace.cli.main", "catalogue", "--catalogue", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "personaspace: error: roles/mine.json: entry 0 ('night_baker'): field 'prompts': "
        "needs at least 5 items, has 0: see docs/catalogue.md for the format"
    ]
