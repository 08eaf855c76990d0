"""Sequence-mixing kernels, one folder per operator (see shared DESIGN: chunk.py, recurrent.py, reference.py)."""
