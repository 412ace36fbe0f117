"""Everything that makes step labels, in the order a labelling run uses it:

- `generate`: solution writers (a local model through transformers or vLLM, Claude);
- `verify`: step verifiers behind one contract (`verify.Verifier`) made by name with
  `verify.make_verifier` (rules, Claude judge, Monte-Carlo rollouts);
- `labels`: verdicts -> HE/SE step rewards, Monte-Carlo estimates, first-error labels;
- `pipeline`: the resumable stages (mine, generate, grade, records) of the main job;
- `claude`, `prices`: what Claude jobs share (cache, budget, batches) and the one price table;
- `progress`: one progress bar per stage.
"""
