"""Entropy coders, the ``.mdl`` container, the program archive and the environment fingerprint.

Modules: ``coder`` (the push/pop protocol the host coders share and its round-trip check),
``range_coder`` (the host queue coder), ``ans`` (the host stack coder, for bits-back codes),
``device_rans`` (the in-program rANS coder), ``container``, ``env`` (fingerprint and pinning),
``program`` (the decoder's program bits).

Only ``device_rans`` imports JAX (and importing the package imports none of its modules): the
decoder reads a container and pins the environment it records before JAX starts.
"""
