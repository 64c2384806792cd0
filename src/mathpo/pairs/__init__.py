"""Preference and fine-tuning data from graded samples (`mathpo pairs`, and the loop).

- `dpo.build(rows, tokenizer, template, k, threshold)`: whole-solution pairs (DPO-ST);
- `rft.build(rows, tokenizer, template, threshold, cap_percentile)`: rejection-sampled SFT sets;
- `steps.build(rows, backend, tokenizer, template, **opts)`: Step-DPO single-step pairs, the
  first wrong step located by the model's own rollouts (`locate`) or a judge model (`judge`),
  the correct step sampled from the model (`rectify`);
- `formats.load_pairs(path)`: any of these, or Math-Step-DPO-10K / DPO-ST files, as training input.
Each `build` returns (rows, stats); `summary.format_summary(stats)` prints the stats.
"""

KINDS = ("dpo", "rft", "step")
