"""Everything that makes step labels: generators (local, vLLM, Claude), verifiers (rules, Claude
judge, Monte-Carlo), HE/SE and first-error labels, the resumable main-job pipeline and the Claude
request cache."""
