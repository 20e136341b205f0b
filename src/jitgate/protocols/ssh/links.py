"""Resolving SFTP paths through the target's symbolic links, on the target itself.

The SFTP inspector (:mod:`.sftp`) decides file operations on the real path: what the
target's kernel will open, not what the client named. Only the target knows its links,
so the gateway asks its own SFTP session to the target (``realpath``, ``readlink``), with
the gateway's credential, under the same user the client's operations run as.

A path that does not exist yet (a file being created) is its real parent directory plus
its name; a dangling link is followed to where it points (``open`` with ``CREAT`` would
create the file there). OpenSSH's ``realpath`` already does both; the fallback is for
servers whose ``realpath`` wants an existing file.
"""

from __future__ import annotations

import posixpath

import asyncssh

from jitgate.protocols.ssh.sftp import Lookup

MAX_LINKS = 40  # as Linux's ELOOP limit


class TooManyLinks(Exception):
    """The path goes through more symbolic links than the kernel would follow."""


async def real_paths(
    sftp: asyncssh.SFTPClient, lookups: tuple[Lookup, ...]
) -> dict[Lookup, str | None]:
    """The real path of each lookup (None: the target could not resolve it)."""
    real: dict[Lookup, str | None] = {}
    for path, follow in lookups:
        try:
            real[path, follow] = await real_path(sftp, path, follow=follow)
        except (asyncssh.SFTPError, TooManyLinks, UnicodeError):
            real[path, follow] = None
    return real


async def real_path(sftp: asyncssh.SFTPClient, path: str, *, follow: bool, links: int = 0) -> str:
    """``path`` (absolute, normalised) with every link resolved; its last component only
    when ``follow`` (``remove``, ``rename``, ``symlink`` act on the link itself)."""
    if path == "~" or path.startswith("~/"):  # relative to home, which the target knows
        home = str(await sftp.realpath("."))
        path = posixpath.normpath(posixpath.join(home, path[2:]))
    if path == "/":
        return path
    if not follow:
        parent, name = posixpath.split(path)
        return posixpath.join(await real_path(sftp, parent, follow=True, links=links), name)
    try:
        return str(await sftp.realpath(path))
    except asyncssh.SFTPNoSuchFile:
        pass
    try:  # a dangling link, on a server whose realpath does not follow one
        target = str(await sftp.readlink(path))
    except asyncssh.SFTPError:  # not a link, nothing there: the real parent and the name
        return await real_path(sftp, path, follow=False, links=links)
    if links >= MAX_LINKS:
        raise TooManyLinks(path)
    followed = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return await real_path(sftp, "/" + followed.lstrip("/"), follow=True, links=links + 1)
