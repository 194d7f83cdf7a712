"""Parsing ``spec.model.source`` URIs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    scheme: str  # hf, s3, gs, pvc, file
    location: str  # repo id, bucket/path, claim/path or absolute path
    revision: str | None = None

    @property
    def repo_id(self) -> str | None:
        return self.location if self.scheme == "hf" else None

    @property
    def claim(self) -> str | None:
        return self.location.split("/", 1)[0] if self.scheme == "pvc" else None

    @property
    def claim_path(self) -> str:
        return (
            self.location.split("/", 1)[1] if self.scheme == "pvc" and "/" in self.location else ""
        )

    @property
    def display_name(self) -> str:
        """Last path element: used for naming and display."""
        return self.location.rstrip("/").rsplit("/", 1)[-1]


def parse_source(uri: str) -> Source:
    scheme, _, rest = uri.partition("://")
    if scheme == "hf":
        repo, _, rev = rest.partition("@")
        return Source("hf", repo, rev or None)
    if scheme == "file":
        return Source("file", rest if rest.startswith("/") else "/" + rest)
    return Source(scheme, rest)
