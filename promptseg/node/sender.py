"""C-STORE SCU: send one result file to one destination (pynetdicom).

:func:`send_file` raises :class:`SendError` with a one-line reason on anything but a
success (or warning) status from the peer; the caller retries with back-off
(:meth:`promptseg.node.config.RetrySection.delay`) up to ``retry.max_attempts``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from .config import Destination
from .tls import client_context

# C-STORE statuses that mean "stored": success, and the warnings coercion / elements discarded / SOP class mismatch
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class SendError(Exception):
    """A result could not be delivered this time (the message says why, on one line)."""


def send_file(path: Path, destination: Destination, calling_ae: str, *, name: str = "destination",
              timeout: float = 30.0, confirmed: Optional[Callable[[], None]] = None) -> None:
    """C-STORE the DICOM file ``path`` to ``destination``.

    Args:
        path: a DICOM Part 10 file (RTSTRUCT, SEG, ...).
        destination: the peer (AE title, host, port, optional TLS).
        calling_ae: the node's AE title.
        name: the destination's name in the config (for messages).
        timeout: seconds for connecting, negotiation and the store response.
        confirmed: called as soon as the peer's success status arrives, before the association is released.

    Raises:
        SendError: cannot connect, association rejected or aborted, no response, a failure status.
    """
    dataset = pydicom.dcmread(str(path))
    syntax = dataset.file_meta.TransferSyntaxUID
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(dataset.SOPClassUID, [syntax] + [ts for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if ts != syntax])
    tls_args = None
    if destination.tls is not None:
        context = client_context(destination.tls, f"destinations.{name}.tls")
        tls_args = (context, destination.host if destination.tls.check_hostname else None)
    where = f"{name} ({destination.ae_title} at {destination.host}:{destination.port})"
    try:
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args)
    except OSError as error:
        raise SendError(f"{where}: cannot connect ({error})") from None
    if not assoc.is_established:
        if assoc.is_rejected:
            raise SendError(f"{where}: association rejected")
        raise SendError(f"{where}: no association (peer unreachable, aborted or timed out)")
    try:
        if not assoc.accepted_contexts:
            raise SendError(f"{where}: the peer does not accept {dataset.SOPClassUID.name}")
        status = assoc.send_c_store(dataset)
        code = int(status.Status) if status and "Status" in status else None
        if code is None:
            raise SendError(f"{where}: no response to C-STORE (connection lost or timed out)")
        if code not in _STORED:
            raise SendError(f"{where}: C-STORE failed with status 0x{code:04X}")
        if confirmed is not None:
            confirmed()
    finally:
        if assoc.is_established:
            assoc.release()
