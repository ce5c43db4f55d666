"""The offline receptionist: a rule-based brain for when no model is configured (LLM_PROVIDER=mock)."""
