"""Chats: channels, direct messages, threads and realtime delivery."""
