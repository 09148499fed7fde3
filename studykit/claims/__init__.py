"""The papers' claims, measured with their uncertainty.

`CLAIMS` holds every claim a notebook can test (`table`); each method notebook ends with
`evaluate_claims`, which measures the difference of the claim's two rows on the notebook's own
results, puts a 95 % interval on it (`stats`: a paired bootstrap over the test images with one
seed, a t-interval over seeds with several) and computes the verdict; `scorecard` gathers every
notebook's ``claims.csv`` into ``figures/claims.md``.
"""

from studykit.claims.measure import (
           COLUMNS,
           evaluate_claims,
           measure_claim,
           read_claims,
           row_values,
           unit_values,
)
from studykit.claims.scorecard import write_scorecard
from studykit.claims.stats import (
           VERDICTS,
           Difference,
           difference,
           paired_bootstrap,
           t_interval,
           verdict,
)
from studykit.claims.table import CLAIMS, Claim, claims_of

__all__ = ["CLAIMS", "COLUMNS", "VERDICTS", "Claim", "Difference", "claims_of", "difference",
           "evaluate_claims", "measure_claim", "paired_bootstrap", "read_claims", "row_values",
           "t_interval",
           "unit_values", "verdict", "write_scorecard"]
