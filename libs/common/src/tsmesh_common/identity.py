"""The canonical form of a login identity, shared by every limiter that counts login attempts.

Two spellings of one account (surrounding spaces, letter case, full-width or other compatibility
characters) must share one budget, at the gateway and in auth alike: ``NFKC``, trimmed, then
``casefold`` (which also folds what ``lower`` leaves apart, such as sharp s and "ss", or the two lower-case sigmas),
then ``NFKC`` again (case folding can undo it). Case folding is coarser than the ``lower``-based
form auth stores addresses in, so every spelling that finds a stored account counts against that
account's one budget. Nothing is validated here: the gateway counts before it knows whether the
address is well formed.
"""

from __future__ import annotations

import unicodedata


def canonical_login_name(text: str) -> str:
    """``text`` (an e-mail address or a tenant name) in the form login attempts are counted under."""
    folded = unicodedata.normalize("NFKC", text).strip().casefold()
    return unicodedata.normalize("NFKC", folded)


def login_identity(tenant: str, email: str) -> str:
    """The key of one account's login budget: ``login:<tenant>:<email>``, both canonical."""
    return f"login:{canonical_login_name(tenant)}:{canonical_login_name(email)}"
