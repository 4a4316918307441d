"""Feeds: RSS/Atom/JSON Feed subscriptions, polling, reading and the Google Reader API."""
