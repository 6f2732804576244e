"""Credit for the decision (issue #40): the cheap step equals the plain one in loss and gradients, and the two-action
advantage on hand-made groups."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from trainer.train.credit import CREDITS, Sample, advantages, group_advantages, hidden_at, plain_loss, step_loss

EOS = 2


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)  # fmt: skip
    return LlamaForCausalLM(config).float()


def batch() -> list[Sample]:
    system = [1, 7, 8, 9, 10]  # the shared rendered system turn
    return [
        Sample([*system, 11, 12], [20, 21, 22], EOS, reward=1.0, r_stop=1.0, r_search=0.0, group=0),
        Sample([*system, 11, 12], [23, 22], 5, reward=0.9, r_stop=0.0, r_search=0.9, group=0, searched=True),
        Sample([*system, 13, 14, 15], [24, 22], EOS, reward=0.0, r_stop=0.0, r_search=1.0, group=1),
        Sample([*system, 13, 14, 15], [25, 26, 27, 22], 5, reward=1.0, r_stop=0.0, r_search=1.0, group=1),
        Sample([*system, 13, 14, 15], [30, 31], None, reward=0.0, group=1),  # no closed answer: no decision
        # confidence_note: an inserted note between the answer and the decision, read but not trained
        Sample([*system, 11, 12], [20, 22], 5, reward=1.0, r_stop=0.0, r_search=1.0, group=0, note=[40, 41, 42]),
    ]


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("credit", CREDITS)
def test_the_cheap_step_equals_the_plain_step_in_loss_and_gradients(credit: str) -> None:
    model = tiny_model()
    samples = batch()
    advantages(samples, credit)  # type: ignore[arg-type]
    cheap = step_loss(model, samples, EOS, credit, decision_weight=2.0, miss_weight=3.0)  # type: ignore[arg-type]
    cheap.backward()
    fast = grads(model)
    model.zero_grad()
    plain = plain_loss(model, samples, EOS, credit, decision_weight=2.0, miss_weight=3.0)  # type: ignore[arg-type]
    plain.backward()
    slow = grads(model)
    assert cheap.item() == pytest.approx(plain.item(), abs=1e-5)
    assert fast.keys() == slow.keys() and len(fast) == len(list(model.parameters()))  # the prefix gets gradients too
    for name in fast:
        assert torch.allclose(fast[name], slow[name], atol=1e-5), name
    assert any(g.abs().sum() > 0 for g in fast.values())


def test_rows_sharing_a_prompt_run_it_once_with_the_same_states() -> None:
    """A group's prompt run once and fanned out gives every row the states it gets alone, prompts of unequal length
    and a row with nothing after its prompt included; rows that share no prompt take the one-level path."""
    model = tiny_model()
    samples = [*batch(), Sample([1, 7, 8, 9, 10, 13, 14, 15], [], None, reward=0.0, group=1)]
    rows = [s.row for s in samples]
    picks = [(i, p) for i, r in enumerate(rows) for p in range(5, len(r))]
    with torch.no_grad():
        alone = torch.stack([model.model(input_ids=torch.tensor([rows[i]])).last_hidden_state[0, p] for i, p in picks])
        grouped = hidden_at(model, rows, picks, prompt_lengths=[len(s.prompt) for s in samples])
        flat = hidden_at(model, rows, picks)
        distinct = hidden_at(model, rows[1:3], [(0, 6), (1, 7)], prompt_lengths=[7, 8])
    assert torch.allclose(grouped, alone, atol=1e-5) and torch.allclose(flat, alone, atol=1e-5)
    assert torch.allclose(distinct, alone[[picks.index((1, 6)), picks.index((2, 7))]], atol=1e-5)


def test_the_miss_weight_counts_only_wrong_first_answers_decisions() -> None:
    model = tiny_model()
    right = [s for s in batch() if s.decision is not None and s.r_stop > 0]
    wrong = [s for s in batch() if s.decision is not None and s.r_stop <= 0]
    with torch.no_grad():
        for samples in (right, wrong):
            advantages(samples, "brier")
        assert step_loss(model, right, EOS, "brier", miss_weight=2.0).item() == pytest.approx(
            step_loss(model, right, EOS, "brier").item(), abs=1e-6
        )
        answers = step_loss(model, wrong, EOS, "brier", miss_weight=0.0).item()  # the answer tokens' part alone
        once = step_loss(model, wrong, EOS, "brier").item() - answers
        twice = step_loss(model, wrong, EOS, "brier", miss_weight=2.0).item() - answers
    assert once > 0 and twice == pytest.approx(2 * once, rel=1e-4)


def test_two_action_credit_follows_what_each_action_earns() -> None:
    samples = batch()
    advantages(samples, "two_action")
    # the decision's credit is r_search - r_stop whatever was sampled: a right first answer pulls towards stopping
    assert [s.decision_advantage for s in samples[:4]] == [-1.0, 0.9, 1.0, 1.0]
    # the answer's worth is what it earns under the better action: in group 1 every answer could end right but the
    # one without a closed answer
    assert samples[2].answer_advantage == samples[3].answer_advantage > 0 > samples[4].answer_advantage
    plain = batch()
    advantages(plain, "plain")
    assert plain[2].answer_advantage < 0 < plain[3].answer_advantage  # the sampled stop is blamed on the answer
    assert [s.decision_advantage for s in plain] == [s.answer_advantage for s in plain]


def test_the_decision_gradient_moves_p_search_the_way_the_credit_says() -> None:
    model = tiny_model(1)
    known = Sample([1, 7, 8, 11], [20, 22], EOS, reward=1.0, r_stop=1.0, r_search=0.0)
    unknown = Sample([1, 7, 8, 12], [21, 22], EOS, reward=0.0, r_stop=0.0, r_search=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)

    def p_search(s: Sample) -> float:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([s.prompt + s.answer])).logits[0, -1]
        return 1 - torch.softmax(logits, -1)[EOS].item()

    before = p_search(known), p_search(unknown)
    for _ in range(20):
        samples = [known, unknown]
        advantages(samples, "two_action")
        for s in samples:
            s.answer_advantage = 0.0  # the decision alone
        optimizer.zero_grad()
        step_loss(model, samples, EOS, "two_action").backward()
        optimizer.step()
    after = p_search(known), p_search(unknown)
    assert after[0] < before[0] and after[1] > before[1]


def test_group_advantages_are_zero_without_spread() -> None:
    assert group_advantages([0.5, 0.5, 0.5], [0, 0, 0]) == [0.0, 0.0, 0.0]


def test_the_first_turn_and_its_decision_come_from_the_trace(tokenizer) -> None:
    from sem.loop import Trace
    from sem.protocol import ANSWER_CLOSE
    from trainer.train.decide import first_turn

    close = tokenizer.encode(ANSWER_CLOSE, add_special_tokens=False)
    eos = tokenizer.eos_token_id

    def trace(parts: list[tuple[str, bool]], searches: int) -> Trace:
        t = Trace("r", "p", [1, 2])
        for text, generated in parts:
            ids = tokenizer.encode(text, add_special_tokens=False)
            t.completion_ids += ids
            t.loss_mask += [int(generated)] * len(ids)
        t.searches = [object()] * searches  # type: ignore[list-item]
        return t

    answer = tokenizer.encode("<answer>Likre</answer>", add_special_tokens=False)
    stopped = trace([("<answer>Likre</answer>", True)], 0)
    assert first_turn(stopped, close, eos) == (answer, [], eos)  # the loop stopped at an answer that stands
    searched = trace([("<answer>Likre</answer>\n<search> q </search>", True), ("\n<result>x</result>\n", False),
                      ("<answer>Tequu</answer>", True)], 1)  # fmt: skip
    ids, note, decision = first_turn(searched, close, eos)
    assert ids == answer and note == [] and decision == searched.completion_ids[len(answer)] != eos
    no_answer = trace([("Likre", True)], 0)
    assert first_turn(no_answer, close, eos) == (no_answer.completion_ids, [], None)
    # confidence_note: the note inserted after the answer is read before the decision, whichever it was
    note_ids = tokenizer.encode("\n<confidence>93</confidence>", add_special_tokens=False)
    noted_stop = trace([("<answer>Likre</answer>", True), ("\n<confidence>93</confidence>", False)], 0)
    assert first_turn(noted_stop, close, eos) == (answer, note_ids, eos)
    noted_search = trace([("<answer>Likre</answer>", True), ("\n<confidence>41</confidence>", False),
                          ("\n<search> q </search>", True), ("\n<result>x</result>\n", False),
                          ("<answer>Tequu</answer>", True)], 1)  # fmt: skip
    ids, note, decision = first_turn(noted_search, close, eos)
    opener = tokenizer.encode("\n<search> q </search>", add_special_tokens=False)[0]
    assert ids == answer and len(note) == len(note_ids) and decision == opener
