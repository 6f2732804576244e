"""Evaluation of search gates: measures with their uncertainty, and the rules that keep the test split frozen."""
