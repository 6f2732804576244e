"""Where the gate's decision could come from: what a model's state holds, at the token that decides, about whether it
knows the answer. Prints a Markdown table.

For each labelled question (the world's train and dev splits by default) the SFT teacher trace is written as
`trainer sft` writes it (its own first answer, then a stop or a search); at the decision token (the one after the
first `</answer>`) this reads (a) the model's own P(search) there (the `\\n` that opens `<search>`, against the end
of turn), and (b) the hidden state of each layer, on which a logistic probe is fitted on train and scored on dev. Both
are AUROCs against the model's own labels (known vs not known). A probe that separates dev while P(search) does not
says the knowledge is there and the SFT did not tie the token to it; a probe that does not either says the state at
that token holds too little for a decision placed after the answer.

    .venv/bin/python bench/decision_probe.py --model runs/world/sft2/final [--labels runs/world/labels/labels.jsonl]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from sem.protocol import ANSWER_CLOSE
from trainer.evals.labels import KNOWN, read_labels
from trainer.evals.measures import auroc
from trainer.evals.tables import markdown_table
from trainer.runtime import labels_corpus, retriever, servable
from trainer.train.decision import decision_mask
from trainer.train.sft import IGNORE, build_sft_rows, first_attempt


@torch.no_grad()
def read_decisions(
    model, tokenizer, rows: list[dict], close_ids: list[int], at_question: bool = False
) -> tuple[list[float], torch.Tensor]:
    """P(search) at each trace's decision token and the hidden states that predict it (layers x traces x width); with
    `at_question`, the states at the prompt's end instead (before any answer: what the question alone tells)."""
    search_id, stop_id = tokenizer.encode("\n", add_special_tokens=False)[0], tokenizer.eos_token_id
    p_search, states = [], []
    for row in tqdm(rows, desc="decision tokens"):
        labels = torch.tensor([row["labels"]])
        at = int(decision_mask(labels, close_ids)[0].nonzero()[0, 0]) - 1  # the position that predicts the decision
        read = int((labels[0] != IGNORE).nonzero()[0, 0]) - 1 if at_question else at  # or the first answer token
        out = model(torch.tensor([row["input_ids"][: at + 1]]), output_hidden_states=True)
        two = out.logits[0, -1, [search_id, stop_id]].float().softmax(-1)
        p_search.append(two[0].item())
        states.append(torch.stack([h[0, read] for h in out.hidden_states]))
    return p_search, torch.stack(states, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--labels", type=Path, default=Path("runs/world/labels/labels.jsonl"))
    parser.add_argument("--at-question", action="store_true", help="Read the states at the prompt's end instead.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the table's rows as JSON here.")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    with servable(args.model) as path:  # an adapter merged into its base, as the evaluations load it
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    close_ids = tokenizer.encode(ANSWER_CLOSE, add_special_tokens=False)
    search = retriever(labels_corpus(args.labels))
    data = {}
    for split in ("train", "dev"):
        labels = [lab for lab in read_labels(args.labels, split) if first_attempt(lab) is not None]
        rows = build_sft_rows(labels, tokenizer, search)
        known = [int(lab.klass == KNOWN) for lab in labels]
        data[split] = (known, *read_decisions(model, tokenizer, rows, close_ids, args.at_question))

    (y_train, p_train, h_train), (y_dev, p_dev, h_dev) = data["train"], data["dev"]
    stop_train, stop_dev = [-p for p in p_train], [-p for p in p_dev]  # a high P(search) says "not known"
    split_means = f"{mean(p_dev, y_dev, 1):.2f} / {mean(p_dev, y_dev, 0):.2f}"
    table = [row("P(search), after the answer", stop_train, y_train, stop_dev, y_dev, split_means)]
    for layer in range(h_train.shape[0]):
        score = linear_probe(h_train[layer], y_train)
        table.append(row(f"linear probe, layer {layer}", score(h_train[layer]), y_train, score(h_dev[layer]), y_dev))
    where = "the prompt's end" if args.at_question else "the decision token"
    print(f"## States at {where}: {args.model} ({len(y_train)} train, {len(y_dev)} dev; AUROC of 'known')\n")
    print(markdown_table(table))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "rows": table}, indent=1))


def row(reading: str, train: list[float], y_train: list[int], dev: list[float], y_dev: list[int], means: str = "-"):
    def score(values: list[float], classes: list[int]) -> float:
        return round(auroc(values, [bool(c) for c in classes]), 3)

    return {"reading": reading, "train AUROC": score(train, y_train), "dev AUROC": score(dev, y_dev),
            "dev mean P(search), known / not": means}  # fmt: skip


def linear_probe(states: torch.Tensor, classes: list[int], l2: float = 1e-2):
    """A logistic probe (standardised features, L2, L-BFGS): the function that scores new states."""
    center, scale = states.mean(0), states.std(0) + 1e-6
    x, y = (states - center) / scale, torch.tensor(classes, dtype=torch.float32)
    w, b = torch.zeros(x.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=500)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return lambda new: (((new - center) / scale) @ w + b).tolist()


def mean(values: list[float], classes: list[int], klass: int) -> float:
    chosen = [v for v, c in zip(values, classes, strict=True) if c == klass]
    return sum(chosen) / max(len(chosen), 1)


if __name__ == "__main__":
    main()
