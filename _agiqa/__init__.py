"""The base every package stands on: crash-safe file writes (:mod:`.atomic`), one error-to-exit-code
mapping (:mod:`.errors`), ``--version`` text (:mod:`.version`) and quiet toolchain output
(:mod:`.quiet`).

Private plumbing, not an API of its own: standard library only, and it imports none of our
packages, so ``teacher``, ``student``, ``distill``, ``export`` and ``edge_runtime`` can all use it
without one stage importing another for file writing (``tests/test_layers.py`` checks both).
"""
