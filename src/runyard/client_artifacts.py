"""The Python SDK's artifact methods: a run's listing, page by page, and its files downloaded
(`Client` has them; kept here so that the client's module holds its requests by concept)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from runyard.client_downloads import all_listed, save
from runyard.client_guards import MAX_PAGES, ClientError, M, destination, next_cursor, segment
from runyard.schemas import ArtifactList

if TYPE_CHECKING:
    import httpx  # imported by the client's connection only: a server never loads it


class ArtifactMethods:
    """Mixed into `Client`, which gives the connection and the checks of an answer."""

    http: httpx.Client

    def _check(self, resp: httpx.Response) -> httpx.Response:
        raise NotImplementedError  # the Client's

    def _answer(self, model: type[M], resp: httpx.Response) -> M:
        raise NotImplementedError  # the Client's

    def artifacts(self, run_id: str, cursor: str | None = None) -> ArtifactList:
        params = {"cursor": cursor} if cursor else {}
        resp = self.http.get(f"/v1/runs/{segment(run_id)}/artifacts", params=params)
        return self._answer(ArtifactList, resp)

    def artifact_pages(self, run_id: str) -> Iterator[ArtifactList]:
        """Every page of the run's artifacts, in order (a cursor that comes back, or more
        than MAX_PAGES pages, is a ClientError)."""
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            listing = self.artifacts(run_id, cursor)
            yield listing
            if listing.next_cursor is None:
                return
            cursor = next_cursor(listing.next_cursor, seen)
        raise ClientError(f"more than {MAX_PAGES} pages of artifacts")

    def download_all(self, run_id: str, root: Path, *, overwrite: bool = False) -> Iterator[Path]:
        """Every artifact of the run (every page of them) into `root`, each where its path
        says inside it: a path that would land elsewhere is a ClientError, and so is a file
        there already unless `overwrite` (the server names them: `.bashrc`, into a home).
        A listing that left declared entries out raises PartialListingError once every file
        it listed is saved: "all" was not all, and no caller takes it for all in silence."""
        for listing in all_listed(self.artifact_pages(run_id)):
            for a in listing.artifacts:
                dest = destination(root, a.path)
                if not overwrite and (dest.exists() or dest.is_symlink()):
                    raise ClientError(
                        f"{dest} exists: not overwritten (overwrite=True, --overwrite)"
                    )
                yield self.download(run_id, a.path, dest, a.size)

    def download(self, run_id: str, path: str, dest: Path, size: int | None = None) -> Path:
        """Download one artifact to `dest` (a file path), streaming; `size`, when known (the
        listing's), is the most it may be. The path is sent percent-encoded segment by
        segment: a `?`, `#` or `%` in a name is part of it. `dest` appears only once whole."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        url = f"/v1/runs/{segment(run_id)}/artifacts/{quote(path, safe='/')}"
        with self.http.stream("GET", url) as resp:
            if not 200 <= resp.status_code < 300:  # never a redirect's page saved as the file
                resp.read()
                self._check(resp)
            return save(resp, dest, size)
