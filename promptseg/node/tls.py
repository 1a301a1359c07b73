"""SSL contexts for DICOM over TLS (server side for the node, client side for destinations)."""

from __future__ import annotations

import ssl

from ..errors import NodeConfigError
from .config import ClientTls, ServerTls


def server_context(tls: ServerTls) -> ssl.SSLContext:
    """The node's TLS context: its certificate and key; callers' certificates checked against ``ca_certificates``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
        if tls.ca_certificates is not None:
            context.load_verify_locations(cafile=str(tls.ca_certificates))
            context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    except (ssl.SSLError, OSError) as error:
        raise NodeConfigError(f"node.tls: cannot load the certificate, key or CA file ({error})") from None
    return context


def client_context(tls: ClientTls, where: str) -> ssl.SSLContext:
    """A destination's TLS context: the server checked against ``ca_certificates`` (else the system CAs)."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_certificates) if tls.ca_certificates else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = tls.check_hostname
        if tls.certificate is not None:
            context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    except (ssl.SSLError, OSError) as error:
        raise NodeConfigError(f"{where}: cannot load the certificate, key or CA file ({error})") from None
    return context
