"""Moved to `trainer.evals` (labels, runs, summary, measures); kept while callers move."""

from trainer.evals.labels import *  # noqa: F403
from trainer.evals.labels import (  # noqa: F401  # noqa: F401
    SPLITS,
    Label,
    class_counts,
    classify,
    form_of,
    found_in,
    is_right,
    label,
    read_labels,
    split_of,
    training_mix,
    write_labels,
)
from trainer.evals.measures import *  # noqa: F403
from trainer.evals.measures import HELPED, KNOWN, NEITHER, auroc, bootstrap_ci, over_search, under_search  # noqa: F401
from trainer.evals.runs import *  # noqa: F403
from trainer.evals.runs import Outcome, confidence_sweep, oracle, outcome_of, pick_threshold, run_policies  # noqa: F401
from trainer.evals.summary import *  # noqa: F403
from trainer.evals.summary import compare, letter_report, markdown, plot, summarise  # noqa: F401
