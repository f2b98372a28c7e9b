"""The Evaluator's side: the gate (gate.py) and reading what TFMA measured (evaluation_results.py)."""
