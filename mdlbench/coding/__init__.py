"""Entropy coders, the ``.mdl`` container, the program archive and the environment fingerprint.

Nothing here imports JAX: the decoder reads a container and pins the environment it records
before JAX starts.
"""
