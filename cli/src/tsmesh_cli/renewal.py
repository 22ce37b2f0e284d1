"""Access tokens from a password login expire; a profile that kept the refresh token renews them."""

from __future__ import annotations

import base64
import json
import os
import time

import httpx

from tsmesh_cli.profiles import Profiles, Target, config_path

MARGIN_S = 30.0


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unverified: only to know when to renew), ``None`` for API tokens."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def renewed(target: Target, now: float | None = None) -> Target:
    """``target`` with a fresh access token when it came from a profile holding a refresh token and
    its access token is about to expire; the profile is saved with the new pair."""
    if target.profile is None or not target.token:
        return target
    expiry = jwt_expiry(target.token)
    if expiry is None or expiry - MARGIN_S > (now if now is not None else time.time()):
        return target
    profiles = Profiles(config_path(os.environ))
    settings = profiles.get(target.profile) or {}
    refresh = settings.get("refresh_token")
    if not refresh:
        return target
    try:
        answer = httpx.post(f"{target.url}/v1/auth/refresh", json={"refresh_token": refresh}, timeout=30).json()
    except (httpx.HTTPError, ValueError):
        return target
    if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
        return target
    settings["token"] = answer["access_token"]
    if isinstance(answer.get("refresh_token"), str):
        settings["refresh_token"] = answer["refresh_token"]
    profiles.put(target.profile, settings, make_current=profiles.current == target.profile)
    return Target(target.url, settings["token"], target.source, target.profile)
