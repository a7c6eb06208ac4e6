"""The registry's aliases (DESIGN.md "Registry", a contract): which version serves
(`champion`), which waits for its gate (`challenger`) and which serves a share of the
traffic under review (`canary`)."""

from __future__ import annotations

CHAMPION, CHALLENGER, CANARY = "champion", "challenger", "canary"
