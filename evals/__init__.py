"""Suites, scoring, runners and the leaderboard."""
