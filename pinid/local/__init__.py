"""Weight-free evidence: local features (``features``), their on-disk store (``store``), the candidate
vote (``vote``) and geometric plus colour verification (``verify``). Imports nothing above ``images``."""
