"""`mlx-d2o eval`: is an adapter less harmful, and is it still as helpful as the base model?

One run loads the base model once and puts each adapter on and off it in turn; the base model
without adapter is the reference π_ref and the table's first row. For every model it measures:

- **negatives** (held-out human negatives, "forgetting" in the paper's sense): the mean summed
  log π(y_l|x), the mean log-ratio log π(y_l|x) − log π_ref(y_l|x) (0 for the base, by
  definition), and the per-token NLL (total −log π over all negatives' tokens / their count).
- **pairs** (the negatives that also have `chosen`, no judge needed): with the implicit reward
  r(y) = log π(y|x) − log π_ref(y|x), the pair accuracy (r(chosen) > r(rejected)), the mean
  margin, and the mean r(chosen) (the helpful answer should not be pushed down with the bad one).
- **harmful** prompts: greedy (or `temp`) responses, judged (`judges`): unsafe rate, refusal
  rate, and a model judge's mean P(unsafe).
- **benign** prompts: the correct-answer rate where records carry `answer_regex` (exact, no
  judge model); per-token KL(π || π_ref) on the policy's own responses (the full-vocabulary
  KL at each response position, summed over all responses' tokens, divided by their count),
  distinct-1/2 of the responses, the refusal rate, and with a model judge the win rate against
  the base model's responses.
- **overrefusal** prompts (benign requests that sound harmful): the refusal rate, all unwanted.

Every rate and every mean over prompts carries its n and a 95 % interval (`metrics`: Wilson for
rates, a seeded percentile bootstrap over prompts for means). The reference's work is done once:
its scores and its responses are kept and reused for every adapter. Everything lands in
`DIR/report.json` (each figure with its n and interval, and the settings), `DIR/report.md`,
`DIR/responses/<row id>.jsonl` and, with matplotlib, PNG plots.

Modules: `args` (settings and the checks before any work), `metrics` (distinct-n, KL, rates,
intervals), `markers`, `judges` (keyword, regex, contains; correct answers by `answer_regex`),
`labels` (a judge against human labels), `guard` + `prompts` (model judges), `sections` (a
row's figures from per-item values), `names` (row names), `notes` (legend lines shared by
report.md, the plots and the CLI), `progress` (generation with an honest bar), `run`
(`evaluate`), `report` (owner of the report folder: writes it, reads it back for the model
card), `plots` (training curves, comparison bars).
"""

from ..adapters import Adapter
from ..generation import generate_tokens as generate  # the old `evaluate.generate`
from .args import EvalArgs
from .guard import ModelJudge
from .judges import KeywordJudge, RuleJudge, is_refusal, make_judge
from .metrics import distinct_n, sequence_kl
from .names import row_names, run_name
from .report import (
    REPORT_VERSION,
    has_report,
    markdown_report,
    markdown_table,
    read_report,
    write_report,
)
from .run import evaluate

__all__ = [
    "REPORT_VERSION",
    "Adapter",
    "EvalArgs",
    "KeywordJudge",
    "ModelJudge",
    "RuleJudge",
    "distinct_n",
    "evaluate",
    "has_report",
    "generate",
    "is_refusal",
    "make_judge",
    "markdown_report",
    "markdown_table",
    "read_report",
    "row_names",
    "run_name",
    "sequence_kl",
    "write_report",
]
