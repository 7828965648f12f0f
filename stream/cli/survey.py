"""`recast survey`: the seed project's audience study - do viewers say "yes" as often as a claimed share?

A chi-square goodness-of-fit test of the observed yes/no counts against `claim` and `1 - claim` of the answers
(one degree of freedom), with a bar chart of observed against expected counts.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from engines.errors import InputError

YES = frozenset({"yes", "y", "true", "1", "ja", "oui", "si", "sí"})
NO = frozenset({"no", "n", "false", "0", "nein", "non"})
MAX_BYTES = 64 << 20


class SurveyError(InputError):
    """Bad responses file; the message names the file and the row."""


@dataclass(frozen=True)
class SurveyResult:
    yes: int
    no: int
    claim: float
    chi2: float
    p_value: float
    blank: int

    @property
    def total(self) -> int:
        return self.yes + self.no

    @property
    def expected(self) -> tuple[float, float]:
        return self.total * self.claim, self.total * (1 - self.claim)

    def format(self, alpha: float = 0.05) -> str:
        ey, en = self.expected
        verdict = "rejected" if self.p_value < alpha else "not rejected"
        share = self.yes / self.total
        return (f"answers {self.total} (yes {self.yes}, no {self.no}; {self.blank} blank rows skipped), "
                f"observed yes share {share:.3f} vs claimed {self.claim:g}\n"
                f"expected yes {ey:.1f}, no {en:.1f}; chi2 = {self.chi2:.4f} (1 dof), p = {self.p_value!r}\n"
                f"the claim is {verdict} at alpha {alpha:g}")


def read_answers(path: Path, column: str | None = "answer") -> tuple[int, int, int]:
    """(yes, no, blank) counts from a CSV with a header row; `column` may be omitted when there is one column."""
    if not path.is_file():
        raise SurveyError(f"{path}: no such file")
    if path.stat().st_size > MAX_BYTES:
        raise SurveyError(f"{path}: larger than {MAX_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise SurveyError(f"{path}: not UTF-8 text ({err})") from err
    reader = csv.DictReader(text.splitlines())
    fields = reader.fieldnames or []
    if not fields:
        raise SurveyError(f"{path}: empty, or no header row")
    names = {f.strip().lower(): f for f in fields}
    if column and column.lower() in names:
        key = names[column.lower()]
    elif len(fields) == 1:
        key = fields[0]
    else:
        raise SurveyError(f"{path}: no column {column!r} (columns: {', '.join(fields)}); pick one with --column")
    yes = no = blank = 0
    for row_number, row in enumerate(reader, start=2):
        value = (row.get(key) or "").strip().lower()
        if not value:
            blank += 1
        elif value in YES:
            yes += 1
        elif value in NO:
            no += 1
        else:
            raise SurveyError(f"{path}: row {row_number}: {row.get(key)!r} is not a yes/no answer")
    if yes + no == 0:
        raise SurveyError(f"{path}: no yes/no answers in column {key!r}")
    return yes, no, blank


def chi_square(yes: int, no: int, claim: float, blank: int = 0) -> SurveyResult:
    from scipy.stats import chisquare

    if not 0 < claim < 1:
        raise ValueError(f"claim must be a share strictly between 0 and 1, got {claim}")
    total = yes + no
    stat, p = chisquare([yes, no], f_exp=[total * claim, total * (1 - claim)])
    return SurveyResult(yes, no, claim, float(stat), float(p), blank)


def plot(result: SurveyResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    labels = ["yes", "no"]
    x = [0, 1]
    ax.bar([i - 0.2 for i in x], [result.yes, result.no], width=0.4, label="observed", color="#3b6ea8")
    ax.bar([i + 0.2 for i in x], list(result.expected), width=0.4, label=f"expected (claim {result.claim:g})",
           color="#c9a227")
    ax.set_xticks(x, labels)
    ax.set_ylabel("answers")
    ax.set_title(f"chi2 = {result.chi2:.2f}, p = {result.p_value:.4g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
