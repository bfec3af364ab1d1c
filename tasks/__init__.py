"""Celery task definitions: the names producers send to."""

from tasks.prompts import advance, submit_prompt

__all__ = ["advance", "submit_prompt"]
