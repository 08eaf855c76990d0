"""Evaluation of trained runs: validation perplexity at 1x/2x length, MQAR grids, S-NIAH, lm-eval-harness tasks,
and generation on the recurrent decode path (gdn-eval, gdn-generate, gdn-lm-eval)."""
