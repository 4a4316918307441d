"""Backups: the daily scheduled backup with retention, run by the scheduler profile."""
