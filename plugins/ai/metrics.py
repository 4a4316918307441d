"""Prometheus metrics of the AI module, registered like sygmax/observability.py's.

API side (the process that answers /api/v1/ai/*): latency per endpoint and model, outcomes,
rejections, cache hits. AI side (the ai profile): queue depth, inference time, tokens/s,
loaded models (``sygmax status`` and ``doctor`` read ``sygmax_ai_model_loaded``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)

REQUEST_SECONDS = Histogram("sygmax_ai_request_duration_seconds", "AI API requests, end to end",
                            ["endpoint", "model"], buckets=_LATENCY_BUCKETS)
REQUESTS = Counter("sygmax_ai_requests_total", "AI API requests by outcome", ["endpoint", "model", "outcome"])
REJECTIONS = Counter("sygmax_ai_rejections_total", "AI requests refused before running",
                     ["model", "reason"])  # queue_full, quota, unavailable
CACHE = Counter("sygmax_ai_cache_total", "AI result cache lookups", ["endpoint", "model", "result"])

QUEUE_DEPTH = Gauge("sygmax_ai_queue_depth", "Interactive AI requests waiting, per model", ["model"],
                    multiprocess_mode="max")
INFERENCE_SECONDS = Histogram("sygmax_ai_inference_duration_seconds", "Model time per job", ["op", "model"],
                              buckets=_LATENCY_BUCKETS)
TOKENS = Counter("sygmax_ai_generated_tokens_total", "Tokens generated", ["model"])
TOKENS_PER_SECOND = Gauge("sygmax_ai_tokens_per_second", "Generation speed of the latest LLM job", ["model"],
                          multiprocess_mode="max")
JOBS = Counter("sygmax_ai_jobs_total", "Jobs the ai process finished, by outcome", ["op", "model", "outcome"])
MODEL_LOADED = Gauge("sygmax_ai_model_loaded", "Models loaded by this ai process (1 per model)",
                     ["model", "kind", "version", "device"], multiprocess_mode="max")
MODEL_RSS = Gauge("sygmax_ai_model_rss_bytes", "Resident memory a model added when it loaded", ["model"],
                  multiprocess_mode="max")
INDEX_VECTORS = Gauge("sygmax_ai_index_vectors", "Vectors in this ai process's FAISS index",
                      multiprocess_mode="max")
