"""The node's C-STORE / C-ECHO SCP (pynetdicom event handlers).

* Association requests: the calling AE title must be on the allow-list (and, where the
  entry lists addresses, the caller's IP among them) and the called AE title must be the
  node's; anything else gets an A-ASSOCIATE-RJ (permanent, "calling/called AE title not
  recognised") and is journaled as refused.
* C-STORE: the encoded data set (with its file meta) is written durably to
  ``instances/<series>/<sop>.dcm`` and journaled **before** the success status goes back.
  A SOP Instance UID already journaled is acknowledged and ignored. An instance past the
  association's size limit gets 0xA700 (out of resources) and is not kept; one without
  usable Study/Series/SOP Instance UIDs is kept in ``quarantine/unidentified`` and gets
  0xC210 (cannot understand).
* Release, abort or a dropped connection end the association (series completion waits for it).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Optional

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from ..io.common import printable
from .completion import Completion
from .config import NodeConfig
from .journal import InstanceInfo, Journal
from .quarantine import quarantine_instance
from .storage import Storage, write_durable

LOG = logging.getLogger("promptseg.node")

SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC210
# A-ASSOCIATE-RJ: rejected-permanent, by the service user, calling / called AE title not recognised
_REJECT_CALLING, _REJECT_CALLED = (0x01, 0x01, 0x03), (0x01, 0x01, 0x07)


@dataclass
class _Association:
    id: int
    calling_ae: str
    address: str
    bytes: int = 0
    instances: int = 0
    duplicates: int = 0
    refused: int = 0
    over_limit_logged: bool = False


def _text(ds, keyword: str) -> Optional[str]:
    value = ds.get(keyword)
    if value is None:
        return None
    return str(value).strip() or None


class Receiver:
    """Handlers of one node's SCP; :meth:`start` binds the port."""

    def __init__(self, config: NodeConfig, journal: Journal, storage: Storage, completion: Completion) -> None:
        self.config, self.journal, self.storage, self.completion = config, journal, storage, completion
        self._associations: dict[int, _Association] = {}  # key: id() of the pynetdicom Association
        self._lock = threading.Lock()
        self.server = None

    # -- server ------------------------------------------------------------
    def make_ae(self) -> AE:
        ae = AE(ae_title=self.config.node.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        # pynetdicom's own checks as a second line behind on_requested
        ae.require_called_aet = True
        ae.require_calling_aet = [caller.ae_title for caller in self.config.allowed_callers]
        ae.maximum_associations = 16
        return ae

    def handlers(self) -> list:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_RELEASED, self.on_ended, ["released"]),
            (evt.EVT_ABORTED, self.on_ended, ["aborted"]),
            (evt.EVT_CONN_CLOSE, self.on_ended, ["closed"]),
        ]

    def start(self, ssl_context=None):
        """Listen on ``node.host:node.port`` (port 0: any free port); returns the pynetdicom server."""
        ae = self.make_ae()
        self.server = ae.start_server((self.config.node.host, self.config.node.port), block=False,
                                      evt_handlers=self.handlers(), ssl_context=ssl_context)
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    # -- associations ------------------------------------------------------
    def on_requested(self, event) -> None:
        request = event.assoc.requestor.primitive
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        address = event.assoc.requestor.address
        caller = self.config.caller(calling)
        reason, code = None, _REJECT_CALLING
        if caller is None:
            reason = f"calling AE title {calling!r} is not on the allow-list"
        elif not caller.allows(address):
            reason = f"calling AE title {calling!r} is not allowed from {address}"
        elif called != self.config.node.ae_title:
            reason, code = f"called AE title {called!r} is not this node's ({self.config.node.ae_title!r})", _REJECT_CALLED
        if reason is None:
            return
        LOG.warning("refused association from %s: %s", address, reason)
        self.journal.refuse_association(calling, address, reason)
        event.assoc.acse.send_reject(*code)
        event.assoc.kill()

    def on_accepted(self, event) -> None:
        calling = str(event.assoc.requestor.ae_title).strip()
        address = event.assoc.requestor.address
        record = _Association(self.journal.open_association(calling, address), calling, address)
        with self._lock:
            self._associations[id(event.assoc)] = record
        self.completion.opened(id(event.assoc))
        LOG.info("association %d from %s (%s) accepted", record.id, calling, address)

    def on_ended(self, event, outcome: str) -> None:
        with self._lock:
            record = self._associations.pop(id(event.assoc), None)
        self.completion.ended(id(event.assoc))
        if record is None:
            return
        self.journal.close_association(record.id, outcome)
        LOG.info("association %d from %s %s: %d instance(s) stored, %d duplicate(s), %d refused",
                 record.id, record.calling_ae, outcome, record.instances, record.duplicates, record.refused)

    def on_echo(self, event) -> int:
        return SUCCESS

    # -- C-STORE -----------------------------------------------------------
    def _record(self, event) -> _Association:
        with self._lock:
            record = self._associations.get(id(event.assoc))
        if record is None:  # EVT_ACCEPTED was not seen (should not happen); journal it now
            self.on_accepted(event)
            with self._lock:
                record = self._associations[id(event.assoc)]
        return record

    def on_store(self, event) -> int:
        record = self._record(event)
        try:
            data = event.encoded_dataset()
        except Exception as error:  # pynetdicom could not encode what it received
            LOG.warning("association %d: an instance could not be decoded (%s); refused", record.id, error)
            return CANNOT_UNDERSTAND
        limit = self.config.node.max_association_bytes
        if record.bytes + len(data) > limit:
            record.refused += 1
            self.journal.count_association(record.id, "refused_instances")
            if not record.over_limit_logged:
                LOG.warning("association %d from %s: over the size limit of %d bytes; further instances refused",
                            record.id, record.calling_ae, limit)
                record.over_limit_logged = True
            return OUT_OF_RESOURCES
        try:
            ds = event.dataset
            info = InstanceInfo(
                sop_uid=_text(ds, "SOPInstanceUID"), series_uid=_text(ds, "SeriesInstanceUID"),
                study_uid=_text(ds, "StudyInstanceUID"), modality=_text(ds, "Modality"),
                sop_class_uid=_text(ds, "SOPClassUID"), series_description=_text(ds, "SeriesDescription"),
                body_part=_text(ds, "BodyPartExamined"))
        except Exception as error:  # a data set pydicom cannot parse
            info, problem = None, f"the data set cannot be parsed ({printable(f'{type(error).__name__}: {error}', 200)})"
        else:
            missing = [name for name, value in (("SOP Instance UID", info.sop_uid), ("Series Instance UID", info.series_uid),
                                                ("Study Instance UID", info.study_uid)) if not value]
            problem = f"no {', no '.join(missing)}" if missing else None
        if problem is not None:
            path = quarantine_instance(self.storage, data, problem, record.calling_ae)
            LOG.warning("association %d: instance without a usable identity (%s) kept as %s; status 0xC210",
                        record.id, problem, path.name)
            return CANNOT_UNDERSTAND
        record.bytes += len(data)
        if self.journal.has_instance(info.sop_uid):
            record.duplicates += 1
            self.journal.count_association(record.id, "duplicates", len(data))
            return SUCCESS
        path = self.storage.instance_path(info.series_uid, info.sop_uid)
        try:
            write_durable(path, data)
        except OSError as error:
            LOG.error("association %d: cannot store an instance (%s); status 0xA700", record.id, error)
            return OUT_OF_RESOURCES
        self.completion.sending(id(event.assoc), info.series_uid)
        added = self.journal.add_instance(info, path, len(data), record.calling_ae, record.id)
        if added is None:  # the same instance arrived meanwhile on another association
            record.duplicates += 1
            return SUCCESS
        record.instances += 1
        if added.new_job:
            what = "late instance(s) after the series was dispatched: " if added.late else ""
            LOG.info("series %s (%s): %snew job %d", info.series_uid, info.modality or "?", what, added.job_id)
        return SUCCESS
