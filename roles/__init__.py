"""Ansible roles that provision a Sygmax node (data files; see appliance/runner.py)."""
