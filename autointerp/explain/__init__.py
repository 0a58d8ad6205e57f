"""Explain units: prompts from records, best-of-k, the non-LLM baseline; explain_unit/show_unit."""
