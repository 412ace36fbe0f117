"""Performance benchmarks (issue 7): training speed against TRL's PRMTrainer, single pass vs the
per-prefix layout, best-of-N scoring with a shared-prefix KV cache, Claude labeling cost, and
model FLOP utilization. Each benchmark writes ``results/bench/<name>.json``; `exp/bench.py` runs them."""
