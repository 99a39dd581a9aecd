"""The axis pipeline's ``openai`` judge pointed at ``personaspace serve``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pipeline_fixtures import make_tiny_model, make_user_catalogue
from serve_fixtures import tiny_engine

from personaspace import PersonaspaceError
from personaspace.capture import SamplingConfig
from personaspace.catalogue import load_catalogue
from personaspace.judge.base import RoleItem
from personaspace.judge.openai import OpenAIJudge, parse_score
from personaspace.monitor.live import chat_turn
from personaspace.pipeline import AxisConfig, run_axis
from personaspace.serve import ServeEngine, ServerThread, create_app


def scripted_judge(engine: ServeEngine) -> ServeEngine:
    """Make the tiny model answer every prompt with "3" and stop.

    Attention and MLP outputs are zeroed, so the last state is the current token's
    embedding: every token but "3" embeds as ``a``, "3" as ``b``; the head maps ``a`` to
    "3" and ``b`` to the end-of-turn token.
    """
    model, tok = engine.lm.model, engine.lm.tokenizer
    three, eos = tok.convert_tokens_to_ids("3"), tok.eos_token_id
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        a, b = torch.zeros(model.config.hidden_size), torch.zeros(model.config.hidden_size)
        a[0], b[1] = 1.0, 1.0
        model.model.embed_tokens.weight[:] = a
        model.model.embed_tokens.weight[three] = b
        model.lm_head.weight.zero_()
        model.lm_head.weight[three] = 50 * a
        model.lm_head.weight[eos] = 50 * b
    return engine


def test_axis_run_judged_by_the_server(tmp_path: Path) -> None:
    model = make_tiny_model(tmp_path / "model")
    catalogue = make_user_catalogue(tmp_path / "catalogue")
    app = create_app(scripted_judge(tiny_engine(context=4096)))
    with ServerThread(app) as server:
        config = AxisConfig(
            model=str(model),
            preset="tiny",
            catalogue=str(catalogue),
            catalogue_replace=True,
            judge="openai",
            judge_model="tiny-llama",
            judge_base_url=server.url + "/v1",
            judge_rate_per_s=1000,
            min_count=1,
            sampling=SamplingConfig(max_new_tokens=8, temperature=0.7, top_p=0.9),
            batch_size=4,
        )
        run = run_axis(config, tmp_path / "run")
        n_requests = app.state.worker.completed
    scores = [json.loads(x) for x in (tmp_path / "run" / "scores.jsonl").read_text().splitlines()]
    roles = [s for s in scores if s["id"].startswith("role/")]
    traits = [s for s in scores if s["id"].startswith("trait")]
    assert len(roles) == 8 and all(s["score"] == 3 for s in roles)
    assert len(traits) == 8 and all(s["trait_score"] == 3.0 for s in traits)
    assert n_requests == 16  # one chat completion per judged reply
    assert run.summary["counts"]["roles_kept"] == 4
    assert (tmp_path / "run" / "axis.safetensors").is_file()


def test_unparseable_judge_answers_are_missing_not_guessed() -> None:
    engine = tiny_engine(context=4096)  # a random model: it answers with noise
    catalogue = load_catalogue()
    role = next(iter(catalogue.roles.values()))
    items = [RoleItem(role, f"Question {i}?", f"Answer {i}.") for i in range(3)]
    with ServerThread(create_app(engine)) as server:
        judge = OpenAIJudge(
            catalogue.rubrics,
            model="tiny-llama",
            base_url=server.url + "/v1",
            api_key=None,
            rate_per_s=1000,
        )
        judge.check()
        scores = judge.score_roles(items)
    rubric = catalogue.rubrics["role_adherence"]
    expected = []
    for it in items:
        prompt = rubric.render(
            role=role.name,
            role_description=role.description,
            in_role=role.in_role,
            question=it.question,
            answer=it.answer,
        )
        reply = chat_turn(
            engine.lm,
            engine.axis,
            [{"role": "user", "content": prompt}],
            sampling=SamplingConfig(max_new_tokens=16),
        ).text
        score = parse_score(reply, *rubric.scale)
        expected.append(None if score is None or score != int(score) else int(score))
    assert scores == expected
    assert None in scores  # the noise did not parse as a 0-3 score and was not guessed


def test_judge_check_against_a_server_with_an_api_key(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rubrics = load_catalogue().rubrics
    app = create_app(scripted_judge(tiny_engine(context=4096)), api_key="s3cret")
    with ServerThread(app) as server:
        url = server.url + "/v1"
        for key in (None, "wrong"):
            judge = OpenAIJudge(rubrics, model="tiny-llama", base_url=url, api_key=key)
            with pytest.raises(PersonaspaceError) as info:
                judge.check()
            text = str(info.value)
            assert "\n" not in text and f"the judge endpoint {url} refused" in text
            assert "HTTP 401: missing or wrong API key" in text
            assert "check --judge-base-url and the API key" in text
        judge = OpenAIJudge(
            rubrics, model="tiny-llama", base_url=url, api_key="s3cret", rate_per_s=1000
        )
        judge.check()
        role = next(iter(load_catalogue().roles.values()))
        assert judge.score_roles([RoleItem(role, "Question?", "Answer.")]) == [3]
