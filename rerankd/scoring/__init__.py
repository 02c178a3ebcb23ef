"""Scoring paths: how a family's outputs become one score per document, and their caches."""
