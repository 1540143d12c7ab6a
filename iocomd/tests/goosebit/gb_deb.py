"""gooseBit test plugin for iocomd's end-to-end DDI test (gooseBit 0.2.12).

Stock gooseBit accepts only SWUpdate/RAUC images and serves sha1 only; this plugin
(1) lets PUT /api/v1/software accept a Debian package (version from dpkg-deb), and
(2) adds md5 and sha256 to the artifact hashes of the DDI deploymentBase (iocomd checks
SHA-256). Nothing else is changed. It patches gooseBit internals, so it is pinned with the
gooseBit version in setup.
"""
import hashlib
import subprocess
from pathlib import Path

import goosebit.updater.controller.v1.routes as ddi_routes
import goosebit.updates.swdesc as swdesc
from goosebit.db.models import SoftwareImageFormat
from goosebit.device_manager import DeviceManager
from goosebit.schema.plugins import PluginSchema


def _deb_version(path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(path), "Version"],
                          check=True, capture_output=True, text=True).stdout.strip()


def _hashes(data: bytes) -> dict:
    return {"sha1": hashlib.sha1(data).hexdigest(), "md5": hashlib.md5(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest()}


_orig_parse_file = swdesc.parse_file


async def _parse_file(file):
    with open(file, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            return await _orig_parse_file(file)
    data = Path(file).read_bytes()
    return {"version": _deb_version(file), "size": len(data), "hash": hashlib.sha1(data).hexdigest(),
            "compatibility": [{"hw_model": "default", "hw_revision": "default"}],
            "image_format": SoftwareImageFormat.SWU}


swdesc.parse_file = _parse_file

_orig_generate_chunk = ddi_routes.generate_chunk


async def _generate_chunk(request, device):
    chunks = await _orig_generate_chunk(request, device)
    _, software = await DeviceManager.get_update(device)
    if software is not None and software.local:
        hashes = _hashes(Path(str(software.path)).read_bytes())
        for chunk in chunks:
            for artifact in chunk.artifacts:
                artifact.hashes = hashes
    return chunks


ddi_routes.generate_chunk = _generate_chunk

config = PluginSchema(name="gb_deb")
