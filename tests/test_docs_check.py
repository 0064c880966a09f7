#!/usr/bin/env python3
"""tools/docs-check's comparison of one line: equal text, or equal but for rounding errors
(exponent-form numbers below 1e-3) within 10%; anything else differs."""
import importlib.machinery
import importlib.util
import os
import sys

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "docs-check")
spec = importlib.util.spec_from_loader("docs_check", importlib.machinery.SourceFileLoader("docs_check", path))
dc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dc)

SAME = [
    ("o 5.40e-16 lse 1.35e-16", "o 5.40e-16 lse 1.35e-16"),
    ("o 5.40e-16 lse 1.35e-16", "o 5.41e-16 lse 1.36e-16"),        # rounding, within 10%
    ("1   1  bf16   2.431e-07  3.117e-08", "1   1  bf16   2.369e-07  3.120e-08"),
]
DIFFER = [
    ("o 5.40e-16", "o 6.40e-16"),                                   # 16% apart
    ("o 5.40e-16", "dq 5.40e-16"),                                  # other text
    ("fwd 1.5e+02 ms", "fwd 1.6e+02 ms"),                           # not an error figure
    ("err 2.0e-02", "err 2.1e-02"),                                 # above 1e-3: exact
    ("1019 cases, 1019 passed", "1019 cases, 1018 passed"),         # plain numbers: exact
    ("a 1e-16", "a 1e-16 b 2e-16"),                                 # a number more
]
bad = [(e, g) for e, g in SAME if not dc.same_line(e, g)] + [(e, g) for e, g in DIFFER if dc.same_line(e, g)]
for e, g in bad:
    print(f"wrong verdict: {e!r} against {g!r}")
assert dc.matches(["head", "...", "o 5.40e-16"], ["head", "x", "y", "o 5.41e-16"])
assert not dc.matches(["head", "o 5.40e-16"], ["head", "x", "o 5.41e-16"])
print(f"{len(SAME) + len(DIFFER) - len(bad)} of {len(SAME) + len(DIFFER)} lines judged right")
sys.exit(1 if bad else 0)
