"""Parity: every optimizer against a float64 NumPy reference and the frameworks."""
