"""Celery task definitions: the names producers send to."""

from tasks.prompts import submit_prompt

__all__ = ["submit_prompt"]
