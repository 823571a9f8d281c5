"""Metric suites: quality, fidelity, size, memory, latency, robustness, fairness.

Each suite is one module with `run(env: SuiteEnv) -> list[Metric]`, registered (as data, no
import) in `relman.evaluate.registry`; the "evaluate" job (`relman.evaluate.job:run`) runs the
chosen suites on one version and stores all their metrics in one transaction. Metric names are
stable (gates and plots read them) and documented in each suite's module docstring:

  quality     accuracy, macro_f1, precision|recall|f1|support/<label>, perplexity, loss,
              tokens, eval_samples, eval_throughput_sps
  fidelity    agreement, kl_div | cosine, cosine_min
  size        size_bytes, size_mb, params
  memory      peak_rss_mb, model_rss_mb, peak_gpu_mb (CUDA)
  latency     latency_p50_ms, latency_p90_ms, latency_p95_ms, latency_p99_ms, latency_mean_ms,
              latency_std_ms, throughput_sps (+ "@b<B>[s<S>]" for the other configurations)
  robustness  clean_accuracy, robust_accuracy, robustness_drop, robust_accuracy_min,
              robust_accuracy/<kind>
  fairness    accuracy/<group>, count/<group>, selection_rate/<group>, fairness_gap,
              selection_rate_gap, demographic_parity_diff, equalized_odds_diff

Importing this package is light (no torch); suite modules are worker-only.
"""
