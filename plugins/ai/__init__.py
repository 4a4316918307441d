"""Local AI: text tools, speech-to-text and semantic search served by the ai profile."""
