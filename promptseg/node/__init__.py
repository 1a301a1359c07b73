"""``promptseg dicom-node``: a DICOM node that segments the series sent to it and sends back RTSTRUCT / SEG.

A C-STORE SCP receives instances (written durably, journaled in SQLite), groups them
by series, and when a series is complete (its associations ended and no new instance
for ``quiet_seconds``) the first matching rule picks the model, the prompts (an ROI of
an RTSTRUCT of the same study, a fixed box, or a prompt file) and the output; the result
is sent by C-STORE to the configured destinations (retry with back-off) and/or written
to a folder. Series that cannot be processed go to a quarantine folder with a reason.

>>> from promptseg.node import DicomNode, load_config, run_node
>>> run_node(load_config("node.yaml"))          # until SIGINT / SIGTERM

Modules: config (YAML schema), receiver (SCP handlers), journal (SQLite), completion,
rules, prompting, checks, processor, sender (SCU), quarantine, storage, tls, runner.
"""

from .config import NodeConfig, load_config, validate_config
from .runner import DicomNode, run_node

__all__ = ["DicomNode", "NodeConfig", "load_config", "run_node", "validate_config"]
