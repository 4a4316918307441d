"""What each text tool asks the LLM, and how its answer is checked.

Prompts are templates here, in code: the user's text only ever fills the user turn, never the
system turn, and options that reach a prompt (a language name, a count) are validated first.
Answers are parsed and validated; tags are generated under a JSON schema (llama.cpp turns it
into a grammar), so the model cannot answer anything but a JSON list of strings.
"""

from __future__ import annotations

import json
import re
import unicodedata

TEXT_OPS = ("summarize", "correct_text", "generate_tags", "translate")
# Which kind of model each operation needs.
OP_KIND = {**{op: "llm" for op in (*TEXT_OPS, "annotate")}, "transcribe": "stt", "entities": "ner",
           "search": "embedding"}
LANGUAGE_PATTERN = r"^[A-Za-z][A-Za-z ()-]{1,39}$"
_TAG_CLEAN = re.compile(r"[^\w+#.-]+")


class JobError(Exception):
    """A job that cannot be done as asked: becomes a problem response with this status and slug."""

    def __init__(self, status: int, slug: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail, self.field = status, slug, detail, field

    def as_dict(self) -> dict:
        return {"status": self.status, "slug": self.slug, "detail": self.detail, "field": self.field}


def _user_text(text: str) -> str:
    return f"Text:\n<<<\n{text}\n>>>"


SYSTEM = {
    "summarize": ("You are a summarisation tool. Summarise the text between <<< and >>> in at most {sentences} "
                  "sentences. Reply with the summary only, in the language of the text."),
    "correct_text": ("You are a proofreading tool. Correct the spelling, grammar and punctuation of the text "
                     "between <<< and >>>. Keep its meaning, language and tone. Reply with the corrected text only."),
    "generate_tags": ("Give up to {max_tags} keywords for the text between <<< and >>>. Each keyword is one or two "
                      "lowercase words taken from the text. Answer in JSON with the key \"tags\"."),
    "translate": ("You are a translation tool. Translate the text between <<< and >>> into {target_language}. "
                  "Reply with the translation only."),
}


def tags_schema(max_tags: int) -> dict:
    return {"type": "object", "required": ["tags"], "properties": {
        "tags": {"type": "array", "minItems": 1, "maxItems": max_tags,
                 "items": {"type": "string", "minLength": 2, "maxLength": 32}}}}


def build(op: str, text: str, params: dict) -> tuple[list[dict], dict]:
    """The chat messages for ``op`` and the generation options (max tokens, temperature, format)."""
    if op not in SYSTEM:
        raise JobError(400, "unknown-operation", f"no text tool called {op!r}")
    values = {"sentences": int(params.get("sentences", 3)), "max_tags": int(params.get("max_tags", 5)),
              "target_language": params.get("target_language", "English")}
    if not re.match(LANGUAGE_PATTERN, values["target_language"]):
        raise JobError(400, "validation-error", "target_language: a language name such as French",
                       field="target_language")
    messages = [{"role": "system", "content": SYSTEM[op].format(**values)}, {"role": "user", "content": _user_text(text)}]
    options: dict = {"temperature": 0.0}
    if op == "generate_tags":
        options["response_format"] = {"type": "json_object", "schema": tags_schema(values["max_tags"])}
        options["max_tokens"] = 24 * values["max_tags"] + 16
    return messages, options


def normalise_tag(tag: str) -> str:
    tag = unicodedata.normalize("NFKC", tag).strip().lower().lstrip("#")
    return _TAG_CLEAN.sub("-", tag).strip("-.")[:40]


def parse(op: str, answer: str, params: dict) -> dict:
    """Check the model's answer and shape the result; an unusable answer is a 502 (the model's fault)."""
    answer = answer.strip()
    if op == "generate_tags":
        try:
            raw = json.loads(answer)["tags"]
        except (ValueError, KeyError, TypeError):
            raise JobError(502, "model-output-invalid", "the model did not answer with a JSON list of tags") from None
        tags: list[str] = []
        for item in raw if isinstance(raw, list) else []:
            tag = normalise_tag(item) if isinstance(item, str) else ""
            if tag and tag not in tags:
                tags.append(tag)
        tags = tags[: int(params.get("max_tags", 5))]
        if not tags:
            raise JobError(502, "model-output-invalid", "the model's tags were all empty")
        return {"tags": tags}
    # Small models sometimes echo the delimiters; they are ours, never part of an answer.
    answer = answer.replace("<<<", "").replace(">>>", "").strip()
    if answer.lower().startswith("text:"):
        answer = answer[5:].strip()
    if not answer:
        raise JobError(502, "model-output-invalid", "the model gave an empty answer")
    return {"text": answer}
