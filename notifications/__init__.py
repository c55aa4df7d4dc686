"""Alerts and reports: email, Slack, a generic webhook and a dead man's switch, rendered from
Jinja2 templates. Listens to bakup's events; never on a backup's critical path."""
