"""The models themselves, loaded once by the ai process. Only the ai process imports this module.

Heavy libraries (llama_cpp, faster_whisper, onnxruntime, spacy, faiss) are imported inside
the loaders, so importing the plugin never loads them: the api and worker profiles stay
small (tests/ai/test_profile.py checks it). Each engine is used from one thread at a time
(the ai process serialises calls per model with a lock), which is what llama.cpp needs.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from plugins.ai.tasks import JobError

SAMPLE_RATE = 16_000


def _threads(configured: int) -> int:
    return configured or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def gpu_present() -> bool:
    """An NVIDIA GPU the driver exposes (the only kind llama.cpp's CUDA build and CTranslate2 use)."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia/version").exists()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Engine:
    name: str
    kind: str
    version: str
    path: str
    device: str = "cpu"
    rss_bytes: int = 0  # resident memory the load added
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        """Drop the model; what it held is freed when the last reference goes."""


class LlmEngine(Engine):
    def __init__(self, name: str, version: str, path: str, *, threads: int, gpu_layers: int, context: int) -> None:
        super().__init__(name, "llm", version, path)
        import llama_cpp

        offload = llama_cpp.llama_supports_gpu_offload() and gpu_present()
        self.device = "gpu" if offload else "cpu"
        self.context = context
        self.model = llama_cpp.Llama(
            model_path=path, n_ctx=context, n_threads=_threads(threads), n_threads_batch=_threads(threads),
            n_gpu_layers=gpu_layers if offload else 0, verbose=False, seed=0,
        )

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenize(text.encode(), add_bos=False))

    def generate(self, messages: list[dict], max_tokens: int, options: dict,
                 cancelled: Callable[[], bool]) -> Iterator[str]:
        """Yield the answer piece by piece; stops early when ``cancelled()`` turns true."""
        stream = self.model.create_chat_completion(messages=messages, max_tokens=max_tokens, stream=True,
                                                   top_p=0.9, repeat_penalty=1.1, **options)
        try:
            for chunk in stream:
                if cancelled():
                    return
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    yield piece
        finally:
            stream.close()

    def close(self) -> None:
        self.model.close()


def decode_audio(data: bytes, max_seconds: float, timeout_s: float = 120) -> np.ndarray:
    """Any container ffmpeg reads (ogg/opus, mp3, wav, m4a, ...) -> 16 kHz mono float32 samples.

    ffmpeg reads from stdin and writes raw samples to stdout; no temporary files. A file it
    cannot decode is the caller's mistake (400), never a crash of the ai process.
    """
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", "pipe:0", "-t", str(max_seconds),
               "-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    try:
        done = subprocess.run(command, input=data, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise JobError(400, "unreadable-audio", f"decoding the audio took longer than {timeout_s:g}s") from None
    except FileNotFoundError:
        raise JobError(503, "ai-misconfigured", "ffmpeg is not installed on the ai host") from None
    samples = np.frombuffer(done.stdout, dtype=np.float32)
    if done.returncode != 0 or samples.size == 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        detail = reason[-1][:200] if reason else "no audio stream found"
        raise JobError(400, "unreadable-audio", f"the file is not audio ffmpeg can decode: {detail}", field="file")
    return samples


class SttEngine(Engine):
    def __init__(self, name: str, version: str, path: str, *, threads: int) -> None:
        super().__init__(name, "stt", version, path)
        from faster_whisper import WhisperModel

        self.device = "cuda" if gpu_present() else "cpu"
        try:
            self.model = WhisperModel(path, device=self.device, compute_type="default", cpu_threads=_threads(threads))
        except (RuntimeError, ValueError):
            if self.device == "cpu":
                raise
            # CTranslate2 without CUDA support (the PyPI wheel has it; a source build may not)
            self.device = "cpu"
            self.model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=_threads(threads))
        self.device = "gpu" if self.device == "cuda" else "cpu"

    def transcribe(self, samples: np.ndarray, language: str | None, cancelled: Callable[[], bool]) -> dict:
        segments, info = self.model.transcribe(samples, language=language, beam_size=1, vad_filter=False)
        out = []
        for segment in segments:  # a generator: decoding happens while we iterate
            if cancelled():
                break
            out.append({"start": round(segment.start, 2), "end": round(segment.end, 2), "text": segment.text.strip()})
        return {"text": " ".join(part["text"] for part in out).strip(), "segments": out,
                "language": info.language, "duration": round(len(samples) / SAMPLE_RATE, 3)}


class EmbeddingEngine(Engine):
    """Sentence embeddings from an ONNX BERT-style encoder: mean pooling, then L2 normalisation."""

    def __init__(self, name: str, version: str, path: str, *, threads: int, tokenizer: str | None = None) -> None:
        super().__init__(name, "embedding", version, path)
        import onnxruntime
        from tokenizers import Tokenizer

        file = Path(path)
        if file.is_dir():
            file = file / "model.onnx"
        tokenizer_file = Path(tokenizer) if tokenizer else file.parent / "tokenizer.json"
        if not tokenizer_file.exists():
            raise FileNotFoundError(f"{tokenizer_file}: an ONNX embedding model needs tokenizer.json beside it "
                                    f"or options.tokenizer")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = _threads(threads)
        providers = ["CPUExecutionProvider"]
        if gpu_present() and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
            self.device = "gpu"
        self.session = onnxruntime.InferenceSession(str(file), options, providers=providers)
        self.inputs = {item.name for item in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(max_length=256)
        self.tokenizer.enable_padding()
        self.dimension = int(self.session.get_outputs()[0].shape[-1])

    def embed(self, texts: list[str], batch: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch):
            encodings = self.tokenizer.encode_batch(texts[start:start + batch])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feed)[0]
            weights = mask[..., None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[start:start + len(encodings)] = pooled / np.clip(norms, 1e-12, None)
        return out


class NerEngine(Engine):
    def __init__(self, name: str, version: str, path: str) -> None:
        super().__init__(name, "ner", version, path)
        import spacy

        # Only the components NER needs: faster, and less memory.
        self.nlp = spacy.load(path, exclude=["parser", "lemmatizer", "attribute_ruler", "senter"])

    def entities(self, text: str) -> list[dict]:
        doc = self.nlp(text)
        return [{"text": ent.text, "label": ent.label_, "start": ent.start_char, "end": ent.end_char}
                for ent in doc.ents]


def load_engine(row: dict, settings) -> Engine:
    """Load one registry row (name, kind, path, version, options) with the [ai] settings."""
    kind, name, version, options = row["kind"], row["name"], row["version"], row.get("options") or {}
    path = str(Path(settings.models_dir, row["path"])) if not os.path.isabs(row["path"]) else row["path"]
    if not Path(path).exists():
        raise FileNotFoundError(f"model {name}: {path} does not exist")
    before = rss_bytes()
    started = time.monotonic()
    if kind == "llm":
        engine: Engine = LlmEngine(name, version, path, threads=settings.threads, gpu_layers=settings.gpu_layers,
                                   context=int(options.get("context", settings.context_tokens)))
    elif kind == "stt":
        engine = SttEngine(name, version, path, threads=settings.threads)
    elif kind == "embedding":
        engine = EmbeddingEngine(name, version, path, threads=settings.threads, tokenizer=options.get("tokenizer"))
    elif kind == "ner":
        engine = NerEngine(name, version, path)
    else:
        raise ValueError(f"model {name}: unknown kind {kind!r}")
    engine.rss_bytes = max(0, rss_bytes() - before)
    engine.load_seconds = time.monotonic() - started
    return engine
