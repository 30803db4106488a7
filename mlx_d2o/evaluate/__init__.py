"""`mlx-d2o eval`: is an adapter less harmful, and is it still as helpful as the base model?

One run loads the base model once and puts each adapter on and off it in turn; the base model
without adapter is the reference π_ref and the table's first row. For every model it measures:

- **negatives** (held-out human negatives, "forgetting" in the paper's sense): the mean summed
  log π(y_l|x), the mean log-ratio log π(y_l|x) − log π_ref(y_l|x) (0 for the base, by
  definition), and the per-token NLL (total −log π over all negatives' tokens / their count).
- **harmful** prompts: greedy (or `temp`) responses, judged (`judges`): unsafe rate, refusal
  rate, and the judge's unparseable count.
- **benign** prompts: per-token KL(π || π_ref) on the policy's own responses (the full-vocabulary
  KL at each response position, summed over all responses' tokens, divided by their count),
  distinct-1/2 of the responses, the refusal rate (over-refusal shows here), and with a model
  judge the win rate against the base model's responses.

The reference's work is done once: its negative scores and its responses are cached and
reused for every adapter. Everything lands in `DIR/report.json` (each figure with its n, and the
settings), `DIR/report.md`, `DIR/responses/<model>.jsonl` and, with matplotlib, PNG plots.

Modules: `metrics` (distinct-n, KL, rates), `markers` and `judges` (keyword and model judges),
`run` (the args, the rows, `evaluate`), `report` (owner of the report folder: writes it, reads
it back for the model card), `plots` (training curves, comparison bars).
"""

from ..adapters import Adapter
from ..generation import generate_tokens as generate  # the old `evaluate.generate`
from .judges import KeywordJudge, ModelJudge, is_refusal, make_judge
from .metrics import distinct_n, sequence_kl
from .report import (
    REPORT_VERSION,
    has_report,
    markdown_report,
    markdown_table,
    read_report,
    write_report,
)
from .run import EvalArgs, evaluate

__all__ = [
    "REPORT_VERSION",
    "Adapter",
    "EvalArgs",
    "KeywordJudge",
    "ModelJudge",
    "distinct_n",
    "evaluate",
    "has_report",
    "generate",
    "is_refusal",
    "make_judge",
    "markdown_report",
    "markdown_table",
    "read_report",
    "sequence_kl",
    "write_report",
]
